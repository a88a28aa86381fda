//! The container's hardening, proven on this machine's kernel without the
//! rest of the runtime: a forked child calls `security::apply` (or closes
//! its descriptors) and execs a real program that reports what the kernel
//! lets it do.
//!
//! The children are forked from the multi-threaded test harness, with the
//! unchecked `fork`: they only make syscalls and exec (glibc's malloc is
//! fork-safe).

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs::{File, OpenOptions},
    io::Read,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::fs::{OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{FcntlArg, OFlag, SealFlag, fcntl},
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
    sys::{
        statfs::{OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, fstatfs},
        statvfs::FsFlags,
        wait::{WaitStatus, waitpid},
    },
    unistd::{Pid, dup, dup2_stderr, dup2_stdout, execv, ftruncate, pipe2, write},
};
use palisade::{
    runtime::security::{
        CapSet, User, apply, close_inherited_fds, default_caps, default_seccomp,
        ensure_unwritable_self, resolve_caps, sealed_copy_of,
    },
    sys::process::{Forked, fork},
};

const PYTHON: &str = "/usr/bin/python3";

struct Child {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Forks; the child runs `setup`, then execs `argv`. Its output comes back.
fn run_child(setup: impl FnOnce() -> Result<(), String>, argv: &[&str]) -> Child {
    let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).unwrap();
    // SAFETY: the harness's other threads may hold locks; the child only
    // makes syscalls (through nix and palisade's setup, whose allocations
    // glibc's fork-safe malloc serves) and then execs or _exits.
    match unsafe { fork() }.unwrap() {
        Forked::Child => {
            let _ = dup2_stdout(&out_w);
            let _ = dup2_stderr(&err_w);
            let message = match setup() {
                Ok(()) => format!("exec failed: {}", execv(&argv[0], &argv).unwrap_err()),
                Err(message) => message,
            };
            let _ = write(std::io::stderr(), message.as_bytes());
            // SAFETY: _exit ends the forked child at once, running none of
            // the harness's exit handlers or destructors it shares with the
            // parent.
            unsafe { libc::_exit(99) }
        }
        Forked::Parent { child } => {
            drop(out_w);
            drop(err_w);
            let read = |fd: OwnedFd| {
                let mut s = String::new();
                File::from(fd).read_to_string(&mut s).unwrap();
                s
            };
            let stdout = read(out_r);
            let stderr = read(err_r);
            let code = match waitpid(Pid::from_raw(child), None).unwrap() {
                WaitStatus::Exited(_, code) => code,
                other => panic!("child ended with {other:?}; stderr: {stderr}"),
            };
            Child {
                code,
                stdout,
                stderr,
            }
        }
    }
}

/// A private mount namespace, so that a mount the filter fails to stop
/// cannot reach the host.
fn private_mounts() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))
}

/// Prints the capability and seccomp state, then tries each denied call
/// and a few ordinary ones, one `name result` line each ("ok" or the
/// errno's name). The unshare probes come late: a new user namespace would
/// change the outcome of the others, and unshare(CLONE_NEWUSER) fails with
/// EINVAL while a thread, even a joined one, may still exist.
const PROBE: &str = r#"
import ctypes, errno, os, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def res(rc):
    return 'ok' if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp'):
    print(k, status[k].strip())
print('ids', os.getuid(), os.getgid(), os.getgroups())
print('mount', res(libc.mount(b'none', b'/mnt', b'tmpfs', 0, None)))
print('umount2', res(libc.umount2(b'/mnt', 0)))
print('fsopen', res(libc.syscall(430, b'tmpfs', 0)))
print('open_tree', res(libc.syscall(428, -100, b'/tmp', 1)))
print('bpf', res(libc.syscall(321, 0, 0, 0)))
print('keyctl', res(libc.syscall(250, 0, 0, 0, 0, 0)))
print('perf_event_open', res(libc.syscall(298, 0, 0, -1, -1, 0)))
print('clone3', res(libc.syscall(435, 0, 0)))
rc = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)
if rc == 0:
    os._exit(0)
if rc > 0:
    os.waitpid(rc, 0)
print('clone_newuser', res(rc))
fd = os.open('/proc/self/status', os.O_RDONLY)
os.close(fd)
print('open', 'ok')
pid = os.fork()
if pid == 0:
    os._exit(7)
