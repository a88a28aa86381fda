//! The container runtime, end to end: lifecycle, isolation, hardening, limits.
//!
//! Every test drives the real `palisade` binary on its own state root
//! (`Sandbox`), probes from inside with real programs (python3, sh, ls) and
//! checks what the kernel and the CLI report. Waits poll with deadlines;
//! no assertion depends on a fixed sleep.

mod support;

use std::{
    collections::BTreeMap,
    net::{TcpStream, ToSocketAddrs},
    os::unix::process::CommandExt,
    path::Path,
    process::{Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Sandbox, describe, listen_tcp, ok};

const PYTHON: &str = "/usr/bin/python3";

/// `palisade run --name NAME FLAGS... -- CMD...` in the foreground, waited for.
fn run(sb: &Sandbox, flags: &[&str], cmd: &[&str]) -> Output {
    sb.palisade()
        .args(["run", "--name", &sb.name])
        .args(flags)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run palisade")
}

/// `palisade ARGS...` on the sandbox's state root, waited for.
fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    sb.palisade().args(args).output().expect("run palisade")
}

/// Runs a python3 program in a foreground container; its `key value` lines.
fn python(sb: &Sandbox, flags: &[&str], script: &str, args: &[&str]) -> BTreeMap<String, String> {
    let mut cmd = vec![PYTHON, "-c", script];
    cmd.extend_from_slice(args);
    let out = run(sb, flags, &cmd);
    ok(&out)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `run -d`: checks that the CLI printed the name and exited 0.
fn start_detached(sb: &Sandbox, flags: &[&str], cmd: &[&str]) {
    let out = run(sb, &[&["-d"], flags].concat(), cmd);
    assert_eq!(ok(&out).trim(), sb.name, "run -d prints the name");
}

/// `run -d`, then the container's host pid once it is running (for
/// commands that run until stopped).
fn run_detached(sb: &Sandbox, flags: &[&str], cmd: &[&str]) -> i32 {
    start_detached(sb, flags, cmd);
    sb.wait_running()
}

/// Polls `f` until it returns `Some`, for at most 20 s.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = support::deadline(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The container's log once it contains `needle`.
fn logs_containing(sb: &Sandbox, needle: &str) -> String {
    poll(&format!("{needle:?} in the logs"), || {
        let text = ok(&cli(sb, &["logs", &sb.name]));
        text.contains(needle).then_some(text)
    })
}

fn state(sb: &Sandbox) -> Value {
    let path = sb.root.join(&sb.name).join("state.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("state.json is JSON")
}

/// `ps --json`'s entry for this sandbox's container, if listed.
fn ps_entry(sb: &Sandbox) -> Option<Value> {
    let list: Value = serde_json::from_str(&ok(&cli(sb, &["ps", "--json"]))).expect("ps --json");
    list.as_array()
        .expect("ps --json prints an array")
        .iter()
        .find(|c| c["name"] == sb.name.as_str())
        .cloned()
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 2..].starts_with(|c| c != 'Z')))
        .unwrap_or(false)
}

fn no_leftover_cgroups(sb: &Sandbox) {
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

// ---------------------------------------------------------------- isolation

#[test]
fn hostname_is_the_name_unless_given() {
    let sb = Sandbox::new("host");
    let out = run(&sb, &[], &["hostname"]);
    assert_eq!(ok(&out).trim(), sb.name);
    let out = run(&sb, &["--hostname", "web.example"], &["hostname"]);
    assert_eq!(ok(&out).trim(), "web.example");
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "web.example",
        "the host's hostname is untouched"
    );
}

#[test]
fn the_container_sees_only_its_own_processes() {
    let sb = Sandbox::new("pidns");
    let script = "import os, sys\n\
        print('pid', os.getpid())\n\
        print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n\
        print('host_pid_visible', os.path.exists('/proc/' + sys.argv[1]))\n\
        print('ppid', os.getppid())";
    let me = std::process::id().to_string();
    let got = python(&sb, &[], script, &[&me]);
    assert_eq!(got["pid"], "1");
    assert_eq!(got["pids"], "[1]", "only the container's own process");
    assert_eq!(got["host_pid_visible"], "False", "the test's pid {me}");
    assert_eq!(got["ppid"], "0", "pid 1 has no parent in its namespace");
}

