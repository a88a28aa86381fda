//! Container state on disk: `ROOT/NAME/state.json` and `ROOT/NAME/log`.
//!
//! The directory's appearance is what reserves a name, so two `run --name
//! web` cannot both win: it is made under a temporary name with its first
//! `state.json` and a locked `lock` file inside, then renamed into place
//! (never over an existing one), so a reserved name always has a state and
//! a creator's lock from its first instant. The creator (the container's
//! monitor) holds the lock, an open file description lock (`F_OFD_SETLK`),
//! for as long as it lives; the kernel drops it when the creator dies, so
//! "is its creator still there" is a lock test, immune to pid reuse.
//! `state.json` is replaced atomically (write, then rename); readers never
//! see half a file. Only the container's monitor writes it after creation;
//! `rm` deletes the directory.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use nix::fcntl::{FcntlArg, fcntl};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::spec::Recipe;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("container {name:?} already exists ({status}); remove it with `palisade rm {name}`")]
    Exists { name: String, status: String },
    #[error("no container named {0:?}")]
    NotFound(String),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt state file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Reserved; cgroups, policy and namespaces being set up.
    Creating,
    /// Made by `create` and waiting for `start`: everything is in place
    /// and the first process is stopped just before it runs the command.
    Created,
    Running,
    Exited,
    /// Never on disk: what `ps`, `stats` and the metrics report for a
    /// container whose creator or monitor died and whose processes are
    /// all gone (see [`State::dead_reason`]). `rm` removes it.
    Dead,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Dead => "dead",
        })
    }
}

/// What `exec` needs to enter the container the way its first process did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecProfile {
    pub env: Vec<String>,
    pub workdir: Option<PathBuf>,
    pub user: Option<(u32, u32)>,
    /// Capability bitmask (bit N = capability N).
    pub caps: u64,
    /// Socket families the policy refuses (enforced by seccomp).
    #[serde(default)]
    pub denied_families: Vec<i32>,
    /// The policy's `[security] io_uring` (io_uring refused by seccomp
    /// unless true).
    #[serde(default)]
    pub io_uring: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub status: Status,
    /// The container's first process, as the host sees it.
    pub pid: Option<i32>,
    /// The process that waits for it and cleans up after it.
    pub monitor_pid: i32,
    pub detached: bool,
    /// Seconds since the epoch.
    pub created: u64,
    pub finished: Option<u64>,
    pub command: Vec<String>,
    pub exit_status: Option<i32>,
    pub oom_killed: bool,
    pub cgroup_id: Option<u64>,
    /// Every cgroup directory of the container, cgroup v2 first.
    pub cgroups: Vec<PathBuf>,
    pub exec: ExecProfile,
    /// `--net bridge`: the leased address and the host end of the veth.
    #[serde(default)]
    pub net_address: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub veth: Option<String>,
    /// With `--userns`: the host uid (and gid) that the container's root is.
    #[serde(default)]
    pub userns: Option<u32>,
    /// The containers this one is nested in (`--parent`), outermost first.
    #[serde(default)]
    pub enclosing: Vec<String>,
    /// The outbound rate limit's traffic class, if the container is shaped.
    #[serde(default)]
    pub shaping: Option<super::shaping::Shaping>,
    /// Device rules from `--device` and the bundle, added to every policy
    /// applied to the container (`c 7:0 rw`…).
    #[serde(default)]
    pub device_rules: Vec<crate::spec::DeviceRule>,
    /// The texts of policies a `policy apply` is writing into the maps (or
    /// was, when it was interrupted): recorded before it writes, cleared
    /// once the new policy is recorded in force, so that every entry the
    /// container has in the maps is known by key (see
    /// `adopt::written_policies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies_pending: Vec<String>,
    /// It asked to see its own `/proc` figures (`[view] proc`,
    /// `--proc-view`; see `runtime::view`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proc_view: bool,
    /// How the container was made; `None` for a container started by a
    /// palisade whose recipe this one cannot read (it cannot be
    /// checkpointed).
    #[serde(default, deserialize_with = "readable_recipe")]
    pub recipe: Option<Recipe>,
    /// The creator holds `ROOT/NAME/lock` while it lives (every state
    /// this version writes). Without it (an older palisade's state) the
    /// monitor is looked for by pid.
    #[serde(default)]
    pub creator_lock: bool,
    /// Why a container is [`Status::Dead`], or that a running one's
    /// monitor died; never on disk.
    #[serde(skip)]
    pub dead_reason: Option<&'static str>,
    /// The OCI bundle it was made from, if any.
    #[serde(default)]
    pub bundle: Option<BundleRecord>,
    /// Made through the runc contract (`create`): no palisade monitor
    /// runs; the caller that ran `create` (conmon, containerd's shim)
    /// reaps the first process and learns its exit status, and `delete`
    /// cleans up. Its state says `running` until the process is gone.
    #[serde(default)]
    pub caller_reaps: bool,
    /// The first process's start time (clock ticks after boot, from
    /// /proc/PID/stat), which tells it from a later process of its pid.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// Frozen by `pause`; read from the cgroup, never on disk.
    #[serde(skip)]
    pub paused: bool,
}

