//! Task ids across pid namespaces. The kernel side sees the initial namespace's ids
//! (what `bpf_get_current_pid_tgid` and `task_struct.pid` hold); a daemon in a pid
//! namespace of its own (a container, a systemd-nspawn machine) takes `--pid`, reads
//! `/proc` and shows ids in its own. Everything that crosses between them goes through
//! [`TaskIds`]: identity on the host, a map learned from the `pid_view` task iterator
//! in a namespace.
//!
//! Only monitored processes are mapped (tracked from the moment a target is added until
//! it is removed, which is also how long the kernel side measures it): a live process's
//! id cannot be reused, so their mapping is exact. Any other task the kernel names (who
//! printed a line, who sent a signal) is outside what the daemon judges, and stays
//! unmapped rather than risk a stale map naming the wrong task.
use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, OnceLock},
};

use watchdog_common::PidPair;

use super::task_iter::TaskIter;

use crate::events::{Event, TaskEventKind};

/// The map from kernel ids to the daemon's, for the processes it tracks. Pure.
#[derive(Debug, Default)]
pub struct IdMap {
    /// Kernel tgid -> local tgid, of tracked processes.
    processes: HashMap<u32, u32>,
    /// Local tgid -> kernel tgid.
    by_local: HashMap<u32, u32>,
    /// Kernel tid -> (local tid, local tgid), of tracked processes' threads.
    threads: HashMap<u32, (u32, u32)>,
}

/// One snapshot of the namespace's tasks, as the iterator reported them.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Kernel tid -> (local tid, kernel tgid).
    tasks: HashMap<u32, (u32, u32)>,
}

impl Snapshot {
    pub fn from_pairs(pairs: &[PidPair]) -> Self {
        let tasks = pairs
            .iter()
            .filter(|p| p.local_tid != 0)
            .map(|p| (p.global_tid, (p.local_tid, p.global_tgid)))
            .collect();
        Snapshot { tasks }
    }

    /// A task's local tid and local tgid (its leader's local tid).
    fn local(&self, kernel_tid: u32) -> Option<(u32, u32)> {
        let &(tid, kernel_tgid) = self.tasks.get(&kernel_tid)?;
        let &(tgid, _) = self.tasks.get(&kernel_tgid)?;
        Some((tid, tgid))
    }

    /// The kernel tgid of the process whose local tgid is `local_tgid`.
    fn kernel_tgid(&self, local_tgid: u32) -> Option<u32> {
        self.tasks
            .iter()
            .find(|(kernel, (local, tgid))| *local == local_tgid && **kernel == *tgid)
            .map(|(kernel, _)| *kernel)
    }
}

impl IdMap {
    /// The kernel tgid of tracked process `local_tgid`.
    pub fn kernel_tgid(&self, local_tgid: u32) -> Option<u32> {
        self.by_local.get(&local_tgid).copied()
    }

    /// Track process `local_tgid` as `snapshot` shows it; its kernel tgid, or None if
    /// the snapshot does not have it (it is gone).
    pub fn track(&mut self, local_tgid: u32, snapshot: &Snapshot) -> Option<u32> {
        let kernel = snapshot.kernel_tgid(local_tgid)?;
        self.processes.insert(kernel, local_tgid);
        self.by_local.insert(local_tgid, kernel);
        self.learn(snapshot);
        Some(kernel)
    }

    /// Stop tracking process `local_tgid`: its kernel tgid, if it was tracked.
    pub fn untrack(&mut self, local_tgid: u32) -> Option<u32> {
        let kernel = self.by_local.remove(&local_tgid)?;
        self.processes.remove(&kernel);
        self.threads.retain(|_, (_, tgid)| *tgid != local_tgid);
        Some(kernel)
    }

    /// Whether the kernel's process `kernel_tgid` is tracked.
    pub fn tracks(&self, kernel_tgid: u32) -> bool {
        self.processes.contains_key(&kernel_tgid)
    }

    /// Record the threads of tracked processes that `snapshot` shows.
    pub fn learn(&mut self, snapshot: &Snapshot) {
        for (&kernel_tid, &(_, kernel_tgid)) in &snapshot.tasks {
            if self.processes.contains_key(&kernel_tgid)
                && let Some(local) = snapshot.local(kernel_tid)
            {
                self.threads.insert(kernel_tid, local);
            }
        }
    }

    /// A tracked thread's (local tid, local tgid).
    pub fn local(&self, kernel_tid: u32) -> Option<(u32, u32)> {
        self.threads.get(&kernel_tid).copied()
    }

    /// A thread exited: forget it (its id may be reused from now on).
    pub fn forget_thread(&mut self, kernel_tid: u32) {
        self.threads.remove(&kernel_tid);
    }
}

/// The `pid_view` iterator, attached: each read runs it over the daemon's namespace.
pub struct PidView(TaskIter);

impl PidView {
    /// The `pid_view` program, attached.
    pub fn new(iter: TaskIter) -> Self {
        PidView(iter)
    }

