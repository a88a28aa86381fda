//! palisade's kernel-side programs, one module per hook family.
//!
//! Every program reads its layouts from `palisade-common` and decides with
//! what the maps hold at that instant; none keeps state of its own.
#![no_std]
#![no_main]
// The atomic add of `usage::add` (aya-ebpf needs the same feature).
#![feature(asm_experimental_arch)]

mod device;
mod events;
mod exit;
mod maps;
mod policy;
mod skb;
mod sock;
mod sock_addr;
mod usage;

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
