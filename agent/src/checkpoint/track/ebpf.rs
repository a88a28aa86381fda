//! The eBPF dirty-page tracker: a small object of its own
//! (`ebpf/src/dirty.rs`) whose programs, on the x86 raw tracepoints
//! `page_fault_user` and `page_fault_kernel`, record each page a tracked
//! process write-faults. With the process's memory write-protected
//! (userfaultfd `WP_ASYNC`), the first write to each page after each
//! re-protection faults, so a drain returns the pages written since the
//! last drain, at a cost proportional to the entries in the map (every
//! tracked process's) plus one walk of its bucket array, never to the
//! process's memory.
//!
//! Not seen: writes that take no fault in the process (another process's
//! `process_vm_writev`, `O_DIRECT` reads, io_uring: whatever writes
//! through get_user_pages), and, with transparent huge pages, the other
//! 511 pages of a huge page a first touch allocates. The consumer
//! cross-checks with `PAGEMAP_SCAN`. A page whose fault then failed may
//! be returned: the set errs on the side of copying.
//!
//! Owns the object's programs (attached while an [`EbpfDirty`] that
//! loaded them lives) and its maps; never uses `unsafe` (the bpf(2)
//! commands aya 0.14 lacks are in `sys::bpf`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, IterableMap, Map, MapData, MapError},
    programs::{ProgramError, RawTracePoint, links::LinkType, loaded_links, loaded_programs},
};
use palisade_common::{DirtyKey, MAX_TRACKED, map, program};

use crate::sys::bpf::{BatchCursor, HashOps, chain, load_reason};

/// The kernel-side object, built from `ebpf/src/dirty.rs` by agent/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PALISADE_DIRTY_OBJECT"));

/// The object's programs and the raw tracepoints they attach to.
const PROGRAMS: [(&str, &str); 2] = [
    (program::DIRTY_USER, "page_fault_user"),
    (program::DIRTY_KERNEL, "page_fault_kernel"),
];

/// Entries a drain reads from `DIRTY` per bpf(2) call.
const BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("cannot load the dirty-page tracker's eBPF object: {0}")]
    Object(String),
    #[error("cannot load the dirty-page tracker's program {program}: {reason}")]
    Load {
        program: &'static str,
        reason: String,
    },
    #[error("cannot attach the dirty-page tracker to the raw tracepoint {tracepoint}: {reason}")]
    Attach {
        tracepoint: &'static str,
        reason: String,
    },
    #[error("dirty-page tracker: map {map}: {what}: {reason}")]
    Map {
        map: &'static str,
        what: &'static str,
        reason: String,
    },
    #[error(
        "cannot track pid {0}: {MAX_TRACKED} processes are tracked already (untrack one first)"
    )]
    Full(i32),
    #[error("{0} is not a process id")]
    BadPid(i32),
}

/// What a drain took out for one process.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// The pages written (their page-aligned addresses, ascending), each
    /// with the write faults recorded since the last drain (at least 1).
    pub pages: Vec<(u64, u32)>,
    /// Some write faults since the last drain could not be recorded (the
    /// map was full, or the kernel out of memory; or, through a handle
    /// made from map fds, the programs are no longer attached because
    /// their loader exited): pages written may be missing from `pages`,
    /// and the caller must find them another way.
    pub overflowed: bool,
}

/// The tracker's maps, for a process that did not load it (passed with
/// `SCM_RIGHTS`) to make an [`EbpfDirty::from_map_fds`] of.
pub struct DirtyMapFds<'a> {
    pub dirty: BorrowedFd<'a>,
    pub tracked: BorrowedFd<'a>,
    pub lost: BorrowedFd<'a>,
}

/// The loaded tracker, or a handle on its maps.
pub struct EbpfDirty {
    /// The object whose programs' links detach when it drops (first: the
    /// fields drop in order); `None` in a handle made from map fds.
    programs: Option<Ebpf>,
    tracked: HashMap<MapData, u32, u32>,
    dirty: HashMap<MapData, DirtyKey, u32>,
    lost: HashMap<MapData, u32, u64>,
    /// The caller vouches that the loader's programs stay attached.
    loader_known_alive: bool,
}

impl EbpfDirty {
    /// Loads the object and attaches both programs; they record for
    /// tracked processes until this value drops.
    pub fn load() -> Result<Self, TrackError> {
        Self::load_with(None)
    }

