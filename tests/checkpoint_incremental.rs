//! Incremental checkpoint against the real kernel: pre-dump chains of a
//! process that writes random pages as fast as it can while it is
//! copied (tests/workloads/dirty.c, which checks every page against the
//! version it keeps), finished, restored from the chain and verified;
//! aborted chains leave no trace; broken chains are refused.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

mod support;

use support::ckpt::*;

/// Why `palisade check` says the dirty-tracking `backends` cannot work on
/// this kernel (the first that cannot), if one cannot: the test is then
/// reported skipped (asynchronous write-protection is Linux 6.7+).
fn tracking_missing(test: &str, backends: &[&str]) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["check", "--json"])
        .output()
        .expect("run palisade check");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json");
    let list = v["dirty_tracking"].as_array().expect("dirty_tracking");
    for backend in backends {
        let entry = list
            .iter()
            .find(|b| b["backend"] == *backend)
            .unwrap_or_else(|| panic!("no backend {backend} in check: {v}"));
        if entry["available"] != true {
            let why = format!(
                "dirty-tracking backend {backend}: {}",
                entry["reason"].as_str().unwrap_or("unavailable")
            );
            support::skip(test, &why);
            return true;
        }
    }
    false
}

/// `palisade --root <the workload's own state root> ARGS`.
fn pal(w: &Workload, args: &[&str]) -> Command {
    let mut cmd = palisade(&["--root"]);
    cmd.arg(w.dir.join("state")).args(args);
    cmd
}

/// Hands the workload a trigger word.
fn say(w: &Workload, word: &str) {
    let tmp = w.dir.join("trigger.tmp");
    fs::write(&tmp, word).unwrap();
    fs::rename(&tmp, w.dir.join("trigger")).unwrap();
}

/// Waits (up to 20 s) until the log has `n` lines starting with `prefix`.
fn wait_lines(w: &Workload, prefix: &str, n: usize) {
    let deadline = support::deadline(20);
    while w.log().lines().filter(|l| l.starts_with(prefix)).count() < n {
        assert!(!w.log().contains("FAIL"), "log: {}", w.log());
        assert!(
            Instant::now() < deadline,
            "no {prefix} line {n}; log: {}",
            w.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn pre_dump(w: &Workload, dir: &Path, parent: Option<&Path>, extra: &[&str]) -> Output {
    let pid = w.pid.to_string();
    let mut cmd = pal(w, &["checkpoint", "--pid", &pid, "--pre-dump", "--dir"]);
    cmd.arg(dir).args(extra);
    if let Some(p) = parent {
        cmd.arg("--parent").arg(p);
    }
    cmd.output().unwrap()
}

/// The number after `label` in a report line.
fn figure(out: &Output, label: &str) -> u64 {
    let s = String::from_utf8_lossy(&out.stdout);
    let at = s
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {s}"));
    s[..at].split_whitespace().last().unwrap().parse().unwrap()
}

/// Whether any mapping of `pid` is registered for write-protection.
fn write_protected(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("VmFlags:"))
        .any(|f| f.split_whitespace().any(|w| w == "uw"))
}

/// A chain of five pre-dumps of a process writing random pages at full
/// speed — mapping, unmapping, growing its heap and starting threads
/// between steps — then the final checkpoint and a restore from the
/// chain: every page verifies.
fn chain_restores(backend: &str) {
    if tracking_missing(
        &format!("a_chain_restores_a_busy_writer_with_{backend}"),
        &[backend],
    ) {
        return;
    }
    let mut w = Workload::start_program("dirty", &["64", "mutate"]);
    wait_lines(&w, "", 0);
    let mut extra = vec!["--track", backend];
    if backend == "ebpf" {
        // Stopped while it reads, so the recorder's set and PAGEMAP_SCAN's
        // are of the same instant and must agree page for page.
        extra.push("--cross-check");
    }
    let mut parent: Option<PathBuf> = None;
    let mut hot = 0;
    for step in 1..=5 {
        if step > 1 {
            say(&w, "mutate");
            wait_lines(&w, "MUTATED", step - 1);
        }
        let dir = w.image(&format!("pre{step}"));
        let out = pre_dump(
            &w,
            &dir,
            parent.as_deref(),
            if step == 1 { &extra } else { &extra[2..] },
        );
        assert!(out.status.success(), "pre-dump {step}: {}", text(&out));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains(&format!("generation {}, backend {backend}", step - 1)),
            "{report}"
        );
        if step > 1 && backend != "full" {
            // Nothing but what was written (or newly mapped), or left
            // for later as hot by the step before, is copied.
            assert!(
                figure(&out, "copied") <= figure(&out, "pages written") + hot,
                "{report} (hot pages left by the step before: {hot})"
            );
        }
        hot = if report.contains(" hot (") {
            figure(&out, "hot (")
        } else {
            0
        };
        assert!(support::ckpt::alive(w.pid));
        parent = Some(dir);
    }
    let (image, out) = finish_chain(&mut w, parent.as_ref().unwrap());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept from its pre-dump chain"),
        "{}",
        text(&out)
    );
    assert!(
        !w.dir
            .join("state/.tracking")
            .join(w.pid.to_string())
            .exists()
    );
    w.restore_and_verify(&image, 0);
}

