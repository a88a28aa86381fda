//! The container's hardening, applied by its first process between fork
//! and exec: capabilities, user and groups, no_new_privs and the seccomp
//! filter, closing palisade's descriptors, and an unwritable palisade
//! binary.
//!
//! Everything that allocates (parsing, compiling the filter) happens before
//! fork; `apply` only makes syscalls, in an order where each step still
//! holds the privilege it needs. It never mounts, creates namespaces or
//! execs the command: that is `init`'s.

mod caps;
mod exe;
mod seccomp;

use std::path::PathBuf;

use nix::{
    errno::Errno,
    sys::prctl,
    unistd::{Gid, Uid, setgroups, setresgid, setresuid},
};
use thiserror::Error;

pub use self::{
    caps::{CapSet, Capability, default_caps, parse_cap, resolve_caps},
    exe::{
        close_inherited_fds, close_on_exec_except, ensure_unwritable_self, exec_image,
        inheritable_own_image, sealed_copy_of, sealed_memfd,
    },
    seccomp::{SeccompFilter, default_seccomp, denied_syscalls, seccomp_for},
};
use crate::sys::security as sys;

#[derive(Debug, Error)]
pub enum SecurityError {
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("invalid user {0:?}: expected UID or UID:GID, numeric, below 4294967295")]
    InvalidUser(String),
    #[error("cannot compile the seccomp filter: {0}")]
    Seccomp(String),
    #[error("cannot {step}: {errno}")]
    Sys { step: &'static str, errno: Errno },
    #[error("cannot {step} {}: {source}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("an argument or environment variable of palisade contains a NUL byte")]
    Nul,
}

/// The user the command runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// `UID` or `UID:GID`, numeric. Without a GID the group is 0, as Docker
/// does for a UID that has no passwd entry (palisade reads none).
pub fn parse_user(s: &str) -> Result<User, SecurityError> {
    let invalid = || SecurityError::InvalidUser(s.to_string());
    // u32::MAX is (uid_t)-1, which set*id(2) read as "leave unchanged".
    let id = |part: &str| {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        part.parse::<u32>()
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(invalid)
    };
    let (uid, gid) = match s.split_once(':') {
        Some((uid, gid)) => (id(uid)?, id(gid)?),
        None => (id(s)?, 0),
    };
    Ok(User { uid, gid })
}

/// Hardens the calling process, right before it execs the command; the
/// error names the step and the kernel's reason. In order:
///
/// 1. the bounding set is cut to `caps` (while CAP_SETPCAP is still held);
///    a capability of `caps` that palisade itself lacks is an error;
/// 2. with `user`: supplementary groups cleared, then gid, then uid (all of
///    real, effective and saved); keepcaps is off, so a non-root uid loses
///    its permitted and effective sets here;
/// 3. effective and permitted set to `caps` for uid 0, to nothing for any
///    other uid (like Docker, a non-root user gets no capabilities, only a
///    bounding set); the inheritable set empty (like runc and Docker since
///    CVE-2022-24769: a program with file inheritable capabilities run by a
///    non-root user later must not regain them);
/// 4. the ambient set cleared. Root keeps `caps` across exec without it
///    (uid 0's exec is granted its bounding set, capped by no_new_privs at
///    the permitted set it had);
/// 5. no_new_privs (setuid binaries and file capabilities grant nothing);
/// 6. the seccomp filter, last, so none of the above is filtered.
pub fn apply(caps: &CapSet, user: Option<&User>, seccomp: &SeccompFilter) -> Result<(), String> {
    // The bounding set as this kernel and palisade's own parent left it.
    let mut held = 0u64;
    let mut last = 0u32;
    for cap in 0u32..64 {
        match sys::bounding_has(cap) {
            Ok(present) => held |= u64::from(present) << cap,
            // Past the kernel's last capability.
            Err(Errno::EINVAL) => break,
            Err(e) => return Err(failed(format_args!("read bounding capability {cap}"), e)),
        }
        last = cap;
    }
    if let Some(missing) = CapSet::from_bits(caps.bits() & !held).iter().next() {
        return Err(format!(
            "cannot grant {missing:?}: palisade does not hold it (not in its bounding set)"
        ));
    }
    for cap in (0..=last).filter(|c| held & !caps.bits() & (1 << c) != 0) {
        sys::bounding_drop(cap).map_err(|e| {
            failed(
                format_args!("drop capability {cap} from the bounding set"),
                e,
            )
        })?;
    }

    if let Some(user) = user {
        prctl::set_keepcaps(false).map_err(|e| failed("clear keepcaps", e))?;
        setgroups(&[]).map_err(|e| failed("clear supplementary groups", e))?;
        let gid = Gid::from_raw(user.gid);
        setresgid(gid, gid, gid).map_err(|e| failed(format_args!("set gid {gid}"), e))?;
        let uid = Uid::from_raw(user.uid);
        setresuid(uid, uid, uid).map_err(|e| failed(format_args!("set uid {uid}"), e))?;
    }
    let root = user.is_none_or(|u| u.uid == 0);
    let granted = if root { caps.bits() } else { 0 };

    sys::set_capabilities(granted, granted, 0).map_err(|e| {
        failed(
            format_args!("set capabilities {granted:#x} (effective, permitted)"),
            e,
        )
    })?;
    sys::ambient_clear().map_err(|e| failed("clear the ambient capabilities", e))?;

    prctl::set_no_new_privs().map_err(|e| failed("set no_new_privs", e))?;
    for program in &seccomp.programs {
        sys::install_seccomp(program)
            .map_err(|e| format!("cannot install the seccomp filter: {e}"))?;
    }
    Ok(())
}

/// `apply`'s error text: the step and the kernel's reason.
fn failed(step: impl std::fmt::Display, errno: Errno) -> String {
    format!("cannot {step}: {}", errno.desc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse() {
        assert_eq!(parse_user("1000").unwrap(), User { uid: 1000, gid: 0 });
        assert_eq!(
            parse_user("65534:65534").unwrap(),
            User {
                uid: 65534,
                gid: 65534
            }
        );
        assert_eq!(parse_user("0:5").unwrap(), User { uid: 0, gid: 5 });
        assert_eq!(
            parse_user("4294967294:1").unwrap(),
            User {
                uid: 4_294_967_294,
                gid: 1
            }
        );
    }

    #[test]
    fn bad_users_are_named() {
        for s in [
            "",
            ":",
            "1000:",
            ":1000",
            "root",
            "1000:staff",
            "-1",
            "+5",
            "1 ",
            "1:2:3",
            "4294967295",
            "4294967296",
            "0x10",
        ] {
            let e = parse_user(s).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("invalid user {s:?}: ")),
                "{s:?}: {e}"
            );
        }
    }
}
