//! `palisade check`: what this host offers palisade (tried, not assumed)
//! and which of its features are therefore available; exits
//! [`crate::exit::UNSUPPORTED`] if something `run` needs is missing.

use clap::Args;
use serde_json::json;

use crate::{
    checkpoint::track::Backend,
    runtime::probe::{self, Probe},
};

#[derive(Debug, Args)]
#[command(
    about = "Say what this host offers palisade (BPF program and attach types, maps, tracepoints, cgroup layout and controllers, namespaces, dirty tracking) and which features are available; exit 1 if `run` cannot work here"
)]
pub struct CheckArgs {
    /// One JSON object: {"kernel", "cgroups", "probes", "features", "run",
    /// "dirty_tracking": [{"backend", "available", "reason", "default"}]}.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(args: CheckArgs) -> i32 {
    // Forking probes first: the dirty-tracking ones may start threads.
    let mut report = probe::probe();
    let best = Backend::best();
    let backends: Vec<(Backend, Result<(), String>)> = Backend::ALL
        .into_iter()
        .map(|b| (b, b.available()))
        .collect();
    report.probes.push(Probe::noted(
        "checkpoint",
        "dirty_tracking",
        if best == Backend::Full {
            Err("only full copies: no write-tracking backend works here".into())
        } else {
            Ok(format!("{} (the default)", best.name()))
        },
    ));
    let features = probe::features(&report.probes);
    let run = probe::run_possible(&features);
    let status = probe::exit_status(&features);
    if args.json {
        let dirty: Vec<serde_json::Value> = backends
            .iter()
            .map(|(b, r)| {
                json!({
                    "backend": b.name(),
                    "available": r.is_ok(),
                    "reason": r.as_ref().err(),
                    "default": *b == best,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "kernel": report.kernel,
                "cgroups": report.cgroups,
                "probes": report.probes,
                "features": features,
                "run": run,
                "dirty_tracking": dirty,
            })
        );
        return status;
    }
    println!("kernel: {}", report.kernel);
    match &report.cgroups {
        Some(layout) => {
            println!("cgroups: {}", probe::layout_name(layout.layout));
            if let Some(unified) = &layout.unified {
                let controllers = if layout.v2_controllers.is_empty() {
                    "no controllers".to_string()
                } else {
                    layout.v2_controllers.join(" ")
                };
                println!("  cgroup2 {:<28} {controllers}", unified.display());
            }
            for h in &layout.v1 {
                println!(
                    "  v1      {:<28} {}",
                    h.mount.display(),
                    h.controllers.join(" ")
                );
            }
        }
        None => println!("cgroups: cannot read /proc/self/mountinfo"),
    }
    println!("kernel interfaces (tried):");
    for p in &report.probes {
        let verdict = match (p.available, &p.reason) {
            (true, None) => "yes".to_string(),
            (true, Some(note)) => format!("yes: {note}"),
            (false, reason) => format!("no: {}", reason.as_deref().unwrap_or("unavailable")),
        };
        println!("  {:<10} {:<34} {verdict}", p.area, p.name);
    }
    println!("palisade features:");
    for f in &features {
        let verdict = match &f.reason {
            None => "yes".to_string(),
            Some(why) => format!("no: {why}"),
        };
        println!("  {:<40} {verdict}", f.name);
    }
    println!("dirty tracking (checkpoint --pre-dump --track BACKEND):");
    for (b, r) in backends {
        let verdict = match r {
            Ok(()) if b == best => "yes (the default)".to_string(),
            Ok(()) => "yes".to_string(),
            Err(why) => format!("no: {why}"),
        };
        println!("  {:<13} {verdict}", b.name());
    }
    if !run {
        crate::report::error(&"this host lacks what `palisade run` needs (see `run` above)");
    }
    status
}
