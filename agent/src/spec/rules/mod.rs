//! The rule grammar shared by every address list, and its compilation into
//! longest-prefix-match entries.
//!
//! Grammar: `allow|deny [tcp|udp|any] TARGET`, where TARGET is `any`,
//! `any:PORTS`, a bare `PORTS` (any address), `ADDR[/PREFIX][:PORTS]` or
//! `[IPV6[/PREFIX]]:PORTS`, and PORTS
//! is `PORT` or `PORT-PORT`. An IPv6 address without brackets carries no
//! port (its colons are its own).
//!
//! Matching, identical in every hook: the longest prefix that covers the
//! peer's address is consulted first; among its rules the narrowest port
//! range holding the port wins, then a rule naming the protocol over `any`,
//! then the earlier rule. If none of that prefix's rules match the port and
//! protocol, the next shorter covering prefix is consulted, down to the
//! default (`allow any` / `deny any`), which every list must have. IPv4
//! rules also judge IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`); IPv6 rules
//! never match IPv4 peers, so an IPv6 rule inside `::ffff:0:0/96` could
//! never match anything and is refused, naming the IPv4 rule meant.
//!
//! Compilation and the checks of a whole list are in `compile`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use thiserror::Error;

mod compile;

pub(crate) use compile::validate_list;
pub use compile::{CompiledRules, PrefixEntry, compile, prefix_count};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// What a rule's address part covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every address of both families.
    Any,
    /// A network. `addr` is top-aligned: an IPv4 address fills the high 32
    /// bits. Bits beyond `prefix` are zero.
    Net {
        family: Family,
        addr: u128,
        prefix: u8,
    },
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub proto: Proto,
    pub target: Target,
    /// Inclusive, host byte order.
    pub ports: (u16, u16),
    /// Line in the policy file; 0 when the rule did not come from a file.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    #[error("empty rule")]
    Empty,
    #[error("unknown action {0:?} (expected allow or deny)")]
    UnknownAction(String),
    #[error("missing address (e.g. \"deny any\" or \"allow tcp 10.0.0.0/8:443\")")]
    MissingTarget,
    #[error("unexpected {0:?} after the address")]
    Trailing(String),
    #[error("invalid address {0:?}")]
    BadAddress(String),
    #[error("invalid prefix length {value:?} (0-{max})")]
    BadPrefix { value: String, max: u8 },
    #[error("{given} has bits set beyond its prefix; did you mean {suggest}?")]
    HostBits { given: String, suggest: String },
    #[error("invalid port {0:?} (0-65535)")]
    BadPort(String),
    #[error("port range {0}-{1} is reversed")]
    ReversedRange(u16, u16),
    #[error(
        "{given} lies inside ::ffff:0:0/96 and can never match: IPv4 peers, IPv4-mapped ones included, are judged by IPv4 rules only; did you mean \"{suggest}\"?"
    )]
    MappedV6 { given: String, suggest: String },
}

/// `::ffff:0:0/96`, top-aligned: the IPv4-mapped IPv6 addresses.
const V4_MAPPED: u128 = 0xffff << 32;

const ALL_PORTS: (u16, u16) = (0, u16::MAX);

