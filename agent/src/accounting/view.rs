//! What a container sees of itself in `/proc` and `/sys` (issue 20): the
//! files `free`, `top`, `uptime`, `nproc` and language runtimes read to
//! size heaps and thread pools, rendered for one container from its
//! cgroup's figures, with the host's file as the template. Pure: text and
//! figures in, text out, so that whatever serves the files renders them
//! at the moment they are read. (The agent's per-container filesystem
//! that will serve them is not built yet: see the README's roadmap.)

use crate::{cgroups::MemoryDetail, spec::CpuQuota};

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

/// Expands a kernel id list (`"0-2,5"`) into its ids; `None` if malformed.
pub fn expand_id_list(text: &str) -> Option<Vec<u32>> {
    let mut ids = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi): (u32, u32) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let id = part.parse().ok()?;
                (id, id)
            }
        };
        if lo > hi || hi - lo > 65_536 {
            return None;
        }
        ids.extend(lo..=hi);
    }
    Some(ids)
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
    fn id_lists_expand() {
        assert_eq!(expand_id_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(expand_id_list("3\n"), Some(vec![3]));
        assert_eq!(expand_id_list("2-1"), None);
        assert_eq!(expand_id_list("x"), None);
        assert_eq!(expand_id_list("0-4294967295"), None, "bounded");
    }
}
