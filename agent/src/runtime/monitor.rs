//! The monitor: the process that creates a container, waits for it and
//! cleans up after it. For a foreground `run` it is the CLI itself; for a
//! detached one it is a child of the CLI in its own session, with its
//! output (and the container's) in the container's log.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::{
        fd::{AsFd, AsRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    sys::{
        signal::{SigSet, Signal},
        wait::WaitStatus,
    },
    unistd::{Pid, dup2_stderr, dup2_stdin, dup2_stdout, getpid, pipe2, setsid, write},
};

use super::{
    EXIT_SETUP_FAILED, RunOutcome, RunSpec, RuntimeError, cleanup, cstrings, environment,
    journal::{self, Record, What},
    launch::{Launch, Running},
    net, security, shaping,
    state::{CreatorLock, ExecProfile, State, StateError, StateRoot, Status, now},
    supervise,
};
use crate::{
    cgroups::{ContainerCgroups, Hierarchies},
    enforce::{Enforcer, Pins},
    sys::process::{Forked, fork_single_threaded},
};

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
        policies_pending: Vec::new(),
        proc_view: spec.policy.view.proc,
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
    let lock = reserve(root, &state)?;
    if spec.contract.is_some() {
        return create(root, spec, &argv, &env, state);
    }

    if !spec.detach {
        return monitor(root, spec, &argv, &env, state, None, &lock).map(RunOutcome::Exited);
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
                    match monitor(root, spec, &argv, &env, state, Some(ready_write), &lock) {
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
/// runs, or a status and message if it could not start. A detached
/// monitor then becomes the small monitor (which runs `monitor-exited`
/// for the cleanup) and returns only if it could not.
fn monitor(
    root: &StateRoot,
    spec: &RunSpec,
    argv: &[CString],
    env: &[CString],
    state: State,
    ready: Option<OwnedFd>,
    lock: &CreatorLock,
) -> Result<i32, RuntimeError> {
    let Running {
        state,
        cgroups,
        enforcer,
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

    if spec.detach {
        let failed = become_small_monitor(root, &spec.name, child, &signals, lock);
        eprintln!(
            "palisade: {}: {failed}; palisade's own process stays the container's monitor",
            spec.name
        );
    }
    // The monitor now waits, for as long as the container lives: what it
    // inherited from the launch (the CLI's heap, with the BPF object's
    // parse when this run loaded it) goes back to the host.
    crate::sys::process::release_free_memory();
    let waited = supervise::until_exit(child, &signals);
    finish(
        root,
        &spec.name,
        spec.detach,
        state,
        cgroups,
        enforcer,
        waited,
    )
}

/// The small monitor's image: `sys/monitor/main.rs`, built by build.rs.
const SMALL_MONITOR: &[u8] = include_bytes!(env!("PALISADE_MONITOR_IMAGE"));

/// What a detached container's monitor becomes once the container runs:
/// the small monitor (a few pages, where palisade's own process keeps a
/// private copy of its relocated data and heap, over half a MiB), run
/// from a sealed memfd. It holds the creator lock and an `O_PATH`
/// descriptor of palisade's image, waits for `child` passing on the
/// `signals` a process sends, and then runs that image as `palisade
/// monitor-exited` with the child's wait status, which cleans up as this
/// monitor would have. Returns only if the exec failed, with why.
fn become_small_monitor(
    root: &StateRoot,
    name: &str,
    child: Pid,
    signals: &SigSet,
    lock: &CreatorLock,
) -> String {
    let attempt = || -> Result<String, String> {
        let image = security::sealed_memfd(c"palisade-monitor", SMALL_MONITOR)
            .map_err(|e| e.to_string())?;
        let own = security::inheritable_own_image().map_err(|e| e.to_string())?;
        let lock_fd = lock.inheritable_fd().map_err(|e| e.to_string())?;
        let mask = Signal::iterator()
            .filter(|s| signals.contains(*s))
            .fold(0u64, |mask, s| mask | 1 << (s as i32 - 1));
        // Nothing else goes with it: not even what palisade's caller left
        // open (a pipe it reads to its end would never see that end).
        security::close_on_exec_except(&[lock_fd, own.as_raw_fd()])?;
        let args: Vec<Vec<u8>> = vec![
            b"palisade-monitor".to_vec(),
            child.as_raw().to_string().into_bytes(),
            mask.to_string().into_bytes(),
            own.as_raw_fd().to_string().into_bytes(),
            b"palisade".to_vec(),
            b"--root".to_vec(),
            root.dir().as_os_str().as_bytes().to_vec(),
            b"monitor-exited".to_vec(),
            b"--lock-fd".to_vec(),
            lock_fd.to_string().into_bytes(),
            b"--".to_vec(),
            name.as_bytes().to_vec(),
        ];
        let argv = args
            .into_iter()
            .map(CString::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "the state root's path contains a NUL byte".to_string())?;
        Ok(security::exec_image(image.as_fd(), &argv, "run the small monitor").to_string())
    };
    attempt().unwrap_or_else(|e| e)
}

/// `monitor-exited`: the cleanup after a detached container's first
/// process ended, run by the small monitor (this process, exec'd again)
/// with the creator lock it held as descriptor `lock_fd` and the raw
/// `wait_status`. Refused unless that descriptor is the container's lock
/// and this process is its recorded monitor.
pub fn monitor_exited(
    root: &StateRoot,
    name: &str,
    lock_fd: RawFd,
    wait_status: i32,
) -> Result<i32, RuntimeError> {
    let _lock = CreatorLock::inherited(root, name, lock_fd)?;
    let state = root.load(name)?;
    if state.monitor_pid != getpid().as_raw() {
        return Err(RuntimeError::BadInput(format!(
            "container {name:?} is monitored by process {}, not this one",
            state.monitor_pid
        )));
    }
    let pid = Pid::from_raw(state.pid.unwrap_or(0));
    let waited = match WaitStatus::from_raw(pid, wait_status) {
        Ok(WaitStatus::Exited(_, code)) => Ok(supervise::Ended::Exited(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(supervise::Ended::Signaled(sig)),
        _ => Err(Errno::EINVAL),
    };
    let cgroups = Hierarchies::detect()?.existing(&state.cgroups)?;
    let enforcer = match state.cgroup_id {
        Some(_) => {
            let _bpf = cleanup::lock_bpf(root)?;
            Enforcer::open_existing(Pins::for_state_root(root.dir()))?
        }
        None => None,
    };
    finish(root, name, true, state, cgroups, enforcer, waited)
}

/// After the container's first process ended (`waited`): records how,
/// ends what it left (nested containers), takes its rules out of the
/// shared maps, its traffic class and address back, removes its cgroups,
/// and keeps its state (`detach`) or removes it.
fn finish(
    root: &StateRoot,
    name: &str,
    detach: bool,
    mut state: State,
    cgroups: ContainerCgroups,
    mut enforcer: Option<Enforcer>,
    waited: nix::Result<supervise::Ended>,
) -> Result<i32, RuntimeError> {
    let status = waited.map_or(EXIT_SETUP_FAILED, supervise::Ended::status);
    state.status = Status::Exited;
    state.exit_status = Some(status);
    state.finished = Some(now());
    // The agent's mark first: it waits until the agent has journalled its
    // kill, so this exit is journalled after it.
    let by_agent = super::oom::was_killed(root, name);
    state.oom_killed = by_agent || crate::cgroups::oom_killed(&cgroups);
    let (code, signal) = match waited {
        Ok(supervise::Ended::Exited(code)) => (Some(code), None),
        Ok(supervise::Ended::Signaled(sig)) => (None, Some(sig as i32)),
        Err(_) => (None, None),
    };
    journal::note(
        root,
        Record::now(
            name,
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
    {
        // Under the state root's lock, a `policy apply` has finished or not
        // begun. It may have added, changed or removed the traffic class and
        // replaced the policy (recorded in the recipe, or pending); `update`
        // may have changed the resources the recipe records. Every rule it
        // wrote is among those deleted.
        let _bpf = cleanup::lock_bpf(root).ok();
        if let Ok(on_disk) = root.load(name) {
            state.shaping = on_disk.shaping;
            state.recipe = on_disk.recipe;
            state.policies_pending = on_disk.policies_pending;
        }
        if let (Some(enf), Some(id)) = (enforcer.as_mut(), state.cgroup_id) {
            let written = super::adopt::written_policies(&state);
            if let Err(e) = enf.release(name, id, written.as_deref()) {
                eprintln!("palisade: {name}: {e}");
            }
        }
    }
    release_network(&state);
    let removed = cgroups.remove();
    if detach {
        root.save(&state)?;
    } else {
        root.remove(name)?;
        journal::note(root, Record::now(name, What::Removed));
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
