//! `palisade ps | kill | rm | wait | logs`.

use std::io::Write;

use clap::Args;
use nix::sys::signal::Signal;

use crate::runtime::{self, State, StateRoot, Status};

#[derive(Debug, Args)]
#[command(about = "List containers")]
pub struct PsArgs {
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(about = "Send a signal to a container's first process")]
pub struct KillArgs {
    pub name: String,
    /// Signal name (KILL, SIGTERM, term…) or number.
    #[arg(short, long, default_value = "KILL", value_parser = parse_signal)]
    pub signal: Signal,
}

#[derive(Debug, Args)]
#[command(about = "Remove a container that has exited or is dead (or, with -f, kill it first)")]
pub struct RmArgs {
    pub name: String,
    /// Kill the container if it is running.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
#[command(about = "Wait for a container to exit; print and return its exit status")]
pub struct WaitArgs {
    pub name: String,
}

#[derive(Debug, Args)]
#[command(about = "Print a detached container's output")]
pub struct LogsArgs {
    pub name: String,
}

fn parse_signal(text: &str) -> Result<Signal, String> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {text:?}"))
}

/// How the container ended, for people.
fn status_text(s: &State) -> String {
    match (s.status, s.exit_status) {
        (Status::Exited, Some(code)) if s.oom_killed => format!("exited ({code}, OOM-killed)"),
        (Status::Exited, Some(code)) => format!("exited ({code})"),
        (Status::Dead, _) => format!("dead ({})", s.dead_reason.unwrap_or("unknown")),
        (status, _) => status.to_string(),
    }
}

fn time_text(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

pub fn ps(root: &StateRoot, args: PsArgs) -> i32 {
    let states = match runtime::ps(root) {
        Ok(s) => s,
        Err(e) => return super::failed(e),
    };
    if args.json {
        let rows: Vec<serde_json::Value> = states
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "pid": s.pid,
                    "status": s.status,
                    "reason": s.dead_reason,
                    "exit_status": s.exit_status,
                    "oom_killed": s.oom_killed,
                    "created": time_text(s.created),
                    "finished": s.finished.map(time_text),
                    "command": s.command,
                    "detached": s.detached,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        return 0;
    }
    // Columns as wide as their widest cell (names run to 64 characters, a
    // dead container's status carries its reason).
    let statuses: Vec<String> = states.iter().map(status_text).collect();
    let name_w = states.iter().map(|s| s.name.len()).fold(24, usize::max);
    let status_w = statuses.iter().map(String::len).fold(24, usize::max);
    println!(
        "{:<name_w$} {:>8}  {:<status_w$} {:<20}  COMMAND",
        "NAME", "PID", "STATUS", "CREATED"
    );
    for (s, status) in states.iter().zip(&statuses) {
        let pid = s.pid.map_or("-".to_string(), |p| p.to_string());
        println!(
            "{:<name_w$} {:>8}  {:<status_w$} {:<20}  {}",
            s.name,
            pid,
            status,
            time_text(s.created),
            s.command.join(" ")
        );
    }
    0
}

pub fn kill(root: &StateRoot, args: KillArgs) -> i32 {
    match runtime::kill(root, &args.name, args.signal) {
        Ok(()) => 0,
        Err(e) => super::failed(e),
    }
}

pub fn rm(root: &StateRoot, args: RmArgs) -> i32 {
    match runtime::remove(root, &args.name, args.force) {
        Ok(()) => 0,
        Err(e) => super::failed(e),
    }
}

pub fn wait(root: &StateRoot, args: WaitArgs) -> i32 {
    match runtime::wait(root, &args.name) {
        Ok(state) => {
            let code = state.exit_status.unwrap_or(runtime::EXIT_SETUP_FAILED);
            println!("{code}");
            code
        }
        Err(e) => super::failed(e),
    }
}

pub fn logs(root: &StateRoot, args: LogsArgs) -> i32 {
    match runtime::logs(root, &args.name) {
        Ok(bytes) => {
            let _ = std::io::stdout().write_all(&bytes);
            0
        }
        Err(e) => super::failed(e),
    }
}
