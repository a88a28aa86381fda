//! `palisade run`: start a container, in the foreground or detached.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::{
    runtime::{
        self, BindMount, DeviceNode, DeviceRequest, NetMode, RECIPE_VERSION, Recipe, RunOutcome,
        RunSpec, StateRoot, security,
    },
    spec::{Egress, Policy, Resources, Value, load_bundle},
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Net {
    /// The host's network.
    Host,
    /// A private network namespace with only loopback.
    None,
    /// A private network namespace on the host bridge palisade0
    /// (10.88.0.0/16, the host is 10.88.0.1).
    Bridge,
}

#[derive(Debug, Args)]
#[command(about = "Run a command in a new container, under a policy")]
pub struct RunArgs {
    /// Container name: names its state, cgroups and (by default) hostname
    /// (default: a generated `run-XXXXXXXX`).
    #[arg(long)]
    pub name: Option<String>,

    /// Policy file (TOML); see docs/policy.md for the grammar. Without one,
    /// nothing is restricted.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Keep running after palisade exits; output goes to the container's
    /// log (`palisade logs NAME`).
    #[arg(short, long)]
    pub detach: bool,

    /// Run an OCI runtime-spec bundle: DIR/config.json gives the command,
    /// root, mounts, hostname, namespaces, resources, capabilities, user and
    /// masked/read-only paths. --policy, --name, -d and the resource flags
    /// still apply (the flags over the bundle's resources).
    #[arg(long, value_name = "DIR", conflicts_with_all = [
        "rootfs", "read_only", "mounts", "env", "workdir", "hostname", "net", "user", "userns",
        "cap_add", "cap_drop", "command",
    ])]
    pub bundle: Option<PathBuf>,

    /// Root filesystem directory. Without it, the host's root is used,
    /// read-only.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,

    /// Mount the --rootfs read-only.
    #[arg(long)]
    pub read_only: bool,

    /// Bind mount SRC (host) on DST (container), read-only with `:ro`.
    /// DST may not be /, /proc, /sys or under them, nor be reached through
    /// a symlink in the root; a cgroup filesystem is always read-only.
    /// Repeatable.
    #[arg(long = "mount", value_name = "SRC:DST[:ro]", value_parser = parse_mount)]
    pub mounts: Vec<BindMount>,

    /// Give the container the host device HOST (a character or block
    /// device) at CONTAINER (default: the same path; under /dev), with
    /// PERMS of r (read), w (write), m (mknod), default rwm. Repeatable.
    #[arg(long = "device", value_name = "HOST[:CONTAINER][:PERMS]", value_parser = DeviceRequest::parse)]
    pub devices: Vec<DeviceRequest>,

    /// Set an environment variable. Repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Working directory inside the container (absolute).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Hostname (default: the name).
    #[arg(long)]
    pub hostname: Option<String>,

    /// Network: host, none (private namespace, loopback only) or bridge
    /// (private namespace on the host bridge palisade0).
    #[arg(long, value_enum, default_value = "host")]
    pub net: Net,

    /// Run as UID[:GID] (numeric) instead of root; such a user has no
    /// capabilities.
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,

    /// Nest the container in a running container NAME: its cgroups go
    /// inside NAME's, whose limits bound it, and NAME's connect policy
    /// applies on top of its own. Ending NAME ends it.
    #[arg(long, value_name = "NAME")]
    pub parent: Option<String>,

    /// Run in a user namespace: root in the container is host uid/gid
    /// 1000000 (ids 0-65535 map to 1000000-1065535).
    #[arg(long)]
    pub userns: bool,

    /// Add a capability to the default set (NET_ADMIN, CAP_SYS_TIME, ALL…).
    /// Repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,

    /// Drop a capability from the default set (or ALL). Repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,

    /// Limit the container's outbound traffic to RATE of payload (bit,
    /// kbit, mbit, gbit: "10mbit"); overrides the policy's egress_rate.
    #[arg(long, value_name = "RATE")]
    pub egress_rate: Option<String>,

    /// Bytes that may leave at once above the rate (default 64k, or 2 ms
    /// at the rate if more); overrides the policy's egress_burst.
    #[arg(long, value_name = "SIZE")]
    pub egress_burst: Option<String>,

    /// Show the container its own memory, CPUs, CPU time, uptime, load
    /// and I/O in /proc (meminfo, cpuinfo, stat, uptime, loadavg,
    /// diskstats, swaps) and /sys/devices/system/cpu/online, served by
    /// the agent (`palisade agent`); as the policy's `[view] proc = true`.
    /// Without a running agent it reads the host's files (`ps` says so).
    #[arg(long)]
    pub proc_view: bool,

    #[command(flatten)]
    pub resources: ResourceFlags,

    /// The command and its arguments.
    #[arg(required_unless_present = "bundle", last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Resource limits; each overrides the policy file's `[resources]` field
