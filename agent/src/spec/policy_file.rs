//! Reading a policy file: a regular file of bounded size, read once and
//! never past the bound, so that a device, a FIFO or a huge file cannot
//! hang palisade or exhaust its memory.

use std::{
    fs::OpenOptions,
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

use super::PolicyError;

/// The largest policy file accepted, in bytes: 4 MiB, which holds every
/// rule list at its bound ([`palisade_common::MAX_LIST_PREFIXES`]
/// addresses in each of connect, bind and accept, some 2 MiB written out)
/// with room to spare. A larger file is refused before it is parsed.
pub const MAX_POLICY_BYTES: usize = 4 << 20;

/// Reads a policy file: a regular file (or a link to one) of at most
/// [`MAX_POLICY_BYTES`] in UTF-8. A device, FIFO, directory or socket is
/// refused without a read (the open does not wait for a FIFO's writer),
/// and no more than the bound is ever read.
pub fn read_policy_file(path: &Path) -> Result<String, PolicyError> {
    read_text_file(path, "policy file")
}

/// As [`read_policy_file`], for any of palisade's TOML files; `what`
/// names the kind of file in errors.
pub(super) fn read_text_file(path: &Path, what: &str) -> Result<String, PolicyError> {
    let error = |message: String| PolicyError {
        file: path.to_path_buf(),
        line: 0,
        message,
    };
    let cannot = |e: std::io::Error| error(format!("cannot read {what}: {e}"));
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot)?;
    let kind = file.metadata().map_err(cannot)?.file_type();
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(error(format!(
            "not a {what}: {kind} (give a regular file of TOML)"
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(error(too_large()));
    }
    String::from_utf8(bytes).map_err(|e| {
        error(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

pub(super) fn too_large() -> String {
    format!(
        "the file is larger than {MAX_POLICY_BYTES} bytes (4 MiB), the most a policy file may hold; \
         cover addresses with fewer, wider prefixes"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Policy;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("palisade-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let refused = |path: &Path, needle: &str| {
            let started = std::time::Instant::now();
            let e = Policy::load(path).unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            assert_eq!(e.line, 0);
            assert!(e.message.contains(needle), "{e}");
        };
        refused(Path::new("/dev/zero"), "a character device");
        refused(&dir, "a directory");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        refused(&fifo, "a FIFO");
        let link = dir.join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        refused(&link, "a character device");
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_POLICY_BYTES + 1]).unwrap();
        refused(&big, "larger than 4194304 bytes");
        let binary = dir.join("binary.toml");
        std::fs::write(&binary, b"# \xff\n").unwrap();
        refused(&binary, "not UTF-8");
        let good = dir.join("good.toml");
        let text = "[network]\nconnect = [\"deny any\"]\n";
        std::fs::write(&good, text).unwrap();
        let (policy, read) = Policy::load_with_text(&good).unwrap();
        assert_eq!(read, text);
        assert!(policy.network.connect.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
