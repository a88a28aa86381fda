//! Checkpoint images as untrusted ground: `checkpoint` writes only into a
//! directory it makes or one that is empty, never through a link, and a
//! refusal leaves the process running unchanged; `restore` opens only
//! regular files, reads each within its bound, and trusts an image only
//! if the host key (here each test's own) signed it. Every refusal exits
//! 2 and creates nothing.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

mod support;

use support::ckpt::*;

/// The process was left running, untraced, and its memory is what it
/// was: it checks itself and logs one more PASS.
fn left_running_unchanged(w: &Workload, passes_before: usize) {
    let status = fs::read_to_string(format!("/proc/{}/status", w.pid)).unwrap();
    assert!(status.contains("TracerPid:\t0"), "left untraced: {status}");
    let state = status.lines().find(|l| l.starts_with("State:")).unwrap();
    assert!(state.contains('S'), "left running: {state}");
    w.trigger(false);
    let deadline = support::deadline(10);
    let passes = || w.log().lines().filter(|l| l.starts_with("PASS")).count();
    while passes() < passes_before + 1 {
        assert!(Instant::now() < deadline, "no PASS; log: {}", w.log());
        thread::sleep(Duration::from_millis(10));
    }
    assert!(!w.log().contains("FAIL"), "log: {}", w.log());
}

/// `palisade checkpoint --pid PID --dir DIR`, expected to be refused with
/// exit 2 and a message containing `expect`.
fn checkpoint_refused(w: &Workload, dir: &Path, expect: &str) {
    let out = palisade(&["checkpoint", "--pid", &w.pid.to_string(), "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&dir.display().to_string()) && err.contains(expect),
        "expected {expect:?} naming {} in: {err}",
        dir.display()
    );
}

#[test]
fn checkpoint_never_writes_through_a_link_nor_into_a_full_directory() {
    let mut w = Workload::start();
    let victim = w.dir.join("victim");
    fs::write(&victim, "precious").unwrap();

    // DIR/meta.json a link to a file elsewhere, in an existing directory.
    let linked = w.image("linked");
    fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink(&victim, linked.join("meta.json")).unwrap();
    checkpoint_refused(&w, &linked, "is not empty");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(fs::read_dir(&linked).unwrap().count(), 1, "nothing added");
    left_running_unchanged(&w, 0);

    // A directory holding anything, an earlier image's file included.
    let full = w.image("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("pages.img"), "earlier").unwrap();
    checkpoint_refused(&w, &full, "is not empty");
    assert_eq!(
        fs::read_to_string(full.join("pages.img")).unwrap(),
        "earlier"
    );
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1, "nothing added");

    // DIR itself a link (to an empty directory).
    let target = w.image("target");
    fs::create_dir(&target).unwrap();
    let link = w.image("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    checkpoint_refused(&w, &link, "symbolic link");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "nothing written");
    left_running_unchanged(&w, 1);

    // An empty directory is taken; a new one is made root-only; every
    // file is root's alone.
    let empty = w.image("empty");
    fs::create_dir(&empty).unwrap();
    w.checkpoint_leaving_it_running(&empty);
    let made = w.image("made");
    w.checkpoint(&made);
    assert_eq!(
        fs::metadata(&made).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in ["meta.json", "pages.img", "files.img", "manifest.json"] {
        let m = fs::symlink_metadata(made.join(f)).unwrap();
        assert!(m.file_type().is_file(), "{f}");
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
    }
    w.restore_and_verify(&made, 2);
}

/// Runs `palisade restore --dir DIR [extra]` with a 10 s limit (a restore
/// that blocks on a FIFO is killed and fails the test).
fn restore_within_10s(dir: &Path, extra: &[&str]) -> Output {
    let child = palisade(&["restore", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let waiter = thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = support::deadline(10);
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            // SAFETY: kill(2) by the pid of our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = waiter.join().unwrap();
            panic!("restore of {} hung: {}", dir.display(), text(&out));
        }
        thread::sleep(Duration::from_millis(10));
    }
    waiter.join().unwrap()
}

#[test]
fn restore_reads_only_regular_files_within_their_bounds() {
    let mut w = Workload::start();
    let good = w.image("good");
    w.checkpoint(&good);
    let copy = |name: &str| {
        let d = w.image(name);
        fs::create_dir(&d).unwrap();
        for f in ["meta.json", "pages.img", "files.img", "manifest.json"] {
            fs::copy(good.join(f), d.join(f)).unwrap();
        }
        d
    };
    type Spoil = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, &str, Spoil, &str)> = vec![
        (
            "zero-meta",
            "meta.json",
            Box::new(|d| std::os::unix::fs::symlink("/dev/zero", d.join("meta.json")).unwrap()),
            "symbolic link",
        ),
        (
            "zero-manifest",
            "manifest.json",
            Box::new(|d| std::os::unix::fs::symlink("/dev/zero", d.join("manifest.json")).unwrap()),
            "symbolic link",
        ),
        (
            "fifo-meta",
            "meta.json",
            Box::new(|d| {
                nix::unistd::mkfifo(&d.join("meta.json"), nix::sys::stat::Mode::S_IRWXU).unwrap()
            }),
            "not a regular file",
        ),
        (
            "huge-meta",
            "meta.json",
            // 64 MiB and one byte, sparse: refused on its size, unread.
            Box::new(|d| {
                let f = fs::File::create(d.join("meta.json")).unwrap();
                f.set_len((64 << 20) + 1).unwrap();
            }),
            "more than the 67108864 an image may hold",
        ),
        (
            "writable-pages",
            "pages.img",
            Box::new(|d| {
                fs::set_permissions(d.join("pages.img"), fs::Permissions::from_mode(0o666)).unwrap()
            }),
            "writable by others",
        ),
    ];
    for (name, file, spoil, expect) in cases {
        for trust in [false, true] {
            let d = copy(&format!("{name}-{trust}"));
            if name != "writable-pages" {
                fs::remove_file(d.join(file)).unwrap();
            }
            spoil(&d);
            let extra: &[&str] = if trust { &["--trust-image"] } else { &[] };
            let t0 = Instant::now();
            let out = restore_within_10s(&d, extra);
            assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
            assert!(t0.elapsed() < Duration::from_secs(2), "{name}: prompt");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("{file}: ")) && err.contains(expect),
                "{name}: expected {expect:?} in: {err}"
            );
            assert!(!alive(w.pid), "{name}: nothing is created");
        }
    }
    // restore --dir through a link, and a --dir that is missing.
    let link = w.image("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let out = restore_within_10s(&link, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
    let out = restore_within_10s(&w.image("nowhere"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!alive(w.pid));
    w.restore_and_verify(&good, 0);
}

#[test]
fn only_images_signed_by_the_key_restore_unless_trusted() {
    let mut w = Workload::start();
    let image = w.image("img");
    w.checkpoint(&image);
    let key = fs::symlink_metadata(test_key()).unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // Another host's key.
    let foreign = w.dir.join("foreign.key");
    fs::write(&foreign, [7u8; 32]).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o600)).unwrap();
    let restore = |extra: &[&str], key: &Path| {
        palisade(&["restore", "--dir"])
            .arg(&image)
            .args(extra)
            .env("PALISADE_IMAGE_KEY", key)
            .output()
            .unwrap()
    };
    let out = restore(&[], &foreign);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signed by another key"),
        "{}",
        text(&out)
    );
    assert!(!alive(w.pid));

    // A key file others can read is refused, not used.
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o644)).unwrap();
    let out = restore(&[], &foreign);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o600)).unwrap();

    // Unsigned: the manifest gone.
    fs::remove_file(image.join("manifest.json")).unwrap();
    let out = restore(&[], &test_key());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unsigned"),
        "{}",
        text(&out)
    );
    assert!(!alive(w.pid));

    // Unsigned, restored with --trust-image: it warns and restores.
    let out = restore(&["--trust-image"], &test_key());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not authenticated"),
        "{}",
        text(&out)
    );
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(pid, w.pid);

    // Signed by the foreign key, restored with --trust-image: likewise.
    let again = w.image("again");
    w.checkpoint(&again);
    let out = palisade(&["restore", "--trust-image", "--dir"])
        .arg(&again)
        .env("PALISADE_IMAGE_KEY", &foreign)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not authenticated"));
    w.trigger(true);
    assert_eq!(reap(w.pid), 0, "log: {}", w.log());
    let passes = w.log().lines().filter(|l| l.starts_with("PASS")).count();
    assert_eq!(passes, 1, "log: {}", w.log());
}

