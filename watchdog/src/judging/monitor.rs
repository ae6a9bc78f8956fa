//! The thread table and its verdicts. Pure: fed with in-flight records, kernel lines and
//! exits, it decides which threads are stalled and why. The daemon wraps it in a mutex
//! and supplies the /proc lookups as closures, so everything here runs without root.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use watchdog_common::NOT_IN_SYSCALL;

use crate::events::SyscallRecord;

use crate::{
    events::KernelLine,
    judging::kmsg::{
        Action, Class, Classification,
        report::{Printer, Subject, line_subject},
    },
    judging::policy::{DEFAULT_POLICY, Policy},
    judging::syscall_table,
    judging::verdict::{self, FdKind, RunState, SyscallTime, Verdict},
};

/// Why the node stopped saying it is alive: one per stalled thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The syscall the thread was stuck in, if the stall came from the budget.
    pub syscall: Option<String>,
    pub elapsed_ms: Option<u64>,
    pub budget_ms: u64,
    /// Human-readable reason: the budget overrun, or the kernel line.
    pub reason: String,
    /// `syscall-budget`, or the class of the kernel report (`bug`, `hung_task`, ...).
    pub cause: String,
    /// CLOCK_MONOTONIC time of the verdict.
    pub at_ns: u64,
}

/// What a kernel line means for the monitored service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineVerdict {
    /// Nothing to report.
    Ordinary,
    /// A kernel problem: alert, but no verdict on a monitored thread.
    Alert {
        class: Class,
        rule: Option<String>,
        monitored: bool,
        subject: Option<Subject>,
    },
    /// A report names a monitored thread, and its rule says it is stalled.
    Stall(Stall),
}

/// One row of `wdctl threads`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRow {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Syscall in flight, or None when the thread is running in user space.
    pub syscall: Option<String>,
    /// Time in the current syscall; None when not in one, or when it began before the
    /// probes were attached (its start is unknown).
    pub elapsed_ms: Option<u64>,
    pub budget_ms: u64,
    pub verdict: Verdict,
    /// running-in-kernel, uninterruptible, waiting, stopped, or user (not in a syscall).
    pub state: Option<RunState>,
    /// Time of the current syscall on a CPU (or runnable), and asleep.
    pub on_cpu_ms: Option<u64>,
    pub off_cpu_ms: Option<u64>,
    /// Why the verdict is what it is.
    pub why: String,
    pub last_syscall: Option<String>,
    pub last_duration_us: Option<u64>,
}

const IN_USER_SPACE: &str = "running in user space";

#[derive(Clone, Debug, Default)]
struct ThreadState {
    tgid: u32,
    comm: Option<String>,
    /// The kernel's latest record of the thread.
    latest: Option<SyscallRecord>,
    current: Option<SyscallRecord>,
    last: Option<(u32, u64)>,
    /// enter_ns of the syscall this thread was found stalled in, so one stuck syscall
    /// gives one verdict, not one per scan.
    stalled_in: Option<u64>,
    /// switch_ns of the stop this thread was found stopped too long in.
    stopped_in: Option<u64>,
    /// A kernel fault this thread hit: it stays stalled, whatever it does next.
    kernel_fault: Option<String>,
    /// What the fd of the in-flight read is (by the syscall's enter_ns): asked of /proc
    /// once per syscall, not at every scan (a thousand threads blocked on pipes would
    /// otherwise cost a thousand readlinks per scan).
    fd_kind: Option<(u64, Option<FdKind>)>,
    /// The reason `why` was last formatted from.
    reason: Option<verdict::Reason>,
    why: String,
}

/// Whether a record shows its thread stopped (by a signal or a tracer) now.
fn is_stopped(rec: &SyscallRecord) -> bool {
    !rec.on_cpu && RunState::from_switch(false, rec.sched_state) == RunState::Stopped
}

impl ThreadState {
    /// Whether the thread is stalled now: the kernel reported it broken, its syscall in
    /// flight was judged stalled, or it is still in a stop judged too long.
    fn stalled_now(&self) -> bool {
        self.kernel_fault.is_some()
            || self
                .current
                .is_some_and(|c| self.stalled_in == Some(c.enter_ns))
            || self
                .latest
                .is_some_and(|l| is_stopped(&l) && self.stopped_in == Some(l.switch_ns))
    }
}

/// A thread whose next observation would change nothing until `until_ns`: the scan
/// skips it (see [`Monitor::settled`]). Kept apart from the thread states, small and
/// in tid order, because a scan asks for every thread.
#[derive(Clone, Copy, Debug)]
struct Settled {
    rec: SyscallRecord,
    until_ns: u64,
    /// When its syscall runs out of budget, if that is still ahead.
    deadline_ns: Option<u64>,
}

/// The settled threads, sorted by tid. A scan asks for its threads in tid order (the
/// kernel stage reads them so), so each lookup is usually the entry after the last one:
/// the scan walks this table as it walks its records, in memory order.
#[derive(Debug, Default)]
struct SettledTable {
    entries: Vec<(u32, Settled)>,
    /// Where the next lookup probably is.
    hint: std::cell::Cell<usize>,
}

impl SettledTable {
    fn position(&self, tid: u32) -> Result<usize, usize> {
        let h = self.hint.get();
        if self.entries.get(h).is_some_and(|e| e.0 == tid) {
            return Ok(h);
        }
        self.entries.binary_search_by_key(&tid, |e| e.0)
    }

    fn get(&self, tid: u32) -> Option<&Settled> {
        let i = self.position(tid).ok()?;
        self.hint.set(i + 1);
        Some(&self.entries[i].1)
    }

    fn insert(&mut self, tid: u32, settled: Settled) {
        match self.position(tid) {
            Ok(i) => self.entries[i].1 = settled,
            Err(i) => self.entries.insert(i, (tid, settled)),
        }
    }

