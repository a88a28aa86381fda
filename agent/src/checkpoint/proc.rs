//! What /proc says about a stopped process: maps, stat fields,
//! signal mask. Plain file parsing, no syscalls beyond reading.

use std::{fs, path::PathBuf};

use super::image::MmLayout;

pub fn path(pid: i32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    pub path: String,
}

pub fn parse_maps(text: &str) -> Option<Vec<MapLine>> {
    text.lines()
        .map(|line| {
            let mut it = line.splitn(6, ' ');
            let range = it.next()?;
            let perms = it.next()?.to_string();
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let inode = it.next()?.parse().ok()?;
            let path = it.next().unwrap_or("").trim_start().to_string();
            let (s, e) = range.split_once('-')?;
            Some(MapLine {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                perms,
                offset,
                inode,
                path,
            })
        })
        .collect()
}

pub fn maps(pid: i32) -> std::io::Result<Vec<MapLine>> {
    let text = fs::read_to_string(path(pid, "maps"))?;
    parse_maps(&text).ok_or_else(|| std::io::Error::other("unparsable /proc/PID/maps"))
}

/// The `VmFlags:` of every mapping of `pid` (/proc/PID/smaps), by start
/// address.
pub fn vm_flags(pid: i32) -> std::io::Result<std::collections::HashMap<u64, String>> {
    let text = fs::read_to_string(path(pid, "smaps"))?;
    let mut out = std::collections::HashMap::new();
    let mut start = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(s) = start.take() {
                out.insert(s, flags.trim().to_string());
            }
            continue;
        }
        // A mapping's header: "start-end perms offset dev inode [path]".
        let mut words = line.split_whitespace();
        let (Some(range), Some(perms)) = (words.next(), words.next()) else {
            continue;
        };
        if perms.len() == 4
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(_)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            start = Some(a);
        }
    }
    Ok(out)
}

/// Fields of /proc/PID/stat after the command name, so that `field(n)`
/// is stat field n as numbered in proc(5).
pub struct Stat(Vec<String>);

impl Stat {
    pub fn read(pid: i32) -> std::io::Result<Self> {
        Self::read_at(path(pid, "stat"))
    }

    /// Thread `tid`'s of process `pid`.
    pub fn read_task(pid: i32, tid: i32) -> std::io::Result<Self> {
        Self::read_at(path(pid, &format!("task/{tid}/stat")))
    }

    fn read_at(file: PathBuf) -> std::io::Result<Self> {
        let text = fs::read_to_string(file)?;
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| std::io::Error::other("unparsable stat"))?;
        Ok(Stat(rest.split_whitespace().map(str::to_string).collect()))
    }

    /// The state letter (R, S, D, T, t, Z…).
    pub fn state(&self) -> char {
        self.0.first().and_then(|s| s.chars().next()).unwrap_or('?')
    }

    pub fn field(&self, n: usize) -> u64 {
        self.0
            .get(n - 3)
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0) as u64
    }

    pub fn mm(&self) -> MmLayout {
        MmLayout {
            start_code: self.field(26),
            end_code: self.field(27),
            start_stack: self.field(28),
            start_data: self.field(45),
            end_data: self.field(46),
            start_brk: self.field(47),
            brk: self.field(47),
            arg_start: self.field(48),
            arg_end: self.field(49),
            env_start: self.field(50),
            env_end: self.field(51),
        }
    }
}

/// The blocked-signal mask (SigBlk) in a status file.
pub fn sigmask_at(status: &std::path::Path) -> Option<u64> {
    let text = fs::read_to_string(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("SigBlk:"))?;
    u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).ok()
}

/// The thread ids of `pid`, ascending (empty if it is gone).
/// The start time of process `pid` (stat field 22, clock ticks after
/// boot): with the pid, what tells it from a later process given that pid.
pub fn start_time(pid: i32) -> std::io::Result<u64> {
    Stat::read(pid).map(|s| s.field(22))
}

pub fn tids(pid: i32) -> Vec<i32> {
    let mut out: Vec<i32> = fs::read_dir(path(pid, "task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// Children of every thread of `pid`, ascending.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for tid in tids(pid) {
        let text =
            fs::read_to_string(path(pid, &format!("task/{tid}/children"))).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|s| s.parse::<i32>().ok()),
        );
    }
    out.sort_unstable();
    out
}

/// `root` and its descendants as (pid, parent), each parent before its
/// children.
pub fn tree(root: i32) -> Vec<(i32, i32)> {
    let mut out = vec![(root, 0)];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i].0;
        out.extend(children(pid).into_iter().map(|c| (c, pid)));
        i += 1;
    }
    out
}

pub fn auxv(pid: i32) -> std::io::Result<Vec<u64>> {
    let bytes = fs::read(path(pid, "auxv"))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "00400000-00401000 r--p 00000000 fd:01 1234                               /usr/bin/x\n\
                    7ffd1000-7ffd3000 rw-p 00000000 00:00 0                                  [stack]\n\
                    7f000000-7f001000 rw-p 00000000 00:00 0 \n";
        let maps = parse_maps(text).unwrap();
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].path, "/usr/bin/x");
        assert_eq!(maps[1].path, "[stack]");
        assert_eq!(maps[2].path, "");
        assert_eq!(maps[1].start, 0x7ffd1000);
    }
}
