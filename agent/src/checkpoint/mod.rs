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
pub mod files;
pub mod image;
mod pages;
mod proc;
mod remote;
pub mod restore;
pub mod state;

use nix::errno::Errno;

pub use container::checkpoint_container;
pub use dump::{DumpOptions, DumpReport, checkpoint_pid};
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
    #[error("container {name}: cannot checkpoint: {what}")]
    Container { name: String, what: String },
    #[error("image: {0}")]
    Image(String),
    #[error("restore of pid {pid}: {what}; every process created was killed")]
    Restore { pid: i32, what: String },
}

impl CheckpointError {
    fn sys(pid: i32, what: impl Into<String>) -> impl FnOnce(Errno) -> Self {
        let what = what.into();
        move |source| CheckpointError::Sys { pid, what, source }
    }
}
