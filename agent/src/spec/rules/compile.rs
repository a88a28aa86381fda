//! A rule list's checks as a whole, and its compilation into
//! longest-prefix-match entries, each carrying the rules it inherits from
//! the prefixes covering it so that one lookup decides.
//!
//! Every step is a sort or a single pass, so the time grows as n log n in
//! the list's length: a list of 100,000 rules compiles in a fraction of a
//! second. The tests compare both against plain quadratic references.

use std::collections::{BTreeMap, HashMap, HashSet};

use palisade_common::{
    MAX_PORT_RULES, PROTO_ANY, PROTO_TCP, PROTO_UDP, PortRule, VERDICT_ALLOW, VERDICT_DENY,
};

use super::{ALL_PORTS, Action, Family, Proto, Rule, Target, mask};

/// Checks a whole list: it needs a default, no two rules may match the same
/// traffic with opposite verdicts, and it must compile. Errors carry the
/// line of the rule at fault (`None`: the list as a whole).
pub(crate) fn validate_list(
    parsed: Vec<(Rule, usize)>,
) -> Result<Vec<Rule>, (Option<usize>, String)> {
    let mut rules: Vec<Rule> = Vec::with_capacity(parsed.len());
    // For each thing matched, the line of the first rule that allows it
    // and of the first that denies it.
    let mut first: HashMap<_, [Option<usize>; 2]> = HashMap::with_capacity(parsed.len());
    for (mut rule, line) in parsed {
        rule.line = line;
        let lines = first.entry(rule.match_key()).or_default();
        let (own, opposite) = match rule.action {
            Action::Allow => (0, 1),
            Action::Deny => (1, 0),
        };
        if let Some(earlier) = lines[opposite] {
            return Err((
                Some(line),
                format!(
                    "rule \"{rule}\" contradicts line {earlier} (same addresses, protocol and ports)"
                ),
            ));
        }
        lines[own].get_or_insert(line);
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

/// The prefixes a list names: one per distinct address prefix, and `any`
/// names the zero-length prefix of both families.
type PrefixKey = (Family, u128, u8);

fn prefix_keys(rule: &Rule) -> impl Iterator<Item = PrefixKey> {
    let keys = match rule.target {
        Target::Any => [Some((Family::V4, 0, 0)), Some((Family::V6, 0, 0))],
        Target::Net {
            family,
            addr,
            prefix,
        } => [Some((family, addr, prefix)), None],
    };
    keys.into_iter().flatten()
}

/// How many entries [`compile`] makes of `rules` (the map entries the list
/// takes), without compiling.
pub fn prefix_count(rules: &[Rule]) -> usize {
    rules
        .iter()
        .flat_map(prefix_keys)
        .collect::<HashSet<_>>()
        .len()
}

/// Compiles rules into prefix entries, each carrying its inherited rules so
/// that one longest-prefix lookup decides. Entries come in the order of
/// (family, address, prefix length).
///
/// An entry's rules are its own prefix's, by port width, then protocol,
/// then list order, then those of the longest shorter prefix covering it
/// (which carries its own inherited ones), unless one of its own is for
/// every port and protocol: that one shadows all that follow.
pub fn compile(rules: &[Rule]) -> Result<CompiledRules, String> {
    let mut by_prefix: BTreeMap<PrefixKey, Vec<&Rule>> = BTreeMap::new();
    for r in rules {
        for key in prefix_keys(r) {
            by_prefix.entry(key).or_default().push(r);
        }
    }

    // In this order a prefix comes after every prefix covering it, and the
    // prefixes it covers follow it without a gap: a stack of the covering
    // prefixes of the current one gives each its longest cover.
    let mut entries: Vec<PrefixEntry> = Vec::with_capacity(by_prefix.len());
    // Indices into `entries`, longest last.
    let mut covers: Vec<usize> = Vec::with_capacity(129);
    for (&(family, addr, prefix), own) in &by_prefix {
        while let Some(&top) = covers.last() {
            let c = &entries[top];
            if c.family == family && c.prefix < prefix && addr & mask(c.prefix) == c.addr {
                break;
            }
            covers.pop();
        }
        let mut own = own.clone();
        own.sort_by_key(|r| (r.ports.1 - r.ports.0, r.proto == Proto::Any));
        let shadow = own
            .iter()
            .position(|r| r.proto == Proto::Any && r.ports == ALL_PORTS);
        let kept = shadow.map_or(own.len(), |i| i + 1);
        let inherited = match (shadow, covers.last()) {
            (None, Some(&cover)) => entries[cover].rules.as_slice(),
            _ => &[],
        };
        let count = kept + inherited.len();
        if count > MAX_PORT_RULES {
            return Err(format!(
                "{count} rules apply to {} (at most {MAX_PORT_RULES} per address prefix, counting those of covering prefixes)",
                Target::Net {
                    family,
                    addr,
                    prefix
                },
            ));
        }
        let mut port_rules = Vec::with_capacity(count);
        port_rules.extend(own[..kept].iter().map(|r| port_rule(r)));
        port_rules.extend_from_slice(inherited);
        covers.push(entries.len());
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

/// The entry the kernel's longest-prefix lookup finds for a peer, and the
/// verdict of its first rule matching the port and protocol (deny if none).
#[cfg(test)]
pub(super) fn lookup(
    compiled: &CompiledRules,
    family: Family,
    addr: u128,
    proto: u8,
    port: u16,
) -> bool {
    let Some(entry) = compiled
        .entries
        .iter()
        .filter(|e| e.family == family && addr & mask(e.prefix) == e.addr)
        .max_by_key(|e| e.prefix)
    else {
        return false;
    };
    entry
        .rules
        .iter()
        .find(|r| {
            (r.proto == PROTO_ANY || r.proto == proto) && r.port_lo <= port && port <= r.port_hi
        })
        .is_some_and(|r| r.verdict == VERDICT_ALLOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first compiler, quadratic: for every prefix, walk every shorter
    /// length looking for a covering prefix. The reference for [`compile`].
    fn reference_compile(rules: &[Rule]) -> Result<CompiledRules, String> {
        let mut by_prefix: BTreeMap<PrefixKey, Vec<&Rule>> = BTreeMap::new();
        for r in rules {
            for key in prefix_keys(r) {
                by_prefix.entry(key).or_default().push(r);
            }
        }
        let mut entries = Vec::new();
        for &(family, addr, prefix) in by_prefix.keys() {
            let mut port_rules = Vec::new();
            'walk: for len in (0..=prefix).rev() {
                let Some(own) = by_prefix.get(&(family, addr & mask(len), len)) else {
                    continue;
                };
                let mut own = own.clone();
                own.sort_by_key(|r| (r.ports.1 - r.ports.0, r.proto == Proto::Any));
                for r in own {
                    port_rules.push(port_rule(r));
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

    /// The first list check, quadratic: each rule against every earlier one.
    fn reference_contradiction(rules: &[(Rule, usize)]) -> Option<(usize, usize)> {
        for (i, (rule, line)) in rules.iter().enumerate() {
            if let Some((_, earlier)) = rules[..i]
                .iter()
                .find(|(r, _)| r.match_key() == rule.match_key() && r.action != rule.action)
            {
                return Some((*line, *earlier));
            }
        }
        None
    }

    /// docs/policy.md's matching semantics applied to the rules themselves, with
    /// no compilation: the longest covering prefix first; among its rules
    /// the narrowest port range, then a named protocol, then the earlier
    /// rule; none matching, the next shorter prefix.
    fn brute_verdict(rules: &[Rule], family: Family, addr: u128, proto: u8, port: u16) -> bool {
        let covers = |r: &Rule| match r.target {
            Target::Any => Some(0),
            Target::Net {
                family: f,
                addr: a,
                prefix,
            } => (f == family && addr & mask(prefix) == a).then_some(prefix),
        };
        let proto_matches = |r: &Rule| match r.proto {
            Proto::Any => true,
            Proto::Tcp => proto == PROTO_TCP,
            Proto::Udp => proto == PROTO_UDP,
        };
        rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| covers(r).map(|len| (len, r, i)))
            .filter(|(_, r, _)| proto_matches(r) && r.ports.0 <= port && port <= r.ports.1)
            .min_by_key(|&(len, r, i)| {
                (
                    std::cmp::Reverse(len),
                    r.ports.1 - r.ports.0,
                    r.proto == Proto::Any,
                    i,
                )
            })
            .is_some_and(|(_, r, _)| r.action == Action::Allow)
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len() as u64) as usize]
        }
    }

    /// Addresses drawn from a few small neighbourhoods, so that prefixes
    /// nest and collide often.
    fn random_addr(rng: &mut Rng, family: Family) -> u128 {
        match family {
            Family::V4 => {
                let base: u32 = rng.pick(&[0x0a00_0000, 0x7f00_0000, 0xc0a8_0100]);
                u128::from(base | rng.below(16) as u32 | (rng.below(4) as u32) << 8) << 96
            }
            Family::V6 => {
                let base: u128 = rng.pick(&[0x2001_0db8 << 96, 1, 0xfe80 << 112]);
                base | u128::from(rng.below(16) as u8) | u128::from(rng.below(4) as u8) << 64
            }
        }
    }

    fn random_rule(rng: &mut Rng) -> Rule {
        let action = rng.pick(&[Action::Allow, Action::Deny]);
        let proto = rng.pick(&[Proto::Any, Proto::Tcp, Proto::Udp]);
        let target = if rng.below(8) == 0 {
            Target::Any
        } else {
            let family = rng.pick(&[Family::V4, Family::V6]);
            let bits = family.bits();
            let prefix = match rng.below(3) {
                0 => bits,
                1 => bits - rng.below(8) as u8,
                _ => rng.below(u64::from(bits) + 1) as u8,
            };
            let shift = 128 - u32::from(family.bits());
            let addr = random_addr(rng, family) & mask(prefix) & !((1u128 << shift) - 1);
            Target::Net {
                family,
                addr,
                prefix,
            }
        };
        let ports = match rng.below(4) {
            0 => ALL_PORTS,
            1 => {
                let p = 80 + rng.below(4) as u16;
                (p, p)
            }
            _ => {
                let lo = 78 + rng.below(6) as u16;
                (lo, lo + rng.below(5) as u16)
            }
        };
        Rule {
            action,
            proto,
            target,
            ports,
            line: 0,
        }
    }

    #[test]
    fn compile_matches_the_reference_on_random_lists() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut errors = 0;
        for case in 0..3000 {
            // Every fourth list long enough to pass the bound now and then.
            let n = 1 + rng.below(if case % 4 == 0 { 200 } else { 60 }) as usize;
            let rules: Vec<Rule> = (0..n).map(|_| random_rule(&mut rng)).collect();
            let fast = compile(&rules);
            assert_eq!(fast, reference_compile(&rules), "case {case}: {rules:?}");
            let Ok(compiled) = fast else {
                errors += 1;
                continue;
            };
            assert_eq!(compiled.entries.len(), prefix_count(&rules), "case {case}");
            for _ in 0..20 {
                let family = rng.pick(&[Family::V4, Family::V6]);
                let addr = random_addr(&mut rng, family);
                let proto = rng.pick(&[PROTO_TCP, PROTO_UDP]);
                let port = 76 + rng.below(12) as u16;
                assert_eq!(
                    lookup(&compiled, family, addr, proto, port),
                    brute_verdict(&rules, family, addr, proto, port),
                    "case {case}: {family:?} {addr:x} {proto} {port} under {rules:?}"
                );
            }
        }
        // Both outcomes were exercised.
        assert!(errors > 0 && errors < 3000, "{errors} lists over the bound");
    }

    #[test]
    fn contradictions_match_the_reference_on_random_lists() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut found = 0;
        for case in 0..3000 {
            let n = 1 + rng.below(40) as usize;
            let mut parsed: Vec<(Rule, usize)> =
                (0..n).map(|i| (random_rule(&mut rng), i + 1)).collect();
            parsed.push((Rule::parse("deny any").unwrap(), n + 1));
            let expected = reference_contradiction(&parsed);
            match validate_list(parsed.clone()) {
                Err((Some(line), message)) => {
                    let (at, earlier) = expected.expect("a contradiction");
                    assert_eq!(line, at, "case {case}");
                    assert!(
                        message.contains(&format!("line {earlier} ")),
                        "case {case}: {message}"
                    );
                    found += 1;
                }
                other => {
                    assert_eq!(expected, None, "case {case}: {other:?}");
                }
            }
        }
        assert!(found > 100, "{found}");
    }

    #[test]
    fn a_hundred_thousand_rules_compile() {
        let mut rules: Vec<Rule> = (0..100_000u32)
            .map(|i| {
                let mut r = Rule::parse(&format!(
                    "allow tcp 10.{}.{}.{}:443",
                    i >> 16,
                    i >> 8 & 255,
                    i & 255
                ))
                .unwrap();
                r.line = i as usize + 1;
                r
            })
            .collect();
        rules.push(Rule::parse("deny tcp 10.0.0.0/8").unwrap());
        rules.push(Rule::parse("allow any").unwrap());
        let parsed = rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| (r, i + 1))
            .collect();
        let started = std::time::Instant::now();
        let rules = validate_list(parsed).unwrap();
        let checked = started.elapsed();
        let compiled = compile(&rules).unwrap();
        // For the record (--nocapture); the goal is checked by the bench.
        eprintln!(
            "100k rules: checked and compiled in {checked:?}, compiled again in {:?}",
            started.elapsed() - checked
        );
        assert_eq!(compiled.entries.len(), 100_003);
        let host = compiled.entries.iter().find(|e| e.prefix == 32).unwrap();
        assert_eq!(host.rules.len(), 3);
    }

    #[test]
    fn covers_are_found_across_gaps_and_families() {
        let rules: Vec<Rule> = [
            "allow tcp 10.0.0.0/8",
            "deny udp 10.1.0.0/16",
            "allow 10.1.2.3/32:53",
            "deny tcp 10.2.0.0/16:80",
            "allow 11.0.0.0/8",
            "deny ::/0",
            "allow [2001:db8::/32]:443",
            "allow any",
        ]
        .iter()
        .map(|t| Rule::parse(t).unwrap())
        .collect();
        assert_eq!(compile(&rules), reference_compile(&rules));
        let c = compile(&rules).unwrap();
        let host = c.entries.iter().find(|e| e.prefix == 32).unwrap();
        // its own, the /16's, the /8's, then the default's
        assert_eq!(host.rules.len(), 4);
        assert_eq!(prefix_count(&rules), c.entries.len());
    }
}
