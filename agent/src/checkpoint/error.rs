//! The error of one step of a checkpoint or restore. It keeps its cause
//! — the errno, the file, the task a syscall was made in — instead of a
//! sentence, and says where it happened by wrapping ([`StepError::at`]).
//! [`super::CheckpointError`] carries it with the pid it is about.

use std::{io, path::PathBuf};

use nix::errno::Errno;

use super::remote::RemoteError;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A syscall of ours failed (making a pipe, a socket, a memfd).
    #[error("{what}: {errno}")]
    Syscall { what: String, errno: Errno },
    /// A syscall of ours on task `pid` failed (ptrace, its memory).
    #[error("{what}: {errno}")]
    Task {
        pid: i32,
        what: String,
        errno: Errno,
    },
    /// A remote syscall in task `pid`, or driving it, failed.
    #[error("{what}: {source}")]
    Remote {
        pid: i32,
        what: String,
        #[source]
        source: RemoteError,
    },
    /// A file at a known path could not be opened, read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        what: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// I/O on something already open failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The restore helper could not be forked.
    #[error("fork the restore helper: {0}")]
    Fork(#[source] crate::sys::process::ForkError),
    /// What the process has that cannot be reproduced, or is not yet.
    #[error("{0}")]
    Unsupported(String),
    /// The image contradicts itself or the host.
    #[error("{0}")]
    Image(String),
    /// A step went wrong without an errno (a short transfer, a task
    /// that did not stop).
    #[error("{0}")]
    Failed(String),
    /// `source`, with what to do about it.
    #[error("{source} ({hint})")]
    Hinted {
        #[source]
        source: Box<StepError>,
        hint: &'static str,
    },
    /// `source`, which happened at `at` (an fd, a thread, a process).
    #[error("{at}: {source}")]
    At {
        at: String,
        #[source]
        source: Box<StepError>,
    },
}

pub type StepResult<T> = Result<T, StepError>;

impl StepError {
    /// For `map_err`: a syscall of ours named `what` failed.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> Self {
        let what = what.into();
        move |errno| StepError::Syscall { what, errno }
    }

    /// For `map_err`: a syscall of ours on task `pid` failed.
    pub fn task(pid: i32, what: impl Into<String>) -> impl FnOnce(Errno) -> Self {
        let what = what.into();
        move |errno| StepError::Task { pid, what, errno }
    }

    /// For `map_err`: remote syscall `what` in task `pid` failed.
    pub fn remote(pid: i32, what: impl Into<String>) -> impl FnOnce(RemoteError) -> Self {
        let what = what.into();
        move |source| StepError::Remote { pid, what, source }
    }

    /// For `map_err`: `what` of the file at `path` failed.
    pub fn file(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let (what, path) = (what.into(), path.into());
        move |source| StepError::File { what, path, source }
    }

    /// For `map_err`: I/O `what` on something open failed.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| StepError::Io { what, source }
    }

    pub fn failed(what: impl Into<String>) -> Self {
        StepError::Failed(what.into())
    }

    /// This error, said to have happened at `at`.
    pub fn at(self, at: impl Into<String>) -> Self {
        StepError::At {
            at: at.into(),
            source: Box::new(self),
        }
    }

    /// This error, with what to do about it.
    pub fn hint(self, hint: &'static str) -> Self {
        StepError::Hinted {
            source: Box::new(self),
            hint,
        }
    }

    /// Whether the cause is something that cannot be reproduced (not a
    /// failure of the step).
    pub fn is_unsupported(&self) -> bool {
        match self {
            StepError::Unsupported(_) => true,
            StepError::At { source, .. } | StepError::Hinted { source, .. } => {
                source.is_unsupported()
            }
            _ => false,
        }
    }

    /// The kernel's reason, if the cause was a syscall.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            StepError::Syscall { errno, .. } | StepError::Task { errno, .. } => Some(*errno),
            StepError::Remote {
                source: RemoteError::Errno(e),
                ..
            } => Some(*e),
            StepError::File { source, .. } | StepError::Io { source, .. } => {
                source.raw_os_error().map(Errno::from_raw)
            }
            StepError::At { source, .. } | StepError::Hinted { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// The task the failing syscall was made on or in, if known.
    pub fn pid(&self) -> Option<i32> {
        match self {
            StepError::Task { pid, .. } | StepError::Remote { pid, .. } => Some(*pid),
            StepError::At { source, .. } | StepError::Hinted { source, .. } => source.pid(),
            _ => None,
        }
    }
}

/// `at`, for `map_err` on a [`StepResult`].
pub fn at(where_: impl Into<String>) -> impl FnOnce(StepError) -> StepError {
    let where_ = where_.into();
    move |e| e.at(where_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_cause_and_says_where() {
        let e = StepError::task(7, "write memory at 0x1000")(Errno::EFAULT).at("fd 3");
        assert_eq!(e.errno(), Some(Errno::EFAULT));
        assert_eq!(e.pid(), Some(7));
        let text = e.to_string();
        assert!(text.starts_with("fd 3: write memory at 0x1000: "), "{text}");
        assert!(text.contains("Bad address"), "{text}");
        let f = StepError::file("open", "/nope")(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(f.errno(), Some(Errno::ENOENT));
        assert!(f.to_string().starts_with("open /nope: No such file"), "{f}");
    }
}
