//! The default seccomp profile: a denylist on x86_64. Everything not named
//! here is allowed; what is named fails with EPERM, except clone3, which
//! fails with ENOSYS so that libc falls back to clone, whose flags the
//! filter can read. io_uring is refused unless the policy allows it
//! (`[security] io_uring = true`): its requests are carried out by the
//! kernel without passing through seccomp. Compiled before fork (compiling
//! allocates), installed last in `apply`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter as Filter, SeccompRule, TargetArch,
};

use super::SecurityError;

/// Syscalls denied outright, each with why.
const DENIED: &[(i64, &str)] = &[
    // Replacing the running kernel.
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    // Loading and unloading kernel modules.
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    // BPF programs and perf events reach into the kernel and other
    // processes; they would also let a container touch palisade's own hooks.
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    // The kernel keyring is not namespaced.
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    // The container's mounts are palisade's to make; none after exec,
    // through the old API or the new one (new_mount_api: a context from
    // fsopen/fspick, configured by fsconfig, made a mount by fsmount, a
    // tree cloned by open_tree, attached by move_mount, its flags changed
    // by mount_setattr).
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    // Host-wide swap and power state.
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_reboot, "reboot"),
];

/// io_uring's system calls, refused unless the policy allows io_uring.
/// Its requests (`IORING_OP_SOCKET`, `OPENAT`, `CONNECT`…) are carried out
/// by the kernel without passing through seccomp, so every restriction
/// this filter makes could be stepped around through them (Docker's and
/// containerd's default profiles refuse io_uring too).
const IO_URING: &[(i64, &str)] = &[
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
];

/// `CLONE_NEWUSER`: a new user namespace hands its creator every
/// capability inside it, a large kernel attack surface; denied for clone
/// and unshare, whose first argument is the flags word.
const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;
const FLAGGED: &[(i64, &str)] = &[(libc::SYS_clone, "clone"), (libc::SYS_unshare, "unshare")];

/// x32 syscalls share AUDIT_ARCH_X86_64 and differ by this bit; each
/// denial is repeated for them (kexec_load also has an x32-only number).
const X32_BIT: i64 = 0x4000_0000;
const X32_KEXEC_LOAD: i64 = X32_BIT | 528;

/// The default profile, compiled: one program per action, stacked (the
/// kernel applies the strictest verdict of all installed programs).
pub struct SeccompFilter {
    pub(super) programs: Vec<BpfProgram>,
}

impl SeccompFilter {
    /// Each program as the kernel takes it (struct sock_filter: code,
    /// jt, jf, k), for installing it in another process.
    pub fn raw_programs(&self) -> Vec<Vec<u8>> {
        self.programs
            .iter()
            .map(|p| {
                p.iter()
                    .flat_map(|i| {
                        let mut b = [0u8; 8];
                        b[0..2].copy_from_slice(&i.code.to_ne_bytes());
                        b[2] = i.jt;
                        b[3] = i.jf;
                        b[4..8].copy_from_slice(&i.k.to_ne_bytes());
                        b
                    })
                    .collect()
            })
            .collect()
    }
}

impl std::fmt::Debug for SeccompFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lens: Vec<usize> = self.programs.iter().map(Vec::len).collect();
        write!(f, "SeccompFilter(instructions per program: {lens:?})")
    }
}

/// The syscalls the default profile denies by name, for documentation
/// and tests: the unconditional ones, io_uring's, then those denied for
/// CLONE_NEWUSER.
pub fn denied_syscalls() -> impl Iterator<Item = &'static str> {
    DENIED
        .iter()
        .chain(IO_URING)
        .chain(FLAGGED)
        .map(|(_, name)| *name)
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
) -> Result<BpfProgram, SecurityError> {
    let error = |e: seccompiler::BackendError| SecurityError::Seccomp(e.to_string());
    let filter = Filter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        TargetArch::x86_64,
    )
    .map_err(error)?;
    filter.try_into().map_err(error)
}

/// Compiles the default profile for x86_64.
pub fn default_seccomp() -> Result<SeccompFilter, SecurityError> {
    seccomp_for(&[], false)
}

