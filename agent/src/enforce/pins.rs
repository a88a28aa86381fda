//! Where a state root's programs, maps and container links are pinned.

use std::{
    io,
    os::unix::ffi::OsStrExt,
    path::{Component, Path, PathBuf},
};

use sha2::{Digest as _, Sha256};

use super::{EnforceError, object_complete, object_hash};

/// Where this state root's programs, maps and per-container links are
/// pinned in bpffs: `/sys/fs/bpf/palisade/<key>/`, with `<key>` made from
/// the state root's canonical path (see [`root_key`]), so separate state
/// roots, as tests use, never share pins. Inside: `obj-<hash>/` for one
/// build's programs and maps, `links/<container>/` for each container's
/// attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    dir: PathBuf,
}

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// How many characters of the path a root's key shows.
const READABLE: usize = 40;

impl Pins {
    pub fn for_state_root(root: &Path) -> Self {
        Self {
            dir: Path::new(BPFFS)
                .join("palisade")
                .join(root_key(&canonical(root))),
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

    /// The containers that have a link directory in this root (whatever
    /// their state), by name.
    pub fn linked_containers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("links"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(unescape))
            .collect()
    }

    /// Whether `container` has a pinned link for every hook.
    pub fn links_complete(&self, container: &str) -> bool {
        let links = self.links_dir(container);
        super::hooks::HOOKS
            .iter()
            .all(|hook| links.join(super::link_file(hook.name)).exists())
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

/// A state root's bpffs directory name: `_` and the path's last 39
/// characters with every character but letters, digits and `-` as `_`
/// (bpffs refuses a dot), for people reading `ls`, then `-` and 16 hex
/// digits of the SHA-256 of the whole path, which is what keeps
/// `/x/a.b` and `/x/a_b` apart. It is at most 57 bytes (bpffs names may
/// have 255), and the leading `_` keeps it from ever looking like a
/// `host-<hash>` directory.
fn root_key(path: &Path) -> String {
    let bytes = path.as_os_str().as_bytes();
    let sanitized: Vec<u8> = bytes
        .strip_prefix(b"/")
        .unwrap_or(bytes)
        .iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || c == b'-' {
                c
            } else {
                b'_'
            }
        })
        .collect();
    let tail = &sanitized[sanitized.len().saturating_sub(READABLE - 1)..];
    let digest = Sha256::digest(bytes);
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("_{}-{hash}", String::from_utf8_lossy(tail))
}

/// The state root's path with symbolic links, `.` and `..` resolved, as
/// far as it exists (a root is made by its first `run`, and must map to
/// the same key before and after): the longest existing ancestor is
/// canonicalized and the rest appended.
fn canonical(root: &Path) -> PathBuf {
    let mut missing: Vec<Component> = Vec::new();
    let mut existing = root;
    let base = loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            break real;
        }
        let mut parts = existing.components();
        match parts.next_back() {
            Some(last @ (Component::Normal(_) | Component::ParentDir | Component::CurDir)) => {
                missing.push(last);
                existing = parts.as_path();
            }
            // Nothing of it exists, not even `/` (or it is relative).
            _ => break PathBuf::from("/"),
        }
    };
    let mut path = base;
    for part in missing.into_iter().rev() {
        match part {
            Component::ParentDir => {
                path.pop();
            }
            Component::Normal(name) => path.push(name),
            _ => {}
        }
    }
    path
}

/// A container name as a bpffs file name. Names may hold '.', which bpffs
/// refuses: '_' becomes "__" and '.' becomes "_d", which keeps distinct
/// names distinct.
fn escape(container: &str) -> String {
    container.replace('_', "__").replace('.', "_d")
}

/// The container name an [`escape`]d file name stands for; `None` for a
/// name `escape` never makes.
fn unescape(file: &str) -> Option<String> {
    let mut name = String::with_capacity(file.len());
    let mut chars = file.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next()? {
                '_' => name.push('_'),
                'd' => name.push('.'),
                _ => return None,
            },
            c => name.push(c),
        }
    }
    Some(name)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> String {
        root_key(Path::new(path))
    }

    #[test]
    fn escaped_names_come_back() {
        for name in ["web", "a.b", "a_b", "a__.d_", "_d"] {
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
        }
        assert_eq!(unescape("a_x"), None);
        assert_eq!(unescape("a_"), None);
    }

    #[test]
    fn roots_differing_only_in_punctuation_get_different_dirs() {
        assert_ne!(key("/x/a.b"), key("/x/a_b"));
        assert_ne!(
            Pins::for_state_root(Path::new("/nonexistent-palisade/x/a.b")),
            Pins::for_state_root(Path::new("/nonexistent-palisade/x/a_b"))
        );
    }

    #[test]
    fn key_is_readable_and_short() {
        let k = key("/run/palisade");
        assert!(k.starts_with("_run_palisade-"), "{k}");
        let long = format!("/{}", ["a.b"; 200].join("/"));
        for k in [key(&long), key("/run/palisade"), key("/")] {
            // NAME_MAX, and what bpffs accepts: no dot, no slash.
            assert!(k.len() <= 57 && k.len() < 256, "{k}");
            assert!(!k.contains(['.', '/']), "{k}");
            assert!(!k.starts_with("host-"), "{k}");
        }
    }

    #[test]
    fn key_is_of_the_canonical_path() {
        let a = Pins::for_state_root(Path::new("/nonexistent-palisade/a/../b/./c/"));
        let b = Pins::for_state_root(Path::new("/nonexistent-palisade//b/c"));
        assert_eq!(a, b);
        // An existing directory reached through a link is the directory.
        let dir = std::env::temp_dir().join(format!("palisade-pins-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let _ = std::fs::remove_file(dir.join("link"));
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let through = Pins::for_state_root(&dir.join("link").join("state"));
        let direct = Pins::for_state_root(&dir.join("real").join("state"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(through, direct);
    }
}
