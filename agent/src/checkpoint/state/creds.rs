//! Credentials: uids, gids, supplementary groups, the five capability
//! sets and securebits. Read from /proc/PID/status (and securebits by
//! remote prctl); restored by remote syscalls in an order that keeps the
//! privilege each step needs until the step after it.

use serde::{Deserialize, Serialize};

use super::{S_IN, proc};
use crate::checkpoint::{
    error::{StepError, StepResult},
    remote::{Remote, Scratch},
};

const PR_CAPBSET_DROP: u64 = 24;
pub(super) const PR_GET_SECUREBITS: u64 = 27;
const PR_SET_SECUREBITS: u64 = 28;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: u64 = 4;
/// securebits: uid changes leave the capability sets alone.
const SECBIT_NO_SETUID_FIXUP: u32 = 1 << 2;
/// The `*_LOCKED` bits of securebits (odd positions).
const SECBITS_LOCKS: u32 = 0b10_1010_1010;
const CAP_VERSION_3: u32 = 0x2008_0522;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Credentials {
    /// Real, effective, saved, filesystem.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub securebits: u32,
}

/// Ids, uids, gids, groups and capability sets from /proc/PID/status.
pub(super) fn from_status(status: &str) -> Option<Credentials> {
    let get = |key: &str| status.lines().find_map(|l| l.strip_prefix(key));
    let four = |key: &str| -> Option<[u32; 4]> {
        let v: Vec<u32> = get(key)?
            .split_whitespace()
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        v.try_into().ok()
    };
    let caps = |key: &str| u64::from_str_radix(get(key)?.trim(), 16).ok();
    Some(Credentials {
        uids: four("Uid:")?,
        gids: four("Gid:")?,
        groups: get("Groups:")?
            .split_whitespace()
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?,
        inheritable: caps("CapInh:")?,
        permitted: caps("CapPrm:")?,
        effective: caps("CapEff:")?,
        bounding: caps("CapBnd:")?,
        ambient: caps("CapAmb:")?,
        securebits: 0,
    })
}

/// Groups, gids, uids, then capabilities. Uids change with
/// SECBIT_NO_SETUID_FIXUP so the capability sets survive until capset
/// sets them; the bounding set is cut and ambient raised while
/// CAP_SETPCAP is still effective, and securebits set just before the
/// final capset.
pub(super) fn restore(r: &mut Remote, s: &Scratch, c: &Credentials) -> StepResult<()> {
    let pid = r.pid;
    let e = |what: String| StepError::remote(pid, what);
    let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    let p = s.put(pid, S_IN, &groups).map_err(e("groups".into()))?;
    r.call(libc::SYS_setgroups, &[c.groups.len() as u64, p])
        .map_err(e(format!("setgroups {:?}", c.groups)))?;
    let [rg, eg, sg, fg] = c.gids.map(u64::from);
    r.call(libc::SYS_setresgid, &[rg, eg, sg])
        .map_err(e(format!("setresgid {rg} {eg} {sg}")))?;
    r.call(libc::SYS_setfsgid, &[fg])
        .map_err(e(format!("setfsgid {fg}")))?;

    let now = std::fs::read_to_string(proc::path(pid, "status"))
        .ok()
        .and_then(|s| from_status(&s))
        .ok_or_else(|| {
            StepError::failed(format!(
                "credentials of the new process: {} is unreadable",
                proc::path(pid, "status").display()
            ))
        })?;
    let current = r
        .call(libc::SYS_prctl, &[PR_GET_SECUREBITS, 0, 0, 0, 0])
        .map_err(e("PR_GET_SECUREBITS".into()))? as u32;
    if current != (c.securebits & !SECBITS_LOCKS) | SECBIT_NO_SETUID_FIXUP {
        r.call(
            libc::SYS_prctl,
            &[
                PR_SET_SECUREBITS,
                ((c.securebits & !SECBITS_LOCKS) | SECBIT_NO_SETUID_FIXUP).into(),
                0,
                0,
                0,
            ],
        )
        .map_err(e("PR_SET_SECUREBITS (no setuid fixup)".into()))?;
    }
    let [ru, eu, su, fu] = c.uids.map(u64::from);
    r.call(libc::SYS_setresuid, &[ru, eu, su])
        .map_err(e(format!("setresuid {ru} {eu} {su}")))?;
    r.call(libc::SYS_setfsuid, &[fu])
        .map_err(e(format!("setfsuid {fu}")))?;

    // All we have, plus the inheritable set wanted, while we cut the
    // bounding set and raise ambient capabilities.
    capset(r, s, now.permitted, now.permitted, c.inheritable)?;
    for cap in 0..64u64 {
        if now.bounding & (1 << cap) != 0 && c.bounding & (1 << cap) == 0 {
            r.call(libc::SYS_prctl, &[PR_CAPBSET_DROP, cap, 0, 0, 0])
                .map_err(e(format!("PR_CAPBSET_DROP {cap}")))?;
        }
    }
    r.call(
        libc::SYS_prctl,
        &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0],
    )
    .map_err(e("PR_CAP_AMBIENT_CLEAR_ALL".into()))?;
    for cap in 0..64u64 {
        if c.ambient & (1 << cap) != 0 {
            r.call(
                libc::SYS_prctl,
                &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0],
            )
            .map_err(e(format!("PR_CAP_AMBIENT_RAISE {cap}")))?;
        }
    }
    r.call(
        libc::SYS_prctl,
        &[PR_SET_SECUREBITS, c.securebits.into(), 0, 0, 0],
    )
    .map_err(e(format!("PR_SET_SECUREBITS {:#x}", c.securebits)))?;
    capset(r, s, c.effective, c.permitted, c.inheritable)
}

fn capset(
    r: &mut Remote,
    s: &Scratch,
    effective: u64,
    permitted: u64,
    inheritable: u64,
) -> StepResult<()> {
    let pid = r.pid;
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&CAP_VERSION_3.to_ne_bytes());
    b.extend_from_slice(&0i32.to_ne_bytes());
    for half in [0, 32] {
        for set in [effective, permitted, inheritable] {
            b.extend_from_slice(&((set >> half) as u32).to_ne_bytes());
        }
    }
    let hdr = s
        .put(pid, S_IN, &b)
        .map_err(StepError::remote(pid, "cap data"))?;
    r.call(libc::SYS_capset, &[hdr, hdr + 8])
        .map_err(StepError::remote(
            pid,
            format!(
                "capset effective {effective:#x} permitted {permitted:#x} inheritable {inheritable:#x}"
            ),
        ))
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_from_status() {
        let status = "Name:\tx\nUid:\t1000\t1001\t0\t1001\nGid:\t1000\t1001\t1002\t1001\n\
                      Groups:\t1000 1002 \nCapInh:\t0000000000000020\nCapPrm:\t0000000000000421\n\
                      CapEff:\t0000000000000400\nCapBnd:\t000001ffffdfffff\nCapAmb:\t0000000000000020\n";
        let c = from_status(status).unwrap();
        assert_eq!(c.uids, [1000, 1001, 0, 1001]);
        assert_eq!(c.gids, [1000, 1001, 1002, 1001]);
        assert_eq!(c.groups, vec![1000, 1002]);
        assert_eq!(
            (c.inheritable, c.permitted, c.effective),
            (0x20, 0x421, 0x400)
        );
        assert_eq!(c.ambient, 0x20);
        let empty = status.replace("Groups:\t1000 1002 ", "Groups:");
        assert_eq!(from_status(&empty).unwrap().groups, Vec::<u32>::new());
    }
}
