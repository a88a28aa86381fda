//! The ABI between palisade's kernel programs and its userspace.
//!
//! Everything here is `#[repr(C)]` plain data: map keys and values, the
//! encodings of rules and verdicts, and the names of maps and programs. Both
//! sides compile this one definition; nothing is ever re-declared elsewhere.
//! No logic lives here beyond constructors that both sides need.
#![no_std]

/// The classifier's object (`palisade-classify`).
pub mod classify;

/// Names of the programs in the eBPF object, as the loader looks them up.
pub mod program {
    pub const CONNECT4: &str = "connect4";
    pub const CONNECT6: &str = "connect6";
    pub const SENDMSG4: &str = "sendmsg4";
    pub const SENDMSG6: &str = "sendmsg6";
    pub const SOCK_CREATE: &str = "sock_create";
    pub const BIND4: &str = "bind4";
    pub const BIND6: &str = "bind6";
    pub const POST_BIND4: &str = "post_bind4";
    pub const POST_BIND6: &str = "post_bind6";
    pub const INGRESS: &str = "ingress";
    pub const EGRESS: &str = "egress";
    pub const DEVICE: &str = "device";
    /// Raw tracepoint `sched_process_exit`: the context switches of a
    /// container's thread as it exits.
    pub const TASK_EXIT: &str = "task_exit";
    /// Dirty-page tracker (its own object): raw tracepoint `page_fault_user`.
    pub const DIRTY_USER: &str = "dirty_user";
    /// Dirty-page tracker: raw tracepoint `page_fault_kernel` (the kernel
    /// writing user memory, as `read()` into a buffer does).
    pub const DIRTY_KERNEL: &str = "dirty_kernel";
    /// Dirty-page tracker: raw tracepoint `sys_enter`, for `mremap(2)`.
    pub const DIRTY_MREMAP: &str = "dirty_mremap";
    /// Dirty-page tracker: raw tracepoint `vm_unmapped_area`, the address
    /// the kernel picks for a mapping that moves (or a new one).
    pub const DIRTY_PLACED: &str = "dirty_placed";
}

/// Names of the maps in the eBPF object.
pub mod map {
    /// `HashMap<u64 cgroup id, CgroupPolicy>`.
    pub const CGROUP_POLICY: &str = "CGROUP_POLICY";
    /// `RingBuf` of [`crate::Event`]s: denials and audit hits.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuHashMap<u64 cgroup id, Counters>`.
    pub const COUNTERS: &str = "COUNTERS";
    /// `PerCpuHashMap<u64 cgroup id, RateWindow>`: the event rate limit.
    pub const RATE: &str = "RATE";
    /// `LpmTrie<RuleKey, PrefixRules>` for connect/sendmsg and bind rules
    /// (told apart by [`super::TABLE_BIND`] in the key's family word).
    pub const CONNECT_RULES: &str = "CONNECT_RULES";
    /// `HashMap<DeviceKey, u32 DEVICE_ACC_* bits>`: device access rules.
    pub const DEVICE_RULES: &str = "DEVICE_RULES";
    /// `HashMap<u64 cgroup id, u32 class>`: the traffic-control class a
    /// shaped container's outbound packets are put in (see [`super::shaping_class`]).
    pub const EGRESS_CLASS: &str = "EGRESS_CLASS";
    /// `PerCpuHashMap<u64 cgroup id, Usage>`: what each container consumed.
    pub const USAGE: &str = "USAGE";
    /// `LruHashMap<u32 thread id, ExitedThread>`: containers' threads that
    /// have exited (and are counted in [`crate::Usage::exited_switches`]),
    /// so that a reader summing the live threads' switches from /proc
    /// skips one still listed while it exits.
    pub const EXITED: &str = "EXITED";
    /// Dirty-page tracker: `HashMap<u32 tgid, u32 flags>`, the processes
    /// whose write faults are recorded (flags are 0; none is defined yet).
    pub const TRACKED: &str = "TRACKED";
    /// Dirty-page tracker: `RingBuf` of [`DirtyEvent`](super::DirtyEvent)s.
    pub const DIRTY: &str = "DIRTY";
    /// Dirty-page tracker: `HashMap<u32 tgid, u64>`, write faults of a
    /// tracked process that [`DIRTY`] could not take (full, or out of
    /// memory) since userspace last took the entry.
    pub const DIRTY_LOST: &str = "DIRTY_LOST";
}

