//! The launch sequence of a container, step by step, under one rollback
//! guard: each step records what it made in a [`Launch`], and a launch
//! that does not reach [`Launch::commit`] undoes all of it, newest first
//! (kills the first process, detaches the programs, takes the network
//! back, removes the cgroups and the state), whichever step failed.
//!
//! Order matters for the promise that a container never runs unpoliced:
//! cgroups, then limits and programs, then the first process (born in the
//! v2 cgroup, stopped before exec), then its network and user maps, then
//! the v1 cgroups, and only then the go.

use std::{
    ffi::CString,
    fs::File,
    io::Read,
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
};

use nix::{
    fcntl::OFlag,
    sys::{
        signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask},
        wait::waitpid,
    },
    unistd::{Pid, pipe2, write},
};

use super::{
    EXIT_SETUP_FAILED, NetMode, RunSpec, RuntimeError, cleanup, init, net,
    rootfs::RootfsSpec,
    security, shaping,
    state::{State, StateRoot, Status},
    supervise, userns,
};
use crate::{
    cgroups::{ContainerCgroups, Hierarchies},
    enforce::{Enforcer, Pins},
    sys::process::{Forked, fork_into},
};

/// What a launch has made so far.
pub(super) struct Launch<'a> {
    root: &'a StateRoot,
    spec: &'a RunSpec,
    /// The container's state, saved before each step that makes something
    /// (so a cleanup after a creator killed at any point finds it).
    pub(super) state: State,
    /// For a detached run: the CLI waiting for the outcome.
    ready: Option<OwnedFd>,
    cgroups: Option<ContainerCgroups>,
    enforcer: Option<Enforcer>,
    child: Option<Pid>,
    committed: bool,
}

/// What a committed launch hands to the monitor.
pub(super) struct Running {
    pub state: State,
    pub cgroups: ContainerCgroups,
    pub enforcer: Option<Enforcer>,
    pub child: Pid,
    pub signals: SigSet,
    pub ready: Option<OwnedFd>,
}

/// The pipes and settings the first process is started with.
struct Prepared {
    rootfs: RootfsSpec,
    seccomp: security::SeccompFilter,
    go: (OwnedFd, OwnedFd),
    report: (OwnedFd, OwnedFd),
    netns: Option<(OwnedFd, OwnedFd)>,
    signals: SigSet,
    old_mask: SigSet,
    /// `create`: the FIFO the first process waits at, and the console.
    gate: Option<OwnedFd>,
    console: Option<OwnedFd>,
}

fn setup(step: &'static str) -> impl Fn(nix::errno::Errno) -> RuntimeError {
    move |errno| RuntimeError::Setup { step, errno }
}

impl<'a> Launch<'a> {
    pub(super) fn new(
        root: &'a StateRoot,
        spec: &'a RunSpec,
        state: State,
        ready: Option<OwnedFd>,
    ) -> Self {
        Launch {
            root,
            spec,
            state,
            ready,
            cgroups: None,
            enforcer: None,
            child: None,
            committed: false,
        }
    }

