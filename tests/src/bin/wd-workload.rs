//! A small service that the end-to-end tests and the demo monitor and break on command.
//!
//! It prints `READY pid=N`, then reads commands from stdin, one per line:
//! - `stall-vfork MS`: a thread named `stuck` calls vfork(); the child sleeps MS ms
//!   before exiting, so the parent sits in uninterruptible sleep inside vfork. Prints
//!   `STALL tid=T at_ns=N` (CLOCK_MONOTONIC just before the syscall).
//! - `idle`: threads park in epoll_wait, nanosleep, a condvar, accept, a pipe read and
//!   poll. Prints `IDLE kind=K tid=T` for each.
//! - `kmsg TEXT`: a thread named `reporter` writes TEXT to /dev/kmsg, prints
//!   `KMSG tid=T at_ns=N`, then sleeps.
//! - `work`: a thread named `worker` makes short syscalls in a loop (the demo's
//!   "service doing its job").
//! - `alloc MB`: a thread named `hog` allocates and touches MB MiB (to meet the OOM
//!   killer inside a memory cgroup).
//! - `spin-read`: a thread named `spinner` reads 2 GiB from /dev/zero in one read(),
//!   a long syscall on a CPU. Prints `SPIN tid=T at_ns=N`.
//! - `exit N`: the process exits with status N.
//! - `loop N`: the main thread makes N getppid() syscalls in a tight loop and prints
//!   `LOOP ns=X` (the mean time per syscall, in ns). For the benchmark.
//! - `threads N`: N more threads park, each in a read of a pipe. Prints `THREADS n=N`.
//! - `rate R`: a thread named `busy` makes R getppid() syscalls a second, paced each
//!   millisecond. Prints `RATE tid=T`.
//! - `forks N`: a thread named `forker` forks N children one after another, each
//!   exiting at once, and reaps them. Prints `FORKS n=N`.
//! - `segv`: a thread named `crasher` prints `SEGV tid=T` and writes through a null
//!   pointer: the kernel kills the process with SIGSEGV.
//! - `udp-beat MS DEST...`: a thread named `beat` (the service's own heartbeat) sends a
//!   datagram `beat PID SEQ` to each DEST every MS ms. DEST is `ADDR:PORT` (`[V6]:PORT`),
//!   or `GROUP:PORT%IFADDR` for IPv4 multicast out of the interface with that address
//!   (TTL 1). Prints `BEAT tid=T`.
//! - `udp-loop N ADDR:PORT`: the main thread sends N datagrams to ADDR:PORT in a tight
//!   loop and prints `UDPLOOP ns=X` (the mean time per send). For the benchmark.
//! - `tcp-beat MS ADDR:PORT`: a thread named `tcpbeat` connects and writes a line
//!   `beat PID SEQ` every MS ms, reconnecting when the connection fails. Prints
//!   `TCPBEAT tid=T`.
//! - `pingpong N`: two threads on one CPU pass a byte back and forth over two pipes N
//!   times (two context switches and four syscalls a round trip). Prints
//!   `PINGPONG ns=X` (the mean time per round trip). For the benchmark.
//! - `churn WAVES THREADS N SYSCALL FORK`: WAVES waves of THREADS short-lived threads
//!   named `churn`; each prints `CHURN tid=T`, sleeps 20 ms (clock_nanosleep), makes N
//!   pairs of syscalls (SYSCALL, `getppid` or `getuid`, then sched_yield), sleeps 20 ms
//!   again and exits. With FORK 1, each wave also forks a child process that makes N
//!   getuid() calls and exits. Prints `CHURNED` when every wave is done.
//! - `exec-thread`: a new thread (not the leader) execs this program again: the kernel
//!   gives it the leader's pid, and the program starts over (`READY`). Prints
//!   `EXEC tid=T` first.
//!
//! The main thread waits in a read of stdin (a pipe: idle, not stuck).
use std::{
    io::{BufRead, Write},
    sync::{Condvar, Mutex},
    thread,
    time::Duration,
};

