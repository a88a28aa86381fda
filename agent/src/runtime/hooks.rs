//! OCI lifecycle hooks: host programs run with the container's state (the
//! OCI state JSON) on stdin, each within its timeout.

use std::{
    io::{Read, Write},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{RuntimeError, State, oci};
use crate::spec::HookCommand;

/// How much of a failed hook's output an error quotes.
const QUOTED: usize = 4096;

/// Runs `hooks` (of the hook point `phase`) in order with `state` on
/// stdin; the first failure stops them and is returned.
pub(super) fn run(phase: &str, hooks: &[HookCommand], state: &State) -> Result<(), RuntimeError> {
    if hooks.is_empty() {
        return Ok(());
    }
    let input = oci::state_json(state).to_string();
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, &input).map_err(|why| {
            RuntimeError::BadInput(format!(
                "hook {phase}[{i}] ({}) failed: {why}",
                hook.path.display()
            ))
        })?;
    }
    Ok(())
}

fn run_one(hook: &HookCommand, input: &str) -> Result<(), String> {
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    // A hook that does not read its stdin is fine: a broken pipe is not a
    // failure.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let mut stderr = child.stderr.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(QUOTED as u64).read_to_end(&mut text);
        // Drain the rest so the hook never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&text).trim().to_string()
    });
    let deadline = hook
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(u64::from(t)));
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if deadline.is_some_and(|d| Instant::now() > d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {} s",
                    hook.timeout.unwrap_or_default()
                ));
            }
            None => thread::sleep(Duration::from_millis(2)),
        }
    };
    let said = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(if said.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {said}")
    })
}
