//! Mounting the kernel's own filesystems where a fresh machine or a container lacks them
//! (tracefs for classic tracepoints, bpffs for the pinned gate).
use std::ffi::CString;

/// `mount -t FSTYPE SOURCE TARGET`, no flags, no options.
pub fn mount(source: &str, target: &str, fstype: &str) -> std::io::Result<()> {
    let c = |s: &str| {
        CString::new(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (src, target, fstype) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
