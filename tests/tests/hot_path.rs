//! The hot path, end to end as root. The syscall probes first let through only tasks
//! whose kernel stack is covered (a lost cover loses a thread), then take the current
//! thread from a per-CPU entry keyed by its registers (no helper call), so a stale
//! entry would count one thread's syscalls in another's record. These tests load the
//! real programs and run many short-lived threads and processes across every CPU,
//! monitored and not, check each monitored thread's record syscall by syscall, and
//! check the cover against the threads alive.
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use watchdog::{
    events::SyscallRecord,
    kernel::probes::{InFlightTable, Probes},
};
use watchdog_tests::*;

const CLOCK_NANOSLEEP: u32 = libc::SYS_clock_nanosleep as u32;
const SCHED_YIELD: u32 = libc::SYS_sched_yield as u32;
const GETUID: u32 = libc::SYS_getuid as u32;

/// Every record the table showed while the workloads ran, read every millisecond.
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: thread::JoinHandle<Vec<SyscallRecord>>,
}

impl Watcher {
    fn start(mut table: InFlightTable) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let seen = thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let records = table.read().expect("read the in-flight table");
                seen.extend(records.into_iter().map(|(_, r)| r));
                thread::sleep(Duration::from_millis(1));
            }
            seen
        });
        Watcher { stop, seen }
    }

    fn stop(self) -> Vec<SyscallRecord> {
        self.stop.store(true, Ordering::Relaxed);
        self.seen.join().expect("watcher thread")
    }
}

/// The tids a workload's `churn` threads said they had, until it said `CHURNED`.
fn churned_tids(work: &mut Workload) -> HashSet<u32> {
    work.lines_until("CHURNED", Duration::from_secs(60))
        .iter()
        .filter(|l| l.starts_with("CHURN tid="))
        .map(|l| field(l, "tid") as u32)
        .collect()
}

/// Check each churn thread's record: between its first sleep and its second it made
/// exactly `2n` syscalls (the pairs), and the first sleep's return makes one more. A
/// syscall of another thread counted here, or one of its own counted elsewhere, shows.
/// Returns how many threads were seen in both sleeps.
fn check_counts(seen: &[SyscallRecord], tids: &HashSet<u32>, n: u64) -> usize {
    // Per thread: `completed` in its first sleep (before the pairs) and in its second
    // (the last syscall returned was sched_yield). A record read while the thread was
    // returning from a sleep says last_nr = clock_nanosleep: left out.
    let mut first: HashMap<u32, HashSet<u64>> = HashMap::new();
    let mut second: HashMap<u32, HashSet<u64>> = HashMap::new();
    for r in seen.iter().filter(|r| tids.contains(&r.tid)) {
        if r.nr != CLOCK_NANOSLEEP || r.last_nr == CLOCK_NANOSLEEP {
            continue;
        }
        let phase = if r.last_nr == SCHED_YIELD {
            &mut second
        } else {
            &mut first
        };
        phase.entry(r.tid).or_default().insert(r.completed);
    }
    let mut checked = 0;
    for tid in tids {
        let (Some(a), Some(b)) = (first.get(tid), second.get(tid)) else {
            continue;
        };
        assert!(
            a.len() == 1 && b.len() == 1,
            "thread {tid}: its record's count changed while it slept: {a:?} then {b:?}"
        );
        let (a, b) = (*a.iter().next().unwrap(), *b.iter().next().unwrap());
        if b - a != 2 * n + 1 {
            let mut states: Vec<(u32, u32, u64, bool)> = seen
                .iter()
                .filter(|r| r.tid == *tid)
                .map(|r| (r.nr, r.last_nr, r.completed, r.on_cpu))
                .collect();
            states.dedup();
            eprintln!("DEBUG {tid}: {states:?}");
        }
        assert_eq!(
            b - a,
            2 * n + 1,
            "thread {tid}: {} syscalls counted between its two sleeps, it made {}",
            b - a,
            2 * n + 1
        );
        checked += 1;
    }
    checked
}

