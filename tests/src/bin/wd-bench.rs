//! The kernel-path benchmark, run as root by `cargo xtask bench` (results: BENCHMARKS.md).
//!
//! - Syscall cost: one getppid() loop, measured with nothing attached (`base`), with
//!   empty programs on sys_enter/sys_exit (`floor`), with the daemon monitoring another
//!   process (`unmonitored`) and this one (`monitored`), and with the bpftrace one-liner
//!   a user would write instead. Modes are interleaved within each round; the table
//!   gives medians over the rounds.
//! - Context switches: a pipe ping-pong between two threads on one CPU, against the
//!   same floors, and each program's own run time from the kernel's BPF statistics.
//! - Detection latency: a monitored thread enters uninterruptible sleep (vfork) at a
//!   known time; from the end of its budget until the heartbeat stopped, and until the
//!   exec hook (the alert) ran.
//! - Oops latency: a monitored thread writes an oops line to /dev/kmsg; until the
//!   heartbeat stopped.
//! - Footprint: the daemon's CPU and memory while monitoring 1,000 idle threads, and
//!   while a monitored thread makes 1 M syscalls a second.
//! - Printk flood: 10,000 kernel lines a second for 10 s; lines read, lines lost.
//! - Failover: a real keepalived pair (two network namespaces, VRRPv3 at 0.1 s and 1 s
//!   adverts); from a monitored thread's stall to the virtual address on the peer, against
//!   keepalived's own hand-over (node A's keepalived stopped with SIGTERM); and a real
//!   single-node Pacemaker told by the state hook: from the stall until the resource
//!   is stopped, against the node health set red by hand.
//! - Gate: a service in a network namespace sends its own UDP heartbeat to a peer in
//!   another every 20 ms; from its main thread's stall until the peer heard the last of
//!   it, against the service killed (SIGKILL); and what the gate costs a datagram sent
//!   (loopback, a send loop): no gate attached, a gate on another port, a gate on this
//!   port (open).
//!
//! `wd-bench [--quick] [SECTION...]`: sections syscalls, switches, filter, detection, oops,
//! footprint, flood, failover, gate (all by default). WD_BENCH_ROUNDS overrides the
//! rounds; WD_BENCH_MODES=base,floor,... runs some syscall modes only (diagnostics).
//!
//! Everything goes to loopback; kernel lines written start with `watchdog-bench:`.
//! When run as the daemon's exec hook (WATCHDOG_INCIDENT_ID is set), it only notes the
//! time it was started in the file named by WD_BENCH_STAMPS and exits.
use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write as _},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use watchdog::kernel::{
    clock::monotonic_ns,
    probes::{Floor, Probes},
};
use watchdog_tests::*;

/// Settings: the full run by default, `--quick` for a smoke run of the benchmark itself.
struct Plan {
    rounds: usize,
    syscalls: u64,
    detection_trials: usize,
    oops_trials: usize,
    footprint_secs: u64,
    flood_secs: u64,
    failover_trials: usize,
}

const FULL: Plan = Plan {
    rounds: 7,
    syscalls: 3_000_000,
    detection_trials: 50,
    oops_trials: 20,
    footprint_secs: 20,
    flood_secs: 10,
    failover_trials: 20,
};

const QUICK: Plan = Plan {
    rounds: 1,
    syscalls: 200_000,
    detection_trials: 3,
    oops_trials: 2,
    footprint_secs: 1,
    flood_secs: 1,
    failover_trials: 2,
};

fn main() {
    if std::env::var_os("WATCHDOG_INCIDENT_ID").is_some() {
        return stamp();
    }
    require_root();
    let mut plan = if std::env::args().any(|a| a == "--quick") {
        QUICK
    } else {
        FULL
    };
    if let Some(rounds) = std::env::var("WD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        plan.rounds = rounds;
    }
    // Sections named on the command line, or all of them.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let sections: [(&str, Section); 9] = [
        ("syscalls", syscall_cost),
        ("switches", switch_cost),
        ("filter", filter_cost),
        ("detection", detection_latency),
        ("oops", oops_latency),
        ("footprint", footprint),
        ("flood", printk_flood),
        ("failover", failover),
        ("gate", gate),
    ];
    if let Some(bad) = named.iter().find(|n| !sections.iter().any(|(s, _)| s == n)) {
        eprintln!(
            "wd-bench: unknown section {bad:?} (syscalls, switches, detection, oops, footprint, flood, failover, gate)"
        );
        std::process::exit(2);
    }
    let mut out = String::new();
    for (name, run) in sections {
        if named.is_empty() || named.iter().any(|n| n == name) {
            run(&plan, &mut out);
        }
    }
    println!("{out}");
}

/// One part of the benchmark: runs by the plan, appends its Markdown.
type Section = fn(&Plan, &mut String);

/// Exec-hook mode: note when this alert was delivered.
fn stamp() {
    let Some(path) = std::env::var_os("WD_BENCH_STAMPS") else {
        return;
    };
    let now = monotonic_ns();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("stamp file");
    let _ = writeln!(f, "{now}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The value at quantile `q` (nearest rank) of `v`.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Pin process (its main thread) `pid` to CPU `cpu`, so rounds compare like with like.
fn pin(pid: u32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn start_daemon(pid: u32, budget: &'static str, interval: &'static str) -> (Recorder, Daemon) {
    let group = unique_group();
    let rec = Recorder::start(group);
    let daemon = Daemon::start(DaemonOpts::new(pid, budget, interval), group, &rec);
    (rec, daemon)
}

/// Pin every thread of `pid` to CPU 0, away from the loop on CPU 1.
fn pin_all(pid: u32) {
    for tid in task_ids(pid) {
        pin(tid, 0);
    }
}

// ---------------------------------------------------------------------------------
// Syscall cost

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Base,
    Floor,
    FloorBtf,
    Unmonitored,
    Monitored,
    Bpftrace,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Base => "base: nothing attached",
            Mode::Floor => "floor: empty sys_enter/sys_exit programs",
            Mode::FloorBtf => "floor, as BTF tracepoints (the kind the probes are)",
            Mode::Unmonitored => "unmonitored: daemon monitoring another process",
            Mode::Monitored => "monitored: daemon monitoring this process",
            Mode::Bpftrace => "bpftrace one-liner (pid filter, start map, histogram)",
        }
    }

    /// Its name in WD_BENCH_MODES.
    fn key(self) -> &'static str {
        match self {
            Mode::Base => "base",
            Mode::Floor => "floor",
            Mode::FloorBtf => "floor-btf",
            Mode::Unmonitored => "unmonitored",
            Mode::Monitored => "monitored",
            Mode::Bpftrace => "bpftrace",
        }
    }
}

