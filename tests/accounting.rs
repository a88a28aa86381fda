//! Accounting, measured against what the test itself did and what the
//! kernel's own counters say: bytes a container sends and receives over
//! TCP (to and from listeners this test runs) within the headers their
//! packets can carry, CPU time of a busy loop against its cgroup's
//! cpuacct, context switches (exact for exited threads, never going down
//! while threads come and go) and page faults, allowed connects and binds,
//! and a nested container counted once, under its own name. Usage is read
//! with `palisade policy show NAME --json` (its `usage` object).

mod support;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener},
    path::PathBuf,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use palisade::enforce::{Enforcer, Pins};
use serde_json::Value;
use support::{Sandbox, ok, unified_mount};

/// Headers a TCP packet can carry: IPv4 (no options: Linux's TCP sends
/// none) and IPv6 (no extension headers) with the largest TCP header, 20
/// bytes and 40 of options. A SYN, an ACK or a FIN carries nothing else,
/// so the handshake and teardown are within the same bound per packet.
const IPV4_TCP_MAX: u64 = 20 + 60;
const IPV6_TCP_MAX: u64 = 40 + 60;
/// Headers every TCP packet carries at least (IPv4 and TCP, no options).
const IPV4_TCP_MIN: u64 = 20 + 20;
const IPV6_TCP_MIN: u64 = 40 + 20;

/// `palisade policy show NAME --json` in `sb`'s state root, parsed.
fn show(sb: &Sandbox, name: &str) -> Value {
    let out = sb
        .palisade()
        .args(["policy", "show", name, "--json"])
        .output()
        .expect("run palisade");
    serde_json::from_str(&ok(&out)).expect("policy show JSON")
}

/// The `usage` object of a running container.
fn usage(sb: &Sandbox, name: &str) -> Value {
    show(sb, name)["usage"].clone()
}

/// A field of a usage object: `"cpu_ns"` or `"tx_bytes.ipv4"`.
fn field(usage: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(usage, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("usage has no {path}: {usage}"))
}

/// How much `path` grew from `before` to `after`.
fn grew(before: &Value, after: &Value, path: &str) -> u64 {
    field(after, path)
        .checked_sub(field(before, path))
        .unwrap_or_else(|| panic!("{path} went down: {before} -> {after}"))
}

/// `palisade exec NAME -- python3 -c SCRIPT ARGS...`, which must succeed;
/// its stdout.
fn exec_python(sb: &Sandbox, name: &str, script: &str, args: &[&str]) -> String {
    let out = sb
        .palisade()
        .args(["exec", name, "--", "python3", "-c", script])
        .args(args)
        .output()
        .expect("run palisade");
    ok(&out)
}

/// Connects to ADDR PORT, sends N bytes, closes its sending side and
/// waits for the peer to close (so every byte was received); prints the
/// bytes TCP sent again (tcp_info's tcpi_bytes_retrans, at offset 208):
/// retransmissions are traffic too, and a loaded machine makes some.
const SEND: &str = r#"
import socket, struct, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((addr, port), timeout=20)
s.sendall(b"x" * n)
s.shutdown(socket.SHUT_WR)
s.recv(1)
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
print(struct.unpack_from("Q", info, 208)[0] if len(info) >= 216 else 0)
s.close()
"#;

/// Connects to ADDR PORT and reads to the end; prints how much it read.
const RECEIVE: &str = r#"
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((addr, port), timeout=20)
total = 0
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    total += len(b)
s.close()
print(total)
"#;

/// A listener on `addr` that accepts one connection and reads it to the
/// end; the receiver hears how many bytes came.
fn sink(addr: &str) -> (u16, mpsc::Receiver<usize>) {
    let listener = TcpListener::bind((addr, 0)).expect("bind the sink");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read");
        let _ = tx.send(got.len());
    });
    (port, rx)
}

/// A listener on `addr` that accepts one connection, writes `n` bytes
/// and closes.
fn source(addr: &str, n: usize) -> u16 {
    let listener = TcpListener::bind((addr, 0)).expect("bind the source");
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.write_all(&vec![b'y'; n]).expect("write");
        let _ = conn.shutdown(Shutdown::Both);
    });
    port
}

