//! The eBPF dirty-page tracker: a small object of its own
//! (`ebpf/src/dirty.rs`) whose programs, on the x86 raw tracepoints
//! `page_fault_user` and `page_fault_kernel`, record each page a tracked
//! process write-faults, and on `sys_enter` (mremap) and
//! `vm_unmapped_area` each range whose mapping it moves. With the
//! process's memory write-protected (userfaultfd `WP_ASYNC`), the first
//! write to each page after each re-protection faults, so a drain returns
//! the pages written since the last drain. The records are in a ring
//! buffer read through its shared mapping, without a system call or a
//! deletion per record: a drain costs what was recorded since the last,
//! never the process's memory nor the map's capacity.
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

use std::{
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, IterableMap, Map, MapData, MapError},
    programs::{ProgramError, RawTracePoint, links::LinkType, loaded_links, loaded_programs},
};
use palisade_common::{
    DIRTY_EVENT_BYTES, DIRTY_MOVED, DIRTY_WRITE, DirtyEvent, MAX_DIRTY_RING, MAX_TRACKED,
    MIN_DIRTY_RING, map, program,
};

use crate::sys::bpf::{HashOps, chain, load_reason};

/// The kernel-side object, built from `ebpf/src/dirty.rs` by agent/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PALISADE_DIRTY_OBJECT"));

/// The object's programs that record writes, and the raw tracepoints
/// they attach to.
const WRITE_PROGRAMS: [(&str, &str); 2] = [
    (program::DIRTY_USER, "page_fault_user"),
    (program::DIRTY_KERNEL, "page_fault_kernel"),
];

/// Those that record moved mappings: attached only where the kernel keeps
/// a moved mapping's write-protection (elsewhere the move drops the
/// registration, which a step sees), since every system call on the host
/// runs the one on `sys_enter` while it is attached (~40 ns each here).
const MOVE_PROGRAMS: [(&str, &str); 2] = [
    (program::DIRTY_MREMAP, "sys_enter"),
    (program::DIRTY_PLACED, "vm_unmapped_area"),
];

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
    #[error("dirty-page tracker: cannot {what} the events kept at {}: {reason}", path.display())]
    Stash {
        path: std::path::PathBuf,
        what: &'static str,
        reason: String,
    },
}

/// The kind of a stashed event that says the process's events since the
/// last drain are incomplete (never in the ring).
const STASHED_LOSS: u32 = 2;

/// What a drain took out for one process.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// The pages written (their page-aligned addresses, ascending, each
    /// once).
    pub pages: Vec<u64>,
    /// The ranges (start, bytes) whose mappings `mremap` moved away or
    /// onto, or where the kernel placed a mapping, in the order recorded.
    pub moved: Vec<(u64, u64)>,
    /// Some events since the last drain could not be recorded (the ring
    /// was full; or, through a handle made from map fds, the programs are
    /// no longer attached because their loader exited): pages written or
    /// mappings moved may be missing, and the caller must find them
    /// another way.
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
    /// The ring, read through a mapping of the records each read finds
    /// (`sys::bpf::ring_consume`).
    ring: OwnedFd,
    /// The kernel's id of `ring`.
    ring_id: u32,
    /// Bytes of its data area.
    ring_size: u64,
    lost: HashMap<MapData, u32, u64>,
    /// The caller vouches that the loader's programs stay attached.
    loader_known_alive: bool,
    /// What was read from the ring and not yet drained, by tgid.
    pending: std::collections::HashMap<u32, Drained>,
}

impl EbpfDirty {
    /// Loads the object and attaches its programs, with the smallest
    /// ring ([`MIN_DIRTY_RING`]); they record for tracked processes until
    /// this value drops.
    pub fn load() -> Result<Self, TrackError> {
        Self::load_for(0, true)
    }

    /// As [`EbpfDirty::load`], its ring sized for `pages` written pages
    /// between two drains (at most [`MAX_DIRTY_RING`] bytes): the ring is
    /// kernel memory allocated whole while the tracker is loaded. Moved
    /// mappings are recorded only if `watch_moves`.
    pub fn load_for(pages: u64, watch_moves: bool) -> Result<Self, TrackError> {
        let bytes = pages
            .saturating_mul(u64::from(DIRTY_EVENT_BYTES))
            .clamp(u64::from(MIN_DIRTY_RING), u64::from(MAX_DIRTY_RING))
            .next_power_of_two();
        Self::load_ring(bytes as u32, watch_moves)
    }

