//! The image: `meta.json` (versioned, self-describing, checksummed),
//! `pages.img` (raw page data, one checksummed run per dumped VMA) and
//! `files.img` (buffered data of file objects, checksummed blobs).
//! Reading validates everything — version, metadata checksum, page file
//! length and every run's checksum — before the caller creates anything.

use std::{fs, io::Write, path::Path};

use serde::{Deserialize, Serialize};

use super::{
    CheckpointError,
    files::{FdEntry, FileObject},
    pages::{PageFile, PageWriter},
    state::{ProcessState, ThreadState},
};

/// The only image format this build reads and writes.
pub const FORMAT: u32 = 2;
pub const META: &str = "meta.json";
pub const PAGES: &str = "pages.img";
pub const FILES: &str = "files.img";

/// The file as written: format, checksum of `body`, body.
#[derive(Debug, Serialize, Deserialize)]
struct MetaFile {
    format: u32,
    /// CRC32 of the body serialised compactly (as `serde_json::to_vec`).
    body_crc32: u32,
    body: serde_json::Value,
}

/// A process tree: everything about it except page contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// The pid of the tree's root (the process named at checkpoint).
    pub root: i32,
    /// Every process of the tree, each parent before its children.
    pub processes: Vec<Process>,
    /// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, memfd), each
    /// object once however many processes map it.
    pub shared_memory: Vec<SharedMemory>,
    /// Open file descriptions of the whole tree, each once however many
    /// fds of however many processes share it (see `checkpoint::files`).
    pub files: Vec<FileObject>,
    /// Total bytes in pages.img.
    pub pages_len: u64,
    /// For a container's image: what recreates the container around the
    /// tree. Its pids are then those of the container's pid namespace.
    #[serde(default)]
    pub container: Option<ContainerImage>,
}

/// The container a tree was checkpointed from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerImage {
    pub name: String,
    pub recipe: crate::runtime::Recipe,
}

impl Image {
    /// The fds of every process, one after the other.
    pub fn all_fds(&self) -> Vec<FdEntry> {
        self.processes.iter().flat_map(|p| p.fds.clone()).collect()
    }
}

/// The path recorded for an fd on the container's log (the host's file,
/// out of the container's sight): restore gives the new container's log.
pub const CONTAINER_LOG: &str = "palisade:container-log";

/// One process; for a zombie only its identity and exit status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Process {
    pub pid: i32,
    /// The parent's pid, 0 for the root.
    pub parent: i32,
    pub pgid: i32,
    pub sid: i32,
    /// A zombie's wait status (as waitpid reports it).
    pub zombie: Option<i32>,
    pub comm: String,
    pub exe: String,
    pub cwd: String,
    /// Its root directory (chroot), as the host sees it.
    #[serde(default = "slash")]
    pub root: String,
    /// Signal dispositions other than the default, read by remote
    /// rt_sigaction in the stopped process.
    pub sigactions: Vec<SigAction>,
    pub mm: MmLayout,
    /// /proc/PID/auxv as native words.
    pub auxv: Vec<u64>,
    pub vmas: Vec<Vma>,
    /// Its fds, each naming one of `Image::files`.
    pub fds: Vec<FdEntry>,
    /// Limits, personality, prctl flags, timers, credentials, shared
    /// pending signals (checkpoint/state.rs).
    pub state: ProcessState,
    /// Every thread, the main thread (tid = pid) first.
    pub threads: Vec<Thread>,
}

fn slash() -> String {
    "/".into()
}

/// One thread's CPU and per-thread kernel state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Thread {
    pub tid: i32,
    pub comm: String,
    pub regs: Registers,
    /// The XSAVE area (NT_X86_XSTATE), hex.
    pub xstate: String,
    pub sigmask: u64,
    pub rseq: Option<Rseq>,
    /// set_tid_address (cleared and futex-woken at exit: pthread_join).
    pub tid_address: u64,
    /// set_robust_list head and length.
    pub robust_list: u64,
    pub robust_list_len: u64,
    /// Alternate signal stack and the thread's own pending signals.
    pub state: ThreadState,
}

/// A shared anonymous memory object and its pages (runs whose `addr` is
/// the offset in the object).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedMemory {
    /// Inode of the object on the dumping host (identifies it in maps).
    pub inode: u64,
    pub size: u64,
    pub runs: Vec<Run>,
}

