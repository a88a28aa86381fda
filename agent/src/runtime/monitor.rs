//! The monitor: the process that creates a container, waits for it and
//! cleans up after it. For a foreground `run` it is the CLI itself; for a
//! detached one it is a child of the CLI in its own session, with its
//! output (and the container's) in the container's log.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::fd::{AsFd, OwnedFd},
};

use nix::{
    fcntl::OFlag,
    sys::{
        signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask},
        wait::waitpid,
    },
    unistd::{Pid, dup2_stderr, dup2_stdin, dup2_stdout, getpid, pipe2, setsid, write},
};

use super::{
    EXIT_SETUP_FAILED, NetMode, RunOutcome, RunSpec, RuntimeError, cleanup, cstrings, environment,
    init, net,
    rootfs::RootfsSpec,
    security, shaping,
    state::{CreatorLock, ExecProfile, State, StateError, StateRoot, Status, now},
    supervise, userns,
};
use crate::{
    cgroups::{ContainerCgroups, Hierarchies},
    enforce::{Enforcer, Pins},
    sys::process::{Forked, fork_into, fork_single_threaded},
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
        recipe: spec.recipe.clone(),
        creator_lock: true,
        dead_reason: None,
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

fn report_failure(ready: Option<OwnedFd>, error: &RuntimeError) {
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
    mut state: State,
    ready: Option<OwnedFd>,
) -> Result<i32, RuntimeError> {
    let pins = Pins::for_state_root(root.dir());
    let hierarchies = match Hierarchies::detect() {
        Ok(h) => h,
        Err(e) => return Err(fail(root, &spec.name, ready, e.into())),
    };
    if let Some(parent) = &spec.parent {
        let enclosing = match root.load(parent) {
            Ok(p) if p.status == Status::Running => {
                Ok(p.enclosing.iter().cloned().chain([p.name]).collect())
            }
            Ok(p) => Err(RuntimeError::WrongStatus {
                name: parent.clone(),
                status: format!("{} (a parent must be running)", p.status),
            }),
            Err(e) => Err(e.into()),
        };
        match enclosing {
            Ok(e) => state.enclosing = e,
            Err(e) => return Err(fail(root, &spec.name, ready, e)),
        }
    }
    let enclosing_names = state.enclosing.clone();
    let enclosing: Vec<&str> = enclosing_names.iter().map(String::as_str).collect();
    // Each step is recorded before it is taken, so a cleanup after a
    // creator killed at any point finds what it made: the cgroups it will
    // make, then the id of the v2 one (which says it is this container's,
    // not a namesake's of another state root) before anything else.
    state.cgroups = hierarchies.planned(&enclosing, &spec.name);
    if let Err(e) = root.save(&state) {
        return Err(fail(root, &spec.name, ready, e.into()));
    }
    let made = hierarchies
        .create_unified(&enclosing, &spec.name)
        .map_err(RuntimeError::from)
        .and_then(|mut cgroups| {
            let id = cgroups.id()?;
            state.cgroup_id = Some(id);
            root.remember_cgroup(id, &spec.name);
            root.save(&state)?;
            hierarchies.create_v1(&mut cgroups, &enclosing)?;
            Ok(cgroups)
        });
    let cgroups = match made {
        Ok(c) => c,
        Err(e) => return Err(fail(root, &spec.name, ready, e)),
    };
    let mut enforcer = None;
    let started = start(
        root,
        spec,
        argv,
        env,
        &mut state,
        &cgroups,
        &pins,
        &mut enforcer,
    );
    let (child, signals) = match started {
        Ok(v) => v,
        Err(e) => {
            if let (Some(enf), Some(id)) = (enforcer.as_mut(), state.cgroup_id) {
                let _ = enf.release(&spec.name, id);
            }
            release_network(&state);
            drop(cgroups);
            // It may still hold the host's BPF lock (a start that failed
            // before its policy was written), which `fail` takes.
            drop(enforcer);
            return Err(fail(root, &spec.name, ready, e));
        }
    };
    if let Some(fd) = ready {
        let _ = write(&fd, &[0]);
    }

    let waited = supervise::until_exit(child, &signals);
    // `policy apply` may have added, changed or removed the traffic class.
    if let Ok(on_disk) = root.load(&spec.name) {
        state.shaping = on_disk.shaping;
    }
    let status = waited.unwrap_or(EXIT_SETUP_FAILED);
    state.status = Status::Exited;
    state.exit_status = Some(status);
    state.finished = Some(now());
    state.oom_killed = crate::cgroups::oom_killed(&cgroups);
    // Containers nested in this one go with it, before its programs are
    // detached: they are the only programs that police them.
    cgroups.kill_nested();
    if let (Some(enf), Some(id)) = (enforcer.as_mut(), state.cgroup_id)
        && let Err(e) = enf.release(&spec.name, id)
    {
        eprintln!("palisade: {}: {e}", spec.name);
    }
    release_network(&state);
    let removed = cgroups.remove();
    if spec.detach {
        root.save(&state)?;
    } else {
        root.remove(&spec.name)?;
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

/// Undoes the reservation of a container that did not start and passes
/// the error on (to the waiting CLI too, for a detached run).
fn fail(root: &StateRoot, name: &str, ready: Option<OwnedFd>, error: RuntimeError) -> RuntimeError {
    let _ = root.remove(name);
    cleanup::release_root_if_idle(root, false);
    report_failure(ready, &error);
    error
}

/// Polices the cgroup, forks the container's first process into new
/// namespaces and cgroups, and lets it exec.
#[allow(clippy::too_many_arguments)]
fn start(
    root: &StateRoot,
    spec: &RunSpec,
    argv: &[CString],
    env: &[CString],
    state: &mut State,
    cgroups: &ContainerCgroups,
    pins: &Pins,
    enforcer: &mut Option<Enforcer>,
) -> Result<(Pid, SigSet), RuntimeError> {
    let setup = |step| move |errno| RuntimeError::Setup { step, errno };
    let cgroup_id = cgroups.id()?;
    state.cgroups = cgroups.dirs().map(|d| d.to_path_buf()).collect();
    *enforcer = Some(
        super::policy::open_enforcer(root, pins).map_err(|e| match e {
            RuntimeError::Enforce(source) => RuntimeError::Load {
                cgroup: cgroups.unified().to_path_buf(),
                source,
            },
            other => other,
        })?,
    );
    cgroups.apply(&spec.policy.resources)?;
    let mut policy = spec.policy.clone();
    policy.devices.allow.extend(spec.extra_device_rules());
    let enforcer = enforcer.as_mut().expect("just set");
    match state.enclosing.first() {
        None => enforcer.police(&spec.name, cgroups.unified(), cgroup_id, &policy)?,
        // The outermost enclosing container's programs run for this one
        // (the kernel runs every ancestor's); attaching them here too
        // would judge, count and report everything it does twice.
        Some(outermost) => {
            enforcer.police_nested(&spec.name, outermost, cgroups.unified(), cgroup_id, &policy)?
        }
    }
    if let Some(egress) = spec.policy.network.egress {
        let owner = root.container_dir(&spec.name).display().to_string();
        let minor = shaping::allocate(&owner)?;
        state.shaping = Some(shaping::Shaping {
            minor,
            devices: Vec::new(),
            in_container: spec.net == NetMode::Bridge,
            rate: egress.rate,
            burst: egress.burst,
        });
        root.save(state)?;
        enforcer.set_egress_class(cgroup_id, Some(palisade_common::shaping_class(minor)))?;
    }

    let staging = root.container_dir(&spec.name).join("rootfs");
    std::fs::create_dir(&staging)
        .map_err(|e| RuntimeError::io("create the rootfs mount point", &e))?;
    let rootfs = RootfsSpec {
        rootfs: spec.rootfs.clone(),
        read_only: spec.read_only,
        mounts: spec.mounts.clone(),
        devices: spec
            .devices
            .iter()
            .map(|d| (d.host.clone(), d.container.clone()))
            .collect(),
        staging,
        userns: spec.userns,
        own_netns: spec.net != NetMode::Host,
        extra_masked: spec.extra_masked.clone(),
        extra_read_only: spec.extra_read_only.clone(),
    };

    // Compiled here: the child must not allocate more than it has to.
    let seccomp = security::seccomp_for(
        &spec.policy.network.sockets.seccomp_families(),
        spec.policy.security.io_uring,
    )?;
    let (go_read, go_write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
    let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
    let signals = supervise::signals();
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), Some(&mut old_mask))
        .map_err(setup("block signals"))?;
    let owner = root.container_dir(&spec.name).display().to_string();
    if spec.net == NetMode::Bridge {
        state.net_address = Some(net::lease(&owner)?.addr);
        root.save(state)?;
    }
    let (netns_read, netns_write) = match spec.net {
        NetMode::Bridge => {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
            (Some(r), Some(w))
        }
        _ => (None, None),
    };

    let hostname = spec.hostname.as_deref().unwrap_or(&spec.name);
    // The container's first process is born pid 1 of new pid and time
    // namespaces; this process stays where it is (and so do the helpers,
    // such as `ip`, it runs later).
    let mut clone_flags = libc::CLONE_NEWPID | libc::CLONE_NEWTIME;
    if spec.userns {
        // The pid namespace is then owned by the user namespace, so the
        // container's root may mount its /proc.
        clone_flags |= libc::CLONE_NEWUSER;
        state.userns = Some(userns::HOST_BASE);
    }
    let unified = cgroups.open_unified()?;
    let forked =
        fork_into(clone_flags, Some(unified.as_fd())).map_err(|source| RuntimeError::Fork {
            step: "create the container's process",
            source,
        })?;
    let child = match forked {
        Forked::Child => {
            drop(go_write);
            drop(err_read);
            drop(netns_read);
            init::start(
                go_read,
                netns_write,
                err_write,
                init::Init {
                    argv,
                    env,
                    hostname,
                    workdir: spec.workdir.as_ref(),
                    net: spec.net,
                    address: state.net_address,
                    rootfs: &rootfs,
                    sigmask: old_mask,
                    caps: spec.caps,
                    user: spec.user.as_ref(),
                    seccomp: &seccomp,
                    restore: spec.restore.is_some(),
                },
            )
        }
        Forked::Parent { child } => Pid::from_raw(child),
    };
    drop(go_read);
    drop(err_write);
    drop(netns_write);

    // The veth pair goes in once the child has its network namespace.
    let plugged = match netns_read {
        None => Ok(()),
        Some(fd) => {
            let mut byte = [0u8; 1];
            match File::from(fd).read(&mut byte) {
                Ok(1) => {
                    let veth = net::veth_name(&owner);
                    state.veth = Some(veth.clone());
                    net::attach(child.as_raw(), &veth).map_err(RuntimeError::from)
                }
                // The child failed before: its report says why.
                _ => Ok(()),
            }
        }
    };
    // The class is in place before the command runs: a packet sent before
    // would find no class and pass unshaped.
    let plugged = plugged.and_then(|()| match &mut state.shaping {
        None => Ok(()),
        Some(shaping) => {
            let netns = if shaping.in_container {
                shaping.devices = vec!["eth0".to_string()];
                shaping::Netns::Of(child.as_raw())
            } else {
                shaping.devices = shaping::host_devices();
                shaping::Netns::Host
            };
            let (devices, minor, egress) =
                (shaping.devices.clone(), shaping.minor, shaping.egress());
            root.save(state)?;
            shaping::install(netns, &devices, minor, egress).map_err(RuntimeError::from)
        }
    });
    let plugged = plugged.and_then(|()| {
        if spec.userns {
            userns::write_maps(child.as_raw())
        } else {
            Ok(())
        }
    });
    // Into the cgroups first: the command must not run a single
    // instruction outside its policy.
    let released = plugged
        .and_then(|()| cgroups.join_v1(child.as_raw()).map_err(RuntimeError::from))
        .and_then(|()| write(&go_write, b"1").map_err(setup("start the container")));
    drop(go_write);
    if let Err(e) = released {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(e);
    }
    if let Some((status, message)) = init::read_report(err_read) {
        let _ = waitpid(child, None);
        return Err(RuntimeError::Start { status, message });
    }
    // Restoring: the new process stopped itself as our tracee, in every
    // namespace, cgroup and policy of the container; the image's tree is
    // rebuilt from it (its pid 1) and let go.
    if let Some(handoff) = &spec.restore {
        let restored = handoff.take().ok_or_else(|| {
            crate::checkpoint::CheckpointError::Image("the image was restored already".into())
        });
        let restored = restored.and_then(|verified| {
            crate::checkpoint::restore::restore_into(
                child.as_raw(),
                &verified.image,
                &verified.pages,
                &verified.files,
                // The container's output: its log when detached, else
                // this process's own stdout (the terminal or pipe of
                // `palisade restore`).
                &if spec.detach {
                    root.log_path(&spec.name)
                } else {
                    std::path::PathBuf::from("/proc/self/fd/1")
                },
                &seccomp.raw_programs(),
            )
        });
        if let Err(e) = restored {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(RuntimeError::Start {
                status: EXIT_SETUP_FAILED,
                message: e.to_string(),
            });
        }
    }
    state.status = Status::Running;
    state.pid = Some(child.as_raw());
    root.save(state)?;
    Ok((child, signals))
}
