//! Enforcement: load palisade's eBPF object, write a container's policy into
//! its maps, and attach the programs to the container's cgroup v2 directory.
//!
//! Policy is written before the programs are attached, and both happen
//! before the container's first process joins the cgroup, so nothing ever
//! runs unpoliced. A program that cannot be loaded or attached is an error,
//! never skipped: the container must not start.
//!
//! A sub-container (`--parent`) gets its policy entry but no attachment of
//! its own: its enclosing container's programs already run for it (the
//! kernel runs every ancestor's), and a second attachment would judge,
//! count and report each of its calls and packets twice. The global
//! accounting programs (raw tracepoints) are attached once per host and
//! build, with the maps they use, shared by every state root (see
//! `lifetime`); everything a state root pins goes when it has no container
//! left.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{HashMap, LpmTrie, Map, MapData, PerCpuHashMap, lpm_trie::Key},
};
use palisade_common::{
    CONTAINERS_AT_BOUND, CgroupPolicy, Counters, ExitedThread, FAMILY_V4, FAMILY_V6,
    GENERATION_BIT, KEY_HEADER_BITS, LIST_OPEN, LIST_RULED, MAX_LIST_PREFIXES, MAX_PORT_RULES,
    MAX_PREFIXES, MODE_AUDIT, MODE_ENFORCE, PrefixRules, RuleKey, TABLE_ACCEPT, TABLE_BIND, map,
};
use thiserror::Error;

pub mod btf;
pub mod classify;
mod devices;
mod hooks;
mod in_force;
mod lifetime;
mod pins;
pub mod probe;
mod tracing;
mod usage;
use hooks::HOOKS;
pub use in_force::{CounterView, InForce, InForceEntry};
pub use lifetime::{
    detach_if_idle, events_ring_id, open_events, release_idle_hosts, retire_root, unpin_root,
};
pub use pins::{BPFFS, Pins, any_root_links};
pub use usage::{ByFamily, Usage};

use crate::{
    spec::{self, Family, Policy},
    sys::bpf::{chain, load_reason},
};

/// The kernel-side object, built from `ebpf/` by agent/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PALISADE_EBPF_OBJECT"));