    fn remove(&mut self, tid: u32) {
        if let Ok(i) = self.position(tid) {
            self.entries.remove(i);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(u32, &Settled) -> bool) {
        self.entries.retain(|(tid, s)| keep(*tid, s));
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

pub struct Monitor {
    /// `DEFAULT_POLICY` first, then one per target with settings of its own.
    policies: Vec<Policy>,
    /// The policy each target follows (by index; the default when not listed).
    policy_of: BTreeMap<u32, usize>,
    targets: BTreeSet<u32>,
    threads: BTreeMap<u32, ThreadState>,
    stalls: Vec<Stall>,
    /// Monitored processes that are gone: their program and how they ended.
    gone: BTreeMap<u32, (String, String)>,
    /// Targets that are children forked by a target, and their parents: measured while
    /// they live, but their exit is not the service's death (services spawn helpers
    /// that end).
    children: BTreeMap<u32, u32>,
    /// Program name of each target, when known: a process's exit is reported with the
    /// comm of its last thread, which may be any thread's name.
    names: BTreeMap<u32, String>,
    /// The threads a scan may skip, by tid.
    settled: SettledTable,
}

impl Monitor {
    /// A monitor judging by `policies` (`DEFAULT_POLICY` first; at least one), with
    /// `targets` (process, policy index) to begin with.
    pub fn new(policies: Vec<Policy>, targets: impl IntoIterator<Item = (u32, usize)>) -> Self {
        assert!(!policies.is_empty(), "the default policy is needed");
        let policy_of: BTreeMap<u32, usize> = targets.into_iter().collect();
        Monitor {
            policies,
            targets: policy_of.keys().copied().collect(),
            policy_of,
            threads: BTreeMap::new(),
            stalls: Vec::new(),
            gone: BTreeMap::new(),
            children: BTreeMap::new(),
            names: BTreeMap::new(),
            settled: SettledTable::default(),
        }
    }

    /// New policies (config reload): syscalls in flight are judged by them from now
    /// on. Targets keep their policy index: a reload that changes targets reassigns
    /// them with [`Monitor::retarget`] first.
    pub fn set_policies(&mut self, policies: Vec<Policy>) {
        assert!(!policies.is_empty(), "the default policy is needed");
        self.policies = policies;
        // Budgets changed: every thread is judged afresh.
        self.settled.clear();
    }

    /// The policy process `tgid` follows (the default one if it is not a target).
    pub fn policy(&self, tgid: u32) -> &Policy {
        let i = self.policy_of.get(&tgid).copied().unwrap_or(DEFAULT_POLICY);
        self.policies
            .get(i)
            .unwrap_or(&self.policies[DEFAULT_POLICY])
    }

    /// The node-wide policy.
    pub fn default_policy(&self) -> &Policy {
        &self.policies[DEFAULT_POLICY]
    }

    /// The budget of syscall `nr` in process `tgid`.
    pub fn budget_for(&self, tgid: u32, nr: u32) -> Duration {
        self.policy(tgid).budgets.of(nr)
    }

    /// The shortest budget of any policy: the scanner looks at least a few times in it.
    pub fn shortest_budget(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.budgets.shortest())
            .min()
            .expect("at least the default policy")
    }

    pub fn targets(&self) -> impl Iterator<Item = u32> + '_ {
        self.targets.iter().copied()
    }

    /// A new target process (found by name, cgroup or fork). A process of the same
    /// name that died before no longer blocks resuming: the service is back.
    /// A process forked by a target: measured, but its exit is no verdict.
    /// It follows its parent's policy.
    pub fn add_child(&mut self, tgid: u32, parent: u32) -> bool {
        self.children.insert(tgid, parent);
        let policy = self
            .policy_of
            .get(&parent)
            .copied()
            .unwrap_or(DEFAULT_POLICY);
        self.policy_of.insert(tgid, policy);
        self.targets.insert(tgid)
    }

    pub fn add_target(&mut self, tgid: u32, comm: &str, policy: usize) -> bool {
        self.gone.retain(|_, (name, _)| name != comm);
        self.names.insert(tgid, comm.to_owned());
        self.policy_of.insert(tgid, policy);
        self.targets.insert(tgid)
    }

    /// The targets changed (config reload): `pick` gives the policy of a process the
    /// new targets pick, or None. A forked child follows its parent while the parent
    /// stays, else it is judged on its own. Processes no longer picked stop being
    /// targets, without a verdict (the operator took them out); they are returned.
    /// A dead service stops blocking resume unless `still_wanted(pid, program)`.
    pub fn retarget(
        &mut self,
        mut pick: impl FnMut(u32) -> Option<usize>,
        still_wanted: impl Fn(u32, &str) -> bool,
    ) -> Vec<u32> {
        let mut dropped = Vec::new();
        self.settled.clear();
        let (kids, roots): (Vec<u32>, Vec<u32>) = self
            .targets
            .iter()
            .partition(|t| self.children.contains_key(t));
        for tgid in roots {
            match pick(tgid) {
                Some(p) => {
                    self.policy_of.insert(tgid, p);
                }
                None => dropped.push(tgid),
            }
        }
        for tgid in &dropped {
            self.drop_target(*tgid);
        }
        for tgid in kids {
            let parent = self.children[&tgid];
            let policy = match self.policy_of.get(&parent) {
                Some(p) if self.targets.contains(&parent) => Some(*p),
                _ => pick(tgid),
            };
            match policy {
                Some(p) => {
                    self.policy_of.insert(tgid, p);
                }
                None => {
                    self.drop_target(tgid);
                    dropped.push(tgid);
                }
            }
        }
        // A service taken out of the targets no longer blocks resuming.
        self.gone.retain(|pid, (name, _)| still_wanted(*pid, name));
        dropped
    }

    fn drop_target(&mut self, tgid: u32) {
        self.targets.remove(&tgid);
        self.policy_of.remove(&tgid);
        self.children.remove(&tgid);
        self.names.remove(&tgid);
        self.threads.retain(|_, st| st.tgid != tgid);
        self.settled.retain(|_, s| s.rec.tgid != tgid);
    }

    /// The program name of target `tgid`, when known.
    pub fn program(&self, tgid: u32) -> Option<&str> {
        self.names.get(&tgid).map(String::as_str)
    }

    pub fn is_target(&self, tgid: u32) -> bool {
        self.targets.contains(&tgid)
    }

    pub fn stalls(&self) -> &[Stall] {
        &self.stalls
    }

    /// The default budget of process `tgid`, in ms (for verdicts that are not about a
    /// syscall's budget).
    fn budget_ms(&self, tgid: u32) -> u64 {
        self.policy(tgid).budgets.default.as_millis() as u64
    }

    /// Take in the kernel's record for thread `tid` at time `now_ns`. Returns a new stall
    /// the first time a syscall is judged stalled.
    ///
    /// `fd_kind` answers what an fd of a process is (asked only for a read over budget);
    /// `comm` names a thread (asked once per thread).
    pub fn observe(
        &mut self,
        tid: u32,
        rec: &SyscallRecord,
        now_ns: u64,
        fd_kind: impl FnOnce(u32, u32, u32) -> Option<FdKind>,
        comm: impl FnOnce(u32, u32) -> Option<String>,
    ) -> Option<Stall> {
        let stall = self.observe_record(tid, rec, now_ns, fd_kind, comm);
        self.settle(tid, rec, now_ns);
        stall
    }

    /// Note until when thread `tid`'s verdict on `rec`, just observed, cannot change
    /// with time alone: in user space, for ever; within the syscall's budget, until it
    /// ends (every syscall is fine there, and the scan wakes at the budget's end); past
    /// it, for ever for a thread asleep in a wait judged idle (asleep, its time on a CPU
    /// does not grow). Never for a stalled thread, nor a stopped one (its own budget
    /// runs on time).
    fn settle(&mut self, tid: u32, rec: &SyscallRecord, now_ns: u64) {
        let Some(st) = self.threads.get(&tid) else {
            self.settled.remove(tid);
            return;
        };
        let until_ns = if st.latest != Some(*rec) || st.stalled_now() || is_stopped(rec) {
            0
        } else if rec.nr == NOT_IN_SYSCALL {
            u64::MAX
        } else {
            let deadline = self.in_flight_deadline(rec);
            let asleep = matches!(
                RunState::from_switch(rec.on_cpu, rec.sched_state),
                RunState::Waiting | RunState::Uninterruptible
            );
            let idle = matches!(
                st.reason,
                Some(verdict::Reason::IdleWait { .. } | verdict::Reason::StreamWait { .. })
            );
            if asleep && idle {
                u64::MAX
            } else if now_ns < deadline {
                deadline
            } else {
                0
            }
        };
        if until_ns <= now_ns {
            self.settled.remove(tid);
            return;
        }
        let deadline_ns = self.deadline_of(tid, now_ns);
        self.settled.insert(
            tid,
            Settled {
                rec: *rec,
                until_ns,
                deadline_ns,
            },
        );
    }

    /// When syscall `rec` runs out of its budget.
    fn in_flight_deadline(&self, rec: &SyscallRecord) -> u64 {
        rec.enter_ns
            .saturating_add(self.budget_for(rec.tgid, rec.nr).as_nanos() as u64)
    }

    fn observe_record(
        &mut self,
        tid: u32,
        rec: &SyscallRecord,
        now_ns: u64,
        fd_kind: impl FnOnce(u32, u32, u32) -> Option<FdKind>,
        comm: impl FnOnce(u32, u32) -> Option<String>,
    ) -> Option<Stall> {
        let budget = self.budget_for(rec.tgid, rec.nr);
        let budget_ms = budget.as_millis() as u64;
        let stopped_budget = self.policy(rec.tgid).stopped_budget;
        // One verdict for a process stopped whole, not one per thread. Asked only when
        // this thread's stop runs past its budget (once per thread and stop), so a scan
        // of a thousand threads does not look at a thousand others for each.
        let stop_over_budget = is_stopped(rec)
            && now_ns.saturating_sub(rec.switch_ns) > stopped_budget.as_nanos() as u64
            && self
                .threads
                .get(&tid)
                .is_none_or(|st| st.stopped_in != Some(rec.switch_ns));
        let process_stopped_stalled = stop_over_budget
            && self.threads.iter().any(|(t, other)| {
                *t != tid
                    && other.tgid == rec.tgid
                    && other.latest.is_some_and(|l| is_stopped(&l))
                    && other.stopped_in.is_some()
                    && other.stalled_now()
            });
        let st = self.threads.entry(tid).or_default();
        st.tgid = rec.tgid;
        st.latest = Some(*rec);
        if st.comm.is_none() {
            st.comm = comm(rec.tgid, tid);
        }
        if rec.last_nr != NOT_IN_SYSCALL {
            st.last = Some((rec.last_nr, rec.last_duration_ns));
        }
        if is_stopped(rec) && st.kernel_fault.is_none() {
            let in_syscall = (rec.nr != NOT_IN_SYSCALL).then_some(*rec);
            if st.stopped_in == Some(rec.switch_ns) {
                // Still in the stop already judged.
                st.current = in_syscall;
                return None;
            }
            let stopped_ns = now_ns.saturating_sub(rec.switch_ns);
            if stopped_ns > stopped_budget.as_nanos() as u64 {
                st.stopped_in = Some(rec.switch_ns);
                st.current = in_syscall;
                st.reason = None;
                st.why = format!(
                    "stopped (by a signal or a tracer) for {} ms, over the {} ms stopped budget",
                    stopped_ns / 1_000_000,
                    stopped_budget.as_millis()
                );
                if process_stopped_stalled {
                    return None;
                }
                let stall = Stall {
                    pid: rec.tgid,
                    tid,
                    comm: st.comm.clone().unwrap_or_default(),
                    syscall: in_syscall
                        .and_then(|c| syscall_table::name(c.nr))
                        .map(str::to_owned),
                    elapsed_ms: Some(stopped_ns / 1_000_000),
                    budget_ms: stopped_budget.as_millis() as u64,
                    reason: st.why.clone(),
                    cause: "stopped".into(),
                    at_ns: now_ns,
                };
                self.stalls.push(stall.clone());
                return Some(stall);
            }
        }
        if rec.nr == NOT_IN_SYSCALL {
            st.current = None;
            if st.kernel_fault.is_none() {
                st.reason = None;
                if st.why != IN_USER_SPACE {
                    st.why = IN_USER_SPACE.into();
                }
            }
            return None;
        }
        st.current = Some(*rec);
        let t = SyscallTime::of(rec, now_ns);
        let elapsed = Duration::from_nanos(t.elapsed_ns);
        let cached = st.fd_kind.filter(|(at, _)| *at == rec.enter_ns);
        let mut asked = None;
        let j = verdict::judge(rec.nr, &t, budget, || match cached {
            Some((_, kind)) => kind,
            None => *asked.insert(fd_kind(rec.tgid, tid, rec.nr)),
        });
        if let Some(kind) = asked {
            st.fd_kind = Some((rec.enter_ns, kind));
        }
        if let Some(fault) = &st.kernel_fault {
            st.why = fault.clone();
            st.reason = None;
            return None;
        }
        // Formatted only when it changes (an idle wait's reason stays the same).
        if st.reason != Some(j.reason) {
            st.why = j.why();
            st.reason = Some(j.reason);
        }
        if j.verdict == Verdict::Ok || st.stalled_in == Some(rec.enter_ns) {
            return None;
        }
        st.stalled_in = Some(rec.enter_ns);
        let stall = Stall {
            pid: rec.tgid,
            tid,
            comm: st.comm.clone().unwrap_or_default(),
            syscall: syscall_table::name(rec.nr).map(str::to_owned),
            elapsed_ms: Some(elapsed.as_millis() as u64),
            budget_ms,
            reason: j.why(),
            cause: "syscall-budget".into(),
            at_ns: now_ns,
        };
        self.stalls.push(stall.clone());
        Some(stall)
    }

    /// Whether thread `tid` completed a syscall since its record was last observed, so
    /// `rec.last_duration_ns` is a new duration. (Call before `observe`.)
    pub fn completed_since_observed(&self, tid: u32, rec: &SyscallRecord) -> bool {
        let before = self
            .threads
            .get(&tid)
            .and_then(|st| st.latest)
            .map(|l| l.completed);
        rec.completed > 0 && before != Some(rec.completed)
    }

    /// Whether the scan may skip thread `tid`'s record `rec` at `now_ns` (it is the
    /// record last observed, and time alone cannot have changed its verdict since; see
    /// [`Monitor::observe`]): Some(when its syscall runs out of budget, if ahead).
    pub fn settled(&self, tid: u32, rec: &SyscallRecord, now_ns: u64) -> Option<Option<u64>> {
        let s = self.settled.get(tid)?;
        (s.rec == *rec && now_ns < s.until_ns).then(|| s.deadline_ns.filter(|&d| d > now_ns))
    }

    /// How many threads the monitor holds.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// Forget threads that are no longer in the kernel's table (exited).
    pub fn retain_threads(&mut self, alive: impl Fn(u32) -> bool) {
        // Threads with a kernel fault stay listed until their process is gone: the
        // operator must see which thread it was.
        let mut gone = Vec::new();
        self.threads.retain(|&tid, st| {
            let keep = alive(tid) || st.kernel_fault.is_some();
            if !keep {
                gone.push(tid);
            }
            keep
        });
        // In tid order, as the thread states are.
        if !gone.is_empty() {
            self.settled
                .retain(|tid, _| gone.binary_search(&tid).is_err());
        }
    }

    /// A thread exited.
    pub fn forget(&mut self, tid: u32) {
        if let Some(st) = self.threads.get(&tid)
            && st.kernel_fault.is_none()
        {
            self.threads.remove(&tid);
            self.settled.remove(tid);
        }
    }

    /// A process is gone: drop it and its threads.
    pub fn remove_target(&mut self, tgid: u32) {
        self.drop_target(tgid);
    }

    /// The earliest time after `now_ns` at which a syscall now in flight runs out of
    /// budget: when the scanner should look next, at the latest. (A wait syscall can
    /// become stalled later, by spinning or by falling into D; the periodic scan, at a
    /// quarter of the budget, catches those.) The scan gathers the same from
    /// [`Monitor::deadline_of`] as it goes; the tests ask it of the whole table.
    #[cfg(test)]
    pub fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        self.threads
            .keys()
            .filter_map(|&tid| self.deadline_of(tid, now_ns))
            .min()
    }

