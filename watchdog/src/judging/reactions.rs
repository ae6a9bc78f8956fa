//! The daemon's reactions: what a kernel event, a scan of the in-flight table or the
//! passing of time means for the heartbeat, the incidents and the service. Pure: fed
//! with events and times, it answers with [`Effect`]s, in the order they must be carried
//! out (the heartbeat stops first, everything else after); what it needs from `/proc`
//! it asks through [`Host`], which the tests fake. The daemon holds one of these behind
//! one lock and only carries out what it returns.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, LazyLock},
    time::Duration,
};

use regex::Regex;
use watchdog_common::{NOT_IN_SYSCALL, sched};

use crate::{
    events::{KernelLine, SyscallRecord, TaskEvent, TaskEventKind, ThreadExit},
    incidents::{Incident, Kind, SignalDetails, StallDetails, signal_code_meaning, signal_name},
    judging::{
        kmsg::{
            Action, Class, RuleSet, Severity, prefix,
            report::{Assembler, Line, Printer, Report, assemble_log, line_subject},
        },
        monitor::{LineVerdict, Monitor, Stall},
        policy::Policy,
        syscall_table::{self, SyscallClass},
        targets::{ProcIdentity, TargetTable},
        verdict::FdKind,
    },
};

/// A kernel report is complete after this long without a further line from its printer.
pub const REPORT_QUIET: Duration = Duration::from_secs(1);
/// A fatal signal this recent explains a monitored process's death.
pub const CRASH_WINDOW_NS: u64 = 5_000_000_000;

/// The kernel's line about a user fault: `svc[1234]: segfault at 0 ip ... error 6 in ...`,
/// `traps: svc[1234] general protection fault ip:...`, `svc[1234]: trap divide error ...`.
static FAULT_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^traps: )?\S+\[\d+\]:? (?:segfault at|general protection fault|trap |potentially unexpected fatal signal)").unwrap()
});

/// What the reactions need to know of the system, beyond the events: `/proc` in the
/// daemon, a table in the tests.
pub trait Host {
    /// The process thread `tid` belongs to.
    fn tgid_of(&self, tid: u32) -> Option<u32>;
    /// The name of thread `tid` of process `tgid`.
    fn comm(&self, tgid: u32, tid: u32) -> Option<String>;
    /// How a process that is a zombie now ended (`exited with status 3`).
    fn exit_status(&self, tgid: u32) -> Option<String>;
    /// The cgroup v2 id of a process.
    fn cgroup_id(&self, pid: u32) -> Option<u64>;
    /// What file descriptor `fd` of process `tgid` is.
    fn fd_kind(&self, tgid: u32, fd: u64) -> Option<FdKind>;
    /// The threads of process `tgid`.
    fn threads(&self, tgid: u32) -> Vec<u32>;
    /// The syscall a thread is in now (its number and first argument), if it is in one.
    fn syscall_now(&self, tgid: u32, tid: u32) -> Option<(u32, u64)>;
    /// A thread's scheduler state letter (`D`, `S`, `R`, `T`, ...).
    fn state(&self, tgid: u32, tid: u32) -> Option<char>;
    /// A thread's time on a CPU (ns) and how many times it was switched in.
    fn run_stats(&self, tgid: u32, tid: u32) -> Option<(u64, u64)>;
    /// Whether process `pid` still runs (not gone, not a zombie).
    fn alive(&self, pid: u32) -> bool;
    /// Who process `pid` is: its real uid and its executable.
    fn identity(&self, pid: u32) -> Option<ProcIdentity>;
    /// A thread the kernel names in its messages (`PID: 1234`, the initial pid
    /// namespace's id), as this process sees it: None for a task it does not judge.
    fn named_by_kernel(&self, tid: u32) -> Option<u32> {
        Some(tid)
    }
}

/// What the fd of thread `tid`'s syscall `nr` is, its first argument read from /proc
/// (the kernel side does not keep arguments): None when the thread is no longer in
/// that syscall.
fn fd_kind_now(host: &impl Host, tgid: u32, tid: u32, nr: u32) -> Option<FdKind> {
    let (now_in, fd) = host.syscall_now(tgid, tid)?;
    if now_in != nr {
        return None;
    }
    host.fd_kind(tgid, fd)
}

/// A problem line the kernel's log has that the event ring has not delivered is taken
/// as dropped by the ring this long after it was read from the log, when events were
/// lost meanwhile.
const RING_GRACE_NS: u64 = 2_000_000_000;
/// Problem lines from the ring remembered to match the log's copies against.
const RING_SEEN_MAX: usize = 4096;

/// A problem line read from the kernel's log that the event ring has not delivered yet.
#[derive(Clone, Debug)]
struct Unseen {
    key: String,
    text: String,
    logged_ns: u64,
}

/// A problem line as the ring delivered it: its key, and whether the ring cut it (a line
/// longer than a ring record holds, whose log copy is longer).
#[derive(Clone, Debug)]
struct RingSeen {
    key: String,
    cut: bool,
}

impl RingSeen {
    /// Whether `key` (of a line in the kernel's log) is this line.
    fn is(&self, key: &str) -> bool {
        self.key == key || (self.cut && key.starts_with(&self.key))
    }
}

/// The text two copies of one kernel line share: prefixes stripped, trailing space cut.
fn line_key(text: &str) -> String {
    prefix::strip(text).text.trim_end().to_owned()
}

/// The first gap between two looks at a thread idle in a wait since before the probes
/// attached, and the longest (it doubles while nothing changes): a thousand such threads
/// cost a few reads of /proc a second, not thousands.
const QUIET_FIRST_GAP_NS: u64 = 1_000_000_000;
const QUIET_MAX_GAP_NS: u64 = 8_000_000_000;

/// A thread that was inside a syscall when it was first monitored: the syscall began
/// before the probes could see it, so the kernel side has no record of it until the
/// thread's next syscall. Until then it is judged from /proc, conservatively: its time
/// in flight counts from the first look (a lower bound), its sleep from the last time it
/// was seen to wake.
#[derive(Clone, Copy, Debug)]
struct BeforeAttach {
    /// When it was first seen in the syscall.
    since_ns: u64,
    /// Its time on a CPU and its switch count at the first look, and the count at the
    /// last look.
    run_base_ns: u64,
    switches: u64,
    /// Since when it has slept without being switched in (its count unchanged).
    asleep_since_ns: u64,
    next_look_ns: u64,
    gap_ns: u64,
    /// What the last look showed, as the kernel side would have recorded it.
    record: SyscallRecord,
}

impl BeforeAttach {
    /// Look at thread `tid` of `tgid` at `now_ns` (`seen`: the earlier look, if any).
    /// None when it is no longer in the syscall it was first seen in.
    fn look(
        tgid: u32,
        tid: u32,
        seen: Option<&BeforeAttach>,
        now_ns: u64,
        host: &impl Host,
    ) -> Option<BeforeAttach> {
        let (nr, _) = host.syscall_now(tgid, tid)?;
        if seen.is_some_and(|b| b.record.nr != nr) {
            return None;
        }
        let state = host.state(tgid, tid)?;
        let (run_ns, switches) = host.run_stats(tgid, tid).unwrap_or((0, 0));
        let since_ns = seen.map_or(now_ns, |b| b.since_ns);
        let run_base_ns = seen.map_or(run_ns, |b| b.run_base_ns);
        let woke = seen.is_some_and(|b| b.switches != switches);
        let asleep_since_ns = match seen {
            Some(b) if !woke => b.asleep_since_ns,
            _ => now_ns,
        };
        let (sched_state, on_cpu) = match state {
            'D' => (sched::UNINTERRUPTIBLE, 0),
            'S' | 'I' => (sched::INTERRUPTIBLE, 0),
            'T' | 't' => (sched::STOPPED, 0),
            _ => (0, 1),
        };
        let on_cpu = on_cpu == 1;
        let ran_ns = run_ns.saturating_sub(run_base_ns);
        let asleep_ns = if !on_cpu {
            now_ns.saturating_sub(asleep_since_ns)
        } else {
            0
        };
        let quiet_wait = state == 'S' && !woke && syscall_table::class(nr) != SyscallClass::Bounded;
        let gap_ns = match seen {
            Some(b) if quiet_wait => (b.gap_ns * 2).clamp(QUIET_FIRST_GAP_NS, QUIET_MAX_GAP_NS),
            None if quiet_wait => QUIET_FIRST_GAP_NS,
            // Asleep in D, running, or in a bounded syscall: at every scan.
            _ => 0,
        };
        Some(BeforeAttach {
            since_ns,
            run_base_ns,
            switches,
            asleep_since_ns,
            next_look_ns: now_ns + gap_ns,
            gap_ns,
            record: SyscallRecord {
                tgid,
                nr,
                enter_ns: since_ns,
                last_nr: NOT_IN_SYSCALL,
                tid,
                last_duration_ns: 0,
                completed: 0,
                sleep_ns: now_ns
                    .saturating_sub(since_ns)
                    .saturating_sub(ran_ns)
                    .saturating_sub(asleep_ns),
                switch_ns: if on_cpu { now_ns } else { asleep_since_ns },
                sched_state,
                on_cpu,
            },
        })
    }
}

