//! The tracker against this machine's kernel, as root: a child process
//! (this test binary run again, see `child_workload`) touches pages of
//! fresh anonymous memory on command, and the drains must name exactly
//! the pages it wrote.

use std::{
    hint::black_box,
    io::{BufRead, BufReader, Read, Write},
    process::{ChildStdin, ChildStdout, Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::*;
use crate::sys::mmap::Anonymous;

const PAGE: usize = 4096;
/// Pages of the child's memory.
const PAGES: usize = 64;
/// Set in the child's environment: `child_workload` runs only there.
const CHILD_ENV: &str = "PALISADE_DIRTY_TEST_CHILD";
const CHILD_TEST: &str = "checkpoint::track::ebpf::tests::child_workload";
/// What the child prints when its memory is mapped (then its address),
/// and after each command.
const READY: &str = "dirty-child-ready";
const DONE: &str = "dirty-child-done";

/// The tests load trackers and time page faults: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records that `test` did not run (as the integration tests'
/// `support::skip` does): `SKIPPED` on stderr and a line of the file
/// `PALISADE_TEST_SKIPS` names, under `cargo xtask test`.
fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED: {test}: {reason}");
    if let Some(file) = std::env::var_os("PALISADE_TEST_SKIPS") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .expect("open the skips file");
        f.write_all(format!("{test}: {reason}\n").as_bytes())
            .expect("write the skips file");
    }
}

/// A loaded tracker, or `None` (the test skipped) when not root.
fn load(test: &str) -> Option<EbpfDirty> {
    if !nix::unistd::geteuid().is_root() {
        skip(test, "loading BPF programs needs root");
        return None;
    }
    Some(EbpfDirty::load().expect("load the dirty-page tracker"))
}

/// Not a test: the process the tests track, run by [`Child::spawn`] with
/// `CHILD_ENV` set (without it, this returns at once). It maps `PAGES`
/// fresh pages, prints their address, then for each line of stdin
/// (`write|read|kernel PAGE...`) touches those pages, or (`move PAGE`)
/// moves 4 fresh written pages onto them from that page, and says `DONE`;
/// it exits at the end of stdin.
#[test]
fn child_workload() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mut memory = Anonymous::new(PAGES * PAGE).expect("map the child's pages");
    let mut zero = std::fs::File::open("/dev/zero").expect("open /dev/zero");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY} {}", memory.addr()).expect("write to stdout");
    for line in std::io::stdin().lines() {
        let line = line.expect("read stdin");
        let mut words = line.split_whitespace();
        let op = words.next().unwrap_or_default().to_string();
        for page in words {
            let at = page.parse::<usize>().expect("a page number") * PAGE;
            match op.as_str() {
                "move" => {
                    let mut moving = Anonymous::new(4 * PAGE).expect("map 4 pages");
                    moving.as_mut_slice().fill(7);
                    writeln!(out, "moving-from {}", moving.addr()).expect("write to stdout");
                    moving.move_into(&mut memory, at).expect("mremap");
                }
                "write" => memory.as_mut_slice()[at] = 1,
                "read" => {
                    black_box(memory.as_slice()[at]);
                }
                // The kernel writes the page: read() into it (copy_to_user).
                "kernel" => zero
                    .read_exact(&mut memory.as_mut_slice()[at..at + 64])
                    .expect("read /dev/zero"),
                other => panic!("unknown command {other:?}"),
            }
        }
        black_box(memory.as_slice());
        writeln!(out, "{DONE}").expect("write to stdout");
    }
    std::process::exit(0);
}

/// A handle on `tracker`'s maps, as another command makes from their fds.
fn handle_on(tracker: &EbpfDirty) -> EbpfDirty {
    let fds = tracker.map_fds();
    let clone = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().expect("dup a map fd");
    EbpfDirty::from_map_fds(clone(fds.dirty), clone(fds.tracked), clone(fds.lost))
        .expect("a handle on the maps")
}

/// A process running [`child_workload`].
struct Child {
    process: std::process::Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The address of its pages.
    base: u64,
}

