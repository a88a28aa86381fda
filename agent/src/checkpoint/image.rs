//! The image: `meta.json` (versioned, self-describing, checksummed),
//! `pages.img` (raw page data, one checksummed run per dumped VMA) and
//! `files.img` (buffered data of file objects, checksummed blobs).
//! `manifest.json`, written last, lists the other three with their sizes
//! and SHA-256 digests and is signed with the host key (`sign.rs`).
//! Reading authenticates and validates everything — the manifest's
//! signature, every file's digest, version, metadata checksum, page file
//! length and every run's checksum — before the caller creates anything.

use std::{io::Write, path::Path};

use serde::{Deserialize, Serialize};

use super::{
    CheckpointError,
    files::{FdEntry, FileObject},
    imagedir::{ImageDir, ImageReader},
    pages::{PageFile, PageWriter},
    sign::{self, Digest, ImageKey, Manifest, Whole},
    state::{ProcessState, ThreadState},
};

/// The only image format this build reads and writes.
pub const FORMAT: u32 = 2;
pub const META: &str = "meta.json";
pub const PAGES: &str = "pages.img";
pub const FILES: &str = "files.img";
/// Written last, signed: every other file's size and digest.
pub const MANIFEST: &str = "manifest.json";
/// The most restore reads of meta.json.
pub const MAX_META: u64 = 64 << 20;
/// The most restore reads of files.img.
pub const MAX_FILES: u64 = 1 << 30;
/// The most restore reads of manifest.json (pages.img up to about 1 TiB).
pub const MAX_MANIFEST: u64 = 16 << 20;

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

/// Creates pages.img in `dir`, for the dump to stream page runs into;
/// `progress` is called with the bytes written so far.
pub fn create_pages<'p>(
    dir: &ImageDir,
    progress: &'p mut dyn FnMut(u64),
) -> Result<PageWriter<'p>, CheckpointError> {
    let file = dir.create_file(PAGES)?;
    Ok(PageWriter::new(file, dir.path().join(PAGES), progress))
}

/// Writes files.img and meta.json into `dir`, after its pages.img is
/// complete (`pages`: its length and piece digests), then, last, the
/// manifest that `key` signs.
pub fn write(
    dir: &ImageDir,
    image: &Image,
    files: &[u8],
    pages: (u64, Vec<Digest>),
    key: &ImageKey,
) -> Result<(), CheckpointError> {
    let put = |name: &'static str, bytes: &[u8], max: u64| {
        let path = dir.path().join(name);
        if bytes.len() as u64 > max {
            return Err(CheckpointError::Write(format!(
                "{}: {} bytes, more than the {max} restore reads",
                path.display(),
                bytes.len()
            )));
        }
        let mut f = dir.create_file(name)?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| CheckpointError::Write(format!("{}: {e}", path.display())))
    };
    put(FILES, files, MAX_FILES)?;
    let body = serde_json::to_value(image).map_err(|e| CheckpointError::Write(e.to_string()))?;
    let meta = MetaFile {
        format: FORMAT,
        body_crc32: crc32fast::hash(&serde_json::to_vec(image).expect("image serialises")),
        body,
    };
    let text = serde_json::to_string_pretty(&meta).expect("meta serialises");
    put(META, text.as_bytes(), MAX_META)?;
    let manifest = Manifest {
        meta: Whole {
            size: text.len() as u64,
            sha256: Digest::of(text.as_bytes()),
        },
        files: Whole {
            size: files.len() as u64,
            sha256: Digest::of(files),
        },
        pages_size: pages.0,
        pages: pages.1,
    };
    put(MANIFEST, &manifest.encode(key), MAX_MANIFEST)?;
    dir.complete();
    Ok(())
}

/// An image read and checked whole: what restore may use.
#[derive(Debug)]
pub struct Verified {
    pub image: Image,
    pub pages: PageFile,
    /// files.img.
    pub files: Vec<u8>,
    /// Its manifest was signed by the key restore was given (false only
    /// with `--trust-image`).
    pub authenticated: bool,
}

/// A verified image passed to a container's monitor, which takes it once
/// (its pages.img is then closed once the tree is restored).
#[derive(Debug, Clone)]
pub struct Handoff(std::sync::Arc<std::sync::Mutex<Option<Verified>>>);

impl Handoff {
    pub fn new(verified: Verified) -> Self {
        Handoff(std::sync::Arc::new(std::sync::Mutex::new(Some(verified))))
    }

    /// The image, the first time.
    pub fn take(&self) -> Option<Verified> {
        self.0.lock().ok()?.take()
    }
}

