//! Container state on disk: `ROOT/NAME/state.json` and `ROOT/NAME/log`.
//!
//! The directory's creation is what reserves a name, so two `run --name web`
//! cannot both win. `state.json` is replaced atomically (write, then
//! rename); readers never see half a file. Only the container's monitor
//! writes it after creation; `rm` deletes the directory.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

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
    Running,
    Exited,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Running => "running",
            Status::Exited => "exited",
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
    /// How to create the container again (`palisade restore` of its
    /// checkpoint).
    #[serde(default)]
    pub recipe: Option<Recipe>,
}

/// The `run` arguments that made a container (without --name, --detach
/// and --policy) and the policy texts, so a checkpoint can recreate it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub run_args: Vec<String>,
    /// The policy file's text at `run`, if one was given.
    pub policy: Option<String>,
    /// The last `policy apply`'s text: its network and device sections
    /// are the ones in force.
    pub applied_policy: Option<String>,
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

    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.container_dir(name).join("log")
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.container_dir(name).join("state.json")
    }

    /// Reserves `state.name` and writes its first state.
    pub fn create(&self, state: &State) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(|source| StateError::Io {
            action: "create state root",
            path: self.dir.clone(),
            source,
        })?;
        let dir = self.container_dir(&state.name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let status = self
                    .load(&state.name)
                    .map_or_else(|_| "unknown state".to_string(), |s| s.status.to_string());
                return Err(StateError::Exists {
                    name: state.name.clone(),
                    status,
                });
            }
            Err(source) => {
                return Err(StateError::Io {
                    action: "create",
                    path: dir,
                    source,
                });
            }
        }
        self.save(state)
    }

    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.state_path(&state.name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).expect("state serialises");
        fs::write(&tmp, text).map_err(|source| StateError::Io {
            action: "write",
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            action: "replace",
            path,
            source,
        })
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
            .filter_map(|e| self.load(&e.file_name().to_string_lossy()).ok())
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }

    /// Remembers which container a cgroup id belonged to, for events read
    /// after it is gone (`ROOT/cgroup-names`, the newest 4096 kept).
    pub fn remember_cgroup(&self, cgroup_id: u64, name: &str) {
        let path = self.dir.join("cgroup-names");
        let mut lines: Vec<String> = fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.push(format!("{cgroup_id} {name}"));
        let keep = lines.len().saturating_sub(4096);
        let _ = fs::write(&path, lines[keep..].join("\n") + "\n");
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

#[cfg(test)]
mod tests {
    use super::*;

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
            recipe: None,
        }
    }

    #[test]
    fn create_reserves_the_name_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("palisade-state-test-{}", std::process::id()));
        let root = StateRoot::new(&dir);
        let mut s = state("web");
        root.create(&s).unwrap();
        assert!(matches!(root.create(&s), Err(StateError::Exists { .. })));
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
