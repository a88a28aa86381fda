//! The container's process: pid 1 of its own namespaces, exit status,
//! signals, stdio, and cleanup of its cgroups.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    process::Stdio,
};

use support::Sandbox;

#[test]
fn exit_status_is_the_commands() {
    let sb = Sandbox::new("exit");
    let out = sb.run(None, &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

#[test]
fn command_is_pid_1_with_its_own_proc_and_hostname() {
    let sb = Sandbox::new("pid1");
    let script = "import os, socket; print(os.getpid()); print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit())); print(socket.gethostname())";
    let out = sb.run(None, &["python3", "-c", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["1", "[1]", sb.name.as_str()]);
}

/// From the host, the container's process is in `palisade/NAME` on every
/// hierarchy; from inside, its cgroup namespace shows that cgroup as `/`.
#[test]
fn the_command_lives_in_the_containers_cgroups() {
    let sb = Sandbox::new("cg");
    let mut child = sb
        .palisade()
        .args([
            "run",
            "--name",
            &sb.name,
            "--",
            "sh",
            "-c",
            "cat /proc/self/cgroup; sleep 600",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = sb.wait_running();
    let host_view = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let suffix = format!("/palisade/{}", sb.name);
    let unified = host_view
        .lines()
        .find(|l| l.starts_with("0::"))
        .expect("a cgroup v2 line");
    assert!(unified.ends_with(&suffix), "{host_view}");
    let v1_lines = host_view
        .lines()
        .filter(|l| !l.starts_with("0::") && !l.contains("name="))
        .count();
    let in_ours = host_view
        .lines()
        .filter(|l| !l.starts_with("0::") && l.ends_with(&suffix))
        .count();
    assert_eq!(
        in_ours, v1_lines,
        "every v1 controller hierarchy: {host_view}"
    );
    // Read what the command printed (up to its cgroup v2 line) before
    // ending it: "running" means it was exec'd, not that it has printed.
    let mut inside = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.starts_with("0::");
        inside.push(line);
        if done {
            break;
        }
    }
    kill(pid, libc::SIGKILL);
    child.wait().unwrap();
    assert!(
        inside.iter().any(|l| l == "0::/"),
        "cgroup namespace: {inside:?}"
    );
    assert!(sb.leftover_cgroups().is_empty());
}

#[test]
fn killed_by_sigkill_exits_137_and_cleans_up() {
    let sb = Sandbox::new("kill");
    let mut child = sb
        .palisade()
        .args(["run", "--name", &sb.name, "--", "sleep", "600"])
        .spawn()
        .expect("spawn palisade");
    let pid = sb.wait_running();
    assert_eq!(kill(pid, libc::SIGKILL), 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

#[test]
fn sigterm_to_palisade_reaches_the_command() {
    let sb = Sandbox::new("term");
    let script = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(42))\nprint('ready', flush=True)\ntime.sleep(600)";
    let mut child = sb
        .palisade()
        .args(["run", "--name", &sb.name, "--", "python3", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn palisade");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    assert_eq!(kill(child.id() as i32, libc::SIGTERM), 0);
    assert_eq!(child.wait().unwrap().code(), Some(42));
    assert!(sb.leftover_cgroups().is_empty());
}

#[test]
fn stdin_and_stdout_pass_through() {
    let sb = Sandbox::new("stdio");
    let mut child = sb
        .palisade()
        .args(["run", "--name", &sb.name, "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    assert!(out.status.success());
}

#[test]
fn a_missing_command_exits_127_and_cleans_up() {
    let sb = Sandbox::new("nocmd");
    let out = sb.run(None, &["/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/program"));
    assert!(sb.leftover_cgroups().is_empty());
}

#[test]
fn a_second_container_of_the_same_name_is_refused() {
    let sb = Sandbox::new("dup");
    let mut first = sb
        .palisade()
        .args(["run", "--name", &sb.name, "--", "sleep", "600"])
        .spawn()
        .unwrap();
    let pid = sb.wait_running();
    let out = sb.run(None, &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the refused run must not have removed the first container's cgroups
    assert!(sb.unified_dir().exists());
    kill(pid, libc::SIGKILL);
    assert_eq!(first.wait().unwrap().code(), Some(137));
    assert!(sb.leftover_cgroups().is_empty());
}

fn kill(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one
    // this test started (or its container's init).
    unsafe { libc::kill(pid, sig) }
}

/// A pure cgroup v2 host, as palisade sees one: in a private mount
/// namespace the v1 hierarchies are unmounted and cgroup2 is mounted at
/// /sys/fs/cgroup. palisade must find it there, create its cgroup in it
/// only, police connects through it and remove it.
#[test]
fn pure_cgroup_v2_layout_is_detected_and_policed() {
    let sb = Sandbox::new("v2");
    let port = support::listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    let script = format!(
        "set -e; umount -l /sys/fs/cgroup; mount -t cgroup2 none /sys/fs/cgroup; \
         {bin} run -d --name {name} --policy {policy} -- bash -c '\
           (echo > /dev/tcp/127.0.0.1/{port}) && echo allowed; \
           (echo > /dev/tcp/127.0.0.2/{port}) 2>&1 || echo denied; sleep 1'; \
         test -d /sys/fs/cgroup/palisade/{name} && echo v2-dir; \
         {bin} wait {name}; {bin} logs {name}; {bin} rm {name}; \
         test ! -e /sys/fs/cgroup/palisade/{name} && echo removed",
        bin = env!("CARGO_BIN_EXE_palisade"),
        name = sb.name,
        policy = policy.display(),
    );
    let out = std::process::Command::new("unshare")
        .env("PALISADE_ROOT", &sb.root)
        .args(["--mount", "--propagation", "private", "bash", "-c", &script])
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its cgroup is in the only hierarchy palisade could see.
    assert!(stdout.contains("v2-dir\n"), "{stdout}");
    assert!(stdout.contains("allowed\n"), "{stdout}");
    assert!(
        stdout.contains("Operation not permitted") && stdout.contains("denied\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("removed\n"), "{stdout}");
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}
