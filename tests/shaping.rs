//! Outbound rate limiting, measured: iperf3 from inside a container to a
//! server outside it (on the bridge address for `--net bridge`, on
//! loopback for `--net host`), the server's per-second counts checked
//! against the configured rate. The bound is the mechanism's: the average
//! over 10 s within ±5 %, each second within ±15 %, after a 2 s warm-up.
//!
//! The measurements take the machine's CPUs for seconds at a time, so they
//! run one at a time (a lock), and so nothing else of this file shapes the
//! host's devices while a test checks that their qdiscs are restored.

mod support;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::Sandbox;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The bridge's address on the host (created by palisade for the test's
/// own container).
const GATEWAY: &str = "10.88.0.1";
const WARM_UP: f64 = 2.0;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// An iperf3 server for one test, ended by its pid when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// `iperf3 -s -1` on `addr`, reporting every `interval` seconds in JSON.
    fn start(addr: &str, interval: f64) -> Self {
        let port = TcpListener::bind((addr, 0))
            .expect("free port")
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("iperf3")
            .args(["-s", "-1", "-J", "-B", addr, "-p", &port.to_string()])
            .args(["-i", &interval.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 is installed by `cargo xtask test`");
        Self { child, port }
    }

    /// The per-interval reports once the test is over: (start s, end s, bits).
    fn intervals(mut self) -> Vec<(f64, f64, f64)> {
        let out = self.child.stdout.take().expect("piped");
        let report: Value = serde_json::from_reader(out).expect("iperf3 server JSON");
        let _ = self.child.wait();
        report["intervals"]
            .as_array()
            .expect("intervals")
            .iter()
            .map(|i| {
                let sum = &i["sum"];
                (
                    sum["start"].as_f64().unwrap(),
                    sum["end"].as_f64().unwrap(),
                    sum["bytes"].as_f64().unwrap() * 8.0,
                )
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `iperf3 -c` in the container for `seconds`, retrying while the
/// server is not listening yet. Returns the client and when it started.
fn client(sandbox: &Sandbox, addr: &str, port: u16, seconds: u32) -> (Child, Instant) {
    for _ in 0..50 {
        let started = Instant::now();
        let mut child = sandbox
            .palisade()
            .args(["exec", &sandbox.name, "--", "iperf3", "-c", addr])
            .args(["-p", &port.to_string(), "-t", &seconds.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("palisade exec");
        thread::sleep(Duration::from_millis(200));
        match child.try_wait().expect("wait") {
            Some(status) if !status.success() => thread::sleep(Duration::from_millis(100)),
            _ => return (child, started),
        }
    }
    panic!("the iperf3 server on {addr}:{port} never accepted a client");
}

/// Measures `seconds` of iperf3 from the container to `addr` and asserts
/// the bound at `mbit`.
fn assert_held_to(sandbox: &Sandbox, addr: &str, mbit: f64) {
    let server = Server::start(addr, 1.0);
    let (mut c, _) = client(sandbox, addr, server.port, 12);
    let status = c.wait().expect("client");
    assert!(status.success(), "iperf3 client failed");
    let seconds: Vec<(f64, f64, f64)> = server
        .intervals()
        .into_iter()
        .filter(|&(start, end, _)| start >= WARM_UP && end - start > 0.9)
        .collect();
    assert!(seconds.len() >= 9, "too few full seconds: {seconds:?}");
    let target = mbit * 1e6;
    let rates: Vec<f64> = seconds
        .iter()
        .map(|&(s, e, bits)| bits / (e - s) / target * 100.0)
        .collect();
    let bits: f64 = seconds.iter().map(|s| s.2).sum();
    let time: f64 = seconds.iter().map(|s| s.1 - s.0).sum();
    let average = bits / time / target * 100.0;
    eprintln!("{mbit} Mbit/s to {addr}: average {average:.1} %, each second {rates:.1?} %");
    assert!(
        (95.0..=105.0).contains(&average),
        "average {average:.1} % of {mbit} Mbit/s (seconds: {rates:.1?})"
    );
    for r in &rates {
        assert!(
            (85.0..=115.0).contains(r),
            "a second at {r:.1} % of {mbit} Mbit/s (all: {rates:.1?})"
        );
    }
}

#[test]
fn bridged_container_is_held_to_10_mbit() {
    let _one = serial();
    let sandbox = Sandbox::new("shape-br10");
    sandbox.start_sleeping(&["--net", "bridge", "--egress-rate", "10mbit"]);
    assert_held_to(&sandbox, GATEWAY, 10.0);
}

#[test]
fn bridged_container_is_held_to_100_mbit() {
    let _one = serial();
    let sandbox = Sandbox::new("shape-br100");
    let policy = sandbox.policy("[network]\negress_rate = \"100mbit\"\n");
    sandbox.start_sleeping(&["--net", "bridge", "--policy", policy.to_str().unwrap()]);
    assert_held_to(&sandbox, GATEWAY, 100.0);
}

/// The root qdisc of a host device, as `tc` shows it.
fn root_qdisc(device: &str) -> String {
    let out = Command::new("tc")
        .args(["qdisc", "show", "dev", device, "root"])
        .output()
        .expect("tc");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn host_container_is_held_to_10_mbit_on_loopback_and_the_qdisc_is_restored() {
    let _one = serial();
    let before = root_qdisc("lo");
    {
        let sandbox = Sandbox::new("shape-lo10");
        sandbox.start_sleeping(&["--net", "host", "--egress-rate", "10mbit"]);
        assert!(
            root_qdisc("lo").contains("htb 1a5e:"),
            "palisade's HTB is on lo: {}",
            root_qdisc("lo")
        );
        assert_held_to(&sandbox, "127.0.0.1", 10.0);
        let out = sandbox
            .palisade()
            .args(["rm", "-f", &sandbox.name])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    assert_eq!(root_qdisc("lo"), before, "lo's own qdisc is back");
}

#[test]
fn host_container_is_held_to_100_mbit_on_loopback() {
    let _one = serial();
    let sandbox = Sandbox::new("shape-lo100");
    sandbox.start_sleeping(&["--net", "host", "--egress-rate", "100mbit"]);
    assert_held_to(&sandbox, "127.0.0.1", 100.0);
}

/// Bits per second over the server intervals inside [from, to] (seconds
/// since the client started).
fn rate_between(intervals: &[(f64, f64, f64)], from: f64, to: f64) -> f64 {
    let inside: Vec<_> = intervals
        .iter()
        .filter(|&&(s, e, _)| s >= from && e <= to)
        .collect();
    assert!(!inside.is_empty(), "no interval in [{from}, {to}]");
    let bits: f64 = inside.iter().map(|i| i.2).sum();
    let time: f64 = inside.iter().map(|i| i.1 - i.0).sum();
    bits / time
}

#[test]
fn a_live_rate_change_takes_effect_within_a_second() {
    let _one = serial();
    let sandbox = Sandbox::new("shape-live");
    sandbox.start_sleeping(&["--net", "bridge", "--egress-rate", "10mbit"]);
    let faster = sandbox.dir.join("faster.toml");
    std::fs::write(&faster, "[network]\negress_rate = \"40mbit\"\n").unwrap();
    let unshaped = sandbox.dir.join("unshaped.toml");
    std::fs::write(&unshaped, "[network]\n").unwrap();

    let server = Server::start(GATEWAY, 0.25);
    let (mut c, started) = client(&sandbox, GATEWAY, server.port, 10);
    thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    let faster_asked = started.elapsed().as_secs_f64();
    sandbox.apply(&faster);
    let faster_done = started.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(7).saturating_sub(started.elapsed()));
    let unshaped_asked = started.elapsed().as_secs_f64();
    sandbox.apply(&unshaped);
    let unshaped_done = started.elapsed().as_secs_f64();
    assert!(c.wait().unwrap().success(), "iperf3 client failed");
    let intervals = server.intervals();

    // The server's clock starts when the test does, a little after the
    // client was started: its times are earlier than ours by that much
    // (under a quarter of a second, exec and iperf3's handshake). The
    // windows allow for it: the new rate is measured from 0.75 s after
    // `policy apply` returned on the server's clock, so at most 1 s after
    // on ours, and ends half a second before the next change began.
    let before = rate_between(&intervals, WARM_UP, faster_asked - 0.5) / 1e6;
    let after = rate_between(&intervals, faster_done + 0.75, unshaped_asked - 0.5) / 1e6;
    let free = rate_between(&intervals, unshaped_done + 0.75, 10.0) / 1e6;
    eprintln!("10mbit: {before:.1}, 40mbit a second after: {after:.1}, unshaped: {free:.1}");
    assert!((8.5..=11.5).contains(&before), "before: {before:.1} Mbit/s");
    assert!((34.0..=46.0).contains(&after), "after: {after:.1} Mbit/s");
    assert!(free > 80.0, "with the rate removed: {free:.1} Mbit/s");
}

#[test]
fn policy_show_reports_the_class_and_its_counts() {
    let sandbox = Sandbox::new("shape-show");
    sandbox.start_sleeping(&[
        "--net",
        "bridge",
        "--egress-rate",
        "1.5mbit",
        "--egress-burst",
        "32k",
    ]);
    // Five datagrams of 100 bytes through the class (nothing listens on
    // the port; the datagrams leave all the same).
    let out = sandbox.exec(&[
        "python3",
        "-c",
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(5): s.sendto(b'x' * 100, ('10.88.0.1', 9))",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = sandbox.policy_show();
    let egress = &shown["egress"];
    assert_eq!(egress["rate"], "1.5mbit");
    assert_eq!(egress["rate_bits_per_second"], 1_500_000);
    assert_eq!(egress["burst_bytes"], 32 * 1024);
    assert!(egress["class"].as_str().unwrap().starts_with("1a5e:"));
    let devices = egress["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["device"], "eth0");
    // The five datagrams, with their UDP, IP and Ethernet headers, at least
    // (the kernel may send a neighbour solicitation or two of its own).
    assert!(devices[0]["packets"].as_u64().unwrap() >= 5, "{devices:?}");
    assert!(
        devices[0]["bytes"].as_u64().unwrap() >= 5 * (100 + 8 + 20 + 14),
        "{devices:?}"
    );
}

#[test]
fn bad_rates_are_refused_and_nothing_is_created() {
    let sandbox = Sandbox::new("shape-bad");
    for (flags, expect) in [
        (vec!["--egress-rate", "10mbps"], "invalid rate"),
        (vec!["--egress-rate", "1kbit"], "out of range"),
        (vec!["--egress-burst", "64k"], "needs --egress-rate"),
        (
            vec!["--egress-rate", "10mbit", "--egress-burst", "100"],
            "below",
        ),
        (
            vec!["--egress-rate", "10mbit", "--net", "none"],
            "nothing leaves",
        ),
    ] {
        let out = sandbox
            .palisade()
            .args(["run", "--name", &sandbox.name])
            .args(&flags)
            .args(["--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(expect), "{flags:?}: {err}");
        assert!(!sandbox.root.join(&sandbox.name).exists());
        assert!(sandbox.leftover_cgroups().is_empty());
    }
    let policy = sandbox.policy("[network]\negress_burst = \"64k\"\n");
    let out = sandbox.run(Some(&policy), &["true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":2: network.egress_burst needs network.egress_rate"),
        "{err}"
    );
}
