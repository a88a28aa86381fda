//! Run as root against this machine's kernel. Each test maps its own
//! memory and tracks it with its own userfaultfd.

use std::{
    fs::File,
    io::Write as _,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    ptr::NonNull,
    time::Instant,
};

use nix::{
    errno::Errno,
    sys::{
        mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap},
        signal::Signal,
        wait::{WaitStatus, waitpid},
    },
    unistd::Pid,
};

use super::*;
use crate::sys::{
    fds, pidfd,
    process::{self, Forked},
};

/// Whether this kernel lacks asynchronous write-protection (Linux 6.7),
/// which these tests exercise: then `test` is reported SKIPPED, on
/// stderr and in `cargo xtask test`'s totals, and returns at once.
fn lacks_tracking(test: &str) -> bool {
    let Err(e) = tracking_features() else {
        return false;
    };
    crate::sys::skip_test(
        test,
        &format!(
            "this kernel's userfaultfd lacks asynchronous write-protection (WP_ASYNC, WP_UNPOPULATED: Linux 6.7): {e}"
        ),
    );
    true
}

/// A private mapping of `pages` pages, unmapped on drop.
struct Mapping {
    ptr: NonNull<libc::c_void>,
    pages: usize,
}

impl Mapping {
    fn anon(pages: usize) -> Mapping {
        let len = std::num::NonZeroUsize::new(pages * PAGE as usize).unwrap();
        // SAFETY: a fresh anonymous mapping chosen by the kernel; it
        // replaces nothing and is only reached through this value.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .unwrap();
        Mapping { ptr, pages }
    }