/// Reads and checks the image in `dir` before anything is created: with
/// a key, the manifest's signature first, then every file against its
/// size and digest in the manifest, then (with or without a key) the
/// format, the checksums of the metadata, of every page run and of every
/// file blob, and the image's structure. Without a key (`--trust-image`)
/// an image with no manifest is read on its checksums alone.
pub fn open(dir: &Path, key: Option<&ImageKey>) -> Result<Verified, CheckpointError> {
    let reader = ImageReader::open(dir)?;
    let manifest_bytes = reader.read_file(MANIFEST, MAX_MANIFEST)?;
    let manifest = match (manifest_bytes, key) {
        (None, Some(_)) => {
            return Err(CheckpointError::Image(format!(
                "{}: unsigned (no {MANIFEST}): refused, as its contents cannot be authenticated (restore it unauthenticated with --trust-image only if you know where it comes from)",
                dir.display()
            )));
        }
        (None, None) => None,
        (Some(bytes), key) => {
            Some(
                Manifest::decode(&bytes, key).map_err(|source| CheckpointError::Manifest {
                    dir: dir.display().to_string(),
                    source,
                })?,
            )
        }
    };
    let whole = |name: &'static str, max: u64, want: Option<&Whole>| match want {
        None => reader.require(name, max),
        Some(want) => {
            let altered = || {
                CheckpointError::Image(format!(
                    "{}: does not match its size and digest in the manifest: the image was altered or damaged",
                    dir.join(name).display()
                ))
            };
            // The size first: a file of another size is not even read.
            let (file, len) = reader.require_file(name, max)?;
            if len != want.size {
                return Err(altered());
            }
            let data = reader.read_opened(name, file, len)?;
            if Digest::of(&data) != want.sha256 {
                return Err(altered());
            }
            Ok(data)
        }
    };
    let meta = whole(META, MAX_META, manifest.as_ref().map(|m| &m.meta))?;
    let image = parse_meta(&dir.join(META), &meta)?;
    let files = whole(FILES, MAX_FILES, manifest.as_ref().map(|m| &m.files))?;
    check_files(&dir.join(FILES), &image, &files)?;
    let pages = check_pages(&reader, &image, manifest.as_ref())?;
    Ok(Verified {
        image,
        pages,
        files,
        authenticated: key.is_some(),
    })
}

/// Checks files.img against the image's file objects (every blob inside
/// it, with its checksum; fds and objects consistent).
fn check_files(path: &Path, image: &Image, data: &[u8]) -> Result<(), CheckpointError> {
    let bad = |e: String| CheckpointError::Image(format!("{}: {e}", path.display()));
    super::files::validate(&image.files, &[], data).map_err(bad)?;
    for p in &image.processes {
        super::files::validate(&image.files, &p.fds, data)
            .map_err(|e| bad(format!("pid {}: {e}", p.pid)))?;
    }
    Ok(())
}

/// meta.json's bytes: its format and checksum, then the image.
fn parse_meta(meta_path: &Path, text: &[u8]) -> Result<Image, CheckpointError> {
    let bad = |msg: String| CheckpointError::Image(format!("{}: {msg}", meta_path.display()));
    let raw: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| bad(format!("not valid JSON (truncated?): {e}")))?;
    match raw.get("format").and_then(|f| f.as_u64()) {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => {
            return Err(bad(format!(
                "image format {f}, this palisade reads format {FORMAT}"
            )));
        }
        None => return Err(bad("no \"format\" field".into())),
    }
    let meta: MetaFile = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
    let image: Image = serde_json::from_value(meta.body).map_err(|e| bad(format!("body: {e}")))?;
    let crc = crc32fast::hash(&serde_json::to_vec(&image).expect("image serialises"));
    if crc != meta.body_crc32 {
        return Err(bad("metadata checksum mismatch: the file is corrupt".into()));
    }
    Ok(image)
}

