//! Where a state root's programs, maps and container links are pinned.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::{EnforceError, object_complete, object_hash};

/// Where this state root's programs, maps and per-container links are
/// pinned in bpffs: `/sys/fs/bpf/palisade/<root>/`, with `<root>` the state
/// root's path with every character but letters, digits and `-` turned
/// into `_` (so separate state roots, as tests use, never share pins).
/// Inside: `obj-<hash>/` for one build's programs and
/// maps, `links/<container>/` for each container's attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    dir: PathBuf,
}

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

impl Pins {
    pub fn for_state_root(root: &Path) -> Self {
        // bpffs refuses names with a dot; everything but letters, digits
        // and '-' becomes '_'.
        let key: String = root
            .to_string_lossy()
            .trim_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            dir: Path::new(BPFFS).join("palisade").join(key),
        }
    }

    /// The directory holding everything pinned for this state root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn object_dir(&self) -> PathBuf {
        self.dir.join(format!("obj-{:016x}", object_hash()))
    }

    pub(super) fn links_dir(&self, container: &str) -> PathBuf {
        self.dir.join("links").join(escape(container))
    }

    /// Detaches a container's programs by removing its link pins (what a
    /// start that died half-way may have left); fine if there are none.
    pub fn remove_links(&self, container: &str) -> Result<(), EnforceError> {
        let links = self.links_dir(container);
        match std::fs::remove_dir_all(&links) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(EnforceError::Pin {
                path: links,
                reason: e.to_string(),
            }),
        }
    }

    /// Whether some container of the root has link pins.
    pub(super) fn has_links(&self) -> bool {
        std::fs::read_dir(self.dir.join("links")).is_ok_and(|mut d| d.next().is_some())
    }

    /// Whether this build's programs and maps are pinned for the root.
    pub fn is_loaded(&self) -> bool {
        object_complete(&self.object_dir())
    }
}

/// A container name as a bpffs file name. Names may hold '.', which bpffs
/// refuses: '_' becomes "__" and '.' becomes "_d", which keeps distinct
/// names distinct.
fn escape(container: &str) -> String {
    container.replace('_', "__").replace('.', "_d")
}

/// Whether some state root on the host has link pins for a container of
/// this name (so a cgroup of that name may be that container's).
pub fn any_root_links(container: &str) -> bool {
    let escaped = escape(container);
    std::fs::read_dir(Path::new(BPFFS).join("palisade"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|root| root.path().join("links").join(&escaped).exists())
}
