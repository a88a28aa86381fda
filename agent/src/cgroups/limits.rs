//! Resource limits: write a validated [`ResourceLimits`] into a container's
//! existing cgroups, and read back what the kernel did (OOM kills).
//!
//! Each controller goes to the v1 hierarchy that carries it (hybrid hosts)
//! or else to the container's cgroup v2 directory, where palisade enables it
//! in its own `palisade/cgroup.subtree_control` (never above: if the root
//! does not delegate a controller, that is an error naming the file). A
//! controller file that is absent is an error naming the file, never a
//! silent skip. Only the container's own directories are written, and the
//! `palisade` parent's `cgroup.subtree_control` on v2.
//!
//! Every file is written directly, rendered from typed values: cgroups-rs
//! was dropped, since its v2 side cannot address a hybrid host's
//! `/sys/fs/cgroup/unified` (and maps the soft limit and I/O weight to other
//! files than palisade's), and its v1 side only wrapped these same writes
//! behind a render-to-string-and-parse-back step.

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::ContainerCgroups;
use crate::spec::{Device, ResourceLimits, RtBandwidth, Swap};

#[derive(Debug, Error)]
pub enum LimitError {
    #[error("cannot write {value:?} to {}: {source}", file.display())]
    Write {
        file: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error(
        "cannot write {value:?} to {}: the file does not exist (this kernel or hierarchy lacks that control; remove the field from [resources])", file.display()
    )]
    Missing { file: PathBuf, value: String },
    #[error(
        "the {controller} controller is not delegated to palisade: {} does not enable it (run `echo +{controller} > {}` or drop the field from [resources])", file.display(), file.display()
    )]
    NotDelegated {
        controller: &'static str,
        file: PathBuf,
    },
    #[error("cannot read {}: {source}", file.display())]
    Read { file: PathBuf, source: io::Error },
    #[error("resources: cannot use device {}: {reason}", path.display())]
    Device { path: PathBuf, reason: String },
    #[error(
        "resources.cpu_rt_runtime: this host has no real-time group scheduling: {} does not exist (it needs a kernel built with CONFIG_RT_GROUP_SCHED and the cgroup v1 cpu controller; cgroup v2 has no real-time budget)", file.display()
    )]
    NoRtGroups { file: PathBuf },
}

/// The v1 real-time group scheduling files (CONFIG_RT_GROUP_SCHED).
const RT_RUNTIME: &str = "cpu.rt_runtime_us";
const RT_PERIOD: &str = "cpu.rt_period_us";

/// One kernel setting, before it is rendered for v1 or v2.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Setting {
    Memory(u64),
    MemoryHigh(u64),
    /// Memory plus swap, and the memory limit (v2 wants the swap part).
    Swap(Swap, Option<u64>),
    Cpu {
        quota_us: u64,
        period_us: u64,
    },
    CpuWeight {
        weight: u16,
        shares: u64,
    },
    CpuRt(RtBandwidth),
    Cpus(String),
    Mems(String),
    Pids(u64),
    IoWeight {
        weight: u16,
        blkio: u16,
    },
    IoMax(Throttle),
}

/// Bandwidth caps on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Throttle {
    major: u32,
    minor: u32,
    rbps: Option<u64>,
    wbps: Option<u64>,
}

