//! pages.img, streamed. The dump copies the stopped process's pages
//! through one reusable buffer straight into the file, many ranges per
//! process_vm_readv, checksumming each run on the way, so the memory is
//! never held twice in ours. Restore checks the file the same way, chunk
//! by chunk, before anything is created; the new process then reads its
//! own pages from it (see restore.rs), so each byte is copied once.

use std::{
    fs::File,
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::image::Run;
use crate::sys::ptrace;

/// The copy buffer: big enough that syscalls are few, small enough to stay
/// in the CPU's cache between the read from the process and the write to
/// the file.
const CHUNK: usize = 1 << 20;

/// Appends runs of a process's memory to pages.img.
pub struct PageWriter<'p> {
    path: PathBuf,
    file: File,
    len: u64,
    buf: Vec<u8>,
    /// Called with the bytes written so far after every chunk.
    progress: &'p mut dyn FnMut(u64),
}

impl<'p> PageWriter<'p> {
    pub fn create(path: &Path, progress: &'p mut dyn FnMut(u64)) -> std::io::Result<Self> {
        Ok(PageWriter {
            path: path.to_path_buf(),
            file: File::create(path)?,
            len: 0,
            buf: vec![0; CHUNK],
            progress,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the ranges `(addr, len)` of `pid`'s memory (non-empty, in
    /// order) to the end of the file; returns one run for each.
    pub fn copy_from(&mut self, pid: i32, ranges: &[(u64, u64)]) -> Result<Vec<Run>, String> {
        let mut runs = Vec::with_capacity(ranges.len());
        // The cursor: range `idx`, `pos` bytes into it, which began at
        // `run_offset` in the file.
        let (mut idx, mut pos, mut run_offset) = (0usize, 0u64, self.len);
        let mut crc = crc32fast::Hasher::new();
        let mut segs = Vec::new();
        while idx < ranges.len() {
            // As many ranges from the cursor on as fit one buffer and one call.
            segs.clear();
            let (mut i, mut p, mut filled) = (idx, pos, 0usize);
            while i < ranges.len() && filled < CHUNK && segs.len() < ptrace::MAX_IOV {
                let (addr, len) = ranges[i];
                let take = ((len - p) as usize).min(CHUNK - filled);
                segs.push((addr + p, take));
                filled += take;
                p += take as u64;
                if p == len {
                    i += 1;
                    p = 0;
                }
            }
            let at = ranges[idx].0 + pos;
            let got = ptrace::read_memory_ranges(pid, &segs, &mut self.buf[..filled])
                .map_err(|e| format!("read memory at {at:#x}: {e}"))?;
            if got == 0 {
                return Err(format!("memory unreadable at {at:#x}"));
            }
            self.file
                .write_all(&self.buf[..got])
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            self.len += got as u64;
            // Move the cursor over what was read, closing finished runs.
            let mut rest = &self.buf[..got];
            while !rest.is_empty() {
                let (addr, len) = ranges[idx];
                let take = ((len - pos) as usize).min(rest.len());
                crc.update(&rest[..take]);
                rest = &rest[take..];
                pos += take as u64;
                if pos == len {
                    runs.push(Run {
                        addr,
                        offset: run_offset,
                        len,
                        crc32: std::mem::take(&mut crc).finalize(),
                    });
                    run_offset += len;
                    idx += 1;
                    pos = 0;
                }
            }
            (self.progress)(self.len);
        }
        Ok(runs)
    }

    /// Flushes the file to its storage; returns its length.
    pub fn finish(self) -> std::io::Result<u64> {
        self.file.sync_all()?;
        Ok(self.len)
    }
}

/// An open pages.img, read in place.
#[derive(Debug)]
pub struct PageFile {
    file: File,
    len: u64,
}

impl PageFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(PageFile { file, len })
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

    /// `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}
