//! The policy file (TOML): its fields, and errors that name file, line and value.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use super::{
    Value,
    devices::{DevicePolicy, DeviceRule},
    egress::Egress,
    oom::{OomPolicy, RawOom},
    policy_file::{MAX_POLICY_BYTES, read_policy_file, too_large},
    resources::{ResourceLimits, Resources},
    rules::{self, Rule, RuleError},
    sockets::{RawSockets, SocketKinds},
};

/// A validated policy. Every field has been checked; an empty policy
/// restricts nothing but devices (the default allowlist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub network: NetworkPolicy,
    /// Validated `[resources]`; empty (all defaults) when the table is absent.
    pub resources: ResourceLimits,
    /// `[devices]`; the default allowlist when the table is absent.
    pub devices: DevicePolicy,
    /// `[security]`: kernel interfaces beyond palisade's default profile.
    pub security: SecurityPolicy,
    /// `[oom]`: what the agent does on the container's memory condition.
    pub oom: Option<OomPolicy>,
    /// `[view]`: whether the container sees its own `/proc` figures.
    pub view: super::ViewPolicy,
}

/// `[security]`: what the container's seccomp filter lets through that
/// palisade's default profile refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecurityPolicy {
    /// `io_uring = true`: `io_uring_setup`, `io_uring_enter` and
    /// `io_uring_register` are allowed (refused with EPERM by default). Its
    /// requests do not pass through seccomp, so it cannot be combined with
    /// a socket restriction that seccomp enforces.
    pub io_uring: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    io_uring: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    proc: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Outbound connect rules; `None` leaves connects unrestricted.
    pub connect: Option<Vec<Rule>>,
    /// Which kinds of socket the container may create.
    pub sockets: SocketKinds,
    /// Local addresses and ports the container may bind; `None` leaves
    /// binds unrestricted.
    pub bind: Option<Vec<Rule>>,
    /// Peers (and local ports) the container's sockets may be reached
    /// from; `None` leaves inbound connections unrestricted.
    pub accept: Option<Vec<Rule>>,
    /// `mode = "audit"`: refusals are reported as events, nothing is refused.
    pub audit: bool,
    /// `egress_rate` / `egress_burst`: the outbound rate limit, if any.
    pub egress: Option<Egress>,
}

impl NetworkPolicy {
    /// The entries each rule list takes in the kernel's rule map (one per
    /// distinct address prefix), by field name, for the lists present.
    pub fn prefix_counts(&self) -> Vec<(&'static str, usize)> {
        [
            ("network.connect", &self.connect),
            ("network.bind", &self.bind),
            ("network.accept", &self.accept),
        ]
        .into_iter()
        .filter_map(|(field, list)| list.as_deref().map(|l| (field, rules::prefix_count(l))))
        .collect()
    }
}