/// The container `name` sends `n` bytes to a sink on `addr`; returns its
/// usage before and after, and the bytes TCP sent again.
fn send_from(sb: &Sandbox, name: &str, addr: &str, n: usize) -> ((Value, Value), u64) {
    let before = usage(sb, name);
    let (port, got) = sink(addr);
    let retrans = exec_python(sb, name, SEND, &[addr, &port.to_string(), &n.to_string()]);
    let retrans: u64 = retrans
        .trim()
        .parse()
        .expect("the sender prints its retransmitted bytes");
    assert_eq!(
        got.recv_timeout(Duration::from_secs(20))
            .expect("the sink's count"),
        n
    );
    ((before, usage(sb, name)), retrans)
}

/// The container `name` receives `n` bytes from a source on `addr`.
fn receive_in(sb: &Sandbox, name: &str, addr: &str, n: usize) -> (Value, Value) {
    let before = usage(sb, name);
    let port = source(addr, n);
    let read = exec_python(sb, name, RECEIVE, &[addr, &port.to_string()]);
    assert_eq!(read.trim(), n.to_string());
    (before, usage(sb, name))
}

/// Checks that `dir` ("tx" or "rx") of `family` grew by `n` payload bytes
/// plus, per packet counted, between `min` and `max` bytes of headers.
fn assert_within_headers(
    (before, after): &(Value, Value),
    dir: &str,
    family: &str,
    n: u64,
    (min, max): (u64, u64),
) {
    let bytes = grew(before, after, &format!("{dir}_bytes.{family}"));
    let packets = grew(before, after, &format!("{dir}_packets.{family}"));
    assert!(packets > 0, "{dir} {family}: no packets counted: {after}");
    assert!(
        bytes >= n + packets * min && bytes <= n + packets * max,
        "{dir} {family}: {bytes} bytes in {packets} packets for {n} bytes of payload: \
         headers must be {min}-{max} bytes a packet ({before} -> {after})"
    );
}

