//! `--mount` (and a bundle's bind mounts) cannot undo the sandbox: no
//! mount over /proc, /sys or the root, no destination reached through a
//! symlink in the rootfs, and a cgroup filesystem only ever read-only, so
//! a container cannot move itself out of its cgroups and its policy.

mod support;

use std::path::PathBuf;

use support::{Sandbox, describe};

/// A refusal: exit 2, `needle` said, and nothing created.
fn refused(sb: &Sandbox, out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(
        !sb.root.join(&sb.name).exists(),
        "a state directory was created"
    );
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

#[test]
fn destinations_over_proc_sys_or_the_root_are_refused() {
    let sb = Sandbox::new("mnt-dest");
    let marker = sb.dir.join("ran");
    for dest in [
        "/proc",
        "/proc/sys",
        "//proc/./self",
        "/mnt/../proc",
        "/sys",
        "/sys/fs/cgroup",
        "/tmp/..//sys/kernel",
        "/",
        "/mnt/..",
    ] {
        let mount = format!("{}:{dest}", sb.dir.display());
        let out = sb
            .palisade()
            .args(["run", "--name", &sb.name, "--mount", &mount, "--"])
            .args(["touch", marker.to_str().unwrap()])
            .output()
            .expect("run palisade");
        let needle = if dest.contains("proc") {
            "is /proc or under it"
        } else if dest.contains("sys") {
            "is /sys or under it"
        } else {
            "is the container's root"
        };
        refused(&sb, &out, needle);
        assert!(!marker.exists(), "the command ran with {dest}");
    }
    // A bundle's bind mounts are held to the same rule.
    let bundle = sb.dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"},
        "root": {"path": support::busybox_rootfs()},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/proc/cpuinfo", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]},
        ],
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let out = sb.run_bundle(&bundle);
    refused(&sb, &out, "mounts[1]");
}

#[test]
fn a_destination_through_a_symlink_in_the_rootfs_is_refused() {
    let sb = Sandbox::new("mnt-link");
    let rootfs = sb.dir.join("rootfs");
    let status = std::process::Command::new("cp")
        .args(["-a"])
        .arg(support::busybox_rootfs())
        .arg(&rootfs)
        .status()
        .expect("cp");
    assert!(status.success());
    std::fs::create_dir_all(rootfs.join("real/dir")).unwrap();
    std::os::unix::fs::symlink("/etc", rootfs.join("abs")).unwrap();
    std::os::unix::fs::symlink("real", rootfs.join("rel")).unwrap();
    let data = sb.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("file"), "mounted\n").unwrap();
    let run = |dest: &str, cmd: &[&str]| {
        sb.palisade()
            .args(["run", "--name", &sb.name, "--rootfs"])
            .arg(&rootfs)
            .arg("--mount")
            .arg(format!("{}:{dest}", data.display()))
            .arg("--")
            .args(cmd)
            .output()
            .expect("run palisade")
    };
    for dest in ["/abs", "/rel/dir", "/abs/ssl"] {
        let out = run(dest, &["true"]);
        refused(&sb, &out, "reached through a symbolic link");
    }
    // The path the link points to is mounted.
    let out = run("/real/dir", &["cat", "/real/dir/file"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mounted\n");
}

/// The shell run in the container: its cgroups, an attempt to move itself
/// into the root of every hierarchy the mount holds, its cgroups again.
const ESCAPE: &str = r#"
cat /proc/self/cgroup
echo ---
for f in /mnt/cgroup.procs /mnt/*/cgroup.procs; do
  [ -e "$f" ] || continue
  if echo $$ > "$f"; then echo "moved by $f"; fi
done 2>&1
echo ---
cat /proc/self/cgroup
"#;

#[test]
fn a_cgroup_filesystem_is_mounted_read_only() {
    let sb = Sandbox::new("mnt-cgroup");
    // /sys/fs/cgroup (a tmpfs of cgroup mounts on a hybrid host, cgroup2
    // itself on a pure v2 one), and the cgroup2 mount itself, even asked
    // for read-write.
    let unified = support::unified_mount();
    for source in [PathBuf::from("/sys/fs/cgroup"), unified] {
        let out = sb
            .palisade()
            .args(["run", "--name", &sb.name, "--rootfs"])
            .arg(support::busybox_rootfs())
            .arg("--mount")
            .arg(format!("{}:/mnt:rw", source.display()))
            .args(["--", "sh", "-c", ESCAPE])
            .output()
            .expect("run palisade");
        assert!(out.status.success(), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("mounted read-only"),
            "{}",
            describe(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parts: Vec<&str> = stdout.split("---\n").collect();
        assert_eq!(parts.len(), 3, "{stdout}");
        let (before, attempts, after) = (parts[0], parts[1], parts[2]);
        assert!(!attempts.contains("moved by"), "{stdout}");
        assert!(
            attempts.contains("Read-only file system"),
            "the writes must fail with EROFS: {stdout}"
        );
        assert_eq!(before, after, "the container moved: {stdout}");
        assert!(
            !after.contains(".."),
            "outside its cgroup namespace: {after}"
        );
        assert!(sb.leftover_cgroups().is_empty());
    }
}
