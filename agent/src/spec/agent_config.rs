//! The agent's configuration file (`palisade agent --config FILE`): for
//! now its `[[classify]]` rules, which move host processes into a
//! container when they exec.
//!
//! ```toml
//! [[classify]]
//! uid = 1001                    # real uid after the exec
//! gid = 100                     # real (primary) gid after the exec
//! exe = "/usr/bin/python3*"     # glob on the exec'ed file's path
//! container = "batch"           # required: where matching processes go
//! hold = true                   # stop the process until it is moved
//! ```
//!
//! A rule needs at least one of `uid`, `gid`, `exe`, and matches when all
//! of those it gives match. Rules are tried in file order: the first that
//! matches wins. Pure: parsing and matching only, nothing on the host.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use super::{PolicyError, policy_file::read_text_file};

/// Rules one configuration may hold: each is one bit of the kernel
/// filter's rule sets.
pub const MAX_CLASSIFY_RULES: usize = palisade_common::classify::MAX_RULES;

/// The longest `exe` glob accepted, in bytes (a path is at most 4096).
pub const MAX_GLOB_BYTES: usize = 4096;

/// The agent's configuration, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// The `[[classify]]` rules, in file order (the first match wins).
    pub classify: Vec<ClassifyRule>,
}

/// One `[[classify]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifyRule {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub exe: Option<ExeGlob>,
    /// The container matching processes are moved into.
    pub container: String,
    /// Stop a process the kernel filter says this rule may match until
    /// the agent has moved it (or found it does not match).
    pub hold: bool,
    /// Where the rule starts in its file (1-based; 0 if not from a file).
    pub line: usize,
}

impl ClassifyRule {
    /// Whether a process of real `uid` and `gid`, executing `exe`, matches.
    /// `exe` is `None` when the path is unknown: a rule with an `exe`
    /// criterion then does not match.
    pub fn matches(&self, uid: u32, gid: u32, exe: Option<&str>) -> bool {
        self.uid.is_none_or(|u| u == uid)
            && self.gid.is_none_or(|g| g == gid)
            && self
                .exe
                .as_ref()
                .is_none_or(|glob| exe.is_some_and(|path| glob.matches(path)))
    }
}

/// The rule as one TOML inline table, as written (for events and logs).
impl fmt::Display for ClassifyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{ ")?;
        if let Some(uid) = self.uid {
            write!(f, "uid = {uid}, ")?;
        }
        if let Some(gid) = self.gid {
            write!(f, "gid = {gid}, ")?;
        }
        if let Some(exe) = &self.exe {
            write!(f, "exe = {:?}, ", exe.as_str())?;
        }
        write!(f, "container = {:?}", self.container)?;
        if self.hold {
            f.write_str(", hold = true")?;
        }
        f.write_str(" }")
    }
}

/// A glob on an absolute path.
///
/// `*` matches any run of characters within one path component (never a
/// `/`), `**` any run of characters across components (`/` included), `?`
/// one character other than `/`, and `\` makes the next character literal.
/// `[`, `]`, `{` and `}` are reserved (write `\[` for a literal one), so
/// that classes and alternatives can be added without changing what an
/// existing glob means. The whole path must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeGlob {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Component,
    /// `**`
    Any,
}

