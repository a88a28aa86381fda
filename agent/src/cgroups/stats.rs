//! What a container's cgroup controllers report about it: memory, swap,
//! pids, CPU usage and throttling, block I/O. Read from the v1 controller
//! files on hybrid hosts and from the cgroup v2 files elsewhere; a value a
//! host does not offer (no swap accounting, no I/O controller) is `None`,
//! never a made-up zero.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// One container's controller statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupStats {
    /// Memory in use now, and the most it ever used.
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    /// The hard limit; `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// Times the container went over its soft limit (v2 `memory.events`
    /// high; v1 has no such count).
    pub memory_high_events: Option<u64>,
    /// Processes the kernel's OOM killer ended in the container.
    pub oom_kills: Option<u64>,
    /// Swap in use now.
    pub swap_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// CPU time as the CPU controller counts it.
    pub cpu_usage_ns: Option<u64>,
    /// CFS periods in which the container was throttled, and for how long.
    pub cpu_throttled_periods: Option<u64>,
    pub cpu_throttled_ns: Option<u64>,
    /// Block I/O, all devices.
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub io_read_ops: Option<u64>,
    pub io_write_ops: Option<u64>,
    /// Where the memory is, from `memory.stat`; `None` without a memory
    /// controller.
    pub memory_stat: Option<MemoryDetail>,
}

/// A container's memory by kind, from its memory controller's
/// `memory.stat` (v2 names, or v1's `total_*` ones). Like `memory_bytes`,
/// each counts the cgroup's whole subtree, nested containers included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryDetail {
    /// Anonymous memory on the active and inactive LRU lists.
    pub active_anon_bytes: u64,
    pub inactive_anon_bytes: u64,
    /// File-backed memory (page cache) on the active and inactive lists.
    pub active_file_bytes: u64,
    pub inactive_file_bytes: u64,
    /// All page cache, shmem and tmpfs included (v2 `file`, v1 `cache`).
    pub page_cache_bytes: u64,
    /// Shared memory and tmpfs.
    pub shmem_bytes: u64,
    /// Page cache mapped into processes (v2 `file_mapped`, v1
    /// `mapped_file`).
    pub mapped_file_bytes: u64,
    /// Page faults that had to read from storage.
    pub major_faults: u64,
}

impl MemoryDetail {
    /// From the text of `memory.stat`; v1 when it has `total_` keys.
    /// `None` if a field is missing (a kernel that names it otherwise).
    fn parse(text: &str) -> Option<Self> {
        let value = |key: &str| keyed_value(text, key);
        let v1 = value("total_cache").is_some();
        let field = |v2: &str, v1_name: &str| {
            if v1 {
                value(&format!("total_{v1_name}"))
            } else {
                value(v2)
            }
        };
        Some(Self {
            active_anon_bytes: field("active_anon", "active_anon")?,
            inactive_anon_bytes: field("inactive_anon", "inactive_anon")?,
            active_file_bytes: field("active_file", "active_file")?,
            inactive_file_bytes: field("inactive_file", "inactive_file")?,
            page_cache_bytes: field("file", "cache")?,
            shmem_bytes: field("shmem", "shmem")?,
            mapped_file_bytes: field("file_mapped", "mapped_file")?,
            major_faults: field("pgmajfault", "pgmajfault")?,
        })
    }
}

/// The directory of a container's memory controller (v2 or v1), found
/// once, so that a reader that comes back (the /proc view) reads only
/// the files it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFiles {
    dir: PathBuf,
    v2: bool,
}

/// A container's memory now, in bytes; `None` for what cannot be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// In use, page cache included.
    pub used: Option<u64>,
    /// `None` also when unlimited.
    pub limit: Option<u64>,
    /// Swap it may use beyond its memory (`None` also when unlimited),
    /// and uses.
    pub swap_limit: Option<u64>,
    pub swap_used: Option<u64>,
    pub detail: Option<MemoryDetail>,
}

impl MemoryFiles {
    /// The memory controller's directory among `dirs`, if it has one: v2
    /// names first (a v2 directory only has them where the controller is
    /// enabled; v1 hierarchies never do).
    pub fn find(dirs: &[PathBuf]) -> Option<Self> {
        let holding = |file: &str| dirs.iter().find(|d| d.join(file).exists()).cloned();
        match holding("memory.current") {
            Some(dir) => Some(Self { dir, v2: true }),
            None => holding("memory.usage_in_bytes").map(|dir| Self { dir, v2: false }),
        }
    }