/// The major number (handle) of the HTB qdisc palisade installs on the
/// devices a shaped container's traffic leaves by.
pub const SHAPER_HANDLE: u16 = 0x1a5e;

/// The `skb->priority` that puts a packet straight into HTB class
/// `SHAPER_HANDLE:minor` (HTB looks the priority up as a class id before
/// any filter).
pub const fn shaping_class(minor: u16) -> u32 {
    ((SHAPER_HANDLE as u32) << 16) | minor as u32
}

/// Capacity of [`map::CGROUP_POLICY`]: containers policed at once.
pub const MAX_CGROUPS: u32 = 4096;
/// Capacity of [`map::EXITED`]: exited threads remembered at once (the
/// least recently used is forgotten; a thread needs its entry only from
/// its exit until it leaves its cgroup's thread list, microseconds later).
pub const MAX_EXITED: u32 = 16384;
/// Address prefixes one container may have in one rule list (connect, bind
/// or accept): the entries the list takes in [`map::CONNECT_RULES`], one
/// per distinct address prefix its rules name (`any` names two, the IPv4
/// and the IPv6 zero-length prefix).
pub const MAX_LIST_PREFIXES: u32 = 16384;
/// Containers that fit in [`map::CONNECT_RULES`] with all three rule lists
/// at [`MAX_LIST_PREFIXES`], each with a second generation written (as
/// `policy apply` writes the new rules before deleting the old).
pub const CONTAINERS_AT_BOUND: u32 = 16;
/// Capacity of [`map::CONNECT_RULES`]: distinct (container, list,
/// generation, prefix) entries. The trie is not preallocated: entries
/// cost kernel memory only when written.
pub const MAX_PREFIXES: u32 = CONTAINERS_AT_BOUND * 3 * 2 * MAX_LIST_PREFIXES;
/// Port rules that one prefix entry can hold, its inherited rules included.
pub const MAX_PORT_RULES: usize = 32;
/// Capacity of [`map::DEVICE_RULES`]: (container, generation, device
/// pattern) entries, for all containers together.
pub const MAX_DEVICE_ENTRIES: u32 = 32768;
/// Distinct device patterns one container's policy may hold.
pub const MAX_DEVICE_RULES: usize = 256;

/// Capacity of [`map::TRACKED`]: processes tracked at once.
pub const MAX_TRACKED: u32 = 1024;
/// Capacity of [`map::DIRTY_LOST`]: twice [`MAX_TRACKED`], so that the
/// entries a program makes for a process being untracked at that instant
/// (left until the next `track`) never leave a tracked one without room.
pub const MAX_LOST_ENTRIES: u32 = 2 * MAX_TRACKED;
/// Largest size of [`map::DIRTY`], the ring of events not yet drained,
/// in bytes: 2^21 events of [`DIRTY_EVENT_BYTES`], enough for 16 GiB of
/// memory with half of its pages written between two drains. The ring is
/// allocated whole when the tracker loads, so the loader sizes it for the
/// memory it tracks.
pub const MAX_DIRTY_RING: u32 = 64 << 20;
/// Smallest size of [`map::DIRTY`]: 8192 events.
pub const MIN_DIRTY_RING: u32 = 256 << 10;
/// Bytes one [`DirtyEvent`] takes in the ring: the event and the ring's
/// 8-byte record header.
pub const DIRTY_EVENT_BYTES: u32 = 32;
/// The page size the tracker records addresses at (x86-64).
pub const DIRTY_PAGE_SIZE: u64 = 4096;
/// Bit of the x86 page fault error code set for a write access.
pub const FAULT_WRITE: u64 = 0x2;
/// Arguments of the x86 raw tracepoints `page_fault_user` and
/// `page_fault_kernel`, as `TP_PROTO` declares them
/// (arch/x86/include/asm/trace/exceptions.h: `unsigned long address,
/// struct pt_regs *regs, unsigned long error_code`).
pub const PAGE_FAULT_ARG_ADDRESS: usize = 0;
pub const PAGE_FAULT_ARG_ERROR_CODE: usize = 2;