/// Without --image-key or PALISADE_IMAGE_KEY the key is
/// /etc/palisade/image.key, made on first use: root's, 0600, in a 0700
/// directory. A host's own key is never touched: where /etc/palisade
/// exists, the commands run in a private mount namespace with a tmpfs
/// over it (so the key is made there and goes with the namespace); where
/// it does not, the key and the directory palisade made are removed after.
#[test]
fn the_default_key_is_made_root_only_on_first_use() {
    let etc = Path::new("/etc/palisade");
    let dir_existed = etc.exists();
    let host_key = fs::read(etc.join("image.key")).ok();
    let w = Workload::start();
    let image = w.image("img");
    // One shell in one mount namespace: checkpoint, the key's facts,
    // restore (its status and message).
    let script = r#"
if [ -e /etc/palisade ]; then mount -t tmpfs -o mode=0755 palisade-test /etc/palisade || exit 99; fi
"$0" checkpoint --leave-running --pid "$1" --dir "$2" >/dev/null 2>&1; echo "checkpoint $?"
stat -c 'key %F %s %u %a' /etc/palisade/image.key
stat -c 'dir %a' /etc/palisade
out=$("$0" restore --dir "$2" 2>&1); echo "restore $? $out"
"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
        ])
        .arg(env!("CARGO_BIN_EXE_palisade"))
        .arg(w.pid.to_string())
        .arg(&image)
        .stdin(Stdio::null())
        .env_remove("PALISADE_IMAGE_KEY")
        .output()
        .unwrap();
    if !dir_existed {
        let _ = fs::remove_file(etc.join("image.key"));
        let _ = fs::remove_dir(etc);
    }
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |tag: &str| {
        said.lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_else(|| panic!("no {tag:?} line: {}", text(&out)))
            .to_string()
    };
    assert_eq!(line("checkpoint "), "checkpoint 0", "{}", text(&out));
    assert_eq!(line("key "), "key regular file 32 0 600", "{}", text(&out));
    if !dir_existed {
        assert_eq!(line("dir "), "dir 700", "{}", text(&out));
    }
    // It verifies with that key: the pid is in use (the original runs),
    // which restore only checks once the image is authenticated.
    let restore = line("restore ");
    assert!(restore.starts_with("restore 125 "), "{}", text(&out));
    assert!(restore.contains("in use"), "{}", text(&out));
    if dir_existed {
        assert_eq!(
            fs::read(etc.join("image.key")).ok(),
            host_key,
            "the host's key changed"
        );
    }
}
