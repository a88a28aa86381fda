//! The maps every program shares. Names and layouts come from `palisade-common`.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie},
};
use palisade_common::{CgroupPolicy, MAX_CGROUPS, MAX_PREFIXES, PrefixRules, RuleKey};

#[map(name = "CGROUP_POLICY")]
pub static CGROUP_POLICY: HashMap<u64, CgroupPolicy> = HashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "CONNECT_RULES")]
pub static CONNECT_RULES: LpmTrie<RuleKey, PrefixRules> =
    LpmTrie::with_max_entries(MAX_PREFIXES, 0);
