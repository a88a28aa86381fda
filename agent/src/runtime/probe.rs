//! `palisade check`: what this host offers palisade, found by trying each
//! thing (a program loaded and attached, a process cloned into a cgroup, a
//! qdisc made in a throwaway network namespace…), never by reading version
//! numbers; then which of palisade's features that makes available, and
//! why not when one is not. Every probe cleans up after itself: no pin, no
//! cgroup, no namespace outlives `check`.

use std::os::fd::AsFd;

use nix::sys::wait::{WaitStatus, waitpid};
use serde::Serialize;

use crate::{
    cgroups::probe::{FREEZE, KILL, Layout, LayoutKind, Scratch},
    enforce::probe as bpf,
    sys::{
        self,
        process::{Forked, fork_into},
    },
};

/// One thing tried on this host.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// What was tried: `cgroup/connect4`, `map/lpm_trie`, `clone3/into_cgroup`…
    pub name: String,
    /// Which part of the kernel: `bpf`, `cgroup`, `process`, `mount`, `net`.
    pub area: &'static str,
    pub available: bool,
    /// Why not, or what was found.
    pub reason: Option<String>,
}

impl Probe {
    fn new(area: &'static str, name: impl Into<String>, result: Result<(), String>) -> Self {
        Self {
            name: name.into(),
            area,
            available: result.is_ok(),
            reason: result.err(),
        }
    }

    /// A probe whose success has something to say too.
    pub fn noted(area: &'static str, name: &str, result: Result<String, String>) -> Self {
        let available = result.is_ok();
        Self {
            name: name.into(),
            area,
            available,
            reason: Some(result.unwrap_or_else(|e| e)),
        }
    }
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `None` when /proc/self/mountinfo could not be read.
    pub cgroups: Option<Layout>,
    pub probes: Vec<Probe>,
}

/// Tries everything. Must run single-threaded (it forks).
pub fn probe() -> HostReport {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let mut probes = Vec::new();
    let layout = Layout::detect();
    let unified = layout.as_ref().ok().and_then(|l| l.unified.clone());
    probes.push(Probe::new(
        "cgroup",
        "cgroup2",
        match (&layout, &unified) {
            (Err(e), _) => Err(e.to_string()),
            (Ok(_), None) => Err(
                "no cgroup2 hierarchy is mounted (palisade attaches its BPF programs there)".into(),
            ),
            (Ok(_), Some(_)) => Ok(()),
        },
    ));
    probes.push(Probe::new("bpf", "bpffs", bpf::bpffs()));
    probes.push(Probe::new("bpf", "btf", bpf::btf()));
    // Process probes first, while nothing has started a thread.
    let scratch = unified.as_deref().map(Scratch::create);
    match &scratch {
        Some(Ok(scratch)) => {
            probes.extend(clone_into(scratch));
            probes.extend(
                bpf::hooks(scratch.file())
                    .into_iter()
                    .map(|(n, r)| Probe::new("bpf", n, r)),
            );
            probes.push(Probe::new("cgroup", KILL, scratch.kill()));
            probes.push(Probe::new("cgroup", FREEZE, scratch.freeze()));
            probes.push(Probe::new("cgroup", "psi", scratch.pressure()));
        }
        other => {
            let why = match other {
                Some(Err(e)) => format!("cannot make a scratch cgroup to try it in: {e}"),
                _ => "no cgroup2 hierarchy to try it in".to_string(),
            };
            for name in ["clone3/into_cgroup", "pidfd", "pidfd_getfd"] {
                probes.push(Probe::new("process", name, Err(why.clone())));
            }
            for name in bpf::hook_names() {
                probes.push(Probe::new("bpf", name, Err(why.clone())));
            }
            for name in [KILL, FREEZE, "psi"] {
                probes.push(Probe::new("cgroup", name, Err(why.clone())));
            }
        }
    }
    drop(scratch);
    probes.push(Probe::new(
        "process",
        "userns",
        in_child(libc::CLONE_NEWUSER, || 0),
    ));
    probes.push(Probe::new(
        "net",
        "htb",
        in_child(libc::CLONE_NEWNET, try_htb),
    ));
    probes.push(Probe::new("mount", "mount_api", mount_api()));
    probes.push(Probe::new("mount", "overlayfs", overlayfs()));
    probes.push(Probe::new("mount", "fuse", fuse()));
    if let Ok(layout) = &layout {
        probes.push(Probe::noted(
            "cgroup",
            "memory_events",
            layout.memory_events(),
        ));
        probes.push(Probe::noted("cgroup", "rt_groups", layout.rt_groups()));
    }
    probes.extend(
        bpf::maps()
            .into_iter()
            .map(|(n, r)| Probe::new("bpf", n, r)),
    );
    probes.extend(
        bpf::tracepoints()
            .into_iter()
            .chain([bpf::task_struct()])
            .map(|(n, r)| Probe::new("bpf", n, r)),
    );
    HostReport {
        kernel,
        cgroups: layout.ok(),
        probes,
    }
}