/// Something a metric counts.
#[derive(Clone, Debug, PartialEq)]
pub enum Count {
    /// A verdict, by cause (`syscall-budget`, `exited`, a report's class).
    Verdict(String),
    /// A kernel line of a problem class, with its severity.
    KernelReport { class: String, severity: Severity },
    /// A monitored thread's completed syscall took this long (a program's histogram).
    SyscallSeconds { program: String, seconds: f64 },
}

/// What the daemon must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Stop the heartbeat, with this reason (and send the last gasp if it was sent).
    StopHeartbeat { reason: String },
    /// The service is up at last: send the heartbeat.
    StartHeartbeat,
    /// Store and alert an incident. With `inspect`, first fill its stall details from
    /// what `/proc` shows of the thread now (before any stall signal can wake it).
    Record {
        incident: Box<Incident>,
        run_hook: bool,
        inspect: bool,
    },
    /// Send the stall signal to a process.
    Signal { pid: u32, signal: i32 },
    /// Measure a process the kernel side reported as forked by a target (undo with
    /// [`Reactions::not_followed`] if the kernel side cannot).
    Follow { pid: u32 },
    /// Stop measuring a process that is gone.
    Unfollow { pid: u32 },
    /// Count something in the metrics.
    Count(Count),
}

/// The outcome of a scan of the in-flight table.
#[derive(Debug, Default)]
pub struct Scan {
    pub effects: Vec<Effect>,
    /// CLOCK_MONOTONIC time of the earliest budget deadline still ahead, if any.
    pub next_deadline: Option<u64>,
}

/// The daemon's decisions, with the state they need.
pub struct Reactions {
    monitor: Monitor,
    /// What the config's targets pick (replaced by a reload).
    targets: TargetTable,
    rules: Arc<RuleSet>,
    assembler: Assembler,
    node_id: String,
    /// Last fatal-by-default signal for each monitored process, and when.
    recent_signals: HashMap<u32, (SignalDetails, u64)>,
    /// Last kernel fault line printed by each monitored process.
    fault_lines: HashMap<u32, String>,
    /// Processes already sent the stall signal.
    signalled: HashSet<u32>,
    /// True until the first process of a --comm/--cgroup target appears, when none ran
    /// at start: the heartbeat waits for the service.
    awaiting_first: bool,
    /// Since when nothing has stood in the way of resuming (for auto-resume).
    clear_since_ns: Option<u64>,
    /// Kernel messages taken in.
    kernel_lines: u64,
    /// Kernel log lines at level err or worse that no rule knows.
    unmatched_errors: u64,
    /// Threads in a syscall since before the probes attached, by tid.
    before_attach: BTreeMap<u32, BeforeAttach>,
    /// Problem lines the ring delivered lately (their keys): the log's copies of them
    /// are not lost.
    ring_seen: VecDeque<RingSeen>,
    /// Problem lines of the kernel's log the ring has not delivered (yet).
    unseen: Vec<Unseen>,
    /// When the kernel side last reported events it could not put in the ring.
    lost_at_ns: Option<u64>,
    /// Monitored processes the last sweep found gone: gone for good if the next one
    /// does too and their exit event has not come meanwhile.
    seen_gone: HashSet<u32>,
}

impl Reactions {
    /// Reactions for a node named `node_id`, monitoring `initial` (process, policy,
    /// program name) under `policies` (`DEFAULT_POLICY` first). With no initial process,
    /// the heartbeat waits for the service to start.
    pub fn new(
        node_id: String,
        policies: Vec<Policy>,
        targets: TargetTable,
        rules: Arc<RuleSet>,
        initial: &[(u32, usize, Option<String>)],
    ) -> Self {
        let mut monitor = Monitor::new(policies, initial.iter().map(|(p, pol, _)| (*p, *pol)));
        for (pid, policy, name) in initial {
            if let Some(name) = name {
                monitor.add_target(*pid, name, *policy);
            }
        }
        Reactions {
            monitor,
            targets,
            rules,
            assembler: Assembler::new(REPORT_QUIET.as_secs_f64()),
            node_id,
            recent_signals: HashMap::new(),
            fault_lines: HashMap::new(),
            signalled: HashSet::new(),
            awaiting_first: initial.is_empty(),
            clear_since_ns: None,
            kernel_lines: 0,
            unmatched_errors: 0,
            before_attach: BTreeMap::new(),
            ring_seen: VecDeque::new(),
            unseen: Vec::new(),
            lost_at_ns: None,
            seen_gone: HashSet::new(),
        }
    }

    /// Processes that ran before the probes attached (found at start, or by a reload's
    /// targets) may have threads inside a syscall that began unseen: find them, and judge
    /// them from now on (see [`BeforeAttach`]).
    pub fn adopt_running(&mut self, pids: &[u32], now_ns: u64, host: &impl Host) {
        for &tgid in pids {
            for tid in host.threads(tgid) {
                if self.before_attach.contains_key(&tid) || self.monitor.has_record(tid) {
                    continue;
                }
                if let Some(b) = BeforeAttach::look(tgid, tid, None, now_ns, host) {
                    self.before_attach.insert(tid, b);
                }
            }
        }
    }

    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// For a reload, which picks the monitored processes again.
    pub fn monitor_mut(&mut self) -> &mut Monitor {
        &mut self.monitor
    }

    pub fn targets(&self) -> &TargetTable {
        &self.targets
    }

    pub fn set_targets(&mut self, targets: TargetTable) {
        self.targets = targets;
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.rules = rules;
    }

    /// The heartbeat was stopped by a verdict before the daemon restarted, and no one
    /// resumed it: it stays stopped until an operator does, even when the service's
    /// first process appears.
    pub fn latched_before_restart(&mut self) {
        self.awaiting_first = false;
    }

    /// Whether the heartbeat waits for a first process of the service.
    pub fn awaiting_first(&self) -> bool {
        self.awaiting_first
    }

    /// The service is gone from the node while the heartbeat is sent (a reload dropped
    /// every target): wait for it again, as at a start.
    pub fn await_service(&mut self) {
        self.awaiting_first = true;
    }

    /// Kernel messages taken in so far.
    /// Kernel log lines at level err or worse (0-3) that no rule knows (a rule of class
    /// `none` knows its lines), counted by [`Reactions::on_kernel_log`]: the sign of a
    /// rule that is missing.
    pub fn unmatched_errors(&self) -> u64 {
        self.unmatched_errors
    }

    pub fn kernel_lines(&self) -> u64 {
        self.kernel_lines
    }

    /// What stands in the way of resuming the heartbeat (empty: nothing).
    pub fn resume_blockers(&self) -> Vec<String> {
        self.monitor.blockers()
    }

    fn incident(&self, kind: Kind, class: &str, summary: String) -> Incident {
        let now = crate::incidents::now_unix_ms();
        Incident {
            monitored: true,
            ..Incident::new(kind, class, summary, &self.node_id, now)
        }
    }

    /// An incident about process `pid` runs the exec hook unless its target opted out.
    fn record(&self, incident: Incident, inspect: bool) -> Effect {
        let run_hook = incident
            .pid
            .is_none_or(|pid| self.monitor.policy(pid).exec_hook);
        Effect::Record {
            incident: Box::new(incident),
            run_hook,
            inspect,
        }
    }

    /// A verdict stops the heartbeat; it is counted by cause.
    fn stop(stall: &Stall, out: &mut Vec<Effect>) {
        out.push(Effect::Count(Count::Verdict(stall.cause.clone())));
        out.push(Effect::StopHeartbeat {
            reason: format!(
                "thread {} ({}) of pid {}: {}",
                stall.tid, stall.comm, stall.pid, stall.reason
            ),
        });
    }

    /// The opt-in stall signal: once per process, never to one that is gone.
    fn stall_signal(&mut self, stall: &Stall, out: &mut Vec<Effect>) {
        let Some(signal) = self.monitor.policy(stall.pid).stall_signal else {
            return;
        };
        if stall.cause != "exited" && self.signalled.insert(stall.pid) {
            out.push(Effect::Signal {
                pid: stall.pid,
                signal,
            });
        }
    }

    /// A verdict from the kernel's word (a report, the hung-task detector): stop the
    /// heartbeat, then the stall signal.
    fn kernel_verdict(&mut self, stall: &Stall, out: &mut Vec<Effect>) {
        Self::stop(stall, out);
        self.stall_signal(stall, out);
    }

