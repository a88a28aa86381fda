//! The bpf(2) calls `palisade check` tries a kernel with: loading the
//! smallest program of a type for an attach type, and opening a raw
//! tracepoint for one. The programs do nothing (they allow, or return 0)
//! and live only as long as the descriptors returned.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use nix::errno::Errno;

/// `BPF_PROG_LOAD` and `BPF_RAW_TRACEPOINT_OPEN` (enum bpf_cmd).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

/// Program types (enum bpf_prog_type) palisade uses.
pub const PROG_CGROUP_SKB: u32 = 8;
pub const PROG_CGROUP_SOCK: u32 = 9;
pub const PROG_CGROUP_DEVICE: u32 = 15;
pub const PROG_RAW_TRACEPOINT: u32 = 17;
pub const PROG_CGROUP_SOCK_ADDR: u32 = 18;

/// Attach types (enum bpf_attach_type) palisade uses.
pub const ATTACH_INET_INGRESS: u32 = 0;
pub const ATTACH_INET_EGRESS: u32 = 1;
pub const ATTACH_INET_SOCK_CREATE: u32 = 2;
pub const ATTACH_DEVICE: u32 = super::bpf::BPF_CGROUP_DEVICE;
pub const ATTACH_INET4_BIND: u32 = 8;
pub const ATTACH_INET6_BIND: u32 = 9;
pub const ATTACH_INET4_CONNECT: u32 = 10;
pub const ATTACH_INET6_CONNECT: u32 = 11;
pub const ATTACH_INET4_POST_BIND: u32 = 12;
pub const ATTACH_INET6_POST_BIND: u32 = 13;
pub const ATTACH_UDP4_SENDMSG: u32 = 14;
pub const ATTACH_UDP6_SENDMSG: u32 = 15;

/// One eBPF instruction (struct bpf_insn): opcode, registers, offset,
/// immediate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// Loads `r0 = ret; exit` as a program of `prog_type` expecting to be
/// attached as `attach_type`: the kernel checks that it knows the pair.
pub fn load_trivial(prog_type: u32, attach_type: u32, ret: i32) -> nix::Result<OwnedFd> {
    // BPF_ALU64 | BPF_MOV | BPF_K into r0, then BPF_JMP | BPF_EXIT.
    let insns = [
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: ret,
        },
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..15].copy_from_slice(b"palisade_probe\0");
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: attach_type,
        ..Default::default()
    };
    // SAFETY: `attr` is a fully initialised bpf_attr prefix of the size
    // passed; `insns` and `license` point at memory alive for the call,
    // which the kernel only reads. It returns a new fd or -1.
    let fd = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as u32,
        )
    })?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches the raw tracepoint program `prog` to the tracepoint `name`;
/// it stays attached as long as the returned fd.
pub fn raw_tracepoint_open(prog: BorrowedFd<'_>, name: &str) -> nix::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let attr = RawTracepointAttr {
        name: name.as_ptr() as u64,
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr of the size passed; `name` is a
    // NUL-terminated string alive for the call. The kernel only reads them.
    let fd = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            &attr as *const RawTracepointAttr,
            std::mem::size_of::<RawTracepointAttr>() as u32,
        )
    })?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
