//! What `palisade check` asks of the kernel's BPF, by trying it: each hook
//! a container gets is loaded (a program that allows everything, of the
//! hook's type and attach type) and attached to a scratch cgroup as a BPF
//! link; each raw tracepoint palisade uses is opened with a program that
//! does nothing; each map type is created. Nothing is pinned: every
//! program, link and map goes with its descriptor before this returns.

use std::{fs::File, os::fd::AsFd, path::Path};

use aya::{
    maps::MapType,
    programs::{CgroupSkbAttachType, CgroupSockAddrAttachType, CgroupSockAttachType},
};

use super::{
    BPFFS,
    hooks::{Attach, HOOKS},
};
use crate::sys::{bpf::link_create, bpf_probe as probe};

/// One thing tried, by its name, and why it failed if it did.
pub type Tried = (String, Result<(), String>);

/// The program type and attach type (linux/bpf.h) behind a hook.
fn kernel_types(attach: Attach) -> (u32, u32) {
    use CgroupSockAddrAttachType as A;
    match attach {
        Attach::SockAddr(t) => (
            probe::PROG_CGROUP_SOCK_ADDR,
            match t {
                A::Bind4 => probe::ATTACH_INET4_BIND,
                A::Bind6 => probe::ATTACH_INET6_BIND,
                A::Connect4 => probe::ATTACH_INET4_CONNECT,
                A::Connect6 => probe::ATTACH_INET6_CONNECT,
                A::UDPSendMsg4 => probe::ATTACH_UDP4_SENDMSG,
                A::UDPSendMsg6 => probe::ATTACH_UDP6_SENDMSG,
                // palisade attaches none of the others.
                _ => u32::MAX,
            },
        ),
        Attach::Sock(t) => (
            probe::PROG_CGROUP_SOCK,
            match t {
                CgroupSockAttachType::SockCreate => probe::ATTACH_INET_SOCK_CREATE,
                CgroupSockAttachType::PostBind4 => probe::ATTACH_INET4_POST_BIND,
                CgroupSockAttachType::PostBind6 => probe::ATTACH_INET6_POST_BIND,
                _ => u32::MAX,
            },
        ),
        Attach::Skb(t) => (
            probe::PROG_CGROUP_SKB,
            match t {
                CgroupSkbAttachType::Ingress => probe::ATTACH_INET_INGRESS,
                CgroupSkbAttachType::Egress => probe::ATTACH_INET_EGRESS,
            },
        ),
        Attach::Device => (probe::PROG_CGROUP_DEVICE, probe::ATTACH_DEVICE),
    }
}

/// Every hook a container gets (`cgroup/connect4`…), loaded and attached
/// to `cgroup` (an empty scratch cgroup v2 directory) and detached again.
pub fn hooks(cgroup: &File) -> Vec<Tried> {
    HOOKS
        .iter()
        .map(|hook| {
            let (prog_type, attach_type) = kernel_types(hook.attach);
            let tried = probe::load_trivial(prog_type, attach_type, 1)
                .map_err(|e| format!("the kernel refuses the program type: {}", e.desc()))
                .and_then(|prog| {
                    link_create(prog.as_fd(), cgroup.as_fd(), attach_type)
                        .map(drop)
                        .map_err(|e| format!("the kernel refuses the attachment: {}", e.desc()))
                });
            (hook.name.to_string(), tried)
        })
        .collect()
}

/// The raw tracepoints palisade's programs use: accounting
/// (`sched_process_exit`), dirty-page tracking (`page_fault_user`) and
/// classification (`sched_process_exec`). Each is attached for a moment
/// with a program that does nothing.
pub const TRACEPOINTS: &[&str] = &[
    "sched_process_exit",
    "page_fault_user",
    "sched_process_exec",
];

/// The `task_struct` fields the exit program reads, found in the kernel's
/// BTF (`btf/task_struct`).
pub fn task_struct() -> Tried {
    let tried = super::btf::task_offsets().map(drop);
    ("btf/task_struct".to_string(), tried)
}

pub fn tracepoints() -> Vec<Tried> {
    TRACEPOINTS
        .iter()
        .map(|&tp| {
            let tried = probe::load_trivial(probe::PROG_RAW_TRACEPOINT, 0, 0)
                .map_err(|e| format!("no raw tracepoint programs: {}", e.desc()))
                .and_then(|prog| {
                    probe::raw_tracepoint_open(prog.as_fd(), tp)
                        .map(drop)
                        .map_err(|e| format!("cannot attach: {}", e.desc()))
                });
            (format!("raw_tracepoint/{tp}"), tried)
        })
        .collect()
}

/// The map types palisade's object declares, by the names `check` shows.
const MAPS: &[(&str, MapType)] = &[
    ("hash", MapType::Hash),
    ("lru_hash", MapType::LruHash),
    ("percpu_hash", MapType::PerCpuHash),
    ("lpm_trie", MapType::LpmTrie),
    ("ringbuf", MapType::RingBuf),
];

/// Each map type, created (and closed) by aya's probe.
pub fn maps() -> Vec<Tried> {
    MAPS.iter()
        .map(|&(name, kind)| {
            let tried = match aya::sys::is_map_supported(kind) {
                Ok(true) => Ok(()),
                Ok(false) => Err("this kernel does not have the map type".to_string()),
                Err(e) => Err(crate::sys::bpf::chain(&e)),
            };
            (format!("map/{name}"), tried)
        })
        .collect()
}

/// Whether the kernel's BTF parses (`/sys/kernel/btf/vmlinux`).
pub fn btf() -> Result<(), String> {
    aya::Btf::from_sys_fs()
        .map(drop)
        .map_err(|e| format!("/sys/kernel/btf/vmlinux: {}", crate::sys::bpf::chain(&e)))
}

/// Whether bpffs is mounted at /sys/fs/bpf; if not, whether palisade can
/// mount it there when it needs to (the kernel has the filesystem).
pub fn bpffs() -> Result<(), String> {
    if crate::sys::fs::is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    let known = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("bpf"))
    });
    if known {
        // Not mounted, which is fine: `run` mounts it.
        Ok(())
    } else {
        Err("this kernel has no bpf filesystem (CONFIG_BPF_SYSCALL)".into())
    }
}

/// Whether bpffs is mounted at /sys/fs/bpf now.
pub fn bpffs_mounted() -> bool {
    crate::sys::fs::is_bpffs(Path::new(BPFFS))
}

/// The hooks' names, as [`hooks`] reports them.
pub fn hook_names() -> impl Iterator<Item = &'static str> {
    HOOKS.iter().map(|h| h.name)
}
