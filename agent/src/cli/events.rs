//! `palisade events`: denials and audit hits, as the kernel reports them.

use clap::Args;

use crate::runtime::{self, StateRoot};

#[derive(Debug, Args)]
#[command(about = "Print the network policy's denials and audit hits (consumes them)")]
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
            let addr = match (e.address.is_empty(), e.address.contains(':')) {
                (true, _) => "-".to_string(),
                (false, true) => format!("[{}]:{}", e.address, e.port),
                (false, false) => format!("{}:{}", e.address, e.port),
            };
            println!(
                "{} {:<20} {:<8} {:<8} {:<4} {:<28} pid {} ({})",
                e.time, e.container, e.verdict, e.hook, e.protocol, addr, e.pid, e.comm
            );
        }
        true
    });
    match result {
        Ok(()) => 0,
        Err(e) => super::failed(e),
    }
}