print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print('unshare_newuts', res(libc.unshare(0x04000000)))
print('unshare_newuser', res(libc.unshare(0x10000000)))
t = threading.Thread(target=lambda: None)
t.start()
t.join()
print('thread', 'ok')
"#;

/// Runs the probe after `setup`; returns its `name result` lines.
fn probe(setup: impl FnOnce() -> Result<(), String>) -> Vec<(String, String)> {
    let child = run_child(setup, &[PYTHON, "-c", PROBE]);
    assert_eq!(
        child.code, 0,
        "stdout: {}\nstderr: {}",
        child.stdout, child.stderr
    );
    child
        .stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn get<'a>(lines: &'a [(String, String)], key: &str) -> &'a str {
    lines
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

const DEFAULT_MASK: &str = "00000000a80425fb";

#[test]
fn default_hardening_holds_after_exec() {
    let seccomp = default_seccomp().unwrap();
    let lines = probe(|| {
        private_mounts()?;
        apply(&default_caps(), None, &seccomp)
    });
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(get(&lines, set), DEFAULT_MASK, "{set}: {lines:?}");
    }
    for set in ["CapInh", "CapAmb"] {
        assert_eq!(get(&lines, set), "0000000000000000", "{set}: {lines:?}");
    }
    assert_eq!(get(&lines, "NoNewPrivs"), "1");
    assert_eq!(get(&lines, "Seccomp"), "2");
    assert!(get(&lines, "ids").starts_with("0 0 "), "{lines:?}");
    for denied in [
        "mount",
        "umount2",
        "fsopen",
        "open_tree",
        "bpf",
        "keyctl",
        "perf_event_open",
        "clone_newuser",
        "unshare_newuser",
    ] {
        assert_eq!(get(&lines, denied), "EPERM", "{denied}: {lines:?}");
    }
    assert_eq!(get(&lines, "clone3"), "ENOSYS");
    assert_eq!(get(&lines, "open"), "ok");
    assert_eq!(get(&lines, "fork"), "7");
    assert_eq!(get(&lines, "thread"), "ok");
}

/// The test process's own bounding set (a sandbox may lack some).
fn own_bounding() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap();
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// With every capability, what still fails is the filter's doing; and the
/// CLONE_NEWUSER argument filter leaves other namespace flags alone.
#[test]
fn the_filter_denies_even_with_every_capability() {
    let seccomp = default_seccomp().unwrap();
    // Every capability this test process itself holds.
    let all =
        CapSet::from_bits(resolve_caps(&["ALL".to_string()], &[]).unwrap().bits() & own_bounding());
    let lines = probe(|| {
        private_mounts()?;
        apply(&all, None, &seccomp)
    });
    assert_eq!(get(&lines, "CapEff"), format!("{:016x}", all.bits()));
    for denied in [
        "mount",
        "umount2",
        "fsopen",
        "open_tree",
        "bpf",
        "keyctl",
        "perf_event_open",
        "clone_newuser",
        "unshare_newuser",
    ] {
        assert_eq!(get(&lines, denied), "EPERM", "{denied}: {lines:?}");
    }
    assert_eq!(get(&lines, "clone3"), "ENOSYS");
    assert_eq!(get(&lines, "unshare_newuts"), "ok");
    assert_eq!(get(&lines, "fork"), "7");
}

/// The control: without `apply` the same probes reach the kernel, so the
/// EPERMs above are not this machine's doing.
#[test]
fn without_the_filter_the_probes_reach_the_kernel() {
    let lines = probe(private_mounts);
    assert_eq!(get(&lines, "Seccomp"), "0");
    for name in [
        "mount",
        "umount2",
        "fsopen",
        "open_tree",
        "clone_newuser",
        "unshare_newuts",
        "unshare_newuser",
    ] {
        assert_eq!(get(&lines, name), "ok", "{name}: {lines:?}");
    }
    for name in ["bpf", "keyctl", "clone3"] {
        assert_ne!(get(&lines, name), "EPERM", "{name}: {lines:?}");
        assert_ne!(get(&lines, name), "ENOSYS", "{name}: {lines:?}");
    }
}

