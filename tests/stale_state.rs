//! Killed starts, dead monitors and idle state roots: whatever a creator
//! or monitor that died left behind is reported as such and cleaned by
//! `rm`, a new `run` of the name, or `system prune`; the accounting
//! tracepoints exist once per host, and only while a container runs.
//!
//! The tests here look at host-wide state (the tracepoint links), so they
//! run one at a time.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Sandbox, describe, ok, pin_dir};

static HOST: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    HOST.lock().unwrap_or_else(|e| e.into_inner())
}

fn ps(sb: &Sandbox) -> Vec<Value> {
    let out = sb.palisade().args(["ps", "--json"]).output().unwrap();
    serde_json::from_str(&ok(&out)).expect("ps JSON")
}

fn ps_entry(sb: &Sandbox, name: &str) -> Option<Value> {
    ps(sb).into_iter().find(|c| c["name"] == name)
}

/// Every cgroup directory named for `name`, in every hierarchy, that exists.
fn cgroups_of(name: &str) -> Vec<PathBuf> {
    support::cgroup_mounts()
        .into_iter()
        .map(|m| m.join("palisade").join(name))
        .filter(|d| d.exists())
        .collect()
}

/// Pids of processes in a cgroup named for `name` (any hierarchy).
fn processes_of(name: &str) -> Vec<i32> {
    let suffix = format!("/palisade/{name}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| {
                c.lines()
                    .any(|l| l.ends_with(&suffix) || l.contains(&format!("{suffix}/")))
            })
        })
        .collect()
}

fn link_pins(root: &Path, name: &str) -> PathBuf {
    pin_dir(root).join("links").join(name)
}

/// Files named `link_*` (tracepoint link pins) under `dir`, recursively.
fn tracepoint_links(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(tracepoint_links(&path));
        } else if e.file_name().to_string_lossy().starts_with("link_") {
            found.push(path);
        }
    }
    found
}