    /// The next time after `now_ns` at which thread `tid`'s verdict changes by time:
    /// its syscall in flight runs out of budget, or its stop runs out of its own.
    pub fn deadline_of(&self, tid: u32, now_ns: u64) -> Option<u64> {
        let st = self.threads.get(&tid)?;
        let in_flight = st.current.and_then(|cur| {
            let deadline = self.in_flight_deadline(&cur);
            (st.stalled_in != Some(cur.enter_ns) && st.kernel_fault.is_none() && deadline > now_ns)
                .then_some(deadline)
        });
        // A stop runs out of its budget too.
        let stopped = st.latest.filter(is_stopped).and_then(|l| {
            let deadline = l
                .switch_ns
                .saturating_add(self.policy(st.tgid).stopped_budget.as_nanos() as u64);
            (st.stopped_in != Some(l.switch_ns) && deadline > now_ns).then_some(deadline)
        });
        in_flight.into_iter().chain(stopped).min()
    }

    /// A monitored process is gone (`how`: exited with status N, killed by SIGX): the
    /// service is down, which is a verdict like a stall. Its threads are forgotten and
    /// the process is no longer a target (its pid may be reused).
    pub fn process_gone(&mut self, tgid: u32, comm: &str, how: &str, at_ns: u64) -> Option<Stall> {
        if !self.targets.contains(&tgid) {
            return None;
        }
        let budget_ms = self.budget_ms(tgid);
        let was_child = self.children.contains_key(&tgid);
        // The program's name: as added, else its main thread's, else what the exit said.
        let comm = self
            .names
            .remove(&tgid)
            .or_else(|| self.threads.get(&tgid).and_then(|st| st.comm.clone()))
            .unwrap_or_else(|| comm.to_owned());
        let comm = comm.as_str();
        self.drop_target(tgid);
        if was_child {
            return None;
        }
        self.gone.insert(tgid, (comm.to_owned(), how.to_owned()));
        let stall = Stall {
            pid: tgid,
            tid: tgid,
            comm: comm.to_owned(),
            syscall: None,
            elapsed_ms: None,
            budget_ms,
            reason: format!("monitored process {tgid} ({comm}) {how}"),
            cause: "exited".into(),
            at_ns,
        };
        self.stalls.push(stall.clone());
        Some(stall)
    }

