//! Checkpoint and restore of one process (`--pid`), against the real
//! kernel: a workload of our own (tests/workloads/memory.c) fills memory
//! with known patterns, is checkpointed, restored with the same pid, and
//! verifies its own state, logging PASS or FAIL to a file it holds open.
//!
//! The test process makes itself a child subreaper so that restored
//! processes (re-parented like daemons) come back to it and are reaped
//! here, freeing their pids; every process is killed by pid and every
//! directory removed on drop.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

mod support;

use support::ckpt::*;

#[test]
fn checkpoint_kills_and_restore_twice_passes() {
    let mut w = Workload::start();
    let image = w.image("img");
    w.checkpoint(&image);
    assert!(image.join("meta.json").exists() && image.join("pages.img").exists());
    w.restore_and_verify(&image, 0);
    // The same image again, after the first restored process exited.
    w.restore_and_verify(&image, 1);
}

#[test]
fn a_restored_process_checkpoints_and_restores_again() {
    let mut w = Workload::start();
    let first = w.image("first");
    w.checkpoint(&first);
    w.restore(&first);
    // It verifies itself once while restored and keeps running.
    w.trigger(false);
    let deadline = support::deadline(10);
    while !w.log().contains("PASS") {
        assert!(Instant::now() < deadline, "no verdict; log: {}", w.log());
        thread::sleep(Duration::from_millis(20));
    }
    let second = w.image("second");
    w.checkpoint(&second);
    w.restore_and_verify(&second, 1);
}

#[test]
fn a_busy_process_is_checkpointed_outside_syscalls() {
    let mut w = Workload::start_with(&["spin"]);
    let image = w.image("img");
    w.checkpoint(&image);
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(image.join("meta.json")).unwrap()).unwrap();
    let orig_rax = meta["body"]["processes"][0]["threads"][0]["regs"]["orig_rax"]
        .as_u64()
        .unwrap();
    assert_eq!(orig_rax, u64::MAX, "stopped in user code, not in a syscall");
    w.restore_and_verify(&image, 0);
}

fn fds(pid: i32) -> Vec<(String, String)> {
    let mut v: Vec<_> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn leave_running_leaves_the_original_unchanged() {
    let mut w = Workload::start();
    let pid = w.pid;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let before = fds(pid);
    let image = w.image("img");
    w.checkpoint_leaving_it_running(&image);
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/maps")).unwrap(),
        maps
    );
    assert_eq!(fds(pid), before);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("TracerPid:\t0"),
        "no longer traced: {status}"
    );
    w.trigger(true);
    let code = w.child.take().unwrap().wait().unwrap();
    assert!(
        code.success(),
        "original after --leave-running; log: {}",
        w.log()
    );
    assert!(
        w.log().starts_with(&format!("PASS {pid}")),
        "log: {}",
        w.log()
    );
    // Its image restores too, once the original is gone, with the same
    // address space layout and executable.
    let out = palisade(&["restore", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", text(&out));
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/maps")).unwrap(),
        maps
    );
    assert_eq!(fds(pid), before);
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        w.dir.join("memory")
    );
    w.trigger(true);
    assert_eq!(reap(pid), 0, "log: {}", w.log());
    assert_eq!(w.log().lines().filter(|l| l.starts_with("PASS")).count(), 2);
}

