//! `mounts` into palisade's bind mounts: palisade mounts the standard
//! filesystems itself, and binds what the bundle adds.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use super::{Cx, OciError};
use crate::spec::BindMount;

/// Filesystems palisade mounts itself in every container, as `runc spec`
/// lists them: `(destination, accepted types, warning when skipped)`.
const PROVIDED: &[(&str, &[&str], Option<&str>)] = &[
    ("/proc", &["proc"], None),
    ("/dev", &["tmpfs"], None),
    ("/dev/pts", &["devpts"], None),
    ("/dev/shm", &["tmpfs"], None),
    (
        "/dev/mqueue",
        &["mqueue"],
        Some("not mounted: palisade's /dev has no mqueue filesystem"),
    ),
    ("/sys", &["sysfs"], None),
    (
        "/sys/fs/cgroup",
        &["cgroup", "cgroup2"],
        Some("not mounted: palisade does not mount a cgroup filesystem in the container"),
    ),
    ("/tmp", &["tmpfs"], None),
];

/// Bind mount options palisade honours: it always binds recursively into a
/// private mount namespace.
const BIND_OPTIONS: &[&str] = &[
    "bind", "rbind", "ro", "rw", "private", "rprivate", "nosuid", "nodev", "noexec", "suid", "dev",
    "exec",
];

impl Cx {
    /// A bind mount, `None` for a filesystem palisade provides itself, or
    /// an error for anything else.
    pub(super) fn mount(&mut self, i: usize, m: &Mount) -> Result<Option<BindMount>, OciError> {
        let dest = m.destination();
        let typ = m.typ().as_deref();
        let options = m.options().as_deref().unwrap_or_default();
        let field = format!(
            "mounts[{i}] ({}, type {})",
            dest.display(),
            typ.unwrap_or("none")
        );
        let is_bind = typ == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
        let provided = PROVIDED
            .iter()
            .find(|(d, types, _)| Path::new(d) == dest && typ.is_some_and(|t| types.contains(&t)));
        if typ == Some("tmpfs") && !is_bind && provided.is_none() {
            return self.tmpfs(&field, dest, options).map(Some);
        }
        if !is_bind {
            return match provided {
                Some((_, _, Some(warning))) => {
                    self.warn(&field, warning);
                    Ok(None)
                }
                Some((_, _, None)) => Ok(None),
                None => Err(self.err(
                    field,
                    "only bind mounts are supported (palisade mounts /proc, /dev, /dev/pts, /dev/shm, /sys and /tmp itself)",
                )),
            };
        }
        let dest = self.destination(&field, dest)?;
        self.refuse(
            m.uid_mappings().is_some() || m.gid_mappings().is_some(),
            &field,
            "id-mapped mounts are not supported",
        )?;
        let Some(source) = m.source() else {
            return Err(self.err(field, "a bind mount needs a source"));
        };
        // Relative sources are relative to the bundle (runtime-spec, config.md).
        let source = self.base.join(source);
        if !source.exists() {
            return Err(self.err(
                field,
                format!("the source {} does not exist", source.display()),
            ));
        }
        let mut read_only = false;
        let mut restrict = crate::spec::MountRestrictions::default();
        for o in options {
            match o.as_str() {
                o if access_option(o, &mut read_only, &mut restrict) => {}
                o if BIND_OPTIONS.contains(&o) => {}
                o => {
                    return Err(self.err(
                        field,
                        format!(
                            "option {o:?} is not supported on bind mounts (supported: {})",
                            BIND_OPTIONS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(Some(BindMount {
            source,
            target: dest,
            read_only,
            restrict,
            tmpfs: None,
        }))
    }

    /// A mount's destination: absolute, and a place that may be mounted
    /// over (see `mount_destination`).
    fn destination(&self, field: &str, dest: &Path) -> Result<PathBuf, OciError> {
        if !dest.is_absolute() {
            return Err(self.err(field, "the destination must be an absolute path"));
        }
        crate::spec::mount_destination(dest).map_err(|why| self.err(field, why))
    }

    /// A `type: tmpfs` mount at a place palisade does not provide itself.
    fn tmpfs(&self, field: &str, dest: &Path, options: &[String]) -> Result<BindMount, OciError> {
        let target = self.destination(field, dest)?;
        let mut read_only = false;
        let mut restrict = crate::spec::MountRestrictions::default();
        let mut data = Vec::new();
        for o in options {
            match o.as_str() {
                o if access_option(o, &mut read_only, &mut restrict) => {}
                "strictatime" | "relatime" | "noatime" | "private" | "rprivate" => {}
                o if ["size=", "mode=", "nr_inodes=", "uid=", "gid="]
                    .iter()
                    .any(|p| o.starts_with(p))
                    && !o.contains(',') =>
                {
                    data.push(o.to_string())
                }
                o => {
                    return Err(self.err(
                        field,
                        format!(
                            "tmpfs option {o:?} is not supported (supported: ro, rw, nosuid, nodev, noexec, strictatime, size=, mode=, nr_inodes=, uid=, gid=)"
                        ),
                    ));
                }
            }
        }
        Ok(BindMount {
            source: PathBuf::from("tmpfs"),
            target,
            read_only,
            restrict,
            tmpfs: Some(data.join(",")),
        })
    }
}

/// Applies a mount option about writes, set-user-id, devices or exec (bind
/// and tmpfs mounts alike, the later of a pair winning); false for any
/// other option.
fn access_option(
    option: &str,
    read_only: &mut bool,
    restrict: &mut crate::spec::MountRestrictions,
) -> bool {
    let (flag, on) = match option {
        "ro" => (read_only, true),
        "rw" => (read_only, false),
        "nosuid" => (&mut restrict.nosuid, true),
        "suid" => (&mut restrict.nosuid, false),
        "nodev" => (&mut restrict.nodev, true),
        "dev" => (&mut restrict.nodev, false),
        "noexec" => (&mut restrict.noexec, true),
        "exec" => (&mut restrict.noexec, false),
        _ => return false,
    };
    *flag = on;
    true
}