#[test]
fn a_non_root_user_gets_no_capabilities() {
    let seccomp = default_seccomp().unwrap();
    let nobody = User {
        uid: 65534,
        gid: 65534,
    };
    let lines = probe(|| {
        private_mounts()?;
        apply(&default_caps(), Some(&nobody), &seccomp)
    });
    assert_eq!(get(&lines, "ids"), "65534 65534 []");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(get(&lines, set), "0000000000000000", "{set}: {lines:?}");
    }
    assert_eq!(get(&lines, "CapBnd"), DEFAULT_MASK);
    assert_eq!(get(&lines, "NoNewPrivs"), "1");
    assert_eq!(get(&lines, "Seccomp"), "2");
    assert_eq!(get(&lines, "unshare_newuser"), "EPERM");
    assert_eq!(get(&lines, "fork"), "7");
}

#[test]
fn apply_reports_the_failing_step() {
    let seccomp = default_seccomp().unwrap();
    let nobody = User {
        uid: 65534,
        gid: 65534,
    };
    // A second apply as nobody: it no longer holds CAP_SETPCAP nor
    // CAP_SETGID, so the first step that needs one fails and says so.
    let child = run_child(
        || {
            apply(&CapSet::empty(), Some(&nobody), &seccomp)?;
            apply(&CapSet::empty(), Some(&nobody), &seccomp)
        },
        &["/bin/true"],
    );
    assert_eq!(child.code, 99);
    assert_eq!(
        child.stderr, "cannot clear supplementary groups: Operation not permitted",
        "{}",
        child.stderr
    );
}

#[test]
fn a_capability_palisade_lacks_is_refused_by_name() {
    let seccomp = default_seccomp().unwrap();
    let more = resolve_caps(&["NET_ADMIN".to_string()], &[]).unwrap();
    // After the first apply, NET_ADMIN is gone from the bounding set.
    let child = run_child(
        || {
            apply(&default_caps(), None, &seccomp)?;
            apply(&more, None, &seccomp)
        },
        &["/bin/true"],
    );
    assert_eq!(child.code, 99);
    assert_eq!(
        child.stderr,
        "cannot grant CAP_NET_ADMIN: palisade does not hold it (not in its bounding set)"
    );
}

fn listed_fds(child: &Child) -> BTreeSet<i32> {
    assert_eq!(child.code, 0, "{}", child.stderr);
    child
        .stdout
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn inherited_descriptors_are_closed() {
    let file = File::open("/proc/self/status").unwrap();
    // dup'd descriptors are not close-on-exec: they leak unless closed.
    let leaked: Vec<OwnedFd> = (0..3).map(|_| dup(file.as_fd()).unwrap()).collect();
    let raw: Vec<i32> = leaked.iter().map(AsRawFd::as_raw_fd).collect();
    let ls = ["/usr/bin/ls", "/proc/self/fd"];

    let control = listed_fds(&run_child(|| Ok(()), &ls));
    assert!(
        raw.iter().all(|fd| control.contains(fd)),
        "{control:?} {raw:?}"
    );

    // 0, 1, 2 and ls's own descriptor for /proc/self/fd.
    let closed = listed_fds(&run_child(|| close_inherited_fds(&[]), &ls));
    assert_eq!(closed, BTreeSet::from([0, 1, 2, 3]));

    let kept = raw[1];
    let some = listed_fds(&run_child(|| close_inherited_fds(&[kept, 1, -1]), &ls));
    assert!(some.contains(&kept), "{some:?}");
    let others: Vec<_> = some
        .iter()
        .filter(|fd| ![0, 1, 2, kept].contains(fd))
        .collect();
    assert_eq!(others.len(), 1, "{some:?}, kept {kept}");
}

fn seals_of(fd: impl AsFd) -> SealFlag {
    SealFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GET_SEALS).unwrap())
}

