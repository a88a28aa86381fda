//! pages.img, streamed. The dump copies the stopped process's pages
//! through one reusable buffer straight into the file, many ranges per
//! process_vm_readv, checksumming each run (CRC32) and each 4 MiB piece
//! of the file (BLAKE3, for the signed manifest) on the way, so the
//! memory is never held twice in ours. Restore checks the file the same
//! way, one pass of pieces on several threads, before anything is
//! created; then a large mapping's pages are written into the new
//! process from the mapped file on two threads, a small one's read by the
//! process itself (see restore.rs): each byte is copied once.

use std::{
    fs::File,
    io::Write,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
};

use super::{
    error::{StepError, StepResult},
    image::Run,
    sign::{self, Digest, PieceHasher},
};
use crate::sys::{mmap::Mapped, ptrace};

/// The copy buffer: big enough that syscalls are few, small enough to stay
/// in the CPU's cache between the read from the process and the write to
/// the file.
const CHUNK: usize = 1 << 20;
/// From this many bytes on, reading and writing overlap on two threads.
const PIPELINE_MIN: u64 = 8 << 20;

/// Where pages are read from: the process, by process_vm_readv (its
/// readable memory), or its /proc/PID/mem, which reads with the kernel's
/// FOLL_FORCE and so also reaches memory the process made unreadable
/// (PROT_NONE, write- or exec-only).
#[derive(Clone, Copy)]
pub enum Source<'f> {
    Process(i32),
    Mem(&'f File),
}

impl Source<'_> {
    fn read(&self, segs: &[(u64, usize)], buf: &mut [u8]) -> nix::Result<usize> {
        match self {
            Source::Process(pid) => ptrace::read_memory_ranges(*pid, segs, buf),
            Source::Mem(file) => {
                let mut done = 0;
                for &(addr, len) in segs {
                    let n = file
                        .read_at(&mut buf[done..done + len], addr)
                        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
                    done += n;
                    if n < len {
                        break;
                    }
                }
                Ok(done)
            }
        }
    }
}

/// Appends runs of a process's memory to pages.img, BLAKE3 of each
/// [`sign::PIECE`] of it computed on the way for the image's manifest.
pub struct PageWriter<'p> {
    path: PathBuf,
    file: File,
    len: u64,
    buf: Vec<u8>,
    digests: PieceHasher,
    /// Called with the bytes written so far after every chunk.
    progress: &'p mut dyn FnMut(u64),
    /// For the final checkpoint of a pre-dump chain: the runs it holds.
    prior: Option<crate::checkpoint::track::Prior>,
}

impl<'p> PageWriter<'p> {
    /// Writes into `file` (new and empty), named `path` in errors.
    pub fn new(file: File, path: PathBuf, progress: &'p mut dyn FnMut(u64)) -> Self {
        PageWriter {
            file,
            path,
            len: 0,
            buf: vec![0; CHUNK],
            digests: PieceHasher::default(),
            progress,
            prior: None,
        }
    }

    /// Pages a pre-dump chain holds are named in runs, not copied.
    pub fn set_prior(&mut self, prior: crate::checkpoint::track::Prior) {
        self.prior = Some(prior);
    }