/// [`DirtyEvent::kind`]: a write fault on the page at `start`.
pub const DIRTY_WRITE: u32 = 0;
/// [`DirtyEvent::kind`]: the mappings of [`start`, `start + len`) may have
/// been moved (`mremap(2)`, its source and its destination), so whatever
/// is mapped there now is not what was.
pub const DIRTY_MOVED: u32 = 1;

/// What the dirty-page tracker records for a tracked process, in order,
/// in [`map::DIRTY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DirtyEvent {
    pub tgid: u32,
    /// [`DIRTY_WRITE`] or [`DIRTY_MOVED`].
    pub kind: u32,
    /// A page-aligned address.
    pub start: u64,
    /// Bytes from `start` ([`DIRTY_MOVED`]); 0 for a write.
    pub len: u64,
}

/// `__NR_mremap` on x86-64.
pub const NR_MREMAP: u64 = 25;
/// `MREMAP_FIXED`: the new address is the fifth argument.
pub const MREMAP_FIXED: u64 = 2;
/// Offsets in x86-64 `struct pt_regs` (the uapi layout) of the registers
/// that carry a system call's arguments 1, 2, 3, 4 and 5.
pub const PT_REGS_ARG_OFFSETS: [usize; 5] = [14 * 8, 13 * 8, 12 * 8, 7 * 8, 9 * 8];

/// Bits of a [`RuleKey`] before the address: the cgroup id and the family.
pub const KEY_HEADER_BITS: u32 = 96;

/// Address families as they are stored in [`RuleKey::family`].
pub const FAMILY_V4: u32 = 4;
pub const FAMILY_V6: u32 = 6;
/// ORed into [`RuleKey::family`] for the bind rules; connect rules have 0.
pub const TABLE_BIND: u32 = 0x100;
/// ORed into [`RuleKey::family`] for the accept rules.
pub const TABLE_ACCEPT: u32 = 0x400;
/// ORed into [`RuleKey::family`] for rules of generation 1 (see
/// [`CgroupPolicy::generation`]); generation 0 has none.
pub const GENERATION_BIT: u32 = 0x200;

/// IP protocol numbers a rule can name; [`PROTO_ANY`] matches every protocol.
pub const PROTO_ANY: u8 = 0;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Verdicts as stored in [`PortRule::verdict`].
pub const VERDICT_DENY: u8 = 0;
pub const VERDICT_ALLOW: u8 = 1;

/// [`CgroupPolicy::connect`] or [`CgroupPolicy::bind`]: no rules, all allowed.
pub const LIST_OPEN: u32 = 0;
/// [`CgroupPolicy::connect`] or [`CgroupPolicy::bind`]: decided by the rules
/// in [`map::CONNECT_RULES`].
pub const LIST_RULED: u32 = 1;

/// [`CgroupPolicy::sockets`]: raw sockets (`SOCK_RAW`, any family) are refused.
pub const DENY_RAW: u32 = 1;
/// [`CgroupPolicy::sockets`]: packet sockets (`AF_PACKET`) are refused.
pub const DENY_PACKET: u32 = 2;

/// Device types as in [`DeviceKey::kind`] and as the kernel passes them to
/// a cgroup device program (`BPF_DEVCG_DEV_*`).
pub const DEVICE_BLOCK: u32 = 1;
pub const DEVICE_CHAR: u32 = 2;
/// [`DeviceKey::kind`] of a rule for both types (`a` in the policy).
pub const DEVICE_ALL: u32 = 3;
/// [`DeviceKey::major`] or [`DeviceKey::minor`] of a rule for every number
/// (`*` in the policy). No real device has it: majors have 12 bits,
/// minors 20.
pub const DEVICE_ANY: u32 = u32::MAX;

