//! Rule-based classification, end to end: an agent with `[[classify]]`
//! rules, the real `sched_process_exec` tracepoint, real host processes
//! exec'ed under other uids (util-linux `setpriv`) or from a matching
//! path, moved into a running container's cgroups and so under its
//! network policy.
//!
//! Each test uses its own uid or path, so that the agents of tests running
//! at once never act on each other's processes.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use support::{Sandbox, agent::Agent, listen_tcp, probe_outside};

/// The system python, which other uids can run (root's may be private).
const PYTHON: &str = "/usr/bin/python3";

/// Prints the process's cgroups (one line each, as /proc/self/cgroup has
/// them) and then one connect result per address given: `ok` or the errno
/// name.
const PROBE: &str = r#"
import errno, socket, sys
print(open("/proc/self/cgroup").read().strip())
port = int(sys.argv[1])
for addr in sys.argv[2:]:
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((addr, port))
        print("connect " + addr + " ok")
    except OSError as e:
        print("connect " + addr + " " + errno.errorcode.get(e.errno, str(e.errno)))
    s.close()
"#;

/// The agent with `config`, waited for until it classifies.
fn start_agent(sb: &Sandbox, config: &Path) -> Agent {
    let config = config.to_str().expect("a UTF-8 path");
    let mut agent = Agent::start(sb, &["--metrics-addr", "127.0.0.1:0", "--config", config]);
    agent.wait_log(
        "classifying host processes at exec",
        "the agent never classified",
    );
    agent
}

fn write_config(sb: &Sandbox, text: &str) -> PathBuf {
    let path = sb.dir.join("agent.toml");
    std::fs::write(&path, text).expect("write the agent configuration");
    path
}