/// clone3 with `CLONE_INTO_CGROUP` into the scratch cgroup (how a
/// container's first process is born), a pidfd of the child, and
/// pidfd_getfd on it (how checkpoint takes a process's files).
fn clone_into(scratch: &Scratch) -> Vec<Probe> {
    let forked = fork_into(0, Some(scratch.file().as_fd()));
    let child = match forked {
        Ok(Forked::Child) => sys::process::exit_now(0),
        Ok(Forked::Parent { child }) => child,
        Err(e) => {
            let why = e.to_string();
            return vec![
                Probe::new("process", "clone3/into_cgroup", Err(why.clone())),
                Probe::new("process", "pidfd", Err(format!("not tried: {why}"))),
                Probe::new("process", "pidfd_getfd", Err(format!("not tried: {why}"))),
            ];
        }
    };
    // The child is a zombie until reaped: its pid stays valid meanwhile.
    let pidfd = sys::pidfd::open(child);
    let getfd = match &pidfd {
        // Our own fd 0 through a pidfd of ourselves: the same call on a
        // live process.
        Ok(_) => sys::pidfd::open(std::process::id() as i32)
            .and_then(|me| sys::fds::getfd(me.as_fd(), 0))
            .map(drop)
            .map_err(|e| format!("pidfd_getfd: {} (Linux 5.6)", e.desc())),
        Err(_) => Err("not tried: no pidfd".into()),
    };
    let _ = waitpid(nix::unistd::Pid::from_raw(child), None);
    vec![
        Probe::new("process", "clone3/into_cgroup", Ok(())),
        Probe::new(
            "process",
            "pidfd",
            pidfd
                .map(drop)
                .map_err(|e| format!("pidfd_open: {} (Linux 5.3)", e.desc())),
        ),
        Probe::new("process", "pidfd_getfd", getfd),
    ]
}

