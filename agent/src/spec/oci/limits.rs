//! `linux.resources` into palisade's [`ResourceLimits`] (its `devices`
//! are device rules: see `devices`).
//!
//! OCI's conventions are runc's: a 0 leaves a limit unset and -1 means
//! unlimited; cgroup v1 units (cpu.shares, blkio weight) are converted
//! to palisade's v2 ones the way runc and crun convert them.

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources, LinuxThrottleDevice};

use super::{Cx, OciError};
use crate::spec::{
    CpuQuota, Device, DeviceRate, RT_PERIOD_US, RT_PERIODS_US, ResourceLimits, RtBandwidth, Swap,
    parse_id_list,
};

/// The kernel's bounds on a CFS period, and its smallest quota (µs).
const CPU_PERIOD_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
const CPU_MIN_QUOTA_US: i64 = 1_000;
const DEFAULT_PERIOD_US: u64 = crate::spec::CPU_PERIOD_US;

impl Cx {
    pub(super) fn resources(&mut self, r: &LinuxResources) -> Result<ResourceLimits, OciError> {
        let mut l = ResourceLimits::default();
        if let Some(m) = r.memory() {
            self.memory(m, &mut l)?;
        }
        if let Some(c) = r.cpu() {
            self.cpu(c, &mut l)?;
        }
        if let Some(p) = r.pids() {
            // runc: 0 leaves it unset, a negative limit is "max".
            l.pids = u64::try_from(p.limit()).ok().filter(|&n| n > 0);
        }
        if let Some(b) = r.block_io() {
            self.block_io(b, &mut l)?;
        }
        let unsupported = "is not supported by palisade; remove it";
        self.refuse(
            r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
            "linux.resources.hugepageLimits",
            unsupported,
        )?;
        self.refuse(
            r.network().is_some(),
            "linux.resources.network",
            unsupported,
        )?;
        self.refuse(
            r.rdma().as_ref().is_some_and(|h| !h.is_empty()),
            "linux.resources.rdma",
            unsupported,
        )?;
        self.refuse(
            r.unified().as_ref().is_some_and(|h| !h.is_empty()),
            "linux.resources.unified",
            "is not supported by palisade; use memory, cpu, pids and blockIO",
        )?;
        Ok(l)
    }

    /// A byte count: positive, or 0 / -1 for "no limit".
    fn bytes(&self, field: &str, v: Option<i64>) -> Result<Option<u64>, OciError> {
        match v {
            None | Some(0) | Some(-1) => Ok(None),
            Some(n) if n > 0 => Ok(Some(n as u64)),
            Some(n) => Err(self.err(field, format!("invalid size {n}"))),
        }
    }

    fn memory(&mut self, m: &LinuxMemory, l: &mut ResourceLimits) -> Result<(), OciError> {
        l.memory = self.bytes("linux.resources.memory.limit", m.limit())?;
        l.memory_high = self.bytes("linux.resources.memory.reservation", m.reservation())?;
        if l.memory_high.is_some() {
            self.warn(
                "linux.resources.memory.reservation",
                "applied as palisade's memory_high: a soft limit (v1 memory.soft_limit_in_bytes, v2 memory.high, which throttles above it) rather than runc's v2 memory.low",
            );
        }
        if let (Some(high), Some(mem)) = (l.memory_high, l.memory)
            && high > mem
        {
            return Err(self.err(
                "linux.resources.memory.reservation",
                format!("{high} is above linux.resources.memory.limit ({mem})"),
            ));
        }
        l.memory_swap = match m.swap() {
            None | Some(0) => None,
            Some(-1) => Some(Swap::Unlimited),
            Some(n) if n > 0 => Some(Swap::Total(n as u64)),
            Some(n) => {
                return Err(self.err("linux.resources.memory.swap", format!("invalid size {n}")));
            }
        };
        if let Some(swap) = l.memory_swap {
            let Some(mem) = l.memory else {
                return Err(self.err(
                    "linux.resources.memory.swap",
                    "needs linux.resources.memory.limit (it is memory plus swap)",
                ));
            };
            if let Swap::Total(total) = swap
                && total < mem
            {
                return Err(self.err(
                    "linux.resources.memory.swap",
                    format!(
                        "{total} is less than linux.resources.memory.limit ({mem}): it is memory plus swap, not swap alone"
                    ),
                ));
            }
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            self.warn(
                "linux.resources.memory.kernel",
                "ignored: kernel memory limits are deprecated (runc ignores them too)",
            );
        }
        self.refuse(
            m.swappiness().is_some(),
            "linux.resources.memory.swappiness",
            "is not supported by palisade; remove it",
        )?;
        self.refuse(
            m.disable_oom_killer() == Some(true),
            "linux.resources.memory.disableOOMKiller",
            "is not supported: palisade leaves the OOM killer on",
        )?;
        self.refuse(
            m.use_hierarchy() == Some(false),
            "linux.resources.memory.useHierarchy",
            "false is not supported: memory accounting is always hierarchical",
        )?;
        self.refuse(
            m.check_before_update() == Some(true),
            "linux.resources.memory.checkBeforeUpdate",
            "is not supported: palisade does not update limits",
        )
    }

