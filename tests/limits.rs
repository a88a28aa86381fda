//! `/run/palisade/limits.json`: a container's job reads the limits it runs
//! under from a read-only file, kept current when its policy (`policy
//! apply`) or its resources (runc's `update`) change.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{Sandbox, describe, ok};

const FILE: &str = "/run/palisade/limits.json";

/// The file as the container reads it.
fn limits_inside(sb: &Sandbox) -> Value {
    let text = ok(&sb.exec(&["cat", FILE]));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn start(sb: &Sandbox, policy: &Path) {
    let rootfs = support::busybox_rootfs();
    sb.start_sleeping(&[
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--memory",
        "64M",
        "--cpu",
        "0.5",
        "--pids",
        "50",
        "--policy",
        policy.to_str().unwrap(),
    ]);
}

#[test]
fn limits_json_inside_matches_the_flags_and_the_policy() {
    let sb = Sandbox::new("limits");
    let policy = sb.policy(
        r#"
[network]
mode = "audit"
connect = ["allow tcp 127.0.0.1/32:8000-8999", "deny any"]
bind = ["allow tcp 8080", "deny any"]
sockets = { raw = false }
egress_rate = "10mbit"
egress_burst = "64k"

[devices]
allow = ["c 1:9 rwm"]
"#,
    );
    start(&sb, &policy);
    let l = limits_inside(&sb);
    assert_eq!(l["container"], sb.name.as_str(), "{l:#}");
    assert_eq!(l["generation"], 1);
    assert!(l["updated"].as_u64().unwrap() > 0);
    assert_eq!(l["memory"]["limit_bytes"], 64u64 << 20);
    assert_eq!(l["memory"]["high_bytes"], Value::Null);
    assert_eq!(l["cpu"]["cpus"], 0.5);
    assert_eq!(l["cpu"]["quota_us"], 50_000);
    assert_eq!(l["cpu"]["weight"], Value::Null);
    assert_eq!(l["pids"]["max"], 50);
    assert_eq!(l["egress"]["rate_bits_per_sec"], 10_000_000);
    assert_eq!(l["egress"]["rate_bytes_per_sec"], 1_250_000);
    assert_eq!(l["egress"]["burst_bytes"], 64 << 10);
    let net = &l["network"];
    assert_eq!(net["mode"], "audit");
    let connect: Vec<&str> = net["connect"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(connect.len(), 2, "{net}");
    assert!(
        connect[0].starts_with("allow tcp 127.0.0.1/32:8000-8999"),
        "{net}"
    );
    assert!(connect[1].starts_with("deny any"), "{net}");
    assert_eq!(net["bind"].as_array().unwrap().len(), 2, "{net}");
    assert_eq!(net["accept"], Value::Null);
    assert_eq!(net["sockets_denied"], json!(["raw"]));
    assert_eq!(l["devices"]["defaults"], true);
    assert_eq!(l["devices"]["allow"], json!(["c 1:9 rwm"]));
}

#[test]
fn policy_apply_changes_the_file_the_container_sees() {
    let sb = Sandbox::new("limitsapply");
    let first = sb.connect_policy(&["allow tcp 127.0.0.1/32:80", "deny any"]);
    start(&sb, &first);
    let before = limits_inside(&sb);
    assert_eq!(before["generation"], 1);
    let second = sb.connect_policy(&["allow tcp 127.0.0.2/32:443", "deny any"]);
    sb.apply(&second);
    let after = limits_inside(&sb);
    assert_eq!(after["generation"], 2, "{after:#}");
    let connect = after["network"]["connect"].as_array().unwrap();
    assert!(
        connect[0]
            .as_str()
            .unwrap()
            .starts_with("allow tcp 127.0.0.2/32:443"),
        "{after:#}"
    );
    // Resources are not changed by a policy apply.
    assert_eq!(after["memory"], before["memory"]);
    assert_eq!(after["pids"]["max"], 50);
}

#[test]
fn root_in_the_container_cannot_change_the_file() {
    let sb = Sandbox::new("limitsro");
    let policy = sb.connect_policy(&["deny any"]);
    start(&sb, &policy);
    let host_file = sb.root.join(&sb.name).join("limits").join("limits.json");
    let before = std::fs::read(&host_file).expect("the host's copy");
    for attempt in [
        format!("echo '{{}}' > {FILE}"),
        format!("rm {FILE}"),
        format!("mv {FILE} /run/palisade/old"),
        "touch /run/palisade/new".to_string(),
        "mount -o remount,rw /run/palisade".to_string(),
        "umount /run/palisade".to_string(),
    ] {
        let out = sb.exec(&["sh", "-c", &format!("id -u; {attempt}")]);
        assert!(
            !out.status.success(),
            "{attempt} succeeded: {}",
            describe(&out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    }
    assert_eq!(std::fs::read(&host_file).unwrap(), before);
    assert_eq!(limits_inside(&sb)["generation"], 1);
}

/// A bundle (busybox, read-only root, a tmpfs of its own on /run) whose
/// job copies the file out to `out/` and sleeps.
fn bundle(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let dir = sb.dir.join("bundle");
    let out = sb.dir.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", format!("cat {FILE} > /mnt/limits.json; sleep 600")],
            "env": ["PATH=/bin"],
            "cwd": "/",
        },
        "root": {"path": support::busybox_rootfs(), "readonly": true},
        "mounts": [
            {"destination": "/mnt", "type": "bind", "source": out, "options": ["rbind"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}],
            "resources": {"pids": {"limit": 40}},
        },
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    (dir, out)
}

fn palisade(sb: &Sandbox, args: &[&str]) -> Output {
    sb.palisade().args(args).output().expect("run palisade")
}

#[test]
fn a_bundle_container_has_it_and_update_changes_it() {
    let sb = Sandbox::new("limitsoci");
    let (b, out) = bundle(&sb);
    // create's first process inherits its stdio: files, not pipes.
    let status = sb
        .palisade()
        .args(["create", "--bundle"])
        .arg(&b)
        .arg(&sb.name)
        .stdout(std::fs::File::create(sb.dir.join("create.out")).unwrap())
        .stderr(std::fs::File::create(sb.dir.join("create.err")).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "create: {}",
        std::fs::read_to_string(sb.dir.join("create.err")).unwrap_or_default()
    );
    ok(&palisade(&sb, &["start", &sb.name]));
    let copied = out.join("limits.json");
    let deadline = support::deadline(10);
    while std::fs::metadata(&copied).map_or(true, |m| m.len() == 0) {
        assert!(Instant::now() < deadline, "the job never copied {FILE}");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(50));
    let l: Value = serde_json::from_slice(&std::fs::read(&copied).unwrap()).unwrap();
    assert_eq!(l["container"], sb.name.as_str(), "{l:#}");
    assert_eq!(l["pids"]["max"], 40, "{l:#}");
    assert_eq!(l["memory"]["limit_bytes"], Value::Null);

    ok(&sb.update(&json!({"memory": {"limit": 32 << 20}})));
    let l = limits_inside(&sb);
    assert_eq!(l["generation"], 2, "{l:#}");
    assert_eq!(l["memory"]["limit_bytes"], 32u64 << 20, "{l:#}");
    assert_eq!(l["pids"]["max"], 40, "an update keeps what it does not set");
    ok(&palisade(&sb, &["kill", &sb.name, "9"]));
    thread::sleep(Duration::from_millis(200));
    let _ = palisade(&sb, &["delete", "--force", &sb.name]);
}
