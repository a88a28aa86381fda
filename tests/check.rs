//! `palisade check` against this host's kernel: it tries what palisade
//! needs, says what is available, exits 0 when `run` can work, and leaves
//! nothing behind (no scratch cgroup, no pin). The verdict logic (a
//! missing requirement gives a non-zero exit) is unit-tested beside it in
//! `runtime::probe`.

mod support;

use std::path::{Path, PathBuf};

use support::{describe, palisade_in};

/// A state root `check` never needs, kept out of the real one.
fn root() -> PathBuf {
    std::env::temp_dir().join(support::unique_name("check"))
}

/// Whether v1 controller hierarchies are mounted beside cgroup2 (as on
/// the build machine), read independently of palisade.
fn host_is_hybrid() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" - ").map(|(_, right)| right))
        .any(|right| {
            let mut fields = right.split(' ');
            fields.next() == Some("cgroup")
                && fields.nth(1).is_some_and(|opts| {
                    opts.split(',')
                        .any(|o| ["memory", "cpu", "pids"].contains(&o))
                })
        })
}

#[test]
fn check_json_reports_the_host_and_exits_0() {
    let out = palisade_in(&root())
        .args(["check", "--json"])
        .output()
        .expect("run palisade check");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(report["kernel"], release.trim());
    assert_eq!(report["run"], true);

    let layout = &report["cgroups"]["layout"];
    if host_is_hybrid() {
        assert_eq!(layout, "hybrid", "{report:#}");
        let v1 = report["cgroups"]["v1"].as_array().unwrap();
        assert!(
            v1.iter().any(|h| h["controllers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "memory")),
            "{report:#}"
        );
    } else {
        assert_eq!(layout, "v2", "{report:#}");
    }
    assert_eq!(
        report["cgroups"]["unified"],
        support::unified_mount().display().to_string()
    );

    let feature = |name: &str| {
        report["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no feature {name}: {report:#}"))
            .clone()
    };
    let connect = feature("connect policy");
    assert_eq!(connect["available"], true, "{connect}");
    assert_eq!(connect["reason"], serde_json::Value::Null);
    assert_eq!(feature("run")["needed_by_run"], true);

    // Each hook was tried on its own.
    let probes = report["probes"].as_array().unwrap();
    for hook in [
        "cgroup/connect4",
        "cgroup/connect6",
        "cgroup/dev",
        "cgroup_skb/egress",
    ] {
        let p = probes
            .iter()
            .find(|p| p["name"] == hook)
            .unwrap_or_else(|| panic!("{hook} not probed: {report:#}"));
        assert_eq!(p["available"], true, "{p}");
    }
    // The dirty-tracking section keeps its key and shape.
    let dirty = report["dirty_tracking"].as_array().unwrap();
    assert!(
        dirty
            .iter()
            .any(|b| b["backend"] == "full" && b["available"] == true)
    );
    assert_eq!(dirty.iter().filter(|b| b["default"] == true).count(), 1);
}

#[test]
fn check_prints_a_table_for_people() {
    let out = palisade_in(&root())
        .arg("check")
        .output()
        .expect("run palisade check");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    // A line by its first column (after the probe's area, if it has one).
    let line = |start: &str| {
        text.lines()
            .find(|l| {
                let l = l.trim_start();
                l.starts_with(start) || l.starts_with(&format!("bpf        {start}"))
            })
            .unwrap_or_else(|| panic!("no line {start:?} in:\n{text}"))
            .to_string()
    };
    assert!(line("connect policy").ends_with("yes"), "{text}");
    assert!(line("cgroup/connect4").ends_with("yes"), "{text}");
    assert!(line("cgroups:").contains(if host_is_hybrid() { "hybrid" } else { "v2" }));
    assert!(text.contains("dirty tracking"), "{text}");
}

#[test]
fn check_leaves_no_cgroup_or_pin_behind() {
    let child = palisade_in(&root())
        .args(["check", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run palisade check");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    // The scratch cgroup it tried clone3 and the hooks in.
    let scratch = support::unified_mount()
        .join("palisade")
        .join(format!("check-{pid}"));
    assert!(!scratch.exists(), "{} left behind", scratch.display());
    // Nothing pinned: no probe program or link anywhere in bpffs.
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().contains("probe") {
                found.push(path.clone());
            }
            if path.is_dir() {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/bpf"), &mut found);
    assert!(found.is_empty(), "{found:?}");
}
