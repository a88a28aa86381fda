//! palisade as the OCI runtime of real clients: podman (through conmon),
//! containerd (through its runc shim v2, driven with ctr), and the
//! configuration README.md gives for them and for Kubernetes. Each test
//! drives a private client (tests/support/oci.rs) and asserts what a user
//! of that client sees: exit codes, output, a frozen counter, an OOM kill,
//! a refused fork, a denied connect, nothing left behind.
//!
//! `PALISADE_OCI_TEST_RUNTIME=/usr/sbin/runc` runs the same tests against
//! runc, to validate the tests themselves; the policy annotation checks
//! are then skipped (runc ignores io.palisade annotations).

mod support;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};
use support::oci::{self, Containerd, IMAGE, Podman};

/// The exit code of a client command.
fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `check` every 50 ms until it holds or `secs` have passed.
fn wait_until(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = support::deadline(secs);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A container's main process: counts, replacing /tmp/count by rename so
/// that a reader (or a freeze) never finds it half-written.
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; \
                       mv /tmp/count.new /tmp/count; usleep 20000; done";

/// The counter of the container whose first process is `pid`, read from
/// the host through /proc/PID/root.
fn count(pid: i32) -> u64 {
    let path = format!("/proc/{pid}/root/tmp/count");
    let mut value = None;
    // Absent until the first count.
    assert!(
        wait_until(5, || {
            value = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            value.is_some()
        }),
        "no count in {path}"
    );
    value.unwrap()
}

/// Proves a container was frozen: its counter stands still for a second.
/// Then `resume` runs and the counter must move again.
fn assert_frozen_then_thawed(pid: i32, resume: impl FnOnce()) {
    let before = count(pid);
    thread::sleep(Duration::from_secs(1));
    let after = count(pid);
    assert_eq!(before, after, "the counter advanced while paused");
    resume();
    assert!(
        wait_until(10, || count(pid) > after),
        "the counter did not advance after resume (stuck at {after})"
    );
}

/// A policy that denies TCP connects to 127.0.0.1 (README: Policy file).
/// On one line: podman keeps only the first line of an annotation.
const DENY_LOOPBACK: &str = "network = { connect = [\"deny tcp 127.0.0.1/32\", \"allow any\"] }";

/// A shell line that connects to 127.0.0.1:PORT and prints `rc=N`.
fn connect_probe(port: u16) -> String {
    format!("nc -w 5 127.0.0.1 {port} </dev/null; echo rc=$?")
}

/// The connect succeeded (`rc=0`).
fn assert_connected(out: &Output) {
    assert!(
        out.status.success() && stdout(out).contains("rc=0"),
        "the connect without a policy failed: {}",
        support::describe(out)
    );
}

/// The connect was refused by the policy: EPERM.
fn assert_denied(out: &Output) {
    assert!(
        stdout(out).contains("rc=1") && stderr(out).contains("Operation not permitted"),
        "the connect was not denied with EPERM: {}",
        support::describe(out)
    );
}

/// Skips `test` unless the runtime reads io.palisade annotations; returns
/// whether to go on.
fn reads_palisade_annotations(test: &str) -> bool {
    if oci::runtime_is_palisade() {
        return true;
    }
    support::skip(
        test,
        &format!("{} ignores io.palisade annotations", oci::runtime_name()),
    );
    false
}

/// The fenced block that follows `marker` in README.md.
fn readme_block(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("read README.md");
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no line {marker}"))
        .1;
    let mut lines = after.lines().skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "README.md: {marker} must be followed by a fenced block, found {fence:?}"
    );
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

// ---------------------------------------------------------------- podman

#[test]
fn podman_run_returns_the_exit_code() {
    let Some(pod) = Podman::new("podman_run_returns_the_exit_code") else {
        return;
    };
    let out = pod.run(&["--rm", "--network", "none"], &["sh", "-c", "exit 7"]);
    assert_eq!(code(&out), Some(7), "{}", support::describe(&out));
    assert!(
        pod.ok(&["ps", "-aq"]).trim().is_empty(),
        "--rm left a container"
    );
}

#[test]
fn podman_detached_container_is_listed_and_logs() {
    let Some(pod) = Podman::new("podman_detached_container_is_listed_and_logs") else {
        return;
    };
    let pid = pod.run_detached("web", &[], "echo hello-from-web; sleep 600");
    assert!(alive(pid));
    let ps = pod.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        ps.lines().any(|l| l.starts_with("web Up")),
        "podman ps does not show web running:\n{ps}"
    );
    assert_eq!(pod.inspect("web", "{{.State.Status}}"), "running");
    assert!(
        wait_until(10, || pod.ok(&["logs", "web"]).contains("hello-from-web")),
        "podman logs never showed the container's output"
    );
}

