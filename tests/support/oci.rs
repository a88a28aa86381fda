//! Real OCI clients driving the runtime under test: a private podman (its
//! own storage, run root, tmp dir, containers.conf, cgroup parent and
//! runtime state root) and a private containerd (its own root, state,
//! sockets, namespace, runc root and fifo dir), each holding the busybox
//! image of `cargo xtask rootfs`.
//!
//! Dropping one removes what it made: its containers, the processes that
//! name its unique directory on their command line (ended by pid), the
//! mounts under that directory, the cgroups under its own parent. It
//! touches nothing else: no shared podman or containerd state. One file
//! per client (`oci/podman.rs`, `oci/containerd.rs`); this one holds the
//! runtime under test, the image and the clean-up both share.
#![allow(dead_code)]

mod containerd;
mod podman;

// Unused by the test binaries that do not drive a client.
#[allow(unused_imports)]
pub use containerd::Containerd;
#[allow(unused_imports)]
pub use podman::Podman;

use super::describe;
use nix::{sys::signal, unistd::Pid};
use sha2::{Digest, Sha256};
use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
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
    let deadline = crate::support::deadline(10);
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
    // A container's state is a directory of its own (palisade also keeps
    // root-wide files there: its lock, the cgroup-id journal).
    fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
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
