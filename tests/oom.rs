//! The userspace OOM handler (`[oom]`), with the agent running: a memory
//! hog (busybox `tail /dev/zero`, which keeps one endless line) in a
//! container, and what each action leaves behind: `kill` ends the
//! container as OOM (ps and the journal say so, the action before the
//! exit); `freeze` holds the hog frozen until `palisade kill`; `notify`
//! only reports, and the kernel's OOM killer decides. Bad sections are
//! refused with nothing started.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Sandbox, agent::Agent, describe};

/// `palisade agent` with a metrics endpoint.
fn start_agent(sb: &Sandbox) -> Agent {
    Agent::start(sb, &["--metrics-addr", "127.0.0.1:0"])
}

/// Waits until the agent watches container `name`'s memory.
fn wait_watching(agent: &Agent, name: &str) {
    let deadline = support::deadline(20);
    while !agent
        .log()
        .lines()
        .any(|l| l.contains("watching for OOM") && l.contains(name))
    {
        assert!(
            Instant::now() < deadline,
            "the agent never watched {name}; agent log:\n{}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The journal's records about container `name`, in order.
fn journal(root: &Path, name: &str) -> Vec<Value> {
    let text = fs::read_to_string(root.join(".journal/events")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON record a line"))
        .filter(|r| r["container"] == name)
        .collect()
}

/// Waits until the journal has a record about `name` that `pred` accepts.
fn wait_record(sb: &Sandbox, pred: impl Fn(&Value) -> bool, why: &str) -> Value {
    let deadline = support::deadline(30);
    loop {
        if let Some(r) = journal(&sb.root, &sb.name).into_iter().find(&pred) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{why}; journal: {:?}",
            journal(&sb.root, &sb.name)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `palisade ps --json`'s row for the sandbox's container.
fn ps_row(sb: &Sandbox) -> Value {
    let out = sb.palisade().args(["ps", "--json"]).output().unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ps JSON");
    rows.into_iter()
        .find(|r| r["name"] == sb.name.as_str())
        .unwrap_or(Value::Null)
}

fn wait_exited(sb: &Sandbox) -> Value {
    let deadline = support::deadline(30);
    loop {
        let row = ps_row(sb);
        if row["status"] == "exited" {
            return row;
        }
        assert!(Instant::now() < deadline, "never exited: {row}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the container detached on the busybox rootfs under `policy`
/// (extra flags before it), running `script`; a directory of the test's
/// is at /x. Returns that directory.
fn start(sb: &Sandbox, policy: &str, flags: &[&str], script: &str) -> PathBuf {
    let x = sb.dir.join("x");
    fs::create_dir_all(&x).unwrap();
    let file = sb.policy(policy);
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--rootfs"])
        .arg(support::busybox_rootfs())
        .arg("--mount")
        .arg(format!("{}:/x", x.display()))
        .arg("--policy")
        .arg(&file)
        .args(flags)
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "run: {}", describe(&out));
    sb.wait_running();
    x
}

/// Waits for /x/go, then grows without bound.
const HOG: &str = "while [ ! -e /x/go ]; do sleep 0.02; done; exec tail /dev/zero";

#[test]
fn kill_ends_the_container_recorded_as_oom() {
    let sb = Sandbox::new("oomkill");
    let agent = start_agent(&sb);
    let policy = "[resources]\nmemory = \"32M\"\n\n[oom]\naction = \"kill\"\n";
    let x = start(&sb, policy, &[], HOG);
    wait_watching(&agent, &sb.name);
    fs::write(x.join("go"), "").unwrap();

    let row = wait_exited(&sb);
    assert_eq!(row["oom_killed"], true, "{row}");
    let table = sb.palisade().arg("ps").output().unwrap();
    let line = String::from_utf8_lossy(&table.stdout)
        .lines()
        .find(|l| l.starts_with(&sb.name))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("OOM-killed"), "ps: {line}");

    let action = |r: &Value| r["kind"] == "oom_action";
    let exited = |r: &Value| r["kind"] == "exited";
    wait_record(&sb, exited, "no exited record");
    let records = journal(&sb.root, &sb.name);
    let a = records
        .iter()
        .position(action)
        .expect("an oom_action record");
    let e = records.iter().position(exited).expect("an exited record");
    assert!(a < e, "the action comes before the exit: {records:?}");
    let r = &records[a];
    assert_eq!(r["action"], "kill", "{r}");
    assert_eq!(r["condition"], "oom", "{r}");
    assert!(r["latency_us"].as_u64().is_some(), "{r}");
    assert_eq!(records[e]["oom"], true, "{}", records[e]);
    assert_eq!(records.iter().filter(|r| action(r)).count(), 1);
    assert!(sb.leftover_cgroups().is_empty(), "cgroups left behind");
}

#[test]
fn freeze_holds_the_hog_until_kill() {
    let sb = Sandbox::new("oomfreeze");
    let agent = start_agent(&sb);
    let policy = "[resources]\nmemory = \"4G\"\nmemory_high = \"16M\"\n\n[oom]\naction = \"freeze\"\nat = \"memory_high\"\n";
    let x = start(&sb, policy, &[], HOG);
    wait_watching(&agent, &sb.name);
    fs::write(x.join("go"), "").unwrap();

    let r = wait_record(&sb, |r| r["kind"] == "oom_action", "no oom_action record");
    assert_eq!(r["action"], "freeze", "{r}");
    assert_eq!(r["condition"], "memory_high", "{r}");
    let row = ps_row(&sb);
    assert_eq!(row["status"], "running", "{row}");
    assert_eq!(row["paused"], true, "ps shows it frozen: {row}");
    let pids = || {
        let out = sb
            .palisade()
            .args(["ps", &sb.name, "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Vec<i32>>(&out.stdout).expect("ps NAME JSON")
    };
    let frozen = pids();
    assert!(!frozen.is_empty());
    // Frozen: it stays, and grows no more.
    let rss = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
            .unwrap()
    };
    let before: Vec<String> = frozen.iter().map(|&p| rss(p)).collect();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(pids(), frozen);
    assert_eq!(frozen.iter().map(|&p| rss(p)).collect::<Vec<_>>(), before);
    assert_eq!(ps_row(&sb)["paused"], true);

    let out = sb.palisade().args(["kill", &sb.name]).output().unwrap();
    assert!(out.status.success(), "kill: {}", describe(&out));
    let row = wait_exited(&sb);
    assert_eq!(
        row["oom_killed"], false,
        "the user's kill, not an OOM: {row}"
    );
    for pid in frozen {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} lives on"
        );
    }
    let records = journal(&sb.root, &sb.name);
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "oom_action").count(),
        1,
        "{records:?}"
    );
}

#[test]
fn rm_force_ends_a_frozen_container() {
    let sb = Sandbox::new("oomfreezerm");
    let agent = start_agent(&sb);
    let policy = "[resources]\nmemory = \"4G\"\nmemory_high = \"16M\"\n\n[oom]\naction = \"freeze\"\nat = \"memory_high\"\n";
    let x = start(&sb, policy, &[], HOG);
    wait_watching(&agent, &sb.name);
    fs::write(x.join("go"), "").unwrap();
    wait_record(&sb, |r| r["kind"] == "oom_action", "no oom_action record");
    assert_eq!(ps_row(&sb)["paused"], true);
    let out = sb.palisade().args(["rm", "-f", &sb.name]).output().unwrap();
    assert!(out.status.success(), "rm -f: {}", describe(&out));
    assert_eq!(ps_row(&sb), Value::Null);
    assert!(sb.leftover_cgroups().is_empty(), "cgroups left behind");
}

#[test]
fn notify_reports_and_the_kernel_decides() {
    let sb = Sandbox::new("oomnotify");
    let agent = start_agent(&sb);
    let policy = "[resources]\nmemory = \"32M\"\n\n[oom]\naction = \"notify\"\n";
    // The hog is a child: the kernel's OOM killer ends it, the shell
    // goes on.
    let script = "while [ ! -e /x/go ]; do sleep 0.02; done; tail /dev/zero; echo after > /x/after; exec sleep 600";
    let x = start(&sb, policy, &[], script);
    wait_watching(&agent, &sb.name);
    fs::write(x.join("go"), "").unwrap();

    let r = wait_record(&sb, |r| r["kind"] == "oom_action", "no oom_action record");
    assert_eq!(r["action"], "notify", "{r}");
    assert_eq!(r["condition"], "oom", "{r}");
    let deadline = support::deadline(20);
    while !x.join("after").exists() {
        assert!(Instant::now() < deadline, "the hog was never ended");
        thread::sleep(Duration::from_millis(20));
    }
    let row = ps_row(&sb);
    assert_eq!(row["status"], "running", "notify leaves it running: {row}");
    assert_eq!(row["paused"], false, "{row}");
    assert!(
        journal(&sb.root, &sb.name)
            .iter()
            .all(|r| r["kind"] != "exited")
    );
}

#[test]
fn policy_apply_adds_a_handler() {
    let sb = Sandbox::new("oomapply");
    let agent = start_agent(&sb);
    // No [oom] at start; the memory limit from the flag.
    let x = start(&sb, "", &["--memory", "32M"], HOG);
    let file = sb.policy("[oom]\naction = \"kill\"\n");
    sb.apply(&file);
    wait_watching(&agent, &sb.name);
    fs::write(x.join("go"), "").unwrap();
    let row = wait_exited(&sb);
    assert_eq!(row["oom_killed"], true, "{row}");
    let r = wait_record(&sb, |r| r["kind"] == "oom_action", "no oom_action record");
    assert_eq!(r["action"], "kill", "{r}");
}

#[test]
fn bad_sections_are_refused_and_nothing_starts() {
    let sb = Sandbox::new("oombad");
    let rootfs = support::busybox_rootfs();
    let run = |policy: &str, flags: &[&str]| {
        let file = sb.policy(policy);
        sb.palisade()
            .args(["run", "--name", &sb.name, "--rootfs"])
            .arg(&rootfs)
            .arg("--policy")
            .arg(&file)
            .args(flags)
            .args(["--", "true"])
            .output()
            .unwrap()
    };
    let file = sb.dir.join("policy.toml");
    let cases: &[(&str, &[&str], String)] = &[
        (
            "[resources]\nmemory = \"32M\"\n[oom]\naction = \"restart\"\n",
            &[],
            format!(
                "{}:4: oom.action: unknown value \"restart\"",
                file.display()
            ),
        ),
        (
            "[resources]\nmemory = \"32M\"\n[oom]\naction = \"kill\"\nat = \"swap\"\n",
            &[],
            format!("{}:5: oom.at: unknown value \"swap\"", file.display()),
        ),
        (
            "[oom]\naction = \"kill\"\nafter = \"1s\"\n",
            &[],
            format!("{}:3: ", file.display()),
        ),
        (
            "[oom]\nat = \"oom\"\n",
            &[],
            format!("{}:1: oom.action: missing", file.display()),
        ),
        (
            "\n[oom]\naction = \"kill\"\n",
            &[],
            format!("{}:2: [oom] needs a memory limit", file.display()),
        ),
        (
            "[oom]\naction = \"freeze\"\nat = \"memory_high\"\n",
            &["--memory", "64M"],
            format!(
                "{}:1: oom.at = \"memory_high\" needs a memory_high limit",
                file.display()
            ),
        ),
    ];
    for (policy, flags, expected) in cases {
        let out = run(policy, flags);
        assert_eq!(out.status.code(), Some(2), "{policy}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected.as_str()), "{policy}: {stderr}");
        assert!(
            !sb.root.join(&sb.name).exists(),
            "{policy}: a container was made"
        );
        assert!(
            sb.leftover_cgroups().is_empty(),
            "{policy}: cgroups were made"
        );
    }
    // The flags give what the section needs.
    let out = run("[oom]\naction = \"kill\"\n", &["--memory", "64M"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(
        "[oom]\naction = \"freeze\"\nat = \"memory_high\"\n",
        &["--memory", "64M", "--memory-high", "32M"],
    );
    assert!(out.status.success(), "{}", describe(&out));

    // policy apply judges [oom] against the limits the container runs
    // under, and changes nothing when it refuses.
    sb.start_sleeping(&["--rootfs", rootfs.to_str().unwrap()]);
    let file = sb.policy("[network]\nconnect = [\"deny any\"]\n\n[oom]\naction = \"kill\"\n");
    let out = sb.try_apply(&file);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":4: [oom] needs a memory limit"),
        "{stderr}"
    );
    assert!(
        sb.policy_show()["connect"].is_null(),
        "the connect rules were applied"
    );
}

/// What the issue asks of `events --follow`: for one container, its start,
/// a denial, the OOM kill (action `kill`) and its exit, in that order, as a
/// subscriber streaming from the agent sees them; or, where the kernel's
/// OOM killer won the race, the exit (OOM) and then the agent saying its
/// action was not taken.
#[test]
fn a_follower_sees_start_denial_oom_kill_and_exit_in_order() {
    let sb = Sandbox::new("oomfollow");
    let agent = start_agent(&sb);
    let stream = sb.dir.join("follow.jsonl");
    let mut follower = sb
        .palisade()
        .args(["events", "--follow", "--json"])
        .stdout(fs::File::create(&stream).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let port = support::listen_tcp(&["127.0.0.2"]);
    let policy = "[network]\nconnect = [\"deny tcp 127.0.0.2/32\", \"allow any\"]\n\n[resources]\nmemory = \"32M\"\n\n[oom]\naction = \"kill\"\n";
    let script = format!(
        "while [ ! -e /x/go ]; do sleep 0.02; done; nc -w 1 127.0.0.2 {port} </dev/null; exec tail /dev/zero"
    );
    let x = start(&sb, policy, &[], &script);
    wait_watching(&agent, &sb.name);
    fs::write(x.join("go"), "").unwrap();
    wait_exited(&sb);
    let deadline = support::deadline(20);
    let records: Vec<Value> = loop {
        let text = fs::read_to_string(&stream).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON record a line"))
            .filter(|r: &Value| r["container"] == sb.name.as_str())
            .collect();
        if records.iter().any(|r| r["kind"] == "exited") {
            break records;
        }
        assert!(Instant::now() < deadline, "no exit streamed: {records:?}");
        thread::sleep(Duration::from_millis(20));
    };
    let _ = follower.kill();
    let _ = follower.wait();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    // The kernel's OOM killer stays on, and the agent is woken by the same
    // OOM: usually the agent kills first (and the exit waits for its
    // record); on a loaded machine the kernel may end the container first,
    // and the agent then says it took no action, after the exit.
    let kernel_first = kinds == ["created", "started", "denial", "exited", "oom_action"];
    if kernel_first {
        let action = &records[4];
        assert_eq!(action["action"], "kill");
        assert!(
            action["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("not taken")),
            "{records:?}"
        );
        assert_eq!(records[3]["oom"], true);
    } else {
        assert_eq!(
            kinds,
            ["created", "started", "denial", "oom_action", "exited"],
            "{records:?}"
        );
        assert_eq!(records[3]["action"], "kill");
        assert!(
            records[3]["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("ended every process")),
            "{records:?}"
        );
        assert_eq!(records[4]["oom"], true);
    }
    assert_eq!(records[2]["hook"], "connect");
    assert_eq!(records[2]["address"], "127.0.0.2");
}
