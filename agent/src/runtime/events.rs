//! `palisade events`: the denials (and audit hits) the kernel programs put
//! in the pinned `EVENTS` ring buffer, with the container each came from.
//! Reading consumes them: there is one buffer per build and state root.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use palisade_common::{
    DEVICE_BLOCK, EVENT_AUDITED, Event, FAMILY_V4, FAMILY_V6, HOOK_ACCEPT, HOOK_BIND, HOOK_CONNECT,
    HOOK_DEVICE, HOOK_SENDMSG, HOOK_SOCK_CREATE, PROTO_TCP, PROTO_UDP,
};
use serde::Serialize;

use super::{RuntimeError, StateRoot};
use crate::{
    enforce::{self, Pins},
    spec::access_letters,
};

/// One event, for people and for `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    /// RFC 3339, milliseconds.
    pub time: String,
    /// The container's name (or `cgroup:ID` if it is gone).
    pub container: String,
    pub pid: u32,
    pub comm: String,
    pub hook: &'static str,
    pub protocol: &'static str,
    /// The peer (connect, sendmsg, accept) or local (bind) address.
    pub address: String,
    pub port: u16,
    /// `denied` or `audited` (would have been denied).
    pub verdict: &'static str,
    /// The device and the access asked for (hook `device` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceView>,
    /// `time`, as a clock value.
    #[serde(skip)]
    pub at: SystemTime,
}

/// The device of a `device` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    /// `c` (character) or `b` (block).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub major: u32,
    pub minor: u32,
    /// The access refused: letters of `r`, `w` and `m`.
    pub access: String,
}

impl std::fmt::Display for DeviceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}:{} {}",
            self.kind, self.major, self.minor, self.access
        )
    }
}

/// The root's kernel events, as a reader that can wait for them: the ring
/// buffer of the root's pinned object, opened again when a new one is
/// pinned (it is made with the first container of the root and goes once
/// the last is gone).
pub struct KernelEvents {
    root: StateRoot,
    pins: Pins,
    ring: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    ring_id: Option<u32>,
    names: HashMap<u64, String>,
}

impl KernelEvents {
    pub fn open(root: &StateRoot) -> Result<Self, RuntimeError> {
        let pins = Pins::for_state_root(root.dir());
        Ok(Self {
            ring: enforce::open_events(&pins)?,
            ring_id: enforce::events_ring_id(&pins),
            names: names(root),
            root: root.clone(),
            pins,
        })
    }

    /// The next buffered event, consuming it.
    pub fn take(&mut self) -> Option<EventView> {
        loop {
            let ring = self.ring.as_mut()?;
            let item = ring.next()?;
            let Some(event) = read_event(&item) else {
                continue;
            };
            drop(item);
            if !self.names.contains_key(&event.cgroup) {
                self.names = names(&self.root);
            }
            return Some(view(&event, &self.names));
        }
    }

    /// Opens the root's ring again if another one is pinned now; true if
    /// it did.
    pub fn refresh(&mut self) -> Result<bool, RuntimeError> {
        let pinned = enforce::events_ring_id(&self.pins);
        if pinned == self.ring_id {
            return Ok(false);
        }
        self.ring = enforce::open_events(&self.pins)?;
        self.ring_id = pinned;
        Ok(true)
    }

    /// The ring's descriptor, readable when events are buffered (`None`
    /// while the root has no ring).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.ring.as_ref().map(|r| r.as_fd())
    }
}

/// Reads events: what is buffered now, then (with `follow`) new ones as
/// they come, passing each to `out` until it returns false.
pub fn events(
    root: &StateRoot,
    follow: bool,
    mut out: impl FnMut(EventView) -> bool,
) -> Result<(), RuntimeError> {
    let mut kernel = KernelEvents::open(root)?;
    loop {
        let mut any = false;
        while let Some(event) = kernel.take() {
            any = true;
            if !out(event) {
                return Ok(());
            }
        }
        if !follow {
            return Ok(());
        }
        if !any {
            std::thread::sleep(Duration::from_millis(50));
            kernel.refresh()?;
        }
    }
}

/// The event at the start of a ring buffer record; `None` for a record too
/// short to hold one.
fn read_event(bytes: &[u8]) -> Option<Event> {
    bytes
        .get(..std::mem::size_of::<Event>())
        .map(bytemuck::pod_read_unaligned)
}

/// Container names by cgroup id.
fn names(root: &StateRoot) -> HashMap<u64, String> {
    let mut names: HashMap<u64, String> = root.remembered_cgroups().into_iter().collect();
    names.extend(
        root.list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.cgroup_id.map(|id| (id, s.name))),
    );
    names
}

fn view(e: &Event, names: &HashMap<u64, String>) -> EventView {
    let bytes: Vec<u8> = e.addr.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let address = match u32::from(e.family) {
        FAMILY_V4 => Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        FAMILY_V6 => Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes")).to_string(),
        _ => String::new(),
    };
    let at = wall_time(e.time_ns);
    EventView {
        time: humantime::format_rfc3339_millis(at).to_string(),
        at,
        container: names
            .get(&e.cgroup)
            .cloned()
            .unwrap_or_else(|| format!("cgroup:{}", e.cgroup)),
        pid: e.pid,
        comm: String::from_utf8_lossy(&e.comm)
            .trim_end_matches('\0')
            .to_string(),
        hook: match e.hook {
            HOOK_CONNECT => "connect",
            HOOK_SENDMSG => "sendmsg",
            HOOK_BIND => "bind",
            HOOK_ACCEPT => "accept",
            HOOK_SOCK_CREATE => "socket",
            HOOK_DEVICE => "device",
            _ => "unknown",
        },
        protocol: match e.proto {
            _ if e.hook == HOOK_DEVICE => "-",
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            _ => "-",
        },
        address,
        // A device event's port field holds its access (in `device`).
        port: if e.hook == HOOK_DEVICE { 0 } else { e.port },
        verdict: if e.verdict == EVENT_AUDITED {
            "audited"
        } else {
            "denied"
        },
        device: (e.hook == HOOK_DEVICE).then(|| DeviceView {
            kind: if u32::from(e.proto) == DEVICE_BLOCK {
                "b"
            } else {
                "c"
            },
            major: e.addr[0],
            minor: e.addr[1],
            access: access_letters(u32::from(e.port)),
        }),
    }
}

/// CLOCK_MONOTONIC nanoseconds as wall-clock time.
fn wall_time(monotonic_ns: u64) -> SystemTime {
    let now_mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(monotonic_ns);
    SystemTime::now() - Duration::from_nanos(now_mono.saturating_sub(monotonic_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_field_for_field_and_a_short_one_is_refused() {
        let event = Event {
            time_ns: 1,
            cgroup: 2,
            pid: 3,
            hook: HOOK_CONNECT,
            proto: PROTO_TCP,
            verdict: EVENT_AUDITED,
            family: FAMILY_V4 as u8,
            port: 8080,
            addr: [0x0100_007f, 0, 0, 0],
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            ..Event::default()
        };
        // One byte more than an event, so the record starts unaligned.
        let mut record = vec![0u8];
        record.extend_from_slice(bytemuck::bytes_of(&event));
        assert_eq!(read_event(&record[1..]), Some(event));
        assert_eq!(read_event(&record[1..record.len() - 1]), None);
    }
}