    /// Every task of the daemon's namespace, with its ids in both.
    pub fn snapshot(&self) -> std::io::Result<Snapshot> {
        let bytes = self.0.run()?;
        let pairs: Vec<PidPair> = bytes
            .chunks_exact(size_of::<PidPair>())
            // SAFETY: PidPair is plain old data, and each chunk is exactly one.
            .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<PidPair>()) })
            .collect();
        Ok(Snapshot::from_pairs(&pairs))
    }
}

/// A daemon's pid namespace: the iterator that reads it, and the map learned so far.
pub struct Namespace {
    view: PidView,
    map: IdMap,
}

impl Namespace {
    pub fn new(view: PidView) -> Self {
        Namespace {
            view,
            map: IdMap::default(),
        }
    }

    /// A fresh snapshot, or None (and a warning) if the iterator cannot be read.
    fn snapshot(&self) -> Option<Snapshot> {
        self.view
            .snapshot()
            .inspect_err(|e| tracing::warn!(error = %e, "could not read the pid namespace's tasks"))
            .ok()
    }
}

/// How ids cross between the kernel side and the daemon.
pub enum TaskIds {
    /// The daemon is in the initial pid namespace: ids are the kernel's.
    Host,
    /// The daemon is in a pid namespace of its own.
    Namespace(Mutex<Namespace>),
}

#[derive(Debug, thiserror::Error)]
#[error("reading the pid namespace's tasks (the pid_view iterator): {0}")]
pub struct ViewError(#[from] std::io::Error);

static IDS: OnceLock<TaskIds> = OnceLock::new();

/// How this process maps ids: set once, when the probes load (the pid namespace of a
/// process never changes).
pub fn set(ids: TaskIds) {
    let _ = IDS.set(ids);
}

/// How this process maps ids (identity until the probes load).
pub fn ids() -> &'static TaskIds {
    IDS.get().unwrap_or(&TaskIds::Host)
}

