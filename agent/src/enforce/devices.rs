//! The device rules of each container in `DEVICE_RULES`: written per rule
//! generation like the address rules, deleted with them, and read back
//! for `policy show`.

use aya::maps::{HashMap, MapData, MapError};
use palisade_common::{DeviceKey, GENERATION_BIT, map};

use super::{EnforceError, gen_bit, generation_of, gone, map_error};
use crate::spec::{DeviceRule, compile_devices};

/// `DEVICE_RULES`, opened from its pin.
pub(super) struct DeviceRules {
    map: HashMap<MapData, DeviceKey, u32>,
}

impl DeviceRules {
    pub fn new(map: HashMap<MapData, DeviceKey, u32>) -> Self {
        Self { map }
    }

    /// Writes `rules` for `cgroup_id` as `generation` (0 or 1).
    pub fn write(
        &mut self,
        cgroup_id: u64,
        generation: u32,
        rules: &[DeviceRule],
    ) -> Result<(), EnforceError> {
        for (key, access) in keyed(cgroup_id, gen_bit(generation), rules)? {
            self.map
                .insert(key, access, 0)
                .map_err(map_error(map::DEVICE_RULES, cgroup_id))?;
        }
        Ok(())
    }

    /// Deletes the entries `rules` make for `cgroup_id` in the generations
    /// (0, 1) `which` picks, by key (one already gone is fine).
    pub fn delete_keys(
        &mut self,
        cgroup_id: u64,
        rules: &[DeviceRule],
        which: impl Fn(u32) -> bool,
    ) -> Result<(), EnforceError> {
        for (key, _) in keyed(cgroup_id, 0, rules)? {
            for generation in [0, 1].into_iter().filter(|g| which(*g)) {
                let kind = key.kind | gen_bit(generation);
                let key = DeviceKey::new(cgroup_id, kind, key.major, key.minor);
                gone(self.map.remove(&key)).map_err(map_error(map::DEVICE_RULES, cgroup_id))?;
            }
        }
        Ok(())
    }

    /// Deletes the rules of `cgroup_id` in the generations (0, 1) `which`
    /// picks, searching the whole map.
    pub fn delete(
        &mut self,
        cgroup_id: u64,
        which: impl Fn(u32) -> bool,
    ) -> Result<(), EnforceError> {
        let ours: Vec<DeviceKey> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.cgroup == cgroup_words(cgroup_id) && which(generation_of(k.kind)))
            .collect();
        for key in ours {
            self.map
                .remove(&key)
                .map_err(map_error(map::DEVICE_RULES, cgroup_id))?;
        }
        Ok(())
    }

    /// The rules of `cgroup_id`'s `generation`, sorted, if they are the
    /// entries `expected` (the container's recorded rules) makes: looked
    /// up by key, in a time that does not grow with the other containers'
    /// entries. `None` if any is missing or has another access (a policy
    /// being replaced at that moment): then only [`read`](Self::read)'s
    /// search of the whole map tells. A generation holds nothing else: it
    /// is emptied before it is written (see [`AddressRules::read_expected`](super::address::AddressRules::read_expected)).
    pub fn read_expected(
        &self,
        cgroup_id: u64,
        generation: u32,
        expected: &[DeviceRule],
    ) -> Result<Option<Vec<DeviceRule>>, EnforceError> {
        let mut rules = Vec::new();
        for (key, access) in keyed(cgroup_id, gen_bit(generation), expected)? {
            match self.map.get(&key, 0) {
                Ok(found) if found == access => rules.push(DeviceRule::from_pattern(
                    key.kind & !GENERATION_BIT,
                    key.major,
                    key.minor,
                    access,
                )),
                Ok(_) | Err(MapError::KeyNotFound) => return Ok(None),
                Err(e) => return Err(map_error(map::DEVICE_RULES, cgroup_id)(e)),
            }
        }
        rules.sort_by_key(|r| (r.kind, r.major, r.minor));
        Ok(Some(rules))
    }

    /// The rules of `cgroup_id`'s `generation`, sorted.
    pub fn read(&self, cgroup_id: u64, generation: u32) -> Result<Vec<DeviceRule>, EnforceError> {
        let mut rules = Vec::new();
        for item in self.map.iter() {
            let (key, access) = item.map_err(map_error(map::DEVICE_RULES, cgroup_id))?;
            if key.cgroup != cgroup_words(cgroup_id) || generation_of(key.kind) != generation {
                continue;
            }
            rules.push(DeviceRule::from_pattern(
                key.kind & !GENERATION_BIT,
                key.major,
                key.minor,
                access,
            ));
        }
        rules.sort_by_key(|r| (r.kind, r.major, r.minor));
        Ok(rules)
    }
}

/// The map entries `rules` make for `cgroup_id` under `gen_bit`: each
/// pattern's key, with its access.
fn keyed(
    cgroup_id: u64,
    gen_bit: u32,
    rules: &[DeviceRule],
) -> Result<Vec<(DeviceKey, u32)>, EnforceError> {
    let patterns = compile_devices(rules).map_err(EnforceError::Compile)?;
    Ok(patterns
        .into_iter()
        .map(|((kind, major, minor), access)| {
            (
                DeviceKey::new(cgroup_id, kind | gen_bit, major, minor),
                access,
            )
        })
        .collect())
}

fn cgroup_words(cgroup_id: u64) -> [u32; 2] {
    DeviceKey::new(cgroup_id, 0, 0, 0).cgroup
}
