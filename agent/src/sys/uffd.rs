//! userfaultfd write-protection in asynchronous mode (WP_ASYNC, Linux
//! 6.7) and the PAGEMAP_SCAN ioctl of /proc/PID/pagemap: how incremental
//! checkpoint finds the pages a process wrote since the last dump on a
//! kernel without soft-dirty. With WP_ASYNC the kernel itself lifts the
//! protection on the first write to a page and remembers it; nobody reads
//! the userfaultfd. Safe wrappers only: which ranges to track and when to
//! scan is the checkpoint engine's business.
//!
//! Neither libc nor the system headers of the build machine know these
//! interfaces, so their numbers are taken from the kernel's UAPI headers
//! (linux/userfaultfd.h, linux/fs.h) below.

use std::{
    fs::File,
    io::Write,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::FileExt,
    },
};

use nix::{
    errno::Errno,
    sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap},
};

const PAGE: u64 = 4096;

// linux/userfaultfd.h
const UFFD_API: u64 = 0xaa;
/// UFFD_FEATURE_WP_HUGETLBFS_SHMEM (6.2): write-protection of shmem and
/// hugetlbfs ranges.
pub const FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
/// UFFD_FEATURE_WP_UNPOPULATED (6.4): protecting a range also protects its
/// pages that were never touched, so their first write is seen too.
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// UFFD_FEATURE_WP_ASYNC (6.7): a write to a protected page unprotects it
/// in the kernel and goes on; PAGEMAP_SCAN reports it as written.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
/// userfaultfd(2) flag UFFD_USER_MODE_ONLY: only faults taken in user
/// mode (allowed without privilege when vm.unprivileged_userfaultfd is 0).
pub const USER_MODE_ONLY: libc::c_int = 1;
const REGISTER_MODE_WP: u64 = 1 << 1;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;

/// struct uffdio_api
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// struct uffdio_range
#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// struct uffdio_register
#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

/// struct uffdio_writeprotect
#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

// linux/fs.h
/// The page's range is registered for asynchronous write-protection.
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
/// Written since it was last write-protected. Outside registered ranges
/// it only means "not protected": pages merely read are WRITTEN there.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// Backed by a file (page cache).
pub const PAGE_IS_FILE: u64 = 1 << 2;
/// In memory.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// In swap; also an untouched page of a registered range, which holds
/// only the protection marker.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Mapped to the shared zero page.
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Part of a transparent or hugetlbfs huge page.
pub const PAGE_IS_HUGE: u64 = 1 << 6;
/// Soft-dirty (never set where CONFIG_MEM_SOFT_DIRTY is off).
pub const PAGE_IS_SOFT_DIRTY: u64 = 1 << 7;
/// A guard region installed by madvise(MADV_GUARD_INSTALL) (6.15).
pub const PAGE_IS_GUARD: u64 = 1 << 8;

/// Scan operation: write-protect the pages that match (and are reported).
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Scan operation: fail with EPERM instead of skipping a range that is not
/// registered for asynchronous write-protection.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// struct pm_scan_arg
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64) as libc::c_ulong
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const UFFDIO_API: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 0xaa, 0x3f, size_of::<UffdioApi>());
const UFFDIO_REGISTER: libc::c_ulong = ioc(
    IOC_READ | IOC_WRITE,
    0xaa,
    0x00,
    size_of::<UffdioRegister>(),
);
const UFFDIO_UNREGISTER: libc::c_ulong = ioc(IOC_READ, 0xaa, 0x01, size_of::<UffdioRange>());
const UFFDIO_WRITEPROTECT: libc::c_ulong = ioc(
    IOC_READ | IOC_WRITE,
    0xaa,
    0x06,
    size_of::<UffdioWriteprotect>(),
);
const PAGEMAP_SCAN: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, b'f', 16, size_of::<PmScanArg>());

/// ioctl(2) passing the address of `arg`.
///
/// # Safety
/// `T` must be the struct `request` reads and writes, and every pointer
/// inside `arg` must be valid for what the kernel does with it during the
/// call.
unsafe fn ioctl<T>(fd: BorrowedFd<'_>, request: libc::c_ulong, arg: &mut T) -> nix::Result<i32> {
    // SAFETY: the caller's contract: `arg` is the struct `request` takes,
    // live and exclusively ours for the call, and the pointers in it are
    // valid.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), request, arg as *mut T) })
}