    fn number(&self, file: &str) -> Option<u64> {
        read_number(&self.dir.join(file))
    }

    fn keyed(&self, file: &str, key: &str) -> Option<u64> {
        read_key(&self.dir.join(file), key)
    }

    /// Its figures now.
    pub fn read(&self) -> Memory {
        let detail = fs::read_to_string(self.dir.join("memory.stat"))
            .ok()
            .and_then(|text| MemoryDetail::parse(&text));
        if self.v2 {
            return Memory {
                used: self.number("memory.current"),
                limit: self.number("memory.max"),
                swap_limit: self.number("memory.swap.max"),
                swap_used: self.number("memory.swap.current"),
                detail,
            };
        }
        let used = self.number("memory.usage_in_bytes");
        let limit = self
            .number("memory.limit_in_bytes")
            .filter(|&l| l < V1_UNLIMITED);
        let both = self
            .number("memory.memsw.limit_in_bytes")
            .filter(|&l| l < V1_UNLIMITED);
        Memory {
            used,
            limit,
            swap_limit: both.zip(limit).map(|(b, l)| b.saturating_sub(l)),
            swap_used: self
                .number("memory.memsw.usage_in_bytes")
                .zip(used)
                .map(|(b, u)| b.saturating_sub(u)),
            detail,
        }
    }
}

/// The statistics of a container whose cgroup directories (every
/// hierarchy's; see `State::cgroups`) are `dirs`.
pub fn read(dirs: &[PathBuf]) -> CgroupStats {
    let find = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
    let number = |file: &str| find(file).and_then(|p| read_number(&p));
    let keyed = |file: &str, key: &str| find(file).and_then(|p| read_key(&p, key));
    let mut s = CgroupStats::default();
    if let Some(files) = MemoryFiles::find(dirs) {
        let m = files.read();
        s.memory_bytes = m.used;
        s.memory_limit_bytes = m.limit;
        s.swap_bytes = m.swap_used;
        s.memory_stat = m.detail;
        if files.v2 {
            s.memory_peak_bytes = files.number("memory.peak");
            s.memory_high_events = files.keyed("memory.events", "high");
            s.oom_kills = files.keyed("memory.events", "oom_kill");
        } else {
            s.memory_peak_bytes = files.number("memory.max_usage_in_bytes");
            s.oom_kills = files.keyed("memory.oom_control", "oom_kill");
        }
    }
    s.pids = number("pids.current");
    s.pids_limit = number("pids.max");

    let v2_cpu = find("cpu.stat").filter(|p| read_key(p, "usage_usec").is_some());
    match v2_cpu {
        Some(p) => {
            s.cpu_usage_ns = read_key(&p, "usage_usec").map(|us| us * 1000);
            s.cpu_throttled_periods = read_key(&p, "nr_throttled");
            s.cpu_throttled_ns = read_key(&p, "throttled_usec").map(|us| us * 1000);
        }
        None => {
            s.cpu_usage_ns = number("cpuacct.usage");
            s.cpu_throttled_periods = keyed("cpu.stat", "nr_throttled");
            s.cpu_throttled_ns = keyed("cpu.stat", "throttled_time");
        }
    }

    if let Some(p) = find("io.stat") {
        let totals = io_stat(&p);
        (s.io_read_bytes, s.io_write_bytes) = (Some(totals[0]), Some(totals[1]));
        (s.io_read_ops, s.io_write_ops) = (Some(totals[2]), Some(totals[3]));
    } else {
        let bytes = find("blkio.throttle.io_service_bytes_recursive").map(|p| blkio(&p));
        let ops = find("blkio.throttle.io_serviced_recursive").map(|p| blkio(&p));
        (s.io_read_bytes, s.io_write_bytes) = (bytes.map(|b| b.0), bytes.map(|b| b.1));
        (s.io_read_ops, s.io_write_ops) = (ops.map(|o| o.0), ops.map(|o| o.1));
    }
    s
}

