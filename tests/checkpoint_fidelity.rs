//! Checkpoint fidelity of files against the real kernel:
//! tests/workloads/files_fidelity.c sets up file state the engine must
//! keep exactly (SIGIO owners, socket filters, deleted files shared by
//! two descriptions with holes and times, armed timerfds), is
//! checkpointed and restored with the same pid, and verifies itself; and
//! state the engine refuses (file locks, removed directories and fifos,
//! shared fd tables, terminals), where the checkpoint must fail cleanly
//! and leave the process running as it was.

use std::fs;

mod support;

use support::ckpt::*;

fn round_trip(mode: &str) {
    support::ckpt::round_trip("files_fidelity", mode);
}

/// A pipe with O_ASYNC, F_SETOWN_EX and F_SETSIG: a write raises the
/// chosen signal with si_fd after restore, and the settings read back.
#[test]
fn sigio_owner_signal_and_o_async_survive() {
    round_trip("async");
}

/// A locked classic BPF socket filter keeps dropping what it dropped.
#[test]
fn a_socket_filter_survives_locked() {
    round_trip("sockfilter");
}

/// Two descriptions of one deleted file stay one file (a write through
/// one is read through the other), with its hole and its times.
#[test]
fn a_deleted_file_stays_one_sparse_file_with_its_times() {
    let mut w = Workload::start_program("files_fidelity", &["ghost"]);
    let image = w.image("img");
    w.checkpoint(&image);
    // The hole is not stored: files.img holds the 4 KiB of data once.
    let files = fs::metadata(image.join("files.img")).unwrap().len();
    assert!(files < 64 << 10, "files.img is {files} bytes");
    w.restore_and_verify(&image, 0);
}

/// Armed timerfds, relative with an interval and absolute, stay armed
/// with the time they had left.
#[test]
fn armed_timerfds_stay_armed() {
    round_trip("timerfd");
}

/// O_PATH fds, of a symlink itself (O_NOFOLLOW) and of a directory.
#[test]
fn o_path_fds_survive() {
    round_trip("opath");
}

/// Unix sockets bound to a path (listening, its file's mode kept; and
/// datagram), to an abstract name (listening), and an unbound datagram
/// one: each takes connections or datagrams after restore.
#[test]
fn bound_and_abstract_unix_sockets_survive() {
    round_trip("unixbound");
}

/// A connection waiting to be accepted cannot be restored: refused.
#[test]
fn a_listener_with_a_waiting_connection_is_refused() {
    refused("unixpending", "1 connections not yet accepted");
}

/// A sealed sparse memfd open through two descriptions stays one memfd
/// with its name, seals and hole; a MFD_NOEXEC_SEAL one stays so.
#[test]
fn memfds_survive_with_their_seals() {
    noexec_memfds("memfds_survive_with_their_seals");
    round_trip("memfd");
}

/// Where this kernel makes no MFD_NOEXEC_SEAL memfds (before 6.3), the
/// workload leaves that part out, and `test` says so.
fn noexec_memfds(test: &str) {
    const MFD_NOEXEC_SEAL: libc::c_uint = 0x0008;
    // SAFETY: a NUL-terminated name and flags in, an fd (ours, closed at
    // once) or -1 out.
    let fd = unsafe { libc::memfd_create(c"probe".as_ptr(), MFD_NOEXEC_SEAL) };
    if fd < 0 {
        support::skip(
            &format!("{test} (the MFD_NOEXEC_SEAL memfd)"),
            "this kernel has no MFD_NOEXEC_SEAL (6.3+)",
        );
        return;
    }
    // SAFETY: the fd we just made, closed once.
    unsafe { libc::close(fd) };
}

/// A memfd both open and mapped would come back as two: refused.
#[test]
fn a_memfd_both_open_and_mapped_is_refused() {
    refused("memfdmapped", "both open as an fd and mapped");
}

/// An epoll item whose fd number now holds another file (its target
/// moved to another fd) still fires, and the number keeps the other file.
#[test]
fn an_epoll_item_whose_fd_moved_survives() {
    round_trip("epollmoved");
}

/// All of the above in one process, checkpointed again after restore.
#[test]
fn all_together_twice() {
    noexec_memfds("all_together_twice");
    let mode = "async,sockfilter,ghost,timerfd,opath,unixbound,memfd,epollmoved";
    let mut w = Workload::start_program("files_fidelity", &[mode]);
    let first = w.image("first");
    w.checkpoint(&first);
    w.restore(&first);
    let second = w.image("second");
    w.checkpoint(&second);
    w.restore_and_verify(&second, 0);
}

fn refused(mode: &str, expect: &str) {
    assert_refused_unchanged(Workload::start_program("files_fidelity", &[mode]), expect);
}

#[test]
fn a_posix_lock_is_refused() {
    refused("posixlock", "POSIX file lock");
}

#[test]
fn an_ofd_lock_is_refused() {
    refused("ofdlock", "OFDLCK file lock");
}

#[test]
fn a_flock_is_refused() {
    refused("flock", "FLOCK file lock");
}

#[test]
fn an_fd_on_a_removed_directory_is_refused() {
    refused("rmdir", "a removed directory");
}

#[test]
fn a_removed_fifo_is_refused() {
    refused("fifogone", "a removed fifo");
}

#[test]
fn a_shared_fd_table_is_refused() {
    refused("clonefiles", "its fd table (CLONE_FILES)");
}

#[test]
fn a_controlling_terminal_is_refused() {
    refused("ctty", "controlling terminal");
}