/// A detached container running `cmd`, waited for until it runs.
fn start(sb: &Sandbox, name: &str, flags: &[&str], cmd: &[&str]) {
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", name])
        .args(flags)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run palisade");
    ok(&out);
    let path = sb.root.join(name).join("state.json");
    let deadline = support::deadline(20);
    while Instant::now() < deadline {
        let state: Option<Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if state.is_some_and(|s| s["status"] == "running") {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("container {name} never started");
}

/// The cgroup v2 id of a container, from its state.
fn cgroup_id(sb: &Sandbox, name: &str) -> u64 {
    let text = std::fs::read_to_string(sb.root.join(name).join("state.json")).expect("state");
    let state: Value = serde_json::from_str(&text).expect("state JSON");
    state["cgroup_id"].as_u64().expect("a cgroup id")
}

#[test]
fn tcp_bytes_sent_and_received_on_loopback_are_counted_with_their_headers() {
    let sb = Sandbox::new("acctlo");
    sb.start_sleeping(&[]);
    let idle = usage(&sb, &sb.name);
    for dir in ["tx", "rx"] {
        for family in ["ipv4", "ipv6"] {
            assert_eq!(field(&idle, &format!("{dir}_bytes.{family}")), 0, "{idle}");
        }
    }

    let n = 3_000_000;
    let (sent, again) = send_from(&sb, &sb.name, "127.0.0.1", n);
    assert_within_headers(
        &sent,
        "tx",
        "ipv4",
        n as u64 + again,
        (IPV4_TCP_MIN, IPV4_TCP_MAX),
    );
    // Only ACKs (and the handshake) came back.
    assert_within_headers(&sent, "rx", "ipv4", 0, (IPV4_TCP_MIN, IPV4_TCP_MAX));
    assert_eq!(grew(&sent.0, &sent.1, "tx_bytes.ipv6"), 0);

    let n = 2_000_000;
    let received = receive_in(&sb, &sb.name, "127.0.0.1", n);
    assert_within_headers(
        &received,
        "rx",
        "ipv4",
        n as u64,
        (IPV4_TCP_MIN, IPV4_TCP_MAX),
    );
    assert_within_headers(&received, "tx", "ipv4", 0, (IPV4_TCP_MIN, IPV4_TCP_MAX));

    let n = 1_500_000;
    let (sent6, again) = send_from(&sb, &sb.name, "::1", n);
    assert_within_headers(
        &sent6,
        "tx",
        "ipv6",
        n as u64 + again,
        (IPV6_TCP_MIN, IPV6_TCP_MAX),
    );
    assert_eq!(grew(&sent6.0, &sent6.1, "tx_bytes.ipv4"), 0);
    let received6 = receive_in(&sb, &sb.name, "::1", n);
    assert_within_headers(
        &received6,
        "rx",
        "ipv6",
        n as u64,
        (IPV6_TCP_MIN, IPV6_TCP_MAX),
    );

    let last = usage(&sb, &sb.name);
    assert_eq!(field(&last, "connects_allowed"), 4, "{last}");
}

/// On a veth (MTU 1500) TCP sends GSO packets of many segments, and the
/// receiving end gets them whole: each segment's headers must be counted.
#[test]
fn gso_packets_on_a_bridge_count_each_segment_with_its_headers() {
    let sb = Sandbox::new("acctbr");
    sb.start_sleeping(&["--net", "bridge"]);
    let gateway = "10.88.0.1";
    let n = 4_000_000;
    let (sent, again) = send_from(&sb, &sb.name, gateway, n);
    assert_within_headers(
        &sent,
        "tx",
        "ipv4",
        n as u64 + again,
        (IPV4_TCP_MIN, IPV4_TCP_MAX),
    );
    let packets = grew(&sent.0, &sent.1, "tx_packets.ipv4");
    assert!(
        packets >= n as u64 / 1460,
        "{packets} packets cannot carry {n} bytes in 1500-byte frames"
    );
    let received = receive_in(&sb, &sb.name, gateway, n);
    assert_within_headers(
        &received,
        "rx",
        "ipv4",
        n as u64,
        (IPV4_TCP_MIN, IPV4_TCP_MAX),
    );
    let packets = grew(&received.0, &received.1, "rx_packets.ipv4");
    assert!(packets >= n as u64 / 1460, "{packets} packets received");
}

/// The CPU time the container's own cgroup counted: v1 cpuacct where it
/// is mounted (hybrid hosts), else cgroup v2 `cpu.stat`.
fn cgroup_cpu_ns(name: &str) -> u64 {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let cpuacct = info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut right = right.split(' ');
        let (fstype, opts) = (right.next()?, right.nth(1)?);
        (fstype == "cgroup" && opts.split(',').any(|o| o == "cpuacct"))
            .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
    });
    match cpuacct {
        Some(mount) => {
            let path = mount.join("palisade").join(name).join("cpuacct.usage");
            let text = std::fs::read_to_string(&path).expect("cpuacct.usage");
            text.trim().parse().expect("a number")
        }
        None => {
            let path = unified_mount().join("palisade").join(name).join("cpu.stat");
            let text = std::fs::read_to_string(&path).expect("cpu.stat");
            let usec: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .expect("usage_usec")
                .trim()
                .parse()
                .expect("a number");
            usec * 1000
        }
    }
}

/// Busy for 2 s of its own CPU time (not wall time: the machine is
/// shared, and a busy loop there may get less than a CPU).
const BUSY: &str = "import time\nwhile time.process_time() < 2.0: pass\n";

/// The busy loop's 2 s are counted from when it is told to go: what the
/// container's start cost before (a few ms here, far more in an emulated
/// guest) is not the loop's.
#[test]
fn cpu_time_of_a_busy_loop_is_counted_and_agrees_with_cpuacct() {
    let sb = Sandbox::new("acctcpu");
    let x = sb.root.join("x");
    std::fs::create_dir_all(&x).unwrap();
    let script = format!(
        "while [ ! -e /x/go ]; do sleep 0.02; done; python3 -c '{BUSY}' && echo busy-done && exec sleep 600"
    );
    let mount = format!("{}:/x", x.display());
    start(&sb, &sb.name, &["--mount", &mount], &["sh", "-c", &script]);
    let before = field(&usage(&sb, &sb.name), "cpu_ns");
    std::fs::write(x.join("go"), "").unwrap();
    let deadline = support::deadline(60);
    loop {
        let out = sb.palisade().args(["logs", &sb.name]).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("busy-done") {
            break;
        }
        assert!(Instant::now() < deadline, "the busy loop never ended");
        thread::sleep(Duration::from_millis(100));
    }
    // Let the shell exec sleep, which then does nothing.
    thread::sleep(Duration::from_millis(300));
    let counted = field(&usage(&sb, &sb.name), "cpu_ns");
    let cgroup = cgroup_cpu_ns(&sb.name);
    let seconds = (counted - before) as f64 / 1e9;
    assert!(
        (1.9..=2.1).contains(&seconds),
        "a 2 s busy loop counted as {seconds} s"
    );
    let ratio = counted as f64 / cgroup as f64;
    assert!(
        (0.98..=1.02).contains(&ratio),
        "counted {counted} ns, the cgroup's own count {cgroup} ns (ratio {ratio})"
    );
}

