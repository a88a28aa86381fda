//! Device access policy, end to end: the cgroup/dev program on real
//! containers, probed from inside with python3 on a loop device the test
//! makes (and detaches, pass or fail) and on character devices.
//!
//! Every probe asserts what the kernel answered: EPERM for a refused open
//! or mknod, the byte read for an allowed one, and the events and
//! `policy show` palisade reports.

mod support;

use std::{
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Command, Output},
    sync::Mutex,
};

use serde_json::Value;
use support::Sandbox;

const PYTHON: &str = "/usr/bin/python3";

/// Tries each `OP:ARG` and prints one line per probe: `ok` (with the byte
/// read in hex, or `eof`, for `read`) or the errno name.
const PROBE: &str = r#"
import errno, os, stat, sys
for spec in sys.argv[1:]:
    op, _, arg = spec.partition(":")
    try:
        if op == "read":
            fd = os.open(arg, os.O_RDONLY)
            byte = os.read(fd, 1)
            os.close(fd)
            print("ok " + (byte.hex() if byte else "eof"))
        elif op == "write":
            fd = os.open(arg, os.O_WRONLY)
            os.write(fd, b"x") if arg == "/dev/null" else None
            os.close(fd)
            print("ok")
        elif op in ("mknod-c", "mknod-b"):
            path, major, minor = arg.split(",")
            kind = stat.S_IFCHR if op == "mknod-c" else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(int(major), int(minor)))
            print("ok")
        else:
            raise SystemExit("unknown probe " + op)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e)))
"#;

/// A loop device on a 1 MiB file whose first byte is `P` (0x50), detached
/// on drop.
struct LoopDevice {
    path: String,
    minor: u32,
}

