//! cgroup_skb programs: inbound connection control (ingress), the
//! classifier of outbound rate limiting (egress), and both directions'
//! byte and packet accounting.
//!
//! ## ingress
//!
//! Attach point: the container's cgroup v2 directory
//! (BPF_CGROUP_INET_INGRESS, Linux 4.10), run for every packet delivered
//! to one of the container's sockets. A TCP SYN (without ACK) is judged
//! first by the `bind` rules, on its destination address and port (the
//! container's local ones): a listener is a port the container serves,
//! and `listen()` on an unbound socket binds it to an ephemeral port
//! without running the bind hooks, so this is where such a port is
//! judged; a refusal is reported as a bind refusal. Then a TCP SYN or a
//! UDP datagram from a peer the `accept` rules refuse is dropped. A
//! dropped packet (return 0) gives the client no reset: its connect times
//! out. An IPv6 packet's extension headers are followed to its TCP or UDP
//! header (up to `V6_MAX_EXT`); one it cannot follow (a longer or
//! malformed chain, a fragment past the first) is dropped when the
//! container or one enclosing it has bind or accept rules in enforce mode.
//! Everything else passes: established flows, other protocols, other
//! packets it cannot parse. A packet that passes is counted as received
//! by the socket's own cgroup. Reads `CGROUP_POLICY` and `CONNECT_RULES`;
//! writes `USAGE`.
//!
//! ## Accounting (both)
//!
//! Bytes are the IP layer's, as on the wire below the link layer: the
//! packet's length from its IP header on, and for a GSO packet (one
//! buffer for `gso_segs` segments, headers held once) the IP and TCP (by
//! its data offset) or UDP headers of each further segment; a GSO packet
//! counts as its segments. IPv4 or IPv6 by the header's version. Counted
//! under the socket's own cgroup (`bpf_skb_cgroup_id`): a sub-container's
//! packets run its parent's program, and are counted as the child's.