/// A new userfaultfd for this process's address space (userfaultfd(2);
/// `flags`: O_CLOEXEC, O_NONBLOCK, [`USER_MODE_ONLY`]). The fd stays bound
/// to this address space wherever it is passed: another process holding
/// it (by pidfd_getfd) registers and protects our ranges. It needs [`api`]
/// before use. Closing its last reference unregisters and unprotects
/// every range it had.
pub fn userfaultfd(flags: libc::c_int) -> nix::Result<OwnedFd> {
    // SAFETY: integer flags in, a new fd or -1 out; no memory is shared.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_userfaultfd, flags) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// UFFDIO_API: enables `features` (UFFD_FEATURE_*) on a new userfaultfd and
/// returns every feature the kernel offers. EOPNOTSUPP when the kernel
/// lacks one of `features`; EINVAL when it was done already.
pub fn api(uffd: BorrowedFd<'_>, features: u64) -> nix::Result<u64> {
    let mut arg = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one struct uffdio_api.
    match unsafe { ioctl(uffd, UFFDIO_API, &mut arg) } {
        Ok(_) => Ok(arg.features),
        // The kernel says EINVAL both for a feature it lacks and for a
        // second UFFDIO_API; tell them apart.
        Err(Errno::EINVAL) if features & !offered_features()? != 0 => Err(Errno::EOPNOTSUPP),
        Err(e) => Err(e),
    }
}

/// Every UFFD_FEATURE_* this kernel offers, asked on a throwaway
/// userfaultfd of this process.
pub fn offered_features() -> nix::Result<u64> {
    let probe = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK | USER_MODE_ONLY)?;
    let mut arg = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one struct uffdio_api.
    unsafe { ioctl(probe.as_fd(), UFFDIO_API, &mut arg) }?;
    Ok(arg.features)
}

/// The features palisade enables for write tracking on this kernel:
/// WP_ASYNC and WP_UNPOPULATED, with WP_HUGETLBFS_SHMEM when offered.
/// EOPNOTSUPP when the kernel lacks either of the first two (before 6.7,
/// or without CONFIG_PTE_MARKER_UFFD_WP).
pub fn tracking_features() -> nix::Result<u64> {
    let offered = offered_features()?;
    let needed = FEATURE_WP_ASYNC | FEATURE_WP_UNPOPULATED;
    if offered & needed != needed {
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(needed | (offered & FEATURE_WP_HUGETLBFS_SHMEM))
}

/// UFFDIO_REGISTER in write-protect mode over [start, start+len) of the
/// userfaultfd's address space (page-aligned): the mappings in it, holes
/// skipped (EINVAL when there is none, or one cannot be tracked; EBUSY
/// when another userfaultfd has one). With WP_ASYNC any kind of mapping
/// can be: anonymous, private file, stack, heap. Nothing is protected yet.
pub fn register_wp(uffd: BorrowedFd<'_>, start: u64, len: u64) -> nix::Result<()> {
    let mut arg = UffdioRegister {
        range: UffdioRange { start, len },
        mode: REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one struct uffdio_register.
    unsafe { ioctl(uffd, UFFDIO_REGISTER, &mut arg) }.map(drop)
}

/// UFFDIO_UNREGISTER [start, start+len): its protection is lifted and
/// nothing there is tracked any more.
pub fn unregister(uffd: BorrowedFd<'_>, start: u64, len: u64) -> nix::Result<()> {
    let mut arg = UffdioRange { start, len };
    // SAFETY: UFFDIO_UNREGISTER reads one struct uffdio_range.
    unsafe { ioctl(uffd, UFFDIO_UNREGISTER, &mut arg) }.map(drop)
}

/// UFFDIO_WRITEPROTECT [start, start+len) of a registered range:
/// `protect` it (every page reads as not written until written again) or
/// lift the protection (every page reads as written).
pub fn write_protect(uffd: BorrowedFd<'_>, start: u64, len: u64, protect: bool) -> nix::Result<()> {
    let mut arg = UffdioWriteprotect {
        range: UffdioRange { start, len },
        mode: if protect { WRITEPROTECT_MODE_WP } else { 0 },
    };
    // SAFETY: UFFDIO_WRITEPROTECT reads one struct uffdio_writeprotect.
    unsafe { ioctl(uffd, UFFDIO_WRITEPROTECT, &mut arg) }.map(drop)
}

/// Pages [start, end) sharing the categories PAGEMAP_SCAN reports
/// (`struct page_region`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// PAGE_IS_* bits, limited to the scan's `return_mask`.
    pub categories: u64,
}

/// Which pages a PAGEMAP_SCAN reports and what it does to them. A page
/// matches when, after flipping its `category_inverted` bits, it has all
/// of `category_mask` and, if `category_anyof_mask` is not 0, one of those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scan {
    /// PM_SCAN_WP_MATCHING, PM_SCAN_CHECK_WPASYNC.
    pub flags: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    /// The categories reported (regions split where they differ).
    pub return_mask: u64,
}

