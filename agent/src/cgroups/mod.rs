//! cgroups: the one owner of cgroupfs. Finds the hierarchies this host
//! has, and creates, joins, limits (at start and live), freezes and thaws,
//! kills, reads the statistics of and removes a container's cgroups under
//! a `palisade` parent in each of them. Nothing outside this folder opens
//! a file under a cgroup mount.
//!
//! BPF programs attach to the cgroup v2 directory (`/sys/fs/cgroup/unified`
//! on hybrid hosts, `/sys/fs/cgroup` on pure v2 hosts); v1 controller
//! hierarchies, where mounted, get a directory of the same name. The layout
//! is read from /proc/self/mountinfo, never assumed. Only directories this
//! module created are ever removed; the shared `palisade` parents stay.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use thiserror::Error;

pub mod limits;
pub mod oom;
pub mod probe;
pub mod stats;
pub mod view;

pub use limits::{LimitError, apply, oom_killed};
pub use stats::{CgroupStats, MemoryDetail};

/// Name of the parent directory palisade creates in every hierarchy.
pub const PARENT: &str = "palisade";

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(#[source] io::Error),
    #[error(
        "no cgroup2 hierarchy is mounted (palisade attaches its BPF programs there; mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`)"
    )]
    NoUnified,
    #[error("cgroup {} already exists: is a container of that name running? (remove the directory if it is stale)", .0.display())]
    Exists(PathBuf),
    #[error("cannot create cgroup {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot set up cgroup {}: writing {file}: {source}", path.display())]
    Write {
        path: PathBuf,
        file: &'static str,
        source: io::Error,
    },
    #[error("the enclosing container's cgroup {} does not exist (is it running?)", .0.display())]
    NoEnclosing(PathBuf),
    #[error("cannot read cgroup {}: {source}", path.display())]
    Inspect { path: PathBuf, source: io::Error },
    #[error("cannot move pid {pid} into cgroup {}: {source}", path.display())]
    Join {
        pid: i32,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot remove cgroup {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot {} cgroup {}: {source}", if *frozen { "freeze" } else { "thaw" }, path.display())]
    Freeze {
        path: PathBuf,
        frozen: bool,
        source: io::Error,
    },
    #[error("cgroup {} did not become {} within 5 s", path.display(), if *frozen { "frozen" } else { "thawed" })]
    FreezeTimeout { path: PathBuf, frozen: bool },
}

/// The cgroup hierarchies mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    /// The cgroup2 mount point: where BPF programs attach.
    pub unified: PathBuf,
    /// v1 controller hierarchies (empty on a pure v2 host).
    pub v1: Vec<V1Hierarchy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mount: PathBuf,
    pub controllers: Vec<String>,
}

