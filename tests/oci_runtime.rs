//! The runc command-line contract on its own (podman and containerd drive
//! it in oci_clients.rs): create stops before the command, start runs it,
//! delete removes everything, hooks run with the state, update changes
//! limits all or nothing, and bad input changes nothing.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{Sandbox, describe, ok};

/// A bundle running `script` in the busybox rootfs (read-only), with the
/// sandbox's `out` directory at /mnt; `edit` changes the config.
fn bundle(sb: &Sandbox, script: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = sb.dir.join("bundle");
    let out = sb.dir.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
        },
        "root": {"path": support::busybox_rootfs(), "readonly": true},
        "mounts": [{"destination": "/mnt", "type": "bind", "source": out, "options": ["rbind"]}],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}],
        },
    });
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn palisade(sb: &Sandbox, args: &[&str]) -> Output {
    sb.palisade().args(args).output().expect("run palisade")
}

/// `create`, its output read from files: the container's first process
/// inherits create's stdio and outlives it, so pipes would never close.
fn create(sb: &Sandbox, bundle: &Path) -> Output {
    let pid_file = sb.dir.join("pid");
    let (out_path, err_path) = (sb.dir.join("create.out"), sb.dir.join("create.err"));
    let status = sb
        .palisade()
        .arg("create")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&sb.name)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .expect("run palisade create");
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

fn state(sb: &Sandbox) -> Value {
    serde_json::from_str(&ok(&palisade(sb, &["state", &sb.name]))).expect("state is JSON")
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}

