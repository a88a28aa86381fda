//! The checkpoint tests' harness: workloads of our own
//! (tests/workloads/*.c) that publish their pid, verify their own state
//! when a trigger file appears and log PASS or FAIL; checkpoint and
//! restore through the CLI, each test with its own image key; reaping as
//! a child subreaper.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Compiles workload `name` (tests/workloads/NAME.c) into `dir` with
/// `cc -O1 -static -pthread` (gcc and libc6-dev are in xtask's package
/// list).
pub fn compile_workload(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/workloads/{name}.c"));
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(["-O1", "-static", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed on {}", src.display());
    out
}

pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments; marks this process as a child
    // subreaper, nothing else.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
}

/// Waits for `pid` (a child or an orphan re-parented to us) to exit and
/// returns its exit code, or 128+signal.
pub fn reap(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: status is a live i32; pid is a process of ours.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid {pid}");
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `palisade ARGS`, signing and verifying images with this test's own
/// key ([`test_key`]), never the host's.
pub fn palisade(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(args)
        .stdin(Stdio::null())
        .env("PALISADE_IMAGE_KEY", test_key());
    cmd
}

/// This test's image key: a file of its own in the temp directory, named
/// after the test (its thread) and this process; made by the first
/// checkpoint, removed with the test's [`Workload`] or [`KeyFile`].
pub fn test_key() -> PathBuf {
    let test = thread::current()
        .name()
        .unwrap_or("main")
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    std::env::temp_dir().join(format!("palisade-key-{}-{test}", std::process::id()))
}

/// Removes this test's key file when dropped (for a test without a
/// [`Workload`]).
pub struct KeyFile;

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(test_key());
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One workload run: its directory (pid file, trigger, log, images), its
/// process (a child of ours until checkpointed) and its pid.
pub struct Workload {
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub pid: i32,
    /// The other processes of a tree workload (from PIDFILE.pids).
    pub others: Vec<i32>,
    /// Its key file goes with it.
    pub key: KeyFile,
}

impl Workload {
    /// Starts tests/workloads/memory.c.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_program("memory", extra)
    }

    /// Starts tests/workloads/NAME.c with the pid, trigger and log paths
    /// and then `extra` as its arguments, as its own session leader.
    pub fn start_program(name: &str, extra: &[&str]) -> Self {
        become_subreaper();
        let dir = std::env::temp_dir().join(super::unique_name("ckpt"));
        fs::create_dir_all(&dir).unwrap();
        // setsid(1) execs in place (we are not a group leader's copy), so
        // the workload is its own session leader with the pid we spawn.
        let mut cmd = Command::new("setsid");
        // The workload must hold only fds this slice restores: close any
        // fd our own parent leaked to us (above stderr).
        // SAFETY: close_range is async-signal-safe and runs in the forked
        // child just before exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        let mut child = cmd
            .arg(compile_workload(&dir, name))
            .arg(dir.join("pid"))
            .arg(dir.join("trigger"))
            .arg(dir.join("log"))
            .args(extra)
            .env("PALISADE_CKPT_ENV", "from-the-start")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the workload");
        let deadline = crate::support::deadline(10);
        let pid = loop {
            if let Ok(s) = fs::read_to_string(dir.join("pid")) {
                break s.trim().parse::<i32>().unwrap();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the workload {name} {extra:?} exited ({status}) before writing its pid; log: {}",
                    fs::read_to_string(dir.join("log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the workload never wrote its pid"
            );
            thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(pid as u32, child.id());
        let others = fs::read_to_string(dir.join("pid.pids"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| p.parse::<i32>().unwrap())
            .filter(|p| *p != pid)
            .collect();
        Workload {
            dir,
            child: Some(child),
            pid,
            others,
            key: KeyFile,
        }
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Asks the workload to verify itself (and exit if `exit`).
    pub fn trigger(&self, exit: bool) {
        let tmp = self.dir.join("trigger.tmp");
        fs::write(&tmp, if exit { "exit" } else { "check" }).unwrap();
        fs::rename(&tmp, self.dir.join("trigger")).unwrap();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Checkpoints (killing the original) and reaps the original.
    pub fn checkpoint(&mut self, image: &Path) {
        let mut cmd = palisade(&["checkpoint", "--pid", &self.pid.to_string(), "--dir"]);
        cmd.arg(image);
        self.checkpoint_by(cmd);
    }

    /// Runs `cmd`, a checkpoint of this workload that kills the original,
    /// and reaps the original; returns the command's output.
    pub fn checkpoint_by(&mut self, mut cmd: Command) -> Output {
        let ck = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The original is our child (spawned, or restored and re-parented
        // to us): reap it (on a thread, so a failed checkpoint cannot hang
        // us) so that checkpoint sees its pid free.
        let child = self.child.take();
        let pid = self.pid;
        let others = self.others.clone();
        let reaper = thread::spawn(move || {
            let code = match child {
                Some(mut c) => {
                    use std::os::unix::process::ExitStatusExt;
                    c.wait().unwrap().signal().map_or(0, |s| 128 + s)
                }
                None => reap(pid),
            };
            // The rest of the tree comes to us (subreaper) as its parents
            // die: reap it too, so that every pid is free.
            for p in others {
                reap_orphan(p);
            }
            code
        });
        let out = ck.wait_with_output().unwrap();
        if !out.status.success() {
            // SAFETY: kill(2) by pid, on our own child not yet reaped.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = reaper.join();
            panic!("checkpoint: {}", text(&out));
        }
        let code = reaper.join().unwrap();
        assert_eq!(code, 128 + libc::SIGKILL, "the original was killed");
        for p in std::iter::once(self.pid).chain(self.others.iter().copied()) {
            assert!(!alive(p), "pid {p} is free after checkpoint");
        }
        out
    }

    /// Checkpoints with `--leave-running` and asserts it succeeded and
    /// the process is still there.
    pub fn checkpoint_leaving_it_running(&self, image: &Path) {
        let out = palisade(&[
            "checkpoint",
            "--leave-running",
            "--pid",
            &self.pid.to_string(),
            "--dir",
        ])
        .arg(image)
        .output()
        .unwrap();
        assert!(out.status.success(), "checkpoint: {}", text(&out));
        assert!(alive(self.pid));
    }

    /// Restores `image` and asserts the same pid; it runs on.
    pub fn restore(&self, image: &Path) {
        let out = palisade(&["restore", "--dir"]).arg(image).output().unwrap();
        assert!(out.status.success(), "restore: {}", text(&out));
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(pid, self.pid, "restored with the same pid");
    }

    /// Restores `image`, asserts the same pid, lets it verify and exit,
    /// reaps it and asserts it passed.
    pub fn restore_and_verify(&self, image: &Path, passes_before: usize) {
        let out = palisade(&["restore", "--dir"]).arg(image).output().unwrap();
        assert!(out.status.success(), "restore: {}", text(&out));
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(pid, self.pid, "restored with the same pid");
        assert!(alive(pid));
        self.trigger(true);
        assert_eq!(
            reap(pid),
            0,
            "restored workload exit code; log: {}",
            self.log()
        );
        let log = self.log();
        let passes = log
            .lines()
            .filter(|l| l.starts_with(&format!("PASS {pid} ")))
            .count();
        assert_eq!(passes, passes_before + 1, "log: {log}");
        assert!(!log.contains("FAIL"), "log: {log}");
    }
}

/// Reaps `pid` once it has become our child (an orphan re-parented to
/// us, the subreaper), or returns when it is gone; gives up after 10 s.
pub fn reap_orphan(pid: i32) {
    let deadline = crate::support::deadline(10);
    while Instant::now() < deadline {
        let mut status = 0;
        // SAFETY: status is a live i32; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if r == pid || (r == -1 && !alive(pid)) {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for p in &self.others {
            if alive(*p) {
                // SAFETY: kill(2) by a pid of this workload's tree.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        } else if alive(self.pid) {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
            // SAFETY: status is a live i32; WNOHANG-free wait on our orphan.
            unsafe {
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
        for p in &self.others {
            reap_orphan(*p);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts tests/workloads/PROGRAM.c in `mode`, checkpoints it and has the
/// restored process (same pid) verify itself.
pub fn round_trip(program: &str, mode: &str) {
    let mut w = Workload::start_program(program, &[mode]);
    let image = w.image("img");
    w.checkpoint(&image);
    w.restore_and_verify(&image, 0);
}

/// Asserts a checkpoint of `w` is refused naming `expect` (exit 125,
/// nothing written), that every process of it is left running untraced
/// with the same maps and fds, and that it still checks itself; then
/// ends it.
pub fn assert_refused_unchanged(mut w: Workload, expect: &str) {
    let pids: Vec<i32> = std::iter::once(w.pid).chain(w.others.clone()).collect();
    let look = |pid: i32| {
        let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| format!("{:?}", fs::read_link(e.unwrap().path()).ok()))
            .collect();
        fds.sort();
        (
            fs::read_to_string(format!("/proc/{pid}/maps")).unwrap(),
            fds,
        )
    };
    let before: Vec<_> = pids.iter().map(|p| look(*p)).collect();
    let image = w.image("img");
    let out = palisade(&["checkpoint", "--pid", &w.pid.to_string(), "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(expect) && err.contains("left running unchanged"),
        "{err}"
    );
    assert!(!image.join("meta.json").exists());
    thread::sleep(Duration::from_millis(100));
    for (pid, b) in pids.iter().zip(&before) {
        assert_eq!(&look(*pid), b, "pid {pid} changed");
        assert!(
            fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap()
                .contains("TracerPid:\t0"),
            "pid {pid} still traced"
        );
    }
    w.trigger(true);
    assert!(
        w.child.take().unwrap().wait().unwrap().success(),
        "log: {}",
        w.log()
    );
    for p in &w.others {
        // SAFETY: kill(2) by pid, on a process of our own workload.
        unsafe { libc::kill(*p, libc::SIGKILL) };
        reap_orphan(*p);
    }
}
