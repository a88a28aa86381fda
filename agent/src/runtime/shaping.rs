//! Outbound rate limiting: each shaped container gets a class of an HTB
//! qdisc on every device its traffic leaves by, and its cgroup_skb/egress
//! program puts each packet it sends in that class (by `skb->priority`).
//!
//! Why this design: this kernel has no fq qdisc, so the eBPF-only way
//! (earliest-departure-time pacing) is not available, and a token bucket
//! that drops in the cgroup program collapses TCP. HTB queues instead of
//! dropping and holds a class to its rate within a percent; the cgroup
//! hook stays the classifier, so no tc filter is involved and a process
//! cannot pick another class.
//!
//! Where the class goes: `--net bridge` containers on their own `eth0`
//! (inside their network namespace); `--net host` containers on every
//! device of the host that is up when they start, except bridge ports
//! (their traffic was shaped on the bridge). On host devices the qdisc is
//! shared: palisade installs it (handle `1a5e:`) over the kernel's default
//! qdisc when the first shaped container needs it, and deletes it (the
//! kernel puts its default back) when the last one leaves. Packets of no
//! class go through HTB's direct queue, unshaped. A device with a root
//! qdisc someone else configured is left alone, and the container refused.
//!
//! A bridged container's `eth0` also builds GSO packets of about 10 ms of
//! its rate at most (`gso_max_size`): HTB sends a GSO packet whole, so at
//! low rates 64 KiB ones would make the flow arrive in lumps.
//!
//! The rate a user writes is payload: the class's link-layer rate is
//! raised by the headers of a full-size TCP segment on the device's MTU
//! (14 bytes of Ethernet header, 52 of IPv4 and TCP with timestamps): on a
//! 1500-byte link 10mbit of goodput is 10.46 Mbit/s on the wire.

use std::{fs, path::PathBuf};

use palisade_common::SHAPER_HANDLE;
use serde::{Deserialize, Serialize};

use super::net::{self, NetError};
use crate::{
    spec::Egress,
    sys::netlink::{HtbClass, Netlink},
};

/// Link-layer header bytes counted by the qdisc on Ethernet-like devices.
const LINK_HEADER: u64 = 14;
/// IPv4 and TCP headers with the timestamp option.
const TCP_IP_HEADERS: u64 = 52;
/// The kernel's default largest GSO packet.
const GSO_MAX: u64 = 65536;
/// HTB's quantum for every class: classes never borrow (rate = ceil), so
/// it only has to be at least one packet; 200000 is tc's warning limit.
const QUANTUM: u64 = 200_000;

/// A shaped container's class and where it is installed, kept in its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shaping {
    /// The class's minor number: the class is `1a5e:<minor>` on every device.
    pub minor: u16,
    /// The devices holding the class.
    pub devices: Vec<String>,
    /// The devices are in the container's network namespace (bridge), not
    /// the host's.
    pub in_container: bool,
    pub rate: u64,
    pub burst: u64,
}

/// Whose network namespace a device is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netns {
    Host,
    /// The namespace of this (host) pid.
    Of(i32),
}

impl Shaping {
    pub fn netns(&self, pid: Option<i32>) -> Option<Netns> {
        if self.in_container {
            pid.map(Netns::Of)
        } else {
            Some(Netns::Host)
        }
    }

    pub fn egress(&self) -> Egress {
        Egress {
            rate: self.rate,
            burst: self.burst,
        }
    }
}

/// What the kernel counted for one container's class on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassStats {
    pub device: String,
    /// Bytes and packets that left through the class.
    pub bytes: u64,
    pub packets: u64,
    /// Packets dropped because the class's queue was full.
    pub dropped: u64,
    /// Times a packet found the class over its rate and had to wait.
    pub delayed: u64,
    /// Bytes and packets waiting now.
    pub backlog_bytes: u64,
    pub backlog_packets: u64,
}

fn classes_dir() -> PathBuf {
    net::net_dir().join("classes")
}

