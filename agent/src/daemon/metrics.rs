//! The long-running agent. For now it is the metrics endpoint: an HTTP
//! server whose `/metrics` is a fresh stats snapshot of the state root's
//! containers in the Prometheus text format, taken at each scrape (so an
//! idle agent does nothing at all between scrapes).

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use thiserror::Error;

use crate::{accounting::metrics, runtime::StateRoot};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` on `addr` until the process is ended. `ready` is
/// called with the bound address (the port is the kernel's pick for 0).
pub fn serve(
    root: &StateRoot,
    addr: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), AgentError> {
    let listener = TcpListener::bind(addr).map_err(|source| AgentError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AgentError::Listen { addr, source })?;
    ready(bound);
    for stream in listener.incoming() {
        // A client that goes away is its own problem, never the agent's.
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        std::thread::spawn(move || {
            let _ = answer(&root, stream);
        });
    }
    Ok(())
}

fn answer(root: &StateRoot, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut words = request.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => match crate::accounting::stats(root, &[], None) {
            Ok(all) => ("200 OK", metrics::CONTENT_TYPE, metrics::render(&all)),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                format!("palisade: {e}\n"),
            ),
        },
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "palisade agent: metrics at /metrics\n".to_string(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