/// Why a policy file was refused. `Display` gives `FILE:LINE: what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    network: Option<RawNetwork>,
    resources: Option<Resources>,
    devices: Option<RawDevices>,
    security: Option<RawSecurity>,
    oom: Option<Spanned<RawOom>>,
    view: Option<RawView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevices {
    defaults: Option<bool>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    connect: Option<Spanned<Vec<Spanned<String>>>>,
    sockets: Option<RawSockets>,
    bind: Option<Spanned<Vec<Spanned<String>>>>,
    accept: Option<Spanned<Vec<Spanned<String>>>>,
    mode: Option<Mode>,
    egress_rate: Option<Spanned<Value>>,
    egress_burst: Option<Spanned<Value>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Enforce,
    Audit,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Self::load_with_text(path).map(|(policy, _)| policy)
    }

    /// Reads and validates a policy file; returns its text too, read once.
    pub fn load_with_text(path: &Path) -> Result<(Self, String), PolicyError> {
        let text = read_policy_file(path)?;
        Self::parse(path, &text).map(|policy| (policy, text))
    }

    /// Validates policy text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                file: path.to_path_buf(),
                line: 0,
                message: too_large(),
            });
        }
        let lines = Lines::of(text);
        let error = |offset: usize, message: String| PolicyError {
            file: path.to_path_buf(),
            line: lines.line_of(offset),
            message,
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            error(offset, e.message().trim_end().to_string())
        })?;
        let mut policy = Policy::default();
        if let Some(network) = raw.network {
            if let Some(list) = network.connect {
                policy.network.connect = Some(rule_list(path, &lines, "network.connect", list)?);
            }
            if let Some(list) = network.bind {
                policy.network.bind = Some(rule_list(path, &lines, "network.bind", list)?);
            }
            if let Some(list) = network.accept {
                policy.network.accept = Some(rule_list(path, &lines, "network.accept", list)?);
            }
            if let Some(raw) = network.sockets {
                policy.network.sockets = raw
                    .validate(text)
                    .map_err(|(offset, message)| error(offset, message))?;
            }
            policy.network.audit = network.mode == Some(Mode::Audit);
            policy.network.egress = match (network.egress_rate, network.egress_burst) {
                (None, None) => None,
                (None, Some(burst)) => {
                    return Err(error(
                        burst.span().start,
                        "network.egress_burst needs network.egress_rate".into(),
                    ));
                }
                (Some(rate), burst) => Some(
                    Egress::new(rate.get_ref(), burst.as_ref().map(Spanned::get_ref)).map_err(
                        |e| {
                            let at = match &burst {
                                Some(b) if e.contains("burst") => b.span().start,
                                _ => rate.span().start,
                            };
                            error(at, format!("network.egress_rate/egress_burst: {e}"))
                        },
                    )?,
                ),
            };
        }
        if let Some(io_uring) = raw.security.and_then(|s| s.io_uring) {
            policy.security.io_uring = *io_uring.get_ref();
            if policy.security.io_uring && !policy.network.sockets.seccomp_families().is_empty() {
                return Err(error(
                    io_uring.span().start,
                    "security.io_uring: cannot be combined with network.sockets packet = false or deny_families: io_uring requests do not pass through seccomp, which enforces them (drop io_uring = true, or the socket restriction)".into(),
                ));
            }
        }
        policy.view.proc = raw.view.and_then(|v| v.proc).unwrap_or(false);
        if let Some(devices) = raw.devices {
            policy.devices.defaults = devices.defaults.unwrap_or(true);
            let list_offset = devices.allow.as_ref().map_or(0, |l| l.span().start);
            for item in devices.allow.map(Spanned::into_inner).unwrap_or_default() {
                let rule = DeviceRule::parse(item.get_ref()).map_err(|e| {
                    error(
                        item.span().start,
                        format!("devices.allow: rule {:?}: {e}", item.get_ref()),
                    )
                })?;
                policy.devices.allow.push(rule);
            }
            super::devices::compile_devices(&policy.devices.rules())
                .map_err(|e| error(list_offset, format!("devices.allow: {e}")))?;
        }
        if let Some(resources) = raw.resources {
            policy.resources = resources.validate().map_err(|e| {
                let offset = e.span.as_ref().map_or(0, |s| s.start);
                error(offset, e.to_string())
            })?;
        }
        if let Some(oom) = raw.oom {
            let span = oom.span();
            let oom = oom
                .into_inner()
                .validate(span, |offset| lines.line_of(offset))
                .map_err(|(at, message)| error(at.start, message))?;
            policy.oom = Some(oom);
        }
        Ok(policy)
    }

    /// Checks `[oom]` against the policy's resources, once they are the
    /// container's (the command line's merged in): `file` names the policy
    /// in the error, at the section's line.
    pub fn check_oom(&self, file: &Path) -> Result<(), PolicyError> {
        match &self.oom {
            None => Ok(()),
            Some(oom) => oom.check(&self.resources).map_err(|message| PolicyError {
                file: file.to_path_buf(),
                line: oom.line,
                message,
            }),
        }
    }
}

/// Parses and validates one rule list; errors name the rule's own line,
/// or the list's for faults of the list as a whole.
fn rule_list(
    path: &Path,
    lines: &Lines,
    field: &str,
    list: Spanned<Vec<Spanned<String>>>,
) -> Result<Vec<Rule>, PolicyError> {
    let error = |line: usize, message: String| PolicyError {
        file: path.to_path_buf(),
        line,
        message: format!("{field}: {message}"),
    };
    let list_line = lines.line_of(list.span().start);
    let mut parsed = Vec::new();
    for item in list.into_inner() {
        let line = lines.line_of(item.span().start);
        let rule = Rule::parse(item.get_ref())
            .map_err(|e: RuleError| error(line, format!("rule {:?}: {e}", item.get_ref())))?;
        parsed.push((rule, line));
    }
    rules::validate_list(parsed).map_err(|(line, msg)| error(line.unwrap_or(list_line), msg))
}

/// Where the lines of a text end, so that the line of each of many
/// offsets is found by a binary search, not a scan from the start.
struct Lines {
    newlines: Vec<usize>,
}

impl Lines {
    fn of(text: &str) -> Self {
        Self {
            newlines: text
                .bytes()
                .enumerate()
                .filter_map(|(i, b)| (b == b'\n').then_some(i))
                .collect(),
        }
    }

