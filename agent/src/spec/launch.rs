//! What a container is made of, as plain data: its network mode, bind
//! mounts and device requests as parsed from flags or a bundle, and the
//! [`Recipe`] a checkpoint records to make the container again. Nothing
//! here looks at the host: host checks (does the device exist, is the
//! source a cgroup filesystem) are the runtime's.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DeviceRule, parse_access};

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// The host's network namespace.
    #[default]
    Host,
    /// A private network namespace with only loopback, up.
    None,
    /// A private network namespace plugged into the host bridge
    /// `palisade0` (see `net`).
    Bridge,
}

/// One `--mount SRC:DST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    /// `nosuid`, `nodev`, `noexec` (a bundle's mount options), on the
    /// mount and every mount under it.
    #[serde(default, skip_serializing_if = "MountRestrictions::is_none")]
    pub restrict: MountRestrictions,
    /// A new tmpfs with these options (`size=…,mode=…`) instead of a bind
    /// of `source` (a bundle's `type: tmpfs` mounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<String>,
}

/// What a bind mount refuses beyond writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRestrictions {
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl MountRestrictions {
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

impl BindMount {
    /// Parses `SRC:DST[:ro|:rw]`; both paths absolute, and DST a place
    /// that may be mounted over (see [`mount_destination`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => return Err(format!("invalid mount {text:?}: expected SRC:DST[:ro]")),
        };
        if !source.starts_with('/') || !target.starts_with('/') {
            return Err(format!(
                "invalid mount {text:?}: both paths must be absolute"
            ));
        }
        let target = mount_destination(Path::new(target))
            .map_err(|why| format!("invalid mount {text:?}: {why}"))?;
        Ok(Self {
            source: source.into(),
            target,
            read_only,
            restrict: MountRestrictions::default(),
            tmpfs: None,
        })
    }

    /// `SRC:DST` as given, for messages.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.source.display(), self.target.display())
    }
}

/// A mount destination inside the container, normalised (`.`, `..` and
/// repeated slashes resolved by name), or why it is refused: the root
/// itself, and `/proc`, `/sys` and anything under them, which palisade
/// mounts, masks and makes read-only itself (a mount there would undo
/// that, as runc also refuses).
pub fn mount_destination(path: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err(format!(
            "the destination {} must be absolute",
            path.display()
        ));
    }
    let mut normal = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::Normal(name) => normal.push(name),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let covers = |top: &str| normal.starts_with(top);
    if normal == Path::new("/") {
        return Err(format!(
            "the destination {} is the container's root (use --rootfs to give the root)",
            path.display()
        ));
    }
    if let Some(top) = ["/proc", "/sys"].into_iter().find(|t| covers(t)) {
        return Err(format!(
            "the destination {} is {top} or under it, which palisade mounts and masks itself; mount elsewhere",
            path.display()
        ));
    }
    Ok(normal)
}

/// A `--device` flag, parsed but not yet checked against the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRequest {
    pub host: PathBuf,
    pub container: PathBuf,
    /// `DEVICE_ACC_*` bits.
    pub access: u32,
}

impl DeviceRequest {
    /// Parses `HOST[:CONTAINER][:PERMS]`: absolute paths (CONTAINER's is
    /// checked by the runtime's `DeviceNode::resolve`, after HOST), PERMS of r, w, m
    /// (default rwm).
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid device {text:?}: {why}");
        let parts: Vec<&str> = text.split(':').collect();
        let (host, container, perms) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, c] if c.starts_with('/') => (*h, *c, "rwm"),
            [h, p] => (*h, *h, *p),
            [h, c, p] => (*h, *c, *p),
            _ => return Err(invalid("expected HOST[:CONTAINER][:PERMS]")),
        };
        if !host.starts_with('/') {
            return Err(invalid("the host path must be absolute"));
        }
        let access = parse_access(perms).map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            host: host.into(),
            container: container.into(),
            access,
        })
    }
}

/// The recipe format this palisade writes and reads.
pub const RECIPE_VERSION: u32 = 1;

