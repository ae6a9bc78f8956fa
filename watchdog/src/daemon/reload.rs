//! Targets into the kernel side at start, and SIGHUP: the configuration read again and
//! the targets, policies and rules replaced live.
use std::sync::Arc;

use super::{
    DaemonError,
    settings::{load_rules, resolve_gates},
    shared::{ProcHost, Shared, lock},
};
use crate::{
    config,
    judging::{policy::DEFAULT_POLICY, targets::TargetTable},
    kernel::{
        clock::monotonic_ns,
        probes::{EbpfError, Probes},
        procfs,
    },
};

/// Tell the kernel side about the targets, then find the processes they pick now
/// (names and cgroups go to the kernel first, so none that starts in between is
/// missed; one found twice is harmless). Returns them with their policies.
pub(super) fn start_targets(
    probes: &mut Probes,
    targets: &TargetTable,
) -> Result<Vec<(u32, usize)>, EbpfError> {
    for comm in targets.comms() {
        probes.add_comm(comm)?;
    }
    for (_, id) in targets.cgroups() {
        probes.add_cgroup(id)?;
    }
    let running = targets.running(std::process::id());
    for &(pid, _) in &running {
        // A pid given by number is that process alone; processes found by name or
        // cgroup bring what they fork.
        if targets.pids().any(|p| p == pid) {
            probes.add_target(pid)?;
        } else {
            probes.add_following_target(pid)?;
        }
    }
    Ok(running)
}

/// Why the heartbeat waits when no target process runs yet.
pub(super) fn waiting_reason(targets: &TargetTable) -> String {
    format!(
        "waiting for a monitored process to start ({})",
        targets.describe().join(", ")
    )
}

/// SIGHUP: read the config again. Policies (budgets, actions), rules and targets change
/// live, without touching the heartbeat or what is in flight; a config that fails to
/// load leaves the running one, and says why.
pub(super) fn reload(shared: &Shared) {
    let checked = config::load(&shared.args)
        .map_err(DaemonError::from)
        .and_then(|c| {
            let targets = TargetTable::resolve(&c.targets)?;
            let rules = load_rules(&c)?;
            let gates = resolve_gates(&c.gates)?;
            Ok((c, targets, rules, gates))
        });
    let (new, targets, rules, gates) = match checked {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "reload failed: keeping the running configuration");
            return;
        }
    };
    let mut current = lock(&shared.config);
    let later = config::restart_needed(&current, &new);
    if !later.is_empty() {
        tracing::warn!(settings = %later.join(", "), "changed in the config: they take effect on restart");
    }
    if current.targets != new.targets
        && let Err(e) = retarget(shared, &targets)
    {
        tracing::error!(error = %e, "reload failed: keeping the running configuration");
        return;
    }
    if (&current.gates, current.gate_grace) != (&new.gates, new.gate_grace)
        && let Err(e) = shared.service_gate.configure(gates, new.gate_grace)
    {
        tracing::error!(error = %e, "reload: the service heartbeat gates could not be changed");
    }
    let rule_count = rules.rules().len();
    {
        let mut r = shared.reactions();
        r.monitor_mut().set_policies(new.policies.clone());
        r.set_rules(Arc::new(rules));
    }
    tracing::info!(
        budget_ms = new.policies[DEFAULT_POLICY].budgets.default.as_millis() as u64,
        targets = ?targets.describe(),
        rules = rule_count,
        gates = ?new.gates.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "configuration reloaded"
    );
    *current = new;
}

/// Replace the targets: the kernel's names and cgroups first, then every monitored
/// process is picked again (or dropped, without a verdict), then processes the new
/// targets pick are added.
fn retarget(shared: &Shared, new: &TargetTable) -> Result<(), EbpfError> {
    let mut probes_guard = lock(&shared.probes);
    let Some(probes) = probes_guard.as_mut() else {
        return Ok(());
    };
    let old = shared.reactions().targets().clone();
    for comm in old.comms().filter(|c| !new.comms().any(|n| n == *c)) {
        probes.remove_comm(comm)?;
    }
    for (_, id) in old
        .cgroups()
        .filter(|(_, id)| !new.cgroups().any(|(_, n)| n == *id))
    {
        probes.remove_cgroup(id)?;
    }
    let running = start_targets(probes, new)?;
    let new_pids: Vec<u32> = new.pids().collect();
    let new_comms: Vec<String> = new.comms().map(str::to_owned).collect();
    let has_cgroups = new.cgroups().next().is_some();
    let dropped = {
        let mut r = shared.reactions();
        r.set_targets(new.clone());
        r.monitor_mut().retarget(
            |tgid| {
                let comm = procfs::comm(tgid, tgid);
                new.policy_for(
                    tgid,
                    comm.as_deref(),
                    || procfs::cgroup_id_of(tgid),
                    || procfs::identity(tgid),
                )
            },
            // A dead service blocks resuming while a target would pick it again (a
            // cgroup cannot be asked about a dead process: it keeps blocking).
            |pid, name| {
                new_pids.contains(&pid) || new_comms.iter().any(|c| c == name) || has_cgroups
            },
        )
    };
    for tgid in &dropped {
        probes.remove_target(*tgid)?;
        tracing::info!(
            pid = tgid,
            "no longer monitored: not in the reloaded targets"
        );
    }
    drop(probes_guard);
    let mut effects = Vec::new();
    for &(pid, policy) in &running {
        let comm = procfs::comm(pid, pid).unwrap_or_default();
        effects.extend(shared.reactions().new_target(
            pid,
            &comm,
            policy,
            "picked by the reloaded targets",
        ));
    }
    // They ran before the kernel side watched them: syscalls already in flight count.
    let pids: Vec<u32> = running.iter().map(|(pid, _)| *pid).collect();
    shared
        .reactions()
        .adopt_running(&pids, monotonic_ns(), &ProcHost);
    shared.apply(effects);
    // Nothing left to monitor while the heartbeat is sent: wait for the service, as at
    // a start. (A heartbeat stopped by a verdict stays stopped.)
    let mut r = shared.reactions();
    if r.monitor().targets().next().is_none() && shared.latch.is_open() {
        r.await_service();
        drop(r);
        shared.latch.close(&waiting_reason(new));
    }
    Ok(())
}