    /// The 1-based line holding byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn empty_policy_restricts_nothing() {
        assert_eq!(parse("").unwrap(), Policy::default());
        assert_eq!(parse("[network]\n").unwrap().network.connect, None);
    }

    #[test]
    fn connect_rules_are_parsed_in_order() {
        let p =
            parse("[network]\nconnect = [\"allow tcp 127.0.0.1/32:80\", \"deny any\"]\n").unwrap();
        let rules = p.network.connect.unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].line, 2);
    }

    #[test]
    fn syntax_error_names_the_line() {
        let e = parse("[network]\n\nconnect = [\"deny any\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().starts_with("p.toml:3: "), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[network]\nconect = [\"deny any\"]\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("conect"), "{e}");
        let e = parse("colour = 3\n").unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
    }

    #[test]
    fn bad_rule_names_its_own_line_and_value() {
        let text = "[network]\nconnect = [\n  \"allow tcp 127.0.0.1/32\",\n  \"allow tcp 300.1.1.1\",\n  \"deny any\",\n]\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("300.1.1.1"), "{e}");
    }

    #[test]
    fn missing_default_names_the_list() {
        let e = parse("[network]\nconnect = [\"allow tcp 127.0.0.1\"]\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("allow any"), "{e}");
    }

    #[test]
    fn resources_table_with_every_field() {
        let text = r#"
[resources]
memory = "256M"
memory_high = "200m"
memory_swap = -1
cpu = 0.5
cpu_weight = 200
cpuset = "0-1"
mems = "0"
pids = 100
io_weight = 500
io_read_bps = ["8:0 10M", "/dev/vda 1M"]
io_write_bps = ["254:0 5M"]
"#;
        let r = parse(text).unwrap().resources;
        assert_eq!(r.memory, Some(256 << 20));
        assert_eq!(r.memory_high, Some(200 << 20));
        assert_eq!(r.memory_swap, Some(crate::spec::Swap::Unlimited));
        assert_eq!(r.cpu.unwrap().quota_us, 50_000);
        assert_eq!(r.cpu_weight, Some(200));
        assert_eq!(r.cpuset.as_deref(), Some("0-1"));
        assert_eq!(r.pids, Some(100));
        assert_eq!(r.io_read_bps.len(), 2);
        assert_eq!(r.io_write_bps.len(), 1);
        assert_eq!(parse("").unwrap().resources, ResourceLimits::default());
        assert_eq!(
            parse("memory = 1048576\n[resources]\n").unwrap_err().line,
            1
        );
        let ints = parse("[resources]\nmemory = 1048576\n").unwrap().resources;
        assert_eq!(ints.memory, Some(1 << 20));
    }

    #[test]
    fn bad_resource_names_line_field_and_value() {
        let e = parse("[resources]\npids = 10\nmemory = \"12Q\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.toml:3: resources.memory: invalid size \"12Q\""
        );
        let text = "[resources]\nio_read_bps = [\n  \"8:0 1M\",\n  \"8:0 fast\",\n]\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("\"8:0 fast\""), "{e}");
        let e = parse("[resources]\nmemory = \"1G\"\n\nmemory_swap = \"512M\"\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(
            e.message.starts_with("resources.memory_swap: \"512M\""),
            "{e}"
        );
    }

    #[test]
    fn unknown_or_mistyped_resource_is_refused() {
        let e = parse("[resources]\ncpu = 1\nmemroy = \"1G\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("memroy"), "{e}");
        let e = parse("[resources]\n\npids = true\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = parse("[resources]\ncpu = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.toml:2: resources.cpu: invalid CPU count 0 (must be greater than 0)"
        );
    }

    #[test]
    fn socket_kinds() {
        let p = parse("[network]\nsockets = { raw = false }\n").unwrap();
        assert_eq!(
            p.network.sockets,
            SocketKinds {
                raw: false,
                packet: true,
                denied_families: vec![]
            }
        );
        let p2 = parse(
            "[network]\nsockets = { packet = false, deny_families = [\"netlink\", \"AF_INET6\", \"40\"] }\n",
        )
        .unwrap();
        assert_eq!(
            p2.network.sockets.seccomp_families(),
            [
                libc::AF_INET6,
                libc::AF_NETLINK,
                libc::AF_PACKET,
                libc::AF_VSOCK
            ]
        );
        let e = parse("[network.sockets]\ndeny_families = [\n  \"nope\",\n]\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("nope"), "{e}");
        assert_eq!(p.network.sockets.denied_bits(), palisade_common::DENY_RAW);
        assert_eq!(parse("").unwrap().network.sockets.denied_bits(), 0);
        let e = parse("[network]\nsockets = { raw = false, tcp = false }\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("tcp"), "{e}");
        assert!(parse("[network]\nsockets = { raw = \"no\" }\n").is_err());
    }

    #[test]
    fn view_switch() {
        assert!(!parse("").unwrap().view.proc);
        assert!(!parse("[view]\n").unwrap().view.proc);
        assert!(parse("[view]\nproc = true\n").unwrap().view.proc);
        let e = parse("[view]\nproc = \"yes\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("[view]\nsys = true\n").unwrap_err();
        assert!(e.message.contains("sys"), "{e}");
    }

    #[test]
    fn io_uring_switch() {
        assert!(!parse("").unwrap().security.io_uring);
        assert!(!parse("[security]\n").unwrap().security.io_uring);
        let p = parse("[security]\nio_uring = true\n").unwrap();
        assert!(p.security.io_uring);
        // raw = false is the cgroup hook's, which io_uring passes through.
        let p = parse("[network]\nsockets = { raw = false }\n[security]\nio_uring = true\n");
        assert!(p.unwrap().security.io_uring);
        for sockets in ["packet = false", "deny_families = [\"vsock\"]"] {
            let text =
                format!("[network]\nsockets = {{ {sockets} }}\n\n[security]\nio_uring = true\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, 5, "{e}");
            assert!(
                e.message
                    .starts_with("security.io_uring: cannot be combined"),
                "{e}"
            );
            assert!(e.message.contains("do not pass through seccomp"), "{e}");
        }
        let text = "[network]\nsockets = { packet = false }\n[security]\nio_uring = false\n";
        assert!(!parse(text).unwrap().security.io_uring);
        let e = parse("[security]\nio_uring = \"yes\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("[security]\niouring = true\n").unwrap_err();
        assert!(e.message.contains("iouring"), "{e}");
    }

    #[test]
    fn devices_table() {
        let defaults = crate::spec::DEFAULT_DEVICES.len();
        assert_eq!(parse("").unwrap().devices.rules().len(), defaults);
        let text = "[devices]\nallow = [\n  \"b 7:* r\",\n  \"c *:* m\",\n]\n";
        let p = parse(text).unwrap();
        assert!(p.devices.defaults);
        let shown: Vec<String> = p.devices.allow.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["b 7:* r", "c *:* m"]);
        assert_eq!(p.devices.rules().len(), defaults + 2);
        let p = parse("[devices]\ndefaults = false\nallow = [\"c 1:3 rw\"]\n").unwrap();
        assert_eq!(p.devices.rules().len(), 1);
        assert!(
            parse("[devices]\ndefaults = false\n")
                .unwrap()
                .devices
                .rules()
                .is_empty()
        );
    }

    #[test]
    fn bad_device_rule_names_its_line_and_value() {
        let cases = [
            ("x 1:3 rw", "invalid device type \"x\""),
            ("c 1:three rw", "invalid minor number \"three\""),
            ("c 1:3 rwx", "invalid access \"rwx\""),
            ("c *:3 rw", "wildcard major"),
            ("c 1:3", "expected"),
        ];
        for (rule, needle) in cases {
            let text = format!("[devices]\nallow = [\n  \"c 1:5 r\",\n  \"{rule}\",\n]\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, 4, "{e}");
            assert!(
                e.message
                    .starts_with(&format!("devices.allow: rule \"{rule}\": ")),
                "{e}"
            );
            assert!(e.message.contains(needle), "{e}");
        }
        let e = parse("[devices]\nalow = []\n").unwrap_err();
        assert!(e.message.contains("alow"), "{e}");
        assert!(parse("[devices]\ndefaults = \"no\"\n").is_err());
        let many: Vec<String> = (0..300).map(|n| format!("\"c 10:{n} r\"")).collect();
        let e = parse(&format!("[devices]\n\nallow = [{}]\n", many.join(", "))).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("at most 256"), "{e}");
    }

    #[test]
    fn lines_are_found_by_offset() {
        let text = "a\nbc\n\nd";
        let lines = Lines::of(text);
        let expected = [1, 1, 2, 2, 2, 3, 4, 4];
        for (offset, line) in expected.iter().enumerate() {
            assert_eq!(lines.line_of(offset), *line, "offset {offset}");
        }
    }

    #[test]
    fn large_rule_lists_name_the_line_of_the_bad_rule() {
        let mut text = String::from("[network]\nconnect = [\n");
        for i in 0..50_000u32 {
            text.push_str(&format!(
                "  \"allow tcp 10.{}.{}.0/24\",\n",
                i >> 8 & 255,
                i & 255
            ));
        }
        text.push_str("  \"deny tcp 10.0.7.0/24\",\n  \"deny any\",\n]\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, 50_003, "{e}");
        assert!(e.message.contains("contradicts line 10"), "{e}");
        let fixed = text.replace("  \"deny tcp 10.0.7.0/24\",\n", "");
        let p = parse(&fixed).unwrap();
        assert_eq!(p.network.prefix_counts(), [("network.connect", 50_002)]);
    }

    #[test]
    fn policy_text_over_the_bound_is_refused_before_parsing() {
        let big = format!("# {}\n", "x".repeat(MAX_POLICY_BYTES));
        let e = parse(&big).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.message.contains("4 MiB"), "{e}");
    }

    #[test]
    fn unreadable_file_is_an_error_with_no_line() {
        let e = Policy::load(Path::new("/nonexistent/palisade.toml")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
