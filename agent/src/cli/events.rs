//! `palisade events`: what happened to the containers. With the agent
//! running, its journal: lifecycle, denials, OOM actions and
//! classifications, the same for every reader. Without it, the kernel's
//! denials straight from the ring buffer (which consumes them), as the
//! CLI said before there was an agent.

use std::time::Duration;

use clap::Args;

use crate::{
    daemon::{self, api::Request},
    runtime::{
        self, EventView, StateRoot,
        journal::{Record, Tail, What},
    },
};

#[derive(Debug, Args)]
#[command(
    about = "Print container events: lifecycle, denials, OOM actions (from the agent's journal)"
)]
pub struct EventsArgs {
    /// Only this container's events.
    pub name: Option<String>,
    /// Keep printing new events until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Start with the events of this recent past (e.g. `10m`, `1h`), from
    /// the journal on disk. Without it, `--follow` prints only new events
    /// and a plain `events` prints all the journal keeps.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
}

pub fn execute(root: &StateRoot, args: EventsArgs) -> i32 {
    let print = |r: Record| {
        if args.name.as_ref().is_none_or(|n| *n == r.container) {
            print_record(&r, args.json);
        }
        true
    };
    if let Some(stream) = daemon::api::connect(root) {
        let request = Request::Events {
            since_secs: args.since.map(|d| d.as_secs_f64()),
            follow: args.follow,
        };
        return match daemon::api::events(root, stream, &request, print) {
            Ok(()) => 0,
            Err(e) => {
                super::report(&e);
                crate::runtime::EXIT_SETUP_FAILED
            }
        };
    }
    eprintln!(
        "palisade: no agent is running for {}: reading the kernel's denials directly (this consumes them; lifecycle and OOM events are in the journal, which --since reads)",
        root.dir().display()
    );
    if let Some(since) = args.since {
        for r in Tail::since(root, since).read() {
            print(r);
        }
    }
    let result = runtime::events(root, args.follow, |e: EventView| print(Record::denial(&e)));
    match result {
        Ok(()) => 0,
        Err(e) => super::failed(e),
    }
}

fn print_record(r: &Record, json: bool) {
    if json {
        println!("{}", r.to_line());
        return;
    }
    let detail = match &r.what {
        What::Denial(d) => {
            let (kind, what) = match (&d.device, d.address.is_empty(), d.address.contains(':')) {
                // `c 7:0 rw`: the type where the protocol goes.
                (Some(dev), _, _) => (
                    dev.kind.as_str(),
                    format!("{}:{} {}", dev.major, dev.minor, dev.access),
                ),
                (None, true, _) => (d.protocol.as_str(), "-".to_string()),
                (None, false, true) => (d.protocol.as_str(), format!("[{}]:{}", d.address, d.port)),
                (None, false, false) => (d.protocol.as_str(), format!("{}:{}", d.address, d.port)),
            };
            format!(
                "{:<8} {:<8} {:<4} {:<28} pid {} ({})",
                d.verdict, d.hook, kind, what, d.pid, d.comm
            )
        }
        What::Created { pid } => format!(
            "created  pid {}",
            pid.map_or("-".to_string(), |p| p.to_string())
        ),
        What::Started { pid } => format!("started  pid {pid}"),
        What::Exited {
            status,
            signal,
            oom,
        } => {
            let how = match (status, signal) {
                (Some(s), _) => format!("status {s}"),
                (None, Some(sig)) => format!("signal {sig}"),
                (None, None) => "status unknown".to_string(),
            };
            format!("exited   {how}{}", if *oom { " (OOM)" } else { "" })
        }
        What::Removed => "removed".to_string(),
        What::PolicyChanged => "policy   changed".to_string(),
        What::OomAction(a) => format!(
            "oom      {} at {} after {} us: {}",
            a.action, a.condition, a.latency_us, a.detail
        ),
        What::Classified(c) => format!(
            "classified pid {} uid {} gid {} {} (rule {}, {} us{})",
            c.pid,
            c.uid,
            c.gid,
            c.exe,
            c.rule,
            c.latency_us,
            if c.held { ", held" } else { "" }
        ),
    };
    println!("{} {:<20} {detail}", r.time, r.container);
}
