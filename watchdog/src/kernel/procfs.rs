//! What /proc says about processes and threads.
use std::{
    fs,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use crate::judging::verdict::{FdKind, FdNode, fd_kind as kind_of};

#[derive(Debug, thiserror::Error)]
pub enum PidError {
    #[error("no such process")]
    NoSuchProcess(u32),
    #[error("{tid} is a thread of process {tgid}; give the process id")]
    NotAProcess { tid: u32, tgid: u32 },
    #[error("reading /proc/{pid}/status: {source}")]
    Io { pid: u32, source: std::io::Error },
    #[error("that is the watchdog itself, which cannot judge its own stalls")]
    Itself,
}

/// Check that `pid` is a live process (a thread-group leader), not a thread, and not
/// this one.
pub fn check_process(pid: u32) -> Result<(), PidError> {
    if pid == std::process::id() {
        return Err(PidError::Itself);
    }
    let status = match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PidError::NoSuchProcess(pid));
        }
        Err(source) => return Err(PidError::Io { pid, source }),
    };
    let tgid = status_field(&status, "Tgid:").and_then(|v| v.parse::<u32>().ok());
    match tgid {
        Some(tgid) if tgid != pid => Err(PidError::NotAProcess { tid: pid, tgid }),
        Some(_) => Ok(()),
        None => Err(PidError::NoSuchProcess(pid)),
    }
}

/// The inode of the kernel's initial pid namespace, a constant of the kernel
/// (`PROC_PID_INIT_INO` in include/linux/proc_ns.h, since 3.8).
const INIT_PID_NS_INODE: u64 = 0xEFFF_FFFC;

/// Whether this process runs in a pid namespace of its own (a container without the
/// host's pids): then the pids it sees are not the ones the kernel side sees. `Some`
/// with the namespace's name when it does.
pub fn own_pid_namespace() -> Option<String> {
    let link = fs::read_link("/proc/self/ns/pid").ok()?;
    let link = link.to_string_lossy().into_owned();
    let inode = link
        .strip_prefix("pid:[")
        .and_then(|l| l.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())?;
    (inode != INIT_PID_NS_INODE).then_some(link)
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// The process (thread group) thread `tid` belongs to, if it still exists.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status_field(&status, "Tgid:")?.parse().ok()
}

