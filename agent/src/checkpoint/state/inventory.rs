//! The inventory: every line of /proc/PID/status (and of each thread's)
//! is either state the image records, derived from what it records, or
//! must hold what a task made by the restorer would hold; anything else
//! — an unknown line from a newer kernel, a value nobody restores — is a
//! refusal naming it, never a silent default. The same for the per-task
//! flags of /proc/PID/stat and the prctl settings read by remote calls
//! (see `dump_extra`).

use crate::checkpoint::error::{StepError, StepResult};

/// What the engine does with one line of /proc/PID/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Recorded in the image and restored.
    Recorded,
    /// Follows from what is recorded (ids, memory sizes, counters), or
    /// from the cgroup the task is restored into (Mems_allowed).
    Derived,
    /// Must be this value: nothing restores another.
    Is(&'static str),
    /// Must equal the restorer's own line: a task the restorer makes
    /// inherits it, and nothing sets another.
    AsRestorer,
}

const LINES: &[(&str, Line)] = &[
    ("Name", Line::Recorded),
    ("Umask", Line::Recorded),
    ("State", Line::Recorded),
    ("Tgid", Line::Derived),
    ("Ngid", Line::Derived),
    ("Pid", Line::Derived),
    ("PPid", Line::Derived),
    ("TracerPid", Line::Derived),
    ("Uid", Line::Recorded),
    ("Gid", Line::Recorded),
    ("FDSize", Line::Derived),
    ("Groups", Line::Recorded),
    ("NStgid", Line::Derived),
    ("NSpid", Line::Derived),
    ("NSpgid", Line::Derived),
    ("NSsid", Line::Derived),
    ("Kthread", Line::Is("0")),
    ("VmPeak", Line::Derived),
    ("VmSize", Line::Derived),
    ("VmLck", Line::Is("0 kB")),
    ("VmPin", Line::Is("0 kB")),
    ("VmHWM", Line::Derived),
    ("VmRSS", Line::Derived),
    ("RssAnon", Line::Derived),
    ("RssFile", Line::Derived),
    ("RssShmem", Line::Derived),
    ("VmData", Line::Derived),
    ("VmStk", Line::Derived),
    ("VmExe", Line::Derived),
    ("VmLib", Line::Derived),
    ("VmPTE", Line::Derived),
    ("VmSwap", Line::Derived),
    ("HugetlbPages", Line::Is("0 kB")),
    ("CoreDumping", Line::Is("0")),
    ("THP_enabled", Line::Recorded),
    ("untag_mask", Line::AsRestorer),
    ("Threads", Line::Derived),
    ("SigQ", Line::Derived),
    ("SigPnd", Line::Recorded),
    ("ShdPnd", Line::Recorded),
    ("SigBlk", Line::Recorded),
    ("SigIgn", Line::Recorded),
    ("SigCgt", Line::Recorded),
    ("CapInh", Line::Recorded),
    ("CapPrm", Line::Recorded),
    ("CapEff", Line::Recorded),
    ("CapBnd", Line::Recorded),
    ("CapAmb", Line::Recorded),
    ("NoNewPrivs", Line::Recorded),
    ("Seccomp", Line::Recorded),
    ("Seccomp_filters", Line::Recorded),
    ("Speculation_Store_Bypass", Line::AsRestorer),
    ("SpeculationIndirectBranch", Line::AsRestorer),
    ("Cpus_allowed", Line::Recorded),
    ("Cpus_allowed_list", Line::Recorded),
    ("Mems_allowed", Line::Derived),
    ("Mems_allowed_list", Line::Derived),
    ("voluntary_ctxt_switches", Line::Derived),
    ("nonvoluntary_ctxt_switches", Line::Derived),
    ("x86_Thread_features", Line::AsRestorer),
    ("x86_Thread_features_locked", Line::AsRestorer),
];

fn fields(status: &str) -> impl Iterator<Item = (&str, &str)> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
}

