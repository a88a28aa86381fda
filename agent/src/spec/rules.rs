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
//! never match IPv4 peers.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use palisade_common::{
    MAX_PORT_RULES, PROTO_ANY, PROTO_TCP, PROTO_UDP, PortRule, VERDICT_ALLOW, VERDICT_DENY,
};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

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
        Ok(Rule {
            action,
            proto,
            target,
            ports,
            line: 0,
        })
    }

    /// True for the list's default: `allow any` or `deny any`.
    pub fn is_default(&self) -> bool {
        self.target == Target::Any && self.proto == Proto::Any && self.ports == ALL_PORTS
    }

    fn same_match(&self, other: &Rule) -> bool {
        self.target == other.target && self.proto == other.proto && self.ports == other.ports
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

/// Checks a whole list: it needs a default, no two rules may match the same
/// traffic with opposite verdicts, and it must compile. Errors carry the
/// line of the rule at fault (`None`: the list as a whole).
pub(crate) fn validate_list(
    parsed: Vec<(Rule, usize)>,
) -> Result<Vec<Rule>, (Option<usize>, String)> {
    let mut rules: Vec<Rule> = Vec::with_capacity(parsed.len());
    for (mut rule, line) in parsed {
        rule.line = line;
        if let Some(earlier) = rules
            .iter()
            .find(|r| r.same_match(&rule) && r.action != rule.action)
        {
            return Err((
                Some(line),
                format!(
                    "rule \"{rule}\" contradicts line {} (same addresses, protocol and ports)",
                    earlier.line
                ),
            ));
        }
        rules.push(rule);
    }
    if !rules.iter().any(Rule::is_default) {
        return Err((
            None,
            "no default rule: end the list with \"allow any\" or \"deny any\"".to_string(),
        ));
    }
    compile(&rules).map_err(|e| (None, e))?;
    Ok(rules)
}

/// One longest-prefix-match entry: every rule that can decide for peers
/// whose longest covering prefix is this one, in priority order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixEntry {
    pub family: Family,
    /// Top-aligned, masked to `prefix`.
    pub addr: u128,
    pub prefix: u8,
    pub rules: Vec<PortRule>,
}

impl PrefixEntry {
    /// The address as the kernel sees it in memory: four words, each holding
    /// four bytes in network order.
    pub fn words(&self) -> [u32; 4] {
        let bytes = self.addr.to_be_bytes();
        std::array::from_fn(|i| {
            u32::from_ne_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
        })
    }
}

/// A rule list compiled for the kernel maps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompiledRules {
    pub entries: Vec<PrefixEntry>,
}

/// Compiles rules into prefix entries, each carrying its inherited rules so
/// that one longest-prefix lookup decides.
pub fn compile(rules: &[Rule]) -> Result<CompiledRules, String> {
    // Rules grouped by the prefix they name, in list order; `any` names
    // the zero-length prefix of both families.
    let mut by_prefix: BTreeMap<(Family, u128, u8), Vec<&Rule>> = BTreeMap::new();
    for r in rules {
        match r.target {
            Target::Any => {
                for family in [Family::V4, Family::V6] {
                    by_prefix.entry((family, 0, 0)).or_default().push(r);
                }
            }
            Target::Net {
                family,
                addr,
                prefix,
            } => by_prefix.entry((family, addr, prefix)).or_default().push(r),
        }
    }

    let mut entries = Vec::with_capacity(by_prefix.len());
    for &(family, addr, prefix) in by_prefix.keys() {
        let mut port_rules = Vec::new();
        // Covering prefixes, longest first; each one's rules by port width,
        // then protocol, then list order (the sort is stable).
        'walk: for len in (0..=prefix).rev() {
            let Some(own) = by_prefix.get(&(family, addr & mask(len), len)) else {
                continue;
            };
            let mut own = own.clone();
            own.sort_by_key(|r| (r.ports.1 - r.ports.0, r.proto == Proto::Any));
            for r in own {
                port_rules.push(port_rule(r));
                // A rule for every port and protocol shadows all that follow.
                if r.proto == Proto::Any && r.ports == ALL_PORTS {
                    break 'walk;
                }
            }
        }
        if port_rules.len() > MAX_PORT_RULES {
            return Err(format!(
                "{} rules apply to {} (at most {MAX_PORT_RULES} per address prefix, counting those of covering prefixes)",
                port_rules.len(),
                Target::Net {
                    family,
                    addr,
                    prefix
                },
            ));
        }
        entries.push(PrefixEntry {
            family,
            addr,
            prefix,
            rules: port_rules,
        });
    }
    Ok(CompiledRules { entries })
}

fn port_rule(r: &Rule) -> PortRule {
    PortRule {
        port_lo: r.ports.0,
        port_hi: r.ports.1,
        proto: match r.proto {
            Proto::Any => PROTO_ANY,
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        },
        verdict: match r.action {
            Action::Allow => VERDICT_ALLOW,
            Action::Deny => VERDICT_DENY,
        },
        _pad: [0; 2],
    }
}

#[cfg(test)]
mod tests {
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
        let entry = compiled
            .entries
            .iter()
            .filter(|e| e.family == family && addr & mask(e.prefix) == e.addr)
            .max_by_key(|e| e.prefix)
            .expect("default covers everything");
        entry
            .rules
            .iter()
            .find(|r| {
                (r.proto == PROTO_ANY || r.proto == proto) && r.port_lo <= port && port <= r.port_hi
            })
            .is_some_and(|r| r.verdict == VERDICT_ALLOW)
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

    /// The README's example policy parses, and judges as the README says.
    #[test]
    fn readme_example_holds() {
        let readme = include_str!("../../../README.md");
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