    /// Take in a scan of the in-flight table at `now_ns`: every monitored thread's
    /// record (tid, record). Threads not in it are gone.
    pub fn on_scan(
        &mut self,
        entries: &[(u32, SyscallRecord)],
        now_ns: u64,
        host: &impl Host,
    ) -> Scan {
        let mut effects = Vec::new();
        let mut stalls = Vec::new();
        // The threads seen (each once: the kernel side keeps one record per thread).
        let mut seen = Vec::with_capacity(entries.len());
        let mut next_deadline: Option<u64> = None;
        let mut earliest =
            |d: Option<u64>| next_deadline = next_deadline.into_iter().chain(d).min();
        for (tid, rec) in entries {
            // Most threads of an idle service: nothing new since the last scan. (Only
            // targets' threads are ever settled.)
            if let Some(deadline) = self.monitor.settled(*tid, rec, now_ns) {
                seen.push(*tid);
                earliest(deadline);
                continue;
            }
            if !self.monitor.is_target(rec.tgid) {
                continue;
            }
            seen.push(*tid);
            // The kernel side has seen it now: its syscall before attach is over.
            self.before_attach.remove(tid);
            // Each thread's last completed syscall, once, for the histogram.
            if self.monitor.completed_since_observed(*tid, rec)
                && let Some(name) = self.monitor.program(rec.tgid)
            {
                effects.push(Effect::Count(Count::SyscallSeconds {
                    program: name.to_owned(),
                    seconds: rec.last_duration_ns as f64 / 1e9,
                }));
            }
            let stall = self.monitor.observe(
                *tid,
                rec,
                now_ns,
                |tgid, tid, nr| fd_kind_now(host, tgid, tid, nr),
                |tgid, tid| host.comm(tgid, tid),
            );
            stalls.extend(stall);
            earliest(self.monitor.deadline_of(*tid, now_ns));
        }
        let from = seen.len();
        self.judge_before_attach(now_ns, host, &mut seen, &mut stalls);
        for &tid in &seen[from..] {
            earliest(self.monitor.deadline_of(tid, now_ns));
        }
        // Every thread seen is in the monitor's table; the same count means none is gone
        // (the usual scan: no walk of the table).
        if seen.len() != self.monitor.thread_count() {
            seen.sort_unstable();
            self.monitor
                .retain_threads(|tid| seen.binary_search(&tid).is_ok());
        }
        for stall in &stalls {
            self.on_budget_stall(stall, &mut effects);
        }
        Scan {
            effects,
            next_deadline,
        }
    }

    /// Judge the threads in a syscall since before the probes attached, looking at those
    /// that are due in /proc again; each one judged is added to `seen`.
    fn judge_before_attach(
        &mut self,
        now_ns: u64,
        host: &impl Host,
        seen: &mut Vec<u32>,
        stalls: &mut Vec<Stall>,
    ) {
        let tids: Vec<u32> = self.before_attach.keys().copied().collect();
        for tid in tids {
            let b = self.before_attach[&tid];
            let tgid = b.record.tgid;
            let current = if now_ns < b.next_look_ns {
                Some(b)
            } else {
                BeforeAttach::look(tgid, tid, Some(&b), now_ns, host)
            };
            let Some(current) = current.filter(|_| self.monitor.is_target(tgid)) else {
                self.before_attach.remove(&tid);
                continue;
            };
            self.before_attach.insert(tid, current);
            seen.push(tid);
            let stall = self.monitor.observe(
                tid,
                &current.record,
                now_ns,
                |tgid, tid, nr| fd_kind_now(host, tgid, tid, nr),
                |tgid, tid| host.comm(tgid, tid),
            );
            if let Some(mut stall) = stall {
                stall
                    .reason
                    .push_str(" (in flight since before the watchdog started: at least that long)");
                stalls.push(stall);
            }
        }
    }

    /// A syscall overran its budget: stop the heartbeat, record what `/proc` shows of the
    /// thread, and only then send the stall signal (it wakes a killable sleep, and the
    /// incident must show the stall, not the thread dying of the signal).
    fn on_budget_stall(&mut self, stall: &Stall, out: &mut Vec<Effect>) {
        Self::stop(stall, out);
        let (pid, tid) = (stall.pid, stall.tid);
        let summary = format!(
            "thread {tid} ({}) of pid {pid}: {}",
            stall.comm, stall.reason
        );
        let mut inc = self.incident(Kind::SyscallStall, "stall", summary);
        inc.stopped_heartbeat = true;
        inc.pid = Some(pid);
        inc.tid = Some(tid);
        inc.comm = Some(stall.comm.clone());
        inc.stall = Some(StallDetails {
            syscall: stall.syscall.clone(),
            elapsed_ms: stall.elapsed_ms,
            budget_ms: stall.budget_ms,
            reason: stall.reason.clone(),
            state: None,
            wchan: None,
            args: Vec::new(),
            kernel_stack: Vec::new(),
        });
        out.push(self.record(inc, true));
        self.stall_signal(stall, out);
    }

    /// A kernel message. Classified once, here: the verdict on the monitored threads
    /// and the report assembly both take that one classification.
    pub fn on_kernel_line(&mut self, line: &KernelLine, host: &impl Host) -> Vec<Effect> {
        self.kernel_lines += 1;
        let mut out = Vec::new();
        let rules = self.rules.clone();
        let class = rules.classify_text(&line.text);
        let verdict = self.monitor.on_kernel_line(
            &class,
            line,
            |tid| host.named_by_kernel(tid),
            |tid| host.tgid_of(tid),
        );
        match &verdict {
            LineVerdict::Stall(stall) => {
                out.push(Effect::Count(Count::KernelReport {
                    class: stall.cause.clone(),
                    severity: class.severity,
                }));
                self.kernel_verdict(stall, &mut out);
            }
            LineVerdict::Alert { class: c, .. } => {
                out.push(Effect::Count(Count::KernelReport {
                    class: c.as_str().to_owned(),
                    severity: class.severity,
                }));
            }
            LineVerdict::Ordinary => {}
        }
        if class.class != Class::None {
            let seen = RingSeen {
                key: line_key(&line.text),
                cut: line.truncated,
            };
            // Delivered after the log showed it: not lost.
            match self.unseen.iter().position(|u| seen.is(&u.key)) {
                Some(i) => {
                    self.unseen.remove(i);
                }
                None => {
                    if self.ring_seen.len() == RING_SEEN_MAX {
                        self.ring_seen.pop_front();
                    }
                    self.ring_seen.push_back(seen);
                }
            }
        }
        if self.monitor.is_target(line.tgid) && FAULT_LINE.is_match(&line.text) {
            self.fault_lines.insert(line.tgid, line.text.clone());
        }
        let reports = self.assembler.push_classified(
            &class,
            Line {
                text: &line.text,
                time: Some(line.ts_ns as f64 / 1e9),
                stream: u64::from(line.tid),
                printer: Some(Printer {
                    pid: line.tgid,
                    tid: line.tid,
                    comm: line.comm.clone(),
                }),
            },
        );
        for r in reports {
            out.push(self.on_report(r, host));
        }
        out
    }

    /// The kernel side could not put some events in the ring (it was full): what was
    /// lost is looked for, in the kernel's log ([`Reactions::on_kernel_log`]) and in
    /// `/proc` ([`Reactions::sweep`]).
    pub fn events_lost(&mut self, now_ns: u64) {
        self.lost_at_ns = Some(now_ns);
    }

    /// Lines read from the kernel's log (`/dev/kmsg`) since the last call. The problem
    /// lines the ring delivered are matched off; the others wait a grace period for the
    /// ring, then, if events were lost meanwhile, are taken as lost from it and judged
    /// here (see [`Reactions::check_unseen`]).
    /// `lines` are (console level, text). Each is classified once, for both jobs.
    pub fn on_kernel_log<'a>(
        &mut self,
        lines: impl IntoIterator<Item = (u8, &'a str)>,
        now_ns: u64,
    ) {
        for (level, text) in lines {
            let c = self.rules.classify(text);
            if c.is_unmatched_error(level) {
                self.unmatched_errors += 1;
            }
            if c.class == Class::None {
                continue;
            }
            let key = line_key(text);
            if let Some(i) = self.ring_seen.iter().position(|seen| seen.is(&key)) {
                self.ring_seen.remove(i);
                continue;
            }
            self.unseen.push(Unseen {
                key,
                text: text.to_owned(),
                logged_ns: now_ns,
            });
        }
    }

    /// Problem lines of the kernel's log that the ring never delivered: when events
    /// were lost since shortly before they were logged, they are judged as the ring
    /// would have had them judged, as far as their text tells whom they are about. One
    /// that says it stops the heartbeat but names no one stops it: when in doubt, stop.
    pub fn check_unseen(&mut self, now_ns: u64, host: &impl Host) -> Vec<Effect> {
        let mut out = Vec::new();
        let (due, waiting): (Vec<Unseen>, Vec<Unseen>) = std::mem::take(&mut self.unseen)
            .into_iter()
            .partition(|u| now_ns.saturating_sub(u.logged_ns) > RING_GRACE_NS);
        self.unseen = waiting;
        for u in due {
            let lost = self
                .lost_at_ns
                .is_some_and(|at| at + RING_GRACE_NS >= u.logged_ns);
            if lost {
                self.on_lost_line(&u.text, now_ns, host, &mut out);
            }
        }
        out
    }