/// Processes whose comm is `name`.
pub fn pids_with_comm(name: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| comm(*pid, *pid).as_deref() == Some(name))
        .collect();
    v.sort_unstable();
    v
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "{0}: not a cgroup v2 directory (no cgroup.procs); give a path under the cgroup2 mount{1}"
    )]
    NotACgroup(String, String),
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` in
/// hybrid setups).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(at))
    })
}

/// A cgroup v2 directory from a path as an operator writes it, and its id (the
/// directory's inode number, as bpf_get_current_cgroup_id() reports it).
pub fn cgroup(path: &Path) -> Result<(PathBuf, u64), CgroupError> {
    let mount = cgroup2_mount();
    let dir = if path.is_absolute() {
        path.to_owned()
    } else {
        mount.clone().unwrap_or_default().join(path)
    };
    let meta = fs::metadata(dir.join("cgroup.procs")).and_then(|_| fs::metadata(&dir));
    match meta {
        Ok(m) => Ok((dir, m.ino())),
        Err(_) => Err(CgroupError::NotACgroup(
            dir.display().to_string(),
            mount
                .map(|m| format!(" ({})", m.display()))
                .unwrap_or_default(),
        )),
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or `unknown`.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Process `pid`'s cgroup v2, as a path under the cgroup2 mount (`/system.slice/x`).
pub fn cgroup_path(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The id of process `pid`'s cgroup v2 (as [`cgroup`] gives it), if it still exists.
pub fn cgroup_id_of(pid: u32) -> Option<u64> {
    let rel = cgroup_path(pid)?;
    let dir = cgroup2_mount()?.join(rel.trim_start_matches('/'));
    fs::metadata(dir).ok().map(|m| m.ino())
}

/// Processes in cgroup `dir` (not its children).
pub fn cgroup_procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Thread ids of process `tgid` (empty if it is gone).
pub fn threads(tgid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{tgid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// A thread's command name.
pub fn comm(tgid: u32, tid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{tgid}/task/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// The syscall a thread is in according to /proc (`/proc/PID/task/TID/syscall`):
/// `Some(nr)` while blocked in one, `None` when running or unknown. Used for threads
/// that entered their syscall before the probes were attached.
pub fn current_syscall(tgid: u32, tid: u32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{tgid}/task/{tid}/syscall")).ok()?;
    let first = s.split_whitespace().next()?;
    first
        .parse::<i64>()
        .ok()
        .filter(|&n| n >= 0)
        .map(|n| n as u32)
}

fn task_file(tgid: u32, tid: u32, name: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{tgid}/task/{tid}/{name}")).ok()
}

/// The uid of user `user` (a name, or a number).
pub fn uid_of_user(user: &str) -> Option<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Some(uid);
    }
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam_r with a NUL-terminated name and buffers of the sizes given.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
    }
}

/// Who process `pid` is: its real uid, and the device and inode of its executable.
pub fn identity(pid: u32) -> Option<crate::judging::targets::ProcIdentity> {
    use std::os::unix::fs::MetadataExt as _;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status_field(&status, "Uid:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let exe = fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some(crate::judging::targets::ProcIdentity {
        uid,
        exe: (exe.dev(), exe.ino()),
    })
}

/// Whether process `pid` still runs: it is in /proc and not a zombie (a zombie leader
/// with threads still running is a running process).
pub fn process_alive(pid: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let zombie = status_field(&status, "State:").is_some_and(|s| s.starts_with('Z'));
    let threads = status_field(&status, "Threads:")
        .and_then(|t| t.parse::<u32>().ok())
        .unwrap_or(1);
    !zombie || threads > 1
}

/// The syscall a thread is in now, as `/proc/PID/task/TID/syscall` shows it: its number
/// and first argument; None when it runs in user space, is not in a syscall, or is gone.
pub fn syscall_now(tgid: u32, tid: u32) -> Option<(u32, u64)> {
    let s = task_file(tgid, tid, "syscall")?;
    let mut fields = s.split_whitespace();
    let nr = fields.next()?.parse::<i64>().ok().filter(|&n| n >= 0)? as u32;
    let arg0 = fields
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    Some((nr, arg0))
}

/// A thread's time on a CPU (ns) and how many times it was switched in, from
/// `/proc/PID/task/TID/schedstat`: the count moving tells it woke up.
pub fn run_stats(tgid: u32, tid: u32) -> Option<(u64, u64)> {
    let s = task_file(tgid, tid, "schedstat")?;
    let mut fields = s.split_whitespace().map(|f| f.parse::<u64>().ok());
    let run_ns = fields.next()??;
    let switches = fields.nth(1)??;
    Some((run_ns, switches))
}

/// Scheduler state letter of a thread (`D`, `S`, `R`, `T`, ...).
pub fn state(tgid: u32, tid: u32) -> Option<String> {
    let stat = task_file(tgid, tid, "stat")?;
    // comm may hold spaces and parentheses: the state follows the last ')'.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

/// The kernel function a thread sleeps in, if any.
pub fn wchan(tgid: u32, tid: u32) -> Option<String> {
    task_file(tgid, tid, "wchan").filter(|w| !w.is_empty() && w != "0")
}

/// How a process that has exited ended, from its zombie's `/proc/PID/stat` (field 52,
/// the wait status), or None once its parent has reaped it.
pub fn exit_status(tgid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{tgid}/stat")).ok()?;
    let after = stat.rsplit(')').next()?;
    // Fields after the comm start at field 3 (state); exit_code is field 52.
    let code: i32 = after.split_whitespace().nth(52 - 3)?.parse().ok()?;
    Some(describe_wait_status(code))
}

/// A wait status as a person says it.
pub fn describe_wait_status(status: i32) -> String {
    let sig = status & 0x7f;
    if sig == 0 {
        format!("exited with status {}", (status >> 8) & 0xff)
    } else {
        let core = if status & 0x80 != 0 {
            " (core dumped)"
        } else {
            ""
        };
        format!("was killed by {}{core}", crate::incidents::signal_name(sig))
    }
}

/// The six arguments of the syscall a thread is blocked in (empty when running).
pub fn syscall_args(tgid: u32, tid: u32) -> Vec<String> {
    task_file(tgid, tid, "syscall")
        .map(|s| {
            s.split_whitespace()
                .skip(1)
                .take(6)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A thread's kernel stack (root only; empty otherwise).
pub fn kernel_stack(tgid: u32, tid: u32) -> Vec<String> {
    task_file(tgid, tid, "stack")
        .map(|s| s.lines().map(|l| l.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// What fd `fd` of process `tgid` refers to, or `None` if it is not open.
pub fn fd_node(tgid: u32, fd: u64) -> Option<FdNode> {
    let path = format!("/proc/{tgid}/fd/{fd}");
    // The link names a path for named FIFOs and devices, so the inode type (stat
    // through the link) decides; only anon inodes are told by their link text.
    let link = fs::read_link(&path).ok()?;
    if link.to_string_lossy().starts_with("anon_inode:") {
        return Some(FdNode::AnonInode);
    }
    let meta = fs::metadata(&path).ok()?;
    let ft = meta.file_type();
    Some(if ft.is_fifo() {
        FdNode::Fifo
    } else if ft.is_socket() {
        FdNode::Socket
    } else if ft.is_char_device() {
        let rdev = meta.rdev();
        FdNode::CharDevice {
            major: libc::major(rdev),
            minor: libc::minor(rdev),
        }
    } else {
        FdNode::Other
    })
}

/// Whether a read of fd `fd` of process `tgid` may wait for ever; `None` if not open.
pub fn fd_kind(tgid: u32, fd: u64) -> Option<FdKind> {
    fd_node(tgid, fd).map(kind_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread of this process waiting on a channel until dropped.
    struct Parked {
        tid: u32,
        done: Option<std::sync::mpsc::Sender<()>>,
        handle: Option<std::thread::JoinHandle<()>>,
    }

    impl Parked {
        fn new() -> Self {
            let (tx, rx) = std::sync::mpsc::channel();
            let (done, done_rx) = std::sync::mpsc::channel::<()>();
            let handle = std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() } as u32).unwrap();
                let _ = done_rx.recv();
            });
            Parked {
                tid: rx.recv().unwrap(),
                done: Some(done),
                handle: Some(handle),
            }
        }
    }

    impl Drop for Parked {
        fn drop(&mut self) {
            drop(self.done.take());
            let _ = self.handle.take().map(|h| h.join());
        }
    }

    #[test]
    fn this_process_is_a_process_and_its_threads_are_listed() {
        let me = std::process::id();
        // SAFETY: getppid has no preconditions.
        check_process(unsafe { libc::getppid() } as u32).unwrap();
        assert!(matches!(check_process(me), Err(PidError::Itself)));
        assert!(threads(me).contains(&me));
        assert!(comm(me, me).is_some());
    }

    #[test]
    fn a_thread_id_is_refused_with_its_process() {
        let me = std::process::id();
        let parked = Parked::new();
        let tid = parked.tid;
        let err = check_process(tid).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{tid} is a thread of process {me}; give the process id")
        );
    }

    #[test]
    fn a_sleeping_thread_shows_state_and_syscall() {
        let me = std::process::id();
        let parked = Parked::new();
        let tid = parked.tid;
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(state(me, tid).as_deref(), Some("S"));
        assert_eq!(syscall_args(me, tid).len(), 6);
    }

    #[test]
    fn wait_statuses_are_described() {
        assert_eq!(describe_wait_status(3 << 8), "exited with status 3");
        assert_eq!(
            describe_wait_status(11 | 0x80),
            "was killed by SIGSEGV (core dumped)"
        );
        assert_eq!(describe_wait_status(9), "was killed by SIGKILL");
    }

    #[test]
    fn a_missing_pid_is_named() {
        // Beyond pid_max (at most 2^22), so never a live process.
        let err = check_process(99_999_999).unwrap_err();
        assert!(matches!(err, PidError::NoSuchProcess(99_999_999)), "{err}");
        assert_eq!(err.to_string(), "no such process");
    }

    #[test]
    fn fd_kinds_of_our_own_fds() {
        let me = std::process::id();
        let (r, _w) = std::io::pipe().unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(fd_kind(me, r.as_raw_fd() as u64), Some(FdKind::Stream));
        let f = std::fs::File::open("/dev/zero").unwrap();
        assert_eq!(fd_kind(me, f.as_raw_fd() as u64), Some(FdKind::Other));
        let dir = std::env::temp_dir().join(format!("wd-fifo-{me}"));
        let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dir)
            .unwrap();
        assert_eq!(fd_node(me, fifo.as_raw_fd() as u64), Some(FdNode::Fifo));
        assert_eq!(fd_kind(me, fifo.as_raw_fd() as u64), Some(FdKind::Stream));
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(fd_kind(me, 999_999), None);
    }
}