impl Rule {
    /// Parses one rule string.
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let mut tokens = text.split_whitespace();
        let action = match tokens.next().ok_or(RuleError::Empty)? {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            other => return Err(RuleError::UnknownAction(other.to_string())),
        };
        let rest: Vec<&str> = tokens.collect();
        let (proto, target) = match rest.as_slice() {
            [] => return Err(RuleError::MissingTarget),
            [target] => (Proto::Any, *target),
            [proto, target, tail @ ..] => {
                let proto = match *proto {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "any" => Proto::Any,
                    other => return Err(RuleError::BadAddress(other.to_string())),
                };
                if let Some(extra) = tail.first() {
                    return Err(RuleError::Trailing(extra.to_string()));
                }
                (proto, *target)
            }
        };
        let (target, ports) = parse_target(target)?;
        let rule = Rule {
            action,
            proto,
            target,
            ports,
            line: 0,
        };
        match rule.ipv4_meant() {
            Some(meant) => Err(RuleError::MappedV6 {
                given: match target {
                    Target::Net { addr, prefix, .. } => {
                        format!("{}/{prefix}", Ipv6Addr::from(addr))
                    }
                    Target::Any => unreachable!("only an IPv6 network is mapped"),
                },
                suggest: meant.to_string(),
            }),
            None => Ok(rule),
        }
    }

    /// For an IPv6 rule wholly inside `::ffff:0:0/96` (which no peer ever
    /// matches, as mapped peers are judged as IPv4), the IPv4 rule with the
    /// same action, protocol and ports.
    fn ipv4_meant(&self) -> Option<Rule> {
        let Target::Net {
            family: Family::V6,
            addr,
            prefix,
        } = self.target
        else {
            return None;
        };
        if prefix < 96 || addr & mask(96) != V4_MAPPED {
            return None;
        }
        Some(Rule {
            target: Target::Net {
                family: Family::V4,
                addr: (addr & u128::from(u32::MAX)) << 96,
                prefix: prefix - 96,
            },
            ..self.clone()
        })
    }

    /// What a rule matches, without its verdict: two rules with the same
    /// key and opposite actions contradict each other.
    fn match_key(&self) -> (Target, Proto, (u16, u16)) {
        (self.target, self.proto, self.ports)
    }

    /// True for the list's default: `allow any` or `deny any`.
    pub fn is_default(&self) -> bool {
        self.target == Target::Any && self.proto == Proto::Any && self.ports == ALL_PORTS
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
        };
        let proto = match self.proto {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{action} {proto} {}", self.target)?;
        match self.ports {
            ALL_PORTS => Ok(()),
            (lo, hi) if lo == hi => write!(f, ":{lo}"),
            (lo, hi) => write!(f, ":{lo}-{hi}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Target::Any => write!(f, "any"),
            Target::Net {
                family: Family::V4,
                addr,
                prefix,
            } => {
                write!(f, "{}/{prefix}", Ipv4Addr::from((addr >> 96) as u32))
            }
            Target::Net {
                family: Family::V6,
                addr,
                prefix,
            } => {
                write!(f, "[{}/{prefix}]", Ipv6Addr::from(addr))
            }
        }
    }
}

fn parse_target(text: &str) -> Result<(Target, (u16, u16)), RuleError> {
    if text == "any" {
        return Ok((Target::Any, ALL_PORTS));
    }
    if let Some(ports) = text.strip_prefix("any:") {
        return Ok((Target::Any, parse_ports(ports)?));
    }
    // A bare PORT or PORT-PORT: any address (the usual bind rule).
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Ok((Target::Any, parse_ports(text)?));
    }
    // [v6] or [v6/len], optionally followed by :PORTS.
    if let Some(inner) = text.strip_prefix('[') {
        let (net, after) = inner
            .split_once(']')
            .ok_or_else(|| RuleError::BadAddress(text.to_string()))?;
        let ports = match after {
            "" => ALL_PORTS,
            _ => parse_ports(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| RuleError::Trailing(after.to_string()))?,
            )?,
        };
        let (addr, prefix) = net
            .split_once('/')
            .map_or((net, None), |(a, p)| (a, Some(p)));
        return Ok((parse_net(addr, prefix)?, ports));
    }
    // ADDR/PREFIX[:PORTS]
    if let Some((addr, rest)) = text.split_once('/') {
        let (prefix, ports) = match rest.split_once(':') {
            Some((p, ports)) => (p, parse_ports(ports)?),
            None => (rest, ALL_PORTS),
        };
        return Ok((parse_net(addr, Some(prefix))?, ports));
    }
    // a.b.c.d:PORTS has exactly one colon; an IPv6 address has more.
    if text.matches(':').count() == 1 {
        let (addr, ports) = text.split_once(':').expect("one colon");
        return Ok((parse_net(addr, None)?, parse_ports(ports)?));
    }
    Ok((parse_net(text, None)?, ALL_PORTS))
}

