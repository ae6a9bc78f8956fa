//! printk:console: every kernel message, in the context of the task that printed it.
use core::ptr::addr_of_mut;

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint,
    programs::TracePointContext,
};
use watchdog_common::{MSG_MAX, PRINTK_TRUNCATED, PrintkEvent, RecordKind, counter};

use crate::{
    events::header,
    maps::{EVENTS, bump},
};

/// Offset of `__data_loc char[] msg` in the record (after the 8-byte common header).
const MSG_LOC_OFFSET: usize = 8;

#[tracepoint(category = "printk", name = "console")]
pub fn printk_console(ctx: TracePointContext) -> u32 {
    try_printk_console(&ctx).unwrap_or(0)
}

fn try_printk_console(ctx: &TracePointContext) -> Result<u32, i32> {
    // __data_loc: low 16 bits = offset of the string from the record start, high = length.
    let loc: u32 = unsafe { ctx.read_at(MSG_LOC_OFFSET)? };
    let offset = (loc & 0xffff) as usize;
    let full_len = (loc >> 16) as usize;

    let Some(mut entry) = EVENTS.reserve::<PrintkEvent>(0) else {
        bump(counter::LOST_EVENTS);
        return Ok(0);
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        addr_of_mut!((*ev).header).write(header(RecordKind::Printk));
        let msg = &mut *addr_of_mut!((*ev).msg);
        let src = (ctx.as_ptr() as *const u8).add(offset);
        let len = match bpf_probe_read_kernel_str_bytes(src, msg) {
            Ok(bytes) => bytes.len(),
            Err(_) => 0,
        };
        addr_of_mut!((*ev).len).write(len as u32);
        // full_len counts the NUL; anything beyond what fits was cut.
        let truncated = full_len > MSG_MAX;
        addr_of_mut!((*ev).flags).write(if truncated { PRINTK_TRUNCATED } else { 0 });
    }
    entry.submit(0);
    Ok(0)
}