impl TaskIds {
    /// The namespace, locked; None on the host.
    fn namespace(&self) -> Option<MutexGuard<'_, Namespace>> {
        match self {
            TaskIds::Host => None,
            TaskIds::Namespace(ns) => Some(ns.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// The kernel's tgid of process `local_tgid`, tracked from now on. None if it is
    /// not in the daemon's namespace (gone).
    pub fn track(&self, local_tgid: u32) -> Result<Option<u32>, ViewError> {
        let Some(mut ns) = self.namespace() else {
            return Ok(Some(local_tgid));
        };
        if let Some(kernel) = ns.map.kernel_tgid(local_tgid) {
            return Ok(Some(kernel));
        }
        let snapshot = ns.view.snapshot()?;
        Ok(ns.map.track(local_tgid, &snapshot))
    }

    /// The kernel's tgid of process `local_tgid`, which is no longer tracked.
    pub fn untrack(&self, local_tgid: u32) -> Option<u32> {
        match self.namespace() {
            None => Some(local_tgid),
            Some(mut ns) => ns.map.untrack(local_tgid),
        }
    }

    /// A tracked process's thread, by the kernel's ids (`kernel_tgid` 0 if unknown):
    /// (local tid, local tgid). A thread of a tracked process not seen before is looked
    /// for in a fresh snapshot; any other task is None.
    pub fn thread(&self, kernel_tid: u32, kernel_tgid: u32) -> Option<(u32, u32)> {
        let Some(mut ns) = self.namespace() else {
            return Some((kernel_tid, kernel_tgid));
        };
        if let Some(found) = ns.map.local(kernel_tid) {
            return Some(found);
        }
        if kernel_tgid != 0 && !ns.map.tracks(kernel_tgid) {
            return None;
        }
        if let Some(snapshot) = ns.snapshot() {
            ns.map.learn(&snapshot);
        }
        ns.map.local(kernel_tid)
    }

    /// A tracked thread, by the kernel's tid alone; no snapshot is taken.
    pub fn known(&self, kernel_tid: u32) -> Option<(u32, u32)> {
        self.namespace()?.map.local(kernel_tid)
    }

    /// Any task of the daemon's namespace, by the kernel's tid, from a fresh snapshot
    /// (for a task the kernel side just made a target: an exec or a fork).
    pub fn discover(&self, kernel_tid: u32) -> Option<(u32, u32)> {
        self.namespace()?.snapshot()?.local(kernel_tid)
    }

    /// A tracked thread exited.
    pub fn forget_thread(&self, kernel_tid: u32) {
        if let Some(mut ns) = self.namespace() {
            ns.map.forget_thread(kernel_tid);
        }
    }

    pub fn is_host(&self) -> bool {
        matches!(self, TaskIds::Host)
    }

    /// A thread the kernel names in a message (`PID: 1234`): the daemon's id, if it is
    /// a tracked process's thread.
    pub fn named(&self, kernel_tid: u32) -> Option<u32> {
        match self {
            TaskIds::Host => Some(kernel_tid),
            TaskIds::Namespace(_) => self.known(kernel_tid).map(|(tid, _)| tid),
        }
    }

    /// A ring event in the daemon's ids. A task outside the tracked processes is 0
    /// where it is context (who printed, who sent); an event about such a task is
    /// dropped, and a process the kernel side made a target that the daemon cannot see
    /// is handed back to be removed.
    pub fn localize(&self, ev: Event) -> Localized {
        if self.is_host() {
            return Localized::Event(ev);
        }
        let context = |tid: u32| self.known(tid).unwrap_or((0, 0));
        match ev {
            Event::KernelLine(mut line) => {
                (line.tid, line.tgid) = self.thread(line.tid, line.tgid).unwrap_or((0, 0));
                Localized::Event(Event::KernelLine(line))
            }
            Event::ThreadExit(mut exit) => {
                let Some((tid, tgid)) = self.thread(exit.tid, exit.tgid) else {
                    return Localized::Drop;
                };
                self.forget_thread(exit.tid);
                (exit.tid, exit.tgid) = (tid, tgid);
                Localized::Event(Event::ThreadExit(exit))
            }
            Event::Task(mut task) => {
                (task.by_tid, task.by_tgid) = context(task.by_tid);
                let target = match task.kind {
                    // A new process: not tracked yet.
                    TaskEventKind::NewTarget | TaskEventKind::Forked => self.discover(task.target),
                    _ => self.thread(task.target, task.target_tgid.unwrap_or(0)),
                };
                match (target, task.kind) {
                    (Some((tid, tgid)), kind) => {
                        if kind == TaskEventKind::NewTarget
                            && let Err(e) = self.track(tgid)
                        {
                            tracing::warn!(error = %e, "could not place a new target's ids");
                        }
                        task.target = tid;
                        task.target_tgid = task.target_tgid.map(|_| tgid);
                        Localized::Event(Event::Task(task))
                    }
                    (None, TaskEventKind::NewTarget) => Localized::ForeignTarget(task.target),
                    (None, _) => Localized::Drop,
                }
            }
        }
    }
}

/// What a ring event is in the daemon's ids.
#[derive(Debug, PartialEq, Eq)]
pub enum Localized {
    Event(Event),
    /// About a task the daemon does not judge.
    Drop,
    /// The kernel side made a target of a process the daemon cannot see (its kernel
    /// tgid): it is not the service.
    ForeignTarget(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(global_tid: u32, global_tgid: u32, local_tid: u32) -> PidPair {
        PidPair {
            global_tid,
            global_tgid,
            local_tid,
        }
    }

    /// A container: its init (1 = 5000), a service (7 = 5007) with a thread (8 = 5008),
    /// and another process (9 = 5009).
    fn container() -> Snapshot {
        Snapshot::from_pairs(&[
            pair(5000, 5000, 1),
            pair(5007, 5007, 7),
            pair(5008, 5007, 8),
            pair(5009, 5009, 9),
        ])
    }

    #[test]
    fn a_tracked_process_maps_both_ways_with_its_threads() {
        let mut map = IdMap::default();
        assert_eq!(map.track(7, &container()), Some(5007));
        assert_eq!(map.kernel_tgid(7), Some(5007));
        assert_eq!(map.local(5008), Some((8, 7)));
        assert_eq!(map.local(5007), Some((7, 7)));
        assert!(map.tracks(5007));
    }

    #[test]
    fn other_tasks_stay_unmapped() {
        let mut map = IdMap::default();
        map.track(7, &container());
        assert_eq!(map.local(5009), None, "not a tracked process");
        assert!(!map.tracks(5009));
    }

    #[test]
    fn a_thread_id_is_no_process_and_a_gone_process_is_not_tracked() {
        let mut map = IdMap::default();
        assert_eq!(map.track(8, &container()), None, "8 is a thread of 7");
        assert_eq!(map.track(42, &container()), None, "no such process");
        assert!(map.processes.is_empty());
    }

    #[test]
    fn new_threads_are_learned_and_exited_ones_forgotten() {
        let mut map = IdMap::default();
        map.track(7, &container());
        let later = Snapshot::from_pairs(&[pair(5007, 5007, 7), pair(5010, 5007, 10)]);
        map.learn(&later);
        assert_eq!(map.local(5010), Some((10, 7)));
        map.forget_thread(5010);
        assert_eq!(map.local(5010), None);
    }

    #[test]
    fn untracking_gives_the_kernel_id_once_and_drops_the_threads() {
        let mut map = IdMap::default();
        map.track(7, &container());
        assert_eq!(map.untrack(7), Some(5007));
        assert_eq!(map.untrack(7), None);
        assert_eq!(map.local(5008), None);
    }

    #[test]
    fn tasks_the_namespace_cannot_see_are_dropped_from_a_snapshot() {
        let snap = Snapshot::from_pairs(&[pair(5000, 5000, 1), pair(6000, 6000, 0)]);
        assert_eq!(snap.local(6000), None);
        assert_eq!(snap.local(5000), Some((1, 1)));
    }
}
