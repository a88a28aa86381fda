//! Host devices given to a container (`--device HOST[:CONTAINER][:PERMS]`,
//! an OCI bundle's `linux.devices`): the host node is checked before
//! anything is created, its rule joins the container's device rules, and
//! its node is bound into the container's /dev by `rootfs`.
//!
//! The node is a bind mount of the host's, never a mknod: mknod needs the
//! `m` access the rule may not grant, and is impossible in a user
//! namespace.

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Component, Path, PathBuf},
};

use crate::spec::{DeviceRequest, DeviceRule, DeviceType};

/// Entries of the container's /dev that palisade makes itself and a device
/// may not replace (symlinks and mount points).
const RESERVED: &[&str] = &["pts", "shm", "fd", "stdin", "stdout", "stderr", "ptmx"];

/// A device node for the container: the host node (checked), where it
/// appears inside, and the rule that grants its access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub host: PathBuf,
    pub container: PathBuf,
    pub rule: DeviceRule,
}

impl DeviceNode {
    /// Checks that the host path is a character or block device (following
    /// symlinks, as /dev/disk/by-id/… are) and takes its type and numbers,
    /// then that the path inside is one palisade can make.
    pub fn resolve(request: &DeviceRequest) -> Result<Self, String> {
        let host = &request.host;
        let meta = std::fs::metadata(host).map_err(|e| format!("{}: {e}", host.display()))?;
        let kind = match meta.file_type() {
            t if t.is_char_device() => DeviceType::Char,
            t if t.is_block_device() => DeviceType::Block,
            _ => {
                return Err(format!(
                    "{}: not a character or block device",
                    host.display()
                ));
            }
        };
        check_container_path(&request.container)?;
        let rdev = meta.rdev();
        Ok(Self {
            host: host.clone(),
            container: request.container.clone(),
            rule: DeviceRule::exact(kind, libc::major(rdev), libc::minor(rdev), request.access),
        })
    }
}

impl DeviceNode {
    /// Resolves `request` and checks that the host's node is the device
    /// `expected` names (a bundle's `linux.devices` entry, or the device a
    /// checkpointed container had): palisade binds the host's node, so
    /// another device there is refused, never bound in its place.
    pub fn resolve_as(request: &DeviceRequest, expected: &DeviceRule) -> Result<Self, String> {
        let node = Self::resolve(request)?;
        let found = (node.rule.kind, node.rule.major, node.rule.minor);
        if found != (expected.kind, expected.major, expected.minor) {
            let shown = |r: &DeviceRule| {
                let text = r.to_string();
                text.rsplit_once(' ')
                    .map_or(text.clone(), |(head, _)| head.to_string())
            };
            return Err(format!(
                "{}: the host's node there is {}, not {}: palisade binds the host's node into the container",
                request.host.display(),
                shown(&node.rule),
                shown(expected)
            ));
        }
        Ok(Self {
            rule: DeviceRule {
                access: expected.access,
                ..node.rule
            },
            ..node
        })
    }
}