use watchdog::kernel::clock::monotonic_ns;

static OUT: Mutex<()> = Mutex::new(());

fn say(line: &str) {
    let _guard = OUT.lock().unwrap();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn thread");
}

/// vfork(); the child sleeps for `ts` and exits, touching no stack (it shares ours).
/// Returns the child's pid (or -errno) in the parent, once the child has exited.
#[cfg(target_arch = "x86_64")]
fn vfork_child_sleeps(ts: &libc::timespec) -> i64 {
    let ret: i64;
    // SAFETY: the child runs only these instructions: nanosleep(ts, NULL) then exit(0),
    // using registers only; the parent resumes after the child exits.
    unsafe {
        std::arch::asm!(
            "mov eax, 58",   // vfork
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, {ts}",
            "xor esi, esi",
            "mov eax, 35",   // nanosleep
            "syscall",
            "xor edi, edi",
            "mov eax, 60",   // exit
            "syscall",
            "2:",
            ts = in(reg) ts as *const libc::timespec,
            out("rax") ret,
            out("rcx") _,
            out("r11") _,
            out("rdi") _,
            out("rsi") _,
        );
    }
    ret
}

fn stall_vfork(ms: u64) {
    spawn("stuck", move || {
        let ts = libc::timespec {
            tv_sec: (ms / 1000) as i64,
            tv_nsec: ((ms % 1000) * 1_000_000) as i64,
        };
        say(&format!("STALL tid={} at_ns={}", tid(), monotonic_ns()));
        #[cfg(target_arch = "x86_64")]
        {
            let child = vfork_child_sleeps(&ts);
            if child > 0 {
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(child as i32, std::ptr::null_mut(), 0) };
            }
            say(&format!("UNSTALLED tid={}", tid()));
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = ts;
            say("ERROR stall-vfork needs x86_64 (no vfork syscall here)");
        }
    });
}

fn idle() {
    spawn("idle-epoll", || {
        // SAFETY: plain syscalls on an fd we own.
        unsafe {
            let ep = libc::epoll_create1(0);
            say(&format!("IDLE kind=epoll tid={}", tid()));
            let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
            libc::epoll_wait(ep, ev.as_mut_ptr(), 1, -1);
        }
    });
    spawn("idle-sleep", || {
        say(&format!("IDLE kind=nanosleep tid={}", tid()));
        thread::sleep(Duration::from_secs(24 * 3600));
    });
    spawn("idle-condvar", || {
        let pair = (Mutex::new(false), Condvar::new());
        say(&format!("IDLE kind=condvar tid={}", tid()));
        let mut done = pair.0.lock().unwrap();
        while !*done {
            done = pair.1.wait(done).unwrap();
        }
    });
    spawn("idle-accept", || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        say(&format!("IDLE kind=accept tid={}", tid()));
        let _ = l.accept();
    });
    let (reader, writer) = std::io::pipe().expect("pipe");
    // The writer stays open (leaked) so the read waits instead of seeing EOF.
    std::mem::forget(writer);
    let (poll_reader, poll_writer) = std::io::pipe().expect("pipe");
    std::mem::forget(poll_writer);
    spawn("idle-pipe", move || {
        use std::io::Read;
        say(&format!("IDLE kind=pipe-read tid={}", tid()));
        let mut r = reader;
        let _ = r.read(&mut [0u8; 1]);
    });
    spawn("idle-poll", move || {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: poll_reader.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        say(&format!("IDLE kind=poll tid={}", tid()));
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, -1) };
    });
}

fn kmsg(text: String) {
    spawn("reporter", move || {
        let line = format!("{text}\n");
        let at = monotonic_ns();
        let res = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .and_then(|mut f| f.write_all(line.as_bytes()));
        match res {
            Ok(()) => say(&format!("KMSG tid={} at_ns={at}", tid())),
            Err(e) => say(&format!("ERROR kmsg: {e}")),
        }
        thread::sleep(Duration::from_secs(24 * 3600));
    });
}