    pub fn prior(&self) -> Option<&crate::checkpoint::track::Prior> {
        self.prior.as_ref()
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the ranges `(addr, len)` of `pid`'s memory (non-empty, in
    /// order) to the end of the file; returns one run for each. Past a few
    /// MiB, a second thread writes one buffer to the file while the next
    /// is read from the process.
    pub fn copy_from(&mut self, pid: i32, ranges: &[(u64, u64)]) -> StepResult<Vec<Run>> {
        self.copy(Source::Process(pid), ranges)
    }

    /// [`Self::copy_from`] from `source`.
    pub fn copy(&mut self, source: Source, ranges: &[(u64, u64)]) -> StepResult<Vec<Run>> {
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let name = self.path.clone();
        let io = |e: std::io::Error| StepError::file("write", &name)(e);
        let PageWriter {
            file,
            len,
            buf,
            digests,
            progress,
            ..
        } = self;
        let mut file: &File = file;
        if total < PIPELINE_MIN {
            let spare = std::cell::Cell::new(Some(std::mem::take(buf)));
            let runs = read_runs(
                source,
                ranges,
                len,
                *progress,
                &mut || Ok(spare.take().expect("the one buffer is back")),
                &mut |b, got| {
                    digests.update(&b[..got]);
                    file.write_all(&b[..got]).map_err(io)?;
                    spare.set(Some(b));
                    Ok(())
                },
            );
            *buf = spare.take().unwrap_or_else(|| vec![0; CHUNK]);
            return runs;
        }
        // Three stages, each on its thread: read from the process (and
        // CRC), BLAKE3, write to the file.
        const DEPTH: usize = 2;
        let stopped = || StepError::failed("the page file's writer stopped");
        std::thread::scope(|s| {
            let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(DEPTH);
            let (hashed_tx, hashed_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(DEPTH);
            let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
            s.spawn(move || {
                for (b, got) in full_rx {
                    digests.update(&b[..got]);
                    if hashed_tx.send((b, got)).is_err() {
                        return;
                    }
                }
            });
            let writer = s.spawn(move || -> std::io::Result<()> {
                for (b, got) in hashed_rx {
                    file.write_all(&b[..got])?;
                    let _ = free_tx.send(b);
                }
                Ok(())
            });
            let mut made = 0;
            let runs = read_runs(
                source,
                ranges,
                len,
                *progress,
                &mut || {
                    if let Ok(b) = free_rx.try_recv() {
                        return Ok(b);
                    }
                    if made <= 2 * DEPTH + 1 {
                        made += 1;
                        return Ok(vec![0; CHUNK]);
                    }
                    free_rx.recv().map_err(|_| stopped())
                },
                &mut |b, got| full_tx.send((b, got)).map_err(|_| stopped()),
            );
            drop(full_tx);
            writer
                .join()
                .expect("the page file's writer panicked")
                .map_err(io)?;
            runs
        })
    }

    /// Flushes the file to its storage; returns its length and the
    /// digests of its pieces.
    pub fn finish(self) -> std::io::Result<(u64, Vec<Digest>)> {
        self.file.sync_all()?;
        Ok((self.len, self.digests.finish()))
    }
}

/// The copy loop: fills buffers from `next` with the ranges of `pid`'s
/// memory, as many ranges to a process_vm_readv as fit, checksums them
/// into runs (their offsets counted from `len`, which it advances) and
/// hands each to `emit` with the bytes it holds.
fn read_runs(
    source: Source,
    ranges: &[(u64, u64)],
    len: &mut u64,
    progress: &mut dyn FnMut(u64),
    next: &mut dyn FnMut() -> StepResult<Vec<u8>>,
    emit: &mut dyn FnMut(Vec<u8>, usize) -> StepResult<()>,
) -> StepResult<Vec<Run>> {
    let mut runs = Vec::with_capacity(ranges.len());
    // The cursor: range `idx`, `pos` bytes into it, which began at
    // `run_offset` in the file.
    let (mut idx, mut pos, mut run_offset) = (0usize, 0u64, *len);
    let mut crc = crc32fast::Hasher::new();
    let mut segs = Vec::new();
    while idx < ranges.len() {
        // As many ranges from the cursor on as fit one buffer and one call.
        segs.clear();
        let (mut i, mut p, mut filled) = (idx, pos, 0usize);
        while i < ranges.len() && filled < CHUNK && segs.len() < ptrace::MAX_IOV {
            let (addr, rlen) = ranges[i];
            let take = ((rlen - p) as usize).min(CHUNK - filled);
            segs.push((addr + p, take));
            filled += take;
            p += take as u64;
            if p == rlen {
                i += 1;
                p = 0;
            }
        }
        let at = ranges[idx].0 + pos;
        let mut buf = next()?;
        let got = source
            .read(&segs, &mut buf[..filled])
            .map_err(|e| match source {
                Source::Process(pid) => StepError::task(pid, format!("read memory at {at:#x}"))(e),
                Source::Mem(_) => StepError::sys(format!("read memory at {at:#x}"))(e),
            })?;
        if got == 0 {
            return Err(StepError::failed(format!("memory unreadable at {at:#x}")));
        }
        // Move the cursor over what was read, closing finished runs.
        let mut rest = &buf[..got];
        while !rest.is_empty() {
            let (addr, rlen) = ranges[idx];
            let take = ((rlen - pos) as usize).min(rest.len());
            crc.update(&rest[..take]);
            rest = &rest[take..];
            pos += take as u64;
            if pos == rlen {
                runs.push(Run {
                    addr,
                    offset: run_offset,
                    len: rlen,
                    crc32: std::mem::take(&mut crc).finalize(),
                    from: 0,
                });
                run_offset += rlen;
                idx += 1;
                pos = 0;
            }
        }
        emit(buf, got)?;
        *len += got as u64;
        progress(*len);
    }
    Ok(runs)
}

/// Writes `data` into `pid`'s memory at the ranges `(address, length)`
/// (together exactly as long), resuming after a short write.
fn write_exact(pid: i32, segs: &[(u64, usize)], data: &[u8]) -> StepResult<()> {
    let (mut done, mut first, mut skip) = (0usize, 0usize, 0usize);
    while done < data.len() {
        let left: Vec<(u64, usize)> = segs[first..]
            .iter()
            .enumerate()
            .map(|(j, &(a, l))| {
                if j == 0 {
                    (a + skip as u64, l - skip)
                } else {
                    (a, l)
                }
            })
            .collect();
        let at = left[0].0;
        let n = ptrace::write_memory_ranges(pid, &left, &data[done..])
            .map_err(StepError::task(pid, format!("write its pages at {at:#x}")))?;
        if n == 0 {
            return Err(StepError::failed(format!(
                "its memory at {at:#x} cannot be written"
            )));
        }
        done += n;
        let mut n = n + skip;
        skip = 0;
        while n > 0 {
            if n >= segs[first].1 {
                n -= segs[first].1;
                first += 1;
            } else {
                skip = n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// An open pages.img, read in place.
pub struct PageFile {
    file: File,
    len: u64,
    /// The whole file mapped, once a large fill needs it.
    map: std::sync::OnceLock<Mapped>,
    /// The page files of the image's pre-dump chain: the k-th ancestor's
    /// at k-1, where runs with `from` k are.
    ancestors: Vec<PageFile>,
}

impl std::fmt::Debug for PageFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageFile").field("len", &self.len).finish()
    }
}

impl PageFile {
    /// pages.img opened (and checked) by the caller, `len` bytes long.
    pub fn new(file: File, len: u64) -> Self {
        PageFile {
            file,
            len,
            map: std::sync::OnceLock::new(),
            ancestors: Vec::new(),
        }
    }

    /// Gives the file its chain's page files (nearest first).
    pub fn set_ancestors(&mut self, ancestors: Vec<PageFile>) {
        self.ancestors = ancestors;
    }

    /// The file run `run` is in: this one or an ancestor's.
    pub fn holding(&self, run: &Run) -> StepResult<&PageFile> {
        match run.from {
            0 => Ok(self),
            k => self.ancestors.get(k as usize - 1).ok_or_else(|| {
                StepError::Image(format!("a run in ancestor {k}, beyond the image's chain"))
            }),
        }
    }

    /// Whether `runs` are many enough bytes, and laid out one after the
    /// other in the file (as a dump writes one mapping's), for
    /// [`Self::write_into`].
    pub fn worth_writing_into(&self, runs: &[Run]) -> bool {
        let total: u64 = runs.iter().map(|r| r.len).sum();
        total >= PIPELINE_MIN
            && runs
                .windows(2)
                .all(|w| w[0].offset + w[0].len == w[1].offset)
    }

    /// Writes `runs` (consecutive in the file) into `pid`'s memory from the
    /// mapped file, on two threads taking windows of up to 4 MiB: one
    /// copy, no trap per page in the process (the kernel faults its
    /// pages in for process_vm_writev), both CPUs on it.
    pub fn write_into(&self, pid: i32, runs: &[Run]) -> StepResult<()> {
        const WINDOW: usize = 4 << 20;
        let map = match self.map.get() {
            Some(m) => m,
            None => {
                let m = Mapped::new(&self.file, 0, self.len as usize, false)
                    .map_err(StepError::io("map the page file"))?;
                self.map.get_or_init(|| m)
            }
        };
        let Some(first) = runs.first() else {
            return Ok(());
        };
        // Windows of (remote ranges, offset of their bytes in the file).
        let mut windows: Vec<(Vec<(u64, usize)>, u64)> = Vec::new();
        let (mut segs, mut filled, mut from) = (Vec::new(), 0usize, first.offset);
        let mut offset = first.offset;
        for run in runs {
            let mut p = 0u64;
            while p < run.len {
                let take = ((run.len - p) as usize).min(WINDOW - filled);
                segs.push((run.addr + p, take));
                filled += take;
                p += take as u64;
                offset += take as u64;
                if filled == WINDOW || segs.len() == ptrace::MAX_IOV {
                    windows.push((std::mem::take(&mut segs), from));
                    filled = 0;
                    from = offset;
                }
            }
        }
        if !segs.is_empty() {
            windows.push((segs, from));
        }
        let bytes = map.as_slice();
        let next = AtomicUsize::new(0);
        let work = || -> StepResult<()> {
            while let Some((segs, from)) = windows.get(next.fetch_add(1, Ordering::Relaxed)) {
                let len: usize = segs.iter().map(|s| s.1).sum();
                let data = bytes
                    .get(*from as usize..*from as usize + len)
                    .ok_or_else(|| StepError::Image("a run lies outside the page file".into()))?;
                write_exact(pid, segs, data)?;
            }
            Ok(())
        };
        std::thread::scope(|s| {
            let other = s.spawn(work);
            let mine = work();
            let theirs = other.join().expect("a page writer thread panicked");
            mine.and(theirs)
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The open file itself (restore hands it to the new process).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// CRC32 of `len` bytes at `offset`, read a chunk at a time.
    pub fn crc32(&self, offset: u64, len: u64) -> std::io::Result<u32> {
        let mut buf = vec![0u8; (len as usize).min(CHUNK)];
        let mut crc = crc32fast::Hasher::new();
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(buf.len());
            self.file.read_exact_at(&mut buf[..n], offset + done)?;
            crc.update(&buf[..n]);
            done += n as u64;
        }
        Ok(crc.finalize())
    }

    /// The validation pass, reading the file once: CRC32 of each span
    /// `(offset, len)` and, with `digests`, BLAKE3 of each
    /// [`sign::PIECE`] of the whole file. Past a few MiB on up to four
    /// threads, one piece of the file at a time, the spans' CRCs of
    /// their parts in each piece combined in order. The threads are
    /// joined before it returns (restore forks next, and the fork waits
    /// for them to have left the process).
    pub fn check(
        &self,
        spans: &[(u64, u64)],
        digests: bool,
    ) -> std::io::Result<(Vec<u32>, Option<Vec<Digest>>)> {
        self.check_in_pieces(spans, digests, sign::PIECE)
    }

    fn check_in_pieces(
        &self,
        spans: &[(u64, u64)],
        digests: bool,
        piece: u64,
    ) -> std::io::Result<(Vec<u32>, Option<Vec<Digest>>)> {
        // Every span cut at piece boundaries of the file: (span, offset,
        // len) of each part, grouped by piece, in order within a span.
        let pieces = self.len.div_ceil(piece) as usize;
        let mut parts: Vec<Vec<(usize, u64, u64)>> = vec![Vec::new(); pieces];
        let mut order: Vec<Vec<(usize, usize)>> = vec![Vec::new(); spans.len()];
        for (i, &(offset, len)) in spans.iter().enumerate() {
            let mut at = offset;
            while at < offset + len {
                let k = (at / piece) as usize;
                let end = (offset + len).min((k as u64 + 1) * piece);
                order[i].push((k, parts[k].len()));
                parts[k].push((i, at, end - at));
                at = end;
            }
        }
        let next = AtomicUsize::new(0);
        type Hashed = (usize, Option<Digest>, Vec<crc32fast::Hasher>);
        let hash = || -> std::io::Result<Vec<Hashed>> {
            let mut buf = vec![0u8; CHUNK];
            let mut out = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(mine) = parts.get(k) else {
                    return Ok(out);
                };
                // The whole piece for its digest, else only what the
                // spans cover.
                let (lo, hi) = if digests {
                    (k as u64 * piece, ((k as u64 + 1) * piece).min(self.len))
                } else if mine.is_empty() {
                    continue;
                } else {
                    (
                        mine.iter().map(|p| p.1).min().unwrap_or(0),
                        mine.iter().map(|p| p.1 + p.2).max().unwrap_or(0),
                    )
                };
                let mut sha = digests.then(sign::Hasher::default);
                let mut crcs = vec![crc32fast::Hasher::new(); mine.len()];
                let mut at = lo;
                while at < hi {
                    let n = ((hi - at) as usize).min(CHUNK);
                    self.file.read_exact_at(&mut buf[..n], at)?;
                    if let Some(sha) = &mut sha {
                        sha.update(&buf[..n]);
                    }
                    for (&(_, offset, len), crc) in mine.iter().zip(&mut crcs) {
                        let from = offset.max(at);
                        let to = (offset + len).min(at + n as u64);
                        if from < to {
                            crc.update(&buf[(from - at) as usize..(to - at) as usize]);
                        }
                    }
                    at += n as u64;
                }
                let digest = sha.map(sign::Hasher::finish);
                out.push((k, digest, crcs));
            }
        };
        let read: u64 = if digests {
            self.len
        } else {
            spans.iter().map(|s| s.1).sum()
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let hashed = if read < PIPELINE_MIN || threads < 2 {
            hash()?
        } else {
            let results = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|_| s.spawn(hash)).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a checksum thread panicked"))
                    .collect::<Vec<_>>()
            });
            let mut all = Vec::new();
            for r in results {
                all.extend(r?);
            }
            all
        };
        let mut piece_digests = vec![None; pieces];
        let mut piece_crcs: Vec<Vec<crc32fast::Hasher>> = vec![Vec::new(); pieces];
        for (k, digest, crcs) in hashed {
            piece_digests[k] = digest;
            piece_crcs[k] = crcs;
        }
        let crcs = order
            .iter()
            .map(|parts| {
                let mut crc = crc32fast::Hasher::new();
                for &(k, j) in parts {
                    crc.combine(&piece_crcs[k][j]);
                }
                crc.finalize()
            })
            .collect();
        let digests = digests.then(|| {
            piece_digests
                .into_iter()
                .map(|d| d.expect("every piece is hashed"))
                .collect()
        });
        Ok((crcs, digests))
    }

    /// `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own memory, copied as runs that cross buffer boundaries (on one
    /// thread, then on two), comes back byte for byte with the right
    /// offsets and checksums.
    #[test]
    fn runs_across_chunks_are_copied_and_checksummed() {
        let data: Vec<u8> = (0..12 * CHUNK).map(|i| (i * 7 + i / 4096) as u8).collect();
        let base = data.as_ptr() as u64;
        let small = [
            (base, 8192u64),
            (base + 16384, (2 * CHUNK + 4096) as u64),
            (base + (3 * CHUNK) as u64, 4096),
        ];
        let large = [
            (base + (3 * CHUNK) as u64 + 8192, 4096),
            (base + (4 * CHUNK) as u64, (8 * CHUNK - 4096) as u64),
        ];
        assert!(small.iter().map(|r| r.1).sum::<u64>() < PIPELINE_MIN);
        assert!(large.iter().map(|r| r.1).sum::<u64>() >= PIPELINE_MIN);
        let dir = std::env::temp_dir().join(format!("palisade-pages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pages.img");
        let mut seen = 0;
        let mut progress = |n| seen = n;
        let mut w = PageWriter::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap(),
            path.clone(),
            &mut progress,
        );
        let me = std::process::id() as i32;
        let mut runs = w.copy_from(me, &small).unwrap();
        runs.extend(w.copy_from(me, &large).unwrap());
        let (len, digests) = w.finish().unwrap();
        assert_eq!(seen, len);
        let whole = std::fs::read(&path).unwrap();
        let want: Vec<Digest> = whole.chunks(sign::PIECE as usize).map(Digest::of).collect();
        assert_eq!(digests, want);
        let file = PageFile::new(File::open(&path).unwrap(), len);
        let ranges: Vec<(u64, u64)> = small.iter().chain(&large).copied().collect();
        assert_eq!(file.len(), ranges.iter().map(|r| r.1).sum::<u64>());
        assert_eq!(runs.len(), ranges.len());
        let mut offset = 0;
        for (run, (addr, rlen)) in runs.iter().zip(ranges) {
            let from = (addr - base) as usize;
            let want = &data[from..from + rlen as usize];
            assert_eq!((run.addr, run.offset, run.len), (addr, offset, rlen));
            assert_eq!(run.crc32, crc32fast::hash(want));
            assert_eq!(file.crc32(run.offset, run.len).unwrap(), run.crc32);
            assert_eq!(file.read(run.offset, run.len).unwrap(), want);
            offset += rlen;
        }
        // Checked back in pieces smaller than the runs and not a divisor.
        let spans: Vec<(u64, u64)> = runs.iter().map(|r| (r.offset, r.len)).collect();
        let crcs: Vec<u32> = runs.iter().map(|r| r.crc32).collect();
        assert_eq!(
            file.check_in_pieces(&spans, false, 4096 * 3 + 5).unwrap(),
            (crcs.clone(), None)
        );
        let (c, d) = file
            .check_in_pieces(&spans[1..], true, 4096 * 3 + 5)
            .unwrap();
        assert_eq!(c, crcs[1..]);
        assert_eq!(d.unwrap().len() as u64, len.div_ceil(4096 * 3 + 5));
        assert_eq!(file.check(&spans, true).unwrap(), (crcs, Some(want)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