#[test]
fn podman_stop_ends_the_container() {
    let Some(pod) = Podman::new("podman_stop_ends_the_container") else {
        return;
    };
    // Exits 0 on SIGTERM: a clean stop proves the runtime's kill delivered it.
    let pid = pod.run_detached(
        "stopme",
        &[],
        "trap 'exit 0' TERM; while :; do usleep 50000; done",
    );
    let started = Instant::now();
    pod.ok(&["stop", "-t", "30", "stopme"]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "podman stop took {took:?}: SIGTERM did not end it, the 30 s fallback did"
    );
    assert_eq!(pod.inspect("stopme", "{{.State.Status}}"), "exited");
    assert_eq!(pod.inspect("stopme", "{{.State.ExitCode}}"), "0");
    assert!(
        wait_until(10, || !alive(pid)),
        "pid {pid} outlived podman stop"
    );
}

#[test]
fn podman_exec_returns_output_and_status() {
    let Some(pod) = Podman::new("podman_exec_returns_output_and_status") else {
        return;
    };
    pod.run_detached("ex", &[], "sleep 600");
    let out = pod.podman(&["exec", "ex", "sh", "-c", "echo out-$((6*7)); exit 3"]);
    assert_eq!(code(&out), Some(3), "{}", support::describe(&out));
    assert_eq!(stdout(&out), "out-42\n");
}

#[test]
fn podman_pause_freezes_and_unpause_thaws() {
    let Some(pod) = Podman::new("podman_pause_freezes_and_unpause_thaws") else {
        return;
    };
    let pid = pod.run_detached("counter", &[], COUNTER);
    let first = count(pid);
    assert!(
        wait_until(10, || count(pid) > first),
        "the counter never ran"
    );
    pod.ok(&["pause", "counter"]);
    assert_eq!(pod.inspect("counter", "{{.State.Status}}"), "paused");
    assert_frozen_then_thawed(pid, || {
        pod.ok(&["unpause", "counter"]);
    });
    assert_eq!(pod.inspect("counter", "{{.State.Status}}"), "running");
}

#[test]
fn podman_tty_gives_a_terminal() {
    let Some(pod) = Podman::new("podman_tty_gives_a_terminal") else {
        return;
    };
    let mut args = pod.args();
    args.push("run".into());
    args.extend(pod.run_flags());
    for a in ["--rm", "-t", "--network", "none", IMAGE, "sh", "-c"] {
        args.push(a.into());
    }
    args.push("test -t 0 && test -t 1 && tty".into());
    // podman -t needs a terminal of its own: script gives it one.
    let out = Command::new("script")
        .args(["-qec", &oci::shell_line("podman", &args), "/dev/null"])
        .envs(pod.envs())
        .current_dir(&pod.dir)
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    assert_eq!(code(&out), Some(0), "{}", support::describe(&out));
    assert!(
        stdout(&out).contains("/dev/pts/"),
        "tty inside did not print a pts: {}",
        support::describe(&out)
    );
    // And without -t there is none.
    let out = pod.run(
        &["--rm", "--network", "none"],
        &["sh", "-c", "test -t 1 || echo no-tty"],
    );
    assert_eq!(stdout(&out), "no-tty\n", "{}", support::describe(&out));
}