impl Setting {
    fn controller(&self) -> &'static str {
        match self {
            Setting::Memory(_) | Setting::MemoryHigh(_) | Setting::Swap(..) => "memory",
            Setting::Cpu { .. } | Setting::CpuWeight { .. } | Setting::CpuRt(_) => "cpu",
            Setting::Cpus(_) | Setting::Mems(_) => "cpuset",
            Setting::Pids(_) => "pids",
            // v1 calls it blkio, v2 io; the v1 name is looked up first.
            Setting::IoWeight { .. } | Setting::IoMax(_) => "blkio",
        }
    }

    fn v2_controller(&self) -> &'static str {
        match self.controller() {
            "blkio" => "io",
            c => c,
        }
    }

    /// The v1 files and values, in the order they must be written.
    fn v1_writes(&self) -> Vec<(&'static str, String)> {
        match self {
            Setting::Memory(b) => vec![("memory.limit_in_bytes", b.to_string())],
            Setting::MemoryHigh(b) => vec![("memory.soft_limit_in_bytes", b.to_string())],
            Setting::Swap(Swap::Unlimited, _) => vec![("memory.memsw.limit_in_bytes", "-1".into())],
            Setting::Swap(Swap::Total(t), _) => {
                vec![("memory.memsw.limit_in_bytes", t.to_string())]
            }
            Setting::Cpu {
                quota_us,
                period_us,
            } => vec![
                ("cpu.cfs_period_us", period_us.to_string()),
                ("cpu.cfs_quota_us", quota_us.to_string()),
            ],
            Setting::CpuWeight { shares, .. } => vec![("cpu.shares", shares.to_string())],
            Setting::CpuRt(rt) => vec![
                (RT_PERIOD, rt.period_us.to_string()),
                (RT_RUNTIME, rt.runtime_us.to_string()),
            ],
            Setting::Cpus(c) => vec![("cpuset.cpus", c.clone())],
            Setting::Mems(m) => vec![("cpuset.mems", m.clone())],
            Setting::Pids(n) => vec![("pids.max", n.to_string())],
            Setting::IoWeight { blkio, .. } => vec![("blkio.weight", blkio.to_string())],
            Setting::IoMax(t) => {
                let mut w = Vec::new();
                if let Some(r) = t.rbps {
                    w.push((
                        "blkio.throttle.read_bps_device",
                        format!("{}:{} {r}", t.major, t.minor),
                    ));
                }
                if let Some(r) = t.wbps {
                    w.push((
                        "blkio.throttle.write_bps_device",
                        format!("{}:{} {r}", t.major, t.minor),
                    ));
                }
                w
            }
        }
    }

    /// The v2 files and values.
    fn v2_writes(&self) -> Vec<(&'static str, String)> {
        let one = |file, value: String| vec![(file, value)];
        match self {
            Setting::Memory(b) => one("memory.max", b.to_string()),
            Setting::MemoryHigh(b) => one("memory.high", b.to_string()),
            Setting::Swap(Swap::Unlimited, _) => one("memory.swap.max", "max".into()),
            Setting::Swap(Swap::Total(t), mem) => one(
                "memory.swap.max",
                t.saturating_sub(mem.unwrap_or(0)).to_string(),
            ),
            Setting::Cpu {
                quota_us,
                period_us,
            } => one("cpu.max", format!("{quota_us} {period_us}")),
            Setting::CpuWeight { weight, .. } => one("cpu.weight", weight.to_string()),
            // Never reached: `writes` refuses it on v2, which has no such file.
            Setting::CpuRt(rt) => one(RT_RUNTIME, rt.runtime_us.to_string()),
            Setting::Cpus(c) => one("cpuset.cpus", c.clone()),
            Setting::Mems(m) => one("cpuset.mems", m.clone()),
            Setting::Pids(n) => one("pids.max", n.to_string()),
            Setting::IoWeight { weight, .. } => one("io.weight", format!("default {weight}")),
            Setting::IoMax(t) => {
                let mut line = format!("{}:{}", t.major, t.minor);
                if let Some(r) = t.rbps {
                    line.push_str(&format!(" rbps={r}"));
                }
                if let Some(w) = t.wbps {
                    line.push_str(&format!(" wbps={w}"));
                }
                one("io.max", line)
            }
        }
    }
}

/// The settings for `limits`, in write order (memory before memory+swap).
/// Device paths are resolved to numbers here.
fn settings(limits: &ResourceLimits) -> Result<Vec<Setting>, LimitError> {
    let mut s = Vec::new();
    if let Some(m) = limits.memory {
        s.push(Setting::Memory(m));
    }
    if let Some(h) = limits.memory_high {
        s.push(Setting::MemoryHigh(h));
    }
    if let Some(swap) = limits.memory_swap {
        s.push(Setting::Swap(swap, limits.memory));
    }
    if let Some(q) = limits.cpu {
        s.push(Setting::Cpu {
            quota_us: q.quota_us,
            period_us: q.period_us,
        });
    }
    if let (Some(weight), Some(shares)) = (limits.cpu_weight, limits.cpu_shares()) {
        s.push(Setting::CpuWeight { weight, shares });
    }
    if let Some(rt) = limits.cpu_rt {
        s.push(Setting::CpuRt(rt));
    }
    if let Some(c) = &limits.cpuset {
        s.push(Setting::Cpus(c.clone()));
    }
    if let Some(m) = &limits.mems {
        s.push(Setting::Mems(m.clone()));
    }
    if let Some(n) = limits.pids {
        s.push(Setting::Pids(n));
    }
    if let (Some(weight), Some(blkio)) = (limits.io_weight, limits.blkio_weight()) {
        s.push(Setting::IoWeight { weight, blkio });
    }
    let mut devices: BTreeMap<(u32, u32), Throttle> = BTreeMap::new();
    for (list, read) in [(&limits.io_read_bps, true), (&limits.io_write_bps, false)] {
        for rate in list {
            let (major, minor) = device_number(&rate.device)?;
            let t = devices.entry((major, minor)).or_insert(Throttle {
                major,
                minor,
                rbps: None,
                wbps: None,
            });
            if read {
                t.rbps = Some(rate.bytes_per_sec);
            } else {
                t.wbps = Some(rate.bytes_per_sec);
            }
        }
    }
    s.extend(devices.into_values().map(Setting::IoMax));
    Ok(s)
}