/// of the same name.
#[derive(Debug, Args)]
pub struct ResourceFlags {
    /// Memory hard limit (e.g. 256M).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory soft limit: reclaim pressure above it.
    #[arg(long, value_name = "SIZE")]
    pub memory_high: Option<String>,
    /// Memory plus swap (-1: unlimited).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU hard limit, in CPUs (e.g. 0.5).
    #[arg(long, value_name = "CPUS")]
    pub cpu: Option<String>,
    /// CPU proportional share, 1-10000 (default 100).
    #[arg(long, value_name = "WEIGHT")]
    pub cpu_weight: Option<String>,
    /// Real-time CPU time, in microseconds per period, for the
    /// container's SCHED_FIFO/SCHED_RR tasks together (cgroup v1 with
    /// real-time group scheduling only).
    #[arg(long, value_name = "US")]
    pub cpu_rt_runtime: Option<String>,
    /// The period of --cpu-rt-runtime, microseconds (default 1000000).
    #[arg(long, value_name = "US")]
    pub cpu_rt_period: Option<String>,
    /// CPUs the container may run on (e.g. 0-1,3).
    #[arg(long, value_name = "LIST")]
    pub cpuset: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long, value_name = "LIST")]
    pub mems: Option<String>,
    /// Maximum number of tasks.
    #[arg(long, value_name = "N")]
    pub pids: Option<String>,
    /// I/O proportional share, 1-10000.
    #[arg(long, value_name = "WEIGHT")]
    pub io_weight: Option<String>,
    /// Read rate limit for a device: "MAJ:MIN RATE" or "/dev/X RATE". Repeatable.
    #[arg(long, value_name = "DEV RATE")]
    pub io_read_bps: Vec<String>,
    /// Write rate limit for a device. Repeatable.
    #[arg(long, value_name = "DEV RATE")]
    pub io_write_bps: Vec<String>,
}

impl ResourceFlags {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        let scalars = [
            ("memory", &self.memory),
            ("memory_high", &self.memory_high),
            ("memory_swap", &self.memory_swap),
            ("cpu", &self.cpu),
            ("cpu_weight", &self.cpu_weight),
            ("cpu_rt_runtime", &self.cpu_rt_runtime),
            ("cpu_rt_period", &self.cpu_rt_period),
            ("cpuset", &self.cpuset),
            ("mems", &self.mems),
            ("pids", &self.pids),
            ("io_weight", &self.io_weight),
        ];
        let mut pairs: Vec<(&'static str, &str)> = scalars
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
            .collect();
        pairs.extend(self.io_read_bps.iter().map(|v| ("io_read_bps", v.as_str())));
        pairs.extend(
            self.io_write_bps
                .iter()
                .map(|v| ("io_write_bps", v.as_str())),
        );
        pairs
    }
}

/// The outbound limit from the flags over the policy's: a new rate gets
/// the default burst unless --egress-burst is given too.
fn egress_flags(
    rate: Option<&str>,
    burst: Option<&str>,
    from_policy: Option<Egress>,
) -> Result<Option<Egress>, String> {
    let rate = match (rate, from_policy) {
        (Some(r), _) => Value::Str(r.to_string()),
        (None, Some(p)) if burst.is_some() => Value::Int(p.rate as i64),
        (None, p) if burst.is_none() => return Ok(p),
        (None, _) => {
            return Err("--egress-burst needs --egress-rate (or egress_rate in the policy)".into());
        }
    };
    let burst = burst.map(|b| Value::Str(b.to_string()));
    Egress::new(&rate, burst.as_ref())
        .map(Some)
        .map_err(|e| format!("--egress-rate/--egress-burst: {e}"))
}

fn parse_mount(text: &str) -> Result<BindMount, String> {
    BindMount::parse(text)
}

pub fn execute(root: &StateRoot, args: RunArgs) -> i32 {
    // Read once: the text kept for a restore is the text validated.
    let (policy, text) = match &args.policy {
        Some(path) => match Policy::load_with_text(path) {
            Ok((p, text)) => (p, Some(text)),
            Err(e) => {
                super::report(&e);
                return super::EXIT_BAD_INPUT;
            }
        },
        None => (Policy::default(), None),
    };
    match spec_from(args, policy) {
        Ok(mut spec) => {
            if spec.policy.view.proc && runtime::view::served(root).is_none() {
                eprintln!(
                    "palisade: warning: no agent serves /proc views for {}: {} reads the host's /proc files until `palisade agent` runs there (`ps` shows it)",
                    root.dir().display(),
                    spec.name
                );
            }
            spec.recipe = Some(Recipe {
                version: RECIPE_VERSION,
                launch: spec.launch(),
                policy: text,
                applied_policy: None,
            });
            launch(root, &spec)
        }
        Err(status) => status,
    }
}