    /// A private (copy-on-write) mapping of `file`'s first `pages` pages.
    fn file(file: &File, pages: usize) -> Mapping {
        let len = std::num::NonZeroUsize::new(pages * PAGE as usize).unwrap();
        // SAFETY: a fresh private mapping chosen by the kernel; writes to
        // it never reach the file, and it is only reached through this
        // value.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
                file.as_fd(),
                0,
            )
        }
        .unwrap();
        Mapping { ptr, pages }
    }

    fn start(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn len(&self) -> u64 {
        self.pages as u64 * PAGE
    }

    fn end(&self) -> u64 {
        self.start() + self.len()
    }

    /// Writes `v` into page `i`. Async-signal-safe (no panic for i < pages).
    fn write(&self, i: usize, v: u8) {
        debug_assert!(i < self.pages);
        // SAFETY: page i of our live writable mapping.
        unsafe {
            self.ptr
                .cast::<u8>()
                .as_ptr()
                .add(i * PAGE as usize)
                .write_volatile(v)
        }
    }

    fn read(&self, i: usize) -> u8 {
        assert!(i < self.pages);
        // SAFETY: page i of our live readable mapping.
        unsafe {
            self.ptr
                .cast::<u8>()
                .as_ptr()
                .add(i * PAGE as usize)
                .read_volatile()
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in the constructor; nothing refers to
        // it any more.
        unsafe { munmap(self.ptr, self.len() as usize) }.unwrap();
    }
}

/// A userfaultfd of ours with the tracking features, registered over the
/// whole of `m` and with all of it protected.
fn track(m: &Mapping) -> OwnedFd {
    let uffd = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap();
    api(uffd.as_fd(), tracking_features().unwrap()).unwrap();
    register_wp(uffd.as_fd(), m.start(), m.len()).unwrap();
    write_protect(uffd.as_fd(), m.start(), m.len(), true).unwrap();
    uffd
}

fn own_pagemap() -> File {
    File::open("/proc/self/pagemap").unwrap()
}

/// The page indices (relative to `base`) covered by `regions`.
fn pages(regions: &[Region], base: u64) -> Vec<u64> {
    regions
        .iter()
        .flat_map(|r| (r.start - base) / PAGE..(r.end - base) / PAGE)
        .collect()
}

fn written(pagemap: BorrowedFd<'_>, m: &Mapping, reprotect: bool) -> Vec<u64> {
    pages(
        &pagemap_scan(pagemap, m.start(), m.end(), &Scan::written(reprotect)).unwrap(),
        m.start(),
    )
}

/// Minor page faults this thread has taken.
fn minor_faults() -> i64 {
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one struct rusage into `usage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_minflt
}

#[test]
fn written_pages_are_reported_until_protected_again() {
    if lacks_tracking("sys::uffd::tests::written_pages_are_reported_until_protected_again") {
        return;
    }
    let m = Mapping::anon(64);
    for i in 0..64 {
        m.write(i, 1);
    }
    let _uffd = track(&m);
    let pagemap = own_pagemap();
    assert_eq!(written(pagemap.as_fd(), &m, true), Vec::<u64>::new());

    m.write(3, 2);
    m.write(17, 2);
    m.write(40, 2);
    let _ = m.read(5);
    // A look without protecting again leaves them written.
    assert_eq!(written(pagemap.as_fd(), &m, false), [3, 17, 40]);
    assert_eq!(written(pagemap.as_fd(), &m, false), [3, 17, 40]);
    assert_eq!(written(pagemap.as_fd(), &m, true), [3, 17, 40]);
    assert_eq!(written(pagemap.as_fd(), &m, true), Vec::<u64>::new());

    m.write(17, 3);
    m.write(63, 3);
    assert_eq!(written(pagemap.as_fd(), &m, true), [17, 63]);
    assert_eq!((m.read(17), m.read(40), m.read(63)), (3, 2, 3));
}

#[test]
fn a_full_buffer_is_emptied_and_the_scan_goes_on() {
    if lacks_tracking("sys::uffd::tests::a_full_buffer_is_emptied_and_the_scan_goes_on") {
        return;
    }
    let m = Mapping::anon(64);
    let _uffd = track(&m);
    let pagemap = own_pagemap();
    let dirty = [3, 4, 5, 17, 40, 41, 63];
    let want = dirty.map(|i| i as u64);
    for batch in [1, 2, 3] {
        for i in dirty {
            m.write(i, batch as u8);
        }
        let look = scan_in_batches(
            pagemap.as_fd(),
            m.start(),
            m.end(),
            &Scan::written(false),
            batch,
        );
        assert_eq!(pages(&look.unwrap(), m.start()), want);
        let take = scan_in_batches(
            pagemap.as_fd(),
            m.start(),
            m.end(),
            &Scan::written(true),
            batch,
        );
        let take = take.unwrap();
        assert_eq!(pages(&take, m.start()), want);
        // Adjacent pages come as one region, even across batches.
        assert_eq!(take.len(), 4);
        assert_eq!(written(pagemap.as_fd(), &m, false), Vec::<u64>::new());
    }

    // More regions than one default batch holds.
    let many = Mapping::anon(2 * SCAN_BATCH + 100);
    let _uffd = track(&many);
    for i in (0..many.pages).step_by(2) {
        many.write(i, 1);
    }
    let regions = pagemap_scan(
        pagemap.as_fd(),
        many.start(),
        many.end(),
        &Scan::written(true),
    );
    assert_eq!(regions.unwrap().len(), SCAN_BATCH + 50);
    assert_eq!(written(pagemap.as_fd(), &many, false), Vec::<u64>::new());
}

/// Runs of written pages longer than one region per call, scanned with
/// tiny buffers: the regions come back in order, never overlapping (a
/// walk that stops inside a region gives its rest again next call).
#[test]
fn regions_stay_ordered_and_disjoint_across_batches() {
    if lacks_tracking("sys::uffd::tests::regions_stay_ordered_and_disjoint_across_batches") {
        return;
    }
    let m = Mapping::anon(512);
    let _uffd = track(&m);
    let pagemap = own_pagemap();
    let mut want = Vec::new();
    for run in 0..40u64 {
        let first = run * 12 + run % 5;
        for i in first..first + 1 + run % 9 {
            m.write(i as usize, 1);
            want.push(i);
        }
    }
    for batch in [1, 2, 3, 7] {
        let regions = scan_in_batches(
            pagemap.as_fd(),
            m.start(),
            m.end(),
            &Scan::written(false),
            batch,
        )
        .unwrap();
        for w in regions.windows(2) {
            assert!(w[0].end < w[1].start, "batch {batch}: {w:?}");
        }
        assert!(regions.iter().all(|r| r.start < r.end));
        assert_eq!(pages(&regions, m.start()), want, "batch {batch}");
    }
}

#[test]
fn untouched_pages_are_tracked_from_their_first_write() {
    if lacks_tracking("sys::uffd::tests::untouched_pages_are_tracked_from_their_first_write") {
        return;
    }
    let m = Mapping::anon(64);
    let uffd = track(&m);
    let pagemap = own_pagemap();
    let all = Scan {
        return_mask: PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        ..Scan::default()
    };
    let before = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &all).unwrap();
    // The protection markers on untouched pages read as swapped.
    assert_eq!(
        before,
        [Region {
            start: m.start(),
            end: m.end(),
            categories: PAGE_IS_WPALLOWED | PAGE_IS_SWAPPED
        }]
    );

    let _ = m.read(2);
    m.write(9, 1);
    m.write(10, 1);
    let regions = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &Scan::written(true)).unwrap();
    // Adjacent written pages come as one region.
    assert_eq!(
        regions,
        [Region {
            start: m.start() + 9 * PAGE,
            end: m.start() + 11 * PAGE,
            categories: PAGE_IS_WRITTEN
        }]
    );
    let after = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &all).unwrap();
    println!("after reading page 2, writing 9 and 10, reprotecting: {after:x?}");
    assert!(
        after
            .iter()
            .all(|r| r.categories & PAGE_IS_WRITTEN == 0 && r.categories & PAGE_IS_WPALLOWED != 0)
    );

    // A page dropped by MADV_DONTNEED (its content now zero) reads as
    // written again, though not present.
    m.write(20, 1);
    assert_eq!(written(pagemap.as_fd(), &m, true), [20]);
    // SAFETY: page 20 of our own mapping, which nothing borrows; it reads
    // as zeros afterwards.
    unsafe {
        nix::sys::mman::madvise(
            m.ptr.byte_add(20 * PAGE as usize),
            PAGE as usize,
            nix::sys::mman::MmapAdvise::MADV_DONTNEED,
        )
    }
    .unwrap();
    let dropped = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &all).unwrap();
    assert!(dropped.contains(&Region {
        start: m.start() + 20 * PAGE,
        end: m.start() + 21 * PAGE,
        categories: PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN
    }));
    assert_eq!(m.read(20), 0);
    drop(uffd);
}

#[test]
fn ranges_not_registered_fail_the_checked_scan_and_are_skipped_otherwise() {
    if lacks_tracking(
        "sys::uffd::tests::ranges_not_registered_fail_the_checked_scan_and_are_skipped_otherwise",
    ) {
        return;
    }
    // One mapping, the first half tracked: two VMAs side by side.
    let m = Mapping::anon(64);
    for i in 0..64 {
        m.write(i, 1);
    }
    let uffd = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap();
    api(uffd.as_fd(), tracking_features().unwrap()).unwrap();
    let half = 32 * PAGE;
    register_wp(uffd.as_fd(), m.start(), half).unwrap();
    write_protect(uffd.as_fd(), m.start(), half, true).unwrap();
    let pagemap = own_pagemap();
    m.write(4, 2);
    m.write(40, 2);

    let tracked = |reprotect| {
        let scan = Scan::written(reprotect);
        pages(
            &pagemap_scan(pagemap.as_fd(), m.start(), m.start() + half, &scan).unwrap(),
            m.start(),
        )
    };
    let checked = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &Scan::written(false));
    assert_eq!(checked, Err(Errno::EPERM));
    assert_eq!(tracked(false), [4]);
    // A failed protecting scan has protected what it walked before the
    // untracked VMA: page 4's write is lost.
    let checked = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &Scan::written(true));
    assert_eq!(checked, Err(Errno::EPERM));
    assert_eq!(tracked(false), Vec::<u64>::new());

    // Without the check, protecting skips the untracked VMA altogether.
    m.write(4, 3);
    m.write(40, 3);
    let unchecked = Scan {
        flags: PM_SCAN_WP_MATCHING,
        ..Scan::written(true)
    };
    let regions = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &unchecked).unwrap();
    assert_eq!(pages(&regions, m.start()), [4]);

    // A plain look calls every page of the untracked VMA written: there
    // it only means "not protected". Even a page only read.
    let look = Scan {
        flags: 0,
        ..Scan::written(false)
    };
    let regions = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &look).unwrap();
    assert_eq!(pages(&regions, m.start()), (32..64).collect::<Vec<_>>());
    let read_only = Mapping::anon(1);
    let _ = read_only.read(0);
    let regions = pagemap_scan(pagemap.as_fd(), read_only.start(), read_only.end(), &look);
    assert_eq!(pages(&regions.unwrap(), read_only.start()), [0]);
    drop(uffd);
}

#[test]
fn unregister_and_close_end_tracking_and_its_cost() {
    if lacks_tracking("sys::uffd::tests::unregister_and_close_end_tracking_and_its_cost") {
        return;
    }
    let pagemap = own_pagemap();
    let not_tracked = |m: &Mapping| {
        assert_eq!(
            pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &Scan::written(false)),
            Err(Errno::EPERM)
        );
        let info = Scan {
            return_mask: PAGE_IS_WPALLOWED,
            ..Scan::default()
        };
        let r = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &info).unwrap();
        assert!(r.iter().all(|r| r.categories == 0), "{r:x?}");
    };
    let faults_writing_all = |m: &Mapping, v: u8| {
        let before = minor_faults();
        for i in 0..m.pages {
            m.write(i, v);
        }
        minor_faults() - before
    };

    let tracked = Mapping::anon(64);
    let unregistered = Mapping::anon(64);
    let closed = Mapping::anon(64);
    for m in [&tracked, &unregistered, &closed] {
        faults_writing_all(m, 1);
    }
    let _keep = track(&tracked);
    let uffd = track(&unregistered);
    unregister(uffd.as_fd(), unregistered.start(), unregistered.len()).unwrap();
    drop(track(&closed));

    not_tracked(&unregistered);
    not_tracked(&closed);
    // Protected pages fault once on their first write; released ones never.
    let cost = [&tracked, &unregistered, &closed].map(|m| faults_writing_all(m, 2));
    println!("minor faults writing 64 pages: tracked, unregistered, closed: {cost:?}");
    assert!(cost[0] >= 64, "{cost:?}");
    assert!(cost[1] < 8 && cost[2] < 8, "{cost:?}");
    assert_eq!(written(pagemap.as_fd(), &tracked, true).len(), 64);
}

/// Waits up to 5 s for one byte on `fd`.
fn recv(fd: BorrowedFd<'_>) -> u8 {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one live pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 5000) };
    assert_eq!(n, 1, "no word from the child in 5 s");
    let mut b = [0u8];
    assert_eq!(nix::unistd::read(fd, &mut b), Ok(1));
    b[0]
}

/// The child's side of [`another_process_tracks_writes_with_the_childs_userfaultfd`]:
/// only syscalls and plain memory writes, fit for a fork of a threaded
/// process. Returns its exit code.
fn child(m: &Mapping, tx: BorrowedFd<'_>, rx: BorrowedFd<'_>) -> i32 {
    let step = |say: u8, expect: u8| {
        let mut b = [0u8];
        nix::unistd::write(tx, &[say]).is_ok()
            && nix::unistd::read(rx, &mut b) == Ok(1)
            && b[0] == expect
    };
    let Ok(uffd) = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK) else {
        return 1;
    };
    for i in 0..m.pages {
        m.write(i, 1);
    }
    // Fds of a test process are below 256.
    if !step(uffd.as_raw_fd() as u8, b't') {
        return 2;
    }
    drop(uffd);
    if !step(b'c', b'p') {
        return 3;
    }
    m.write(3, 2);
    m.write(17, 2);
    m.write(40, 2);
    if !step(b'w', b'x') {
        return 4;
    }
    0
}

/// Kills and reaps a child of ours still running when a test fails.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.0), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.0), None);
    }
}

#[test]
fn another_process_tracks_writes_with_the_childs_userfaultfd() {
    if lacks_tracking("sys::uffd::tests::another_process_tracks_writes_with_the_childs_userfaultfd")
    {
        return;
    }
    let m = Mapping::anon(64);
    let (from_child, to_parent) = fds::pipe2(libc::O_CLOEXEC).unwrap();
    let (from_parent, to_child) = fds::pipe2(libc::O_CLOEXEC).unwrap();
    // SAFETY: the child makes only syscalls and memory writes (`child`)
    // and ends with _exit.
    let pid = match unsafe { process::fork() }.unwrap() {
        Forked::Child => {
            let code = child(&m, to_parent.as_fd(), from_parent.as_fd());
            // SAFETY: _exit ends the child without running anything of
            // the parent's (no destructors, no atexit).
            unsafe { libc::_exit(code) }
        }
        Forked::Parent { child } => child,
    };
    let reap = Reap(pid);
    drop((to_parent, from_parent));
    let send = |b: u8| nix::unistd::write(&to_child, &[b]).unwrap();

    // The child created a userfaultfd and did nothing else with it; take
    // it, then let the child close its own.
    let fd = recv(from_child.as_fd());
    let pidfd = pidfd::open(pid).unwrap();
    let uffd = fds::getfd(pidfd.as_fd(), fd.into()).unwrap();
    send(b't');
    assert_eq!(recv(from_child.as_fd()), b'c');

    // Only this process holds the userfaultfd now, bound to the child's
    // address space.
    api(uffd.as_fd(), tracking_features().unwrap()).unwrap();
    register_wp(uffd.as_fd(), m.start(), m.len()).unwrap();
    write_protect(uffd.as_fd(), m.start(), m.len(), true).unwrap();
    let pagemap = File::open(format!("/proc/{pid}/pagemap")).unwrap();
    assert_eq!(written(pagemap.as_fd(), &m, false), Vec::<u64>::new());

    // Nobody reads the userfaultfd: the writes must still go through.
    send(b'p');
    assert_eq!(recv(from_child.as_fd()), b'w');
    assert_eq!(written(pagemap.as_fd(), &m, true), [3, 17, 40]);
    assert_eq!(written(pagemap.as_fd(), &m, true), Vec::<u64>::new());
    // Our own copy of the range was never tracked.
    assert_eq!(
        pagemap_scan(
            own_pagemap().as_fd(),
            m.start(),
            m.end(),
            &Scan::written(false)
        ),
        Err(Errno::EPERM)
    );

    send(b'x');
    assert_eq!(
        waitpid(Pid::from_raw(pid), None),
        Ok(WaitStatus::Exited(Pid::from_raw(pid), 0))
    );
    std::mem::forget(reap);
}

#[test]
fn private_file_mappings_and_the_stack_and_heap_can_be_tracked() {
    if lacks_tracking(
        "sys::uffd::tests::private_file_mappings_and_the_stack_and_heap_can_be_tracked",
    ) {
        return;
    }
    let path = std::env::temp_dir().join(format!("palisade-uffd-{}", std::process::id()));
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(&vec![7u8; 16 * PAGE as usize]).unwrap();
    let m = Mapping::file(&f, 16);
    // Pages 0..8 read (page cache mapped), 8..16 never touched.
    for i in 0..8 {
        assert_eq!(m.read(i), 7);
    }
    let uffd = track(&m);
    let pagemap = own_pagemap();
    m.write(4, 1);
    m.write(12, 1);
    let _ = m.read(13);
    assert_eq!(written(pagemap.as_fd(), &m, true), [4, 12]);
    let info = Scan {
        return_mask: PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN | PAGE_IS_FILE | PAGE_IS_PRESENT,
        ..Scan::default()
    };
    println!(
        "private file mapping: {:x?}",
        pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &info).unwrap()
    );
    drop(uffd);

    // The heap and this thread's stack, found in /proc/self/maps.
    let mut local = 0u64;
    let cell = std::hint::black_box(std::ptr::addr_of_mut!(local));
    let here = cell as u64;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let vma = |pick: &dyn Fn(u64, u64, &str) -> bool| {
        maps.lines()
            .find_map(|l| {
                let (range, rest) = l.split_once(' ')?;
                let (s, e) = range.split_once('-')?;
                let (s, e) = (
                    u64::from_str_radix(s, 16).ok()?,
                    u64::from_str_radix(e, 16).ok()?,
                );
                pick(s, e, rest).then_some((s, e))
            })
            .unwrap()
    };
    let stack = vma(&|s, e, _| (s..e).contains(&here));
    let heap = vma(&|_, _, rest| rest.ends_with("[heap]"));
    let uffd = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap();
    api(uffd.as_fd(), tracking_features().unwrap()).unwrap();
    for (s, e) in [stack, heap] {
        register_wp(uffd.as_fd(), s, e - s).unwrap();
        write_protect(uffd.as_fd(), s, e - s, true).unwrap();
    }
    // SAFETY: `cell` points at `local`, live on this stack for the whole
    // test and not borrowed.
    unsafe { cell.write_volatile(1) };
    let stack_written =
        pagemap_scan(pagemap.as_fd(), stack.0, stack.1, &Scan::written(false)).unwrap();
    println!("stack {stack:x?}: written {stack_written:x?}, local at {here:x}");
    assert!(
        stack_written
            .iter()
            .any(|r| (r.start..r.end).contains(&here))
    );
    let heap_written = pagemap_scan(pagemap.as_fd(), heap.0, heap.1, &Scan::written(false));
    println!("heap {heap:x?}: written {heap_written:x?}");
    assert!(heap_written.is_ok());
    drop(uffd);
}

#[test]
fn the_soft_dirty_probe_agrees_with_pagemap_scan() {
    // Where soft-dirty is built in, a new mapping is soft-dirty as a whole.
    let m = Mapping::anon(1);
    m.write(0, 1);
    let scan = Scan {
        return_mask: PAGE_IS_SOFT_DIRTY,
        category_mask: PAGE_IS_SOFT_DIRTY,
        ..Scan::default()
    };
    let fresh_is_dirty = match pagemap_scan(own_pagemap().as_fd(), m.start(), m.end(), &scan) {
        Ok(found) => !found.is_empty(),
        // No PAGEMAP_SCAN before 6.7: the page's pagemap entry, bit 55.
        Err(Errno::ENOTTY) => {
            use std::os::unix::fs::FileExt as _;
            let mut entry = [0u8; 8];
            std::fs::File::open("/proc/self/pagemap")
                .unwrap()
                .read_exact_at(&mut entry, m.start() / 4096 * 8)
                .unwrap();
            u64::from_ne_bytes(entry) & (1 << 55) != 0
        }
        Err(e) => panic!("PAGEMAP_SCAN: {e}"),
    };
    assert_eq!(soft_dirty_works(), Ok(fresh_is_dirty));
}

#[test]
fn features_and_api_errors() {
    if lacks_tracking("sys::uffd::tests::features_and_api_errors") {
        return;
    }
    let offered = offered_features().unwrap();
    let wanted = tracking_features().unwrap();
    println!("offered features {offered:#x}, tracking asks {wanted:#x}");
    assert_eq!(wanted & offered, wanted);
    let uffd = userfaultfd(libc::O_CLOEXEC).unwrap();
    // A feature bit no kernel has.
    assert_eq!(api(uffd.as_fd(), 1 << 63), Err(Errno::EOPNOTSUPP));
    let uffd = userfaultfd(libc::O_CLOEXEC).unwrap();
    assert_eq!(api(uffd.as_fd(), wanted), Ok(offered));
    let again = api(uffd.as_fd(), wanted);
    println!("a second UFFDIO_API: {again:?}");
    assert!(again.is_err());
}

/// Costs on this machine, printed (`--ignored --nocapture`); never asserted.
#[test]
#[ignore]
fn cost_of_tracking_256_mib() {
    const PAGES: usize = 256 << 8;
    let m = Mapping::anon(PAGES);
    for v in 1..=2 {
        for i in 0..PAGES {
            m.write(i, v);
        }
    }
    let pagemap = own_pagemap();
    let uffd = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap();
    api(uffd.as_fd(), tracking_features().unwrap()).unwrap();
    let t = Instant::now();
    register_wp(uffd.as_fd(), m.start(), m.len()).unwrap();
    println!("register 256 MiB: {:?}", t.elapsed());
    for round in 0..3 {
        let t = Instant::now();
        write_protect(uffd.as_fd(), m.start(), m.len(), true).unwrap();
        println!(
            "[{round}] protect 256 MiB of present 4K pages: {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let none = written(pagemap.as_fd(), &m, true);
        println!(
            "[{round}] scan+reprotect, nothing written: {:?} ({} pages)",
            t.elapsed(),
            none.len()
        );
        let t = Instant::now();
        for i in (0..PAGES).step_by(100) {
            m.write(i, 3);
        }
        println!(
            "[{round}] write 1% of pages (first write faults): {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        for i in (0..PAGES).step_by(100) {
            m.write(i, 4);
        }
        println!("[{round}] write the same 1% again: {:?}", t.elapsed());
        let t = Instant::now();
        let some = written(pagemap.as_fd(), &m, true);
        println!(
            "[{round}] scan+reprotect, 1% written: {:?} ({} pages)",
            t.elapsed(),
            some.len()
        );
        let t = Instant::now();
        for i in 0..PAGES {
            m.write(i, 5);
        }
        println!(
            "[{round}] write every page (each faults once): {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let all = written(pagemap.as_fd(), &m, false);
        println!(
            "[{round}] scan, all written, no reprotect: {:?} ({} pages)",
            t.elapsed(),
            all.len()
        );
        let t = Instant::now();
        let all = written(pagemap.as_fd(), &m, true);
        println!(
            "[{round}] scan+reprotect, all written: {:?} ({} pages)",
            t.elapsed(),
            all.len()
        );
    }
    let t = Instant::now();
    drop(uffd);
    println!(
        "close the userfaultfd (unprotects 256 MiB): {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    for i in 0..PAGES {
        m.write(i, 6);
    }
    println!("write every page, untracked (no fault): {:?}", t.elapsed());
}

#[test]
fn holes_are_skipped_and_a_range_is_tracked_by_one_userfaultfd() {
    if lacks_tracking(
        "sys::uffd::tests::holes_are_skipped_and_a_range_is_tracked_by_one_userfaultfd",
    ) {
        return;
    }
    let m = Mapping::anon(3);
    // SAFETY: the middle page of our own mapping, which nothing borrows;
    // unmapping it leaves a hole the mapping's drop unmaps harmlessly.
    unsafe { munmap(m.ptr.byte_add(PAGE as usize), PAGE as usize) }.unwrap();
    m.write(0, 1);
    m.write(2, 1);
    let uffd = userfaultfd(libc::O_CLOEXEC).unwrap();
    api(uffd.as_fd(), tracking_features().unwrap()).unwrap();
    let hole = register_wp(uffd.as_fd(), m.start() + PAGE, PAGE);
    assert_eq!(hole, Err(Errno::EINVAL));
    register_wp(uffd.as_fd(), m.start(), m.len()).unwrap();
    write_protect(uffd.as_fd(), m.start(), m.len(), true).unwrap();
    m.write(2, 2);
    assert_eq!(written(own_pagemap().as_fd(), &m, true), [2]);

    let other = userfaultfd(libc::O_CLOEXEC).unwrap();
    api(other.as_fd(), tracking_features().unwrap()).unwrap();
    let taken = register_wp(other.as_fd(), m.start(), PAGE);
    assert_eq!(taken, Err(Errno::EBUSY));
    unregister(uffd.as_fd(), m.start(), m.len()).unwrap();
}

/// A user-mode-only userfaultfd (what palisade makes in a container's
/// process) still lets the kernel write into protected pages for the
/// process — read(2) into a protected buffer succeeds — and those writes
/// are reported too.
#[test]
fn kernel_writes_into_protected_pages_work_with_a_user_mode_only_fd() {
    if lacks_tracking(
        "sys::uffd::tests::kernel_writes_into_protected_pages_work_with_a_user_mode_only_fd",
    ) {
        return;
    }
    let m = Mapping::anon(8);
    for i in 0..8 {
        m.write(i, 1);
    }
    let uffd = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK | USER_MODE_ONLY).unwrap();
    api(uffd.as_fd(), tracking_features().unwrap()).unwrap();
    register_wp(uffd.as_fd(), m.start(), m.len()).unwrap();
    write_protect(uffd.as_fd(), m.start(), m.len(), true).unwrap();
    let pagemap = own_pagemap();
    assert_eq!(written(pagemap.as_fd(), &m, false), Vec::<u64>::new());
    let zero = File::open("/dev/zero").unwrap();
    let at = m.start() + 5 * PAGE;
    // SAFETY: reads one page into page 5 of our own live mapping.
    let n = unsafe { libc::read(zero.as_raw_fd(), at as *mut libc::c_void, PAGE as usize) };
    assert_eq!(n, PAGE as isize, "{}", Errno::last());
    assert_eq!(m.read(5), 0);
    assert_eq!(written(pagemap.as_fd(), &m, false), vec![5]);
}

#[test]
fn the_move_probe_answers_and_leaves_nothing_mapped() {
    if lacks_tracking("sys::uffd::tests::the_move_probe_answers_and_leaves_nothing_mapped") {
        return;
    }
    let maps = || std::fs::read_to_string("/proc/self/maps").expect("read maps");
    let before = maps().lines().count();
    let first = move_keeps_protection().expect("probe");
    assert_eq!(move_keeps_protection().expect("probe again"), first);
    // Other threads of the test binary may map meanwhile: at most a few.
    let after = maps().lines().count();
    assert!(
        after <= before + 2,
        "{before} mappings before, {after} after"
    );
}

/// What PAGEMAP_SCAN calls each kind of page of a tracked range; the
/// dump's resident set relies on a marker reading as swapped.
#[test]
fn a_scan_calls_a_marker_swapped() {
    if lacks_tracking("sys::uffd::tests::a_scan_calls_a_marker_swapped") {
        return;
    }
    let m = Mapping::anon(4);
    m.write(0, 1);
    let _ = m.read(1);
    let uffd = track(&m);
    m.write(2, 1);
    let pagemap = own_pagemap();
    let kinds = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO | PAGE_IS_WRITTEN;
    let all = Scan {
        return_mask: kinds,
        category_anyof_mask: kinds | PAGE_IS_WPALLOWED,
        ..Scan::default()
    };
    let found: Vec<(u64, u64)> = pagemap_scan(pagemap.as_fd(), m.start(), m.end(), &all)
        .unwrap()
        .iter()
        .map(|r| ((r.start - m.start()) / PAGE, r.categories))
        .collect();
    assert_eq!(
        found,
        [
            (0, PAGE_IS_PRESENT),
            (1, PAGE_IS_PRESENT | PAGE_IS_PFNZERO),
            (2, PAGE_IS_PRESENT | PAGE_IS_WRITTEN),
            (3, PAGE_IS_SWAPPED),
        ]
    );
    drop(uffd);
}