fn parse_net(addr: &str, prefix: Option<&str>) -> Result<Target, RuleError> {
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| RuleError::BadAddress(addr.to_string()))?;
    let (family, value) = match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4)) << 96),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    };
    let max = family.bits();
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(RuleError::BadPrefix {
                    value: p.to_string(),
                    max,
                });
            }
        },
    };
    let masked = value & mask(prefix);
    if masked != value {
        let suggest = Target::Net {
            family,
            addr: masked,
            prefix,
        }
        .to_string();
        return Err(RuleError::HostBits {
            given: format!("{addr}/{prefix}"),
            suggest,
        });
    }
    Ok(Target::Net {
        family,
        addr: value,
        prefix,
    })
}

fn parse_ports(text: &str) -> Result<(u16, u16), RuleError> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| RuleError::BadPort(p.to_string()))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(RuleError::ReversedRange(lo, hi));
    }
    Ok((lo, hi))
}

/// The top `prefix` bits of a 128-bit address.
const fn mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix as u32)
    }
}

#[cfg(test)]
mod tests {
    use palisade_common::{PROTO_TCP, PROTO_UDP};

    use super::*;

    fn rule(text: &str) -> Rule {
        Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn list(texts: &[&str]) -> Vec<Rule> {
        validate_list(
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| (rule(t), i + 1))
                .collect(),
        )
        .unwrap()
    }

