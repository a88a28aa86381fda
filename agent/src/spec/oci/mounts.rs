//! `mounts` into palisade's bind mounts: palisade mounts the standard
//! filesystems itself, and binds what the bundle adds.

use std::path::Path;

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
const BIND_OPTIONS: &[&str] = &["bind", "rbind", "ro", "rw", "private", "rprivate"];

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
        if !is_bind {
            let provided = PROVIDED.iter().find(|(d, types, _)| {
                Path::new(d) == dest && typ.is_some_and(|t| types.contains(&t))
            });
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
        if !dest.is_absolute() {
            return Err(self.err(field, "the destination must be an absolute path"));
        }
        let dest = match crate::spec::mount_destination(dest) {
            Ok(d) => d,
            Err(why) => return Err(self.err(field, why)),
        };
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
        for o in options {
            match o.as_str() {
                "ro" => read_only = true,
                "rw" => read_only = false,
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
        }))
    }
}
