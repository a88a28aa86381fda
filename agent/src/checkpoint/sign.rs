//! Image authentication: a host key and a signed manifest.
//!
//! The key is 32 random bytes in a root-only file (`/etc/palisade/image.key`
//! unless `--image-key` or `PALISADE_IMAGE_KEY` names another), made on
//! first use by `checkpoint`. The manifest lists every image file with its
//! size and BLAKE3 digest (pages.img as the digests of its 4 MiB pieces,
//! so that the restore checks it on several threads; BLAKE3 runs several
//! times faster than SHA-256 here, so the dump's stream keeps its pace),
//! and carries an HMAC-SHA256 of its body under the key. Whoever holds the key can
//! make an image that restores; whoever does not cannot alter one.
//!
//! This module owns the key file and the manifest's bytes; it never looks
//! at image contents (`image.rs` hands it digests). The migration stream
//! can sign and verify its own messages with [`ImageKey::mac`] and
//! [`ImageKey::verify`].

use std::{
    io::Read,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Where the host key lives unless told otherwise.
pub const DEFAULT_KEY: &str = "/etc/palisade/image.key";
/// The environment variable that names another key file.
pub const KEY_ENV: &str = "PALISADE_IMAGE_KEY";
/// Bytes of key.
pub const KEY_LEN: usize = 32;
/// pages.img is digested in pieces of this many bytes (the last shorter).
pub const PIECE: u64 = 4 << 20;

/// The first line of a manifest.
const MAGIC: &str = "palisade-image-manifest 2";
/// What the manifest's HMAC covers: this, then the body's bytes.
const MANIFEST_DOMAIN: &[u8] = b"palisade image manifest 2\n";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file is there but cannot be a key: bad input.
    #[error(
        "image key {}: {what}", path.display()
    )]
    Bad { path: PathBuf, what: String },
    /// No key to verify with.
    #[error(
        "image key {}: does not exist: this host has signed no image with it (name the key that signed the image with --image-key, or restore it unauthenticated with --trust-image)",
        path.display()
    )]
    Missing { path: PathBuf },
    /// The file could not be read or made.
    #[error("image key {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

impl KeyError {
    /// True for a failure of the host (exit 125) rather than bad input.
    pub fn is_operational(&self) -> bool {
        matches!(self, KeyError::Io { .. })
    }
}

/// A BLAKE3 digest (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    fn hex(&self) -> String {
        super::image::hex(&self.0)
    }

    fn parse(s: &str) -> Option<Self> {
        super::image::unhex(s)?.try_into().ok().map(Digest)
    }
}

/// BLAKE3 of bytes given in parts.
#[derive(Clone, Default)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        Digest(*self.0.finalize().as_bytes())
    }
}

/// BLAKE3 over a stream cut into [`PIECE`]-byte pieces: one digest per
/// piece, the pieces counted from the stream's first byte.
#[derive(Clone, Default)]
pub struct PieceHasher {
    current: blake3::Hasher,
    in_piece: u64,
    done: Vec<Digest>,
}

impl PieceHasher {
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = ((PIECE - self.in_piece) as usize).min(bytes.len());
            self.current.update(&bytes[..take]);
            self.in_piece += take as u64;
            bytes = &bytes[take..];
            if self.in_piece == PIECE {
                self.done.push(Digest(
                    *std::mem::take(&mut self.current).finalize().as_bytes(),
                ));
                self.in_piece = 0;
            }
        }
    }

    /// The digests of every piece, the last one short if need be.
    pub fn finish(mut self) -> Vec<Digest> {
        if self.in_piece > 0 {
            self.done.push(Digest(*self.current.finalize().as_bytes()));
        }
        self.done
    }
}

/// The host key.
pub struct ImageKey {
    key: [u8; KEY_LEN],
    path: PathBuf,
}

impl std::fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageKey({}, id {})", self.path.display(), self.id())
    }
}

