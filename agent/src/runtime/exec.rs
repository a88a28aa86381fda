//! `palisade exec`: a new process inside a running container — in all of
//! its namespaces and cgroups, so under the same policy — with the
//! container's environment and working directory.

use std::{
    fs::File,
    io::Write,
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::MetadataExt,
    },
    path::PathBuf,
};

use nix::{
    fcntl::OFlag,
    sched::{CloneFlags, setns},
    sys::signal::{SigSet, SigmaskHow, sigprocmask},
    unistd::{Pid, chdir, execve, pipe2},
};

use super::{
    EXIT_SETUP_FAILED, RuntimeError, cstrings, init, lifecycle, security, state::StateRoot,
    supervise,
};
use crate::sys::process::{Forked, fork_single_threaded};

/// What to run in which container.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub name: String,
    pub command: Vec<String>,
    /// `K=V` added to the container's environment.
    pub env: Vec<String>,
    /// Defaults to the container's working directory.
    pub workdir: Option<PathBuf>,
    /// The whole environment instead of the container's plus `env` (an
    /// OCI process file's).
    pub full_env: Option<Vec<String>>,
    /// Run as this user (`Some(None)`: root) instead of the container's.
    pub user: Option<Option<security::User>>,
    /// These capabilities instead of the container's.
    pub caps: Option<security::CapSet>,
    pub rlimits: Vec<crate::spec::Rlimit>,
    /// Return once the command runs (its pid in `pid_file`), without
    /// waiting: the caller (conmon, containerd's shim) reaps it.
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    /// A Unix socket to send the master of the command's terminal to.
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3..3+N of the caller passed on to the command.
    pub preserve_fds: u32,
}

impl ExecSpec {
    /// A command with the container's environment, user and capabilities.
    pub fn new(name: String, command: Vec<String>) -> Self {
        ExecSpec {
            name,
            command,
            env: Vec::new(),
            workdir: None,
            full_env: None,
            user: None,
            caps: None,
            rlimits: Vec::new(),
            detach: false,
            pid_file: None,
            console_socket: None,
            preserve_fds: 0,
        }
    }
}

/// Namespaces a process joins, in the order it joins them. pid and time
/// apply to children, so the CLI joins those before forking.
const CHILD_NAMESPACES: &[(&str, CloneFlags)] = &[
    // First: the others may be owned by it.
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Opens `/proc/PID/ns/KIND`, or None if it is the caller's own already.
fn namespace(pid: i32, kind: &str) -> Result<Option<File>, RuntimeError> {
    let theirs = format!("/proc/{pid}/ns/{kind}");
    let file =
        File::open(&theirs).map_err(|e| RuntimeError::io("open the container's namespaces", &e))?;
    let same = match (
        file.metadata(),
        std::fs::metadata(format!("/proc/self/ns/{kind}")),
    ) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    Ok(if same { None } else { Some(file) })
}

/// Runs the command in the container and returns its exit status.
pub fn exec(root: &StateRoot, spec: &ExecSpec) -> Result<i32, RuntimeError> {
    if spec.command.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    let state = root.load(&spec.name)?;
    let _pidfd = lifecycle::container_process(&state)?;
    let pid = state.pid.expect("a running container has a pid");

    let env = match &spec.full_env {
        Some(env) => env.clone(),
        None => super::with_env(state.exec.env.clone(), &spec.env),
    };
    let argv = cstrings(&spec.command)?;
    let env = cstrings(&env)?;
    let workdir = spec
        .workdir
        .clone()
        .or(state.exec.workdir.clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    let joined: Vec<(File, CloneFlags)> = CHILD_NAMESPACES
        .iter()
        .filter_map(|(kind, flag)| {
            namespace(pid, kind)
                .transpose()
                .map(|f| f.map(|f| (f, *flag)))
        })
        .collect::<Result<_, _>>()?;

    let setup = |step| move |errno| RuntimeError::Setup { step, errno };
    for (kind, flag) in [
        ("pid", CloneFlags::CLONE_NEWPID),
        ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
    ] {
        if let Some(ns) = namespace(pid, kind)? {
            setns(ns.as_fd(), flag)
                .map_err(setup("join the container's pid and time namespaces"))?;
        }
    }
    let seccomp = security::seccomp_for(&state.exec.denied_families, state.exec.io_uring)?;
    let caps = spec
        .caps
        .unwrap_or_else(|| security::CapSet::from_bits(state.exec.caps));
    let user = match spec.user {
        Some(user) => user,
        None => state
            .exec
            .user
            .map(|(uid, gid)| security::User { uid, gid }),
    };
    let console = spec
        .console_socket
        .as_deref()
        .map(super::console::connect)
        .transpose()?;
    let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
    let signals = supervise::signals();
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), Some(&mut old_mask))
        .map_err(setup("block signals"))?;

    let forked = fork_single_threaded().map_err(|source| RuntimeError::Fork {
        step: "fork",
        source,
    })?;
    let child = match forked {
        Forked::Child => {
            drop(err_read);
            let report_fd = err_write.as_raw_fd();
            let mut report = File::from(err_write);
            let keep = init::kept_fds(report_fd, spec.preserve_fds);
            let entered = enter(&state.cgroups, &joined, &workdir, &old_mask)
                .and_then(|()| console.map_or(Ok(()), super::console::attach))
                .and_then(|()| security::close_inherited_fds(&keep))
                .and_then(|()| init::set_rlimits(&spec.rlimits))
                .and_then(|()| security::apply(&caps, user.as_ref(), &seccomp));
            let (status, message) = match entered {
                Err(message) => (EXIT_SETUP_FAILED, message),
                Ok(()) => {
                    let program = init::resolve(&argv[0], &env);
                    let errno = execve(&program, &argv, &env).unwrap_err();
                    (
                        init::exec_status(errno),
                        format!(
                            "cannot execute {:?} in {}: {}",
                            argv[0],
                            spec.name,
                            errno.desc()
                        ),
                    )
                }
            };
            let _ = report.write_all(&[status as u8]);
            let _ = report.write_all(message.as_bytes());
            std::process::exit(status);
        }
        Forked::Parent { child } => Pid::from_raw(child),
    };
    drop((err_write, console));
    if let Some((status, message)) = init::read_report(err_read) {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(RuntimeError::Start { status, message });
    }
    if let Some(file) = &spec.pid_file {
        super::monitor::write_pid_file(file, child.as_raw())?;
    }
    if spec.detach {
        return Ok(0);
    }
    supervise::until_exit(child, &signals)
        .map(supervise::Ended::status)
        .map_err(setup("wait for the command"))
}

/// In the forked child: join the cgroups (while the host's cgroupfs is
/// still visible), then the namespaces, then the working directory.
fn enter(
    cgroups: &[PathBuf],
    namespaces: &[(File, CloneFlags)],
    workdir: &std::path::Path,
    mask: &SigSet,
) -> Result<(), String> {
    crate::cgroups::join_self(cgroups).map_err(|e| e.to_string())?;
    for (file, flag) in namespaces {
        setns(file.as_fd(), *flag)
            .map_err(|e| format!("cannot join the container's namespaces ({flag:?}): {e}"))?;
    }
    if namespaces
        .iter()
        .any(|(_, flag)| *flag == CloneFlags::CLONE_NEWUSER)
    {
        super::userns::become_root()?;
    }
    chdir(workdir)
        .map_err(|e| format!("cannot enter working directory {}: {e}", workdir.display()))?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None)
        .map_err(|e| format!("cannot restore the signal mask: {e}"))?;
    Ok(())
}
