//! The image directory, as untrusted ground: checkpoint writes only into
//! a directory it made itself (mode 0700) or one that was empty, each file
//! new (`O_EXCL`) and never through a link; restore opens each file
//! without following links and without blocking, accepts only regular
//! files that no one but us could have changed, and reads each one only
//! up to its bound. Every file is named relative to one fd of the
//! directory, so swapping the directory's path meanwhile changes nothing.

use std::{
    fs::File,
    io::Read,
    os::{
        fd::{AsFd, OwnedFd},
        unix::fs::{MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use nix::errno::Errno;

use super::CheckpointError;
use crate::sys::fs as sysfs;

/// An image directory being written.
#[derive(Debug)]
pub struct ImageDir {
    path: PathBuf,
    fd: OwnedFd,
    /// We made the directory (so a failed dump removes it).
    made: bool,
    /// Files made so far (a failed dump removes them).
    created: std::cell::RefCell<Vec<&'static str>>,
    /// The manifest is written: the image is complete and stays.
    complete: std::cell::Cell<bool>,
}

impl ImageDir {
    /// Makes `path` (mode 0700; missing parents too) or takes it if it is
    /// an empty directory; refuses a symbolic link, a non-directory and a
    /// directory holding anything.
    pub fn create(path: &Path) -> Result<Self, CheckpointError> {
        let bad = |what: String| CheckpointError::BadDir {
            dir: path.display().to_string(),
            what,
        };
        let mut made = false;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(bad(
                    "is a symbolic link: give the directory itself (palisade never writes an image through a link)".into(),
                ));
            }
            Ok(m) if !m.is_dir() => return Err(bad("exists and is not a directory".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| bad(format!("cannot make its parent: {e}")))?;
                }
                sysfs::mkdir(path, 0o700)
                    .map_err(|e| bad(format!("cannot make it: {}", e.desc())))?;
                made = true;
            }
            Err(e) => return Err(bad(e.to_string())),
        }
        // Opened without following a link: a directory swapped for one
        // since the check above is refused here.
        let fd = sysfs::open_dir_nofollow(path).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => {
                bad("is a symbolic link or not a directory: give the directory itself".into())
            }
            e => bad(format!("cannot open it: {}", e.desc())),
        })?;
        let dir = ImageDir {
            path: path.to_path_buf(),
            fd,
            made,
            created: Default::default(),
            complete: Default::default(),
        };
        if let Some(entry) =
            first_entry(&dir.fd).map_err(|e| bad(format!("cannot list it: {e}")))?
        {
            let what = format!(
                "is not empty (it holds {entry:?}): give a new or empty directory (palisade never writes over files, an earlier image included)"
            );
            // Not ours to remove, even if we made it (someone filled it).
            return Err(bad(what));
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `name` (new, mode 0600, not through a link) for writing.
    pub fn create_file(&self, name: &'static str) -> Result<File, CheckpointError> {
        let file = sysfs::create_at(self.fd.as_fd(), name, 0o600).map_err(|e| {
            CheckpointError::Write(format!(
                "{}: cannot create it: {} (did something else write into the directory?)",
                self.path.join(name).display(),
                e.desc()
            ))
        })?;
        self.created.borrow_mut().push(name);
        Ok(file)
    }

    /// Marks the image complete: [`ImageDir::discard`] then keeps it.
    pub fn complete(&self) {
        self.complete.set(true);
    }

    /// Removes what this dump wrote (and the directory, if it made it),
    /// unless the image is complete.
    pub fn discard(&self) {
        if self.complete.get() {
            return;
        }
        for name in self.created.borrow_mut().drain(..) {
            let _ = sysfs::unlink_at(self.fd.as_fd(), name);
        }
        if self.made {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// A name in the directory other than `.` and `..`, if any.
fn first_entry(fd: &OwnedFd) -> std::io::Result<Option<String>> {
    use std::os::fd::AsRawFd;
    // The fd's own directory, through /proc: the path may have changed.
    let mut listing = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    listing
        .next()
        .transpose()
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
}

/// An image directory being read.
#[derive(Debug)]
pub struct ImageReader {
    path: PathBuf,
    fd: OwnedFd,
}

impl ImageReader {
    /// Opens the directory `path` itself (not through a link).
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let bad = |what: String| CheckpointError::BadDir {
            dir: path.display().to_string(),
            what,
        };
        let fd = sysfs::open_dir_nofollow(path).map_err(|e| match e {
            Errno::ENOENT => bad("does not exist".into()),
            Errno::ELOOP | Errno::ENOTDIR => {
                bad("is a symbolic link or not a directory: give the image directory itself".into())
            }
            e => bad(format!("cannot open it: {}", e.desc())),
        })?;
        Ok(ImageReader {
            path: path.to_path_buf(),
            fd,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bad(&self, name: &str, what: impl std::fmt::Display) -> CheckpointError {
        CheckpointError::Image(format!("{}: {what}", self.path.join(name).display()))
    }

    /// Opens `name`: a regular file (not a link, FIFO or device), owned
    /// by us and writable by no one else (so that what is checked now is
    /// what is read later), of at most `max` bytes. Returns it with its
    /// size; `Ok(None)` if there is no such file.
    pub fn open_file(&self, name: &str, max: u64) -> Result<Option<(File, u64)>, CheckpointError> {
        let file = match sysfs::open_at(self.fd.as_fd(), name) {
            Ok(f) => f,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(self.bad(
                    name,
                    "is a symbolic link: refused (an image holds only regular files)",
                ));
            }
            Err(e) => return Err(self.bad(name, format!("cannot open it: {}", e.desc()))),
        };
        let meta = file
            .metadata()
            .map_err(|e| self.bad(name, format!("cannot stat it: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(self.bad(name, "not a regular file: refused"));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(self.bad(
                name,
                format!(
                    "owned by uid {}: refused, as its owner could change it while it is restored (copy the image as root)",
                    meta.uid()
                ),
            ));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(self.bad(
                name,
                format!(
                    "mode {:o}: writable by others, refused (chmod go-w it)",
                    meta.permissions().mode() & 0o7777
                ),
            ));
        }
        if meta.len() > max {
            return Err(self.bad(
                name,
                format!(
                    "{} bytes, more than the {max} an image may hold",
                    meta.len()
                ),
            ));
        }
        Ok(Some((file, meta.len())))
    }

    /// Like [`ImageReader::open_file`], a missing file being an error.
    pub fn require_file(&self, name: &str, max: u64) -> Result<(File, u64), CheckpointError> {
        self.open_file(name, max)?
            .ok_or_else(|| self.bad(name, "missing: not a palisade image, or an incomplete one"))
    }

    /// The whole of `name` (at most `max` bytes), or `Ok(None)` if it is
    /// missing.
    pub fn read_file(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, CheckpointError> {
        let Some((file, len)) = self.open_file(name, max)? else {
            return Ok(None);
        };
        self.read_opened(name, file, len).map(Some)
    }

    /// The whole of `file` (`name`, opened by [`ImageReader::open_file`]
    /// and found `len` bytes long).
    pub fn read_opened(
        &self,
        name: &str,
        file: File,
        len: u64,
    ) -> Result<Vec<u8>, CheckpointError> {
        let mut data = Vec::with_capacity(len as usize);
        // One byte past the size: a file that grew is noticed.
        file.take(len + 1)
            .read_to_end(&mut data)
            .map_err(|e| self.bad(name, format!("cannot read it: {e}")))?;
        if data.len() as u64 != len {
            return Err(self.bad(name, "changed size while it was read"));
        }
        Ok(data)
    }

    /// [`ImageReader::read_file`], a missing file being an error.
    pub fn require(&self, name: &str, max: u64) -> Result<Vec<u8>, CheckpointError> {
        self.read_file(name, max)?
            .ok_or_else(|| self.bad(name, "missing: not a palisade image, or an incomplete one"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link planted after the directory was taken is not written
    /// through: the file's creation fails and the link's target is left
    /// as it was; a failed dump then removes what it made.
    #[test]
    fn a_link_planted_meanwhile_is_not_followed() {
        let base = std::env::temp_dir().join(format!("palisade-imagedir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = base.join("image");
        let dir = ImageDir::create(&path).unwrap();
        std::os::unix::fs::symlink(&victim, path.join("meta.json")).unwrap();
        assert!(matches!(
            dir.create_file("meta.json"),
            Err(CheckpointError::Write(_))
        ));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        dir.create_file("pages.img").unwrap();
        std::fs::remove_file(path.join("meta.json")).unwrap();
        dir.discard();
        assert!(!path.exists(), "what it made is gone");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