#[test]
fn every_syscall_is_counted_for_the_thread_that_made_it_under_churn_on_every_cpu() {
    require_root();
    let (mut probes, channels) = Probes::load().expect("load the probes");
    // Two monitored processes and two others, all churning threads at once (and two
    // forking short-lived processes), so every CPU switches between them all the time.
    let mut monitored = [Workload::spawn(), Workload::spawn()];
    let mut others = [Workload::spawn(), Workload::spawn()];
    for w in &monitored {
        probes.add_target(w.pid).expect("add target");
    }
    let watcher = Watcher::start(channels.inflight);
    const WAVES: u32 = 12;
    const THREADS: u32 = 8;
    const N: u64 = 1_500;
    for (i, w) in monitored.iter_mut().enumerate() {
        w.send(&format!("churn {WAVES} {THREADS} {N} getppid {}", i % 2));
    }
    for (i, w) in others.iter_mut().enumerate() {
        // Their marker syscall, getuid, is one no monitored thread makes.
        w.send(&format!("churn {WAVES} {THREADS} {N} getuid {}", i % 2));
    }
    let mine: Vec<HashSet<u32>> = monitored.iter_mut().map(churned_tids).collect();
    let theirs: HashSet<u32> = others.iter_mut().flat_map(churned_tids).collect();
    let seen = watcher.stop();
    let o = std::process::Command::new("bpftool")
        .args(["map", "dump", "name", "COUNTERS"])
        .output()
        .unwrap();
    eprintln!("DEBUGMISMATCH {}", String::from_utf8_lossy(&o.stdout));
    let o = std::process::Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .unwrap();
    eprintln!(
        "DEBUGBPF {}",
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("sys_e")
                || l.contains("sched_switch")
                || l.contains("recursion"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(probes);

    let pids: HashSet<u32> = monitored.iter().map(|w| w.pid).collect();
    for r in &seen {
        assert!(
            pids.contains(&r.tgid),
            "a record of process {} (thread {}), which is not monitored: {r:?}",
            r.tgid,
            r.tid
        );
        assert!(
            !theirs.contains(&r.tid),
            "a record for thread {} of an unmonitored process: {r:?}",
            r.tid
        );
        assert!(
            r.nr != GETUID && r.last_nr != GETUID,
            "a monitored thread's record shows getuid, which only the others make: {r:?}"
        );
    }
    let all = (2 * WAVES * THREADS) as usize;
    let checked: usize = mine.iter().map(|tids| check_counts(&seen, tids, N)).sum();
    assert_eq!(mine.iter().map(HashSet::len).sum::<usize>(), all);
    // The watcher reads every millisecond and each sleep lasts 20 ms: nearly every
    // thread is seen in both.
    assert!(
        checked * 4 >= all * 3,
        "only {checked} of {all} monitored threads were seen in both sleeps"
    );
}

#[test]
fn a_thread_that_execs_takes_the_leaders_id_and_leaves_no_record_behind() {
    require_root();
    let (mut probes, channels) = Probes::load().expect("load the probes");
    let mut work = Workload::spawn();
    probes.add_target(work.pid).expect("add target");
    let mut table = channels.inflight;
    // A non-leader thread execs: the kernel gives it the leader's pid.
    work.send("exec-thread");
    let execer = field(&work.expect("EXEC", Duration::from_secs(2)), "tid") as u32;
    let ready = work.expect("READY", Duration::from_secs(5));
    assert_eq!(field(&ready, "pid") as u32, work.pid);
    thread::sleep(Duration::from_millis(100));
    let records = table.read().expect("read the in-flight table");
    assert!(
        !records.iter().any(|(tid, _)| *tid == execer),
        "thread {execer} is gone (its exec made it the leader) but its record stayed: {records:?}"
    );
    // The new program's main thread is the leader, waiting for its next command.
    let leader = records.iter().find(|(tid, _)| *tid == work.pid);
    assert!(
        leader.is_some_and(|(_, r)| r.tgid == work.pid && r.nr == libc::SYS_read as u32),
        "the leader's record after exec: {leader:?}"
    );
    // And the program's threads are counted as exactly as before the exec.
    let watcher = Watcher::start(table);
    const N: u64 = 500;
    work.send(&format!("churn 3 4 {N} getppid 0"));
    let tids = churned_tids(&mut work);
    let seen = watcher.stop();
    let checked = check_counts(&seen, &tids, N);
    assert!(checked * 4 >= tids.len() * 3, "{checked} of {}", tids.len());
}

/// The hot path's first test lets a syscall through only if the task's kernel stack is
/// in a bucket with a covered thread, so a followed thread that is not covered is lost,
/// and a count that only grows makes the test useless. Cover is given to a running
/// process's threads by a task iterator, to new threads and children at fork, moved by
/// a non-leader exec, and taken away at exit: the count must equal the live threads.
#[test]
fn every_followed_thread_is_covered_once_and_uncovered_at_exit() {
    require_root();
    let (mut probes, channels) = Probes::load().expect("load the probes");
    assert_eq!(
        probes.covered_count(),
        0,
        "nothing is covered before a target"
    );
    let mut bystander = Workload::spawn();
    let mut work = Workload::spawn();
    // Threads that exist before the process becomes a target.
    work.send("threads 40");
    work.expect("THREADS", Duration::from_secs(5));
    probes.add_target(work.pid).expect("add target");
    let live = task_ids(work.pid);
    assert!(live.len() > 40, "{} threads", live.len());
    for tid in &live {
        assert!(
            probes.is_covered(*tid),
            "thread {tid} of the target is not covered"
        );
    }
    assert_eq!(probes.covered_count(), live.len() as u64);
    assert!(
        !probes.is_covered(bystander.pid),
        "a process we do not follow is covered"
    );
    // Short-lived threads and child processes, born covered and gone again; their
    // syscalls reach the exact path (counted one by one).
    let watcher = Watcher::start(channels.inflight);
    const N: u64 = 200;
    work.send(&format!("churn 4 4 {N} getppid 0"));
    let tids = churned_tids(&mut work);
    let seen = watcher.stop();
    assert!(check_counts(&seen, &tids, N) * 4 >= tids.len() * 3);
    work.send(&format!("churn 2 4 {N} getppid 1"));
    churned_tids(&mut work);
    let live = task_ids(work.pid);
    assert!(!live.is_empty(), "the workload is gone");
    assert_eq!(probes.covered_count(), live.len() as u64);
    // A non-leader thread execs: its cover moves to the leader's id, the old leader's
    // goes with it, and the 40 parked threads' with their exit.
    work.send("exec-thread");
    work.expect("READY", Duration::from_secs(5));
    let after = task_ids(work.pid);
    assert!(!after.is_empty(), "the workload is gone");
    assert!(
        probes.is_covered(work.pid),
        "the exec'd leader is not covered"
    );
    assert_eq!(
        probes.covered_count(),
        after.len() as u64,
        "threads now: {after:?}"
    );
    work.kill();
    assert_eq!(
        probes.covered_count(),
        0,
        "cover left behind by exited threads"
    );
    bystander.kill();
}