fn device_number(device: &Device) -> Result<(u32, u32), LimitError> {
    match device {
        Device::Number { major, minor } => Ok((*major, *minor)),
        Device::Path(path) => {
            let meta = fs::metadata(path).map_err(|e| LimitError::Device {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            if !meta.file_type().is_block_device() {
                return Err(LimitError::Device {
                    path: path.clone(),
                    reason: "not a block device".into(),
                });
            }
            let rdev = meta.rdev();
            Ok((libc::major(rdev), libc::minor(rdev)))
        }
    }
}

/// Applies `limits` to the container's cgroups. Stops at the first error;
/// the caller removes the cgroups (nothing here outlives them).
pub fn apply(cgroups: &ContainerCgroups, limits: &ResourceLimits) -> Result<(), LimitError> {
    for (path, value) in writes(cgroups, limits)? {
        write_file(&path, &value)?;
    }
    Ok(())
}

/// Applies `limits` to a running container's cgroups, all or nothing: the
/// value each file had is read first, and if a write is refused (a memory
/// limit below what the container uses, a CPU outside its parent's set)
/// the files already written get their old values back.
pub fn apply_live(cgroups: &ContainerCgroups, limits: &ResourceLimits) -> Result<(), LimitError> {
    let writes = writes(cgroups, limits)?;
    let before = writes
        .iter()
        .map(|(path, value)| {
            fs::read_to_string(path)
                .map(|old| restoring(path, value, &old))
                .map_err(|source| match source.kind() {
                    io::ErrorKind::NotFound => LimitError::Missing {
                        file: path.clone(),
                        value: value.clone(),
                    },
                    _ => LimitError::Read {
                        file: path.clone(),
                        source,
                    },
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (path, value)) in writes.iter().enumerate() {
        if let Err(e) = write_file(path, value) {
            for ((path, _), old) in writes[..i].iter().zip(&before).rev() {
                let _ = write_file(path, old);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// What to write to `path` to undo writing `value` over its content `old`:
/// the old value, or for a per-device file the device's old line (no line:
/// no limit).
fn restoring(path: &Path, value: &str, old: &str) -> String {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let device = value.split_whitespace().next().unwrap_or("");
    let per_device = file == "io.max" || file.starts_with("blkio.throttle.");
    if !per_device {
        return old.trim().to_string();
    }
    let line = old
        .lines()
        .find(|l| l.split_whitespace().next() == Some(device));
    match (line, file) {
        (Some(l), _) => l.trim().to_string(),
        (None, "io.max") => format!("{device} rbps=max wbps=max"),
        (None, _) => format!("{device} 0"),
    }
}

/// The files `limits` writes and their values, in order; the v2
/// controllers they need are enabled on the way.
fn writes(
    cgroups: &ContainerCgroups,
    limits: &ResourceLimits,
) -> Result<Vec<(PathBuf, String)>, LimitError> {
    let mut out = Vec::new();
    for setting in &settings(limits)? {
        if let Setting::CpuRt(rt) = setting {
            out.extend(rt_writes(cgroups, *rt)?);
            continue;
        }
        if let Some(dir) = cgroups.v1_dir(setting.controller()) {
            for (file, value) in setting.v1_writes() {
                out.push((dir.join(file), value));
            }
        } else {
            let dir = cgroups.unified();
            enable_v2(dir, setting.v2_controller())?;
            for (file, value) in setting.v2_writes() {
                out.push((dir.join(file), value));
            }
        }
    }
    Ok(out)
}

/// The writes that give the container real-time bandwidth `rt`: first the
/// `palisade` parent's budget raised to cover it with every other
/// container's (a cgroup's real-time tasks can only run within what each
/// ancestor grants), then the container's own period and runtime. A
/// parent that is not `palisade` (an enclosing container's, `--parent`)
/// is not changed: the kernel refuses a runtime it does not cover.
fn rt_writes(
    cgroups: &ContainerCgroups,
    rt: RtBandwidth,
) -> Result<Vec<(PathBuf, String)>, LimitError> {
    let Some(dir) = cgroups
        .v1_dir("cpu")
        .filter(|d| d.join(RT_RUNTIME).exists())
    else {
        let base = cgroups.v1_dir("cpu").unwrap_or(cgroups.unified());
        return Err(LimitError::NoRtGroups {
            file: base.join(RT_RUNTIME),
        });
    };
    let mut out = Vec::new();
    if let Some(parent) = dir.parent().filter(|p| p.ends_with("palisade")) {
        let need = rt_budget(parent, Some((dir, rt)))?;
        if need > read_u64(&parent.join(RT_RUNTIME))? {
            out.push((parent.join(RT_RUNTIME), need.to_string()));
        }
    }
    out.push((dir.join(RT_PERIOD), rt.period_us.to_string()));
    out.push((dir.join(RT_RUNTIME), rt.runtime_us.to_string()));
    Ok(out)
}

/// The real-time runtime `parent` must grant in its own period so that
/// every child's bandwidth fits, with `own`'s replaced by the one given:
/// the sum of runtime / period over them, rounded up.
fn rt_budget(parent: &Path, own: Option<(&Path, RtBandwidth)>) -> Result<u64, LimitError> {
    let period = u128::from(read_u64(&parent.join(RT_PERIOD))?);
    let mut need: u128 = 0;
    let mut add = |bw: RtBandwidth| {
        if bw.period_us > 0 {
            need += (u128::from(bw.runtime_us) * period).div_ceil(u128::from(bw.period_us));
        }
    };
    for entry in fs::read_dir(parent)
        .map_err(|source| LimitError::Read {
            file: parent.to_path_buf(),
            source,
        })?
        .flatten()
    {
        let child = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || own.is_some_and(|(d, _)| d == child) {
            continue;
        }
        // A child that has just gone reads as nothing.
        let (Ok(runtime_us), Ok(period_us)) = (
            read_u64(&child.join(RT_RUNTIME)),
            read_u64(&child.join(RT_PERIOD)),
        ) else {
            continue;
        };
        add(RtBandwidth {
            runtime_us,
            period_us,
        });
    }
    if let Some((_, bw)) = own {
        add(bw);
    }
    Ok(u64::try_from(need).unwrap_or(u64::MAX))
}

/// Before a container's emptied cgroup `dir` is removed: its real-time
/// runtime, if any, is set to 0, since the kernel keeps counting a removed
/// group's runtime against its parent until it has freed it, which would
/// stop [`return_rt_budget`] from lowering the parent's.
pub(super) fn drop_rt_runtime(dir: &Path) {
    let file = dir.join(RT_RUNTIME);
    if read_u64(&file).is_ok_and(|runtime| runtime > 0) {
        let _ = write_file(&file, "0");
    }
}

/// After a container's cgroup `removed` went: if it was under the
/// `palisade` parent of the v1 cpu hierarchy and that parent grants
/// real-time time, the grant is lowered to what the containers left need,
/// so that palisade holds none of the host's real-time budget it does not
/// use.
pub(super) fn return_rt_budget(removed: &Path) {
    let Some(parent) = removed.parent().filter(|p| p.ends_with("palisade")) else {
        return;
    };
    let file = parent.join(RT_RUNTIME);
    let Ok(have) = read_u64(&file) else {
        return;
    };
    if have == 0 {
        return;
    }
    if let Ok(need) = rt_budget(parent, None)
        && need < have
    {
        let _ = write_file(&file, &need.to_string());
    }
}

/// A control file holding one unsigned number.
fn read_u64(path: &Path) -> Result<u64, LimitError> {
    let text = fs::read_to_string(path).map_err(|source| LimitError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    text.trim().parse().map_err(|_| LimitError::Read {
        file: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a number: {:?}", text.trim()),
        ),
    })
}

/// Writes an existing control file (never creates one: an absent file is
/// [`LimitError::Missing`]).
fn write_file(path: &Path, value: &str) -> Result<(), LimitError> {
    super::write_control(path, value).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            LimitError::Missing {
                file: path.to_path_buf(),
                value: value.to_string(),
            }
        } else {
            LimitError::Write {
                file: path.to_path_buf(),
                value: value.to_string(),
                source,
            }
        }
    })
}

/// Makes `controller` available to the container's v2 directory `dir` by
/// enabling it in the `palisade` parent, which palisade owns. The parent's
/// own parent (the root, or whatever delegated to palisade) must already
/// offer it.
fn enable_v2(dir: &Path, controller: &'static str) -> Result<(), LimitError> {
    let parent = dir.parent().expect("a container cgroup has a parent");
    let listed = |file: &Path| -> Result<bool, LimitError> {
        let text = fs::read_to_string(file).map_err(|source| LimitError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Ok(text.split_whitespace().any(|c| c == controller))
    };
    let subtree = parent.join("cgroup.subtree_control");
    if listed(&subtree)? {
        return Ok(());
    }
    if !listed(&parent.join("cgroup.controllers"))? {
        let above = parent.parent().unwrap_or(parent);
        return Err(LimitError::NotDelegated {
            controller,
            file: above.join("cgroup.subtree_control"),
        });
    }
    write_file(&subtree, &format!("+{controller}"))
}

/// The number of times the kernel's OOM killer killed a task of the
/// container (v1 `memory.oom_control`, v2 `memory.events`, `oom_kill`).
pub fn oom_kill_count(cgroups: &ContainerCgroups) -> Result<u64, LimitError> {
    let file = match cgroups.v1_dir("memory") {
        Some(dir) => dir.join("memory.oom_control"),
        None => cgroups.unified().join("memory.events"),
    };
    let text = fs::read_to_string(&file).map_err(|source| LimitError::Read {
        file: file.clone(),
        source,
    })?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0))
}

/// True if the OOM killer killed any task of the container, so a container
/// ended by SIGKILL can be reported as out of memory. False when unknown.
pub fn oom_killed(cgroups: &ContainerCgroups) -> bool {
    oom_kill_count(cgroups).is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Resources;

    fn plan(flags: &[(&str, &str)]) -> Vec<Setting> {
        settings(&Resources::from_flags(flags).unwrap().validate().unwrap()).unwrap()
    }

    fn files(s: &[Setting], v2: bool) -> Vec<(&'static str, String)> {
        s.iter()
            .flat_map(|s| if v2 { s.v2_writes() } else { s.v1_writes() })
            .collect()
    }

    #[test]
    fn memory_and_swap_in_order() {
        let p = plan(&[
            ("memory", "256M"),
            ("memory_high", "128M"),
            ("memory_swap", "1G"),
        ]);
        let v1 = files(&p, false);
        assert_eq!(
            v1,
            [
                ("memory.limit_in_bytes", "268435456".into()),
                ("memory.soft_limit_in_bytes", "134217728".into()),
                ("memory.memsw.limit_in_bytes", "1073741824".into()),
            ]
        );
        let v2 = files(&p, true);
        assert_eq!(v2[2], ("memory.swap.max", (768u64 << 20).to_string()));
        assert_eq!(v2[1], ("memory.high", "134217728".into()));
        let p = plan(&[("memory", "1G"), ("memory_swap", "-1")]);
        assert_eq!(files(&p, true)[1], ("memory.swap.max", "max".into()));
        assert_eq!(
            files(&p, false)[1],
            ("memory.memsw.limit_in_bytes", "-1".into())
        );
    }

    #[test]
    fn cpu_pids_cpuset_io() {
        let p = plan(&[
            ("cpu", "1.5"),
            ("cpu_weight", "50"),
            ("cpuset", "0-1"),
            ("pids", "20"),
            ("io_weight", "10000"),
            ("io_read_bps", "8:0 1M"),
            ("io_write_bps", "8:0 2M"),
            ("io_write_bps", "8:16 3M"),
        ]);
        let v1 = files(&p, false);
        assert_eq!(
            v1,
            [
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "150000".into()),
                ("cpu.shares", "512".into()),
                ("cpuset.cpus", "0-1".into()),
                ("pids.max", "20".into()),
                ("blkio.weight", "1000".into()),
                ("blkio.throttle.read_bps_device", "8:0 1048576".into()),
                ("blkio.throttle.write_bps_device", "8:0 2097152".into()),
                ("blkio.throttle.write_bps_device", "8:16 3145728".into()),
            ]
        );
        let v2 = files(&p, true);
        assert_eq!(
            v2,
            [
                ("cpu.max", "150000 100000".into()),
                ("cpu.weight", "50".into()),
                ("cpuset.cpus", "0-1".into()),
                ("pids.max", "20".into()),
                ("io.weight", "default 10000".into()),
                ("io.max", "8:0 rbps=1048576 wbps=2097152".into()),
                ("io.max", "8:16 wbps=3145728".into()),
            ]
        );
        assert_eq!(p[4].v2_controller(), "io");
    }

    #[test]
    fn device_paths_must_be_block_devices() {
        let r = Resources::from_flags(&[("io_read_bps", "/dev/null 1M")])
            .unwrap()
            .validate()
            .unwrap();
        let e = settings(&r).unwrap_err();
        assert!(
            e.to_string().contains("/dev/null: not a block device"),
            "{e}"
        );
        let r = Resources::from_flags(&[("io_read_bps", "/dev/nonexistent-palisade 1M")])
            .unwrap()
            .validate()
            .unwrap();
        assert!(settings(&r).is_err());
    }
}