impl ImageKey {
    /// The key at `path`, made (32 bytes of the kernel's randomness, mode
    /// 0600) if there is none yet; the default key's directory is made
    /// root-only (0700) too.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match Self::load(path) {
            Err(KeyError::Missing { .. }) => {}
            other => return other,
        }
        let io = |what, source| KeyError::Io {
            path: path.to_path_buf(),
            what,
            source,
        };
        if path == Path::new(DEFAULT_KEY)
            && let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(dir)
                .map_err(|e| io("create its directory", e))?;
        }
        let mut key = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| io("read /dev/urandom", e))?;
        // O_EXCL: never through a link, never over a key made meanwhile.
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &key)?;
                f.sync_all()
            });
        match made {
            Ok(()) => Ok(ImageKey {
                key,
                path: path.to_path_buf(),
            }),
            // Another checkpoint made it first: use that one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(io("create", e))
            }
        }
    }

    /// The key at `path`: a regular file (not a link) of exactly 32
    /// bytes, owned by us and unreadable by anyone else.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bad = |what: String| KeyError::Bad {
            path: path.to_path_buf(),
            what,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(bad("is a symbolic link: name the file itself".into()));
            }
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_path_buf(),
                    what: "open",
                    source,
                });
            }
        };
        let meta = file.metadata().map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            what: "stat",
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(bad("not a regular file".into()));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(bad(format!(
                "owned by uid {}, not by us: chown it to root",
                meta.uid()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "mode {:o}: others can read or change it; chmod 600 it (and make a new key if it was shared)",
                meta.permissions().mode() & 0o7777
            )));
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(bad(format!(
                "{} bytes, a key is {KEY_LEN} random bytes",
                meta.len()
            )));
        }
        let mut key = [0u8; KEY_LEN];
        file.read_exact(&mut key).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            what: "read",
            source,
        })?;
        Ok(ImageKey {
            key,
            path: path.to_path_buf(),
        })
    }

    /// A key of these bytes (tests, and a key received out of band).
    pub fn from_bytes(key: [u8; KEY_LEN], path: PathBuf) -> Self {
        ImageKey { key, path }
    }

    /// Where the key was read from.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// A public name of the key (not a secret: a hash of it), so that an
    /// error can say an image was signed by another key.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"palisade image key id\n");
        h.update(self.key);
        super::image::hex(&h.finalize()[..8])
    }

    fn hmac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    /// HMAC-SHA256 of `domain` then `bytes`: a domain keeps the tags of
    /// one kind of message from passing for another's.
    pub fn mac(&self, domain: &[u8], bytes: &[u8]) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(domain);
        m.update(bytes);
        m.finalize().into_bytes().into()
    }

    /// True if `tag` is the HMAC of `domain` then `bytes`, compared in
    /// constant time.
    pub fn verify(&self, domain: &[u8], bytes: &[u8], tag: &[u8]) -> bool {
        let mut m = self.hmac();
        m.update(domain);
        m.update(bytes);
        m.verify_slice(tag).is_ok()
    }
}

/// A whole file's size and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole {
    pub size: u64,
    pub digest: Digest,
}

/// What the manifest says of the image's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub meta: Whole,
    pub files: Whole,
    pub pages_size: u64,
    /// One digest per [`PIECE`] bytes of pages.img.
    pub pages: Vec<Digest>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WholeText {
    size: u64,
    blake3: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PiecesText {
    size: u64,
    piece_size: u64,
    blake3: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestText {
    #[serde(rename = "meta.json")]
    meta: WholeText,
    #[serde(rename = "files.img")]
    files: WholeText,
    #[serde(rename = "pages.img")]
    pages: PiecesText,
}

/// Why a manifest is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("not a palisade image manifest")]
    NotManifest,
    #[error(
        "signed by another key (id {theirs}) than {path} (id {ours}): restore it on the host that made it, name its key with --image-key, or restore it unauthenticated with --trust-image"
    )]
    ForeignKey {
        theirs: String,
        ours: String,
        path: String,
    },
    #[error(
        "its signature does not match its contents: the image was altered after it was written (or signed by another key); it is refused"
    )]
    BadSignature,
    #[error("malformed: {0}")]
    Malformed(String),
}