/// Page faults of the container's own tasks, as the memory controller
/// counts them (minor and major, in user and in kernel mode; exact, and
/// free for the host: no program runs per fault). v1's `pgfault` is the
/// cgroup's own; v2's is its whole subtree, so the cgroups below (nested
/// containers) are taken off. `None` without a memory controller.
pub fn page_faults(dirs: &[PathBuf]) -> Option<u64> {
    let v2 = dirs
        .iter()
        .find(|d| d.join("memory.current").exists() && d.join("memory.stat").exists());
    if let Some(dir) = v2 {
        let pgfault = |d: &Path| read_key(&d.join("memory.stat"), "pgfault");
        return pgfault(dir).map(|total| own(dir, total, pgfault));
    }
    dirs.iter()
        .map(|d| d.join("memory.stat"))
        .find(|p| p.exists())
        .and_then(|p| read_key(&p, "pgfault"))
}

/// CPU time of the container's own tasks in nanoseconds, as its CPU
/// controller counts it: v2 `cpu.stat` usage_usec (kept by every v2
/// cgroup), else v1 `cpuacct.usage`. Both count the whole subtree, so the
/// cgroups below (nested containers) are taken off. The kernel charges a
/// running task's time at each tick and switch. `None` without either.
pub fn cpu_time(dirs: &[PathBuf]) -> Option<u64> {
    let usec = |d: &Path| read_key(&d.join("cpu.stat"), "usage_usec");
    if let Some((dir, total)) = dirs.iter().find_map(|d| usec(d).map(|t| (d, t))) {
        return Some(own(dir, total, usec) * 1000);
    }
    let usage = |d: &Path| read_number(&d.join("cpuacct.usage"));
    let (dir, total) = dirs.iter().find_map(|d| usage(d).map(|t| (d, t)))?;
    Some(own(dir, total, usage))
}

/// `total`, the hierarchical count of `dir`, less that of the cgroups
/// directly below it (`count` of each): the cgroup's own.
fn own(dir: &Path, total: u64, count: impl Fn(&Path) -> Option<u64>) -> u64 {
    let below: u64 = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| count(&e.path()))
        .sum();
    total.saturating_sub(below)
}

/// v1 reports "no limit" as the largest page-aligned i64.
const V1_UNLIMITED: u64 = 0x7fff_ffff_ffff_f000;

fn read_number(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    // "max" (v2's "no limit") is None.
    text.trim().parse().ok()
}

/// `KEY VALUE` lines (memory.events, cpu.stat, memory.oom_control).
fn read_key(path: &Path, key: &str) -> Option<u64> {
    keyed_value(&fs::read_to_string(path).ok()?, key)
}

/// The value of `key` in the text of a `KEY VALUE` file.
pub(super) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// v2 io.stat: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N …` per device,
/// summed: [rbytes, wbytes, rios, wios].
fn io_stat(path: &Path) -> [u64; 4] {
    let mut totals = [0u64; 4];
    for field in fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
    {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let slot = match key {
            "rbytes" => 0,
            "wbytes" => 1,
            "rios" => 2,
            "wios" => 3,
            _ => continue,
        };
        totals[slot] += value.parse::<u64>().unwrap_or(0);
    }
    totals
}

