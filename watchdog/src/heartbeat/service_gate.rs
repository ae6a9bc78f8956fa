//! The service heartbeat gate at run time: while our heartbeat is stopped by a verdict,
//! the kernel drops the packets that make up the service's own heartbeat, so its peers
//! hear silence too, with no change to the service.
//!
//! It follows the latch (closed while the heartbeat is stopped), keeps the kernel side's
//! lease alive at every beat (so a dead daemon's gates close after the grace period), and
//! keeps the kernel side's senders in line with what is monitored.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use watchdog_common::gate::{GateRule, GateState, MAX_GATES, TAG_MONITORED};

use crate::{
    heartbeat::{
        gate_spec::{GateSender, GateSpec},
        sender::Latch,
    },
    kernel::{
        clock::monotonic_ns,
        gate::{GateError, GateProbes},
    },
};

/// A gate checked against this system: its spec and the rule the kernel matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedGate {
    pub spec: GateSpec,
    pub rule: GateRule,
}

/// One gate in `wdctl status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateReport {
    /// The gate, as `--gate` writes it.
    pub gate: String,
    /// Packets it dropped since the daemon started.
    pub dropped: u64,
}

/// The gate of one daemon: unattached while no gate is configured.
pub struct ServiceGate {
    dir: PathBuf,
    /// Closed gates while it is closed: every change of the gates reads it, so the last
    /// writer always writes the current truth.
    latch: Arc<Latch>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    probes: Option<GateProbes>,
    gates: Vec<ResolvedGate>,
    state: GateState,
    grace: Duration,
    /// Drops of each gate (by name) counted before the rules last changed places.
    carried: BTreeMap<String, u64>,
    /// Drops on the kernel counters when this daemon took over (an earlier daemon's).
    baseline: [u64; MAX_GATES],
    monitored: HashSet<u32>,
}

