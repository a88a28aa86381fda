//! The classifier's ABI: the `palisade-classify` object (ebpf/src/classify.rs)
//! and the agent's rule-based classification (agent/src/daemon/classify.rs).
//!
//! Rules are numbered 0..[`MAX_RULES`]; every map value is a bit set of
//! rules. For an exec, the program computes the rules that may match:
//! `(UIDS[uid] | any_uid) & (GIDS[gid] | any_gid) & (PREFIXES[filename] |
//! any_exe)`, and sends an event only when that set is not empty. Userspace
//! then checks each candidate rule whole (the exe glob past its literal
//! prefix), so the kernel filter may pass too much, never too little.

/// The program, on the tracepoint `sched/sched_process_exec`.
pub const PROGRAM: &str = "classify_exec";

/// Names of the object's maps.
pub mod map {
    /// `RingBuf` of [`ExecEvent`](super::ExecEvent)s.
    pub const EXECS: &str = "CLASSIFY_EXECS";
    /// `HashMap<u32 uid, u64 rules>`: the rules naming that uid.
    pub const UIDS: &str = "CLASSIFY_UIDS";
    /// `HashMap<u32 gid, u64 rules>`: the rules naming that gid.
    pub const GIDS: &str = "CLASSIFY_GIDS";
    /// `LpmTrie<[u8; PREFIX_BYTES], u64 rules>`: an exe glob's literal
    /// prefix (the bytes before its first wildcard) to the rules whose
    /// prefix it is or starts with (the trie answers the longest match
    /// only, so each entry carries its shorter ones' rules too).
    pub const PREFIXES: &str = "CLASSIFY_PREFIXES";
    /// `Array<ClassifyConfig>` of one entry.
    pub const CONFIG: &str = "CLASSIFY_CONFIG";
}

/// Rules the kernel filter tells apart: one bit of a `u64` each.
pub const MAX_RULES: usize = 64;
/// Capacity of [`map::UIDS`] and [`map::GIDS`]: a rule names one of each.
pub const MAX_IDS: u32 = MAX_RULES as u32;
/// Capacity of [`map::PREFIXES`]: each rule's prefix, and `/dev/fd/`.
pub const MAX_PREFIXES: u32 = MAX_RULES as u32 + 1;
/// Bytes of an exe prefix the kernel compares (a longer one is cut: the
/// filter passes more, userspace still checks the whole glob). One byte
/// less than the key, which always ends with the NUL of a cut filename.
pub const PREFIX_BYTES: usize = 128;
/// Bytes of the exec'ed filename an event carries, its NUL included; a
/// longer one is cut, and userspace reads `/proc/PID/exe` instead.
pub const FILENAME_BYTES: usize = 256;
/// Size of [`map::EXECS`]: some 900 events not yet read.
pub const EXEC_RING_BYTES: u32 = 256 << 10;
/// The signal that holds an exec'ed process until it is classified.
pub const SIGSTOP: u32 = 19;
/// Offset of the `__data_loc char[] filename` field in the
/// `sched_process_exec` record
/// (/sys/kernel/tracing/events/sched/sched_process_exec/format): its low
/// 16 bits are the string's offset in the record, its high 16 its length.
pub const EXEC_FILENAME_LOC: usize = 8;

/// What the program reads to filter (every field a rule bit set, unless
/// said otherwise).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClassifyConfig {
    /// Rules with no uid criterion.
    pub any_uid: u64,
    /// Rules with no gid criterion.
    pub any_gid: u64,
    /// Rules with no exe criterion.
    pub any_exe: u64,
    /// Rules with an exe criterion: a filename the trie cannot judge (not
    /// absolute) may match any of them.
    pub exe_rules: u64,
    /// Rules that hold (SIGSTOP) a process they may match until the agent
    /// has classified it.
    pub hold: u64,
    /// The cgroup v2 id of palisade's parent directory, whose processes
    /// are in containers already and are never classified; 0 for none.
    pub skip_cgroup: u64,
    /// The level of `skip_cgroup` under the v2 root (1 for `/palisade`).
    pub skip_level: u32,
    pub _pad: u32,
}

/// One exec that some rule may match, in [`map::EXECS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ExecEvent {
    /// `bpf_ktime_get_ns()` at the exec: CLOCK_MONOTONIC.
    pub ktime_ns: u64,
    /// The rules that may match.
    pub rules: u64,
    pub pid: u32,
    pub tgid: u32,
    /// Real uid and gid after the exec.
    pub uid: u32,
    pub gid: u32,
    /// 1 if the program stopped the process (SIGSTOP): userspace must
    /// continue it, whatever it decides.
    pub held: u32,
    /// Bytes of `filename` before its NUL (`FILENAME_BYTES - 1` if it
    /// may have been cut); negative if it could not be read.
    pub filename_len: i32,
    pub filename: [u8; FILENAME_BYTES],
}

const _: () = assert!(core::mem::size_of::<ClassifyConfig>() == 56);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 40 + FILENAME_BYTES);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, no padding (the size
    // asserts above): every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ClassifyConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecEvent {}
}