/// Reserves a class number for `owner` (a file named after it, created
/// exclusively), host-wide, since host devices are shared.
pub fn allocate(owner: &str) -> Result<u16, NetError> {
    let dir = classes_dir();
    fs::create_dir_all(&dir).map_err(net::io_error("create", &dir))?;
    for minor in 1u16..0xffff {
        let path = dir.join(minor.to_string());
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {
                fs::write(&path, owner).map_err(net::io_error("write", &path))?;
                return Ok(minor);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(net::io_error("create", &path)(e)),
        }
    }
    Err(NetError::Exhausted("traffic classes"))
}

/// The class numbers reserved for `owner`.
pub fn owned_by(owner: &str) -> Vec<u16> {
    net::owned_in(&classes_dir(), owner)
}

/// Gives a class number back.
pub fn free(minor: u16) {
    let _ = fs::remove_file(classes_dir().join(minor.to_string()));
}

/// The host devices a `--net host` container's traffic can leave by: the
/// ones that are up, bridge ports excepted.
pub fn host_devices() -> Vec<String> {
    let mut devices: Vec<String> = fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            let dir = e.path();
            let up = fs::read_to_string(dir.join("flags"))
                .ok()
                .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                .is_some_and(|flags| flags & 1 != 0);
            up && !dir.join("brport").exists()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    devices.sort();
    devices
}

impl Netns {
    /// A route socket in this namespace.
    fn netlink(self) -> Result<Netlink, NetError> {
        Ok(match self {
            Netns::Host => Netlink::host()?,
            Netns::Of(pid) => Netlink::in_netns_of(pid)?,
        })
    }
}

/// Installs the class `minor` at `egress` on each device, under the
/// network lock. On failure, what was installed is removed again.
pub fn install(
    netns: Netns,
    devices: &[String],
    minor: u16,
    egress: Egress,
) -> Result<(), NetError> {
    let _lock = net::lock()?;
    let mut nl = netns.netlink()?;
    let mut done: Vec<&str> = Vec::new();
    for device in devices {
        let result = ensure_root(&mut nl, netns, device)
            .and_then(|()| set_class(&mut nl, netns, device, minor, egress, true));
        if let Err(e) = result {
            for d in &done {
                remove_class(&mut nl, netns, d, minor);
            }
            // The qdisc may have been put on this device just now.
            remove_class(&mut nl, netns, device, minor);
            return Err(e);
        }
        done.push(device);
    }
    Ok(())
}

/// Changes the rate of an installed class, at once.
pub fn change(
    netns: Netns,
    devices: &[String],
    minor: u16,
    egress: Egress,
) -> Result<(), NetError> {
    let _lock = net::lock()?;
    let mut nl = netns.netlink()?;
    for device in devices {
        set_class(&mut nl, netns, device, minor, egress, false)?;
    }
    Ok(())
}

/// Removes the class from each device, and the qdisc from a device where
/// no class is left. Devices that are gone are fine.
pub fn uninstall(netns: Netns, devices: &[String], minor: u16) {
    let Ok(_lock) = net::lock() else { return };
    let Ok(mut nl) = netns.netlink() else { return };
    for device in devices {
        remove_class(&mut nl, netns, device, minor);
    }
}

/// The kernel's counts for the class on each device.
pub fn stats(netns: Netns, devices: &[String], minor: u16) -> Result<Vec<ClassStats>, NetError> {
    let mut nl = netns.netlink()?;
    let id = class_id(minor);
    let mut all = Vec::new();
    for device in devices {
        let counters = nl
            .classes(device)?
            .into_iter()
            .find(|(handle, _)| *handle == id)
            .map(|(_, c)| c)
            .unwrap_or_default();
        all.push(ClassStats {
            device: device.clone(),
            bytes: counters.bytes,
            packets: counters.packets,
            dropped: counters.drops,
            delayed: counters.overlimits,
            backlog_bytes: counters.backlog_bytes,
            backlog_packets: counters.backlog_packets,
        });
    }
    Ok(all)
}

/// The class `1a5e:<minor>` as one number.
fn class_id(minor: u16) -> u32 {
    u32::from(SHAPER_HANDLE) << 16 | u32::from(minor)
}