fn wait_until(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = support::deadline(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Container directories left in the state root.
fn containers(sb: &Sandbox) -> Vec<String> {
    support::oci::state_entries(&sb.root)
}

#[test]
fn create_stops_before_the_command_and_delete_removes_everything() {
    let sb = Sandbox::new("ocicreate");
    let b = bundle(&sb, "echo ran > /mnt/ran; sleep 600", |_| {});
    let out = create(&sb, &b);
    assert!(out.status.success(), "{}", describe(&out));
    let pid: i32 = std::fs::read_to_string(sb.dir.join("pid"))
        .unwrap()
        .parse()
        .unwrap();
    let s = state(&sb);
    assert_eq!(s["status"], "created");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["id"], sb.name.as_str());
    assert!(alive(pid), "the first process should wait, not exit");
    assert!(
        sb.unified_dir().exists(),
        "no cgroup at {}",
        sb.unified_dir().display()
    );
    // It is a palisade container like any other.
    let ps = ok(&palisade(&sb, &["ps", "--json"]));
    assert!(ps.contains(&sb.name) && ps.contains("created"), "{ps}");
    let stats: Value =
        serde_json::from_str(&ok(&palisade(&sb, &["stats", "--json", &sb.name]))).unwrap();
    assert!(stats.to_string().contains(&sb.name), "{stats}");
    let policy: Value =
        serde_json::from_str(&ok(&palisade(&sb, &["policy", "show", "--json", &sb.name]))).unwrap();
    assert!(!policy.is_null(), "{policy}");
    thread::sleep(Duration::from_millis(300));
    assert!(
        !sb.dir.join("out/ran").exists(),
        "the command ran before start"
    );
    // A created container is deleted without --force: its process goes,
    // and with it everything made for it.
    ok(&palisade(&sb, &["delete", &sb.name]));
    assert!(wait_until(5, || !alive(pid)), "pid {pid} outlived delete");
    assert!(
        !sb.dir.join("out/ran").exists(),
        "the command ran at delete"
    );
    assert!(containers(&sb).is_empty(), "{:?}", containers(&sb));
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
    let out = palisade(&sb, &["state", &sb.name]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn start_runs_the_command_and_state_follows_it() {
    let sb = Sandbox::new("ocistart");
    let b = bundle(&sb, "echo ran > /mnt/ran; read x < /mnt/go; exit 0", |v| {
        v["annotations"] = json!({"org.example": "yes"});
    });
    // A FIFO the command waits on, so its running state can be seen.
    nix::unistd::mkfifo(
        &sb.dir.join("out/go"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    ok(&create(&sb, &b));
    ok(&palisade(&sb, &["start", &sb.name]));
    assert!(
        wait_until(5, || sb.dir.join("out/ran").exists()),
        "the command did not run"
    );
    let s = state(&sb);
    assert_eq!(s["status"], "running");
    assert_eq!(s["annotations"]["org.example"], "yes");
    // Started twice: refused.
    let again = palisade(&sb, &["start", &sb.name]);
    assert!(!again.status.success(), "{}", describe(&again));
    // A running container is not deleted without --force.
    let refused = palisade(&sb, &["delete", &sb.name]);
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert_eq!(state(&sb)["status"], "running");
    std::fs::write(sb.dir.join("out/go"), "x\n").unwrap();
    assert!(
        wait_until(5, || state(&sb)["status"] == "stopped"),
        "{}",
        state(&sb)
    );
    assert_eq!(state(&sb)["pid"], 0);
    ok(&palisade(&sb, &["delete", &sb.name]));
    assert!(containers(&sb).is_empty());
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
    // The shim's cleanup deletes again: an unknown id is fine with --force.
    ok(&palisade(&sb, &["delete", "--force", &sb.name]));
}

#[test]
fn hooks_run_with_the_containers_state() {
    let sb = Sandbox::new("ocihooks");
    let out = sb.dir.join("out");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json", out.display())]});
    let b = bundle(&sb, "true", |v| {
        v["hooks"] = json!({
            "createRuntime": [hook("createRuntime")],
            "prestart": [hook("prestart")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
    });
    ok(&create(&sb, &b));
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(format!("{name}.json"))).unwrap())
            .unwrap()
    };
    for name in ["createRuntime", "prestart"] {
        let s = read(name);
        assert_eq!(s["status"], "creating", "{name}: {s}");
        assert_eq!(s["id"], sb.name.as_str());
        assert!(s["pid"].as_i64().unwrap() > 0);
    }
    assert!(!out.join("poststart.json").exists());
    ok(&palisade(&sb, &["start", &sb.name]));
    assert_eq!(read("poststart")["status"], "running");
    assert!(wait_until(5, || state(&sb)["status"] == "stopped"));
    assert!(!out.join("poststop.json").exists());
    ok(&palisade(&sb, &["delete", &sb.name]));
    assert_eq!(read("poststop")["status"], "stopped");
}

#[test]
fn a_failing_hook_fails_the_create_and_leaves_nothing() {
    let sb = Sandbox::new("ocihookfail");
    let b = bundle(&sb, "echo ran > /mnt/ran", |v| {
        v["hooks"] = json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no network for you >&2; exit 3"]}]});
    });
    let out = create(&sb, &b);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hook prestart[0]") && stderr.contains("no network for you"),
        "{stderr}"
    );
    assert!(containers(&sb).is_empty(), "{:?}", containers(&sb));
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
    assert!(!sb.dir.join("out/ran").exists());
}

#[test]
fn bad_input_changes_nothing() {
    let sb = Sandbox::new("ocibad");
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["process"]["terminal"] = json!(true)),
            "--console-socket",
        ),
        (
            Box::new(|v| v["annotations"] = json!({"io.palisade.polcy": "x"})),
            "unknown palisade annotation",
        ),
        (
            Box::new(|v| v["annotations"] = json!({"io.palisade.policy": "[network]"})),
            "sets no rule",
        ),
        (
            Box::new(
                |v| v["annotations"] = json!({"io.palisade.policy": "network = { connect = [\"deny any\"] }", "io.palisade.policy-file": "/x"}),
            ),
            "not both",
        ),
        (
            Box::new(|v| v["process"]["args"] = json!(["/no/such/program"])),
            "/no/such/program",
        ),
    ];
    for (edit, said) in cases {
        let b = bundle(&sb, "true", edit);
        let out = create(&sb, &b);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(said),
            "{said}: {}",
            describe(&out)
        );
        assert!(containers(&sb).is_empty(), "{said}: {:?}", containers(&sb));
        assert!(
            sb.leftover_cgroups().is_empty(),
            "{said}: {:?}",
            sb.leftover_cgroups()
        );
    }
    let out = palisade(&sb, &["--systemd-cgroup", "state", &sb.name]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cgroupfs"));
}

#[test]
fn the_log_file_gets_json_errors() {
    let sb = Sandbox::new("ocilog");
    let log = sb.dir.join("log.json");
    let out = sb
        .palisade()
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "start", &sb.name])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains(&sb.name), "{line}");
}

