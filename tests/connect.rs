//! Connect policy, end to end: real cgroup, real connect4/connect6
//! programs, a real client (python3) inside the container against
//! listeners on loopback.

mod support;

use support::{Sandbox, free_udp_port, listen_tcp, probe_inside, probe_outside};

#[test]
fn allowed_address_connects_and_others_get_eperm_only_inside() {
    let sb = Sandbox::new("conn");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    let probes = [(4, "tcp", "127.0.0.1", port), (4, "tcp", "127.0.0.2", port)];
    assert_eq!(probe_inside(&sb, &policy, &probes), ["ok", "EPERM"]);
    assert_eq!(
        probe_outside(&probes),
        ["ok", "ok"],
        "the host is not policed"
    );
    assert_eq!(sb.leftover_cgroups(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn ipv6_and_v4_mapped_addresses_are_policed() {
    let sb = Sandbox::new("v6");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2", "::1"]);
    let v4_only = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    let probes = [
        (6, "tcp", "::1", port),
        (6, "tcp", "::ffff:127.0.0.1", port),
        (6, "tcp", "::ffff:127.0.0.2", port),
    ];
    assert_eq!(
        probe_inside(&sb, &v4_only, &probes),
        ["EPERM", "ok", "EPERM"]
    );
    assert_eq!(probe_outside(&probes), ["ok", "ok", "ok"]);

    let v6_only = sb.connect_policy(&["allow tcp ::1/128", "deny any"]);
    let probes = [
        (6, "tcp", "::1", port),
        (4, "tcp", "127.0.0.1", port),
        (6, "tcp", "::ffff:127.0.0.1", port),
    ];
    assert_eq!(
        probe_inside(&sb, &v6_only, &probes),
        ["ok", "EPERM", "EPERM"]
    );
}

#[test]
fn udp_connect_is_policed_by_protocol_and_port() {
    let sb = Sandbox::new("udp");
    let port = free_udp_port("127.0.0.1");
    let next = if port == u16::MAX { port - 1 } else { port + 1 };
    let policy = sb.connect_policy(&[
        &format!("allow udp 127.0.0.1/32:{port}"),
        "allow udp [::1]:53",
        "deny any",
    ]);
    let tcp_port = listen_tcp(&["127.0.0.1"]);
    let probes = [
        (4, "udp", "127.0.0.1", port),
        (4, "udp", "127.0.0.1", next),
        (4, "udp", "127.0.0.2", port),
        (6, "udp", "::ffff:127.0.0.1", port),
        (6, "udp", "::1", 53),
        (6, "udp", "::1", 54),
        (4, "tcp", "127.0.0.1", tcp_port),
    ];
    assert_eq!(
        probe_inside(&sb, &policy, &probes),
        ["ok", "EPERM", "EPERM", "ok", "ok", "EPERM", "EPERM"]
    );
}

/// The documented matching order: longest prefix first, then the
/// narrowest port range, falling back to shorter prefixes, then the default.
/// UDP connect needs no listener, so every address and port can be probed.
#[test]
fn most_specific_prefix_then_port_decides() {
    let sb = Sandbox::new("spec");
    let policy = sb.connect_policy(&[
        "allow udp 127.0.0.0/8:5000-5999",
        "deny udp 127.0.0.0/8:5500",
        "deny 127.0.0.9/32",
        "allow udp 127.0.0.8/32:7000",
        "deny any",
    ]);
    let probes = [
        (4, "udp", "127.0.0.1", 4999), // one below the range
        (4, "udp", "127.0.0.1", 5000), // first of the range
        (4, "udp", "127.0.0.1", 5999), // last of the range
        (4, "udp", "127.0.0.1", 6000), // one past the range
        (4, "udp", "127.0.0.1", 5500), // a narrower port rule wins
        (4, "udp", "127.0.0.9", 5000), // a longer prefix wins
        (4, "udp", "127.0.0.8", 7000), // the longer prefix's own rule
        (4, "udp", "127.0.0.8", 5000), // falls back to the /8 range
        (4, "udp", "127.0.0.8", 6000), // falls back to the default
    ];
    assert_eq!(
        probe_inside(&sb, &policy, &probes),
        [
            "EPERM", "ok", "ok", "EPERM", "EPERM", "EPERM", "ok", "ok", "EPERM"
        ]
    );
}

#[test]
fn without_connect_rules_nothing_is_denied() {
    let sb = Sandbox::new("open");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = sb.policy("[network]\n");
    let probes = [(4, "tcp", "127.0.0.1", port), (4, "tcp", "127.0.0.2", port)];
    assert_eq!(probe_inside(&sb, &policy, &probes), ["ok", "ok"]);
}

/// A policy that cannot be loaded must stop the container before its
/// command runs. Without CAP_NET_ADMIN and CAP_SYS_ADMIN the kernel refuses
/// the cgroup/connect4 program.
#[test]
fn a_program_the_kernel_refuses_stops_the_container() {
    let sb = Sandbox::new("closed");
    let policy = sb.connect_policy(&["deny any"]);
    let marker = sb.dir.join("ran");
    let out = std::process::Command::new("setpriv")
        .env("PALISADE_ROOT", &sb.root)
        .arg("--bounding-set=-net_admin,-sys_admin")
        .arg(env!("CARGO_BIN_EXE_palisade"))
        .args(["run", "--name", &sb.name, "--policy"])
        .arg(&policy)
        .args(["--", "touch"])
        .arg(&marker)
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("cgroup/connect4"),
        "names the hook: {stderr}"
    );
    assert!(
        stderr.contains("Operation not permitted"),
        "gives the kernel's reason: {stderr}"
    );
    assert!(
        stderr.contains(sb.unified_dir().to_str().unwrap()),
        "names the cgroup: {stderr}"
    );
    assert!(!marker.exists(), "the command must not have run");
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

/// Unconnected UDP: `sendto` an address is judged by the same rules as
/// `connect` (cgroup/sendmsg4 and sendmsg6), IPv4-mapped peers included.
#[test]
fn unconnected_udp_sendto_is_policed() {
    let sb = Sandbox::new("sendto");
    let port = free_udp_port("127.0.0.1");
    let policy = sb.connect_policy(&[&format!("allow udp 127.0.0.1/32:{port}"), "deny any"]);
    let script = format!(
        "import errno, socket\n\
         for fam, addr, p in [(socket.AF_INET, '127.0.0.1', {port}), (socket.AF_INET, '127.0.0.1', {other}), (socket.AF_INET, '127.0.0.2', {port}), (socket.AF_INET6, '::ffff:127.0.0.1', {port}), (socket.AF_INET6, '::ffff:127.0.0.2', {port}), (socket.AF_INET6, '::1', {port})]:\n\
         \x20   s = socket.socket(fam, socket.SOCK_DGRAM)\n\
         \x20   try:\n\
         \x20       s.sendto(b'x', (addr, p)); print('ok')\n\
         \x20   except OSError as e:\n\
         \x20       print(errno.errorcode[e.errno])\n",
        other = if port == u16::MAX { port - 1 } else { port + 1 },
    );
    let out = sb.run(Some(&policy), &["python3", "-c", &script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines, ["ok", "EPERM", "EPERM", "ok", "EPERM", "EPERM"]);
}

/// `sockets = { raw = false, packet = false }`: raw sockets of both
/// families and packet sockets are refused with EPERM (the container has
/// CAP_NET_RAW, so without the policy they are allowed); others are not.
#[test]
fn raw_and_packet_sockets_can_be_refused() {
    let sb = Sandbox::new("sockets");
    let script = "import errno, socket\n\
        for args in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6), (socket.AF_PACKET, socket.SOCK_DGRAM, 0), (socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_UNIX, socket.SOCK_STREAM, 0)]:\n\
        \x20   try:\n\
        \x20       socket.socket(*args).close(); print('ok')\n\
        \x20   except OSError as e:\n\
        \x20       print(errno.errorcode[e.errno])\n";
    let results = |policy: &std::path::Path| {
        let out = sb.run(Some(policy), &["python3", "-c", script]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let open = sb.policy("[network]\n");
    assert_eq!(results(&open), ["ok", "ok", "ok", "ok", "ok"]);
    let closed = sb.policy("[network]\nsockets = { raw = false, packet = false }\n");
    assert_eq!(results(&closed), ["EPERM", "EPERM", "EPERM", "ok", "ok"]);
    let raw_only = sb.policy("[network]\nsockets = { raw = false }\n");
    assert_eq!(results(&raw_only), ["EPERM", "EPERM", "ok", "ok", "ok"]);
}

/// `bind = ["allow tcp 8080", "deny any"]` (with a free port for 8080):
/// binding that port works, the next one is EPERM, UDP on it is EPERM (the
/// rule names tcp), and an ephemeral bind (port 0) is judged by the port
/// the kernel picks (post_bind): here EPERM, while a rule covering the
/// ephemeral range allows it. connect()'s implicit bind is not a bind.
#[test]
fn bind_policy_by_port_and_protocol() {
    let sb = Sandbox::new("bind");
    // Two ports no one listens on (picked by the kernel, so free now).
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let port = free();
    let next = std::iter::repeat_with(free).find(|&p| p != port).unwrap();
    let listener = listen_tcp(&["127.0.0.1"]);
    let script = format!(
        "import errno, socket\n\
         def try_bind(fam, kind, addr, p):\n\
         \x20   s = socket.socket(fam, kind)\n\
         \x20   try:\n\
         \x20       s.bind((addr, p)); print('ok')\n\
         \x20   except OSError as e:\n\
         \x20       print(errno.errorcode[e.errno])\n\
         \x20   s.close()\n\
         T, U, V4, V6 = socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.AF_INET, socket.AF_INET6\n\
         try_bind(V4, T, '127.0.0.1', {port})\n\
         try_bind(V4, T, '127.0.0.1', {next})\n\
         try_bind(V4, U, '127.0.0.1', {port})\n\
         try_bind(V6, T, '::', {port})\n\
         try_bind(V4, T, '127.0.0.1', 0)\n\
         c = socket.create_connection(('127.0.0.1', {listener})); print('connect ok'); c.close()\n"
    );
    let run = |rules: &[&str]| {
        let policy = sb.policy(&format!(
            "[network]\nbind = [{}]\n",
            rules
                .iter()
                .map(|r| format!("{r:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let out = sb.run(Some(&policy), &["python3", "-c", &script]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let only = format!("allow tcp {port}");
    assert_eq!(
        run(&[&only, "deny any"]),
        ["ok", "EPERM", "EPERM", "ok", "EPERM", "connect ok"]
    );
    // The ephemeral range (net.ipv4.ip_local_port_range is within 1024-65535).
    assert_eq!(
        run(&[&only, "allow tcp 1024-65535", "deny any"]),
        ["ok", "ok", "EPERM", "ok", "ok", "connect ok"]
    );
}

/// `policy apply` while a container connects in a loop: every connect is
/// judged by the old rule set or the new one, never by an empty or
/// half-written one. 127.0.0.4 is allowed by both sets through different
/// rules (a /32, then a /8), so any connect judged by a mixture or a gap
/// would be refused; .2 and .3 swap verdicts, so both sets were seen.
#[test]
fn policy_apply_is_atomic_under_a_connect_loop() {
    let sb = Sandbox::new("apply");
    let port = listen_tcp(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let old = sb.dir.join("old.toml");
    let new = sb.dir.join("new.toml");
    std::fs::write(&old, "[network]\nconnect = [\"allow tcp 127.0.0.2/32\", \"allow tcp 127.0.0.4/32\", \"deny any\"]\n").unwrap();
    std::fs::write(
        &new,
        "[network]\nconnect = [\"deny 127.0.0.2/32\", \"allow tcp 127.0.0.0/8\", \"deny any\"]\n",
    )
    .unwrap();
    let script = format!(
        "import errno, socket, time\n\
         end = time.monotonic() + {seconds}\n\
         while time.monotonic() < end:\n\
         \x20   row = []\n\
         \x20   for a in ('127.0.0.2', '127.0.0.3', '127.0.0.4'):\n\
         \x20       s = socket.socket()\n\
         \x20       try:\n\
         \x20           s.connect((a, {port})); row.append('ok')\n\
         \x20       except OSError as e:\n\
         \x20           row.append(errno.errorcode[e.errno])\n\
         \x20       s.close()\n\
         \x20   print(' '.join(row), flush=True)\n",
        // Outlasts the 20 applies below, each a process of its own.
        seconds = 6 * support::slowdown()
    );
    let child = sb
        .palisade()
        .args(["run", "--name", &sb.name, "--policy"])
        .arg(&old)
        .args(["--", "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sb.wait_running();
    for i in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let file = if i % 2 == 0 { &new } else { &old };
        sb.apply(file);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        rows.len() > 50,
        "too few connects to mean anything: {}",
        rows.len()
    );
    let mut seen = std::collections::BTreeSet::new();
    for row in &rows {
        let r: Vec<&str> = row.split(' ').collect();
        assert_eq!(r.len(), 3, "{row}");
        assert_eq!(
            r[2], "ok",
            "127.0.0.4 is allowed by both sets; refused means a gap: {row}"
        );
        for (target, result) in r[..2].iter().enumerate() {
            assert!(["ok", "EPERM"].contains(result), "{row}");
            seen.insert((target, *result));
        }
    }
    assert_eq!(
        seen.len(),
        4,
        "both rule sets were in force at some point: {seen:?}"
    );
}

/// A bad file given to `policy apply` changes nothing, and `policy show`
/// reads what is in force back from the kernel.
#[test]
fn policy_show_reads_the_maps_and_a_bad_apply_changes_nothing() {
    let sb = Sandbox::new("show");
    let policy = sb.connect_policy(&["allow tcp 127.0.0.1/32:8000-8999", "deny any"]);
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--policy"])
        .arg(&policy)
        .args(["--", "sleep", "600"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let before = sb.policy_show();
    let entry = before["connect"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["prefix"] == "127.0.0.1/32")
        .expect("the /32 entry");
    assert_eq!(entry["rules"][0], "allow tcp ports 8000-8999");
    let bad = sb.dir.join("bad.toml");
    std::fs::write(&bad, "[network]\nconnect = [\n  \"allow tcp 127.0.0.1\",\n  \"allow tcp 127.0.0.1:9-1\",\n  \"deny any\",\n]\n").unwrap();
    let out = sb.try_apply(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":4:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The policy is what must not change; the usage counters are the
    // live process's (a `sleep` just started may still be switching).
    let policy_of = |mut shown: serde_json::Value| {
        shown.as_object_mut().unwrap().remove("usage");
        shown
    };
    assert_eq!(
        policy_of(sb.policy_show()),
        policy_of(before),
        "nothing changed"
    );
}

/// `accept = ["allow 127.0.0.1/32", "deny any"]`: a listener in the
/// container accepts a client from 127.0.0.1 while a client bound to
/// 127.0.0.3 never gets through: its SYN is dropped (a timeout, not a
/// reset), and the listener never sees it. UDP datagrams likewise.
#[test]
fn accept_policy_drops_inbound_from_refused_peers() {
    let sb = Sandbox::new("accept");
    let policy = sb.policy("[network]\naccept = [\"allow 127.0.0.1/32\", \"deny any\"]\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!(
        "import socket, select\n\
         t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('0.0.0.0', {port})); t.listen()\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', {port}))\n\
         print('ready', flush=True)\n\
         while True:\n\
         \x20   r, _, _ = select.select([t, u], [], [])\n\
         \x20   if t in r:\n\
         \x20       c, a = t.accept(); print('tcp', a[0], flush=True); c.close()\n\
         \x20   if u in r:\n\
         \x20       d, a = u.recvfrom(100); print('udp', a[0], flush=True)\n"
    );
    let mut container = sb
        .palisade()
        .args(["run", "--name", &sb.name, "--policy"])
        .arg(&policy)
        .args(["--", "python3", "-u", "-c", &server])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(container.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    assert_eq!(tcp_from("127.0.0.1", port), "ok");
    assert_eq!(tcp_from("127.0.0.3", port), "timeout", "dropped, not reset");
    for src in ["127.0.0.3", "127.0.0.1"] {
        let u = std::net::UdpSocket::bind((src, 0)).unwrap();
        u.send_to(b"x", ("127.0.0.1", port)).unwrap();
    }
    // The listener saw exactly the allowed ones, in order.
    assert_eq!(lines.next().unwrap().unwrap(), "tcp 127.0.0.1");
    assert_eq!(lines.next().unwrap().unwrap(), "udp 127.0.0.1");
    // The drops are counted: the refused SYN (and its retransmits) and the
    // refused datagram.
    let shown = sb
        .palisade()
        .args(["policy", "show", &sb.name, "--json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert!(
        shown["counters"]["accept_dropped"].as_u64().unwrap() >= 2,
        "{shown}"
    );
    let pid = sb.wait_running();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let _ = container.wait();
}

/// Connects to 127.0.0.1:`port` from a socket bound to `src` (python:
/// std cannot bind before connecting): "ok", "timeout" or the errno.
fn tcp_from(src: &str, port: u16) -> String {
    let script = format!(
        "import socket\ns = socket.socket(); s.bind(('{src}', 0)); s.settimeout(2)\ntry:\n    s.connect(('127.0.0.1', {port})); print('ok')\nexcept socket.timeout:\n    print('timeout')\nexcept OSError as e:\n    print(e.errno)\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `mode = "audit"`: the verdicts are computed as in enforce mode, nothing
/// is refused, and each would-be refusal is an event.
#[test]
fn audit_mode_refuses_nothing_and_reports_each_would_be_denial() {
    let sb = Sandbox::new("audit");
    let port = listen_tcp(&["127.0.0.1", "127.0.0.2"]);
    let policy = sb.policy("[network]\nmode = \"audit\"\nconnect = [\"allow tcp 127.0.0.1/32\", \"deny any\"]\nsockets = { raw = false }\n");
    let probes = [(4, "tcp", "127.0.0.1", port), (4, "tcp", "127.0.0.2", port)];
    assert_eq!(support::probe_inside(&sb, &policy, &probes), ["ok", "ok"]);
    let events = sb.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["container"], sb.name.as_str());
    assert_eq!(e["verdict"], "audited");
    assert_eq!(e["hook"], "connect");
    assert_eq!(e["protocol"], "tcp");
    assert_eq!(e["address"], "127.0.0.2");
    assert_eq!(e["port"], port);
    assert_eq!(e["comm"], "python3");
}

/// In enforce mode each denial is an event naming the container, process,
/// hook, address and port, and the counters count every denial, even the
/// events the per-container rate limit (1000 a second per CPU) drops.
#[test]
fn denials_are_events_and_counters_count_every_one_despite_the_rate_limit() {
    let sb = Sandbox::new("events");
    let policy = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    let flood = "import socket\n\
        for i in range(3000):\n\
        \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        \x20   try:\n\
        \x20       s.connect(('127.0.0.2', 9))\n\
        \x20   except OSError:\n\
        \x20       pass\n\
        \x20   s.close()\n\
        print('done', flush=True)\n\
        import time; time.sleep(600)\n";
    let started = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--policy"])
        .arg(&policy)
        .args(["--", "python3", "-c", flood])
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let deadline = support::deadline(30);
    while !String::from_utf8_lossy(
        &sb.palisade()
            .args(["logs", &sb.name])
            .output()
            .unwrap()
            .stdout,
    )
    .contains("done")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let shown = sb
        .palisade()
        .args(["policy", "show", &sb.name, "--json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let counters = &shown["counters"];
    assert_eq!(counters["connect_denied"], 3000, "{counters}");
    let events = sb.events();
    let dropped = counters["events_dropped"].as_u64().unwrap();
    assert_eq!(
        events.len() as u64 + dropped,
        3000,
        "every denial is an event or a dropped one"
    );
    assert!(
        dropped > 0,
        "3000 denials in well under a second exceed the limit"
    );
    let e = &events[0];
    assert_eq!(
        (
            e["container"].as_str(),
            e["verdict"].as_str(),
            e["hook"].as_str()
        ),
        (Some(sb.name.as_str()), Some("denied"), Some("connect"))
    );
    assert_eq!(
        (
            e["address"].as_str(),
            e["port"].as_u64(),
            e["protocol"].as_str()
        ),
        (Some("127.0.0.2"), Some(9), Some("udp"))
    );
    assert!(e["pid"].as_u64().unwrap() > 0);
}

/// A 10 000-rule policy loads, enforces (its last rule as well as its
/// first) and shows in `policy show`, entry by entry.
#[test]
fn ten_thousand_rules_load_enforce_and_show() {
    let sb = Sandbox::new("10k");
    let port = free_udp_port("127.0.0.1");
    // 9 999 distinct /32s in 10.0.0.0/8 on port 443, then one that allows
    // 127.0.0.9 on our port, then the default.
    let mut rules: Vec<String> = (0..9999u32)
        .map(|i| {
            format!(
                "allow tcp 10.{}.{}.{}/32:443",
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    rules.push(format!("allow udp 127.0.0.9/32:{port}"));
    rules.push("deny any".to_string());
    let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
    let policy = sb.connect_policy(&refs);
    let started = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--policy"])
        .arg(&policy)
        .args(["--", "sleep", "600"])
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let probes = format!(
        "import errno, socket\nfor a, p in [('127.0.0.9', {port}), ('127.0.0.8', {port})]:\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    try:\n        s.connect((a, p)); print('ok')\n    except OSError as e:\n        print(errno.errorcode[e.errno])\n"
    );
    let out = sb
        .palisade()
        .args(["exec", &sb.name, "--", "python3", "-c", &probes])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["ok", "EPERM"]
    );
    let shown = sb
        .palisade()
        .args(["policy", "show", &sb.name, "--json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let entries = shown["connect"].as_array().unwrap();
    // 9 999 + 1 host entries, and the default's two /0 entries.
    assert_eq!(entries.len(), 10_002);
    assert!(
        entries
            .iter()
            .any(|e| e["prefix"] == "10.0.39.14/32" && e["rules"][0] == "allow tcp port 443")
    );
}

/// `sockets = { deny_families = ["netlink", "inet6"] }`: sockets of the
/// named families are refused with EPERM, others are not.
#[test]
fn named_socket_families_are_refused() {
    let sb = Sandbox::new("families");
    let policy = sb.policy("[network]\nsockets = { deny_families = [\"netlink\", \"inet6\"] }\n");
    let script = "import errno, socket\n\
        for args in [(socket.AF_NETLINK, socket.SOCK_RAW, 0), (socket.AF_INET6, socket.SOCK_STREAM, 0), (socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_UNIX, socket.SOCK_STREAM, 0)]:\n\
        \x20   try:\n\
        \x20       socket.socket(*args).close(); print('ok')\n\
        \x20   except OSError as e:\n\
        \x20       print(errno.errorcode[e.errno])\n";
    let out = sb.run(Some(&policy), &["python3", "-c", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines, ["EPERM", "EPERM", "ok", "ok"]);
}

/// TCP at the edges of a port range: a refused connect is EPERM, an allowed
/// one to a port nobody listens on is ECONNREFUSED (the policy let it out).
#[test]
fn tcp_port_range_edges() {
    let sb = Sandbox::new("edges");
    // Four consecutive ports with no listener on 127.0.0.1 (checked now).
    let base = loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p > 1024
            && p < 65530
            && (p - 1..=p + 3).all(|q| std::net::TcpStream::connect(("127.0.0.1", q)).is_err())
        {
            break p;
        }
    };
    let policy = sb.connect_policy(&[
        &format!("allow tcp 127.0.0.1/32:{}-{}", base, base + 2),
        "deny any",
    ]);
    let probes = [
        (4, "tcp", "127.0.0.1", base - 1),
        (4, "tcp", "127.0.0.1", base),
        (4, "tcp", "127.0.0.1", base + 2),
        (4, "tcp", "127.0.0.1", base + 3),
    ];
    assert_eq!(
        probe_inside(&sb, &policy, &probes),
        ["EPERM", "ECONNREFUSED", "ECONNREFUSED", "EPERM"]
    );
}

/// The root's shared rule maps, opened from their pins: `CONNECT_RULES`
/// and `DEVICE_RULES`.
fn rule_maps(
    root: &std::path::Path,
) -> (
    aya::maps::LpmTrie<aya::maps::MapData, palisade_common::RuleKey, palisade_common::PrefixRules>,
    aya::maps::HashMap<aya::maps::MapData, palisade_common::DeviceKey, u32>,
) {
    use aya::maps::{HashMap, LpmTrie, Map, MapData};
    use palisade_common::map;
    let pins = support::pin_dir(root);
    let object = std::fs::read_dir(&pins)
        .expect("the root's pins")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("obj-"))
        .expect("an object directory");
    let open = |name: &str| {
        Map::from_map_data(MapData::from_pin(object.join(name)).expect("a pinned map"))
            .expect("a map")
    };
    (
        LpmTrie::try_from(open(map::CONNECT_RULES)).expect("the rule trie"),
        HashMap::try_from(open(map::DEVICE_RULES)).expect("devices"),
    )
}

/// The entries of the cgroup `id` in the root's shared rule maps:
/// (address prefixes in `CONNECT_RULES`, device patterns in
/// `DEVICE_RULES`), read straight from the pins.
fn map_entries(root: &std::path::Path, id: u64) -> (usize, usize) {
    use palisade_common::{DeviceKey, RuleKey};
    let (rules, devices) = rule_maps(root);
    let ours = RuleKey::new(id, 0, [0; 4]).cgroup;
    let prefixes = rules
        .keys()
        .flatten()
        .filter(|k| k.data().cgroup == ours)
        .count();
    let ours = DeviceKey::new(id, 0, 0, 0).cgroup;
    let patterns = devices
        .keys()
        .flatten()
        .filter(|k| k.cgroup == ours)
        .count();
    (prefixes, patterns)
}

/// The trie key of the IPv4 prefix `a.b.c.d/bits` in the connect list of
/// cgroup `id`, in generation `generation`.
fn v4_key(
    id: u64,
    generation: u32,
    addr: [u8; 4],
    bits: u32,
) -> aya::maps::lpm_trie::Key<palisade_common::RuleKey> {
    use palisade_common::{FAMILY_V4, GENERATION_BIT, KEY_HEADER_BITS, RuleKey};
    let family = FAMILY_V4 | if generation == 1 { GENERATION_BIT } else { 0 };
    aya::maps::lpm_trie::Key::new(
        KEY_HEADER_BITS + bits,
        RuleKey::new(id, family, [u32::from_ne_bytes(addr), 0, 0, 0]),
    )
}

/// The cgroup id a container recorded.
fn cgroup_id_of(root: &std::path::Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(root.join(name).join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["cgroup_id"].as_u64().expect("a cgroup id")
}

/// A `policy apply` killed after it recorded its policy as pending and
/// wrote part of its rules (here: one prefix, put in the maps by hand,
/// as the interrupted apply would have) leaves nothing behind once the
/// next apply has run: the entries are deleted by the keys of every
/// policy recorded as possibly written, without a search of the shared
/// maps, and the pending record goes.
#[test]
fn an_interrupted_apply_leaves_no_entry_behind() {
    let sb = Sandbox::new("interrupted");
    let first = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    sb.start_sleeping(&["--policy", first.to_str().unwrap()]);
    let id = cgroup_id_of(&sb.root, &sb.name);
    // The interrupted apply: recorded as pending, one entry written in
    // the generation not in force (1; a container starts with 0).
    let state_path = sb.root.join(&sb.name).join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["policies_pending"] =
        serde_json::json!(["[network]\nconnect = [\"allow tcp 10.77.0.0/16\", \"deny any\"]\n"]);
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();
    let (mut rules, _) = rule_maps(&sb.root);
    let stray = v4_key(id, 1, [10, 77, 0, 0], 16);
    let value = palisade_common::PrefixRules {
        count: 1,
        prefix_len: stray.prefix_len() as u16,
        rules: [palisade_common::PortRule {
            port_lo: 0,
            port_hi: u16::MAX,
            proto: palisade_common::PROTO_TCP,
            verdict: palisade_common::VERDICT_ALLOW,
            _pad: [0; 2],
        }; palisade_common::MAX_PORT_RULES],
    };
    rules.insert(&stray, value, 0).unwrap();
    // While it is pending, `policy show` searches and so still tells the
    // truth about the generation in force.
    let shown = sb.policy_show();
    assert_eq!(shown["generation"], 0);
    assert!(
        !shown.to_string().contains("10.77.0.0"),
        "not in force: {shown}"
    );

    let next = sb.connect_policy(&["allow tcp 127.0.0.2/32", "deny any"]);
    sb.apply(&next);
    let shown = sb.policy_show();
    assert_eq!(shown["generation"], 1);
    let prefixes: Vec<&str> = shown["connect"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["prefix"].as_str().unwrap())
        .collect();
    assert!(prefixes.contains(&"127.0.0.2/32"), "{prefixes:?}");
    assert!(
        !prefixes.iter().any(|p| p.starts_with("10.77.")),
        "{prefixes:?}"
    );
    for generation in [0, 1] {
        assert!(
            rules
                .get(&v4_key(id, generation, [10, 77, 0, 0], 16), 0)
                .map(|v| v.prefix_len)
                .ok()
                != Some(stray.prefix_len() as u16),
            "the interrupted apply's entry is gone from generation {generation}"
        );
    }
    // Only the new policy's entries are left: its /32 and the two
    // catch-alls ("any" is an IPv4 and an IPv6 zero-length prefix).
    assert_eq!(map_entries(&sb.root, id).0, 3);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert!(state.get("policies_pending").is_none(), "{state}");
}

/// `policy show` reads a container's entries by key, and still reports
/// only what the kernel holds: an entry deleted behind palisade's back is
/// not shown (a lookup of its key finds the catch-all, which records
/// another prefix length, and the show searches instead).
#[test]
fn policy_show_reports_only_what_the_kernel_holds() {
    let sb = Sandbox::new("showkernel");
    let policy = sb.connect_policy(&[
        "allow tcp 127.0.0.2/32",
        "allow tcp 127.0.0.3/32",
        "deny any",
    ]);
    sb.start_sleeping(&["--policy", policy.to_str().unwrap()]);
    let id = cgroup_id_of(&sb.root, &sb.name);
    let prefixes = |shown: &serde_json::Value| -> Vec<String> {
        shown["connect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["prefix"].as_str().unwrap().to_string())
            .collect()
    };
    let before = prefixes(&sb.policy_show());
    assert!(before.contains(&"127.0.0.2/32".to_string()), "{before:?}");
    let (mut rules, _) = rule_maps(&sb.root);
    rules.remove(&v4_key(id, 0, [127, 0, 0, 2], 32)).unwrap();
    let after = prefixes(&sb.policy_show());
    assert!(!after.contains(&"127.0.0.2/32".to_string()), "{after:?}");
    assert_eq!(after.len(), before.len() - 1, "{before:?} {after:?}");
    // And the kernel judges by what it holds: .2 now falls to `deny any`.
    let port = listen_tcp(&["127.0.0.2", "127.0.0.3"]);
    let script = format!(
        "import socket\nfor a in ('127.0.0.2', '127.0.0.3'):\n    s = socket.socket()\n    try:\n        s.connect((a, {port})); print('ok')\n    except OSError as e:\n        print(e.errno)\n"
    );
    let out = sb.exec(&["python3", "-c", &script]);
    assert_eq!(
        support::ok(&out),
        "1\nok\n",
        "EPERM for .2, connected to .3"
    );
}

/// `rm` takes a container's entries out of the maps every container of
/// the root shares, by key from the policy it recorded (so its time does
/// not grow with the other containers), after a `policy apply` replaced
/// them too; another container's entries stay.
#[test]
fn rm_takes_its_entries_out_of_the_shared_maps_and_leaves_the_others() {
    let a = Sandbox::new("rmkeys");
    let b_name = format!("{}-b", a.name);
    let first = a.policy(
        "[network]\nconnect = [\"allow tcp 127.0.0.1/32\", \"allow tcp 10.1.0.0/16:443\", \"deny any\"]\n\
         [devices]\nallow = [\"c 10:229 rw\"]\n",
    );
    a.start_sleeping(&["--policy", first.to_str().unwrap()]);
    let other = a.dir.join("other.toml");
    std::fs::write(
        &other,
        "[network]\nconnect = [\"allow tcp 10.9.0.0/16\", \"deny any\"]\n",
    )
    .unwrap();
    let out = a
        .palisade()
        .args(["run", "-d", "--name", &b_name, "--policy"])
        .arg(&other)
        .args(["--", "sleep", "600"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::describe(&out));
    let (a_id, b_id) = (
        cgroup_id_of(&a.root, &a.name),
        cgroup_id_of(&a.root, &b_name),
    );
    // Applied: other prefixes and devices, in the other generation.
    let applied = a.dir.join("applied.toml");
    std::fs::write(
        &applied,
        "[network]\nconnect = [\"allow tcp 192.168.0.0/16\", \"allow udp ::1/128:53\", \"allow tcp 172.16.0.0/12\", \"deny any\"]\n\
         [devices]\nallow = [\"b 7:* r\"]\n",
    )
    .unwrap();
    a.apply(&applied);
    let (prefixes, patterns) = map_entries(&a.root, a_id);
    assert!(prefixes >= 4 && patterns >= 10, "{prefixes} {patterns}");
    let b_before = map_entries(&a.root, b_id);
    assert!(b_before.0 >= 2 && b_before.1 >= 9, "{b_before:?}");

    let out = a.palisade().args(["rm", "-f", &a.name]).output().unwrap();
    assert!(out.status.success(), "{}", support::describe(&out));
    assert_eq!(map_entries(&a.root, a_id), (0, 0), "nothing of it is left");
    assert_eq!(map_entries(&a.root, b_id), b_before, "the other's stay");
    let out = a.palisade().args(["rm", "-f", &b_name]).output().unwrap();
    assert!(out.status.success(), "{}", support::describe(&out));
    assert_eq!(map_entries(&a.root, b_id), (0, 0));
}

/// A container that ends after a `policy apply` keeps the applied policy
/// in its recorded state: its monitor does not write back the state it
/// started with.
#[test]
fn an_exited_container_keeps_the_policy_applied_to_it() {
    let sb = Sandbox::new("applykept");
    let first = sb.connect_policy(&["allow tcp 127.0.0.1/32", "deny any"]);
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--policy"])
        .arg(&first)
        .args(["--", "sleep", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::describe(&out));
    sb.wait_running();
    let next = sb.connect_policy(&["allow tcp 127.0.0.2/32", "deny any"]);
    sb.apply(&next);
    let state_path = sb.root.join(&sb.name).join("state.json");
    let deadline = support::deadline(10);
    let state = loop {
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
        if state["status"] == "exited" {
            break state;
        }
        assert!(std::time::Instant::now() < deadline, "it never exited");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let applied = state["recipe"]["applied_policy"]
        .as_str()
        .unwrap_or_else(|| panic!("{state}"));
    assert_eq!(applied, std::fs::read_to_string(&next).unwrap());
}