/// Device access bits, as the kernel passes them (`BPF_DEVCG_ACC_*`) and
/// as the values of [`map::DEVICE_RULES`] grant them.
pub const DEVICE_ACC_MKNOD: u32 = 1;
pub const DEVICE_ACC_READ: u32 = 2;
pub const DEVICE_ACC_WRITE: u32 = 4;

/// [`CgroupPolicy::mode`]: refusals are enforced.
pub const MODE_ENFORCE: u32 = 0;
/// [`CgroupPolicy::mode`]: refusals are only reported; everything passes.
pub const MODE_AUDIT: u32 = 1;

/// Hooks as [`Event::hook`] and [`Counters::denied`] number them.
pub const HOOK_CONNECT: u32 = 0;
pub const HOOK_SENDMSG: u32 = 1;
pub const HOOK_BIND: u32 = 2;
pub const HOOK_ACCEPT: u32 = 3;
pub const HOOK_SOCK_CREATE: u32 = 4;
/// Device access (open, mknod). Its [`Event`] says what was refused in
/// the network fields: `proto` is the device type ([`DEVICE_BLOCK`] or
/// [`DEVICE_CHAR`]), `addr[0]` the major, `addr[1]` the minor, `port` the
/// requested access ([`DEVICE_ACC_MKNOD`] | [`DEVICE_ACC_READ`] |
/// [`DEVICE_ACC_WRITE`]); `family` is 0.
pub const HOOK_DEVICE: u32 = 5;
/// Number of hook slots in [`Counters::denied`].
pub const HOOKS: usize = 8;

/// [`Event::verdict`]: the call was refused.
pub const EVENT_DENIED: u8 = 0;
/// [`Event::verdict`]: the call would have been refused (audit mode).
pub const EVENT_AUDITED: u8 = 1;

/// Events a container may emit per second (per CPU) before they are
/// dropped (and counted in [`Counters::events_dropped`]).
pub const EVENTS_PER_SECOND: u64 = 1000;