#[test]
fn the_sealed_copy_cannot_be_changed() {
    let bin = Path::new(env!("CARGO_BIN_EXE_palisade"));
    let started = Instant::now();
    let copy = sealed_copy_of(bin).unwrap();
    let took = started.elapsed();
    let size = std::fs::metadata(bin).unwrap().len();
    println!(
        "sealed copy of palisade ({:.1} MiB): {:.2} ms",
        size as f64 / (1 << 20) as f64,
        took.as_secs_f64() * 1e3
    );

    let all = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    assert!(seals_of(&copy).contains(all));
    assert_eq!(write(&copy, b"x"), Err(Errno::EPERM));
    assert_eq!(ftruncate(&copy, 0), Err(Errno::EPERM));
    assert_eq!(
        fcntl(&copy, FcntlArg::F_ADD_SEALS(SealFlag::empty())),
        Err(Errno::EPERM)
    );

    // Reopened by path, as a container would through /proc/PID/exe.
    let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
    let mut same = Vec::new();
    File::open(&path).unwrap().read_to_end(&mut same).unwrap();
    assert!(same == std::fs::read(bin).unwrap(), "the copy differs");
    let truncating = OpenOptions::new().write(true).truncate(true).open(&path);
    assert_eq!(truncating.unwrap_err().raw_os_error(), Some(libc::EPERM));
    // This kernel lets the open for writing itself through; every write fails.
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_APPEND)
        .open(&path)
        .unwrap();
    assert_eq!(write(&writer, b"x"), Err(Errno::EPERM));
}

const PROBE_ENV: &str = "PALISADE_TEST_SEALED_SELF";

/// Run by `ensure_unwritable_self_reexecs_once` (and the tests after it)
/// in a process of its own: says what it runs from and what opening that
/// for writing gives.
#[test]
#[ignore = "run by ensure_unwritable_self_reexecs_once"]
fn sealed_self_probe() {
    let Ok(mode) = std::env::var(PROBE_ENV) else {
        return;
    };
    println!("probe start");
    if mode == "seal" {
        ensure_unwritable_self().unwrap();
    }
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let file = File::open("/proc/self/exe").unwrap();
    let fs = fstatfs(&file).unwrap();
    let fstype = match fs.filesystem_type() {
        OVERLAYFS_SUPER_MAGIC => "overlay".to_string(),
        TMPFS_MAGIC => "tmpfs".to_string(),
        other => format!("{:#x}", other.0),
    };
    let read_only = fs.flags().contains(FsFlags::ST_RDONLY);
    let sealed = fcntl(&file, FcntlArg::F_GET_SEALS).is_ok();
    // Opened for writing by path, as a container would through
    // /proc/PID/exe; a write is tried only where the image should refuse
    // it (never on the test binary itself).
    let errno_of = |e: std::io::Error| format!("{:?}", Errno::from_raw(e.raw_os_error().unwrap()));
    let write = match OpenOptions::new().append(true).open("/proc/self/exe") {
        Err(e) => errno_of(e),
        Ok(w) if sealed || read_only => match std::io::Write::write(&mut &w, b"x") {
            Ok(_) => "wrote".to_string(),
            Err(e) => errno_of(e),
        },
        Ok(_) => "opened".to_string(),
    };
    println!(
        "probe exe {} fs {fstype} ro {read_only} sealed {sealed} write {write}",
        exe.display()
    );
}

/// The probe's report, from its last image.
fn probe_report(stdout: &str) -> &str {
    stdout
        .lines()
        .rfind(|l| l.starts_with("probe exe"))
        .unwrap_or_else(|| panic!("no probe report in {stdout}"))
}

fn run_probe(mode: &str) -> (Duration, String) {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sealed_self_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, mode)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, stdout)
}

#[test]
fn ensure_unwritable_self_reexecs_once() {
    let (_, stdout) = run_probe("seal");
    // The first image re-executes itself from a private read-only overlay
    // of its own directory (no copy: not a memfd); the second finds
    // itself on a read-only mount and goes on.
    assert_eq!(stdout.matches("probe start").count(), 2, "{stdout}");
    let name = std::env::current_exe().unwrap();
    let name = name.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        probe_report(&stdout),
        format!("probe exe /{name} fs overlay ro true sealed false write EROFS"),
        "{stdout}"
    );

    let (_, plain) = run_probe("plain");
    assert_eq!(plain.matches("probe start").count(), 1, "{plain}");
    assert!(
        probe_report(&plain).contains("ro false sealed false"),
        "{plain}"
    );

    // Cost: the same process with and without the re-exec,
    // interleaved; the median of 11 paired differences.
    let mut diffs = Vec::new();
    let mut plains = Vec::new();
    for _ in 0..11 {
        let plain = run_probe("plain").0;
        let sealed = run_probe("seal").0;
        plains.push(plain.as_secs_f64() * 1e3);
        diffs.push((sealed.as_secs_f64() - plain.as_secs_f64()) * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain, cost) = (median(&mut plains), median(&mut diffs));
    println!(
        "ensure_unwritable_self: process start to exit {plain:.2} ms without, +{cost:.2} ms with (test binary {:.1} MiB)",
        std::fs::metadata(std::env::current_exe().unwrap())
            .unwrap()
            .len() as f64
            / (1 << 20) as f64
    );
}

