//! The Prometheus exposition of a stats snapshot: conventional names
//! (`palisade_container_…`, base units, `_total` on counters), a
//! `container` label on every series, HELP and TYPE lines, in the text
//! format 0.0.4 (written by the `prometheus` crate).

use prometheus::{
    CounterVec, Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::ContainerStats;
use crate::runtime::Status;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric's name and help, in one place (docs/cli.md lists them).
pub const METRICS: &[(&str, &str)] = &[
    (
        "palisade_containers",
        "Containers in the state root, by status.",
    ),
    (
        "palisade_container_cpu_seconds_total",
        "CPU time of the container's tasks (its cgroup's CPU controller).",
    ),
    (
        "palisade_container_context_switches_total",
        "Context switches of the container's threads, voluntary and involuntary.",
    ),
    (
        "palisade_container_page_faults_total",
        "Page faults of the container's tasks, minor and major (its memory controller).",
    ),
    (
        "palisade_container_network_transmit_bytes_total",
        "IP bytes sent by the container's sockets.",
    ),
    (
        "palisade_container_network_receive_bytes_total",
        "IP bytes received by the container's sockets.",
    ),
    (
        "palisade_container_network_transmit_packets_total",
        "IP packets sent by the container's sockets.",
    ),
    (
        "palisade_container_network_receive_packets_total",
        "IP packets received by the container's sockets.",
    ),
    (
        "palisade_container_connects_allowed_total",
        "connect() calls the policy allowed.",
    ),
    (
        "palisade_container_binds_allowed_total",
        "bind() calls the policy allowed.",
    ),
    (
        "palisade_container_denied_total",
        "Calls, packets and device accesses the policy refused, by hook.",
    ),
    (
        "palisade_container_audited_total",
        "Refusals audit mode reported instead of enforcing.",
    ),
    (
        "palisade_container_events_dropped_total",
        "Refusal events the rate limit or a full ring buffer dropped.",
    ),
    (
        "palisade_container_memory_usage_bytes",
        "Memory in use (cgroup).",
    ),
    (
        "palisade_container_memory_peak_bytes",
        "Most memory ever in use (cgroup).",
    ),
    (
        "palisade_container_memory_limit_bytes",
        "Memory hard limit (absent when unlimited).",
    ),
    (
        "palisade_container_memory_high_events_total",
        "Times the container went over its soft memory limit (cgroup v2).",
    ),
    (
        "palisade_container_oom_kills_total",
        "Processes of the container the OOM killer ended.",
    ),
    (
        "palisade_container_swap_usage_bytes",
        "Swap in use (cgroup).",
    ),
    (
        "palisade_container_memory_stat_bytes",
        "Memory by kind, from the cgroup's memory.stat (whole subtree).",
    ),
    (
        "palisade_container_major_page_faults_total",
        "Page faults that read from storage (cgroup memory.stat pgmajfault).",
    ),
    ("palisade_container_pids", "Tasks in the container."),
    (
        "palisade_container_pids_limit",
        "Task limit (absent when unlimited).",
    ),
    (
        "palisade_container_cgroup_cpu_seconds_total",
        "CPU time as the cgroup CPU controller counts it.",
    ),
    (
        "palisade_container_cpu_throttled_periods_total",
        "CFS periods in which the container was throttled.",
    ),
    (
        "palisade_container_cpu_throttled_seconds_total",
        "Time the container was throttled.",
    ),
    (
        "palisade_container_io_read_bytes_total",
        "Bytes read from block devices.",
    ),
    (
        "palisade_container_io_write_bytes_total",
        "Bytes written to block devices.",
    ),
    (
        "palisade_container_io_read_operations_total",
        "Block device reads.",
    ),
    (
        "palisade_container_io_write_operations_total",
        "Block device writes.",
    ),
    (
        "palisade_container_egress_rate_bits_per_second",
        "The configured outbound rate limit.",
    ),
    (
        "palisade_container_egress_sent_bytes_total",
        "Bytes the outbound shaper sent (link layer).",
    ),
    (
        "palisade_container_egress_sent_packets_total",
        "Packets the outbound shaper sent.",
    ),
    (
        "palisade_container_egress_delayed_total",
        "Times a packet found the container over its rate and waited.",
    ),
    (
        "palisade_container_egress_dropped_packets_total",
        "Packets the outbound shaper dropped (queue full).",
    ),
];

fn help(name: &str) -> &'static str {
    METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, h)| h)
}

