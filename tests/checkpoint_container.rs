//! Checkpoint and restore of whole containers: `palisade checkpoint NAME`
//! freezes the container, dumps its tree and removes it; `palisade
//! restore --dir DIR -d` makes it again from its recipe, under the same
//! policy, with the same pids inside its pid namespace.

use std::{
    fs,
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

mod support;

use support::{Sandbox, describe, listen_tcp};

/// A python3 loop in the container: every 100 ms it prints a counter,
/// and once `/mnt/go` exists, the outcome of a connect to each of the
/// two ports (so no socket is open at the checkpoint).
fn script(allowed: u16, denied: u16) -> String {
    format!(
        "import os, socket, time\n\
         i = 0\n\
         while True:\n\
         \x20   i += 1\n\
         \x20   out = [str(i)]\n\
         \x20   if os.path.exists('/mnt/go'):\n\
         \x20       for port in ({allowed}, {denied}):\n\
         \x20           s = socket.socket()\n\
         \x20           try:\n\
         \x20               s.connect(('127.0.0.1', port))\n\
         \x20               out.append('ok')\n\
         \x20           except PermissionError:\n\
         \x20               out.append('denied')\n\
         \x20           except OSError as e:\n\
         \x20               out.append('errno%d' % e.errno)\n\
         \x20           s.close()\n\
         \x20   print(' '.join(out), flush=True)\n\
         \x20   time.sleep(0.1)\n"
    )
}

fn log_lines(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.root.join(&sb.name).join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn last_count(sb: &Sandbox) -> u64 {
    log_lines(sb)
        .iter()
        .rev()
        .find_map(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the counting container detached, with `share` bound at /mnt (a directory the host root has).
fn start(sb: &Sandbox, share: &Path, policy: &Path, script: &str) {
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--policy"])
        .arg(policy)
        .arg("--mount")
        .arg(format!("{}:/mnt", share.display()))
        .args(["--", "python3", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "run: {}", describe(&out));
    sb.wait_running();
    wait_for("the container to count", || last_count(sb) >= 3);
}

/// `palisade checkpoint NAME --dir IMAGE`, which must succeed.
fn checkpoint(sb: &Sandbox, image: &Path) -> std::process::Output {
    let out = sb
        .palisade()
        .args(["checkpoint", &sb.name, "--dir"])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "checkpoint: {}", describe(&out));
    out
}

fn state(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(sb.root.join(&sb.name).join("state.json")).unwrap())
        .unwrap()
}

#[test]
fn a_container_restores_under_its_policy_and_counts_on() {
    let sb = Sandbox::new("ckpt-ctr");
    let allowed = listen_tcp(&["127.0.0.1"]);
    let denied = listen_tcp(&["127.0.0.1"]);
    let policy = sb.connect_policy(&[&format!("allow tcp 127.0.0.1/32:{allowed}"), "deny any"]);
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(allowed, denied));

    let image = sb.dir.join("image");
    // The log goes with the container: the count it had reached is read
    // just before (it may print one more line before it is frozen).
    let before = last_count(&sb);
    let out = checkpoint(&sb, &image);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ended and removed"),
        "{}",
        describe(&out)
    );
    let out = sb.palisade().args(["ps"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&sb.name),
        "the container is gone: {}",
        describe(&out)
    );
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(image.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["body"]["root"], 1, "pids are the container's own");
    let at_checkpoint = last_count(&sb);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        last_count(&sb),
        at_checkpoint,
        "nothing counts while it is gone"
    );

    let out = sb
        .palisade()
        .args(["restore", "-d", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", describe(&out));
    let pid = sb.wait_running();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "pid 1 of its namespace: {nspid}");
    assert!(status.contains("Seccomp:\t2"), "its seccomp filter is back");
    wait_for("the restored container to count on", || {
        last_count(&sb) >= before + 3
    });
    // The new log starts where the old one ended, not at 1.
    let first: u64 = log_lines(&sb)[0]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first > before && first <= before + 3,
        "it went on from {before}, not from the start: first line {first}"
    );
    // The restored process itself is still under the policy.
    fs::write(share.join("go"), "").unwrap();
    wait_for("a connect report", || {
        log_lines(&sb).iter().any(|l| l.split(' ').count() == 3)
    });
    let report = log_lines(&sb)
        .into_iter()
        .rfind(|l| l.split(' ').count() == 3)
        .unwrap();
    assert!(
        report.ends_with(" ok denied"),
        "allowed then denied: {report}"
    );
    assert_eq!(state(&sb)["status"], "running");
}

