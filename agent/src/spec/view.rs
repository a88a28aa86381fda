//! `[view]`: what a container sees of itself. With `proc = true` (or
//! `palisade run --proc-view`) the files of [`ViewFile::ALL`] show the
//! container's own memory, CPUs, CPU time, uptime, load and I/O instead
//! of the host's, served by the resident agent.

/// The policy's `[view]` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewPolicy {
    /// Serve the container its own `/proc` and `/sys` files.
    pub proc: bool,
}

/// A file of a container's view: its name in the agent's filesystem and
/// the path it covers inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViewFile {
    Meminfo,
    Cpuinfo,
    Stat,
    Uptime,
    Loadavg,
    Diskstats,
    Swaps,
    CpusOnline,
}

impl ViewFile {
    pub const ALL: [ViewFile; 8] = [
        ViewFile::Meminfo,
        ViewFile::Cpuinfo,
        ViewFile::Stat,
        ViewFile::Uptime,
        ViewFile::Loadavg,
        ViewFile::Diskstats,
        ViewFile::Swaps,
        ViewFile::CpusOnline,
    ];

    /// Its name in a container's directory of the agent's filesystem.
    pub fn name(self) -> &'static str {
        match self {
            ViewFile::Meminfo => "meminfo",
            ViewFile::Cpuinfo => "cpuinfo",
            ViewFile::Stat => "stat",
            ViewFile::Uptime => "uptime",
            ViewFile::Loadavg => "loadavg",
            ViewFile::Diskstats => "diskstats",
            ViewFile::Swaps => "swaps",
            ViewFile::CpusOnline => "cpus_online",
        }
    }

    /// The file it covers inside the container.
    pub fn covers(self) -> &'static str {
        match self {
            ViewFile::Meminfo => "/proc/meminfo",
            ViewFile::Cpuinfo => "/proc/cpuinfo",
            ViewFile::Stat => "/proc/stat",
            ViewFile::Uptime => "/proc/uptime",
            ViewFile::Loadavg => "/proc/loadavg",
            ViewFile::Diskstats => "/proc/diskstats",
            ViewFile::Swaps => "/proc/swaps",
            ViewFile::CpusOnline => "/sys/devices/system/cpu/online",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_found_again() {
        for f in ViewFile::ALL {
            assert_eq!(ViewFile::from_name(f.name()), Some(f));
            assert!(f.covers().starts_with("/proc/") || f.covers().starts_with("/sys/"));
        }
        assert_eq!(ViewFile::from_name("status"), None);
    }
}
