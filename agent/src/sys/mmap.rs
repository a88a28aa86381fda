//! Memory mappings: a file mapped into our memory (the checkpoint's page
//! file, which the restore copies from into the new processes on several
//! threads), and fresh anonymous memory.

use std::{fs::File, os::fd::AsFd, ptr::NonNull};

use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap, mmap_anonymous, munmap};

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

/// Fresh private anonymous memory (`MAP_PRIVATE | MAP_ANONYMOUS`, not
/// populated, no transparent huge pages): each page faults in on its first
/// touch, one fault per 4 KiB page. Unmapped on drop.
pub struct Anonymous {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: as for `Mapped`: plain memory owned by this value.
unsafe impl Send for Anonymous {}
// SAFETY: as above.
unsafe impl Sync for Anonymous {}

impl Anonymous {
    /// Maps `len` (> 0) bytes, readable and writable.
    pub fn new(len: usize) -> std::io::Result<Self> {
        let size = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh anonymous mapping chosen by the kernel (no fixed
        // address), so nothing of ours is replaced.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS,
            )
        }?;
        // Best effort: a kernel without THP refuses the advice (EINVAL),
        // and has no huge pages to avoid.
        // SAFETY: advice on our own fresh mapping; it changes how pages
        // are allocated, never their contents.
        let _ = unsafe { madvise(ptr, len, MmapAdvise::MADV_NOHUGEPAGE) };
        Ok(Anonymous { ptr, len })
    }

    /// The address of the first byte (page aligned).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, live until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` writable bytes, live until drop,
        // and `&mut self` makes this the only slice of it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.len) }
    }

    /// Moves this mapping, pages and all, onto `target`'s bytes from
    /// `offset` (page aligned) with `mremap(MREMAP_FIXED)`: the pages
    /// that were there are dropped, and `target` owns the moved ones.
    pub fn move_into(self, target: &mut Anonymous, offset: usize) -> std::io::Result<()> {
        let fits = offset.is_multiple_of(4096)
            && offset
                .checked_add(self.len)
                .is_some_and(|end| end <= target.len);
        if !fits {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let at = target.addr() as usize + offset;
        // SAFETY: both ranges are mappings these values own; `target`'s
        // range is replaced by ours (no slice of either is live: `self` is
        // taken and `target` borrowed mutably), and ours is not unmapped
        // again below.
        let moved = unsafe {
            libc::mremap(
                self.ptr.as_ptr(),
                self.len,
                self.len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                at as *mut libc::c_void,
            )
        };
        if moved == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Anonymous {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no slice of it outlives self.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}