#[test]
fn leave_running_keeps_the_container_and_its_image_restores_later() {
    let sb = Sandbox::new("ckpt-ctr-lr");
    let port = listen_tcp(&["127.0.0.1"]);
    let policy = sb.connect_policy(&["deny any"]);
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(port, port));
    let pid = state(&sb)["pid"].as_i64().unwrap();
    let image = sb.dir.join("image");
    let out = sb
        .palisade()
        .args(["checkpoint", "--leave-running", &sb.name, "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "checkpoint: {}", describe(&out));
    assert_eq!(state(&sb)["status"], "running");
    assert_eq!(
        state(&sb)["pid"].as_i64().unwrap(),
        pid,
        "the same container"
    );
    let now = last_count(&sb);
    wait_for("it to count on", || last_count(&sb) >= now + 3);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "{status}");

    // While it runs, its name is taken: a restore under it is refused.
    let out = sb
        .palisade()
        .args(["restore", "-d", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        describe(&out)
    );
    // Under another name it restores beside the original.
    let other = format!("{}-copy", sb.name);
    let out = sb
        .palisade()
        .args(["restore", "-d", "--name", &other, "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", describe(&out));
    let copy_log = sb.root.join(&other).join("log");
    wait_for("the copy to count", || {
        fs::read_to_string(&copy_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .any(|n| n > now)
    });
}

#[test]
fn a_process_outside_the_tree_is_refused_and_the_container_runs_on() {
    let sb = Sandbox::new("ckpt-ctr-exec");
    let policy = sb.policy("");
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(1, 1));
    let mut exec = sb
        .palisade()
        .args(["exec", &sb.name, "--", "sleep", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cgroup = sb.unified_dir();
    wait_for("the exec'd process", || {
        fs::read_to_string(cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 2
    });
    let image = sb.dir.join("image");
    let out = sb
        .palisade()
        .args(["checkpoint", &sb.name, "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a descendant of its first process"),
        "{}",
        describe(&out)
    );
    assert!(!image.exists(), "no image is written");
    assert_eq!(state(&sb)["status"], "running");
    let now = last_count(&sb);
    wait_for("it to count on", || last_count(&sb) >= now + 2);
    let _ = exec.kill();
    let _ = exec.wait();
}

/// Restored in the foreground (no `-d`), the container's output — its log
/// when it was checkpointed — goes to `restore`'s own stdout, and restore
/// waits for it like `run`.
#[test]
fn a_foreground_restore_prints_the_containers_output() {
    use std::io::BufRead;
    let sb = Sandbox::new("ckpt-ctr-fg");
    let policy = sb.policy("");
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(1, 1));
    let image = sb.dir.join("image");
    let before = last_count(&sb);
    checkpoint(&sb, &image);
    let mut fg = sb
        .palisade()
        .args(["restore", "--dir"])
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(fg.stdout.take().unwrap()).lines();
    let first: u64 = lines
        .next()
        .expect("the restored container prints")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first > before && first <= before + 3,
        "it went on from {before}: first line {first}"
    );
    let second: u64 = lines.next().unwrap().unwrap().parse().unwrap();
    assert_eq!(second, first + 1);
    let out = sb.palisade().args(["rm", "-f", &sb.name]).output().unwrap();
    assert!(out.status.success(), "rm: {}", describe(&out));
    let status = fg.wait().unwrap();
    assert_eq!(status.code(), Some(137), "restore ends with its container");
}