impl LoopDevice {
    fn new(dir: &Path) -> Self {
        // Concurrent `losetup -f` calls can race for the same free device.
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let image = dir.join("loop.img");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[0] = b'P';
        std::fs::write(&image, bytes).expect("write the loop image");
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let meta = std::fs::metadata(&path).expect("stat the loop device");
        assert_eq!(libc::major(meta.rdev()), 7, "{path} is a loop device");
        Self {
            minor: libc::minor(meta.rdev()),
            path,
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
    }
}

/// `palisade run --name NAME FLAGS... -- python3 PROBE PROBES...`: one
/// result per probe.
fn probe(sb: &Sandbox, flags: &[&str], probes: &[&str]) -> Vec<String> {
    probe_as(sb, &sb.name, flags, probes)
}

/// As [`probe`], for a container named `name` on the sandbox's state root.
fn probe_as(sb: &Sandbox, name: &str, flags: &[&str], probes: &[&str]) -> Vec<String> {
    let out = sb
        .palisade()
        .args(["run", "--name", name])
        .args(flags)
        .args(["--", PYTHON, "-c", PROBE])
        .args(probes)
        .output()
        .expect("run palisade");
    results(&out, probes.len())
}

/// `palisade exec NAME -- python3 PROBE PROBES...` in a running container.
fn probe_exec(sb: &Sandbox, probes: &[&str]) -> Vec<String> {
    let out = sb
        .palisade()
        .args(["exec", &sb.name, "--", PYTHON, "-c", PROBE])
        .args(probes)
        .output()
        .expect("run palisade exec");
    results(&out, probes.len())
}

fn results(out: &Output, n: usize) -> Vec<String> {
    assert!(
        out.status.success(),
        "container failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), n, "one result per probe: {lines:?}");
    lines
}

/// A loop device is refused by default: given with only `m` it exists in
/// the container, yet reading and writing it fail with EPERM (and without
/// `--device` it is not there at all); with `rw` its first byte reads.
/// The refusal is an event naming the device and the access.
#[test]
fn loop_device_is_refused_unless_given_and_allowed_with_device() {
    let sb = Sandbox::new("loop");
    let lo = LoopDevice::new(&sb.dir);
    let (read, write) = (format!("read:{}", lo.path), format!("write:{}", lo.path));

    assert_eq!(probe(&sb, &[], &[&read]), ["ENOENT"]);
    let only_mknod = format!("{}:m", lo.path);
    assert_eq!(
        probe(&sb, &["--device", &only_mknod], &[&read, &write]),
        ["EPERM", "EPERM"]
    );
    let events = sb.events();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["container"] == sb.name.as_str())
        .collect();
    assert_eq!(mine.len(), 2, "{events:?}");
    let e = mine[0];
    assert_eq!(e["hook"], "device");
    assert_eq!(e["verdict"], "denied");
    assert_eq!(e["comm"], "python3");
    assert!(e["pid"].as_u64().unwrap() > 0, "{e}");
    let device = &e["device"];
    assert_eq!(
        (
            device["type"].as_str(),
            device["major"].as_u64(),
            device["minor"].as_u64(),
            device["access"].as_str()
        ),
        (Some("b"), Some(7), Some(u64::from(lo.minor)), Some("r")),
        "{e}"
    );
    assert_eq!(mine[1]["device"]["access"], "w");

    let rw = format!("{}:rw", lo.path);
    assert_eq!(
        probe(&sb, &["--device", &rw], &[&read, &write]),
        ["ok 50", "ok"]
    );
    // Read-only: the write is refused.
    let r = format!("{}:/dev/disk0:r", lo.path);
    assert_eq!(
        probe(
            &sb,
            &["--device", &r],
            &["read:/dev/disk0", "write:/dev/disk0"]
        ),
        ["ok 50", "EPERM"]
    );
}

/// mknod of a character device outside the default allowlist (1:4,
/// /dev/port) and of any block device is refused, mknod of a listed one
/// (1:3, null) is not; the default devices work.
#[test]
fn mknod_outside_the_allowlist_is_refused_and_the_defaults_work() {
    let sb = Sandbox::new("mknod");
    let got = probe(
        &sb,
        &[],
        &[
            "mknod-c:/dev/port,1,4",
            "mknod-b:/dev/loop-new,7,0",
            "mknod-c:/dev/null2,1,3",
            "read:/dev/null2",
            "write:/dev/null",
            "read:/dev/zero",
            "write:/dev/full",
            "read:/dev/urandom",
            "read:/dev/tty",
        ],
    );
    assert_eq!(
        got[..7],
        ["EPERM", "EPERM", "ok", "ok eof", "ok", "ok 00", "ok"]
    );
    assert!(got[7].starts_with("ok "), "{got:?}");
    // Allowed by the rules; the container has no controlling terminal.
    assert_eq!(got[8], "ENXIO", "{got:?}");
    let events = sb.events();
    let refused: Vec<String> = events
        .iter()
        .map(|e| {
            let d = &e["device"];
            format!(
                "{} {}:{} {}",
                d["type"].as_str().unwrap(),
                d["major"],
                d["minor"],
                d["access"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(refused, ["c 1:4 m", "b 7:0 m"]);
}

/// A `[devices]` table: `allow` adds to the defaults (a read-only rule for
/// every loop device reads the node `--device` gave with only `m`), and
/// `defaults = false` drops them (/dev/null is refused).
#[test]
fn device_policy_allows_what_it_lists() {
    let sb = Sandbox::new("devpolicy");
    let lo = LoopDevice::new(&sb.dir);
    let node = format!("{}:m", lo.path);
    let (read, write) = (format!("read:{}", lo.path), format!("write:{}", lo.path));
    let policy = sb.policy("[devices]\nallow = [\"b 7:* r\"]\n");
    let flags = ["--policy", policy.to_str().unwrap(), "--device", &node];
    assert_eq!(
        probe(&sb, &flags, &[&read, &write, "write:/dev/null"]),
        ["ok 50", "EPERM", "ok"]
    );
    let policy = sb.policy("[devices]\ndefaults = false\nallow = [\"b 7:* rw\", \"c 1:5 r\"]\n");
    let flags = ["--policy", policy.to_str().unwrap(), "--device", &node];
    assert_eq!(
        probe(
            &sb,
            &flags,
            &[
                &read,
                &write,
                "read:/dev/zero",
                "write:/dev/zero",
                "write:/dev/null"
            ]
        ),
        ["ok 50", "ok", "ok 00", "EPERM", "EPERM"]
    );
}

/// `policy apply` changes device access of a running container at once,
/// keeps the rule its `--device` gave, and `policy show` lists the rules
/// in force and counts the refusals.
#[test]
fn policy_apply_changes_device_access_live() {
    let sb = Sandbox::new("devapply");
    let lo = LoopDevice::new(&sb.dir);
    let node = format!("{}:m", lo.path);
    let read = format!("read:{}", lo.path);
    sb.start_sleeping(&["--device", &node]);
    assert_eq!(probe_exec(&sb, &[&read]), ["EPERM"]);
    let exact = format!("b 7:{} m", lo.minor);
    let rules = |v: &Value| -> Vec<String> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    let shown = sb.policy_show();
    assert!(rules(&shown).contains(&exact), "{shown}");
    assert!(rules(&shown).contains(&"c 1:3 rwm".to_string()), "{shown}");
    assert_eq!(shown["counters"]["devices_denied"], 1, "{shown}");

    let grant = sb.dir.join("grant.toml");
    std::fs::write(&grant, "[devices]\nallow = [\"b 7:* r\"]\n").unwrap();
    let out = sb.try_apply(&grant);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(probe_exec(&sb, &[&read]), ["ok 50"]);
    let shown = sb.policy_show();
    assert!(rules(&shown).contains(&"b 7:* r".to_string()), "{shown}");
    assert!(
        rules(&shown).contains(&exact),
        "--device's rule stays: {shown}"
    );

    let strict = sb.dir.join("strict.toml");
    std::fs::write(&strict, "[devices]\ndefaults = false\n").unwrap();
    let out = sb.try_apply(&strict);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rules(&sb.policy_show()), [exact]);
    assert_eq!(
        probe_exec(&sb, &[&read, "read:/dev/zero"]),
        ["EPERM", "EPERM"]
    );

    // A bad file changes nothing.
    let bad = sb.dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[devices]\nallow = [\n  \"b 7:* r\",\n  \"b *:0 r\",\n]\n",
    )
    .unwrap();
    let before = sb.policy_show()["devices"].clone();
    let out = sb.try_apply(&bad);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:4:") && stderr.contains("*:0"),
        "{stderr}"
    );
    assert_eq!(sb.policy_show()["devices"], before);
}

/// A container nested in another (`--parent`) gets a device only if the
/// enclosing container's rules grant it too.
#[test]
fn nested_container_needs_its_parents_grant_too() {
    let parent = Sandbox::new("devparent");
    let lo = LoopDevice::new(&parent.dir);
    parent.start_sleeping(&[]);
    let child = format!("{}-child", parent.name);
    let given = format!("{}:r", lo.path);
    let read = format!("read:{}", lo.path);
    let flags = ["--parent", parent.name.as_str(), "--device", &given];
    assert_eq!(
        probe_as(&parent, &child, &flags, &[&read, "read:/dev/zero"]),
        ["EPERM", "ok 00"]
    );

    let grant = parent.dir.join("grant.toml");
    std::fs::write(&grant, "[devices]\nallow = [\"b 7:* r\"]\n").unwrap();
    let out = parent.try_apply(&grant);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(probe_as(&parent, &child, &flags, &[&read]), ["ok 50"]);
}

/// A bad `--device` is refused before anything is created: exit 2, the
/// value named, the command not run, no cgroup left.
#[test]
fn bad_device_flags_are_refused_with_nothing_created() {
    let sb = Sandbox::new("devflag");
    let marker = sb.dir.join("ran");
    let cases = [
        ("/etc/hostname", "not a character or block device"),
        ("/dev/palisade-none:r", "/dev/palisade-none"),
        ("/dev/null:rx", "invalid access \"rx\""),
        ("/dev/null:/mnt/null", "must be under /dev"),
        ("/dev/null:/dev/pts/0:r", "/dev/pts is palisade's own"),
        ("dev/null", "must be absolute"),
    ];
    for (flag, needle) in cases {
        let out = sb
            .palisade()
            .args(["run", "--name", &sb.name, "--device", flag, "--", "touch"])
            .arg(&marker)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{flag}: expected {needle:?} in {stderr}"
        );
        assert!(!marker.exists(), "{flag}: the command ran");
        assert!(sb.leftover_cgroups().is_empty(), "{flag}");
        assert!(!sb.root.join(&sb.name).exists(), "{flag}: state left");
    }
}

/// An OCI bundle's `linux.devices` puts the host's node in the container
/// with rwm; its `linux.resources.devices` allow entries are granted on
/// top of the defaults (runc's deny-all first changes nothing).
#[test]
fn oci_bundle_devices_and_device_rules_are_honoured() {
    let sb = Sandbox::new("ocidev");
    let lo = LoopDevice::new(&sb.dir);
    let rootfs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rootfs/busybox");
    assert!(
        rootfs.join("bin/busybox").exists(),
        "no busybox rootfs at {}: run `cargo xtask rootfs`",
        rootfs.display()
    );
    let bundle = sb.dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let script = format!(
        "head -c1 {0}; echo; mknod /dev/port c 1 4 && echo made port; mknod /dev/mem c 1 1 || echo no mem",
        lo.path
    );
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", script], "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": rootfs, "readonly": true},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}],
            "devices": [{"path": lo.path, "type": "b", "major": 7, "minor": lo.minor}],
            "resources": {"devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 4, "access": "m"},
            ]},
        },
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let out = sb.run_bundle(&bundle);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["P", "made port", "no mem"]);
}
