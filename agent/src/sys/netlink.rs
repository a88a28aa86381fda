//! rtnetlink: the one owner of palisade's links, veth pairs, bridge,
//! addresses, routes, qdiscs and traffic classes, on the host or in a
//! container's network namespace. Messages are the netlink-packet-route
//! crate's types; the few HTB attributes it does not model are encoded
//! here. Nothing here runs a subprocess or parses a tool's text.
//!
//! A [`Netlink`] is a route socket bound in one network namespace: the
//! caller's ([`Netlink::host`]) or another process's
//! ([`Netlink::in_netns_of`], made by entering that namespace for the
//! moment the socket is created: a netlink socket stays in the namespace
//! it was made in).

use std::net::Ipv4Addr;

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    tc::{TcAttribute, TcHandle, TcMessage, TcOption, TcStats2},
};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use nix::errno::Errno;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("cannot {what}: {}", errno.desc())]
    Kernel { what: String, errno: Errno },
    #[error("cannot {what}: {reason}")]
    Socket { what: String, reason: String },
    #[error("cannot {what}: the kernel's answer did not decode: {reason}")]
    Decode { what: String, reason: String },
    #[error("no network device {0}")]
    NoDevice(String),
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A network device as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    /// The index of the bridge (or other master) it is a port of.
    pub master: Option<u32>,
}

/// A queueing discipline at the root of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub kind: String,
    /// `major:minor` as one number; 0 for the kernel's default qdisc.
    pub handle: u32,
}

/// An HTB class's parameters: rate and burst in the units tc uses
/// (bits per second on the link, bytes), and the quantum in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClass {
    pub rate_bits: u64,
    pub burst_bytes: u64,
    pub quantum: u32,
}

/// What the kernel counted for one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCounters {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub backlog_bytes: u64,
    pub backlog_packets: u64,
}

/// One route socket, in one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

const RT_TABLE_MAIN: u8 = 254;

impl Netlink {
    /// A route socket in the caller's network namespace.
    pub fn host() -> Result<Self, NetlinkError> {
        let what = "open a netlink route socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| socket_error(what, &e))?;
        socket.bind_auto().map_err(|e| socket_error(what, &e))?;
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(|e| socket_error(what, &e))?;
        Ok(Self { socket, seq: 0 })
    }

    /// A route socket in the network namespace of process `pid`.
    pub fn in_netns_of(pid: i32) -> Result<Self, NetlinkError> {
        super::ns::in_net_namespace_of(pid, Self::host).map_err(|e| NetlinkError::Socket {
            what: format!("enter the network namespace of pid {pid}"),
            reason: e.to_string(),
        })?
    }