use aya_ebpf::{
    helpers::generated::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use palisade_common::{
    FAMILY_V4, FAMILY_V6, HOOK_ACCEPT, HOOK_BIND, PROTO_TCP, PROTO_UDP, USAGE_V4, USAGE_V6,
};

use crate::{
    events::{Refusal, conclude},
    maps::EGRESS_CLASS,
    policy::{ALLOW, DENY, List, MAX_LEVELS, decide_for, normalise, unjudged_inbound},
    usage::{add, record},
};

const TCP_SYN: u8 = 0x02;
/// IPv6 extension headers followed: hop-by-hop options, routing,
/// fragment, authentication, destination options.
const V6_HOP: u8 = 0;
const V6_ROUTING: u8 = 43;
const V6_FRAGMENT: u8 = 44;
const V6_AH: u8 = 51;
const V6_DSTOPTS: u8 = 60;
/// Most IPv6 extension headers followed to the upper-layer header; a
/// longer chain cannot be judged.
const V6_MAX_EXT: usize = 6;
const TCP_ACK: u8 = 0x10;

// ## egress
//
// Attach point: the container's cgroup v2 directory
// (BPF_CGROUP_INET_EGRESS, Linux 4.10), run for every packet one of the
// container's sockets sends, after routing and before the device's queue.
// If the container (or a container it is nested in) is shaped, the packet's
// priority is set to its traffic-control class (`EGRESS_CLASS`), which the
// HTB qdisc palisade installed on the device takes as the class to queue it
// in. It never drops: the kernel's HTB does the shaping. Overwriting the
// priority also means a process cannot step out of its class with
// SO_PRIORITY. Every packet is counted as sent by the socket's own cgroup.
// Reads `EGRESS_CLASS` (and `CGROUP_POLICY` for a cgroup not counted
// yet); writes the packet's priority and `USAGE`.

#[cgroup_skb(egress)]
pub fn egress(ctx: SkBuffContext) -> i32 {
    account(&ctx, Direction::Sent);
    let skb = ctx.skb.skb;
    let mut class = 0u32;
    for level in 0..MAX_LEVELS {
        // SAFETY: `skb` is the program's own context; the helper only reads
        // the socket's cgroup, and returns 0 past its level.
        let cgroup = unsafe { bpf_skb_ancestor_cgroup_id(skb.cast(), level) };
        if cgroup == 0 {
            break;
        }
        if let Some(value) = EGRESS_CLASS.get_ptr(cgroup) {
            // SAFETY: a non-null pointer to a map value, only read; volatile
            // keeps the read below the null check for the verifier.
            class = unsafe { core::ptr::read_volatile(value) };
        }
    }
    if class != 0 {
        // SAFETY: `skb` is the program's context; cgroup_skb programs may
        // write `priority` (the verifier checks the field's offset).
        unsafe { (*skb).priority = class };
    }
    1
}

#[cgroup_skb(ingress)]
pub fn ingress(ctx: SkBuffContext) -> i32 {
    // Two passes over the headers, each reading the packet itself: nothing
    // of the first is live in the second, so the verifier's paths out of
    // the bind judgement join before the accept judgement (sharing the
    // parsed values, it walked the latter again for many of them).
    if syn_bind(&ctx) == DENY || judge(&ctx) == DENY {
        return 0;
    }
    account(&ctx, Direction::Received);
    // Spelled out so the verifier sees a return value of 0 or 1.
    1
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Sent,
    Received,
}

/// Counts the packet's bytes and segments in its socket's cgroup's usage.
#[inline(always)]
fn account(ctx: &SkBuffContext, direction: Direction) {
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's own context; the helper only reads
    // the socket's cgroup.
    let cgroup = unsafe { bpf_skb_cgroup_id(skb.cast()) };
    let Some(usage) = record(cgroup, |level| {
        // SAFETY: as above; past the socket's own level the helper returns 0.
        unsafe { bpf_skb_ancestor_cgroup_id(skb.cast(), level) }
    }) else {
        return;
    };
    let Ok(first) = ctx.load::<u8>(0) else {
        return;
    };
    // (family index, IP header length, offset of the protocol byte)
    let (family, ip_header, proto_at) = match first >> 4 {
        4 => (USAGE_V4, usize::from(first & 0x0f) * 4, 9),
        6 => (USAGE_V6, 40, 6),
        _ => return,
    };
    // SAFETY: the program's context; cgroup_skb programs may read `len`
    // and `gso_segs` (the verifier checks the offsets).
    let (len, segs) = unsafe { ((*skb).len, (*skb).gso_segs) };
    let mut bytes = u64::from(len);
    let mut packets = 1;
    if segs > 1 {
        bytes += u64::from(segs - 1) * headers(ctx, ip_header, proto_at);
        packets = u64::from(segs);
    }
    // SAFETY: `usage` is a non-null per-CPU map value; the fields are only
    // addressed here, and added to atomically (process and softirq
    // context both send).
    let (b, p) = unsafe {
        match direction {
            Direction::Sent => (
                &raw mut (*usage).tx_bytes[family],
                &raw mut (*usage).tx_packets[family],
            ),
            Direction::Received => (
                &raw mut (*usage).rx_bytes[family],
                &raw mut (*usage).rx_packets[family],
            ),
        }
    };
    add(b, bytes);
    add(p, packets);
}

/// The headers each segment of a GSO packet carries: its IP header
/// (`ip_header` bytes; IPv6 extension headers are not followed) and its
/// TCP (data offset) or UDP header.
#[inline(always)]
fn headers(ctx: &SkBuffContext, ip_header: usize, proto_at: usize) -> u64 {
    let l4 = match ctx.load::<u8>(proto_at) {
        Ok(PROTO_TCP) => match ctx.load::<u8>(ip_header + 12) {
            Ok(offset) => u64::from(offset >> 4) * 4,
            Err(_) => 0,
        },
        Ok(PROTO_UDP) => 8,
        _ => 0,
    };
    ip_header as u64 + l4
}

/// A TCP SYN (without ACK) judged by the `bind` rules: its destination
/// address and port are the container's local ones, the port it serves
/// (a listener the kernel bound itself, at `listen()`, was never judged by
/// the bind hooks). ALLOW for anything else.
#[inline(always)]
fn syn_bind(ctx: &SkBuffContext) -> i32 {
    let Ok(first) = ctx.load::<u8>(0) else {
        return ALLOW;
    };
    let (family, local, proto, l4) = match first >> 4 {
        4 => {
            let (Ok(proto), Ok(frag), Ok(dst)) =
                (ctx.load::<u8>(9), ctx.load::<u16>(6), ctx.load::<u32>(16))
            else {
                return ALLOW;
            };
            // A SYN is never a later fragment.
            if u16::from_be(frag) & 0x1fff != 0 {
                return ALLOW;
            }
            (
                FAMILY_V4,
                [dst, 0, 0, 0],
                proto,
                usize::from(first & 0x0f) * 4,
            )
        }
        6 => {
            let Some(dst) = v6_at(ctx, 24) else {
                return ALLOW;
            };
            // An extension header chain it cannot follow is dropped here,
            // for both judgements, if either list has rules.
            let Some((proto, l4)) = v6_upper(ctx) else {
                let skb = ctx.skb.skb;
                // SAFETY: `skb` is the program's own context; the helper
                // only reads the socket's cgroup, and returns 0 past its
                // level.
                return unjudged_inbound(|level| unsafe {
                    bpf_skb_ancestor_cgroup_id(skb.cast(), level)
                });
            };
            (FAMILY_V6, dst, proto, l4)
        }
        _ => return ALLOW,
    };
    if proto != PROTO_TCP {
        return ALLOW;
    }
    let (Ok(flags), Ok(port)) = (ctx.load::<u8>(l4 + 13), ctx.load::<u16>(l4 + 2)) else {
        return ALLOW;
    };
    if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
        return ALLOW;
    }
    let port = u16::from_be(port);
    let (family, local) = normalise(family, local);
    let skb = ctx.skb.skb;
    let decision = decide_for(
        // SAFETY: `skb` is the program's own context; the helper only reads
        // the socket's cgroup, and returns 0 past its level.
        |level| unsafe { bpf_skb_ancestor_cgroup_id(skb.cast(), level) },
        List::Bind,
        family,
        local,
        port,
        PROTO_TCP,
    );
    // SAFETY: as above.
    let cgroup = unsafe { bpf_skb_cgroup_id(skb.cast()) };
    let refusal = Refusal {
        cgroup,
        hook: HOOK_BIND,
        verdict: 0,
        family,
        addr: local,
        port,
        proto: PROTO_TCP,
        task: false,
    };
    if conclude(decision, refusal) == 1 {
        ALLOW
    } else {
        DENY
    }
}

