//! The service heartbeat gate, kernel side: an egress program that drops the packets of
//! the gated senders while the daemon's heartbeat is stopped (or its lease lapsed), and
//! the fentry programs that tag each socket with who sends on it. Its own object, so the
//! daemon pins it and it outlives a dead daemon (see watchdog/src/kernel/gate.rs).
#![no_std]
#![no_main]

mod egress;
mod maps;
mod packet;
mod tagging;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_sk_storage_get in tracing programs is GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