/// What a mode keeps attached while the loop runs; dropped after.
enum Attached {
    Nothing,
    Floor {
        _floor: Floor,
    },
    /// The daemon, its heartbeat recorder, and the process it monitors if not the loop's.
    Daemon {
        daemon: Daemon,
        _rec: Recorder,
        _other: Option<Workload>,
    },
    Bpftrace(Child),
}

impl Drop for Attached {
    fn drop(&mut self) {
        match self {
            Attached::Bpftrace(child) => {
                // SAFETY: signalling our own child; SIGINT makes bpftrace print and exit.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                let _ = child.wait();
            }
            Attached::Daemon { daemon, .. } => {
                daemon.stop();
            }
            _ => {}
        }
    }
}

fn bpftrace_installed() -> bool {
    Command::new("bpftrace")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The one-liner a user would write: start time per thread on entry, a histogram of
/// durations on exit, for one process.
fn bpftrace_program(pid: u32) -> String {
    format!(
        "tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @start[tid] = nsecs; }} \
         tracepoint:raw_syscalls:sys_exit /pid == {pid} && @start[tid]/ \
         {{ @ns = hist(nsecs - @start[tid]); delete(@start[tid]); }}"
    )
}

fn attach(mode: Mode, loop_pid: u32) -> Attached {
    match mode {
        Mode::Base => Attached::Nothing,
        Mode::Floor => Attached::Floor {
            _floor: Floor::attach().expect("attach the floor programs"),
        },
        Mode::FloorBtf => Attached::Floor {
            _floor: Floor::attach_btf().expect("attach the BTF floor programs"),
        },
        Mode::Unmonitored => {
            let other = Workload::spawn();
            let (rec, daemon) = start_daemon(other.pid, "2s", "1s");
            pin_all(daemon.pid());
            Attached::Daemon {
                daemon,
                _rec: rec,
                _other: Some(other),
            }
        }
        Mode::Monitored => {
            let (rec, daemon) = start_daemon(loop_pid, "2s", "1s");
            pin_all(daemon.pid());
            Attached::Daemon {
                daemon,
                _rec: rec,
                _other: None,
            }
        }
        Mode::Bpftrace => {
            let mut child = Command::new("bpftrace")
                .arg("-e")
                .arg(bpftrace_program(loop_pid))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn bpftrace");
            let stdout = child.stdout.take().unwrap();
            let mut lines = BufReader::new(stdout).lines();
            // "Attaching 2 probes..." comes just before it attaches.
            let attaching = lines.next().and_then(Result::ok).unwrap_or_default();
            assert!(attaching.contains("Attaching"), "bpftrace: {attaching}");
            thread::spawn(move || for _ in lines {});
            thread::sleep(Duration::from_millis(1500));
            pin_all(child.id());
            Attached::Bpftrace(child)
        }
    }
}

fn run_loop(work: &mut Workload, n: u64) -> f64 {
    timed_loop(work, &format!("loop {n}"), "LOOP")
}

/// Send a workload loop command; the mean ns per iteration its `PREFIX ns=X` line says.
fn timed_loop(work: &mut Workload, command: &str, prefix: &str) -> f64 {
    work.send(command);
    let line = work.expect(prefix, Duration::from_secs(120));
    line.split_once("ns=")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("bad {prefix} line {line:?}"))
}

/// Runs per mode and round; the fastest counts.
const RUNS: usize = 5;

/// The fastest of `RUNS` runs: noise on a VM only adds time, so the best run is the cost.
fn best_of_runs(mut run: impl FnMut() -> f64) -> f64 {
    (0..RUNS).map(|_| run()).fold(f64::INFINITY, f64::min)
}

