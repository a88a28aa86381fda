//! The container's first process, between fork and exec: it waits until
//! the parent has put it in its cgroups, builds its namespaces and
//! filesystem, and execs the command. Failures go back to the parent over
//! a pipe as a status byte and a message.

use std::{
    ffi::CString,
    fs::File,
    io::{Read, Write},
    os::fd::{AsRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::PathBuf,
};

use nix::{
    errno::Errno,
    sched::{CloneFlags, unshare},
    sys::{
        prctl,
        signal::{SigSet, SigmaskHow, Signal, sigprocmask},
    },
    unistd::{chdir, execve, sethostname},
};

use super::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED, NetMode, rootfs, security};
use crate::sys::{
    self,
    netlink::{Netlink, NetlinkError},
};

pub(super) struct Init<'a> {
    pub argv: &'a [CString],
    pub env: &'a [CString],
    pub hostname: &'a str,
    pub workdir: Option<&'a PathBuf>,
    pub net: NetMode,
    /// eth0's address, for `--net bridge`.
    pub address: Option<std::net::Ipv4Addr>,
    pub rootfs: &'a rootfs::RootfsSpec,
    /// The signal mask to restore before exec.
    pub sigmask: SigSet,
    pub caps: security::CapSet,
    pub user: Option<&'a security::User>,
    pub seccomp: &'a security::SeccompFilter,
    /// Stop as the parent's tracee instead of exec'ing: a checkpoint is
    /// restored into this process.
    pub restore: bool,
    /// Resource limits set before exec.
    pub rlimits: &'a [crate::spec::Rlimit],
    /// The runc contract (`create`): report success once everything but
    /// the exec is done, then wait at this FIFO (an `O_PATH` descriptor)
    /// until `start` reads it. The process outlives its creator.
    pub gate: Option<OwnedFd>,
    /// A connected console socket: the command gets a terminal.
    pub console: Option<OwnedFd>,
    /// A detached (or created) container: once started it does not die
    /// with the process that made it (a foreground one does).
    pub outlives_creator: bool,
    /// Descriptors 3..3+N of the caller passed on to the command.
    pub preserve_fds: u32,
}

/// Never returns: execs the command or exits with a reported failure.
/// `go` is readable once the parent has moved this process into its
/// cgroups; `report` is close-on-exec, so EOF on the other end means exec
/// succeeded.
pub(super) fn start(
    go: OwnedFd,
    netns_ready: Option<OwnedFd>,
    report: OwnedFd,
    mut init: Init<'_>,
) -> ! {
    let report_fd = report.as_raw_fd();
    let mut report = File::from(report);
    let (status, message) = match prepare(go, netns_ready, &mut init, report_fd) {
        Err(message) => (EXIT_SETUP_FAILED, message),
        // Everything of palisade's goes (the report pipe too, so the
        // parent reads EOF: no failure), then it stops for the restore.
        Ok(()) if init.restore => sys::ptrace::child_become_tracee(),
        Ok(()) => {
            let program = resolve(&init.argv[0], init.env);
            match init.gate.take() {
                Some(gate) => match executable(&program, &init.argv[0]) {
                    Ok(()) => {
                        // Created: the report's EOF tells the creator so.
                        drop(report);
                        created(gate, &program, &init)
                    }
                    Err(failure) => failure,
                },
                None => exec_failure(&program, &init),
            }
        }
    };
    let _ = report.write_all(&[status as u8]);
    let _ = report.write_all(message.as_bytes());
    std::process::exit(status)
}

/// Execs the command; returns the status and message of a failure.
fn exec_failure(program: &CString, init: &Init<'_>) -> (i32, String) {
    let errno = execve(program, init.argv, init.env).unwrap_err();
    cannot_execute(&init.argv[0], errno)
}

/// The exit status and message for a command that cannot be executed.
fn cannot_execute(name: &CString, errno: Errno) -> (i32, String) {
    (
        exec_status(errno),
        format!("cannot execute {name:?}: {}", errno.desc()),
    )
}

/// The exit status of an exec that failed with `errno`: 127 when the
/// command is not there, 126 otherwise (the shell's convention).
pub(super) fn exec_status(errno: Errno) -> i32 {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR => EXIT_NOT_FOUND,
        _ => EXIT_NOT_EXECUTABLE,
    }
}

/// Whether `program` can be exec'd, checked at `create` so that a wrong
/// command fails there rather than after `start`.
fn executable(program: &CString, name: &CString) -> Result<(), (i32, String)> {
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(program.as_bytes()));
    match nix::unistd::access(path, nix::unistd::AccessFlags::X_OK) {
        Ok(()) if path.is_file() => Ok(()),
        Ok(()) => Err((
            EXIT_NOT_EXECUTABLE,
            format!("cannot execute {name:?}: not a regular file"),
        )),
        Err(errno) => Err(cannot_execute(name, errno)),
    }
}

/// A created container's first process: waits at the gate until `start`
/// opens it, then execs. Nobody reads a report any more: a failure goes
/// to the command's stderr and the exit status.
fn created(gate: OwnedFd, program: &CString, init: &Init<'_>) -> ! {
    // Opening a FIFO for writing blocks until a reader (`start`) opens it.
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", gate.as_raw_fd()))
        .and_then(|mut fifo| fifo.write_all(&[0]));
    drop(gate);
    let (status, message) = match opened {
        Ok(()) => exec_failure(program, init),
        Err(e) => (
            EXIT_SETUP_FAILED,
            format!("cannot wait for the container's start: {e}"),
        ),
    };
    eprintln!("palisade: {message}");
    std::process::exit(status)
}

