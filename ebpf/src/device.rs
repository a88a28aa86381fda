//! cgroup/dev (BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE, Linux
//! 4.15): device access control on the container's cgroup v2 directory.
//!
//! Run for every open of a device node (read, write) and every mknod of
//! one by a task of the container. Each palisade container from the root
//! cgroup down to the caller's that rules devices must grant every access
//! bit asked for, by the patterns its generation holds in `DEVICE_RULES`
//! (exact type or `a`, each with major:minor, major:* and *:*; their
//! grants ORed). Finding no policy at all refuses: fail closed. Device
//! rules ignore audit mode: they are always enforced.
//!
//! Reads `CGROUP_POLICY` and `DEVICE_RULES`; reports refusals through
//! `events`. Returning 0 makes the open or mknod fail with EPERM.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, generated::bpf_get_current_ancestor_cgroup_id},
    macros::cgroup_device,
    programs::DeviceContext,
};
use palisade_common::{DEVICE_ALL, DEVICE_ANY, DeviceKey, GENERATION_BIT, HOOK_DEVICE, LIST_OPEN};

use crate::{
    events::{Refusal, conclude},
    maps::{CGROUP_POLICY, DEVICE_RULES},
    policy::{ALLOW, DENY, MAX_LEVELS},
};

#[cgroup_device]
pub fn device(ctx: DeviceContext) -> i32 {
    // SAFETY: the kernel hands every cgroup device program a valid
    // bpf_cgroup_dev_ctx; the verifier checks each field access.
    let (access_type, major, minor) = unsafe {
        let d = &*ctx.device;
        (d.access_type, d.major, d.minor)
    };
    let kind = access_type & 0xffff;
    let access = access_type >> 16;
    let decision = decide(kind, major, minor, access);
    // SAFETY: no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let refusal = Refusal {
        cgroup,
        hook: HOOK_DEVICE,
        verdict: 0,
        family: 0,
        addr: [major, minor, 0, 0],
        port: access as u16,
        proto: kind as u8,
        task: true,
    };
    // Spelled out so the verifier sees a return value of 0 or 1.
    if conclude(decision, refusal) == 1 {
        1
    } else {
        0
    }
}

/// ALLOW if every palisade policy of the caller's cgroup and its
/// ancestors grants `access` to the device, else DENY.
#[inline(always)]
fn decide(kind: u32, major: u32, minor: u32, access: u32) -> i32 {
    let mut found = false;
    for level in 0..MAX_LEVELS {
        // SAFETY: the helper has no preconditions; past the caller's own
        // level it returns 0.
        let cgroup = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if cgroup == 0 {
            break;
        }
        let Some(policy) = CGROUP_POLICY.get_ptr(cgroup) else {
            continue;
        };
        found = true;
        // SAFETY: a non-null pointer to a map value, only read. Volatile
        // keeps the compiler from hoisting the read above the null check,
        // which the verifier would refuse.
        let (devices, generation) = unsafe {
            (
                core::ptr::read_volatile(&(*policy).devices),
                core::ptr::read_volatile(&(*policy).generation),
            )
        };
        if devices == LIST_OPEN {
            continue;
        }
        let generation = if generation == 0 { 0 } else { GENERATION_BIT };
        if access & !granted(cgroup, generation, kind, major, minor) != 0 {
            return DENY;
        }
    }
    if found { ALLOW } else { DENY }
}

/// The access bits one container's rules (of `generation`) grant to the
/// device: the OR of every pattern that matches it.
#[inline(always)]
fn granted(cgroup: u64, generation: u32, kind: u32, major: u32, minor: u32) -> u32 {
    let mut bits = 0;
    for k in [kind, DEVICE_ALL] {
        for (ma, mi) in [
            (major, minor),
            (major, DEVICE_ANY),
            (DEVICE_ANY, DEVICE_ANY),
        ] {
            let key = DeviceKey::new(cgroup, k | generation, ma, mi);
            if let Some(value) = DEVICE_RULES.get_ptr(key) {
                // SAFETY: a non-null pointer to a map value, only read;
                // volatile as above.
                bits |= unsafe { core::ptr::read_volatile(value) };
            }
        }
    }
    bits
}