/// Runs `body` in a child cloned into new namespaces `flags`; its exit
/// code is an errno (0: it worked).
fn in_child(flags: libc::c_int, body: fn() -> i32) -> Result<(), String> {
    match fork_into(flags, None) {
        Ok(Forked::Child) => sys::process::exit_now(body()),
        Ok(Forked::Parent { child }) => match waitpid(nix::unistd::Pid::from_raw(child), None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, code)) => Err(nix::errno::Errno::from_raw(code).desc().into()),
            Ok(other) => Err(format!("the probe ended oddly: {other:?}")),
            Err(e) => Err(format!("cannot wait for the probe: {}", e.desc())),
        },
        Err(sys::process::ForkError::Sys(e)) => {
            Err(format!("the kernel refuses the namespace: {}", e.desc()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// In a new network namespace: an HTB qdisc on its loopback (how egress
/// shaping queues a container's traffic).
fn try_htb() -> i32 {
    let tried = sys::netlink::Netlink::host().and_then(|mut nl| {
        nl.set_up("lo")?;
        nl.replace_root_htb("lo", palisade_common::SHAPER_HANDLE)
    });
    match tried {
        Ok(()) => 0,
        Err(e) => e.errno().map_or(libc::EIO, |e| e as i32),
    }
}

/// The new mount API (fsopen, fsmount) and mount_setattr, on a detached
/// tmpfs no path reaches (how palisade makes mounts read-only).
fn mount_api() -> Result<(), String> {
    let fd = sys::fs::detached_read_only_mount(c"tmpfs", &[])
        .map_err(|e| format!("fsopen/fsmount: {} (Linux 5.2)", e.desc()))?;
    sys::fs::set_read_only_recursive(fd.as_fd())
        .map_err(|e| format!("mount_setattr: {e} (Linux 5.12)"))
}

/// overlayfs, listed by the kernel (palisade runs from a read-only overlay
/// of its own binary when it can, else from a sealed copy).
fn overlayfs() -> Result<(), String> {
    let listed = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    if listed {
        Ok(())
    } else {
        Err("not in /proc/filesystems (palisade then runs from a sealed copy of itself)".into())
    }
}

/// FUSE, which the agent serves the containers' /proc views with: the
/// filesystem, and /dev/fuse to open.
fn fuse() -> Result<(), String> {
    let listed = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("fuse"))
    });
    if !listed {
        return Err("not in /proc/filesystems (load the fuse module)".into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
        .map_err(|e| format!("/dev/fuse: {e}"))
}

/// A palisade feature and what it needs (probe names).
struct Needs {
    name: &'static str,
    needs: &'static [&'static str],
    /// `run` cannot start a container without it.
    for_run: bool,
}

const CONNECT_HOOKS: &[&str] = &[
    "cgroup/connect4",
    "cgroup/connect6",
    "cgroup/sendmsg4",
    "cgroup/sendmsg6",
];

/// What `run` needs: every hook (a container gets all of them, and does
/// not start if one cannot be attached), the object's maps, the
/// accounting tracepoints, and how the first process is born.
const RUN: &[&str] = &[
    "cgroup2",
    "bpffs",
    "cgroup/connect4",
    "cgroup/connect6",
    "cgroup/sendmsg4",
    "cgroup/sendmsg6",
    "cgroup/bind4",
    "cgroup/bind6",
    "cgroup/post_bind4",
    "cgroup/post_bind6",
    "cgroup_skb/ingress",
    "cgroup_skb/egress",
    "cgroup/sock_create",
    "cgroup/dev",
    "map/hash",
    "map/lru_hash",
    "map/percpu_hash",
    "map/lpm_trie",
    "map/ringbuf",
    "raw_tracepoint/sched_process_exit",
    "btf/task_struct",
    "clone3/into_cgroup",
    "pidfd",
];

const FEATURES: &[Needs] = &[
    Needs {
        name: "run",
        needs: RUN,
        for_run: true,
    },
    Needs {
        name: "connect policy",
        needs: CONNECT_HOOKS,
        for_run: false,
    },
    Needs {
        name: "bind policy",
        needs: &[
            "cgroup/bind4",
            "cgroup/bind6",
            "cgroup/post_bind4",
            "cgroup/post_bind6",
            "map/lpm_trie",
        ],
        for_run: false,
    },
    Needs {
        name: "accept policy",
        needs: &["cgroup_skb/ingress", "map/lpm_trie"],
        for_run: false,
    },
    Needs {
        name: "socket types",
        needs: &["cgroup/sock_create"],
        for_run: false,
    },
    Needs {
        name: "device policy",
        needs: &["cgroup/dev", "map/hash"],
        for_run: false,
    },
    Needs {
        name: "egress shaping",
        needs: &["cgroup_skb/egress", "htb"],
        for_run: false,
    },
    Needs {
        name: "accounting",
        needs: &[
            "raw_tracepoint/sched_process_exit",
            "btf/task_struct",
            "cgroup_skb/egress",
            "cgroup_skb/ingress",
            "map/percpu_hash",
            "map/lru_hash",
        ],
        for_run: false,
    },
    Needs {
        name: "user namespaces (--userns)",
        needs: &["userns"],
        for_run: false,
    },
    Needs {
        name: "checkpoint and restore",
        needs: &[FREEZE, "clone3/into_cgroup", "pidfd", "pidfd_getfd"],
        for_run: false,
    },
    Needs {
        name: "incremental checkpoint (dirty tracking)",
        needs: &["dirty_tracking"],
        for_run: false,
    },
    Needs {
        name: "OOM handling",
        needs: &["memory_events"],
        for_run: false,
    },
    Needs {
        name: "real-time CPU budgets (cpu_rt_runtime)",
        needs: &["rt_groups"],
        for_run: false,
    },
    Needs {
        name: "per-container /proc views (--proc-view)",
        needs: &["fuse", "mount_api"],
        for_run: false,
    },
    Needs {
        name: "classification",
        needs: &["raw_tracepoint/sched_process_exec", "map/ringbuf"],
        for_run: false,
    },
];

/// Whether a feature of palisade is available here, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub name: &'static str,
    pub available: bool,
    pub reason: Option<String>,
    /// `run` needs it: without it `check` exits non-zero.
    pub needed_by_run: bool,
}

