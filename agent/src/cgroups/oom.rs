//! Watching a container's memory condition: the descriptor an event loop
//! waits on, and what it means when it wakes.
//!
//! - cgroup v1 (hybrid hosts): an eventfd registered through
//!   `cgroup.event_control`, on `memory.oom_control` (signalled when the
//!   limit is hit, before the kernel's OOM killer picks its victim) or on
//!   `memory.usage_in_bytes` with the `memory_high` threshold (palisade's
//!   v1 soft limit, `memory.soft_limit_in_bytes`; signalled on each
//!   crossing, up or down). The kernel also signals it when the cgroup is
//!   removed.
//! - cgroup v2: inotify on `memory.events`, whose `oom`, `oom_kill` and
//!   `high` counters say which condition it was.
//!
//! The kernel's OOM killer is never disabled (`oom_kill_disable` stays 0):
//! whatever watches this, the kernel still ends a container that hits its
//! limit, so a watcher that is gone or slow is never what keeps a
//! container stuck at its limit.

use std::{
    fs,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use super::{CgroupError, ContainerCgroups, write_control};
use crate::{spec::OomCondition, sys::notify};

/// A watch on one container's memory condition: [`MemoryWatch::open`]
/// gives it with what wakes it when something happened;
/// [`MemoryWatch::woke`] (v1) or [`MemoryWatch::woke_by`] (v2) says what.
#[derive(Debug)]
pub struct MemoryWatch {
    at: OomCondition,
    how: How,
}

#[derive(Debug)]
enum How {
    /// The v1 memory cgroup directory; the threshold for `memory_high`.
    V1 { dir: PathBuf, threshold: u64 },
    /// The v2 directory and the counters last read from `memory.events`.
    V2 { dir: PathBuf, last: Counters },
}

/// The counters of `memory.events` a watch judges by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    oom: u64,
    oom_kill: u64,
    high: u64,
}

/// What wakes a watch: a descriptor of its own (v1's eventfd), or its
/// watch descriptor in a shared inotify instance (v2).
#[derive(Debug)]
pub enum Wakes {
    Own(OwnedFd),
    Shared(i32),
}

/// What a wake-up meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The condition holds (the limit was hit, or usage is above the
    /// threshold).
    Met,
    /// Nothing to act on (usage went back under the threshold, or a
    /// counter of another condition moved).
    Nothing,
    /// The cgroup is gone: the watch is over.
    Gone,
    /// The limit was hit, and the cgroup is gone already: the kernel's OOM
    /// killer ended the container before the watch was read (v1: the
    /// eventfd counted the OOM as well as the removal).
    MetGone,
}

impl MemoryWatch {
    /// Starts watching `cgroups` for `at`; `memory_high` is the threshold
    /// for [`OomCondition::MemoryHigh`] (required for it). What wakes the
    /// watch comes with it: on v1 an eventfd of its own (non-blocking),
    /// given to [`woke`](Self::woke); on v2 a watch added to the shared
    /// inotify `instance` (the host allows each user 128 instances by
    /// default, and many watches), whose events go to
    /// [`woke_by`](Self::woke_by).
    pub fn open(
        cgroups: &ContainerCgroups,
        at: OomCondition,
        memory_high: Option<u64>,
        instance: BorrowedFd<'_>,
    ) -> Result<(Wakes, Self), CgroupError> {
        let threshold = match (at, memory_high) {
            (OomCondition::MemoryHigh, None) => {
                return Err(CgroupError::Inspect {
                    path: cgroups.unified().to_path_buf(),
                    source: std::io::Error::other("memory_high watched without a memory_high"),
                });
            }
            (_, high) => high.unwrap_or(0),
        };
        match cgroups.v1_dir("memory") {
            Some(dir) => Self::open_v1(dir, at, threshold).map(|(fd, w)| (Wakes::Own(fd), w)),
            None => Self::open_v2(cgroups.unified(), at, instance),
        }
    }

