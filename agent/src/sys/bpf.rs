//! bpf(2) commands aya 0.14 offers no public way to make: a cgroup BPF
//! link for a cgroup device program (aya attaches one but will not hand
//! it over as a pinnable `FdLink`), pinning a link by its fd, the batch
//! and lookup-and-delete operations on a hash map ([`HashOps`]), and a
//! ring buffer reader that maps only the records it reads
//! ([`ring_consume`]).

use std::{
    ffi::CString,
    marker::PhantomData,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::errno::Errno;

/// `BPF_OBJ_PIN` and `BPF_LINK_CREATE` from linux/bpf.h (enum bpf_cmd).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_CGROUP_DEVICE` from linux/bpf.h (enum bpf_attach_type).
pub const BPF_CGROUP_DEVICE: u32 = 6;

/// The leading fields of `union bpf_attr` for `BPF_LINK_CREATE`; the rest
/// of the union (zero here) is target-specific.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    rest: [u64; 4],
}

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
#[derive(Default)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// Attaches the loaded program `prog` to the cgroup `cgroup` as a BPF link
/// of `attach_type` (Linux 5.7); the link lives as long as its fd or a pin.
pub fn link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> nix::Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the
    // size passed; the kernel only reads it and returns a new fd or -1.
    let fd = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreateAttr,
            std::mem::size_of::<LinkCreateAttr>() as u32,
        )
    })?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the BPF object behind `fd` (a link, here) at `path` on bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> nix::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let attr = ObjPinAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid bpf_attr of the size passed; `pathname`
    // points at a NUL-terminated string that outlives the call. The kernel
    // only reads both.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &attr as *const ObjPinAttr,
            std::mem::size_of::<ObjPinAttr>() as u32,
        )
    })?;
    Ok(())
}

/// `BPF_OBJ_GET_INFO_BY_FD`, `BPF_MAP_LOOKUP_AND_DELETE_ELEM`,
/// `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_DELETE_BATCH` (enum bpf_cmd).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// `BPF_MAP_TYPE_HASH` (enum bpf_map_type).
const BPF_MAP_TYPE_HASH: u32 = 1;

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The leading fields of `struct bpf_map_info`; the kernel fills as much
/// of the struct as the length passed asks for.
#[repr(C)]
#[derive(Default)]
struct MapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
}

/// `union bpf_attr` for the map element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// bpf(2) with `attr`, which the kernel may write back into.
///
/// # Safety
/// `attr` must be the `union bpf_attr` layout of `cmd`, and every pointer
/// in it valid for the reads and writes `cmd` makes through it.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> nix::Result<libc::c_long> {
    // SAFETY: the caller's contract; `attr` itself is valid for
    // `size_of::<T>()` bytes of reads and writes.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    })
}

/// The position of a [`HashOps::lookup_batch`] walk: the bucket it reads
/// next, and whether it has read the last.
#[derive(Debug, Default)]
pub struct BatchCursor {
    bucket: Option<u32>,
    done: bool,
}

impl BatchCursor {
    pub fn done(&self) -> bool {
        self.done
    }
}

