//! Running an operator's program (the exec hook, the state hook): in a process group of
//! its own, at normal priority even when the daemon runs SCHED_FIFO, bounded in time.
use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

/// Most of a failing hook's stderr kept for the log.
const STDERR_MAX: usize = 4096;

/// Run `program` with `args` and `body` on its stdin, and wait for it, at most `timeout`. It runs in a process group of its
/// own, and at the timeout the whole group is killed: a hook's children (a `curl` it
/// started, a `sleep` in a pipeline) go with it. Its stdin is written and its stderr read
/// on threads of their own, so a hook that never reads its input, or children that keep
/// its stderr open, cannot stretch the wait past the timeout.
pub fn run(
    program: &Path,
    args: &[String],
    body: &[u8],
    envs: &[(&str, String)],
    timeout: Duration,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(program);
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only makes a
    // syscall: a hook runs at normal priority even when the daemon runs SCHED_FIFO.
    unsafe {
        cmd.pre_exec(crate::daemon::realtime::normal_priority);
    }
    let mut child = cmd
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let group = child.id() as i32;
    if let Some(mut stdin) = child.stdin.take() {
        let body = body.to_vec();
        // A hook that does not read its input is its own business.
        thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
    }
    // Read as it comes, so what a failing hook wrote is there even while a child of
    // its keeps the pipe open.
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    if let Some(mut pipe) = child.stderr.take() {
        let stderr = stderr.clone();
        thread::spawn(move || {
            let _eof = eof_tx;
            use std::io::Read as _;
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let mut kept = stderr.lock().unwrap_or_else(|e| e.into_inner());
                let room = STDERR_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        });
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                // Its stderr to the end, unless a child of its holds it open: then what
                // came within a second (or by the deadline).
                let bound = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1));
                let _ = eof_rx.recv_timeout(bound);
                let err = stderr.lock().unwrap_or_else(|e| e.into_inner());
                let err = String::from_utf8_lossy(&err);
                return Err(format!("exited with {status}: {}", err.trim()));
            }
            None if Instant::now() >= deadline => {
                // SAFETY: kill(2) of the hook's own process group (its pgid is its pid).
                unsafe { libc::kill(-group, libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!(
                    "killed after the {:?} timeout, with its process group",
                    timeout
                ));
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    }
}
