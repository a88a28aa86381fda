//! The address rules of each container in `CONNECT_RULES`: its connect,
//! bind and accept lists, one longest-prefix entry per address prefix,
//! written per rule generation, deleted and read back by key where the
//! policies they were written from are known, by a search of the whole
//! trie where they are not.
//!
//! The trie is shared by every container of the state root, so a search
//! costs time in the number of all their entries. By key, a command about
//! one container costs time in its own entries only. A trie lookup returns
//! the longest prefix at most as long as the key's, which is another entry
//! when the key's own is missing: each entry's value records its own
//! prefix length, so a read by key tells the two apart.

use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use palisade_common::{
    CONTAINERS_AT_BOUND, FAMILY_V4, FAMILY_V6, KEY_HEADER_BITS, LIST_OPEN, LIST_RULED,
    MAX_LIST_PREFIXES, MAX_PORT_RULES, MAX_PREFIXES, PrefixRules, RuleKey, TABLE_ACCEPT,
    TABLE_BIND, map,
};

use super::{EnforceError, InForceEntry, gen_bit, generation_of, gone, map_error};
use crate::{
    spec::{self, Family, Policy},
    sys::bpf::chain,
};

/// The three rule lists: their tables, in the order of
/// [`compile_lists`]'s result and of [`Lists`]'s fields.
const TABLES: [u32; 3] = [0, TABLE_BIND, TABLE_ACCEPT];

/// One container's entries of one generation, read back, per list.
#[derive(Debug, Default)]
pub(super) struct Lists {
    pub connect: Vec<InForceEntry>,
    pub bind: Vec<InForceEntry>,
    pub accept: Vec<InForceEntry>,
}

impl Lists {
    fn push(&mut self, family: u32, entry: InForceEntry) {
        if family & TABLE_BIND != 0 {
            self.bind.push(entry)
        } else if family & TABLE_ACCEPT != 0 {
            self.accept.push(entry)
        } else {
            self.connect.push(entry)
        }
    }

    fn sorted(mut self) -> Self {
        self.connect.sort();
        self.bind.sort();
        self.accept.sort();
        self
    }
}

/// `CONNECT_RULES`, opened from its pin.
pub(super) struct AddressRules {
    trie: LpmTrie<MapData, RuleKey, PrefixRules>,
}

impl AddressRules {
    pub fn new(trie: LpmTrie<MapData, RuleKey, PrefixRules>) -> Self {
        Self { trie }
    }

    /// Writes `compiled` (the lists of [`compile_lists`]) for `cgroup_id`
    /// as `generation`; returns each list's switch (open or ruled).
    pub fn write(
        &mut self,
        cgroup_id: u64,
        generation: u32,
        compiled: &[Option<spec::CompiledRules>],
    ) -> Result<[u32; 3], EnforceError> {
        let mut switches = [LIST_OPEN; 3];
        for ((switch, table), list) in switches.iter_mut().zip(TABLES).zip(compiled) {
            if let Some(list) = list {
                self.write_list(cgroup_id, gen_bit(generation) | table, list)?;
                *switch = LIST_RULED;
            }
        }
        Ok(switches)
    }