    /// As [`EbpfDirty::load`], its map sized for `pages` written pages
    /// between two drains (at most [`palisade_common::MAX_DIRTY_PAGES`]):
    /// a drain walks every bucket, so a map no bigger than needed keeps
    /// it short.
    pub fn load_for(pages: u64) -> Result<Self, TrackError> {
        let max = u64::from(palisade_common::MAX_DIRTY_PAGES);
        Self::load_with(Some(pages.clamp(1 << 14, max) as u32))
    }

    /// As [`EbpfDirty::load`], with `DIRTY` holding `pages` entries
    /// instead of [`palisade_common::MAX_DIRTY_PAGES`].
    fn load_with(pages: Option<u32>) -> Result<Self, TrackError> {
        let mut loader = EbpfLoader::new();
        // The programs use no CO-RE relocation.
        loader.btf(None);
        if let Some(pages) = pages {
            loader.map_max_entries(map::DIRTY, pages);
        }
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| TrackError::Object(hint(chain(&e))))?;
        for (program, tracepoint) in PROGRAMS {
            let failed = |reason: String| TrackError::Load { program, reason };
            let prog: &mut RawTracePoint = bpf
                .program_mut(program)
                .ok_or_else(|| failed("missing from the object".into()))?
                .try_into()
                .map_err(|e: ProgramError| failed(chain(&e)))?;
            prog.load().map_err(|e| failed(hint(load_reason(&e))))?;
            prog.attach(tracepoint).map_err(|e| TrackError::Attach {
                tracepoint,
                reason: hint(chain(&e)),
            })?;
        }
        let tracked = take_map(&mut bpf, map::TRACKED)?;
        let dirty = take_map(&mut bpf, map::DIRTY)?;
        let lost = take_map(&mut bpf, map::DIRTY_LOST)?;
        Ok(EbpfDirty {
            programs: Some(bpf),
            tracked,
            dirty,
            lost,
            loader_known_alive: false,
        })
    }

    /// A handle on the maps of a tracker another process loaded (which
    /// keeps the programs attached): it tracks, untracks and drains as
    /// the loader's does, and its drains report `overflowed` once the
    /// programs are no longer attached.
    pub fn from_map_fds(
        dirty: OwnedFd,
        tracked: OwnedFd,
        lost: OwnedFd,
    ) -> Result<Self, TrackError> {
        Ok(EbpfDirty {
            programs: None,
            tracked: map_from_fd(tracked, map::TRACKED)?,
            dirty: map_from_fd(dirty, map::DIRTY)?,
            lost: map_from_fd(lost, map::DIRTY_LOST)?,
            loader_known_alive: false,
        })
    }

    /// As [`EbpfDirty::from_map_fds`], for a caller that knows the loader
    /// keeps the programs attached while it drains (a tracking session's
    /// holder it is talking to): drains skip listing the host's programs.
    pub fn from_held_map_fds(
        dirty: OwnedFd,
        tracked: OwnedFd,
        lost: OwnedFd,
    ) -> Result<Self, TrackError> {
        let mut handle = Self::from_map_fds(dirty, tracked, lost)?;
        handle.loader_known_alive = true;
        Ok(handle)
    }

    /// The maps, to pass to a process that drains (see [`EbpfDirty::from_map_fds`]).
    pub fn map_fds(&self) -> DirtyMapFds<'_> {
        DirtyMapFds {
            dirty: self.dirty.map().fd().as_fd(),
            tracked: self.tracked.map().fd().as_fd(),
            lost: self.lost.map().fd().as_fd(),
        }
    }

    /// Starts recording the write faults of process `tgid` (all its
    /// threads). Already tracked: nothing changes.
    pub fn track(&mut self, tgid: i32) -> Result<(), TrackError> {
        let key = as_tgid(tgid)?;
        if self.tracked.get(&key, 0).is_ok() {
            return Ok(());
        }
        // What an earlier process of that pid may have left (faults in
        // flight while it was untracked).
        self.sweep(key, |_, _| {})?;
        self.take_lost(key)?;
        self.forget_stale_losses()?;
        self.tracked.insert(key, 0, 0).map_err(|e| {
            if errno(&e) == Some(libc::E2BIG) {
                TrackError::Full(tgid)
            } else {
                map_error(map::TRACKED, "cannot add the process")(e)
            }
        })
    }

    /// Stops recording the write faults of process `tgid` and drops what
    /// was recorded for it. Not tracked: nothing changes.
    pub fn untrack(&mut self, tgid: i32) -> Result<(), TrackError> {
        let key = as_tgid(tgid)?;
        match self.tracked.remove(&key) {
            Err(e) if errno(&e) != Some(libc::ENOENT) => {
                return Err(map_error(map::TRACKED, "cannot remove the process")(e));
            }
            _ => {}
        }
        self.sweep(key, |_, _| {})?;
        self.take_lost(key)?;
        Ok(())
    }

    /// Removes and returns the pages recorded for `tgid` (sorted by
    /// address, with their write counts), and whether any were lost to a
    /// full map since the last drain.
    ///
    /// A page written while the drain runs is in this drain or the next,
    /// never in neither: the map's buckets are read in one pass and only
    /// the entries read are deleted. A loss is reported by the first
    /// drain that ends after it. Copy the pages after this returns: a
    /// write fault on a returned page that comes in between its reading
    /// and its deletion is counted in no drain (the page is in this one).
    pub fn drain(&mut self, tgid: i32) -> Result<Drained, TrackError> {
        let key = as_tgid(tgid)?;
        let mut pages = Vec::new();
        self.sweep(key, |page, count| pages.push((page, count)))?;
        let overflowed = self.take_lost(key)? || !self.recording()?;
        pages.sort_unstable();
        Ok(Drained { pages, overflowed })
    }

    /// Removes and returns the pages recorded for each of `tgids` (as
    /// [`Self::drain`] does for one) in one pass over the map, each entry
    /// deleted as it is read; entries of other processes are dropped.
    pub fn drain_all(
        &mut self,
        tgids: &[i32],
    ) -> Result<std::collections::HashMap<i32, Drained>, TrackError> {
        let ops = HashOps::<DirtyKey, u32>::new(self.dirty.map().fd().as_fd()).map_err(
            errno_error(map::DIRTY, "not a hash map of the tracker's layout"),
        )?;
        let mut out: std::collections::HashMap<i32, Drained> =
            tgids.iter().map(|t| (*t, Drained::default())).collect();
        let mut cursor = BatchCursor::default();
        let mut keys = vec![DirtyKey::default(); BATCH];
        let mut counts = vec![0u32; BATCH];
        while !cursor.done() {
            let n = ops
                .take_batch(&mut cursor, &mut keys, &mut counts)
                .map_err(errno_error(
                    map::DIRTY,
                    "cannot take its entries (BPF_MAP_LOOKUP_AND_DELETE_BATCH, Linux 5.6)",
                ))?;
            for (key, &count) in keys[..n].iter().zip(&counts[..n]) {
                if let Some(d) = out.get_mut(&(key.tgid as i32)) {
                    d.pages.push((key.page, count));
                }
            }
        }
        let recording = self.recording()?;
        for (tgid, d) in out.iter_mut() {
            d.overflowed = self.take_lost(as_tgid(*tgid)?)? || !recording;
            d.pages.sort_unstable();
        }
        Ok(out)
    }

    /// Reads every `DIRTY` entry of `tgid` (one pass over the map), hands
    /// each to `found`, then deletes them. If deleting fails after some
    /// were deleted, the pages found are still all in hand and the others
    /// stay for the next drain: not an error.
    fn sweep(&self, tgid: u32, mut found: impl FnMut(u64, u32)) -> Result<(), TrackError> {
        let ops = HashOps::<DirtyKey, u32>::new(self.dirty.map().fd().as_fd()).map_err(
            errno_error(map::DIRTY, "not a hash map of the tracker's layout"),
        )?;
        let mut cursor = BatchCursor::default();
        let mut keys = vec![DirtyKey::default(); BATCH];
        let mut counts = vec![0u32; BATCH];
        let mut mine = Vec::new();
        while !cursor.done() {
            let n = ops
                .lookup_batch(&mut cursor, &mut keys, &mut counts)
                .map_err(errno_error(
                    map::DIRTY,
                    "cannot read it (BPF_MAP_LOOKUP_BATCH, Linux 5.6)",
                ))?;
            for (key, &count) in keys[..n].iter().zip(&counts[..n]) {
                if key.tgid == tgid {
                    mine.push(*key);
                    found(key.page, count);
                }
            }
        }
        match ops.delete_batch(&mine) {
            (0, Err(e)) => Err(errno_error(
                map::DIRTY,
                "cannot delete pages read (BPF_MAP_DELETE_BATCH, Linux 5.6)",
            )(e)),
            _ => Ok(()),
        }
    }

    /// Takes `tgid`'s count of lost write faults out of `DIRTY_LOST`, in
    /// one operation so that a loss recorded meanwhile is never erased.
    fn take_lost(&self, tgid: u32) -> Result<bool, TrackError> {
        let ops = HashOps::<u32, u64>::new(self.lost.map().fd().as_fd()).map_err(errno_error(
            map::DIRTY_LOST,
            "not a hash map of the tracker's layout",
        ))?;
        let lost = ops.take(&tgid).map_err(errno_error(
            map::DIRTY_LOST,
            "cannot take an entry (BPF_MAP_LOOKUP_AND_DELETE_ELEM on a hash map, Linux 5.14)",
        ))?;
        Ok(lost.is_some_and(|n| n > 0))
    }

    /// Whether the programs are attached now. Ours are while we live; a
    /// handle's are if raw tracepoint links of both programs writing into
    /// our `DIRTY` exist (a few syscalls per BPF program on the host).
    fn recording(&self) -> Result<bool, TrackError> {
        if self.programs.is_some() || self.loader_known_alive {
            return Ok(true);
        }
        let dirty = self
            .dirty
            .map()
            .info()
            .map_err(map_error(map::DIRTY, "cannot read its id"))?
            .id();
        // Links and programs may go while they are listed: those that
        // cannot be read are not ours or are gone.
        let linked: Vec<u32> = loaded_links()
            .flatten()
            .filter(|link| link.link_type().ok() == Some(LinkType::RawTracePoint))
            .map(|link| link.program_id())
            .collect();
        let attached = loaded_programs()
            .flatten()
            .filter(|prog| linked.contains(&prog.id()))
            .filter(|prog| {
                prog.map_ids()
                    .ok()
                    .flatten()
                    .is_some_and(|ids| ids.contains(&dirty))
            })
            .count();
        Ok(attached >= PROGRAMS.len())
    }

    /// Deletes the `DIRTY_LOST` entries of processes not tracked (made by
    /// faults in flight while they were untracked), so the map keeps room
    /// for the tracked ones.
    fn forget_stale_losses(&mut self) -> Result<(), TrackError> {
        let keys = self
            .lost
            .keys()
            .collect::<Result<Vec<u32>, _>>()
            .map_err(map_error(map::DIRTY_LOST, "cannot list its entries"))?;
        for tgid in keys {
            if self.tracked.get(&tgid, 0).is_err() {
                let _ = self.lost.remove(&tgid);
            }
        }
        Ok(())
    }
}