    fn open_v1(
        dir: &Path,
        at: OomCondition,
        threshold: u64,
    ) -> Result<(OwnedFd, Self), CgroupError> {
        let failed = |file: &'static str| {
            move |source| CgroupError::Write {
                path: dir.to_path_buf(),
                file,
                source,
            }
        };
        let fd = notify::eventfd()
            .map_err(std::io::Error::from)
            .map_err(failed("cgroup.event_control"))?;
        let (file, line) = match at {
            OomCondition::Oom => ("memory.oom_control", String::new()),
            OomCondition::MemoryHigh => ("memory.usage_in_bytes", format!(" {threshold}")),
        };
        // The kernel takes what it needs from the control file's fd during
        // the write; it may be closed after.
        let control = fs::File::open(dir.join(file)).map_err(failed(file))?;
        let line = format!("{} {}{line}", fd.as_raw_fd(), control.as_raw_fd());
        write_control(&dir.join("cgroup.event_control"), &line)
            .map_err(failed("cgroup.event_control"))?;
        let watch = Self {
            at,
            how: How::V1 {
                dir: dir.to_path_buf(),
                threshold,
            },
        };
        Ok((fd, watch))
    }

    fn open_v2(
        dir: &Path,
        at: OomCondition,
        instance: BorrowedFd<'_>,
    ) -> Result<(Wakes, Self), CgroupError> {
        let events = dir.join("memory.events");
        let failed = |source| CgroupError::Inspect {
            path: events.clone(),
            source,
        };
        let wd = notify::inotify_watch_modify(instance, &events).map_err(|e| failed(e.into()))?;
        // Read after the watch is set: a change between the two wakes it.
        let last = match read_counters(&events) {
            Ok(last) => last,
            Err(e) => {
                let _ = notify::inotify_unwatch(instance, wd);
                return Err(failed(e));
            }
        };
        let watch = Self {
            at,
            how: How::V2 {
                dir: dir.to_path_buf(),
                last,
            },
        };
        Ok((Wakes::Shared(wd), watch))
    }

    /// The condition watched.
    pub fn condition(&self) -> OomCondition {
        self.at
    }

    /// Drains `fd`, a v1 watch's eventfd (call when it is readable), and
    /// says what it meant.
    pub fn woke(&mut self, fd: &OwnedFd) -> Result<Woke, CgroupError> {
        match &mut self.how {
            How::V1 { dir, threshold } => {
                let count = notify::eventfd_take(fd).map_err(|e| CgroupError::Inspect {
                    path: dir.clone(),
                    source: e.into(),
                })?;
                if !dir.join("memory.oom_control").exists() {
                    // The removal counts one; anything more was an OOM.
                    let oom_first = count > 1 && self.at == OomCondition::Oom;
                    return Ok(if oom_first { Woke::MetGone } else { Woke::Gone });
                }
                if count == 0 {
                    return Ok(Woke::Nothing);
                }
                Ok(match self.at {
                    OomCondition::Oom => Woke::Met,
                    OomCondition::MemoryHigh => {
                        // Signalled on a crossing either way: act on the
                        // upward ones.
                        let usage = fs::read_to_string(dir.join("memory.usage_in_bytes"))
                            .ok()
                            .and_then(|t| t.trim().parse::<u64>().ok());
                        match usage {
                            None => Woke::Gone,
                            Some(u) if u >= *threshold => Woke::Met,
                            Some(_) => Woke::Nothing,
                        }
                    }
                })
            }
            // Woken through the shared instance instead (`woke_by`).
            How::V2 { .. } => Ok(Woke::Nothing),
        }
    }

    /// What the events `seen` on a v2 watch's descriptor (in a shared
    /// instance) meant. A v1 watch has no such events: `Nothing`.
    pub fn woke_by(&mut self, seen: notify::Inotified) -> Result<Woke, CgroupError> {
        match &mut self.how {
            How::V1 { .. } => Ok(Woke::Nothing),
            How::V2 { dir, last } => {
                let events = dir.join("memory.events");
                let now = match read_counters(&events) {
                    Ok(c) => c,
                    Err(_) if seen.gone || !dir.exists() => return Ok(Woke::Gone),
                    Err(source) => {
                        return Err(CgroupError::Inspect {
                            path: events,
                            source,
                        });
                    }
                };
                let before = std::mem::replace(last, now);
                let met = match self.at {
                    OomCondition::Oom => now.oom > before.oom || now.oom_kill > before.oom_kill,
                    OomCondition::MemoryHigh => now.high > before.high,
                };
                Ok(if met {
                    Woke::Met
                } else if seen.gone {
                    Woke::Gone
                } else {
                    Woke::Nothing
                })
            }
        }
    }
}

