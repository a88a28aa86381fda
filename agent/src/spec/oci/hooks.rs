//! `hooks` into palisade's terms: the programs run at each point of the
//! container's life, checked before anything is created.

use std::path::PathBuf;

use oci_spec::runtime::{Hook, Hooks};
use serde::{Deserialize, Serialize};

use super::{Cx, OciError};

/// One OCI hook: a host program run with the container's state on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCommand {
    /// Absolute path of the program.
    pub path: PathBuf,
    /// Its argv, `args[0]` included; empty means `[path]`.
    pub args: Vec<String>,
    /// Its whole environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Seconds before it is killed and counted as failed.
    pub timeout: Option<u32>,
}

/// The hooks palisade runs, by the point at which it runs them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSet {
    /// `createRuntime`, then the deprecated `prestart`: in the host's
    /// namespaces, once the container's network namespace exists and
    /// before its command can run. A failure fails the create.
    pub create_runtime: Vec<HookCommand>,
    pub prestart: Vec<HookCommand>,
    /// After the command has started; a failure is a warning.
    pub poststart: Vec<HookCommand>,
    /// After the container is deleted; a failure is a warning.
    pub poststop: Vec<HookCommand>,
}

impl HookSet {
    pub fn is_empty(&self) -> bool {
        self.create_runtime.is_empty()
            && self.prestart.is_empty()
            && self.poststart.is_empty()
            && self.poststop.is_empty()
    }
}

impl Cx {
    pub(super) fn hooks(&mut self, hooks: &Hooks) -> Result<HookSet, OciError> {
        for (name, list) in [
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
        ] {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(self.err(
                    format!("hooks.{name}"),
                    "is not supported: palisade runs hooks only in the host's namespaces (createRuntime, prestart, poststart, poststop)",
                ));
            }
        }
        Ok(HookSet {
            create_runtime: self.hook_list("createRuntime", hooks.create_runtime())?,
            prestart: self.hook_list("prestart", hooks.prestart())?,
            poststart: self.hook_list("poststart", hooks.poststart())?,
            poststop: self.hook_list("poststop", hooks.poststop())?,
        })
    }

    fn hook_list(
        &self,
        name: &str,
        list: &Option<Vec<Hook>>,
    ) -> Result<Vec<HookCommand>, OciError> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, h)| {
                let field = format!("hooks.{name}[{i}]");
                if !h.path().is_absolute() {
                    return Err(self.err(
                        field,
                        format!("path {} must be absolute", h.path().display()),
                    ));
                }
                let timeout = match h.timeout() {
                    None => None,
                    Some(t) if t > 0 && t <= i64::from(u32::MAX) => Some(t as u32),
                    Some(t) => {
                        return Err(self.err(
                            field,
                            format!("timeout {t} must be a positive number of seconds"),
                        ));
                    }
                };
                let strings = h.args().iter().flatten().chain(h.env().iter().flatten());
                for s in strings {
                    if s.contains('\0') {
                        return Err(self.err(field, format!("{s:?} contains a NUL byte")));
                    }
                }
                Ok(HookCommand {
                    path: h.path().clone(),
                    args: h.args().clone().unwrap_or_default(),
                    env: h.env().clone().unwrap_or_default(),
                    timeout,
                })
            })
            .collect()
    }
}
