//! The VMA inventory: every flag /proc/PID/smaps shows for a mapping
//! (`VmFlags:`) is either reproduced by the restore — by how the mapping
//! is made (protection, shared, may-write, no-reserve, grows-down) or by
//! madvise afterwards — or refused by name. A flag this palisade does not
//! know (a newer kernel's) is refused too: never a silent default.

use super::error::{StepError, StepResult};

/// What a mapping's flags ask of the restore.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reproduce {
    /// VM_MAYWRITE of a shared mapping: its file was open for writing,
    /// so it can be made writable later (mprotect).
    pub may_write: bool,
    /// MAP_NORESERVE.
    pub noreserve: bool,
    /// madvise advice numbers to apply after mapping it.
    pub advice: Vec<i32>,
}

/// Flags that follow from what the image records of the mapping
/// (protection, kind) or from how the kernel accounts it.
const DERIVED: &[&str] = &[
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "ac", "sd",
];

/// Flags no restore reproduces, and what they are.
const REFUSED: &[(&str, &str)] = &[
    ("pf", "a PFN mapping of device memory"),
    ("io", "a mapping of device I/O memory"),
    (
        "de",
        "a mapping that must not expand (VM_DONTEXPAND, a driver's)",
    ),
    ("lo", "locked memory (mlock)"),
    ("lf", "memory locked on fault (mlock2 MLOCK_ONFAULT)"),
    ("ht", "a hugetlb mapping"),
    ("sf", "a synchronous-fault (DAX) mapping"),
    ("mm", "a mixed PFN mapping of a driver"),
    ("um", "memory registered with userfaultfd (missing pages)"),
    (
        "uw",
        "memory registered with userfaultfd (write protection)",
    ),
    ("ui", "memory registered with userfaultfd (minor faults)"),
    ("ss", "a shadow stack"),
    ("sl", "sealed memory (mseal)"),
    ("ar", "an architecture-specific mapping"),
    ("nl", "a non-linear mapping"),
    ("dp", "droppable memory (MAP_DROPPABLE)"),
    ("gu", "guard regions installed with MADV_GUARD_INSTALL"),
];

/// Flags the restore gives back with madvise, and the advice.
const ADVISED: &[(&str, i32)] = &[
    ("sr", libc::MADV_SEQUENTIAL),
    ("rr", libc::MADV_RANDOM),
    ("dc", libc::MADV_DONTFORK),
    ("wf", libc::MADV_WIPEONFORK),
    ("dd", libc::MADV_DONTDUMP),
    ("hg", libc::MADV_HUGEPAGE),
    ("nh", libc::MADV_NOHUGEPAGE),
    ("mg", libc::MADV_MERGEABLE),
];

/// Mappings the kernel provides, mapped afresh by the restoring kernel:
/// their flags are its own.
pub const KERNELS: &[&str] = &["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"];

/// Classifies the VmFlags of one mapping (`shared`: a MAP_SHARED one).
pub fn classify(flags: &str, shared: bool) -> StepResult<Reproduce> {
    let mut out = Reproduce::default();
    for flag in flags.split_whitespace() {
        if let Some((_, what)) = REFUSED.iter().find(|(f, _)| *f == flag) {
            return Err(StepError::Unsupported(format!("{what} (VmFlags {flag})")));
        }
        if let Some((_, advice)) = ADVISED.iter().find(|(f, _)| *f == flag) {
            out.advice.push(*advice);
        } else if flag == "nr" {
            out.noreserve = true;
        } else if !DERIVED.contains(&flag) {
            return Err(StepError::Unsupported(format!(
                "VmFlags {flag:?}, unknown to this palisade (a newer kernel's mapping state it cannot restore)"
            )));
        }
        if flag == "mw" && shared {
            out.may_write = true;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_reproduced_or_refused() {
        let r = classify("rd mr mw me sh nr dc hg", true).unwrap();
        assert!(r.may_write && r.noreserve);
        assert_eq!(r.advice, vec![libc::MADV_DONTFORK, libc::MADV_HUGEPAGE]);
        // A private mapping is always may-write (copy on write).
        assert!(!classify("rd mr mw me", false).unwrap().may_write);
        let err = classify("rd lo", false).unwrap_err();
        assert!(err.is_unsupported() && err.to_string().contains("mlock"));
        assert!(
            classify("rd zz", false)
                .unwrap_err()
                .to_string()
                .contains("\"zz\"")
        );
        // This process's own mappings are all known (but the kernel's
        // own, which the restore maps afresh).
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut kernels = false;
        for line in smaps.lines() {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if !kernels {
                    classify(flags, false).unwrap();
                }
            } else if line.split_whitespace().nth(1).is_some_and(|p| p.len() == 4) {
                kernels = KERNELS.iter().any(|k| line.ends_with(k));
            }
        }
    }
}
