//! The monitor: the process that creates a container, waits for it and
//! cleans up after it. For a foreground `run` it is the CLI itself; for a
//! detached one it is a child of the CLI in its own session, with its
//! output (and the container's) in the container's log.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::fd::OwnedFd,
};

use nix::{
    fcntl::OFlag,
    unistd::{dup2_stderr, dup2_stdin, dup2_stdout, getpid, pipe2, setsid, write},
};

use super::{
    EXIT_SETUP_FAILED, RunOutcome, RunSpec, RuntimeError, cleanup, cstrings, environment,
    journal::{self, Record, What},
    launch::{Launch, Running},
    net, shaping,
    state::{CreatorLock, ExecProfile, State, StateError, StateRoot, Status, now},
    supervise,
};
use crate::sys::process::{Forked, fork_single_threaded};

pub(super) fn run(root: &StateRoot, spec: &RunSpec) -> Result<RunOutcome, RuntimeError> {
    let env_strings = environment(spec);
    let state = State {
        name: spec.name.clone(),
        status: Status::Creating,
        pid: None,
        monitor_pid: getpid().as_raw(),
        detached: spec.detach,
        created: now(),
        finished: None,
        command: spec.command.clone(),
        exit_status: None,
        oom_killed: false,
        cgroup_id: None,
        cgroups: Vec::new(),
        net_address: None,
        veth: None,
        userns: None,
        enclosing: Vec::new(),
        shaping: None,
        device_rules: spec.extra_device_rules(),
        recipe: spec.recipe.clone(),
        creator_lock: true,
        dead_reason: None,
        bundle: spec.bundle.clone(),
        caller_reaps: spec.contract.is_some(),
        pid_start: None,
        paused: false,
        exec: ExecProfile {
            env: env_strings.clone(),
            workdir: spec.workdir.clone(),
            user: spec.user.as_ref().map(|u| (u.uid, u.gid)),
            caps: spec.caps.bits(),
            denied_families: spec.policy.network.sockets.seccomp_families(),
            io_uring: spec.policy.security.io_uring,
        },
    };
    let argv = cstrings(&spec.command)?;
    let env = cstrings(&env_strings)?;
    // Held (by the monitor, for a detached run) while the container lives:
    // it tells `ps`, `rm` and a later `run` that its creator is alive.
    let _lock = reserve(root, &state)?;
    if spec.contract.is_some() {
        return create(root, spec, &argv, &env, state);
    }

    if !spec.detach {
        return monitor(root, spec, &argv, &env, state, None).map(RunOutcome::Exited);
    }
    let setup = |step| move |errno| RuntimeError::Setup { step, errno };
    let (ready_read, ready_write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
    let forked = fork_single_threaded().map_err(|source| RuntimeError::Fork {
        step: "fork the monitor",
        source,
    })?;
    match forked {
        Forked::Child => {
            drop(ready_read);
            let status = match detach_stdio(root, &spec.name) {
                Ok(()) => {
                    let mut state = state;
                    state.monitor_pid = getpid().as_raw();
                    match monitor(root, spec, &argv, &env, state, Some(ready_write)) {
                        Ok(status) => status,
                        Err(e) => {
                            eprintln!("palisade: {e}");
                            EXIT_SETUP_FAILED
                        }
                    }
                }
                Err(e) => {
                    report_failure(Some(ready_write), &e);
                    let _ = root.remove(&spec.name);
                    EXIT_SETUP_FAILED
                }
            };
            std::process::exit(status);
        }
        Forked::Parent { .. } => {
            drop(ready_write);
            let mut bytes = Vec::new();
            let _ = File::from(ready_read).read_to_end(&mut bytes);
            match bytes.split_first() {
                Some((0, _)) => Ok(RunOutcome::Detached),
                Some((&status, message)) => Err(RuntimeError::Start {
                    status: i32::from(status),
                    message: String::from_utf8_lossy(message).into_owned(),
                }),
                None => Err(RuntimeError::Start {
                    status: EXIT_SETUP_FAILED,
                    message: format!(
                        "the monitor of {} exited before the container started",
                        spec.name
                    ),
                }),
            }
        }
    }
}

/// `create`: the container made and its first process waiting at the
/// start FIFO; its pid written where the caller asked. No monitor stays:
/// once this process exits, the first process is the caller's child
/// (conmon and containerd's shim are child subreapers) and `delete` cleans
/// up.
fn create(
    root: &StateRoot,
    spec: &RunSpec,
    argv: &[CString],
    env: &[CString],
    state: State,
) -> Result<RunOutcome, RuntimeError> {
    let running = Launch::new(root, spec, state, None).run(argv, env)?;
    let pid = running.child.as_raw();
    // The cgroups, programs and pins stay for `delete`.
    running.cgroups.keep();
    journal::note(
        root,
        Record::now(&spec.name, What::Created { pid: Some(pid) }),
    );
    Ok(RunOutcome::Created(pid))
}

/// Writes `pid` to `file` atomically (a reader never sees half of it).
pub(super) fn write_pid_file(file: &std::path::Path, pid: i32) -> Result<(), RuntimeError> {
    let io = |e: std::io::Error| RuntimeError::io("write the pid file", &e);
    let tmp = file.with_extension(format!("palisade-tmp.{}", std::process::id()));
    std::fs::write(&tmp, pid.to_string()).map_err(io)?;
    std::fs::rename(&tmp, file).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Reserves the container's name. A container of that name whose creator
/// died (killed half-way through its start, or a dead monitor's) is
/// cleaned up first, as `rm` would; a live one's name is refused.
fn reserve(root: &StateRoot, state: &State) -> Result<CreatorLock, RuntimeError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match root.create(state) {
            Ok(lock) => return Ok(lock),
            Err(StateError::Exists { .. }) if attempts < 3 => {}
            Err(e) => return Err(e.into()),
        }
        if let Ok(Some((_lock, old))) = cleanup::claim(root, &state.name) {
            let old = old.map(|o| cleanup::reconcile_claimed(&o));
            match &old {
                // A container that exited, or whose processes still run
                // without their monitor: the user's to remove.
                Some(o) if o.status != Status::Dead => {
                    return Err(StateError::Exists {
                        name: state.name.clone(),
                        status: o.status.to_string(),
                    }
                    .into());
                }
                _ => cleanup::clean_up(root, &state.name, old.as_ref())?,
            }
        }
    }
}