impl Scan {
    /// The pages written since their last protection; with `reprotect`,
    /// protected again as they are reported. Fails with EPERM on a range
    /// not wholly registered with a WP_ASYNC userfaultfd, and then, with
    /// `reprotect`, has already protected (so lost) the writes it walked
    /// before: scan registered ranges only. The pre-copy engine never
    /// reprotects this way while the process runs: it lost writes there
    /// (see `checkpoint::track::wp::written_and_protected`).
    pub fn written(reprotect: bool) -> Scan {
        Scan {
            flags: PM_SCAN_CHECK_WPASYNC | if reprotect { PM_SCAN_WP_MATCHING } else { 0 },
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..Scan::default()
        }
    }
}

/// page_region entries one PAGEMAP_SCAN call may fill (96 KiB).
const SCAN_BATCH: usize = 4096;

/// PAGEMAP_SCAN over [start, end) (page-aligned) of the process whose
/// `/proc/PID/pagemap` is open as `pagemap`: every region of matching
/// pages, adjacent ones merged. With PM_SCAN_WP_MATCHING exactly the pages
/// reported are write-protected again. One buffer of at most
/// [`SCAN_BATCH`] entries is reused while the kernel stops early on it.
pub fn pagemap_scan(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    scan: &Scan,
) -> nix::Result<Vec<Region>> {
    scan_in_batches(pagemap, start, end, scan, SCAN_BATCH)
}

/// [`pagemap_scan`] with a buffer of at most `batch` (> 0) entries.
fn scan_in_batches(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    scan: &Scan,
    batch: usize,
) -> nix::Result<Vec<Region>> {
    let pages = (end.saturating_sub(start) / PAGE) as usize;
    let mut buf = vec![Region::default(); pages.clamp(1, batch)];
    let mut out: Vec<Region> = Vec::new();
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            flags: scan.flags,
            start: at,
            end,
            walk_end: 0,
            vec: buf.as_mut_ptr() as u64,
            vec_len: buf.len() as u64,
            max_pages: 0,
            category_inverted: scan.category_inverted,
            category_mask: scan.category_mask,
            category_anyof_mask: scan.category_anyof_mask,
            return_mask: scan.return_mask,
        };
        // SAFETY: PAGEMAP_SCAN reads and writes one struct pm_scan_arg
        // and writes at most `vec_len` struct page_region (the layout of
        // `Region`) at `vec`, which `buf` holds and nothing else borrows.
        let n = unsafe { ioctl(pagemap, PAGEMAP_SCAN, &mut arg) }? as usize;
        for r in &buf[..n.min(buf.len())] {
            let mut r = *r;
            match out.last_mut() {
                // A walk cut short by a full buffer may end inside the
                // last region it gave: the next call gives that part
                // again.
                Some(last) if r.start <= last.end && last.categories == r.categories => {
                    last.end = last.end.max(r.end)
                }
                Some(last) if r.start < last.end => {
                    r.start = last.end;
                    if r.start < r.end {
                        out.push(r);
                    }
                }
                _ => out.push(r),
            }
        }
        // The kernel stops before `end` only when the buffer is full.
        if arg.walk_end <= at {
            return Err(Errno::EIO);
        }
        at = arg.walk_end;
    }
    Ok(out)
}

/// Whether a mapping `mremap(2)` moves keeps its write-protection on this
/// kernel: at its new place it is still registered and its pages read as
/// not written, so that PAGEMAP_SCAN alone cannot tell it from the mapping
/// that was there. Probed on two pages of this process.
pub fn move_keeps_protection() -> nix::Result<bool> {
    let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let len = std::num::NonZeroUsize::new(PAGE as usize).expect("a page is not empty");
    let map = || {
        // SAFETY: a fresh private anonymous page chosen by the kernel: it
        // replaces nothing and only this function touches it.
        unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
    };
    let from = map()?;
    let to = match map() {
        Ok(p) => p,
        Err(e) => {
            // SAFETY: the page mapped above; nothing refers into it.
            let _ = unsafe { munmap(from, PAGE as usize) };
            return Err(e);
        }
    };
    let (from_addr, to_addr) = (from.as_ptr() as u64, to.as_ptr() as u64);
    let mut moved = false;
    let mut probe = || -> nix::Result<bool> {
        // SAFETY: the page is mapped writable until the munmap below.
        unsafe { from.cast::<u8>().as_ptr().write_volatile(1) };
        let uffd = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
        api(uffd.as_fd(), tracking_features()?)?;
        register_wp(uffd.as_fd(), from_addr, PAGE)?;
        write_protect(uffd.as_fd(), from_addr, PAGE, true)?;
        // SAFETY: moves our own page onto our own other page (which it
        // replaces); neither is referred to anywhere.
        let at = unsafe {
            libc::mremap(
                from.as_ptr(),
                PAGE as usize,
                PAGE as usize,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to.as_ptr(),
            )
        };
        if at == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        moved = true;
        let pagemap = File::open("/proc/self/pagemap").map_err(io)?;
        match pagemap_scan(
            pagemap.as_fd(),
            to_addr,
            to_addr + PAGE,
            &Scan::written(false),
        ) {
            // Still registered: kept, unless its page now reads written.
            Ok(written) => Ok(written.is_empty()),
            Err(Errno::EPERM) => Ok(false),
            Err(e) => Err(e),
        }
    };
    let keeps = probe();
    // SAFETY: the pages mapped above (the first one gone if it moved); no
    // reference into them remains.
    unsafe {
        if !moved {
            let _ = munmap(from, PAGE as usize);
        }
        let _ = munmap(to, PAGE as usize);
    }
    keeps
}