/// What a container keeps of its OCI bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// The bundle directory, absolute.
    pub dir: PathBuf,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub hooks: crate::spec::HookSet,
}

/// A recorded recipe this palisade can read, or `None` for one in an
/// older format (the container runs on; only its checkpoint is refused).
fn readable_recipe<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Recipe>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

impl State {
    /// The container's cgroup path, as /proc/PID/cgroup shows it on the
    /// host: `/palisade/[ENCLOSING/…]NAME`.
    pub fn cgroup_path(&self) -> String {
        let mut path = format!("/{}", crate::cgroups::PARENT);
        for part in self.enclosing.iter().chain(std::iter::once(&self.name)) {
            path.push('/');
            path.push_str(part);
        }
        path
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The state root: one directory per container.
#[derive(Debug, Clone)]
pub struct StateRoot {
    dir: PathBuf,
}

impl StateRoot {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where pre-dump chains keep their tracking sessions (a name no
    /// container can have).
    pub fn tracking_dir(&self) -> PathBuf {
        self.dir.join(".tracking")
    }

    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.container_dir(name).join("log")
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.container_dir(name).join("state.json")
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.container_dir(name).join(LOCK_FILE)
    }

    /// Reserves `state.name` and writes its first state; the returned lock
    /// says the caller is its creator, for as long as the caller (or a
    /// child it forks) keeps it open.
    pub fn create(&self, state: &State) -> Result<CreatorLock, StateError> {
        fs::create_dir_all(&self.dir).map_err(|source| StateError::Io {
            action: "create state root",
            path: self.dir.clone(),
            source,
        })?;
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        let staging = self.dir.join(format!(
            "{STAGING_PREFIX}{}.{}",
            state.name,
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir(&staging).map_err(io("create", &staging))?;
        let prepared = (|| {
            let lock = CreatorLock::take(&staging.join(LOCK_FILE))?
                .ok_or_else(|| io("lock", &staging)(io::ErrorKind::WouldBlock.into()))?;
            let mut state = state.clone();
            state.creator_lock = true;
            write_atomically(&staging.join("state.json"), &state)?;
            Ok(lock)
        })();
        let lock = match prepared {
            Ok(lock) => {
                use std::os::fd::AsRawFd;
                CREATED_LOCK_FD.store(lock.file.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
                lock
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let dir = self.container_dir(&state.name);
        match crate::sys::fs::rename_noreplace(&staging, &dir) {
            Ok(()) => Ok(lock),
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                if e == nix::errno::Errno::EEXIST {
                    let status = self
                        .load(&state.name)
                        .map_or_else(|_| "unknown state".to_string(), |s| s.status.to_string());
                    Err(StateError::Exists {
                        name: state.name.clone(),
                        status,
                    })
                } else {
                    Err(io("reserve", &dir)(e.into()))
                }
            }
        }
    }

    /// Whether a live process (the creator, or a monitor it forked) holds
    /// the container's creator lock. A state without one (an older
    /// palisade's) is judged by its monitor's pid.
    pub fn creator_alive(&self, state: &State) -> bool {
        if !state.creator_lock {
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.monitor_pid), None)
                .is_ok();
        }
        match fs::File::open(self.lock_path(&state.name)) {
            Ok(file) => is_locked(&file),
            // No lock file: the directory is going (rm).
            Err(_) => false,
        }
    }

    /// Takes the creator lock of a container whose creator is gone, so
    /// that this process may clean up after it; `None` if a live process
    /// holds it. A directory without a lock file (an older palisade's, or
    /// one half removed) gets one.
    pub fn take_over(&self, name: &str) -> Result<Option<CreatorLock>, StateError> {
        CreatorLock::take(&self.lock_path(name))
    }

    /// Staging directories (`.NAME.PID`) of reservations whose creator
    /// died before renaming them into place.
    pub fn abandoned_staging(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| is_staging_name(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|dir| match fs::File::open(dir.join(LOCK_FILE)) {
                Ok(file) => !is_locked(&file),
                Err(_) => true,
            })
            .collect()
    }

    /// The names of every container directory, readable state or not.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.container_dirs().collect();
        names.sort();
        names
    }

    /// Whether the root has no container directory: stops at the first,
    /// so it costs the same with one container or a thousand.
    pub fn is_empty(&self) -> bool {
        self.container_dirs().next().is_none()
    }

    /// Container directories' names, in directory order. The entry's own
    /// type (from the directory listing) tells a directory, with no
    /// system call per entry.
    fn container_dirs(&self) -> impl Iterator<Item = String> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| super::validate_name(n).is_ok())
    }

    pub fn save(&self, state: &State) -> Result<(), StateError> {
        write_atomically(&self.state_path(&state.name), state)
    }

    pub fn load(&self, name: &str) -> Result<State, StateError> {
        let path = self.state_path(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(name.to_string()));
            }
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Every container with a readable state, by name.
    pub fn list(&self) -> Result<Vec<State>, StateError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut states: Vec<State> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter(|e| !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
            .filter_map(|e| self.load(&e.file_name().to_string_lossy()).ok())
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }

    /// Remembers which container a cgroup id belonged to, for events read
    /// after it is gone (`ROOT/cgroup-names`, at least the newest
    /// [`REMEMBERED`] kept). One line appended under the file's lock, so
    /// concurrent starts lose none; the start that finds the file past
    /// [`REMEMBERED_BYTES`] cuts it back to the newest [`REMEMBERED`].
    pub fn remember_cgroup(&self, cgroup_id: u64, name: &str) {
        use std::io::{Read, Seek, Write};
        let path = self.dir.join("cgroup-names");
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
        else {
            return;
        };
        let Ok(mut file) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        else {
            return;
        };
        let _ = writeln!(file, "{cgroup_id} {name}");
        if file.metadata().map_or(0, |m| m.len()) <= REMEMBERED_BYTES {
            return;
        }
        let mut text = String::new();
        if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
            return;
        }
        let lines: Vec<&str> = text.lines().collect();
        let kept = lines[lines.len().saturating_sub(REMEMBERED)..].join("\n") + "\n";
        // In place, under the lock: appends wait for it.
        if file.set_len(0).is_ok() {
            let _ = file.write_all(kept.as_bytes());
        }
    }

