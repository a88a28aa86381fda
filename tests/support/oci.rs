//! Real OCI clients driving the runtime under test: a private podman (its
//! own storage, run root, tmp dir, containers.conf, cgroup parent and
//! runtime state root) and a private containerd (its own root, state,
//! sockets, namespace, runc root and fifo dir), each holding the busybox
//! image of `cargo xtask rootfs`.
//!
//! Dropping one removes what it made: its containers, the processes that
//! name its directory, the mounts under its directory, the cgroups under
//! its own parent. It never touches anything else: no shared podman or
//! containerd state, no process found by name.
#![allow(dead_code)]

use super::{describe, unique_name};
use nix::{sys::signal, unistd::Pid};
use sha2::{Digest, Sha256};
use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Env var naming another OCI runtime to drive instead of this build's
/// palisade (`/usr/sbin/runc` validates the tests themselves).
pub const RUNTIME_ENV: &str = "PALISADE_OCI_TEST_RUNTIME";

/// The image both clients hold, made from the busybox rootfs.
pub const IMAGE: &str = "localhost/palisade-test/busybox:latest";

/// The runtime binary the clients are given.
pub fn oci_runtime() -> PathBuf {
    std::env::var_os(RUNTIME_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_palisade")))
}

/// The runtime's basename (`palisade`, `runc`, `crun`): what podman keys
/// its per-runtime behaviour on, and what the tests key theirs on.
pub fn runtime_name() -> String {
    oci_runtime()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn runtime_is_palisade() -> bool {
    runtime_name() == "palisade"
}

/// The busybox rootfs `cargo xtask rootfs` builds, if it is there.
pub fn busybox_rootfs() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rootfs/busybox");
    dir.join("bin/busybox").exists().then_some(dir)
}

/// Whether `program` can be run (found on PATH and executable).
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Why a client test cannot run here, if it cannot.
fn missing(programs: &[&str]) -> Option<String> {
    if busybox_rootfs().is_none() {
        return Some("no busybox rootfs at target/rootfs/busybox: run `cargo xtask rootfs`".into());
    }
    programs
        .iter()
        .find(|p| !have(p))
        .map(|p| format!("{p} is not installed (`cargo xtask test` installs it)"))
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the busybox rootfs into `dir` as one uncompressed layer
/// (`layer.tar`, for `podman import`) and as an OCI image archive of that
/// layer named [`IMAGE`] (`image.tar`, for `ctr images import`).
fn build_image(dir: &Path) -> (PathBuf, PathBuf) {
    let rootfs = busybox_rootfs().expect("busybox rootfs");
    fs::create_dir_all(dir.join("oci/blobs/sha256")).expect("create image dir");
    let layer = dir.join("layer.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("--numeric-owner")
            .arg("-cf")
            .arg(&layer)
            .arg("."),
        "tar the busybox rootfs",
    );
    let blobs = dir.join("oci/blobs/sha256");
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes).expect("write blob");
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer_digest, layer_size) = put(&fs::read(&layer).expect("read layer"));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": IMAGE },
        }],
    });
    fs::write(dir.join("oci/index.json"), index.to_string()).expect("write index.json");
    fs::write(
        dir.join("oci/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let archive = dir.join("image.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(dir.join("oci"))
            .arg("-cf")
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"]),
        "tar the OCI image",
    );
    (layer, archive)
}

/// `base` with every key of `extra` set, tables merged key by key (what
/// a user does when they paste a snippet into an existing config file).
pub fn merge_toml(base: &mut toml::Table, extra: &toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => {
                merge_toml(mine, theirs)
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

fn parse_toml(text: &str, what: &str) -> toml::Table {
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{what} is not valid TOML: {e}\n{text}"))
}

/// Whether this process has CAP_SYS_RESOURCE (may raise hard rlimits).
fn has_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// This process's hard limit named `name` in /proc/self/limits ("Max
/// open files"), `default` if unreadable or unlimited.
fn hard_limit(name: &str, default: u64) -> u64 {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(default)
}

/// Mount points strictly under `dir`, deepest first, from mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Pids of the processes whose command line names `needle` (a directory
/// only this test uses, so they are this test's), other than this one.
fn pids_naming(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

fn kill_pid(pid: i32) {
    let _ = signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL);
}

/// Kills the processes that name `dir` on their command line.
fn kill_naming(dir: &Path) {
    for pid in pids_naming(&dir.to_string_lossy()) {
        kill_pid(pid);
    }
}

/// Every `<hierarchy>/<parent>` cgroup directory, whether or not it exists.
pub fn cgroup_parents(parent: &str) -> Vec<PathBuf> {
    super::cgroup_mounts()
        .into_iter()
        .map(|m| m.join(parent))
        .collect()
}

/// The cgroup directories under `parent` that still exist (the parent
/// itself included), in every hierarchy.
pub fn leftover_cgroups(parent: &str) -> Vec<PathBuf> {
    let mut found = vec![];
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        if !dir.is_dir() {
            return;
        }
        found.push(dir.to_path_buf());
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), found);
            }
        }
    }
    for p in cgroup_parents(parent) {
        walk(&p, &mut found);
    }
    found
}