/// The default profile, plus `socket(FAMILY, …)` refused with EPERM for
/// each of `denied_families` (the policy's `sockets`: the cgroup
/// sock_create hook sees only inet sockets, so families are stopped here),
/// and io_uring allowed if `io_uring` (the policy's `[security]`, which
/// refuses io_uring with denied families: see `spec::Policy`).
pub fn seccomp_for(
    denied_families: &[i32],
    io_uring: bool,
) -> Result<SeccompFilter, SecurityError> {
    if io_uring && !denied_families.is_empty() {
        // The policy parser refuses this; a state file edited by hand must
        // not get a filter that io_uring steps around either.
        return Err(SecurityError::Seccomp(
            "io_uring cannot be allowed with refused socket families: its requests bypass seccomp"
                .into(),
        ));
    }
    let newuser = SeccompRule::new(vec![
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(CLONE_NEWUSER),
            CLONE_NEWUSER,
        )
        .map_err(|e| SecurityError::Seccomp(e.to_string()))?,
    ])
    .map_err(|e| SecurityError::Seccomp(e.to_string()))?;

    let mut eperm = BTreeMap::new();
    for &(nr, _) in DENIED {
        // An empty rule list matches the syscall whatever its arguments.
        eperm.insert(nr, vec![]);
        eperm.insert(nr | X32_BIT, vec![]);
    }
    eperm.insert(X32_KEXEC_LOAD, vec![]);
    if !io_uring {
        for &(nr, _) in IO_URING {
            eperm.insert(nr, vec![]);
            eperm.insert(nr | X32_BIT, vec![]);
        }
    }
    for &(nr, _) in FLAGGED {
        eperm.insert(nr, vec![newuser.clone()]);
        eperm.insert(nr | X32_BIT, vec![newuser.clone()]);
    }
    if !denied_families.is_empty() {
        // One rule per family: any of them matching refuses the call.
        let rules = denied_families
            .iter()
            .map(|&family| {
                let cond = SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    family as u64,
                )
                .map_err(|e| SecurityError::Seccomp(e.to_string()))?;
                SeccompRule::new(vec![cond]).map_err(|e| SecurityError::Seccomp(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        eperm.insert(libc::SYS_socket, rules.clone());
        eperm.insert(libc::SYS_socket | X32_BIT, rules);
    }

    // clone3 passes its flags in a struct the filter cannot read: ENOSYS
    // makes glibc (2.34+) retry with clone, which the first program judges.
    let mut enosys = BTreeMap::new();
    enosys.insert(libc::SYS_clone3, vec![]);
    enosys.insert(libc::SYS_clone3 | X32_BIT, vec![]);

    Ok(SeccompFilter {
        programs: vec![compile(eperm, libc::EPERM)?, compile(enosys, libc::ENOSYS)?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles() {
        let filter = default_seccomp().unwrap();
        assert_eq!(filter.programs.len(), 2);
        // Within the kernel's limit of 4096 instructions per program.
        assert!(
            filter
                .programs
                .iter()
                .all(|p| !p.is_empty() && p.len() < 4096)
        );
    }

    #[test]
    fn profile_names_every_required_denial() {
        let denied: Vec<_> = denied_syscalls().collect();
        for name in [
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "mount",
            "umount2",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "swapon",
            "swapoff",
            "reboot",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "clone",
            "unshare",
        ] {
            assert!(denied.contains(&name), "{name}");
        }
        assert!(!denied.contains(&"setns"));
    }

    #[test]
    fn io_uring_is_allowed_only_without_refused_families() {
        let refused = seccomp_for(&[], false).unwrap();
        let allowed = seccomp_for(&[], true).unwrap();
        // Three syscalls and their x32 numbers fewer to match.
        assert!(allowed.programs[0].len() < refused.programs[0].len());
        assert!(seccomp_for(&[libc::AF_PACKET], false).is_ok());
        let e = seccomp_for(&[libc::AF_PACKET], true).unwrap_err();
        assert!(e.to_string().contains("bypass seccomp"), "{e}");
    }
}
