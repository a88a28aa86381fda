//! The hooks a container gets, and the program types behind them:
//! cgroup sock_addr programs (connect, sendmsg, bind), cgroup sock programs
//! (socket creation, post-bind), cgroup skb programs (ingress accept
//! control, the egress shaping classifier) and a cgroup device program.
//! Each is loaded and pinned once per build, opened
//! from its pin and attached per container as a pinned BPF link.

use std::{fs::File, os::fd::AsFd, path::Path};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupDevice, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        CgroupSockAddrAttachType, CgroupSockAttachType, ProgramError, links::FdLink,
    },
};
use palisade_common::program;

use crate::sys::bpf;

/// How a hook attaches.
#[derive(Clone, Copy)]
pub(super) enum Attach {
    SockAddr(CgroupSockAddrAttachType),
    Sock(CgroupSockAttachType),
    Skb(CgroupSkbAttachType),
    Device,
}

/// A hook: its program's name in the object, its name for people (also
/// its link pin's file name after the `/`), and how it attaches.
pub(super) struct Hook {
    pub program: &'static str,
    pub name: &'static str,
    pub attach: Attach,
}

pub(super) const HOOKS: &[Hook] = &[
    Hook {
        program: program::CONNECT4,
        name: "cgroup/connect4",
        attach: Attach::SockAddr(CgroupSockAddrAttachType::Connect4),
    },
    Hook {
        program: program::CONNECT6,
        name: "cgroup/connect6",
        attach: Attach::SockAddr(CgroupSockAddrAttachType::Connect6),
    },
    Hook {
        program: program::SENDMSG4,
        name: "cgroup/sendmsg4",
        attach: Attach::SockAddr(CgroupSockAddrAttachType::UDPSendMsg4),
    },
    Hook {
        program: program::SENDMSG6,
        name: "cgroup/sendmsg6",
        attach: Attach::SockAddr(CgroupSockAddrAttachType::UDPSendMsg6),
    },
    Hook {
        program: program::BIND4,
        name: "cgroup/bind4",
        attach: Attach::SockAddr(CgroupSockAddrAttachType::Bind4),
    },
    Hook {
        program: program::BIND6,
        name: "cgroup/bind6",
        attach: Attach::SockAddr(CgroupSockAddrAttachType::Bind6),
    },
    Hook {
        program: program::POST_BIND4,
        name: "cgroup/post_bind4",
        attach: Attach::Sock(CgroupSockAttachType::PostBind4),
    },
    Hook {
        program: program::POST_BIND6,
        name: "cgroup/post_bind6",
        attach: Attach::Sock(CgroupSockAttachType::PostBind6),
    },
    Hook {
        program: program::INGRESS,
        name: "cgroup_skb/ingress",
        attach: Attach::Skb(CgroupSkbAttachType::Ingress),
    },
    Hook {
        program: program::EGRESS,
        name: "cgroup_skb/egress",
        attach: Attach::Skb(CgroupSkbAttachType::Egress),
    },
    Hook {
        program: program::SOCK_CREATE,
        name: "cgroup/sock_create",
        attach: Attach::Sock(CgroupSockAttachType::SockCreate),
    },
    Hook {
        program: program::DEVICE,
        name: "cgroup/dev",
        attach: Attach::Device,
    },
];

/// A loaded program of either type.
pub(super) enum Program {
    SockAddr(CgroupSockAddr),
    Sock(CgroupSock),
    Skb(CgroupSkb, CgroupSkbAttachType),
    Device(CgroupDevice),
}

/// Why attaching a hook failed: the attach itself, or pinning its link.
pub(super) enum AttachError {
    Attach(String),
    Pin(String),
}

impl Program {
    /// Opens the program pinned at `path`.
    pub fn from_pin(path: &Path, attach: Attach) -> Result<Self, ProgramError> {
        Ok(match attach {
            Attach::SockAddr(t) => Program::SockAddr(CgroupSockAddr::from_pin(path, t)?),
            Attach::Sock(t) => Program::Sock(CgroupSock::from_pin(path, t)?),
            Attach::Skb(t) => Program::Skb(CgroupSkb::from_pin(path, t)?, t),
            Attach::Device => Program::Device(CgroupDevice::from_pin(path)?),
        })
    }

    /// Attaches to `cgroup` as a BPF link pinned at `pin`, so it stays
    /// attached when this process exits. The kernel treats cgroup links as
    /// multi-attach (programs of enclosing cgroups still run, and a deny
    /// from any of them stands).
    pub fn attach_pinned(&mut self, cgroup: &File, pin: &Path) -> Result<(), AttachError> {
        let attach_error =
            |e: &dyn std::error::Error| AttachError::Attach(crate::sys::bpf::chain(e));
        let pin_error = |e: &dyn std::error::Error| AttachError::Pin(crate::sys::bpf::chain(e));
        // link_create takes no mode flag, so `Single` is the mode that
        // passes 0.
        let mode = CgroupAttachMode::Single;
        let link = match self {
            Program::SockAddr(p) => p
                .attach(cgroup, mode)
                .and_then(|id| p.take_link(id))
                .map(FdLink::try_from),
            Program::Sock(p) => p
                .attach(cgroup, mode)
                .and_then(|id| p.take_link(id))
                .map(FdLink::try_from),
            Program::Skb(p, t) => p
                .attach(cgroup, *t, mode)
                .and_then(|id| p.take_link(id))
                .map(FdLink::try_from),
            Program::Device(p) => {
                // aya makes this link but will not hand it over for
                // pinning: it is made and pinned here instead.
                let prog = p.fd().map_err(|e| attach_error(&e))?;
                let link = bpf::link_create(prog.as_fd(), cgroup.as_fd(), bpf::BPF_CGROUP_DEVICE)
                    .map_err(|e| attach_error(&e))?;
                return bpf::obj_pin(link.as_fd(), pin).map_err(|e| pin_error(&e));
            }
        };
        let link = link
            .map_err(|e| attach_error(&e))?
            .map_err(|e| attach_error(&e))?;
        link.pin(pin).map(drop).map_err(|e| pin_error(&e))
    }
}

/// Loads (verifies) the hook's program from the object and pins it.
pub(super) fn load_and_pin(bpf: &mut Ebpf, hook: &Hook, path: &Path) -> Result<(), LoadError> {
    let prog = bpf.program_mut(hook.program).ok_or(LoadError::Missing)?;
    match hook.attach {
        Attach::SockAddr(_) => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(LoadError::Load)?;
            p.load().map_err(LoadError::Load)?;
            p.pin(path).map_err(|e| LoadError::Pin(e.to_string()))
        }
        Attach::Sock(_) => {
            let p: &mut CgroupSock = prog.try_into().map_err(LoadError::Load)?;
            p.load().map_err(LoadError::Load)?;
            p.pin(path).map_err(|e| LoadError::Pin(e.to_string()))
        }
        Attach::Skb(_) => {
            let p: &mut CgroupSkb = prog.try_into().map_err(LoadError::Load)?;
            p.load().map_err(LoadError::Load)?;
            p.pin(path).map_err(|e| LoadError::Pin(e.to_string()))
        }
        Attach::Device => {
            let p: &mut CgroupDevice = prog.try_into().map_err(LoadError::Load)?;
            p.load().map_err(LoadError::Load)?;
            p.pin(path).map_err(|e| LoadError::Pin(e.to_string()))
        }
    }
}

pub(super) enum LoadError {
    Missing,
    Load(ProgramError),
    Pin(String),
}
