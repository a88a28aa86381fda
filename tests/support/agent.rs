//! `palisade agent` on a sandbox's state root, for the tests that need
//! one: its output (stdout and its log on stderr) in a file of the
//! sandbox's, ended by its own pid (SIGTERM, then SIGKILL) when dropped.

use std::{
    path::PathBuf,
    process::{Child, Command},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use super::Sandbox;

pub struct Agent {
    pub child: Child,
    log: PathBuf,
}

/// Tells apart the logs of agents started one after another.
static STARTED: AtomicUsize = AtomicUsize::new(0);

impl Agent {
    /// `palisade agent ARGS…`, waited for until it serves.
    pub fn start(sb: &Sandbox, args: &[&str]) -> Self {
        let mut cmd = sb.palisade();
        cmd.arg("agent").args(args);
        Self::start_as(sb, cmd)
    }

    /// The agent as `cmd` runs it (a shell that changes a limit, then
    /// execs `palisade agent`), waited for until it serves.
    pub fn start_as(sb: &Sandbox, mut cmd: Command) -> Self {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = sb.dir.join(format!("agent-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("PALISADE_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the agent");
        let mut agent = Self { child, log };
        agent.wait_log("agent serving", "the agent never served");
        agent
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log holds `needle`; fails with `why` (and the log)
    /// after 20 s or if it exits meanwhile.
    pub fn wait_log(&mut self, needle: &str, why: &str) {
        let deadline = crate::support::deadline(20);
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{why}: the agent exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{why}; agent log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it serves `/metrics` (it was started with `--metrics-addr`).
    pub fn metrics_url(&self) -> String {
        self.log()
            .lines()
            .find_map(|l| l.strip_prefix("serving metrics on "))
            .unwrap_or_else(|| panic!("no metrics address in:\n{}", self.log()))
            .trim()
            .to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (a name `kill` knows) to it, by its pid.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} the agent");
    }

    /// Stops it with SIGTERM and waits (10 s at most) for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        self.signal("TERM");
        let deadline = crate::support::deadline(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the agent did not stop on SIGTERM:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.stop();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
