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

/// Appends runs of a process's memory to pages.img, written aside as
/// `pages.img.partial` until [`PageWriter::finish`] so a failed dump
/// leaves an earlier image in the directory whole.
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
        let partial = partial(path);
        Ok(PageWriter {
            file: File::create(&partial)?,
            path: path.to_path_buf(),
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
                .map_err(|e| format!("{}: {e}", partial(&self.path).display()))?;
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

    /// Flushes the file to its storage and gives it its name; returns its
    /// length.
    pub fn finish(self) -> std::io::Result<u64> {
        self.file.sync_all()?;
        std::fs::rename(partial(&self.path), &self.path)?;
        Ok(self.len)
    }
}

/// Where pages.img is written until it is complete.
pub fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own memory, copied as runs that cross buffer boundaries, comes
    /// back byte for byte with the right offsets and checksums.
    #[test]
    fn runs_across_chunks_are_copied_and_checksummed() {
        let data: Vec<u8> = (0..3 * CHUNK + 12288)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        let base = data.as_ptr() as u64;
        let ranges = [
            (base, 8192u64),
            (base + 16384, (2 * CHUNK + 4096) as u64),
            (base + (3 * CHUNK) as u64, 4096),
        ];
        let dir = std::env::temp_dir().join(format!("palisade-pages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pages.img");
        let mut seen = 0;
        let mut progress = |n| seen = n;
        let mut w = PageWriter::create(&path, &mut progress).unwrap();
        let runs = w.copy_from(std::process::id() as i32, &ranges).unwrap();
        let len = w.finish().unwrap();
        assert_eq!(seen, len);
        let file = PageFile::open(&path).unwrap();
        assert_eq!(file.len(), 8192 + 2 * CHUNK as u64 + 4096 + 4096);
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
        assert_eq!(runs.len(), 3);
        assert!(!partial(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
