//! The container's first process, between fork and exec: it waits until
//! the parent has put it in its cgroups, builds its namespaces and mounts,
//! and execs the command. Failures go back to the parent over a pipe.

use std::{
    ffi::CString,
    fs::File,
    io::{Read, Write},
    os::fd::OwnedFd,
};

use nix::{
    errno::Errno,
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
    sys::{
        prctl,
        signal::{SigSet, SigmaskHow, Signal, sigprocmask},
    },
    unistd::{execvp, sethostname},
};

use super::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED};

pub(super) struct Init<'a> {
    /// Readable once the parent has moved this process into its cgroups.
    pub go: OwnedFd,
    /// Close-on-exec: EOF on the other end means exec succeeded.
    pub report: OwnedFd,
    pub argv: &'a [CString],
    pub hostname: &'a str,
    /// The signal mask to restore before exec.
    pub sigmask: SigSet,
}

/// Never returns: execs the command or exits with a reported failure.
pub(super) fn start(init: Init<'_>) -> ! {
    let mut report = File::from(init.report);
    let (status, message) = match prepare(init.go, init.hostname, &init.sigmask) {
        Err(message) => (EXIT_SETUP_FAILED, message),
        Ok(()) => {
            let errno = execvp(&init.argv[0], init.argv).unwrap_err();
            let status = match errno {
                Errno::ENOENT | Errno::ENOTDIR => EXIT_NOT_FOUND,
                _ => EXIT_NOT_EXECUTABLE,
            };
            (
                status,
                format!("cannot execute {:?}: {}", init.argv[0], errno.desc()),
            )
        }
    };
    let _ = report.write_all(&[status as u8]);
    let _ = report.write_all(message.as_bytes());
    std::process::exit(status)
}

fn prepare(go: OwnedFd, hostname: &str, sigmask: &SigSet) -> Result<(), String> {
    // A foreground container does not outlive palisade: its policy is
    // held by palisade's process. Set before waiting on the start pipe, so
    // a palisade that died in between shows up as EOF there.
    prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
    let mut byte = [0u8; 1];
    match File::from(go).read(&mut byte) {
        Ok(1) => {}
        _ => return Err("palisade exited before the container started".into()),
    }
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .map_err(|e| format!("cannot create mount, uts and ipc namespaces: {e}"))?;
    // Nothing mounted in here may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make / private: {e}"))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot mount /proc: {e}"))?;
    sethostname(hostname).map_err(|e| format!("cannot set hostname {hostname:?}: {e}"))?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(sigmask), None)
        .map_err(|e| format!("cannot restore the signal mask: {e}"))?;
    Ok(())
}

/// Reads the child's report: `None` if exec succeeded (the pipe closed
/// empty), else its exit status and message.
pub(super) fn read_report(fd: OwnedFd) -> Option<(i32, String)> {
    let mut bytes = Vec::new();
    let _ = File::from(fd).read_to_end(&mut bytes);
    let (&status, message) = bytes.split_first()?;
    Some((
        i32::from(status),
        String::from_utf8_lossy(message).into_owned(),
    ))
}
