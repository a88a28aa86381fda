//! The small monitor: what a detached container's monitor becomes once the
//! container runs. It is a separate, freestanding program (no standard
//! library, no libc, no allocator, linked static and not relocated), built
//! by `agent/build.rs` and embedded in palisade, so each running container
//! costs the host a few pages instead of a copy of palisade's data.
//!
//! The palisade monitor execs it (from a sealed memfd) with:
//!
//! ```text
//! argv[1]  the container's first process (our child), a decimal pid
//! argv[2]  the blocked signal set to wait on, a decimal u64 mask
//! argv[3]  an O_PATH descriptor of palisade's own image
//! argv[4…] the command that cleans up after the container
//! ```
//!
//! It waits for the child as palisade's monitor did (signals it receives
//! from a process are passed on to the child; SIGCHLD ends the wait), then
//! runs palisade's image through the descriptor with the cleanup command
//! and the child's raw wait status appended. If that exec fails it says
//! so on stderr (the container's log) and exits; the container is then
//! reported as one whose monitor died, which `palisade rm` cleans up.
//!
//! Every system call is made here directly; the signal mask and the
//! pending SIGCHLD survive the exec from palisade, so no exit is missed.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

const SYS_WRITE: usize = 1;
const SYS_FCNTL: usize = 72;
const SYS_WAIT4: usize = 61;
const SYS_KILL: usize = 62;
const SYS_RT_SIGTIMEDWAIT: usize = 128;
const SYS_EXIT_GROUP: usize = 231;
const SYS_EXECVEAT: usize = 322;

const EINTR: isize = 4;
const SIGCHLD: isize = 17;
const WNOHANG: usize = 1;
const F_SETFD: usize = 2;
const FD_CLOEXEC: usize = 1;
const AT_EMPTY_PATH: usize = 0x1000;
/// `si_code` of a signal the kernel raised itself (a terminal's ^C, which
/// the child, in the same process group, receives itself too).
const SI_KERNEL: i32 = 0x80;

/// Exit status when the monitor cannot do its job (as palisade's
/// `EXIT_SETUP_FAILED`).
const FAILED: usize = 125;
/// The most arguments the cleanup command may have.
const MAX_ARGS: usize = 30;

// The entry point: the kernel leaves argc, argv and envp on the stack.
global_asm!(
    ".globl _start",
    "_start:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call monitor_main",
    "ud2",
);

/// A raw system call with up to five arguments; a negative result is
/// `-errno`.
///
/// # Safety
/// The arguments must be what system call `n` expects: any pointer among
/// them valid for what the kernel reads or writes through it.
unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize, e: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller's contract; `syscall` clobbers only rax, rcx and
    // r11 and touches no memory of ours but what the arguments name.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            in("r8") e,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes a plain integer and does not return.
        unsafe {
            syscall(SYS_EXIT_GROUP, code, 0, 0, 0, 0);
        }
    }
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: the kernel reads `bytes.len()` bytes from a live slice.
    unsafe {
        syscall(SYS_WRITE, 2, bytes.as_ptr() as usize, bytes.len(), 0, 0);
    }
}

/// Says why the monitor gives up, then exits.
fn fail(what: &[u8], errno: isize) -> ! {
    let mut digits = [0u8; 20];
    write_stderr(b"palisade: the container's monitor ");
    write_stderr(what);
    write_stderr(b" (errno ");
    write_stderr(decimal((-errno) as u64, &mut digits));
    write_stderr(b"); `palisade rm` cleans up after the container\n");
    exit(FAILED)
}

/// `value` in decimal, written at the end of `buf`.
fn decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[at..];
        }
    }
}

/// The NUL-terminated string at `p`, parsed as a decimal number.
///
/// # Safety
/// `p` points to a NUL-terminated string.
unsafe fn parse(p: *const u8) -> Option<u64> {
    let mut value: u64 = 0;
    let mut at = p;
    // SAFETY: the caller's: every byte up to the NUL is readable.
    unsafe {
        if *at == 0 {
            return None;
        }
        while *at != 0 {
            let digit = (*at).wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
            at = at.add(1);
        }
    }
    Some(value)
}

