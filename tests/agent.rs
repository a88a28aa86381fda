//! The resident agent: enforcement and counters outlive it, it reconciles
//! pins at start, every subscriber sees every event, it stops cleanly on
//! SIGTERM, and a detached container outlives its monitor.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use support::{Sandbox, agent::Agent, listen_tcp, pin_dir};

/// `palisade agent status`, parsed.
fn agent_status(sb: &Sandbox) -> serde_json::Value {
    let out = sb.palisade().args(["agent", "status"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `palisade events --follow --json` into a file, ended by its pid.
struct Follower {
    child: Child,
    file: PathBuf,
}

impl Follower {
    fn start(sb: &Sandbox, tag: &str) -> Self {
        let file = sb.dir.join(format!("events-{tag}.jsonl"));
        let child = sb
            .palisade()
            .args(["events", "--follow", "--json"])
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self { child, file }
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect()
    }

    /// Waits until a record satisfies `done`; all records so far.
    fn until(&self, done: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let deadline = support::deadline(20);
        loop {
            let records = self.records();
            if records.iter().any(&done) {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "never came; got {} records: {:?}",
                records.len(),
                records.last()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The connect attempts a loop inside a container made, by result.
const LOOP: &str = r#"
import errno, os, socket, sys, time
port, until = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
def attempt(addr):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((addr, port))
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
while time.monotonic() < until:
    print(attempt("127.0.0.2"), attempt("127.0.0.1"), flush=True)
    time.sleep(0.01)
"#;

fn denied_connects(sb: &Sandbox) -> u64 {
    let out = sb.palisade().args(["stats", "--json", &sb.name]).output();
    let all: serde_json::Value = serde_json::from_str(&support::ok(&out.unwrap())).unwrap();
    all[0]["denied"]["connect_denied"]
        .as_u64()
        .unwrap_or_else(|| panic!("no connect denials in {all}"))
}

#[test]
fn enforcement_and_counters_survive_the_agent_killed_three_times() {
    let sb = Sandbox::new("agent-kill");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--policy"])
        .arg(&policy)
        // Ended below, once the agent has died three times.
        .args(["--", "python3", "-c", LOOP, &port.to_string(), "600"])
        .output()
        .unwrap();
    support::ok(&out);
    sb.wait_running();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let agent = Agent::start(&sb, &[]);
        thread::sleep(Duration::from_millis(300));
        agent.signal("KILL");
        drop(agent);
        thread::sleep(Duration::from_millis(300));
        seen.push(denied_connects(&sb));
    }
    let agent = Agent::start(&sb, &[]);
    thread::sleep(Duration::from_millis(300));
    seen.push(denied_connects(&sb));
    drop(agent);
    // SIGKILL: the loop is its namespace's init, which SIGTERM passes by.
    let out = sb.palisade().args(["kill", &sb.name]).output().unwrap();
    assert!(out.status.success(), "{}", support::describe(&out));
    let out = sb.palisade().args(["wait", &sb.name]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "137",
        "ended by SIGKILL"
    );
    let logs = sb.palisade().args(["logs", &sb.name]).output().unwrap();
    let text = String::from_utf8_lossy(&logs.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 50, "the loop ran: {} attempts", lines.len());
    for line in &lines {
        assert_eq!(
            *line, "EPERM ok",
            "every denied attempt fails, every allowed one succeeds"
        );
    }
    for pair in seen.windows(2) {
        assert!(pair[1] > pair[0], "the counter kept growing: {seen:?}");
    }
}

#[test]
fn at_start_the_agent_reattaches_detached_programs_and_removes_pins_of_gone_containers() {
    let sb = Sandbox::new("agent-adopt");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    sb.start_sleeping(&["--policy", policy.to_str().unwrap()]);
    let probe = |sb: &Sandbox| {
        let out = sb
            .exec(&[
                "python3",
                "-c",
                "import socket,sys; s=socket.socket(); s.settimeout(5)\ntry:\n s.connect(('127.0.0.2', int(sys.argv[1]))); print('ok')\nexcept OSError as e: print(e.errno)",
                &port.to_string(),
            ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(probe(&sb), "1", "denied (EPERM) while attached");

    // A second container of the root, gone while no agent ran: its
    // processes killed, its state removed, its link pins left.
    let gone = format!("{}-gone", sb.name);
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &gone, "--", "sleep", "600"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::describe(&out));
    let state: serde_json::Value = loop {
        let text = std::fs::read_to_string(sb.root.join(&gone).join("state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        if state["status"] == "running" {
            break state;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let gone_links = pin_dir(&sb.root).join("links").join(&gone);
    assert!(gone_links.is_dir());
    let cgroups: Vec<PathBuf> = state["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| PathBuf::from(c.as_str().unwrap()))
        .collect();
    for pid in [&state["monitor_pid"], &state["pid"]] {
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
    }
    let unified = &cgroups[0];
    let deadline = support::deadline(10);
    while std::fs::read_to_string(unified.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the gone container's processes ended"
        );
        thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_dir_all(sb.root.join(&gone)).unwrap();

    // The first container's programs detached behind palisade's back.
    let links = pin_dir(&sb.root).join("links").join(&sb.name);
    std::fs::remove_dir_all(&links).unwrap();
    assert_eq!(probe(&sb), "ok", "with its links gone nothing polices it");

    let agent = Agent::start(&sb, &[]);
    let status = agent_status(&sb);
    assert_eq!(
        status["adopted"]["reattached"],
        serde_json::json!([sb.name.clone()]),
        "{status}"
    );
    assert!(
        status["adopted"]["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| *n == gone.as_str()),
        "{status}"
    );
    assert!(
        !gone_links.exists(),
        "the gone container's pins are removed"
    );
    assert!(
        links.is_dir(),
        "the running container's links are pinned again"
    );
    assert_eq!(probe(&sb), "1", "denied again");
    drop(agent);
    for dir in cgroups.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

#[test]
fn two_followers_see_every_event_in_the_same_order() {
    let sb = Sandbox::new("agent-fanout");
    let _agent = Agent::start(&sb, &[]);
    let a = Follower::start(&sb, "a");
    let b = Follower::start(&sb, "b");
    thread::sleep(Duration::from_millis(300));
    let port = listen_tcp(&["127.0.0.2"]);
    let policy = sb.connect_policy(&["deny tcp 127.0.0.2/32", "allow any"]);
    // 200 refusals, below the kernel's rate limit of 1,000 a second.
    let script = "import socket,sys,time\nfor i in range(200):\n s=socket.socket()\n try: s.connect(('127.0.0.2', int(sys.argv[1])))\n except OSError: pass\n s.close(); time.sleep(0.002)";
    let out = sb.run(Some(&policy), &["python3", "-c", script, &port.to_string()]);
    assert!(out.status.success(), "{}", support::describe(&out));
    let removed =
        |r: &serde_json::Value| r["kind"] == "removed" && r["container"] == sb.name.as_str();
    let from_a = a.until(removed);
    let from_b = b.until(removed);
    if from_a != from_b {
        let at = from_a.iter().zip(&from_b).position(|(a, b)| a != b);
        panic!(
            "both subscribers see the same records in the same order: {} and {} records, first difference at {at:?}: {:?} / {:?}",
            from_a.len(),
            from_b.len(),
            at.map(|i| &from_a[i]),
            at.map(|i| &from_b[i]),
        );
    }

    let kinds: Vec<&str> = from_a.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    let denials = kinds.iter().filter(|k| **k == "denial").count();
    assert_eq!(denials, 200, "every denial: {kinds:?}");
    let order: Vec<&str> = kinds.iter().copied().filter(|k| *k != "denial").collect();
    assert_eq!(order, ["created", "started", "exited", "removed"]);
    assert_eq!(kinds.first(), Some(&"created"));
    assert_eq!(kinds[kinds.len() - 2..], ["exited", "removed"]);
    // The journal replays the same history to a later reader.
    let out = sb
        .palisade()
        .args(["events", "--json", "--since", "10m"])
        .output()
        .unwrap();
    let replayed = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(replayed, from_a.len());
}

/// Started under a soft descriptor limit of 256, the agent raises it to
/// the hard limit: it holds a descriptor per watched container.
#[test]
fn the_agent_raises_its_descriptor_limit_to_the_hard_one() {
    let sb = Sandbox::new("agent-nofile");
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -Sn 256 && exec \"$0\" agent"])
        .arg(env!("CARGO_BIN_EXE_palisade"))
        .env("PALISADE_ROOT", &sb.root);
    let agent = Agent::start_as(&sb, cmd);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "256", "{line}");
    assert!(
        agent.log().contains("descriptor limit raised"),
        "{}",
        agent.log()
    );
}

#[test]
fn sigterm_stops_the_agent_cleanly_and_a_second_agent_is_refused() {
    let sb = Sandbox::new("agent-term");
    let pid = sb.start_sleeping(&[]);
    let agent = Agent::start(&sb, &[]);
    let socket = sb.root.join("agent.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the API socket is root's only");
    let second = sb.palisade().args(["agent"]).output().unwrap();
    assert_eq!(second.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another agent runs"),
        "{}",
        support::describe(&second)
    );
    let mut agent = agent;
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "its socket is removed");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container runs on"
    );
    // Without an agent, `events` says where it reads from.
    let out = sb.palisade().args(["events"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no agent is running"),
        "{}",
        support::describe(&out)
    );
    // A new agent starts on the same root.
    let again = Agent::start(&sb, &[]);
    assert_eq!(agent_status(&sb)["pid"], again.pid());
}

#[test]
fn a_detached_container_outlives_its_monitor_and_stays_policed() {
    let sb = Sandbox::new("monitor-dies");
    let port = listen_tcp(&["127.0.0.2"]);
    let policy = sb.connect_policy(&["deny tcp 127.0.0.2/32", "allow any"]);
    let pid = sb.start_sleeping(&["--policy", policy.to_str().unwrap()]);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sb.root.join(&sb.name).join("state.json")).unwrap(),
    )
    .unwrap();
    let monitor = state["monitor_pid"].as_i64().unwrap();
    Command::new("kill")
        .args(["-KILL", &monitor.to_string()])
        .status()
        .unwrap();
    thread::sleep(Duration::from_millis(500));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let run_state = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_ne!(run_state, "Z", "the container's process lives on");
    let ps = sb.palisade().args(["ps", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(listed[0]["status"], "running", "{listed}");
    assert_eq!(
        listed[0]["reason"], "monitor died",
        "said, not hidden: {listed}"
    );
    let table = support::ok(&sb.palisade().arg("ps").output().unwrap());
    assert!(table.contains("running (monitor died)"), "{table}");
    let out = sb.exec(&[
        "python3",
        "-c",
        "import socket,sys; s=socket.socket()\ntry:\n s.connect(('127.0.0.2', int(sys.argv[1]))); print('ok')\nexcept OSError as e: print(e.errno)",
        &port.to_string(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "still denied"
    );
    let out = sb.palisade().args(["rm", "-f", &sb.name]).output().unwrap();
    assert!(out.status.success(), "{}", support::describe(&out));
    assert!(sb.leftover_cgroups().is_empty());
}