    /// Every remembered (cgroup id, name), oldest first.
    pub fn remembered_cgroups(&self) -> Vec<(u64, String)> {
        fs::read_to_string(self.dir.join("cgroup-names"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (id, name) = l.split_once(' ')?;
                Some((id.parse().ok()?, name.to_string()))
            })
            .collect()
    }

    /// Deletes the container's directory (state and log).
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let dir = self.container_dir(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                action: "remove",
                path: dir,
                source,
            }),
        }
    }
}

/// The creator's lock file in a container's directory.
const LOCK_FILE: &str = "lock";
/// Names of reservations being prepared (never a container name, which
/// starts with a letter or digit).
const STAGING_PREFIX: &str = ".";

/// How many cgroup ids' names a root remembers at least.
const REMEMBERED: usize = 4096;
/// The size past which `cgroup-names` is cut back to the newest
/// [`REMEMBERED`]: twice that many of the longest lines (20 digits, a
/// space, a 64-byte name and a newline).
const REMEMBERED_BYTES: u64 = 2 * REMEMBERED as u64 * 86;

/// Whether `name` is a reservation's staging directory, `.NAME.PID`; the
/// root's own dot entries (`.journal`, `.bpf.lock`) are not.
fn is_staging_name(name: &str) -> bool {
    name.strip_prefix(STAGING_PREFIX)
        .and_then(|rest| rest.rsplit_once('.'))
        .is_some_and(|(container, pid)| {
            !container.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
}

fn write_atomically(path: &Path, state: &State) -> Result<(), StateError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).expect("state serialises");
    fs::write(&tmp, text).map_err(|source| StateError::Io {
        action: "write",
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, path).map_err(|source| StateError::Io {
        action: "replace",
        path: path.to_path_buf(),
        source,
    })
}

/// The descriptor of this process's [`CreatorLock`] from [`StateRoot::create`],
/// or -1: a forked container process closes its copy at once, so that only
/// palisade's own process (the monitor) keeps the creator alive.
static CREATED_LOCK_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// In a process forked by a creator (the container's first process, before
/// it runs anything): closes the inherited creator lock.
pub(super) fn drop_inherited_creator_lock() {
    let fd = CREATED_LOCK_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: in the forked child the lock's owner (the creator's
        // `CreatorLock`) never runs again: the child execs or exits.
        unsafe { crate::sys::fds::close_inherited(fd) };
    }
}