/// user_regs_struct, by name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Registers {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// struct kernel_sigaction of x86_64.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SigAction {
    pub signal: i32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

impl SigAction {
    pub fn to_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, w) in [self.handler, self.flags, self.restorer, self.mask]
            .iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    pub fn from_bytes(signal: i32, b: &[u8; 32]) -> Self {
        let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        SigAction {
            signal,
            handler: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Rseq {
    pub pointer: u64,
    pub size: u32,
    pub signature: u32,
}

/// The mm fields PR_SET_MM_MAP restores (from /proc/PID/stat; `brk` is
/// the end of the [heap] VMA, or start_brk when there is none).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct MmLayout {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VmaKind {
    /// Private anonymous memory, [heap] and [stack] included.
    Anonymous,
    /// Private mapping of a file.
    File,
    /// Shared mapping of a file: its contents are the file's, so nothing
    /// is dumped; restore maps the file shared again.
    SharedFile,
    /// Shared anonymous memory: `Vma::shared_memory` names the object.
    SharedAnonymous,
    /// [vdso] and [vvar*]: the restoring kernel maps its own.
    Vdso,
    Vvar,
    /// [vsyscall]: fixed by the kernel, nothing to do.
    Vsyscall,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub kind: VmaKind,
    /// Path and offset for file mappings; the pseudo-name ([heap],
    /// [stack]) for anonymous ones.
    pub path: Option<String>,
    pub offset: u64,
    /// For `SharedAnonymous`: the index in `Image::shared_memory`.
    #[serde(default)]
    pub shared_memory: Option<usize>,
    /// Its pages that are not what a fresh mapping would give (touched
    /// anonymous pages; copied-on-write pages of a file mapping), as runs
    /// of pages.img. Empty for unreadable and kernel-provided VMAs.
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// Address of the first byte in the process.
    pub addr: u64,
    /// Offset in pages.img.
    pub offset: u64,
    pub len: u64,
    pub crc32: u32,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Creates `dir` (if missing) and its pages.img, for the dump to stream
/// page runs into; `progress` is called with the bytes written so far.
pub fn create_pages<'p>(
    dir: &Path,
    progress: &'p mut dyn FnMut(u64),
) -> Result<PageWriter<'p>, CheckpointError> {
    let io =
        |what: &Path, e: std::io::Error| CheckpointError::Image(format!("{}: {e}", what.display()));
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join(PAGES);
    PageWriter::create(&path, progress).map_err(|e| io(&path, e))
}

/// Writes files.img and the metadata into `dir`, after its pages.img is
/// complete.
pub fn write(dir: &Path, image: &Image, files: &[u8]) -> Result<(), CheckpointError> {
    let io =
        |what: &Path, e: std::io::Error| CheckpointError::Image(format!("{}: {e}", what.display()));
    let files_path = dir.join(FILES);
    fs::write(&files_path, files).map_err(|e| io(&files_path, e))?;
    let body = serde_json::to_value(image).map_err(|e| CheckpointError::Image(e.to_string()))?;
    let meta = MetaFile {
        format: FORMAT,
        body_crc32: crc32fast::hash(&serde_json::to_vec(image).expect("image serialises")),
        body,
    };
    let meta_path = dir.join(META);
    let text = serde_json::to_string_pretty(&meta).expect("meta serialises");
    let mut f = fs::File::create(&meta_path).map_err(|e| io(&meta_path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io(&meta_path, e))?;
    Ok(())
}

/// Reads files.img of the image in `dir` and validates it against the
/// image's file objects (every blob inside it, with its checksum; fds and
/// objects consistent), before anything is created.
pub fn read_files(dir: &Path, image: &Image) -> Result<Vec<u8>, CheckpointError> {
    let path = dir.join(FILES);
    let data =
        fs::read(&path).map_err(|e| CheckpointError::Image(format!("{}: {e}", path.display())))?;
    let bad = |e: String| CheckpointError::Image(format!("{}: {e}", path.display()));
    super::files::validate(&image.files, &[], &data).map_err(bad)?;
    for p in &image.processes {
        super::files::validate(&image.files, &p.fds, &data)
            .map_err(|e| bad(format!("pid {}: {e}", p.pid)))?;
    }
    Ok(data)
}

/// Reads `meta.json` of the image in `dir` alone: its format and
/// checksum, not the page and file data (see [`read`]).
pub fn read_meta(dir: &Path) -> Result<Image, CheckpointError> {
    let bad = |msg: String| CheckpointError::Image(msg);
    let meta_path = dir.join(META);
    let text =
        fs::read_to_string(&meta_path).map_err(|e| bad(format!("{}: {e}", meta_path.display())))?;
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "{}: not valid JSON (truncated?): {e}",
            meta_path.display()
        ))
    })?;
    match raw.get("format").and_then(|f| f.as_u64()) {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => {
            return Err(bad(format!(
                "{}: image format {f}, this palisade reads format {FORMAT}",
                meta_path.display()
            )));
        }
        None => return Err(bad(format!("{}: no \"format\" field", meta_path.display()))),
    }
    let meta: MetaFile =
        serde_json::from_value(raw).map_err(|e| bad(format!("{}: {e}", meta_path.display())))?;
    let image: Image = serde_json::from_value(meta.body)
        .map_err(|e| bad(format!("{}: body: {e}", meta_path.display())))?;
    let crc = crc32fast::hash(&serde_json::to_vec(&image).expect("image serialises"));
    if crc != meta.body_crc32 {
        return Err(bad(format!(
            "{}: metadata checksum mismatch (stored {:08x}, computed {crc:08x}): the file is corrupt",
            meta_path.display(),
            meta.body_crc32
        )));
    }
    Ok(image)
}

