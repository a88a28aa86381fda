//! A file mapped into our memory, for the checkpoint's page file: the
//! dump copies a process's pages straight into it (one copy, on several
//! threads: writes to one file through write(2) take the inode's lock
//! and run one at a time), and the restore copies from it into the new
//! processes.

use std::{fs::File, os::fd::AsFd, ptr::NonNull};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// `len` bytes of a file at `offset`, mapped shared; unmapped on drop.
pub struct Mapped {
    ptr: NonNull<libc::c_void>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain memory owned by this value; access to it
// goes through `&self`/`&mut self` borrows like any owned buffer's.
unsafe impl Send for Mapped {}
// SAFETY: as above; `&Mapped` only hands out shared slices.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `len` (> 0) bytes of `file` at `offset` (a multiple of the
    /// page size), read-write (`writable`, the file open for writing) or
    /// read-only.
    pub fn new(file: &File, offset: u64, len: usize, writable: bool) -> std::io::Result<Self> {
        let size = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed
        // address), so nothing of ours is replaced; it is only accessed
        // through this value's slices, and other users of the file can at
        // worst change the bytes we read, never our memory's validity.
        let ptr = unsafe {
            mmap(
                None,
                size,
                prot,
                MapFlags::MAP_SHARED,
                file.as_fd(),
                offset as libc::off_t,
            )
        }?;
        Ok(Mapped { ptr, len, writable })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, live until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.len) }
    }

    /// The bytes, to write; empty for a read-only mapping.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if !self.writable {
            return &mut [];
        }
        // SAFETY: the mapping is `len` writable bytes, live until drop,
        // and `&mut self` makes this the only slice of it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no slice of it outlives self.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// Faults in every page of `buf` (page-aligned memory of a mapping of
/// ours) for writing, in one call (MADV_POPULATE_WRITE, Linux 5.14): the
/// copy that follows then takes no page fault. Contents are unchanged.
pub fn populate_write(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: `buf` is memory we own mutably; MADV_POPULATE_WRITE only
    // faults its pages in (as a write of the bytes already there would)
    // and never changes what they hold.
    let r = unsafe {
        libc::madvise(
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MADV_POPULATE_WRITE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
