//! The classifier's kernel side: loads the `palisade-classify` object
//! (`ebpf/src/classify.rs`), writes a rule list's filter tables into its
//! maps and attaches its program to the tracepoint
//! `sched/sched_process_exec`.
//!
//! Never pinned: the program is attached while the [`ExecClassifier`]
//! lives and detached when it drops (or its process dies), so a process is
//! never held (stopped) for an agent that is gone. Owns no `unsafe`.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, RingBuf, lpm_trie::Key},
    programs::TracePoint,
};
use palisade_common::classify::{ClassifyConfig, ExecEvent, PREFIX_BYTES, PROGRAM, map as names};
use thiserror::Error;

use crate::{spec::ClassifyTables, sys::bpf::chain};

/// The kernel-side object, built from `ebpf/src/classify.rs` by agent/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PALISADE_CLASSIFY_OBJECT"));

#[derive(Debug, Error)]
pub enum ClassifierError {
    #[error("cannot load the classifier's eBPF object: {0}")]
    Object(String),
    #[error("cannot load the classifier's program {PROGRAM}: {0}")]
    Load(String),
    #[error("cannot attach the classifier to the tracepoint sched/sched_process_exec: {0}")]
    Attach(String),
    #[error("classifier: map {map}: {reason}")]
    Map { map: &'static str, reason: String },
}

/// The loaded, attached classifier.
pub struct ExecClassifier {
    /// Holds the program's link: the program is detached when it drops.
    bpf: Option<Ebpf>,
    config: Array<MapData, ClassifyConfig>,
    tables: ClassifyTables,
}

impl ExecClassifier {
    /// Loads the object with `tables` in its maps and attaches it; execs
    /// are classified from then on. Processes in the cgroup v2 group
    /// `skip` (id, level under the root), and below it, are never sent.
    /// The kernel's log records at `log_level` (aya-log's numbering, as
    /// `log`'s: 0 off, 1 error … 5 trace) and above are kept: none below
    /// it is written.
    pub fn load(
        tables: &ClassifyTables,
        skip: Option<(u64, u32)>,
        log_level: u8,
    ) -> Result<Self, ClassifierError> {
        let mut loader = EbpfLoader::new();
        // The program uses no CO-RE relocation.
        loader.btf(None);
        loader.override_global("AYA_LOG_LEVEL", &log_level, false);
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| ClassifierError::Object(hint(chain(&e))))?;
        let mut config = Array::<MapData, ClassifyConfig>::try_from(take(&mut bpf, names::CONFIG)?)
            .map_err(map_error(names::CONFIG))?;
        let mut uids = HashMap::<MapData, u32, u64>::try_from(take(&mut bpf, names::UIDS)?)
            .map_err(map_error(names::UIDS))?;
        let mut gids = HashMap::<MapData, u32, u64>::try_from(take(&mut bpf, names::GIDS)?)
            .map_err(map_error(names::GIDS))?;
        let mut prefixes =
            LpmTrie::<MapData, [u8; PREFIX_BYTES], u64>::try_from(take(&mut bpf, names::PREFIXES)?)
                .map_err(map_error(names::PREFIXES))?;
        for &(uid, rules) in &tables.uids {
            uids.insert(uid, rules, 0).map_err(map_error(names::UIDS))?;
        }
        for &(gid, rules) in &tables.gids {
            gids.insert(gid, rules, 0).map_err(map_error(names::GIDS))?;
        }
        for (prefix, rules) in &tables.prefixes {
            let mut data = [0u8; PREFIX_BYTES];
            let len = prefix.len().min(PREFIX_BYTES - 1);
            data[..len].copy_from_slice(&prefix[..len]);
            prefixes
                .insert(&Key::new((len * 8) as u32, data), rules, 0)
                .map_err(map_error(names::PREFIXES))?;
        }
        // The configuration last: until it is written the program finds
        // no entry and sends nothing.
        let mut this_config = tables.config;
        if let Some((id, level)) = skip {
            this_config.skip_cgroup = id;
            this_config.skip_level = level;
        }
        config
            .set(0, this_config, 0)
            .map_err(map_error(names::CONFIG))?;
        let program: &mut TracePoint = bpf
            .program_mut(PROGRAM)
            .ok_or_else(|| {
                ClassifierError::Load("missing from the object (rebuild palisade)".into())
            })?
            .try_into()
            .map_err(|e| ClassifierError::Load(chain(&e)))?;
        program
            .load()
            .map_err(|e| ClassifierError::Load(hint(crate::sys::bpf::load_reason(&e))))?;
        // A tracepoint is found by its id in tracefs, which a host without
        // systemd (a container, a CI runner) may not have mounted.
        super::ensure_tracefs().map_err(ClassifierError::Attach)?;
        program
            .attach("sched", "sched_process_exec")
            .map_err(|e| ClassifierError::Attach(hint(chain(&e))))?;
        Ok(Self {
            bpf: Some(bpf),
            config,
            tables: tables.clone(),
        })
    }

    /// The ring of [`ExecEvent`]s (once: an error after).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, ClassifierError> {
        let map = take(self.bpf.as_mut().ok_or(gone(names::EXECS))?, names::EXECS)?;
        RingBuf::try_from(map).map_err(map_error(names::EXECS))
    }

    /// The kernel's log, for aya-log to read into `log` (once; `None`
    /// after, or if the object has none).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(self.bpf.as_mut()?).ok()
    }

    /// Sets the cgroup v2 group (id, level) whose processes are skipped.
    pub fn set_skip(&mut self, id: u64, level: u32) -> Result<(), ClassifierError> {
        let mut config = self.tables.config;
        config.skip_cgroup = id;
        config.skip_level = level;
        self.config
            .set(0, config, 0)
            .map_err(map_error(names::CONFIG))
    }

    /// Detaches the program: no exec is sent or held from now on.
    pub fn detach(&mut self) {
        self.bpf = None;
    }
}

/// An event as the ring holds it; `None` for a record of another size.
pub fn decode(bytes: &[u8]) -> Option<ExecEvent> {
    bytes
        .get(..size_of::<ExecEvent>())
        .map(bytemuck::pod_read_unaligned::<ExecEvent>)
}

fn take(bpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ClassifierError> {
    bpf.take_map(name).ok_or(ClassifierError::Map {
        map: name,
        reason: "missing from the object (rebuild palisade)".into(),
    })
}

fn gone(map: &'static str) -> ClassifierError {
    ClassifierError::Map {
        map,
        reason: "the classifier is detached".into(),
    }
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> ClassifierError {
    move |e| ClassifierError::Map {
        map,
        reason: hint(chain(&e)),
    }
}

/// Adds the usual fix to a permission error.
fn hint(reason: String) -> String {
    if reason.contains("Operation not permitted") || reason.contains("Permission denied") {
        format!("{reason} (the agent must run as root, with CAP_BPF and CAP_PERFMON)")
    } else {
        reason
    }
}