/// A detached monitor leaves the CLI's session and terminal; its stdin is
/// /dev/null and its output (and so the container's) goes to the log.
fn detach_stdio(root: &StateRoot, name: &str) -> Result<(), RuntimeError> {
    let setup = |step| move |errno| RuntimeError::Setup { step, errno };
    setsid().map_err(setup("start a session"))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.log_path(name))
        .map_err(|e| RuntimeError::io("open the log", &e))?;
    let null = File::open("/dev/null").map_err(|e| RuntimeError::io("open /dev/null", &e))?;
    dup2_stdin(&null).map_err(setup("redirect stdin"))?;
    dup2_stdout(&log).map_err(setup("redirect stdout"))?;
    dup2_stderr(&log).map_err(setup("redirect stderr"))?;
    Ok(())
}

pub(super) fn report_failure(ready: Option<OwnedFd>, error: &RuntimeError) {
    if let Some(fd) = ready {
        let mut f = File::from(fd);
        let _ = f.write_all(&[error.exit_status() as u8]);
        let _ = f.write_all(error.to_string().as_bytes());
    }
}

/// Creates the container, waits for it, cleans up. Returns its exit
/// status. `ready`, for a detached run, hears one byte 0 once the command
/// runs, or a status and message if it could not start.
fn monitor(
    root: &StateRoot,
    spec: &RunSpec,
    argv: &[CString],
    env: &[CString],
    state: State,
    ready: Option<OwnedFd>,
) -> Result<i32, RuntimeError> {
    let Running {
        mut state,
        cgroups,
        mut enforcer,
        child,
        signals,
        ready,
    } = Launch::new(root, spec, state, ready).run(argv, env)?;
    if let Some(fd) = ready {
        let _ = write(&fd, &[0]);
    }
    let pid = child.as_raw();
    journal::note(
        root,
        Record::now(&spec.name, What::Created { pid: Some(pid) }),
    );
    journal::note(root, Record::now(&spec.name, What::Started { pid }));

    // The monitor now waits, for as long as the container lives: what it
    // inherited from the launch (the CLI's heap, with the BPF object's
    // parse when this run loaded it) goes back to the host.
    crate::sys::process::release_free_memory();
    let waited = supervise::until_exit(child, &signals);
    // `policy apply` may have added, changed or removed the traffic class,
    // and replaced the rules.
    let on_disk = root.load(&spec.name).ok();
    if let Some(on_disk) = &on_disk {
        state.shaping = on_disk.shaping.clone();
    }
    let written = on_disk.and_then(|s| super::adopt::written_policy(&s).ok());
    let status = waited.map_or(EXIT_SETUP_FAILED, supervise::Ended::status);
    state.status = Status::Exited;
    state.exit_status = Some(status);
    state.finished = Some(now());
    // The agent's mark first: it waits until the agent has journalled its
    // kill, so this exit is journalled after it.
    let by_agent = super::oom::was_killed(root, &spec.name);
    state.oom_killed = by_agent || crate::cgroups::oom_killed(&cgroups);
    let (code, signal) = match waited {
        Ok(supervise::Ended::Exited(code)) => (Some(code), None),
        Ok(supervise::Ended::Signaled(sig)) => (None, Some(sig as i32)),
        Err(_) => (None, None),
    };
    journal::note(
        root,
        Record::now(
            &spec.name,
            What::Exited {
                status: code,
                signal,
                oom: state.oom_killed,
            },
        ),
    );
    // Containers nested in this one go with it, before its programs are
    // detached: they are the only programs that police them.
    cgroups.kill_nested();
    if let (Some(enf), Some(id)) = (enforcer.as_mut(), state.cgroup_id)
        && let Err(e) = enf.release(&spec.name, id, written.as_ref())
    {
        eprintln!("palisade: {}: {e}", spec.name);
    }
    release_network(&state);
    let removed = cgroups.remove();
    if spec.detach {
        root.save(&state)?;
    } else {
        root.remove(&spec.name)?;
        journal::note(root, Record::now(&spec.name, What::Removed));
    }
    cleanup::release_root_if_idle(root, false);
    removed?;
    Ok(status)
}

/// Takes a shaped container's class off the host's devices (a bridged
/// container's goes with its namespace), unplugs a bridged container and
/// returns its address.
pub(super) fn release_network(state: &State) {
    if let Some(shaping) = &state.shaping {
        if !shaping.in_container {
            shaping::uninstall(shaping::Netns::Host, &shaping.devices, shaping.minor);
        }
        shaping::free(shaping.minor);
    }
    if let Some(veth) = &state.veth {
        net::detach(veth);
    }
    if let Some(addr) = state.net_address {
        net::release(addr);
    }
}
