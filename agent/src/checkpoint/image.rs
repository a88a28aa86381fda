//! The image: `meta.json` (versioned, self-describing, checksummed) and
//! `pages.img` (raw page data, one checksummed run per dumped VMA).
//! Reading validates everything — version, metadata checksum, page file
//! length and every run's checksum — before the caller creates anything.

use std::{fs, io::Write, path::Path};

use serde::{Deserialize, Serialize};

use super::{
    CheckpointError,
    pages::{PageFile, PageWriter},
};

/// The only image format this build reads and writes.
pub const FORMAT: u32 = 1;
pub const META: &str = "meta.json";
pub const PAGES: &str = "pages.img";

/// The file as written: format, checksum of `body`, body.
#[derive(Debug, Serialize, Deserialize)]
struct MetaFile {
    format: u32,
    /// CRC32 of the body serialised compactly (as `serde_json::to_vec`).
    body_crc32: u32,
    body: serde_json::Value,
}

/// Everything about one process except its page contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    pub pid: i32,
    /// The process was its own session leader (setsid).
    pub session_leader: bool,
    pub comm: String,
    pub exe: String,
    pub cwd: String,
    pub regs: Registers,
    /// The XSAVE area (NT_X86_XSTATE), hex.
    pub xstate: String,
    pub sigmask: u64,
    /// Signal dispositions other than the default, read by remote
    /// rt_sigaction in the stopped process.
    pub sigactions: Vec<SigAction>,
    pub rseq: Option<Rseq>,
    pub mm: MmLayout,
    /// /proc/PID/auxv as native words.
    pub auxv: Vec<u64>,
    pub vmas: Vec<Vma>,
    pub fds: Vec<Fd>,
    /// Total bytes in pages.img.
    pub pages_len: u64,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fd {
    pub fd: i32,
    pub path: String,
    /// open(2) flags from /proc/PID/fdinfo (O_APPEND, O_CLOEXEC…).
    pub flags: i32,
    pub pos: u64,
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

/// Writes the metadata into `dir`, after its pages.img is complete.
pub fn write(dir: &Path, image: &Image) -> Result<(), CheckpointError> {
    let io = |what: &str, e: std::io::Error| CheckpointError::Image(format!("{what}: {e}"));
    let body = serde_json::to_value(image).map_err(|e| CheckpointError::Image(e.to_string()))?;
    let meta = MetaFile {
        format: FORMAT,
        body_crc32: crc32fast::hash(&serde_json::to_vec(image).expect("image serialises")),
        body,
    };
    let meta_path = dir.join(META);
    let text = serde_json::to_string_pretty(&meta).expect("meta serialises");
    let mut f =
        fs::File::create(&meta_path).map_err(|e| io(&meta_path.display().to_string(), e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io(&meta_path.display().to_string(), e))?;
    Ok(())
}

/// Reads and validates the image in `dir`: returns the metadata and the
/// open page file, or an error naming what is wrong.
pub fn read(dir: &Path) -> Result<(Image, PageFile), CheckpointError> {
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
    let mut spans = Vec::new();
    for vma in &image.vmas {
        for run in &vma.runs {
            let where_ = format!("vma {:x}-{:x} run at {:x}", vma.start, vma.end, run.addr);
            run.offset
                .checked_add(run.len)
                .filter(|end| *end <= image.pages_len)
                .ok_or_else(|| bad(format!("{where_}: outside {PAGES}")))?;
            if run.addr < vma.start || run.addr.saturating_add(run.len) > vma.end {
                return Err(bad(format!("{where_}: outside its vma")));
            }
            spans.push((where_, run));
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
    if unhex(&image.xstate).is_none() {
        return Err(bad(format!("{}: xstate is not hex", meta_path.display())));
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
            pid: 4242,
            session_leader: true,
            comm: "x".into(),
            exe: "/bin/x".into(),
            cwd: "/".into(),
            regs: zero,
            xstate: hex(&[1, 2, 3]),
            sigmask: 0,
            sigactions: vec![],
            rseq: None,
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
                runs: vec![Run {
                    addr: 0x10000,
                    offset: 0,
                    len: pages.len() as u64,
                    crc32: crc32fast::hash(pages),
                }],
            }],
            fds: vec![],
            pages_len: pages.len() as u64,
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
        write(&dir, &image).unwrap();
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
            meta.replace("\"format\": 1", "\"format\": 2"),
        )
        .unwrap();
        assert!(
            read(&dir)
                .unwrap_err()
                .to_string()
                .contains("image format 2")
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