/// How a container was made, recorded in its state and in its checkpoint
/// so a restore makes the same container again: the parsed spec, never a
/// command line to parse again, and the policy texts that were enforced.
/// An unknown field or version is refused, not ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub version: u32,
    pub launch: Launch,
    /// The policy file's text at `run`, if one was given.
    pub policy: Option<String>,
    /// The last `policy apply`'s text: its network, device and security
    /// sections are the ones in force.
    pub applied_policy: Option<String>,
}

impl Recipe {
    /// The network, device and security policy in force: the last `policy
    /// apply`'s, else the one it started with, else none.
    pub fn policy_in_force(&self) -> Result<super::Policy, super::PolicyError> {
        let text = self.applied_policy.as_ref().or(self.policy.as_ref());
        text.map_or(Ok(super::Policy::default()), |text| {
            super::Policy::parse(std::path::Path::new("<recorded policy>"), text)
        })
    }
}

/// Everything that made the container but its name, its mode (detached or
/// not) and its policy: the command and environment, the filesystem, the
/// network, devices, identity, and the resource limits and egress rate in
/// force at start (the policy's, overridden by flags or a bundle).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<PathBuf>,
    pub hostname: Option<String>,
    pub net: NetMode,
    pub rootfs: Option<PathBuf>,
    pub read_only: bool,
    pub mounts: Vec<BindMount>,
    /// Host devices: each request, and the rule its node had at start (a
    /// restore refuses a host whose node there is another device).
    pub devices: Vec<(DeviceRequest, DeviceRule)>,
    pub device_rules: Vec<DeviceRule>,
    /// The capability set, as the kernel's bitmask.
    pub caps: u64,
    /// uid and gid, when not root.
    pub user: Option<(u32, u32)>,
    pub userns: bool,
    pub parent: Option<String>,
    pub extra_masked: Vec<PathBuf>,
    pub extra_read_only: Vec<PathBuf>,
    pub resources: super::ResourceLimits,
    pub egress: Option<super::Egress>,
    /// The command's resource limits (a bundle's `process.rlimits`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<super::Rlimit>,
    /// The container sees its own `/proc` figures (`[view] proc`,
    /// `--proc-view`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proc_view: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mount_syntax() {
        assert_eq!(
            BindMount::parse("/a:/b").unwrap(),
            BindMount {
                source: "/a".into(),
                target: "/b".into(),
                read_only: false,
                restrict: Default::default(),
                tmpfs: None,
            }
        );
        assert!(BindMount::parse("/a:/b:ro").unwrap().read_only);
        assert!(BindMount::parse("a:/b").is_err());
        assert!(BindMount::parse("/a").is_err());
        assert!(BindMount::parse("/a:/b:rx").is_err());
    }

    #[test]
    fn destinations_are_normalised_and_proc_sys_and_root_refused() {
        let ok = |d: &str| mount_destination(Path::new(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
        assert_eq!(ok("/mnt"), Path::new("/mnt"));
        assert_eq!(ok("//mnt///data/./x/.."), Path::new("/mnt/data"));
        assert_eq!(ok("/processes"), Path::new("/processes"));
        assert_eq!(ok("/system"), Path::new("/system"));
        assert_eq!(ok("/../../mnt"), Path::new("/mnt"));
        for d in [
            "/proc",
            "/proc/",
            "/proc/sys",
            "//proc",
            "/./proc/self",
            "/mnt/../proc",
            "/sys",
            "/sys/fs/cgroup",
            "/tmp/../sys//kernel",
            "/",
            "/mnt/..",
            "/..",
        ] {
            assert!(mount_destination(Path::new(d)).is_err(), "{d}");
            assert!(BindMount::parse(&format!("/tmp:{d}")).is_err(), "{d}");
        }
        let e = BindMount::parse("/sys/fs/cgroup:/mnt/../proc").unwrap_err();
        assert!(e.contains("/proc"), "{e}");
        assert_eq!(
            BindMount::parse("/a://b/./c").unwrap().target,
            Path::new("/b/c")
        );
    }
}