/// v1 blkio: `MAJ:MIN Read N` / `MAJ:MIN Write N` lines, summed (the
/// `Total` line per device is skipped): (read, write).
fn blkio(path: &Path) -> (u64, u64) {
    let mut read = 0;
    let mut write = 0;
    for line in fs::read_to_string(path).unwrap_or_default().lines() {
        let mut words = line.split_whitespace();
        let (Some(_device), Some(op), Some(n)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let n: u64 = n.parse().unwrap_or(0);
        match op {
            "Read" => read += n,
            "Write" => write += n,
            _ => {}
        }
    }
    (read, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("palisade-stats-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn v2_files_are_read() {
        let dir = dir_with(&[
            ("memory.current", "1000\n"),
            ("memory.peak", "2000\n"),
            ("memory.max", "max\n"),
            ("memory.events", "low 0\nhigh 3\nmax 1\noom 1\noom_kill 1\n"),
            ("memory.swap.current", "0\n"),
            (
                "memory.stat",
                "anon 900\nfile 70\nfile_mapped 20\nshmem 10\nactive_anon 800\ninactive_anon 100\nactive_file 30\ninactive_file 40\npgfault 99\npgmajfault 5\n",
            ),
            ("pids.current", "4\n"),
            ("pids.max", "64\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 700\n",
            ),
            (
                "io.stat",
                "254:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=2 rios=3 wios=4\n",
            ),
        ]);
        let s = read(std::slice::from_ref(&dir));
        assert_eq!(
            s,
            CgroupStats {
                memory_bytes: Some(1000),
                memory_peak_bytes: Some(2000),
                memory_limit_bytes: None,
                memory_high_events: Some(3),
                oom_kills: Some(1),
                swap_bytes: Some(0),
                pids: Some(4),
                pids_limit: Some(64),
                cpu_usage_ns: Some(1_500_000),
                cpu_throttled_periods: Some(2),
                cpu_throttled_ns: Some(700_000),
                io_read_bytes: Some(101),
                io_write_bytes: Some(202),
                io_read_ops: Some(4),
                io_write_ops: Some(6),
                memory_stat: Some(MemoryDetail {
                    active_anon_bytes: 800,
                    inactive_anon_bytes: 100,
                    active_file_bytes: 30,
                    inactive_file_bytes: 40,
                    page_cache_bytes: 70,
                    shmem_bytes: 10,
                    mapped_file_bytes: 20,
                    major_faults: 5,
                }),
            }
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn v1_files_are_read_across_hierarchies() {
        let memory = dir_with(&[
            ("memory.usage_in_bytes", "4096\n"),
            ("memory.max_usage_in_bytes", "8192\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.memsw.usage_in_bytes", "5000\n"),
            // The cgroup's own first, then its subtree's (`total_`).
            (
                "memory.stat",
                "cache 1\nrss 2\nshmem 3\nmapped_file 4\npgmajfault 5\ninactive_anon 6\nactive_anon 7\ninactive_file 8\nactive_file 9\n\
                 total_cache 10\ntotal_rss 20\ntotal_shmem 30\ntotal_mapped_file 40\ntotal_pgmajfault 50\ntotal_inactive_anon 60\ntotal_active_anon 70\ntotal_inactive_file 80\ntotal_active_file 90\n",
            ),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
        ]);
        let cpu = dir_with(&[(
            "cpu.stat",
            "nr_periods 5\nnr_throttled 1\nthrottled_time 900\n",
        )]);
        let cpuacct = dir_with(&[("cpuacct.usage", "123456\n")]);
        let blkio = dir_with(&[
            (
                "blkio.throttle.io_service_bytes_recursive",
                "254:0 Read 10\n254:0 Write 20\n254:0 Total 30\nTotal 30\n",
            ),
            (
                "blkio.throttle.io_serviced_recursive",
                "254:0 Read 1\n254:0 Write 2\n254:0 Total 3\n",
            ),
        ]);
        let dirs = [memory, cpu, cpuacct, blkio];
        let s = read(&dirs);
        assert_eq!(s.memory_bytes, Some(4096));
        assert_eq!(s.memory_peak_bytes, Some(8192));
        assert_eq!(s.memory_limit_bytes, None, "unlimited");
        assert_eq!(s.memory_high_events, None, "v1 has no count");
        assert_eq!(s.oom_kills, Some(2));
        assert_eq!(s.swap_bytes, Some(904));
        assert_eq!(s.cpu_usage_ns, Some(123_456));
        assert_eq!(s.cpu_throttled_periods, Some(1));
        assert_eq!(s.cpu_throttled_ns, Some(900));
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (Some(10), Some(20)));
        assert_eq!((s.io_read_ops, s.io_write_ops), (Some(1), Some(2)));
        assert_eq!(
            s.memory_stat,
            Some(MemoryDetail {
                active_anon_bytes: 70,
                inactive_anon_bytes: 60,
                active_file_bytes: 90,
                inactive_file_bytes: 80,
                page_cache_bytes: 10,
                shmem_bytes: 30,
                mapped_file_bytes: 40,
                major_faults: 50,
            })
        );
        for d in dirs {
            fs::remove_dir_all(d).unwrap();
        }
    }
}
