//! Raw calls behind the container's hardening: the capability sets
//! (capset, the bounding set, the ambient set), closing inherited file
//! descriptors, and installing seccomp programs. `nix` has none of these;
//! everything else hardening needs goes through `nix` in `runtime::security`.

use nix::errno::Errno;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(rc: libc::c_long) -> nix::Result<libc::c_long> {
    if rc < 0 { Err(Errno::last()) } else { Ok(rc) }
}

/// Sets the calling thread's effective, permitted and inheritable sets in
/// one capset(2), each a bitmask indexed by capability number.
pub fn set_capabilities(effective: u64, permitted: u64, inheritable: u64) -> nix::Result<()> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |mask: u64| [mask as u32, (mask >> 32) as u32];
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [0, 1].map(|w| CapData {
        effective: e[w],
        permitted: p[w],
        inheritable: i[w],
    });
    // SAFETY: `header` and `data` are valid, properly laid out
    // (`__user_cap_header_struct`, two `__user_cap_data_struct` as version 3
    // requires) and live across the call; the kernel only reads them.
    check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
}

/// Whether capability number `cap` is in the bounding set; `Err(EINVAL)`
/// past the last capability this kernel knows.
pub fn bounding_has(cap: u32) -> nix::Result<bool> {
    // SAFETY: PR_CAPBSET_READ takes one integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
    check(rc.into()).map(|v| v == 1)
}

/// Removes capability number `cap` from the bounding set (needs CAP_SETPCAP).
pub fn bounding_drop(cap: u32) -> nix::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes one integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    check(rc.into()).map(drop)
}

/// Empties the ambient set.
pub fn ambient_clear() -> nix::Result<()> {
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only (the
    // unused ones must be zero) and touches no memory.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    check(rc.into()).map(drop)
}

/// Closes every descriptor in `first..=last` with close_range(2) (5.9+);
/// `Err(ENOSYS)` on older kernels.
pub fn close_range(first: u32, last: u32) -> nix::Result<()> {
    // SAFETY: close_range only closes descriptors; the callers own the
    // process at this point (between fork and exec) and no Rust object in it
    // that is used afterwards refers to a descriptor in the range.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) }).map(drop)
}

/// Marks descriptors `first..=last` close-on-exec
/// (close_range(2) `CLOSE_RANGE_CLOEXEC`, Linux 5.11): nothing is closed
/// until an exec.
pub fn cloexec_range(first: u32, last: u32) -> nix::Result<()> {
    // SAFETY: with CLOSE_RANGE_CLOEXEC the call only sets descriptor flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            last,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    })
    .map(drop)
}

/// Closes one descriptor by number, ignoring EBADF (already closed).
pub fn close_raw(fd: i32) -> nix::Result<()> {
    // SAFETY: as for `close_range`: the caller guarantees nothing used
    // afterwards refers to `fd`.
    match check(unsafe { libc::close(fd) }.into()) {
        Ok(_) | Err(Errno::EBADF) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Marks one descriptor by number close-on-exec, ignoring EBADF.
pub fn cloexec_raw(fd: i32) -> nix::Result<()> {
    // SAFETY: F_SETFD only changes the descriptor's flags.
    match check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }.into()) {
        Ok(_) | Err(Errno::EBADF) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Installs a compiled seccomp program on the calling thread (it needs
/// no_new_privs or CAP_SYS_ADMIN).
pub fn install_seccomp(program: &seccompiler::BpfProgram) -> Result<(), seccompiler::Error> {
    // seccompiler wraps the seccomp(2) call and its `sock_fprog` itself.
    seccompiler::apply_filter(program)
}