/// Cgroup directories, anywhere in the top three levels of any hierarchy,
/// whose name contains `needle` (a container id): wherever the runtime
/// put a container's cgroups, they show up here while they exist.
pub fn cgroups_named(needle: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: u32, needle: &str, found: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_string_lossy().contains(needle) {
                found.push(e.path());
            }
            if depth < 3 {
                walk(&e.path(), depth + 1, needle, found);
            }
        }
    }
    let mut found = vec![];
    for m in super::cgroup_mounts() {
        walk(&m, 1, needle, &mut found);
    }
    found
}

/// Removes the cgroups under `parent` (which only this test uses): thaws
/// them, kills what is still in them, removes them deepest first.
fn remove_cgroups(parent: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut dirs = leftover_cgroups(parent);
        if dirs.is_empty() || Instant::now() > deadline {
            return;
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                kill_pid(pid);
            }
        }
        for d in &dirs {
            let _ = fs::remove_dir(d);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `palisade --root ROOT system prune`: the BPF pins of that state root.
fn prune_state_root(root: &Path) {
    if runtime_is_palisade() {
        let _ = Command::new(oci_runtime())
            .arg("--root")
            .arg(root)
            .args(["system", "prune"])
            .stdin(Stdio::null())
            .output();
    }
}

/// Entries left in a runtime state root (a missing root is empty).
pub fn state_entries(root: &Path) -> Vec<String> {
    fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A command line for `sh -c` (the tty tests run podman under `script`).
pub fn shell_line<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = quote(program);
    for a in args {
        line.push(' ');
        line.push_str(&quote(&a.as_ref().to_string_lossy()));
    }
    line
}

/// A podman of its own: storage, run root, tmp dir, config, cgroup parent
/// and runtime state root all under `dir`, the busybox image imported.
pub struct Podman {
    pub dir: PathBuf,
    /// Unique; also the cgroup parent of its containers and conmons
    /// (`/sys/fs/cgroup/<hierarchy>/<name>/...`).
    pub name: String,
    /// The runtime podman is given: a script named like the runtime (see
    /// `write_runtime_wrapper`).
    pub runtime: PathBuf,
    pub state_root: PathBuf,
    driver: &'static str,
}

impl Podman {
    /// A private podman for `test`, or None (and the test recorded as
    /// skipped) when this host cannot run one.
    pub fn new(test: &str) -> Option<Self> {
        Self::with_config(test, |_| String::new())
    }

    /// The same, with the containers.conf TOML `extra` returns (given the
    /// instance, e.g. for its runtime's path) merged into its config.
    pub fn with_config(test: &str, extra: impl FnOnce(&Self) -> String) -> Option<Self> {
        if let Some(why) = missing(&["podman", "conmon", "tar"]) {
            super::skip(test, &why);
            return None;
        }
        let name = unique_name("podman");
        let dir = std::env::temp_dir().join(format!("palisade-{name}"));
        let state_root = dir.join("runtime-state");
        for sub in ["storage", "run", "tmp", "networks", "bin", "image"] {
            fs::create_dir_all(dir.join(sub)).expect("create podman dirs");
        }
        let runtime = dir.join("bin").join(runtime_name());
        let driver = if fs::read_to_string("/proc/filesystems")
            .is_ok_and(|f| f.lines().any(|l| l.ends_with("\toverlay")))
        {
            "overlay"
        } else {
            "vfs"
        };
        let pod = Self {
            dir,
            name,
            runtime,
            state_root,
            driver,
        };
        pod.write_runtime_wrapper();
        pod.write_config(&extra(&pod));
        let (layer, _) = build_image(&pod.dir.join("image"));
        run_ok(
            pod.cmd().arg("import").arg(&layer).arg(IMAGE),
            "podman import of the busybox rootfs",
        );
        Some(pod)
    }

    /// podman 4.3 gives `--runtime-flag`s to conmon and to its own runtime
    /// calls but not to the `podman container cleanup` that conmon runs
    /// when a container exits: that one calls `delete --force ID` on the
    /// runtime's default root, and the container's state (and, for runc,
    /// its cgroups) would stay in ours. The wrapper adds our root where
    /// podman gave none, and is named like the runtime because podman
    /// keys its JSON error logging on the runtime's basename.
    fn write_runtime_wrapper(&self) {
        let real = oci_runtime();
        let q = |p: &Path| format!("'{}'", p.display());
        let script = format!(
            "#!/bin/sh\n\
             case \"$1\" in --root|--root=*) exec {real} \"$@\" ;; esac\n\
             exec {real} --root={root} \"$@\"\n",
            real = q(&real),
            root = q(&self.state_root),
        );
        fs::write(&self.runtime, script).expect("write runtime wrapper");
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&self.runtime, fs::Permissions::from_mode(0o755))
            .expect("chmod runtime wrapper");
    }

    fn write_config(&self, extra: &str) {
        let d = self.dir.display();
        let mut conf = parse_toml(
            &format!(
                "[engine]\n\
                 lock_type = \"file\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 runtime_supports_json = [\"crun\", \"runc\", \"kata\", \"runsc\", \"krun\", \"palisade\"]\n\
                 [network]\n\
                 network_config_dir = \"{d}/networks\"\n"
            ),
            "podman base config",
        );
        if !has_sys_resource() {
            // podman asks RLIMIT_NOFILE 1048576 by default; without
            // CAP_SYS_RESOURCE no runtime may raise a hard limit, and
            // podman itself runs the runtime with RLIMIT_NPROC 32768.
            let nofile = hard_limit("Max open files", 1024);
            let nproc = hard_limit("Max processes", 32768).min(32768);
            merge_toml(
                &mut conf,
                &parse_toml(
                    &format!(
                        "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n"
                    ),
                    "ulimits",
                ),
            );
        }
        if !extra.is_empty() {
            merge_toml(&mut conf, &parse_toml(extra, "extra podman config"));
        }
        fs::write(
            self.dir.join("containers.conf"),
            toml::to_string(&conf).expect("serialise containers.conf"),
        )
        .expect("write containers.conf");
        fs::write(
            self.dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"{}\"\nrunroot = \"{d}/run\"\ngraphroot = \"{d}/storage\"\n",
                self.driver
            ),
        )
        .expect("write storage.conf");
        fs::write(
            self.dir.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .expect("write registries.conf");
    }

    /// The environment every podman of this instance runs with (podman
    /// passes it on to conmon and the cleanup process).
    pub fn envs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("CONTAINERS_CONF", self.dir.join("containers.conf")),
            ("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf")),
            (
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            ),
        ]
    }

    /// The global flags, without `--runtime` (see `cmd`).
    fn base_args(&self) -> Vec<String> {
        let d = |s: &str| self.dir.join(s).to_string_lossy().into_owned();
        vec![
            "--root".into(),
            d("storage"),
            "--runroot".into(),
            d("run"),
            "--tmpdir".into(),
            d("tmp"),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
            "--storage-driver".into(),
            self.driver.into(),
        ]
    }

    /// All global flags: the private dirs, the runtime and its state root.
    pub fn args(&self) -> Vec<String> {
        let mut args = self.base_args();
        args.extend([
            "--runtime".into(),
            self.runtime.to_string_lossy().into_owned(),
            "--runtime-flag".into(),
            format!("root={}", self.state_root.display()),
        ]);
        args
    }

    /// `podman` with this instance's flags and environment, stdin
    /// /dev/null, in this instance's dir: conmon inherits the cwd and
    /// writes an `oom` file there when a container is OOM-killed.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.args(self.args())
            .envs(self.envs())
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    /// `podman` with this instance's dirs but the runtime chosen by
    /// `runtime` (a name from containers.conf `[engine.runtimes]`).
    pub fn cmd_with_runtime(&self, runtime: &str) -> Command {
        let mut c = Command::new("podman");
        c.args(self.base_args())
            .args(["--runtime", runtime])
            .envs(self.envs())
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    /// The flags `podman run`/`create` get before the caller's: never
    /// pull, and this instance's cgroup parent.
    pub fn run_flags(&self) -> Vec<String> {
        vec![
            "--pull".into(),
            "never".into(),
            "--cgroup-parent".into(),
            format!("/{}", self.name),
        ]
    }

    /// `podman run <run_flags> FLAGS IMAGE CMD...`, waited for.
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> Output {
        self.cmd()
            .arg("run")
            .args(self.run_flags())
            .args(flags)
            .arg(IMAGE)
            .args(cmd)
            .output()
            .expect("run podman")
    }

    /// `podman ARGS...`, waited for.
    pub fn podman(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run podman")
    }

    /// `podman ARGS...`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd().args(args), &format!("podman {}", args.join(" ")))
    }

    /// `podman inspect -f FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name]).trim().to_string()
    }

    /// Starts `sh -c SCRIPT` detached as container `name` (extra `flags`
    /// before the image) and returns its host pid once it runs.
    pub fn run_detached(&self, name: &str, flags: &[&str], script: &str) -> i32 {
        let mut all = vec!["-d", "--name", name, "--network", "none"];
        all.extend_from_slice(flags);
        let out = self.run(&all, &["sh", "-c", script]);
        assert!(out.status.success(), "podman run -d: {}", describe(&out));
        let pid: i32 = self
            .inspect(name, "{{.State.Pid}}")
            .parse()
            .expect("a pid from podman inspect");
        assert!(pid > 0, "container {name} has no pid");
        pid
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-af", "-t", "0"]).output();
        let _ = self.cmd().args(["rmi", "-af"]).output();
        prune_state_root(&self.state_root);
        kill_naming(&self.dir);
        remove_cgroups(&self.name);
        unmount_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A containerd of its own, started as a child: root, state, sockets, opt
/// dir under `dir`; its containers in namespace `ns`, their runc root
/// under `dir`, their cgroups under `/sys/fs/cgroup/<hierarchy>/<ns>`.
pub struct Containerd {
    pub dir: PathBuf,
    pub ns: String,
    pub config: PathBuf,
    child: Child,
}

impl Containerd {
    /// A private containerd for `test` (CRI plugin off), or None (and the
    /// test recorded as skipped) when this host cannot run one.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, false, "")
    }

    /// The same with the CRI plugin on or off and `extra` (config TOML)
    /// merged into its config.
    pub fn start_with(test: &str, cri: bool, extra: &str) -> Option<Self> {
        if let Some(why) = missing(&["containerd", "ctr", "containerd-shim-runc-v2", "tar"]) {
            super::skip(test, &why);
            return None;
        }
        let ns = unique_name("ctd");
        let dir = std::env::temp_dir().join(format!("palisade-{ns}"));
        fs::create_dir_all(dir.join("image")).expect("create containerd dir");
        let config = dir.join("config.toml");
        fs::write(&config, Self::config_text(&dir, cri, extra)).expect("write containerd config");
        let log = fs::File::create(dir.join("containerd.log")).expect("create containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let mut ctd = Self {
            dir,
            ns,
            config,
            child,
        };
        ctd.wait_ready();
        let (_, archive) = build_image(&ctd.dir.join("image"));
        run_ok(
            ctd.ctr().args(["images", "import"]).arg(&archive),
            "ctr images import of the busybox image",
        );
        Some(ctd)
    }

    /// The config: everything under `dir`, plugins this host lacks (or the
    /// tests do not need) disabled, then `extra` merged in.
    pub fn config_text(dir: &Path, cri: bool, extra: &str) -> String {
        let d = dir.display();
        let mut disabled = vec![
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
        ];
        if !cri {
            disabled.push("io.containerd.grpc.v1.cri");
        }
        let disabled: Vec<String> = disabled.iter().map(|p| format!("{p:?}")).collect();
        // With the CRI plugin, start from the file a user would have
        // (`containerd config default`: it declares the runc runtime that
        // `default_runtime_name` names; a config whose `runtimes` table
        // lacks it makes the CRI plugin refuse to load).
        let mut conf = if cri {
            let default = Command::new("containerd")
                .args(["config", "default"])
                .stdin(Stdio::null())
                .output()
                .expect("containerd config default");
            parse_toml(&super::ok(&default), "containerd config default")
        } else {
            toml::Table::new()
        };
        let ours = parse_toml(
            &format!(
                "version = 2\n\
                 root = \"{d}/root\"\n\
                 state = \"{d}/state\"\n\
                 disabled_plugins = [{}]\n\
                 [grpc]\naddress = \"{d}/containerd.sock\"\n\
                 [ttrpc]\naddress = \"{d}/containerd.sock.ttrpc\"\n\
                 [debug]\naddress = \"\"\n\
                 [metrics]\naddress = \"\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\npath = \"{d}/opt\"\n",
                disabled.join(", ")
            ),
            "containerd base config",
        );
        merge_toml(&mut conf, &ours);
        if cri {
            // The CRI plugin reads CNI configs at start: give it its own
            // (empty) dirs rather than the host's.
            merge_toml(
                &mut conf,
                &parse_toml(
                    &format!(
                        "[plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
                         conf_dir = \"{d}/cni/net.d\"\nbin_dir = \"{d}/cni/bin\"\n"
                    ),
                    "cri config",
                ),
            );
        }
        if !extra.is_empty() {
            merge_toml(&mut conf, &parse_toml(extra, "extra containerd config"));
        }
        toml::to_string(&conf).expect("serialise containerd config")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The runc root the shim gives the runtime (`--runc-root` + `/<ns>`).
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    pub fn state_root(&self) -> PathBuf {
        self.runc_root().join(&self.ns)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.socket().exists()
                && self
                    .ctr()
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "containerd exited ({status}) before it was ready:\n{}",
                    fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready after 30 s:\n{}",
                fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr -a SOCKET -n NS`; stdin /dev/null.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(self.socket())
            .args(["-n", &self.ns])
            .stdin(Stdio::null());
        c
    }

    /// `ctr ARGS...`, waited for.
    pub fn ctr_out(&self, args: &[&str]) -> Output {
        self.ctr().args(args).output().expect("run ctr")
    }

    /// `ctr ARGS...`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.ctr().args(args), &format!("ctr {}", args.join(" ")))
    }

    /// What `ctr run` needs to use the runtime under test with this
    /// instance's runc root and fifo dir.
    pub fn run_flags(&self) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            oci_runtime().to_string_lossy().into_owned(),
            "--runc-root".into(),
            self.runc_root().to_string_lossy().into_owned(),
            "--fifo-dir".into(),
            self.dir.join("fifo").to_string_lossy().into_owned(),
        ]
    }

    /// `ctr run <run_flags> FLAGS IMAGE ID CMD...`, waited for.
    pub fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
        self.ctr()
            .arg("run")
            .args(self.run_flags())
            .args(flags)
            .args([IMAGE, id])
            .args(cmd)
            .output()
            .expect("run ctr")
    }

    /// Starts `sh -c SCRIPT` detached as task `id` and returns its pid.
    pub fn run_detached(&self, id: &str, flags: &[&str], script: &str) -> i32 {
        let mut all = vec!["-d"];
        all.extend_from_slice(flags);
        let out = self.run(&all, id, &["sh", "-c", script]);
        assert!(out.status.success(), "ctr run -d: {}", describe(&out));
        let (pid, status) = self.task(id).expect("the task is listed");
        assert_eq!(status, "RUNNING", "task {id}");
        pid
    }

    /// Task `id`'s pid and status as `ctr task ls` shows them.
    pub fn task(&self, id: &str) -> Option<(i32, String)> {
        self.ok(&["task", "ls"]).lines().skip(1).find_map(|l| {
            let mut f = l.split_whitespace();
            if f.next()? != id {
                return None;
            }
            let pid = f.next()?.parse().ok()?;
            Some((pid, f.next()?.to_string()))
        })
    }

    /// The cgroup directories of task `id` (ctr's default path `/<ns>/<id>`).
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        cgroup_parents(&self.ns)
            .into_iter()
            .map(|p| p.join(id))
            .collect()
    }

    fn clean_up_tasks(&self) {
        let timed = |args: &[&str]| {
            let _ = Command::new("timeout")
                .arg("30")
                .arg("ctr")
                .arg("-a")
                .arg(self.socket())
                .args(["-n", &self.ns])
                .args(args)
                .stdin(Stdio::null())
                .output();
        };
        let list = |args: &[&str]| -> Vec<String> {
            self.ctr()
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        for id in list(&["task", "ls", "-q"]) {
            timed(&["task", "delete", "-f", &id]);
        }
        for id in list(&["containers", "ls", "-q"]) {
            timed(&["containers", "rm", &id]);
        }
        for image in list(&["images", "ls", "-q"]) {
            timed(&["images", "rm", &image]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.clean_up_tasks();
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = signal::kill(pid, signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Shims and anything else started on our socket or dirs.
        kill_naming(&self.dir);
        prune_state_root(&self.state_root());
        remove_cgroups(&self.ns);
        unmount_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}