#[test]
fn tmp_is_private_and_empty_and_the_root_is_read_only() {
    let sb = Sandbox::new("fs");
    let marker = format!("{}-marker", sb.name);
    let script = r#"
import errno, os, sys
def attempt(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
name = sys.argv[1]
print('tmp', sorted(os.listdir('/tmp')))
print('write_tmp', attempt(lambda: open('/tmp/' + name, 'w').write('x')))
print('read_tmp', open('/tmp/' + name).read())
print('write_root', attempt(lambda: open('/' + name, 'w')))
print('mkdir_root', attempt(lambda: os.mkdir('/' + name)))
print('write_etc', attempt(lambda: open('/etc/' + name, 'w')))
"#;
    let got = python(&sb, &[], script, &[&marker]);
    assert_eq!(got["tmp"], "[]", "a fresh /tmp");
    assert_eq!(got["write_tmp"], "ok");
    assert_eq!(got["read_tmp"], "x");
    assert_eq!(got["write_root"], "EROFS");
    assert_eq!(got["mkdir_root"], "EROFS");
    assert_eq!(got["write_etc"], "EROFS");
    for host_path in [Path::new("/tmp"), Path::new("/"), Path::new("/etc")] {
        let p = host_path.join(&marker);
        assert!(!p.exists(), "{p:?} leaked to the host");
    }
    // an empty /tmp inside means a private one only if the host's is not
    assert!(
        std::fs::read_dir("/tmp").unwrap().next().is_some(),
        "the host's /tmp has entries"
    );
}

/// Prints the interfaces (from sysfs and from the kernel), then `connect`
/// and `ok` or the errno's name for a TCP connect to its ADDR:PORT argument.
const NET_PROBE: &str = r#"
import errno, os, socket, sys
print('ifaces', sorted(os.listdir('/sys/class/net')))
print('if_nameindex', sorted(n for _, n in socket.if_nameindex()))
addr, port = sys.argv[1].rsplit(':', 1)
s = socket.socket()
s.settimeout(5)
try:
    s.connect((addr, int(port)))
    print('connect ok')
except OSError as e:
    print('connect', errno.errorcode.get(e.errno, str(e)))
"#;

#[test]
fn net_none_has_only_loopback_and_cannot_reach_the_host() {
    let sb = Sandbox::new("netnone");
    let port = listen_tcp(&["127.0.0.1"]);
    let target = format!("127.0.0.1:{port}");
    let got = python(&sb, &["--net", "none"], NET_PROBE, &[&target]);
    assert_eq!(got["ifaces"], "['lo']");
    assert_eq!(got["if_nameindex"], "['lo']");
    assert_eq!(
        got["connect"], "ECONNREFUSED",
        "the host's listener is in another namespace"
    );
    // the listener is really there
    TcpStream::connect_timeout(
        &target.to_socket_addrs().unwrap().next().unwrap(),
        Duration::from_secs(5),
    )
    .expect("the host reaches its own listener");
    no_leftover_cgroups(&sb);
}

#[test]
fn net_host_is_the_default_and_reaches_the_host() {
    let sb = Sandbox::new("nethost");
    let port = listen_tcp(&["127.0.0.1"]);
    let target = format!("127.0.0.1:{port}");
    let got = python(&sb, &[], NET_PROBE, &[&target]);
    assert_eq!(got["connect"], "ok");
    // Bridged containers of tests running meanwhile add and remove the
    // bridge and veth host ends (palisade0, plXXXXXXXX): compare the rest.
    let steady = |name: &str| name != "palisade0" && !name.starts_with("pl");
    let mut host_ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| steady(n))
        .collect();
    host_ifaces.sort();
    let seen: Vec<String> = got["ifaces"]
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|n| n.trim_matches('\'').to_string())
        .filter(|n| steady(n))
        .collect();
    assert_eq!(seen, host_ifaces, "the host's interfaces");
    let explicit = python(&sb, &["--net", "host"], NET_PROBE, &[&target]);
    assert_eq!(explicit["connect"], "ok");
}

// ---------------------------------------------------------------- hardening

/// Root in the container: capabilities, the seccomp filter, masked and
/// read-only paths. Arguments: the bpf syscall number, then masked paths.
const HARDENING_PROBE: &str = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def res(rc):
    return 'ok' if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def attempt(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
print('uid', os.getuid())
print('CapEff', status['CapEff'].strip())
print('NoNewPrivs', status['NoNewPrivs'].strip())
print('mount', res(libc.mount(b'none', b'/mnt', b'tmpfs', 0, None)))
print('mounted', any(l.split()[4] == '/mnt' for l in open('/proc/self/mountinfo')))
print('fsopen', res(libc.syscall(430, b'tmpfs', 0)))
print('open_tree', res(libc.syscall(428, -100, b'/tmp', 1)))
domain = open('/proc/sys/kernel/domainname').read()
def write_same_domainname():
    with open('/proc/sys/kernel/domainname', 'w') as f:
        f.write(domain)
print('proc_sys_write', attempt(write_same_domainname))
print('unshare_newuser', res(libc.unshare(0x10000000)))
print('bpf', res(libc.syscall(int(sys.argv[1]), 0, 0, 0)))
for path in sys.argv[2:]:
    print('masked:' + path, len(open(path, 'rb').read()))
"#;

/// The masked proc files this host has, checked to be non-empty here.
fn masked_paths_on_host() -> Vec<&'static str> {
    let paths: Vec<&str> = ["/proc/keys", "/proc/timer_list"]
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|c| !c.is_empty()))
        .collect();
    assert!(
        !paths.is_empty(),
        "this host has neither /proc/keys nor /proc/timer_list"
    );
    paths
}

#[test]
fn root_in_the_container_is_hardened() {
    let sb = Sandbox::new("harden");
    let bpf = libc::SYS_bpf.to_string();
    let masked = masked_paths_on_host();
    let args: Vec<&str> = [bpf.as_str()].into_iter().chain(masked.clone()).collect();
    let got = python(&sb, &[], HARDENING_PROBE, &args);
    assert_eq!(got["uid"], "0");
    assert_eq!(got["CapEff"], "00000000a80425fb", "Docker's default set");
    assert_eq!(got["NoNewPrivs"], "1");
    assert_eq!(got["mount"], "EPERM");
    assert_eq!(got["mounted"], "False");
    assert_eq!(got["fsopen"], "EPERM");
    assert_eq!(got["open_tree"], "EPERM");
    assert_eq!(got["proc_sys_write"], "EROFS", "/proc/sys is read-only");
    assert_eq!(got["unshare_newuser"], "EPERM");
    assert_eq!(got["bpf"], "EPERM");
    for path in masked {
        assert_eq!(got[&format!("masked:{path}")], "0", "{path} is masked");
    }
}