#[test]
fn context_switches_and_page_faults_are_counted_and_grow() {
    let sb = Sandbox::new("acctsched");
    start(
        &sb,
        &sb.name,
        &[],
        &["sh", "-c", "while :; do sleep 0.1; done"],
    );
    thread::sleep(Duration::from_millis(500));
    let first = usage(&sb, &sb.name);
    thread::sleep(Duration::from_secs(1));
    let second = usage(&sb, &sb.name);
    for path in ["context_switches", "page_faults", "cpu_ns"] {
        assert!(field(&first, path) > 0, "{path}: {first}");
        assert!(
            grew(&first, &second, path) > 0,
            "{path}: {first} -> {second}"
        );
    }
    // Ten sleeps a second, each a fork, an exec and a switch or more.
    assert!(grew(&first, &second, "context_switches") >= 5, "{second}");
}

/// Two threads of one process ping-pong over two pipes 5,000 times, then
/// the process prints its own count of its switches (getrusage, which
/// includes its exited thread's) and exits.
const PING_PONG: &str = "
import os, threading, resource
r, w = os.pipe()
r2, w2 = os.pipe()
def pong():
    for _ in range(5000):
        os.read(r, 1)
        os.write(w2, b'x')
t = threading.Thread(target=pong)
t.start()
for _ in range(5000):
    os.write(w, b'x')
    os.read(r2, 1)
t.join()
u = resource.getrusage(resource.RUSAGE_SELF)
print(u.ru_nvcsw + u.ru_nivcsw)
";

/// The switches of threads that have exited are the kernel's own count
/// of them, taken at their exit: a process's threads, gone, add what the
/// process itself counted, plus at most the few switches of its exit.
#[test]
fn context_switches_of_exited_threads_are_the_kernels_count() {
    let sb = Sandbox::new("acctswitch");
    // A container that sleeps: it switches only when woken.
    start(&sb, &sb.name, &[], &["sleep", "600"]);
    let before = usage(&sb, &sb.name);
    let reported: u64 = exec_python(&sb, &sb.name, PING_PONG, &[])
        .trim()
        .parse()
        .expect("a count");
    let after = usage(&sb, &sb.name);
    let counted = grew(&before, &after, "context_switches");
    assert!(reported >= 10_000, "5,000 round trips, {reported} switches");
    assert!(
        (reported..=reported + 50).contains(&counted),
        "the process counted {reported} switches, the container {counted}"
    );
}

/// Threads that start and exit all the time: every read, in a tight loop
/// against the pinned maps, is at least the one before (a thread exiting
/// during a read is counted once: as live, or as exited, never both or
/// neither), and the count grows.
#[test]
fn context_switches_never_go_down_while_threads_come_and_go() {
    let sb = Sandbox::new("acctchurn");
    let churn = "import threading, time\nwhile True:\n    ts = [threading.Thread(target=time.sleep, args=(0.0005,)) for _ in range(4)]\n    [t.start() for t in ts]\n    [t.join() for t in ts]\n";
    start(&sb, &sb.name, &[], &["python3", "-c", churn]);
    let text = std::fs::read_to_string(sb.root.join(&sb.name).join("state.json")).expect("state");
    let state: Value = serde_json::from_str(&text).expect("state JSON");
    let cgroups: Vec<PathBuf> = state["cgroups"]
        .as_array()
        .expect("cgroups")
        .iter()
        .map(|c| PathBuf::from(c.as_str().expect("a path")))
        .collect();
    let id = cgroup_id(&sb, &sb.name);
    let enforcer = Enforcer::open_existing(Pins::for_state_root(&sb.root))
        .expect("open the pins")
        .expect("pinned");
    let first = enforcer.usage(id, &cgroups).context_switches;
    let mut last = first;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut reads = 0;
    while Instant::now() < deadline {
        let now = enforcer.usage(id, &cgroups).context_switches;
        assert!(now >= last, "read {reads}: {last} then {now}");
        last = now;
        reads += 1;
    }
    assert!(last > first + 100, "{first} -> {last} in {reads} reads");
}

