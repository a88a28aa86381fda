//! What a container sees of itself in `/proc` and `/sys`: the files
//! `free`, `top`, `uptime`, `nproc` and language runtimes read to size
//! heaps and thread pools, rendered for one container from its cgroup's
//! figures, with the host's file as the template. The renderers are pure
//! (text and figures in, text out); [`render`] reads the figures and the
//! host's files at the moment a file is read, for the agent's filesystem
//! (`daemon::view`) to serve.

use std::{io, path::PathBuf};

use crate::{
    cgroups::{
        self, MemoryDetail,
        stats::MemoryFiles,
        view::{CpuTimes, DeviceIo, Dirs},
    },
    spec::{CpuQuota, ViewFile},
};

/// The kernel's clock ticks per second in `/proc` files (`USER_HZ`, fixed
/// at 100 in the x86 and arm64 ABIs).
const TICKS_PER_SECOND: u64 = 100;

/// The container a view is rendered for.
#[derive(Debug)]
pub struct Subject {
    /// Its cgroup directories (every hierarchy's, v2 first).
    pub cgroups: Dirs,
    /// Its first process, as the host numbers it: the container started
    /// when it did.
    pub pid: i32,
    /// Its memory controller's directory, found once.
    memory: Option<MemoryFiles>,
}

impl Subject {
    pub fn new(cgroups: Vec<PathBuf>, pid: i32) -> Self {
        let memory = MemoryFiles::find(&cgroups);
        Self {
            cgroups: Dirs::new(cgroups),
            pid,
            memory,
        }
    }
}

/// A container's tasks now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tasks {
    /// Its threads running (or runnable), in uninterruptible sleep, and
    /// all of them: the first two are what a load average counts.
    pub running: usize,
    pub blocked: usize,
    pub threads: usize,
    /// The newest of its thread ids, as the container numbers them.
    pub newest_pid: i32,
}

/// The tasks of the container whose cgroup directories are `dirs`, from
/// each thread's state in `/proc` now.
pub fn tasks(dirs: &Dirs) -> Tasks {
    let tids = cgroups::view::threads(dirs);
    let mut t = Tasks {
        threads: tids.len(),
        ..Tasks::default()
    };
    for tid in &tids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/stat")) else {
            continue;
        };
        match stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
        {
            Some('R') => t.running += 1,
            Some('D') => t.blocked += 1,
            _ => {}
        }
    }
    // Its own number for the newest: the last of NSpid's ids.
    t.newest_pid = tids
        .iter()
        .max()
        .and_then(|tid| std::fs::read_to_string(format!("/proc/{tid}/status")).ok())
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
            line.split_whitespace().last()?.parse().ok()
        })
        .unwrap_or(0);
    t
}

/// The text of `file` for `subject`, from its cgroup and the host's
/// files now. An error if a figure it needs cannot be read (the
/// container is gone, say): never a made-up one.
///
/// `averages` is the container's load over 1, 5 and 15 minutes, kept by
/// whoever serves the view (see [`next_load`]).
pub fn render(file: ViewFile, subject: &Subject, averages: [f64; 3]) -> io::Result<String> {
    let host = |path: &str| std::fs::read_to_string(path);
    let dirs = &subject.cgroups;
    Ok(match file {
        ViewFile::Meminfo => {
            let host = host("/proc/meminfo")?;
            meminfo(&host, &memory_view(&host, subject)?)
        }
        ViewFile::Cpuinfo => cpuinfo(&host("/proc/cpuinfo")?, &visible(dirs)?),
        ViewFile::CpusOnline => cpus_online(visible(dirs)?.len()),
        ViewFile::Uptime => {
            // Its nested containers' time is its own too.
            let used: u64 = cgroups::view::cpu_times(dirs)
                .iter()
                .map(|(_, t)| t.user_ns + t.system_ns)
                .sum();
            uptime(
                since_start(subject.pid)?,
                visible(dirs)?.len(),
                used as f64 / 1e9,
            )
        }
        ViewFile::Stat => {
            let visible = visible(dirs)?;
            let times = cgroups::view::cpu_times(dirs);
            if times.is_empty() {
                return Err(missing("CPU time"));
            }
            stat(
                &host("/proc/stat")?,
                &per_visible_cpu(&visible, &times),
                since_start(subject.pid)?,
                &tasks(dirs),
            )
        }
        ViewFile::Loadavg => loadavg(averages, &tasks(dirs)),
        ViewFile::Diskstats => {
            diskstats(&host("/proc/diskstats")?, &cgroups::view::device_io(dirs))
        }
        ViewFile::Swaps => {
            let m = memory_view(&host("/proc/meminfo")?, subject)?;
            swaps(m.swap_total, m.swap_used)
        }
    })
}