/// Whether this kernel can run the tracker (for `palisade check`): it
/// loads, attaches, and a drain's map operations work; or why not.
pub fn available() -> Result<(), String> {
    let mut tracker = EbpfDirty::load().map_err(|e| e.to_string())?;
    // No process has this pid (pid_max is at most 2^22): an empty drain.
    tracker.drain(i32::MAX).map(drop).map_err(|e| e.to_string())
}

fn as_tgid(tgid: i32) -> Result<u32, TrackError> {
    u32::try_from(tgid)
        .ok()
        .filter(|&t| t > 0)
        .ok_or(TrackError::BadPid(tgid))
}

fn take_map<K: aya::Pod, V: aya::Pod>(
    bpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, TrackError> {
    let map = bpf.take_map(name).ok_or(TrackError::Map {
        map: name,
        what: "missing from the object",
        reason: "rebuild palisade".into(),
    })?;
    HashMap::try_from(map).map_err(map_error(name, "not of the layout palisade-common gives"))
}

fn map_from_fd<K: aya::Pod, V: aya::Pod>(
    fd: OwnedFd,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, TrackError> {
    let wrong = map_error(name, "the fd given is not the tracker's map");
    let data = MapData::from_fd(fd).map_err(&wrong)?;
    let map = Map::from_map_data(data).map_err(&wrong)?;
    HashMap::try_from(map).map_err(wrong)
}

fn map_error(map: &'static str, what: &'static str) -> impl Fn(MapError) -> TrackError {
    move |e| TrackError::Map {
        map,
        what,
        reason: hint(chain(&e)),
    }
}

fn errno_error(map: &'static str, what: &'static str) -> impl Fn(nix::errno::Errno) -> TrackError {
    move |e| TrackError::Map {
        map,
        what,
        reason: hint(e.desc().to_string()),
    }
}

/// The errno of a failed map syscall.
fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// Adds the usual fix to a permission error.
fn hint(reason: String) -> String {
    if reason.contains("Operation not permitted") || reason.contains("Permission denied") {
        format!("{reason} (the tracker must run as root, with CAP_BPF and CAP_PERFMON)")
    } else {
        reason
    }
}

#[cfg(test)]
mod tests;
