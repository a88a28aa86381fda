//! A private containerd, started as a child: root, state, sockets, opt
//! dir, namespace, runc root and fifo dir of its own, the busybox image
//! imported.

use super::{
    IMAGE, build_image, cgroup_parents, kill_naming, merge_toml, missing, oci_runtime, parse_toml,
    prune_state_root, remove_cgroups, run_ok, unmount_under,
};
use crate::support::{describe, unique_name};
use nix::{sys::signal, unistd::Pid};
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

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
            crate::support::skip(test, &why);
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
            parse_toml(&crate::support::ok(&default), "containerd config default")
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
        let deadline = crate::support::deadline(30);
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
        let deadline = crate::support::deadline(10);
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