/// The filter, not the missing CAP_SYS_ADMIN, stops every way to mount:
/// with the capability, the old API and the new one (fsopen: a new
/// filesystem, open_tree: a copy of a tree to attach) still get EPERM.
#[test]
fn no_mount_api_works_even_with_cap_sys_admin() {
    let sb = Sandbox::new("mountapi");
    let bpf = libc::SYS_bpf.to_string();
    let got = python(
        &sb,
        &["--cap-add", "SYS_ADMIN"],
        HARDENING_PROBE,
        &[bpf.as_str()],
    );
    let cap_eff = u64::from_str_radix(&got["CapEff"], 16).unwrap();
    // CAP_SYS_ADMIN is capability 21.
    assert_ne!(cap_eff & (1 << 21), 0, "{got:?}");
    for call in ["mount", "fsopen", "open_tree"] {
        assert_eq!(got[call], "EPERM", "{call}: {got:?}");
    }
    assert_eq!(got["mounted"], "False");
    no_leftover_cgroups(&sb);
}

#[test]
fn only_stdio_descriptors_reach_the_command() {
    let sb = Sandbox::new("fds");
    let mut cmd = sb.palisade();
    cmd.args(["run", "--name", &sb.name, "--", "ls", "/proc/self/fd"]);
    // SAFETY: the closure runs in the forked child before exec and calls
    // only dup2, which is async-signal-safe; it hands palisade a
    // descriptor 7 without close-on-exec, which must not reach the command.
    unsafe {
        cmd.pre_exec(|| {
            if libc::dup2(2, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run palisade");
    let fds: Vec<String> = ok(&out).split_whitespace().map(String::from).collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "stdio and the one ls opened");
}

#[test]
fn cap_drop_all_leaves_no_capabilities() {
    let sb = Sandbox::new("capdrop");
    let bpf = libc::SYS_bpf.to_string();
    let got = python(&sb, &["--cap-drop", "ALL"], HARDENING_PROBE, &[&bpf]);
    assert_eq!(got["uid"], "0");
    assert_eq!(got["CapEff"], "0000000000000000");
    assert_eq!(got["mount"], "EPERM");
}

#[test]
fn a_non_root_user_has_no_capabilities() {
    let sb = Sandbox::new("user");
    let script = "import os\n\
        status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)\n\
        print('ids', os.getuid(), os.geteuid(), os.getgid(), os.getegid())\n\
        print('CapEff', status['CapEff'].strip())\n\
        print('CapPrm', status['CapPrm'].strip())";
    let got = python(&sb, &["-u", "65534:65534"], script, &[]);
    assert_eq!(got["ids"], "65534 65534 65534 65534");
    assert_eq!(got["CapEff"], "0000000000000000");
    assert_eq!(got["CapPrm"], "0000000000000000");
}

// ------------------------------------------------------- detached lifecycle

/// A detached command that writes a file, says it is ready, exits 42 on
/// SIGTERM and otherwise runs until killed.
const SERVICE: &str = "trap 'echo got-term; exit 42' TERM; \
    echo from-init > /tmp/init-file; echo ready; \
    while :; do sleep 0.1; done";

#[test]
fn a_detached_container_outlives_the_cli_and_logs_its_output() {
    let sb = Sandbox::new("detach");
    let pid = run_detached(&sb, &[], &["sh", "-c", SERVICE]);
    // The CLI has exited; the container has not.
    assert!(alive(pid), "pid {pid} is running");
    let st = state(&sb);
    assert_eq!(st["status"], "running");
    assert_eq!(st["detached"], true);
    assert_eq!(st["pid"], pid);
    assert!(logs_containing(&sb, "ready").contains("ready\n"));
    let entry = ps_entry(&sb).expect("ps lists the container");
    assert_eq!(entry["status"], "running");
    assert_eq!(entry["pid"], pid);
    assert_eq!(entry["command"], serde_json::json!(["sh", "-c", SERVICE]));
    assert!(sb.unified_dir().exists(), "its cgroup exists while it runs");
    assert!(alive(pid), "still running after logs and ps");
}

/// A detached container's monitor is the small monitor: a few pages of
/// its own, holding its log, its lock and palisade's image and nothing
/// its caller left open, passing on the signals a process sends it, and
/// running palisade's cleanup once the container ends. No other process
/// may run that cleanup.
#[test]
fn a_detached_container_is_watched_by_the_small_monitor() {
    let sb = Sandbox::new("small-monitor");
    std::fs::create_dir_all(&sb.dir).unwrap();
    let left_open = sb.dir.join("left-open");
    let script = "trap 'exit 7' USR1; echo ready; while :; do sleep 0.1; done";
    // The caller leaves descriptor 7 open (not close-on-exec).
    let out = std::process::Command::new("sh")
        .args(["-c", "exec 7>>\"$0\"; exec \"$@\""])
        .arg(&left_open)
        .arg(env!("CARGO_BIN_EXE_palisade"))
        .args(["run", "-d", "--name", &sb.name, "--", "sh", "-c", script])
        .env("PALISADE_ROOT", &sb.root)
        .output()
        .unwrap();
    ok(&out);
    let pid = sb.wait_running();
    logs_containing(&sb, "ready");
    let monitor = small_monitor(&sb).0 as i32;

    let status = std::fs::read_to_string(format!("/proc/{monitor}/status")).unwrap();
    let kb = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or_else(|| panic!("{field} in {status}"))
    };
    assert!(kb("RssAnon:") <= 64, "a few pages of its own: {status}");
    let mut held: Vec<String> = std::fs::read_dir(format!("/proc/{monitor}/fd"))
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap())
        .map(|target| target.display().to_string())
        .collect();
    held.sort();
    let log = sb.root.join(&sb.name).join("log").display().to_string();
    let lock = sb.root.join(&sb.name).join("lock").display().to_string();
    let mut expected = vec![
        "/dev/null".to_string(),
        "/palisade".to_string(),
        lock.clone(),
        log.clone(),
        log,
    ];
    expected.sort();
    assert_eq!(held, expected, "only its own descriptors");

    // A process holding the container's lock file, but not its monitor,
    // is refused the cleanup, and nothing changes.
    let refused = std::process::Command::new("sh")
        .args(["-c", "exec 5<\"$0\"; exec \"$@\""])
        .arg(&lock)
        .arg(env!("CARGO_BIN_EXE_palisade"))
        .args(["monitor-exited", "--lock-fd", "5", "--", &sb.name, "0"])
        .env("PALISADE_ROOT", &sb.root)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not this one"),
        "{}",
        describe(&refused)
    );
    assert!(alive(pid) && alive(monitor));
    assert_eq!(state(&sb)["status"], "running");
    assert!(sb.unified_dir().exists());

    // A signal from a process goes on to the container.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let waited = cli(&sb, &["wait", &sb.name]);
    assert_eq!(waited.status.code(), Some(7), "{}", describe(&waited));
    assert_eq!(String::from_utf8_lossy(&waited.stdout).trim(), "7");
    let st = state(&sb);
    assert_eq!(st["status"], "exited");
    assert_eq!(st["exit_status"], 7);
    poll("the monitor to end", || (!alive(monitor)).then_some(()));
    no_leftover_cgroups(&sb);
    ok(&cli(&sb, &["rm", &sb.name]));
}

