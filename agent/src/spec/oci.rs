//! OCI runtime-spec bundles: `DIR/config.json`, read with `oci-spec` and
//! judged against what palisade can do, into a [`Bundle`] the CLI turns
//! into a `RunSpec`.
//!
//! Every field of the spec is either mapped, refused with an [`OciError`]
//! naming it, or accepted with a warning in [`Bundle::warnings`] saying
//! what palisade does instead: nothing a bundle asks for is dropped
//! silently. Reading is all this module does to the host: it looks at the
//! bundle, its rootfs and its bind-mount sources, and never mounts, writes
//! or creates anything.

mod devices;
mod hooks;
mod limits;
mod mounts;
mod process;
#[cfg(test)]
mod tests;

pub use hooks::{HookCommand, HookSet};

use std::{
    collections::{BTreeMap, HashSet},
    fs, io,
    path::{Path, PathBuf},
};

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use thiserror::Error;

use crate::{
    spec::{BindMount, DeviceRequest},
    spec::{DeviceRule, ResourceLimits},
};

/// What palisade takes from a bundle, validated: everything a
/// `palisade run` needs that the bundle can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The bundle directory, canonical.
    pub dir: PathBuf,
    /// `process.args`, non-empty.
    pub args: Vec<String>,
    /// `process.env`, each `KEY=VALUE` with a non-empty key. OCI gives the
    /// whole environment here; an empty list means an empty environment
    /// (the CLI decides whether palisade's defaults still apply).
    pub env: Vec<String>,
    /// `process.cwd`, absolute.
    pub cwd: PathBuf,
    /// `process.user` as `(uid, gid)`; `None` for root (0:0).
    /// `additionalGids` and `umask` are not applied (warnings): palisade
    /// clears the supplementary groups and keeps its own umask.
    pub user: Option<(u32, u32)>,
    /// `root.path`, resolved against the (canonical) bundle directory; a
    /// directory.
    pub rootfs: PathBuf,
    /// `root.readonly`.
    pub read_only: bool,
    /// `hostname`; `None` when absent or empty.
    pub hostname: Option<String>,
    /// The bind mounts (type `bind`, or options holding `bind`/`rbind`),
    /// sources resolved against the bundle directory. palisade always binds
    /// recursively and privately. The standard filesystems palisade mounts
    /// itself (/proc, /dev, /dev/pts, /dev/shm, /sys, /tmp) are skipped.
    pub mounts: Vec<BindMount>,
    /// A new network namespace (`linux.namespaces` has `network` without a
    /// path): palisade's `--net none`. Otherwise the host's network.
    pub net_none: bool,
    /// `process.capabilities.bounding` as `CAP_*` names, sorted; `None`
    /// when the bundle has no capabilities (the CLI's default set applies).
    /// Only the bounding set is taken: root's capabilities after execve are
    /// its bounding set, and palisade gives a non-root user none (a non-root
    /// user with ambient capabilities gets a warning).
    pub capabilities: Option<Vec<String>>,
    /// `process.noNewPrivileges` (palisade sets no_new_privs regardless).
    pub no_new_privileges: bool,
    /// `linux.resources`, converted to palisade's units (see `limits`).
    pub resources: ResourceLimits,
    /// `linux.devices`: host nodes to bind at the same path, with rwm,
    /// each with the device the bundle says it is.
    pub devices: Vec<(DeviceRequest, DeviceRule)>,
    /// `linux.resources.devices`: its allow rules (see `devices`).
    pub device_rules: Vec<DeviceRule>,
    /// `linux.maskedPaths`, absolute.
    pub masked_paths: Vec<PathBuf>,
    /// `linux.readonlyPaths`, absolute.
    pub readonly_paths: Vec<PathBuf>,
    /// `linux.namespaces` has `user` (without a path).
    pub user_namespace: bool,
    /// `linux.uidMappings` as `(container id, host id, size)`.
    pub uid_mappings: Vec<(u32, u32, u32)>,
    /// `linux.gidMappings` as `(container id, host id, size)`.
    pub gid_mappings: Vec<(u32, u32, u32)>,
    /// `process.terminal`: the command wants a terminal, which only a
    /// caller that receives one (`create --console-socket`) can give it.
    pub terminal: bool,
    /// `process.rlimits` as `(RLIMIT_* number, soft, hard)`.
    pub rlimits: Vec<Rlimit>,
    /// `annotations`, as given.
    pub annotations: BTreeMap<String, String>,
    /// `hooks`, by when palisade runs them.
    pub hooks: HookSet,
    /// What the bundle asks for that palisade does differently, one line
    /// each (`FILE: FIELD: what happens instead`), for the CLI to print.
    pub warnings: Vec<String>,
}

