//! The image: `meta.json` (versioned, self-describing, checksummed),
//! `pages.img` (raw page data, one checksummed run per dumped VMA) and
//! `files.img` (buffered data of file objects, checksummed blobs).
//! `manifest.json`, written last, lists the other three with their sizes
//! and BLAKE3 digests and is signed with the host key (`sign.rs`).
//! Reading authenticates and validates everything — the manifest's
//! signature, every file's digest, version, metadata checksum, page file
//! length and every run's checksum — before the caller creates anything.

mod io;

use serde::{Deserialize, Serialize};

pub use io::{
    Handoff, MAX_CHAIN, Verified, create_pages, open, open_parent, read_pre_dump, write,
    write_pre_dump,
};

use super::{
    files::{FdEntry, FileObject},
    state::{ProcessState, ThreadState},
};

/// The image format this build writes (4: an image may build on a chain
/// of pre-dumps, its runs naming the image their bytes are in). It also
/// reads format 3, which is format 4 without chains.
pub const FORMAT: u32 = 4;
/// The oldest format this build reads.
pub const OLDEST_FORMAT: u32 = 3;
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
    /// The pre-dump this image builds on (`checkpoint --parent`): runs
    /// with `from` k > 0 are in its k-th ancestor's pages.img.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
}

/// A pre-dump (`checkpoint --pre-dump`): the memory of a tree that ran
/// on, and for every page copied so far in its chain the image its latest
/// copy is in. Its meta.json has `"kind": "pre-dump"`; it cannot be
/// restored itself, only the checkpoint that ends its chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PreDump {
    /// 0 for the first pre-dump of a chain.
    pub generation: u32,
    pub parent: Option<ParentRef>,
    /// The dirty-tracking backend of the chain (`track::Backend`).
    pub backend: String,
    /// The tracking session the chain belongs to (random, hex).
    pub session: String,
    pub processes: Vec<TrackedProcess>,
    /// Total bytes in its pages.img.
    pub pages_len: u64,
}

/// One process of a pre-dump: its identity and its tracked mappings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackedProcess {
    pub pid: i32,
    /// Its start time (/proc/PID/stat field 22): a pid reused by another
    /// process is not taken for it.
    pub start_time: u64,
    pub vmas: Vec<TrackedVma>,
}

/// A mapping whose pages a pre-dump chain holds: it is the same mapping
/// at the next step only if all of these are unchanged and it stayed
/// registered for write-protection throughout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackedVma {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// Its copied pages, in address order; `from` names the image. Kept
    /// in files.img, [`INDEX_RUN`] bytes each (scattered writes make a
    /// run of every page: as JSON they would outgrow meta.json), from
    /// run number `runs_at` on.
    #[serde(skip)]
    pub runs: Vec<Run>,
    pub runs_at: u64,
    pub runs_count: u64,
}

/// Bytes of one run of a pre-dump's index in its files.img: address,
/// offset, length (u64 each) and the image it is in (u32), little-endian.
pub const INDEX_RUN: usize = 28;

impl PreDump {
    /// Numbers every mapping's runs and returns them as files.img.
    pub fn encode_index(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for v in self.processes.iter_mut().flat_map(|p| p.vmas.iter_mut()) {
            v.runs_at = at;
            v.runs_count = v.runs.len() as u64;
            at += v.runs_count;
            for r in &v.runs {
                out.extend_from_slice(&r.addr.to_le_bytes());
                out.extend_from_slice(&r.offset.to_le_bytes());
                out.extend_from_slice(&r.len.to_le_bytes());
                out.extend_from_slice(&r.from.to_le_bytes());
            }
        }
        out
    }

