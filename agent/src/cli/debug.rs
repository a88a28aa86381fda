//! `palisade debug`: hidden commands that tell the tests and xtask what
//! palisade computes, so they never recompute it.

use clap::{Args, Subcommand};

use crate::{enforce::Pins, runtime::StateRoot};

#[derive(Debug, Args)]
#[command(about = "Internals, for the tests and xtask")]
pub struct DebugArgs {
    #[command(subcommand)]
    pub command: DebugCommand,
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the bpffs directory that holds the state root's pins (it may
    /// not exist).
    PinDir,
    /// Classify host processes by an agent configuration's rules until
    /// SIGTERM or SIGINT (temporary: `palisade agent --config` replaces it).
    Classify {
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

pub fn execute(root: &StateRoot, args: DebugArgs) -> i32 {
    match args.command {
        DebugCommand::PinDir => {
            println!("{}", Pins::for_state_root(root.dir()).dir().display());
            0
        }
        DebugCommand::Classify { config } => classify(root, &config),
    }
}

fn classify(root: &StateRoot, config: &std::path::Path) -> i32 {
    let config = match crate::spec::AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("palisade: {e}");
            return 2;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let ctx = crate::daemon::classify::standalone_ctx(root);
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        println!("classifying");
        tokio::select! {
            r = crate::daemon::classify::run(ctx, config.classify) => match r {
                Ok(()) => { term.recv().await; 0 }
                Err(e) => { eprintln!("palisade: {e}"); 1 }
            },
            _ = term.recv() => 0,
            _ = tokio::signal::ctrl_c() => 0,
        }
    })
}