/// A resource limit of the command: `resource` is an `RLIMIT_*` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimit {
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

/// A bundle palisade cannot run as written.
#[derive(Debug, Error)]
pub enum OciError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not a valid OCI runtime spec: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// `bundle/config.json: mounts[3] (/data, type nfs): only bind mounts are supported`.
    #[error("{}: {field}: {message}", path.display())]
    Field {
        /// The bundle's config.json, as the caller named it.
        path: PathBuf,
        /// The JSON path of the field, with context in parentheses.
        field: String,
        message: String,
    },
}

/// Namespaces palisade always creates, whether the bundle lists them or not.
const ALWAYS_NEW: &[LinuxNamespaceType] = &[
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Cgroup,
];

/// Reads `dir/config.json` and converts it, refusing what palisade cannot
/// do. Paths in errors and warnings are shown as `dir` was given.
pub fn load_bundle(dir: &Path) -> Result<Bundle, OciError> {
    let config = dir.join("config.json");
    let read_err = |path: &Path, source| OciError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = fs::read_to_string(&config).map_err(|e| read_err(&config, e))?;
    let parse_err = |source| OciError::Parse {
        path: config.clone(),
        source,
    };
    let spec: Spec = serde_json::from_str(&text).map_err(parse_err)?;
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(parse_err)?;
    let base = fs::canonicalize(dir).map_err(|e| read_err(dir, e))?;
    let mut cx = Cx {
        config,
        base,
        warnings: Vec::new(),
    };
    let bundle = cx.convert(&spec)?;
    cx.unknown_fields(&raw, &spec);
    Ok(Bundle {
        warnings: cx.warnings,
        ..bundle
    })
}

/// An `exec --process` file: one OCI `process` object, judged as a
/// bundle's is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecProcess {
    pub args: Vec<String>,
    /// The whole environment of the new process.
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub user: Option<(u32, u32)>,
    /// `capabilities.bounding` as `CAP_*` names; `None` for the container's.
    pub capabilities: Option<Vec<String>>,
    pub terminal: bool,
    pub rlimits: Vec<Rlimit>,
    pub warnings: Vec<String>,
}

/// Reads an `exec --process` file (`-` is stdin, named `<stdin>`).
pub fn load_process(path: &Path) -> Result<ExecProcess, OciError> {
    let (process, mut cx) = read_part::<oci_spec::runtime::Process>(path)?;
    let p = cx.process(&process)?;
    Ok(ExecProcess {
        args: p.args,
        env: p.env,
        cwd: p.cwd,
        user: p.user,
        capabilities: p.capabilities,
        terminal: p.terminal,
        rlimits: p.rlimits,
        warnings: cx.warnings,
    })
}

/// Reads an `update --resources` file (`-` is stdin): OCI
/// `linux.resources`, in palisade's units, with the warnings of what is
/// done differently.
pub fn load_resources(path: &Path) -> Result<(ResourceLimits, Vec<String>), OciError> {
    let (resources, mut cx) = read_part::<oci_spec::runtime::LinuxResources>(path)?;
    if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(cx.err(
            "devices",
            "cannot be changed by update: change the device policy with `palisade policy apply`",
        ));
    }
    let limits = cx.resources(&resources)?;
    Ok((limits, cx.warnings))
}

