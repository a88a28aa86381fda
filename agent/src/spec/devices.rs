//! Device rules: the grammar of `[devices] allow` (and of the rules
//! `--device` and OCI bundles add), the default allowlist, and the
//! compilation into the patterns the kernel's device program looks up.
//!
//! Grammar: `TYPE MAJOR:MINOR ACCESS` — TYPE is `c` (character), `b`
//! (block) or `a` (both); MAJOR and MINOR are numbers or `*` (a `*` major
//! needs a `*` minor); ACCESS is one or more of `r` (read), `w` (write)
//! and `m` (mknod). Rules only grant: a device access is allowed when the
//! rules matching the device grant every access it asks for between them,
//! and everything else is refused, mknod included.

use std::{collections::BTreeMap, fmt};

use palisade_common::{
    DEVICE_ACC_MKNOD, DEVICE_ACC_READ, DEVICE_ACC_WRITE, DEVICE_ALL, DEVICE_ANY, DEVICE_BLOCK,
    DEVICE_CHAR, MAX_DEVICE_RULES,
};
use thiserror::Error;

/// Largest major number (12 bits) and minor number (20 bits) Linux has.
const MAX_MAJOR: u32 = (1 << 12) - 1;
const MAX_MINOR: u32 = (1 << 20) - 1;

/// The rules every container gets unless its policy says `defaults =
/// false`: the OCI runtime spec's default devices (null, zero, full,
/// random, urandom, tty, console, ptmx and the pty slaves).
pub const DEFAULT_DEVICES: &[&str] = &[
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:1 rwm",   // console
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pts/N
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceType {
    Block,
    Char,
    /// Both (`a`).
    All,
}

impl DeviceType {
    /// As the kernel and the maps number it.
    pub const fn bits(self) -> u32 {
        match self {
            DeviceType::Block => DEVICE_BLOCK,
            DeviceType::Char => DEVICE_CHAR,
            DeviceType::All => DEVICE_ALL,
        }
    }

    pub const fn letter(self) -> char {
        match self {
            DeviceType::Block => 'b',
            DeviceType::Char => 'c',
            DeviceType::All => 'a',
        }
    }
}

/// One device rule. `None` as a number is `*`; a `None` major always has
/// a `None` minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceRule {
    pub kind: DeviceType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `DEVICE_ACC_*` bits, at least one.
    pub access: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeviceRuleError {
    #[error("expected \"TYPE MAJOR:MINOR ACCESS\", such as \"c 1:3 rwm\"")]
    Shape,
    #[error("invalid device type {0:?} (c, b or a)")]
    Type(String),
    #[error("invalid major number {0:?} (0-4095 or *)")]
    Major(String),
    #[error("invalid minor number {0:?} (0-1048575 or *)")]
    Minor(String),
    #[error("{0:?}: a wildcard major needs a wildcard minor (\"*:*\")")]
    WildMajor(String),
    #[error("invalid access {0:?} (one or more of r, w and m, each once)")]
    Access(String),
}

/// `ACCESS` of a rule or a `--device` flag: one or more of r, w, m, each
/// at most once, in any order.
pub fn parse_access(text: &str) -> Result<u32, DeviceRuleError> {
    let mut bits = 0;
    for c in text.chars() {
        let bit = match c {
            'r' => DEVICE_ACC_READ,
            'w' => DEVICE_ACC_WRITE,
            'm' => DEVICE_ACC_MKNOD,
            _ => return Err(DeviceRuleError::Access(text.to_string())),
        };
        if bits & bit != 0 {
            return Err(DeviceRuleError::Access(text.to_string()));
        }
        bits |= bit;
    }
    if bits == 0 {
        return Err(DeviceRuleError::Access(text.to_string()));
    }
    Ok(bits)
}

/// Access bits as letters, in the order r, w, m (`-` for none).
pub fn access_letters(bits: u32) -> String {
    let letters: String = [
        (DEVICE_ACC_READ, 'r'),
        (DEVICE_ACC_WRITE, 'w'),
        (DEVICE_ACC_MKNOD, 'm'),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|&(_, c)| c)
    .collect();
    if letters.is_empty() {
        "-".to_string()
    } else {
        letters
    }
}

impl DeviceRule {
    pub fn parse(text: &str) -> Result<Self, DeviceRuleError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [kind, numbers, access] = fields.as_slice() else {
            return Err(DeviceRuleError::Shape);
        };
        let kind = match *kind {
            "c" => DeviceType::Char,
            "b" => DeviceType::Block,
            "a" => DeviceType::All,
            other => return Err(DeviceRuleError::Type(other.to_string())),
        };
        let (major, minor) = numbers.split_once(':').ok_or(DeviceRuleError::Shape)?;
        let number = |text: &str, max: u32| -> Option<Option<u32>> {
            if text == "*" {
                return Some(None);
            }
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse().ok().filter(|&n| n <= max).map(Some)
        };
        let major = number(major, MAX_MAJOR).ok_or_else(|| DeviceRuleError::Major(major.into()))?;
        let minor = number(minor, MAX_MINOR).ok_or_else(|| DeviceRuleError::Minor(minor.into()))?;
        if major.is_none() && minor.is_some() {
            return Err(DeviceRuleError::WildMajor(numbers.to_string()));
        }
        Ok(Self {
            kind,
            major,
            minor,
            access: parse_access(access)?,
        })
    }

    /// The rule for exactly one device.
    pub fn exact(kind: DeviceType, major: u32, minor: u32, access: u32) -> Self {
        Self {
            kind,
            major: Some(major),
            minor: Some(minor),
            access,
        }
    }

    /// The map key's pattern: (type, major, minor), `*` as `DEVICE_ANY`.
    pub fn pattern(&self) -> (u32, u32, u32) {
        (
            self.kind.bits(),
            self.major.unwrap_or(DEVICE_ANY),
            self.minor.unwrap_or(DEVICE_ANY),
        )
    }

    /// The rule a map entry holds, back from its pattern and access.
    pub fn from_pattern(kind: u32, major: u32, minor: u32, access: u32) -> Self {
        let number = |n| (n != DEVICE_ANY).then_some(n);
        Self {
            kind: match kind {
                DEVICE_BLOCK => DeviceType::Block,
                DEVICE_CHAR => DeviceType::Char,
                _ => DeviceType::All,
            },
            major: number(major),
            minor: number(minor),
            access,
        }
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        write!(
            f,
            "{} {}:{} {}",
            self.kind.letter(),
            number(self.major),
            number(self.minor),
            access_letters(self.access)
        )
    }
}

