//! Bridge networking (`--net bridge`): one host bridge, `palisade0`, with
//! the address 10.88.0.1/16; each container gets a veth pair (host end on
//! the bridge, `eth0` inside) and an address from 10.88.0.0/16, with a
//! default route to the host through the bridge. There is no NAT: the
//! container reaches the host and other containers, nothing beyond.
//!
//! The bridge and the leases are shared by every state root (there is one
//! per host), so they live under /run/palisade-net and are changed under
//! one lock. The bridge is removed when its last container leaves.

use std::{
    fs::{self, File, OpenOptions},
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use crate::sys::netlink::{Netlink, NetlinkError};

pub const BRIDGE: &str = "palisade0";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
pub const PREFIX: u8 = 16;
const NET_DIR: &str = "/run/palisade-net";

#[derive(Debug, Error)]
pub enum NetError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("no free {0} left")]
    Exhausted(&'static str),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Shaping(String),
}

/// An address leased to one container: a file named after it, created
/// exclusively, holding the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
}

pub(super) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> NetError + use<> {
    let path = path.to_path_buf();
    move |source| NetError::Io {
        action,
        path,
        source,
    }
}

/// Where the host-wide network state (leases, traffic classes, the lock) lives.
pub(super) fn net_dir() -> &'static Path {
    Path::new(NET_DIR)
}

fn leases_dir() -> PathBuf {
    net_dir().join("leases")
}

/// Leases the first free address for `owner` (its state root and name).
pub fn lease(owner: &str) -> Result<Lease, NetError> {
    let dir = leases_dir();
    fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    // 10.88.0.2 to 10.88.255.254; .0.1 is the bridge.
    for host in 2u32..0xffff {
        let addr = Ipv4Addr::from(u32::from(GATEWAY) & 0xffff_0000 | host);
        let path = dir.join(addr.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => {
                fs::write(&path, owner).map_err(io_error("write", &path))?;
                return Ok(Lease { addr });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error("create", &path)(e)),
        }
    }
    Err(NetError::Exhausted("address in 10.88.0.0/16"))
}

/// The addresses leased to `owner`.
pub fn leases_of(owner: &str) -> Vec<Ipv4Addr> {
    owned_in(&leases_dir(), owner)
}

/// The names (parsed as `T`) of the reservation files in `dir` whose
/// content is `owner`: leases here, traffic classes in `shaping`.
pub(super) fn owned_in<T: std::str::FromStr>(dir: &std::path::Path, owner: &str) -> Vec<T> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| fs::read_to_string(e.path()).is_ok_and(|o| o == owner))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

pub fn release(addr: Ipv4Addr) {
    let _ = fs::remove_file(leases_dir().join(addr.to_string()));
}

/// The host end's name: `pl` and a hash of the owner (15 bytes at most).
pub fn veth_name(owner: &str) -> String {
    let hash = owner.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("pl{:08x}", hash as u32)
}

/// The host-wide lock over the bridge, the leases and the shaping qdiscs.
pub(super) fn lock() -> Result<Flock<File>, NetError> {
    fs::create_dir_all(NET_DIR).map_err(io_error("create", Path::new(NET_DIR)))?;
    let path = Path::new(NET_DIR).join("lock");
    let file = File::create(&path).map_err(io_error("create", &path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| NetError::Io {
        action: "lock",
        path,
        source: e.into(),
    })
}

/// Plugs the network namespace of `pid` into the bridge: a veth pair whose
/// host end `veth` joins the bridge and whose other end is `eth0` there.
pub fn attach(pid: i32, veth: &str) -> Result<(), NetError> {
    let _lock = lock()?;
    let mut nl = Netlink::host()?;
    if nl.link(BRIDGE)?.is_none() {
        nl.add_bridge(BRIDGE)?;
        nl.add_ipv4(BRIDGE, GATEWAY, PREFIX)?;
        nl.set_up(BRIDGE)?;
    }
    nl.add_veth(veth, "eth0", pid)?;
    nl.set_master_up(veth, BRIDGE)?;
    Ok(())
}

/// Removes the host end (and so the pair) if it is still there, and the
/// bridge once no container is plugged into it.
pub fn detach(veth: &str) {
    let Ok(_lock) = lock() else { return };
    let Ok(mut nl) = Netlink::host() else { return };
    if nl.link(veth).is_ok_and(|l| l.is_some()) {
        let _ = nl.del_link(veth);
    }
    let Ok(Some(bridge)) = nl.link(BRIDGE) else {
        return;
    };
    let ports = nl.links().map(|all| {
        all.iter()
            .filter(|l| l.master == Some(bridge.index))
            .count()
    });
    if matches!(ports, Ok(0)) {
        let _ = nl.del_link(BRIDGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_differ() {
        let a = veth_name("/run/palisade/web");
        assert!(a.len() <= 15 && a.starts_with("pl"));
        assert_ne!(a, veth_name("/run/palisade/db"));
    }
}
