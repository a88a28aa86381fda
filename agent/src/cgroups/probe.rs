//! What `palisade check` learns about this host's cgroups: the layout
//! (pure v2, hybrid, or v1 only), which controllers each hierarchy holds,
//! and, in a scratch cgroup v2 directory made for the purpose and removed
//! again, whether `cgroup.kill`, the v2 freezer and pressure stall
//! information work. Nothing is left behind: the scratch directory goes
//! (and the shared `palisade` parent too, if the probe made it).

use std::{
    fs, io,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use serde::Serialize;

use super::{CgroupError, PARENT, V1Hierarchy, open_dir, scan_mountinfo, set_frozen};

/// The probes' names: the control files they try.
pub const KILL: &str = "cgroup.kill";
pub const FREEZE: &str = "cgroup.freeze";

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// One cgroup2 hierarchy holds everything.
    V2,
    /// v1 controller hierarchies and a cgroup2 one (for BPF).
    Hybrid,
    /// v1 hierarchies only: no cgroup2 to attach BPF programs to.
    V1,
    /// No cgroup filesystem at all.
    None,
}

/// The layout and where each controller is.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub layout: LayoutKind,
    /// The cgroup2 mount, if any.
    pub unified: Option<PathBuf>,
    /// Controllers the cgroup2 root offers (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
    pub v1: Vec<V1Entry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct V1Entry {
    pub mount: PathBuf,
    pub controllers: Vec<String>,
}

impl Layout {
    /// Read from /proc/self/mountinfo and the cgroup2 root.
    pub fn detect() -> Result<Self, CgroupError> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
        let (unified, v1) = scan_mountinfo(&text);
        let v2_controllers = unified
            .as_ref()
            .and_then(|u| fs::read_to_string(u.join("cgroup.controllers")).ok())
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let layout = match (&unified, v1.is_empty()) {
            (Some(_), true) => LayoutKind::V2,
            (Some(_), false) => LayoutKind::Hybrid,
            (None, false) => LayoutKind::V1,
            (None, true) => LayoutKind::None,
        };
        Ok(Self {
            layout,
            unified,
            v2_controllers,
            v1: v1
                .into_iter()
                .map(|V1Hierarchy { mount, controllers }| V1Entry { mount, controllers })
                .collect(),
        })
    }

    /// Where `controller` is: `v2`, the v1 mount, or `None`.
    pub fn controller(&self, controller: &str) -> Option<String> {
        if self.v2_controllers.iter().any(|c| c == controller) {
            return Some("v2".into());
        }
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount.display().to_string())
    }

    /// Whether the kernel can tell a userspace handler about a container's
    /// memory pressure and OOM: v1 `memory.oom_control` with
    /// `cgroup.event_control` where memory is a v1 controller, else v2
    /// `memory.events` (memory enabled on cgroup2).
    pub fn memory_events(&self) -> Result<String, String> {
        if let Some(h) = self
            .v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == "memory"))
        {
            let oom = h.mount.join("memory.oom_control");
            let events = h.mount.join("cgroup.event_control");
            return match (oom.exists(), events.exists()) {
                (true, true) => Ok("v1 memory.oom_control and cgroup.event_control".into()),
                _ => Err(format!(
                    "{} has no memory.oom_control or cgroup.event_control",
                    h.mount.display()
                )),
            };
        }
        if self.v2_controllers.iter().any(|c| c == "memory") {
            return Ok("v2 memory.events".into());
        }
        Err("no hierarchy holds the memory controller".into())
    }

    /// Where real-time group scheduling is: the v1 cpu hierarchy's
    /// `cpu.rt_runtime_us` (CONFIG_RT_GROUP_SCHED); cgroup v2 has none.
    pub fn rt_groups(&self) -> Result<String, String> {
        let Some(h) = self
            .v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == "cpu"))
        else {
            return Err("no cgroup v1 cpu hierarchy (cgroup v2 has no real-time budget)".into());
        };
        let file = h.mount.join("cpu.rt_runtime_us");
        if file.exists() {
            Ok(format!("v1 {}", file.display()))
        } else {
            Err(format!(
                "{} does not exist (a kernel without CONFIG_RT_GROUP_SCHED)",
                file.display()
            ))
        }
    }
}

/// An empty cgroup v2 directory made for probing, removed when dropped.
pub struct Scratch {
    dir: PathBuf,
    /// The shared parent, if this probe made it (removed after, if empty).
    made_parent: Option<PathBuf>,
    file: fs::File,
}

impl Scratch {
    /// Makes `UNIFIED/palisade/check-PID` (and the `palisade` parent if
    /// there is none).
    pub fn create(unified: &Path) -> Result<Self, CgroupError> {
        let parent = unified.join(PARENT);
        let made_parent = match fs::create_dir(&parent) {
            Ok(()) => Some(parent.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
            Err(source) => {
                return Err(CgroupError::Create {
                    path: parent,
                    source,
                });
            }
        };
        let dir = parent.join(format!("check-{}", std::process::id()));
        if let Err(source) = fs::create_dir(&dir) {
            if let Some(p) = &made_parent {
                let _ = fs::remove_dir(p);
            }
            return Err(CgroupError::Create { path: dir, source });
        }
        let file = match open_dir(&dir) {
            Ok(f) => f,
            Err(e) => {
                remove_quietly(&dir, made_parent.as_deref());
                return Err(e);
            }
        };
        Ok(Self {
            dir,
            made_parent,
            file,
        })
    }

    /// The directory, opened (to attach to, or to clone into).
    pub fn file(&self) -> &fs::File {
        &self.file
    }

    /// `cgroup.kill` (Linux 5.14), written on the empty group.
    pub fn kill(&self) -> Result<(), String> {
        super::write_control(&self.dir.join("cgroup.kill"), "1")
            .map_err(|e| format!("cgroup.kill: {e} (Linux 5.14 added it)"))
    }

    /// The v2 freezer (`cgroup.freeze`, Linux 5.2): frozen, then thawed.
    pub fn freeze(&self) -> Result<(), String> {
        set_frozen(&self.dir, true)
            .and_then(|()| set_frozen(&self.dir, false))
            .map_err(|e| e.to_string())
    }

    /// Pressure stall information (`memory.pressure`, CONFIG_PSI), read.
    pub fn pressure(&self) -> Result<(), String> {
        fs::read_to_string(self.dir.join("memory.pressure"))
            .map(drop)
            .map_err(|e| {
                format!("memory.pressure: {e} (CONFIG_PSI, or psi=0 on the kernel command line)")
            })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_quietly(&self.dir, self.made_parent.as_deref());
    }
}

/// Removes the scratch directory (retried while a probe's child is still
/// leaving it) and the parent it made, if that is empty.
fn remove_quietly(dir: &Path, made_parent: Option<&Path>) {
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                thread::sleep(Duration::from_millis(10))
            }
            _ => break,
        }
    }
    if let Some(p) = made_parent {
        let _ = fs::remove_dir(p);
    }
}