/// A device's path inside the container: absolute and normal, under /dev,
/// not one of palisade's own entries there.
fn check_container_path(path: &Path) -> Result<(), String> {
    let mut components = path.components();
    if components.next() != Some(Component::RootDir)
        || components.next() != Some(Component::Normal("dev".as_ref()))
    {
        return Err(format!(
            "{}: the path inside the container must be under /dev",
            path.display()
        ));
    }
    let rest: Vec<Component> = components.collect();
    if rest.is_empty() || rest.iter().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "{}: must name a file under /dev, without . or ..",
            path.display()
        ));
    }
    if let Some(Component::Normal(first)) = rest.first()
        && RESERVED.iter().any(|r| first == r)
    {
        return Err(format!(
            "{}: /dev/{} is palisade's own",
            path.display(),
            first.to_string_lossy()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use palisade_common::{DEVICE_ACC_MKNOD, DEVICE_ACC_READ, DEVICE_ACC_WRITE};

    use super::*;

    #[test]
    fn device_flag_syntax() {
        let all = DEVICE_ACC_READ | DEVICE_ACC_WRITE | DEVICE_ACC_MKNOD;
        let r = DeviceRequest::parse("/dev/loop0").unwrap();
        assert_eq!(
            (r.host.to_str(), r.container.to_str(), r.access),
            (Some("/dev/loop0"), Some("/dev/loop0"), all)
        );
        let r = DeviceRequest::parse("/dev/loop0:r").unwrap();
        assert_eq!(
            (r.container.to_str(), r.access),
            (Some("/dev/loop0"), DEVICE_ACC_READ)
        );
        let r = DeviceRequest::parse("/dev/loop0:/dev/xvda").unwrap();
        assert_eq!((r.container.to_str(), r.access), (Some("/dev/xvda"), all));
        let r = DeviceRequest::parse("/dev/loop0:/dev/disk/xvda:rw").unwrap();
        assert_eq!(
            (r.container.to_str(), r.access),
            (Some("/dev/disk/xvda"), DEVICE_ACC_READ | DEVICE_ACC_WRITE)
        );
        for bad in [
            "dev/loop0",
            "/dev/loop0:rx",
            "/dev/loop0:",
            "/dev/loop0:/dev/x:rw:m",
        ] {
            assert!(DeviceRequest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn container_paths_are_under_dev_and_not_palisades_own() {
        for good in ["/dev/loop0", "/dev/disk/by-id/x", "/dev/nulls"] {
            assert!(check_container_path(Path::new(good)).is_ok(), "{good}");
        }
        for bad in [
            "/mnt/x",
            "/dev",
            "/dev/",
            "/dev/../etc/x",
            "dev/x",
            "/dev/pts/9",
            "/dev/shm/x",
            "/dev/ptmx",
            "/dev/fd",
        ] {
            assert!(check_container_path(Path::new(bad)).is_err(), "{bad}");
        }
        let request = DeviceRequest::parse("/dev/null:/mnt/null:r").unwrap();
        let e = DeviceNode::resolve(&request).unwrap_err();
        assert!(
            e.contains("/mnt/null: the path inside the container must be under /dev"),
            "{e}"
        );
    }

    #[test]
    fn host_nodes_are_checked() {
        let null = DeviceRequest::parse("/dev/null:/dev/nothing:rw").unwrap();
        let node = DeviceNode::resolve(&null).unwrap();
        assert_eq!(node.rule.to_string(), "c 1:3 rw");
        assert_eq!(node.container, Path::new("/dev/nothing"));
        let e = DeviceNode::resolve(&DeviceRequest::parse("/etc/hostname").unwrap()).unwrap_err();
        assert!(e.contains("not a character or block device"), "{e}");
        let e =
            DeviceNode::resolve(&DeviceRequest::parse("/dev/no-such-node").unwrap()).unwrap_err();
        assert!(e.contains("/dev/no-such-node"), "{e}");
    }

    #[test]
    fn a_node_must_be_the_device_expected() {
        const DEVICE_RWM: u32 = DEVICE_ACC_READ | DEVICE_ACC_WRITE | DEVICE_ACC_MKNOD;
        let request = |host: &str| DeviceRequest {
            host: host.into(),
            container: "/dev/null".into(),
            access: DEVICE_RWM,
        };
        let rule = |kind, major, minor| DeviceRule::exact(kind, major, minor, DEVICE_RWM);
        let null = rule(DeviceType::Char, 1, 3);
        assert!(DeviceNode::resolve_as(&request("/dev/null"), &null).is_ok());
        for (host, expected, needle) in [
            ("/dev/null", rule(DeviceType::Char, 1, 4), "not c 1:4"),
            ("/dev/null", rule(DeviceType::Block, 1, 3), "not b 1:3"),
            ("/dev/palisade-none", null, "No such file"),
            ("/etc/hostname", null, "not a character or block device"),
        ] {
            let e = DeviceNode::resolve_as(&request(host), &expected).unwrap_err();
            assert!(e.contains(needle), "{host}: {e}");
        }
    }
}