/// One part of a spec read from `path` (`-`: stdin), with the context
/// that judges it (errors and warnings name `path`).
fn read_part<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, Cx), OciError> {
    let text = read_input(path)?;
    let part = serde_json::from_str(&text).map_err(|source| OciError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let cx = Cx {
        config: path.to_path_buf(),
        base: PathBuf::from("/"),
        warnings: Vec::new(),
    };
    Ok((part, cx))
}

/// The text of `path`, or of stdin for `-` (at most 1 MiB either way).
fn read_input(path: &Path) -> Result<String, OciError> {
    use std::io::Read;
    const LIMIT: u64 = 1 << 20;
    let err = |source| OciError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    if path == Path::new("-") {
        io::stdin()
            .take(LIMIT + 1)
            .read_to_string(&mut text)
            .map_err(err)?;
    } else {
        fs::File::open(path)
            .and_then(|f| f.take(LIMIT + 1).read_to_string(&mut text))
            .map_err(err)?;
    }
    if text.len() as u64 > LIMIT {
        return Err(err(io::Error::other("larger than 1 MiB")));
    }
    Ok(text)
}

/// The `annotations` of `palisade features`: palisade's version and the
/// annotations it reads.
pub fn features_annotations(version: &str) -> serde_json::Value {
    serde_json::json!({
        "io.palisade.version": version,
        "io.palisade.policy-annotations": format!("{POLICY_ANNOTATION}, {POLICY_FILE_ANNOTATION}"),
        "io.palisade.seccomp": "palisade applies its own profile; linux.seccomp is ignored with a warning",
    })
}

/// The annotation holding a policy's text.
pub const POLICY_ANNOTATION: &str = "io.palisade.policy";
/// The annotation naming a policy file on the host.
pub const POLICY_FILE_ANNOTATION: &str = "io.palisade.policy-file";

/// The policy a bundle's annotations attach, with its text (kept for a
/// restore): `None` when they name none. Both annotations at once, or an
/// `io.palisade.*` annotation palisade does not know (a typo would
/// otherwise leave the container unpoliced), are errors.
pub fn policy_from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<(crate::spec::Policy, String)>, crate::spec::PolicyError> {
    let refuse = |key: &str, message: String| crate::spec::PolicyError {
        file: PathBuf::from(format!("annotation {key}")),
        line: 0,
        message,
    };
    if let Some(key) = annotations.keys().find(|k| {
        k.starts_with("io.palisade.") && *k != POLICY_ANNOTATION && *k != POLICY_FILE_ANNOTATION
    }) {
        return Err(refuse(
            key,
            format!(
                "unknown palisade annotation (palisade reads {POLICY_ANNOTATION} and {POLICY_FILE_ANNOTATION})"
            ),
        ));
    }
    match (
        annotations.get(POLICY_ANNOTATION),
        annotations.get(POLICY_FILE_ANNOTATION),
    ) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(refuse(
            POLICY_ANNOTATION,
            format!("give the policy inline or by {POLICY_FILE_ANNOTATION}, not both"),
        )),
        (Some(text), None) => {
            let name = PathBuf::from(format!("annotation {POLICY_ANNOTATION}"));
            let policy = crate::spec::Policy::parse(&name, text)?;
            if policy == crate::spec::Policy::default() {
                // podman's --annotation keeps only a value's first line:
                // "[network]" alone would police nothing, silently.
                return Err(refuse(
                    POLICY_ANNOTATION,
                    format!(
                        "{text:?} sets no rule, which is no policy at all (was it cut at a line break? podman keeps only the first line of an annotation: write the policy on one line, e.g. network = {{ connect = [\"deny any\"] }}, or use {POLICY_FILE_ANNOTATION})"
                    ),
                ));
            }
            Ok(Some((policy, text.clone())))
        }
        (None, Some(file)) => {
            let path = Path::new(file);
            if !path.is_absolute() {
                return Err(refuse(
                    POLICY_FILE_ANNOTATION,
                    format!("{file:?} must be an absolute path on the host"),
                ));
            }
            crate::spec::Policy::load_with_text(path).map(Some)
        }
    }
}

/// The conversion's context: where errors point, and the warnings so far.
struct Cx {
    config: PathBuf,
    base: PathBuf,
    warnings: Vec<String>,
}