fn work() {
    spawn("worker", || {
        say(&format!("WORK tid={}", tid()));
        loop {
            // Short syscalls, like a service answering requests.
            let _ = std::fs::metadata("/proc/self");
            thread::sleep(Duration::from_millis(50));
        }
    });
}

fn alloc(mb: usize) {
    spawn("hog", move || {
        say(&format!("ALLOC tid={} mb={mb}", tid()));
        let mut chunks = Vec::new();
        for _ in 0..mb {
            // Touch every page so the memory is really charged.
            chunks.push(vec![1u8; 1 << 20]);
        }
        say(&format!("ALLOCATED tid={} mb={}", tid(), chunks.len()));
        thread::sleep(Duration::from_secs(24 * 3600));
    });
}

fn spin_read() {
    spawn("spinner", || {
        const LEN: usize = 2 << 30;
        // SAFETY: an anonymous private mapping, unmapped below.
        let buf = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(buf, libc::MAP_FAILED, "mmap 2 GiB");
        let zero = std::fs::File::open("/dev/zero").expect("open /dev/zero");
        use std::os::fd::AsRawFd;
        say(&format!("SPIN tid={} at_ns={}", tid(), monotonic_ns()));
        // SAFETY: buf is LEN writable bytes.
        let n = unsafe { libc::read(zero.as_raw_fd(), buf, LEN) };
        say(&format!("SPUN tid={} bytes={n}", tid()));
        // SAFETY: our mapping.
        unsafe { libc::munmap(buf, LEN) };
    });
}

fn forks(n: u32) {
    spawn("forker", move || {
        for _ in 0..n {
            // SAFETY: the child only calls _exit.
            match unsafe { libc::fork() } {
                0 => unsafe { libc::_exit(0) },
                pid if pid > 0 => {
                    let mut status = 0;
                    // SAFETY: reaping our own child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                }
                _ => break,
            }
        }
        say(&format!("FORKS n={n}"));
    });
}

fn segv() {
    spawn("crasher", || {
        say(&format!("SEGV tid={} at_ns={}", tid(), monotonic_ns()));
        // SAFETY: deliberately not: this is the crash the test wants.
        unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1) };
    });
}

fn getppid_loop(n: u64) {
    let start = monotonic_ns();
    for _ in 0..n {
        // SAFETY: getppid has no arguments and no effects. The raw syscall, so that
        // no libc wrapper caches it.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let ns = (monotonic_ns() - start) as f64 / n.max(1) as f64;
    say(&format!("LOOP ns={ns:.2}"));
}

fn udp_loop(args: &str) {
    let mut words = args.split_whitespace();
    let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(100_000);
    let Some((sock, addr)) = words.next().and_then(beat_socket) else {
        say("ERROR udp-loop: give N ADDR:PORT");
        return;
    };
    let start = monotonic_ns();
    for _ in 0..n {
        let _ = sock.send_to(b"bench", addr);
    }
    let ns = (monotonic_ns() - start) as f64 / n.max(1) as f64;
    say(&format!("UDPLOOP ns={ns:.2}"));
}

fn park_threads(n: usize) {
    let mut fds = [0; 2];
    // SAFETY: two ints for pipe().
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let reader = fds[0];
    for _ in 0..n {
        spawn("parked", move || {
            let mut b = [0u8; 1];
            // SAFETY: one byte into a valid buffer; nothing is ever written.
            unsafe { libc::read(reader, b.as_mut_ptr().cast(), 1) };
        });
    }
    say(&format!("THREADS n={n}"));
}

fn rate(per_second: u64) {
    spawn("busy", move || {
        say(&format!("RATE tid={}", tid()));
        let per_ms = (per_second / 1000).max(1);
        let mut next = monotonic_ns();
        loop {
            for _ in 0..per_ms {
                // SAFETY: as in getppid_loop.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            next += 1_000_000;
            let now = monotonic_ns();
            if next > now {
                thread::sleep(Duration::from_nanos(next - now));
            }
        }
    });
}

/// A UDP socket that sends to `dest` (see `udp-beat`).
fn beat_socket(dest: &str) -> Option<(std::net::UdpSocket, std::net::SocketAddr)> {
    let (addr, ifaddr) = match dest.split_once('%') {
        Some((a, i)) => (a, Some(i)),
        None => (dest, None),
    };
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    if let (std::net::SocketAddr::V4(group), Some(ifaddr)) = (addr, ifaddr) {
        let ifaddr: std::net::Ipv4Addr = ifaddr.parse().ok()?;
        sock.set_multicast_ttl_v4(1).ok()?;
        let ifaddr = libc::in_addr {
            s_addr: u32::from(ifaddr).to_be(),
        };
        // SAFETY: setsockopt with an in_addr of its size on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&ifaddr as *const libc::in_addr).cast(),
                size_of::<libc::in_addr>() as u32,
            )
        };
        if rc != 0 || !group.ip().is_multicast() {
            return None;
        }
    }
    Some((sock, addr))
}

