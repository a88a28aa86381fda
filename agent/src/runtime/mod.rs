//! The container runtime: namespaces, the container's first process, and
//! its supervision until it exits.
//!
//! Owns the order in which a container comes to life: cgroups created,
//! policy written and programs attached, then the process forked into new
//! namespaces, moved into the cgroups, and only then allowed to exec. It
//! never decides policy (that is `spec`) nor touches BPF itself (`enforce`).

mod init;
mod supervise;

use std::ffi::CString;

use nix::{
    errno::Errno,
    fcntl::OFlag,
    sched::{CloneFlags, unshare},
    sys::{
        signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask},
        wait::waitpid,
    },
    unistd::{Pid, pipe2, write},
};
use thiserror::Error;

use crate::{
    cgroups::{self, CgroupError, Hierarchies, LimitError},
    enforce::{EnforceError, Enforcer},
    spec::Policy,
    sys::process::{Forked, fork_single_threaded},
};

/// Exit status when palisade itself fails before the command could start.
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit status when the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit status when the command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// What to run and under which policy.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub name: String,
    pub command: Vec<String>,
    pub policy: Policy,
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{0}; the container was not started")]
    Enforce(#[from] EnforceError),
    #[error("{0}; the container was not started")]
    Limits(#[from] LimitError),
    #[error("{source} (policing {}); the container was not started", cgroup.display())]
    Load {
        cgroup: std::path::PathBuf,
        source: EnforceError,
    },
    #[error(
        "invalid container name {0:?}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    Name(String),
    #[error("no command given")]
    NoCommand,
    #[error("command argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    #[error("cannot {step}: {errno}")]
    Setup { step: &'static str, errno: Errno },
    /// The container's process reported a failure before exec.
    #[error("{message}")]
    Start { status: i32, message: String },
}

impl RuntimeError {
    /// The exit status palisade ends with for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            RuntimeError::Start { status, .. } => *status,
            RuntimeError::Name(_) | RuntimeError::NoCommand | RuntimeError::NulInArgument(_) => 2,
            _ => EXIT_SETUP_FAILED,
        }
    }
}

/// Checks a container name: it becomes a cgroup directory and a hostname.
pub fn validate_name(name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Name(name.to_string()))
    }
}

/// Signals palisade passes on to the container; SIGCHLD tells it the
/// container's process has ended.
fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in supervise::FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Runs a container in the foreground and returns its exit status (the
/// command's own, or 128+N if a signal N ended it). Everything created for
/// it is removed before returning, whether it started or not.
pub fn run(spec: &RunSpec) -> Result<i32, RuntimeError> {
    validate_name(&spec.name)?;
    if spec.command.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    let argv = spec
        .command
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| RuntimeError::NulInArgument(a.clone())))
        .collect::<Result<Vec<_>, _>>()?;

    let hierarchies = Hierarchies::detect()?;
    let cgroups = hierarchies.create(&spec.name)?;
    // Limits before the command exists, like the programs below.
    cgroups::apply(&cgroups, &spec.policy.resources)?;
    let cgroup_id = cgroups.id()?;
    let mut enforcer = Enforcer::load().map_err(|source| RuntimeError::Load {
        cgroup: cgroups.unified().to_path_buf(),
        source,
    })?;
    enforcer.police(cgroups.unified(), cgroup_id, &spec.policy)?;

    let setup = |step| move |errno| RuntimeError::Setup { step, errno };
    let (go_read, go_write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
    let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
    let signals = supervised_signals();
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), Some(&mut old_mask))
        .map_err(setup("block signals"))?;
    // The next child palisade forks becomes pid 1 of a new pid namespace.
    unshare(CloneFlags::CLONE_NEWPID).map_err(setup("create a pid namespace"))?;

    let child = match fork_single_threaded().map_err(setup("fork"))? {
        Forked::Child => {
            drop(go_write);
            drop(err_read);
            init::start(init::Init {
                go: go_read,
                report: err_write,
                argv: &argv,
                hostname: &spec.name,
                sigmask: old_mask,
            })
        }
        Forked::Parent { child } => Pid::from_raw(child),
    };
    drop(go_read);
    drop(err_write);

    // Into the cgroups first: the command must not run a single
    // instruction outside its policy.
    let released = cgroups
        .join(child.as_raw())
        .map_err(RuntimeError::from)
        .and_then(|()| write(&go_write, b"1").map_err(setup("start the container")));
    drop(go_write);
    if let Err(e) = released {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(e);
    }
    if let Some((status, message)) = init::read_report(err_read) {
        let _ = waitpid(child, None);
        return Err(RuntimeError::Start { status, message });
    }

    let status = supervise::until_exit(child, &signals).map_err(setup("wait for the container"))?;
    drop(enforcer);
    cgroups.remove()?;
    Ok(status)
}