/// This build's host-wide directories (`host-<hash>`) that share an
/// object hash with one of `roots`' objects.
fn host_dirs(roots: &[&Path]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in roots {
        for e in std::fs::read_dir(pin_dir(root))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(hash) = name.strip_prefix("obj-") {
                let host = Path::new("/sys/fs/bpf/palisade").join(format!("host-{hash}"));
                if host.exists() && !dirs.contains(&host) {
                    dirs.push(host);
                }
            }
        }
    }
    dirs
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = support::deadline(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `run --name NAME -- sleep 30` in the foreground and SIGKILLs the
/// CLI `delay` later.
fn kill_run_after(sb: &Sandbox, name: &str, delay: Duration) {
    let mut child = sb
        .palisade()
        .args(["run", "--name", name, "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Asserts nothing of `name` is left: no cgroup in any hierarchy, no link
/// pin, no process.
fn assert_nothing_left(sb: &Sandbox, name: &str, context: &str) {
    wait_until("the container's processes to go", || {
        processes_of(name).is_empty()
    });
    assert!(
        cgroups_of(name).is_empty(),
        "{context}: {:?}",
        cgroups_of(name)
    );
    assert!(
        !link_pins(&sb.root, name).exists(),
        "{context}: link pins left"
    );
}

/// `kill -9` of `palisade run` 0-20 ms into its start (times the
/// slowdown of an emulated guest), 50 times: whatever each left is shown
/// by `ps`, removed by `rm -f`, and the name can be used again at once.
#[test]
fn killed_starts_are_cleaned_by_rm_and_the_name_is_reusable() {
    let _serial = serial();
    let sb = Sandbox::new("killrun");
    // The first run of a state root loads the programs (seconds): not the
    // window under test.
    ok(&sb.run(None, &["true"]));
    let (mut left, mut halfway) = (0, 0);
    for i in 0..50u64 {
        let name = format!("{}-{}", sb.name, i % 3);
        let delay = Duration::from_micros((i * 7_919) % 20_001 * support::slowdown());
        kill_run_after(&sb, &name, delay);
        let context = format!("run {i}, killed after {delay:?}");
        if ps_entry(&sb, &name).is_some() {
            left += 1;
            // Its creator is dead: "dead", not "creating" or "running", once
            // the container's process (if it was forked) has gone too.
            let mut entry = Value::Null;
            wait_until("ps to say dead", || {
                entry = ps_entry(&sb, &name).unwrap_or_default();
                entry["status"] == "dead"
            });
            // Killed before the command ran, or after (then as its monitor).
            assert!(
                entry["reason"] == "creator died during start" || entry["reason"] == "monitor died",
                "{context}: {entry}"
            );
            halfway += usize::from(entry["reason"] == "creator died during start");
            let out = sb.palisade().args(["rm", "-f", &name]).output().unwrap();
            assert!(out.status.success(), "{context}: rm -f: {}", describe(&out));
        }
        assert!(ps_entry(&sb, &name).is_none(), "{context}: still listed");
        assert_nothing_left(&sb, &name, &context);
        let out = sb
            .palisade()
            .args(["run", "--name", &name, "--", "true"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{context}: run again: {}",
            describe(&out)
        );
        assert_nothing_left(&sb, &name, &context);
    }
    // The window was hit: kills landed mid-start.
    eprintln!("{left} of 50 kills left a container, {halfway} of them half-made");
    assert!(
        halfway >= 3,
        "only {halfway} of 50 kills left a container half-made"
    );
}

/// A container killed half-way through its start: a new `run` of its name
/// cleans it up and starts.
#[test]
fn run_over_a_dead_start_cleans_it_and_starts() {
    let _serial = serial();
    let sb = Sandbox::new("rerun");
    ok(&sb.run(None, &["true"]));
    let mut hit = 0;
    for i in 0..40u64 {
        let delay = Duration::from_millis((2 + i % 15) * support::slowdown());
        kill_run_after(&sb, &sb.name, delay);
        if ps_entry(&sb, &sb.name).is_none() {
            continue;
        }
        hit += 1;
        let out = sb.run(None, &["true"]);
        assert!(
            out.status.success(),
            "run over the dead start: {}",
            describe(&out)
        );
        assert!(ps_entry(&sb, &sb.name).is_none());
        assert_nothing_left(&sb, &sb.name, "after the new run");
        if hit == 5 {
            break;
        }
    }
    assert!(hit > 0, "no kill left a container half-made");
}

fn recorded_pid(sb: &Sandbox, name: &str, field: &str) -> i32 {
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(sb.root.join(name).join("state.json")).unwrap(),
    )
    .unwrap();
    state[field].as_i64().unwrap() as i32
}

/// Kills a detached container's monitor, then (a detached container
/// outlives its monitor: tests/agent.rs) its first process, both by pid,
/// and waits until the container's cgroup is empty: a container whose
/// monitor died and whose processes are gone.
fn kill_monitor(sb: &Sandbox, name: &str) {
    for field in ["monitor_pid", "pid"] {
        let pid = recorded_pid(sb, name, field);
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    wait_until("the container's processes to go", || {
        processes_of(name).is_empty()
    });
}

/// One scrape of `palisade agent --metrics-addr`'s `/metrics`.
fn scrape_metrics(sb: &Sandbox) -> String {
    let agent = support::agent::Agent::start(sb, &["--metrics-addr", "127.0.0.1:0"]);
    let body = Command::new("curl")
        .args(["-s", &agent.metrics_url()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&body.stdout).into_owned()
}

/// With its monitor killed, a container is `dead` (monitor died) in `ps`,
/// `stats` and the metrics; `kill` refuses it (125, saying why); plain `rm` removes it and
/// everything of it.
#[test]
fn a_dead_monitor_is_reported_and_rm_cleans_up() {
    let _serial = serial();
    let sb = Sandbox::new("deadmon");
    sb.start_sleeping(&[]);
    kill_monitor(&sb, &sb.name);

    let entry = ps_entry(&sb, &sb.name).expect("listed");
    assert_eq!(entry["status"], "dead", "{entry}");
    assert_eq!(entry["reason"], "monitor died", "{entry}");
    let table = ok(&sb.palisade().arg("ps").output().unwrap());
    assert!(table.contains("dead (monitor died)"), "{table}");
    let out = sb
        .palisade()
        .args(["stats", "--json", &sb.name])
        .output()
        .unwrap();
    let stats: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(stats[0]["status"], "dead", "{stats}");
    assert_eq!(stats[0]["reason"], "monitor died", "{stats}");
    let table = ok(&sb.palisade().arg("stats").output().unwrap());
    assert!(!table.contains("running"), "{table}");
    let metrics = scrape_metrics(&sb);
    assert!(
        metrics.contains("palisade_containers{status=\"dead\"} 1")
            && metrics.contains("palisade_containers{status=\"running\"} 0"),
        "{metrics}"
    );

    let out = sb.palisade().args(["kill", &sb.name]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not running") && stderr.contains("monitor died"),
        "{stderr}"
    );

    assert!(!cgroups_of(&sb.name).is_empty(), "still there before rm");
    let out = sb.palisade().args(["rm", &sb.name]).output().unwrap();
    assert!(out.status.success(), "rm: {}", describe(&out));
    assert!(ps_entry(&sb, &sb.name).is_none());
    assert_nothing_left(&sb, &sb.name, "after rm");
}

/// Two state roots with a container each share one set of tracepoint
/// links, in the host's directory. `system prune` on a root with a dead
/// container removes it (and the root's pins) and leaves the other root's
/// container policed. Once no container runs, no tracepoint link is left.
#[test]
fn tracepoints_once_per_host_and_prune_removes_only_debris() {
    let _serial = serial();
    let a = Sandbox::new("prunea");
    let b = Sandbox::new("pruneb");
    a.start_sleeping(&[]);
    let port = support::listen_tcp(&["127.0.0.1"]);
    let deny = b.connect_policy(&["deny tcp 127.0.0.1/32", "allow any"]);
    b.start_sleeping(&["--policy", deny.to_str().unwrap()]);

    let roots = [a.root.as_path(), b.root.as_path()];
    let hosts = host_dirs(&roots);
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let mut links: Vec<String> = tracepoint_links(&hosts[0])
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    links.sort();
    assert_eq!(links, ["link_task_exit"]);
    for root in roots {
        assert!(
            tracepoint_links(&pin_dir(root)).is_empty(),
            "a root attaches no tracepoint of its own: {:?}",
            tracepoint_links(&pin_dir(root))
        );
    }

    // Root a: its container's monitor dies; prune removes it all.
    kill_monitor(&a, &a.name);
    let out = a
        .palisade()
        .args(["system", "prune", "--json"])
        .output()
        .unwrap();
    let pruned: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(
        pruned["containers"],
        serde_json::json!([a.name]),
        "{pruned}"
    );
    // The root's journal is no abandoned reservation.
    assert_eq!(pruned["staging"], serde_json::json!([]), "{pruned}");
    assert!(a.root.join(".journal").join("events").is_file());
    assert!(ps(&a).is_empty());
    assert_nothing_left(&a, &a.name, "after prune");
    assert!(!pin_dir(&a.root).exists(), "root a's pins are gone");

    // Root b's container is untouched and still policed.
    let entry = ps_entry(&b, &b.name).expect("b listed");
    assert_eq!(entry["status"], "running", "{entry}");
    let probe = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    print('ok')\nexcept PermissionError:\n    print('EPERM')\n"
    );
    let out = b.exec(&["python3", "-c", &probe]);
    assert_eq!(ok(&out).trim(), "EPERM");
    assert_eq!(tracepoint_links(&hosts[0]).len(), 1, "b still counted");

    // Other state roots of this build on the host (a developer's own
    // containers, another checkout's tests) keep the host's maps in use.
    let object = format!(
        "obj-{}",
        hosts[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("host-")
    );
    let others: Vec<PathBuf> = std::fs::read_dir("/sys/fs/bpf/palisade")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|d| d.join(&object).exists() && !roots.iter().any(|r| pin_dir(r) == *d))
        .collect();

    // No container left anywhere: no tracepoint runs. (A container of
    // another root, if there is one, keeps them.)
    ok(&b.palisade().args(["rm", "-f", &b.name]).output().unwrap());
    if others.is_empty() {
        assert!(
            tracepoint_links(&hosts[0]).is_empty(),
            "tracepoints detached with the last container: {:?}",
            tracepoint_links(&hosts[0])
        );
    }
    ok(&b.palisade().args(["system", "prune"]).output().unwrap());
    assert!(!pin_dir(&b.root).exists(), "root b's pins are gone");
    if others.is_empty() {
        assert!(!hosts[0].exists(), "the host's pins go with the last root");
    } else {
        assert!(
            hosts[0].exists(),
            "the host's maps stay while other roots use them: {others:?}"
        );
    }
}