impl ServiceGate {
    /// A gate pinned under `dir` that follows `latch`; nothing is attached until
    /// [`ServiceGate::configure`] gives it gates.
    pub fn new(dir: PathBuf, latch: Arc<Latch>) -> Self {
        ServiceGate {
            dir,
            latch,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hold back `gates`, with the lease good for `grace`: attach the gate (taking over
    /// one an earlier daemon left) if it is not yet; take it away if `gates` is empty.
    pub fn configure(&self, gates: Vec<ResolvedGate>, grace: Duration) -> Result<(), GateError> {
        let mut g = self.lock();
        g.grace = grace;
        if gates.is_empty() {
            g.gates.clear();
            match g.probes.take() {
                Some(p) => {
                    p.remove();
                    tracing::info!("no gate configured: service heartbeat gate removed");
                }
                None if crate::kernel::gate::remove_pinned(&self.dir) => {
                    tracing::warn!(dir = %self.dir.display(), "no gate configured: removed the service heartbeat gate an earlier daemon left");
                }
                None => {}
            }
            return Ok(());
        }
        if g.probes.is_none() {
            let probes = GateProbes::attach(&self.dir)?;
            let before = probes.state()?;
            if before.count > 0 {
                tracing::info!(
                    gates = before.count,
                    closed = before.closed != 0,
                    "took over the service heartbeat gate an earlier daemon left"
                );
            }
            g.baseline = probes.drops();
            // Its state until ours is written: an earlier daemon's closed gates stay
            // closed through the takeover.
            g.state = before;
            g.probes = Some(probes);
        }
        g.state.closed = !self.latch.is_open() as u32;
        g.state.lease_until_ns = lease(grace);
        g.set_gates(gates)
    }

    /// Bring the gates in line with the latch: closed while the heartbeat is stopped.
    pub fn follow(&self) {
        let mut g = self.lock();
        let closed = !self.latch.is_open();
        if g.probes.is_some() && (g.state.closed != 0) != closed {
            g.state.closed = closed as u32;
            g.write_state();
            let gates = g.names().join(" ");
            match closed {
                true => tracing::warn!(gates = %gates, "service heartbeat gates closed"),
                false => tracing::warn!(gates = %gates, "service heartbeat gates open"),
            }
        }
    }

    /// Push the lease forward (and check the gates follow the latch): at every beat.
    pub fn renew(&self) {
        self.follow();
        let mut g = self.lock();
        if g.probes.is_some() {
            g.state.lease_until_ns = lease(g.grace);
            g.write_state();
        }
    }

    /// The monitored processes are now `tgids`.
    pub fn monitored(&self, tgids: impl IntoIterator<Item = u32>) {
        let mut g = self.lock();
        let now: HashSet<u32> = tgids.into_iter().collect();
        if now != g.monitored {
            g.monitored = now;
            g.sync_senders();
        }
    }

    /// One more monitored process (a forked child), at once.
    pub fn add_monitored(&self, tgid: u32) {
        let mut g = self.lock();
        if g.monitored.insert(tgid) {
            g.sync_senders();
        }
    }

    pub fn remove_monitored(&self, tgid: u32) {
        let mut g = self.lock();
        if g.monitored.remove(&tgid) {
            g.sync_senders();
        }
    }

    /// Each gate and what it dropped since this daemon started.
    pub fn report(&self) -> Vec<GateReport> {
        self.lock().report()
    }

    /// The gates that are closed now (none while the heartbeat is sent).
    pub fn closed(&self) -> Vec<String> {
        let g = self.lock();
        match g.probes.is_some() && g.state.closed != 0 {
            true => g.names(),
            false => Vec::new(),
        }
    }

    /// At a clean stop: a stopped heartbeat leaves the gates pinned and closed for the
    /// next daemon (a stalled service stays silent); otherwise the gate goes away, and
    /// the service is as it would be without us.
    pub fn shutdown(&self) {
        let mut g = self.lock();
        let Some(probes) = g.probes.take() else {
            return;
        };
        if self.latch.is_open() {
            probes.remove();
        } else {
            tracing::warn!(
                gates = %g.names().join(" "),
                dir = %self.dir.display(),
                "the heartbeat is stopped: the service heartbeat gates stay closed for the next daemon"
            );
        }
    }
}

fn lease(grace: Duration) -> u64 {
    monotonic_ns() + grace.as_nanos() as u64
}

impl Inner {
    fn names(&self) -> Vec<String> {
        self.gates.iter().map(|g| g.spec.to_string()).collect()
    }

    fn write_state(&mut self) {
        let state = self.state;
        if let Some(Err(e)) = self.probes.as_mut().map(|p| p.set_state(state)) {
            tracing::error!(error = %e, "cannot update the service heartbeat gate");
        }
    }

    fn report(&self) -> Vec<GateReport> {
        let Some(probes) = &self.probes else {
            return Vec::new();
        };
        let now = probes.drops();
        self.gates
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let name = g.spec.to_string();
                let carried = self.carried.get(&name).copied().unwrap_or(0);
                GateReport {
                    dropped: carried + now[i].saturating_sub(self.baseline[i]),
                    gate: name,
                }
            })
            .collect()
    }

    /// Write `gates` and the state (attached).
    fn set_gates(&mut self, gates: Vec<ResolvedGate>) -> Result<(), GateError> {
        if gates == self.gates {
            self.write_state();
            return Ok(());
        }
        // The counters are by place: keep what each gate counted under its name.
        for r in self.report() {
            *self.carried.entry(r.gate).or_default() = r.dropped;
        }
        self.gates = gates;
        self.sync_senders();
        let comms = self.comm_senders();
        let rules: Vec<GateRule> = self.gates.iter().map(|g| g.rule).collect();
        let mut state = self.state;
        let Some(probes) = self.probes.as_mut() else {
            return Ok(());
        };
        // A restarted daemon with the same gates changes nothing in the kernel: no
        // moment without them.
        let same = probes.rules(state.count as usize)? == rules;
        if !same {
            // Nothing matches while the rules change places under it.
            state.count = 0;
            probes.set_state(state)?;
            probes.clear_drops()?;
            self.baseline = [0; MAX_GATES];
        }
        probes.sync_comms(&comms)?;
        probes.set_rules(&rules)?;
        state.comm_senders = !comms.is_empty() as u32;
        state.count = rules.len() as u32;
        probes.set_state(state)?;
        self.state = state;
        Ok(())
    }

    fn comm_senders(&self) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for (i, g) in self.gates.iter().enumerate() {
            if let GateSender::Comm(c) = &g.spec.sender {
                *out.entry(c.clone()).or_default() |= 1 << i;
            }
        }
        out
    }

    /// tgid -> sender mask: every monitored process, and the `pid:` senders.
    fn senders(&self) -> HashMap<u32, u64> {
        let mut out: HashMap<u32, u64> = HashMap::new();
        if self
            .gates
            .iter()
            .any(|g| g.spec.sender == GateSender::Monitored)
        {
            for t in &self.monitored {
                out.insert(*t, TAG_MONITORED);
            }
        }
        for (i, g) in self.gates.iter().enumerate() {
            if let GateSender::Pid(p) = g.spec.sender {
                *out.entry(p).or_default() |= 1 << i;
            }
        }
        out
    }

    fn sync_senders(&mut self) {
        let want = self.senders();
        if let Some(Err(e)) = self.probes.as_mut().map(|p| p.sync_senders(&want)) {
            tracing::error!(error = %e, "cannot update the service heartbeat gate's senders");
        }
    }
}