impl TryFrom<String> for DeviceRule {
    type Error = DeviceRuleError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<DeviceRule> for String {
    fn from(rule: DeviceRule) -> Self {
        rule.to_string()
    }
}

/// `[devices]`: which devices the container may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// Include [`DEFAULT_DEVICES`] (`defaults = true`, the default).
    pub defaults: bool,
    /// `allow`, in file order; added to the defaults.
    pub allow: Vec<DeviceRule>,
}

impl Default for DevicePolicy {
    fn default() -> Self {
        Self {
            defaults: true,
            allow: Vec::new(),
        }
    }
}

impl DevicePolicy {
    /// Every rule in force: the defaults (unless turned off), then `allow`.
    pub fn rules(&self) -> Vec<DeviceRule> {
        let defaults = DEFAULT_DEVICES
            .iter()
            .filter(|_| self.defaults)
            .map(|r| DeviceRule::parse(r).expect("the defaults parse"));
        defaults.chain(self.allow.iter().copied()).collect()
    }
}

/// The map entries for `rules`: each pattern once, with the access of
/// every rule naming it ORed. More than [`MAX_DEVICE_RULES`] patterns are
/// refused.
pub fn compile_devices(rules: &[DeviceRule]) -> Result<BTreeMap<(u32, u32, u32), u32>, String> {
    let mut patterns = BTreeMap::new();
    for rule in rules {
        *patterns.entry(rule.pattern()).or_insert(0) |= rule.access;
    }
    if patterns.len() > MAX_DEVICE_RULES {
        return Err(format!(
            "{} distinct device rules; at most {MAX_DEVICE_RULES} are supported",
            patterns.len()
        ));
    }
    Ok(patterns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for text in ["c 1:3 rwm", "b 7:* r", "c *:* m", "a *:* rwm", "c 136:* rw"] {
            assert_eq!(DeviceRule::parse(text).unwrap().to_string(), text);
        }
        let r = DeviceRule::parse("  b   7:*   wr ").unwrap();
        assert_eq!(r.to_string(), "b 7:* rw");
        assert_eq!(r.pattern(), (DEVICE_BLOCK, 7, DEVICE_ANY));
        assert_eq!(r.access, DEVICE_ACC_READ | DEVICE_ACC_WRITE);
        let (k, ma, mi) = r.pattern();
        assert_eq!(DeviceRule::from_pattern(k, ma, mi, r.access), r);
        assert_eq!(
            DeviceRule::parse("c 4095:1048575 m").unwrap().pattern(),
            (DEVICE_CHAR, 4095, 1_048_575)
        );
    }

    #[test]
    fn bad_rules_name_what_is_wrong() {
        use DeviceRuleError::*;
        let cases: &[(&str, DeviceRuleError)] = &[
            ("c 1:3", Shape),
            ("c 1:3 rw extra", Shape),
            ("c 13 rw", Shape),
            ("x 1:3 rw", Type("x".into())),
            ("char 1:3 rw", Type("char".into())),
            ("c one:3 rw", Major("one".into())),
            ("c 4096:0 rw", Major("4096".into())),
            ("c -1:0 rw", Major("-1".into())),
            ("c 1: rw", Minor("".into())),
            ("c 1:1048576 rw", Minor("1048576".into())),
            ("c *:3 rw", WildMajor("*:3".into())),
            ("c 1:3 rx", Access("rx".into())),
            ("c 1:3 rr", Access("rr".into())),
            ("c 1:3 RW", Access("RW".into())),
        ];
        for (text, want) in cases {
            assert_eq!(&DeviceRule::parse(text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn defaults_are_added_to_or_replaced() {
        let mut p = DevicePolicy::default();
        assert_eq!(p.rules().len(), DEFAULT_DEVICES.len());
        p.allow.push(DeviceRule::parse("b 7:0 r").unwrap());
        let rules = p.rules();
        assert_eq!(rules.len(), DEFAULT_DEVICES.len() + 1);
        assert_eq!(rules.last().unwrap().to_string(), "b 7:0 r");
        p.defaults = false;
        assert_eq!(p.rules().len(), 1);
    }

    #[test]
    fn compiling_merges_access_of_one_pattern() {
        let rules: Vec<DeviceRule> = ["c 1:3 r", "c 1:3 w", "a 1:3 m", "c 1:* m"]
            .iter()
            .map(|r| DeviceRule::parse(r).unwrap())
            .collect();
        let map = compile_devices(&rules).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(
            map[&(DEVICE_CHAR, 1, 3)],
            DEVICE_ACC_READ | DEVICE_ACC_WRITE
        );
        assert_eq!(map[&(DEVICE_ALL, 1, 3)], DEVICE_ACC_MKNOD);
        let many: Vec<DeviceRule> = (0..=MAX_DEVICE_RULES as u32)
            .map(|n| DeviceRule::exact(DeviceType::Char, 10, n, DEVICE_ACC_READ))
            .collect();
        assert!(compile_devices(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn access_letters_round_trip() {
        for text in ["r", "w", "m", "rw", "rwm", "rm", "wm"] {
            assert_eq!(access_letters(parse_access(text).unwrap()), text);
        }
        assert!(parse_access("").is_err());
        assert_eq!(access_letters(0), "-");
    }
}