impl Hierarchies {
    /// Reads the hierarchies from /proc/self/mountinfo.
    pub fn detect() -> Result<Self, CgroupError> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
        Self::from_mountinfo(&text)
    }

    fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let (unified, v1) = scan_mountinfo(text);
        Ok(Self {
            unified: unified.ok_or(CgroupError::NoUnified)?,
            v1,
        })
    }

    /// True when resource controllers live on cgroup v1 (a hybrid host).
    pub fn is_hybrid(&self) -> bool {
        !self.v1.is_empty()
    }

    /// Creates the container's cgroups. Fails if any already exists; on
    /// failure nothing created here is left behind.
    pub fn create(&self, name: &str) -> Result<ContainerCgroups, CgroupError> {
        self.create_under(&[], name)
    }

    /// Creates the container's cgroups inside those of the containers
    /// `enclosing` names (outermost first, each already existing), so
    /// their limits bound it: `palisade/A/B/NAME`.
    pub fn create_under(
        &self,
        enclosing: &[&str],
        name: &str,
    ) -> Result<ContainerCgroups, CgroupError> {
        let mut made = self.create_unified(enclosing, name)?;
        self.create_v1(&mut made, enclosing)?;
        Ok(made)
    }

    /// The cgroups of a container that already runs, from the directories
    /// its state recorded (v2 first): to read, limit live, freeze or kill
    /// it. They are not removed when the handle is dropped.
    pub fn existing(&self, dirs: &[PathBuf]) -> Result<ContainerCgroups, CgroupError> {
        let (unified, v1_dirs) = dirs.split_first().ok_or(CgroupError::NoUnified)?;
        let mut v1 = Vec::new();
        let mut v1_controllers = Vec::new();
        for dir in v1_dirs {
            let Some(h) = self.v1.iter().find(|h| dir.starts_with(&h.mount)) else {
                return Err(CgroupError::Inspect {
                    path: dir.clone(),
                    source: io::Error::other("not in any cgroup v1 hierarchy of this host"),
                });
            };
            v1.push(dir.clone());
            v1_controllers.push(h.controllers.clone());
        }
        Ok(ContainerCgroups {
            unified: unified.clone(),
            v1,
            v1_controllers,
            removed: true,
        })
    }

    /// Every directory the container's cgroups have or will have, in every
    /// hierarchy, v2 first (whether they exist or not).
    pub fn planned(&self, enclosing: &[&str], name: &str) -> Vec<PathBuf> {
        let relative = relative(enclosing).join(name);
        std::iter::once(self.unified.join(&relative))
            .chain(self.v1.iter().map(|h| h.mount.join(&relative)))
            .collect()
    }

    /// Creates the container's cgroup v2 directory alone: its id can be
    /// recorded before anything else is made (see [`Self::create_v1`]).
    pub fn create_unified(
        &self,
        enclosing: &[&str],
        name: &str,
    ) -> Result<ContainerCgroups, CgroupError> {
        let relative = relative(enclosing);
        let mut made = ContainerCgroups {
            unified: self.unified.join(&relative).join(name),
            v1: Vec::new(),
            v1_controllers: Vec::new(),
            removed: false,
        };
        within(&self.unified, enclosing, &relative, false).inspect_err(|_| made.removed = true)?;
        // A nested container's parent is a container with processes of its
        // own: its cgroup is left as it is (see `enable_accounting`).
        if enclosing.is_empty() {
            self.enable_accounting(&self.unified.join(&relative));
        }
        create_leaf(&made.unified, false).inspect_err(|_| made.removed = true)?;
        Ok(made)
    }

    /// Enables, in the v2 directory `parent` that a container's cgroup is
    /// made in, the controllers its accounting reads (memory and page
    /// faults, tasks, I/O, CPU) that no v1 hierarchy carries, where
    /// `parent` is offered them: on a pure v2 host a container that asks
    /// for no limit is still accounted. One the host does not delegate
    /// stays off, and its figures read as unknown (`-` in `stats`), never
    /// 0. Never called for a nested container's parent, which has
    /// processes of its own: the kernel would refuse memory and io there,
    /// but accept cpu and pids (threaded controllers), which would make
    /// the parent a thread root, where no child can hold a process
    /// (found in the 6.1 guest: the nested container's clone3 into its
    /// cgroup failed with EOPNOTSUPP).
    fn enable_accounting(&self, parent: &Path) {
        let on_v1 = |v2: &str| {
            let v1 = if v2 == "io" { "blkio" } else { v2 };
            self.v1
                .iter()
                .any(|h| h.controllers.iter().any(|c| c == v1))
        };
        let read = |file: &str| fs::read_to_string(parent.join(file)).unwrap_or_default();
        let (offered, enabled) = (read("cgroup.controllers"), read("cgroup.subtree_control"));
        let has = |text: &str, c: &str| text.split_whitespace().any(|w| w == c);
        // One at a time: the kernel refuses a whole line for one it cannot
        // enable (cpu, while a real-time task runs in the parent, say).
        for c in ACCOUNTED
            .iter()
            .filter(|c| !on_v1(c) && has(&offered, c) && !has(&enabled, c))
        {
            let _ = fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }

    /// Creates the v1 directories of cgroups whose v2 directory
    /// [`Self::create_unified`] made.
    pub fn create_v1(
        &self,
        made: &mut ContainerCgroups,
        enclosing: &[&str],
    ) -> Result<(), CgroupError> {
        let relative = relative(enclosing);
        let name = made.name().to_string();
        for h in &self.v1 {
            let cpuset = h.controllers.iter().any(|c| c == "cpuset");
            let dir = h.mount.join(&relative).join(&name);
            within(&h.mount, enclosing, &relative, cpuset)?;
            create_leaf(&dir, cpuset)?;
            made.v1.push(dir);
            made.v1_controllers.push(h.controllers.clone());
        }
        Ok(())
    }
}

