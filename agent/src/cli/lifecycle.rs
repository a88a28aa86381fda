//! `palisade ps | kill | rm | wait | logs`.

use std::io::Write;

use clap::Args;
use nix::sys::signal::Signal;

use crate::runtime::{self, State, StateRoot, Status};

#[derive(Debug, Args)]
#[command(about = "List containers, or with a name the processes of one (runc's `ps ID`)")]
pub struct PsArgs {
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `json` is --json; `table` is the default.
    #[arg(short, long, value_name = "table|json", value_parser = ["table", "json"])]
    pub format: Option<String>,
    /// One container: list its processes' host pids (JSON: an array of
    /// pids, as runc prints them).
    pub name: Option<String>,
}

#[derive(Debug, Args)]
#[command(about = "Send a signal to a container's first process (with --all, to all of them)")]
pub struct KillArgs {
    pub name: String,
    /// Signal name (KILL, SIGTERM, term…) or number; default KILL.
    #[arg(value_parser = parse_signal, conflicts_with = "signal")]
    pub signal_arg: Option<Signal>,
    /// The same, as a flag.
    #[arg(short, long, value_parser = parse_signal)]
    pub signal: Option<Signal>,
    /// Signal every process of the container, not only its first (a
    /// container that has stopped has none, and that is not an error).
    #[arg(short, long)]
    pub all: bool,
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
        (Status::Running, _) if s.paused => "paused".to_string(),
        (Status::Running, _) if s.dead_reason.is_some() => {
            format!("running ({})", s.dead_reason.unwrap_or_default())
        }
        (status, _) => status.to_string(),
    }
}

fn time_text(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

pub fn ps(root: &StateRoot, args: PsArgs) -> i32 {
    let json = args.json || args.format.as_deref() == Some("json");
    if let Some(name) = &args.name {
        return processes(root, name, json);
    }
    let states = match runtime::ps(root) {
        Ok(s) => s,
        Err(e) => return super::failed(e),
    };
    // What each container that asked for its own /proc reads now.
    let served = states
        .iter()
        .any(|s| s.proc_view)
        .then(|| runtime::view::served(root))
        .flatten();
    let views: Vec<runtime::view::ViewState> = states
        .iter()
        .map(|s| runtime::view::state_of(s, served))
        .collect();
    if json {
        let rows: Vec<serde_json::Value> = states
            .iter()
            .zip(&views)
            .map(|(s, view)| {
                serde_json::json!({
                    "name": s.name,
                    "pid": s.pid,
                    "status": s.status,
                    "paused": s.paused,
                    "reason": s.dead_reason,
                    "exit_status": s.exit_status,
                    "oom_killed": s.oom_killed,
                    "created": time_text(s.created),
                    "finished": s.finished.map(time_text),
                    "command": s.command,
                    "detached": s.detached,
                    "proc_view": view,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        return 0;
    }
    // Columns as wide as their widest cell (names run to 64 characters, a
    // dead container's status carries its reason).
    let statuses: Vec<String> = states
        .iter()
        .zip(&views)
        .map(|(s, view)| match view {
            runtime::view::ViewState::Off => status_text(s),
            view => format!("{}, /proc view {}", status_text(s), view.as_str()),
        })
        .collect();
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

/// `ps NAME`: the container's processes.
fn processes(root: &StateRoot, name: &str, json: bool) -> i32 {
    let pids = match runtime::oci::processes(root, name) {
        Ok(p) => p,
        Err(e) => return super::failed(e),
    };
    if json {
        println!("{}", serde_json::to_string(&pids).expect("json"));
        return 0;
    }
    println!("{:>8}  COMMAND", "PID");
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let words: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        println!("{pid:>8}  {}", words.join(" "));
    }
    0
}

pub fn kill(root: &StateRoot, args: KillArgs) -> i32 {
    let signal = args.signal_arg.or(args.signal).unwrap_or(Signal::SIGKILL);
    let result = if args.all {
        runtime::oci::kill_all(root, &args.name, signal)
    } else {
        runtime::kill(root, &args.name, signal)
    };
    match result {
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