/// The run spec for `args` under `policy`, or the exit status of a bad
/// flag (reported).
fn spec_from(args: RunArgs, policy: Policy) -> Result<RunSpec, i32> {
    let bad_input = |e: &dyn std::fmt::Display| {
        super::report(e);
        super::EXIT_BAD_INPUT
    };
    let mut policy = policy;
    policy.view.proc |= args.proc_view;
    let pairs = args.resources.pairs();
    if !pairs.is_empty() {
        match Resources::from_flags(&pairs).and_then(|r| r.validate()) {
            Ok(flags) => policy.resources = policy.resources.overlaid_with(flags),
            Err(e) => return Err(bad_input(&e)),
        }
    }
    match egress_flags(
        args.egress_rate.as_deref(),
        args.egress_burst.as_deref(),
        policy.network.egress,
    ) {
        Ok(egress) => policy.network.egress = egress,
        Err(e) => return Err(bad_input(&e)),
    }
    let caps = match security::resolve_caps(&args.cap_add, &args.cap_drop) {
        Ok(c) => c,
        Err(e) => return Err(bad_input(&e)),
    };
    let user = match args.user.as_deref().map(security::parse_user).transpose() {
        Ok(u) => u,
        Err(e) => return Err(bad_input(&e)),
    };
    let devices = match args
        .devices
        .iter()
        .map(|d| DeviceNode::resolve(d).map_err(|e| format!("--device {e}")))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(d) => d,
        Err(e) => return Err(bad_input(&e)),
    };
    let name = args.name.unwrap_or_else(generated_name);
    // `[oom]` is judged against the limits the container will have: the
    // policy's with the flags' (and a bundle's, below) merged in.
    let policy_file = args.policy.clone().unwrap_or_default();
    if args.bundle.is_none()
        && let Err(e) = policy.check_oom(&policy_file)
    {
        return Err(bad_input(&e));
    }
    if let Some(dir) = &args.bundle {
        let bundle = match load_bundle(dir) {
            Ok(b) => b,
            Err(e) => return Err(bad_input(&e)),
        };
        if bundle.terminal {
            return Err(bad_input(&format!(
                "{}: process.terminal: `run` passes its own stdin, stdout and stderr through and makes no terminal; set it to false, or use `create --console-socket` to receive one",
                dir.join("config.json").display()
            )));
        }
        for warning in &bundle.warnings {
            eprintln!("palisade: warning: {warning}");
        }
        // The flags' resources over the policy's over the bundle's.
        let mut policy = policy;
        policy.resources = bundle.resources.clone().overlaid_with(policy.resources);
        if let Err(e) = policy.check_oom(&policy_file) {
            return Err(bad_input(&e));
        }
        let mut spec = match RunSpec::from_bundle(name.clone(), bundle, policy, args.detach) {
            Ok(s) => s,
            Err(e) => return Err(bad_input(&e)),
        };
        spec.devices.extend(devices);
        return Ok(spec);
    }
    let spec = RunSpec {
        name: name.clone(),
        command: args.command,
        policy,
        detach: args.detach,
        env: args.env,
        workdir: args.workdir,
        hostname: args.hostname,
        net: match args.net {
            Net::Host => NetMode::Host,
            Net::None => NetMode::None,
            Net::Bridge => NetMode::Bridge,
        },
        rootfs: args.rootfs,
        read_only: args.read_only,
        mounts: args.mounts,
        devices,
        device_rules: Vec::new(),
        caps,
        user,
        userns: args.userns,
        parent: args.parent,
        extra_masked: Vec::new(),
        extra_read_only: Vec::new(),
        recipe: None,
        restore: None,
        bundle: None,
        rlimits: Vec::new(),
        contract: None,
    };
    Ok(spec)
}

fn launch(root: &StateRoot, spec: &RunSpec) -> i32 {
    outcome(&spec.name, runtime::run(root, spec))
}

/// The exit status of a run (or a restore): a detached one prints the
/// container's name.
pub(super) fn outcome(name: &str, result: Result<RunOutcome, runtime::RuntimeError>) -> i32 {
    match result {
        Ok(RunOutcome::Exited(status)) => status,
        Ok(RunOutcome::Detached) => {
            println!("{name}");
            0
        }
        Ok(RunOutcome::Created(_)) => 0,
        Err(e) => super::failed(e),
    }
}

fn generated_name() -> String {
    let mut bytes = [0u8; 4];
    // A name only needs to be unlikely to clash; fall back to the pid.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        bytes = std::process::id().to_be_bytes();
    }
    format!(
        "run-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// `monitor-exited` (hidden): the cleanup after a detached container's
/// first process ended. Only the small monitor runs it, in its own process
/// and with the container's lock inherited; anyone else is refused.
#[derive(Debug, clap::Args)]
pub struct MonitorExitedArgs {
    /// The inherited descriptor of the container's creator lock.
    #[arg(long, value_name = "FD")]
    lock_fd: i32,
    /// The container.
    name: String,
    /// Its first process's raw wait status.
    wait_status: i32,
}

pub fn monitor_exited(root: &StateRoot, args: MonitorExitedArgs) -> i32 {
    match crate::runtime::monitor_exited(root, &args.name, args.lock_fd, args.wait_status) {
        Ok(status) => status,
        Err(e) => super::failed(e),
    }
}