/// Starts `cmd` (stdin and stderr on /dev/null).
fn spawn_plain(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn refused(pid: i32, expect: &str) {
    let dir = std::env::temp_dir().join(support::unique_name("ckpt-refused"));
    let out = palisade(&["checkpoint", "--pid", &pid.to_string(), "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert!(!dir.exists(), "no image is written");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "left untraced: {status}");
    let state = status.lines().find(|l| l.starts_with("State:")).unwrap();
    assert!(state.contains('S'), "left running: {state}");
}

#[test]
fn unsupported_processes_are_refused_and_left_running() {
    become_subreaper();
    let _key = KeyFile;
    // An inotify fd (pipes, sockets and such are supported: see
    // tests/checkpoint_files.rs).
    let mut piped = spawn_plain(Command::new("python3").stdout(Stdio::null()).args([
        "-c",
        "import ctypes, time\nctypes.CDLL(None).inotify_init()\ntime.sleep(100)",
    ]));
    let deadline = support::deadline(10);
    while !fs::read_dir(format!("/proc/{}/fd", piped.id()))
        .unwrap()
        .any(|e| {
            fs::read_link(e.unwrap().path())
                .is_ok_and(|l| l.to_string_lossy() == "anon_inode:inotify")
        })
    {
        assert!(
            Instant::now() < deadline,
            "python never made its inotify fd"
        );
        thread::sleep(Duration::from_millis(10));
    }
    refused(piped.id() as i32, "(anon_inode:inotify): this kind");
    let _ = piped.kill();
    let _ = piped.wait();
}

fn copy_image(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for f in ["meta.json", "pages.img", "files.img", "manifest.json"] {
        fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// Damages a copy of an image in the given directory.
type Spoil<'a> = Box<dyn Fn(&Path) + 'a>;

/// Flipped bytes, truncation, a wrong format version and a missing file,
/// in each file of the image: each refused with exit 2 before anything is
/// created, by its digest in the signed manifest, and (restored with
/// `--trust-image`, the manifest gone) by its checksum.
#[test]
fn bad_images_are_refused_before_anything_is_created() {
    let mut w = Workload::start();
    let good = w.image("good");
    w.checkpoint(&good);
    let meta = fs::read_to_string(good.join("meta.json")).unwrap();
    let pages = fs::read(good.join("pages.img")).unwrap();

    // (name, damage, expected when signed, expected when trusted)
    let cases: Vec<(&str, Spoil, &str, &str)> = vec![
        (
            "truncated-pages",
            Box::new(|d: &Path| {
                fs::write(d.join("pages.img"), &pages[..pages.len() - 4096]).unwrap()
            }),
            "truncated",
            "truncated",
        ),
        (
            "corrupt-pages",
            Box::new(|d: &Path| {
                let mut p = pages.clone();
                let i = p.len() / 2;
                p[i] ^= 0x40;
                fs::write(d.join("pages.img"), p).unwrap()
            }),
            "do not match their digest in the manifest",
            "checksum mismatch: the file is corrupt",
        ),
        (
            "corrupt-meta",
            Box::new(|d: &Path| {
                let m = meta.replacen("\"sigmask\":", "\"sigmask\":1", 1);
                assert_ne!(m, meta);
                fs::write(d.join("meta.json"), m).unwrap()
            }),
            "meta.json: does not match its size and digest",
            "metadata checksum mismatch",
        ),
        (
            "truncated-meta",
            Box::new(|d: &Path| fs::write(d.join("meta.json"), &meta[..meta.len() / 2]).unwrap()),
            "meta.json: does not match its size and digest",
            "not valid JSON",
        ),
        (
            "wrong-version",
            Box::new(|d: &Path| {
                // Whatever format this build writes, 99 is one it cannot read.
                let at = meta.find("\"format\": ").unwrap() + "\"format\": ".len();
                let digits = meta[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
                let m = format!("{}99{}", &meta[..at], &meta[at + digits..]);
                assert_ne!(m, meta);
                fs::write(d.join("meta.json"), m).unwrap()
            }),
            "meta.json: does not match its size and digest",
            "image format 99",
        ),
        (
            "missing-pages",
            Box::new(|d: &Path| fs::remove_file(d.join("pages.img")).unwrap()),
            "pages.img: missing",
            "pages.img: missing",
        ),
    ];
    for (name, spoil, signed, trusted) in cases {
        for trust in [false, true] {
            let dir = w.image(&format!("{name}-{trust}"));
            copy_image(&good, &dir);
            spoil(&dir);
            let mut cmd = palisade(&["restore", "--dir"]);
            cmd.arg(&dir);
            if trust {
                fs::remove_file(dir.join("manifest.json")).unwrap();
                cmd.arg("--trust-image");
            }
            let out = cmd.output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            let expect = if trust { trusted } else { signed };
            assert!(
                err.contains(expect),
                "{name}: expected {expect:?} in: {err}"
            );
            // No expected value to forge a checksum with.
            assert!(!err.contains("stored"), "{name}: {err}");
            assert!(!alive(w.pid), "{name}: a process with pid {} exists", w.pid);
        }
    }
    // And the good image still restores.
    w.restore_and_verify(&good, 0);
}

#[test]
fn a_restore_that_fails_midway_kills_what_it_created() {
    let mut w = Workload::start();
    let image = w.image("img");
    w.checkpoint(&image);
    // The log the process holds open is gone: its fd cannot be re-opened.
    let log = w.dir.join("log");
    fs::rename(&log, w.dir.join("log.moved")).unwrap();
    let out = palisade(&["restore", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let expect = format!("fd 3: open {}: No such file or directory", log.display());
    assert!(err.contains(&expect), "expected {expect:?} in: {err}");
    assert!(err.contains("killed"), "{err}");
    assert!(!alive(w.pid), "nothing is left with pid {}", w.pid);
    // Put back, the same image restores.
    fs::rename(w.dir.join("log.moved"), &log).unwrap();
    w.restore_and_verify(&image, 0);
}

#[test]
fn a_busy_pid_is_refused() {
    let w = Workload::start();
    let image = w.image("img");
    w.checkpoint_leaving_it_running(&image);
    let out = palisade(&["restore", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", w.pid)) && err.contains("in use"),
        "{err}"
    );
}

/// A real program: a python3 interpreter counting into a file (105
/// mappings, a shared one among them) is checkpointed and restored, and
/// counts on from where it was rather than from the start.
#[test]
fn a_python_interpreter_counts_on_after_restore() {
    become_subreaper();
    let _key = KeyFile;
    let dir = std::env::temp_dir().join(support::unique_name("ckpt-py"));
    fs::create_dir_all(&dir).unwrap();
    let count_file = dir.join("count");
    let script = format!(
        "import time\ni = 0\nwhile True:\n    i += 1\n    with open({:?}, 'w') as f: f.write(str(i))\n    time.sleep(0.02)\n",
        count_file.to_str().unwrap()
    );
    // Through a first python3 only to close inherited fds and start a
    // session; it execs the counting interpreter in place.
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import os, sys; os.closerange(3, 65536); os.setsid(); os.execvp('python3', ['python3', '-c', sys.argv[1]])",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let count = || {
        fs::read_to_string(&count_file)
            .ok()
            .and_then(|c| c.trim().parse::<u64>().ok())
    };
    let deadline = support::deadline(10);
    while count().unwrap_or(0) < 5 {
        assert!(Instant::now() < deadline, "the interpreter never counted");
        thread::sleep(Duration::from_millis(10));
    }
    let image = dir.join("image");
    let ck = palisade(&["checkpoint", "--pid", &pid.to_string(), "--dir"])
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.wait();
    let out = ck.wait_with_output().unwrap();
    assert!(out.status.success(), "checkpoint: {}", text(&out));
    assert!(!alive(pid));
    // The file may have been caught empty (rewritten in place): then the
    // count it had is at least the one seen before the checkpoint.
    let seen = count();
    let at_checkpoint = seen.unwrap_or(5);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(count(), seen, "nothing counts while it is gone");

    let out = palisade(&["restore", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pid.to_string());
    let deadline = support::deadline(10);
    loop {
        // The file is rewritten in place: an empty read is a write in
        // progress, never a value.
        if let Some(now) = count() {
            assert!(
                now >= at_checkpoint,
                "restarted from scratch: {now} < {at_checkpoint}"
            );
            if now >= at_checkpoint + 5 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restored interpreter does not count"
        );
        thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) by pid, on the restored process re-parented to us.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(reap(pid), 128 + libc::SIGKILL);
    let _ = fs::remove_dir_all(&dir);
}

/// A process in a chroot keeps its root directory: restored, it still
/// sees only the chroot (its files are at /), and verifies itself.
#[test]
fn a_chrooted_process_keeps_its_root() {
    become_subreaper();
    let dir = std::env::temp_dir().join(support::unique_name("ckpt-chroot"));
    fs::create_dir_all(&dir).unwrap();
    compile_workload(&dir, "memory");
    let mut cmd = Command::new("chroot");
    // SAFETY: close_range is async-signal-safe and runs in the forked
    // child just before exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd
        .arg(&dir)
        .args(["/memory", "/pid", "/trigger", "/log"])
        .env("PALISADE_CKPT_ENV", "from-the-start")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = support::deadline(10);
    let pid = loop {
        if let Some(p) = fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the workload never wrote its pid"
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(pid as u32, child.id());
    let mut w = Workload {
        dir: dir.clone(),
        child: Some(child),
        pid,
        others: Vec::new(),
        key: KeyFile,
    };
    let image = w.image("img");
    w.checkpoint(&image);
    w.restore(&image);
    assert_eq!(fs::read_link(format!("/proc/{pid}/root")).unwrap(), dir);
    w.trigger(true);
    assert_eq!(reap(pid), 0, "log: {}", w.log());
    assert!(
        w.log().starts_with(&format!("PASS {pid} ")),
        "log: {}",
        w.log()
    );
}

/// 96 MiB of distinct words: past the size where the dump copies on two
/// threads straight into the mapped page file (hashing whole pieces as
/// it goes) and the restore writes pages in from the mapped file on two
/// threads; the restored process checks every word, and a second round
/// (with --leave-running, so the original checks itself too) does again.
#[test]
fn large_memory_is_copied_in_parallel_word_for_word() {
    let mut w = Workload::start_program("bench_mem", &["96"]);
    let first = w.image("first");
    w.checkpoint_leaving_it_running(&first);
    w.trigger(false);
    wait_for_log(&w, 1);
    w.checkpoint(&w.image("img"));
    let image = w.image("img");
    let pages = std::fs::metadata(image.join("pages.img")).unwrap().len();
    assert!(pages >= 96 << 20, "pages.img is {pages} bytes");
    w.restore_and_verify(&image, 1);
}

/// Waits until the workload's log holds `n` PASS lines.
fn wait_for_log(w: &Workload, n: usize) {
    let deadline = support::deadline(20);
    while w.log().lines().filter(|l| l.starts_with("PASS")).count() < n {
        assert!(std::time::Instant::now() < deadline, "log: {}", w.log());
        assert!(!w.log().contains("FAIL"), "log: {}", w.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