impl ExeGlob {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("exe must not be empty (give an absolute path or glob)".into());
        }
        if text.len() > MAX_GLOB_BYTES {
            return Err(format!(
                "exe is {} bytes long; a path is at most {MAX_GLOB_BYTES}",
                text.len()
            ));
        }
        if !text.starts_with('/') {
            return Err(format!(
                "exe {text:?} is not absolute: it must start with `/` (the path the file is executed by)"
            ));
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '\0' => return Err(format!("exe {text:?} holds a NUL byte")),
                '\\' => match chars.next() {
                    Some(escaped) => Token::Literal(escaped),
                    None => {
                        return Err(format!(
                            "exe {text:?} ends with `\\`, which escapes nothing (write `\\\\` for a backslash)"
                        ));
                    }
                },
                '?' => Token::One,
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    if chars.peek() == Some(&'*') {
                        return Err(format!(
                            "exe {text:?} has `***`: use `*` (within a path component) or `**` (across components)"
                        ));
                    }
                    Token::Any
                }
                '*' => Token::Component,
                '[' | ']' | '{' | '}' => {
                    return Err(format!(
                        "exe {text:?}: `{c}` is reserved in globs (write `\\{c}` for a literal one)"
                    ));
                }
                c => Token::Literal(c),
            });
        }
        Ok(Self {
            text: text.to_string(),
            tokens,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal text every matching path starts with: the glob before
    /// its first wildcard, unescaped.
    pub fn literal_prefix(&self) -> String {
        self.tokens
            .iter()
            .map_while(|t| match t {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Whether `path` matches the whole glob.
    pub fn matches(&self, path: &str) -> bool {
        let path: Vec<char> = path.chars().collect();
        // can[j]: the tokens so far match path[..j]. O(tokens × path).
        let mut can = vec![false; path.len() + 1];
        can[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; path.len() + 1];
            match token {
                Token::Literal(c) => {
                    for j in 0..path.len() {
                        next[j + 1] = can[j] && path[j] == *c;
                    }
                }
                Token::One => {
                    for j in 0..path.len() {
                        next[j + 1] = can[j] && path[j] != '/';
                    }
                }
                Token::Component => {
                    next[0] = can[0];
                    for j in 0..path.len() {
                        next[j + 1] = can[j + 1] || (next[j] && path[j] != '/');
                    }
                }
                Token::Any => {
                    next[0] = can[0];
                    for j in 0..path.len() {
                        next[j + 1] = can[j + 1] || next[j];
                    }
                }
            }
            can = next;
        }
        can[path.len()]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    classify: Option<Vec<Spanned<RawRule>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    uid: Option<Spanned<i64>>,
    gid: Option<Spanned<i64>>,
    exe: Option<Spanned<String>>,
    container: Option<Spanned<String>>,
    hold: Option<bool>,
}

impl AgentConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = read_text_file(path, "agent configuration file")?;
        Self::parse(path, &text)
    }

    /// Validates configuration text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let newlines: Vec<usize> = text
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        let error = |offset: usize, message: String| PolicyError {
            file: PathBuf::from(path),
            line: newlines.partition_point(|&nl| nl < offset) + 1,
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            error(offset, e.message().trim_end().to_string())
        })?;
        let raw_rules = raw.classify.unwrap_or_default();
        if let Some(extra) = raw_rules.get(MAX_CLASSIFY_RULES) {
            return Err(error(
                extra.span().start,
                format!(
                    "more than {MAX_CLASSIFY_RULES} [[classify]] rules (the kernel filter tells {MAX_CLASSIFY_RULES} apart); merge rules with the same container"
                ),
            ));
        }
        let mut classify = Vec::with_capacity(raw_rules.len());
        for spanned in raw_rules {
            let start = spanned.span().start;
            let raw = spanned.into_inner();
            let id = |field: &str, value: Option<Spanned<i64>>| match value {
                None => Ok(None),
                Some(v) => u32::try_from(*v.get_ref())
                    .ok()
                    .filter(|&id| id != u32::MAX)
                    .map(Some)
                    .ok_or_else(|| {
                        error(
                            v.span().start,
                            format!(
                                "{field} = {} is not a {field} (0 to {})",
                                v.get_ref(),
                                u32::MAX - 1
                            ),
                        )
                    }),
            };
            let uid = id("uid", raw.uid)?;
            let gid = id("gid", raw.gid)?;
            let exe = match raw.exe {
                None => None,
                Some(e) => Some(
                    ExeGlob::parse(e.get_ref())
                        .map_err(|message| error(e.span().start, message))?,
                ),
            };
            if uid.is_none() && gid.is_none() && exe.is_none() {
                return Err(error(
                    start,
                    "a [[classify]] rule needs at least one criterion: uid, gid or exe (a rule matching every process is refused)".into(),
                ));
            }
            let container = raw.container.ok_or_else(|| {
                error(
                    start,
                    "a [[classify]] rule needs `container = \"NAME\"`: where matching processes go"
                        .into(),
                )
            })?;
            if !valid_container_name(container.get_ref()) {
                return Err(error(
                    container.span().start,
                    format!(
                        "{:?} is not a container name (1 to 64 of a-z A-Z 0-9 _ . -, starting with a letter or digit)",
                        container.get_ref()
                    ),
                ));
            }
            classify.push(ClassifyRule {
                uid,
                gid,
                exe,
                container: container.into_inner(),
                hold: raw.hold.unwrap_or(false),
                line: error(start, String::new()).line,
            });
        }
        Ok(Self { classify })
    }

    /// The first rule matching a process of real `uid` and `gid` executing
    /// `exe` (see [`ClassifyRule::matches`]), with its index.
    pub fn first_match(
        &self,
        uid: u32,
        gid: u32,
        exe: Option<&str>,
    ) -> Option<(usize, &ClassifyRule)> {
        self.classify
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(uid, gid, exe))
    }
}

/// What the classifier's kernel filter is given for a rule list (see
/// `palisade_common::classify`): rule `i` is bit `1 << i` of each set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassifyTables {
    /// `skip_cgroup` and `skip_level` are left 0: the host's to fill.
    pub config: palisade_common::classify::ClassifyConfig,
    /// uid to the rules naming it.
    pub uids: Vec<(u32, u64)>,
    pub gids: Vec<(u32, u64)>,
    /// An exe prefix (at most `PREFIX_BYTES - 1` bytes) to the rules whose
    /// literal prefix starts with it or with a shorter prefix of it: the
    /// trie answers the longest matching entry only.
    pub prefixes: Vec<(Vec<u8>, u64)>,
}