#[test]
fn kill_all_ps_pause_resume_and_update() {
    let sb = Sandbox::new("ocilive");
    let b = bundle(
        &sb,
        "sleep 600 & i=0; while true; do i=$((i+1)); echo $i > /mnt/count; usleep 20000; done",
        |v| {
            v["linux"]["resources"] = json!({"memory": {"limit": 128 << 20}});
        },
    );
    ok(&create(&sb, &b));
    ok(&palisade(&sb, &["start", &sb.name]));
    let count = || std::fs::read_to_string(sb.dir.join("out/count")).unwrap_or_default();
    assert!(wait_until(5, || !count().is_empty()));
    let pids: Vec<i32> =
        serde_json::from_str(&ok(&palisade(&sb, &["ps", "--format", "json", &sb.name]))).unwrap();
    assert!(pids.len() >= 2, "{pids:?}");

    ok(&palisade(&sb, &["pause", &sb.name]));
    assert_eq!(state(&sb)["status"], "paused");
    let frozen = count();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), frozen, "the container ran while paused");
    ok(&palisade(&sb, &["resume", &sb.name]));
    assert!(
        wait_until(5, || count() != frozen),
        "the container did not resume"
    );

    // Limits change live; a set that cannot be written changes nothing.
    let memory_file = sb
        .cgroup_dirs()
        .into_iter()
        .map(|d| d.join("memory.limit_in_bytes"))
        .chain(std::iter::once(sb.unified_dir().join("memory.max")))
        .find(|f| f.exists())
        .expect("a memory limit file");
    let limit = || {
        std::fs::read_to_string(&memory_file)
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(limit(), (128u64 << 20).to_string());
    ok(&sb.update(&json!({"memory": {"limit": 64 << 20}})));
    assert_eq!(limit(), (64u64 << 20).to_string());
    let out = sb.update(&json!({"memory": {"limit": 32 << 20}, "cpu": {"cpus": "999"}}));
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(
        limit(),
        (64u64 << 20).to_string(),
        "a failed update left a change"
    );

    ok(&palisade(&sb, &["kill", "--all", &sb.name, "9"]));
    assert!(
        wait_until(5, || pids.iter().all(|&p| !alive(p))),
        "kill --all left processes"
    );
    assert!(wait_until(5, || state(&sb)["status"] == "stopped"));
    // Again, on a stopped container: nothing to signal, not an error.
    ok(&palisade(&sb, &["kill", "--all", &sb.name, "9"]));
    ok(&palisade(&sb, &["delete", &sb.name]));
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

#[test]
fn version_and_features_speak_runcs_formats() {
    let sb = Sandbox::new("ocifeat");
    let version = ok(&palisade(&sb, &["--version"]));
    assert!(version.starts_with("palisade version "), "{version}");
    assert!(version.contains("\nspec: "), "{version}");
    let f: Value = serde_json::from_str(&ok(&palisade(&sb, &["features"]))).unwrap();
    assert_eq!(f["linux"]["cgroup"]["systemd"], false);
    assert!(f["hooks"].as_array().unwrap().contains(&json!("poststop")));
    assert!(
        f["linux"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("CAP_KILL"))
    );
}