fn missing(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("the container's {what} cannot be read"),
    )
}

/// The value in kB of `key` in the text of a `/proc/meminfo`, in bytes.
fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The container's memory now: its limit (at most the host's memory),
/// use, detail and swap (at most the host's).
fn memory_view(host: &str, subject: &Subject) -> io::Result<MemoryView> {
    let host_total = meminfo_bytes(host, "MemTotal").ok_or_else(|| missing("host memory"))?;
    let host_swap = meminfo_bytes(host, "SwapTotal").unwrap_or(0);
    let m = subject
        .memory
        .as_ref()
        .map(MemoryFiles::read)
        .unwrap_or_default();
    Ok(MemoryView {
        total: m.limit.unwrap_or(u64::MAX).min(host_total),
        used: m.used.ok_or_else(|| missing("memory use"))?,
        detail: m.detail.unwrap_or_default(),
        swap_total: m.swap_limit.unwrap_or(u64::MAX).min(host_swap),
        swap_used: m.swap_used.unwrap_or(0),
    })
}

/// The host CPUs the container sees (see [`visible_cpus`]).
fn visible(dirs: &Dirs) -> io::Result<Vec<u32>> {
    let allowed = match cgroups::view::cpus(dirs) {
        Some(cpus) => cpus,
        None => cgroups::view::expand_id_list(&std::fs::read_to_string(
            "/sys/devices/system/cpu/online",
        )?)
        .ok_or_else(|| missing("CPU list"))?,
    };
    Ok(visible_cpus(&allowed, cgroups::view::cpu_quota(dirs)))
}

/// Seconds since the process `pid` started (the host's uptime less its
/// start time, both on the boot clock).
fn since_start(pid: i32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Field 22, starttime; the fields after the name start at field 3.
    let start_ticks: u64 = after_name
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| missing("start time"))?;
    let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")?
        .split_whitespace()
        .next()
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| missing("host uptime"))?;
    Ok((host_uptime - start_ticks as f64 / TICKS_PER_SECOND as f64).max(0.0))
}

/// The container's CPU time on each visible CPU: the kernel's per-CPU
/// figure where it keeps one, else its total shared evenly among them.
pub fn per_visible_cpu(visible: &[u32], times: &[(Option<u32>, CpuTimes)]) -> Vec<CpuTimes> {
    if let [(None, total)] = times {
        let n = visible.len().max(1) as u64;
        return visible
            .iter()
            .map(|_| CpuTimes {
                user_ns: total.user_ns / n,
                system_ns: total.system_ns / n,
            })
            .collect();
    }
    visible
        .iter()
        .map(|cpu| {
            times
                .iter()
                .find(|(c, _)| *c == Some(*cpu))
                .map(|(_, t)| *t)
                .unwrap_or_default()
        })
        .collect()
}

