//! Kernel side of watchdog: one module per hook, each program a thin wrapper around a
//! `try_*` function. Nothing here may panic (the verifier rejects reachable panics).
#![no_std]
#![no_main]
// Inline assembly for the one atomic add (see bits::atomic_add).
#![feature(asm_experimental_arch)]

mod bits;
mod current;
mod events;
mod globals;
mod maps;
mod probes;
mod slots;
mod stacks;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: the probe-read and ring-buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
