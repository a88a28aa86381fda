//! `[network] sockets`: which kinds of socket a container may create, and
//! the address family names the policy file uses.

use serde::Deserialize;
use toml::Spanned;

/// `[network] sockets = { raw = false, packet = false, deny_families = […] }`:
/// `false` refuses that kind of socket at `socket()` with EPERM, as does a
/// family named in `deny_families` (names as in `AF_*`, without the prefix
/// or with it, any case: `"netlink"`, `"AF_INET6"`, or a number). Allowed
/// unless the policy says otherwise (raw and packet sockets still need
/// CAP_NET_RAW).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketKinds {
    /// `SOCK_RAW` sockets of any family.
    pub raw: bool,
    /// `AF_PACKET` sockets.
    pub packet: bool,
    /// Further families refused, as `AF_*` numbers (sorted, no repeats).
    pub denied_families: Vec<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSockets {
    #[serde(default = "yes")]
    raw: bool,
    #[serde(default = "yes")]
    packet: bool,
    #[serde(default)]
    deny_families: Vec<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// Families by their `AF_*` names (lowercase, without the prefix).
const FAMILIES: &[(&str, i32)] = &[
    ("unix", libc::AF_UNIX),
    ("local", libc::AF_UNIX),
    ("inet", libc::AF_INET),
    ("inet6", libc::AF_INET6),
    ("netlink", libc::AF_NETLINK),
    ("packet", libc::AF_PACKET),
    ("key", libc::AF_KEY),
    ("bluetooth", libc::AF_BLUETOOTH),
    ("vsock", libc::AF_VSOCK),
    ("alg", libc::AF_ALG),
    ("can", libc::AF_CAN),
    ("tipc", libc::AF_TIPC),
    ("xdp", libc::AF_XDP),
    ("appletalk", libc::AF_APPLETALK),
    ("ax25", libc::AF_AX25),
    ("x25", libc::AF_X25),
    ("rds", libc::AF_RDS),
    ("llc", libc::AF_LLC),
    ("ib", libc::AF_IB),
    ("mpls", libc::AF_MPLS),
    ("nfc", libc::AF_NFC),
    ("qipcrtr", 42),
    ("smc", 43),
];

/// An address family by name or number.
fn family(name: &str) -> Option<i32> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_prefix("af_").unwrap_or(&lower);
    if let Ok(n) = bare.parse::<i32>() {
        // AF_MAX is 46 on Linux 6.x.
        return (0..46).contains(&n).then_some(n);
    }
    FAMILIES.iter().find(|(n, _)| *n == bare).map(|&(_, v)| v)
}

/// A family's name as the policy file writes it (`netlink`), or its
/// number for a family without one here.
pub fn family_name(family: i32) -> String {
    FAMILIES
        .iter()
        .find(|&&(name, v)| v == family && name != "local")
        .map_or_else(|| family.to_string(), |&(name, _)| name.to_string())
}

impl Default for SocketKinds {
    fn default() -> Self {
        Self {
            raw: true,
            packet: true,
            denied_families: Vec::new(),
        }
    }
}

impl SocketKinds {
    /// The refused kinds, as the kernel program reads them.
    pub fn denied_bits(&self) -> u32 {
        let mut bits = 0;
        if !self.raw {
            bits |= palisade_common::DENY_RAW;
        }
        if !self.packet {
            bits |= palisade_common::DENY_PACKET;
        }
        bits
    }

    /// What the policy refuses, by name: `raw`, `packet`, then each
    /// family of `deny_families`.
    pub fn denied_names(&self) -> Vec<String> {
        let kinds = [(!self.raw, "raw"), (!self.packet, "packet")];
        kinds
            .into_iter()
            .filter(|(denied, _)| *denied)
            .map(|(_, name)| name.to_string())
            .chain(self.denied_families.iter().map(|&f| family_name(f)))
            .collect()
    }

    /// Every family refused by seccomp: `deny_families`, and AF_PACKET when
    /// `packet = false`.
    pub fn seccomp_families(&self) -> Vec<i32> {
        let mut families = self.denied_families.clone();
        if !self.packet {
            families.push(libc::AF_PACKET);
        }
        families.sort_unstable();
        families.dedup();
        families
    }
}

impl RawSockets {
    /// The validated kinds; an unknown family is refused with the byte
    /// offset in `text` of its own quoted value (spans inside an inline
    /// table are not reliable, its quoted text is) and the message.
    pub(super) fn validate(self, text: &str) -> Result<SocketKinds, (usize, String)> {
        let mut denied = Vec::new();
        for name in self.deny_families {
            let f = family(name.get_ref()).ok_or_else(|| {
                (
                    text.find(&format!("{:?}", name.get_ref()))
                        .unwrap_or(name.span().start),
                    format!(
                        "network.sockets.deny_families: unknown address family {:?} (a name such as \"netlink\" or \"inet6\", or a number)",
                        name.get_ref()
                    ),
                )
            })?;
            denied.push(f);
        }
        denied.sort_unstable();
        denied.dedup();
        Ok(SocketKinds {
            raw: self.raw,
            packet: self.packet,
            denied_families: denied,
        })
    }
}