/// The cgroup2 mount (the first, if any) and the v1 controller
/// hierarchies listed in a /proc/self/mountinfo text.
fn scan_mountinfo(text: &str) -> (Option<PathBuf>, Vec<V1Hierarchy>) {
    let mut unified = None;
    let mut v1: Vec<V1Hierarchy> = Vec::new();
    for line in text.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let (fstype, superopts) = (right.next(), right.nth(1));
        let mount = PathBuf::from(unescape(mount));
        match fstype {
            Some("cgroup2") if unified.is_none() => unified = Some(mount),
            Some("cgroup") => {
                let controllers: Vec<String> = superopts
                    .unwrap_or("")
                    .split(',')
                    .filter(|o| KNOWN_V1.contains(o))
                    .map(str::to_string)
                    .collect();
                // Named hierarchies (name=systemd) hold no controller.
                if !controllers.is_empty() && !v1.iter().any(|h| h.controllers == controllers) {
                    v1.push(V1Hierarchy { mount, controllers });
                }
            }
            _ => {}
        }
    }
    (unified, v1)
}

/// `palisade/[ENCLOSING/…]`: where a container's directory goes.
fn relative(enclosing: &[&str]) -> PathBuf {
    enclosing
        .iter()
        .fold(PathBuf::from(PARENT), |p, e| p.join(e))
}

/// Makes sure the parent of a container's directory exists in the
/// hierarchy at `mount`: the shared `palisade` one (made if missing), or
/// the enclosing container's (which must exist).
fn within(
    mount: &Path,
    enclosing: &[&str],
    relative: &Path,
    cpuset: bool,
) -> Result<(), CgroupError> {
    if enclosing.is_empty() {
        ensure_parent(&mount.join(PARENT), cpuset)
    } else if mount.join(relative).is_dir() {
        Ok(())
    } else {
        Err(CgroupError::NoEnclosing(mount.join(relative)))
    }
}

/// The v2 controllers a container's accounting reads (see
/// `Hierarchies::enable_accounting`).
const ACCOUNTED: [&str; 4] = ["cpu", "io", "memory", "pids"];

/// Controllers a v1 hierarchy may carry.
const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

/// mountinfo escapes space, tab, newline and backslash as \NNN octal.
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ensure_parent(dir: &Path, cpuset: bool) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(CgroupError::Create {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    if cpuset {
        inherit_cpuset(dir)?;
    }
    Ok(())
}

fn create_leaf(dir: &Path, cpuset: bool) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(CgroupError::Exists(dir.to_path_buf()));
        }
        Err(source) => {
            return Err(CgroupError::Create {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    if cpuset {
        inherit_cpuset(dir).inspect_err(|_| {
            let _ = fs::remove_dir(dir);
        })?;
    }
    Ok(())
}

/// A new v1 cpuset starts with no cpus and no memory nodes, and cannot take
/// a task until it has both: copy the parent's when empty.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let parent = dir.parent().expect("a cgroup directory has a parent");
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = fs::read_to_string(dir.join(file)).unwrap_or_default();
        if !current.trim().is_empty() {
            continue;
        }
        let inherited = fs::read_to_string(parent.join(file))
            .and_then(|value| fs::write(dir.join(file), value.trim()))
            .map_err(|source| CgroupError::Write {
                path: dir.to_path_buf(),
                file,
                source,
            });
        inherited?;
    }
    Ok(())
}

/// One container's cgroups. Removed by [`ContainerCgroups::remove`], or on
/// drop as a last resort.
#[derive(Debug)]
pub struct ContainerCgroups {
    unified: PathBuf,
    v1: Vec<PathBuf>,
    /// The controllers of each `v1` directory's hierarchy, index for index.
    v1_controllers: Vec<Vec<String>>,
    removed: bool,
}

