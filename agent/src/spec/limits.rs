//! The limits a container runs under, as the job inside reads them from
//! `/run/palisade/limits.json`: its resource limits, outbound rate and a
//! summary of its network and device policy. Pure: built from a policy
//! and its resource limits; the runtime writes it and keeps it current.
//! `null` means no limit.

use serde::{Deserialize, Serialize};

use super::{Egress, Policy, ResourceLimits, Rule, Swap};

/// The whole document (its fields are documented in the README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub container: String,
    /// 1 at start, one more at each change (`policy apply`, `update`).
    pub generation: u64,
    /// When it was last written, in seconds since the epoch.
    pub updated: u64,
    pub memory: Memory,
    pub cpu: Cpu,
    pub pids: Pids,
    pub egress: EgressLimit,
    pub network: Network,
    pub devices: Devices,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Hard limit.
    pub limit_bytes: Option<u64>,
    /// Soft limit (reclaim starts above it).
    pub high_bytes: Option<u64>,
    /// Memory plus swap (docker's `--memory-swap`); `null`: unlimited or
    /// not set.
    pub memory_plus_swap_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// The CFS quota in CPUs (`0.5`: half of one CPU).
    pub cpus: Option<f64>,
    pub quota_us: Option<u64>,
    pub period_us: Option<u64>,
    /// Relative weight, 1-10000 (100 is the default share).
    pub weight: Option<u16>,
    /// Real-time time its SCHED_FIFO/SCHED_RR tasks may take together
    /// every `rt_period_us`; `null`: none (they cannot run real-time).
    pub rt_runtime_us: Option<u64>,
    pub rt_period_us: Option<u64>,
    /// CPUs it may run on (`"0-1"`), and memory nodes.
    pub cpuset: Option<String>,
    pub mems: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pids {
    pub max: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EgressLimit {
    /// Outbound payload rate; `null`: not shaped.
    pub rate_bytes_per_sec: Option<u64>,
    pub rate_bits_per_sec: Option<u64>,
    pub burst_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// `enforce`, or `audit` (refusals are reported, nothing is refused).
    pub mode: String,
    /// Each rule list as the policy gives it, in order; `null`: that
    /// direction is not restricted.
    pub connect: Option<Vec<String>>,
    pub bind: Option<Vec<String>>,
    pub accept: Option<Vec<String>>,
    /// Kinds of socket refused at `socket()`: `raw`, `packet`, families.
    pub sockets_denied: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    /// Whether palisade's default allowlist (null, zero, tty…) applies.
    pub defaults: bool,
    /// Rules beyond the defaults (`c 1:3 rwm`), the container's own too.
    pub allow: Vec<String>,
}

impl Limits {
    /// The first document of a container starting under `policy` (whose
    /// `devices.allow` includes the container's own device rules).
    pub fn new(container: &str, policy: &Policy, now: u64) -> Self {
        let mut limits = Self {
            container: container.to_string(),
            generation: 1,
            updated: now,
            memory: Memory {
                limit_bytes: None,
                high_bytes: None,
                memory_plus_swap_bytes: None,
            },
            cpu: Cpu {
                cpus: None,
                quota_us: None,
                period_us: None,
                weight: None,
                rt_runtime_us: None,
                rt_period_us: None,
                cpuset: None,
                mems: None,
            },
            pids: Pids { max: None },
            egress: EgressLimit {
                rate_bytes_per_sec: None,
                rate_bits_per_sec: None,
                burst_bytes: None,
            },
            network: Network {
                mode: String::new(),
                connect: None,
                bind: None,
                accept: None,
                sockets_denied: Vec::new(),
            },
            devices: Devices {
                defaults: true,
                allow: Vec::new(),
            },
        };
        limits.set_resources(&policy.resources);
        limits.set_policy(policy);
        limits
    }

    /// Takes the resource limits in force (all of them, not a change).
    pub fn set_resources(&mut self, r: &ResourceLimits) {
        self.memory = Memory {
            limit_bytes: r.memory,
            high_bytes: r.memory_high,
            memory_plus_swap_bytes: match r.memory_swap {
                Some(Swap::Total(total)) => Some(total),
                Some(Swap::Unlimited) | None => None,
            },
        };
        self.cpu = Cpu {
            cpus: r.cpu.map(|q| q.quota_us as f64 / q.period_us as f64),
            quota_us: r.cpu.map(|q| q.quota_us),
            period_us: r.cpu.map(|q| q.period_us),
            weight: r.cpu_weight,
            rt_runtime_us: r.cpu_rt.map(|rt| rt.runtime_us),
            rt_period_us: r.cpu_rt.map(|rt| rt.period_us),
            cpuset: r.cpuset.clone(),
            mems: r.mems.clone(),
        };
        self.pids = Pids { max: r.pids };
    }

    /// Takes a change of resource limits (runc's `update`): the fields it
    /// sets replace the old ones, the others stay.
    pub fn change_resources(&mut self, r: &ResourceLimits) {
        let m = &mut self.memory;
        m.limit_bytes = r.memory.or(m.limit_bytes);
        m.high_bytes = r.memory_high.or(m.high_bytes);
        m.memory_plus_swap_bytes = match r.memory_swap {
            Some(Swap::Total(total)) => Some(total),
            Some(Swap::Unlimited) => None,
            None => m.memory_plus_swap_bytes,
        };
        let c = &mut self.cpu;
        if let Some(q) = r.cpu {
            c.cpus = Some(q.quota_us as f64 / q.period_us as f64);
            c.quota_us = Some(q.quota_us);
            c.period_us = Some(q.period_us);
        }
        c.weight = r.cpu_weight.or(c.weight);
        if let Some(rt) = r.cpu_rt {
            c.rt_runtime_us = Some(rt.runtime_us);
            c.rt_period_us = Some(rt.period_us);
        }
        c.cpuset = r.cpuset.clone().or(c.cpuset.take());
        c.mems = r.mems.clone().or(c.mems.take());
        self.pids.max = r.pids.or(self.pids.max);
    }

    /// Takes the network (with the outbound rate) and device policy in
    /// force; resources are left as they are (`policy apply` does not
    /// change them).
    pub fn set_policy(&mut self, policy: &Policy) {
        let net = &policy.network;
        let list = |rules: &Option<Vec<Rule>>| {
            rules
                .as_ref()
                .map(|l| l.iter().map(ToString::to_string).collect())
        };
        self.network = Network {
            mode: if net.audit { "audit" } else { "enforce" }.into(),
            connect: list(&net.connect),
            bind: list(&net.bind),
            accept: list(&net.accept),
            sockets_denied: net.sockets.denied_names(),
        };
        self.set_egress(net.egress);
        self.devices = Devices {
            defaults: policy.devices.defaults,
            allow: policy
                .devices
                .allow
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
    }

    fn set_egress(&mut self, egress: Option<Egress>) {
        self.egress = EgressLimit {
            rate_bytes_per_sec: egress.map(|e| e.rate / 8),
            rate_bits_per_sec: egress.map(|e| e.rate),
            burst_bytes: egress.map(|e| e.burst),
        };
    }

    /// The next version: one generation on, written at `now`.
    pub fn touched(mut self, now: u64) -> Self {
        self.generation += 1;
        self.updated = now;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CpuQuota, Rule};

    #[test]
    fn no_limit_is_null_and_policy_lists_are_kept_as_rules() {
        let mut policy = Policy::default();
        policy.network.connect = Some(vec![
            Rule::parse("allow tcp 127.0.0.1/32:80").unwrap(),
            Rule::parse("deny any").unwrap(),
        ]);
        policy.resources.memory = Some(64 << 20);
        policy.resources.cpu = Some(CpuQuota {
            quota_us: 50_000,
            period_us: 100_000,
        });
        let limits = Limits::new("web", &policy, 7);
        let json = serde_json::to_value(&limits).unwrap();
        assert_eq!(json["memory"]["limit_bytes"], 64 << 20);
        assert_eq!(json["memory"]["high_bytes"], serde_json::Value::Null);
        assert_eq!(json["cpu"]["cpus"], 0.5);
        assert_eq!(json["pids"]["max"], serde_json::Value::Null);
        assert_eq!(
            json["egress"]["rate_bytes_per_sec"],
            serde_json::Value::Null
        );
        assert_eq!(json["network"]["bind"], serde_json::Value::Null);
        assert_eq!(json["network"]["mode"], "enforce");
        let connect = json["network"]["connect"].as_array().unwrap();
        assert_eq!(connect.len(), 2);
        assert!(connect[1].as_str().unwrap().starts_with("deny"));
        assert_eq!(limits.clone().touched(9).generation, 2);
        let mut changed = limits.clone();
        changed.change_resources(&ResourceLimits {
            pids: Some(20),
            ..Default::default()
        });
        assert_eq!(changed.pids.max, Some(20));
        assert_eq!(changed.memory.limit_bytes, Some(64 << 20));
    }
}