fn prepare(
    go: OwnedFd,
    netns_ready: Option<OwnedFd>,
    init: &mut Init<'_>,
    report_fd: i32,
) -> Result<(), String> {
    // Only the monitor holds the creator lock: if it dies, the container is
    // known to be without its creator even while this process lingers.
    super::state::drop_inherited_creator_lock();
    // The container is not left half-made by a creator that died: set
    // before waiting on the start pipe, so a parent that died in between
    // shows up as EOF there, and kept for a foreground container, which
    // goes with its CLI.
    prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
    // A private network namespace comes first, so the parent can plug a
    // veth pair into it while this process waits.
    if init.net != NetMode::Host {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
    }
    if let Some(fd) = netns_ready {
        File::from(fd)
            .write_all(&[1])
            .map_err(|e| format!("cannot tell palisade the network namespace is ready: {e}"))?;
    }
    let mut byte = [0u8; 1];
    match File::from(go).read(&mut byte) {
        Ok(1) => {}
        _ => return Err("palisade exited before the container started".into()),
    }
    if init.outlives_creator {
        // A detached container outlives its monitor (it keeps running,
        // policed, without it); a created one its creator (the caller,
        // conmon or containerd's shim, reaps it).
        prctl::set_pdeathsig(None)
            .map_err(|e| format!("cannot clear the parent-death signal: {e}"))?;
    }
    // The cgroup namespace is made after joining the cgroups, so the
    // container sees its own cgroup as the root.
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    unshare(flags).map_err(|e| format!("cannot create the container's namespaces: {e}"))?;
    // Still the host uid that created the state root: the only lookup
    // through it happens here.
    let entered = rootfs::enter(init.rootfs)?;
    if init.rootfs.userns {
        super::userns::become_root()?;
    }
    if init.net != NetMode::Host {
        let mut nl = Netlink::host().map_err(|e| e.to_string())?;
        nl.set_up("lo").map_err(|e| e.to_string())?;
        if let Some(addr) = init.address {
            let eth = |e: NetlinkError| {
                format!("cannot configure eth0 ({addr}/{}): {e}", super::net::PREFIX)
            };
            nl.add_ipv4("eth0", addr, super::net::PREFIX).map_err(eth)?;
            nl.set_up("eth0").map_err(eth)?;
            nl.add_default_route(super::net::GATEWAY).map_err(eth)?;
        }
    }
    rootfs::build(init.rootfs, entered)?;
    if let Some(socket) = init.console.take() {
        super::console::attach(socket)?;
    }
    sethostname(init.hostname)
        .map_err(|e| format!("cannot set hostname {:?}: {e}", init.hostname))?;
    if let Some(dir) = init.workdir {
        chdir(dir).map_err(|e| format!("cannot enter working directory {}: {e}", dir.display()))?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&init.sigmask), None)
        .map_err(|e| format!("cannot restore the signal mask: {e}"))?;
    // Nothing of palisade's may reach the command but the report pipe,
    // which closes on exec.
    let mut keep = kept_fds(report_fd, init.preserve_fds);
    keep.extend(init.gate.as_ref().map(AsRawFd::as_raw_fd));
    security::close_inherited_fds(&keep)?;
    if init.restore {
        // The restored processes get their image's credentials.
        return Ok(());
    }
    set_rlimits(init.rlimits)?;
    security::apply(&init.caps, init.user, init.seccomp)
}

/// The descriptors a new process keeps of palisade's: its report pipe
/// (close-on-exec) and the caller's 3..3+N-1 (`--preserve-fds N`).
pub(super) fn kept_fds(report_fd: i32, preserve_fds: u32) -> Vec<i32> {
    let preserved = (3..3u32.saturating_add(preserve_fds)).filter_map(|fd| i32::try_from(fd).ok());
    std::iter::once(report_fd).chain(preserved).collect()
}

/// Sets the command's resource limits (before capabilities are dropped:
/// raising a hard limit needs CAP_SYS_RESOURCE).
pub(super) fn set_rlimits(rlimits: &[crate::spec::Rlimit]) -> Result<(), String> {
    for r in rlimits {
        sys::tty::set_rlimit(r.resource, r.soft, r.hard).map_err(|e| {
            format!(
                "cannot set resource limit {} to {}/{}: {e}",
                r.resource, r.soft, r.hard
            )
        })?;
    }
    Ok(())
}

/// The program to exec: `name` itself if it has a slash, else the first
/// executable match in the container's PATH (execvp would search
/// palisade's PATH instead).
pub(super) fn resolve(name: &CString, env: &[CString]) -> CString {
    let bytes = name.as_bytes();
    if bytes.contains(&b'/') {
        return name.clone();
    }
    let path = env
        .iter()
        .find_map(|e| {
            e.to_str()
                .ok()
                .and_then(|e| e.strip_prefix("PATH="))
                .map(str::to_string)
        })
        .unwrap_or_else(|| super::DEFAULT_PATH.to_string());
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = PathBuf::from(dir).join(name.to_str().unwrap_or_default());
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
            && let Ok(c) = CString::new(candidate.into_os_string().into_encoded_bytes())
        {
            return c;
        }
    }
    name.clone()
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