/// A whole-file write lock on an open file description (`F_OFD_SETLK`):
/// held by every process sharing the description (a forked monitor too),
/// dropped by the kernel when the last of them closes it or dies.
#[derive(Debug)]
pub struct CreatorLock {
    file: fs::File,
}

fn whole_file(kind: libc::c_short) -> libc::flock {
    libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

impl CreatorLock {
    /// The lock's descriptor, made to survive exec (not close-on-exec):
    /// the program the monitor becomes holds the lock on.
    pub fn inheritable_fd(&self) -> Result<std::os::fd::RawFd, StateError> {
        use std::os::fd::AsRawFd;
        fcntl(&self.file, FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).map_err(|e| {
            StateError::Io {
                action: "pass on",
                path: PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())),
                source: e.into(),
            }
        })?;
        Ok(self.file.as_raw_fd())
    }

    /// The creator lock of container `name` that this process inherited
    /// as descriptor `fd`: refused unless that descriptor is open and is
    /// the container's lock file.
    pub fn inherited(
        root: &StateRoot,
        name: &str,
        fd: std::os::fd::RawFd,
    ) -> Result<Self, StateError> {
        use std::os::fd::AsFd;
        let path = root.lock_path(name);
        let io = |source: std::io::Error| StateError::Io {
            action: "take over",
            path: path.clone(),
            source,
        };
        let owned = crate::sys::fds::adopt_inherited(fd).map_err(|e| io(e.into()))?;
        let inode = |fd: std::os::fd::BorrowedFd<'_>| {
            nix::sys::stat::fstat(fd).map(|st| (st.st_dev, st.st_ino))
        };
        let on_disk = fs::File::open(&path).map_err(io)?;
        let held = inode(owned.as_fd()).map_err(|e| io(e.into()))?;
        if held != inode(on_disk.as_fd()).map_err(|e| io(e.into()))? {
            return Err(io(std::io::Error::other(format!(
                "descriptor {fd} is not this container's lock"
            ))));
        }
        Ok(Self {
            file: fs::File::from(owned),
        })
    }
    /// Locks `path` (created if missing); `None` if another process holds it.
    fn take(path: &Path) -> Result<Option<Self>, StateError> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| StateError::Io {
                action: "open",
                path: path.to_path_buf(),
                source,
            })?;
        match fcntl(
            &file,
            FcntlArg::F_OFD_SETLK(&whole_file(libc::F_WRLCK as _)),
        ) {
            Ok(_) => Ok(Some(Self { file })),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
            Err(e) => Err(StateError::Io {
                action: "lock",
                path: path.to_path_buf(),
                source: e.into(),
            }),
        }
    }
}