/// A thread spinning on CPU 0 until dropped. The loop on CPU 1 runs measurably faster
/// while CPU 0 is idle than while it works (a vCPU's sibling state on this VM), and the
/// modes keep CPU 0 busy to different degrees (the daemon scans a monitored loop's
/// record, bpftrace's maps): with CPU 0 always busy, every mode runs beside the same.
struct Spinner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Spinner {
    fn on_cpu0() -> Spinner {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            pin(unsafe { libc::gettid() } as u32, 0);
            while !flag.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Spinner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn syscall_cost(plan: &Plan, out: &mut String) {
    let _busy = Spinner::on_cpu0();
    let mut modes = vec![
        Mode::Base,
        Mode::Floor,
        Mode::FloorBtf,
        Mode::Unmonitored,
        Mode::Monitored,
    ];
    let bpftrace = bpftrace_installed();
    if bpftrace {
        modes.push(Mode::Bpftrace);
    }
    // WD_BENCH_MODES=base,floor,unmonitored (a diagnostic run of some modes; base first).
    if let Ok(only) = std::env::var("WD_BENCH_MODES") {
        modes.retain(|m| only.split(',').any(|n| n == m.key()));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..plan.rounds {
        // Rotate the order each round, so no mode always runs first or last.
        for k in 0..modes.len() {
            let i = (k + round) % modes.len();
            let mut work = Workload::spawn();
            pin(work.pid, 1);
            let attached = attach(modes[i], work.pid);
            run_loop(&mut work, plan.syscalls / 10);
            let ns = best_of_runs(|| run_loop(&mut work, plan.syscalls / RUNS as u64));
            drop(attached);
            eprintln!("wd-bench: round {round} {}: {ns:.1} ns", modes[i].name());
            samples[i].push(ns);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let base = medians[0];
    let floor = medians[1] - base;
    let _ = writeln!(
        out,
        "## Syscall cost\n\ngetppid() in a tight loop on CPU 1 (the daemon and bpftrace on CPU 0, beside a thread that keeps CPU 0 busy in every mode), {} syscalls per mode and round, the best of {RUNS} runs; median of {} interleaved rounds.\n",
        plan.syscalls, plan.rounds
    );
    let _ = writeln!(
        out,
        "| mode | ns per syscall | added vs base | added vs floor |\n|---|---|---|---|"
    );
    for (m, ns) in modes.iter().zip(&medians) {
        let added = ns - base;
        let over_floor = if matches!(m, Mode::Base | Mode::Floor | Mode::FloorBtf) {
            "-".to_owned()
        } else {
            format!("{:+.1} ns", added - floor)
        };
        let _ = writeln!(
            out,
            "| {} | {ns:.1} | {added:+.1} ns | {over_floor} |",
            m.name()
        );
    }
    if !bpftrace {
        let _ = writeln!(out, "\nbpftrace is not installed: its row is missing.");
    } else if modes.contains(&Mode::Bpftrace) && modes.contains(&Mode::Monitored) {
        let at = |mode: Mode| medians[modes.iter().position(|m| *m == mode).unwrap()];
        let monitored = at(Mode::Monitored) - base;
        let bt = at(Mode::Bpftrace) - base;
        let _ = writeln!(
            out,
            "\nbpftrace's added cost is {:.1}x the monitored path's.",
            bt / monitored
        );
    }
    let _ = writeln!(out);
}

// ---------------------------------------------------------------------------------
// The unmonitored path, part by part

/// Each program's own time per run from the kernel's statistics while the getppid loop
/// runs (CPU 0 kept busy, as in the syscall section), for pairs of programs on
/// sys_enter and sys_exit: empty ones, the current-task cache alone, the daemon's probes
/// for a process it does not monitor and for one it does, and shapes to compare with
/// (bench-only programs of the object's `floor` module). The statistics add the same
/// clock reads to every run of every program, so the differences between the pairs are
/// what each part costs, without the wall clock's run-to-run spread.
fn filter_cost(plan: &Plan, out: &mut String) {
    let _busy = Spinner::on_cpu0();
    let pairs: [(&str, [&str; 2]); 6] = [
        ("empty programs (the floor)", ["floor_enter", "floor_exit"]),
        (
            "the current-task cache alone (the unmonitored path's first part before the stack test)",
            ["cache_enter", "cache_exit"],
        ),
        (
            "the daemon's probes, process not monitored (the stack test)",
            ["sys_enter", "sys_exit"],
        ),
        (
            "the daemon's probes, process monitored (the loop's own syscalls recorded)",
            ["sys_enter", "sys_exit"],
        ),
        (
            "an inlined current task: per-CPU load, dependent load, one bit test",
            ["inlined_enter", "inlined_exit"],
        ),
        (
            "the least a filter does: one bit test on a global",
            ["least_enter", "least_exit"],
        ),
    ];
    // Many short rounds: each round loads every pair afresh (so where the JIT puts the
    // code changes, and with it a few ns) and measures the floor in the same round, so
    // each pair is judged by its difference from the floor round by round.
    let rounds = plan.rounds * 3;
    let n = plan.syscalls / 10;
    // Per round, each pair's (sys_enter, sys_exit) ns per run.
    let mut per_round: Vec<Vec<Option<[f64; 2]>>> = Vec::new();
    for round in 0..rounds {
        let mut row = vec![None; pairs.len()];
        for k in 0..pairs.len() {
            let i = (k + round) % pairs.len();
            let mut work = Workload::spawn();
            pin(work.pid, 1);
            let names = pairs[i].1;
            let attached = match i {
                0 => Attached::Floor {
                    _floor: Floor::attach().expect("attach the floor programs"),
                },
                2 => attach(Mode::Unmonitored, work.pid),
                3 => attach(Mode::Monitored, work.pid),
                _ => Attached::Floor {
                    _floor: Floor::attach_pair(names[0], names[1]).expect("attach a bench pair"),
                },
            };
            run_loop(&mut work, n / 5);
            let stats = Probes::enable_run_stats().expect("enable BPF statistics");
            let before = Probes::loaded_program_stats(&names);
            run_loop(&mut work, n);
            let after = Probes::loaded_program_stats(&names);
            drop(stats);
            let per = |name: &str| {
                let find = |v: &[(String, u64, u64)]| {
                    v.iter()
                        .find(|(p, ..)| p == name)
                        .map(|(_, t, c)| (*t, *c))
                        .unwrap_or_default()
                };
                let ((t0, c0), (t1, c1)) = (find(&before), find(&after));
                (c1 > c0).then(|| (t1 - t0) as f64 / (c1 - c0) as f64)
            };
            if let (Some(e), Some(x)) = (per(names[0]), per(names[1])) {
                row[i] = Some([e, x]);
            }
            drop(attached);
            eprintln!("wd-bench: round {round} {}", pairs[i].0);
        }
        per_round.push(row);
    }
    let _ = writeln!(
        out,
        "## The unmonitored path, part by part\n\nEach program's own time per run from the kernel's BPF statistics (`run_time_ns / run_cnt`) during {n} getppid() calls on CPU 1 (CPU 0 kept busy), in {rounds} interleaved rounds; every round loads each pair afresh and measures the floor too. The statistics' own clock reads are in every figure alike; a pair's cost is its difference from the floor in the same round (median, and the middle half of the rounds).\n"
    );
    let _ = writeln!(
        out,
        "| programs | sys_enter ns/run | sys_exit ns/run | both, over the floor (median) | middle half of the rounds |\n|---|---|---|---|---|"
    );
    let mut over = Vec::new();
    for (i, (name, _)) in pairs.iter().enumerate() {
        let runs: Vec<[f64; 2]> = per_round.iter().filter_map(|row| row[i]).collect();
        let mut diffs: Vec<f64> = per_round
            .iter()
            .map(|row| (&row[i], &row[0]))
            .filter_map(|(p, f)| {
                Some(p.as_ref()?.iter().sum::<f64>() - f.as_ref()?.iter().sum::<f64>())
            })
            .collect();
        if runs.is_empty() || diffs.is_empty() {
            let _ = writeln!(out, "| {name} | - | - | - | - |");
            over.push(f64::NAN);
            continue;
        }
        let e = median(&mut runs.iter().map(|r| r[0]).collect::<Vec<_>>());
        let x = median(&mut runs.iter().map(|r| r[1]).collect::<Vec<_>>());
        let mid = median(&mut diffs);
        let (q1, q3) = (quantile(&mut diffs, 0.25), quantile(&mut diffs, 0.75));
        let _ = writeln!(
            out,
            "| {name} | {e:.1} | {x:.1} | {mid:+.1} ns | {q1:+.1} to {q3:+.1} |"
        );
        over.push(mid);
    }
    let _ = writeln!(
        out,
        "\nThe unmonitored path costs {:+.1} ns per syscall over the floor, the monitored path {:+.1} ns; the current-task cache, which the unmonitored path no longer reaches, {:+.1} ns by itself.\n",
        over[2], over[3], over[1],
    );
}

// ---------------------------------------------------------------------------------
// Context switches: a pipe ping-pong between two threads on one CPU

/// What runs while the ping-pong is timed.
#[derive(Clone, Copy, PartialEq)]
enum SwitchMode {
    Base,
    Floor,
    Unmonitored,
    Monitored,
}

impl SwitchMode {
    fn name(self) -> &'static str {
        match self {
            SwitchMode::Base => "base: nothing attached",
            SwitchMode::Floor => "floor: empty sched_switch, sys_enter, sys_exit programs",
            SwitchMode::Unmonitored => "unmonitored: daemon monitoring another process",
            SwitchMode::Monitored => "monitored: daemon monitoring the ping-pong",
        }
    }
}

/// The floor programs' names for each program of ours.
const SWITCH_PROGRAMS: [(&str, &str); 3] = [
    ("sched_switch", "floor_switch"),
    ("sys_enter", "floor_enter"),
    ("sys_exit", "floor_exit"),
];

/// ns per run of each program over one ping-pong of `n` round trips, with the
/// statistics on (they add clock reads of their own to every run: compare with the
/// floor measured the same way).
fn switch_run_stats(work: &mut Workload, n: u64, names: &[&str]) -> Vec<(String, f64)> {
    let before = Probes::loaded_program_stats(names);
    timed_loop(work, &format!("pingpong {n}"), "PINGPONG");
    let after = Probes::loaded_program_stats(names);
    after
        .iter()
        .filter_map(|(name, t1, c1)| {
            let (_, t0, c0) = before.iter().find(|(b, ..)| b == name)?;
            (c1 > c0).then(|| (name.clone(), (t1 - t0) as f64 / (c1 - c0) as f64))
        })
        .collect()
}

fn switch_cost(plan: &Plan, out: &mut String) {
    let n = plan.syscalls / 20;
    let modes = [
        SwitchMode::Base,
        SwitchMode::Floor,
        SwitchMode::Unmonitored,
        SwitchMode::Monitored,
    ];
    let mut round_trip: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut per_run: Vec<Vec<(String, f64)>> = vec![Vec::new(); modes.len()];
    for round in 0..plan.rounds {
        for k in 0..modes.len() {
            let i = (k + round) % modes.len();
            let mut work = Workload::spawn();
            let mut other = None;
            let mut floors = Vec::new();
            let mut daemon = None;
            match modes[i] {
                SwitchMode::Base => {}
                SwitchMode::Floor => {
                    floors.push(Floor::attach().expect("attach the floor programs"));
                    floors.push(Floor::attach_switch().expect("attach the sched_switch floor"));
                }
                SwitchMode::Unmonitored => {
                    let w = Workload::spawn();
                    daemon = Some(start_daemon(w.pid, "2s", "1s"));
                    other = Some(w);
                }
                SwitchMode::Monitored => daemon = Some(start_daemon(work.pid, "2s", "1s")),
            }
            if let Some((_, d)) = &daemon {
                pin_all(d.pid());
            }
            timed_loop(&mut work, &format!("pingpong {}", n / 10), "PINGPONG");
            let one_run = format!("pingpong {}", n / RUNS as u64);
            let ns = best_of_runs(|| timed_loop(&mut work, &one_run, "PINGPONG"));
            round_trip[i].push(ns);
            // Once per mode: each program's own time, from the kernel's statistics.
            if per_run[i].is_empty() && modes[i] != SwitchMode::Base {
                let _stats = Probes::enable_run_stats().expect("enable BPF statistics");
                let names: Vec<&str> = SWITCH_PROGRAMS
                    .iter()
                    .map(|(ours, floor)| {
                        if modes[i] == SwitchMode::Floor {
                            *floor
                        } else {
                            *ours
                        }
                    })
                    .collect();
                per_run[i] = switch_run_stats(&mut work, n, &names);
            }
            eprintln!(
                "wd-bench: round {round} {}: {ns:.1} ns per round trip",
                modes[i].name()
            );
            if let Some((_, mut d)) = daemon {
                d.stop();
            }
            drop(other);
        }
    }
    let medians: Vec<f64> = round_trip.iter_mut().map(|v| median(v)).collect();
    let _ = writeln!(
        out,
        "## Context switches\n\nTwo threads on one CPU pass a byte back and forth over two pipes ({n} round trips per mode and round, the best of {RUNS} runs, median of {} interleaved rounds). A round trip is two context switches and four syscalls (a write and a read on each side).\n",
        plan.rounds
    );
    let _ = writeln!(
        out,
        "| mode | ns per round trip | added per switch vs base | added per switch vs floor |\n|---|---|---|---|"
    );
    let (base, floor) = (medians[0], medians[1]);
    for (m, ns) in modes.iter().zip(&medians) {
        let vs_floor = if matches!(m, SwitchMode::Base | SwitchMode::Floor) {
            "-".to_owned()
        } else {
            format!("{:+.1} ns", (ns - floor) / 2.0)
        };
        let _ = writeln!(
            out,
            "| {} | {ns:.1} | {:+.1} ns | {vs_floor} |",
            m.name(),
            (ns - base) / 2.0
        );
    }
    let _ = writeln!(
        out,
        "\nEach program's own run time, from the kernel's BPF statistics (`run_time_ns / run_cnt`) over one ping-pong of {n} round trips per mode; the statistics add clock reads of their own to each run, so each program is compared with an empty program on the same hook, measured the same way.\n"
    );
    let _ = writeln!(
        out,
        "| program | empty program (floor) | unmonitored path | over the floor | monitored path | over the floor |\n|---|---|---|---|---|---|"
    );
    let at = |mode: usize, name: &str| {
        per_run[mode]
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    };
    for (ours, floor_name) in SWITCH_PROGRAMS {
        let f = at(1, floor_name);
        let (u, m) = (at(2, ours), at(3, ours));
        let _ = writeln!(
            out,
            "| {ours} | {f:.1} ns | {u:.1} ns | {:+.1} ns | {m:.1} ns | {:+.1} ns |",
            u - f,
            m - f
        );
    }
    let _ = writeln!(out);
}

// ---------------------------------------------------------------------------------
// Latency

fn summary(name: &str, v: &mut [f64]) -> String {
    format!(
        "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        v.len(),
        quantile(v, 0.5),
        quantile(v, 0.99),
        quantile(v, 1.0)
    )
}

/// Resume the heartbeat and wait until a beat after now arrives.
fn resume(daemon: &Daemon, rec: &Recorder) {
    let (code, _, err) = daemon.wdctl(&["resume"]);
    assert_eq!(code, 0, "resume: {err}");
    let at = monotonic_ns();
    let deadline = Instant::now() + Duration::from_secs(2);
    while rec.last_arrival().is_none_or(|t| t < at) {
        assert!(Instant::now() < deadline, "no heartbeat after resume");
        thread::sleep(Duration::from_millis(2));
    }
}

/// When the heartbeat stopped (the daemon's clock), once it has.
fn stopped_at(daemon: &Daemon) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let s = daemon.wdctl_json("status");
        if let Some(t) = s["stopped_at_ns"].as_u64() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "the heartbeat did not stop: {s:#}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn detection_latency(plan: &Plan, out: &mut String) {
    let dir = TempDir::new("bench-stamps");
    let stamps = dir.0.join("stamps");
    // SAFETY: single-threaded here; the daemon and its hook inherit it.
    unsafe { std::env::set_var("WD_BENCH_STAMPS", &stamps) };
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "100ms", "10ms");
    opts.hook = Some(std::env::current_exe().expect("own path"));
    let mut daemon = Daemon::start(opts, group, &rec);
    let budget = 100 * MS;
    let (mut stop, mut alert, mut late_beats) = (Vec::new(), Vec::new(), 0);
    for _ in 0..plan.detection_trials {
        work.send("stall-vfork 250");
        let began = field(&work.expect("STALL", Duration::from_secs(2)), "at_ns");
        work.expect("UNSTALLED", Duration::from_secs(2));
        let stopped = stopped_at(&daemon);
        let deadline = began + budget;
        stop.push((stopped - deadline) as f64 / MS as f64);
        // A beat that arrived after the stop (1 ms for the send in flight) is a lie.
        if rec.last_arrival().is_some_and(|t| t > stopped + MS) {
            late_beats += 1;
        }
        let wait = Instant::now() + Duration::from_secs(5);
        let hook_at = loop {
            let text = std::fs::read_to_string(&stamps).unwrap_or_default();
            if let Some(t) = text
                .lines()
                .filter_map(|l| l.parse::<u64>().ok())
                .find(|t| *t > deadline)
            {
                break t;
            }
            assert!(Instant::now() < wait, "the exec hook did not run");
            thread::sleep(Duration::from_millis(5));
        };
        alert.push((hook_at - deadline) as f64 / MS as f64);
        let _ = std::fs::remove_file(&stamps);
        resume(&daemon, &rec);
    }
    daemon.stop();
    let _ = writeln!(
        out,
        "## Detection latency\n\nA monitored thread sits in uninterruptible sleep (vfork) past a 100 ms budget; \
         heartbeat every 10 ms on lo. Time after the budget ran out.\n"
    );
    let _ = writeln!(
        out,
        "| until | trials | p50 | p99 | max |\n|---|---|---|---|---|"
    );
    let _ = writeln!(out, "{}", summary("the heartbeat stopped", &mut stop));
    let _ = writeln!(
        out,
        "{}",
        summary("the exec hook (alert) started", &mut alert)
    );
    let _ = writeln!(out, "\nHeartbeats received after the stop: {late_beats}.\n");
}

fn oops_latency(plan: &Plan, out: &mut String) {
    let group = unique_group();
    let rec = Recorder::start(group);
    let first = Workload::spawn();
    let mut opts = DaemonOpts::new(0, "2s", "10ms");
    opts.targets = Some(vec!["--comm".into(), "wd-workload".into()]);
    let mut daemon = Daemon::start(opts, group, &rec);
    let mut work = Some(first);
    let mut lat = Vec::new();
    for i in 0..plan.oops_trials {
        let mut w = work.take().unwrap_or_else(Workload::spawn);
        // Monitored (found by name) before it writes.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !daemon.wdctl_json("status")["monitored_pids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(w.pid))
        {
            assert!(Instant::now() < deadline, "workload not monitored");
            thread::sleep(Duration::from_millis(10));
        }
        if daemon.wdctl_json("status")["heartbeat"] == "stopped" {
            resume(&daemon, &rec);
        }
        w.send(&format!(
            "kmsg watchdog-bench: BUG: unable to handle kernel NULL pointer dereference at 0000000000000000 (oops latency trial {i})"
        ));
        let wrote = field(&w.expect("KMSG", Duration::from_secs(2)), "at_ns");
        let stopped = stopped_at(&daemon);
        lat.push((stopped - wrote) as f64 / MS as f64);
        drop(w);
    }
    daemon.stop();
    let _ = writeln!(
        out,
        "## Oops latency\n\nA monitored thread writes a `BUG: unable to handle kernel NULL pointer dereference` line to /dev/kmsg; \
         time from just before its write until the heartbeat stopped.\n"
    );
    let _ = writeln!(
        out,
        "| until | trials | p50 | p99 | max |\n|---|---|---|---|---|"
    );
    let _ = writeln!(out, "{}\n", summary("the heartbeat stopped", &mut lat));
}

// ---------------------------------------------------------------------------------
// Footprint

/// CPU time (ns) of every thread of `pid` so far.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|e| {
        let p = e.ok()?.path().join("schedstat");
        let s = std::fs::read_to_string(p).ok()?;
        s.split_whitespace().next()?.parse::<u64>().ok()
    })
    .sum()
}