/// Opens pages.img and checks it: its length against the metadata (and
/// the manifest), every run inside it and its mapping, the image's
/// structure, then in one pass every run's checksum and, with a
/// manifest, every piece's digest.
fn check_pages(
    reader: &ImageReader,
    image: &Image,
    manifest: Option<&Manifest>,
) -> Result<PageFile, CheckpointError> {
    let bad = |msg: String| CheckpointError::Image(msg);
    let meta_path = reader.path().join(META);
    let pages_path = reader.path().join(PAGES);
    let (file, len) = reader.require_file(PAGES, image.pages_len.saturating_add(1))?;
    if len != image.pages_len {
        return Err(bad(format!(
            "{}: {len} bytes, the metadata says {} (truncated or wrong file)",
            pages_path.display(),
            image.pages_len
        )));
    }
    if let Some(m) = manifest
        && m.pages_size != len
    {
        return Err(bad(format!(
            "{}: {len} bytes, the manifest says {}: the image was altered or damaged",
            pages_path.display(),
            m.pages_size
        )));
    }
    if image.container.is_some() && image.root != 1 {
        return Err(bad(format!(
            "{}: a container's tree has root pid {}, not 1",
            meta_path.display(),
            image.root
        )));
    }
    let pages = PageFile::new(file, len);
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
    let (crcs, digests) = pages
        .check(&offsets, manifest.is_some())
        .map_err(|e| bad(format!("{}: {e}", pages_path.display())))?;
    if let (Some(m), Some(digests)) = (manifest, digests)
        && let Some(k) = (0..digests.len()).find(|&k| digests[k] != m.pages[k])
    {
        return Err(bad(format!(
            "{}: bytes {} to {} do not match their digest in the manifest: the image was altered or damaged",
            pages_path.display(),
            k as u64 * sign::PIECE,
            ((k as u64 + 1) * sign::PIECE).min(len)
        )));
    }
    for ((where_, run), crc) in spans.iter().zip(crcs) {
        if crc != run.crc32 {
            return Err(bad(format!(
                "{}: pages of {where_} (offset {}): checksum mismatch: the file is corrupt",
                pages_path.display(),
                run.offset,
            )));
        }
    }
    Ok(pages)
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
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn pieces(data: &[u8]) -> (u64, Vec<Digest>) {
        let mut h = sign::PieceHasher::default();
        h.update(data);
        (data.len() as u64, h.finish())
    }

    #[test]
    fn image_round_trips_and_damage_is_named() {
        let pages = vec![0x5au8; 8192];
        let image = sample(&pages);
        let path = tempdir("rt");
        let key = ImageKey::from_bytes([3; 32], "/k".into());
        let dir = ImageDir::create(&path).unwrap();
        dir.create_file(PAGES).unwrap().write_all(&pages).unwrap();
        write(&dir, &image, &[], pieces(&pages), &key).unwrap();
        let v = open(&path, Some(&key)).unwrap();
        assert!(v.files.is_empty() && v.authenticated);
        assert_eq!(v.image, image);
        assert_eq!(v.pages.read(0, v.pages.len()).unwrap(), pages);
        // A second image is not written over the first.
        assert!(matches!(
            ImageDir::create(&path),
            Err(CheckpointError::BadDir { .. })
        ));

        let put = |name: &str, data: &[u8]| std::fs::write(path.join(name), data).unwrap();
        let err = |key: Option<&ImageKey>| open(&path, key).unwrap_err().to_string();
        let mut bad = pages.clone();
        bad[5000] ^= 1;
        put(PAGES, &bad);
        assert!(
            err(Some(&key)).contains("do not match their digest"),
            "{}",
            err(Some(&key))
        );
        assert!(err(None).contains("do not match their digest"));

        put(PAGES, &pages[..4096]);
        assert!(err(Some(&key)).contains("truncated"));

        put(PAGES, &pages);
        let meta = std::fs::read_to_string(path.join(META)).unwrap();
        put(META, meta.replace("4242", "4243").as_bytes());
        assert!(err(Some(&key)).contains("does not match its size and digest"));
        assert!(err(None).contains("does not match its size and digest"));
        put(
            META,
            meta.replace("\"format\": 2", "\"format\": 3").as_bytes(),
        );
        assert!(err(Some(&key)).contains("does not match its size and digest"));
        put(META, meta.as_bytes());
        assert!(open(&path, Some(&key)).is_ok());
        let other = ImageKey::from_bytes([4; 32], "/other".into());
        assert!(err(Some(&other)).contains("signed by another key"));
        std::fs::remove_file(path.join(MANIFEST)).unwrap();
        assert!(err(Some(&key)).contains("unsigned"));
        assert!(open(&path, None).is_ok());
        // Unsigned and unauthenticated, the checksums still hold.
        put(PAGES, &bad);
        let e = err(None);
        assert!(
            e.contains("checksum mismatch") && e.contains("10000-12000 run at 10000"),
            "{e}"
        );
        put(PAGES, &pages);
        put(META, meta.replace("4242", "4243").as_bytes());
        assert!(err(None).contains("metadata checksum mismatch"));
        put(
            META,
            meta.replace("\"format\": 2", "\"format\": 3").as_bytes(),
        );
        assert!(err(None).contains("image format 3"));
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn hex_round_trips() {
        let data = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&data)).unwrap(), data);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