    /// Gives every mapping its runs from files.img `data`; a count or
    /// place that does not fit it is an error, naming the mapping.
    pub fn decode_index(&mut self, data: &[u8]) -> Result<(), String> {
        let word =
            |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        for v in self.processes.iter_mut().flat_map(|p| p.vmas.iter_mut()) {
            let bytes = v
                .runs_at
                .checked_mul(INDEX_RUN as u64)
                .zip(v.runs_count.checked_mul(INDEX_RUN as u64))
                .and_then(|(a, n)| Some(a as usize..a.checked_add(n)? as usize))
                .and_then(|range| data.get(range))
                .ok_or_else(|| {
                    format!(
                        "mapping {:#x}-{:#x}: runs {}+{} are beyond the index",
                        v.start, v.end, v.runs_at, v.runs_count
                    )
                })?;
            v.runs = bytes
                .chunks_exact(INDEX_RUN)
                .map(|b| Run {
                    addr: word(b, 0),
                    offset: word(b, 8),
                    len: word(b, 16),
                    crc32: 0,
                    from: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
                })
                .collect();
        }
        Ok(())
    }
}

/// Where an image's parent in a pre-dump chain is, and what it must be:
/// its manifest's BLAKE3 digest (hex), so a parent replaced or altered
/// after the child was written is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    pub dir: std::path::PathBuf,
    pub manifest_blake3: String,
    /// The parent's place in its chain (0 for the first pre-dump).
    pub generation: u32,
}

/// The container a tree was checkpointed from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerImage {
    pub name: String,
    pub recipe: crate::spec::Recipe,
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
    /// of pages.img (read through /proc/PID/mem where the process made
    /// them unreadable). Empty for kernel-provided VMAs.
    pub runs: Vec<Run>,
    /// VM_MAYWRITE of a shared mapping: its file was open for writing,
    /// so the program may make it writable later.
    #[serde(default)]
    pub may_write: bool,
    /// MAP_NORESERVE.
    #[serde(default)]
    pub noreserve: bool,
    /// madvise advice in force (MADV_DONTFORK, MADV_HUGEPAGE…), given
    /// again after it is mapped.
    #[serde(default)]
    pub advice: Vec<i32>,
    /// A file mapping's file as it was: size and modification time
    /// (seconds, nanoseconds). Restore refuses a file that changed.
    #[serde(default)]
    pub file: Option<(u64, i64, i64)>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// Address of the first byte in the process.
    pub addr: u64,
    /// Offset in pages.img.
    pub offset: u64,
    pub len: u64,
    /// CRC32 of the run's bytes; for a run in an ancestor (`from` > 0)
    /// 0, its bytes being covered by that image's own digests.
    pub crc32: u32,
    /// The image the bytes are in: 0 this one, k its k-th ancestor in a
    /// pre-dump chain.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub from: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pre_dump_index_round_trips_and_a_short_one_is_refused() {
        let run = |addr: u64, from: u32| Run {
            addr,
            offset: addr * 3,
            len: 4096,
            crc32: 0,
            from,
        };
        let vma = |start: u64, runs: Vec<Run>| TrackedVma {
            start,
            end: start + 0x10000,
            perms: "rw-p".into(),
            offset: 0,
            inode: 0,
            runs,
            runs_at: 0,
            runs_count: 0,
        };
        let mut pre = PreDump {
            generation: 1,
            parent: None,
            backend: "ebpf".into(),
            session: "s".into(),
            processes: vec![TrackedProcess {
                pid: 7,
                start_time: 9,
                vmas: vec![
                    vma(0x1000, vec![run(0x1000, 0), run(0x3000, 2)]),
                    vma(0x20000, vec![]),
                    vma(0x40000, vec![run(0x40000, 1)]),
                ],
            }],
            pages_len: 0,
        };
        let data = pre.encode_index();
        assert_eq!(data.len(), 3 * INDEX_RUN);
        let want = pre.clone();
        let mut back: PreDump =
            serde_json::from_value(serde_json::to_value(&pre).unwrap()).unwrap();
        assert!(
            back.processes[0].vmas[0].runs.is_empty(),
            "runs are not in the JSON"
        );
        back.decode_index(&data).unwrap();
        assert_eq!(back, want);
        let err = back.decode_index(&data[..2 * INDEX_RUN]).unwrap_err();
        assert!(err.contains("0x40000"), "{err}");
    }

    #[test]
    fn hex_round_trips() {
        let data = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&data)).unwrap(), data);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