/// A fresh scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-exe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the probe (re-executing) in a private mount namespace of its own:
/// the shell commands `setup` prepare it there, the probe runs from `exe`
/// (a copy of this test binary, or the binary itself), and `after` runs
/// once it has exited. Returns everything they printed.
fn probe_in_namespace(setup: &str, exe: &Path, after: &str) -> String {
    let script = format!(
        "set -e\n{setup}\n\"$0\" --exact sealed_self_probe --ignored --nocapture --test-threads=1\n{after}"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(exe)
        .env(PROBE_ENV, "seal")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("probe start").count(), 2, "{stdout}");
    stdout
}

/// What the probe reports from a sealed memfd copy: writing is refused
/// either at the open (the image is being executed) or by the seals.
fn from_sealed_copy(report: &str) -> bool {
    report.starts_with("probe exe /memfd:palisade")
        && (report.ends_with("fs tmpfs ro false sealed true write EPERM")
            || report.ends_with("fs tmpfs ro false sealed true write ETXTBSY"))
}

/// A binary that is itself on a writable overlay (a container's root
/// filesystem, say) gets palisade's overlay stacked on that one. Past the
/// kernel's stacking limit (two overlays) overlayfs refuses, and palisade
/// runs from a sealed copy instead: never from the writable file.
#[test]
fn on_an_overlay_then_past_the_stacking_limit() {
    let dir = scratch("stack");
    let me = std::env::current_exe().unwrap();
    let one = format!(
        "cd {}\nmkdir -p l u1 w1 m1 u2 w2 m2\n\
         mount -t overlay overlay -o lowerdir=l,upperdir=u1,workdir=w1 m1\n\
         cp {} m1/probe",
        dir.display(),
        me.display()
    );
    let stdout = probe_in_namespace(&one, &dir.join("m1/probe"), "");
    assert_eq!(
        probe_report(&stdout),
        "probe exe /probe fs overlay ro true sealed false write EROFS",
        "{stdout}"
    );

    let two = format!(
        "{one}\nmount -t overlay overlay -o lowerdir=m1,upperdir=u2,workdir=w2 m2\n\
         cp {} m2/probe",
        me.display()
    );
    let stdout = probe_in_namespace(&two, &dir.join("m2/probe"), "");
    assert!(from_sealed_copy(probe_report(&stdout)), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The overlay's empty second layer is palisade's own: made where missing
/// (root's, 0700), and where /run/palisade-exe is anything else (holds a
/// file, others may enter it, another user owns it, a symbolic link to a
/// good directory) the overlay is not made and the sealed copy is used.
/// Each case on a private tmpfs at /run.
#[test]
fn the_overlays_empty_layer_is_made_and_checked() {
    let dir = scratch("layer");
    let me = std::env::current_exe().unwrap();
    let good = dir.join("good");
    std::fs::create_dir(&good).unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o700)).unwrap();
    let on_fresh_run = |then: &str| format!("mount -t tmpfs tmpfs /run\n{then}");

    let stdout = probe_in_namespace(
        &on_fresh_run(""),
        &me,
        "stat -c 'layer %a %U %F' /run/palisade-exe; ls -A /run/palisade-exe",
    );
    assert!(
        probe_report(&stdout).ends_with("fs overlay ro true sealed false write EROFS"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("layer 700 root directory"),
        "{stdout}"
    );

    for refused in [
        "mkdir -m 700 /run/palisade-exe\ntouch /run/palisade-exe/planted".to_string(),
        "mkdir -m 750 /run/palisade-exe".to_string(),
        "mkdir -m 700 /run/palisade-exe\nchown 65534 /run/palisade-exe".to_string(),
        format!("ln -s {} /run/palisade-exe", good.display()),
    ] {
        let stdout = probe_in_namespace(&on_fresh_run(&refused), &me, "");
        assert!(
            from_sealed_copy(probe_report(&stdout)),
            "{refused}: {stdout}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