fn read_counters(events: &Path) -> std::io::Result<Counters> {
    let text = fs::read_to_string(events)?;
    Ok(parse_counters(&text))
}

fn parse_counters(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim().parse().unwrap_or(0);
        match key {
            "oom" => c.oom = value,
            "oom_kill" => c.oom_kill = value,
            "high" => c.high = value,
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        os::fd::AsFd,
        process::{Command, Stdio},
    };

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use super::*;
    use crate::{cgroups::Hierarchies, spec::ResourceLimits};

    fn wait_readable(fd: &OwnedFd) -> bool {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(20_000u16)).unwrap() == 1
    }

    /// A memory hog (`tail /dev/zero` keeps one endless line) in a cgroup
    /// limited to 32 MiB with memory_high at 8 MiB: both watches wake, and
    /// say the condition is met; the kernel's OOM killer ends the hog.
    #[test]
    fn watches_wake_on_the_threshold_and_the_limit() {
        let h = Hierarchies::detect().unwrap();
        if !h
            .v1
            .iter()
            .any(|v| v.controllers.iter().any(|c| c == "memory"))
        {
            // The v2 path (memory.events through inotify) is the agent's,
            // tested by tests/oom.rs.
            crate::sys::skip_test(
                "cgroups::oom::tests::watches_wake_on_the_threshold_and_the_limit",
                "no cgroup v1 memory controller: this test reads v1 eventfds",
            );
            return;
        }
        let cg = h
            .create(&format!("oom-unit-{}", std::process::id()))
            .unwrap();
        let limits = ResourceLimits {
            memory: Some(32 << 20),
            memory_high: Some(8 << 20),
            ..Default::default()
        };
        cg.apply(&limits).unwrap();
        let instance = notify::inotify_instance().unwrap();
        let open = |at, high| match MemoryWatch::open(&cg, at, high, instance.as_fd()).unwrap() {
            (Wakes::Own(fd), watch) => (fd, watch),
            (Wakes::Shared(_), _) => panic!("this test reads a v1 eventfd"),
        };
        let (high_fd, mut high) = open(OomCondition::MemoryHigh, Some(8 << 20));
        let (oom_fd, mut oom) = open(OomCondition::Oom, None);
        assert_eq!(oom.woke(&oom_fd).unwrap(), Woke::Nothing);
        let mut hog = Command::new("/bin/sh")
            .args(["-c", "read go; exec tail /dev/zero"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        cg.join(hog.id() as i32).unwrap();
        hog.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(wait_readable(&high_fd), "no wake at memory_high");
        assert_eq!(high.woke(&high_fd).unwrap(), Woke::Met);
        assert!(wait_readable(&oom_fd), "no wake at the limit");
        assert_eq!(oom.woke(&oom_fd).unwrap(), Woke::Met);
        let status = hog.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "the kernel's OOM killer ends the hog"
        );
        cg.remove().unwrap();
        // Removal wakes the watch, which then says it is over.
        if wait_readable(&oom_fd) {
            assert_eq!(oom.woke(&oom_fd).unwrap(), Woke::Gone);
        }
    }

    #[test]
    fn memory_events_counters() {
        let text = "low 0\nhigh 12\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(
            parse_counters(text),
            Counters {
                oom: 2,
                oom_kill: 1,
                high: 12
            }
        );
        assert_eq!(parse_counters(""), Counters::default());
    }
}