#[test]
fn exec_joins_the_containers_namespaces_and_filesystem() {
    let sb = Sandbox::new("exec");
    let pid = run_detached(&sb, &[], &["sh", "-c", SERVICE]);
    logs_containing(&sb, "ready");
    let out = cli(
        &sb,
        &[
            "exec",
            &sb.name,
            "--",
            "sh",
            "-c",
            "echo $$; hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; cat /tmp/init-file; \
             readlink /proc/self/ns/pid /proc/self/ns/uts /proc/self/ns/mnt",
        ],
    );
    let stdout = ok(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    let exec_pid: i32 = lines[0].parse().expect("a pid");
    assert!(
        exec_pid > 1 && exec_pid != pid,
        "a pid of the container's namespace, not the host's: {exec_pid}"
    );
    assert_eq!(lines[1], sb.name, "the container's hostname");
    assert_eq!(
        lines[2],
        format!("sh -c {SERVICE} "),
        "pid 1 is the command"
    );
    assert_eq!(lines[3], "from-init", "the container's /tmp");
    for (line, ns) in lines[4..].iter().zip(["pid", "uts", "mnt"]) {
        let host_view = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(*line, host_view.to_string_lossy(), "{ns} namespace");
    }

    let out = cli(&sb, &["exec", &sb.name, "--", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(alive(pid), "exec leaves the container running");
}

#[test]
fn rm_refuses_a_running_container_and_changes_nothing() {
    let sb = Sandbox::new("rmrun");
    let pid = run_detached(&sb, &[], &["sleep", "600"]);
    let before = state(&sb);
    let out = cli(&sb, &["rm", &sb.name]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("running"), "{stderr}");
    assert!(alive(pid));
    assert_eq!(state(&sb), before);
    assert_eq!(ps_entry(&sb).expect("still listed")["status"], "running");
    assert!(sb.unified_dir().exists(), "its cgroup is kept");
}

#[test]
fn term_then_wait_reports_the_status_and_rm_removes_everything() {
    let sb = Sandbox::new("term");
    let pid = run_detached(&sb, &[], &["sh", "-c", SERVICE]);
    logs_containing(&sb, "ready");
    // `wait` blocks until the container exits.
    let waiter = sb
        .palisade()
        .args(["wait", &sb.name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn palisade wait");
    ok(&cli(&sb, &["kill", &sb.name, "-s", "TERM"]));
    let out = waiter.wait_with_output().expect("palisade wait");
    assert_eq!(out.status.code(), Some(42), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    assert!(logs_containing(&sb, "got-term").ends_with("got-term\n"));
    poll("the process to be reaped", || (!alive(pid)).then_some(()));

    let st = state(&sb);
    assert_eq!(st["status"], "exited");
    assert_eq!(st["exit_status"], 42);
    assert_eq!(st["oom_killed"], false);
    let entry = ps_entry(&sb).expect("an exited detached container is listed");
    assert_eq!(entry["status"], "exited");
    assert_eq!(entry["exit_status"], 42);
    // wait on an exited container returns at once, with the same status
    let again = cli(&sb, &["wait", &sb.name]);
    assert_eq!(again.status.code(), Some(42), "{}", describe(&again));

    ok(&cli(&sb, &["rm", &sb.name]));
    assert!(ps_entry(&sb).is_none(), "rm unlists it");
    assert!(!sb.root.join(&sb.name).exists(), "its state is gone");
    no_leftover_cgroups(&sb);
}

#[test]
fn rm_force_kills_and_removes_a_running_container() {
    let sb = Sandbox::new("rmf");
    let pid = run_detached(&sb, &[], &["sleep", "600"]);
    ok(&cli(&sb, &["rm", "-f", &sb.name]));
    poll("the container to die", || (!alive(pid)).then_some(()));
    assert!(ps_entry(&sb).is_none());
    assert!(!sb.root.join(&sb.name).exists(), "its state is gone");
    no_leftover_cgroups(&sb);
}

// ------------------------------------------------------------------- limits

const MEMORY_HOG: &str = "b = bytearray(64 << 20)\n\
    for i in range(0, len(b), 4096):\n    b[i] = 1\n\
    print('survived')";

const MEMORY_FLAGS: [&str; 4] = ["--memory", "32M", "--memory-swap", "32M"];

#[test]
fn memory_limit_kills_a_hog_with_137() {
    let sb = Sandbox::new("oom");
    let out = run(&sb, &MEMORY_FLAGS, &[PYTHON, "-c", MEMORY_HOG]);
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    assert!(
        !sb.root.join(&sb.name).exists(),
        "a foreground run removes its state"
    );
    no_leftover_cgroups(&sb);
}

#[test]
fn a_detached_oom_kill_is_recorded() {
    let sb = Sandbox::new("oomd");
    // no wait for "running": the hog may be gone before a poll sees it
    start_detached(&sb, &MEMORY_FLAGS, &[PYTHON, "-c", MEMORY_HOG]);
    let out = cli(&sb, &["wait", &sb.name]);
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "137");
    let st = state(&sb);
    assert_eq!(st["status"], "exited");
    assert_eq!(st["exit_status"], 137);
    assert_eq!(st["oom_killed"], true);
    let entry = ps_entry(&sb).expect("listed until rm");
    assert_eq!(entry["oom_killed"], true);
    assert_eq!(entry["exit_status"], 137);
    ok(&cli(&sb, &["rm", &sb.name]));
    no_leftover_cgroups(&sb);
}

#[test]
fn pids_limit_makes_fork_fail_and_rm_force_still_cleans_up() {
    let sb = Sandbox::new("pids");
    let script = r#"
import errno, os, time
kids, failed = 0, 0
for _ in range(60):
    try:
        pid = os.fork()
    except OSError as e:
        if e.errno != errno.EAGAIN:
            raise
        failed += 1
        continue
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    kids += 1
print('forks', kids, failed, flush=True)
time.sleep(600)
"#;
    let pid = run_detached(&sb, &["--pids", "20"], &[PYTHON, "-c", script]);
    let log = logs_containing(&sb, "forks ");
    let counts: Vec<u32> = log
        .lines()
        .find_map(|l| l.strip_prefix("forks "))
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let (forked, failed) = (counts[0], counts[1]);
    assert!(forked <= 19, "at most 19 children beside python: {log}");
    assert!(failed > 0, "forks beyond the limit fail with EAGAIN: {log}");
    assert_eq!(forked + failed, 60, "{log}");
    ok(&cli(&sb, &["rm", "-f", &sb.name]));
    poll("the container to die", || (!alive(pid)).then_some(()));
    assert!(ps_entry(&sb).is_none());
    no_leftover_cgroups(&sb);
}

#[test]
fn cpu_limit_holds_a_busy_loop_to_half_a_cpu() {
    let sb = Sandbox::new("cpu");
    // CPU time over wall time of a 3 s busy loop: the CFS quota (period
    // 100 ms) shows only when measured over many periods.
    let script = "import time\n\
        c0, t0 = time.process_time(), time.monotonic()\n\
        while time.monotonic() - t0 < 3:\n    pass\n\
        print('share', (time.process_time() - c0) / (time.monotonic() - t0))";
    let got = python(&sb, &["--cpu", "0.5"], script, &[]);
    let share: f64 = got["share"].parse().unwrap();
    assert!(
        (0.4..=0.6).contains(&share),
        "busy loop used {share:.3} of a CPU under --cpu 0.5"
    );
    no_leftover_cgroups(&sb);
}

// ------------------------------------------------------ environment, mounts

#[test]
fn env_path_and_workdir() {
    let sb = Sandbox::new("env");
    let script = "import os\n\
        print('FOO', os.environ.get('FOO'))\n\
        print('PATH', os.environ.get('PATH'))\n\
        print('cwd', os.getcwd())\n\
        print('PALISADE_ROOT', os.environ.get('PALISADE_ROOT'))";
    let got = python(&sb, &["-e", "FOO=bar", "-w", "/tmp"], script, &[]);
    assert_eq!(got["FOO"], "bar");
    assert_eq!(
        got["PATH"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert_eq!(got["cwd"], "/tmp");
    assert_eq!(
        got["PALISADE_ROOT"], "None",
        "palisade's own environment does not leak in"
    );
    let got = python(&sb, &[], script, &[]);
    assert_eq!(got["FOO"], "None");
    assert_eq!(got["cwd"], "/");
}

#[test]
fn bind_mounts_read_only_and_read_write() {
    let sb = Sandbox::new("bind");
    let share = sb.dir.join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("host-file"), "from the host\n").unwrap();
    let script = r#"
import errno
print('read', open('/mnt/host-file').read().strip())
try:
    with open('/mnt/new-file', 'w') as f:
        f.write('from the container\n')
    print('write ok')
except OSError as e:
    print('write', errno.errorcode.get(e.errno, str(e)))
"#;
    let ro = format!("{}:/mnt:ro", share.display());
    let got = python(&sb, &["--mount", &ro], script, &[]);
    assert_eq!(got["read"], "from the host");
    assert_eq!(got["write"], "EROFS");
    assert!(!share.join("new-file").exists());

    let rw = format!("{}:/mnt", share.display());
    let got = python(&sb, &["--mount", &rw], script, &[]);
    assert_eq!(got["read"], "from the host");
    assert_eq!(got["write"], "ok");
    assert_eq!(
        std::fs::read_to_string(share.join("new-file")).unwrap(),
        "from the container\n",
        "the write lands on the host"
    );
}

// ------------------------------------------------------------- exec policy

#[test]
fn exec_is_held_to_the_containers_connect_policy() {
    let sb = Sandbox::new("execpol");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    let policy = policy.to_str().unwrap();
    run_detached(&sb, &["--policy", policy], &["sleep", "600"]);
    let script = r#"
import errno, socket, sys
for addr in sys.argv[2:]:
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((addr, int(sys.argv[1])))
        print(addr, 'ok')
    except OSError as e:
        print(addr, errno.errorcode.get(e.errno, str(e)))
"#;
    let port = port.to_string();
    let out = cli(
        &sb,
        &[
            "exec",
            &sb.name,
            "--",
            PYTHON,
            "-c",
            script,
            &port,
            "127.0.0.1",
            "127.0.0.2",
        ],
    );
    assert_eq!(ok(&out), "127.0.0.1 ok\n127.0.0.2 EPERM\n");
    // the same connects from the host both succeed
    for addr in ["127.0.0.1", "127.0.0.2"] {
        TcpStream::connect((addr, port.parse::<u16>().unwrap()))
            .unwrap_or_else(|e| panic!("host to {addr}: {e}"));
    }
}

/// `--net bridge`: the container has `lo` and `eth0` with an address from
/// 10.88.0.0/16 and reaches a listener on the host side of the bridge
/// (10.88.0.1, which palisade creates); afterwards the bridge, the veth and
/// the lease are gone.
#[test]
fn net_bridge_reaches_the_host_side_of_the_bridge() {
    let sb = Sandbox::new("bridge");
    // IP_FREEBIND: the bridge address does not exist until palisade makes it.
    let listener = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_IP, 15, 1)
s.bind(("10.88.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
s.settimeout(30)
c, peer = s.accept()
print(peer[0], flush=True)
"#;
    let mut host = std::process::Command::new(PYTHON)
        .args(["-c", listener])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 listener");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(host.stdout.take().unwrap()));
    let port = lines.next().unwrap().unwrap();
    let inside = r#"
import socket, sys
print("ifaces", ",".join(sorted(n for _, n in socket.if_nameindex())))
s = socket.create_connection(("10.88.0.1", int(sys.argv[1])), timeout=10)
print("local", s.getsockname()[0])
"#;
    let got = python(&sb, &["--net", "bridge"], inside, &[&port]);
    assert_eq!(got["ifaces"], "eth0,lo");
    let local = &got["local"];
    assert!(local.starts_with("10.88."), "{got:?}");
    let peer = lines.next().unwrap().unwrap();
    assert_eq!(&peer, local, "the host saw the container's address");
    let _ = host.wait();
    assert!(
        !std::path::Path::new("/run/palisade-net/leases")
            .join(local)
            .exists(),
        "lease released"
    );
    no_leftover_cgroups(&sb);
}

/// The busybox rootfs that `cargo xtask rootfs` builds (and `cargo xtask
/// test` builds before the tests).
/// An OCI bundle on the busybox rootfs runs and returns its status, with
/// its hostname, environment, working directory, resources and masked
/// paths applied.
#[test]
fn an_oci_bundle_runs_and_returns_its_status() {
    let sb = Sandbox::new("oci");
    let bundle = sb.dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "hostname; echo \"$GREETING\"; pwd; wc -c < /etc/hosts; (for i in $(seq 60); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#; exit 3"],
            "env": ["PATH=/bin", "GREETING=hello from the bundle"],
            "cwd": "/tmp",
        },
        "root": {"path": support::busybox_rootfs(), "readonly": true},
        "hostname": "bundled",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}],
            "resources": {"pids": {"limit": 42}},
            "maskedPaths": ["/etc/hosts"],
        },
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let out = sb.run_bundle(&bundle);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "bundled");
    assert_eq!(lines[1], "hello from the bundle");
    assert_eq!(lines[2], "/tmp");
    assert_eq!(lines[3], "0", "/etc/hosts is masked: {stdout}");
    // 60 background sleeps under pids.limit 42: the task count stays within it.
    let tasks: u32 = lines[4].parse().unwrap();
    assert!(tasks <= 42, "pids limit from the bundle: {tasks} tasks");
    no_leftover_cgroups(&sb);
}

/// A bundle palisade cannot honour is refused before anything exists.
#[test]
fn an_unsupported_bundle_is_refused_naming_the_field() {
    let sb = Sandbox::new("oci-bad");
    let bundle = sb.dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": true, "user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"},
        "root": {"path": support::busybox_rootfs()},
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let out = sb.run_bundle(&bundle);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("process.terminal"),
        "{}",
        describe(&out)
    );
    assert!(!sb.root.join(&sb.name).exists());
    no_leftover_cgroups(&sb);
}