    /// A problem line the ring dropped, read back from the kernel's log.
    fn on_lost_line(&mut self, text: &str, now_ns: u64, host: &impl Host, out: &mut Vec<Effect>) {
        let rules = self.rules.clone();
        let c = rules.classify(text);
        let stripped = prefix::strip(text).text;
        out.push(Effect::Count(Count::KernelReport {
            class: c.class.as_str().to_owned(),
            severity: c.severity,
        }));
        let subject = line_subject(c.class, stripped, None)
            .and_then(|s| s.in_view(|pid| host.named_by_kernel(pid)));
        let tgid = subject.as_ref().and_then(|s| self.tgid_of(s.pid, host));
        let monitored = tgid.is_some_and(|t| self.monitor.is_target(t));
        let stops = c.action == Action::StopHeartbeat;
        let rule = c.rule_id().unwrap_or("-");
        let mut inc = self.incident(
            Kind::KernelReport,
            c.class.as_str(),
            format!("read back from the kernel log (the event ring dropped it): {stripped}"),
        );
        inc.monitored = monitored;
        inc.pid = tgid;
        inc.tid = subject.as_ref().map(|s| s.pid);
        inc.comm = subject.as_ref().and_then(|s| s.comm.clone());
        inc.report = assemble_log(&rules, text).into_iter().next();
        match (&subject, tgid) {
            (Some(subject), Some(tgid)) if monitored && stops => {
                let reason = format!(
                    "kernel reported {} (rule {rule}) naming this thread, read back from the kernel log after events were lost: {stripped}",
                    c.class
                );
                let stall = self.monitor.kernel_stall(
                    subject.pid,
                    tgid,
                    subject.comm.clone(),
                    c.class.as_str(),
                    reason,
                    now_ns,
                );
                if let Some(stall) = stall {
                    self.kernel_verdict(&stall, out);
                    inc.stopped_heartbeat = true;
                }
            }
            (None, _) if stops => {
                out.push(Effect::Count(Count::Verdict(c.class.as_str().to_owned())));
                out.push(Effect::StopHeartbeat {
                    reason: format!(
                        "kernel events were lost, and the kernel reported {} (rule {rule}) in a line that does not say about whom, so it may have been a monitored thread: {stripped}",
                        c.class
                    ),
                });
                inc.stopped_heartbeat = true;
            }
            _ => {}
        }
        out.push(self.record(inc, false));
    }

    /// Monitored processes that are gone without their exit being seen (the ring
    /// dropped it): gone at two sweeps in a row (the ring's own exit event, with the
    /// signal that explains it, is given that long to come), each is gone as if the exit
    /// had come.
    pub fn sweep(&mut self, now_ns: u64, host: &impl Host) -> Vec<Effect> {
        let gone_now: HashSet<u32> = self
            .monitor
            .targets()
            .filter(|pid| !host.alive(*pid))
            .collect();
        let gone: Vec<u32> = gone_now.intersection(&self.seen_gone).copied().collect();
        self.seen_gone = gone_now;
        let mut out = Vec::new();
        for pid in gone {
            let comm = self.monitor.program(pid).unwrap_or("?").to_owned();
            out.extend(self.on_exit(
                ThreadExit {
                    tgid: pid,
                    tid: pid,
                    comm,
                    ts_ns: now_ns,
                    group_dead: true,
                },
                host,
            ));
        }
        out
    }

    /// Kernel reports that went quiet by `now_ns` are complete: record them.
    pub fn expire_reports(&mut self, now_ns: u64, host: &impl Host) -> Vec<Effect> {
        let done = self.assembler.expire(now_ns as f64 / 1e9);
        done.into_iter().map(|r| self.on_report(r, host)).collect()
    }

    /// The daemon stops: reports still being assembled are recorded as they are.
    pub fn finish_reports(&mut self, host: &impl Host) -> Vec<Effect> {
        let open = self.assembler.finish();
        open.into_iter().map(|r| self.on_report(r, host)).collect()
    }

    /// The process of thread `tid`: as the monitor knows it, else as the host says.
    fn tgid_of(&self, tid: u32, host: &impl Host) -> Option<u32> {
        self.monitor.known_tgid(tid).or_else(|| host.tgid_of(tid))
    }

    /// A complete kernel report, recorded with whom it is about.
    fn on_report(&self, report: Report, host: &impl Host) -> Effect {
        let subject = report
            .subject()
            .and_then(|s| s.in_view(|pid| host.named_by_kernel(pid)));
        let tgid = subject
            .as_ref()
            .and_then(|s| match (&s.how[..], &report.printer) {
                ("printer", Some(p)) => Some(p.pid),
                _ => self.tgid_of(s.pid, host),
            });
        let monitored = tgid.is_some_and(|t| self.monitor.is_target(t));
        let mut inc = self.incident(Kind::KernelReport, report.class.as_str(), report.summary());
        inc.monitored = monitored;
        inc.stopped_heartbeat = monitored && report.action == Action::StopHeartbeat;
        inc.pid = tgid;
        inc.tid = subject.as_ref().map(|s| s.pid);
        inc.comm = subject.and_then(|s| s.comm);
        inc.report = Some(report);
        self.record(inc, false)
    }

    /// A structured kernel event about a task.
    pub fn on_task_event(&mut self, ev: TaskEvent, host: &impl Host) -> Vec<Effect> {
        let mut out = Vec::new();
        match ev.kind {
            TaskEventKind::Hang => {
                let Some(tgid) = ev
                    .target_tgid
                    .or_else(|| self.tgid_of(ev.target, host))
                    .filter(|t| self.monitor.is_target(*t))
                else {
                    return out;
                };
                let comm = host.comm(tgid, ev.target);
                let reason = "kernel hung-task detector: blocked in uninterruptible sleep past hung_task_timeout_secs".to_owned();
                let Some(stall) = self.monitor.kernel_stall(
                    ev.target,
                    tgid,
                    comm.clone(),
                    "hung_task",
                    reason.clone(),
                    ev.ts_ns,
                ) else {
                    return out;
                };
                self.kernel_verdict(&stall, &mut out);
                let summary = format!(
                    "thread {} ({}) of pid {tgid}: {reason}",
                    ev.target,
                    comm.as_deref().unwrap_or("?")
                );
                let mut inc = self.incident(Kind::HungTask, "hung_task", summary);
                inc.stopped_heartbeat = true;
                inc.pid = Some(tgid);
                inc.tid = Some(ev.target);
                inc.comm = comm;
                out.push(self.record(inc, false));
            }
            TaskEventKind::NewTarget => {
                // The kernel side made it a target at exec, before its first syscall, by
                // its name or cgroup: it is the service only if it is who the target
                // says (a name is no identity: any user may run a program of any name).
                let policy = self.targets.policy_for(
                    ev.target,
                    Some(&ev.by_comm),
                    || host.cgroup_id(ev.target),
                    || host.identity(ev.target),
                );
                let Some(policy) = policy else {
                    tracing::info!(
                        pid = ev.target,
                        comm = %ev.by_comm,
                        "a program of a watched name that is not the service (another user, or another executable): not monitored"
                    );
                    out.push(Effect::Unfollow { pid: ev.target });
                    return out;
                };
                out.extend(self.new_target(
                    ev.target,
                    &ev.by_comm,
                    policy,
                    "exec'd a watched program or in a watched cgroup",
                ));
            }
            TaskEventKind::Forked => {
                // Threads of a target are measured already; a new process is measured
                // too, as a child: its exit is not the service's.
                // A child that ended already (short-lived helpers often have by the time
                // we hear of them) is not followed: no exit event would ever come for it.
                if host.tgid_of(ev.target) != Some(ev.target)
                    || self.monitor.is_target(ev.target)
                    || !host.alive(ev.target)
                {
                    return out;
                }
                self.monitor.add_child(ev.target, ev.by_tgid);
                tracing::debug!(
                    pid = ev.target,
                    parent = ev.by_tgid,
                    "monitoring a forked child"
                );
                out.push(Effect::Follow { pid: ev.target });
            }
            TaskEventKind::OomVictim => {
                if !self.monitor.is_target(ev.target) {
                    return out;
                }
                let comm = host.comm(ev.target, ev.target);
                let summary = format!(
                    "the OOM killer chose monitored process {} ({})",
                    ev.target,
                    comm.as_deref().unwrap_or("?")
                );
                let mut inc = self.incident(Kind::OomVictim, "oom", summary);
                inc.pid = Some(ev.target);
                inc.comm = comm;
                out.push(self.record(inc, false));
            }
            TaskEventKind::Signal { sig, code } => {
                let Some(tgid) = ev.target_tgid.or_else(|| self.tgid_of(ev.target, host)) else {
                    return out;
                };
                let details = SignalDetails {
                    signal: signal_name(sig),
                    signo: sig,
                    code,
                    code_meaning: signal_code_meaning(sig, code),
                    target_tid: ev.target,
                    sender_pid: ev.by_tgid,
                    sender_comm: ev.by_comm,
                    fault_line: None,
                };
                // Handled signals are common (a JVM takes SIGSEGV for null checks), so a
                // signal alone is no crash: it explains a death that follows it.
                self.recent_signals.insert(tgid, (details, ev.ts_ns));
            }
        }
        out
    }

    /// The kernel side could not measure a forked child: it is no target after all.
    pub fn not_followed(&mut self, pid: u32) {
        self.monitor.remove_target(pid);
    }