/// The filename of an exec through a descriptor (`fexecve(3)`), whose
/// path the kernel does not know: any exe rule may match it.
pub const FD_EXEC_PREFIX: &str = "/dev/fd/";

/// Compiles rules (at most [`MAX_CLASSIFY_RULES`]) into the kernel
/// filter's tables: a necessary condition for each rule, per criterion.
pub fn compile_classify(rules: &[ClassifyRule]) -> ClassifyTables {
    use std::collections::BTreeMap;
    let cut = palisade_common::classify::PREFIX_BYTES - 1;
    let mut t = ClassifyTables::default();
    let (mut uids, mut gids) = (BTreeMap::new(), BTreeMap::new());
    let mut own: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for (i, rule) in rules.iter().take(MAX_CLASSIFY_RULES).enumerate() {
        let bit = 1u64 << i;
        match rule.uid {
            Some(uid) => *uids.entry(uid).or_insert(0) |= bit,
            None => t.config.any_uid |= bit,
        }
        match rule.gid {
            Some(gid) => *gids.entry(gid).or_insert(0) |= bit,
            None => t.config.any_gid |= bit,
        }
        match &rule.exe {
            Some(glob) => {
                t.config.exe_rules |= bit;
                let mut prefix = glob.literal_prefix().into_bytes();
                prefix.truncate(cut);
                *own.entry(prefix).or_insert(0) |= bit;
            }
            None => t.config.any_exe |= bit,
        }
        if rule.hold {
            t.config.hold |= bit;
        }
    }
    if t.config.exe_rules != 0 {
        *own.entry(FD_EXEC_PREFIX.as_bytes().to_vec()).or_insert(0) |= t.config.exe_rules;
    }
    t.prefixes = own
        .keys()
        .map(|p| {
            let covered = own
                .iter()
                .filter(|(q, _)| p.starts_with(q))
                .fold(0, |acc, (_, bits)| acc | bits);
            (p.clone(), covered)
        })
        .collect();
    t.uids = uids.into_iter().collect();
    t.gids = gids.into_iter().collect();
    t
}