/// Waits for `child` to end, passing on the signals of `mask` that a
/// process sent; returns its raw wait status.
fn wait_for(child: usize, mask: u64) -> i32 {
    let mut status: i32 = 0;
    // siginfo_t is 128 bytes; si_code is the third int.
    let mut info = [0i32; 32];
    loop {
        // SAFETY: `status` is a writable int; no rusage is asked for.
        let done = unsafe {
            syscall(
                SYS_WAIT4,
                child,
                &mut status as *mut i32 as usize,
                WNOHANG,
                0,
                0,
            )
        };
        if done == child as isize {
            // Without WUNTRACED or WCONTINUED, only an end is reported.
            return status;
        }
        if done < 0 {
            fail(b"cannot wait for the container", done);
        }
        // SAFETY: `mask` and `info` are live and of the sizes given; no
        // timeout.
        let signal = unsafe {
            syscall(
                SYS_RT_SIGTIMEDWAIT,
                &mask as *const u64 as usize,
                info.as_mut_ptr() as usize,
                0,
                8,
                0,
            )
        };
        if signal == -EINTR || signal == SIGCHLD {
            continue;
        }
        if signal < 0 {
            fail(b"cannot wait for signals", signal);
        }
        if info[2] != SI_KERNEL {
            // SAFETY: kill takes plain integers. A child already gone is
            // fine: its SIGCHLD is pending.
            unsafe {
                syscall(SYS_KILL, child, signal as usize, 0, 0, 0);
            }
        }
    }
}

/// # Safety
/// Called once, by `_start`, with the stack the kernel set up.
#[unsafe(no_mangle)]
unsafe extern "C" fn monitor_main(stack: *const usize) -> ! {
    // SAFETY: the kernel's layout: argc, then argc argv pointers and a
    // NULL, then the environment's pointers and a NULL.
    let (argc, argv, envp) = unsafe {
        let argc = *stack;
        let argv = stack.add(1) as *const *const u8;
        (argc, argv, argv.add(argc + 1))
    };
    if argc < 5 || argc - 4 > MAX_ARGS {
        fail(b"was started with the wrong arguments", -22);
    }
    // SAFETY: argv[1..4] are NUL-terminated strings (argc >= 5).
    let (child, mask, exe) = unsafe {
        (
            parse(*argv.add(1)),
            parse(*argv.add(2)),
            parse(*argv.add(3)),
        )
    };
    let (Some(child), Some(mask), Some(exe)) = (child, mask, exe) else {
        fail(b"was started with the wrong arguments", -22);
    };
    let status = wait_for(child as usize, mask);

    // The cleanup command, with the status appended.
    let mut digits = [0u8; 21];
    let text = {
        let mut buf = [0u8; 20];
        let text = decimal(u64::from(status as u32), &mut buf);
        digits[..text.len()].copy_from_slice(text);
        digits[text.len()] = 0;
        digits.as_ptr()
    };
    let mut args: [*const u8; MAX_ARGS + 2] = [core::ptr::null(); MAX_ARGS + 2];
    let given = argc - 4;
    for (i, slot) in args.iter_mut().take(given).enumerate() {
        // SAFETY: i + 4 < argc.
        *slot = unsafe { *argv.add(4 + i) };
    }
    args[given] = text;
    // SAFETY: plain integers; the image needs no descriptor of its own.
    unsafe {
        syscall(SYS_FCNTL, exe as usize, F_SETFD, FD_CLOEXEC, 0, 0);
    }
    // SAFETY: an empty path with AT_EMPTY_PATH runs the descriptor's file;
    // `args` and `envp` are NULL-terminated arrays of strings.
    let err = unsafe {
        syscall(
            SYS_EXECVEAT,
            exe as usize,
            c"".as_ptr() as usize,
            args.as_ptr() as usize,
            envp as usize,
            AT_EMPTY_PATH,
        )
    };
    fail(b"cannot run palisade to clean up after the container", err)
}

// What the compiler may call for copies and fills, which libc would
// provide. The writes are volatile, so these loops are never turned back
// into calls to themselves.

/// # Safety
/// `dst` and `src` are valid for `n` bytes and do not overlap.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's: both are valid for n bytes.
        unsafe { dst.add(i).write_volatile(*src.add(i)) };
    }
    dst
}

/// # Safety
/// `dst` is valid for `n` bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dst: *mut u8, byte: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's: dst is valid for n bytes.
        unsafe { dst.add(i).write_volatile(byte as u8) };
    }
    dst
}

/// Named by the prebuilt `core`'s unwind tables; with `panic=abort`
/// nothing unwinds, so it is never called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    write_stderr(b"palisade: the container's monitor failed\n");
    exit(FAILED)
}
