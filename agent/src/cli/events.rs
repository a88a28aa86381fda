//! `palisade events`: denials and audit hits, as the kernel reports them.

use clap::Args;

use crate::runtime::{self, StateRoot};

#[derive(Debug, Args)]
#[command(about = "Print the policy's denials and audit hits (consumes them)")]
pub struct EventsArgs {
    /// Only this container's events.
    pub name: Option<String>,
    /// Keep printing new events until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(root: &StateRoot, args: EventsArgs) -> i32 {
    let result = runtime::events(root, args.follow, |e| {
        if args.name.as_ref().is_some_and(|n| *n != e.container) {
            return true;
        }
        if args.json {
            println!("{}", serde_json::to_string(&e).expect("json"));
        } else {
            let (kind, what) = match (&e.device, e.address.is_empty(), e.address.contains(':')) {
                // `c 7:0 rw`: the type where the protocol goes.
                (Some(d), _, _) => (d.kind, format!("{}:{} {}", d.major, d.minor, d.access)),
                (None, true, _) => (e.protocol, "-".to_string()),
                (None, false, true) => (e.protocol, format!("[{}]:{}", e.address, e.port)),
                (None, false, false) => (e.protocol, format!("{}:{}", e.address, e.port)),
            };
            println!(
                "{} {:<20} {:<8} {:<8} {:<4} {:<28} pid {} ({})",
                e.time, e.container, e.verdict, e.hook, kind, what, e.pid, e.comm
            );
        }
        true
    });
    match result {
        Ok(()) => 0,
        Err(e) => super::failed(e),
    }
}