fn udp_beat(args: &str) {
    let mut words = args.split_whitespace();
    let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(20);
    let dests: Vec<String> = words.map(str::to_owned).collect();
    spawn("beat", move || {
        let socks: Option<Vec<_>> = dests.iter().map(|d| beat_socket(d)).collect();
        let Some(socks) = socks else {
            say(&format!("ERROR udp-beat: bad destination in {dests:?}"));
            return;
        };
        say(&format!("BEAT tid={}", tid()));
        let pid = std::process::id();
        for seq in 0u64.. {
            for (sock, addr) in &socks {
                let _ = sock.send_to(format!("beat {pid} {seq}").as_bytes(), addr);
            }
            thread::sleep(Duration::from_millis(ms));
        }
    });
}

fn tcp_beat(args: &str) {
    let mut words = args.split_whitespace();
    let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(20);
    let Some(addr) = words
        .next()
        .and_then(|w| w.parse::<std::net::SocketAddr>().ok())
    else {
        say("ERROR tcp-beat: give MS ADDR:PORT");
        return;
    };
    spawn("tcpbeat", move || {
        say(&format!("TCPBEAT tid={}", tid()));
        let pid = std::process::id();
        let mut conn: Option<std::net::TcpStream> = None;
        for seq in 0u64.. {
            if conn.is_none() {
                conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok();
                if let Some(c) = &conn {
                    let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
                }
            }
            if let Some(c) = conn.as_mut()
                && c.write_all(format!("beat {pid} {seq}\n").as_bytes())
                    .is_err()
            {
                conn = None;
            }
            thread::sleep(Duration::from_millis(ms));
        }
    });
}

/// Pin the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it; 0 is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pingpong(n: u64) {
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        fds
    };
    let (ping, pong) = (pipe(), pipe());
    // The last CPU: the same one for both threads, so every hand-over is a switch.
    // SAFETY: sysconf has no preconditions.
    let cpu = (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) - 1) as usize;
    let byte = |fd: i32, write: bool| {
        let mut b = [0u8; 1];
        // SAFETY: a one-byte buffer on our stack, an fd of ours.
        let r = unsafe {
            if write {
                libc::write(fd, b.as_ptr().cast(), 1)
            } else {
                libc::read(fd, b.as_mut_ptr().cast(), 1)
            }
        };
        assert_eq!(r, 1, "pingpong pipe");
    };
    let echo = thread::spawn(move || {
        pin_to(cpu);
        for _ in 0..n {
            byte(ping[0], false);
            byte(pong[1], true);
        }
    });
    pin_to(cpu);
    let start = monotonic_ns();
    for _ in 0..n {
        byte(ping[1], true);
        byte(pong[0], false);
    }
    let ns = (monotonic_ns() - start) as f64 / n.max(1) as f64;
    echo.join().unwrap();
    for fd in ping.into_iter().chain(pong) {
        // SAFETY: our own descriptors, closed once.
        unsafe { libc::close(fd) };
    }
    say(&format!("PINGPONG ns={ns:.2}"));
}

