//! Every raw syscall and `unsafe` block of the agent, each wrapped in a safe
//! function returning `Result`. `nix` is used wherever it has the call;
//! what remains is here, each block with a `// SAFETY:` comment.

pub mod bpf;
pub mod fds;
pub mod fs;
pub mod mmap;
pub mod netlink;
pub mod ns;
pub mod pidfd;
pub mod process;
pub mod ptrace;
pub mod readiness;
pub mod security;
pub mod signal;
pub mod taskstate;
pub mod tty;
pub mod uffd;