/// Runs `cmd` to completion within 30 s (killed by pid after that: a
/// process left stopped must fail the test, not hang it); its stdout.
fn run_bounded(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = support::deadline(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "{cmd:?}: {status}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if Instant::now() > deadline {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within 30 s (stat: {stat:?})");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The probe, exec'ed as `uid`:`uid` with no supplementary groups.
fn probe_as(uid: u32, port: u16, addrs: &[&str]) -> String {
    let id = uid.to_string();
    run_bounded(
        Command::new("setpriv")
            .arg(format!("--reuid={id}"))
            .arg(format!("--regid={id}"))
            .arg("--clear-groups")
            .args([PYTHON, "-c", PROBE, &port.to_string()])
            .args(addrs),
    )
}

/// Whether the cgroup lines name the container in the v2 hierarchy and in
/// every v1 hierarchy palisade made a group for.
fn in_container(cgroups: &str, sb: &Sandbox) -> bool {
    let path = format!("/palisade/{}", sb.name);
    let lines: Vec<&str> = cgroups.lines().filter(|l| l.contains(":/")).collect();
    let v2 = lines.iter().any(|l| *l == format!("0::{path}"));
    let v1_made = sb.leftover_cgroups().len() - 1;
    let v1_in = lines
        .iter()
        .filter(|l| !l.starts_with("0::") && l.ends_with(&format!(":{path}")))
        .count();
    v2 && v1_in == v1_made
}

/// The journal's `classified` records.
fn classified(sb: &Sandbox) -> Vec<serde_json::Value> {
    std::fs::read_to_string(sb.root.join(".journal/events"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "classified")
        .collect()
}

/// The agent's classification records once there is one: it journals a
/// move after making it.
fn classified_once(sb: &Sandbox) -> Vec<serde_json::Value> {
    let deadline = support::deadline(10);
    loop {
        let records = classified(sb);
        if !records.is_empty() || Instant::now() > deadline {
            return records;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Kills a process by pid and reaps it if it is our child.
fn end(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn uid_rule_holds_and_moves_a_host_process_under_the_containers_policy() {
    let sb = Sandbox::new("clsuid");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    sb.start_sleeping(&["--policy", policy.to_str().unwrap()]);
    let config = write_config(
        &sb,
        &format!(
            "[[classify]]\nuid = 1001\nhold = true\ncontainer = \"{}\"\n",
            sb.name
        ),
    );
    let _agent = start_agent(&sb, &config);

    let out = probe_as(1001, port, &["127.0.0.2", "127.0.0.1"]);
    assert!(
        in_container(&out, &sb),
        "not in the container's cgroups:\n{out}"
    );
    assert!(out.contains("connect 127.0.0.2 EPERM"), "{out}");
    assert!(out.contains("connect 127.0.0.1 ok"), "{out}");

    // The host is not policed, and a uid no rule names is left alone.
    assert_eq!(probe_outside(&[(4, "tcp", "127.0.0.2", port)]), ["ok"]);
    let other = probe_as(1011, port, &["127.0.0.2"]);
    assert!(!other.contains("/palisade/"), "{other}");
    assert!(other.contains("connect 127.0.0.2 ok"), "{other}");

    let records = classified_once(&sb);
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["container"], sb.name.as_str());
    assert_eq!(
        (r["uid"].as_u64(), r["gid"].as_u64()),
        (Some(1001), Some(1001))
    );
    assert_eq!(r["held"], true);
    assert_eq!(r["exe"], PYTHON);
    assert!(r["rule"].as_str().unwrap().contains("uid = 1001"), "{r}");
    assert!(r["latency_us"].as_u64().unwrap() < 1_000_000, "{r}");
}

#[test]
fn exe_glob_rule_moves_a_running_process_and_leaves_others() {
    let sb = Sandbox::new("clsexe");
    sb.start_sleeping(&[]);
    let bin = sb.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marked = bin.join("marked-sleep");
    let plain = bin.join("plain-sleep");
    for copy in [&marked, &plain] {
        std::fs::copy("/bin/sleep", copy).expect("copy sleep");
    }
    let config = write_config(
        &sb,
        &format!(
            "[[classify]]\nexe = \"{}/marked-*\"\ncontainer = \"{}\"\n",
            bin.display(),
            sb.name
        ),
    );
    let _agent = start_agent(&sb, &config);

    let mut left = Command::new(&plain).arg("60").spawn().unwrap();
    let mut moved = Command::new(&marked).arg("60").spawn().unwrap();
    let cgroup_of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let deadline = support::deadline(10);
    while !in_container(&cgroup_of(moved.id()), &sb) {
        assert!(
            Instant::now() < deadline,
            "{} never moved: {}",
            marked.display(),
            cgroup_of(moved.id())
        );
        thread::sleep(Duration::from_millis(5));
    }
    // Events are handled in exec order: the plain one was judged first.
    assert!(
        !cgroup_of(left.id()).contains("/palisade/"),
        "{}",
        cgroup_of(left.id())
    );
    let records = classified_once(&sb);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["pid"].as_u64(), Some(u64::from(moved.id())));
    assert_eq!(records[0]["held"], false);
    assert_eq!(records[0]["exe"], marked.to_str().unwrap());
    end(&mut left);
    end(&mut moved);
}

#[test]
fn a_missing_container_leaves_the_process_running_where_it_was() {
    let sb = Sandbox::new("clsmiss");
    let missing = format!("{}-absent", sb.name);
    let config = write_config(
        &sb,
        &format!("[[classify]]\nuid = 1003\nhold = true\ncontainer = \"{missing}\"\n"),
    );
    let port = listen_tcp(&["127.0.0.2"]);
    let mut agent = start_agent(&sb, &config);
    // Held, then continued: it finishes, where it was, unpoliced.
    let out = probe_as(1003, port, &["127.0.0.2"]);
    assert!(!out.contains("/palisade/"), "{out}");
    assert!(out.contains("connect 127.0.0.2 ok"), "{out}");
    assert!(classified(&sb).is_empty());
    let deadline = support::deadline(5);
    while !agent.log().contains("container is not there") {
        assert!(Instant::now() < deadline, "no warning: {}", agent.log());
        thread::sleep(Duration::from_millis(10));
    }
    // Classification stops with the agent: nothing is held any more.
    agent.stop();
    let out = probe_as(1003, port, &["127.0.0.2"]);
    assert!(out.contains("connect 127.0.0.2 ok"), "{out}");
}

#[test]
fn bad_configurations_are_refused_with_their_line() {
    let sb = Sandbox::new("clsbad");
    for (text, line, says) in [
        (
            "[[classify]]\ncontainer = \"x\"\n",
            1,
            "at least one criterion",
        ),
        ("[[classify]]\nuid = 1\n", 1, "container"),
        (
            "[[classify]]\nuid = 1\ncontainer = \"x\"\nuser = 3\n",
            4,
            "user",
        ),
        (
            "\n[[classify]]\nexe = \"bin/*\"\ncontainer = \"x\"\n",
            3,
            "not absolute",
        ),
        (
            "[[classify]]\nexe = \"/bin/[a]\"\ncontainer = \"x\"\n",
            2,
            "reserved",
        ),
        (
            "[[classify]]\nuid = -4\ncontainer = \"x\"\n",
            2,
            "not a uid",
        ),
    ] {
        let config = write_config(&sb, text);
        let out = sb
            .palisade()
            .args(["agent", "--metrics-addr", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .output()
            .expect("run the agent");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} accepted");
        assert!(
            err.contains(&format!("agent.toml:{line}:")) && err.contains(says),
            "{text:?}: {err}"
        );
    }
}
