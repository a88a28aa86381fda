//! Helpers shared by the integration tests: a unique name per container,
//! policy files in a private temp dir, local listeners, a socket client
//! (python3) and a guard that removes whatever cgroups a test's container
//! may leave behind — and only those.
#![allow(dead_code)]

pub mod agent;
pub mod ckpt;
pub mod oci;

use std::{
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

/// `palisade` with its state in `root` (so tests never share state or
/// BPF pins) and stdin from /dev/null.
pub fn palisade_in(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.stdin(Stdio::null()).env("PALISADE_ROOT", root);
    cmd
}

/// Where palisade pins BPF objects for a state root (see docs/architecture.md), as
/// palisade itself says.
pub fn pin_dir(root: &Path) -> PathBuf {
    let out = palisade_in(root)
        .args(["debug", "pin-dir"])
        .output()
        .expect("run palisade debug pin-dir");
    PathBuf::from(ok(&out).trim_end())
}

/// Env var naming the file `skip` appends to (`cargo xtask test` sets it
/// and counts the lines).
pub const SKIPS_ENV: &str = "PALISADE_TEST_SKIPS";

/// Records that `test` did not run what it is for, and why (something
/// this host lacks): `SKIPPED: test: reason` on stderr and, under `cargo
/// xtask test`, a line of the file `PALISADE_TEST_SKIPS` names, so the
/// totals count it as skipped rather than passed. The caller returns
/// right after.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIPPED: {test}: {reason}");
    eprintln!("{line}");
    if let Some(file) = std::env::var_os(SKIPS_ENV) {
        use std::io::Write as _;
        // One write of one line: appends from parallel tests do not mix.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap_or_else(|e| panic!("open {}: {e}", Path::new(&file).display()));
        f.write_all(format!("{test}: {reason}\n").as_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e}", Path::new(&file).display()));
    }
}

/// Env var: how many times slower than this development host the tests
/// run (`cargo xtask vm-test` sets it in an emulated guest). Waits for
/// something to happen are stretched by it; no test asserts a time with it.
pub const SLOWDOWN_ENV: &str = "PALISADE_TEST_SLOWDOWN";

/// [`SLOWDOWN_ENV`]: 1 unless set; a value that is not a whole number of
/// at least 1 fails the test rather than being guessed at.
pub fn slowdown() -> u64 {
    match std::env::var(SLOWDOWN_ENV) {
        Err(_) => 1,
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => n,
            _ => panic!("{SLOWDOWN_ENV}={v:?}: not a whole number of at least 1"),
        },
    }
}

/// The end of a wait of `secs` seconds for something to happen, stretched
/// by [`slowdown`].
pub fn deadline(secs: u64) -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(secs * slowdown())
}

/// A command's status and output, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The stdout of a command that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The busybox rootfs that `cargo xtask rootfs` builds (a test needing it
/// fails, naming the command, when it is missing).
pub fn busybox_rootfs() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rootfs/busybox");
    assert!(
        dir.join("bin/busybox").exists(),
        "no busybox rootfs at {}: run `cargo xtask rootfs`",
        dir.display()
    );
    dir
}

