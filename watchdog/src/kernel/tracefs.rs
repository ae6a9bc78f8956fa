//! Tracepoint record layouts, from tracefs format files: the offsets of the fields the
//! eBPF programs read change between kernels.
use std::path::Path;

/// The format file of tracepoint `category/name`, if this kernel has it.
pub fn read_format(category: &str, name: &str) -> Option<String> {
    let path = Path::new("/sys/kernel/tracing/events")
        .join(category)
        .join(name)
        .join("format");
    std::fs::read_to_string(path).ok()
}

/// Offset of field `name` in a format file, e.g. from
/// `field:pid_t pid; offset:12; size:4; signed:1;` (tab-separated).
pub fn field_offset(format: &str, name: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        // The declaration ends with the field name, possibly with an array suffix.
        let last = decl.split_whitespace().last()?;
        let field = last.split('[').next()?;
        if field != name {
            return None;
        }
        let offset = line.split("offset:").nth(1)?.split(';').next()?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANG_6_18: &str = "name: sched_process_hang
ID: 321
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:__data_loc char[] comm;	offset:8;	size:4;	signed:0;
	field:pid_t pid;	offset:12;	size:4;	signed:1;
";

    const HANG_5_10: &str = "format:
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:char comm[16];	offset:8;	size:16;	signed:0;
	field:pid_t pid;	offset:24;	size:4;	signed:1;
";

    #[test]
    fn offsets_follow_the_kernel_layout() {
        assert_eq!(field_offset(HANG_6_18, "pid"), Some(12));
        assert_eq!(field_offset(HANG_5_10, "pid"), Some(24));
        assert_eq!(field_offset(HANG_5_10, "comm"), Some(8));
        assert_eq!(field_offset(HANG_6_18, "common_pid"), Some(4));
        assert_eq!(field_offset(HANG_6_18, "group_dead"), None);
    }
}
