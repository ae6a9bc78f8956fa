//! `cargo xtask run` with no arguments: a demo a newcomer can watch. A small service
//! runs; the daemon monitors it; a heartbeat listener shows the beats; after a few
//! seconds one of the service's threads gets stuck in the kernel, and the heartbeat
//! stops. Everything stays on `lo` with TTL 1.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::Context as _;

const GROUP: &str = "239.255.77.1:7999";
const SOCKET: &str = "/tmp/watchdog-demo.sock";
/// The demo's incidents stay out of the system store.
const STORE: &str = "/tmp/watchdog-demo/incidents.db";

fn say(s: &str) {
    println!("\n\x1b[1m[demo] {s}\x1b[0m");
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; SIGTERM lets the daemon detach cleanly.
        unsafe { kill(self.0.id() as i32, 15) };
        let _ = self.0.wait();
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn wdctl(bin: &Path, cmd: &str) {
    let _ = Command::new(bin.join("wdctl"))
        .args(["--socket", SOCKET, cmd])
        .status();
}

pub fn run(bin: &Path) -> anyhow::Result<()> {
    let mut service = Command::new(bin.join("wd-workload"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the demo service")?;
    let mut to_service = service.stdin.take().unwrap();
    let mut from_service = BufReader::new(service.stdout.take().unwrap());
    let service = Reaped(service);
    let mut ready = String::new();
    from_service.read_line(&mut ready)?;
    let pid = ready
        .trim()
        .strip_prefix("READY pid=")
        .context("service did not start")?
        .to_owned();
    say(&format!(
        "a service is running as pid {pid}; its threads make ordinary syscalls"
    ));
    writeln!(to_service, "work")?;

    say(&format!("listening for heartbeats on {GROUP} (lo)"));
    let _listener = Reaped(
        Command::new(bin.join("wdctl"))
            .args(["heartbeat", "listen", GROUP, "--interface", "lo"])
            .spawn()?,
    );
    say(&format!(
        "starting the watchdog: budget 1s, heartbeat every 500ms, monitoring pid {pid}"
    ));
    let _daemon = Reaped(
        Command::new(bin.join("watchdog"))
            .args(["--pid", &pid, "--budget", "1s", "--interval", "500ms"])
            .args(["--heartbeat", GROUP, "--interface", "lo", "--ttl", "1"])
            .args([
                "--socket",
                SOCKET,
                "--node-id",
                "demo-node",
                "--store",
                STORE,
            ])
            .spawn()?,
    );
    thread::sleep(Duration::from_secs(1));
    say(
        "the service starts threads that wait for work: epoll_wait, futex, accept, poll, a pipe read",
    );
    writeln!(to_service, "idle")?;
    thread::sleep(Duration::from_secs(3));
    say(
        "wdctl threads: they have waited past the 1s budget, and are healthy however long they wait",
    );
    wdctl(bin, "threads");

    say(
        "now one thread calls vfork() and its child sleeps: the parent is stuck in the kernel (D state)",
    );
    writeln!(to_service, "stall-vfork 10000")?;
    thread::sleep(Duration::from_secs(3));
    say("wdctl threads: the stuck thread overran its budget");
    wdctl(bin, "threads");
    say("wdctl status: the heartbeat has stopped, so a peer would take over");
    wdctl(bin, "status");
    thread::sleep(Duration::from_secs(2));
    say("done: the listener above saw the beats stop (SILENT). Stopping everything.");
    drop(service);
    Ok(())
}