/// Which features the probes make available (a probe not made counts as
/// missing).
pub fn features(probes: &[Probe]) -> Vec<Feature> {
    FEATURES
        .iter()
        .map(|f| {
            let missing: Vec<String> = f
                .needs
                .iter()
                .filter_map(|&need| match probes.iter().find(|p| p.name == need) {
                    Some(p) if p.available => None,
                    Some(p) => Some(format!(
                        "{need}: {}",
                        p.reason.as_deref().unwrap_or("unavailable")
                    )),
                    None => Some(format!("{need}: not probed")),
                })
                .collect();
            Feature {
                name: f.name,
                available: missing.is_empty(),
                reason: (!missing.is_empty()).then(|| missing.join("; ")),
                needed_by_run: f.for_run,
            }
        })
        .collect()
}

/// Whether everything `run` needs is there.
pub fn run_possible(features: &[Feature]) -> bool {
    features
        .iter()
        .filter(|f| f.needed_by_run)
        .all(|f| f.available)
}

/// `check`'s exit status: 0, or [`crate::exit::UNSUPPORTED`] when
/// something `run` needs is missing.
pub fn exit_status(features: &[Feature]) -> i32 {
    if run_possible(features) {
        0
    } else {
        crate::exit::UNSUPPORTED
    }
}

/// The layout's name for people.
pub fn layout_name(kind: LayoutKind) -> &'static str {
    match kind {
        LayoutKind::V2 => "pure cgroup v2",
        LayoutKind::Hybrid => "hybrid (v1 controllers, cgroup2 for BPF)",
        LayoutKind::V1 => "cgroup v1 only",
        LayoutKind::None => "no cgroup filesystem",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_present() -> Vec<Probe> {
        FEATURES
            .iter()
            .flat_map(|f| f.needs.iter())
            .map(|&n| Probe::new("test", n, Ok(())))
            .collect()
    }

    #[test]
    fn everything_present_means_run_is_possible() {
        let features = features(&all_present());
        assert!(features.iter().all(|f| f.available && f.reason.is_none()));
        assert!(run_possible(&features));
        assert_eq!(exit_status(&features), 0);
    }

    #[test]
    fn a_missing_hook_stops_run_and_names_why() {
        let mut probes = all_present();
        let connect4 = probes.iter_mut().find(|p| p.name == "cgroup/connect4");
        *connect4.unwrap() = Probe::new("bpf", "cgroup/connect4", Err("Invalid argument".into()));
        let features = features(&probes);
        assert!(!run_possible(&features));
        assert_ne!(exit_status(&features), 0);
        let connect = features
            .iter()
            .find(|f| f.name == "connect policy")
            .unwrap();
        assert!(!connect.available);
        assert_eq!(
            connect.reason.as_deref(),
            Some("cgroup/connect4: Invalid argument")
        );
        // Unrelated features stay available.
        assert!(
            features
                .iter()
                .find(|f| f.name == "device policy")
                .unwrap()
                .available
        );
    }

    #[test]
    fn an_optional_feature_missing_does_not_stop_run() {
        let probes: Vec<Probe> = all_present()
            .into_iter()
            .filter(|p| p.name != "htb" && p.name != "memory_events")
            .collect();
        let features = features(&probes);
        assert_eq!(exit_status(&features), 0);
        let shaping = features
            .iter()
            .find(|f| f.name == "egress shaping")
            .unwrap();
        assert_eq!(shaping.reason.as_deref(), Some("htb: not probed"));
    }
}