/// Checks every line of a task's status (`status`) against the list;
/// `own` is the restorer's own status. Returns what cannot be restored.
pub fn check_status(status: &str, own: &str) -> StepResult<()> {
    for (key, value) in fields(status) {
        let Some(&(_, line)) = LINES.iter().find(|(k, _)| *k == key) else {
            return Err(StepError::Unsupported(format!(
                "/proc status line {key:?} ({value}) is unknown to this palisade: a newer kernel's state it cannot restore"
            )));
        };
        match line {
            Line::Recorded | Line::Derived => {}
            Line::Is(want) if value == want => {}
            Line::Is(want) => {
                return Err(StepError::Unsupported(format!(
                    "{key} is {value:?} (only {want:?} can be restored)"
                )));
            }
            Line::AsRestorer => {
                let mine = fields(own).find(|(k, _)| *k == key).map(|(_, v)| v);
                // Installing a seccomp filter force-mitigates speculation
                // on CPUs whose mitigation mode is "seccomp": the restore
                // installs the filters again, and with them this.
                let by_seccomp = key.starts_with("Speculation")
                    && value == "thread force mitigated"
                    && fields(status).any(|(k, v)| k == "Seccomp" && v == "2");
                if mine != Some(value) && !by_seccomp {
                    return Err(StepError::Unsupported(format!(
                        "{key} is {value:?} while a restored task would have {:?} (set by prctl, which palisade does not restore)",
                        mine.unwrap_or("none")
                    )));
                }
            }
        }
    }
    Ok(())
}

/// /proc/PID/stat `flags` (field 9) bits a task sets on itself that no
/// restore reproduces: PR_SET_IO_FLUSHER's PF_MEMALLOC_NOIO and
/// PF_LOCAL_THROTTLE.
pub fn check_stat_flags(flags: u64) -> StepResult<()> {
    const PF_MEMALLOC_NOIO: u64 = 0x0008_0000;
    const PF_LOCAL_THROTTLE: u64 = 0x0010_0000;
    if flags & (PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE) != 0 {
        return Err(StepError::Unsupported(
            "it is an I/O flusher (PR_SET_IO_FLUSHER)".into(),
        ));
    }
    Ok(())
}

/// The CPUs of a `Cpus_allowed_list` ("0-3,6"), as a bit mask of bytes.
pub fn cpu_mask(list: &str) -> Option<Vec<u8>> {
    let mut mask = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let n = part.parse::<usize>().ok()?;
                (n, n)
            }
        };
        if hi < lo || hi >= 1 << 16 {
            return None;
        }
        for cpu in lo..=hi {
            if mask.len() <= cpu / 8 {
                mask.resize(cpu / 8 + 1, 0);
            }
            mask[cpu / 8] |= 1 << (cpu % 8);
        }
    }
    // sched_setaffinity takes whole longs.
    mask.resize(mask.len().div_ceil(8).max(1) * 8, 0);
    Some(mask)
}

/// The value of `key` in a status text.
pub fn status_value<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    fields(status).find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str =
        "Name:\tpalisade\nSpeculation_Store_Bypass:\tvulnerable\nuntag_mask:\t0xffffffffffffffff\n";

    #[test]
    fn every_status_line_is_classified() {
        // This machine's own status: every line known, all restorable.
        let mine = std::fs::read_to_string("/proc/self/status").unwrap();
        check_status(&mine, &mine).unwrap();
        let unknown = format!("{OWN}Pkeys_in_use:\t3\n");
        let err = check_status(&unknown, OWN).unwrap_err();
        assert!(err.to_string().contains("\"Pkeys_in_use\""), "{err}");
        let core = format!("{OWN}CoreDumping:\t1\n");
        assert!(
            check_status(&core, OWN)
                .unwrap_err()
                .to_string()
                .contains("CoreDumping")
        );
        let spec = "Speculation_Store_Bypass:\tthread force mitigated\n";
        let err = check_status(spec, OWN).unwrap_err();
        assert!(err.to_string().contains("thread force mitigated"), "{err}");
        // Unless a seccomp filter (restored too) did it.
        check_status(&format!("Seccomp:\t2\n{spec}"), OWN).unwrap();
        assert!(check_stat_flags(0x0008_0000).is_err());
        assert!(check_stat_flags(0x0040_0100).is_ok());
    }

    #[test]
    fn cpu_lists_become_masks() {
        assert_eq!(cpu_mask("0-1").unwrap(), vec![3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(cpu_mask("0,9").unwrap()[..2], [1, 2]);
        assert!(cpu_mask("3-1").is_none());
        assert!(cpu_mask("x").is_none());
    }
}
