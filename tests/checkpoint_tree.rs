//! Checkpoint and restore of process trees and threads (`--pid`), against
//! the real kernel, with workloads of our own: tests/workloads/tree.c (a
//! session leader, process groups, a grandchild and a zombie), threads.c
//! (four threads with live values in general and AVX registers) and shm.c
//! (shared anonymous memory between a parent and a child). Each process
//! verifies itself after restore and logs PASS or FAIL.

use std::{fs, thread, time::Duration};

mod support;

use support::ckpt::*;

/// (ppid, pgid, sid, state) of `pid`, from /proc/PID/stat.
fn ids(pid: i32) -> (i32, i32, i32, char) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    (
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[0].chars().next().unwrap(),
    )
}

fn tids(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    v.sort_unstable();
    v
}

/// Triggers a final verify of a restored tree, reaps its root and asserts
/// that `processes` PASS lines were added and no FAIL.
fn verify_exit(w: &Workload, processes: usize) {
    let before = w.log().lines().filter(|l| l.starts_with("PASS ")).count();
    w.trigger(true);
    assert_eq!(reap(w.pid), 0, "root exit code; log: {}", w.log());
    let log = w.log();
    let after = log.lines().filter(|l| l.starts_with("PASS ")).count();
    assert_eq!(after - before, processes, "log: {log}");
    assert!(!log.contains("FAIL"), "log: {log}");
}

#[test]
fn a_tree_keeps_its_pids_parents_groups_sessions_and_zombie() {
    let mut w = Workload::start_program("tree", &[]);
    assert_eq!(w.others.len(), 5, "main c1 c2 c3 g z");
    let all: Vec<i32> = std::iter::once(w.pid).chain(w.others.clone()).collect();
    let before: Vec<_> = all.iter().map(|p| ids(*p)).collect();
    assert_eq!(before[5].3, 'Z', "z is a zombie before the checkpoint");
    let image = w.image("img");
    w.checkpoint(&image);
    w.restore(&image);
    for (p, (ppid, pgid, sid, state)) in all.iter().zip(&before) {
        let (ppid2, pgid2, sid2, state2) = ids(*p);
        if *p != w.pid {
            assert_eq!(ppid2, *ppid, "pid {p}: same parent");
        }
        assert_eq!(
            (pgid2, sid2),
            (*pgid, *sid),
            "pid {p}: same group and session"
        );
        assert_eq!(
            state2 == 'Z',
            *state == 'Z',
            "pid {p}: zombie or not, as before"
        );
    }
    assert_eq!(
        ids(w.pid).0,
        std::process::id() as i32,
        "the root is re-parented to us"
    );
    // A check while restored, then a second round trip of the same tree.
    w.trigger(false);
    let deadline = support::deadline(20);
    while w.log().lines().filter(|l| l.starts_with("PASS ")).count() < 5 {
        assert!(!w.log().contains("FAIL"), "log: {}", w.log());
        assert!(std::time::Instant::now() < deadline, "log: {}", w.log());
        thread::sleep(Duration::from_millis(20));
    }
    let second = w.image("second");
    w.checkpoint(&second);
    w.restore(&second);
    verify_exit(&w, 5);
}

#[test]
fn threads_keep_their_tids_registers_and_avx_state() {
    let mut w = Workload::start_program("threads", &[]);
    let recorded: Vec<i32> = fs::read_to_string(w.dir.join("pid.tids"))
        .unwrap()
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(recorded.len(), 5);
    let before = tids(w.pid);
    assert_eq!(before.len(), 5);
    // Let the threads run their register loops for a while.
    thread::sleep(Duration::from_millis(300));
    let image = w.image("img");
    w.checkpoint(&image);
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(image.join("meta.json")).unwrap()).unwrap();
    let threads = meta["body"]["processes"][0]["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 5);
    let in_user_code = threads
        .iter()
        .filter(|t| t["regs"]["orig_rax"].as_u64() == Some(u64::MAX))
        .count();
    assert!(
        in_user_code >= 1,
        "some thread was caught in its register loop"
    );
    w.restore(&image);
    assert_eq!(tids(w.pid), before, "the same tids");
    for t in &before {
        let comm = fs::read_to_string(format!("/proc/{}/task/{t}/comm", w.pid)).unwrap();
        let i = recorded.iter().position(|r| r == t).unwrap();
        if i > 0 {
            assert_eq!(comm.trim(), format!("t{}", i - 1), "thread {t}'s name");
        }
    }
    verify_exit(&w, 1);
}

#[test]
fn a_restored_tree_still_shares_its_shared_memory() {
    let mut w = Workload::start_program("shm", &[]);
    let image = w.image("img");
    w.checkpoint(&image);
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(image.join("meta.json")).unwrap()).unwrap();
    assert_eq!(
        meta["body"]["shared_memory"].as_array().unwrap().len(),
        1,
        "the shared mapping is dumped once for both processes"
    );
    w.restore(&image);
    verify_exit(&w, 2);
}

#[test]
fn leave_running_leaves_a_threaded_process_running() {
    let w = Workload::start_program("threads", &[]);
    let before = tids(w.pid);
    let image = w.image("img");
    let out = palisade(&[
        "checkpoint",
        "--leave-running",
        "--pid",
        &w.pid.to_string(),
        "--dir",
    ])
    .arg(&image)
    .output()
    .unwrap();
    assert!(out.status.success(), "checkpoint: {}", text(&out));
    assert_eq!(tids(w.pid), before);
    for t in &before {
        let status = fs::read_to_string(format!("/proc/{}/task/{t}/status", w.pid)).unwrap();
        assert!(
            status.contains("TracerPid:\t0"),
            "thread {t} is no longer traced"
        );
    }
    w.trigger(false);
    let deadline = support::deadline(20);
    while !w.log().contains("PASS") {
        assert!(!w.log().contains("FAIL"), "log: {}", w.log());
        assert!(std::time::Instant::now() < deadline, "log: {}", w.log());
        thread::sleep(Duration::from_millis(20));
    }
}