impl ContainerCgroups {
    /// The cgroup v2 directory, where BPF programs attach.
    pub fn unified(&self) -> &Path {
        &self.unified
    }

    /// The container's name: its directory under each `palisade` parent.
    pub fn name(&self) -> &str {
        self.unified
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    /// The v1 directory of the hierarchy carrying `controller`, if a v1
    /// hierarchy carries it (hybrid hosts); `None` means the controller, if
    /// anywhere, is on cgroup v2.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .zip(&self.v1_controllers)
            .find(|(_, cs)| cs.iter().any(|c| c == controller))
            .map(|(d, _)| d.as_path())
    }

    /// Every directory of this container, v2 first.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.unified.as_path()).chain(self.v1.iter().map(PathBuf::as_path))
    }

    /// The cgroup v2 id, as `bpf_get_current_cgroup_id()` reports it: the
    /// directory's inode number in cgroupfs.
    pub fn id(&self) -> Result<u64, CgroupError> {
        fs::metadata(&self.unified)
            .map(|m| m.ino())
            .map_err(|source| CgroupError::Inspect {
                path: self.unified.clone(),
                source,
            })
    }

    /// The cgroup v2 directory, opened: for `CLONE_INTO_CGROUP` and for
    /// attaching BPF programs.
    pub fn open_unified(&self) -> Result<fs::File, CgroupError> {
        open_dir(&self.unified)
    }

    /// Kills every process of containers nested in this one (cgroup.kill
    /// on each nested cgroup v2 directory, Linux 5.14); their monitors then
    /// clean up after them.
    pub fn kill_nested(&self) {
        if let Ok(entries) = fs::read_dir(&self.unified) {
            for nested in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = fs::write(nested.path().join("cgroup.kill"), "1");
            }
        }
    }

    /// Writes `limits` into the cgroups (at creation, before any process
    /// joins, and live: a running container's limits change at once).
    pub fn apply(&self, limits: &crate::spec::ResourceLimits) -> Result<(), LimitError> {
        limits::apply(self, limits)
    }

    /// Changes a running container's limits: every file or, on failure,
    /// none (see [`limits::apply_live`]).
    pub fn apply_live(&self, limits: &crate::spec::ResourceLimits) -> Result<(), LimitError> {
        limits::apply_live(self, limits)
    }

    /// Freezes every process of the container (cgroup v2 freezer).
    pub fn freeze(&self) -> Result<(), CgroupError> {
        set_frozen(&self.unified, true)
    }

    /// Thaws what [`Self::freeze`] froze.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        set_frozen(&self.unified, false)
    }

    /// Kills every process of the container and of containers nested in it.
    pub fn kill(&self) {
        kill_all(&self.unified);
    }

    /// What the controllers report about the container.
    pub fn stats(&self) -> CgroupStats {
        stats::read(&self.dirs().map(Path::to_path_buf).collect::<Vec<_>>())
    }

    /// Moves `pid` into every hierarchy's cgroup.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        self.join_dirs(self.dirs(), pid)
    }

    /// Moves `pid` into the v1 hierarchies' cgroups only (for a process
    /// born in the cgroup v2 one with CLONE_INTO_CGROUP).
    pub fn join_v1(&self, pid: i32) -> Result<(), CgroupError> {
        self.join_dirs(self.v1.iter().map(PathBuf::as_path), pid)
    }

    fn join_dirs<'a>(
        &self,
        dirs: impl Iterator<Item = &'a Path>,
        pid: i32,
    ) -> Result<(), CgroupError> {
        for dir in dirs {
            fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|source| {
                CgroupError::Join {
                    pid,
                    path: dir.to_path_buf(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Leaves the directories in place when the handle goes (a created
    /// container's, which `delete` removes).
    pub fn keep(mut self) {
        self.removed = true;
    }

    /// Removes every directory. Tasks of a container whose init just died
    /// take a moment to leave, so a busy cgroup is retried for a while.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.removed = true;
        remove_dirs(self.dirs())
    }
}

impl Drop for ContainerCgroups {
    fn drop(&mut self) {
        if !self.removed {
            for dir in self.dirs() {
                let _ = remove_dir_patiently(dir);
            }
        }
    }
}

/// Removes cgroup directories (of a container), each retried while busy;
/// the first error, after trying them all.
pub fn remove_dirs<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Result<(), CgroupError> {
    let mut first_error = None;
    for dir in dirs {
        if let Err(e) = remove_dir_patiently(dir) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn remove_dir_patiently(dir: &Path) -> Result<(), CgroupError> {
    limits::drop_rt_runtime(dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => {
                limits::return_rt_budget(dir);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// The id of the cgroup v2 directory `dir` (its inode number), if it exists.
pub fn id_of(dir: &Path) -> Option<u64> {
    fs::metadata(dir).ok().map(|m| m.ino())
}

/// The processes in the cgroup `dir` (empty if it is gone).
pub fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The threads (host thread ids) in a container's own cgroup, whose
/// directories in every hierarchy are `dirs`: v2's `cgroup.threads`, or
/// v1's `tasks` where no v2 directory is among them (empty if gone).
pub fn threads(dirs: &[PathBuf]) -> Vec<u32> {
    let file = dirs
        .iter()
        .map(|d| d.join("cgroup.threads"))
        .find(|p| p.exists())
        .or_else(|| dirs.iter().map(|d| d.join("tasks")).find(|p| p.exists()));
    file.and_then(|p| fs::read_to_string(p).ok())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether no process is in `dir` or in a cgroup below it (true if gone).
pub fn is_empty(dir: &Path) -> bool {
    procs(dir).is_empty()
        && fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .all(|e| is_empty(&e.path()))
}

/// Kills every process in the cgroup `dir` and below it: by `cgroup.kill`
/// where the kernel has it (cgroup v2, Linux 5.14), else each pid listed
/// in `cgroup.procs`, through a pidfd opened while the pid is still listed
/// there (so a recycled pid is never signalled). Never by name.
pub fn kill_all(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for nested in fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
    {
        kill_all(&nested.path());
    }
    for pid in procs(dir) {
        let Ok(fd) = crate::sys::pidfd::open(pid) else {
            continue;
        };
        if procs(dir).contains(&pid) {
            let _ = crate::sys::pidfd::send_signal(&fd, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Waits up to `timeout` for the cgroup `dir` to hold no process.
pub fn wait_empty(dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if is_empty(dir) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Writes an existing control file; never creates one (cgroupfs has no
/// such files to create, and an absent control must be reported as such).
pub(crate) fn write_control(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// Opens the cgroup directory `dir` (an fd to attach programs to, or to
/// start a process in with `CLONE_INTO_CGROUP`).
pub fn open_dir(dir: &Path) -> Result<fs::File, CgroupError> {
    fs::File::open(dir).map_err(|source| CgroupError::Inspect {
        path: dir.to_path_buf(),
        source,
    })
}

/// Whether process `pid` is in the cgroup v2 group `path` (as
/// `/proc/PID/cgroup` names it, relative to the v2 mount).
pub fn pid_is_in(pid: i32, path: &str) -> bool {
    let ours = format!("0::{path}");
    fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| t.lines().any(|l| l == ours))
}

/// Moves the calling process into each cgroup of `dirs` (writes "0" to
/// `cgroup.procs`: the writer, whatever pid namespace it is in).
pub fn join_self(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for dir in dirs {
        write_control(&dir.join("cgroup.procs"), "0").map_err(|source| CgroupError::Join {
            pid: std::process::id() as i32,
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The processes in the cgroup `dir`; an error if it cannot be read.
pub fn procs_checked(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let text =
        fs::read_to_string(dir.join("cgroup.procs")).map_err(|source| CgroupError::Inspect {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Moves process `pid` (its whole thread group) into each cgroup of
/// `dirs`, in order (a container's, as its state records them: put the v2
/// directory first to police it there before it is limited elsewhere).
/// Stops at the first that fails: the process is then in the ones before.
pub fn move_process(dirs: &[PathBuf], pid: i32) -> Result<(), CgroupError> {
    for dir in dirs {
        write_control(&dir.join("cgroup.procs"), &pid.to_string()).map_err(|source| {
            CgroupError::Join {
                pid,
                path: dir.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Whether process `pid` is in a palisade container: in some hierarchy its
/// cgroup (`/proc/PID/cgroup`) is under palisade's parent. `None` if the
/// process is gone.
pub fn in_palisade(pid: i32) -> Option<bool> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let under = format!("/{PARENT}/");
    Some(text.lines().any(|line| {
        line.splitn(3, ':')
            .nth(2)
            .is_some_and(|path| path.starts_with(&under))
    }))
}

/// The id of palisade's parent in the cgroup v2 hierarchy, and its level
/// under the hierarchy's root (for `bpf_get_current_ancestor_cgroup_id`);
/// `None` until some container made it.
pub fn parent_v2(hierarchies: &Hierarchies) -> Option<(u64, u32)> {
    id_of(&hierarchies.unified.join(PARENT)).map(|id| (id, 1))
}

/// Freezes (`frozen`) or thaws the cgroup v2 directory `dir` and its
/// descendants (`cgroup.freeze`, Linux 5.2), and waits up to 5 s until
/// the kernel reports it done in `cgroup.events`.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let want = if frozen { "1" } else { "0" };
    let failed = |source| CgroupError::Freeze {
        path: dir.to_path_buf(),
        frozen,
        source,
    };
    write_control(&dir.join("cgroup.freeze"), want).map_err(failed)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = format!("frozen {want}");
    loop {
        let events = fs::read_to_string(dir.join("cgroup.events")).map_err(failed)?;
        if events.lines().any(|l| l == done) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CgroupError::FreezeTimeout {
                path: dir.to_path_buf(),
                frozen,
            });
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Whether the cgroup v2 directory `dir` is frozen (`cgroup.events`).
pub fn is_frozen(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|events| events.lines().any(|l| l == "frozen 1"))
}

/// Every `MOUNT/palisade/NAME` directory, in every hierarchy.
pub fn top_level(hierarchies: &Hierarchies) -> Vec<PathBuf> {
    std::iter::once(&hierarchies.unified)
        .chain(hierarchies.v1.iter().map(|h| &h.mount))
        .flat_map(|mount| {
            fs::read_dir(mount.join(PARENT))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Removes one cgroup directory, retried while busy (as a container's
/// tasks take a moment to leave after being killed).
pub fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    remove_dir_patiently(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw shared:15 - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_layout() {
        let h = Hierarchies::from_mountinfo(HYBRID).unwrap();
        assert_eq!(h.unified, PathBuf::from("/sys/fs/cgroup/unified"));
        assert!(h.is_hybrid());
        let mounts: Vec<_> = h.v1.iter().map(|v| v.mount.to_str().unwrap()).collect();
        assert_eq!(
            mounts,
            ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory"]
        );
        assert_eq!(h.v1[0].controllers, ["cpu", "cpuacct"]);
    }

    #[test]
    fn planned_dirs_are_v2_first_then_each_v1_hierarchy() {
        let h = Hierarchies::from_mountinfo(HYBRID).unwrap();
        assert_eq!(
            h.planned(&["outer"], "web"),
            [
                "/sys/fs/cgroup/unified/palisade/outer/web",
                "/sys/fs/cgroup/cpu,cpuacct/palisade/outer/web",
                "/sys/fs/cgroup/memory/palisade/outer/web",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn pure_v2_layout() {
        let h = Hierarchies::from_mountinfo(
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
        )
        .unwrap();
        assert_eq!(h.unified, PathBuf::from("/sys/fs/cgroup"));
        assert!(!h.is_hybrid());
    }

    #[test]
    fn no_cgroup2_is_an_error() {
        assert!(matches!(
            Hierarchies::from_mountinfo(""),
            Err(CgroupError::NoUnified)
        ));
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