/// The final checkpoint of `w`'s chain ending at `parent`, into its
/// `final` image: the image and what the checkpoint printed.
fn finish_chain(w: &mut Workload, parent: &Path) -> (PathBuf, Output) {
    let image = w.image("final");
    let mut cmd = pal(w, &["checkpoint", "--pid", &w.pid.to_string(), "--dir"]);
    cmd.arg(&image).arg("--parent").arg(parent);
    let out = w.checkpoint_by(cmd);
    (image, out)
}

#[test]
fn a_chain_restores_a_busy_writer_with_ebpf() {
    chain_restores("ebpf");
}

#[test]
fn a_chain_restores_a_busy_writer_with_pagemap_scan() {
    chain_restores("pagemap-scan");
}

#[test]
fn a_chain_restores_a_busy_writer_with_full_copies() {
    chain_restores("full");
}

/// Three pre-dumps of a writer that never pauses (two threads, 4 random
/// pages a millisecond each, as the demo's), the final checkpoint and a
/// restore: every page verifies. Eight chains, alternating the backends:
/// protecting the written pages again with PAGEMAP_SCAN's own
/// PM_SCAN_WP_MATCHING lost a write in about one chain in twelve here,
/// restoring that page's older copy.
#[test]
fn chains_under_a_writer_that_never_pauses_lose_no_write() {
    if tracking_missing(
        "chains_under_a_writer_that_never_pauses_lose_no_write",
        &["ebpf", "pagemap-scan"],
    ) {
        return;
    }
    for round in 0..8 {
        let backend = if round % 2 == 0 {
            "ebpf"
        } else {
            "pagemap-scan"
        };
        let mut w = Workload::start_program("dirty", &["64", "rate=4"]);
        let mut parent: Option<PathBuf> = None;
        for step in 1..=3 {
            let dir = w.image(&format!("pre{step}"));
            let track: &[&str] = if step == 1 {
                &["--track", backend]
            } else {
                &[]
            };
            let out = pre_dump(&w, &dir, parent.as_deref(), track);
            assert!(
                out.status.success(),
                "round {round} ({backend}), pre-dump {step}: {}",
                text(&out)
            );
            parent = Some(dir);
            thread::sleep(Duration::from_millis(200));
        }
        let (image, out) = finish_chain(&mut w, parent.as_ref().unwrap());
        assert!(
            out.status.success(),
            "round {round} ({backend}): {}",
            text(&out)
        );
        w.restore_and_verify(&image, 0);
    }
}