/// `/proc/stat`: a `cpu` line and one per visible CPU (numbered from 0)
/// with the container's user and system time and, as idle, the rest of
/// its time since it started; `procs_running` and `procs_blocked` are
/// its own. The host's other lines (interrupts, context switches, boot
/// time, forks) stay, so that `ps` still dates processes.
pub fn stat(host: &str, cpus: &[CpuTimes], since_start: f64, load: &Tasks) -> String {
    let ticks = |ns: u64| ns / (1_000_000_000 / TICKS_PER_SECOND);
    let elapsed = (since_start * TICKS_PER_SECOND as f64) as u64;
    let line = |label: &str, user: u64, system: u64, idle: u64| {
        format!("{label} {user} 0 {system} {idle} 0 0 0 0 0 0\n")
    };
    let rows: Vec<(u64, u64, u64)> = cpus
        .iter()
        .map(|t| {
            let (user, system) = (ticks(t.user_ns), ticks(t.system_ns));
            (user, system, elapsed.saturating_sub(user + system))
        })
        .collect();
    let sum = |f: fn(&(u64, u64, u64)) -> u64| rows.iter().map(f).sum::<u64>();
    let mut out = line("cpu ", sum(|r| r.0), sum(|r| r.1), sum(|r| r.2));
    for (i, (user, system, idle)) in rows.iter().enumerate() {
        out.push_str(&line(&format!("cpu{i}"), *user, *system, *idle));
    }
    for l in host.lines().filter(|l| !l.starts_with("cpu")) {
        match l.split_whitespace().next() {
            Some("procs_running") => out.push_str(&format!("procs_running {}\n", load.running)),
            Some("procs_blocked") => out.push_str(&format!("procs_blocked {}\n", load.blocked)),
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// How often the load averages take a sample, as the kernel's do.
pub const LOAD_SAMPLE: std::time::Duration = std::time::Duration::from_secs(5);

/// The load averages after one more sample of `tasks`, `LOAD_SAMPLE`
/// after the last: exponentially damped over 1, 5 and 15 minutes, as the
/// kernel damps the host's.
pub fn next_load(averages: [f64; 3], tasks: &Tasks) -> [f64; 3] {
    let active = (tasks.running + tasks.blocked) as f64;
    let step = LOAD_SAMPLE.as_secs_f64();
    let mut next = averages;
    for (avg, minutes) in next.iter_mut().zip([1.0, 5.0, 15.0]) {
        let decay = (-step / (minutes * 60.0f64)).exp();
        *avg = *avg * decay + active * (1.0 - decay);
    }
    next
}

/// `/proc/loadavg`: the container's averages, running and total threads
/// and newest pid.
pub fn loadavg(averages: [f64; 3], load: &Tasks) -> String {
    let [one, five, fifteen] = averages;
    format!(
        "{one:.2} {five:.2} {fifteen:.2} {}/{} {}\n",
        load.running, load.threads, load.newest_pid
    )
}

/// `/proc/diskstats`: the host's lines of the devices the container did
/// I/O on, with its reads, sectors read, writes and sectors written, and
/// 0 in the fields the cgroup does not count (merges, times, queue).
pub fn diskstats(host: &str, devices: &[DeviceIo]) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(major), Some(minor), Some(name)) = (words.first(), words.get(1), words.get(2))
        else {
            continue;
        };
        let Some(d) = devices
            .iter()
            .find(|d| major.parse() == Ok(d.major) && minor.parse() == Ok(d.minor))
        else {
            continue;
        };
        let mut fields = vec![0u64; words.len().saturating_sub(3)];
        for (at, value) in [
            (0, d.reads),
            (2, d.read_bytes / 512),
            (4, d.writes),
            (6, d.write_bytes / 512),
        ] {
            if let Some(f) = fields.get_mut(at) {
                *f = value;
            }
        }
        out.push_str(&format!("{major:>4} {minor:>7} {name}"));
        for f in fields {
            out.push_str(&format!(" {f}"));
        }
        out.push('\n');
    }
    out
}

/// `/proc/swaps`: one virtual device of the container's swap, if it may
/// swap at all.
pub fn swaps(total: u64, used: u64) -> String {
    let mut out = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    if total > 0 {
        out.push_str(&format!(
            "none\t\t\t\t\tvirtual\t\t{}\t\t{}\t\t0\n",
            total / 1024,
            used.min(total) / 1024
        ));
    }
    out
}

/// A container's memory, as its `/proc/meminfo` shows it: all in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryView {
    /// The memory limit, or the host's total when it has none (or a
    /// larger one).
    pub total: u64,
    /// In use, page cache included (the memory controller's count).
    pub used: u64,
    pub detail: MemoryDetail,
    /// Swap the container may use (the memory-plus-swap limit less the
    /// memory limit, at most the host's swap), and uses.
    pub swap_total: u64,
    pub swap_used: u64,
}