/// A name no other test (or test run) uses.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A test's container: its name, a private directory for its files and
/// its own state root, and on drop the removal of everything: containers
/// still there (`rm -f`), cgroups palisade may have left, its BPF pins
/// (`system prune`), its files.
pub struct Sandbox {
    pub name: String,
    pub dir: PathBuf,
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        let dir = std::env::temp_dir().join(format!("palisade-{name}"));
        std::fs::create_dir_all(&dir).expect("create test dir");
        let root = dir.join("state");
        Self { name, dir, root }
    }

    /// `palisade` on this sandbox's state root, signing and verifying
    /// checkpoint images with this sandbox's own key (never the host's).
    pub fn palisade(&self) -> Command {
        let mut cmd = palisade_in(&self.root);
        cmd.env("PALISADE_IMAGE_KEY", self.image_key());
        cmd
    }

    /// This sandbox's image key file (made by its first checkpoint).
    pub fn image_key(&self) -> PathBuf {
        self.dir.join("image.key")
    }

    /// Writes a policy file and returns its path.
    pub fn policy(&self, text: &str) -> PathBuf {
        let path = self.dir.join("policy.toml");
        std::fs::write(&path, text).expect("write policy");
        path
    }

    /// A policy with only `connect` rules.
    pub fn connect_policy(&self, rules: &[&str]) -> PathBuf {
        let list: Vec<String> = rules.iter().map(|r| format!("  {r:?},\n")).collect();
        self.policy(&format!("[network]\nconnect = [\n{}]\n", list.concat()))
    }

    /// `palisade run --name NAME [--policy FILE] -- CMD...`, waited for.
    pub fn run(&self, policy: Option<&Path>, cmd: &[&str]) -> Output {
        let mut c = self.palisade();
        c.args(["run", "--name", &self.name]);
        if let Some(p) = policy {
            c.arg("--policy").arg(p);
        }
        c.arg("--").args(cmd);
        c.output().expect("run palisade")
    }

    /// Waits until palisade reports the container running; returns the
    /// host pid of its first process.
    pub fn wait_running(&self) -> i32 {
        let path = self.root.join(&self.name).join("state.json");
        let deadline = crate::support::deadline(20);
        while std::time::Instant::now() < deadline {
            if let Some(state) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                && state["status"] == "running"
            {
                return state["pid"]
                    .as_i64()
                    .expect("a running container has a pid") as i32;
            }
            thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("container {} never started", self.name);
    }

    /// `palisade run --name NAME --bundle DIR`, waited for.
    pub fn run_bundle(&self, bundle: &Path) -> Output {
        self.palisade()
            .args(["run", "--name", &self.name, "--bundle"])
            .arg(bundle)
            .output()
            .expect("run palisade")
    }

    /// `palisade exec NAME -- CMD…`, its output (success not checked).
    pub fn exec(&self, cmd: &[&str]) -> Output {
        self.palisade()
            .args(["exec", &self.name, "--"])
            .args(cmd)
            .output()
            .expect("run palisade")
    }

    /// `palisade update --resources FILE NAME` with `resources` (OCI
    /// `linux.resources` JSON) in FILE, its output (success not checked).
    pub fn update(&self, resources: &serde_json::Value) -> Output {
        let file = self.dir.join("resources.json");
        std::fs::write(&file, resources.to_string()).expect("write resources");
        self.palisade()
            .args(["update", "--resources"])
            .arg(&file)
            .arg(&self.name)
            .output()
            .expect("run palisade")
    }

    /// `palisade policy apply NAME FILE`, its output (success not checked).
    pub fn try_apply(&self, file: &Path) -> Output {
        self.palisade()
            .args(["policy", "apply", &self.name])
            .arg(file)
            .output()
            .expect("run palisade")
    }

    /// `palisade policy apply NAME FILE`, which must succeed.
    pub fn apply(&self, file: &Path) {
        let out = self.try_apply(file);
        assert!(
            out.status.success(),
            "policy apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the container detached with `flags`, running `sleep 600`,
    /// and waits until it runs; returns its host pid.
    pub fn start_sleeping(&self, flags: &[&str]) -> i32 {
        let out = self
            .palisade()
            .args(["run", "-d", "--name", &self.name])
            .args(flags)
            .args(["--", "sleep", "600"])
            .output()
            .expect("run palisade");
        assert!(
            out.status.success(),
            "run -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_running()
    }

    /// `palisade policy show NAME --json`, parsed.
    pub fn policy_show(&self) -> serde_json::Value {
        let out = self
            .palisade()
            .args(["policy", "show", &self.name, "--json"])
            .output()
            .expect("run palisade");
        assert!(
            out.status.success(),
            "policy show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("policy show JSON")
    }

    /// The events of this sandbox's containers, as `palisade events
    /// --json` prints them (consumed).
    pub fn events(&self) -> Vec<serde_json::Value> {
        let out = self
            .palisade()
            .args(["events", "--json"])
            .output()
            .expect("run palisade");
        assert!(
            out.status.success(),
            "events: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    /// Every cgroup directory this container could have, in every mounted
    /// hierarchy, whether or not it exists.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_mounts()
            .into_iter()
            .map(|m| m.join("palisade").join(&self.name))
            .collect()
    }

    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        self.cgroup_dirs()
            .into_iter()
            .filter(|d| d.exists())
            .collect()
    }

    /// The cgroup v2 directory of this container.
    pub fn unified_dir(&self) -> PathBuf {
        unified_mount().join("palisade").join(&self.name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = self
                    .palisade()
                    .args(["rm", "-f"])
                    .arg(e.file_name())
                    .output();
            }
        }
        for dir in self.leftover_cgroups() {
            let _ = std::fs::remove_dir(&dir);
        }
        let _ = self.palisade().args(["system", "prune"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Mount points of every cgroup hierarchy (v1 and v2), from mountinfo.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .collect()
}

pub fn unified_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

/// TCP listeners that accept and drop connections until the test ends.
/// `addrs` all share one port.
pub fn listen_tcp(addrs: &[&str]) -> u16 {
    'port: loop {
        let first = TcpListener::bind((addrs[0], 0)).expect("bind");
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for addr in &addrs[1..] {
            match TcpListener::bind((*addr, port)) {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'port,
            }
        }
        for l in listeners {
            thread::spawn(move || {
                for c in l.incoming() {
                    drop(c);
                }
            });
        }
        return port;
    }
}

/// A UDP port nothing listens on at `addr` (UDP connect needs no peer).
pub fn free_udp_port(addr: &str) -> u16 {
    UdpSocket::bind((addr, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One connect attempt: (family 4|6, "tcp"|"udp", address, port).
pub type Probe<'a> = (u8, &'a str, &'a str, u16);

/// A python3 program that tries each probe and prints one line per probe:
/// `ok`, or the errno name (`EPERM`, `ECONNREFUSED`…).
const CLIENT: &str = r#"
import errno, socket, sys
for spec in sys.argv[1:]:
    fam, proto, addr, port = spec.split(",")
    s = socket.socket(socket.AF_INET if fam == "4" else socket.AF_INET6,
                      socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.connect((addr, int(port)))
        print("ok")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e)))
    finally:
        s.close()
"#;

fn client_args(probes: &[Probe<'_>]) -> Vec<String> {
    let mut args = vec!["python3".to_string(), "-c".to_string(), CLIENT.to_string()];
    args.extend(
        probes
            .iter()
            .map(|(f, p, a, port)| format!("{f},{p},{a},{port}")),
    );
    args
}

/// Runs the probes inside a container under `policy`; one result per probe.
pub fn probe_inside(sandbox: &Sandbox, policy: &Path, probes: &[Probe<'_>]) -> Vec<String> {
    let args = client_args(probes);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sandbox.run(Some(policy), &args);
    assert!(
        out.status.success(),
        "container failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    results(&out, probes.len())
}

/// Runs the probes on the host, outside any container.
pub fn probe_outside(probes: &[Probe<'_>]) -> Vec<String> {
    let args = client_args(probes);
    let out = Command::new(&args[0])
        .args(&args[1..])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    results(&out, probes.len())
}

fn results(out: &Output, n: usize) -> Vec<String> {
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), n, "one result per probe: {lines:?}");
    lines
}