/// Reads and validates the image in `dir`: returns the metadata and the
/// page data, or an error naming what is wrong.
pub fn read(dir: &Path) -> Result<(Image, PageFile), CheckpointError> {
    let bad = |msg: String| CheckpointError::Image(msg);
    let image = read_meta(dir)?;
    let meta_path = dir.join(META);
    let pages_path = dir.join(PAGES);
    let pages =
        PageFile::open(&pages_path).map_err(|e| bad(format!("{}: {e}", pages_path.display())))?;
    if pages.len() != image.pages_len {
        return Err(bad(format!(
            "{}: {} bytes, the metadata says {} (truncated or wrong file)",
            pages_path.display(),
            pages.len(),
            image.pages_len
        )));
    }
    // Every run inside pages.img and its mapping; their checksums are
    // computed together at the end (on several threads).
    let mut spans: Vec<(String, Run)> = Vec::new();
    let mut check_run = |run: &Run, lo: u64, hi: u64, where_: String| {
        if run
            .offset
            .checked_add(run.len)
            .is_none_or(|end| end > image.pages_len)
        {
            return Err(bad(format!("{where_}: outside {PAGES}")));
        }
        if run.addr < lo || run.addr.saturating_add(run.len) > hi {
            return Err(bad(format!("{where_}: outside its mapping")));
        }
        spans.push((where_, *run));
        Ok(())
    };
    for (i, shm) in image.shared_memory.iter().enumerate() {
        for run in &shm.runs {
            check_run(
                run,
                0,
                shm.size,
                format!("shared memory {i} run at offset {:x}", run.addr),
            )?;
        }
    }
    let structure = |msg: String| bad(format!("{}: {msg}", meta_path.display()));
    let mut seen = std::collections::HashSet::new();
    if image.processes.first().map(|p| p.pid) != Some(image.root) {
        return Err(structure("the root is not the first process".into()));
    }
    for p in &image.processes {
        if p.pid != image.root && !seen.contains(&p.parent) {
            return Err(structure(format!(
                "pid {} comes before its parent {}",
                p.pid, p.parent
            )));
        }
        if p.zombie.is_none() && p.threads.first().map(|t| t.tid) != Some(p.pid) {
            return Err(structure(format!("pid {}: no main thread", p.pid)));
        }
        for t in &p.threads {
            if !seen.insert(t.tid) && t.tid != p.pid {
                return Err(structure(format!("tid {} appears twice", t.tid)));
            }
            if unhex(&t.xstate).is_none() {
                return Err(structure(format!("tid {}: xstate is not hex", t.tid)));
            }
        }
        seen.insert(p.pid);
        for vma in &p.vmas {
            if let Some(i) = vma.shared_memory
                && i >= image.shared_memory.len()
            {
                return Err(structure(format!(
                    "pid {} vma {:x}: no shared memory object {i}",
                    p.pid, vma.start
                )));
            }
            for run in &vma.runs {
                let where_ = format!(
                    "pid {} vma {:x}-{:x} run at {:x}",
                    p.pid, vma.start, vma.end, run.addr
                );
                check_run(run, vma.start, vma.end, where_)?;
            }
        }
    }
    let offsets: Vec<(u64, u64)> = spans.iter().map(|(_, r)| (r.offset, r.len)).collect();
    let crcs = pages
        .crc32_all(&offsets)
        .map_err(|e| bad(format!("{}: {e}", pages_path.display())))?;
    for ((where_, run), crc) in spans.iter().zip(crcs) {
        if crc != run.crc32 {
            return Err(bad(format!(
                "{}: pages of {where_} (offset {}): checksum mismatch (stored {:08x}, computed {crc:08x})",
                pages_path.display(),
                run.offset,
                run.crc32
            )));
        }
    }
    Ok((image, pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pages: &[u8]) -> Image {
        let zero = Registers {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            rbp: 0,
            rbx: 7,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rax: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            orig_rax: u64::MAX,
            rip: 0x401000,
            cs: 0x33,
            eflags: 0x202,
            rsp: 0x7fff0000,
            ss: 0x2b,
            fs_base: 0,
            gs_base: 0,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
        };
        Image {
            root: 4242,
            processes: vec![Process {
                pid: 4242,
                parent: 0,
                pgid: 4242,
                sid: 4242,
                zombie: None,
                comm: "x".into(),
                exe: "/bin/x".into(),
                cwd: "/".into(),
                root: "/".into(),
                sigactions: vec![],
                mm: MmLayout::default(),
                auxv: vec![6, 4096, 0, 0],
                vmas: vec![Vma {
                    start: 0x10000,
                    end: 0x10000 + pages.len() as u64,
                    read: true,
                    write: true,
                    exec: false,
                    kind: VmaKind::Anonymous,
                    path: None,
                    offset: 0,
                    shared_memory: None,
                    runs: vec![Run {
                        addr: 0x10000,
                        offset: 0,
                        len: pages.len() as u64,
                        crc32: crc32fast::hash(pages),
                    }],
                }],
                fds: vec![],
                state: Default::default(),
                threads: vec![Thread {
                    tid: 4242,
                    comm: "x".into(),
                    regs: zero,
                    xstate: hex(&[1, 2, 3]),
                    sigmask: 0,
                    rseq: None,
                    tid_address: 0,
                    robust_list: 0,
                    robust_list_len: 0,
                    state: Default::default(),
                }],
            }],
            shared_memory: vec![],
            files: vec![],
            pages_len: pages.len() as u64,
            container: None,
        }
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("palisade-image-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn image_round_trips_and_damage_is_named() {
        let pages = vec![0x5au8; 8192];
        let image = sample(&pages);
        let dir = tempdir("rt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(PAGES), &pages).unwrap();
        write(&dir, &image, &[]).unwrap();
        assert!(read_files(&dir, &image).unwrap().is_empty());
        let (back, data) = read(&dir).unwrap();
        assert_eq!(back, image);
        assert_eq!(data.read(0, data.len()).unwrap(), pages);

        let mut bad = pages.clone();
        bad[5000] ^= 1;
        fs::write(dir.join(PAGES), &bad).unwrap();
        let err = read(&dir).unwrap_err().to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("10000-12000 run at 10000"),
            "{err}"
        );

        fs::write(dir.join(PAGES), &pages[..4096]).unwrap();
        assert!(read(&dir).unwrap_err().to_string().contains("truncated"));

        fs::write(dir.join(PAGES), &pages).unwrap();
        let meta = fs::read_to_string(dir.join(META)).unwrap();
        fs::write(dir.join(META), meta.replace("4242", "4243")).unwrap();
        assert!(
            read(&dir)
                .unwrap_err()
                .to_string()
                .contains("metadata checksum mismatch")
        );
        fs::write(
            dir.join(META),
            meta.replace("\"format\": 2", "\"format\": 3"),
        )
        .unwrap();
        assert!(
            read(&dir)
                .unwrap_err()
                .to_string()
                .contains("image format 3")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_round_trips() {
        let data = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&data)).unwrap(), data);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
