//! A private podman: storage, run root, tmp dir, containers.conf, cgroup
//! parent and runtime state root of its own, the busybox image imported.

use super::{
    IMAGE, build_image, kill_naming, merge_toml, missing, oci_runtime, parse_toml,
    prune_state_root, remove_cgroups, run_ok, runtime_name, unmount_under,
};
use crate::support::{describe, unique_name};
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

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
            crate::support::skip(test, &why);
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
