//! Checkpoint fidelity of files against the real kernel:
//! tests/workloads/files_fidelity.c sets up file state the engine must
//! keep exactly (SIGIO owners, socket filters, deleted files shared by
//! two descriptions with holes and times, armed timerfds), is
//! checkpointed and restored with the same pid, and verifies itself; and
//! state the engine refuses (file locks, removed directories and fifos,
//! shared fd tables, terminals), where the checkpoint must fail cleanly
//! and leave the process running as it was.

use std::{fs, thread, time::Duration};

mod support;

use support::ckpt::*;

fn round_trip(mode: &str) {
    let mut w = Workload::start_program("files_fidelity", &[mode]);
    let image = w.image("img");
    w.checkpoint(&image);
    w.restore_and_verify(&image, 0);
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

/// All of the above in one process, checkpointed again after restore.
#[test]
fn all_together_twice() {
    let mode = "async,sockfilter,ghost,timerfd";
    let mut w = Workload::start_program("files_fidelity", &[mode]);
    let first = w.image("first");
    w.checkpoint(&first);
    w.restore(&first);
    let second = w.image("second");
    w.checkpoint(&second);
    w.restore_and_verify(&second, 0);
}

/// Starts `mode`, asserts the checkpoint is refused naming `expect`
/// (exit 125, nothing written), and that every process is left running
/// untraced with the same maps and fds, and still checks itself.
fn refused(mode: &str, expect: &str) {
    let mut w = Workload::start_program("files_fidelity", &[mode]);
    let pids: Vec<i32> = std::iter::once(w.pid).chain(w.others.clone()).collect();
    let look = |pid: i32| {
        let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| format!("{:?}", fs::read_link(e.unwrap().path()).ok()))
            .collect();
        fds.sort();
        (
            fs::read_to_string(format!("/proc/{pid}/maps")).unwrap(),
            fds,
        )
    };
    let before: Vec<_> = pids.iter().map(|p| look(*p)).collect();
    let image = w.image("img");
    let out = palisade(&["checkpoint", "--pid", &w.pid.to_string(), "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(expect) && err.contains("left running unchanged"),
        "{err}"
    );
    assert!(!image.join("meta.json").exists());
    thread::sleep(Duration::from_millis(100));
    for (pid, b) in pids.iter().zip(&before) {
        assert_eq!(&look(*pid), b, "pid {pid} changed");
        assert!(
            fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap()
                .contains("TracerPid:\t0"),
            "pid {pid} still traced"
        );
    }
    w.trigger(true);
    assert!(
        w.child.take().unwrap().wait().unwrap().success(),
        "log: {}",
        w.log()
    );
    for p in &w.others {
        // SAFETY: kill(2) by pid, on a process of our own workload.
        unsafe { libc::kill(*p, libc::SIGKILL) };
        reap_orphan(*p);
    }
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
