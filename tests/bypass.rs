//! Ways around a policy, each now closed: io_uring requests (which seccomp
//! never sees) creating socket families the policy refuses, and a listener
//! the kernel binds on its own (`listen()` on an unbound socket), which the
//! bind hooks never judge, and IPv6 extension headers in front of a SYN
//! (which hid it from the inbound checks). Real containers, real clients on
//! loopback.

mod support;

use std::{
    io::{BufRead, BufReader, Lines},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use support::{Sandbox, ckpt::compile_workload, describe};

/// The policy of the issue: every family but IPv4 refused, two of them by
/// the container's seccomp filter.
const SOCKETS: &str = "[network]\nsockets = { raw = false, packet = false, deny_families = [\"netlink\", \"vsock\", \"AF_INET6\"] }\n";

/// The families tests/workloads/uring_socket.c tries, in its order.
const FAMILIES: [&str; 6] = [
    "packet_raw",
    "packet_dgram",
    "netlink",
    "vsock",
    "inet6",
    "inet",
];

/// What uring_socket printed: io_uring_setup's result, then per family
/// (plain socket(), IORING_OP_SOCKET).
struct Sockets {
    setup: String,
    families: Vec<(String, String, String)>,
}

fn sockets(stdout: &[u8]) -> Sockets {
    let text = String::from_utf8_lossy(stdout);
    let mut lines = text.lines();
    let setup = lines
        .next()
        .and_then(|l| l.strip_prefix("setup "))
        .unwrap_or_else(|| panic!("no setup line: {text}"))
        .to_string();
    let families: Vec<_> = lines
        .map(|l| {
            let mut f = l.split(' ');
            let name = f.next().unwrap().to_string();
            let plain = f
                .next()
                .unwrap()
                .strip_prefix("plain=")
                .unwrap()
                .to_string();
            let uring = f
                .next()
                .unwrap()
                .strip_prefix("uring=")
                .unwrap()
                .to_string();
            (name, plain, uring)
        })
        .collect();
    let names: Vec<&str> = families.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, FAMILIES, "{text}");
    Sockets { setup, families }
}

/// The workload, compiled into the sandbox's directory (bound at /mnt).
fn workload(sb: &Sandbox) -> String {
    compile_workload(&sb.dir, "uring_socket");
    format!("{}:/mnt", sb.dir.display())
}

