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
    maps::{HashMap, Map, MapData, PerCpuHashMap},
};
use palisade_common::{
    CgroupPolicy, Counters, ExitedThread, GENERATION_BIT, LIST_RULED, MODE_AUDIT, MODE_ENFORCE, map,
};
use thiserror::Error;

mod address;
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
    spec::{self, Policy},
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
    rules: address::AddressRules,
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
            rules: address::AddressRules::new(rules),
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
            let _ = self.release(container, cgroup_id, Some(std::slice::from_ref(policy)));
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
            let _ = self.release(container, cgroup_id, Some(std::slice::from_ref(policy)));
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
    /// already gone is fine. With the policies its rules may have been
    /// written from (`written`: see [`Enforcer::update`]), its rule entries
    /// are deleted by key, in time that does not grow with the other
    /// containers; without them, the shared rule maps are searched.
    pub fn release(
        &mut self,
        container: &str,
        cgroup_id: u64,
        written: Option<&[Policy]>,
    ) -> Result<(), EnforceError> {
        self.host_lock = None;
        self.pins.remove_links(container)?;
        // The policy goes first: a late packet or task of the container
        // finds none and makes no new usage record after this.
        let _ = self.policies.remove(&cgroup_id);
        let _ = self.counters.remove(&cgroup_id);
        let _ = self.egress.remove(&cgroup_id);
        let _ = self.usage.remove(&cgroup_id);
        if cgroup_id.is_multiple_of(USAGE_SWEEP_EVERY) {
            self.sweep_usage();
        }
        let written = written.and_then(Written::compile);
        self.delete_generations(cgroup_id, written.as_ref(), |_| true)
    }

    /// Deletes `cgroup_id`'s address and device rules in the generations
    /// (0, 1) `which` picks: by the keys of `written`, what the policies
    /// that may have written them make; if those are not known, or do not
    /// compile (another build's rules), by a search of the shared maps.
    fn delete_generations(
        &mut self,
        cgroup_id: u64,
        written: Option<&Written>,
        which: impl Fn(u32) -> bool + Copy,
    ) -> Result<(), EnforceError> {
        let by_key = written.map(|written| {
            self.rules.delete_keys(cgroup_id, &written.lists, which)?;
            for rules in &written.devices {
                self.devices.delete_keys(cgroup_id, rules, which)?;
            }
            Ok(())
        });
        match by_key {
            Some(Ok(())) => Ok(()),
            // Device rules that no longer compile (another build's): search.
            Some(Err(EnforceError::Compile(_))) | None => {
                self.devices.delete(cgroup_id, which)?;
                self.rules.delete(cgroup_id, which)
            }
            Some(Err(e)) => Err(e),
        }
    }

    /// Writes `policy`'s rules as `generation`, then makes that generation
    /// the one in force with a single update of the cgroup's entry.
    /// Every list is compiled and checked against its bound before
    /// anything is written.
    fn write_policy(
        &mut self,
        cgroup_id: u64,
        policy: &Policy,
        generation: u32,
    ) -> Result<(), EnforceError> {
        let compiled = address::compile_lists(policy)?;
        self.write_compiled(cgroup_id, policy, &compiled, generation)
    }

    /// [`Enforcer::write_policy`] with `policy`'s address rule lists
    /// already compiled (`compiled`).
    fn write_compiled(
        &mut self,
        cgroup_id: u64,
        policy: &Policy,
        compiled: &[Option<spec::CompiledRules>],
        generation: u32,
    ) -> Result<(), EnforceError> {
        let [connect, bind, accept] = self.rules.write(cgroup_id, generation, compiled)?;
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
    ///
    /// `written` is every policy whose entries may be in the maps for the
    /// container: the one recorded in force and any whose update was
    /// interrupted. The caller records `policy` among them before this
    /// runs. With them, entries are deleted by key, in time that does not
    /// grow with the other containers; `None` searches the shared maps.
    pub fn update(
        &mut self,
        cgroup_id: u64,
        written: Option<&[Policy]>,
        policy: &Policy,
    ) -> Result<(), EnforceError> {
        let current = self.in_force(cgroup_id)?;
        let next = 1 - current.generation.min(1);
        // The new rules are compiled (and checked against their bound)
        // before anything changes, and every policy only once.
        let compiled = address::compile_lists(policy)?;
        let written = written.and_then(Written::compile).map(|mut w| {
            w.lists.push(compiled.clone());
            w.devices.push(policy.devices.rules());
            w
        });
        let written = written.as_ref();
        // Whatever an interrupted update left in the next generation goes
        // first.
        self.delete_generations(cgroup_id, written, |g| g == next)?;
        if let Err(e) = self.write_compiled(cgroup_id, policy, &compiled, next) {
            // Nothing switched: what was written of the new rules goes, so
            // it takes no room in the shared maps.
            let _ = self.delete_generations(cgroup_id, written, |g| g == next);
            return Err(e);
        }
        self.delete_generations(cgroup_id, written, |g| g != next)
    }

    /// What is in force for `cgroup_id`, read back from the maps. With the
    /// policy its generation in force was written from (`written`), its
    /// entries are read by key, in time that does not grow with the other
    /// containers; if they are not what that policy makes, or without it,
    /// the shared maps are searched.
    pub fn show(&self, cgroup_id: u64, written: Option<&Policy>) -> Result<InForce, EnforceError> {
        let current = self.in_force(cgroup_id)?;
        let generation = current.generation;
        let switches = [current.connect, current.bind, current.accept];
        let by_key = match written {
            Some(policy) => self
                .rules
                .read_expected(cgroup_id, generation, switches, policy)?
                .zip(
                    self.devices
                        .read_expected(cgroup_id, generation, &policy.devices.rules())?,
                ),
            None => None,
        };
        let (lists, devices) = match by_key {
            Some(found) => found,
            None => (
                self.rules.read(cgroup_id, generation)?,
                self.devices.read(cgroup_id, generation)?,
            ),
        };
        Ok(InForce {
            generation,
            devices: (current.devices == LIST_RULED)
                .then(|| devices.iter().map(ToString::to_string).collect()),
            connect: (current.connect == LIST_RULED).then_some(lists.connect),
            bind: (current.bind == LIST_RULED).then_some(lists.bind),
            accept: (current.accept == LIST_RULED).then_some(lists.accept),
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
            None => gone(self.egress.remove(&cgroup_id))
                .map_err(map_error(map::EGRESS_CLASS, cgroup_id)),
        }
    }

    /// Deletes the usage records of cgroups that have no policy entry: a
    /// record made by a container's last packet or task racing its
    /// release, or one of a cgroup made inside a container (counted, but
    /// never read: usage is read by the container's own id). It searches
    /// the whole map, so a release runs it only for one cgroup id in
    /// [`USAGE_SWEEP_EVERY`]: a release costs the same however many
    /// containers run, and orphans stay few against the map's size.
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
}

/// The entries a container's policies may have written, as keys are made
/// from them: each policy's address rule lists, compiled once, and its
/// device rules.
struct Written {
    lists: Vec<Vec<Option<spec::CompiledRules>>>,
    devices: Vec<Vec<spec::DeviceRule>>,
}

impl Written {
    /// `None` if one of `policies` no longer compiles (another build's
    /// rules): then only a search of the shared maps finds its entries.
    fn compile(policies: &[Policy]) -> Option<Self> {
        let mut written = Self {
            lists: Vec::with_capacity(policies.len() + 1),
            devices: Vec::with_capacity(policies.len() + 1),
        };
        for policy in policies {
            written.lists.push(address::compile_lists(policy).ok()?);
            written.devices.push(policy.devices.rules());
        }
        Some(written)
    }
}

/// A release sweeps orphaned usage records when its cgroup id is a
/// multiple of this (ids are given out in sequence to every cgroup the
/// host makes, so about one release in this many).
const USAGE_SWEEP_EVERY: u64 = 16;

/// The generation (0 or 1) a rule key's family (or device kind) word
/// belongs to.
fn generation_of(family: u32) -> u32 {
    u32::from(family & GENERATION_BIT != 0)
}

/// The family (or device kind) word bit of rule generation `generation`
/// (0 or 1): [`generation_of`]'s inverse.
fn gen_bit(generation: u32) -> u32 {
    if generation == 0 { 0 } else { GENERATION_BIT }
}

/// A map deletion's result, with a key that was not there (the kernel's
/// ENOENT) as success: what is already gone is fine.
fn gone(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
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

/// Where the kernel's tracefs is mounted by convention.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at /sys/kernel/tracing unless a tracefs is mounted
/// there or under debugfs already (where aya looks for tracepoint ids).
fn ensure_tracefs() -> Result<(), String> {
    let mounted = crate::sys::fs::mounts()
        .map_err(|e| format!("cannot read the mount table: {e}"))?
        .iter()
        .any(|(path, fstype)| {
            fstype == "tracefs"
                && (path == Path::new(TRACEFS) || path == Path::new("/sys/kernel/debug/tracing"))
        });
    if mounted {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("tracefs is not mounted and mounting it on {TRACEFS} failed: {e}"))
}

/// Adds the usual fix to a permission error.
fn hint(reason: String) -> String {
    if reason.contains("Operation not permitted") || reason.contains("Permission denied") {
        format!("{reason} (palisade must run as root with CAP_BPF and CAP_NET_ADMIN)")
    } else {
        reason
    }
}
