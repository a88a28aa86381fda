//! Capability sets: Docker's default, `--cap-add` / `--cap-drop` resolution.

use std::fmt;

pub use ::caps::Capability;

use super::SecurityError;

/// A set of capabilities, as the kernel's bitmask (bit N = capability N).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSet(u64);

impl CapSet {
    /// No capabilities.
    pub const fn empty() -> Self {
        CapSet(0)
    }

    /// Every capability palisade knows by name.
    pub fn all() -> Self {
        ::caps::all().into_iter().collect()
    }

    /// From a kernel bitmask; bits of capabilities without a name are dropped.
    pub fn from_bits(bits: u64) -> Self {
        CapSet(bits & CapSet::all().0)
    }

    /// The kernel bitmask, as in `CapEff` of /proc/PID/status.
    pub const fn bits(self) -> u64 {
        self.0
    }

    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bitmask() != 0
    }

    pub fn insert(&mut self, cap: Capability) {
        self.0 |= cap.bitmask();
    }

    pub fn remove(&mut self, cap: Capability) {
        self.0 &= !cap.bitmask();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, in kernel order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        let mut all: Vec<Capability> = ::caps::all().into_iter().collect();
        all.sort_by_key(|c| c.index());
        all.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Capability> for CapSet {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        let mut set = CapSet::empty();
        for cap in iter {
            set.insert(cap);
        }
        set
    }
}

impl fmt::Debug for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapSet({:#018x}: ", self.0)?;
        f.debug_list().entries(self.iter()).finish()?;
        write!(f, ")")
    }
}

/// Docker's default set of 14.
const DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Docker's default capabilities (bitmask 0xa80425fb).
pub fn default_caps() -> CapSet {
    DEFAULT.into_iter().collect()
}

/// One capability by name: `NET_ADMIN`, `cap_net_admin`, any case.
pub fn parse_cap(name: &str) -> Result<Capability, SecurityError> {
    let canonical = ::caps::to_canonical(name.trim());
    canonical
        .parse()
        .ok()
        .filter(|_| canonical.len() > "CAP_".len())
        .ok_or_else(|| SecurityError::UnknownCapability(name.to_string()))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// Names to capabilities, leaving out `ALL`; every name is checked.
fn parse_list(names: &[String]) -> Result<Vec<Capability>, SecurityError> {
    names
        .iter()
        .filter(|n| !is_all(n))
        .map(|n| parse_cap(n))
        .collect()
}

/// Applies `--cap-add` and `--cap-drop` to the default set, as Docker
/// does: `--cap-add ALL` gives every capability but the dropped ones;
/// otherwise `--cap-drop ALL` gives exactly the added ones; otherwise the
/// dropped ones leave the default set and the added ones join it (so a
/// capability both dropped and added is kept).
pub fn resolve_caps(add: &[String], drop: &[String]) -> Result<CapSet, SecurityError> {
    let added = parse_list(add)?;
    let dropped = parse_list(drop)?;
    let mut set = if add.iter().any(|n| is_all(n)) {
        let mut set = CapSet::all();
        dropped.iter().for_each(|c| set.remove(*c));
        return Ok(set);
    } else if drop.iter().any(|n| is_all(n)) {
        CapSet::empty()
    } else {
        let mut set = default_caps();
        dropped.iter().for_each(|c| set.remove(*c));
        set
    };
    added.iter().for_each(|c| set.insert(*c));
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_is_dockers_mask() {
        assert_eq!(default_caps().bits(), 0xa804_25fb);
        assert_eq!(default_caps().iter().count(), 14);
    }

    #[test]
    fn names_with_or_without_prefix_in_any_case() {
        for n in [
            "NET_ADMIN",
            "CAP_NET_ADMIN",
            "net_admin",
            "cap_Net_Admin",
            " NET_ADMIN ",
        ] {
            assert_eq!(parse_cap(n).unwrap(), Capability::CAP_NET_ADMIN, "{n}");
        }
        assert_eq!(
            parse_cap("checkpoint_restore").unwrap(),
            Capability::CAP_CHECKPOINT_RESTORE
        );
    }

    #[test]
    fn unknown_names_are_named() {
        for n in ["NET_ADMINX", "", "CAP_", "ALL_THE_THINGS"] {
            let e = parse_cap(n).unwrap_err();
            assert_eq!(e.to_string(), format!("unknown capability {n:?}"));
        }
        let e = resolve_caps(&names(&["NET_ADMIN", "NET_ADMINX"]), &[]).unwrap_err();
        assert_eq!(e.to_string(), r#"unknown capability "NET_ADMINX""#);
        let e = resolve_caps(&[], &names(&["ALL", "bogus"])).unwrap_err();
        assert_eq!(e.to_string(), r#"unknown capability "bogus""#);
    }

    #[test]
    fn nothing_asked_gives_the_default() {
        assert_eq!(resolve_caps(&[], &[]).unwrap(), default_caps());
    }

    #[test]
    fn add_and_drop_single_caps() {
        let set = resolve_caps(&names(&["net_admin"]), &names(&["CAP_CHOWN", "mknod"])).unwrap();
        assert!(set.contains(Capability::CAP_NET_ADMIN));
        assert!(!set.contains(Capability::CAP_CHOWN));
        assert!(!set.contains(Capability::CAP_MKNOD));
        assert_eq!(set.iter().count(), 13);
    }

    #[test]
    fn drop_all_then_add_gives_only_the_added() {
        let set = resolve_caps(&names(&["NET_BIND_SERVICE"]), &names(&["all"])).unwrap();
        assert_eq!(set.bits(), Capability::CAP_NET_BIND_SERVICE.bitmask());
        assert!(resolve_caps(&[], &names(&["ALL"])).unwrap().is_empty());
    }

    #[test]
    fn add_all_gives_everything_but_the_dropped() {
        let set = resolve_caps(&names(&["ALL"]), &names(&["SYS_ADMIN"])).unwrap();
        assert_eq!(
            set.bits(),
            CapSet::all().bits() & !Capability::CAP_SYS_ADMIN.bitmask()
        );
        // ALL on both sides: add wins, as in Docker.
        assert_eq!(
            resolve_caps(&names(&["ALL"]), &names(&["ALL"])).unwrap(),
            CapSet::all()
        );
    }

    #[test]
    fn dropped_and_added_is_kept() {
        let set = resolve_caps(&names(&["KILL"]), &names(&["KILL"])).unwrap();
        assert_eq!(set, default_caps());
    }
}
