//! A container's policy as the kernel holds it, for `policy show`.

use palisade_common::{FAMILY_V4, KEY_HEADER_BITS, MAX_PORT_RULES, PrefixRules, RuleKey};

/// A container's policy as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InForce {
    pub generation: u32,
    /// `None`: no connect rules (everything allowed).
    pub connect: Option<Vec<InForceEntry>>,
    pub bind: Option<Vec<InForceEntry>>,
    pub accept: Option<Vec<InForceEntry>>,
    /// Audit mode: refusals are reported, not enforced.
    pub audit: bool,
    pub counters: CounterView,
    pub raw_sockets: bool,
    pub packet_sockets: bool,
    /// The device rules (`c 1:3 rwm`…), each pattern once with all the
    /// access granted to it; `None`: devices are not restricted.
    pub devices: Option<Vec<String>>,
}

/// A container's counters, by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CounterView {
    pub connect_denied: u64,
    pub sendmsg_denied: u64,
    pub bind_denied: u64,
    pub accept_dropped: u64,
    pub sockets_refused: u64,
    pub devices_denied: u64,
    pub audited: u64,
    pub events_dropped: u64,
}

impl From<palisade_common::Counters> for CounterView {
    fn from(c: palisade_common::Counters) -> Self {
        use palisade_common::{
            HOOK_ACCEPT, HOOK_BIND, HOOK_CONNECT, HOOK_DEVICE, HOOK_SENDMSG, HOOK_SOCK_CREATE,
        };
        Self {
            connect_denied: c.denied[HOOK_CONNECT as usize],
            sendmsg_denied: c.denied[HOOK_SENDMSG as usize],
            bind_denied: c.denied[HOOK_BIND as usize],
            accept_dropped: c.denied[HOOK_ACCEPT as usize],
            sockets_refused: c.denied[HOOK_SOCK_CREATE as usize],
            devices_denied: c.denied[HOOK_DEVICE as usize],
            audited: c.audited,
            events_dropped: c.events_dropped,
        }
    }
}

/// One longest-prefix entry: the peers it covers and the port rules that
/// decide for them, in the order the program tries them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct InForceEntry {
    pub prefix: String,
    pub rules: Vec<String>,
}

impl InForceEntry {
    pub(super) fn from_kernel(prefix_len: u32, key: RuleKey, value: &PrefixRules) -> Self {
        let bits = prefix_len.saturating_sub(KEY_HEADER_BITS);
        let bytes: Vec<u8> = key.addr.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let prefix = if key.family & 0xff == FAMILY_V4 {
            format!(
                "{}/{bits}",
                std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
            )
        } else {
            let v6: [u8; 16] = bytes.try_into().expect("16 bytes");
            format!("{}/{bits}", std::net::Ipv6Addr::from(v6))
        };
        let rules = value.rules[..(value.count as usize).min(MAX_PORT_RULES)]
            .iter()
            .map(|r| {
                let verdict = if r.verdict == palisade_common::VERDICT_ALLOW {
                    "allow"
                } else {
                    "deny"
                };
                let proto = match r.proto {
                    palisade_common::PROTO_TCP => "tcp",
                    palisade_common::PROTO_UDP => "udp",
                    _ => "any",
                };
                match (r.port_lo, r.port_hi) {
                    (0, u16::MAX) => format!("{verdict} {proto}"),
                    (lo, hi) if lo == hi => format!("{verdict} {proto} port {lo}"),
                    (lo, hi) => format!("{verdict} {proto} ports {lo}-{hi}"),
                }
            })
            .collect();
        Self { prefix, rules }
    }
}