/// Whether some process holds a lock on `file` (tested, never taken).
fn is_locked(file: &fs::File) -> bool {
    let mut probe = whole_file(libc::F_WRLCK as _);
    match fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe)) {
        Ok(_) => probe.l_type != libc::F_UNLCK as libc::c_short,
        // Cannot tell: say alive, which only ever refuses a cleanup.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reservations_are_staging_directories() {
        assert!(is_staging_name(".web.1234"));
        assert!(is_staging_name(".a.b.7"));
        for other in [
            ".journal",
            ".bpf.lock",
            ".web.",
            "..12",
            "web.12",
            ".web.12x",
        ] {
            assert!(!is_staging_name(other), "{other}");
        }
    }

    fn state(name: &str) -> State {
        State {
            name: name.into(),
            status: Status::Creating,
            pid: None,
            monitor_pid: 1,
            detached: false,
            created: now(),
            finished: None,
            command: vec!["true".into()],
            exit_status: None,
            oom_killed: false,
            cgroup_id: None,
            cgroups: vec![],
            exec: ExecProfile::default(),
            net_address: None,
            veth: None,
            userns: None,
            enclosing: vec![],
            shaping: None,
            device_rules: vec![crate::spec::DeviceRule::parse("b 7:0 rw").unwrap()],
            policies_pending: Vec::new(),
            proc_view: false,
            recipe: None,
            creator_lock: false,
            dead_reason: None,
            bundle: None,
            caller_reaps: false,
            pid_start: None,
            paused: false,
        }
    }

    #[test]
    fn concurrent_starts_lose_no_cgroup_name_and_the_newest_are_kept() {
        let dir = std::env::temp_dir().join(format!("palisade-names-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let root = StateRoot::new(&dir);
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let root = &root;
                scope.spawn(move || {
                    for i in 0..100 {
                        root.remember_cgroup(t * 1000 + i, &format!("c{t}-{i}"));
                    }
                });
            }
        });
        let mut ids: Vec<u64> = root
            .remembered_cgroups()
            .iter()
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 800, "every concurrent start's name");

        // Long names fill the file: it is cut back to the newest.
        let long = "n".repeat(64);
        for id in 0..12_000u64 {
            root.remember_cgroup(10_000 + id, &long);
        }
        let kept = root.remembered_cgroups();
        assert!(kept.len() >= REMEMBERED, "{}", kept.len());
        assert!(kept[0].0 >= 10_000, "the oldest went");
        assert_eq!(kept.last().map(|(id, _)| *id), Some(21_999));
        assert!(
            kept.windows(2).all(|w| w[0].0 + 1 == w[1].0),
            "the newest, in order"
        );
        let size = fs::metadata(dir.join("cgroup-names")).unwrap().len();
        assert!(size <= REMEMBERED_BYTES + 86, "{size}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn create_reserves_the_name_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("palisade-state-test-{}", std::process::id()));
        let root = StateRoot::new(&dir);
        let mut s = state("web");
        let lock = root.create(&s).unwrap();
        assert!(matches!(root.create(&s), Err(StateError::Exists { .. })));
        s.creator_lock = true;
        assert!(root.creator_alive(&s));
        assert!(root.take_over("web").unwrap().is_none());
        drop(lock);
        // Other tests of this binary spawn processes: one forked and not
        // yet exec'd holds the lock's file (and the lock) for a moment.
        let released = |root: &StateRoot, s: &State| {
            (0..200).any(|_| {
                let free = !root.creator_alive(s);
                if !free {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                free
            })
        };
        assert!(released(&root, &s));
        let lock = root.take_over("web").unwrap().expect("free once dropped");
        drop(lock);
        s.status = Status::Running;
        s.pid = Some(42);
        root.save(&s).unwrap();
        assert_eq!(root.load("web").unwrap(), s);
        assert_eq!(root.list().unwrap(), vec![s]);
        root.remove("web").unwrap();
        assert!(matches!(root.load("web"), Err(StateError::NotFound(_))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