/// A step after the first copies only the pages written since its
/// parent: a writer of about two pages a millisecond over 256 MiB (a
/// quarter of it would take it 8 s, far more than a loaded machine
/// spends between the two steps).
fn a_step_copies_only_what_was_written(backend: &str) {
    if tracking_missing(
        &format!("a_step_copies_only_what_was_written_with_{backend}"),
        &[backend],
    ) {
        return;
    }
    let w = Workload::start_program("dirty", &["256", "rate=1"]);
    let (d1, d2) = (w.image("pre1"), w.image("pre2"));
    let out = pre_dump(&w, &d1, None, &["--track", backend]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(figure(&out, "copied") >= 256 * 256, "{}", text(&out));
    thread::sleep(Duration::from_millis(300));
    let out = pre_dump(&w, &d2, Some(&d1), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let copied = figure(&out, "copied");
    assert!(
        copied > 0 && copied <= figure(&out, "pages written"),
        "{}",
        text(&out)
    );
    assert!(copied < 256 * 256 / 4, "{}", text(&out));
    let out = pal(
        &w,
        &["checkpoint", "--pid", &w.pid.to_string(), "--stop-tracking"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_step_copies_only_what_was_written_with_ebpf() {
    a_step_copies_only_what_was_written("ebpf");
}

#[test]
fn a_step_copies_only_what_was_written_with_pagemap_scan() {
    a_step_copies_only_what_was_written("pagemap-scan");
}

/// What must be exactly as it was after tracking ends: fds, mappings
/// with their flags, and the status lines that are not counters.
fn snapshot(pid: i32) -> (Vec<String>, String, Vec<String>) {
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            format!("{:?} {:?}", e.file_name(), fs::read_link(e.path()).ok())
        })
        .collect();
    fds.sort();
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let layout: String = smaps
        .lines()
        .filter(|l| l.contains('-') && !l.contains(':') || l.starts_with("VmFlags:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let status: Vec<String> = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter(|l| {
            [
                "Name:",
                "Umask:",
                "Tgid:",
                "Pid:",
                "PPid:",
                "TracerPid:",
                "Uid:",
                "Gid:",
                "FDSize:",
                "Groups:",
                "SigBlk:",
                "SigIgn:",
                "SigCgt:",
                "CapInh:",
                "CapPrm:",
                "CapEff:",
                "Seccomp:",
                "NoNewPrivs:",
                "Cpus_allowed_list:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(str::to_string)
        .collect();
    (fds, layout, status)
}

/// `--stop-tracking` and an interrupted pre-dump (SIGINT mid-copy) each
/// leave the process exactly as it was, and a plain checkpoint of it
/// afterwards works.
#[test]
fn an_aborted_chain_leaves_the_process_as_it_was() {
    if tracking_missing(
        "an_aborted_chain_leaves_the_process_as_it_was",
        &["pagemap-scan"],
    ) {
        return;
    }
    let mut w = Workload::start_program("dirty", &["256"]);
    wait_lines(&w, "", 0);
    let before = snapshot(w.pid);
    let out = pre_dump(&w, &w.image("pre1"), None, &["--track", "pagemap-scan"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(write_protected(w.pid));
    let out = pal(
        &w,
        &["checkpoint", "--pid", &w.pid.to_string(), "--stop-tracking"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(snapshot(w.pid), before);
    // Stopping what is not tracked is refused.
    let out = pal(
        &w,
        &["checkpoint", "--pid", &w.pid.to_string(), "--stop-tracking"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Interrupted while it copies 256 MiB: its holder sees it go unsaid.
    let dir = w.image("pre-interrupted");
    let pid = w.pid.to_string();
    let mut child = pal(
        &w,
        &[
            "checkpoint",
            "--pid",
            &pid,
            "--pre-dump",
            "--track",
            "ebpf",
            "--dir",
        ],
    )
    .arg(&dir)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Once its holder is there (the copy of 256 MiB takes longer).
    let socket = w.dir.join("state/.tracking").join(&pid).join("holder.sock");
    let deadline = support::deadline(20);
    while !socket.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(write_protected(w.pid), "tracking started");
    // SAFETY: kill(2) of our own child, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    let deadline = support::deadline(10);
    while (write_protected(w.pid) || w.dir.join("state/.tracking").join(&pid).exists())
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(snapshot(w.pid), before, "after an interrupted pre-dump");
    assert!(!dir.join("manifest.json").exists());

    let image = w.image("plain");
    w.checkpoint(&image);
    w.restore_and_verify(&image, 0);
}

/// A `--parent` that is not the chain's last image is refused with the
/// process untouched and still tracked; a final image whose chain was
/// altered, or lost a link, is refused before anything is created.
#[test]
fn a_broken_chain_is_refused() {
    if tracking_missing("a_broken_chain_is_refused", &["pagemap-scan"]) {
        return;
    }
    let mut w = Workload::start_program("dirty", &["32"]);
    wait_lines(&w, "", 0);
    let (d1, d2) = (w.image("pre1"), w.image("pre2"));
    for (dir, parent) in [(&d1, None), (&d2, Some(d1.as_path()))] {
        let out = pre_dump(&w, dir, parent, &["--track", "pagemap-scan"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let pid = w.pid.to_string();
    // The session's socket hands out fds onto the process's memory: root only.
    let session = w.dir.join("state/.tracking").join(&pid);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&session).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for (parent, pre) in [(&d1, true), (&d1, false)] {
        let mut cmd = pal(&w, &["checkpoint", "--pid", &pid, "--dir"]);
        cmd.arg(w.image("stale")).arg("--parent").arg(parent);
        if pre {
            cmd.arg("--pre-dump");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not the last image"),
            "{}",
            text(&out)
        );
        assert!(!w.image("stale").exists());
        assert!(alive(w.pid) && write_protected(w.pid));
    }
    let image = w.image("final");
    let mut cmd = pal(&w, &["checkpoint", "--pid", &pid, "--dir"]);
    cmd.arg(&image).arg("--parent").arg(&d2);
    w.checkpoint_by(cmd);

    let restore = |w: &Workload| {
        let out = palisade(&["restore", "--dir"])
            .arg(&image)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(!alive(w.pid), "nothing was created");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // One byte of the first pre-dump's pages changed.
    let pages = d1.join("pages.img");
    let mut bytes = fs::read(&pages).unwrap();
    bytes[4096 * 3 + 17] ^= 0x40;
    fs::write(&pages, &bytes).unwrap();
    let err = restore(&w);
    assert!(err.contains("pre1") && err.contains("altered"), "{err}");
    bytes[4096 * 3 + 17] ^= 0x40;
    fs::write(&pages, &bytes).unwrap();
    // The first pre-dump replaced by another image.
    fs::rename(&d1, w.image("moved")).unwrap();
    let err = restore(&w);
    assert!(err.contains("pre1"), "{err}");
    fs::rename(w.image("moved"), &d1).unwrap();
    // Whole again, it restores.
    w.restore_and_verify(&image, 0);
}

/// A container's tree pre-dumped twice while it writes, then
/// checkpointed from the chain and restored as a container: every page
/// verifies.
#[test]
fn a_container_checkpoints_from_its_pre_dump_chain() {
    use support::{Sandbox, describe};
    let sb = Sandbox::new("ckpt-incr");
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    let program = compile_workload(&share, "dirty");
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--mount"])
        .arg(format!("{}:/mnt", share.display()))
        .arg("--")
        .arg(Path::new("/mnt").join(program.file_name().unwrap()))
        .args(["/mnt/pid", "/mnt/trigger", "/mnt/log", "32"])
        .output()
        .unwrap();
    assert!(out.status.success(), "run: {}", describe(&out));
    let deadline = support::deadline(20);
    while !share.join("pid").exists() {
        assert!(Instant::now() < deadline, "the workload never started");
        thread::sleep(Duration::from_millis(20));
    }
    let (d1, d2, image) = (
        sb.dir.join("pre1"),
        sb.dir.join("pre2"),
        sb.dir.join("final"),
    );
    for (dir, parent) in [(&d1, None), (&d2, Some(&d1))] {
        let mut cmd = sb.palisade();
        cmd.args(["checkpoint", &sb.name, "--pre-dump", "--dir"])
            .arg(dir);
        if let Some(p) = parent {
            cmd.arg("--parent").arg(p);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "pre-dump: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("pre-dumped container"),
            "{}",
            describe(&out)
        );
    }
    let out = sb
        .palisade()
        .args(["checkpoint", &sb.name, "--dir"])
        .arg(&image)
        .arg("--parent")
        .arg(&d2)
        .output()
        .unwrap();
    assert!(out.status.success(), "checkpoint: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept from its pre-dump chain"),
        "{}",
        describe(&out)
    );
    let out = sb
        .palisade()
        .args(["restore", "-d", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", describe(&out));
    fs::write(share.join("trigger.tmp"), "check").unwrap();
    fs::rename(share.join("trigger.tmp"), share.join("trigger")).unwrap();
    let deadline = support::deadline(20);
    loop {
        let log = fs::read_to_string(share.join("log")).unwrap_or_default();
        assert!(!log.contains("FAIL"), "{log}");
        if log.lines().any(|l| l.starts_with("PASS ")) {
            break;
        }
        assert!(Instant::now() < deadline, "no verdict: {log}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `palisade check` says which backends this kernel offers: each one it
/// offers starts a chain, each one it does not is refused with the same
/// reason (exit 2) and leaves the process untracked.
#[test]
fn check_lists_the_backends_a_chain_can_use() {
    let w = Workload::start_program("dirty", &["8"]);
    let out = pal(&w, &["check", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v["dirty_tracking"].as_array().unwrap();
    let names: Vec<&str> = list
        .iter()
        .map(|b| b["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ebpf", "pagemap-scan", "soft-dirty", "full"]);
    assert_eq!(list.iter().filter(|b| b["default"] == true).count(), 1);
    for (i, b) in list.iter().enumerate() {
        let name = b["backend"].as_str().unwrap();
        let dir = w.image(&format!("pre-{i}"));
        let out = pre_dump(&w, &dir, None, &["--track", name]);
        if b["available"] == true {
            assert!(out.status.success(), "{name}: {}", text(&out));
            let stop = pal(
                &w,
                &["checkpoint", "--pid", &w.pid.to_string(), "--stop-tracking"],
            )
            .output()
            .unwrap();
            assert!(stop.status.success(), "{}", text(&stop));
        } else {
            assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
            let reason = b["reason"].as_str().unwrap();
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(reason),
                "{}",
                text(&out)
            );
            assert!(!dir.exists());
        }
        assert!(!write_protected(w.pid), "{name} left tracking behind");
    }
}