/// `--userns`: uid 0 inside, host uid 1000000 outside; the container's
/// root cannot write a host directory only host root may write, even
/// bind-mounted read-write, and `exec` enters the same user namespace.
#[test]
fn userns_root_is_unprivileged_on_the_host() {
    let sb = Sandbox::new("userns");
    let shared = sb.dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mount = format!("{}:/mnt", shared.display());
    let pid = run_detached(&sb, &["--userns", "--mount", &mount], &["sleep", "600"]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("1000000"),
        "{uid_line}"
    );
    let out = cli(
        &sb,
        &[
            "exec",
            &sb.name,
            "--",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; touch /mnt/x 2>&1 || echo denied",
        ],
    );
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "{text}");
    assert!(
        lines[1].split_whitespace().eq(["0", "1000000", "65536"]),
        "{text}"
    );
    assert!(
        text.contains("denied"),
        "host root's directory stays closed: {text}"
    );
    assert!(!shared.join("x").exists());
    ok(&cli(&sb, &["rm", "-f", &sb.name]));
    no_leftover_cgroups(&sb);
}

/// `--userns` on a state root only host root may enter (mode 0700, and so
/// is the directory holding it): the container's root, another host uid,
/// never looks a path up through it, so the container runs, `exec`
/// enters it, and `rm` leaves nothing behind.
#[test]
fn userns_runs_in_a_state_root_only_root_may_enter() {
    use std::os::unix::fs::PermissionsExt as _;
    let sb = Sandbox::new("userns-0700");
    std::fs::create_dir(&sb.root).unwrap();
    for dir in [&sb.dir, &sb.root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let out = run(
        &sb,
        &["--userns"],
        &["sh", "-c", "id -u; cat /proc/self/uid_map"],
    );
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "{text}");
    assert!(
        lines[1].split_whitespace().eq(["0", "1000000", "65536"]),
        "{text}"
    );
    assert!(
        !sb.root.join(&sb.name).exists(),
        "a foreground run leaves no state"
    );
    no_leftover_cgroups(&sb);

    let pid = run_detached(&sb, &["--userns"], &["sleep", "600"]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("1000000"),
        "{uid_line}"
    );
    assert_eq!(
        ok(&cli(&sb, &["exec", &sb.name, "--", "id", "-u"])).trim(),
        "0"
    );
    ok(&cli(&sb, &["rm", "-f", &sb.name]));
    assert!(!sb.root.join(&sb.name).exists(), "rm leaves no state");
    no_leftover_cgroups(&sb);
}