/// Touches 64 MiB (busybox dd allocates its block and reads into it).
const DD_64M: [&str; 5] = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];

#[test]
fn podman_memory_limit_is_enforced() {
    let Some(pod) = Podman::new("podman_memory_limit_is_enforced") else {
        return;
    };
    let out = pod.run(&["--rm", "--network", "none"], &DD_64M);
    assert_eq!(
        code(&out),
        Some(0),
        "without a limit: {}",
        support::describe(&out)
    );
    let out = pod.run(
        &[
            "--rm",
            "--network",
            "none",
            "--memory",
            "32m",
            "--memory-swap",
            "32m",
        ],
        &DD_64M,
    );
    assert_eq!(
        code(&out),
        Some(137),
        "64 MiB under --memory 32m was not OOM-killed: {}",
        support::describe(&out)
    );
}

/// Starts 16 background sleeps and prints how many processes it saw.
const FORK_16: &str = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do sleep 30 & done; \
                       n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo procs=$n";

#[test]
fn podman_pids_limit_is_enforced() {
    let Some(pod) = Podman::new("podman_pids_limit_is_enforced") else {
        return;
    };
    let out = pod.run(&["--rm", "--network", "none"], &["sh", "-c", FORK_16]);
    assert!(
        stdout(&out).contains("procs=17"),
        "without a limit: {}",
        support::describe(&out)
    );
    let out = pod.run(
        &["--rm", "--network", "none", "--pids-limit", "8"],
        &["sh", "-c", FORK_16],
    );
    assert!(
        stderr(&out).contains("can't fork") && !stdout(&out).contains("procs=17"),
        "16 forks under --pids-limit 8 all succeeded: {}",
        support::describe(&out)
    );
}

#[test]
fn podman_policy_annotation_denies_connect() {
    let test = "podman_policy_annotation_denies_connect";
    let Some(pod) = Podman::new(test) else {
        return;
    };
    let port = support::listen_tcp(&["127.0.0.1"]);
    let probe = connect_probe(port);
    assert_connected(&pod.run(&["--rm", "--network", "host"], &["sh", "-c", &probe]));
    if !reads_palisade_annotations(test) {
        return;
    }
    // podman reads --annotation as CSV: the value's quotes are doubled
    // and the whole field quoted.
    let annotation = format!(
        "\"io.palisade.policy={}\"",
        DENY_LOOPBACK.replace('"', "\"\"")
    );
    assert_denied(&pod.run(
        &["--rm", "--network", "host", "--annotation", &annotation],
        &["sh", "-c", &probe],
    ));
}

