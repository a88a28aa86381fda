//! `palisade stats`: per container, what it consumed and what was refused,
//! as a table (refreshed in place with --watch) or JSON.

use std::{io::Write, time::Duration};

use clap::Args;

use crate::{
    accounting::{self, ContainerStats},
    runtime::StateRoot,
};

#[derive(Debug, Args)]
#[command(about = "Show containers' CPU, memory, network and denials")]
pub struct StatsArgs {
    /// Containers to show (default: every container of the state root).
    pub names: Vec<String>,
    /// Print JSON: an array with one object per container.
    #[arg(long)]
    pub json: bool,
    /// Refresh every second until interrupted (the table in place; JSON
    /// as one array per line).
    #[arg(long)]
    pub watch: bool,
}

/// The CPU % of a one-shot `stats` is measured over this long.
const SAMPLE: Duration = Duration::from_millis(500);
const WATCH: Duration = Duration::from_secs(1);

pub fn execute(root: &StateRoot, args: StatsArgs) -> i32 {
    let interval = if args.watch { WATCH } else { SAMPLE };
    loop {
        let all = match accounting::stats(root, &args.names, Some(interval)) {
            Ok(s) => s,
            Err(e) => return super::failed(e),
        };
        let mut out = std::io::stdout().lock();
        let written = if args.json {
            let json = if args.watch {
                serde_json::to_string(&all)
            } else {
                serde_json::to_string_pretty(&all)
            };
            writeln!(out, "{}", json.expect("json"))
        } else {
            if args.watch {
                // Home and clear: the table is redrawn in place.
                let _ = write!(out, "\x1b[H\x1b[2J");
            }
            write!(out, "{}", table(&all))
        };
        if written.and_then(|()| out.flush()).is_err() || !args.watch {
            // A closed pipe ends --watch quietly.
            return 0;
        }
    }
}

/// The table `stats` prints: one row per container.
pub fn table(all: &[ContainerStats]) -> String {
    let mut text = format!(
        "{:<24} {:<8} {:>7} {:>21} {:>21} {:>6} {:>7} {:>9}\n",
        "NAME", "STATUS", "CPU %", "MEM USAGE / LIMIT", "NET RX / TX", "PIDS", "DENIED", "SHAPED"
    );
    for s in all {
        let dash = || "-".to_string();
        let cgroup = s.cgroup.as_ref();
        let memory = cgroup.and_then(|c| c.memory_bytes).map_or_else(dash, bytes);
        let limit = cgroup
            .and_then(|c| c.memory_limit_bytes)
            .map_or_else(|| "unlimited".to_string(), bytes);
        let net = s.usage.as_ref().map_or_else(dash, |u| {
            format!(
                "{} / {}",
                bytes(u.rx_bytes.total()),
                bytes(u.tx_bytes.total())
            )
        });
        let denied = s.denied.as_ref().map_or_else(dash, |d| {
            (d.connect_denied
                + d.sendmsg_denied
                + d.bind_denied
                + d.accept_dropped
                + d.sockets_refused
                + d.devices_denied)
                .to_string()
        });
        let shaped = s.egress.as_ref().map_or_else(dash, |e| {
            crate::spec::DisplayRate(e.rate_bits_per_second).to_string()
        });
        text.push_str(&format!(
            "{:<24} {:<8} {:>7} {:>21} {:>21} {:>6} {:>7} {:>9}\n",
            s.name,
            s.status.to_string(),
            s.cpu_percent.map_or_else(dash, |p| format!("{p:.1}")),
            if s.cgroup.is_some() {
                format!("{memory} / {limit}")
            } else {
                dash()
            },
            net,
            cgroup
                .and_then(|c| c.pids)
                .map_or_else(dash, |p| p.to_string()),
            denied,
            shaped,
        ));
    }
    text
}

/// Bytes as people read them: 512B, 1.5KiB, 20.0MiB.
fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.1}{}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(20 << 20), "20.0MiB");
    }
}