/// `--parent`: a sub-container lives in its parent's cgroups (so the
/// parent's memory limit binds it), is held to the parent's connect
/// policy on top of its own (none here), and ends with its parent.
#[test]
fn a_nested_container_is_bound_by_its_parent() {
    let parent = Sandbox::new("parent");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = parent.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    let policy = policy.to_str().unwrap();
    run_detached(
        &parent,
        &[
            "--policy",
            policy,
            "--memory",
            "64M",
            "--memory-swap",
            "64M",
        ],
        &["sleep", "600"],
    );

    let child_name = format!("{}-kid", parent.name);
    let nested = |flags: &[&str], cmd: &[&str]| {
        parent
            .palisade()
            .args(["run", "--name", &child_name, "--parent", &parent.name])
            .args(flags)
            .arg("--")
            .args(cmd)
            .output()
            .unwrap()
    };
    let probe = format!(
        "import socket\nfor a in ('127.0.0.1', '127.0.0.2'):\n    s = socket.socket()\n    try:\n        s.connect((a, {port})); print(a, 'ok')\n    except OSError as e:\n        print(a, e.errno)\n"
    );
    let out = nested(&[], &[PYTHON, "-c", &probe]);
    let text = ok(&out);
    assert!(text.contains("127.0.0.1 ok"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.2 {}", libc::EPERM)),
        "the parent's policy binds: {text}"
    );

    let hog = "b = bytearray(100 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n";
    let out = nested(&[], &[PYTHON, "-c", hog]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "the parent's 64M limit binds: {}",
        describe(&out)
    );

    // A detached child: its cgroup is inside the parent's, and removing the
    // parent ends it.
    let out = nested(&["-d"], &["sleep", "600"]);
    ok(&out);
    let state: Value = poll("the child running", || {
        let text =
            std::fs::read_to_string(parent.root.join(&child_name).join("state.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["status"] == "running").then_some(v)
    });
    let pid = state["pid"].as_i64().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let expected = format!("0::/palisade/{}/{}", parent.name, child_name);
    assert!(cgroup.lines().any(|l| l == expected), "{cgroup}");
    ok(&cli(&parent, &["rm", "-f", &parent.name]));
    let waited = cli(&parent, &["wait", &child_name]);
    assert_eq!(waited.status.code(), Some(137), "{}", describe(&waited));
    ok(&cli(&parent, &["rm", &child_name]));
    no_leftover_cgroups(&parent);
}

/// The CVE-2019-5736 route to palisade's binary: hold `file` (a
/// /proc/PID/exe or /proc/PID/fd/N of a detached container's monitor),
/// let the monitor end, then open what was held for writing and write.
/// Returns "wrote" or the errno name of the refusal.
fn write_through(sb: &Sandbox, file: &str, monitor_pid: i64) -> String {
    let script = format!(
        "import errno, os, sys\nfd = os.open('{file}', os.O_PATH)\nprint('held', flush=True)\nsys.stdin.readline()\ntry:\n    w = os.open(f'/proc/self/fd/{{fd}}', os.O_WRONLY)\n    os.write(w, b'x')\n    print('wrote')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"
    );
    let mut attacker = std::process::Command::new(PYTHON)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(attacker.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "held");
    ok(&cli(sb, &["rm", "-f", &sb.name]));
    poll("the monitor to exit", || {
        (!alive(monitor_pid as i32)).then_some(())
    });
    std::io::Write::write_all(&mut attacker.stdin.take().unwrap(), b"go\n").unwrap();
    let result = lines.next().unwrap().unwrap();
    attacker.wait().unwrap();
    result
}

/// A running detached container's monitor: its pid, and the
/// /proc/PID/fd/N of the palisade image it holds for the cleanup.
fn small_monitor(sb: &Sandbox) -> (i64, String) {
    let monitor = state(sb)["monitor_pid"].as_i64().unwrap();
    // It becomes the small monitor just after the container starts.
    poll("the small monitor", || {
        std::fs::read_link(format!("/proc/{monitor}/exe"))
            .is_ok_and(|exe| exe.to_string_lossy().starts_with("/memfd:palisade-monitor"))
            .then_some(())
    });
    let fds = format!("/proc/{monitor}/fd");
    let held: Vec<String> = std::fs::read_dir(&fds)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|fd| {
            std::fs::read_link(fd)
                .is_ok_and(|target| target.file_name() == Some("palisade".as_ref()))
        })
        .map(|fd| fd.display().to_string())
        .collect();
    assert_eq!(held.len(), 1, "one image of palisade held: {held:?}");
    (monitor, held[0].clone())
}

/// palisade's own processes cannot be used to overwrite its binary: from a
/// writable location it runs from that binary seen through a private
/// read-only overlay, in no path of any mount namespace and with no copy
/// (writes fail with EROFS); from a read-only mount it runs in place
/// (EROFS too). A detached container's monitor runs the small monitor
/// from a sealed memfd (writes fail with EPERM) and holds the same
/// unwritable image of palisade for its cleanup.
#[test]
fn palisade_cannot_be_overwritten_through_proc_exe() {
    use nix::sys::{
        statfs::{OVERLAYFS_SUPER_MAGIC, statfs},
        statvfs::FsFlags,
    };
    let sb = Sandbox::new("exe");
    let before = std::fs::read(env!("CARGO_BIN_EXE_palisade")).unwrap();
    run_detached(&sb, &[], &["sleep", "600"]);
    let (monitor, image) = small_monitor(&sb);
    let exe = std::fs::read_link(format!("/proc/{monitor}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:palisade-monitor"),
        "the small monitor: {exe:?}"
    );
    assert_eq!(
        std::fs::read_link(&image).unwrap(),
        Path::new("/palisade"),
        "reached by no path"
    );
    let fs = statfs(image.as_str()).unwrap();
    assert_eq!(fs.filesystem_type(), OVERLAYFS_SUPER_MAGIC, "not a memfd");
    assert!(fs.flags().contains(FsFlags::ST_RDONLY));
    assert!(std::fs::read(&image).unwrap() == before, "the very binary");
    assert_eq!(
        write_through(&sb, &format!("/proc/{monitor}/exe"), monitor),
        "EPERM",
        "the small monitor's image is sealed"
    );
    run_detached(&sb, &[], &["sleep", "600"]);
    let (monitor, image) = small_monitor(&sb);
    assert_eq!(write_through(&sb, &image, monitor), "EROFS");
    assert!(
        std::fs::read(env!("CARGO_BIN_EXE_palisade")).unwrap() == before,
        "binary unchanged"
    );

    // The same binary on a read-only bind mount.
    let ro = sb.dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_palisade"), ro.join("palisade")).unwrap();
    let mount = |args: &[&str]| {
        assert!(
            std::process::Command::new("mount")
                .args(args)
                .arg(&ro)
                .arg(&ro)
                .status()
                .unwrap()
                .success()
        )
    };
    mount(&["--bind"]);
    let result = std::panic::catch_unwind(|| {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&ro)
            .status()
            .unwrap();
        assert!(status.success());
        let started = std::process::Command::new(ro.join("palisade"))
            .env("PALISADE_ROOT", &sb.root)
            .args(["run", "-d", "--name", &sb.name, "--", "sleep", "600"])
            .output()
            .unwrap();
        assert!(started.status.success(), "{}", describe(&started));
        sb.wait_running();
        let (monitor, image) = small_monitor(&sb);
        let exe = std::fs::read_link(&image).unwrap();
        assert_eq!(exe, ro.join("palisade"), "no copy from a read-only mount");
        assert_eq!(write_through(&sb, &image, monitor), "EROFS");
    });
    let _ = cli(&sb, &["rm", "-f", &sb.name]);
    let _ = std::process::Command::new("umount").arg(&ro).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