/// clock_nanosleep for `ms`, the raw syscall (the tests look for its number).
fn sleep_raw(ms: i64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ms * 1_000_000,
    };
    // SAFETY: a valid timespec; no remainder wanted.
    unsafe {
        libc::syscall(
            libc::SYS_clock_nanosleep,
            libc::CLOCK_MONOTONIC,
            0,
            &ts as *const libc::timespec,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
}

fn churn(args: &str) {
    let words: Vec<&str> = args.split_whitespace().collect();
    let num = |i: usize, default: u64| words.get(i).and_then(|w| w.parse().ok()).unwrap_or(default);
    let (waves, threads, n) = (num(0, 10), num(1, 4), num(2, 1000));
    let marker = match words.get(3).copied().unwrap_or("getppid") {
        "getuid" => libc::SYS_getuid,
        _ => libc::SYS_getppid,
    };
    let fork = num(4, 0) == 1;
    spawn("churner", move || {
        for _ in 0..waves {
            let wave: Vec<_> = (0..threads)
                .map(|_| {
                    thread::Builder::new()
                        .name("churn".into())
                        .spawn(move || {
                            say(&format!("CHURN tid={}", tid()));
                            sleep_raw(20);
                            for _ in 0..n {
                                // SAFETY: no arguments, no effects.
                                unsafe {
                                    libc::syscall(marker);
                                    libc::syscall(libc::SYS_sched_yield);
                                }
                            }
                            sleep_raw(20);
                        })
                        .expect("spawn churn thread")
                })
                .collect();
            if fork {
                // SAFETY: the child makes raw syscalls only, then _exit: nothing that
                // could need a lock another thread held at fork.
                unsafe {
                    let child = libc::fork();
                    if child == 0 {
                        for _ in 0..n {
                            libc::syscall(libc::SYS_getuid);
                        }
                        libc::_exit(0);
                    }
                    if child > 0 {
                        libc::waitpid(child, std::ptr::null_mut(), 0);
                    }
                }
            }
            for t in wave {
                t.join().unwrap();
            }
        }
        say("CHURNED");
    });
}

fn exec_thread() {
    spawn("execer", || {
        say(&format!("EXEC tid={}", tid()));
        let err = std::os::unix::process::CommandExt::exec(&mut std::process::Command::new(
            "/proc/self/exe",
        ));
        say(&format!("ERROR exec-thread: {err}"));
    });
}

fn main() {
    say(&format!("READY pid={}", std::process::id()));
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let (cmd, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd {
            "stall-vfork" => stall_vfork(rest.trim().parse().unwrap_or(3000)),
            "idle" => idle(),
            "kmsg" => kmsg(rest.to_owned()),
            "work" => work(),
            "segv" => segv(),
            "forks" => forks(rest.trim().parse().unwrap_or(1)),
            "spin-read" => spin_read(),
            "exit" => std::process::exit(rest.trim().parse().unwrap_or(0)),
            "alloc" => alloc(rest.trim().parse().unwrap_or(256)),
            "loop" => getppid_loop(rest.trim().parse().unwrap_or(1_000_000)),
            "threads" => park_threads(rest.trim().parse().unwrap_or(1000)),
            "rate" => rate(rest.trim().parse().unwrap_or(1_000_000)),
            "udp-beat" => udp_beat(rest),
            "udp-loop" => udp_loop(rest),
            "tcp-beat" => tcp_beat(rest),
            "pingpong" => pingpong(rest.trim().parse().unwrap_or(100_000)),
            "churn" => churn(rest),
            "exec-thread" => exec_thread(),
            "" => {}
            other => say(&format!("ERROR unknown command {other}")),
        }
    }
}