    /// Runs every step; on success the container's command runs.
    pub(super) fn run(
        mut self,
        argv: &[CString],
        env: &[CString],
    ) -> Result<Running, RuntimeError> {
        let steps = self.cgroups().and_then(|()| self.police());
        let started = steps.and_then(|()| self.start(argv, env));
        match started {
            Ok(signals) => Ok(self.commit(signals)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The enclosing containers, then the cgroups: planned and recorded
    /// first, then the v2 one (whose id, recorded at once, says it is
    /// this container's and not a namesake's of another state root), then
    /// the v1 ones.
    fn cgroups(&mut self) -> Result<(), RuntimeError> {
        let (root, spec) = (self.root, self.spec);
        let hierarchies = Hierarchies::detect()?;
        if let Some(parent) = &spec.parent {
            let p = root.load(parent)?;
            if p.status != Status::Running {
                return Err(RuntimeError::WrongStatus {
                    name: parent.clone(),
                    status: format!("{} (a parent must be running)", p.status),
                });
            }
            self.state.enclosing = p.enclosing.iter().cloned().chain([p.name]).collect();
        }
        let enclosing_names = self.state.enclosing.clone();
        let enclosing: Vec<&str> = enclosing_names.iter().map(String::as_str).collect();
        self.state.cgroups = hierarchies.planned(&enclosing, &spec.name);
        root.save(&self.state)?;
        let made = self
            .cgroups
            .insert(hierarchies.create_unified(&enclosing, &spec.name)?);
        let id = made.id()?;
        self.state.cgroup_id = Some(id);
        root.remember_cgroup(id, &spec.name);
        root.save(&self.state)?;
        hierarchies.create_v1(made, &enclosing)?;
        self.state.cgroups = made.dirs().map(|d| d.to_path_buf()).collect();
        Ok(())
    }

    /// Limits, programs and policy maps, and the egress class's number.
    fn police(&mut self) -> Result<(), RuntimeError> {
        let (root, spec) = (self.root, self.spec);
        let cgroups = self.cgroups.as_ref().expect("cgroups made");
        let cgroup_id = cgroups.id()?;
        let pins = Pins::for_state_root(root.dir());
        let enforcer = self
            .enforcer
            .insert(
                super::policy::open_enforcer(root, &pins).map_err(|e| match e {
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
        match self.state.enclosing.first() {
            None => enforcer.police(&spec.name, cgroups.unified(), cgroup_id, &policy)?,
            // The outermost enclosing container's programs run for this one
            // (the kernel runs every ancestor's); attaching them here too
            // would judge, count and report everything it does twice.
            Some(outermost) => enforcer.police_nested(
                &spec.name,
                outermost,
                cgroups.unified(),
                cgroup_id,
                &policy,
            )?,
        }
        if let Some(egress) = spec.policy.network.egress {
            let owner = root.container_dir(&spec.name).display().to_string();
            let minor = shaping::allocate(&owner)?;
            self.state.shaping = Some(shaping::Shaping {
                minor,
                devices: Vec::new(),
                in_container: spec.net == NetMode::Bridge,
                rate: egress.rate,
                burst: egress.burst,
            });
            root.save(&self.state)?;
            enforcer.set_egress_class(cgroup_id, Some(palisade_common::shaping_class(minor)))?;
        }
        Ok(())
    }

    /// The root filesystem's plan, the seccomp filter, the pipes, the
    /// blocked signals and the bridge address: all the first process
    /// needs, made before it exists (it must not allocate more than it
    /// has to).
    fn prepare(&mut self) -> Result<Prepared, RuntimeError> {
        let (root, spec) = (self.root, self.spec);
        let staging = root.container_dir(&spec.name).join("rootfs");
        std::fs::create_dir(&staging)
            .map_err(|e| RuntimeError::io("create the rootfs mount point", &e))?;
        // What the job reads at /run/palisade/limits.json, written before
        // its first instruction.
        let mut policy = spec.policy.clone();
        policy.devices.allow.extend(spec.extra_device_rules());
        let limits = super::limits::create(root, &spec.name, &policy)?;
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
            limits: Some(limits),
            view: spec
                .policy
                .view
                .proc
                .then(|| super::view::files_of(root, &spec.name)),
        };
        let seccomp = security::seccomp_for(
            &spec.policy.network.sockets.seccomp_families(),
            spec.policy.security.io_uring,
        )?;
        let go = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
        let report = pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
        let signals = supervise::signals();
        let mut old_mask = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), Some(&mut old_mask))
            .map_err(setup("block signals"))?;
        let netns = match spec.net {
            NetMode::Bridge => {
                let owner = root.container_dir(&spec.name).display().to_string();
                self.state.net_address = Some(net::lease(&owner)?.addr);
                root.save(&self.state)?;
                Some(pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?)
            }
            _ => None,
        };
        if spec.userns {
            self.state.userns = Some(userns::HOST_BASE);
        }
        let (gate, console) = match &spec.contract {
            Some(contract) => (
                Some(super::oci::make_gate(&root.container_dir(&spec.name))?),
                contract
                    .console_socket
                    .as_deref()
                    .map(super::console::connect)
                    .transpose()?,
            ),
            None => (None, None),
        };
        Ok(Prepared {
            rootfs,
            seccomp,
            go,
            report,
            netns,
            signals,
            old_mask,
            gate,
            console,
        })
    }

    /// The first process: born in the v2 cgroup and new pid and time (and
    /// user) namespaces, it makes the rest of its namespaces and its root,
    /// then waits for the go; released once its network, user maps and v1
    /// cgroups are in place. Restoring, it is rebuilt into the image's
    /// tree before it runs.
    fn start(&mut self, argv: &[CString], env: &[CString]) -> Result<SigSet, RuntimeError> {
        let spec = self.spec;
        let prepared = self.prepare()?;
        let Prepared {
            rootfs,
            seccomp,
            go: (go_read, go_write),
            report: (report_read, report_write),
            netns,
            signals,
            old_mask,
            mut gate,
            mut console,
        } = prepared;
        let (netns_read, netns_write) = netns.map_or((None, None), |(r, w)| (Some(r), Some(w)));
        let mut clone_flags = libc::CLONE_NEWPID | libc::CLONE_NEWTIME;
        if spec.userns {
            // The pid namespace is then owned by the user namespace, so the
            // container's root may mount its /proc.
            clone_flags |= libc::CLONE_NEWUSER;
        }
        let unified = self
            .cgroups
            .as_ref()
            .expect("cgroups made")
            .open_unified()?;
        let forked =
            fork_into(clone_flags, Some(unified.as_fd())).map_err(|source| RuntimeError::Fork {
                step: "create the container's process",
                source,
            })?;
        let child = match forked {
            Forked::Child => {
                drop((go_write, report_read, netns_read));
                init::start(
                    go_read,
                    netns_write,
                    report_write,
                    init::Init {
                        argv,
                        env,
                        hostname: spec.hostname.as_deref().unwrap_or(&spec.name),
                        workdir: spec.workdir.as_ref(),
                        net: spec.net,
                        address: self.state.net_address,
                        rootfs: &rootfs,
                        sigmask: old_mask,
                        caps: spec.caps,
                        user: spec.user.as_ref(),
                        seccomp: &seccomp,
                        restore: spec.restore.is_some(),
                        rlimits: &spec.rlimits,
                        outlives_creator: spec.detach || gate.is_some(),
                        gate: gate.take(),
                        console: console.take(),
                        preserve_fds: spec.contract.as_ref().map_or(0, |c| c.preserve_fds),
                    },
                )
            }
            Forked::Parent { child } => Pid::from_raw(child),
        };
        self.child = Some(child);
        drop((go_read, report_write, netns_write, gate, console));

        self.connect(child, netns_read)?;
        // Into the cgroups first: the command must not run a single
        // instruction outside its policy.
        let cgroups = self.cgroups.as_ref().expect("cgroups made");
        cgroups.join_v1(child.as_raw())?;
        self.state.pid = Some(child.as_raw());
        self.state.pid_start = super::oci::start_time(child.as_raw());
        if let Some(bundle) = &spec.bundle {
            let hooks = &bundle.hooks;
            for (phase, list) in [
                ("createRuntime", &hooks.create_runtime),
                ("prestart", &hooks.prestart),
            ] {
                super::hooks::run(phase, list, &self.state)?;
            }
        }
        write(&go_write, b"1").map_err(setup("start the container"))?;
        drop(go_write);
        if let Some((status, message)) = init::read_report(report_read) {
            return Err(RuntimeError::Start { status, message });
        }
        if spec.restore.is_some() {
            self.restore(child, &seccomp)?;
        }
        self.state.status = if spec.contract.is_some() {
            Status::Created
        } else {
            Status::Running
        };
        self.root.save(&self.state)?;
        if let Some(file) = spec.contract.as_ref().and_then(|c| c.pid_file.as_ref()) {
            super::monitor::write_pid_file(file, child.as_raw())?;
        }
        Ok(signals)
    }

    /// The veth pair (once the child has its network namespace), the
    /// traffic class (before the command runs: a packet sent before would
    /// find no class and pass unshaped) and the user namespace's maps.
    fn connect(&mut self, child: Pid, netns_ready: Option<OwnedFd>) -> Result<(), RuntimeError> {
        if let Some(fd) = netns_ready {
            let mut byte = [0u8; 1];
            // Anything but the byte: the child failed before, and its
            // report says why.
            if !matches!(File::from(fd).read(&mut byte), Ok(1)) {
                return Ok(());
            }
            let owner = self.root.container_dir(&self.spec.name);
            let veth = net::veth_name(&owner.display().to_string());
            self.state.veth = Some(veth.clone());
            net::attach(child.as_raw(), &veth)?;
        }
        if let Some(shaping) = &mut self.state.shaping {
            let netns = if shaping.in_container {
                shaping.devices = vec!["eth0".to_string()];
                shaping::Netns::Of(child.as_raw())
            } else {
                shaping.devices = shaping::host_devices();
                shaping::Netns::Host
            };
            let (devices, minor, egress) =
                (shaping.devices.clone(), shaping.minor, shaping.egress());
            self.root.save(&self.state)?;
            shaping::install(netns, &devices, minor, egress)?;
        }
        if self.spec.userns {
            userns::write_maps(child.as_raw())?;
        }
        Ok(())
    }

    /// The new process stopped itself as our tracee, in every namespace,
    /// cgroup and policy of the container; the image's tree is rebuilt
    /// from it (its pid 1) and let go.
    fn restore(
        &mut self,
        child: Pid,
        seccomp: &security::SeccompFilter,
    ) -> Result<(), RuntimeError> {
        let (root, spec) = (self.root, self.spec);
        let handoff = spec.restore.as_ref().expect("restoring");
        let restored = handoff.take().ok_or_else(|| {
            crate::checkpoint::CheckpointError::Image("the image was restored already".into())
        });
        // The container's output: its log when detached, else this
        // process's own stdout (the terminal or pipe of `palisade restore`).
        let output = if spec.detach {
            root.log_path(&spec.name)
        } else {
            PathBuf::from("/proc/self/fd/1")
        };
        restored
            .and_then(|verified| {
                crate::checkpoint::restore::restore_into(
                    child.as_raw(),
                    &verified.image,
                    &verified.pages,
                    &verified.files,
                    &output,
                    &seccomp.raw_programs(),
                )
            })
            .map_err(|e| RuntimeError::Start {
                status: EXIT_SETUP_FAILED,
                message: e.to_string(),
            })
    }

    /// The container runs: nothing is undone any more.
    fn commit(mut self, signals: SigSet) -> Running {
        self.committed = true;
        Running {
            state: self.state.clone(),
            cgroups: self.cgroups.take().expect("cgroups made"),
            enforcer: self.enforcer.take(),
            child: self.child.take().expect("child started"),
            signals,
            ready: self.ready.take(),
        }
    }

    /// Undoes everything, then passes the error on (to the waiting CLI
    /// too, for a detached run).
    fn fail(mut self, error: RuntimeError) -> RuntimeError {
        let ready = self.ready.take();
        drop(self);
        super::monitor::report_failure(ready, &error);
        error
    }
}

impl Drop for Launch<'_> {
    /// The rollback, newest first.
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Some(child) = self.child.take() {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
        if let (Some(enforcer), Some(id)) = (self.enforcer.as_mut(), self.state.cgroup_id) {
            // What was written of the policy goes by search: the failure
            // may have come before the policy was complete.
            let _ = enforcer.release(&self.spec.name, id, None);
        }
        super::monitor::release_network(&self.state);
        // Removes the cgroups it made.
        drop(self.cgroups.take());
        // It may still hold the host's BPF lock (a start that failed
        // before its policy was written), which the cleanup below takes.
        drop(self.enforcer.take());
        let _ = self.root.remove(&self.spec.name);
        cleanup::release_root_if_idle(self.root, false);
    }
}
