//! Checkpoint fidelity of memory state against the real kernel:
//! tests/workloads/mem_fidelity.c sets up memory the engine must keep
//! exactly (unreadable pages, shared /dev/zero, a shared file mapping
//! that may become writable, madvise flags), is checkpointed and
//! restored with the same pid, and verifies itself.

use std::fs;

mod support;

use support::ckpt::*;

fn round_trip(mode: &str) {
    support::ckpt::round_trip("mem_fidelity", mode);
}

/// Data a program made PROT_NONE (read back through /proc/PID/mem,
/// which the process's own protection does not stop) comes back intact.
#[test]
fn prot_none_data_survives() {
    round_trip("protnone");
}

/// A MAP_SHARED mapping of /dev/zero made PROT_NONE: checkpointed (it
/// failed with EFAULT before), its data intact.
#[test]
fn prot_none_shared_dev_zero_survives() {
    round_trip("zeroshm");
}

/// A read-only shared mapping of a file that was opened read-write can
/// be made writable again after restore (VM_MAYWRITE kept).
#[test]
fn a_shared_file_mapping_can_still_be_made_writable() {
    round_trip("maywrite");
}

/// MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP and MADV_HUGEPAGE are
/// in force again after restore (the workload reads its smaps).
#[test]
fn madvise_flags_survive() {
    round_trip("advice");
}

/// All of them in one process, twice over (a restored process is
/// checkpointed again).
#[test]
fn everything_together_twice() {
    let mut w = Workload::start_program("mem_fidelity", &["protnone,zeroshm,maywrite,advice"]);
    let first = w.image("first");
    w.checkpoint(&first);
    w.restore_and_verify(&first, 0);
    let _ = w;
    let mut w = Workload::start_program("mem_fidelity", &["protnone,zeroshm,maywrite,advice"]);
    let first = w.image("first");
    w.checkpoint(&first);
    w.restore(&first);
    let second = w.image("second");
    w.checkpoint(&second);
    w.restore_and_verify(&second, 0);
}

/// Locked memory cannot be restored (no mlock is made again): refused by
/// name, nothing written, the process running on unchanged.
#[test]
fn locked_memory_is_refused_and_left_running() {
    assert_refused_unchanged(
        Workload::start_program("mem_fidelity", &["mlock"]),
        "locked memory (mlock)",
    );
}

/// A mapped file that changed between checkpoint and restore is refused
/// before anything is created (the restored process would map other
/// bytes); put back as it was, the image restores.
#[test]
fn a_changed_mapped_file_is_refused_before_anything_is_created() {
    let mut w = Workload::start_program("mem_fidelity", &["maywrite"]);
    let image = w.image("img");
    w.checkpoint(&image);
    let file = w.dir.join("maywrite.dat");
    let saved = fs::read(&file).unwrap();
    let times = fs::metadata(&file).unwrap().modified().unwrap();
    fs::write(&file, b"something else entirely").unwrap();
    let out = palisade(&["restore", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("changed since the checkpoint") && err.contains("nothing was created"),
        "{err}"
    );
    assert!(!alive(w.pid), "nothing was created");
    fs::write(&file, &saved).unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(times)
        .unwrap();
    w.restore_and_verify(&image, 0);
}