    /// What stands in the way of resuming the heartbeat: threads stalled now, and
    /// monitored processes that are gone. Empty when the node is healthy.
    pub fn blockers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .gone
            .iter()
            .map(|(pid, (name, how))| format!("process {pid} is gone: {name} {how}"))
            .collect();
        for (tid, st) in &self.threads {
            if st.stalled_now() {
                v.push(format!(
                    "thread {tid} of pid {} is stalled: {}",
                    st.tgid, st.why
                ));
            }
        }
        if self.targets.is_empty() {
            v.push("no monitored process is left".into());
        }
        v
    }

    /// Whether the kernel side (or a look at /proc) gave thread `tid` a record.
    pub fn has_record(&self, tid: u32) -> bool {
        self.threads.get(&tid).is_some_and(|st| st.latest.is_some())
    }

    /// The process a thread id belongs to, as far as this monitor knows.
    pub fn known_tgid(&self, tid: u32) -> Option<u32> {
        if self.targets.contains(&tid) {
            return Some(tid);
        }
        self.threads.get(&tid).map(|st| st.tgid)
    }

    /// Take in a kernel line, classified once by the caller (`c`), and say what it means.
    /// `tgid_of` finds the process of a thread the monitor has not seen (from /proc in
    /// the daemon); `named` turns a pid from the line's text (the kernel's) into the
    /// daemon's.
    pub fn on_kernel_line(
        &mut self,
        c: &Classification<'_>,
        line: &KernelLine,
        named: impl FnOnce(u32) -> Option<u32>,
        tgid_of: impl FnOnce(u32) -> Option<u32>,
    ) -> LineVerdict {
        if c.class == Class::None {
            return LineVerdict::Ordinary;
        }
        let printer = Printer {
            pid: line.tgid,
            tid: line.tid,
            comm: line.comm.clone(),
        };
        let subject =
            line_subject(c.class, &line.text, Some(&printer)).and_then(|s| s.in_view(named));
        let subject_tgid = subject.as_ref().and_then(|s| {
            if s.how == "printer" {
                Some(line.tgid)
            } else {
                self.known_tgid(s.pid).or_else(|| tgid_of(s.pid))
            }
        });
        let monitored = subject_tgid.is_some_and(|t| self.targets.contains(&t));
        let rule = c.rule_id().map(str::to_owned);
        let (Some(subject), Some(tgid), true, Action::StopHeartbeat) =
            (subject.clone(), subject_tgid, monitored, c.action)
        else {
            return LineVerdict::Alert {
                class: c.class,
                rule,
                monitored,
                subject,
            };
        };
        let reason = format!(
            "kernel reported {} (rule {}) {}: {}",
            c.class,
            rule.as_deref().unwrap_or("-"),
            if subject.how == "printer" {
                "in this thread"
            } else {
                "naming this thread"
            },
            line.text
        );
        match self.kernel_stall(
            subject.pid,
            tgid,
            subject.comm,
            c.class.as_str(),
            reason,
            line.ts_ns,
        ) {
            Some(stall) => LineVerdict::Stall(stall),
            // Already stalled by an earlier line of the same report.
            None => LineVerdict::Alert {
                class: c.class,
                rule,
                monitored,
                subject: None,
            },
        }
    }

    /// The kernel says thread `tid` of monitored process `tgid` is dead or wedged
    /// (`cause`: the report's class). Returns the stall the first time only.
    pub fn kernel_stall(
        &mut self,
        tid: u32,
        tgid: u32,
        comm: Option<String>,
        cause: &str,
        reason: String,
        at_ns: u64,
    ) -> Option<Stall> {
        let budget_ms = self.budget_ms(tgid);
        self.settled.remove(tid);
        let st = self.threads.entry(tid).or_default();
        if st.kernel_fault.is_some() {
            return None;
        }
        st.tgid = tgid;
        if st.comm.is_none() {
            st.comm = comm;
        }
        st.kernel_fault = Some(reason.clone());
        st.why = reason.clone();
        st.reason = None;
        let stall = Stall {
            pid: tgid,
            tid,
            comm: st.comm.clone().unwrap_or_default(),
            syscall: st
                .current
                .and_then(|c| syscall_table::name(c.nr))
                .map(str::to_owned),
            elapsed_ms: None,
            budget_ms,
            reason,
            cause: cause.to_owned(),
            at_ns,
        };
        self.stalls.push(stall.clone());
        Some(stall)
    }

    /// The rows of `wdctl threads`: every thread of every target in `listing` (tgid ->
    /// tids, from /proc), with what the kernel side recorded for it.
    /// `proc_syscall` tells the syscall of a thread not seen since the probes attached.
    pub fn rows(
        &self,
        now_ns: u64,
        listing: &BTreeMap<u32, Vec<u32>>,
        mut comm: impl FnMut(u32, u32) -> Option<String>,
        mut proc_syscall: impl FnMut(u32, u32) -> Option<u32>,
    ) -> Vec<ThreadRow> {
        let mut tids: BTreeMap<u32, u32> = BTreeMap::new();
        for (&tgid, list) in listing {
            for &tid in list {
                tids.insert(tid, tgid);
            }
        }
        for (&tid, st) in &self.threads {
            tids.entry(tid).or_insert(st.tgid);
        }
        tids.into_iter()
            .map(|(tid, tgid)| match self.threads.get(&tid) {
                Some(st) => {
                    let stalled = st.stalled_now();
                    let time = st.current.map(|c| SyscallTime::of(&c, now_ns));
                    let state = match (time, st.latest) {
                        (Some(t), _) => Some(t.state),
                        (None, Some(l)) if is_stopped(&l) => Some(RunState::Stopped),
                        (None, Some(_)) => Some(RunState::User),
                        (None, None) => None,
                    };
                    let why =
                        if state == Some(RunState::Stopped) && st.current.is_none() && !stalled {
                            "stopped by a signal or tracer, not stalled".to_owned()
                        } else {
                            st.why.clone()
                        };
                    ThreadRow {
                        pid: tgid,
                        tid,
                        comm: st
                            .comm
                            .clone()
                            .or_else(|| comm(tgid, tid))
                            .unwrap_or_default(),
                        syscall: st
                            .current
                            .and_then(|c| syscall_table::name(c.nr))
                            .map(str::to_owned),
                        elapsed_ms: st
                            .current
                            .map(|c| now_ns.saturating_sub(c.enter_ns) / 1_000_000),
                        budget_ms: st.current.map_or(self.budget_ms(tgid), |c| {
                            self.budget_for(tgid, c.nr).as_millis() as u64
                        }),
                        verdict: if stalled {
                            Verdict::Stalled
                        } else {
                            Verdict::Ok
                        },
                        state,
                        on_cpu_ms: time.map(|t| t.on_cpu_ns / 1_000_000),
                        off_cpu_ms: time.map(|t| t.off_cpu_ns / 1_000_000),
                        why,
                        last_syscall: st
                            .last
                            .and_then(|(nr, _)| syscall_table::name(nr))
                            .map(str::to_owned),
                        last_duration_us: st.last.map(|(_, ns)| ns / 1_000),
                    }
                }
                None => {
                    let nr = proc_syscall(tgid, tid);
                    ThreadRow {
                        pid: tgid,
                        tid,
                        comm: comm(tgid, tid).unwrap_or_default(),
                        syscall: nr.and_then(syscall_table::name).map(str::to_owned),
                        elapsed_ms: None,
                        budget_ms: self.budget_ms(tgid),
                        verdict: Verdict::Ok,
                        state: None,
                        on_cpu_ms: None,
                        off_cpu_ms: None,
                        why: "no syscall seen since the watchdog started".into(),
                        last_syscall: None,
                        last_duration_us: None,
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use syscalls::Sysno;

    use super::*;
    use crate::judging::{kmsg::RuleSet, test_records::in_flight};

    const MS: u64 = 1_000_000;

    /// A kernel line classified by `rules`, then judged, as the daemon does it.
    fn judge_line(
        m: &mut Monitor,
        rules: &RuleSet,
        l: &KernelLine,
        tgid_of: impl FnOnce(u32) -> Option<u32>,
    ) -> LineVerdict {
        m.on_kernel_line(&rules.classify_text(&l.text), l, Some, tgid_of)
    }

    /// Asleep in S since it began, unless a test says otherwise.
    fn rec(tgid: u32, nr: Option<Sysno>, enter_ns: u64) -> SyscallRecord {
        in_flight(tgid, nr.map(|n| n as u32), enter_ns, 0x01)
    }

    fn monitor() -> Monitor {
        Monitor::new(
            vec![Policy::uniform(Duration::from_millis(300))],
            [(100, 0)],
        )
    }

    impl Monitor {
        fn settled_now(&self, tid: u32, r: &SyscallRecord, now: u64) -> bool {
            self.settled(tid, r, now).is_some()
        }
    }

    fn observe(m: &mut Monitor, tid: u32, r: &SyscallRecord, now: u64) -> Option<Stall> {
        m.observe(
            tid,
            r,
            now,
            |_, _, _| Some(FdKind::Other),
            |_, _| Some("svc".into()),
        )
    }

    #[test]
    fn a_bounded_syscall_past_budget_stalls_once() {
        let mut m = monitor();
        let r = rec(100, Some(Sysno::fsync), 1_000 * MS);
        assert_eq!(observe(&mut m, 101, &r, 1_200 * MS), None);
        let stall = observe(&mut m, 101, &r, 1_301 * MS).expect("stall");
        assert_eq!((stall.pid, stall.tid), (100, 101));
        assert_eq!(stall.syscall.as_deref(), Some("fsync"));
        assert_eq!(stall.elapsed_ms, Some(301));
        assert_eq!(stall.comm, "svc");
        // Same syscall, later scan: no second verdict.
        assert_eq!(observe(&mut m, 101, &r, 1_500 * MS), None);
        assert_eq!(m.stalls().len(), 1);
        // A new syscall that stalls is a new verdict.
        let r2 = rec(100, Some(Sysno::fsync), 2_000 * MS);
        assert!(observe(&mut m, 101, &r2, 2_400 * MS).is_some());
    }

    #[test]
    fn a_syscall_can_have_a_budget_of_its_own() {
        let mut p = Policy::uniform(Duration::from_millis(300));
        p.budgets.syscalls = BTreeMap::from([(Sysno::fsync as u32, Duration::from_secs(10))]);
        let mut m = Monitor::new(vec![p], [(100, 0)]);
        let r = rec(100, Some(Sysno::fsync), 0);
        assert_eq!(
            observe(&mut m, 101, &r, 5_000 * MS),
            None,
            "within its own 10 s"
        );
        assert_eq!(m.next_deadline(5_000 * MS), Some(10_000 * MS));
        let stall = observe(&mut m, 101, &r, 10_001 * MS).expect("past its own budget");
        assert_eq!(stall.budget_ms, 10_000);
        // Other syscalls keep the default.
        assert!(observe(&mut m, 102, &rec(100, Some(Sysno::write), 0), 301 * MS).is_some());
    }

    fn two_policies() -> Monitor {
        let slow = Policy::uniform(Duration::from_secs(5));
        Monitor::new(
            vec![Policy::uniform(Duration::from_millis(300)), slow],
            [(100, 0), (200, 1)],
        )
    }

    #[test]
    fn each_target_is_judged_by_its_own_policy() {
        let mut m = two_policies();
        let fsync = |tgid| rec(tgid, Some(Sysno::fsync), 0);
        assert!(observe(&mut m, 101, &fsync(100), 301 * MS).is_some());
        assert_eq!(observe(&mut m, 201, &fsync(200), 301 * MS), None);
        assert_eq!(m.next_deadline(301 * MS), Some(5_000 * MS));
        let stall = observe(&mut m, 201, &fsync(200), 5_001 * MS).expect("past its 5 s");
        assert_eq!(stall.budget_ms, 5_000);
        assert_eq!(m.shortest_budget(), Duration::from_millis(300));
        // A child follows its parent's policy.
        m.add_child(300, 200);
        assert_eq!(
            m.budget_for(300, Sysno::fsync as u32),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retargeting_moves_drops_and_keeps_children_with_their_parent() {
        let mut m = two_policies();
        m.add_child(300, 200);
        m.add_child(400, 100);
        observe(&mut m, 201, &rec(200, Some(Sysno::read), 0), MS);
        // 100 now follows policy 1, 200 is no longer a target; 400 follows 100; 300
        // lost its parent and is not picked on its own.
        let dropped = m.retarget(|t| (t == 100).then_some(1), |_, _| false);
        assert_eq!(dropped, vec![200, 300]);
        assert_eq!(m.targets().collect::<Vec<_>>(), vec![100, 400]);
        assert_eq!(m.budget_for(100, 0), Duration::from_secs(5));
        assert_eq!(m.budget_for(400, 0), Duration::from_secs(5));
        assert!(
            m.rows(MS, &BTreeMap::new(), |_, _| None, |_, _| None)
                .is_empty()
        );
        assert!(m.blockers().is_empty(), "no verdict for what was taken out");
    }

    #[test]
    fn a_dead_service_still_wanted_keeps_blocking_after_a_retarget() {
        let mut m = two_policies();
        m.add_target(200, "db", 1);
        m.process_gone(200, "db", "exited with status 1", 1);
        m.retarget(|_| Some(0), |_, name| name == "db");
        assert_eq!(
            m.blockers(),
            ["process 200 is gone: db exited with status 1"]
        );
        m.retarget(|_| Some(0), |_, _| false);
        assert!(m.blockers().is_empty());
    }

    #[test]
    fn a_scan_skips_only_records_whose_verdict_time_alone_cannot_change() {
        let mut m = monitor();
        // Idle in epoll_wait, asleep: settled within its budget and past it.
        let idle = rec(100, Some(Sysno::epoll_wait), 0);
        assert!(!m.settled_now(101, &idle, 100 * MS), "never observed");
        observe(&mut m, 101, &idle, 100 * MS);
        assert!(m.settled_now(101, &idle, 200 * MS));
        observe(&mut m, 101, &idle, 5_000 * MS);
        assert!(m.settled_now(101, &idle, 9_000 * MS));
        // A new record (another syscall) is never skipped.
        let next = rec(100, Some(Sysno::epoll_wait), 6_000 * MS);
        assert!(!m.settled_now(101, &next, 9_000 * MS));
        // A bounded syscall in D: settled until its budget ends, then judged.
        let mut stuck = rec(100, Some(Sysno::fsync), 0);
        stuck.sched_state = watchdog_common::sched::UNINTERRUPTIBLE;
        observe(&mut m, 102, &stuck, 100 * MS);
        assert!(m.settled_now(102, &stuck, 299 * MS));
        assert!(!m.settled_now(102, &stuck, 300 * MS));
        assert!(observe(&mut m, 102, &stuck, 400 * MS).is_some());
        assert!(
            !m.settled_now(102, &stuck, 500 * MS),
            "stalled threads are judged at every scan"
        );
        // On a CPU past its budget (its time on a CPU grows): judged at every scan.
        let mut spin = rec(100, Some(Sysno::read), 0);
        spin.on_cpu = true;
        spin.sched_state = 0;
        observe(&mut m, 103, &spin, 100 * MS);
        assert!(m.settled_now(103, &spin, 200 * MS));
        assert!(!m.settled_now(103, &spin, 301 * MS));
        // Stopped: its own budget runs on time.
        let mut stopped = rec(100, Some(Sysno::read), 0);
        stopped.sched_state = watchdog_common::sched::STOPPED;
        observe(&mut m, 104, &stopped, 100 * MS);
        assert!(!m.settled_now(104, &stopped, 150 * MS));
    }

    #[test]
    fn the_fd_of_a_long_read_is_looked_up_once_per_syscall() {
        let mut m = monitor();
        let asked = std::cell::Cell::new(0);
        let pipe = |_: u32, _: u32, _: u32| {
            asked.set(asked.get() + 1);
            Some(FdKind::Stream)
        };
        let r = rec(100, Some(Sysno::read), 0);
        for scan in 1..=5 {
            let now = (300 + 100 * scan) * MS;
            assert_eq!(m.observe(101, &r, now, pipe, |_, _| None), None);
        }
        assert_eq!(
            asked.get(),
            1,
            "one readlink for one read, however many scans"
        );
        let next = rec(100, Some(Sysno::read), 10_000 * MS);
        m.observe(101, &next, 10_400 * MS, pipe, |_, _| None);
        assert_eq!(asked.get(), 2, "a new read is looked at anew");
    }

    #[test]
    fn idle_waits_never_stall() {
        let mut m = monitor();
        let r = rec(100, Some(Sysno::epoll_wait), 0);
        assert_eq!(observe(&mut m, 101, &r, 3_600_000 * MS), None);
        assert_eq!(
            m.next_deadline(3_600_000 * MS),
            None,
            "its deadline has passed"
        );
    }

    #[test]
    fn deadline_is_the_earliest_budget_end() {
        let mut m = monitor();
        observe(&mut m, 101, &rec(100, Some(Sysno::write), 50 * MS), 60 * MS);
        observe(&mut m, 102, &rec(100, Some(Sysno::fsync), 10 * MS), 60 * MS);
        observe(&mut m, 103, &rec(100, None, 0), 60 * MS);
        assert_eq!(m.next_deadline(60 * MS), Some(310 * MS));
        assert_eq!(m.next_deadline(320 * MS), Some(350 * MS));
    }

    #[test]
    fn a_process_that_exits_is_a_verdict_and_blocks_resuming() {
        let mut m = monitor();
        assert!(m.blockers().is_empty());
        let stall = m.process_gone(100, "svc", "killed by SIGSEGV", 5).unwrap();
        assert_eq!(
            (stall.cause.as_str(), stall.reason.as_str()),
            ("exited", "monitored process 100 (svc) killed by SIGSEGV")
        );
        assert!(!m.is_target(100));
        assert_eq!(m.process_gone(100, "svc", "again", 6), None);
        assert_eq!(
            m.blockers(),
            vec![
                "process 100 is gone: svc killed by SIGSEGV",
                "no monitored process is left"
            ]
        );
    }

    #[test]
    fn a_process_is_named_by_its_program_not_its_last_thread() {
        let mut m = Monitor::new(vec![Policy::uniform(Duration::from_millis(300))], []);
        m.add_target(100, "svc", 0);
        // The last thread to exit was a worker named "stuck".
        let stall = m
            .process_gone(100, "stuck", "exited with status 0", 1)
            .unwrap();
        assert_eq!(stall.comm, "svc");
        assert_eq!(
            m.blockers()[0],
            "process 100 is gone: svc exited with status 0"
        );
        // The service starts again: it no longer blocks resuming.
        m.add_target(200, "svc", 0);
        assert!(m.blockers().is_empty(), "{:?}", m.blockers());
    }

    #[test]
    fn a_forked_child_that_exits_is_no_verdict() {
        let mut m = monitor();
        assert!(m.add_child(300, 100));
        assert!(m.is_target(300));
        assert_eq!(
            m.process_gone(300, "helper", "exited with status 0", 1),
            None
        );
        assert!(!m.is_target(300));
        assert!(m.blockers().is_empty(), "{:?}", m.blockers());
    }

    #[test]
    fn a_stall_blocks_resuming_until_the_syscall_returns() {
        let mut m = Monitor::new(
            vec![Policy::uniform(Duration::from_millis(300))],
            [(100, 0), (200, 0)],
        );
        let r = rec(100, Some(Sysno::fsync), 0);
        observe(&mut m, 101, &r, 400 * MS);
        assert_eq!(m.blockers().len(), 1);
        assert!(
            m.blockers()[0].starts_with("thread 101 of pid 100 is stalled: fsync in flight"),
            "{:?}",
            m.blockers()
        );
        observe(&mut m, 101, &rec(100, None, 0), 500 * MS);
        assert!(m.blockers().is_empty(), "{:?}", m.blockers());
    }

    #[test]
    fn rows_show_syscall_elapsed_and_verdict() {
        let mut m = monitor();
        let r = rec(100, Some(Sysno::fsync), 0);
        observe(&mut m, 101, &r, 400 * MS);
        let listing = BTreeMap::from([(100, vec![100, 101])]);
        let rows = m.rows(
            500 * MS,
            &listing,
            |_, _| Some("main".into()),
            |_, _| Some(Sysno::epoll_wait as u32),
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].tid, 100);
        assert_eq!(rows[0].syscall.as_deref(), Some("epoll_wait"));
        assert_eq!(rows[0].elapsed_ms, None);
        assert_eq!(rows[0].verdict, Verdict::Ok);
        assert_eq!(rows[1].syscall.as_deref(), Some("fsync"));
        assert_eq!(rows[1].elapsed_ms, Some(500));
        assert_eq!(rows[1].verdict, Verdict::Stalled);
        assert_eq!(rows[1].budget_ms, 300);
        assert_eq!(rows[1].state, Some(RunState::Waiting));
        assert_eq!(
            (rows[1].on_cpu_ms, rows[1].off_cpu_ms),
            (Some(0), Some(500))
        );
    }

    fn line(tgid: u32, tid: u32, text: &str) -> KernelLine {
        KernelLine {
            tgid,
            tid,
            comm: "svc".into(),
            ts_ns: 7,
            text: text.into(),
            truncated: false,
        }
    }

    fn no_proc(_: u32) -> Option<u32> {
        None
    }

    #[test]
    fn an_oops_in_a_monitored_thread_is_a_stall_and_sticks() {
        let mut m = monitor();
        let rules = RuleSet::builtin();
        let text = "BUG: kernel NULL pointer dereference, address: 0000000000000000";
        let v = judge_line(&mut m, &rules, &line(100, 105, text), no_proc);
        let LineVerdict::Stall(stall) = v else {
            panic!("not a stall: {v:?}")
        };
        assert_eq!(stall.tid, 105);
        assert_eq!(stall.cause, "bug");
        assert!(
            stall.reason.contains("rule x86-null-deref") && stall.reason.contains("in this thread"),
            "{}",
            stall.reason
        );
        // The thread goes on to sleep: still stalled, it hit a kernel fault.
        observe(&mut m, 105, &rec(100, Some(Sysno::nanosleep), 0), MS);
        let rows = m.rows(2 * MS, &BTreeMap::new(), |_, _| None, |_, _| None);
        assert_eq!(rows[0].verdict, Verdict::Stalled);
        m.forget(105);
        m.retain_threads(|_| false);
        assert_eq!(
            m.rows(2 * MS, &BTreeMap::new(), |_, _| None, |_, _| None)
                .len(),
            1
        );
    }
    #[test]
    fn kernel_problems_elsewhere_only_alert() {
        let mut m = monitor();
        let rules = RuleSet::builtin();
        let v = judge_line(
            &mut m,
            &rules,
            &line(999, 999, "watchdog-test: BUG: not ours"),
            no_proc,
        );
        assert!(
            matches!(
                v,
                LineVerdict::Alert {
                    monitored: false,
                    class: Class::Bug,
                    ..
                }
            ),
            "{v:?}"
        );
        // An fs error in a monitored thread: alert (its action), not a stall.
        let ext4 = "EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0";
        let v = judge_line(&mut m, &rules, &line(100, 101, ext4), no_proc);
        assert!(
            matches!(
                v,
                LineVerdict::Alert {
                    monitored: true,
                    class: Class::FsIo,
                    ..
                }
            ),
            "{v:?}"
        );
        let v = judge_line(&mut m, &rules, &line(100, 101, "eth0: link up"), no_proc);
        assert_eq!(v, LineVerdict::Ordinary);
        assert!(m.stalls().is_empty());
    }

    #[test]
    fn a_hung_task_report_names_the_monitored_thread_not_the_printer() {
        let mut m = monitor();
        observe(&mut m, 104, &rec(100, Some(Sysno::fsync), 0), MS);
        let rules = RuleSet::builtin();
        // Printed by khungtaskd (pid 50), about thread 104 of process 100.
        let hung = "INFO: task svc:104 blocked for more than 120 seconds.";
        let v = judge_line(&mut m, &rules, &line(50, 50, hung), no_proc);
        let LineVerdict::Stall(stall) = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            (stall.pid, stall.tid, stall.cause.as_str()),
            (100, 104, "hung_task")
        );
        assert!(
            stall.reason.contains("naming this thread"),
            "{}",
            stall.reason
        );
        // The same report about an unmonitored task is only an alert.
        let other = "INFO: task other:7777 blocked for more than 120 seconds.";
        let v = judge_line(&mut m, &rules, &line(50, 50, other), |_| Some(7000));
        assert!(
            matches!(
                v,
                LineVerdict::Alert {
                    monitored: false,
                    ..
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn an_oom_kill_of_a_monitored_process_alerts_by_default() {
        let mut m = monitor();
        let rules = RuleSet::builtin();
        let oom = "Out of memory: Killed process 100 (svc) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0";
        let v = judge_line(&mut m, &rules, &line(1, 1, oom), no_proc);
        assert!(
            matches!(
                v,
                LineVerdict::Alert {
                    monitored: true,
                    class: Class::Oom,
                    ..
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_completed_syscall_is_new_once() {
        let mut m = monitor();
        let mut r = rec(100, None, 0);
        assert!(!m.completed_since_observed(7, &r), "nothing completed yet");
        r.completed = 1;
        assert!(
            m.completed_since_observed(7, &r),
            "first sight of a completion"
        );
        observe(&mut m, 7, &r, 10 * MS);
        assert!(!m.completed_since_observed(7, &r), "already seen");
        r.completed = 3;
        assert!(m.completed_since_observed(7, &r));
        observe(&mut m, 7, &r, 20 * MS);
        assert!(!m.completed_since_observed(7, &r));
    }
}