#[derive(Debug, Error)]
pub enum EnforceError {
    #[error("cannot load palisade's eBPF object: {0}")]
    Object(String),
    #[error("cannot load {hook}: {reason}")]
    Load { hook: &'static str, reason: String },
    #[error("cannot attach {hook} to {}: {reason}", cgroup.display())]
    Attach {
        hook: &'static str,
        cgroup: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("cannot write policy map {map} for cgroup {cgroup_id}: {reason}")]
    Map {
        map: &'static str,
        cgroup_id: u64,
        reason: String,
    },
    #[error("invalid policy: {0}")]
    Compile(String),
    #[error("cannot pin {}: {reason}", path.display())]
    Pin { path: PathBuf, reason: String },
    #[error("cannot attach raw tracepoint {tracepoint} (accounting): {reason}")]
    Trace {
        tracepoint: &'static str,
        reason: String,
    },
}

/// Whether every program and map of the root's object is pinned in `dir`.
fn object_complete(dir: &Path) -> bool {
    HOOKS
        .iter()
        .map(|h| h.program)
        .chain(MAPS.iter().copied())
        .all(|n| dir.join(n).exists())
}

/// FNV-1a of the embedded object: a new build gets new pins instead of
/// reusing programs that no longer match its maps.
fn object_hash() -> u64 {
    OBJECT.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The programs and maps, opened from their pins: verified once per build,
/// attached per container.
pub struct Enforcer {
    /// Held from [`Enforcer::open`] (which attached the host's tracepoints)
    /// until the first container's policy entry is written, so that no
    /// cleanup sees no entry and detaches them meanwhile.
    host_lock: Option<nix::fcntl::Flock<File>>,
    pins: Pins,
    programs: Vec<(&'static str, hooks::Program)>,
    policies: HashMap<MapData, u64, CgroupPolicy>,
    rules: LpmTrie<MapData, RuleKey, PrefixRules>,
    devices: devices::DeviceRules,
    counters: PerCpuHashMap<MapData, u64, Counters>,
    egress: HashMap<MapData, u64, u32>,
    usage: PerCpuHashMap<MapData, u64, palisade_common::Usage>,
    exited: HashMap<MapData, u32, ExitedThread>,
}

impl Enforcer {
    /// Opens the pinned programs and maps of this build, loading the
    /// object and pinning it first if they are not there yet, and makes
    /// sure the host's accounting tracepoints are attached. The state
    /// root's lock must be held exclusively by the caller while this runs,
    /// so concurrent first runs do not both pin, and a root's pins are not
    /// removed under it (see [`unpin_root`]).
    pub fn open(pins: Pins) -> Result<Self, EnforceError> {
        ensure_bpffs()?;
        let dir = pins.object_dir();
        let host_lock = lifetime::lock_host()?;
        let host = lifetime::host_dir();
        // An object pinned by an older palisade of the same build has maps
        // of its own (and its own tracepoints): loaded again against the
        // host's unless containers of the root still run on it.
        let stale = !lifetime::uses_host_maps(&dir, &host) && !pins.has_links();
        if !object_complete(&dir) || !lifetime::host_complete(&host) || stale {
            load_and_pin(&dir, &host)?;
            tracing::detach_idle_siblings(pins.dir(), &dir);
        }
        tracing::ensure_attached(&host)?;
        let mut enforcer = Self::open_pinned(pins)?;
        enforcer.host_lock = Some(host_lock);
        Ok(enforcer)
    }

    /// Opens the pinned programs and maps of this build without loading
    /// anything: `None` if the root has none pinned (so no container).
    pub fn open_existing(pins: Pins) -> Result<Option<Self>, EnforceError> {
        if !pins.is_loaded() {
            return Ok(None);
        }
        Self::open_pinned(pins).map(Some)
    }

    fn open_pinned(pins: Pins) -> Result<Self, EnforceError> {
        let dir = pins.object_dir();
        let mut programs = Vec::with_capacity(HOOKS.len());
        for hook in HOOKS {
            let prog =
                hooks::Program::from_pin(&dir.join(hook.program), hook.attach).map_err(|e| {
                    EnforceError::Load {
                        hook: hook.name,
                        reason: hint(chain(&e)),
                    }
                })?;
            programs.push((hook.name, prog));
        }
        let policies = open_map(&dir, map::CGROUP_POLICY)?;
        let rules = open_map(&dir, map::CONNECT_RULES)?;
        let counters = open_map(&dir, map::COUNTERS)?;
        let egress = open_map(&dir, map::EGRESS_CLASS)?;
        let devices = open_map(&dir, map::DEVICE_RULES)?;
        let usage = open_map(&dir, map::USAGE)?;
        let exited = open_map(&dir, map::EXITED)?;
        Ok(Self {
            host_lock: None,
            pins,
            programs,
            policies,
            rules,
            devices: devices::DeviceRules::new(devices),
            counters,
            egress,
            usage,
            exited,
        })
    }

    /// A container's counters, summed over CPUs (zero if it has none yet).
    pub fn counters(&self, cgroup_id: u64) -> Counters {
        let mut total = Counters::default();
        if let Ok(per_cpu) = self.counters.get(&cgroup_id, 0) {
            for c in per_cpu.iter() {
                for (t, v) in total.denied.iter_mut().zip(c.denied) {
                    *t += v;
                }
                total.audited += c.audited;
                total.events_dropped += c.events_dropped;
            }
        }
        total
    }

    /// What the container of `cgroup_id` (whose cgroup directories are
    /// `cgroups`) consumed so far, summed over CPUs (zero if nothing was
    /// counted yet). CPU time and page faults are its controllers' counts
    /// (0 on a host without them); context switches are its exited
    /// threads' (the exit program's count) and its live threads' (/proc).
    pub fn usage(&self, cgroup_id: u64, cgroups: &[PathBuf]) -> Usage {
        let tids = crate::cgroups::threads(cgroups);
        let (records, beyond) = usage::beyond_records(
            &tids,
            |tid| self.exited.get(&tid, 0).ok(),
            || match self.usage.get(&cgroup_id, 0) {
                Ok(per_cpu) => per_cpu.iter().copied().collect(),
                Err(_) => Vec::new(),
            },
        );
        let mut usage = Usage::from_kernel(usage::sum(records.iter()));
        usage.context_switches += beyond;
        usage.cpu_ns = crate::cgroups::stats::cpu_time(cgroups).unwrap_or(0);
        usage.page_faults = crate::cgroups::stats::page_faults(cgroups).unwrap_or(0);
        usage
    }

    /// Writes `policy` for the cgroup `cgroup_id`, then attaches every hook
    /// to `cgroup_dir` and pins the links under the container's name, so
    /// they stay attached when this process exits. On failure, whatever
    /// was attached is released again. For a container nested in another,
    /// [`Enforcer::police_nested`] instead.
    pub fn police(
        &mut self,
        container: &str,
        cgroup_dir: &Path,
        cgroup_id: u64,
        policy: &Policy,
    ) -> Result<(), EnforceError> {
        let result = self.try_police(container, cgroup_dir, cgroup_id, policy);
        if result.is_err() {
            let _ = self.release(container, cgroup_id, Some(policy));
        }
        self.host_lock = None;
        result
    }

    /// Writes `policy` for the cgroup `cgroup_id` of a container nested in
    /// others (`--parent`; `outermost` is the outermost of them, the one
    /// with attachments). Its programs already run for the nested cgroup and
    /// judge it by every policy from the root down, so nothing is attached
    /// to the nested cgroup (that would run each program twice for it).
    /// Only if they are another build's (whose maps hold no entry of this
    /// one) are this build's programs attached to it, as [`Enforcer::police`]
    /// does. On failure its entries are deleted.
    pub fn police_nested(
        &mut self,
        container: &str,
        outermost: &str,
        cgroup_dir: &Path,
        cgroup_id: u64,
        policy: &Policy,
    ) -> Result<(), EnforceError> {
        if !self.attached_by_us(outermost) {
            return self.police(container, cgroup_dir, cgroup_id, policy);
        }
        let result = self.write_policy(cgroup_id, policy, 0);
        if result.is_err() {
            let _ = self.release(container, cgroup_id, Some(policy));
        }
        self.host_lock = None;
        result
    }

    /// Whether `container`'s pinned attachments run this object's programs.
    fn attached_by_us(&self, container: &str) -> bool {
        let hook = &HOOKS[0];
        let link = aya::programs::links::PinnedLink::from_pin(
            self.pins.links_dir(container).join(link_file(hook.name)),
        )
        .map(aya::programs::links::FdLink::from)
        .and_then(|l| l.info());
        let ours = aya::programs::ProgramInfo::from_pin(self.pins.object_dir().join(hook.program));
        match (link, ours) {
            (Ok(link), Ok(ours)) => link.program_id() == ours.id(),
            _ => false,
        }
    }

    fn try_police(
        &mut self,
        container: &str,
        cgroup_dir: &Path,
        cgroup_id: u64,
        policy: &Policy,
    ) -> Result<(), EnforceError> {
        self.write_policy(cgroup_id, policy, 0)?;
        let cgroup = crate::cgroups::open_dir(cgroup_dir)?;
        let links = self.pins.links_dir(container);
        create_dirs(&links)?;
        for (hook, prog) in &mut self.programs {
            let path = links.join(link_file(hook));
            prog.attach_pinned(&cgroup, &path).map_err(|e| match e {
                hooks::AttachError::Attach(reason) => EnforceError::Attach {
                    hook,
                    cgroup: cgroup_dir.to_path_buf(),
                    reason: hint(reason),
                },
                hooks::AttachError::Pin(reason) => EnforceError::Pin { path, reason },
            })?;
        }
        Ok(())
    }

    /// Detaches a container's programs (by removing its link pins) and
    /// deletes its map entries, its usage included. Idempotent: what is
    /// already gone is fine. With the policy the container's rules were
    /// written from (`written`), its rule entries are deleted by key, in
    /// time that does not grow with the other containers; without it, the
    /// shared rule maps are searched for them.
    pub fn release(
        &mut self,
        container: &str,
        cgroup_id: u64,
        written: Option<&Policy>,
    ) -> Result<(), EnforceError> {
        self.host_lock = None;
        self.pins.remove_links(container)?;
        // The policy goes first: a late packet or task of the container
        // finds none and makes no new usage record after this.
        let _ = self.policies.remove(&cgroup_id);
        let _ = self.counters.remove(&cgroup_id);
        let _ = self.egress.remove(&cgroup_id);
        let _ = self.usage.remove(&cgroup_id);
        self.sweep_usage();
        match written.map(|p| self.delete_written(cgroup_id, p)) {
            Some(Ok(())) => Ok(()),
            // A policy that no longer compiles (another build's rules):
            // search instead.
            Some(Err(_)) | None => self.delete_rules(cgroup_id, |_| true),
        }
    }

    /// Deletes the rule entries `policy` makes for `cgroup_id`, in either
    /// generation, one by one (an entry already gone is fine).
    fn delete_written(&mut self, cgroup_id: u64, policy: &Policy) -> Result<(), EnforceError> {
        for (table, list) in compile_lists(policy)? {
            for entry in list.iter().flat_map(|l| &l.entries) {
                for gen_bit in [0, GENERATION_BIT] {
                    let _ = self
                        .rules
                        .remove(&rule_key(cgroup_id, gen_bit | table, entry));
                }
            }
        }
        self.devices.delete_keys(cgroup_id, &policy.devices.rules())
    }

    /// Writes `policy`'s rules as `generation`, then makes that generation
    /// the one in force with a single update of the cgroup's entry.
    fn write_policy(
        &mut self,
        cgroup_id: u64,
        policy: &Policy,
        generation: u32,
    ) -> Result<(), EnforceError> {
        let gen_bit = if generation == 0 { 0 } else { GENERATION_BIT };
        // Every list is compiled and checked against its bound before
        // anything is written.
        let compiled = compile_lists(policy)?;
        let mut switches = [LIST_OPEN; 3];
        for (switch, (table, list)) in switches.iter_mut().zip(&compiled) {
            if let Some(list) = list {
                self.write_list(cgroup_id, gen_bit | table, list)?;
                *switch = LIST_RULED;
            }
        }
        let [connect, bind, accept] = switches;
        self.devices
            .write(cgroup_id, generation, &policy.devices.rules())?;
        let value = CgroupPolicy {
            connect,
            sockets: policy.network.sockets.denied_bits(),
            bind,
            accept,
            mode: if policy.network.audit {
                MODE_AUDIT
            } else {
                MODE_ENFORCE
            },
            generation,
            devices: LIST_RULED,
        };
        self.policies
            .insert(cgroup_id, value, 0)
            .map_err(map_error(map::CGROUP_POLICY, cgroup_id))?;
        Ok(())
    }

    /// Replaces a running container's network and device policy
    /// atomically: the new rules go in as the generation not in force, one
    /// map update switches to them, then the old generation's entries are
    /// deleted. A connect or device open judged meanwhile sees the old set
    /// or the new one, never a mixture.
    pub fn update(&mut self, cgroup_id: u64, policy: &Policy) -> Result<(), EnforceError> {
        let current = self.in_force(cgroup_id)?;
        let next = 1 - current.generation.min(1);
        // Whatever a failed update left in the next generation goes first.
        self.delete_rules(cgroup_id, |family| generation_of(family) == next)?;
        if let Err(e) = self.write_policy(cgroup_id, policy, next) {
            // Nothing switched: what was written of the new rules goes, so
            // it takes no room in the shared maps.
            let _ = self.delete_rules(cgroup_id, |family| generation_of(family) == next);
            return Err(e);
        }
        self.delete_rules(cgroup_id, |family| generation_of(family) != next)
    }

    /// What is in force for `cgroup_id`, read back from the maps.
    pub fn show(&self, cgroup_id: u64, written: Option<&Policy>) -> Result<InForce, EnforceError> {
        let current = self.in_force(cgroup_id)?;
        let mut connect = Vec::new();
        let mut bind = Vec::new();
        let mut accept = Vec::new();
        for item in self.rules.iter() {
            let (key, value) = item.map_err(map_error(map::CONNECT_RULES, cgroup_id))?;
            let data = key.data();
            if data.cgroup != RuleKey::new(cgroup_id, 0, [0; 4]).cgroup
                || generation_of(data.family) != current.generation
            {
                continue;
            }
            let entry = InForceEntry::from_kernel(key.prefix_len(), data, &value);
            if data.family & TABLE_BIND != 0 {
                bind.push(entry)
            } else if data.family & TABLE_ACCEPT != 0 {
                accept.push(entry)
            } else {
                connect.push(entry)
            }
        }
        connect.sort();
        bind.sort();
        accept.sort();
        // By key where the recorded policy says what to look for.
        let expected = match written {
            Some(policy) => self.devices.read_expected(
                cgroup_id,
                current.generation,
                &policy.devices.rules(),
            )?,
            None => None,
        };
        let devices = match expected {
            Some(devices) => devices,
            None => self.devices.read(cgroup_id, current.generation)?,
        };
        Ok(InForce {
            generation: current.generation,
            devices: (current.devices == LIST_RULED)
                .then(|| devices.iter().map(ToString::to_string).collect()),
            connect: (current.connect == LIST_RULED).then_some(connect),
            bind: (current.bind == LIST_RULED).then_some(bind),
            accept: (current.accept == LIST_RULED).then_some(accept),
            audit: current.mode == MODE_AUDIT,
            counters: self.counters(cgroup_id).into(),
            raw_sockets: current.sockets & palisade_common::DENY_RAW == 0,
            packet_sockets: current.sockets & palisade_common::DENY_PACKET == 0,
        })
    }

    /// Puts the cgroup's outbound packets in traffic-control class `class`
    /// (a [`palisade_common::shaping_class`]), or in none with `None`.
    pub fn set_egress_class(
        &mut self,
        cgroup_id: u64,
        class: Option<u32>,
    ) -> Result<(), EnforceError> {
        match class {
            Some(class) => self
                .egress
                .insert(cgroup_id, class, 0)
                .map_err(map_error(map::EGRESS_CLASS, cgroup_id)),
            None => match self.egress.remove(&cgroup_id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(map_error(map::EGRESS_CLASS, cgroup_id)(e)),
            },
        }
    }

    /// Deletes the usage records of cgroups that have no policy entry: a
    /// record made by a container's last packet or task racing its
    /// release, or one of a cgroup made inside a container (counted, but
    /// never read: usage is read by the container's own id).
    fn sweep_usage(&mut self) {
        let orphans: Vec<u64> = self
            .usage
            .keys()
            .filter_map(Result::ok)
            .filter(|id| self.policies.get(id, 0).is_err())
            .collect();
        for id in orphans {
            let _ = self.usage.remove(&id);
        }
    }

    /// The cgroup's switches, or an error if it has no policy.
    fn in_force(&self, cgroup_id: u64) -> Result<CgroupPolicy, EnforceError> {
        self.policies
            .get(&cgroup_id, 0)
            .map_err(|e| EnforceError::Map {
                map: map::CGROUP_POLICY,
                cgroup_id,
                reason: format!("no policy in force ({})", chain(&e)),
            })
    }

    /// Deletes the address and device rules of `cgroup_id` whose family
    /// (or device kind) word `which` picks.
    fn delete_rules(
        &mut self,
        cgroup_id: u64,
        which: impl Fn(u32) -> bool,
    ) -> Result<(), EnforceError> {
        self.devices.delete(cgroup_id, &which)?;
        let ours: Vec<Key<RuleKey>> = self
            .rules
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                k.data().cgroup == RuleKey::new(cgroup_id, 0, [0; 4]).cgroup
                    && which(k.data().family)
            })
            .collect();
        for key in ours {
            self.rules
                .remove(&key)
                .map_err(map_error(map::CONNECT_RULES, cgroup_id))?;
        }
        Ok(())
    }

    /// Writes one compiled rule list into the trie (under `table`).
    fn write_list(
        &mut self,
        cgroup_id: u64,
        table: u32,
        compiled: &spec::CompiledRules,
    ) -> Result<(), EnforceError> {
        for entry in &compiled.entries {
            let key = rule_key(cgroup_id, table, entry);
            let mut value = PrefixRules {
                count: entry.rules.len() as u32,
                ..Default::default()
            };
            debug_assert!(
                entry.rules.len() <= MAX_PORT_RULES,
                "compile bounds entries"
            );
            value.rules[..entry.rules.len()].copy_from_slice(&entry.rules);
            self.rules.insert(&key, value, 0).map_err(|e| {
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
}

/// A policy's connect, bind and accept lists, compiled and checked against
/// their bound, each with its table bit (`None`: the list is open).
fn compile_lists(policy: &Policy) -> Result<Vec<(u32, Option<spec::CompiledRules>)>, EnforceError> {
    let lists = [
        ("connect", 0, policy.network.connect.as_deref()),
        ("bind", TABLE_BIND, policy.network.bind.as_deref()),
        ("accept", TABLE_ACCEPT, policy.network.accept.as_deref()),
    ];
    let mut compiled = Vec::with_capacity(lists.len());
    for (name, table, rules) in lists {
        let Some(rules) = rules else {
            compiled.push((table, None));
            continue;
        };
        let list = spec::compile(rules).map_err(EnforceError::Compile)?;
        if list.entries.len() > MAX_LIST_PREFIXES as usize {
            return Err(EnforceError::Compile(format!(
                "the {name} rules name {} address prefixes, more than the {MAX_LIST_PREFIXES} one container may have in a rule list",
                list.entries.len()
            )));
        }
        compiled.push((table, Some(list)));
    }
    Ok(compiled)
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

/// The generation (0 or 1) a rule key's family (or device kind) word
/// belongs to.
fn generation_of(family: u32) -> u32 {
    u32::from(family & GENERATION_BIT != 0)
}

/// An error writing `map` for `cgroup_id`, from aya's.
fn map_error(map: &'static str, cgroup_id: u64) -> impl Fn(aya::maps::MapError) -> EnforceError {
    move |e| EnforceError::Map {
        map,
        cgroup_id,
        reason: chain(&e),
    }
}

/// The maps of the object, pinned beside the programs.
const MAPS: &[&str] = &[
    map::CGROUP_POLICY,
    map::CONNECT_RULES,
    map::DEVICE_RULES,
    map::EVENTS,
    map::COUNTERS,
    map::RATE,
    map::EGRESS_CLASS,
    map::USAGE,
    map::EXITED,
];

/// A hook's link pin file name: `cgroup/connect4` -> `connect4`.
fn link_file(hook: &str) -> &str {
    hook.rsplit('/').next().unwrap_or(hook)
}

/// Loads the embedded object (the verifier runs here, once per build and
/// state root) and pins its programs and maps into `dir`. The maps the
/// accounting tracepoints use are the host's (`host`, made here if
/// missing) and the tracepoint programs are pinned there once.
fn load_and_pin(dir: &Path, host: &Path) -> Result<(), EnforceError> {
    // The exit program reads task_struct fields at offsets only the
    // running kernel's BTF gives: found before anything is touched, so a
    // kernel without them changes nothing in bpffs.
    let offsets = btf::task_offsets().map_err(|e| {
        EnforceError::Object(format!(
            "cannot find task_struct's layout for context-switch accounting in the kernel's BTF: {e}"
        ))
    })?;
    // Clear what a run that died half-way may have left, and a host set
    // without its maps (their programs would count into maps no root uses).
    let _ = std::fs::remove_dir_all(dir);
    if !lifetime::host_maps_complete(host) {
        let _ = std::fs::remove_dir_all(host);
    }
    create_dirs(dir)?;
    create_dirs(host)?;
    let mut loader = EbpfLoader::new();
    // The programs use no CO-RE relocation, so the kernel's BTF need not be
    // parsed a second time (`EbpfLoader::new` has already read it once).
    loader.btf(None);
    for (&name, value) in &offsets {
        loader.override_global(name, value, true);
    }
    for &name in lifetime::SHARED_MAPS {
        loader.map_pin_path(name, host.join(name));
    }
    let mut bpf = loader
        .load(OBJECT)
        .map_err(|e| EnforceError::Object(chain(&e)))?;
    for hook in HOOKS {
        let path = dir.join(hook.program);
        hooks::load_and_pin(&mut bpf, hook, &path).map_err(|e| match e {
            hooks::LoadError::Missing => EnforceError::Load {
                hook: hook.name,
                reason: "missing from the object".into(),
            },
            hooks::LoadError::Load(e) => EnforceError::Load {
                hook: hook.name,
                reason: hint(load_reason(&e)),
            },
            hooks::LoadError::Pin(reason) => EnforceError::Pin { path, reason },
        })?;
    }
    for tp in tracing::TRACEPOINTS {
        let path = host.join(tp.program);
        if path.exists() {
            continue;
        }
        tracing::load_and_pin(&mut bpf, tp, &path).map_err(|e| match e {
            hooks::LoadError::Missing => EnforceError::Load {
                hook: tp.program,
                reason: "missing from the object".into(),
            },
            hooks::LoadError::Load(e) => EnforceError::Load {
                hook: tp.program,
                reason: hint(load_reason(&e)),
            },
            hooks::LoadError::Pin(reason) => EnforceError::Pin { path, reason },
        })?;
    }
    for &name in MAPS {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        bpf.map(name)
            .ok_or_else(|| EnforceError::Pin {
                path: path.clone(),
                reason: "map missing from the object".into(),
            })?
            .pin(&path)
            .map_err(|e| EnforceError::Pin {
                path,
                reason: chain(&e),
            })?;
    }
    Ok(())
}

/// Opens the map pinned as `name` in `dir` as the map type `T`.
fn open_map<T>(dir: &Path, name: &str) -> Result<T, EnforceError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let path = dir.join(name);
    let failed = |reason: String| EnforceError::Pin {
        path: path.clone(),
        reason,
    };
    let map = MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|e| failed(chain(&e)))?;
    T::try_from(map).map_err(|e| failed(chain(&e)))
}

fn create_dirs(dir: &Path) -> Result<(), EnforceError> {
    std::fs::create_dir_all(dir).map_err(|e| EnforceError::Pin {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Mounts bpffs at /sys/fs/bpf unless one is there already.
fn ensure_bpffs() -> Result<(), EnforceError> {
    if crate::sys::fs::is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| EnforceError::Pin {
        path: PathBuf::from(BPFFS),
        reason: format!("bpffs is not mounted and mounting it failed: {e}"),
    })
}

/// Adds the usual fix to a permission error.
fn hint(reason: String) -> String {
    if reason.contains("Operation not permitted") || reason.contains("Permission denied") {
        format!("{reason} (palisade must run as root with CAP_BPF and CAP_NET_ADMIN)")
    } else {
        reason
    }
}
