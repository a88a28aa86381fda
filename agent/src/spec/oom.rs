//! `[oom]`: what the agent does when a container meets its memory
//! condition (the limit hit, or its `memory_high` crossed).
//!
//! Pure: the section is parsed here; whether the container has the limit
//! the condition needs is judged where the policy's resources and the
//! command line's are combined ([`OomPolicy::check`]).

use std::{fmt, ops::Range};

use serde::Deserialize;
use toml::Spanned;

use super::ResourceLimits;

/// A validated `[oom]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomPolicy {
    pub action: OomAction,
    pub at: OomCondition,
    /// The section's line in the policy file (for errors found when it is
    /// combined with the container's limits).
    pub line: usize,
}

/// `action`: what the agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomAction {
    /// End the container (every process), recorded as an OOM end.
    Kill,
    /// Freeze every process for inspection, until `palisade kill`.
    Freeze,
    /// Only report the condition; the kernel decides the container's fate.
    Notify,
}

/// `at`: the condition acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OomCondition {
    /// The memory limit was hit (the kernel's OOM condition).
    #[default]
    Oom,
    /// Usage crossed the `memory_high` limit.
    MemoryHigh,
}

impl OomAction {
    const NAMES: &[(&str, OomAction)] = &[
        ("kill", OomAction::Kill),
        ("freeze", OomAction::Freeze),
        ("notify", OomAction::Notify),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("", |(n, _)| n)
    }
}

impl OomCondition {
    const NAMES: &[(&str, OomCondition)] = &[
        ("oom", OomCondition::Oom),
        ("memory_high", OomCondition::MemoryHigh),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("", |(n, _)| n)
    }
}

impl fmt::Display for OomAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for OomCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The section as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOom {
    action: Option<Spanned<String>>,
    at: Option<Spanned<String>>,
}

/// A refused `[oom]`: the message and the byte range it is about.
pub(super) type OomError = (Range<usize>, String);

fn one_of<T: Copy>(names: &[(&str, T)]) -> String {
    names
        .iter()
        .map(|(n, _)| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value `names` gives `value`, or an error naming the choices.
fn pick<T: Copy>(names: &[(&str, T)], value: &Spanned<String>, field: &str) -> Result<T, OomError> {
    names
        .iter()
        .find(|(n, _)| *n == value.get_ref())
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            (
                value.span(),
                format!(
                    "{field}: unknown value {:?} (one of {})",
                    value.get_ref(),
                    one_of(names)
                ),
            )
        })
}

impl RawOom {
    /// Validates the section, whose table spans `span`; `line_of` gives
    /// the line of an offset.
    pub(super) fn validate(
        self,
        span: Range<usize>,
        line_of: impl Fn(usize) -> usize,
    ) -> Result<OomPolicy, OomError> {
        let Some(action) = self.action else {
            return Err((
                span,
                format!(
                    "oom.action: missing (one of {}): an [oom] section says what to do",
                    one_of(OomAction::NAMES)
                ),
            ));
        };
        let action_value = pick(OomAction::NAMES, &action, "oom.action")?;
        let at = match &self.at {
            Some(at) => pick(OomCondition::NAMES, at, "oom.at")?,
            None => OomCondition::Oom,
        };
        Ok(OomPolicy {
            action: action_value,
            at,
            line: line_of(span.start),
        })
    }
}

impl OomPolicy {
    /// Whether the container's limits give this section a condition to
    /// meet: a memory limit always (without one the container only meets
    /// the host's OOM, which is not its own), and `memory_high` for
    /// `at = "memory_high"`. The error names the fix.
    pub fn check(&self, limits: &ResourceLimits) -> Result<(), String> {
        if limits.memory.is_none() {
            return Err(format!(
                "[oom] needs a memory limit ([resources] memory, or --memory): without one the container never meets its own OOM condition (action {:?} would never run)",
                self.action.as_str()
            ));
        }
        if self.at == OomCondition::MemoryHigh && limits.memory_high.is_none() {
            return Err(
                "oom.at = \"memory_high\" needs a memory_high limit ([resources] memory_high, or --memory-high)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::{Policy, PolicyError};

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn every_action_and_condition() {
        assert_eq!(parse("").unwrap().oom, None);
        for (name, action) in OomAction::NAMES {
            let p = parse(&format!("# x\n[oom]\naction = \"{name}\"\n")).unwrap();
            let oom = p.oom.unwrap();
            assert_eq!(
                (oom.action, oom.at, oom.line),
                (*action, OomCondition::Oom, 2)
            );
            assert_eq!(oom.action.to_string(), *name);
        }
        let text = "[oom]\naction = \"freeze\"\nat = \"memory_high\"\n";
        assert_eq!(
            parse(text).unwrap().oom.unwrap().at,
            OomCondition::MemoryHigh
        );
        let text = "[oom]\naction = \"kill\"\nat = \"oom\"\n";
        assert_eq!(parse(text).unwrap().oom.unwrap().at, OomCondition::Oom);
        let inline = parse("oom = { action = \"notify\" }\n")
            .unwrap()
            .oom
            .unwrap();
        assert_eq!((inline.action, inline.line), (OomAction::Notify, 1));
    }

    #[test]
    fn bad_sections_name_line_and_value() {
        let e = parse("[resources]\nmemory = \"1G\"\n[oom]\naction = \"kil\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.toml:4: oom.action: unknown value \"kil\" (one of \"kill\", \"freeze\", \"notify\")"
        );
        let e = parse("[oom]\naction = \"kill\"\n\nat = \"memory.high\"\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(
            e.message
                .starts_with("oom.at: unknown value \"memory.high\""),
            "{e}"
        );
        let e = parse("[network]\n[oom]\nat = \"memory_high\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.starts_with("oom.action: missing"), "{e}");
        let e = parse("[oom]\naction = \"kill\"\nwhen = \"oom\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("when"), "{e}");
        let e = parse("[oom]\naction = 1\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn the_condition_needs_its_limit() {
        let p = parse("\n[oom]\naction = \"kill\"\n").unwrap();
        let e = p.check_oom(Path::new("p.toml")).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.starts_with("[oom] needs a memory limit"), "{e}");
        let p = parse("[resources]\nmemory = \"64M\"\n[oom]\naction = \"kill\"\n").unwrap();
        p.check_oom(Path::new("p.toml")).unwrap();
        let text =
            "[resources]\nmemory = \"64M\"\n[oom]\naction = \"freeze\"\nat = \"memory_high\"\n";
        let mut p = parse(text).unwrap();
        let e = p.check_oom(Path::new("p.toml")).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("needs a memory_high limit"), "{e}");
        // As `run --memory-high` would merge it in.
        p.resources.memory_high = Some(32 << 20);
        p.check_oom(Path::new("p.toml")).unwrap();
        assert!(parse("").unwrap().check_oom(Path::new("p.toml")).is_ok());
    }
}
