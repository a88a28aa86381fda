//! Checkpoint and restore of a process, in userspace: freeze it with
//! ptrace, record its registers, memory, files and signal mask into an
//! image, and recreate it later with the same pid by remote syscalls.
//!
//! A `--pid` tree (a process, its threads and descendants) or a whole
//! container; anything it cannot reproduce faithfully is refused at dump
//! time, naming it, with the processes left running unchanged. Raw
//! syscalls live in `sys::ptrace` and `sys::fds`; this module never uses
//! `unsafe`.

mod container;
pub mod dump;
mod error;
pub mod files;
pub mod image;
pub mod imagedir;
mod pages;
pub(crate) mod proc;
mod remote;
pub mod restore;
pub mod sign;
pub mod state;
pub mod track;
mod vmflags;

use nix::errno::Errno;

pub use container::{ContainerTarget, checkpoint_container};
pub use dump::{DumpOptions, DumpReport, checkpoint_pid, checkpoint_pid_chained};
pub use error::{StepError, StepResult};
pub use restore::{RestoreReport, restore};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("pid {pid}: {what}: {source}")]
    Sys {
        pid: i32,
        what: String,
        source: Errno,
    },
    #[error(
        "pid {pid}: cannot checkpoint: {what} (not supported yet); the process was left running unchanged"
    )]
    Unsupported { pid: i32, what: String },
    #[error("pid {pid}: {what}")]
    Process { pid: i32, what: String },
    /// A step of the checkpoint of process `pid` failed.
    #[error("pid {pid}: {source}")]
    Step {
        pid: i32,
        #[source]
        source: StepError,
    },
    #[error("no container named {0:?}")]
    NoContainer(String),
    #[error("container {name}: cannot checkpoint: {what}")]
    Container { name: String, what: String },
    /// Its cgroup could not be read or frozen.
    #[error("container {name}: cannot checkpoint: {source}")]
    Cgroup {
        name: String,
        #[source]
        source: crate::cgroups::CgroupError,
    },
    /// A bad image: refused before anything is created (exit 2).
    #[error("image: {0}")]
    Image(String),
    /// A bad `--dir`: refused before anything is touched (exit 2).
    #[error("--dir {dir}: {what}")]
    BadDir { dir: String, what: String },
    /// The image's manifest refused (exit 2).
    #[error("image {dir}: manifest.json: {source}")]
    Manifest {
        dir: String,
        source: sign::ManifestError,
    },
    #[error(transparent)]
    Key(#[from] sign::KeyError),
    /// Writing the image failed (exit 125).
    #[error("cannot write the image: {0}; the processes were left running unchanged")]
    Write(String),
    #[error("restore of pid {pid}: {what}; every process created was killed")]
    Restore { pid: i32, what: String },
    /// A pre-dump chain asked for wrongly (a `--parent` that is not the
    /// chain's last image, a tree already tracked…): refused, nothing
    /// touched (exit 2).
    #[error("{0}")]
    Chain(String),
    /// A step of the restore of process `pid` failed.
    #[error("restore of pid {pid}: {source}; every process created was killed")]
    RestoreStep {
        pid: i32,
        #[source]
        source: StepError,
    },
}

/// Exit status for bad input (a bad image or `--dir`, a bad key file).
pub const EXIT_BAD_INPUT: i32 = crate::exit::BAD_INPUT;
/// Exit status for a failed operation.
pub const EXIT_FAILED: i32 = crate::exit::SETUP_FAILED;

impl CheckpointError {
    /// The exit status palisade ends with for this error: 2 for a bad
    /// image, directory or key file, 125 for a failure of the operation.
    pub fn exit_status(&self) -> i32 {
        match self {
            CheckpointError::Image(_)
            | CheckpointError::NoContainer(_)
            | CheckpointError::BadDir { .. }
            | CheckpointError::Chain(_)
            | CheckpointError::Manifest { .. } => EXIT_BAD_INPUT,
            CheckpointError::Key(k) if !k.is_operational() => EXIT_BAD_INPUT,
            _ => EXIT_FAILED,
        }
    }

    /// For `map_err` at a dump step about process `pid`: what cannot be
    /// reproduced is [`CheckpointError::Unsupported`], any other failure
    /// [`CheckpointError::Step`].
    pub(crate) fn step(pid: i32) -> impl FnOnce(StepError) -> Self {
        move |source| {
            if source.is_unsupported() {
                CheckpointError::Unsupported {
                    pid,
                    what: source.to_string(),
                }
            } else {
                CheckpointError::Step { pid, source }
            }
        }
    }

    /// For `map_err`: remote syscall `what` in process `pid` failed.
    pub(crate) fn remote(
        pid: i32,
        what: impl Into<String>,
    ) -> impl FnOnce(remote::RemoteError) -> Self {
        let remote = StepError::remote(pid, what);
        move |e| CheckpointError::Step {
            pid,
            source: remote(e),
        }
    }

    /// For `map_err`: `what` of file `path`, about process `pid`, failed.
    pub(crate) fn file(
        pid: i32,
        what: impl Into<String>,
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let file = StepError::file(what, path);
        move |e| CheckpointError::Step {
            pid,
            source: file(e),
        }
    }

    pub(crate) fn sys(pid: i32, what: impl Into<String>) -> impl FnOnce(Errno) -> Self {
        let what = what.into();
        move |source| CheckpointError::Sys { pid, what, source }
    }
}