    /// Process `tgid` (program `comm`) is picked by a target, with policy `policy`.
    /// The first one to appear while the heartbeat waits for the service starts it.
    pub fn new_target(&mut self, tgid: u32, comm: &str, policy: usize, how: &str) -> Vec<Effect> {
        if !self.monitor.add_target(tgid, comm, policy) {
            return Vec::new();
        }
        tracing::info!(pid = tgid, comm, how, "monitoring a new process");
        if std::mem::take(&mut self.awaiting_first) {
            tracing::info!(pid = tgid, "the service is up: sending the heartbeat");
            return vec![Effect::StartHeartbeat];
        }
        Vec::new()
    }

    /// A thread exited; with `group_dead`, its whole process is gone.
    pub fn on_exit(&mut self, exit: ThreadExit, host: &impl Host) -> Vec<Effect> {
        let mut out = Vec::new();
        self.monitor.forget(exit.tid);
        self.before_attach.remove(&exit.tid);
        if !exit.group_dead || !self.monitor.is_target(exit.tgid) {
            return out;
        }
        let signal = self
            .recent_signals
            .remove(&exit.tgid)
            .filter(|(_, at)| exit.ts_ns.saturating_sub(*at) <= CRASH_WINDOW_NS);
        let fault = self.fault_lines.remove(&exit.tgid);
        // How it ended: the zombie's wait status while it is there, else the fatal
        // signal we saw, else we cannot tell.
        let how = host
            .exit_status(exit.tgid)
            .unwrap_or_else(|| match &signal {
                Some((s, _)) => format!("was killed by {} ({})", s.signal, s.code_meaning),
                None => "exited (status unknown: already reaped)".into(),
            });
        // Read before the process stops being a target.
        let run_hook = self.monitor.policy(exit.tgid).exec_hook;
        let gone = self
            .monitor
            .process_gone(exit.tgid, &exit.comm, &how, exit.ts_ns);
        self.signalled.remove(&exit.tgid);
        let Some(stall) = gone else {
            // A child a target forked has ended: that is no verdict.
            tracing::debug!(pid = exit.tgid, how = %how, "monitored child process ended");
            out.push(Effect::Unfollow { pid: exit.tgid });
            return out;
        };
        Self::stop(&stall, &mut out);
        out.push(Effect::Unfollow { pid: exit.tgid });
        tracing::warn!(pid = exit.tgid, comm = %exit.comm, how = %how, "monitored process is gone");
        if let Some((mut details, _)) = signal {
            details.fault_line = fault;
            let summary = format!(
                "pid {} ({}) died of {} ({}) from pid {} ({})",
                exit.tgid,
                exit.comm,
                details.signal,
                details.code_meaning,
                details.sender_pid,
                details.sender_comm
            );
            let mut inc = self.incident(Kind::Crash, "crash", summary);
            inc.pid = Some(exit.tgid);
            inc.tid = Some(details.target_tid);
            inc.comm = Some(exit.comm);
            inc.signal = Some(details);
            out.push(Effect::Record {
                incident: Box::new(inc),
                run_hook,
                inspect: false,
            });
        }
        out
    }