    /// As [`EbpfDirty::load_for`], with a ring of `bytes` (a power of two
    /// multiple of the page size).
    fn load_ring(bytes: u32, watch_moves: bool) -> Result<Self, TrackError> {
        let mut loader = EbpfLoader::new();
        // The programs use no CO-RE relocation.
        loader.btf(None);
        loader.map_max_entries(map::DIRTY, bytes);
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| TrackError::Object(hint(chain(&e))))?;
        let moves = if watch_moves { &MOVE_PROGRAMS[..] } else { &[] };
        for &(program, tracepoint) in WRITE_PROGRAMS.iter().chain(moves) {
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
        let ring = bpf.take_map(map::DIRTY).ok_or(TrackError::Map {
            map: map::DIRTY,
            what: "missing from the object",
            reason: "rebuild palisade".into(),
        })?;
        let (ring, ring_id, ring_size) = ring_of(ring)?;
        let lost = take_map(&mut bpf, map::DIRTY_LOST)?;
        Ok(EbpfDirty {
            programs: Some(bpf),
            tracked,
            ring,
            ring_id,
            ring_size,
            lost,
            loader_known_alive: false,
            pending: Default::default(),
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
        let wrong = map_error(map::DIRTY, "the fd given is not the tracker's ring");
        let data = MapData::from_fd(dirty).map_err(&wrong)?;
        let (ring, ring_id, ring_size) = ring_of(Map::from_map_data(data).map_err(wrong)?)?;
        Ok(EbpfDirty {
            programs: None,
            tracked: map_from_fd(tracked, map::TRACKED)?,
            ring,
            ring_id,
            ring_size,
            lost: map_from_fd(lost, map::DIRTY_LOST)?,
            loader_known_alive: false,
            pending: Default::default(),
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
            dirty: self.ring.as_fd(),
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
        // What an earlier process of that pid may have left (events in
        // flight while it was untracked).
        self.read_ring()?;
        self.pending.remove(&key);
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
        self.read_ring()?;
        self.pending.remove(&key);
        self.take_lost(key)?;
        Ok(())
    }

    /// Returns the pages recorded written by `tgid` since its last drain
    /// (sorted by address), the ranges it moved, and whether any event
    /// was lost. Other processes' events stay for their drains.
    ///
    /// A page written while the drain runs is in this drain or the next,
    /// never in neither: the ring is read up to where the kernel had
    /// written when the read began, and the rest is left for later. Copy
    /// the pages after this returns.
    pub fn drain(&mut self, tgid: i32) -> Result<Drained, TrackError> {
        let key = as_tgid(tgid)?;
        self.read_ring()?;
        let mut d = self.pending.remove(&key).unwrap_or_default();
        d.overflowed |= self.take_lost(key)? || !self.recording()?;
        tidy(&mut d.pages);
        Ok(d)
    }

    /// As [`Self::drain`] for each of `tgids` at once; what was recorded
    /// for other processes is dropped.
    pub fn drain_all(
        &mut self,
        tgids: &[i32],
    ) -> Result<std::collections::HashMap<i32, Drained>, TrackError> {
        self.read_ring()?;
        let recording = self.recording()?;
        let mut out = std::collections::HashMap::new();
        for &tgid in tgids {
            let key = as_tgid(tgid)?;
            let mut d = self.pending.remove(&key).unwrap_or_default();
            d.overflowed |= self.take_lost(key)? || !recording;
            tidy(&mut d.pages);
            out.insert(tgid, d);
        }
        self.pending.clear();
        Ok(out)
    }

    /// Reads the ring and writes everything not yet drained (each tracked
    /// process's losses included) to `path`, replacing what was there, for
    /// a later command's [`Self::unstash`]; it stays pending here too. For
    /// a command that must look at the events without consuming them.
    pub fn stash(&mut self, path: &Path, tgids: &[i32]) -> Result<(), TrackError> {
        self.read_ring()?;
        let recording = self.recording()?;
        for &tgid in tgids {
            let key = as_tgid(tgid)?;
            let lost = self.take_lost(key)? || !recording;
            self.pending.entry(key).or_default().overflowed |= lost;
        }
        let mut events = Vec::new();
        for (&tgid, d) in &self.pending {
            let event = |kind, start, len| DirtyEvent {
                tgid,
                kind,
                start,
                len,
            };
            events.extend(d.pages.iter().map(|&p| event(DIRTY_WRITE, p, 0)));
            events.extend(d.moved.iter().map(|&(s, l)| event(DIRTY_MOVED, s, l)));
            if d.overflowed {
                events.push(event(STASHED_LOSS, 0, 0));
            }
        }
        let failed = |what: &'static str| {
            move |e: std::io::Error| TrackError::Stash {
                path: path.to_path_buf(),
                what,
                reason: e.to_string(),
            }
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytemuck::cast_slice::<DirtyEvent, u8>(&events))
            .map_err(failed("write"))?;
        std::fs::rename(&tmp, path).map_err(failed("rename"))
    }

    /// Takes back what [`Self::stash`] wrote to `path` (none there:
    /// nothing), as if it were still in the ring.
    pub fn unstash(&mut self, path: &Path) -> Result<(), TrackError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(TrackError::Stash {
                    path: path.to_path_buf(),
                    what: "read",
                    reason: e.to_string(),
                });
            }
        };
        let size = size_of::<DirtyEvent>();
        if bytes.len() % size != 0 {
            return Err(TrackError::Stash {
                path: path.to_path_buf(),
                what: "read",
                reason: format!("{} bytes, not a whole number of events", bytes.len()),
            });
        }
        for chunk in bytes.chunks_exact(size) {
            self.take_event(bytemuck::pod_read_unaligned::<DirtyEvent>(chunk));
        }
        Ok(())
    }