/// A `/proc/PID/status` field in kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The daemon's CPU share of one core and its RSS over `secs`, after a settling second.
fn measure(daemon: &Daemon, secs: u64) -> (f64, u64, u64) {
    thread::sleep(Duration::from_secs(1));
    let pid = daemon.pid();
    let (c0, t0) = (cpu_ns(pid), monotonic_ns());
    thread::sleep(Duration::from_secs(secs));
    let (c1, t1) = (cpu_ns(pid), monotonic_ns());
    let cpu = 100.0 * (c1 - c0) as f64 / (t1 - t0) as f64;
    (cpu, status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"))
}

fn footprint(plan: &Plan, out: &mut String) {
    let _ = writeln!(
        out,
        "## Footprint\n\nThe daemon's CPU (share of one core, the sum of its threads' run time from /proc/PID/task/*/schedstat, in ns) and memory over {} s, default budget (2 s) and interval (1 s), in steady state: from 12 s after the daemon knows every thread (past the budget, when each idle thread is judged once more).\n",
        plan.footprint_secs
    );
    let _ = writeln!(
        out,
        "| while monitoring | CPU | RSS | peak RSS |\n|---|---|---|---|"
    );
    let cases: [(&str, &[&str], u64); 4] = [
        ("baseline: 7 idle threads", &["idle"], 7),
        ("1,000 idle threads", &["idle", "threads 993"], 1_000),
        ("10,000 idle threads", &["idle", "threads 9993"], 10_000),
        ("a thread making 1 M syscalls/s", &["rate 1000000"], 2),
    ];
    for (name, cmds, threads) in cases {
        // The daemon first, so every thread's syscalls (its wait too) are recorded.
        let mut work = Workload::spawn();
        let (_rec, mut daemon) = start_daemon(work.pid, "2s", "1s");
        for c in cmds {
            work.send(c);
        }
        // Steady state: every thread started and known to the daemon.
        let deadline = Instant::now() + Duration::from_secs(60);
        while daemon.wdctl_json("status")["monitored_threads"]
            .as_u64()
            .is_none_or(|n| n < threads)
        {
            assert!(Instant::now() < deadline, "{name}: threads never all seen");
            thread::sleep(Duration::from_millis(200));
        }
        // Idle, not starting: past the budget (at 2 s each thread's read is judged once
        // more and its fd looked up in /proc), and past the 10 s the runtime keeps the
        // thread that answered `wdctl status` (CPU is summed over the threads alive at
        // each end, so one that exits in between would take its time with it).
        thread::sleep(Duration::from_secs(12));
        let (cpu, rss, hwm) = measure(&daemon, plan.footprint_secs);
        let threads = daemon.wdctl_json("status")["monitored_threads"].clone();
        daemon.stop();
        let _ = writeln!(
            out,
            "| {name} ({threads} threads) | {cpu:.2} % | {:.1} MiB | {:.1} MiB |",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    let _ = writeln!(out);
}

// ---------------------------------------------------------------------------------
// Printk flood

/// Write `per_second` kernel lines a second for `secs` seconds. /dev/kmsg lets each
/// open file write 10 lines per 5 s (printk_devkmsg=ratelimit), so each batch of 10
/// goes through a fresh open. Returns the lines written.
fn flood(per_second: u64, secs: u64) -> u64 {
    let per_ms = per_second / 1000;
    let start = monotonic_ns();
    let mut written = 0;
    for ms in 0..secs * 1000 {
        let mut left = per_ms;
        while left > 0 {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .expect("open /dev/kmsg");
            for _ in 0..left.min(10) {
                let line = format!("watchdog-bench: printk flood line {written}\n");
                if f.write_all(line.as_bytes()).is_ok() {
                    written += 1;
                }
                left -= 1;
            }
        }
        let next = start + (ms + 1) * MS;
        let now = monotonic_ns();
        if next > now {
            thread::sleep(Duration::from_nanos(next - now));
        }
    }
    written
}

fn printk_flood(plan: &Plan, out: &mut String) {
    let mut work = Workload::spawn();
    work.send("idle");
    let (_rec, mut daemon) = start_daemon(work.pid, "2s", "1s");
    let before = daemon.wdctl_json("status");
    let lines0 = before["kernel_lines"].as_u64().unwrap();
    let lost0 = before["lost_events"].as_u64().unwrap();
    let pid = daemon.pid();
    let c0 = cpu_ns(pid);
    let written = flood(10_000, plan.flood_secs);
    let done = monotonic_ns();
    // Caught up: every line read (other kernel messages may add a few).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (read, lost) = loop {
        let s = daemon.wdctl_json("status");
        let read = s["kernel_lines"].as_u64().unwrap() - lines0;
        let lost = s["lost_events"].as_u64().unwrap() - lost0;
        if read + lost >= written || Instant::now() > deadline {
            break (read, lost);
        }
        thread::sleep(Duration::from_millis(20));
    };
    let lag = (monotonic_ns() - done) as f64 / MS as f64;
    let cpu = 100.0 * (cpu_ns(pid) - c0) as f64
        / (monotonic_ns() - (done - plan.flood_secs * 1_000_000_000)) as f64;
    let alive = daemon.wdctl_json("status")["heartbeat"] == "sending";
    daemon.stop();
    let _ = writeln!(
        out,
        "## Printk flood\n\n10,000 lines a second written to /dev/kmsg for {} s while the daemon monitors an idle process.\n",
        plan.flood_secs
    );
    let _ = writeln!(
        out,
        "| written | read by the daemon | lost (counted) | unaccounted | caught up after | daemon CPU | heartbeat |\n|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| {written} | {read} | {lost} | {} | {lag:.0} ms | {cpu:.1} % | {} |\n",
        written.saturating_sub(read + lost),
        if alive { "sending" } else { "STOPPED" }
    );
}

// ---------------------------------------------------------------------------------
// Failover with keepalived

fn failover(plan: &Plan, out: &mut String) {
    use watchdog_tests::keepalived::{HaNode, KeepalivedPair};
    let _ = writeln!(
        out,
        "## Failover with keepalived\n\nA real keepalived pair in two network namespaces (unicast VRRP over a veth), node A master with the watchdog's track file and `vrrp_script wdctl status` (packaging/keepalived/keepalived.conf), budget 300 ms. \
         From the moment a monitored thread sticks in vfork until the virtual address is on node B; baseline: node A's keepalived stopped with SIGTERM (keepalived's own clean hand-over), until the address is on B.\n"
    );
    let _ = writeln!(
        out,
        "| advert_int | until the address is on B | trials | p50 | p99 | max |\n|---|---|---|---|---|---|"
    );
    for advert_int in ["0.1", "1"] {
        let dir = TempDir::new("bench-failover");
        let track = dir.0.join("keepalived.track");
        let mut work = Workload::spawn();
        let group = unique_group();
        let rec = Recorder::start(group);
        let mut opts = DaemonOpts::new(work.pid, "300ms", "100ms");
        opts.extra = vec!["--track-file".into(), track.display().to_string()];
        let mut daemon = Daemon::start(opts, group, &rec);
        let mut pair = KeepalivedPair::start(&track, &daemon.socket, advert_int);
        let settle = Duration::from_secs(15);
        pair.wait_master(HaNode::A, settle);
        let (mut stall, mut baseline) = (Vec::new(), Vec::new());
        for _ in 0..plan.failover_trials {
            // Both nodes settled: A master, B backup and in step.
            thread::sleep(Duration::from_secs(1));
            work.send("stall-vfork 1200");
            let began = field(&work.expect("STALL", Duration::from_secs(2)), "at_ns");
            pair.wait_master(HaNode::B, Duration::from_secs(10));
            stall.push((monotonic_ns() - began) as f64 / MS as f64);
            work.expect("UNSTALLED", Duration::from_secs(3));
            resume(&daemon, &rec);
            pair.wait_master(HaNode::A, settle);

            let stopping = monotonic_ns();
            pair.stop_node_a();
            pair.wait_master(HaNode::B, Duration::from_secs(10));
            baseline.push((monotonic_ns() - stopping) as f64 / MS as f64);
            pair.start_node_a();
            pair.wait_master(HaNode::A, settle);
            thread::sleep(Duration::from_secs(1));
        }
        let _ = writeln!(
            out,
            "{}",
            summary(
                &format!("{advert_int} s | a thread stuck (budget 300 ms)"),
                &mut stall
            )
        );
        let _ = writeln!(
            out,
            "{}",
            summary(
                &format!("{advert_int} s | baseline: keepalived A stopped (SIGTERM)"),
                &mut baseline
            )
        );
        drop(pair);
        daemon.stop();
    }
    pacemaker_failover(plan, out);
}

fn pacemaker_failover(plan: &Plan, out: &mut String) {
    use watchdog_tests::pacemaker::Pacemaker;
    let cluster = Pacemaker::start();
    let hook = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/pacemaker/watchdog-node-health"
    );
    let mut work = Workload::spawn();
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "300ms", "100ms");
    opts.extra = vec!["--state-hook".into(), hook.into()];
    let mut daemon = Daemon::start(opts, group, &rec);
    let (mut stall, mut baseline) = (Vec::new(), Vec::new());
    let settle = Duration::from_secs(15);
    for _ in 0..plan.failover_trials {
        cluster.wait_resource(true, settle);
        thread::sleep(Duration::from_secs(1));
        work.send("stall-vfork 1200");
        let began = field(&work.expect("STALL", Duration::from_secs(2)), "at_ns");
        cluster.wait_resource(false, Duration::from_secs(10));
        stall.push((monotonic_ns() - began) as f64 / MS as f64);
        work.expect("UNSTALLED", Duration::from_secs(3));
        resume(&daemon, &rec);
        cluster.wait_resource(true, settle);
        thread::sleep(Duration::from_secs(1));
        // Baseline: the node set red by hand, as the hook does.
        let red = monotonic_ns();
        cluster.set_health("red");
        cluster.wait_resource(false, Duration::from_secs(10));
        baseline.push((monotonic_ns() - red) as f64 / MS as f64);
        cluster.set_health("green");
    }
    let _ = writeln!(
        out,
        "\nPacemaker 2.1.5 with corosync on 127.0.0.1 (one node), node-health-strategy=migrate-on-red, an ocf:pacemaker:Dummy resource; the watchdog's state hook is packaging/pacemaker/watchdog-node-health. From the stall until the Dummy agent has stopped; baseline: `attrd_updater -U red` by hand, until the same.\n"
    );
    let _ = writeln!(
        out,
        "| until the resource is stopped | trials | p50 | p99 | max |\n|---|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "{}",
        summary("a thread stuck (budget 300 ms)", &mut stall)
    );
    let _ = writeln!(
        out,
        "{}",
        summary("baseline: health set red by hand", &mut baseline)
    );
    let _ = writeln!(out);
    daemon.stop();
    drop(cluster);
}