    /// Writes one compiled rule list into the trie (under `table`, its
    /// generation bit included).
    fn write_list(
        &mut self,
        cgroup_id: u64,
        table: u32,
        compiled: &spec::CompiledRules,
    ) -> Result<(), EnforceError> {
        for entry in &compiled.entries {
            let key = rule_key(cgroup_id, table, entry);
            debug_assert!(
                entry.rules.len() <= MAX_PORT_RULES,
                "compile bounds entries"
            );
            let mut value = PrefixRules {
                count: entry.rules.len() as u16,
                prefix_len: key.prefix_len() as u16,
                ..Default::default()
            };
            value.rules[..entry.rules.len()].copy_from_slice(&entry.rules);
            self.trie.insert(&key, value, 0).map_err(|e| {
                let mut reason = chain(&e);
                if reason.contains("No space left") {
                    reason.push_str(&format!(
                        " (the map holds {MAX_PREFIXES} entries for all containers of a state root: {CONTAINERS_AT_BOUND} containers with every rule list at the bound of {MAX_LIST_PREFIXES})"
                    ));
                }
                EnforceError::Map {
                    map: map::CONNECT_RULES,
                    cgroup_id,
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// Deletes the entries each of `policies` (each one's lists, as
    /// [`compile_lists`] makes them) makes for `cgroup_id` in the
    /// generations `which` picks (0, 1), by key: one already gone is fine.
    pub fn delete_keys(
        &mut self,
        cgroup_id: u64,
        policies: &[Vec<Option<spec::CompiledRules>>],
        which: impl Fn(u32) -> bool,
    ) -> Result<(), EnforceError> {
        for lists in policies {
            for (table, list) in TABLES.iter().zip(lists) {
                for entry in list.iter().flat_map(|l| &l.entries) {
                    for generation in [0, 1].into_iter().filter(|g| which(*g)) {
                        let key = rule_key(cgroup_id, gen_bit(generation) | table, entry);
                        gone(self.trie.remove(&key))
                            .map_err(map_error(map::CONNECT_RULES, cgroup_id))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes every entry of `cgroup_id` in the generations `which` picks,
    /// searching the whole trie.
    pub fn delete(
        &mut self,
        cgroup_id: u64,
        which: impl Fn(u32) -> bool,
    ) -> Result<(), EnforceError> {
        let ours: Vec<Key<RuleKey>> = self
            .trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| is_of(k, cgroup_id) && which(generation_of(k.data().family)))
            .collect();
        for key in ours {
            self.trie
                .remove(&key)
                .map_err(map_error(map::CONNECT_RULES, cgroup_id))?;
        }
        Ok(())
    }

    /// The entries of `cgroup_id`'s `generation` if they are the ones
    /// `expected` (the policy last written as that generation) makes,
    /// looked up by key. `None` if any is missing, or a list is ruled in
    /// `switches` (connect, bind, accept) that the policy leaves open or
    /// the other way round: then only [`read`](Self::read) tells. A
    /// generation holds nothing else: its entries are deleted, by the keys
    /// of every policy that may have written them, before it is written.
    pub fn read_expected(
        &self,
        cgroup_id: u64,
        generation: u32,
        switches: [u32; 3],
        expected: &Policy,
    ) -> Result<Option<Lists>, EnforceError> {
        let mut lists = Lists::default();
        let compiled = compile_lists(expected)?;
        for ((table, list), switch) in TABLES.iter().zip(&compiled).zip(switches) {
            if list.is_some() != (switch == LIST_RULED) {
                return Ok(None);
            }
            for entry in list.iter().flat_map(|l| &l.entries) {
                let key = rule_key(cgroup_id, gen_bit(generation) | table, entry);
                match self.trie.get(&key, 0) {
                    Ok(value) if u32::from(value.prefix_len) == key.prefix_len() => lists.push(
                        *table,
                        InForceEntry::from_kernel(key.prefix_len(), key.data(), &value),
                    ),
                    Ok(_) | Err(MapError::KeyNotFound) => return Ok(None),
                    Err(e) => return Err(map_error(map::CONNECT_RULES, cgroup_id)(e)),
                }
            }
        }
        Ok(Some(lists.sorted()))
    }

    /// Every entry of `cgroup_id`'s `generation`, searching the whole trie.
    pub fn read(&self, cgroup_id: u64, generation: u32) -> Result<Lists, EnforceError> {
        let mut lists = Lists::default();
        for item in self.trie.iter() {
            let (key, value) = item.map_err(map_error(map::CONNECT_RULES, cgroup_id))?;
            if !is_of(&key, cgroup_id) || generation_of(key.data().family) != generation {
                continue;
            }
            let data = key.data();
            lists.push(
                data.family,
                InForceEntry::from_kernel(key.prefix_len(), data, &value),
            );
        }
        Ok(lists.sorted())
    }
}

/// A policy's connect, bind and accept lists, compiled and checked against
/// their bound (`None`: the list is open), in the order of [`TABLES`].
pub(super) fn compile_lists(
    policy: &Policy,
) -> Result<Vec<Option<spec::CompiledRules>>, EnforceError> {
    let lists = [
        ("connect", policy.network.connect.as_deref()),
        ("bind", policy.network.bind.as_deref()),
        ("accept", policy.network.accept.as_deref()),
    ];
    let mut compiled = Vec::with_capacity(lists.len());
    for (name, rules) in lists {
        let Some(rules) = rules else {
            compiled.push(None);
            continue;
        };
        let list = spec::compile(rules).map_err(EnforceError::Compile)?;
        if list.entries.len() > MAX_LIST_PREFIXES as usize {
            return Err(EnforceError::Compile(format!(
                "the {name} rules name {} address prefixes, more than the {MAX_LIST_PREFIXES} one container may have in a rule list",
                list.entries.len()
            )));
        }
        compiled.push(Some(list));
    }
    Ok(compiled)
}

/// Whether a trie key is one of `cgroup_id`'s.
fn is_of(key: &Key<RuleKey>, cgroup_id: u64) -> bool {
    key.data().cgroup == RuleKey::new(cgroup_id, 0, [0; 4]).cgroup
}

/// The trie key of one compiled prefix of `cgroup_id`'s list `table`
/// (its table and generation bits).
fn rule_key(cgroup_id: u64, table: u32, entry: &spec::PrefixEntry) -> Key<RuleKey> {
    let family = match entry.family {
        Family::V4 => FAMILY_V4,
        Family::V6 => FAMILY_V6,
    };
    Key::new(
        KEY_HEADER_BITS + u32::from(entry.prefix),
        RuleKey::new(cgroup_id, family | table, entry.words()),
    )
}