/// Whether this kernel keeps soft-dirty bits (pagemap bit 55): probed on
/// a page of our own, which must read clean after clear_refs "4" and dirty
/// after a write. Clears the soft-dirty bits of this whole process.
pub fn soft_dirty_works() -> nix::Result<bool> {
    const SOFT_DIRTY: u64 = 1 << 55;
    let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let len = std::num::NonZeroUsize::new(PAGE as usize).expect("a page is not empty");
    // SAFETY: a fresh private anonymous page chosen by the kernel: it
    // replaces nothing and only this function touches it.
    let page = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }?;
    let addr = page.as_ptr() as u64;
    let touch = |v: u8| {
        // SAFETY: the page is mapped writable until the munmap below.
        unsafe { page.cast::<u8>().as_ptr().write_volatile(v) }
    };
    let probe = || -> nix::Result<bool> {
        let pagemap = File::open("/proc/self/pagemap").map_err(io)?;
        let bits = || -> nix::Result<u64> {
            let mut entry = [0u8; 8];
            pagemap
                .read_exact_at(&mut entry, addr / PAGE * 8)
                .map_err(io)?;
            Ok(u64::from_ne_bytes(entry))
        };
        touch(1);
        File::options()
            .write(true)
            .open("/proc/self/clear_refs")
            .and_then(|mut f| f.write_all(b"4"))
            .map_err(io)?;
        if bits()? & SOFT_DIRTY != 0 {
            return Ok(false);
        }
        touch(2);
        Ok(bits()? & SOFT_DIRTY != 0)
    };
    let works = probe();
    // SAFETY: the page mapped above; no reference into it remains.
    unsafe { munmap(page, PAGE as usize) }?;
    works
}

#[cfg(test)]
mod tests;

/// The /proc/PID/pagemap entry of a page that holds nothing but a
/// write-protection marker (an untouched page of a protected range):
/// pagemap reports it as swapped, yet it has no data. Learned once, on a
/// page of our own, since its encoding (a swap entry of the kernel's
/// marker type) depends on the kernel's configuration.
pub fn marker_pagemap_entry() -> nix::Result<u64> {
    static ENTRY: std::sync::OnceLock<nix::Result<u64>> = std::sync::OnceLock::new();
    *ENTRY.get_or_init(learn_marker_entry)
}

fn learn_marker_entry() -> nix::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = std::num::NonZeroUsize::new(PAGE as usize).expect("a page");
    // SAFETY: a fresh anonymous page chosen by the kernel; it replaces
    // nothing, is never touched, and is unmapped below.
    let ptr = unsafe {
        nix::sys::mman::mmap_anonymous(
            None,
            len,
            nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
            nix::sys::mman::MapFlags::MAP_PRIVATE,
        )
    }?;
    let addr = ptr.as_ptr() as u64;
    let learned = (|| {
        let uffd = userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
        api(uffd.as_fd(), tracking_features()?)?;
        register_wp(uffd.as_fd(), addr, PAGE)?;
        write_protect(uffd.as_fd(), addr, PAGE, true)?;
        let mut entry = [0u8; 8];
        std::fs::File::open("/proc/self/pagemap")
            .and_then(|f| f.read_exact_at(&mut entry, addr / PAGE * 8))
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(u64::from_ne_bytes(entry))
    })();
    // SAFETY: the page mapped above, referenced by nothing else.
    let _ = unsafe { nix::sys::mman::munmap(ptr, PAGE as usize) };
    learned
}