/// The upper-layer protocol of an IPv6 packet and the offset of its
/// header, past up to `V6_MAX_EXT` extension headers. None for a longer
/// chain, a header past the packet's end, or a fragment other than the
/// first (the kernel reassembles fragments before this hook, and leaves
/// the fragment header of a packet sent as a single fragment).
#[inline(always)]
fn v6_upper(ctx: &SkBuffContext) -> Option<(u8, usize)> {
    let Ok(mut next) = ctx.load::<u8>(6) else {
        return None;
    };
    let mut at = 40usize;
    for _ in 0..V6_MAX_EXT {
        // Every extension header starts with its next header and length.
        let (Ok(follows), Ok(len)) = (ctx.load::<u8>(at), ctx.load::<u8>(at + 1)) else {
            return None;
        };
        let len = usize::from(len);
        let size = match next {
            V6_HOP | V6_ROUTING | V6_DSTOPTS => (len + 1) * 8,
            V6_AH => (len + 2) * 4,
            V6_FRAGMENT => {
                let Ok(offset) = ctx.load::<u16>(at + 2) else {
                    return None;
                };
                if u16::from_be(offset) & 0xfff8 != 0 {
                    return None;
                }
                8
            }
            _ => return Some((next, at)),
        };
        next = follows;
        at += size;
    }
    match next {
        V6_HOP | V6_ROUTING | V6_FRAGMENT | V6_AH | V6_DSTOPTS => None,
        _ => Some((next, at)),
    }
}

/// The IPv6 address at `offset` of the packet, as four words in memory order.
#[inline(always)]
fn v6_at(ctx: &SkBuffContext, offset: usize) -> Option<[u32; 4]> {
    let (Ok(a), Ok(b), Ok(c), Ok(d)) = (
        ctx.load::<u32>(offset),
        ctx.load::<u32>(offset + 4),
        ctx.load::<u32>(offset + 8),
        ctx.load::<u32>(offset + 12),
    ) else {
        return None;
    };
    Some([a, b, c, d])
}

#[inline(always)]
fn judge(ctx: &SkBuffContext) -> i32 {
    let Ok(first) = ctx.load::<u8>(0) else {
        return ALLOW;
    };
    let (family, peer, proto, l4) = match first >> 4 {
        4 => {
            let Ok(proto) = ctx.load::<u8>(9) else {
                return ALLOW;
            };
            // Later fragments carry no ports; the first one was judged.
            let Ok(frag) = ctx.load::<u16>(6) else {
                return ALLOW;
            };
            if u16::from_be(frag) & 0x1fff != 0 {
                return ALLOW;
            }
            let Ok(src) = ctx.load::<u32>(12) else {
                return ALLOW;
            };
            (
                FAMILY_V4,
                [src, 0, 0, 0],
                proto,
                usize::from(first & 0x0f) * 4,
            )
        }
        6 => {
            // A chain it cannot follow was judged by `syn_bind`.
            let Some((proto, l4)) = v6_upper(ctx) else {
                return ALLOW;
            };
            let (Ok(a), Ok(b), Ok(c), Ok(d)) = (
                ctx.load::<u32>(8),
                ctx.load::<u32>(12),
                ctx.load::<u32>(16),
                ctx.load::<u32>(20),
            ) else {
                return ALLOW;
            };
            (FAMILY_V6, [a, b, c, d], proto, l4)
        }
        _ => return ALLOW,
    };
    match proto {
        PROTO_TCP => {
            let Ok(flags) = ctx.load::<u8>(l4 + 13) else {
                return ALLOW;
            };
            if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
                return ALLOW;
            }
        }
        PROTO_UDP => {}
        _ => return ALLOW,
    }
    let Ok(port) = ctx.load::<u16>(l4 + 2) else {
        return ALLOW;
    };
    let (family, peer) = normalise(family, peer);
    let skb = ctx.skb.skb;
    let port = u16::from_be(port);
    let decision = decide_for(
        // SAFETY: `skb` is the program's own context; the helper only reads
        // the socket's cgroup, and returns 0 past its level.
        |level| unsafe { bpf_skb_ancestor_cgroup_id(skb.cast(), level) },
        List::Accept,
        family,
        peer,
        port,
        proto,
    );
    // SAFETY: as above.
    let cgroup = unsafe { bpf_skb_cgroup_id(skb.cast()) };
    let refusal = Refusal {
        cgroup,
        hook: HOOK_ACCEPT,
        verdict: 0,
        family,
        addr: peer,
        port,
        proto,
        task: false,
    };
    if conclude(decision, refusal) == 1 {
        ALLOW
    } else {
        DENY
    }
}