    /// The opt-in auto-resume, asked every tick: resume once nothing has stood in the way
    /// of resuming for `after` (`None`: not configured). `sending`: the heartbeat is
    /// sent now; `daemon_blocker`: the daemon's own reason not to resume (its reader or
    /// scanner made no progress), if any.
    pub fn auto_resume(
        &mut self,
        now_ns: u64,
        after: Option<Duration>,
        sending: bool,
        daemon_blocker: Option<&str>,
    ) -> bool {
        let Some(after) = after else {
            self.clear_since_ns = None;
            return false;
        };
        let blocked =
            self.awaiting_first || daemon_blocker.is_some() || !self.monitor.blockers().is_empty();
        if sending || blocked {
            self.clear_since_ns = None;
            return false;
        }
        let since = *self.clear_since_ns.get_or_insert(now_ns);
        if now_ns.saturating_sub(since) >= after.as_nanos() as u64 {
            self.clear_since_ns = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use syscalls::Sysno;
    use watchdog_common::NOT_IN_SYSCALL;

    use super::*;
    use crate::judging::{
        policy::{Budgets, DEFAULT_POLICY},
        targets::{Identity, Selector, TargetSpec},
        test_records::in_flight,
    };

    const MS: u64 = 1_000_000;
    const SVC: u32 = 100;
    const OTHER: u32 = 900;

    /// `/proc` as a table: threads to processes, names, zombies' statuses, cgroups.
    #[derive(Default)]
    struct FakeHost {
        tgids: BTreeMap<u32, u32>,
        comms: BTreeMap<u32, String>,
        statuses: BTreeMap<u32, String>,
        cgroups: BTreeMap<u32, u64>,
        /// Threads in a syscall: (nr, state, run_ns, switches).
        in_syscall: std::cell::RefCell<BTreeMap<u32, (u32, char, u64, u64)>>,
        /// Processes gone from /proc.
        dead: std::cell::RefCell<HashSet<u32>>,
    }

    impl Host for FakeHost {
        fn tgid_of(&self, tid: u32) -> Option<u32> {
            self.tgids.get(&tid).copied()
        }
        fn comm(&self, _tgid: u32, tid: u32) -> Option<String> {
            self.comms.get(&tid).cloned()
        }
        fn exit_status(&self, tgid: u32) -> Option<String> {
            self.statuses.get(&tgid).cloned()
        }
        fn cgroup_id(&self, pid: u32) -> Option<u64> {
            self.cgroups.get(&pid).copied()
        }
        fn fd_kind(&self, _tgid: u32, _fd: u64) -> Option<FdKind> {
            Some(FdKind::Stream)
        }
        fn threads(&self, tgid: u32) -> Vec<u32> {
            self.tgids
                .iter()
                .filter(|(_, t)| **t == tgid)
                .map(|(tid, _)| *tid)
                .collect()
        }
        fn syscall_now(&self, _tgid: u32, tid: u32) -> Option<(u32, u64)> {
            self.in_syscall.borrow().get(&tid).map(|(nr, ..)| (*nr, 3))
        }
        fn state(&self, _tgid: u32, tid: u32) -> Option<char> {
            Some(self.in_syscall.borrow().get(&tid).map_or('S', |s| s.1))
        }
        fn run_stats(&self, _tgid: u32, tid: u32) -> Option<(u64, u64)> {
            self.in_syscall.borrow().get(&tid).map(|s| (s.2, s.3))
        }
        fn alive(&self, pid: u32) -> bool {
            !self.dead.borrow().contains(&pid)
        }
        fn identity(&self, pid: u32) -> Option<ProcIdentity> {
            Some(ProcIdentity {
                uid: if pid == OTHER { 1000 } else { 0 },
                exe: (1, 1),
            })
        }
    }

    fn host() -> FakeHost {
        let mut h = FakeHost::default();
        for (tid, tgid, comm) in [
            (SVC, SVC, "svc"),
            (SVC + 1, SVC, "stuck"),
            (OTHER, OTHER, "other"),
        ] {
            h.tgids.insert(tid, tgid);
            h.comms.insert(tid, comm.into());
        }
        h
    }

    fn policy(budget_ms: u64, stall_signal: Option<i32>, exec_hook: bool) -> Policy {
        Policy {
            budgets: Budgets::uniform(Duration::from_millis(budget_ms)),
            stall_signal,
            exec_hook,
            stopped_budget: Duration::from_secs(5),
        }
    }

    /// Reactions monitoring process SVC with a 300 ms budget and no options.
    fn reactions() -> Reactions {
        reactions_with(vec![policy(300, None, true)])
    }

    fn reactions_with(policies: Vec<Policy>) -> Reactions {
        Reactions::new(
            "node-a".into(),
            policies,
            TargetTable::default(),
            Arc::new(RuleSet::builtin()),
            &[(SVC, DEFAULT_POLICY, Some("svc".into()))],
        )
    }

    fn record(tgid: u32, nr: Sysno, enter_ns: u64, sched_state: u32) -> SyscallRecord {
        in_flight(tgid, Some(nr as u32), enter_ns, sched_state)
    }

    fn kernel_line(tgid: u32, tid: u32, comm: &str, ts_ns: u64, text: &str) -> KernelLine {
        KernelLine {
            tgid,
            tid,
            comm: comm.into(),
            ts_ns,
            text: text.into(),
            truncated: false,
        }
    }

    fn exit(tgid: u32, ts_ns: u64) -> ThreadExit {
        ThreadExit {
            tgid,
            tid: tgid,
            comm: "svc".into(),
            ts_ns,
            group_dead: true,
        }
    }

    fn task_event(kind: TaskEventKind, target: u32, by: u32, ts_ns: u64) -> TaskEvent {
        TaskEvent {
            kind,
            target,
            target_tgid: None,
            by_tgid: by,
            by_tid: by,
            by_comm: "sender".into(),
            ts_ns,
        }
    }

    fn stop_reason(effects: &[Effect]) -> Option<&str> {
        effects.iter().find_map(|e| match e {
            Effect::StopHeartbeat { reason } => Some(reason.as_str()),
            _ => None,
        })
    }

    fn recorded(effects: &[Effect]) -> Vec<(&Incident, bool, bool)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Record {
                    incident,
                    run_hook,
                    inspect,
                } => Some((incident.as_ref(), *run_hook, *inspect)),
                _ => None,
            })
            .collect()
    }

    /// The effects other than counts, in order, by name.
    fn shape(effects: &[Effect]) -> Vec<&'static str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::StopHeartbeat { .. } => Some("stop"),
                Effect::StartHeartbeat => Some("start"),
                Effect::Record { .. } => Some("record"),
                Effect::Signal { .. } => Some("signal"),
                Effect::Follow { .. } => Some("follow"),
                Effect::Unfollow { .. } => Some("unfollow"),
                Effect::Count(_) => None,
            })
            .collect()
    }

    const D_STATE: u32 = watchdog_common::sched::UNINTERRUPTIBLE;
    const S_STATE: u32 = watchdog_common::sched::INTERRUPTIBLE;

    #[test]
    fn a_syscall_stuck_past_its_budget_stops_the_heartbeat_first_then_records_then_signals() {
        let mut r = reactions_with(vec![policy(300, Some(libc::SIGQUIT), true)]);
        let h = host();
        let stuck = [(SVC + 1, record(SVC, Sysno::vfork, 1_000 * MS, D_STATE))];
        // Within the budget: nothing, and the scanner is told when to look again.
        let scan = r.on_scan(&stuck, 1_200 * MS, &h);
        assert!(scan.effects.is_empty(), "{:?}", scan.effects);
        assert_eq!(scan.next_deadline, Some(1_300 * MS));
        // Past it: stop, record (with /proc looked at before the signal), signal.
        let scan = r.on_scan(&stuck, 1_301 * MS, &h);
        assert_eq!(shape(&scan.effects), ["stop", "record", "signal"]);
        let reason = stop_reason(&scan.effects).unwrap();
        assert!(
            reason.starts_with("thread 101 (stuck) of pid 100: vfork"),
            "{reason}"
        );
        let (inc, run_hook, inspect) = recorded(&scan.effects)[0];
        assert_eq!(inc.kind, Kind::SyscallStall);
        assert!(inspect && run_hook && inc.stopped_heartbeat);
        assert_eq!((inc.pid, inc.tid), (Some(SVC), Some(SVC + 1)));
        let details = inc.stall.as_ref().unwrap();
        assert_eq!(details.syscall.as_deref(), Some("vfork"));
        assert_eq!(details.budget_ms, 300);
        assert!(
            scan.effects
                .contains(&Effect::Count(Count::Verdict("syscall-budget".into())))
        );
        assert!(scan.effects.contains(&Effect::Signal {
            pid: SVC,
            signal: libc::SIGQUIT
        }));
        // One stuck syscall is one verdict; resuming is refused while it lasts.
        let scan = r.on_scan(&stuck, 1_500 * MS, &h);
        assert!(shape(&scan.effects).is_empty(), "{:?}", scan.effects);
        assert!(r.resume_blockers()[0].contains("thread 101 of pid 100 is stalled"));
        // It returns: resuming is allowed (the heartbeat stays latched until then).
        let mut done = stuck[0].1;
        done.nr = NOT_IN_SYSCALL;
        r.on_scan(&[(SVC + 1, done)], 1_600 * MS, &h);
        assert!(r.resume_blockers().is_empty(), "{:?}", r.resume_blockers());
    }

    #[test]
    fn the_stall_signal_goes_once_per_process_and_only_where_configured() {
        let mut r = reactions_with(vec![policy(300, Some(libc::SIGQUIT), true)]);
        let h = host();
        let two = [
            (SVC + 1, record(SVC, Sysno::vfork, 0, D_STATE)),
            (SVC + 2, record(SVC, Sysno::fsync, 0, D_STATE)),
        ];
        let scan = r.on_scan(&two, 400 * MS, &h);
        assert_eq!(
            shape(&scan.effects),
            ["stop", "record", "signal", "stop", "record"]
        );
        let mut plain = reactions();
        let scan = plain.on_scan(&two[..1], 400 * MS, &h);
        assert_eq!(shape(&scan.effects), ["stop", "record"]);
    }

    #[test]
    fn idle_waits_never_stop_the_heartbeat() {
        let mut r = reactions();
        let h = host();
        let idle: Vec<(u32, SyscallRecord)> = [Sysno::epoll_wait, Sysno::futex, Sysno::nanosleep]
            .into_iter()
            .enumerate()
            .map(|(i, nr)| (SVC + 1 + i as u32, record(SVC, nr, 0, S_STATE)))
            .collect();
        let scan = r.on_scan(&idle, 60_000 * MS, &h);
        assert!(scan.effects.is_empty(), "{:?}", scan.effects);
        assert!(r.resume_blockers().is_empty());
    }

    #[test]
    fn a_syscall_stuck_since_before_the_probes_attached_is_judged_from_attach() {
        let mut r = reactions();
        let h = host();
        // Thread 101 sleeps in D in vfork, thread 100 idles in epoll_wait: both began
        // before the probes attached, so the kernel side has no record of either.
        h.in_syscall
            .borrow_mut()
            .insert(SVC + 1, (Sysno::vfork as u32, 'D', 1_000, 7));
        h.in_syscall
            .borrow_mut()
            .insert(SVC, (Sysno::epoll_wait as u32, 'S', 5_000, 40));
        r.adopt_running(&[SVC], 10_000 * MS, &h);
        let scan = r.on_scan(&[], 10_200 * MS, &h);
        assert!(scan.effects.is_empty(), "{:?}", scan.effects);
        assert_eq!(scan.next_deadline, Some(10_300 * MS), "judged from attach");
        let scan = r.on_scan(&[], 10_301 * MS, &h);
        assert_eq!(shape(&scan.effects), ["stop", "record"]);
        let reason = stop_reason(&scan.effects).unwrap();
        assert!(
            reason.starts_with("thread 101 (stuck) of pid 100: vfork"),
            "{reason}"
        );
        assert!(
            reason.ends_with("(in flight since before the watchdog started: at least that long)"),
            "{reason}"
        );
        assert!(r.resume_blockers()[0].contains("thread 101 of pid 100 is stalled"));
        // The idle wait is never a stall; once its thread makes a syscall the kernel
        // side records, /proc is no longer asked.
        let scan = r.on_scan(&[], 60_000 * MS, &h);
        assert!(shape(&scan.effects).is_empty());
        let mut rec = record(SVC, Sysno::epoll_wait, 60_001 * MS, S_STATE);
        rec.tid = SVC;
        h.in_syscall.borrow_mut().clear();
        r.on_scan(&[(SVC, rec)], 60_002 * MS, &h);
        assert!(!r.before_attach.contains_key(&SVC));
        // The stuck thread returned: no longer in the syscall, no longer stalled.
        r.on_scan(&[(SVC, rec)], 70_000 * MS, &h);
        assert!(r.before_attach.is_empty());
        assert!(r.resume_blockers().is_empty(), "{:?}", r.resume_blockers());
    }

    #[test]
    fn a_thread_that_woke_since_the_first_look_is_asleep_only_since_then() {
        let mut r = reactions();
        let h = host();
        h.in_syscall
            .borrow_mut()
            .insert(SVC + 1, (Sysno::fsync as u32, 'D', 0, 7));
        r.adopt_running(&[SVC], 0, &h);
        // It woke (its switch count moved) and slept again in the same syscall: a
        // bounded syscall past its budget is a stall whatever its state.
        h.in_syscall
            .borrow_mut()
            .insert(SVC + 1, (Sysno::fsync as u32, 'D', 0, 9));
        let scan = r.on_scan(&[], 250 * MS, &h);
        assert!(scan.effects.is_empty());
        let scan = r.on_scan(&[], 301 * MS, &h);
        assert_eq!(shape(&scan.effects), ["stop", "record"]);
        assert!(stop_reason(&scan.effects).unwrap().contains("fsync"));
    }

    #[test]
    fn a_monitored_process_gone_without_its_exit_event_is_found_by_the_sweep() {
        let mut r = reactions();
        let h = host();
        assert!(r.sweep(0, &h).is_empty());
        h.dead.borrow_mut().insert(SVC);
        assert!(
            r.sweep(1_000 * MS, &h).is_empty(),
            "its exit event may still come"
        );
        let out = r.sweep(2_000 * MS, &h);
        assert_eq!(shape(&out), ["stop", "unfollow"]);
        assert!(
            stop_reason(&out)
                .unwrap()
                .contains("monitored process 100 (svc) exited")
        );
        assert!(r.sweep(3_000 * MS, &h).is_empty(), "once");
    }

    #[test]
    fn log_lines_the_ring_delivered_are_not_lost_whatever_the_order() {
        let mut r = reactions();
        let h = host();
        let bug = "watchdog-test: BUG: kernel NULL pointer dereference, address: 0000000000000008";
        // The ring first, then the log; and the log first, then the ring.
        r.on_kernel_line(&kernel_line(OTHER, OTHER, "other", 0, bug), &h);
        r.events_lost(0);
        let stamped = format!("[    1.000000] {bug}");
        r.on_kernel_log([(3, stamped.as_str()), (3, bug)], 0);
        r.on_kernel_line(&kernel_line(OTHER, OTHER, "other", 0, bug), &h);
        let out = r.check_unseen(3_000 * MS, &h);
        assert!(out.is_empty(), "{out:?}");
        // A line longer than a ring record: the ring's copy is cut, the log's is whole.
        let long = format!("{bug} {}", "x".repeat(600));
        let mut cut = kernel_line(OTHER, OTHER, "other", 0, &long[..500]);
        cut.truncated = true;
        r.on_kernel_line(&cut, &h);
        r.on_kernel_log([(3, long.as_str())], 0);
        assert!(r.check_unseen(3_000 * MS, &h).is_empty());
        // Benign lines are never kept.
        r.on_kernel_log([(6, "eth0: link up")], 4_000 * MS);
        assert!(r.unseen.is_empty());
    }

    #[test]
    fn log_lines_of_level_err_that_no_rule_knows_are_counted() {
        let mut r = reactions();
        let bug = "watchdog-test: BUG: kernel NULL pointer dereference, address: 0000000000000008";
        // Counted: level err or worse and no rule. Not: known ones, of any class (a rule
        // of class none knows its line), and quieter ones.
        r.on_kernel_log(
            [
                (3, "mydriver: firmware fell over"),
                (6, "mydriver: link up"),
                (3, "EXT4-fs error: 12 callbacks suppressed"),
                (2, bug),
            ],
            0,
        );
        assert_eq!(r.unmatched_errors(), 1);
    }

    #[test]
    fn a_problem_line_the_ring_dropped_is_judged_from_the_log() {
        let h = host();
        let hung = "INFO: task stuck:101 blocked for more than 120 seconds.";
        let bug = "watchdog-test: BUG: kernel NULL pointer dereference, address: 0000000000000008";
        // No loss: a line the ring has not delivered yet is only late, not lost.
        let mut r = reactions();
        r.on_kernel_log([(3, bug)], 0);
        assert!(r.check_unseen(3_000 * MS, &h).is_empty());
        // Events lost: a line naming a monitored thread stalls it, as from the ring.
        let mut r = reactions();
        r.on_kernel_log([(3, hung)], 1_000 * MS);
        r.events_lost(1_500 * MS);
        assert!(
            r.check_unseen(2_000 * MS, &h).is_empty(),
            "within the grace period"
        );
        let out = r.check_unseen(3_100 * MS, &h);
        assert_eq!(shape(&out), ["stop", "record"], "{out:?}");
        assert!(
            stop_reason(&out)
                .unwrap()
                .starts_with("thread 101 (stuck) of pid 100")
        );
        assert!(
            stop_reason(&out)
                .unwrap()
                .contains("read back from the kernel log")
        );
        // A line that stops the heartbeat but names no one: when in doubt, stop.
        let mut r = reactions();
        r.events_lost(0);
        r.on_kernel_log([(3, bug)], 500 * MS);
        let out = r.check_unseen(2_600 * MS, &h);
        assert_eq!(shape(&out), ["stop", "record"], "{out:?}");
        assert!(
            stop_reason(&out)
                .unwrap()
                .starts_with("kernel events were lost, and the kernel reported bug")
        );
        let (inc, _, _) = recorded(&out)[0];
        assert!(inc.stopped_heartbeat);
    }

    #[test]
    fn a_stop_is_fine_within_its_budget_and_a_stall_past_it_once_per_process() {
        let mut r = reactions();
        let h = host();
        let stop = |tid: u32, nr: Option<Sysno>| {
            let mut rec = record(SVC, Sysno::read, 0, watchdog_common::sched::STOPPED);
            rec.tid = tid;
            rec.switch_ns = 1_000 * MS;
            if nr.is_none() {
                rec.nr = NOT_IN_SYSCALL;
            }
            (tid, rec)
        };
        // SIGSTOP: one thread stopped in a read, one in user space. A tracer's short
        // stop, and a read over its syscall budget while stopped, are no stall.
        let both = [stop(SVC, Some(Sysno::read)), stop(SVC + 1, None)];
        let scan = r.on_scan(&both, 5_900 * MS, &h);
        assert!(scan.effects.is_empty(), "{:?}", scan.effects);
        assert_eq!(
            scan.next_deadline,
            Some(6_000 * MS),
            "the stop's budget ends"
        );
        // Frozen past the stopped budget (5 s): one verdict for the process.
        let scan = r.on_scan(&both, 6_001 * MS, &h);
        assert_eq!(shape(&scan.effects), ["stop", "record"]);
        let reason = stop_reason(&scan.effects).unwrap();
        assert!(
            reason.contains(
                "stopped (by a signal or a tracer) for 5001 ms, over the 5000 ms stopped budget"
            ),
            "{reason}"
        );
        assert!(
            scan.effects
                .contains(&Effect::Count(Count::Verdict("stopped".into())))
        );
        assert_eq!(r.resume_blockers().len(), 2, "{:?}", r.resume_blockers());
        assert!(r.on_scan(&both, 9_000 * MS, &h).effects.is_empty(), "once");
        // SIGCONT: running again, nothing blocks resuming.
        let mut running = both;
        for (_, rec) in running.iter_mut() {
            rec.on_cpu = true;
            rec.sched_state = 0;
            rec.switch_ns = 9_100 * MS;
            rec.nr = NOT_IN_SYSCALL;
        }
        r.on_scan(&running, 9_200 * MS, &h);
        assert!(r.resume_blockers().is_empty(), "{:?}", r.resume_blockers());
    }

    #[test]
    fn a_target_that_opts_out_of_the_hook_still_records_and_stops() {
        let mut r = reactions_with(vec![policy(300, None, false)]);
        let h = host();
        let stuck = [(SVC + 1, record(SVC, Sysno::fsync, 0, D_STATE))];
        let scan = r.on_scan(&stuck, 301 * MS, &h);
        assert_eq!(shape(&scan.effects), ["stop", "record"]);
        let (inc, run_hook, _) = recorded(&scan.effects)[0];
        assert!(!run_hook && inc.stopped_heartbeat);
    }

    #[test]
    fn threads_of_other_processes_and_gone_threads_are_not_judged() {
        let mut r = reactions();
        let h = host();
        let scan = r.on_scan(
            &[(OTHER, record(OTHER, Sysno::vfork, 0, D_STATE))],
            10_000 * MS,
            &h,
        );
        assert!(scan.effects.is_empty());
        r.on_scan(
            &[(SVC + 1, record(SVC, Sysno::vfork, 0, D_STATE))],
            100 * MS,
            &h,
        );
        // The thread left the table (it exited): its syscall is never judged.
        let scan = r.on_scan(&[], 10_000 * MS, &h);
        assert!(scan.effects.is_empty());
        assert_eq!(scan.next_deadline, None);
    }

    #[test]
    fn a_bug_printed_by_a_monitored_thread_stops_the_heartbeat_at_its_first_line() {
        let mut r = reactions();
        let h = host();
        let line = kernel_line(
            SVC,
            SVC + 1,
            "stuck",
            5_000 * MS,
            "watchdog-test: BUG: kernel NULL pointer dereference, address: 0000000000000000",
        );
        let out = r.on_kernel_line(&line, &h);
        assert_eq!(shape(&out), ["stop"], "{out:?}");
        assert!(out.contains(&Effect::Count(Count::KernelReport {
            class: "bug".into(),
            severity: Severity::Critical
        })));
        let reason = stop_reason(&out).unwrap();
        assert!(
            reason.contains("kernel reported bug") && reason.contains("in this thread"),
            "{reason}"
        );
        // The report is recorded once it goes quiet, as about the monitored thread.
        assert!(r.expire_reports(5_500 * MS, &h).is_empty());
        let out = r.expire_reports(6_100 * MS, &h);
        let (inc, run_hook, _) = recorded(&out)[0];
        assert_eq!(inc.kind, Kind::KernelReport);
        assert_eq!(inc.class, "bug");
        assert!(inc.monitored && inc.stopped_heartbeat && run_hook);
        assert_eq!(
            (inc.pid, inc.tid, inc.comm.as_deref()),
            (Some(SVC), Some(SVC + 1), Some("stuck"))
        );
        assert_eq!(r.kernel_lines(), 1);
        // The kernel said it is broken: it stays stalled.
        assert_eq!(r.resume_blockers().len(), 1);
    }

    #[test]
    fn a_bug_printed_by_another_process_only_alerts() {
        let mut r = reactions();
        let h = host();
        let line = kernel_line(OTHER, OTHER, "other", 0, "watchdog-test: BUG: not ours");
        let out = r.on_kernel_line(&line, &h);
        assert_eq!(shape(&out), Vec::<&str>::new());
        assert_eq!(
            out,
            [Effect::Count(Count::KernelReport {
                class: "bug".into(),
                severity: Severity::Critical
            })]
        );
        let out = r.finish_reports(&h);
        let (inc, _, _) = recorded(&out)[0];
        assert!(!inc.monitored && !inc.stopped_heartbeat);
        assert_eq!(inc.pid, Some(OTHER));
        assert!(r.resume_blockers().is_empty());
    }

    #[test]
    fn a_hung_task_line_naming_a_monitored_thread_stalls_it_whoever_prints_it() {
        let mut r = reactions();
        let h = host();
        let line = kernel_line(
            OTHER,
            OTHER,
            "khungtaskd",
            0,
            "watchdog-test: INFO: task stuck:101 blocked for more than 120 seconds.",
        );
        let out = r.on_kernel_line(&line, &h);
        assert_eq!(shape(&out), ["stop"], "{out:?}");
        assert!(
            stop_reason(&out)
                .unwrap()
                .starts_with("thread 101 (stuck) of pid 100")
        );
    }

    #[test]
    fn the_hung_task_detector_stalls_a_monitored_thread_once() {
        let mut r = reactions();
        let h = host();
        let ev = task_event(TaskEventKind::Hang, SVC + 1, 2, 0);
        let out = r.on_task_event(ev.clone(), &h);
        assert_eq!(shape(&out), ["stop", "record"]);
        let (inc, _, _) = recorded(&out)[0];
        assert_eq!(inc.kind, Kind::HungTask);
        assert!(inc.stopped_heartbeat);
        assert!(r.on_task_event(ev, &h).is_empty());
        // Not about us: nothing.
        let mut r = reactions();
        assert!(
            r.on_task_event(task_event(TaskEventKind::Hang, OTHER, 2, 0), &h)
                .is_empty()
        );
    }

    #[test]
    fn a_monitored_process_that_exits_stops_the_heartbeat_and_says_how() {
        let mut r = reactions();
        let mut h = host();
        h.statuses.insert(SVC, "exited with status 3".into());
        let out = r.on_exit(exit(SVC, 0), &h);
        assert_eq!(shape(&out), ["stop", "unfollow"]);
        assert!(out.contains(&Effect::Count(Count::Verdict("exited".into()))));
        let reason = stop_reason(&out).unwrap();
        assert!(
            reason.ends_with("monitored process 100 (svc) exited with status 3"),
            "{reason}"
        );
        assert!(
            recorded(&out).is_empty(),
            "an exit without a fatal signal is no crash"
        );
        assert!(r.resume_blockers()[0].contains("process 100 is gone"));
        // A thread's exit alone is nothing.
        let mut r = reactions();
        let mut thread = exit(SVC, 0);
        thread.tid = SVC + 1;
        thread.group_dead = false;
        assert!(r.on_exit(thread, &h).is_empty());
    }

    #[test]
    fn a_fatal_signal_then_death_within_the_window_is_a_crash_with_the_fault_line() {
        let mut r = reactions_with(vec![policy(300, Some(libc::SIGQUIT), false)]);
        let h = host();
        let segv = TaskEventKind::Signal { sig: 11, code: 1 };
        let mut ev = task_event(segv, SVC + 1, SVC, 1_000 * MS);
        ev.target_tgid = Some(SVC);
        assert!(
            r.on_task_event(ev, &h).is_empty(),
            "a signal alone is no crash"
        );
        let fault = "svc[100]: segfault at 0 ip 0000 sp 0000 error 6 in svc[400000+1000]";
        r.on_kernel_line(&kernel_line(SVC, SVC + 1, "svc", 1_000 * MS, fault), &h);
        let out = r.on_exit(exit(SVC, 1_000 * MS + CRASH_WINDOW_NS), &h);
        // No stall signal to a process that is gone; the crash follows the target's
        // exec_hook setting.
        assert_eq!(shape(&out), ["stop", "unfollow", "record"]);
        assert!(
            stop_reason(&out)
                .unwrap()
                .contains("was killed by SIGSEGV (SEGV_MAPERR")
        );
        let (inc, run_hook, _) = recorded(&out)[0];
        assert_eq!(inc.kind, Kind::Crash);
        assert!(!run_hook);
        let sig = inc.signal.as_ref().unwrap();
        assert_eq!(
            (sig.signal.as_str(), sig.target_tid, sig.sender_pid),
            ("SIGSEGV", SVC + 1, SVC)
        );
        assert_eq!(sig.fault_line.as_deref(), Some(fault));
        assert!(inc.summary.contains("died of SIGSEGV"), "{}", inc.summary);
    }

    #[test]
    fn a_fatal_signal_older_than_the_window_explains_no_death() {
        let mut r = reactions();
        let h = host();
        let mut ev = task_event(TaskEventKind::Signal { sig: 9, code: 0 }, SVC, OTHER, 0);
        ev.target_tgid = Some(SVC);
        r.on_task_event(ev, &h);
        let out = r.on_exit(exit(SVC, CRASH_WINDOW_NS + 1), &h);
        assert_eq!(shape(&out), ["stop", "unfollow"]);
        assert!(stop_reason(&out).unwrap().contains("status unknown"));
    }

    #[test]
    fn the_oom_killer_choosing_a_monitored_process_is_recorded() {
        let mut r = reactions();
        let h = host();
        let out = r.on_task_event(task_event(TaskEventKind::OomVictim, SVC, OTHER, 0), &h);
        assert_eq!(shape(&out), ["record"]);
        let (inc, _, _) = recorded(&out)[0];
        assert_eq!((inc.kind, inc.pid), (Kind::OomVictim, Some(SVC)));
        assert!(
            !inc.stopped_heartbeat,
            "the death that follows is the verdict"
        );
        let out = r.on_task_event(task_event(TaskEventKind::OomVictim, OTHER, OTHER, 0), &h);
        assert!(out.is_empty());
    }

    #[test]
    fn the_heartbeat_waits_for_the_first_process_of_a_service_then_starts() {
        let spec = TargetSpec {
            selector: Selector::Comm("svc".into()),
            policy: 1,
            identity: Identity {
                user: Some("0".into()),
                exe: None,
            },
        };
        let table = TargetTable::resolve(&[spec]).unwrap();
        let mut r = Reactions::new(
            "node-a".into(),
            vec![policy(300, None, true), policy(5_000, None, false)],
            table,
            Arc::new(RuleSet::builtin()),
            &[],
        );
        let h = host();
        assert!(r.awaiting_first());
        assert!(!r.auto_resume(0, Some(Duration::ZERO), false, None));
        let mut ev = task_event(TaskEventKind::NewTarget, 200, 200, 0);
        ev.by_comm = "svc".into();
        let out = r.on_task_event(ev.clone(), &h);
        assert_eq!(out, [Effect::StartHeartbeat]);
        assert!(!r.awaiting_first());
        // Its target's policy: a 5 s budget.
        assert_eq!(
            r.monitor().policy(200).budgets.default,
            Duration::from_secs(5)
        );
        // The next one only joins.
        ev.target = 201;
        assert!(r.on_task_event(ev.clone(), &h).is_empty());
        // Another user's program of that name is not the service: let go, no verdict.
        ev.target = OTHER;
        assert_eq!(r.on_task_event(ev, &h), [Effect::Unfollow { pid: OTHER }]);
        assert!(!r.monitor().is_target(OTHER));
    }

    #[test]
    fn a_forked_child_is_followed_and_its_end_is_no_verdict() {
        let mut r = reactions();
        let mut h = host();
        h.tgids.insert(300, 300);
        let out = r.on_task_event(task_event(TaskEventKind::Forked, 300, SVC, 0), &h);
        assert_eq!(out, [Effect::Follow { pid: 300 }]);
        assert!(r.monitor().is_target(300));
        // A new thread of a target is no new process.
        h.tgids.insert(301, SVC);
        assert!(
            r.on_task_event(task_event(TaskEventKind::Forked, 301, SVC, 0), &h)
                .is_empty()
        );
        let mut end = exit(300, 0);
        end.comm = "helper".into();
        assert_eq!(shape(&r.on_exit(end, &h)), ["unfollow"]);
        assert!(r.resume_blockers().is_empty());
        // The kernel side could not measure it: it is no target.
        r.on_task_event(task_event(TaskEventKind::Forked, 300, SVC, 0), &h);
        r.not_followed(300);
        assert!(!r.monitor().is_target(300));
    }

    #[test]
    fn auto_resume_waits_until_nothing_has_blocked_for_the_configured_time() {
        let mut r = reactions();
        let h = host();
        let after = Some(Duration::from_secs(2));
        // A stall blocks it while it lasts.
        let stuck = [(SVC + 1, record(SVC, Sysno::vfork, 0, D_STATE))];
        r.on_scan(&stuck, 400 * MS, &h);
        assert!(!r.auto_resume(500 * MS, after, false, None));
        let mut done = stuck[0].1;
        done.nr = NOT_IN_SYSCALL;
        r.on_scan(&[(SVC + 1, done)], 1_000 * MS, &h);
        assert!(!r.auto_resume(1_000 * MS, after, false, None));
        assert!(!r.auto_resume(2_900 * MS, after, false, None));
        // The daemon's own trouble restarts the wait.
        assert!(!r.auto_resume(2_950 * MS, after, false, Some("reader stuck")));
        assert!(!r.auto_resume(3_000 * MS, after, false, None));
        assert!(r.auto_resume(5_000 * MS, after, false, None));
        // Not configured, or sending already: never.
        assert!(!r.auto_resume(9_000 * MS, None, false, None));
        assert!(!r.auto_resume(99_000 * MS, after, true, None));
    }
}