/// Runs uring_socket in a container under `policy` (none: no `--policy`).
fn run_workload(sb: &Sandbox, policy: Option<&Path>) -> Sockets {
    let mount = workload(sb);
    let mut cmd = sb.palisade();
    cmd.args(["run", "--name", &sb.name, "--mount", &mount]);
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    let out = cmd.args(["--", "/mnt/uring_socket"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    sockets(&out.stdout)
}

/// With the policy, io_uring_setup is refused (EPERM), so no family
/// can be reached through IORING_OP_SOCKET, while plain socket() is
/// refused as before; io_uring is refused in a container with no policy
/// at all, and by `exec` as by the first process.
#[test]
fn io_uring_is_refused_so_no_socket_family_gets_past_seccomp() {
    let sb = Sandbox::new("uring");
    let policy = sb.policy(SOCKETS);
    let got = run_workload(&sb, Some(&policy));
    assert_eq!(got.setup, "EPERM");
    for (name, plain, uring) in &got.families {
        let expected = if name == "inet" { "ok" } else { "EPERM" };
        assert_eq!(plain, expected, "plain socket() of {name}");
        assert_eq!(uring, "EPERM", "{name} through io_uring");
    }

    let none = Sandbox::new("uring-none");
    let got = run_workload(&none, None);
    assert_eq!(got.setup, "EPERM", "refused by default");

    // `exec` installs the same filter.
    let exec = Sandbox::new("uring-exec");
    let mount = workload(&exec);
    exec.start_sleeping(&["--policy", policy.to_str().unwrap(), "--mount", &mount]);
    let out = exec.exec(&["/mnt/uring_socket"]);
    assert!(out.status.success(), "{}", describe(&out));
    let got = sockets(&out.stdout);
    assert_eq!(got.setup, "EPERM");
    assert!(got.families.iter().all(|(_, _, uring)| uring == "EPERM"));
    assert_eq!(got.families[0].1, "EPERM", "packet refused in exec too");
}

/// `[security] io_uring = true` with no socket restriction: io_uring works
/// (an AF_INET socket is created through IORING_OP_SOCKET), and gives
/// every family the same result as plain socket(): the workload sees a
/// bypass when there is one. `exec` gets the same filter.
#[test]
fn io_uring_allowed_by_policy_works() {
    let sb = Sandbox::new("uring-on");
    let policy = sb.policy("[network]\nsockets = { raw = false }\n\n[security]\nio_uring = true\n");
    let got = run_workload(&sb, Some(&policy));
    assert_eq!(got.setup, "ok");
    for (name, plain, uring) in &got.families {
        assert_eq!(plain, uring, "{name}: io_uring as plain socket()");
    }
    let inet = got.families.iter().find(|(n, _, _)| n == "inet").unwrap();
    assert_eq!(inet.2, "ok");
    let packet = &got.families[0];
    assert_eq!(packet.2, "ok", "AF_PACKET is not refused here");

    let exec = Sandbox::new("uring-on-exec");
    let mount = workload(&exec);
    exec.start_sleeping(&["--policy", policy.to_str().unwrap(), "--mount", &mount]);
    let out = exec.exec(&["/mnt/uring_socket"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sockets(&out.stdout).setup, "ok");
}

/// io_uring with a restriction that seccomp enforces is refused before
/// anything is created (exit 2, naming file, line and field), and `policy
/// apply` cannot switch io_uring on a running container.
#[test]
fn io_uring_with_a_seccomp_socket_restriction_is_refused() {
    let sb = Sandbox::new("uring-both");
    for sockets in ["packet = false", "deny_families = [\"netlink\"]"] {
        let policy = sb.policy(&format!(
            "[network]\nsockets = {{ {sockets} }}\n\n[security]\nio_uring = true\n"
        ));
        let out = sb.run(Some(&policy), &["true"]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("policy.toml:5: security.io_uring: cannot be combined")
                && err.contains("do not pass through seccomp"),
            "{err}"
        );
        assert!(!sb.root.join(&sb.name).exists(), "no state created");
        assert_eq!(sb.leftover_cgroups(), Vec::<std::path::PathBuf>::new());
    }

    let mount = workload(&sb);
    sb.start_sleeping(&["--mount", &mount]);
    let on = sb.policy("[security]\nio_uring = true\n");
    let out = sb.try_apply(&on);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("security.io_uring") && err.contains("cannot change on a running container"),
        "{err}"
    );
    let out = sb.exec(&["/mnt/uring_socket"]);
    assert_eq!(sockets(&out.stdout).setup, "EPERM", "still refused");
}

/// An OCI bundle (`--bundle`, busybox rootfs with the workload bound at
/// /mnt) gets the same filter: io_uring refused, unless `--policy` allows it.
#[test]
fn an_oci_bundle_gets_the_same_filter() {
    let sb = Sandbox::new("uring-oci");
    compile_workload(&sb.dir, "uring_socket");
    let rootfs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rootfs/busybox");
    assert!(
        rootfs.join("mnt").is_dir(),
        "no busybox rootfs at {}: run `cargo xtask rootfs`",
        rootfs.display()
    );
    let bundle = sb.dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/mnt/uring_socket"],
            "cwd": "/",
        },
        "root": {"path": rootfs, "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/mnt", "type": "bind", "source": sb.dir, "options": ["rbind", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
        },
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let out = sb.run_bundle(&bundle);
    assert!(out.status.success(), "{}", describe(&out));
    let got = sockets(&out.stdout);
    assert_eq!(got.setup, "EPERM");
    assert!(got.families.iter().all(|(_, _, uring)| uring == "EPERM"));

    let on = sb.policy("[security]\nio_uring = true\n");
    let out = sb
        .palisade()
        .args(["run", "--name", &sb.name, "--policy"])
        .arg(&on)
        .arg("--bundle")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let got = sockets(&out.stdout);
    assert_eq!(got.setup, "ok");
    assert_eq!(got.families[5], ("inet".into(), "ok".into(), "ok".into()));
}

/// A container running `script` (python3) in the foreground, its stdout
/// read line by line.
struct Server {
    child: Child,
    pid: i32,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Server {
    fn start(sb: &Sandbox, policy: &Path, script: &str) -> Self {
        let mut child = sb
            .palisade()
            .args(["run", "--name", &sb.name, "--policy"])
            .arg(policy)
            .args(["--", "python3", "-u", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let pid = sb.wait_running();
        Self { child, pid, lines }
    }

    fn line(&mut self) -> String {
        self.lines
            .next()
            .expect("the container printed a line")
            .unwrap()
    }
}

impl Drop for Server {
    /// Ends the container's process (by its pid), and so the run.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A port no one listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects from the host: "ok", "timeout" (the SYN was dropped) or the error.
fn connect(addr: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => "ok".into(),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout".into(),
        Err(e) => e.to_string(),
    }
}

/// Listeners the kernel binds on its own (`listen()` with no `bind()`,
/// IPv4, dual-stack IPv6, IPv6-only, with SO_REUSEPORT), an explicit
/// listener on the allowed port, and a bind to port 0 (judged at
/// post_bind). Prints the ports, then one line per connection accepted.
fn listeners(allowed: u16) -> String {
    format!(
        "import errno, select, socket\n\
         S, V4, V6 = socket.SOL_SOCKET, socket.AF_INET, socket.AF_INET6\n\
         a = socket.socket(V4); a.listen()\n\
         b = socket.socket(V6); b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); b.listen()\n\
         c = socket.socket(V6); c.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); c.listen()\n\
         d = socket.socket(V4); d.setsockopt(S, socket.SO_REUSEPORT, 1); d.listen()\n\
         s = socket.socket(V4); s.setsockopt(S, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', {allowed})); s.listen()\n\
         z = socket.socket(V4)\n\
         try:\n\
         \x20   z.bind(('0.0.0.0', 0)); z.listen(); bind0 = 'ok'\n\
         except OSError as e:\n\
         \x20   bind0 = errno.errorcode[e.errno]\n\
         names = {{a: 'a', b: 'b', c: 'c', d: 'd', s: 's'}}\n\
         print(a.getsockname()[1], b.getsockname()[1], c.getsockname()[1], d.getsockname()[1], bind0, flush=True)\n\
         while True:\n\
         \x20   for l in select.select(list(names), [], [])[0]:\n\
         \x20       conn, peer = l.accept(); print('accepted', names[l], flush=True); conn.close()\n"
    )
}

fn ports(line: &str) -> (u16, u16, u16, u16, String) {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 5, "{line}");
    let p = |i: usize| f[i].parse::<u16>().unwrap();
    (p(0), p(1), p(2), p(3), f[4].to_string())
}

/// `bind = ["allow tcp PORT", "deny any"]`: a listener the kernel bound on
/// its own to an ephemeral port (listen() without bind(), IPv4, IPv6
/// dual-stack and v6-only, with SO_REUSEPORT) cannot be reached from the
/// host: each SYN is dropped (a timeout) and counted and reported as a
/// bind refusal, whether it comes over IPv4, IPv6 or to a dual-stack
/// socket over IPv4; the listener bound explicitly to PORT accepts.
#[test]
fn listen_without_bind_is_judged_by_the_bind_rules() {
    let sb = Sandbox::new("listen");
    let allowed = free_port();
    let policy = sb.policy(&format!(
        "[network]\nbind = [\"allow tcp {allowed}\", \"deny any\"]\n"
    ));
    let mut server = Server::start(&sb, &policy, &listeners(allowed));
    let (a, b, c, d, bind0) = ports(&server.line());
    assert_eq!(
        bind0, "EPERM",
        "an explicit bind to port 0 is judged at post_bind"
    );
    for (addr, what) in [
        (format!("127.0.0.1:{a}"), "IPv4 listen()"),
        (format!("[::1]:{b}"), "dual-stack listen() over IPv6"),
        (format!("127.0.0.1:{b}"), "dual-stack listen() over IPv4"),
        (
            format!("[::ffff:127.0.0.1]:{b}"),
            "dual-stack listen(), v4-mapped",
        ),
        (format!("[::1]:{c}"), "v6-only listen()"),
        (format!("127.0.0.1:{d}"), "SO_REUSEPORT listen()"),
    ] {
        assert_eq!(connect(&addr), "timeout", "{what} at {addr}");
    }
    assert_eq!(connect(&format!("127.0.0.1:{allowed}")), "ok");
    assert_eq!(
        server.line(),
        "accepted s",
        "only the allowed listener accepted"
    );

    let shown = sb.policy_show();
    let denied = shown["counters"]["bind_denied"].as_u64().unwrap();
    assert!(denied >= 6, "every refused SYN is a bind denial: {shown}");
    assert_eq!(shown["counters"]["accept_dropped"], 0, "{shown}");
    let events = sb.events();
    for (address, port) in [
        ("127.0.0.1", a),
        ("::1", b),
        ("127.0.0.1", b),
        ("::1", c),
        ("127.0.0.1", d),
    ] {
        assert!(
            events.iter().any(|e| e["hook"] == "bind"
                && e["verdict"] == "denied"
                && e["protocol"] == "tcp"
                && e["address"] == address
                && e["port"] == port
                && e["container"] == sb.name.as_str()),
            "a bind event for {address} port {port}: {events:?}"
        );
    }
}

/// The same rules in audit mode: the SYN to the unbound listener passes,
/// and is reported as an audited bind.
#[test]
fn listen_without_bind_in_audit_mode_passes_and_is_reported() {
    let sb = Sandbox::new("listen-audit");
    let allowed = free_port();
    let policy = sb.policy(&format!(
        "[network]\nmode = \"audit\"\nbind = [\"allow tcp {allowed}\", \"deny any\"]\n"
    ));
    let mut server = Server::start(&sb, &policy, &listeners(allowed));
    let (a, b, _, _, bind0) = ports(&server.line());
    assert_eq!(bind0, "ok", "audit refuses nothing");
    assert_eq!(connect(&format!("127.0.0.1:{a}")), "ok");
    assert_eq!(server.line(), "accepted a");
    assert_eq!(connect(&format!("[::1]:{b}")), "ok");
    assert_eq!(server.line(), "accepted b");
    let events = sb.events();
    for (address, port) in [("127.0.0.1", a), ("::1", b)] {
        assert!(
            events.iter().any(|e| e["hook"] == "bind"
                && e["verdict"] == "audited"
                && e["address"] == address
                && e["port"] == port),
            "an audited bind event for {address} port {port}: {events:?}"
        );
    }
    assert_eq!(sb.policy_show()["counters"]["bind_denied"], 0);
}

/// What the bind policy does not judge, as documented: the ephemeral port
/// the kernel gives an unbound UDP socket at its first sendto is a reply
/// port, not a served one. Who may send to it is the accept rules' to
/// decide: with every bind refused and 127.0.0.2 refused by `accept`, the
/// client's port receives from 127.0.0.1 and not from 127.0.0.2.
#[test]
fn udp_reply_port_is_governed_by_the_accept_rules() {
    let sb = Sandbox::new("udp-auto");
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let policy = sb.policy(
        "[network]\nbind = [\"deny any\"]\naccept = [\"deny 127.0.0.2/32\", \"allow any\"]\n",
    );
    let script = format!(
        "import errno, socket\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         try:\n\
         \x20   u.bind(('127.0.0.1', 0)); print('bind ok', flush=True)\n\
         except OSError as e:\n\
         \x20   print('bind', errno.errorcode[e.errno], flush=True)\n\
         c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(10)\n\
         c.sendto(b'hello', ('127.0.0.1', {}))\n\
         data, peer = c.recvfrom(100); print(data.decode(), peer[0], flush=True)\n",
        host.local_addr().unwrap().port()
    );
    let mut server = Server::start(&sb, &policy, &script);
    assert_eq!(server.line(), "bind EPERM", "explicit binds are judged");
    let mut buf = [0u8; 16];
    let (n, client) = host.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    // The refused peer first: on loopback, had it been delivered, it would
    // be the datagram the client reads.
    let refused = UdpSocket::bind("127.0.0.2:0").unwrap();
    refused.send_to(b"refused", client).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Read while the client still waits: it exits once it has a datagram.
    let shown = sb.policy_show();
    assert!(
        shown["counters"]["accept_dropped"].as_u64().unwrap() >= 1,
        "{shown}"
    );
    host.send_to(b"allowed", client).unwrap();
    assert_eq!(server.line(), "allowed 127.0.0.1");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The host's own view, for the record: outside a container the same
/// listen() is reachable, so a timeout above is the policy's doing.
#[test]
fn listen_without_bind_is_reachable_outside_a_container() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import socket\n\
             a = socket.socket(); a.listen()\n\
             port = a.getsockname()[1]\n\
             c = socket.create_connection(('127.0.0.1', port), timeout=2)\n\
             print('ok')\n",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// Connects from the host to `[::1]:port` with an IPv6 destination options
/// header on the socket (IPV6_DSTOPTS, set as root: the kernel fills its
/// next header byte, a PadN option pads it to 8 bytes), so the SYN's
/// fixed header names header 60, not TCP: "ok", "timeout" or the error.
fn connect_with_dstopts(port: u16) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import socket, sys\n\
             c = socket.socket(socket.AF_INET6)\n\
             c.setsockopt(socket.IPPROTO_IPV6, 59, bytes([0, 0, 1, 4, 0, 0, 0, 0]))\n\
             c.settimeout(2)\n\
             try:\n\
             \x20   c.connect(('::1', int(sys.argv[1]))); print('ok')\n\
             except socket.timeout:\n\
             \x20   print('timeout')\n\
             except OSError as e:\n\
             \x20   print(e)\n",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An IPv6 listener bound explicitly to `allowed` and one `listen()`ed
/// without a bind; prints the latter's port, then one line per connection.
fn v6_listeners(allowed: u16) -> String {
    format!(
        "import select, socket\n\
         s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('::', {allowed})); s.listen()\n\
         u = socket.socket(socket.AF_INET6); u.listen()\n\
         names = {{s: 's', u: 'u'}}\n\
         print(u.getsockname()[1], flush=True)\n\
         while True:\n\
         \x20   for l in select.select(list(names), [], [])[0]:\n\
         \x20       conn, peer = l.accept(); print('accepted', names[l], flush=True); conn.close()\n"
    )
}

/// A SYN carrying an IPv6 destination options header is judged by the
/// bind rules as any other: the header's next header byte is followed to
/// TCP. The same client reaches the listener the rules allow (so the
/// header goes out and would pass), and times out at the one `listen()`
/// bound on its own.
#[test]
fn ipv6_extension_headers_do_not_step_around_the_bind_rules() {
    let sb = Sandbox::new("ext-bind");
    let allowed = free_port();
    let policy = sb.policy(&format!(
        "[network]\nbind = [\"allow tcp {allowed}\", \"deny any\"]\n"
    ));
    let mut server = Server::start(&sb, &policy, &v6_listeners(allowed));
    let unbound: u16 = server.line().parse().unwrap();
    assert_eq!(connect_with_dstopts(allowed), "ok", "the allowed listener");
    assert_eq!(server.line(), "accepted s");
    assert_eq!(
        connect_with_dstopts(unbound),
        "timeout",
        "the listen() without bind, with a destination options header"
    );
    assert_eq!(connect(&format!("[::1]:{unbound}")), "timeout");
    let shown = sb.policy_show();
    assert!(
        shown["counters"]["bind_denied"].as_u64().unwrap() >= 2,
        "{shown}"
    );
}

/// A SYN with a destination options header from a peer the accept rules
/// refuse (::1) is dropped as a plain one is; IPv4 from 127.0.0.1 (not
/// refused) reaches the same dual-stack listener.
#[test]
fn ipv6_extension_headers_do_not_step_around_the_accept_rules() {
    let sb = Sandbox::new("ext-accept");
    let port = free_port();
    let policy = sb.policy("[network]\naccept = [\"deny ::1/128\", \"allow any\"]\n");
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('::', {port})); s.listen(); print('ready', flush=True)\n\
         while True:\n\
         \x20   conn, peer = s.accept(); print('accepted', peer[0], flush=True); conn.close()\n"
    );
    let mut server = Server::start(&sb, &policy, &script);
    assert_eq!(server.line(), "ready");
    assert_eq!(
        connect_with_dstopts(port),
        "timeout",
        "::1 with a destination options header"
    );
    assert_eq!(connect(&format!("[::1]:{port}")), "timeout");
    assert_eq!(connect(&format!("127.0.0.1:{port}")), "ok");
    assert_eq!(server.line(), "accepted ::ffff:127.0.0.1");
    let shown = sb.policy_show();
    assert!(
        shown["counters"]["accept_dropped"].as_u64().unwrap() >= 2,
        "{shown}"
    );
}

/// Sends a TCP SYN to `[::1]:port` from a raw socket, behind `headers`
/// IPv6 destination options headers (8 bytes each, a PadN option), and
/// waits 2 s for the listener's SYN-ACK: "synack" or "none".
fn raw_syn_behind(port: u16, headers: usize) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import socket, struct, sys, time\n\
             port, n = int(sys.argv[1]), int(sys.argv[2])\n\
             lo = socket.inet_pton(socket.AF_INET6, '::1')\n\
             sniff = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)\n\
             sport = 40000 + int(time.time() * 1000) % 20000\n\
             tcp = struct.pack('!HHIIBBHHH', sport, port, 1, 0, 5 << 4, 0x02, 65535, 0, 0)\n\
             pseudo = lo + lo + struct.pack('!I3xB', len(tcp), 6)\n\
             data = pseudo + tcp\n\
             s = sum(struct.unpack('!%dH' % (len(data) // 2), data))\n\
             while s >> 16: s = (s & 0xffff) + (s >> 16)\n\
             tcp = tcp[:16] + struct.pack('!H', ~s & 0xffff) + tcp[18:]\n\
             ext = b''.join(bytes([60 if i < n - 1 else 6, 0, 1, 4, 0, 0, 0, 0]) for i in range(n))\n\
             ip = struct.pack('!IHBB', 0x60000000, len(ext) + len(tcp), 60 if n else 6, 64) + lo + lo\n\
             raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)\n\
             raw.sendto(ip + ext + tcp, ('::1', 0))\n\
             sniff.settimeout(0.2); end = time.time() + 2; got = 'none'\n\
             while time.time() < end and got == 'none':\n\
             \x20   try:\n\
             \x20       p = sniff.recv(100)\n\
             \x20   except socket.timeout:\n\
             \x20       continue\n\
             \x20   sp, dp = struct.unpack('!HH', p[:4])\n\
             \x20   if sp == port and dp == sport and p[13] & 0x12 == 0x12: got = 'synack'\n\
             print(got)\n",
            &port.to_string(),
            &headers.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An IPv6 SYN behind more extension headers than the program follows (7)
/// cannot be judged, so with bind rules it is dropped even to the allowed
/// listener, which answers the same SYN behind one header.
#[test]
fn ipv6_extension_header_chain_past_the_bound_is_dropped() {
    let sb = Sandbox::new("ext-long");
    let allowed = free_port();
    let policy = sb.policy(&format!(
        "[network]\nbind = [\"allow tcp {allowed}\", \"deny any\"]\n"
    ));
    let mut server = Server::start(&sb, &policy, &v6_listeners(allowed));
    server.line();
    assert_eq!(raw_syn_behind(allowed, 1), "synack", "one header");
    assert_eq!(raw_syn_behind(allowed, 6), "synack", "six headers");
    assert_eq!(raw_syn_behind(allowed, 7), "none", "seven headers");
}