/// Page faults are the memory controller's count: touching 64 MiB of
/// fresh memory in the container, in 4 KiB pages, adds at least one fault
/// per page, and not many more.
#[test]
fn page_faults_count_every_page_touched() {
    let sb = Sandbox::new("acctfault");
    start(&sb, &sb.name, &[], &["sleep", "600"]);
    let before = usage(&sb, &sb.name);
    // 64 MiB written once by `exec` into the container: 16,384 pages.
    let out = sb.exec(&[
        "python3",
        "-c",
        // Without transparent huge pages (a host may enable them for all
        // memory): one fault maps one 4 KiB page.
        "import ctypes\nassert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0  # PR_SET_THP_DISABLE\nb = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1",
    ]);
    assert!(out.status.success(), "{}", support::describe(&out));
    let after = usage(&sb, &sb.name);
    let faults = grew(&before, &after, "page_faults");
    let pages = (64u64 << 20) / 4096;
    assert!(
        (pages..pages * 2).contains(&faults),
        "{faults} faults for {pages} pages touched"
    );
}

/// Allowed connects and binds are counted where they are judged; refused
/// ones only as denials.
#[test]
fn connects_and_binds_allowed_are_counted() {
    let sb = Sandbox::new("acctcalls");
    let policy = sb.policy(
        "[network]\n\
         connect = [\"allow tcp 127.0.0.1/32\", \"deny any\"]\n\
         bind = [\"allow tcp 1024-65535\", \"deny any\"]\n",
    );
    start(
        &sb,
        &sb.name,
        &["--policy", policy.to_str().unwrap()],
        &["sleep", "600"],
    );
    let port = support::listen_tcp(&["127.0.0.1"]);
    let script = r#"
import errno, socket, sys
def attempt(f):
    s = socket.socket()
    try:
        f(s)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
port = int(sys.argv[1])
print(attempt(lambda s: s.connect(("127.0.0.1", port))))
print(attempt(lambda s: s.connect(("127.0.0.2", port))))
print(attempt(lambda s: s.bind(("127.0.0.1", 0))))
print(attempt(lambda s: s.bind(("127.0.0.1", 0)) or s.listen()))
print(attempt(lambda s: s.bind(("127.0.0.1", 80))))
"#;
    let out = exec_python(&sb, &sb.name, script, &[&port.to_string()]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["ok", "EPERM", "ok", "ok", "EPERM"]
    );
    let shown = show(&sb, &sb.name);
    let usage = &shown["usage"];
    assert_eq!(field(usage, "connects_allowed"), 1, "{usage}");
    assert_eq!(field(usage, "binds_allowed"), 2, "{usage}");
    assert_eq!(shown["counters"]["connect_denied"], 1, "{shown}");
    assert_eq!(shown["counters"]["bind_denied"], 1, "{shown}");
}

