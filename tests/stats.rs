//! `palisade stats` and `palisade agent --metrics-addr`: what a running
//! container reports, what an exited or removed one does, and a real
//! Prometheus text parser reading the agent's `/metrics` fetched with curl.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use serde_json::Value;
use support::{Sandbox, agent::Agent};

/// `palisade stats --json [NAME…]`, parsed; panics unless it succeeds.
fn stats_json(sb: &Sandbox, names: &[&str]) -> Vec<Value> {
    let out = sb
        .palisade()
        .args(["stats", "--json"])
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A container refused one connect and one mknod (of /dev/port's numbers,
/// not in the default device list), running `sleep`, 16 MiB of memory
/// allowed and at most 32 tasks.
fn denied_once(sb: &Sandbox) {
    let policy = sb.connect_policy(&["deny any"]);
    sb.start_sleeping(&[
        "--policy",
        policy.to_str().unwrap(),
        "--memory",
        "16M",
        "--pids",
        "32",
    ]);
    let out = sb.exec(&[
        "python3",
        "-c",
        "import os, socket, stat\ntry:\n    socket.create_connection(('127.0.0.1', 9), 1)\nexcept PermissionError:\n    print('connect denied')\ntry:\n    os.mknod('/tmp/port', 0o600 | stat.S_IFCHR, os.makedev(1, 4))\nexcept PermissionError:\n    print('mknod denied')",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "connect denied\nmknod denied",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stats_of_a_running_container_report_cgroup_and_denials() {
    let sb = Sandbox::new("stats-run");
    denied_once(&sb);
    let all = stats_json(&sb, &[&sb.name]);
    assert_eq!(all.len(), 1);
    let s = &all[0];
    assert_eq!(s["name"], sb.name.as_str());
    assert_eq!(s["status"], "running");
    assert!(s["pid"].as_i64().unwrap() > 0);
    assert!(s["cpu_percent"].as_f64().is_some(), "{s}");
    assert_eq!(s["denied"]["connect_denied"], 1, "{s}");
    assert_eq!(s["denied"]["devices_denied"], 1, "{s}");
    let cg = &s["cgroup"];
    assert_eq!(cg["memory_limit_bytes"], 16 << 20, "{cg}");
    assert_eq!(cg["pids_limit"], 32, "{cg}");
    assert!(cg["pids"].as_u64().unwrap() >= 1, "{cg}");
    assert!(cg["memory_bytes"].as_u64().unwrap() > 0, "{cg}");
    assert!(s["usage"].is_object(), "{s}");

    // The table names it, with its limit.
    let out = sb.palisade().args(["stats", &sb.name]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(table.starts_with("NAME"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&sb.name))
        .expect("a row");
    assert!(row.contains("/ 16.0MiB"), "{row}");
    // NAME STATUS CPU% MEM / LIMIT RX / TX PIDS DENIED SHAPED
    assert_eq!(
        row.split_whitespace().nth(10),
        Some("2"),
        "two denials: {row}"
    );
}

#[test]
fn stats_of_exited_and_removed_containers_behave_as_documented() {
    let sb = Sandbox::new("stats-gone");
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let wait = sb.palisade().args(["wait", &sb.name]).output().unwrap();
    assert!(wait.status.success(), "wait: {}", support::describe(&wait));
    // Exited: listed, with nothing measured (the counters went with it).
    let all = stats_json(&sb, &[&sb.name]);
    let s = &all[0];
    assert_eq!(s["status"], "exited");
    for field in ["pid", "cpu_percent", "usage", "denied", "cgroup", "egress"] {
        assert!(s[field].is_null(), "{field} of an exited container: {s}");
    }
    // Removed: an error naming it, exit status 125.
    let rm = sb.palisade().args(["rm", &sb.name]).output().unwrap();
    assert!(rm.status.success());
    let out = sb
        .palisade()
        .args(["stats", "--json", &sb.name])
        .output()
        .unwrap();
    // An unknown container is bad input, as every command reports it.
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no container named"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

/// `palisade agent` serving metrics on a free port.
fn metrics_agent(sb: &Sandbox) -> Agent {
    Agent::start(sb, &["--metrics-addr", "127.0.0.1:0"])
}

/// One GET with curl: the answer's head and body.
fn get(url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", url])
        .output()
        .expect("curl is installed by `cargo xtask test`");
    assert!(out.status.success(), "curl {url} failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_parse_with_a_prometheus_parser_and_hold_the_containers_series() {
    let sb = Sandbox::new("metrics");
    denied_once(&sb);
    let agent = metrics_agent(&sb);
    let (head, body) = get(&agent.metrics_url());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for family in [
        "palisade_container_cpu_seconds_total",
        "palisade_container_network_transmit_bytes_total",
        "palisade_container_denied_total",
        "palisade_container_memory_usage_bytes",
    ] {
        assert!(body.contains(&format!("# HELP {family} ")), "{family}");
        assert!(body.contains(&format!("# TYPE {family} ")), "{family}");
    }

    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text parser reads /metrics");
    let value = |metric: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.get("container") == Some(sb.name.as_str())
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value("palisade_container_denied_total", &[("hook", "connect")]),
        Some(1.0)
    );
    assert_eq!(
        value("palisade_container_denied_total", &[("hook", "device")]),
        Some(1.0)
    );
    assert_eq!(
        value("palisade_container_denied_total", &[("hook", "bind")]),
        Some(0.0)
    );
    assert_eq!(
        value("palisade_container_memory_limit_bytes", &[]),
        Some(f64::from(16 << 20))
    );
    assert!(value("palisade_container_pids", &[]).unwrap() >= 1.0);
    assert!(value("palisade_container_cpu_seconds_total", &[]).is_some());
    assert!(
        value(
            "palisade_container_network_transmit_bytes_total",
            &[("family", "ipv4")]
        )
        .is_some()
    );
    let types = &scrape.docs;
    assert!(
        types.contains_key("palisade_container_denied_total"),
        "HELP text for the denials"
    );

    // Anything else is a 404.
    let (head, _) = get(&agent.metrics_url().replace("/metrics", "/nothing"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn the_agent_refuses_an_address_it_cannot_use() {
    let sb = Sandbox::new("agent-bad");
    let out = sb
        .palisade()
        .args(["agent", "--metrics-addr", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "not an ADDR:PORT");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sb
        .palisade()
        .args(["agent", "--metrics-addr", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The counters live in pinned maps: a running container's figures are
/// the same from a second CLI and from a restarted agent.
#[test]
fn counters_survive_the_cli_and_agent_restarts() {
    let sb = Sandbox::new("survive");
    sb.start_sleeping(&[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut sink).unwrap();
        sink.len()
    });
    let out = sb
        .palisade()
        .args(["exec", &sb.name, "--", "python3", "-c"])
        .arg(format!(
            "import socket\ns = socket.create_connection(('127.0.0.1', {port}))\ns.sendall(b'x' * 100000)\ns.close()"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(reader.join().unwrap(), 100_000);

    let sent = |s: &Value| s["usage"]["tx_bytes"]["ipv4"].as_u64().unwrap();
    let first = sent(&stats_json(&sb, &[&sb.name])[0]);
    assert!(first >= 100_000, "{first}");
    assert_eq!(
        sent(&stats_json(&sb, &[&sb.name])[0]),
        first,
        "a second CLI"
    );
    for _ in 0..2 {
        let agent = metrics_agent(&sb);
        let (_, body) = get(&agent.metrics_url());
        let line = format!(
            "palisade_container_network_transmit_bytes_total{{container=\"{}\",family=\"ipv4\"}} {first}",
            sb.name
        );
        assert!(body.lines().any(|l| l == line), "{line} in:\n{body}");
    }
}

/// `--watch --json` prints one array per refresh, about a second apart,
/// until it is ended.
#[test]
fn watch_refreshes_until_ended() {
    let sb = Sandbox::new("watch");
    sb.start_sleeping(&[]);
    let mut child = sb
        .palisade()
        .args(["stats", "--watch", "--json", &sb.name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = std::time::Instant::now();
    for _ in 0..2 {
        let line = lines.next().expect("a refresh").unwrap();
        let all: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(all[0]["name"], sb.name.as_str());
        assert_eq!(all[0]["status"], "running");
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(1900));
    let _ = child.kill();
    let _ = child.wait();
}

/// Where a container's memory is, from its memory controller: 24 MiB
/// written to a memfd are shared memory (and page cache), 32 MiB touched
/// in a bytearray anonymous memory, in `stats --json` and in `/metrics`.
#[test]
fn memory_detail_shows_shared_and_anonymous_memory() {
    let sb = Sandbox::new("memdetail");
    let script = "import os, time\n\
                  fd = os.memfd_create('detail')\n\
                  os.write(fd, b'x' * (24 << 20))\n\
                  anon = bytearray(32 << 20)\n\
                  for i in range(0, len(anon), 4096):\n\
                  \x20   anon[i] = 1\n\
                  print('ready', flush=True)\n\
                  time.sleep(600)\n";
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--memory", "256M", "--"])
        .args(["python3", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::describe(&out));
    const MIB: u64 = 1 << 20;
    // Until the workload has written and touched it all.
    let deadline = support::deadline(20);
    loop {
        let logs = sb.palisade().args(["logs", &sb.name]).output().unwrap();
        if String::from_utf8_lossy(&logs.stdout).contains("ready") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workload never got ready: {}",
            support::describe(&logs)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let all = stats_json(&sb, &[&sb.name]);
    let m = all[0]["cgroup"]["memory_stat"].clone();
    let field = |name: &str| m[name].as_u64().unwrap_or_else(|| panic!("{name} in {m}"));
    assert!(field("shmem_bytes") >= 24 * MIB, "{m}");
    assert!(
        field("page_cache_bytes") >= 24 * MIB,
        "shmem is page cache: {m}"
    );
    // Shared memory is swap-backed: it sits on the anonymous lists.
    assert!(
        field("active_anon_bytes") + field("inactive_anon_bytes") >= 56 * MIB,
        "{m}"
    );
    assert!(field("mapped_file_bytes") < 256 * MIB, "{m}");
    let _ = field("active_file_bytes") + field("inactive_file_bytes") + field("major_faults");

    let agent = metrics_agent(&sb);
    let (_, body) = get(&agent.metrics_url());
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text parser reads /metrics");
    let shmem = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "palisade_container_memory_stat_bytes"
                && s.labels.get("container") == Some(sb.name.as_str())
                && s.labels.get("kind") == Some("shmem")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        });
    assert!(shmem.is_some_and(|v| v >= (24 * MIB) as f64), "{shmem:?}");
    assert!(
        body.contains("palisade_container_major_page_faults_total{container=\""),
        "the major fault counter"
    );
}
