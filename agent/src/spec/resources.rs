//! Resource limits: the `[resources]` table of a policy file (or the same
//! fields given as `--resource FIELD=VALUE` style flags), validated into
//! [`ResourceLimits`], the normalized form `cgroups::limits` applies.
//!
//! Pure: device paths are kept as paths and resolved when applied, so a
//! policy is judged without touching the host.

use std::{fmt, ops::Range, path::PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The `[resources]` table as written: every field optional, sizes and
/// rates as strings (`"256M"`) or integers (bytes). [`Resources::validate`]
/// turns it into [`ResourceLimits`]. Spans (byte ranges into the policy
/// text) only serve error messages; values built from flags have `0..0`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Hard memory limit, bytes.
    pub memory: Option<Spanned<Value>>,
    /// Soft memory limit, bytes (v2 `memory.high`, v1 soft limit).
    pub memory_high: Option<Spanned<Value>>,
    /// Memory plus swap, bytes, as docker's `--memory-swap`: the total, not
    /// the swap alone; equal to `memory` means no swap; `-1` is unlimited.
    pub memory_swap: Option<Spanned<Value>>,
    /// Hard CPU limit in CPUs (`0.5` is half of one CPU).
    pub cpu: Option<Spanned<Value>>,
    /// Relative CPU weight, 1-10000 (v2 semantics, default 100).
    pub cpu_weight: Option<Spanned<Value>>,
    /// Real-time CPU time, in microseconds, that the container's
    /// SCHED_FIFO and SCHED_RR tasks may take together every
    /// `cpu_rt_period` (v1 `cpu.rt_runtime_us`).
    pub cpu_rt_runtime: Option<Spanned<Value>>,
    /// The period of `cpu_rt_runtime`, microseconds (default 1000000).
    pub cpu_rt_period: Option<Spanned<Value>>,
    /// CPUs the container may run on: `"0-1,3"`.
    pub cpuset: Option<Spanned<Value>>,
    /// Memory nodes the container may allocate from: `"0"`.
    pub mems: Option<Spanned<Value>>,
    /// Maximum number of tasks (processes and threads), > 0.
    pub pids: Option<Spanned<Value>>,
    /// Relative block I/O weight, 1-10000 (v2 semantics, default 100).
    pub io_weight: Option<Spanned<Value>>,
    /// Read bandwidth caps: `"MAJ:MIN RATE"` or `"/dev/path RATE"`.
    pub io_read_bps: Option<Spanned<Vec<Spanned<String>>>>,
    /// Write bandwidth caps, as `io_read_bps`.
    pub io_write_bps: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A scalar as written in TOML (or on the command line, always a string).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A refused resource field: `resources.memory: invalid size "12Q"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceError {
    /// `resources.FIELD`.
    pub field: String,
    pub message: String,
    /// Byte range of the offending value in the policy text, if known.
    pub span: Option<Range<usize>>,
}

impl fmt::Display for ResourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ResourceError {}

/// Validated limits; `None` (or an empty list) leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceLimits {
    pub memory: Option<u64>,
    pub memory_high: Option<u64>,
    pub memory_swap: Option<Swap>,
    pub cpu: Option<CpuQuota>,
    pub cpu_weight: Option<u16>,
    pub cpu_rt: Option<RtBandwidth>,
    pub cpuset: Option<String>,
    pub mems: Option<String>,
    pub pids: Option<u64>,
    pub io_weight: Option<u16>,
    pub io_read_bps: Vec<DeviceRate>,
    pub io_write_bps: Vec<DeviceRate>,
}

/// Memory plus swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Swap {
    Unlimited,
    /// Memory plus swap, bytes (>= the memory limit).
    Total(u64),
}

/// CFS bandwidth: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

/// Real-time bandwidth: the container's real-time tasks may run
/// `runtime_us` every `period_us`, then wait for the next period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RtBandwidth {
    pub runtime_us: u64,
    pub period_us: u64,
}

/// The kernel's default real-time period (`kernel.sched_rt_period_us`).
pub const RT_PERIOD_US: u64 = 1_000_000;
/// The real-time periods palisade accepts: 1 ms to 1 s.
pub const RT_PERIODS_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;

/// The CFS period palisade uses (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses a CFS quota under 1 ms.
const CPU_MIN_QUOTA_US: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRate {
    pub device: Device,
    pub bytes_per_sec: u64,
}

/// A block device, by number or by a path resolved when limits are applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Device {
    Number { major: u32, minor: u32 },
    Path(PathBuf),
}

impl ResourceLimits {
    /// True when nothing is limited.
    /// These limits with every field `other` sets replacing ours (command
    /// line flags over the policy file).
    pub fn overlaid_with(self, other: ResourceLimits) -> ResourceLimits {
        let list = |ours: Vec<DeviceRate>, theirs: Vec<DeviceRate>| {
            if theirs.is_empty() { ours } else { theirs }
        };
        ResourceLimits {
            memory: other.memory.or(self.memory),
            memory_high: other.memory_high.or(self.memory_high),
            memory_swap: other.memory_swap.or(self.memory_swap),
            cpu: other.cpu.or(self.cpu),
            cpu_weight: other.cpu_weight.or(self.cpu_weight),
            cpu_rt: other.cpu_rt.or(self.cpu_rt),
            cpuset: other.cpuset.or(self.cpuset),
            mems: other.mems.or(self.mems),
            pids: other.pids.or(self.pids),
            io_weight: other.io_weight.or(self.io_weight),
            io_read_bps: list(self.io_read_bps, other.io_read_bps),
            io_write_bps: list(self.io_write_bps, other.io_write_bps),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// v1 `cpu.shares` for `cpu_weight`: `weight * 1024 / 100`, so the v2
    /// default weight 100 maps to the v1 default 1024 (range 10-102400).
    pub fn cpu_shares(&self) -> Option<u64> {
        self.cpu_weight.map(|w| u64::from(w) * 1024 / 100)
    }

    /// v1 `blkio.weight` (10-1000) for `io_weight` (1-10000): the inverse
    /// of runc's/OCI's `1 + (blkio - 10) * 9999 / 990`, i.e. linear ends to ends.
    pub fn blkio_weight(&self) -> Option<u16> {
        self.io_weight
            .map(|w| (10 + (u32::from(w) - 1) * 990 / 9999) as u16)
    }
}

/// Every field name `[resources]` and [`Resources::from_flags`] accept.
pub const FIELDS: &[&str] = &[
    "memory",
    "memory_high",
    "memory_swap",
    "cpu",
    "cpu_weight",
    "cpu_rt_runtime",
    "cpu_rt_period",
    "cpuset",
    "mems",
    "pids",
    "io_weight",
    "io_read_bps",
    "io_write_bps",
];

impl Resources {
    /// Builds the table from command-line pairs `(FIELD, VALUE)`, e.g.
    /// `("memory", "256M")` from `--memory 256M`. Field names are those of
    /// the policy file; a list field (`io_read_bps`, `io_write_bps`) may be
    /// given several times and accumulates; a scalar given twice is refused.
    /// Values are taken as strings and judged by [`Resources::validate`].
    pub fn from_flags(flags: &[(&str, &str)]) -> Result<Self, ResourceError> {
        let mut r = Resources::default();
        for &(field, value) in flags {
            let err = |message: String| ResourceError {
                field: format!("resources.{field}"),
                message,
                span: None,
            };
            let scalar = || Some(Spanned::new(0..0, Value::Str(value.to_string())));
            let slot = match field {
                "memory" => &mut r.memory,
                "memory_high" => &mut r.memory_high,
                "memory_swap" => &mut r.memory_swap,
                "cpu" => &mut r.cpu,
                "cpu_weight" => &mut r.cpu_weight,
                "cpu_rt_runtime" => &mut r.cpu_rt_runtime,
                "cpu_rt_period" => &mut r.cpu_rt_period,
                "cpuset" => &mut r.cpuset,
                "mems" => &mut r.mems,
                "pids" => &mut r.pids,
                "io_weight" => &mut r.io_weight,
                "io_read_bps" | "io_write_bps" => {
                    let list = if field == "io_read_bps" {
                        &mut r.io_read_bps
                    } else {
                        &mut r.io_write_bps
                    };
                    list.get_or_insert_with(|| Spanned::new(0..0, Vec::new()))
                        .get_mut()
                        .push(Spanned::new(0..0, value.to_string()));
                    continue;
                }
                _ => {
                    return Err(err(format!(
                        "unknown resource (expected one of: {})",
                        FIELDS.join(", ")
                    )));
                }
            };
            if slot.is_some() {
                return Err(err(format!("given twice (second value {value:?})")));
            }
            *slot = scalar();
        }
        Ok(r)
    }

    /// Checks every field and converts it to [`ResourceLimits`]. The error
    /// names the field and the value, and carries the value's span.
    pub fn validate(&self) -> Result<ResourceLimits, ResourceError> {
        let memory = field(&self.memory, "memory", |v| positive(size(v)?))?;
        let memory_high = field(&self.memory_high, "memory_high", |v| positive(size(v)?))?;
        let memory_swap = field(&self.memory_swap, "memory_swap", |v| match v {
            Value::Int(-1) => Ok(Swap::Unlimited),
            Value::Str(s) if s.trim() == "-1" => Ok(Swap::Unlimited),
            v => Ok(Swap::Total(positive(size(v)?)?)),
        })?;
        let cpu = field(&self.cpu, "cpu", cpus)?;
        let cpu_weight = field(&self.cpu_weight, "cpu_weight", weight)?;
        let rt_runtime = field(&self.cpu_rt_runtime, "cpu_rt_runtime", |v| {
            microseconds(v).and_then(positive)
        })?;
        let rt_period = field(&self.cpu_rt_period, "cpu_rt_period", |v| {
            let us = microseconds(v)?;
            if !RT_PERIODS_US.contains(&us) {
                return Err(format!(
                    "period {v} out of range {}-{} microseconds (1 ms to 1 s)",
                    RT_PERIODS_US.start(),
                    RT_PERIODS_US.end()
                ));
            }
            Ok(us)
        })?;
        let cpuset = field(&self.cpuset, "cpuset", |v| id_list(v, "cpu list"))?;
        let mems = field(&self.mems, "mems", |v| id_list(v, "node list"))?;
        let pids = field(&self.pids, "pids", |v| {
            let n = integer(v)?;
            if n <= 0 {
                return Err(format!("must be at least 1, got {v}"));
            }
            Ok(n as u64)
        })?;
        let io_weight = field(&self.io_weight, "io_weight", weight)?;
        let io_read_bps = rate_list(&self.io_read_bps, "io_read_bps")?;
        let io_write_bps = rate_list(&self.io_write_bps, "io_write_bps")?;

        // Relations between fields; the error points at the dependent one.
        let relation = |slot: &Option<Spanned<Value>>, name: &str, message: String| {
            let s = slot.as_ref().expect("checked field is present");
            ResourceError {
                field: format!("resources.{name}"),
                message: format!("{} {message}", s.get_ref()),
                span: non_empty(s.span()),
            }
        };
        if let Some(swap) = memory_swap {
            let Some(mem) = memory else {
                return Err(relation(
                    &self.memory_swap,
                    "memory_swap",
                    "needs resources.memory (it is memory plus swap)".into(),
                ));
            };
            if let Swap::Total(total) = swap
                && total < mem
            {
                return Err(relation(
                    &self.memory_swap,
                    "memory_swap",
                    format!(
                        "is less than resources.memory ({mem} bytes): it is memory plus swap, not swap alone"
                    ),
                ));
            }
        }
        let cpu_rt = match (rt_runtime, rt_period) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(relation(
                    &self.cpu_rt_period,
                    "cpu_rt_period",
                    "needs resources.cpu_rt_runtime (the real-time time allowed in each period)"
                        .into(),
                ));
            }
            (Some(runtime_us), period) => {
                let period_us = period.unwrap_or(RT_PERIOD_US);
                if runtime_us > period_us {
                    return Err(relation(
                        &self.cpu_rt_runtime,
                        "cpu_rt_runtime",
                        format!("is longer than its period ({period_us} microseconds)"),
                    ));
                }
                Some(RtBandwidth {
                    runtime_us,
                    period_us,
                })
            }
        };
        if let (Some(high), Some(mem)) = (memory_high, memory)
            && high > mem
        {
            return Err(relation(
                &self.memory_high,
                "memory_high",
                format!(
                    "is above resources.memory ({mem} bytes): a soft limit above the hard one never applies"
                ),
            ));
        }
        Ok(ResourceLimits {
            memory,
            memory_high,
            memory_swap,
            cpu,
            cpu_weight,
            cpu_rt,
            cpuset,
            mems,
            pids,
            io_weight,
            io_read_bps,
            io_write_bps,
        })
    }
}

fn non_empty(span: Range<usize>) -> Option<Range<usize>> {
    (span.end > span.start).then_some(span)
}

/// Runs `check` on an optional field, wrapping its message with the field name.
fn field<T>(
    slot: &Option<Spanned<Value>>,
    name: &str,
    check: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<Option<T>, ResourceError> {
    let Some(s) = slot else { return Ok(None) };
    check(s.get_ref())
        .map(Some)
        .map_err(|message| ResourceError {
            field: format!("resources.{name}"),
            message,
            span: non_empty(s.span()),
        })
}

fn positive(n: u64) -> Result<u64, String> {
    if n == 0 {
        Err("must be greater than 0".into())
    } else {
        Ok(n)
    }
}

fn integer(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("invalid integer {s:?}")),
        Value::Float(x) => Err(format!("invalid integer {x} (expected a whole number)")),
    }
}

/// A whole number of microseconds, at least 0.
fn microseconds(v: &Value) -> Result<u64, String> {
    let n = integer(v).map_err(|e| format!("{e} (microseconds)"))?;
    u64::try_from(n).map_err(|_| format!("invalid duration {v} (negative)"))
}

fn weight(v: &Value) -> Result<u16, String> {
    let n = integer(v)?;
    if !(1..=10_000).contains(&n) {
        return Err(format!("weight {v} out of range 1-10000"));
    }
    Ok(n as u16)
}

/// A size: an integer of bytes, or a string `"512k"`, `"256M"`, `"1GiB"`.
fn size(v: &Value) -> Result<u64, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        Value::Int(i) => Err(format!("invalid size {i} (negative)")),
        Value::Float(x) => Err(format!(
            "invalid size {x} (use bytes or a unit: \"1.5G\" is not accepted, \"1536M\" is)"
        )),
        Value::Str(s) => parse_size(s).ok_or_else(|| format!("invalid size {s:?}")),
    }
}

/// Parses `N[K|M|G|T][B|iB]`, binary units, case-insensitive. `None` if
/// malformed or above `u64::MAX`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .filter(|u| !u.is_empty())
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// A rate in bytes per second: a size with an optional `/s`.
pub fn parse_rate(text: &str) -> Option<u64> {
    let t = text.trim();
    parse_size(t.strip_suffix("/s").unwrap_or(t))
}

fn cpus(v: &Value) -> Result<CpuQuota, String> {
    let x = match v {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        Value::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("invalid CPU count {s:?}"))?,
    };
    if !x.is_finite() || x <= 0.0 {
        return Err(format!("invalid CPU count {v} (must be greater than 0)"));
    }
    let quota = (x * CPU_PERIOD_US as f64).round();
    if quota < CPU_MIN_QUOTA_US as f64 {
        return Err(format!(
            "CPU count {v} is below the kernel's minimum of 0.01 (1 ms per 100 ms)"
        ));
    }
    if quota > 1e12 {
        return Err(format!("CPU count {v} is absurdly large"));
    }
    Ok(CpuQuota {
        quota_us: quota as u64,
        period_us: CPU_PERIOD_US,
    })
}

/// A kernel id list, `"0-1,3"`: comma-separated ids or inclusive ranges.
/// Returns it normalized (spaces removed).
fn id_list(v: &Value, what: &str) -> Result<String, String> {
    let text = match v {
        Value::Int(i) if *i >= 0 => return Ok(i.to_string()),
        Value::Str(s) => s,
        other => return Err(format!("invalid {what} {other}")),
    };
    parse_id_list(text).ok_or_else(|| format!("invalid {what} {text:?}"))
}

/// Validates `"0-1,3"` style lists; `None` if malformed. Ranges must run
/// low to high.
pub fn parse_id_list(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    for part in compact.split(',') {
        let id = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                if id(lo)? > id(hi)? {
                    return None;
                }
            }
            None => {
                id(part)?;
            }
        }
    }
    Some(compact)
}

fn rate_list(
    list: &Option<Spanned<Vec<Spanned<String>>>>,
    name: &str,
) -> Result<Vec<DeviceRate>, ResourceError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.get_ref()
        .iter()
        .map(|item| {
            parse_device_rate(item.get_ref()).map_err(|message| ResourceError {
                field: format!("resources.{name}"),
                message: format!("{:?}: {message}", item.get_ref()),
                span: non_empty(item.span()),
            })
        })
        .collect()
}

/// `"MAJ:MIN RATE"` or `"/dev/path RATE"`.
pub fn parse_device_rate(text: &str) -> Result<DeviceRate, String> {
    let mut words = text.split_whitespace();
    let (Some(dev), Some(rate), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected \"MAJ:MIN RATE\" or \"/dev/PATH RATE\"".into());
    };
    let device = if dev.starts_with('/') {
        Device::Path(PathBuf::from(dev))
    } else {
        let number = |s: &str| s.parse::<u32>().ok();
        match dev.split_once(':') {
            Some((ma, mi)) if number(ma).is_some() && number(mi).is_some() => Device::Number {
                major: number(ma).unwrap_or_default(),
                minor: number(mi).unwrap_or_default(),
            },
            _ => {
                return Err(format!(
                    "invalid device {dev:?} (expected MAJ:MIN or an absolute path)"
                ));
            }
        }
    };
    let bytes_per_sec = parse_rate(rate)
        .filter(|&r| r > 0)
        .ok_or_else(|| format!("invalid rate {rate:?}"))?;
    Ok(DeviceRate {
        device,
        bytes_per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> Result<ResourceLimits, ResourceError> {
        Resources::from_flags(pairs)?.validate()
    }

    #[test]
    fn real_time_bandwidth_is_checked() {
        let rt = |pairs: &[(&str, &str)]| flags(pairs).unwrap().cpu_rt;
        assert_eq!(
            rt(&[("cpu_rt_runtime", "100000")]),
            Some(RtBandwidth {
                runtime_us: 100_000,
                period_us: RT_PERIOD_US
            })
        );
        assert_eq!(
            rt(&[("cpu_rt_runtime", "500"), ("cpu_rt_period", "1000")]),
            Some(RtBandwidth {
                runtime_us: 500,
                period_us: 1000
            })
        );
        for (pairs, field) in [
            (&[("cpu_rt_period", "1000")][..], "resources.cpu_rt_period"),
            (
                &[("cpu_rt_runtime", "2000"), ("cpu_rt_period", "1000")][..],
                "resources.cpu_rt_runtime",
            ),
            (&[("cpu_rt_runtime", "0")][..], "resources.cpu_rt_runtime"),
            (&[("cpu_rt_runtime", "-5")][..], "resources.cpu_rt_runtime"),
            (
                &[("cpu_rt_runtime", "10"), ("cpu_rt_period", "10")][..],
                "resources.cpu_rt_period",
            ),
        ] {
            assert_eq!(flags(pairs).unwrap_err().field, field, "{pairs:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("256mb"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("2t"), Some(2 << 40));
        assert_eq!(parse_size("100B"), Some(100));
        for bad in ["", "M", "12Q", "1.5G", "-1", "1 G G", "1iB", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10M"), Some(10 << 20));
        assert_eq!(parse_rate("10M/s"), Some(10 << 20));
        assert_eq!(parse_rate("fast"), None);
    }

    #[test]
    fn id_lists() {
        assert_eq!(parse_id_list("0-1,3").as_deref(), Some("0-1,3"));
        assert_eq!(parse_id_list(" 0 , 2 ").as_deref(), Some("0,2"));
        for bad in ["", "a", "1-", "-1", "3-1", "0,,1", "1-2-3", "0x1"] {
            assert_eq!(parse_id_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn device_rates() {
        assert_eq!(
            parse_device_rate("8:0 10M").unwrap(),
            DeviceRate {
                device: Device::Number { major: 8, minor: 0 },
                bytes_per_sec: 10 << 20
            }
        );
        assert_eq!(
            parse_device_rate("/dev/vda 1k").unwrap().device,
            Device::Path("/dev/vda".into())
        );
        assert!(parse_device_rate("8:0").is_err());
        assert!(parse_device_rate("sda 1M").unwrap_err().contains("sda"));
        assert!(parse_device_rate("8:0 0").unwrap_err().contains("\"0\""));
    }

    #[test]
    fn all_fields_from_flags() {
        let l = flags(&[
            ("memory", "256M"),
            ("memory_high", "200M"),
            ("memory_swap", "512M"),
            ("cpu", "0.5"),
            ("cpu_weight", "200"),
            ("cpuset", "0-1"),
            ("mems", "0"),
            ("pids", "100"),
            ("io_weight", "100"),
            ("io_read_bps", "8:0 10M"),
            ("io_read_bps", "/dev/vda 1M"),
            ("io_write_bps", "254:0 5M"),
        ])
        .unwrap();
        assert_eq!(l.memory, Some(256 << 20));
        assert_eq!(l.memory_swap, Some(Swap::Total(512 << 20)));
        assert_eq!(
            l.cpu,
            Some(CpuQuota {
                quota_us: 50_000,
                period_us: 100_000
            })
        );
        assert_eq!(l.cpu_shares(), Some(2048));
        assert_eq!(l.blkio_weight(), Some(19));
        assert_eq!(l.io_read_bps.len(), 2);
        assert_eq!(l.pids, Some(100));
        assert!(!l.is_empty());
        assert!(flags(&[]).unwrap().is_empty());
    }

    #[test]
    fn weight_mappings_cover_the_ranges() {
        let w = |n: u16| ResourceLimits {
            cpu_weight: Some(n),
            io_weight: Some(n),
            ..Default::default()
        };
        assert_eq!(w(100).cpu_shares(), Some(1024));
        assert_eq!(w(1).cpu_shares(), Some(10));
        assert_eq!(w(10000).cpu_shares(), Some(102_400));
        assert_eq!(w(1).blkio_weight(), Some(10));
        assert_eq!(w(10000).blkio_weight(), Some(1000));
    }

    #[test]
    fn errors_name_field_and_value() {
        let e = flags(&[("memory", "12Q")]).unwrap_err();
        assert_eq!(e.to_string(), "resources.memory: invalid size \"12Q\"");
        let e = flags(&[("cpu", "0")]).unwrap_err();
        assert!(e.to_string().starts_with("resources.cpu: "), "{e}");
        assert!(e.to_string().contains("\"0\""), "{e}");
        let e = flags(&[("cpu", "0.001")]).unwrap_err();
        assert!(e.to_string().contains("0.01"), "{e}");
        let e = flags(&[("cpu_weight", "20000")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("resources.cpu_weight: weight \"20000\""),
            "{e}"
        );
        let e = flags(&[("cpuset", "3-1")]).unwrap_err();
        assert_eq!(e.to_string(), "resources.cpuset: invalid cpu list \"3-1\"");
        let e = flags(&[("pids", "0")]).unwrap_err();
        assert!(e.to_string().starts_with("resources.pids: "), "{e}");
        let e = flags(&[("io_write_bps", "8:0 lots")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("resources.io_write_bps: \"8:0 lots\""),
            "{e}"
        );
        let e = flags(&[("memroy", "1G")]).unwrap_err();
        assert!(e.to_string().contains("resources.memroy: unknown"), "{e}");
        let e = flags(&[("memory", "1G"), ("memory", "2G")]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn swap_is_memory_plus_swap() {
        let l = flags(&[("memory", "1G"), ("memory_swap", "-1")]).unwrap();
        assert_eq!(l.memory_swap, Some(Swap::Unlimited));
        let e = flags(&[("memory", "1G"), ("memory_swap", "512M")]).unwrap_err();
        assert!(
            e.to_string().starts_with("resources.memory_swap: \"512M\""),
            "{e}"
        );
        let e = flags(&[("memory_swap", "2G")]).unwrap_err();
        assert!(e.to_string().contains("needs resources.memory"), "{e}");
        let e = flags(&[("memory", "1G"), ("memory_high", "2G")]).unwrap_err();
        assert!(e.to_string().starts_with("resources.memory_high: "), "{e}");
    }
}