impl Child {
    fn spawn() -> Child {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut process = Command::new(exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the child");
        let stdin = process.stdin.take();
        let stdout = BufReader::new(process.stdout.take().expect("the child's stdout"));
        let mut child = Child {
            process,
            stdin,
            stdout,
            base: 0,
        };
        let ready = child.wait_for(READY);
        child.base = ready
            .split_whitespace()
            .last()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {ready:?}"));
        child
    }

    fn pid(&self) -> i32 {
        self.process.id() as i32
    }

    /// Has the child `op` (write, read, kernel) `pages`, and waits until
    /// it has.
    fn run(&mut self, op: &str, pages: &[usize]) {
        let pages: Vec<String> = pages.iter().map(|p| p.to_string()).collect();
        let stdin = self.stdin.as_mut().expect("the child's stdin");
        writeln!(stdin, "{op} {}", pages.join(" ")).expect("write to the child");
        stdin.flush().expect("write to the child");
        self.wait_for(DONE);
    }

    /// Has the child move 4 fresh pages onto its own from `page`; returns
    /// where they were.
    fn move_onto(&mut self, page: usize) -> u64 {
        let stdin = self.stdin.as_mut().expect("the child's stdin");
        writeln!(stdin, "move {page}").expect("write to the child");
        stdin.flush().expect("write to the child");
        let line = self.wait_for("moving-from");
        self.wait_for(DONE);
        line.split_whitespace()
            .last()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// The child's next line saying `word` (libtest prints its own lines).
    fn wait_for(&mut self, word: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read the child");
            assert!(n > 0, "the child ended before saying {word}");
            if line.contains(word) {
                return line;
            }
        }
    }

    /// The child's pages among `drained`'s, as page numbers.
    fn pages_in(&self, drained: &Drained) -> Vec<usize> {
        let end = self.base + (PAGES * PAGE) as u64;
        drained
            .pages
            .iter()
            .filter(|&&page| page >= self.base && page < end)
            .map(|&page| ((page - self.base) as usize) / PAGE)
            .collect()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn records_exactly_the_pages_written() {
    let _serial = serial();
    let Some(mut tracker) = load("records_exactly_the_pages_written") else {
        return;
    };
    assert!(matches!(tracker.track(0), Err(TrackError::BadPid(0))));
    let mut child = Child::spawn();
    tracker.track(child.pid()).expect("track the child");
    // Tracking twice changes nothing.
    tracker.track(child.pid()).expect("track the child again");
    child.run("write", &[3, 7, 8, 20, 63]);
    child.run("read", &[1, 10, 30, 3]);
    child.run("kernel", &[40]);
    let drained = tracker.drain(child.pid()).expect("drain");
    assert!(!drained.overflowed);
    assert_eq!(child.pages_in(&drained), [3, 7, 8, 20, 40, 63]);
    assert!(drained.pages.is_sorted_by(|a, b| a < b));
    assert!(drained.pages.iter().all(|&page| page % PAGE as u64 == 0));
    assert!(drained.moved.is_empty(), "{drained:?}");

    // Everything was taken.
    let again = tracker.drain(child.pid()).expect("drain again");
    assert_eq!(again, Drained::default());

    // Pages already written take no fault (nothing write-protects them
    // here); a page only read so far does (copy on write of the zero page).
    child.run("write", &[3, 7, 10]);
    let drained = tracker.drain(child.pid()).expect("drain");
    assert_eq!(child.pages_in(&drained), [10]);
    assert!(!drained.overflowed);
}

#[test]
fn untrack_stops_recording_and_drops_what_was_recorded() {
    let _serial = serial();
    let Some(mut tracker) = load("untrack_stops_recording_and_drops_what_was_recorded") else {
        return;
    };
    let mut child = Child::spawn();
    tracker.track(child.pid()).expect("track");
    child.run("write", &[2]);
    tracker.untrack(child.pid()).expect("untrack");
    child.run("write", &[4]);
    child.run("kernel", &[6]);
    assert_eq!(
        tracker.drain(child.pid()).expect("drain untracked"),
        Drained::default()
    );
    tracker.track(child.pid()).expect("track again");
    let drained = tracker.drain(child.pid()).expect("drain");
    assert_eq!(child.pages_in(&drained), Vec::<usize>::new());
    child.run("write", &[5]);
    let drained = tracker.drain(child.pid()).expect("drain");
    assert_eq!(child.pages_in(&drained), [5]);
    // Untracking what is not tracked changes nothing.
    tracker.untrack(child.pid()).expect("untrack");
    tracker.untrack(child.pid()).expect("untrack again");
}

#[test]
fn an_untracked_process_is_never_recorded() {
    let _serial = serial();
    let Some(mut tracker) = load("an_untracked_process_is_never_recorded") else {
        return;
    };
    let mut tracked = Child::spawn();
    let mut other = Child::spawn();
    tracker.track(tracked.pid()).expect("track");
    for child in [&mut tracked, &mut other] {
        child.run("write", &[1, 2, 3]);
        child.run("kernel", &[4]);
    }
    assert_eq!(
        tracker.drain(other.pid()).expect("drain the other"),
        Drained::default()
    );
    let drained = tracker.drain(tracked.pid()).expect("drain");
    assert_eq!(tracked.pages_in(&drained), [1, 2, 3, 4]);
}

#[test]
fn a_handle_from_the_map_fds_drains() {
    let _serial = serial();
    let Some(mut tracker) = load("a_handle_from_the_map_fds_drains") else {
        return;
    };
    let mut handle = handle_on(&tracker);
    // Fds of the wrong maps are refused.
    let fds = tracker.map_fds();
    let clone = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().expect("dup a map fd");
    assert!(
        EbpfDirty::from_map_fds(clone(fds.tracked), clone(fds.dirty), clone(fds.lost)).is_err()
    );

    let mut child = Child::spawn();
    tracker.track(child.pid()).expect("track");
    child.run("write", &[6, 9]);
    let drained = handle.drain(child.pid()).expect("drain through the handle");
    assert_eq!(child.pages_in(&drained), [6, 9]);
    assert!(!drained.overflowed);
    let drained = tracker.drain(child.pid()).expect("drain");
    assert_eq!(child.pages_in(&drained), Vec::<usize>::new());
    // The handle untracks too.
    handle
        .untrack(child.pid())
        .expect("untrack through the handle");
    child.run("write", &[11]);
    assert_eq!(
        tracker.drain(child.pid()).expect("drain"),
        Drained::default()
    );
}

#[test]
fn a_handle_reports_its_loader_gone() {
    let _serial = serial();
    let Some(tracker) = load("a_handle_reports_its_loader_gone") else {
        return;
    };
    let mut handle = handle_on(&tracker);
    let mut child = Child::spawn();
    handle.track(child.pid()).expect("track through the handle");
    child.run("write", &[12]);
    let drained = handle.drain(child.pid()).expect("drain");
    assert_eq!(child.pages_in(&drained), [12]);
    assert!(!drained.overflowed);
    // The programs detach with the loader's value: writes go unseen, and
    // every drain says the set may be incomplete.
    drop(tracker);
    child.run("write", &[13]);
    let drained = handle.drain(child.pid()).expect("drain");
    assert!(drained.overflowed, "{drained:?}");
    assert_eq!(child.pages_in(&drained), Vec::<usize>::new());
}

#[test]
fn a_move_is_recorded_source_and_destination() {
    let _serial = serial();
    let Some(mut tracker) = load("a_move_is_recorded_source_and_destination") else {
        return;
    };
    let mut child = Child::spawn();
    tracker.track(child.pid()).expect("track");
    let from = child.move_onto(8);
    let to = child.base + 8 * PAGE as u64;
    let drained = tracker.drain(child.pid()).expect("drain");
    assert!(!drained.overflowed);
    let covers = |at: u64, len: u64| {
        drained
            .moved
            .iter()
            .any(|&(s, l)| s <= at && at + len <= s + l)
    };
    assert!(
        covers(from, 4 * PAGE as u64),
        "source {from:#x}: {drained:?}"
    );
    assert!(
        covers(to, 4 * PAGE as u64),
        "destination {to:#x}: {drained:?}"
    );
    // The fresh pages were written before the move (4 write faults),
    // at their first place. The child's own heap and stack may add pages
    // elsewhere; only these two ranges are the move's.
    assert_eq!(child.pages_in(&drained), Vec::<usize>::new());
    let mut at_source: Vec<u64> = drained
        .pages
        .iter()
        .copied()
        .filter(|&page| page >= from && page < from + 4 * PAGE as u64)
        .collect();
    at_source.sort_unstable();
    let expected: Vec<u64> = (0..4).map(|i| from + i * PAGE as u64).collect();
    assert_eq!(at_source, expected, "{drained:?}");
    // Nothing is left for the next drain.
    assert_eq!(
        tracker.drain(child.pid()).expect("drain"),
        Drained::default()
    );
}

#[test]
fn stashed_events_come_back() {
    let _serial = serial();
    let Some(mut tracker) = load("stashed_events_come_back") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("palisade-stash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let _gone = Cleanup(dir.clone());
    let stash = dir.join("events.stash");
    let mut child = Child::spawn();
    tracker.track(child.pid()).expect("track");
    child.run("write", &[2, 5]);
    let from = child.move_onto(16);
    tracker.stash(&stash, &[child.pid()]).expect("stash");
    assert!(!tracker.pending(child.pid()).expect("pending").overflowed);
    // A handle that never read the ring (another command) takes them in.
    let mut handle = handle_on(&tracker);
    handle.unstash(&stash).expect("unstash");
    child.run("write", &[9]);
    let drained = handle.drain(child.pid()).expect("drain");
    assert_eq!(child.pages_in(&drained), [2, 5, 9]);
    assert!(drained.moved.iter().any(|&(s, _)| s == from), "{drained:?}");
    // No stash: nothing.
    handle
        .unstash(&dir.join("none"))
        .expect("unstash of nothing");
    // Not events: refused.
    std::fs::write(&stash, b"12345").expect("write");
    assert!(matches!(
        handle.unstash(&stash),
        Err(TrackError::Stash { .. })
    ));
}

/// Removes a scratch directory, pass or fail.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_ring_is_reported() {
    let _serial = serial();
    if load("a_full_ring_is_reported").is_none() {
        return;
    }
    // The smallest ring the kernel makes: one page, 128 events.
    let mut tracker = EbpfDirty::load_ring(4096, false).expect("load a small tracker");
    let pages: Vec<usize> = (0..PAGES).collect();
    let mut children = [Child::spawn(), Child::spawn(), Child::spawn()];
    for c in &children {
        tracker.track(c.pid()).expect("track");
    }
    // 128 write faults (and whatever else the first two fault) fill it.
    children[0].run("write", &pages);
    children[1].run("write", &pages);
    let last = &mut children[2];
    last.run("write", &[1, 2, 3]);
    let drained = tracker.drain(last.pid()).expect("drain");
    assert!(drained.overflowed, "{drained:?}");
    // Reported once; the room made by the drain is used again.
    last.run("write", &[4]);
    let drained = tracker.drain(last.pid()).expect("drain");
    assert!(!drained.overflowed);
    assert_eq!(last.pages_in(&drained), [4]);
}

#[test]
fn records_across_the_end_of_the_ring_are_read() {
    let _serial = serial();
    if load("records_across_the_end_of_the_ring_are_read").is_none() {
        return;
    }
    // 128 events; 104 and more (with the children's own faults) take the
    // reading position near the end, so the last drain's records wrap.
    let mut tracker = EbpfDirty::load_ring(4096, false).expect("load a small tracker");
    let mut children = [Child::spawn(), Child::spawn(), Child::spawn()];
    for c in &children {
        tracker.track(c.pid()).expect("track");
    }
    children[0].run("write", &(0..64).collect::<Vec<_>>());
    children[1].run("write", &(0..40).collect::<Vec<_>>());
    for c in &children[..2] {
        assert!(!tracker.drain(c.pid()).expect("drain").overflowed);
    }
    let last = &mut children[2];
    let pages: Vec<usize> = (0..30).collect();
    last.run("write", &pages);
    let drained = tracker.drain(last.pid()).expect("drain");
    assert!(!drained.overflowed, "{drained:?}");
    assert_eq!(last.pages_in(&drained), pages);
}

#[test]
fn available_here() {
    let _serial = serial();
    if !nix::unistd::geteuid().is_root() {
        skip("available_here", "loading BPF programs needs root");
        return;
    }
    assert_eq!(available(), Ok(()));
}

/// The cost of the tracker for processes it does not track, and of a
/// drain. Printed (run with --nocapture), never asserted: the machine is
/// shared and noisy.
#[test]
fn cost() {
    let _serial = serial();
    if load("cost").is_none() {
        return;
    }
    const SIZE: usize = 256 << 20;
    const ROUNDS: usize = 6;
    let touch = || {
        let mut memory = Anonymous::new(SIZE).expect("map 256 MiB");
        let start = Instant::now();
        for at in (0..SIZE).step_by(PAGE) {
            memory.as_mut_slice()[at] = 1;
        }
        black_box(memory.as_slice());
        start.elapsed()
    };
    // The balloon makes the first use of memory slow.
    touch();
    touch();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so a drift weighs on both.
        let loaded_first = round % 2 == 1;
        if !loaded_first {
            without.push(touch());
        }
        let tracker = EbpfDirty::load().expect("load");
        with.push(touch());
        drop(tracker);
        if loaded_first {
            without.push(touch());
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut without), median(&mut with));
    println!(
        "first touch of 256 MiB ({} pages), untracked process, median of {ROUNDS}: \
         {a:?} without the tracker, {b:?} with it loaded: ratio {:.3} \
         (without {without:?}, with {with:?})",
        SIZE / PAGE,
        b.as_secs_f64() / a.as_secs_f64()
    );

    // Tracked: this process itself, then drains.
    let mut tracker = EbpfDirty::load_for(2 * (SIZE / PAGE) as u64, false).expect("load");
    let me = std::process::id() as i32;
    let start = Instant::now();
    let empty = tracker.drain(me).expect("drain");
    let empty_drain = start.elapsed();
    tracker.track(me).expect("track this process");
    let tracked = touch();
    let start = Instant::now();
    let drained = tracker.drain(me).expect("drain");
    let full_drain = start.elapsed();
    tracker.untrack(me).expect("untrack");
    println!(
        "tracked first touch of 256 MiB: {tracked:?} (ratio {:.3} to untracked without the \
         tracker); drain of {} pages (overflowed: {}): {full_drain:?}; drain of an empty ring: \
         {empty_drain:?} ({} pages)",
        tracked.as_secs_f64() / a.as_secs_f64(),
        drained.pages.len(),
        drained.overflowed,
        empty.pages.len(),
    );
}
