//! Task iterators (`iter/task` programs), attached as iterator links and run on demand:
//! each run walks the tasks of the reader's pid namespace once, and hands back what
//! the program wrote. aya's iterator link runs once (its `into_file` takes the link),
//! and these run again and again, so the two bpf() commands are made here.
use std::{
    io::Read as _,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

/// An `iter/task` program, attached: [`TaskIter::run`] runs it over every task.
pub struct TaskIter {
    link: OwnedFd,
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr` as BPF_LINK_CREATE and BPF_ITER_CREATE read it (zero beyond).
#[repr(C)]
#[derive(Default)]
struct LinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 6],
}

fn bpf(cmd: libc::c_long, attr: &LinkAttr) -> std::io::Result<OwnedFd> {
    // SAFETY: a valid, zero-padded bpf_attr of the size passed; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const LinkAttr,
            size_of::<LinkAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl TaskIter {
    /// Attach loaded program `prog` (an `iter/task` program) as an iterator link.
    pub fn attach(prog: BorrowedFd<'_>) -> std::io::Result<Self> {
        let attr = LinkAttr {
            prog_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_TRACE_ITER,
            ..LinkAttr::default()
        };
        Ok(TaskIter {
            link: bpf(BPF_LINK_CREATE, &attr)?,
        })
    }

    /// Run the program over every task; what it wrote (bpf_seq_write), in order.
    pub fn run(&self) -> std::io::Result<Vec<u8>> {
        let attr = LinkAttr {
            prog_fd: self.link.as_raw_fd() as u32,
            ..LinkAttr::default()
        };
        let mut file = std::fs::File::from(bpf(BPF_ITER_CREATE, &attr)?);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}
