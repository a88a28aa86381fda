//! The figures a container's `/proc` view is made from, read from its
//! cgroup directories (v1 hierarchies or v2) at the moment a file of the
//! view is read: which CPUs it may use and how much of them, its CPU time
//! per CPU, its swap limit, its block I/O per device and its threads.

use std::{collections::HashMap, fs, path::PathBuf, sync::Mutex};

use crate::spec::CpuQuota;

/// A container's cgroup directories (every hierarchy's, v2 first), with
/// the directory each file was found in remembered: a view read asks for
/// the same few files again and again, and a controller does not come or
/// go under a running container.
#[derive(Debug, Default)]
pub struct Dirs {
    dirs: Vec<PathBuf>,
    found: Mutex<HashMap<&'static str, Option<PathBuf>>>,
}

impl Dirs {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            found: Mutex::default(),
        }
    }

    pub fn all(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The first directory holding `file`, as a path to it.
    fn find(&self, file: &'static str) -> Option<PathBuf> {
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found
            .entry(file)
            .or_insert_with(|| self.dirs.iter().map(|d| d.join(file)).find(|p| p.exists()))
            .clone()
    }
}

fn read(dirs: &Dirs, file: &'static str) -> Option<String> {
    dirs.find(file).and_then(|p| fs::read_to_string(p).ok())
}

/// The CPUs the container's tasks may run on: its cpuset's effective
/// list (v2 `cpuset.cpus.effective`, v1 `cpuset.effective_cpus`); `None`
/// without a cpuset controller.
pub fn cpus(dirs: &Dirs) -> Option<Vec<u32>> {
    let text =
        read(dirs, "cpuset.cpus.effective").or_else(|| read(dirs, "cpuset.effective_cpus"))?;
    expand_id_list(&text)
}

/// The container's CPU bandwidth limit (v2 `cpu.max`, v1
/// `cpu.cfs_quota_us` and `cpu.cfs_period_us`); `None` when unlimited.
pub fn cpu_quota(dirs: &Dirs) -> Option<CpuQuota> {
    if let Some(text) = read(dirs, "cpu.max") {
        let mut words = text.split_whitespace();
        let quota_us = words.next()?.parse().ok()?;
        let period_us = words.next()?.parse().ok()?;
        return Some(CpuQuota {
            quota_us,
            period_us,
        });
    }
    let quota: i64 = read(dirs, "cpu.cfs_quota_us")?.trim().parse().ok()?;
    let period_us = read(dirs, "cpu.cfs_period_us")?.trim().parse().ok()?;
    Some(CpuQuota {
        quota_us: u64::try_from(quota).ok()?,
        period_us,
    })
}

/// CPU time in nanoseconds, split into user and system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user_ns: u64,
    pub system_ns: u64,
}

/// The container's CPU time on each CPU, by host CPU number (v1
/// `cpuacct.usage_percpu_user` and `_sys`), or, where the kernel keeps no
/// per-CPU figure (v2), its total as one entry keyed `None`.
pub fn cpu_times(dirs: &Dirs) -> Vec<(Option<u32>, CpuTimes)> {
    let per_cpu = |file: &'static str| -> Option<Vec<u64>> {
        read(dirs, file)?
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect()
    };
    if let (Some(user), Some(system)) = (
        per_cpu("cpuacct.usage_percpu_user"),
        per_cpu("cpuacct.usage_percpu_sys"),
    ) {
        return (0u32..)
            .zip(user.into_iter().zip(system))
            .map(|(cpu, (user_ns, system_ns))| (Some(cpu), CpuTimes { user_ns, system_ns }))
            .collect();
    }
    let Some(stat) = read(dirs, "cpu.stat") else {
        return Vec::new();
    };
    let usec = |key| super::stats::keyed_value(&stat, key).unwrap_or(0) * 1000;
    vec![(
        None,
        CpuTimes {
            user_ns: usec("user_usec"),
            system_ns: usec("system_usec"),
        },
    )]
}

/// Block I/O of the container on one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u32,
    pub minor: u32,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// The container's block I/O per device (v2 `io.stat`, v1 blkio's
/// throttle counters), devices it never touched left out.
pub fn device_io(dirs: &Dirs) -> Vec<DeviceIo> {
    let mut devices: Vec<DeviceIo> = Vec::new();
    if let Some(text) = read(dirs, "io.stat") {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(d) = words.next().and_then(|w| device(&mut devices, w)) else {
                continue;
            };
            for (key, value) in words.filter_map(|w| w.split_once('=')) {
                let value = value.parse().unwrap_or(0);
                match key {
                    "rbytes" => d.read_bytes = value,
                    "wbytes" => d.write_bytes = value,
                    "rios" => d.reads = value,
                    "wios" => d.writes = value,
                    _ => {}
                }
            }
        }
    } else {
        for (file, bytes) in [
            ("blkio.throttle.io_service_bytes_recursive", true),
            ("blkio.throttle.io_serviced_recursive", false),
        ] {
            for line in read(dirs, file).unwrap_or_default().lines() {
                let mut words = line.split_whitespace();
                let (Some(name), Some(op), Some(n)) = (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                let Some(d) = device(&mut devices, name) else {
                    continue;
                };
                let n = n.parse().unwrap_or(0);
                match (op, bytes) {
                    ("Read", true) => d.read_bytes = n,
                    ("Write", true) => d.write_bytes = n,
                    ("Read", false) => d.reads = n,
                    ("Write", false) => d.writes = n,
                    _ => {}
                }
            }
        }
    }
    devices.retain(|d| d.reads + d.writes + d.read_bytes + d.write_bytes > 0);
    devices
}

/// The entry of the device `MAJ:MIN` in `devices`, added if new; `None`
/// for a word that is not a device number.
fn device<'a>(devices: &'a mut Vec<DeviceIo>, word: &str) -> Option<&'a mut DeviceIo> {
    let (major, minor) = word.split_once(':')?;
    let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
    let at = match devices
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(at) => at,
        None => {
            devices.push(DeviceIo {
                major,
                minor,
                ..DeviceIo::default()
            });
            devices.len() - 1
        }
    };
    devices.get_mut(at)
}

/// The thread ids of the container's tasks (v2 `cgroup.threads`, v1
/// `tasks`), as the host numbers them.
pub fn threads(dirs: &Dirs) -> Vec<i32> {
    let text = read(dirs, "cgroup.threads")
        .or_else(|| read(dirs, "tasks"))
        .unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
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

    #[test]
    fn id_lists_expand() {
        assert_eq!(expand_id_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(expand_id_list("3\n"), Some(vec![3]));
        assert_eq!(expand_id_list("2-1"), None);
        assert_eq!(expand_id_list("x"), None);
        assert_eq!(expand_id_list("0-4294967295"), None, "bounded");
    }
}
