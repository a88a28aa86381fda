//! `palisade agent`: the long-running agent; for now, the Prometheus
//! metrics endpoint.

use std::net::SocketAddr;

use clap::Args;

use crate::{daemon, runtime::StateRoot};

#[derive(Debug, Args)]
#[command(about = "Run the agent: serve Prometheus metrics of every container")]
pub struct AgentArgs {
    /// Serve `/metrics` (Prometheus text format) on ADDR:PORT, e.g.
    /// 127.0.0.1:9464 (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: SocketAddr,
}

pub fn execute(root: &StateRoot, args: AgentArgs) -> i32 {
    let served = daemon::serve(root, args.metrics_addr, |bound| {
        // On stdout, so a supervisor (or a test) can read where it is.
        println!("serving metrics on http://{bound}/metrics");
    });
    match served {
        Ok(()) => 0,
        Err(e) => {
            super::report(&e);
            crate::runtime::EXIT_SETUP_FAILED
        }
    }
}