    fn cpu(&mut self, c: &LinuxCpu, l: &mut ResourceLimits) -> Result<(), OciError> {
        match c.shares() {
            None | Some(0) => {}
            // crun's (and runc's) cpu.shares -> cpu.weight conversion.
            Some(s @ 2..=262_144) => l.cpu_weight = Some((1 + ((s - 2) * 9999) / 262_142) as u16),
            Some(s) => {
                return Err(self.err(
                    "linux.resources.cpu.shares",
                    format!("{s} is out of range 2-262144"),
                ));
            }
        }
        let period = match c.period() {
            None | Some(0) => DEFAULT_PERIOD_US,
            Some(p) if CPU_PERIOD_RANGE.contains(&p) => p,
            Some(p) => {
                return Err(self.err(
                    "linux.resources.cpu.period",
                    format!("{p} is out of range 1000-1000000 (µs)"),
                ));
            }
        };
        // Without a quota a period limits nothing: there is nothing to apply.
        match c.quota() {
            None | Some(0) | Some(-1) => {}
            Some(q) if q >= CPU_MIN_QUOTA_US => {
                l.cpu = Some(CpuQuota {
                    quota_us: q as u64,
                    period_us: period,
                });
            }
            Some(q) => {
                return Err(self.err(
                    "linux.resources.cpu.quota",
                    format!("{q} is invalid: the kernel's minimum quota is 1000 µs (-1 for none)"),
                ));
            }
        }
        l.cpuset = self.id_list("linux.resources.cpu.cpus", c.cpus().as_deref())?;
        l.mems = self.id_list("linux.resources.cpu.mems", c.mems().as_deref())?;
        l.cpu_rt = self.realtime(c.realtime_runtime(), c.realtime_period())?;
        let unsupported = "is not supported by palisade; remove it";
        self.refuse(
            c.idle().is_some_and(|i| i != 0),
            "linux.resources.cpu.idle",
            unsupported,
        )?;
        self.refuse(
            c.burst().is_some(),
            "linux.resources.cpu.burst",
            unsupported,
        )
    }

    /// `realtimeRuntime` and `realtimePeriod` (µs) as real-time bandwidth;
    /// a runtime of 0 (or none) is none, as the kernel's default.
    fn realtime(
        &self,
        runtime: Option<i64>,
        period: Option<u64>,
    ) -> Result<Option<RtBandwidth>, OciError> {
        let period_us = match period {
            None | Some(0) => RT_PERIOD_US,
            Some(p) if RT_PERIODS_US.contains(&p) => p,
            Some(p) => {
                return Err(self.err(
                    "linux.resources.cpu.realtimePeriod",
                    format!(
                        "{p} is out of range {}-{} (µs)",
                        RT_PERIODS_US.start(),
                        RT_PERIODS_US.end()
                    ),
                ));
            }
        };
        match runtime {
            None | Some(0) => Ok(None),
            Some(r) if r > 0 && r as u64 <= period_us => Ok(Some(RtBandwidth {
                runtime_us: r as u64,
                period_us,
            })),
            Some(r) => Err(self.err(
                "linux.resources.cpu.realtimeRuntime",
                format!("{r} is invalid: between 1 and the period, {period_us} µs"),
            )),
        }
    }

    fn id_list(&self, field: &str, v: Option<&str>) -> Result<Option<String>, OciError> {
        match v {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => parse_id_list(s).map(Some).ok_or_else(|| {
                self.err(
                    field,
                    format!("invalid list {s:?} (expected e.g. \"0-1,3\")"),
                )
            }),
        }
    }

    fn block_io(&mut self, b: &LinuxBlockIo, l: &mut ResourceLimits) -> Result<(), OciError> {
        match b.weight() {
            None | Some(0) => {}
            // The inverse of ResourceLimits::blkio_weight: runc's v1 -> v2 mapping.
            Some(w @ 10..=1000) => {
                l.io_weight = Some((1 + (u32::from(w) - 10) * 9999 / 990) as u16)
            }
            Some(w) => {
                return Err(self.err(
                    "linux.resources.blockIO.weight",
                    format!("{w} is out of range 10-1000"),
                ));
            }
        }
        l.io_read_bps = self.rates(
            "linux.resources.blockIO.throttleReadBpsDevice",
            b.throttle_read_bps_device(),
        )?;
        l.io_write_bps = self.rates(
            "linux.resources.blockIO.throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
        )?;
        let unsupported = "is not supported by palisade; remove it";
        self.refuse(
            b.leaf_weight().is_some(),
            "linux.resources.blockIO.leafWeight",
            unsupported,
        )?;
        for (field, list) in [
            (
                "linux.resources.blockIO.weightDevice",
                b.weight_device().as_ref().map(Vec::len),
            ),
            (
                "linux.resources.blockIO.throttleReadIOPSDevice",
                b.throttle_read_iops_device().as_ref().map(Vec::len),
            ),
            (
                "linux.resources.blockIO.throttleWriteIOPSDevice",
                b.throttle_write_iops_device().as_ref().map(Vec::len),
            ),
        ] {
            self.refuse(list.is_some_and(|n| n > 0), field, unsupported)?;
        }
        Ok(())
    }

    fn rates(
        &self,
        field: &str,
        list: &Option<Vec<LinuxThrottleDevice>>,
    ) -> Result<Vec<DeviceRate>, OciError> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, d)| {
                let field = format!("{field}[{i}]");
                let (Ok(major), Ok(minor)) = (u32::try_from(d.major()), u32::try_from(d.minor()))
                else {
                    return Err(
                        self.err(field, format!("invalid device {}:{}", d.major(), d.minor()))
                    );
                };
                if d.rate() == 0 {
                    return Err(self.err(field, "rate must be greater than 0"));
                }
                Ok(DeviceRate {
                    device: Device::Number { major, minor },
                    bytes_per_sec: d.rate(),
                })
            })
            .collect()
    }
}