impl MemoryView {
    /// Memory the container could still get without swapping: what is
    /// free below its limit, and the file pages the kernel can drop (shared
    /// memory is not among them: it sits on the anonymous lists).
    pub fn available(&self) -> u64 {
        let free = self.total.saturating_sub(self.used);
        let reclaimable = self.detail.active_file_bytes + self.detail.inactive_file_bytes;
        (free + reclaimable).min(self.total)
    }
}

/// The host's `/proc/meminfo` with every line about the container's
/// memory replaced by its figure: totals, free and available, the LRU
/// lists, page cache, shared and mapped memory, swap. Kernel-wide figures
/// that would count the host's memory against the container's (buffers,
/// reclaimable slab) read 0; the rest stay the host's.
pub fn meminfo(host: &str, m: &MemoryView) -> String {
    let d = &m.detail;
    let value = |key: &str| -> Option<u64> {
        Some(match key {
            "MemTotal" => m.total,
            "MemFree" => m.total.saturating_sub(m.used),
            "MemAvailable" => m.available(),
            "Buffers" | "SwapCached" | "KReclaimable" | "SReclaimable" => 0,
            "Cached" => d.page_cache_bytes,
            "Active" => d.active_anon_bytes + d.active_file_bytes,
            "Inactive" => d.inactive_anon_bytes + d.inactive_file_bytes,
            "Active(anon)" => d.active_anon_bytes,
            "Inactive(anon)" => d.inactive_anon_bytes,
            "Active(file)" => d.active_file_bytes,
            "Inactive(file)" => d.inactive_file_bytes,
            "Shmem" => d.shmem_bytes,
            "Mapped" => d.mapped_file_bytes,
            "SwapTotal" => m.swap_total,
            "SwapFree" => m.swap_total.saturating_sub(m.swap_used),
            _ => return None,
        })
    };
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let key = line.split(':').next().unwrap_or("");
        match value(key) {
            Some(bytes) => {
                let label = format!("{key}:");
                out.push_str(&format!("{label:<16}{:>8} kB\n", bytes / 1024));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The CPUs a container sees: those it may run on (its cpuset, in order),
/// no more than its CPU quota rounded up (a container held to 0.5 CPU
/// sees one).
pub fn visible_cpus(allowed: &[u32], quota: Option<CpuQuota>) -> Vec<u32> {
    let mut cpus = allowed.to_vec();
    cpus.sort_unstable();
    cpus.dedup();
    if let Some(q) = quota.filter(|q| q.period_us > 0) {
        let whole = q.quota_us.div_ceil(q.period_us).max(1);
        cpus.truncate(usize::try_from(whole).unwrap_or(usize::MAX));
    }
    cpus
}

/// The host's `/proc/cpuinfo` with the blocks of the `visible` CPUs only,
/// numbered from 0 as the container counts them.
pub fn cpuinfo(host: &str, visible: &[u32]) -> String {
    let mut out = String::with_capacity(host.len());
    let mut shown = 0;
    for block in host.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let number = block.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "processor").then(|| value.trim().parse::<u32>().ok())?
        });
        if !number.is_some_and(|n| visible.contains(&n)) {
            continue;
        }
        for line in block.lines() {
            match line.split_once(':') {
                Some((key, _)) if key.trim() == "processor" => {
                    out.push_str(&format!("{key}: {shown}\n"))
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push('\n');
        shown += 1;
    }
    out
}

/// `/sys/devices/system/cpu/online` for `count` CPUs: `0-N`, or `0`.
pub fn cpus_online(count: usize) -> String {
    match count {
        0 | 1 => "0\n".to_string(),
        n => format!("0-{}\n", n - 1),
    }
}

/// `/proc/uptime`: seconds since the container started, and the idle
/// time of its CPUs over that span (what its `cpus` CPUs could have run
/// less the CPU time it used), both with two decimals.
pub fn uptime(since_start: f64, cpus: usize, cpu_used: f64) -> String {
    let idle = (since_start * cpus.max(1) as f64 - cpu_used).max(0.0);
    format!("{:.2} {:.2}\n", since_start.max(0.0), idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    const HOST_MEMINFO: &str = "MemTotal:       24683784 kB\n\
MemFree:        20096380 kB\n\
MemAvailable:   23997376 kB\n\
Buffers:           14104 kB\n\
Cached:          4135228 kB\n\
SwapCached:            0 kB\n\
Active:          2307864 kB\n\
Inactive:        1833572 kB\n\
Active(anon):        508 kB\n\
Inactive(anon):     2348 kB\n\
Active(file):    2307356 kB\n\
Inactive(file):  1831224 kB\n\
Unevictable:       13212 kB\n\
SwapTotal:       1048572 kB\n\
SwapFree:        1048572 kB\n\
Mapped:            11544 kB\n\
Shmem:             10724 kB\n\
SReclaimable:     142624 kB\n\
HugePages_Total:       0\n";

    fn view() -> MemoryView {
        MemoryView {
            total: 256 * MIB,
            used: 100 * MIB,
            detail: MemoryDetail {
                active_anon_bytes: 40 * MIB,
                inactive_anon_bytes: 20 * MIB,
                active_file_bytes: 10 * MIB,
                inactive_file_bytes: 20 * MIB,
                page_cache_bytes: 40 * MIB,
                shmem_bytes: 10 * MIB,
                mapped_file_bytes: 5 * MIB,
                major_faults: 3,
            },
            swap_total: 0,
            swap_used: 0,
        }
    }

    fn kb(text: &str, key: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {text}"))
    }

    #[test]
    fn meminfo_shows_the_containers_memory() {
        let text = meminfo(HOST_MEMINFO, &view());
        assert_eq!(kb(&text, "MemTotal"), 256 * 1024);
        assert_eq!(kb(&text, "MemFree"), 156 * 1024);
        // Free, plus the file pages the kernel can drop.
        assert_eq!(kb(&text, "MemAvailable"), (156 + 30) * 1024);
        assert_eq!(kb(&text, "Cached"), 40 * 1024);
        assert_eq!(kb(&text, "Active"), 50 * 1024);
        assert_eq!(kb(&text, "Inactive(file)"), 20 * 1024);
        assert_eq!(kb(&text, "Shmem"), 10 * 1024);
        assert_eq!(kb(&text, "Buffers"), 0);
        assert_eq!(kb(&text, "SReclaimable"), 0);
        assert_eq!(kb(&text, "SwapTotal"), 0);
        // Lines it does not know stay the host's, in order.
        assert_eq!(kb(&text, "Unevictable"), 13212);
        assert!(text.ends_with("HugePages_Total:       0\n"), "{text}");
        assert_eq!(text.lines().count(), HOST_MEMINFO.lines().count());
        // What `free` computes as used: total - free - buffers - cache.
        let used = kb(&text, "MemTotal")
            - kb(&text, "MemFree")
            - kb(&text, "Buffers")
            - kb(&text, "Cached")
            - kb(&text, "SReclaimable");
        assert_eq!(used, 60 * 1024, "the container's 100 MiB less its cache");
    }

    #[test]
    fn available_never_exceeds_the_total() {
        let mut m = view();
        m.used = 10 * MIB;
        m.detail.inactive_file_bytes = 250 * MIB;
        assert_eq!(m.available(), m.total);
    }

    #[test]
    fn visible_cpus_follow_the_cpuset_and_the_quota() {
        let half = CpuQuota {
            quota_us: 50_000,
            period_us: 100_000,
        };
        let two_and_a_bit = CpuQuota {
            quota_us: 210_000,
            period_us: 100_000,
        };
        assert_eq!(visible_cpus(&[0, 1, 2, 3], None), [0, 1, 2, 3]);
        assert_eq!(visible_cpus(&[3, 1], Some(half)), [1]);
        assert_eq!(
            visible_cpus(&[0, 1, 2, 3, 4], Some(two_and_a_bit)),
            [0, 1, 2]
        );
        assert_eq!(visible_cpus(&[2], Some(two_and_a_bit)), [2]);
    }

    #[test]
    fn cpuinfo_keeps_the_visible_cpus_numbered_from_zero() {
        let host = "processor\t: 0\nmodel name\t: A\n\nprocessor\t: 1\nmodel name\t: B\n\nprocessor\t: 2\nmodel name\t: C\n\n";
        let text = cpuinfo(host, &[1, 2]);
        assert_eq!(
            text,
            "processor\t: 0\nmodel name\t: B\n\nprocessor\t: 1\nmodel name\t: C\n\n"
        );
        assert_eq!(text.matches("processor").count(), 2);
        assert_eq!(cpuinfo(host, &[]), "");
    }

    #[test]
    fn online_and_uptime() {
        assert_eq!(cpus_online(1), "0\n");
        assert_eq!(cpus_online(4), "0-3\n");
        assert_eq!(uptime(10.0, 2, 5.0), "10.00 15.00\n");
        assert_eq!(uptime(1.0, 1, 3.0), "1.00 0.00\n", "idle is never negative");
    }

    #[test]
    fn stat_shows_the_containers_cpus_and_keeps_the_hosts_other_lines() {
        let host = "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\ncpu1 8 8 8 8 8 8 8 8 0 0\n\
intr 5 0\nctxt 7\nbtime 1700000000\nprocesses 42\nprocs_running 9\nprocs_blocked 4\n";
        let cpus = [CpuTimes {
            user_ns: 2_000_000_000,
            system_ns: 500_000_000,
        }];
        let tasks = Tasks {
            running: 1,
            blocked: 0,
            threads: 3,
            newest_pid: 7,
        };
        let text = stat(host, &cpus, 10.0, &tasks);
        assert_eq!(
            text,
            "cpu  200 0 50 750 0 0 0 0 0 0\ncpu0 200 0 50 750 0 0 0 0 0 0\n\
intr 5 0\nctxt 7\nbtime 1700000000\nprocesses 42\nprocs_running 1\nprocs_blocked 0\n"
        );
    }

    #[test]
    fn cpu_time_is_per_cpu_where_the_kernel_keeps_it_else_shared() {
        let t = |user_ns| CpuTimes {
            user_ns,
            system_ns: 0,
        };
        let per_cpu = [(Some(0), t(1)), (Some(1), t(2)), (Some(2), t(3))];
        assert_eq!(per_visible_cpu(&[2, 0], &per_cpu), [t(3), t(1)]);
        assert_eq!(per_visible_cpu(&[0, 1], &[(None, t(10))]), [t(5), t(5)]);
    }

    #[test]
    fn load_averages_follow_the_kernels_damping() {
        let busy = Tasks {
            running: 1,
            ..Tasks::default()
        };
        let mut avg = [0.0; 3];
        // One minute of one busy task: 1 - 1/e of the way on the 1-minute.
        for _ in 0..12 {
            avg = next_load(avg, &busy);
        }
        assert!((avg[0] - (1.0 - (-1.0f64).exp())).abs() < 0.01, "{avg:?}");
        assert!(avg[1] < avg[0] && avg[2] < avg[1], "{avg:?}");
        assert_eq!(
            loadavg(avg, &busy),
            format!("{:.2} {:.2} {:.2} 1/0 0\n", avg[0], avg[1], avg[2])
        );
    }

    #[test]
    fn diskstats_and_swaps_show_only_the_containers() {
        let host =
            "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0\n 254       0 vda 1 2 3 4 5 6 7 8 9 10 11\n";
        let io = DeviceIo {
            major: 254,
            minor: 0,
            read_bytes: 1024,
            write_bytes: 4096,
            reads: 3,
            writes: 4,
        };
        assert_eq!(
            diskstats(host, &[io]),
            " 254       0 vda 3 0 2 0 4 0 8 0 0 0 0\n"
        );
        assert_eq!(diskstats(host, &[]), "");
        assert_eq!(swaps(0, 0).lines().count(), 1, "the header only");
        assert!(swaps(2 << 20, 1 << 20).contains("virtual\t\t2048\t\t1024\t\t0"));
    }
}
