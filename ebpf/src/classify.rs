//! Rule-based classification: tells the agent about each exec that one of
//! its `[[classify]]` rules may match, and holds it if that rule says so.
//!
//! Its own object (`palisade-classify`), loaded by the agent only while it
//! has rules and never pinned: when the agent goes, so does the program,
//! and no process is ever stopped for an agent that is not there to
//! continue it.
//!
//! ## classify_exec
//!
//! Attach point: the tracepoint `sched/sched_process_exec`
//! (BPF_PROG_TYPE_TRACEPOINT), run in the exec'ing task's context once the
//! new program is in place and before it runs its first instruction.
//! Reads `CLASSIFY_CONFIG`, `CLASSIFY_UIDS`, `CLASSIFY_GIDS` and, only when
//! some rule with an exe criterion is still possible, the filename and
//! `CLASSIFY_PREFIXES`; writes `CLASSIFY_EXECS`. An exec no rule may match
//! costs an array and one or two hash lookups, and sends nothing. One
//! some rule may match is sent to the ring; if such a rule holds, the task
//! is sent SIGSTOP (`bpf_send_signal`, Linux 5.3), which stops it on its
//! way back to user mode: it runs nothing until the agent continues it.
//! Processes of palisade's containers are skipped first.
//!
//! Fails open: an error (a full ring) leaves the process alone and unheld.
//!
//! Minimum kernel: 5.8 (the ring buffer).
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        bpf_probe_read_kernel_str_bytes,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel_str, bpf_send_signal,
        },
    },
    macros::{map, tracepoint},
    maps::{
        Array, HashMap, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::TracePointContext,
};
use aya_log_ebpf::{debug, warn};
use palisade_common::classify::{
    ClassifyConfig, EXEC_FILENAME_LOC, EXEC_RING_BYTES, ExecEvent, FILENAME_BYTES, MAX_IDS,
    MAX_PREFIXES, PREFIX_BYTES, SIGSTOP,
};

#[map(name = "CLASSIFY_EXECS")]
static CLASSIFY_EXECS: RingBuf = RingBuf::with_byte_size(EXEC_RING_BYTES, 0);

#[map(name = "CLASSIFY_UIDS")]
static CLASSIFY_UIDS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_IDS, 0);

#[map(name = "CLASSIFY_GIDS")]
static CLASSIFY_GIDS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_IDS, 0);

#[map(name = "CLASSIFY_PREFIXES")]
static CLASSIFY_PREFIXES: LpmTrie<[u8; PREFIX_BYTES], u64> =
    LpmTrie::with_max_entries(MAX_PREFIXES, 0);

#[map(name = "CLASSIFY_CONFIG")]
static CLASSIFY_CONFIG: Array<ClassifyConfig> = Array::with_max_entries(1, 0);

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn classify_exec(ctx: TracePointContext) -> u32 {
    // Whatever happens, the exec goes on: the program only observes it.
    let _ = try_classify(&ctx);
    0
}

fn try_classify(ctx: &TracePointContext) -> Result<(), i32> {
    let config = CLASSIFY_CONFIG.get(0).ok_or(-1)?;
    if config.skip_cgroup != 0 {
        // SAFETY: a helper call with a plain integer argument; it returns 0
        // for a level deeper than the task's cgroup.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(config.skip_level as i32) };
        if ancestor == config.skip_cgroup {
            return Ok(());
        }
    }
    let ids = bpf_get_current_uid_gid();
    let (uid, gid) = (ids as u32, (ids >> 32) as u32);
    // SAFETY: a lookup of a hash map of u64 values; the reference is read
    // at once, while the program runs.
    let mut rules = config.any_uid | unsafe { CLASSIFY_UIDS.get(uid) }.copied().unwrap_or(0);
    if rules == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    rules &= config.any_gid | unsafe { CLASSIFY_GIDS.get(gid) }.copied().unwrap_or(0);
    if rules == 0 {
        return Ok(());
    }
    let filename = filename_ptr(ctx)?;
    if rules & !config.any_exe != 0 {
        let mut key = Key::new((PREFIX_BYTES * 8) as u32, [0u8; PREFIX_BYTES]);
        // SAFETY: `filename` points into this tracepoint's record; the
        // helper copies at most the buffer's length and NUL-terminates.
        let read = unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut key.data) };
        let exe = match read {
            // Not absolute (a relative path given to execve): the agent
            // reads /proc/PID/exe, which any exe rule may match.
            Ok(bytes) if bytes.first() != Some(&b'/') => config.exe_rules,
            Ok(_) => CLASSIFY_PREFIXES.get(&key).copied().unwrap_or(0),
            Err(_) => config.exe_rules,
        };
        rules &= config.any_exe | exe;
        if rules == 0 {
            return Ok(());
        }
    }
    let Some(mut entry) = CLASSIFY_EXECS.reserve::<ExecEvent>(0) else {
        warn!(
            ctx,
            "classify: ring full, exec of uid {} not classified", uid
        );
        return Err(-1);
    };
    let held = rules & config.hold != 0;
    let event = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `event` is the ring entry just reserved, sized for an
    // ExecEvent and ours until submitted; every field is written before
    // the submit, the filename by the helper through a raw pointer (never
    // a reference to the uninitialised bytes), at most FILENAME_BYTES.
    unsafe {
        (*event).ktime_ns = bpf_ktime_get_ns();
        (*event).rules = rules;
        (*event).pid = pid_tgid as u32;
        (*event).tgid = (pid_tgid >> 32) as u32;
        (*event).uid = uid;
        (*event).gid = gid;
        (*event).held = held as u32;
        let read = bpf_probe_read_kernel_str(
            core::ptr::addr_of_mut!((*event).filename).cast(),
            FILENAME_BYTES as u32,
            filename.cast(),
        );
        // The helper counts the NUL it writes.
        (*event).filename_len = if read > 0 { read as i32 - 1 } else { -1 };
    }
    if held {
        // SAFETY: a helper call with a signal number; it signals the
        // current task's thread group, which stops before returning to
        // user mode. Sent only once the event is sure to reach the agent.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    entry.submit(0);
    debug!(
        ctx,
        "classify: exec of pid {} uid {} gid {} (rules {:x}, held {})",
        (pid_tgid >> 32) as u32,
        uid,
        gid,
        rules,
        held as u32
    );
    Ok(())
}

/// The kernel address of the exec'ed filename: the record's
/// `__data_loc char[] filename` is its offset (low 16 bits) in the record.
#[inline(always)]
fn filename_ptr(ctx: &TracePointContext) -> Result<*const u8, i32> {
    // SAFETY: the field is a u32 at this offset of the record (the
    // tracepoint's format); the helper reads it safely.
    let loc: u32 = unsafe { ctx.read_at(EXEC_FILENAME_LOC)? };
    // SAFETY: the offset stays within the record, which the tracepoint
    // built to hold the string; only the helpers read through it.
    Ok(unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) })
}

const _: () = assert!(FILENAME_BYTES > PREFIX_BYTES);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this, so it
    // is never executed; `unreachable_unchecked` just tells the compiler so.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