    /// Sends one request and gathers the answers: the messages of a dump,
    /// or nothing for an acknowledged change.
    fn request(
        &mut self,
        what: impl Fn() -> String,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| socket_error(&what(), &e))?;
        let mut answers = Vec::new();
        loop {
            let (bytes, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| socket_error(&what(), &e))?;
            let mut offset = 0;
            while offset < bytes.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..])
                    .map_err(|e| NetlinkError::Decode {
                        what: what(),
                        reason: e.to_string(),
                    })?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(NetlinkError::Decode {
                        what: what(),
                        reason: "a message of length 0".into(),
                    });
                }
                offset += len.next_multiple_of(4);
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(code) => Err(NetlinkError::Kernel {
                                what: what(),
                                errno: Errno::from_raw(-code.get()),
                            }),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// The device called `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        let what = || format!("look up network device {name}");
        match self.request(what, RouteNetlinkMessage::GetLink(message), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(l)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every device of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let what = || "list network devices".to_string();
        let answers = self.request(
            what,
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(l)),
                _ => None,
            })
            .collect())
    }

    fn index_of(&mut self, name: &str) -> Result<u32, NetlinkError> {
        self.link(name)?
            .map(|l| l.index)
            .ok_or_else(|| NetlinkError::NoDevice(name.to_string()))
    }

    /// Creates a bridge.
    pub fn add_bridge(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        let what = || format!("create bridge {name}");
        self.request(
            what,
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Creates a veth pair: `name` here, `peer` in the network namespace
    /// of process `peer_pid`.
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_pid: i32) -> Result<(), NetlinkError> {
        let mut far = LinkMessage::default();
        far.attributes = vec![
            LinkAttribute::IfName(peer.to_string()),
            LinkAttribute::NetNsPid(peer_pid as u32),
        ];
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(far))),
            ]),
        ];
        let what =
            || format!("create veth pair {name}/{peer} (peer in the namespace of pid {peer_pid})");
        self.request(
            what,
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Changes a device: `attributes`, and up if `up`.
    fn set_link(
        &mut self,
        name: &str,
        attributes: Vec<LinkAttribute>,
        up: bool,
        what: impl Fn() -> String,
    ) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = self.index_of(name)?;
        if up {
            message.header.flags = LinkFlags::Up;
            message.header.change_mask = LinkFlags::Up;
        }
        message.attributes = attributes;
        self.request(what, RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// Brings a device up.
    pub fn set_up(&mut self, name: &str) -> Result<(), NetlinkError> {
        self.set_link(name, Vec::new(), true, || format!("bring {name} up"))
    }

    /// Makes `name` a port of bridge `master` and brings it up.
    pub fn set_master_up(&mut self, name: &str, master: &str) -> Result<(), NetlinkError> {
        let master_index = self.index_of(master)?;
        self.set_link(
            name,
            vec![LinkAttribute::Controller(master_index)],
            true,
            || format!("put {name} on bridge {master}"),
        )
    }

    /// Sets the largest GSO packet the device builds.
    pub fn set_gso_max_size(&mut self, name: &str, size: u32) -> Result<(), NetlinkError> {
        self.set_link(name, vec![LinkAttribute::GsoMaxSize(size)], false, || {
            format!("set the GSO size of {name} to {size}")
        })
    }

    /// Deletes a device (a veth's peer goes with it).
    pub fn del_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = self.index_of(name)?;
        let what = || format!("delete network device {name}");
        self.request(what, RouteNetlinkMessage::DelLink(message), 0)
            .map(drop)
    }

    /// Gives a device an IPv4 address.
    pub fn add_ipv4(&mut self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.index = self.index_of(name)?;
        let ip = std::net::IpAddr::V4(addr);
        message.attributes = vec![AddressAttribute::Local(ip), AddressAttribute::Address(ip)];
        let what = || format!("add address {addr}/{prefix} to {name}");
        self.request(
            what,
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Adds the default IPv4 route via `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(gateway))];
        let what = || format!("add a default route via {gateway}");
        self.request(
            what,
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The root qdisc of a device (the kernel's default has handle 0).
    pub fn root_qdisc(&mut self, device: &str) -> Result<Option<Qdisc>, NetlinkError> {
        let index = self.index_of(device)?;
        let what = || format!("list the qdiscs of {device}");
        let answers = self.request(
            what,
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(index as i32)),
            NLM_F_DUMP,
        )?;
        Ok(answers.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q)
                if q.header.index == index as i32 && q.header.parent == TcHandle::ROOT =>
            {
                Some(Qdisc {
                    kind: kind_of(&q.attributes),
                    handle: q.header.handle.into(),
                })
            }
            _ => None,
        }))
    }

    /// Puts an HTB qdisc with handle `major:` at the root of a device, in
    /// place of the one there.
    pub fn replace_root_htb(&mut self, device: &str, major: u16) -> Result<(), NetlinkError> {
        let mut message = TcMessage::with_index(self.index_of(device)? as i32);
        message.header.parent = TcHandle::ROOT;
        message.header.handle = TcHandle { major, minor: 0 };
        message.attributes = vec![
            TcAttribute::Kind("htb".into()),
            TcAttribute::Options(vec![htb_option(HTB_INIT, &htb_glob())]),
        ];
        let what = || format!("put an HTB qdisc at the root of {device}");
        self.request(
            what,
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Deletes the root qdisc of a device (the kernel puts its default back).
    pub fn del_root_qdisc(&mut self, device: &str) -> Result<(), NetlinkError> {
        let mut message = TcMessage::with_index(self.index_of(device)? as i32);
        message.header.parent = TcHandle::ROOT;
        let what = || format!("delete the root qdisc of {device}");
        self.request(what, RouteNetlinkMessage::DelQueueDiscipline(message), 0)
            .map(drop)
    }

    /// Adds (or, with `create` false, changes) the HTB class `major:minor`
    /// under the qdisc `major:` of a device.
    pub fn set_htb_class(
        &mut self,
        device: &str,
        major: u16,
        minor: u16,
        class: HtbClass,
        create: bool,
    ) -> Result<(), NetlinkError> {
        let mut message = TcMessage::with_index(self.index_of(device)? as i32);
        message.header.parent = TcHandle { major, minor: 0 };
        message.header.handle = TcHandle { major, minor };
        let mut options = vec![htb_option(HTB_PARMS, &htb_opt(class))];
        let rate_bytes = class.rate_bits / 8;
        if rate_bytes > u64::from(u32::MAX) {
            // The 32-bit rate field is saturated; the kernel takes these.
            options.push(htb_option(HTB_RATE64, &rate_bytes.to_ne_bytes()));
            options.push(htb_option(HTB_CEIL64, &rate_bytes.to_ne_bytes()));
        }
        message.attributes = vec![
            TcAttribute::Kind("htb".into()),
            TcAttribute::Options(options),
        ];
        let verb = if create { "add" } else { "change" };
        let what = || format!("{verb} HTB class {major:x}:{minor:x} on {device}");
        let flags = if create { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
        self.request(what, RouteNetlinkMessage::NewTrafficClass(message), flags)
            .map(drop)
    }

    /// Deletes the class `major:minor` of a device.
    pub fn del_class(&mut self, device: &str, major: u16, minor: u16) -> Result<(), NetlinkError> {
        let mut message = TcMessage::with_index(self.index_of(device)? as i32);
        message.header.handle = TcHandle { major, minor };
        let what = || format!("delete class {major:x}:{minor:x} of {device}");
        self.request(what, RouteNetlinkMessage::DelTrafficClass(message), 0)
            .map(drop)
    }

    /// The classes of a device, with their counters.
    pub fn classes(&mut self, device: &str) -> Result<Vec<(u32, ClassCounters)>, NetlinkError> {
        let index = self.index_of(device)? as i32;
        let what = || format!("list the classes of {device}");
        let answers = self.request(
            what,
            RouteNetlinkMessage::GetTrafficClass(TcMessage::with_index(index)),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficClass(c) if c.header.index == index => {
                    Some((c.header.handle.into(), counters_of(&c.attributes)))
                }
                _ => None,
            })
            .collect())
    }
}

fn socket_error(what: &str, e: &std::io::Error) -> NetlinkError {
    match e.raw_os_error() {
        Some(code) => NetlinkError::Kernel {
            what: what.to_string(),
            errno: Errno::from_raw(code),
        },
        None => NetlinkError::Socket {
            what: what.to_string(),
            reason: e.to_string(),
        },
    }
}

fn link_of(message: LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mtu: 0,
        up: message.header.flags.contains(LinkFlags::Up),
        master: None,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Controller(m) => link.master = Some(m),
            _ => {}
        }
    }
    link
}

fn kind_of(attributes: &[TcAttribute]) -> String {
    attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn counters_of(attributes: &[TcAttribute]) -> ClassCounters {
    let mut counters = ClassCounters::default();
    for attribute in attributes {
        if let TcAttribute::Stats2(stats) = attribute {
            for s in stats {
                match s {
                    TcStats2::Basic(b) => {
                        counters.bytes = b.bytes;
                        counters.packets = u64::from(b.packets);
                    }
                    TcStats2::Queue(q) => {
                        counters.drops = u64::from(q.drops);
                        counters.overlimits = u64::from(q.overlimits);
                        counters.backlog_bytes = u64::from(q.backlog);
                        counters.backlog_packets = u64::from(q.qlen);
                    }
                    _ => {}
                }
            }
        }
    }
    counters
}

// HTB's attributes inside TCA_OPTIONS (linux/pkt_sched.h), which
// netlink-packet-route does not model.
const HTB_PARMS: u16 = 1;
const HTB_INIT: u16 = 2;
const HTB_RATE64: u16 = 6;
const HTB_CEIL64: u16 = 7;
/// `TC_HTB_PROTOVER`: the version the kernel checks in `tc_htb_glob`.
const HTB_PROTOVER: u32 = 3;
/// `TC_LINKLAYER_ETHERNET`: with it the kernel needs no rate table.
const LINKLAYER_ETHERNET: u8 = 1;
/// The packet scheduler's time unit: 64 ns (`PSCHED_SHIFT` 6).
const PSCHED_TICK_NS: u128 = 64;

fn htb_option(kind: u16, value: &[u8]) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value.to_vec()))
}

/// `struct tc_htb_glob`: version, rate2quantum, defcls (0: unclassified
/// packets go to the direct queue), debug, direct_pkts.
fn htb_glob() -> Vec<u8> {
    [HTB_PROTOVER, 10, 0, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

/// `struct tc_htb_opt`: rate and ceil (`tc_ratespec`, equal: the class
/// never borrows), buffer and cbuffer (the burst as time at the rate, in
/// scheduler ticks), quantum, level, prio.
fn htb_opt(class: HtbClass) -> Vec<u8> {
    let rate_bytes = class.rate_bits / 8;
    let ratespec = |out: &mut Vec<u8>| {
        out.push(0); // cell_log
        out.push(LINKLAYER_ETHERNET);
        out.extend_from_slice(&0u16.to_ne_bytes()); // overhead
        out.extend_from_slice(&0i16.to_ne_bytes()); // cell_align
        out.extend_from_slice(&0u16.to_ne_bytes()); // mpu
        out.extend_from_slice(&(rate_bytes.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    };
    let buffer = burst_ticks(class.burst_bytes, rate_bytes);
    let mut out = Vec::with_capacity(44);
    ratespec(&mut out);
    ratespec(&mut out);
    for v in [buffer, buffer, class.quantum, 0, 0] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out
}

/// The time `burst` bytes take at `rate_bytes` per second, in scheduler
/// ticks (what tc computes for `burst`), saturated at u32.
fn burst_ticks(burst: u64, rate_bytes: u64) -> u32 {
    let ns = u128::from(burst) * 1_000_000_000 / u128::from(rate_bytes.max(1));
    (ns / PSCHED_TICK_NS).min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htb_class_options_have_the_kernel_layout() {
        let opt = htb_opt(HtbClass {
            rate_bits: 10_000_000,
            burst_bytes: 65536,
            quantum: 200_000,
        });
        assert_eq!(opt.len(), 44, "sizeof(struct tc_htb_opt)");
        // rate: linklayer ethernet, 1.25 MB/s.
        assert_eq!(opt[1], LINKLAYER_ETHERNET);
        assert_eq!(
            u32::from_ne_bytes(opt[8..12].try_into().unwrap()),
            1_250_000
        );
        // 64 KiB at 1.25 MB/s is 52.4288 ms: 819200 ticks of 64 ns.
        assert_eq!(u32::from_ne_bytes(opt[24..28].try_into().unwrap()), 819_200);
        assert_eq!(u32::from_ne_bytes(opt[32..36].try_into().unwrap()), 200_000);
        assert_eq!(htb_glob().len(), 20, "sizeof(struct tc_htb_glob)");
    }

    #[test]
    fn burst_time_saturates() {
        assert_eq!(burst_ticks(u64::MAX, 1), u32::MAX);
        assert_eq!(burst_ticks(1000, 0), u32::MAX);
    }
}