/// Registers and fills the metric families of one snapshot.
struct Families {
    registry: Registry,
}

impl Families {
    fn counter(&self, name: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help(name)), labels).expect("valid metric");
        self.registry
            .register(Box::new(c.clone()))
            .expect("unique metric");
        c
    }

    fn seconds(&self, name: &str) -> CounterVec {
        let c = CounterVec::new(Opts::new(name, help(name)), &["container"]).expect("valid metric");
        self.registry
            .register(Box::new(c.clone()))
            .expect("unique metric");
        c
    }

    fn gauge(&self, name: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help(name)), labels).expect("valid metric");
        self.registry
            .register(Box::new(g.clone()))
            .expect("unique metric");
        g
    }

    fn float_gauge(&self, name: &str) -> GaugeVec {
        let g = GaugeVec::new(Opts::new(name, help(name)), &["container"]).expect("valid metric");
        self.registry
            .register(Box::new(g.clone()))
            .expect("unique metric");
        g
    }
}

/// The snapshot in the Prometheus text format.
pub fn render(all: &[ContainerStats]) -> String {
    let f = Families {
        registry: Registry::new(),
    };
    let by_status = f.gauge("palisade_containers", &["status"]);
    for status in [
        Status::Creating,
        Status::Created,
        Status::Running,
        Status::Exited,
        Status::Dead,
    ] {
        let n = all.iter().filter(|s| s.status == status).count();
        by_status
            .with_label_values(&[&status.to_string()])
            .set(n as i64);
    }
    let c = |name| f.counter(name, &["container"]);
    let cpu = f.seconds("palisade_container_cpu_seconds_total");
    let switches = c("palisade_container_context_switches_total");
    let faults = c("palisade_container_page_faults_total");
    let family = &["container", "family"];
    let tx_bytes = f.counter("palisade_container_network_transmit_bytes_total", family);
    let rx_bytes = f.counter("palisade_container_network_receive_bytes_total", family);
    let tx_packets = f.counter("palisade_container_network_transmit_packets_total", family);
    let rx_packets = f.counter("palisade_container_network_receive_packets_total", family);
    let connects = c("palisade_container_connects_allowed_total");
    let binds = c("palisade_container_binds_allowed_total");
    let denied = f.counter("palisade_container_denied_total", &["container", "hook"]);
    let audited = c("palisade_container_audited_total");
    let dropped_events = c("palisade_container_events_dropped_total");

    let g = |name| f.gauge(name, &["container"]);
    let memory = g("palisade_container_memory_usage_bytes");
    let memory_peak = g("palisade_container_memory_peak_bytes");
    let memory_limit = g("palisade_container_memory_limit_bytes");
    let memory_high = c("palisade_container_memory_high_events_total");
    let oom_kills = c("palisade_container_oom_kills_total");
    let swap = g("palisade_container_swap_usage_bytes");
    let memory_stat = f.gauge(
        "palisade_container_memory_stat_bytes",
        &["container", "kind"],
    );
    let major_faults = c("palisade_container_major_page_faults_total");
    let pids = g("palisade_container_pids");
    let pids_limit = g("palisade_container_pids_limit");
    let cgroup_cpu = f.seconds("palisade_container_cgroup_cpu_seconds_total");
    let throttled = c("palisade_container_cpu_throttled_periods_total");
    let throttled_time = f.seconds("palisade_container_cpu_throttled_seconds_total");
    let io = [
        c("palisade_container_io_read_bytes_total"),
        c("palisade_container_io_write_bytes_total"),
        c("palisade_container_io_read_operations_total"),
        c("palisade_container_io_write_operations_total"),
    ];
    let egress_rate = f.float_gauge("palisade_container_egress_rate_bits_per_second");
    let egress_bytes = c("palisade_container_egress_sent_bytes_total");
    let egress_packets = c("palisade_container_egress_sent_packets_total");
    let egress_delayed = c("palisade_container_egress_delayed_total");
    let egress_dropped = c("palisade_container_egress_dropped_packets_total");

    for s in all {
        let name = s.name.as_str();
        let one = &[name];
        if let Some(u) = &s.usage {
            cpu.with_label_values(one).inc_by(u.cpu_ns as f64 / 1e9);
            switches.with_label_values(one).inc_by(u.context_switches);
            faults.with_label_values(one).inc_by(u.page_faults);
            for (vec, counts) in [
                (&tx_bytes, u.tx_bytes),
                (&rx_bytes, u.rx_bytes),
                (&tx_packets, u.tx_packets),
                (&rx_packets, u.rx_packets),
            ] {
                vec.with_label_values(&[name, "ipv4"]).inc_by(counts.ipv4);
                vec.with_label_values(&[name, "ipv6"]).inc_by(counts.ipv6);
            }
            connects.with_label_values(one).inc_by(u.connects_allowed);
            binds.with_label_values(one).inc_by(u.binds_allowed);
        }
        if let Some(d) = &s.denied {
            for (hook, n) in [
                ("connect", d.connect_denied),
                ("sendmsg", d.sendmsg_denied),
                ("bind", d.bind_denied),
                ("accept", d.accept_dropped),
                ("sock_create", d.sockets_refused),
                ("device", d.devices_denied),
            ] {
                denied.with_label_values(&[name, hook]).inc_by(n);
            }
            audited.with_label_values(one).inc_by(d.audited);
            dropped_events
                .with_label_values(one)
                .inc_by(d.events_dropped);
        }
        if let Some(cg) = &s.cgroup {
            let set = |vec: &IntGaugeVec, v: Option<u64>| {
                if let Some(v) = v {
                    vec.with_label_values(one).set(v as i64);
                }
            };
            let add = |vec: &IntCounterVec, v: Option<u64>| {
                if let Some(v) = v {
                    vec.with_label_values(one).inc_by(v);
                }
            };
            set(&memory, cg.memory_bytes);
            set(&memory_peak, cg.memory_peak_bytes);
            set(&memory_limit, cg.memory_limit_bytes);
            add(&memory_high, cg.memory_high_events);
            add(&oom_kills, cg.oom_kills);
            set(&swap, cg.swap_bytes);
            if let Some(m) = &cg.memory_stat {
                for (kind, v) in [
                    ("active_anon", m.active_anon_bytes),
                    ("inactive_anon", m.inactive_anon_bytes),
                    ("active_file", m.active_file_bytes),
                    ("inactive_file", m.inactive_file_bytes),
                    ("page_cache", m.page_cache_bytes),
                    ("shmem", m.shmem_bytes),
                    ("mapped_file", m.mapped_file_bytes),
                ] {
                    memory_stat.with_label_values(&[name, kind]).set(v as i64);
                }
                major_faults.with_label_values(one).inc_by(m.major_faults);
            }
            set(&pids, cg.pids);
            set(&pids_limit, cg.pids_limit);
            if let Some(ns) = cg.cpu_usage_ns {
                cgroup_cpu.with_label_values(one).inc_by(ns as f64 / 1e9);
            }
            add(&throttled, cg.cpu_throttled_periods);
            if let Some(ns) = cg.cpu_throttled_ns {
                throttled_time
                    .with_label_values(one)
                    .inc_by(ns as f64 / 1e9);
            }
            for (vec, v) in io.iter().zip([
                cg.io_read_bytes,
                cg.io_write_bytes,
                cg.io_read_ops,
                cg.io_write_ops,
            ]) {
                add(vec, v);
            }
        }
        if let Some(e) = &s.egress {
            egress_rate
                .with_label_values(one)
                .set(e.rate_bits_per_second as f64);
            egress_bytes.with_label_values(one).inc_by(e.bytes);
            egress_packets.with_label_values(one).inc_by(e.packets);
            egress_delayed.with_label_values(one).inc_by(e.delayed);
            egress_dropped.with_label_values(one).inc_by(e.dropped);
        }
    }
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&f.registry.gather(), &mut text)
        .expect("text encoding into memory");
    String::from_utf8(text).expect("the encoder writes UTF-8")
}