/// The rule `palisade run` applies to container names.
fn valid_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, PolicyError> {
        AgentConfig::parse(Path::new("agent.toml"), text)
    }

    fn refused(text: &str) -> (usize, String) {
        let e = parse(text).expect_err("must be refused");
        (e.line, e.message)
    }

    #[test]
    fn every_field() {
        let config = parse(
            "# comment\n\
             [[classify]]\n\
             uid = 1001\n\
             gid = 100\n\
             exe = \"/usr/bin/python3*\"\n\
             container = \"batch\"\n\
             hold = true\n\
             \n\
             [[classify]]\n\
             exe = \"/opt/**/run\"\n\
             container = \"jobs\"\n",
        )
        .unwrap();
        assert_eq!(config.classify.len(), 2);
        let first = &config.classify[0];
        assert_eq!(
            (first.uid, first.gid, first.hold, first.line),
            (Some(1001), Some(100), true, 2)
        );
        assert_eq!(first.container, "batch");
        assert_eq!(
            first.exe.as_ref().unwrap().literal_prefix(),
            "/usr/bin/python3"
        );
        assert_eq!(
            first.to_string(),
            r#"{ uid = 1001, gid = 100, exe = "/usr/bin/python3*", container = "batch", hold = true }"#
        );
        let second = &config.classify[1];
        assert_eq!(
            (second.uid, second.gid, second.hold, second.line),
            (None, None, false, 9)
        );
    }

    #[test]
    fn empty_file_has_no_rules() {
        assert_eq!(parse("").unwrap(), AgentConfig::default());
    }

    #[test]
    fn all_criteria_must_match_and_first_wins() {
        let config = parse(
            "[[classify]]\nuid = 1001\nexe = \"/usr/bin/python3*\"\ncontainer = \"py\"\n\
             [[classify]]\nuid = 1001\ncontainer = \"user\"\n",
        )
        .unwrap();
        let pick = |uid, exe| config.first_match(uid, 0, exe).map(|(i, _)| i);
        assert_eq!(pick(1001, Some("/usr/bin/python3.11")), Some(0));
        assert_eq!(pick(1001, Some("/usr/bin/perl")), Some(1));
        assert_eq!(pick(1001, None), Some(1));
        assert_eq!(pick(1002, Some("/usr/bin/python3")), None);
    }

    #[test]
    fn refusals_name_the_line() {
        let (line, message) = refused("[[classify]]\ncontainer = \"b\"\n");
        assert_eq!(line, 1);
        assert!(message.contains("at least one criterion"), "{message}");
        let (line, message) = refused("[[classify]]\nuid = 5\n");
        assert_eq!(line, 1);
        assert!(message.contains("container"), "{message}");
        let (line, message) = refused("[[classify]]\nuid = 5\ncolour = 1\ncontainer = \"b\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("colour"), "{message}");
        let (line, message) = refused("[[classify]]\nuid = -1\ncontainer = \"b\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("not a uid"), "{message}");
        let (line, _) = refused("[[classify]]\ngid = 4294967295\ncontainer = \"b\"\n");
        assert_eq!(line, 2);
        let (line, message) = refused("[[classify]]\nexe = \"python3\"\ncontainer = \"b\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("not absolute"), "{message}");
        let (line, message) = refused("\n[[classify]]\nexe = \"/bin/[ab]\"\ncontainer = \"b\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("reserved"), "{message}");
        let (line, _) = refused("[[classify]]\nuid = 1\ncontainer = \"../etc\"\n");
        assert_eq!(line, 3);
        let (line, _) = refused("[[classify]]\nuid = 1\ncontainer = \"b\"\nhold = \"yes\"\n");
        assert_eq!(line, 4);
        let (line, message) = refused("[[clasify]]\nuid = 1\ncontainer = \"b\"\n");
        assert_eq!(line, 1);
        assert!(message.contains("clasify"), "{message}");
        let many = "[[classify]]\nuid = 1\ncontainer = \"b\"\n".repeat(MAX_CLASSIFY_RULES + 1);
        let (line, message) = refused(&many);
        assert_eq!(line, 3 * MAX_CLASSIFY_RULES + 1);
        assert!(message.contains("more than 64"), "{message}");
    }

    #[test]
    fn bad_globs() {
        for bad in ["", "rel/x", "/a\\", "/a/***", "/a/{b,c}", "/a]", "/a\0b"] {
            assert!(ExeGlob::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn glob_semantics() {
        let m = |glob: &str, path: &str| ExeGlob::parse(glob).unwrap().matches(path);
        assert!(m("/usr/bin/python3*", "/usr/bin/python3"));
        assert!(m("/usr/bin/python3*", "/usr/bin/python3.11"));
        assert!(!m("/usr/bin/python3*", "/usr/bin/python2"));
        // `*` stays within a component, `**` crosses them.
        assert!(!m("/opt/*", "/opt/a/b"));
        assert!(m("/opt/*/b", "/opt/a/b"));
        assert!(m("/opt/**", "/opt/a/b"));
        assert!(m("/opt/**/run", "/opt/x/y/run"));
        assert!(m("/opt/**run", "/opt/run"));
        assert!(!m("/opt/**/run", "/opt/x/y/runner"));
        assert!(m("/bin/?s", "/bin/ls"));
        assert!(!m("/bin/?s", "/bin/s"));
        assert!(!m("/a?b", "/a/b"));
        assert!(m("/a\\*b", "/a*b"));
        assert!(!m("/a\\*b", "/axb"));
        assert!(m("/x\\[1\\]", "/x[1]"));
        assert_eq!(ExeGlob::parse("/a\\*b*").unwrap().literal_prefix(), "/a*b");
        assert_eq!(ExeGlob::parse("/**").unwrap().literal_prefix(), "/");
        // The whole path, not a prefix.
        assert!(!m("/bin/ls", "/bin/lsblk"));
    }

    #[test]
    fn kernel_tables() {
        let config = parse(
            "[[classify]]\nuid = 1001\nhold = true\ncontainer = \"a\"\n\
             [[classify]]\nuid = 1001\nexe = \"/usr/bin/python3*\"\ncontainer = \"b\"\n\
             [[classify]]\ngid = 7\nexe = \"/usr/**\"\ncontainer = \"c\"\n",
        )
        .unwrap();
        let t = compile_classify(&config.classify);
        assert_eq!(t.uids, vec![(1001, 0b011)]);
        assert_eq!(t.gids, vec![(7, 0b100)]);
        assert_eq!(t.config.any_uid, 0b100);
        assert_eq!(t.config.any_gid, 0b011);
        assert_eq!(t.config.any_exe, 0b001);
        assert_eq!(t.config.exe_rules, 0b110);
        assert_eq!(t.config.hold, 0b001);
        // The longer prefix carries the rules of the shorter one it starts with.
        assert_eq!(
            t.prefixes,
            vec![
                (b"/dev/fd/".to_vec(), 0b110),
                (b"/usr/".to_vec(), 0b100),
                (b"/usr/bin/python3".to_vec(), 0b110),
            ]
        );
    }
}
