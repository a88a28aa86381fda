//! `palisade agent`: the resident agent (see `daemon`), and `palisade
//! agent status`, which asks a running one what it does.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Subcommand};

use crate::{daemon, runtime::StateRoot};

#[derive(Debug, Args)]
#[command(
    about = "Run the agent: metrics, the events journal and its subscribers, OOM handling, classification",
    args_conflicts_with_subcommands = true
)]
pub struct AgentArgs {
    /// Serve `/metrics` (Prometheus text format) on ADDR:PORT, e.g.
    /// 127.0.0.1:9464 (port 0: any free port, printed at start). Without
    /// it, no HTTP server.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,

    /// The agent's configuration (TOML): `[[classify]]` rules. Refused
    /// whole, with file and line, if any of it is wrong.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<AgentCommand>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Ask the running agent what it does (JSON).
    Status,
}

pub fn execute(root: &StateRoot, args: AgentArgs, json_logs: bool) -> i32 {
    if let Some(AgentCommand::Status) = args.command {
        return status(root);
    }
    let config = match &args.config {
        Some(path) => match crate::spec::AgentConfig::load(path) {
            Ok(config) => config,
            Err(e) => {
                super::report(&e);
                return super::EXIT_BAD_INPUT;
            }
        },
        None => crate::spec::AgentConfig::default(),
    };
    init_logs(json_logs);
    let options = daemon::Options {
        metrics_addr: args.metrics_addr,
        classify: config.classify,
    };
    let served = daemon::run(root, options, |bound| {
        // One line on stdout, so a supervisor (or a test) can read where it
        // is; a reader that has gone away is no reason to stop.
        use std::io::Write as _;
        let line = match bound {
            Some(bound) => format!("serving metrics on http://{bound}/metrics"),
            None => format!(
                "agent ready; API socket {}",
                daemon::socket_path(root).display()
            ),
        };
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    });
    match served {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            super::report(&e);
            crate::runtime::EXIT_SETUP_FAILED
        }
    }
}

/// The agent logs through `tracing` to stderr: text, or one JSON object a
/// line with `--log-format json`; `PALISADE_LOG` filters (default `info`).
/// The kernel programs' aya-log records arrive through the `log` bridge.
fn init_logs(json: bool) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn status(root: &StateRoot) -> i32 {
    let Some(stream) = daemon::api::connect(root) else {
        super::report(&format!(
            "no agent is running for the state root {} (no answer on {})",
            root.dir().display(),
            daemon::socket_path(root).display()
        ));
        return crate::runtime::EXIT_SETUP_FAILED;
    };
    match daemon::api::status(root, stream) {
        Ok(info) => {
            println!("{}", serde_json::to_string_pretty(&info).expect("json"));
            0
        }
        Err(e) => {
            super::report(&e);
            crate::runtime::EXIT_SETUP_FAILED
        }
    }
}