/// One denial or audit hit, as the kernel reports it. Userspace decodes the
/// ring buffer's bytes through the `Pod` derive, which refuses any padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// The container's cgroup id (the caller's own, or the packet's socket's).
    pub cgroup: u64,
    /// The calling process (host pid); 0 for packets.
    pub pid: u32,
    /// `HOOK_*`.
    pub hook: u32,
    /// IP protocol (0 when not known).
    pub proto: u8,
    /// [`EVENT_DENIED`] or [`EVENT_AUDITED`].
    pub verdict: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`] (0 for socket creation).
    pub family: u8,
    pub _pad: u8,
    /// Host byte order (for [`HOOK_DEVICE`]: the access bits).
    pub port: u16,
    pub _pad2: u16,
    /// As in [`RuleKey::addr`]: the peer (connect, sendmsg, accept) or the
    /// local address (bind); for [`HOOK_DEVICE`], major and minor.
    pub addr: [u32; 4],
    /// The calling process's name; empty for packets.
    pub comm: [u8; 16],
}

/// Per-container counters, per CPU (summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Refusals (enforce mode) by `HOOK_*`.
    pub denied: [u64; HOOKS],
    /// Would-be refusals in audit mode.
    pub audited: u64,
    /// Events the rate limit or a full ring buffer dropped.
    pub events_dropped: u64,
}

/// The event rate limit's current one-second window, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    pub start_ns: u64,
    pub count: u64,
}

/// Index of IPv4 in the per-family arrays of [`Usage`].
pub const USAGE_V4: usize = 0;
/// Index of IPv6 in the per-family arrays of [`Usage`].
pub const USAGE_V6: usize = 1;

/// What one container consumed, per CPU (summed by userspace), keyed by
/// the cgroup v2 id of the task or socket that did it: a nested
/// container's usage is its own, never its parent's. Only cgroups that
/// are palisade containers of this object (an entry in
/// [`map::CGROUP_POLICY`] for themselves or an ancestor) get an entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Context switches (voluntary and involuntary, as the kernel counts
    /// them per task: `nvcsw` + `nivcsw`) of the container's threads that
    /// have exited, each as of its exit (`sched_process_exit`). Those of
    /// live threads are read from /proc; CPU time and page faults come
    /// from the cgroup's controllers, not from here.
    pub exited_switches: u64,
    /// Threads of the container that have exited (on this CPU): the
    /// sequence [`ExitedThread::seq`] is numbered in.
    pub exited_threads: u64,
    /// IP-layer bytes the container's sockets sent, by [`USAGE_V4`] and
    /// [`USAGE_V6`]: each packet's IP length, and for a GSO packet (which
    /// holds its headers once) the IP and TCP or UDP headers of each
    /// further segment, as the segments go on the wire.
    pub tx_bytes: [u64; 2],
    /// Packets sent: a GSO packet counts its segments.
    pub tx_packets: [u64; 2],
    /// As `tx_bytes`, received (packets the ingress program let through).
    pub rx_bytes: [u64; 2],
    pub rx_packets: [u64; 2],
    /// `connect()` calls the policy allowed (an audit hit included).
    pub connects_allowed: u64,
    /// `bind()` calls that bound a port the policy allowed, counted once
    /// the port is known (`post_bind`), so a bind to port 0 counts too.
    pub binds_allowed: u64,
}

/// What [`map::EXITED`] keeps of an exited thread.
///
/// A reader walks a container's threads, then takes its per-CPU `USAGE`
/// records, then looks each thread up here again: a thread found here is
/// in those records exactly when its `seq` is at most the
/// [`Usage::exited_threads`] of CPU `cpu` it read (the program writes this
/// entry before it counts the exit, with preemption off); if not, its
/// `switches` are added. So a read is exact without retrying, however
/// fast threads come and go.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitedThread {
    /// `task_struct.start_boottime` in nanoseconds: /proc/TID/stat's
    /// `starttime` (field 22) is this in clock ticks, so a later thread
    /// given the same id is not taken for this one.
    pub start_boottime_ns: u64,
    /// Its context switches at exit (`nvcsw` + `nivcsw`).
    pub switches: u64,
    /// The CPU's [`Usage::exited_threads`] once this exit is counted.
    pub seq: u64,
    /// The CPU whose record counts it.
    pub cpu: u32,
    pub _pad: u32,
}

/// Names of the object's read-only globals that userspace sets at load
/// time: offsets into `struct task_struct`, which the exit program reads
/// (the kernel's BTF gives them; no CO-RE relocation is needed).
pub mod task_offset {
    /// Offset of `nvcsw` (unsigned long): voluntary switches.
    pub const NVCSW: &str = "TASK_NVCSW";
    /// Offset of `nivcsw` (unsigned long): involuntary switches.
    pub const NIVCSW: &str = "TASK_NIVCSW";
    /// Offset of `start_boottime` (u64, ns).
    pub const START_BOOTTIME: &str = "TASK_START_BOOTTIME";
}

/// Per-container switches, keyed by the container's cgroup v2 id.
///
/// A cgroup whose programs are attached but which has no entry here is
/// denied everything: the programs fail closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupPolicy {
    /// [`LIST_OPEN`] or [`LIST_RULED`].
    pub connect: u32,
    /// Socket kinds refused at creation: [`DENY_RAW`] | [`DENY_PACKET`].
    pub sockets: u32,
    /// [`LIST_OPEN`] or [`LIST_RULED`].
    pub bind: u32,
    /// [`LIST_OPEN`] or [`LIST_RULED`].
    pub accept: u32,
    /// [`MODE_ENFORCE`] or [`MODE_AUDIT`].
    pub mode: u32,
    /// Which of two rule generations in [`map::CONNECT_RULES`] is in force
    /// (0 or 1). A policy update writes the other generation, then flips
    /// this with one map update: no lookup ever sees a half-written set.
    /// The same generation applies to [`map::DEVICE_RULES`].
    pub generation: u32,
    /// [`LIST_OPEN`] (devices unrestricted) or [`LIST_RULED`] (only what
    /// [`map::DEVICE_RULES`] grants). Device rules are always enforced,
    /// whatever [`CgroupPolicy::mode`] says.
    pub devices: u32,
}

/// The data part of a longest-prefix-match key.
///
/// Bits are compared in memory order: the cgroup id and family are always
/// matched whole (the prefix length of every entry is at least
/// [`KEY_HEADER_BITS`]), then the address in network byte order. IPv4
/// addresses sit in `addr[0]`; v4-mapped IPv6 addresses are looked up as IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleKey {
    /// The cgroup id split in two words so the struct has no padding.
    pub cgroup: [u32; 2],
    pub family: u32,
    pub addr: [u32; 4],
}

impl RuleKey {
    pub const fn new(cgroup_id: u64, family: u32, addr: [u32; 4]) -> Self {
        Self {
            cgroup: [cgroup_id as u32, (cgroup_id >> 32) as u32],
            family,
            addr,
        }
    }
}

/// A device rule's key: which container, generation and device pattern.
/// The value is the access it grants ([`DEVICE_ACC_MKNOD`] |
/// [`DEVICE_ACC_READ`] | [`DEVICE_ACC_WRITE`]); a request is allowed when
/// the patterns matching it grant every bit it asks for between them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceKey {
    /// The cgroup id split in two words so the struct has no padding.
    pub cgroup: [u32; 2],
    /// [`DEVICE_BLOCK`], [`DEVICE_CHAR`] or [`DEVICE_ALL`], ORed with
    /// [`GENERATION_BIT`] for generation 1.
    pub kind: u32,
    /// A number, or [`DEVICE_ANY`].
    pub major: u32,
    /// A number, or [`DEVICE_ANY`] (always, when `major` is).
    pub minor: u32,
}

impl DeviceKey {
    pub const fn new(cgroup_id: u64, kind: u32, major: u32, minor: u32) -> Self {
        Self {
            cgroup: [cgroup_id as u32, (cgroup_id >> 32) as u32],
            kind,
            major,
            minor,
        }
    }
}

/// One port/protocol rule under a prefix. Ports are host byte order, inclusive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRule {
    pub port_lo: u16,
    pub port_hi: u16,
    pub proto: u8,
    pub verdict: u8,
    pub _pad: [u8; 2],
}

/// The rules that decide a connect whose longest matching prefix is this
/// entry's, in priority order: the first rule matching the port and
/// protocol decides. Rules inherited from covering prefixes follow the
/// prefix's own, so one lookup always suffices.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixRules {
    /// Rules in use at the front of `rules`.
    pub count: u16,
    /// The prefix length of this entry's own key (header bits included):
    /// a lookup by a key that is not in the trie returns a shorter
    /// prefix's entry, and this tells the two apart.
    pub prefix_len: u16,
    pub rules: [PortRule; MAX_PORT_RULES],
}

impl Default for PrefixRules {
    fn default() -> Self {
        Self {
            count: 0,
            prefix_len: 0,
            rules: [PortRule::default(); MAX_PORT_RULES],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy, built only of integers and
    // arrays of integers, and has no padding (checked by the size asserts
    // below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::CgroupPolicy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PrefixRules {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RateWindow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DeviceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Usage {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExitedThread {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DirtyEvent {}
}

const _: () = assert!(core::mem::size_of::<CgroupPolicy>() == 28);
const _: () = assert!(core::mem::size_of::<Event>() == 64);
const _: () = assert!(core::mem::size_of::<Counters>() == 8 * (HOOKS + 2));
const _: () = assert!(core::mem::size_of::<RuleKey>() == 28);
const _: () = assert!(core::mem::size_of::<Usage>() == 8 * 12);
const _: () = assert!(core::mem::size_of::<ExitedThread>() == 32);
const _: () = assert!(core::mem::size_of::<DirtyEvent>() + 8 == DIRTY_EVENT_BYTES as usize);
const _: () = assert!(core::mem::size_of::<DeviceKey>() == 20);
const _: () = assert!(core::mem::size_of::<PortRule>() == 8);
const _: () = assert!(core::mem::size_of::<PrefixRules>() == 4 + 8 * MAX_PORT_RULES);
