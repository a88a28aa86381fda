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

use crate::spec::{DeviceRule, DeviceType, parse_access};

/// Entries of the container's /dev that palisade makes itself and a device
/// may not replace (symlinks and mount points).
const RESERVED: &[&str] = &["pts", "shm", "fd", "stdin", "stdout", "stderr", "ptmx"];

/// A `--device` flag, parsed but not yet checked against the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub host: PathBuf,
    pub container: PathBuf,
    /// `DEVICE_ACC_*` bits.
    pub access: u32,
}

impl DeviceRequest {
    /// Parses `HOST[:CONTAINER][:PERMS]`: absolute paths (CONTAINER's is
    /// checked by [`DeviceNode::resolve`], after HOST), PERMS of r, w, m
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
}
