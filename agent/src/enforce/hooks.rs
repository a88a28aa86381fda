//! The hooks a container gets, and the two program types behind them:
//! cgroup sock_addr programs (connect, sendmsg, bind), cgroup sock programs
//! (socket creation, post-bind) and cgroup skb programs (ingress accept
//! control, the egress shaping classifier). Each is loaded and pinned once per build, opened
//! from its pin and attached per container as a pinned BPF link.

use std::{fs::File, path::Path};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        CgroupSockAddrAttachType, CgroupSockAttachType, ProgramError, links::FdLink,
    },
};
use palisade_common::program;

/// How a hook attaches.
#[derive(Clone, Copy)]
pub(super) enum Attach {
    SockAddr(CgroupSockAddrAttachType),
    Sock(CgroupSockAttachType),
    Skb(CgroupSkbAttachType),
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
];

/// A loaded program of either type.
pub(super) enum Program {
    SockAddr(CgroupSockAddr),
    Sock(CgroupSock),
    Skb(CgroupSkb, CgroupSkbAttachType),
}

impl Program {
    /// Opens the program pinned at `path`.
    pub fn from_pin(path: &Path, attach: Attach) -> Result<Self, ProgramError> {
        Ok(match attach {
            Attach::SockAddr(t) => Program::SockAddr(CgroupSockAddr::from_pin(path, t)?),
            Attach::Sock(t) => Program::Sock(CgroupSock::from_pin(path, t)?),
            Attach::Skb(t) => Program::Skb(CgroupSkb::from_pin(path, t)?, t),
        })
    }

    /// Attaches to `cgroup` as a BPF link and hands the link over, so the
    /// caller can pin it. The kernel treats cgroup links as multi-attach
    /// (programs of enclosing cgroups still run, and a deny from any of
    /// them stands); link_create takes no mode flag, so `Single` is the
    /// mode that passes 0.
    pub fn attach(&mut self, cgroup: &File) -> Result<FdLink, Box<dyn std::error::Error>> {
        Ok(match self {
            Program::SockAddr(p) => {
                let id = p.attach(cgroup, CgroupAttachMode::Single)?;
                FdLink::try_from(p.take_link(id)?)?
            }
            Program::Sock(p) => {
                let id = p.attach(cgroup, CgroupAttachMode::Single)?;
                FdLink::try_from(p.take_link(id)?)?
            }
            Program::Skb(p, t) => {
                let id = p.attach(cgroup, *t, CgroupAttachMode::Single)?;
                FdLink::try_from(p.take_link(id)?)?
            }
        })
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
    }
}

pub(super) enum LoadError {
    Missing,
    Load(ProgramError),
    Pin(String),
}