impl Manifest {
    /// The manifest file's bytes, signed by `key`.
    pub fn encode(&self, key: &ImageKey) -> Vec<u8> {
        let whole = |w: &Whole| WholeText {
            size: w.size,
            blake3: w.digest.hex(),
        };
        let text = ManifestText {
            meta: whole(&self.meta),
            files: whole(&self.files),
            pages: PiecesText {
                size: self.pages_size,
                piece_size: PIECE,
                blake3: self.pages.iter().map(Digest::hex).collect(),
            },
        };
        let body = serde_json::to_vec_pretty(&text).expect("a manifest serialises");
        let tag = key.mac(MANIFEST_DOMAIN, &body);
        let mut out = format!(
            "{MAGIC}\nkey {}\nhmac-sha256 {}\n",
            key.id(),
            super::image::hex(&tag)
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Reads manifest `bytes`. With a key its signature is checked before
    /// the body is even parsed; without one (`--trust-image`) the body is
    /// taken as it is.
    pub fn decode(bytes: &[u8], key: Option<&ImageKey>) -> Result<Self, ManifestError> {
        let mut lines = bytes.splitn(4, |b| *b == b'\n');
        let magic = lines.next().ok_or(ManifestError::NotManifest)?;
        if magic != MAGIC.as_bytes() {
            return Err(ManifestError::NotManifest);
        }
        let field = |line: Option<&[u8]>, name: &str| -> Result<String, ManifestError> {
            let line = line
                .and_then(|l| std::str::from_utf8(l).ok())
                .ok_or(ManifestError::NotManifest)?;
            line.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| ManifestError::Malformed(format!("no \"{name}\" line")))
        };
        let id = field(lines.next(), "key")?;
        let tag = field(lines.next(), "hmac-sha256")?;
        let body = lines.next().unwrap_or_default();
        if let Some(key) = key {
            let tag = super::image::unhex(&tag).unwrap_or_default();
            if !key.verify(MANIFEST_DOMAIN, body, &tag) {
                return Err(if id != key.id() {
                    ManifestError::ForeignKey {
                        theirs: id,
                        ours: key.id(),
                        path: key.file().display().to_string(),
                    }
                } else {
                    ManifestError::BadSignature
                });
            }
        }
        let text: ManifestText =
            serde_json::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let digest = |s: &str| {
            Digest::parse(s)
                .ok_or_else(|| ManifestError::Malformed(format!("{s:?} is not a BLAKE3 digest")))
        };
        let whole = |w: &WholeText| {
            Ok::<_, ManifestError>(Whole {
                size: w.size,
                digest: digest(&w.blake3)?,
            })
        };
        if text.pages.piece_size != PIECE {
            return Err(ManifestError::Malformed(format!(
                "pieces of {} bytes, this palisade digests pages.img in pieces of {PIECE}",
                text.pages.piece_size
            )));
        }
        let pages = text
            .pages
            .blake3
            .iter()
            .map(|s| digest(s))
            .collect::<Result<Vec<_>, _>>()?;
        if pages.len() as u64 != text.pages.size.div_ceil(PIECE) {
            return Err(ManifestError::Malformed(format!(
                "{} piece digests for {} bytes of pages.img",
                pages.len(),
                text.pages.size
            )));
        }
        Ok(Manifest {
            meta: whole(&text.meta)?,
            files: whole(&text.files)?,
            pages_size: text.pages.size,
            pages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ImageKey {
        ImageKey::from_bytes([b; KEY_LEN], PathBuf::from(format!("/k{b}")))
    }

    fn sample() -> Manifest {
        Manifest {
            meta: Whole {
                size: 3,
                digest: Digest::of(b"abc"),
            },
            files: Whole {
                size: 0,
                digest: Digest::of(b""),
            },
            pages_size: PIECE + 1,
            pages: vec![Digest::of(b"x"), Digest::of(b"y")],
        }
    }

    #[test]
    fn a_manifest_verifies_under_its_key_only() {
        let m = sample();
        let bytes = m.encode(&key(1));
        assert_eq!(Manifest::decode(&bytes, Some(&key(1))).unwrap(), m);
        assert_eq!(Manifest::decode(&bytes, None).unwrap(), m);
        assert!(matches!(
            Manifest::decode(&bytes, Some(&key(2))),
            Err(ManifestError::ForeignKey { .. })
        ));
        // One digit of the body changed: the signature no longer holds.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let altered = text.replacen("\"size\": 3", "\"size\": 4", 1);
        assert_ne!(altered, text);
        assert_eq!(
            Manifest::decode(altered.as_bytes(), Some(&key(1))),
            Err(ManifestError::BadSignature)
        );
        assert_eq!(
            Manifest::decode(b"{}", Some(&key(1))),
            Err(ManifestError::NotManifest)
        );
    }

    #[test]
    fn pieces_are_cut_from_the_first_byte_whatever_the_writes() {
        let data: Vec<u8> = (0..(2 * PIECE + 100)).map(|i| (i % 251) as u8).collect();
        let mut a = PieceHasher::default();
        for chunk in data.chunks(1 << 20 | 7) {
            a.update(chunk);
        }
        let want: Vec<Digest> = data.chunks(PIECE as usize).map(Digest::of).collect();
        assert_eq!(a.finish(), want);
        assert!(PieceHasher::default().finish().is_empty());
    }

    #[test]
    fn macs_differ_by_domain_and_key() {
        let k = key(7);
        let t = k.mac(b"a", b"msg");
        assert!(k.verify(b"a", b"msg", &t));
        assert!(!k.verify(b"b", b"msg", &t));
        assert!(!key(8).verify(b"a", b"msg", &t));
        assert!(!k.verify(b"a", b"msg", &t[..31]));
    }
}