/// Makes palisade's HTB the root qdisc of `device`, over the kernel's
/// default one; refuses a root qdisc that someone else configured.
fn ensure_root(nl: &mut Netlink, netns: Netns, device: &str) -> Result<(), NetError> {
    let root = nl.root_qdisc(device)?;
    let ours = u32::from(SHAPER_HANDLE) << 16;
    match root {
        Some(q) if q.kind == "htb" && q.handle == ours => return Ok(()),
        // No qdisc (a device that is down) or the kernel's default one
        // (handle 0:) may be replaced; anything else was configured by someone.
        Some(q) if q.handle != 0 => {
            let hint = match netns {
                Netns::Host => " (remove it, or run the container with --net bridge)",
                Netns::Of(_) => "",
            };
            return Err(NetError::Shaping(format!(
                "device {device} has a root qdisc palisade did not install ({} {:x}:); \
                 palisade does not replace it{hint}",
                q.kind,
                q.handle >> 16
            )));
        }
        _ => {}
    }
    nl.replace_root_htb(device, SHAPER_HANDLE)?;
    Ok(())
}

/// Adds (or changes) the class at the rate for `device`'s MTU.
fn set_class(
    nl: &mut Netlink,
    netns: Netns,
    device: &str,
    minor: u16,
    egress: Egress,
    create: bool,
) -> Result<(), NetError> {
    let mtu = mtu(nl, device)?;
    let rate = link_rate(egress.rate, mtu);
    if let Netns::Of(_) = netns {
        nl.set_gso_max_size(device, gso_size(rate, mtu) as u32)?;
    }
    let class = HtbClass {
        rate_bits: rate,
        burst_bytes: egress.burst,
        quantum: QUANTUM as u32,
    };
    nl.set_htb_class(device, SHAPER_HANDLE, minor, class, create)?;
    Ok(())
}

/// The largest GSO packet a container's own device should build at this
/// link rate: about 10 ms of it, between two full-size packets and the
/// kernel's 64 KiB. HTB sends a GSO packet whole; at 1 Mbit/s one of
/// 64 KiB would be half a second of the class's time, and the receiver
/// would see the flow in lumps.
pub fn gso_size(link_rate: u64, mtu: u64) -> u64 {
    (link_rate / 8 / 100).clamp(2 * (mtu + LINK_HEADER), GSO_MAX)
}

/// Deletes the class, then palisade's qdisc if no class of it is left.
fn remove_class(nl: &mut Netlink, netns: Netns, device: &str, minor: u16) {
    let _ = nl.del_class(device, SHAPER_HANDLE, minor);
    let ours = nl
        .root_qdisc(device)
        .is_ok_and(|q| q.is_some_and(|q| q.handle == u32::from(SHAPER_HANDLE) << 16));
    let empty = nl.classes(device).is_ok_and(|c| c.is_empty());
    if ours && empty {
        let _ = nl.del_root_qdisc(device);
    }
    if let Netns::Of(_) = netns {
        let _ = nl.set_gso_max_size(device, GSO_MAX as u32);
    }
}

/// The link-layer rate that gives `payload` bits per second of full-size
/// TCP segments on a device of this MTU.
pub fn link_rate(payload: u64, mtu: u64) -> u64 {
    let mtu = mtu.max(576);
    let wire = u128::from(payload) * u128::from(mtu + LINK_HEADER);
    let segment = u128::from(mtu - TCP_IP_HEADERS);
    wire.div_ceil(segment) as u64
}

fn mtu(nl: &mut Netlink, device: &str) -> Result<u64, NetError> {
    match nl.link(device)? {
        Some(link) if link.mtu > 0 => Ok(u64::from(link.mtu)),
        _ => Err(NetError::Shaping(format!(
            "cannot read the MTU of {device}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_rate_adds_the_headers_of_a_full_segment() {
        // 1500-byte MTU: 1514 bytes on the link carry 1448 of payload.
        assert_eq!(link_rate(1448, 1500), 1514);
        assert_eq!(link_rate(10_000_000, 1500), 10_455_802);
        // Loopback's 64 KiB MTU costs a tenth of a percent.
        assert_eq!(link_rate(100_000_000, 65536), 100_100_788);
    }

    #[test]
    fn gso_packets_are_about_ten_milliseconds_of_the_rate() {
        assert_eq!(gso_size(1_045_580, 1500), 3028);
        assert_eq!(gso_size(10_455_802, 1500), 13_069);
        assert_eq!(gso_size(104_558_012, 1500), 65536);
    }
}