    /// Evaluates a compiled list the way the kernel program does: longest
    /// matching prefix, then the first port rule that matches.
    fn verdict(rules: &[Rule], peer: IpAddr, proto: u8, port: u16) -> bool {
        let compiled = compile(rules).unwrap();
        let (family, addr) = match peer {
            IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4)) << 96),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (Family::V4, u128::from(u32::from(v4)) << 96),
                None => (Family::V6, u128::from(v6)),
            },
        };
        compile::lookup(&compiled, family, addr, proto, port)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn grammar_forms() {
        let r = rule("allow tcp 127.0.0.1/32:8000-8999");
        assert_eq!(r.action, Action::Allow);
        assert_eq!(r.proto, Proto::Tcp);
        assert_eq!(r.ports, (8000, 8999));
        assert_eq!(
            r.target,
            Target::Net {
                family: Family::V4,
                addr: 0x7f00_0001 << 96,
                prefix: 32
            }
        );
        assert_eq!(
            rule("deny any"),
            Rule {
                action: Action::Deny,
                proto: Proto::Any,
                target: Target::Any,
                ports: ALL_PORTS,
                line: 0
            }
        );
        assert_eq!(rule("deny udp any:53").ports, (53, 53));
        assert_eq!(rule("allow udp ::1/128:53").ports, (53, 53));
        assert_eq!(rule("allow udp [::1]:53").ports, (53, 53));
        assert_eq!(rule("allow udp [::1/128]:53").ports, (53, 53));
        assert_eq!(rule("allow ::1").ports, ALL_PORTS);
        assert_eq!(rule("allow 10.0.0.1:443").ports, (443, 443));
        assert_eq!(rule("allow tcp 10.0.0.0/8").ports, ALL_PORTS);
        let bare = rule("allow tcp 8080");
        assert_eq!((bare.target, bare.ports), (Target::Any, (8080, 8080)));
        assert_eq!(rule("deny udp 8000-8999").ports, (8000, 8999));
        assert!(matches!(
            rule("allow 2001:db8::/32").target,
            Target::Net {
                family: Family::V6,
                prefix: 32,
                ..
            }
        ));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "allow tcp 127.0.0.1/32:8000-8999",
            "deny any any",
            "allow udp [::1/128]:53",
            "deny tcp 10.0.0.0/8:443",
        ] {
            let r = rule(text);
            assert_eq!(rule(&r.to_string()), r, "{text} -> {r}");
        }
    }

    #[test]
    fn grammar_errors() {
        assert_eq!(Rule::parse(""), Err(RuleError::Empty));
        assert_eq!(
            Rule::parse("permit any"),
            Err(RuleError::UnknownAction("permit".into()))
        );
        assert_eq!(Rule::parse("allow"), Err(RuleError::MissingTarget));
        assert_eq!(
            Rule::parse("allow tcp 1.2.3.4 extra"),
            Err(RuleError::Trailing("extra".into()))
        );
        assert_eq!(
            Rule::parse("allow sctp 1.2.3.4"),
            Err(RuleError::BadAddress("sctp".into()))
        );
        assert_eq!(
            Rule::parse("allow 300.0.0.1"),
            Err(RuleError::BadAddress("300.0.0.1".into()))
        );
        assert!(matches!(
            Rule::parse("allow 10.0.0.0/33"),
            Err(RuleError::BadPrefix { max: 32, .. })
        ));
        assert!(matches!(
            Rule::parse("allow ::/129"),
            Err(RuleError::BadPrefix { max: 128, .. })
        ));
        assert_eq!(
            Rule::parse("allow 1.2.3.4:70000"),
            Err(RuleError::BadPort("70000".into()))
        );
        assert_eq!(
            Rule::parse("allow 1.2.3.4:90-80"),
            Err(RuleError::ReversedRange(90, 80))
        );
        let e = Rule::parse("allow 127.0.0.1/8").unwrap_err();
        assert!(e.to_string().contains("127.0.0.0/8"), "{e}");
    }

    #[test]
    fn ipv6_rules_inside_the_mapped_range_are_refused_with_the_ipv4_rule_meant() {
        let meant = |text: &str| match Rule::parse(text) {
            Err(RuleError::MappedV6 { suggest, .. }) => suggest,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            meant("deny tcp ::ffff:127.0.0.1/128"),
            "deny tcp 127.0.0.1/32"
        );
        assert_eq!(meant("deny tcp ::ffff:127.0.0.1"), "deny tcp 127.0.0.1/32");
        assert_eq!(
            meant("allow udp [::ffff:10.0.0.0/104]:53"),
            "allow udp 10.0.0.0/8:53"
        );
        assert_eq!(
            meant("allow [::ffff:0:0/96]:1000-2000"),
            "allow any 0.0.0.0/0:1000-2000"
        );
        assert_eq!(meant("deny tcp ::ffff:7f00:1/128"), "deny tcp 127.0.0.1/32");
        // The suggestion parses, as the rule it names.
        let fixed = rule(&meant("deny tcp [::ffff:192.168.1.0/120]:22"));
        assert_eq!(fixed.to_string(), "deny tcp 192.168.1.0/24:22");
        let e = Rule::parse("deny tcp ::ffff:127.0.0.1/128").unwrap_err();
        assert!(e.to_string().contains("::ffff:127.0.0.1/128"), "{e}");
        assert!(
            e.to_string()
                .contains("did you mean \"deny tcp 127.0.0.1/32\""),
            "{e}"
        );
        // Prefixes reaching beyond the mapped range match real IPv6 peers.
        for text in [
            "deny ::/0",
            "deny ::/80",
            "deny ::fffe:0:0/95",
            "deny ::fffe:0:0/96",
            "deny ::1:ffff:0:0/112",
            "deny 64:ff9b::7f00:1/128",
        ] {
            assert!(Rule::parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn list_needs_a_default_and_no_contradictions() {
        let one = |t: &str| (rule(t), 1);
        assert!(
            validate_list(vec![one("allow 10.0.0.0/8")])
                .unwrap_err()
                .1
                .contains("no default")
        );
        let e = validate_list(vec![
            (rule("allow tcp 10.0.0.0/8:80"), 3),
            (rule("deny tcp 10.0.0.0/8:80"), 4),
            (rule("deny any"), 5),
        ])
        .unwrap_err();
        assert_eq!(e.0, Some(4));
        assert!(e.1.contains("line 3"), "{}", e.1);
    }

    #[test]
    fn longest_prefix_wins() {
        let rules = list(&["allow tcp 127.0.0.1/32", "deny 127.0.0.0/8", "allow any"]);
        assert!(verdict(&rules, ip("127.0.0.1"), PROTO_TCP, 80));
        assert!(!verdict(&rules, ip("127.0.0.2"), PROTO_TCP, 80));
        assert!(verdict(&rules, ip("10.1.1.1"), PROTO_TCP, 80));
        // the /32 names tcp only: udp to it falls through to the /8
        assert!(!verdict(&rules, ip("127.0.0.1"), PROTO_UDP, 80));
    }

    #[test]
    fn narrower_ports_win_within_a_prefix_then_protocol_then_order() {
        let rules = list(&[
            "allow 10.0.0.0/8:1-1000",
            "deny 10.0.0.0/8:80",
            "allow tcp 10.0.0.0/8:80",
            "deny any",
        ]);
        assert!(verdict(&rules, ip("10.2.3.4"), PROTO_TCP, 80));
        assert!(!verdict(&rules, ip("10.2.3.4"), PROTO_UDP, 80));
        assert!(verdict(&rules, ip("10.2.3.4"), PROTO_UDP, 81));
        assert!(!verdict(&rules, ip("10.2.3.4"), PROTO_UDP, 1001));
        let rules = list(&[
            "allow 10.0.0.0/8:100-199",
            "deny 10.0.0.0/8:150-249",
            "deny any",
        ]);
        assert!(
            verdict(&rules, ip("10.0.0.1"), PROTO_TCP, 150),
            "equal width: earlier rule wins"
        );
    }

    #[test]
    fn port_range_edges() {
        let rules = list(&["allow tcp 127.0.0.1/32:8000-8999", "deny any"]);
        assert!(!verdict(&rules, ip("127.0.0.1"), PROTO_TCP, 7999));
        assert!(verdict(&rules, ip("127.0.0.1"), PROTO_TCP, 8000));
        assert!(verdict(&rules, ip("127.0.0.1"), PROTO_TCP, 8999));
        assert!(!verdict(&rules, ip("127.0.0.1"), PROTO_TCP, 9000));
    }

    #[test]
    fn families_stay_apart_but_mapped_addresses_are_ipv4() {
        let rules = list(&["allow 127.0.0.1", "deny ::/0", "allow any"]);
        assert!(verdict(&rules, ip("::ffff:127.0.0.1"), PROTO_TCP, 1));
        assert!(
            verdict(&rules, ip("::ffff:127.0.0.2"), PROTO_TCP, 1),
            "::/0 must not judge IPv4"
        );
        assert!(!verdict(&rules, ip("::1"), PROTO_TCP, 1));
        let rules = list(&["allow tcp 127.0.0.1", "deny any"]);
        assert!(!verdict(&rules, ip("::ffff:127.0.0.2"), PROTO_TCP, 1));
    }

    #[test]
    fn entries_are_bounded() {
        let mut texts: Vec<String> = (0..40)
            .map(|p| format!("allow tcp 10.0.0.0/8:{p}"))
            .collect();
        texts.push("deny any".into());
        let rules: Vec<Rule> = texts.iter().map(|t| rule(t)).collect();
        assert!(compile(&rules).unwrap_err().contains("10.0.0.0/8"));
        // many prefixes, each with few rules, are fine
        let mut texts: Vec<String> = (0..10_000u32)
            .map(|i| format!("allow tcp 10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        texts.push("deny any".into());
        let rules: Vec<Rule> = texts.iter().map(|t| rule(t)).collect();
        assert_eq!(compile(&rules).unwrap().entries.len(), 10_002);
    }

    /// The README's example policy parses, and judges as docs/policy.md says.
    #[test]
    fn readme_example_holds() {
        let readme = include_str!("../../../../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + 8;
        let block = &readme[start..start + readme[start..].find("```").unwrap()];
        let policy = crate::spec::Policy::parse(std::path::Path::new("README.md"), block).unwrap();
        let rules = policy.network.connect.unwrap();
        assert!(!verdict(&rules, ip("10.1.2.3"), PROTO_TCP, 25));
        assert!(verdict(&rules, ip("10.1.2.3"), PROTO_UDP, 25));
        assert!(!verdict(&rules, ip("127.0.0.1"), PROTO_TCP, 9000));
        assert!(verdict(&rules, ip("::ffff:127.0.0.1"), PROTO_TCP, 8080));
        assert!(verdict(&rules, ip("::1"), PROTO_UDP, 53));
        assert!(!verdict(&rules, ip("::1"), PROTO_TCP, 53));
    }

    #[test]
    fn words_are_in_memory_order() {
        let e = compile(&[rule("allow 127.0.0.1"), rule("deny any")]).unwrap();
        let v4 = e.entries.iter().find(|e| e.prefix == 32).unwrap();
        assert_eq!(v4.words()[0].to_ne_bytes(), [127, 0, 0, 1]);
    }
}