/// A policy podman cut at its first line ("[network]" alone) would police
/// nothing: the container is refused, and nothing of it is left.
#[test]
fn podman_truncated_policy_annotation_is_refused() {
    let test = "podman_truncated_policy_annotation_is_refused";
    let Some(pod) = Podman::new(test) else {
        return;
    };
    if !reads_palisade_annotations(test) {
        return;
    }
    let annotation = "io.palisade.policy=[network]\nconnect = [\"deny any\"]\n";
    let out = pod.run(
        &["--rm", "--network", "host", "--annotation", annotation],
        &["true"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("sets no rule"),
        "{}",
        support::describe(&out)
    );
    assert!(
        wait_until(10, || oci::state_entries(&pod.state_root).is_empty()),
        "left in the runtime's state root: {:?}",
        oci::state_entries(&pod.state_root)
    );
}

#[test]
fn podman_policy_file_annotation_denies_connect() {
    let test = "podman_policy_file_annotation_denies_connect";
    let Some(pod) = Podman::new(test) else {
        return;
    };
    let port = support::listen_tcp(&["127.0.0.1"]);
    let probe = connect_probe(port);
    assert_connected(&pod.run(&["--rm", "--network", "host"], &["sh", "-c", &probe]));
    if !reads_palisade_annotations(test) {
        return;
    }
    let file = pod.dir.join("policy.toml");
    std::fs::write(&file, DENY_LOOPBACK).expect("write policy");
    let annotation = format!("io.palisade.policy-file={}", file.display());
    assert_denied(&pod.run(
        &["--rm", "--network", "host", "--annotation", &annotation],
        &["sh", "-c", &probe],
    ));
}

#[test]
fn podman_rm_leaves_nothing_behind() {
    let Some(pod) = Podman::new("podman_rm_leaves_nothing_behind") else {
        return;
    };
    // One removed while running, one after it exited on its own (podman's
    // cleanup process deletes that one from the runtime).
    let pid = pod.run_detached("running", &[], "sleep 600");
    let running = pod.inspect("running", "{{.Id}}");
    // Long enough to be seen running (podman inspect) before it exits.
    let quick_run = format!("usleep {}", 200_000 * support::slowdown());
    pod.run_detached("quick", &[], &quick_run);
    assert!(
        wait_until(20, || pod.inspect("quick", "{{.State.Status}}") == "exited"),
        "quick never exited"
    );
    let quick = pod.inspect("quick", "{{.Id}}");
    pod.ok(&["rm", "-f", "-t", "0", "running"]);
    pod.ok(&["rm", "quick"]);
    assert!(
        pod.ok(&["ps", "-aq"]).trim().is_empty(),
        "podman still lists a container"
    );
    assert!(
        wait_until(10, || !alive(pid)),
        "pid {pid} outlived podman rm -f"
    );
    assert!(
        wait_until(10, || oci::state_entries(&pod.state_root).is_empty()),
        "left in the runtime's state root {}: {:?}",
        pod.state_root.display(),
        oci::state_entries(&pod.state_root)
    );
    let mut left = oci::cgroups_named(&running);
    left.extend(oci::cgroups_named(&quick));
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

// ------------------------------------------------------------ containerd

#[test]
fn containerd_run_returns_the_exit_code() {
    let Some(ctd) = Containerd::start("containerd_run_returns_the_exit_code") else {
        return;
    };
    let out = ctd.run(&["--rm"], "exit7", &["sh", "-c", "exit 7"]);
    assert_eq!(code(&out), Some(7), "{}", support::describe(&out));
    assert!(
        ctd.ok(&["containers", "ls", "-q"]).trim().is_empty(),
        "--rm left a container"
    );
}

#[test]
fn containerd_detached_task_runs_and_execs() {
    let Some(ctd) = Containerd::start("containerd_detached_task_runs_and_execs") else {
        return;
    };
    let pid = ctd.run_detached("box", &[], "sleep 600");
    assert!(alive(pid));
    let fifo = ctd.dir.join("fifo");
    let out = ctd
        .ctr()
        .args(["task", "exec", "--exec-id", "x1", "--fifo-dir"])
        .arg(&fifo)
        .args(["box", "sh", "-c", "echo out-$((6*7)); exit 3"])
        .output()
        .expect("run ctr");
    assert_eq!(code(&out), Some(3), "{}", support::describe(&out));
    assert_eq!(stdout(&out), "out-42\n");
    let ps = ctd.ok(&["task", "ps", "box"]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "ctr task ps does not list the init pid {pid}:\n{ps}"
    );
}

#[test]
fn containerd_pause_freezes_and_resume_thaws() {
    let Some(ctd) = Containerd::start("containerd_pause_freezes_and_resume_thaws") else {
        return;
    };
    let pid = ctd.run_detached("counter", &[], COUNTER);
    let first = count(pid);
    assert!(
        wait_until(10, || count(pid) > first),
        "the counter never ran"
    );
    ctd.ok(&["task", "pause", "counter"]);
    assert_eq!(ctd.task("counter").map(|t| t.1).as_deref(), Some("PAUSED"));
    assert_frozen_then_thawed(pid, || {
        ctd.ok(&["task", "resume", "counter"]);
    });
    assert_eq!(ctd.task("counter").map(|t| t.1).as_deref(), Some("RUNNING"));
}

#[test]
fn containerd_kill_and_delete_leave_nothing_behind() {
    let Some(ctd) = Containerd::start("containerd_kill_and_delete_leave_nothing_behind") else {
        return;
    };
    let pid = ctd.run_detached(
        "victim",
        &[],
        "trap 'exit 0' TERM; while :; do usleep 50000; done",
    );
    let started = Instant::now();
    ctd.ok(&["task", "kill", "victim"]);
    assert!(
        wait_until(15, || ctd.task("victim").map(|t| t.1).as_deref()
            == Some("STOPPED")),
        "the task did not stop after ctr task kill (SIGTERM)"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        wait_until(10, || !alive(pid)),
        "pid {pid} outlived the kill"
    );
    ctd.ok(&["task", "delete", "victim"]);
    ctd.ok(&["containers", "rm", "victim"]);
    assert!(ctd.ok(&["task", "ls", "-q"]).trim().is_empty());
    assert!(ctd.ok(&["containers", "ls", "-q"]).trim().is_empty());
    assert!(
        wait_until(10, || oci::state_entries(&ctd.state_root()).is_empty()),
        "left in the runtime's state root {}: {:?}",
        ctd.state_root().display(),
        oci::state_entries(&ctd.state_root())
    );
    let mut left: Vec<_> = ctd
        .cgroup_dirs("victim")
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    // Wherever else the runtime may have put them (it is the only test
    // with a task of that name).
    left.extend(oci::cgroups_named("victim"));
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

#[test]
fn containerd_memory_limit_is_enforced() {
    let Some(ctd) = Containerd::start("containerd_memory_limit_is_enforced") else {
        return;
    };
    let out = ctd.run(&["--rm"], "free", &DD_64M);
    assert_eq!(
        code(&out),
        Some(0),
        "without a limit: {}",
        support::describe(&out)
    );
    let out = ctd.run(&["--rm", "--memory-limit", "33554432"], "capped", &DD_64M);
    assert_eq!(
        code(&out),
        Some(137),
        "64 MiB under --memory-limit 32 MiB was not OOM-killed: {}",
        support::describe(&out)
    );
}

#[test]
fn containerd_policy_annotation_denies_connect() {
    let test = "containerd_policy_annotation_denies_connect";
    let Some(ctd) = Containerd::start(test) else {
        return;
    };
    let port = support::listen_tcp(&["127.0.0.1"]);
    let probe = connect_probe(port);
    assert_connected(&ctd.run(&["--rm", "--net-host"], "open", &["sh", "-c", &probe]));
    if !reads_palisade_annotations(test) {
        return;
    }
    let annotation = format!("io.palisade.policy={DENY_LOOPBACK}");
    assert_denied(&ctd.run(
        &["--rm", "--net-host", "--annotation", &annotation],
        "denied",
        &["sh", "-c", &probe],
    ));
}

// ------------------------------------------------ README configurations

const CONTAINERD_MARKER: &str = "<!-- containerd-config: tested by tests/oci_clients.rs -->";
const PODMAN_MARKER: &str = "<!-- podman-config: tested by tests/oci_clients.rs -->";
const RUNTIMECLASS_MARKER: &str = "<!-- runtimeclass: tested by tests/oci_clients.rs -->";
const INSTALLED: &str = "/usr/local/bin/palisade";

/// README's containerd snippet, with the runtime under test for the
/// installed path: containerd takes it (its own `config dump` shows the
/// runtime and its BinaryName), the CRI plugin starts with it, and a
/// container run with exactly the runtime type and options the CRI would
/// hand the shim for a `palisade` RuntimeClass works.
#[test]
fn readme_containerd_config_is_accepted_and_runs() {
    let test = "readme_containerd_config_is_accepted_and_runs";
    let snippet = readme_block(CONTAINERD_MARKER);
    assert!(snippet.contains(INSTALLED), "the snippet names {INSTALLED}");
    let runtime = oci::oci_runtime().to_string_lossy().into_owned();
    let snippet = snippet.replace(INSTALLED, &runtime);
    let Some(ctd) = Containerd::start_with(test, true, &snippet) else {
        return;
    };

    let dump = Command::new("containerd")
        .arg("--config")
        .arg(&ctd.config)
        .args(["config", "dump"])
        .stdin(Stdio::null())
        .output()
        .expect("containerd config dump");
    let dump: toml::Table = support::ok(&dump).parse().expect("config dump is TOML");
    let palisade =
        &dump["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["palisade"];
    let runtime_type = palisade["runtime_type"].as_str().expect("runtime_type");
    let binary = palisade["options"]["BinaryName"]
        .as_str()
        .expect("options.BinaryName");
    assert_eq!(runtime_type, "io.containerd.runc.v2");
    assert_eq!(binary, runtime);
    assert_ne!(
        palisade["options"]
            .get("SystemdCgroup")
            .and_then(|v| v.as_bool()),
        Some(true),
        "palisade refuses --systemd-cgroup"
    );

    let plugins = ctd.ok(&["plugins", "ls"]);
    assert!(
        plugins.lines().any(|l| l.contains("io.containerd.grpc.v1")
            && l.contains(" cri ")
            && l.trim_end().ends_with("ok")),
        "the CRI plugin did not start with the snippet:\n{plugins}\n{}",
        std::fs::read_to_string(ctd.dir.join("containerd.log")).unwrap_or_default()
    );

    let out = ctd
        .ctr()
        .args([
            "run",
            "--rm",
            "--runtime",
            runtime_type,
            "--runc-binary",
            binary,
            "--runc-root",
        ])
        .arg(ctd.runc_root())
        .arg("--fifo-dir")
        .arg(ctd.dir.join("fifo"))
        .args([IMAGE, "cri-like", "sh", "-c", "exit 7"])
        .output()
        .expect("run ctr");
    assert_eq!(code(&out), Some(7), "{}", support::describe(&out));

    let class = readme_block(RUNTIMECLASS_MARKER);
    assert!(
        class.lines().any(|l| l.trim() == "handler: palisade"),
        "the RuntimeClass must name the containerd runtime `palisade`:\n{class}"
    );
}

/// README's containers.conf snippet, with the runtime under test for the
/// installed path: `podman --runtime palisade` finds it and runs with it.
#[test]
fn readme_podman_config_runs() {
    let snippet = readme_block(PODMAN_MARKER);
    assert!(snippet.contains(INSTALLED), "the snippet names {INSTALLED}");
    let Some(pod) = Podman::with_config("readme_podman_config_runs", |pod| {
        snippet.replace(INSTALLED, &pod.runtime.to_string_lossy())
    }) else {
        return;
    };
    let info = support::ok(
        &pod.cmd_with_runtime("palisade")
            .args([
                "info",
                "--format",
                "{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Path}}",
            ])
            .output()
            .expect("podman info"),
    );
    assert_eq!(
        info.trim(),
        format!("palisade {}", pod.runtime.display()),
        "podman did not pick the palisade runtime from containers.conf"
    );
    let out = pod
        .cmd_with_runtime("palisade")
        .arg("run")
        .args(pod.run_flags())
        .args(["--rm", "--network", "none", IMAGE, "sh", "-c", "exit 7"])
        .output()
        .expect("podman run");
    assert_eq!(code(&out), Some(7), "{}", support::describe(&out));
}