/// A nested container (`--parent`) runs its parent's programs only: its
/// denial is counted and reported once, its bytes once and under its own
/// name, and the parent's own traffic under the parent's.
#[test]
fn a_nested_container_is_counted_once_under_its_own_name() {
    let parent = Sandbox::new("acctparent");
    let policy = parent.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    start(
        &parent,
        &parent.name,
        &["--policy", policy.to_str().unwrap()],
        &["sleep", "600"],
    );
    let child = format!("{}-kid", parent.name);
    start(
        &parent,
        &child,
        &["--parent", &parent.name],
        &["sleep", "600"],
    );
    let pins = support::pin_dir(&parent.root).join("links");
    assert!(
        !pins.join(&child).exists(),
        "a nested container gets no attachment of its own"
    );

    // The parent's rules refuse the child's connect to 127.0.0.2.
    let port = support::listen_tcp(&["127.0.0.1"]);
    let probe = "import socket, sys\ntry:\n    socket.create_connection(('127.0.0.2', int(sys.argv[1])))\n    print('ok')\nexcept PermissionError:\n    print('EPERM')\n";
    assert_eq!(
        exec_python(&parent, &child, probe, &[&port.to_string()]).trim(),
        "EPERM"
    );
    let shown = show(&parent, &child);
    assert_eq!(shown["counters"]["connect_denied"], 1, "{shown}");
    assert_eq!(show(&parent, &parent.name)["counters"]["connect_denied"], 0);
    let events: Vec<Value> = parent
        .events()
        .into_iter()
        .filter(|e| e["hook"] == "connect")
        .collect();
    assert_eq!(events.len(), 1, "one denial, one event: {events:?}");
    assert_eq!(events[0]["container"], child.as_str());

    // Bytes: the child's under its name, once; the parent's under its own.
    let child_n = 3_000_000;
    let parent_n = 1_000_000;
    let parent_before = usage(&parent, &parent.name);
    let (kid, again) = send_from(&parent, &child, "127.0.0.1", child_n);
    assert_within_headers(
        &kid,
        "tx",
        "ipv4",
        child_n as u64 + again,
        (IPV4_TCP_MIN, IPV4_TCP_MAX),
    );
    let (own, again) = send_from(&parent, &parent.name, "127.0.0.1", parent_n);
    assert_within_headers(
        &own,
        "tx",
        "ipv4",
        parent_n as u64 + again,
        (IPV4_TCP_MIN, IPV4_TCP_MAX),
    );
    assert!(
        field(&own.1, "tx_bytes.ipv4") < child_n as u64,
        "the child's bytes are not the parent's: {}",
        own.1
    );
    assert_eq!(grew(&parent_before, &own.0, "tx_bytes.ipv4"), 0);
    let kid_after = usage(&parent, &child);
    assert_eq!(
        field(&kid_after, "tx_bytes.ipv4"),
        field(&kid.1, "tx_bytes.ipv4"),
        "the parent's traffic is not the child's"
    );
    assert_eq!(field(&kid_after, "connects_allowed"), 1, "{kid_after}");
    assert_eq!(field(&own.1, "connects_allowed"), 1, "{}", own.1);

    // Removed with the container: nothing is left of the child's usage.
    let child_id = cgroup_id(&parent, &child);
    ok(&parent
        .palisade()
        .args(["rm", "-f", &child])
        .output()
        .unwrap());
    let enforcer = Enforcer::open(Pins::for_state_root(&parent.root)).expect("open the pins");
    assert_eq!(enforcer.usage(child_id, &[]), Default::default());
    assert_ne!(
        enforcer.usage(cgroup_id(&parent, &parent.name), &[]),
        Default::default()
    );
}

/// The counters live in pinned maps: they do not reset between CLI runs,
/// and the tracepoints are attached once per host (in the host's pin
/// directory, `host-<hash>` for the object's hash), not per run or root.
#[test]
fn usage_survives_the_cli_and_tracepoints_are_attached_once() {
    let sb = Sandbox::new("acctpin");
    start(
        &sb,
        &sb.name,
        &[],
        &["sh", "-c", "while :; do sleep 0.1; done"],
    );
    let first = usage(&sb, &sb.name);
    let objects: Vec<PathBuf> = std::fs::read_dir(support::pin_dir(&sb.root))
        .expect("pins")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("obj-"))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let hash = objects[0].file_name().unwrap().to_string_lossy()["obj-".len()..].to_string();
    let host = PathBuf::from(format!("/sys/fs/bpf/palisade/host-{hash}"));
    let links = |dir: &PathBuf| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("link_"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(links(&host), ["link_task_exit"]);
    assert!(links(&objects[0]).is_empty(), "none of the root's own");
    thread::sleep(Duration::from_millis(300));
    let second = usage(&sb, &sb.name);
    assert!(field(&second, "page_faults") >= field(&first, "page_faults"));
    assert!(field(&second, "context_switches") > field(&first, "context_switches"));
    assert_eq!(links(&host), ["link_task_exit"]);
    // A removed link pin is attached again by the next start.
    std::fs::remove_file(host.join("link_task_exit")).unwrap();
    let again = format!("{}-again", sb.name);
    start(&sb, &again, &[], &["sleep", "600"]);
    let third = usage(&sb, &sb.name);
    assert!(field(&third, "context_switches") >= field(&second, "context_switches"));
    assert!(host.join("link_task_exit").exists());
}
