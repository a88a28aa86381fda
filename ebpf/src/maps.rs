//! The maps every program shares. Names and layouts come from `palisade-common`.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuHashMap, RingBuf},
};
use palisade_common::{
    CgroupPolicy, Counters, DeviceKey, ExitedThread, MAX_CGROUPS, MAX_DEVICE_ENTRIES, MAX_EXITED,
    MAX_PREFIXES, PrefixRules, RateWindow, RuleKey, Usage,
};

#[map(name = "CGROUP_POLICY")]
pub static CGROUP_POLICY: HashMap<u64, CgroupPolicy> = HashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "CONNECT_RULES")]
pub static CONNECT_RULES: LpmTrie<RuleKey, PrefixRules> =
    LpmTrie::with_max_entries(MAX_PREFIXES, 0);

#[map(name = "DEVICE_RULES")]
pub static DEVICE_RULES: HashMap<DeviceKey, u32> = HashMap::with_max_entries(MAX_DEVICE_ENTRIES, 0);

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuHashMap<u64, Counters> = PerCpuHashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "RATE")]
pub static RATE: PerCpuHashMap<u64, RateWindow> = PerCpuHashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "EGRESS_CLASS")]
pub static EGRESS_CLASS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "USAGE")]
pub static USAGE: PerCpuHashMap<u64, Usage> = PerCpuHashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "EXITED")]
pub static EXITED: LruHashMap<u32, ExitedThread> = LruHashMap::with_max_entries(MAX_EXITED, 0);