/// A BPF hash map checked (at [`HashOps::new`]) to hold keys `K` and
/// values `V`, for the commands aya 0.14 lacks. The check is what makes
/// the buffers passed to the kernel the sizes it writes.
pub struct HashOps<'fd, K, V> {
    fd: BorrowedFd<'fd>,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<'fd, K: bytemuck::Pod, V: bytemuck::Pod> HashOps<'fd, K, V> {
    /// `EINVAL` unless `fd` is a `BPF_MAP_TYPE_HASH` of `K` keys and `V` values.
    pub fn new(fd: BorrowedFd<'fd>) -> nix::Result<Self> {
        let mut info = MapInfo::default();
        let mut attr = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<MapInfo>() as u32,
            info: &mut info as *mut MapInfo as u64,
        };
        // SAFETY: `info` is writable for the `info_len` bytes the kernel
        // fills at most.
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
        if info.map_type != BPF_MAP_TYPE_HASH
            || info.key_size as usize != std::mem::size_of::<K>()
            || info.value_size as usize != std::mem::size_of::<V>()
        {
            return Err(Errno::EINVAL);
        }
        Ok(HashOps {
            fd,
            _kv: PhantomData,
        })
    }

    /// `BPF_MAP_LOOKUP_BATCH` (Linux 5.6): copies the entries of the
    /// buckets from `cursor` on into `keys` and `values`, as many whole
    /// buckets as fit, and moves `cursor` past them; returns how many it
    /// copied. An entry inserted meanwhile into a bucket already passed is
    /// not seen by this walk. `ENOSPC` if the first bucket does not fit.
    pub fn lookup_batch(
        &self,
        cursor: &mut BatchCursor,
        keys: &mut [K],
        values: &mut [V],
    ) -> nix::Result<usize> {
        self.batch(BPF_MAP_LOOKUP_BATCH, cursor, keys, values)
    }

    /// `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (Linux 5.6): as
    /// [`Self::lookup_batch`], each entry deleted as it is copied (bucket
    /// by bucket, under the bucket's lock): an entry inserted meanwhile
    /// is either taken by this walk or left for the next, never lost.
    pub fn take_batch(
        &self,
        cursor: &mut BatchCursor,
        keys: &mut [K],
        values: &mut [V],
    ) -> nix::Result<usize> {
        self.batch(BPF_MAP_LOOKUP_AND_DELETE_BATCH, cursor, keys, values)
    }

    fn batch(
        &self,
        cmd: libc::c_long,
        cursor: &mut BatchCursor,
        keys: &mut [K],
        values: &mut [V],
    ) -> nix::Result<usize> {
        if cursor.done {
            return Ok(0);
        }
        let count = keys.len().min(values.len()).min(u32::MAX as usize) as u32;
        // Written back on every return but one: a cursor already past the
        // end (ENOENT before reading anything, `count` left as passed).
        const UNWRITTEN: u32 = u32::MAX;
        let mut next = UNWRITTEN;
        let mut attr = BatchAttr {
            in_batch: cursor.bucket.as_ref().map_or(0, |b| b as *const u32 as u64),
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count,
            map_fd: self.fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the map is a hash map of `K` keys and `V` values (checked
        // in `new`), whose batch token is a u32 bucket index: the kernel
        // reads one u32 at `in_batch` (or none), writes one at `out_batch`
        // and at most `count` keys and values, all of which the buffers
        // hold; `K` and `V` are `Pod`, valid for any bytes.
        match unsafe { bpf(cmd, &mut attr) } {
            Ok(_) => {}
            Err(Errno::ENOENT) if next == UNWRITTEN => {
                cursor.done = true;
                return Ok(0);
            }
            // The last bucket was read (entries may still have been copied).
            Err(Errno::ENOENT) => cursor.done = true,
            Err(e) => return Err(e),
        }
        cursor.bucket = Some(next);
        Ok(attr.count.min(count) as usize)
    }

    /// `BPF_MAP_DELETE_BATCH` (Linux 5.6): deletes `keys`, passing over
    /// any that is not there. Returns how many it deleted, and the error
    /// that stopped it before the end (those deleted are a prefix of the
    /// keys that were there).
    pub fn delete_batch(&self, keys: &[K]) -> (usize, nix::Result<()>) {
        let mut deleted = 0;
        let mut rest = keys;
        while !rest.is_empty() {
            let count = rest.len().min(u32::MAX as usize) as u32;
            let mut attr = BatchAttr {
                keys: rest.as_ptr() as u64,
                count,
                map_fd: self.fd.as_raw_fd() as u32,
                ..Default::default()
            };
            // SAFETY: as in `lookup_batch`; the kernel only reads `count`
            // keys from `keys`, and writes back the count it deleted.
            let result = unsafe { bpf(BPF_MAP_DELETE_BATCH, &mut attr) };
            // It stops at the first key it cannot delete.
            let done = (attr.count as usize).min(rest.len());
            deleted += done;
            match result {
                Ok(_) => rest = &rest[done..],
                Err(Errno::ENOENT) => rest = &rest[(done + 1).min(rest.len())..],
                Err(e) => return (deleted, Err(e)),
            }
        }
        (deleted, Ok(()))
    }

    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on a hash map (Linux 5.14): takes
    /// the value of `key` out atomically, so that no update made by a
    /// program meanwhile is lost.
    pub fn take(&self, key: &K) -> nix::Result<Option<V>> {
        let mut value = V::zeroed();
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key as *const K as u64,
            value: &mut value as *mut V as u64,
            ..Default::default()
        };
        // SAFETY: as in `lookup_batch`: the kernel reads one `K` at `key`
        // and writes one `V` at `value`.
        match unsafe { bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(Some(value)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An error and all its sources, each once, joined: aya nests the
/// kernel's reason.
/// Ring buffer record header bits (linux/bpf.h): the record is still
/// being written; the producer dropped it.
const RINGBUF_BUSY: u32 = 1 << 31;
const RINGBUF_DISCARD: u32 = 1 << 30;
/// Bytes of a record's header (`BPF_RINGBUF_HDR_SZ`).
const RINGBUF_HEADER: u64 = 8;

/// A shared mapping of `len` bytes of a BPF map at `offset`, unmapped on
/// drop.
struct MapWindow {
    ptr: std::ptr::NonNull<libc::c_void>,
    len: usize,
}

impl MapWindow {
    fn new(fd: BorrowedFd<'_>, offset: u64, len: usize, writable: bool) -> nix::Result<Self> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let size = std::num::NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed
        // address), so nothing of ours is replaced; the map's memory stays
        // valid while mapped, whatever the programs write into it.
        let ptr = unsafe { mmap(None, size, prot, MapFlags::MAP_SHARED, fd, offset as i64) }?;
        Ok(MapWindow { ptr, len })
    }

    /// The atomic (`AtomicU64` or `AtomicU32`) at byte `at`, aligned to
    /// its size: the kernel writes it concurrently.
    fn atomic<T>(&self, at: usize) -> &T {
        let size = size_of::<T>();
        assert!(
            at.is_multiple_of(size) && at + size <= self.len,
            "an aligned value inside the window"
        );
        // SAFETY: in bounds and aligned (checked, the atomics' alignment
        // being their size); the mapping lives as long as `self`, and the
        // kernel accesses the value atomically too.
        unsafe { &*(self.ptr.as_ptr().cast::<u8>().add(at).cast::<T>()) }
    }

    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= self.len, "bytes inside the window");
        // SAFETY: in bounds (checked), mapped readable while `self` lives;
        // the producer is done with a record once its BUSY bit is clear.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>().add(at), len) }
    }
}

impl Drop for MapWindow {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no reference into it outlives
        // `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

/// Reads every committed record of the BPF ring buffer `fd` (its data
/// area `size` bytes, a power of two multiple of the page size) from the
/// consumer position on, handing each record's bytes to `each`, then moves
/// the consumer position past them. A record still being written, and
/// those after it, wait for the next call. Only the pages holding the
/// records are mapped (the kernel maps the data area twice in a row, so
/// a window that wraps stays contiguous): the cost follows the records,
/// not the ring's size.
pub fn ring_consume(fd: BorrowedFd<'_>, size: u64, mut each: impl FnMut(&[u8])) -> nix::Result<()> {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?.unwrap_or(4096) as u64;
    if size == 0 || !size.is_power_of_two() || !size.is_multiple_of(page) {
        return Err(Errno::EINVAL);
    }
    // The consumer page (ours to write), then the producer page.
    let consumer = MapWindow::new(fd, 0, page as usize, true)?;
    let producer = MapWindow::new(fd, page, page as usize, false)?;
    let cons = consumer.atomic::<AtomicU64>(0).load(Ordering::Acquire);
    let prod = producer.atomic::<AtomicU64>(0).load(Ordering::Acquire);
    if prod == cons {
        return Ok(());
    }
    if prod < cons || prod - cons > size {
        return Err(Errno::EIO);
    }
    let start = cons % size;
    let first_page = start / page;
    let skip = start - first_page * page;
    let pages = (skip + (prod - cons)).div_ceil(page);
    let data = MapWindow::new(fd, (2 + first_page) * page, (pages * page) as usize, false)?;
    let mut pos = cons;
    while pos < prod {
        let at = (skip + (pos - cons)) as usize;
        let header = data.atomic::<AtomicU32>(at).load(Ordering::Acquire);
        if header & RINGBUF_BUSY != 0 {
            break;
        }
        let len = u64::from(header & !(RINGBUF_BUSY | RINGBUF_DISCARD));
        let whole = (RINGBUF_HEADER + len).next_multiple_of(8);
        if pos + whole > prod {
            return Err(Errno::EIO);
        }
        if header & RINGBUF_DISCARD == 0 {
            each(data.bytes(at + RINGBUF_HEADER as usize, len as usize));
        }
        pos += whole;
    }
    consumer
        .atomic::<AtomicU64>(0)
        .store(pos, Ordering::Release);
    Ok(())
}

pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The kernel's reason for refusing a program, with the verifier's log
/// when it wrote one.
pub fn load_reason(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if log.trim().is_empty() {
                io_error.to_string()
            } else {
                format!("{io_error}; verifier log:\n{log}")
            }
        }
        other => chain(other),
    }
}