    /// What is pending for `tgid` (after [`Self::stash`]), not taken.
    pub fn pending(&self, tgid: i32) -> Option<&Drained> {
        self.pending.get(&(tgid as u32))
    }

    fn take_event(&mut self, event: DirtyEvent) {
        let d = self.pending.entry(event.tgid).or_default();
        match event.kind {
            DIRTY_WRITE => d.pages.push(event.start),
            DIRTY_MOVED => d.moved.push((event.start, event.len)),
            // A loss, or a kind unknown to this build: the events must
            // not be trusted.
            _ => d.overflowed = true,
        }
    }

    /// Moves every record in the ring into `pending`, and hands the ring's
    /// space back to the kernel.
    fn read_ring(&mut self) -> Result<(), TrackError> {
        let mut events = Vec::new();
        let mut short = None;
        crate::sys::bpf::ring_consume(self.ring.as_fd(), self.ring_size, |bytes| {
            match bytes.get(..size_of::<DirtyEvent>()) {
                Some(b) => events.push(bytemuck::pod_read_unaligned::<DirtyEvent>(b)),
                None => short = Some(bytes.len()),
            }
        })
        .map_err(errno_error(map::DIRTY, "cannot read its records"))?;
        for event in events {
            self.take_event(event);
        }
        match short {
            Some(n) => Err(TrackError::Map {
                map: map::DIRTY,
                what: "a record shorter than an event",
                reason: format!("{n} bytes: rebuild palisade"),
            }),
            None => Ok(()),
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
        let dirty = self.ring_id;
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
        Ok(attached >= WRITE_PROGRAMS.len())
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

/// Sorts page addresses and drops repeats (a page faulted by two threads
/// at once is recorded twice).
fn tidy(pages: &mut Vec<u64>) {
    pages.sort_unstable();
    pages.dedup();
}

/// The ring's fd, kernel id and data size, checked to be a ring buffer.
fn ring_of(map: Map) -> Result<(OwnedFd, u32, u64), TrackError> {
    let Map::RingBuf(data) = map else {
        return Err(TrackError::Map {
            map: map::DIRTY,
            what: "not a ring buffer",
            reason: "the fd given is not the tracker's ring".into(),
        });
    };
    let info = data
        .info()
        .map_err(map_error(map::DIRTY, "cannot read its id"))?;
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| TrackError::Map {
            map: map::DIRTY,
            what: "cannot duplicate its fd",
            reason: e.to_string(),
        })?;
    Ok((fd, info.id(), u64::from(info.max_entries())))
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