impl Cx {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> OciError {
        OciError::Field {
            path: self.config.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn warn(&mut self, field: &str, message: &str) {
        self.warnings
            .push(format!("{}: {field}: {message}", self.config.display()));
    }

    /// `Err` naming `field` when `present`.
    fn refuse(&self, present: bool, field: &str, message: &str) -> Result<(), OciError> {
        if present {
            Err(self.err(field, message))
        } else {
            Ok(())
        }
    }

    fn convert(&mut self, spec: &Spec) -> Result<Bundle, OciError> {
        let version = spec.version();
        if !version.starts_with("1.") {
            return Err(self.err(
                "ociVersion",
                format!("{version:?} is not supported: palisade reads runtime-spec 1.x bundles"),
            ));
        }
        let other_os = "is not supported: palisade runs Linux containers";
        self.refuse(spec.solaris().is_some(), "solaris", other_os)?;
        self.refuse(spec.windows().is_some(), "windows", other_os)?;
        self.refuse(spec.vm().is_some(), "vm", other_os)?;
        self.refuse(spec.zos().is_some(), "zos", other_os)?;
        self.refuse(
            spec.uid_mappings().is_some() || spec.gid_mappings().is_some(),
            "uidMappings",
            "belongs under linux (linux.uidMappings, linux.gidMappings)",
        )?;

        let Some(process) = spec.process() else {
            return Err(self.err("process", "is required: it says what to run"));
        };
        let process = self.process(process)?;

        let Some(root) = spec.root() else {
            return Err(self.err("root", "is required: it names the root filesystem"));
        };
        let rootfs = self.base.join(root.path());
        if !rootfs.is_dir() {
            return Err(self.err(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ));
        }

        let hostname = match spec.hostname().as_deref() {
            None | Some("") => None,
            Some(h) if h.len() > 64 => {
                return Err(self.err("hostname", format!("{h:?} is longer than 64 bytes")));
            }
            Some(h) => Some(h.to_string()),
        };
        if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
            self.warn("domainname", "ignored: palisade sets only the hostname");
        }
        let hooks = match spec.hooks() {
            Some(h) => self.hooks(h)?,
            None => HookSet::default(),
        };

        let mut mounts = Vec::new();
        for (i, m) in spec.mounts().iter().flatten().enumerate() {
            if let Some(b) = self.mount(i, m)? {
                mounts.push(b);
            }
        }

        let linux = self.linux(spec)?;
        Ok(Bundle {
            dir: self.base.clone(),
            args: process.args,
            env: process.env,
            cwd: process.cwd,
            user: process.user,
            rootfs,
            read_only: root.readonly().unwrap_or(false),
            hostname,
            mounts,
            net_none: linux.net_none,
            capabilities: process.capabilities,
            no_new_privileges: process.no_new_privileges,
            resources: linux.resources,
            devices: linux.devices,
            device_rules: linux.device_rules,
            masked_paths: linux.masked_paths,
            readonly_paths: linux.readonly_paths,
            user_namespace: linux.user_namespace,
            uid_mappings: linux.uid_mappings,
            gid_mappings: linux.gid_mappings,
            terminal: process.terminal,
            rlimits: process.rlimits,
            annotations: spec
                .annotations()
                .clone()
                .map(|a| a.into_iter().collect())
                .unwrap_or_default(),
            hooks,
            warnings: Vec::new(),
        })
    }

    fn linux(&mut self, spec: &Spec) -> Result<LinuxPart, OciError> {
        let default = Default::default();
        let linux = spec.linux().as_ref().unwrap_or(&default);

        let mut seen = HashSet::new();
        let (mut net_none, mut user_namespace) = (false, false);
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            let typ = ns.typ();
            let name = namespace_name(typ);
            let field = format!("linux.namespaces[{i}] ({name})");
            if !seen.insert(typ) {
                return Err(self.err(field, "is listed twice"));
            }
            if let Some(path) = ns.path() {
                return Err(self.err(
                    field,
                    format!(
                        "joining an existing namespace ({}) is not supported; remove the path to get a new one",
                        path.display()
                    ),
                ));
            }
            match typ {
                LinuxNamespaceType::Network => net_none = true,
                LinuxNamespaceType::User => user_namespace = true,
                _ => {}
            }
        }
        let missing: Vec<&str> = ALWAYS_NEW
            .iter()
            .filter(|t| !seen.contains(*t))
            .map(|t| namespace_name(*t))
            .collect();
        if !missing.is_empty() {
            self.warn(
                "linux.namespaces",
                &format!(
                    "no {} namespace: palisade always creates new pid, mount, ipc, uts and cgroup namespaces",
                    missing.join(", ")
                ),
            );
        }

        let uid_mappings = self.id_mappings("linux.uidMappings", linux.uid_mappings())?;
        let gid_mappings = self.id_mappings("linux.gidMappings", linux.gid_mappings())?;
        for (field, list) in [
            ("linux.uidMappings", &uid_mappings),
            ("linux.gidMappings", &gid_mappings),
        ] {
            if user_namespace && list.is_empty() {
                return Err(self.err(field, "a new user namespace needs mappings"));
            }
            if !user_namespace && !list.is_empty() {
                return Err(self.err(
                    field,
                    "mappings need a user namespace (add {\"type\": \"user\"} to linux.namespaces)",
                ));
            }
        }

        let resources = match linux.resources() {
            Some(r) => self.resources(r)?,
            None => ResourceLimits::default(),
        };
        let masked_paths = self.absolute_paths("linux.maskedPaths", linux.masked_paths())?;
        let readonly_paths = self.absolute_paths("linux.readonlyPaths", linux.readonly_paths())?;

