//! `palisade policy apply | show`: a running container's network and
//! device policy.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::{
    runtime::{
        self, StateRoot,
        journal::{Record, What},
    },
    spec::Policy,
};

#[derive(Debug, Args)]
#[command(about = "Replace or show a running container's network and device policy")]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Replace the network and device policy ([network], [devices])
    /// atomically: every connect, send, bind and device open is judged by
    /// the old rules or the new ones, never a mixture. The outbound rate
    /// (egress_rate, egress_burst) changes at once, or is added or removed.
    /// The OOM handler ([oom]) is the file's from then on (the agent
    /// re-reads it). A bad file changes nothing (exit 2).
    Apply {
        name: String,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the policy in force, read back from the kernel maps, with the
    /// container's counters and usage (CPU, switches, page faults, bytes
    /// and packets, connects and binds allowed).
    Show {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn execute(root: &StateRoot, args: PolicyArgs) -> i32 {
    match args.command {
        PolicyCommand::Apply { name, file } => {
            let (policy, text) = match Policy::load_with_text(&file) {
                Ok(loaded) => loaded,
                Err(e) => {
                    super::report(&e);
                    return super::EXIT_BAD_INPUT;
                }
            };
            if !policy.resources.is_empty() {
                eprintln!(
                    "palisade: warning: {}: [resources] is set when a container starts; not applied",
                    file.display()
                );
            }
            // `[oom]` is judged against the limits the container runs under.
            if let Ok(state) = root.load(&name) {
                if state.proc_view && !policy.view.proc {
                    eprintln!(
                        "palisade: warning: {}: [view] is set when a container starts; {name} keeps its /proc view",
                        file.display()
                    );
                }
                let mut in_force = policy.clone();
                in_force.resources = state.recipe.map(|r| r.launch.resources).unwrap_or_default();
                if let Err(e) = in_force.check_oom(&file) {
                    super::report(&e);
                    return super::EXIT_BAD_INPUT;
                }
            }
            match runtime::apply_policy(root, &name, &policy, &text) {
                Ok(()) => {
                    runtime::journal::note(root, Record::now(&name, What::PolicyChanged));
                    0
                }
                Err(e) => super::failed(e),
            }
        }
        PolicyCommand::Show { name, json } => match runtime::show_policy(root, &name) {
            Ok(shown) if json => {
                println!("{}", serde_json::to_string_pretty(&shown).expect("json"));
                0
            }
            Ok(shown) => {
                let in_force = &shown.kernel;
                println!(
                    "mode {}, generation {}",
                    if in_force.audit { "audit" } else { "enforce" },
                    in_force.generation
                );
                let c = &in_force.counters;
                println!(
                    "counters: connect denied {}, sendmsg denied {}, bind denied {}, accept dropped {}, sockets refused {}, devices denied {}, audited {}, events dropped {}",
                    c.connect_denied,
                    c.sendmsg_denied,
                    c.bind_denied,
                    c.accept_dropped,
                    c.sockets_refused,
                    c.devices_denied,
                    c.audited,
                    c.events_dropped
                );
                println!(
                    "sockets: raw {}, packet {}",
                    allowed(in_force.raw_sockets),
                    allowed(in_force.packet_sockets)
                );
                for (list, entries) in [
                    ("connect", &in_force.connect),
                    ("bind", &in_force.bind),
                    ("accept", &in_force.accept),
                ] {
                    match entries {
                        None => println!("{list}: no rules (everything allowed)"),
                        Some(entries) => {
                            println!("{list}:");
                            for e in entries {
                                println!("  {:<44} {}", e.prefix, e.rules.join(", then "));
                            }
                        }
                    }
                }
                print_egress(shown.egress.as_ref());
                print_usage(&shown.usage);
                match &in_force.devices {
                    None => println!("devices: no rules (everything allowed)"),
                    Some(rules) => println!("devices: {} (always enforced)", rules.join(", ")),
                }
                0
            }
            Err(e) => super::failed(e),
        },
    }
}

fn print_egress(egress: Option<&runtime::EgressShown>) {
    let Some(e) = egress else {
        println!("egress: not shaped");
        return;
    };
    println!(
        "egress: {} (burst {} bytes), class {}",
        e.rate, e.burst_bytes, e.class
    );
    for d in &e.devices {
        println!(
            "  {:<12} sent {} bytes {} packets, delayed {}, dropped {}, queued {} bytes",
            d.device, d.bytes, d.packets, d.delayed, d.dropped, d.backlog_bytes
        );
    }
}

fn print_usage(u: &crate::enforce::Usage) {
    println!(
        "usage: cpu {:.3} s, {} context switches, {} page faults, sent {} bytes {} packets, received {} bytes {} packets, {} connects and {} binds allowed",
        u.cpu_ns as f64 / 1e9,
        u.context_switches,
        u.page_faults,
        u.tx_bytes.total(),
        u.tx_packets.total(),
        u.rx_bytes.total(),
        u.rx_packets.total(),
        u.connects_allowed,
        u.binds_allowed
    );
}

fn allowed(yes: bool) -> &'static str {
    if yes { "allowed" } else { "refused" }
}
