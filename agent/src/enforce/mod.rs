//! Enforcement: load palisade's eBPF object, write a container's policy into
//! its maps, and attach the programs to the container's cgroup v2 directory.
//!
//! Policy is written before the programs are attached, and both happen
//! before the container's first process joins the cgroup, so nothing ever
//! runs unpoliced. A program that cannot be loaded or attached is an error,
//! never skipped: the container must not start.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError},
};
use palisade_common::{
    CONNECT_OPEN, CONNECT_RULED, CgroupPolicy, FAMILY_V4, FAMILY_V6, KEY_HEADER_BITS,
    MAX_PORT_RULES, PrefixRules, RuleKey, map, program,
};
use thiserror::Error;

use crate::spec::{self, Family, Policy};

/// The kernel-side object, built from `ebpf/` by agent/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PALISADE_EBPF_OBJECT"));

/// The hooks a container gets, as (program name, hook name for messages).
const HOOKS: &[(&str, &str)] = &[
    (program::CONNECT4, "cgroup/connect4"),
    (program::CONNECT6, "cgroup/connect6"),
];

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
    #[error("cannot open cgroup {}: {source}", path.display())]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("cannot write policy map {map} for cgroup {cgroup_id}: {reason}")]
    Map {
        map: &'static str,
        cgroup_id: u64,
        reason: String,
    },
    #[error("invalid policy: {0}")]
    Compile(String),
}

/// The loaded object: programs verified once, attached per container.
pub struct Enforcer {
    bpf: Ebpf,
}

impl Enforcer {
    /// Loads the embedded object and every program into the kernel.
    pub fn load() -> Result<Self, EnforceError> {
        // The programs use no CO-RE relocation, so the kernel's BTF need not be
        // parsed a second time (`EbpfLoader::new` has already read it once).
        let mut bpf = EbpfLoader::new()
            .btf(None)
            .load(OBJECT)
            .map_err(|e| EnforceError::Object(chain(&e)))?;
        for &(name, hook) in HOOKS {
            let prog: &mut CgroupSockAddr = bpf
                .program_mut(name)
                .ok_or_else(|| EnforceError::Load {
                    hook,
                    reason: "missing from the object".into(),
                })?
                .try_into()
                .map_err(|e| EnforceError::Load {
                    hook,
                    reason: chain(&e),
                })?;
            prog.load().map_err(|e| EnforceError::Load {
                hook,
                reason: hint(load_reason(&e)),
            })?;
        }
        Ok(Self { bpf })
    }

    /// Writes `policy` for the cgroup `cgroup_id`, then attaches every hook
    /// to `cgroup_dir`. The programs stay attached while `self` lives.
    pub fn police(
        &mut self,
        cgroup_dir: &Path,
        cgroup_id: u64,
        policy: &Policy,
    ) -> Result<(), EnforceError> {
        self.write_policy(cgroup_id, policy)?;
        let cgroup = File::open(cgroup_dir).map_err(|source| EnforceError::Cgroup {
            path: cgroup_dir.to_path_buf(),
            source,
        })?;
        for &(name, hook) in HOOKS {
            let prog: &mut CgroupSockAddr = self
                .bpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| EnforceError::Load {
                    hook,
                    reason: "missing from the object".into(),
                })?;
            // Attached as a BPF link, which the kernel always treats as
            // multi-attach (programs of enclosing cgroups still run and a
            // deny from any of them stands); link_create takes no mode flag,
            // so `Single` is the one that passes 0.
            prog.attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| EnforceError::Attach {
                    hook,
                    cgroup: cgroup_dir.to_path_buf(),
                    reason: hint(chain(&e)),
                })?;
        }
        Ok(())
    }

    fn write_policy(&mut self, cgroup_id: u64, policy: &Policy) -> Result<(), EnforceError> {
        let map_error = |map: &'static str| {
            move |e: aya::maps::MapError| EnforceError::Map {
                map,
                cgroup_id,
                reason: chain(&e),
            }
        };
        let connect = match &policy.network.connect {
            None => CONNECT_OPEN,
            Some(rules) => {
                let compiled = spec::compile(rules).map_err(EnforceError::Compile)?;
                let mut trie: LpmTrie<_, RuleKey, PrefixRules> = LpmTrie::try_from(
                    self.bpf
                        .map_mut(map::CONNECT_RULES)
                        .ok_or_else(|| missing_map(map::CONNECT_RULES, cgroup_id))?,
                )
                .map_err(map_error(map::CONNECT_RULES))?;
                for entry in &compiled.entries {
                    let family = match entry.family {
                        Family::V4 => FAMILY_V4,
                        Family::V6 => FAMILY_V6,
                    };
                    let key = Key::new(
                        KEY_HEADER_BITS + u32::from(entry.prefix),
                        RuleKey::new(cgroup_id, family, entry.words()),
                    );
                    let mut value = PrefixRules {
                        count: entry.rules.len() as u32,
                        ..Default::default()
                    };
                    debug_assert!(
                        entry.rules.len() <= MAX_PORT_RULES,
                        "compile bounds entries"
                    );
                    value.rules[..entry.rules.len()].copy_from_slice(&entry.rules);
                    trie.insert(&key, value, 0)
                        .map_err(map_error(map::CONNECT_RULES))?;
                }
                CONNECT_RULED
            }
        };
        let mut policies: HashMap<_, u64, CgroupPolicy> = HashMap::try_from(
            self.bpf
                .map_mut(map::CGROUP_POLICY)
                .ok_or_else(|| missing_map(map::CGROUP_POLICY, cgroup_id))?,
        )
        .map_err(map_error(map::CGROUP_POLICY))?;
        policies
            .insert(
                cgroup_id,
                CgroupPolicy {
                    connect,
                    _reserved: 0,
                },
                0,
            )
            .map_err(map_error(map::CGROUP_POLICY))?;
        Ok(())
    }
}

fn missing_map(map: &'static str, cgroup_id: u64) -> EnforceError {
    EnforceError::Map {
        map,
        cgroup_id,
        reason: "missing from the object".into(),
    }
}

/// An error and all its sources, joined: aya nests the kernel's reason.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The kernel's reason for refusing a program, with the verifier's log
/// when it wrote one.
fn load_reason(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if log.trim().is_empty() {
                io_error.to_string()
            } else {
                format!("{io_error}; verifier log:\n{log}")
            }
        }
        other => chain(other),
    }
}

/// Adds the usual fix to a permission error.
fn hint(reason: String) -> String {
    if reason.contains("Operation not permitted") || reason.contains("Permission denied") {
        format!("{reason} (palisade must run as root with CAP_BPF and CAP_NET_ADMIN)")
    } else {
        reason
    }
}