        if let Some(sysctl) = linux.sysctl().as_ref().filter(|s| !s.is_empty()) {
            let mut keys: Vec<&str> = sysctl.keys().map(String::as_str).collect();
            keys.sort();
            return Err(self.err(
                "linux.sysctl",
                format!(
                    "is not supported (palisade sets no sysctls): {}",
                    keys.join(", ")
                ),
            ));
        }
        if let Some(p) = linux.rootfs_propagation().as_deref()
            && !matches!(p, "" | "private" | "rprivate")
        {
            return Err(self.err(
                "linux.rootfsPropagation",
                format!("{p:?} is not supported: palisade's mounts are always private"),
            ));
        }
        let unsupported = "is not supported by palisade; remove it";
        self.refuse(
            linux.net_devices().is_some(),
            "linux.netDevices",
            unsupported,
        )?;
        self.refuse(linux.intel_rdt().is_some(), "linux.intelRdt", unsupported)?;
        self.refuse(
            linux.personality().is_some(),
            "linux.personality",
            unsupported,
        )?;
        self.refuse(
            linux.memory_policy().is_some(),
            "linux.memoryPolicy",
            unsupported,
        )?;
        self.refuse(
            linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()),
            "linux.timeOffsets",
            unsupported,
        )?;

        if linux.cgroups_path().is_some() {
            self.warn(
                "linux.cgroupsPath",
                "ignored: palisade places the container's cgroup at palisade/NAME",
            );
        }
        let devices = self.device_nodes(linux.devices().as_deref().unwrap_or_default())?;
        let device_rules = match linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().as_ref())
        {
            Some(entries) => self.device_rules(entries)?,
            None => Vec::new(),
        };
        if linux.seccomp().is_some() {
            self.warn(
                "linux.seccomp",
                "ignored: palisade applies its own default seccomp profile instead",
            );
        }
        if linux.mount_label().is_some() {
            self.warn(
                "linux.mountLabel",
                "ignored: palisade sets no SELinux label",
            );
        }
        Ok(LinuxPart {
            net_none,
            user_namespace,
            uid_mappings,
            gid_mappings,
            resources,
            devices,
            device_rules,
            masked_paths,
            readonly_paths,
        })
    }

    fn id_mappings(
        &self,
        field: &str,
        list: &Option<Vec<LinuxIdMapping>>,
    ) -> Result<Vec<(u32, u32, u32)>, OciError> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, m)| {
                if m.size() == 0 {
                    return Err(self.err(format!("{field}[{i}]"), "size must be at least 1"));
                }
                Ok((m.container_id(), m.host_id(), m.size()))
            })
            .collect()
    }

    fn absolute_paths(
        &self,
        field: &str,
        list: &Option<Vec<String>>,
    ) -> Result<Vec<PathBuf>, OciError> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| {
                let path = PathBuf::from(p);
                if path.is_absolute() {
                    Ok(path)
                } else {
                    Err(self.err(format!("{field}[{i}]"), format!("{p:?} must be absolute")))
                }
            })
            .collect()
    }

    /// Fields of the file that `oci-spec` does not know (a newer spec, or a
    /// typo) are lost in parsing. runtime-spec says unknown properties are
    /// ignored, not errors; palisade says so out loud. Found by comparing
    /// the file with the parsed spec written back.
    fn unknown_fields(&mut self, raw: &serde_json::Value, spec: &Spec) {
        let Ok(known) = serde_json::to_value(spec) else {
            return;
        };
        let mut unknown = Vec::new();
        diff_keys(raw, &known, String::new(), &mut unknown);
        for field in unknown {
            self.warn(&field, "unknown field, ignored");
        }
    }
}

/// Appends to `out` the JSON path of every non-null member of `raw` that
/// `known` lacks.
fn diff_keys(
    raw: &serde_json::Value,
    known: &serde_json::Value,
    at: String,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (raw, known) {
        (Value::Object(r), Value::Object(k)) => {
            for (key, value) in r {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match k.get(key) {
                    Some(kv) => diff_keys(value, kv, path, out),
                    None if value.is_null() => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(r), Value::Array(k)) if r.len() == k.len() => {
            for (i, (rv, kv)) in r.iter().zip(k).enumerate() {
                diff_keys(rv, kv, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The namespace's name as config.json spells it.
fn namespace_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

struct LinuxPart {
    net_none: bool,
    user_namespace: bool,
    uid_mappings: Vec<(u32, u32, u32)>,
    gid_mappings: Vec<(u32, u32, u32)>,
    resources: ResourceLimits,
    devices: Vec<(DeviceRequest, DeviceRule)>,
    device_rules: Vec<DeviceRule>,
    masked_paths: Vec<PathBuf>,
    readonly_paths: Vec<PathBuf>,
}
