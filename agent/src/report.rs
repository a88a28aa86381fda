//! Where palisade's errors and warnings go: stderr, and, when the caller
//! names one with `--log` (the runc contract: conmon and containerd's shim
//! read it to tell their user why a runtime command failed), a log file,
//! as text lines or, with `--log-format json`, one JSON object a line:
//! `{"level":"error","msg":"…","time":"…"}`. With a log file,
//! warnings go only there.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
    sync::{Mutex, OnceLock},
};

struct Log {
    file: File,
    json: bool,
}

static LOG: OnceLock<Mutex<Log>> = OnceLock::new();

/// Sends every later error and warning to `path` too (appended).
pub fn log_to(path: &Path, json: bool) -> std::io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let _ = LOG.set(Mutex::new(Log { file, json }));
    Ok(())
}

fn emit(level: &str, message: &str) {
    let log = LOG.get();
    if level == "error" {
        eprintln!("palisade: {message}");
    } else if log.is_none() {
        // With a log, warnings go there only: a caller that names one
        // shows the runtime's stderr as its error.
        eprintln!("palisade: {level}: {message}");
    }
    let Some(log) = log else {
        return;
    };
    let Ok(mut log) = log.lock() else {
        return;
    };
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let line = if log.json {
        serde_json::json!({"level": level, "msg": message, "time": time}).to_string()
    } else {
        format!("time=\"{time}\" level={level} msg={message:?}")
    };
    let _ = writeln!(log.file, "{line}");
}

/// An error that ends the command.
pub fn error(message: &dyn std::fmt::Display) {
    emit("error", &message.to_string());
}

/// Something done differently from what was asked, said out loud.
pub fn warning(message: &dyn std::fmt::Display) {
    emit("warning", &message.to_string());
}