/// When `pid` was last heard through `via`, once it has been silent for `quiet`.
fn silent_since(heard: &netns::Heard, pid: u32, via: &str, quiet: Duration) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = heard.from(pid, via).into_iter().max().unwrap_or(0);
        if monotonic_ns().saturating_sub(last) > quiet.as_nanos() as u64 {
            return last;
        }
        assert!(Instant::now() < deadline, "{pid} never fell silent");
        thread::sleep(Duration::from_millis(5));
    }
}

fn run_udp_loop(work: &mut Workload, n: u64, to: &str) -> f64 {
    timed_loop(work, &format!("udp-loop {n} {to}"), "UDPLOOP")
}

fn gate(plan: &Plan, out: &mut String) {
    use watchdog_tests::netns::{NetnsPair, Side, udp_peer};
    let _ = writeln!(
        out,
        "## The service heartbeat gate\n\nA service in network namespace A sends its own heartbeat (a UDP datagram every 20 ms) to a peer in namespace B over a veth; the watchdog monitors it with `--gate udp:7201`, budget 300 ms (scan period 75 ms). \
         From the moment its main thread sticks in vfork until the peer heard its last datagram (the peer calls it silent after 200 ms without one); baseline: the service killed with SIGKILL, until the peer heard its last datagram. Target: budget + one scan period (375 ms).\n"
    );
    let _ = writeln!(
        out,
        "| until the peer hears the last datagram | trials | p50 | p99 | max |\n|---|---|---|---|---|"
    );
    let net = NetnsPair::new("bg", false);
    let pins = GatePins::new("bench");
    let peer = udp_peer(
        |f| drop(net.spawn_in(Side::B, f)),
        vec!["192.0.2.2:7201".parse().unwrap()],
        None,
    );
    let via = "192.0.2.2:7201";
    let mut work = Workload::spawn_in_netns(net.name(Side::A));
    let group = unique_group();
    let rec = Recorder::start(group);
    let mut opts = DaemonOpts::new(work.pid, "300ms", "100ms");
    opts.extra = ["--gate", "udp:7201"].map(String::from).to_vec();
    opts.extra.extend(pins.args());
    let mut daemon = Daemon::start(opts, group, &rec);
    work.send("udp-beat 20 192.0.2.2:7201");
    work.expect("BEAT", Duration::from_secs(2));
    peer.wait_for(work.pid, via, monotonic_ns(), Duration::from_secs(5));
    let quiet = Duration::from_millis(200);
    let (mut stall, mut killed) = (Vec::new(), Vec::new());
    for _ in 0..plan.failover_trials {
        thread::sleep(Duration::from_millis(300));
        work.send("stall-vfork 900");
        let began = field(&work.expect("STALL", Duration::from_secs(2)), "at_ns");
        let last = silent_since(&peer, work.pid, via, quiet);
        stall.push(last.saturating_sub(began) as f64 / MS as f64);
        work.expect("UNSTALLED", Duration::from_secs(3));
        resume(&daemon, &rec);
        peer.wait_for(work.pid, via, monotonic_ns(), Duration::from_secs(2));

        // Baseline: a service that dies falls silent at once.
        let mut victim = Workload::spawn_in_netns(net.name(Side::A));
        victim.send("udp-beat 20 192.0.2.2:7201");
        victim.expect("BEAT", Duration::from_secs(2));
        peer.wait_for(victim.pid, via, monotonic_ns(), Duration::from_secs(5));
        thread::sleep(Duration::from_millis(100));
        let kill_at = monotonic_ns();
        victim.kill();
        let last = silent_since(&peer, victim.pid, via, quiet);
        killed.push(last.saturating_sub(kill_at) as f64 / MS as f64);
    }
    let _ = writeln!(
        out,
        "{}",
        summary("a thread stuck (budget 300 ms), gated", &mut stall)
    );
    let _ = writeln!(
        out,
        "{}",
        summary("baseline: the service killed (SIGKILL)", &mut killed)
    );
    daemon.stop();
    drop(pins);

    // What a datagram pays: loopback sends, the gate attached or not.
    let _ = writeln!(
        out,
        "\nWhat the gate costs each datagram sent (a loop of {} sends to 127.0.0.1, fastest of 5 runs, median of {} rounds, ns per send), with the daemon running in every mode: the egress program runs on every packet of the host, the tagging tracepoint on every send.\n\n| gate | ns per send | over no gate (same sender) |\n|---|---|---|",
        plan.syscalls / 10,
        plan.rounds
    );
    // Somewhere for the datagrams to go (never read: the kernel drops what overflows).
    let _sink = std::net::UdpSocket::bind("127.0.0.1:7202").unwrap();
    // (the sender monitored, the gate's port, what the row says, its baseline's row).
    let modes: [(bool, Option<u16>, &str, usize); 5] = [
        (true, None, "none, the sender monitored", 0),
        (true, Some(7203), "on another port, the sender monitored", 0),
        (
            true,
            Some(7202),
            "on this port (open), the sender monitored",
            0,
        ),
        (false, None, "none, the sender not monitored", 3),
        (
            false,
            Some(7203),
            "on another port, the sender not monitored",
            3,
        ),
    ];
    let bystander = Workload::spawn();
    let mut sender = Workload::spawn();
    let n = plan.syscalls / 10;
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..plan.rounds {
        for (row, (monitored, port, _, _)) in results.iter_mut().zip(modes) {
            let pins = GatePins::new("bench-cost");
            let group = unique_group();
            let rec = Recorder::start(group);
            let pid = if monitored { sender.pid } else { bystander.pid };
            let mut opts = DaemonOpts::new(pid, "300ms", "100ms");
            if let Some(port) = port {
                opts.extra = vec!["--gate".into(), format!("udp:{port}")];
                opts.extra.extend(pins.args());
            }
            let mut daemon = Daemon::start(opts, group, &rec);
            let best = best_of_runs(|| run_udp_loop(&mut sender, n, "127.0.0.1:7202"));
            row.push(best);
            daemon.stop();
        }
    }
    let medians: Vec<f64> = results.iter_mut().map(|r| median(r)).collect();
    for (i, (_, _, name, base)) in modes.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {name} | {:.1} | {:+.1} |",
            medians[i],
            medians[i] - medians[*base]
        );
    }
}
