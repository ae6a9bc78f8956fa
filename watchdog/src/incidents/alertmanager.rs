//! Incidents pushed to Alertmanager (`POST /api/v2/alerts`), each as an alert. An
//! incident that stopped the heartbeat holds: it is sent again every `resend`, saying it
//! ends four of those later (so a node that dies leaves no alert firing forever: the
//! fleet monitor's silence alert takes over), until the heartbeat resumes, when it is
//! sent once more as resolved. Any other incident fires once and ends by itself.
//!
//! The book of alerts is pure ([`AlertBook`]); the sender is a thread of its own, fed
//! by the alert thread before the exec hook runs, with a timeout per request and
//! retries with backoff per Alertmanager, so a down or slow one delays nothing else.
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, UNIX_EPOCH},
};

use serde_json::{Value, json};

use super::{Incident, Kind, now_unix_ms};

/// What the sender is told.
#[derive(Debug)]
pub enum Notice {
    /// A stored incident, with the cgroup of its process if known, and its key
    /// (node/boot id/incident id: the same alert again, if a restart sends it again).
    Incident {
        incident: Box<Incident>,
        cgroup: Option<String>,
        key: Option<String>,
    },
    /// The heartbeat was stopped before this daemon started (the store says so, and
    /// why): the latch holds, though the incident that closed it is not in the book.
    LatchedBeforeStart { reason: String, at_unix_ms: u64 },
    /// The heartbeat is sent again: what held is resolved.
    Resumed,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// The heartbeat is stopped by it: re-sent, ending `resend * 4` after each send.
    Holds,
    /// Fires for `resend * 4` from when an Alertmanager first took it (so one that was
    /// down when it happened still gets it firing, not already over); until then it
    /// is sent like a holding one.
    Fires,
    /// Over at this time (ms since the epoch): resolved, or its time to fire is up.
    EndsAt(u64),
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at_ms: u64,
    state: State,
    /// When it last changed (ms): sent since then to every Alertmanager, and ended, it
    /// can go.
    changed_ms: u64,
    /// The incident it is (None for the latch from before a restart), until some
    /// Alertmanager took it: then it is reported delivered, once.
    undelivered: Option<i64>,
    added_ms: u64,
}

/// The alerts to send, as they are now. Pure.
#[derive(Debug)]
pub struct AlertBook {
    node: String,
    resend: Duration,
    entries: Vec<Entry>,
}

/// How many lines of a kernel report go into the description.
const REPORT_LINES: usize = 8;

impl AlertBook {
    pub fn new(node: &str, resend: Duration) -> Self {
        AlertBook {
            node: node.to_owned(),
            resend,
            entries: Vec::new(),
        }
    }

    fn lifetime_ms(&self) -> u64 {
        self.resend.as_millis() as u64 * 4
    }

    /// Take in what the sender was told at `now_ms`.
    pub fn apply(&mut self, notice: Notice, now_ms: u64) {
        match notice {
            Notice::Incident {
                incident,
                cgroup,
                key,
            } => self.add(&incident, cgroup, key, now_ms),
            Notice::LatchedBeforeStart { reason, at_unix_ms } => {
                let mut labels = self.base_labels("heartbeat-stopped", "latch", "critical");
                labels.insert("incident".into(), format!("latch-{at_unix_ms}"));
                let annotations = BTreeMap::from([
                    (
                        "summary".to_owned(),
                        format!(
                            "heartbeat of {} stopped before the watchdog restarted",
                            self.node
                        ),
                    ),
                    ("description".to_owned(), reason),
                ]);
                self.entries.push(Entry {
                    labels,
                    annotations,
                    starts_at_ms: at_unix_ms,
                    state: State::Holds,
                    changed_ms: now_ms,
                    undelivered: None,
                    added_ms: now_ms,
                });
            }
            Notice::Resumed => {
                for e in &mut self.entries {
                    if e.state == State::Holds {
                        e.state = State::EndsAt(now_ms);
                        e.changed_ms = now_ms;
                    }
                }
            }
        }
    }

    fn base_labels(&self, kind: &str, class: &str, severity: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("alertname".to_owned(), "WatchdogIncident".to_owned()),
            ("node".to_owned(), self.node.clone()),
            ("kind".to_owned(), kind.to_owned()),
            ("class".to_owned(), class.to_owned()),
            ("severity".to_owned(), severity.to_owned()),
        ])
    }

    fn add(&mut self, inc: &Incident, cgroup: Option<String>, key: Option<String>, now_ms: u64) {
        let severity = match (&inc.report, inc.kind) {
            (Some(r), _) if !inc.stopped_heartbeat => r.severity.as_str(),
            (_, Kind::OomVictim) if !inc.stopped_heartbeat => "error",
            _ => "critical",
        };
        let mut labels = self.base_labels(inc.kind.as_str(), &inc.class, severity);
        // Each incident is an alert of its own (two stalls are two alerts), and the
        // same one again if a restart delivers it again.
        if let Some(key) = key.or_else(|| inc.id.map(|id| id.to_string())) {
            labels.insert("incident".into(), key);
        }
        if let Some(comm) = &inc.comm {
            labels.insert("comm".into(), comm.clone());
        }
        if let Some(cgroup) = cgroup {
            labels.insert("cgroup".into(), cgroup);
        }
        // A crash of an earlier boot, found in pstore: which backend kept it.
        if let Some(pb) = &inc.previous_boot {
            labels.insert("previous_boot".into(), pb.backend.clone());
        }
        let mut description = Vec::new();
        if let Some(stall) = &inc.stall {
            description.push(stall.reason.clone());
        }
        if let Some(report) = &inc.report {
            description.extend(report.lines.iter().take(REPORT_LINES).cloned());
        }
        if description.is_empty() {
            description.push(inc.summary.clone());
        }
        let mut annotations = BTreeMap::from([
            ("summary".to_owned(), inc.summary.clone()),
            ("description".to_owned(), description.join("\n")),
        ]);
        if let Some(pid) = inc.pid {
            annotations.insert("pid".into(), pid.to_string());
        }
        let state = if inc.stopped_heartbeat {
            State::Holds
        } else {
            State::Fires
        };
        self.entries.push(Entry {
            labels,
            annotations,
            starts_at_ms: inc.at_unix_ms,
            state,
            changed_ms: now_ms,
            undelivered: inc.id,
            added_ms: now_ms,
        });
    }

    /// Incidents some Alertmanager took by `delivered_any_ms` (its latest successful
    /// send) that were not reported yet: each is reported once.
    pub fn newly_delivered(&mut self, delivered_any_ms: u64) -> Vec<i64> {
        self.entries
            .iter_mut()
            .filter(|e| e.added_ms <= delivered_any_ms)
            .filter_map(|e| e.undelivered.take())
            .collect()
    }

    /// Whether anything is left to send.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The body of `POST /api/v2/alerts` at `now_ms`: every alert, a holding one
    /// ending `resend * 4` from now.
    pub fn payload(&self, now_ms: u64) -> Value {
        let alerts: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let ends = match e.state {
                    State::Holds | State::Fires => now_ms + self.lifetime_ms(),
                    State::EndsAt(t) => t,
                };
                json!({
                    "labels": e.labels,
                    "annotations": e.annotations,
                    "startsAt": rfc3339(e.starts_at_ms),
                    "endsAt": rfc3339(ends),
                })
            })
            .collect();
        Value::Array(alerts)
    }

    /// After a round of sends at `now_ms`: an alert that fires by itself starts its
    /// time once some Alertmanager took it (`delivered_any_ms`: the latest successful
    /// send); what is over goes once every Alertmanager took it since its last change
    /// (`delivered_all_ms`: the oldest of their last successful sends).
    pub fn prune(&mut self, now_ms: u64, delivered_all_ms: u64, delivered_any_ms: u64) {
        let lifetime = self.lifetime_ms();
        for e in &mut self.entries {
            if e.state == State::Fires && delivered_any_ms >= e.changed_ms {
                e.state = State::EndsAt(delivered_any_ms + lifetime);
                e.changed_ms = delivered_any_ms;
            }
        }
        self.entries.retain(|e| match e.state {
            State::Holds | State::Fires => true,
            State::EndsAt(t) => t > now_ms || e.changed_ms > delivered_all_ms,
        });
    }
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// Counters the daemon reports.
#[derive(Debug, Default)]
pub struct AlertmanagerStats {
    /// Successful sends (each of the whole book, to one Alertmanager).
    pub sent: AtomicU64,
    /// Sends that failed (refused, timed out, or an error status).
    pub failures: AtomicU64,
}

/// One Alertmanager and when to send to it next.
struct Target {
    url: String,
    next: Instant,
    backoff: Duration,
    /// When the last successful send started (ms since the epoch).
    last_ok_ms: u64,
}

/// A failed send is tried again after 1 s, then twice as long each time, up to the
/// resend interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Start the sender thread for `urls` (base URLs); tell it what happens through the
/// returned channel.
/// `delivered` hears of each incident once some Alertmanager took it.
pub fn start(
    urls: Vec<String>,
    node: String,
    resend: Duration,
    timeout: Duration,
    stats: Arc<AlertmanagerStats>,
    delivered: Box<dyn Fn(i64) + Send>,
) -> mpsc::Sender<Notice> {
    let (tx, rx) = mpsc::channel::<Notice>();
    thread::Builder::new()
        .name("wd-alertmanager".into())
        .spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(true)
                .build()
                .into();
            let mut book = AlertBook::new(&node, resend);
            let start = Instant::now();
            let mut targets: Vec<Target> = urls
                .into_iter()
                .map(|url| Target {
                    url: format!("{url}/api/v2/alerts"),
                    next: start,
                    backoff: FIRST_BACKOFF,
                    last_ok_ms: 0,
                })
                .collect();
            loop {
                let due = targets.iter().map(|t| t.next).min().unwrap_or(start);
                let wait = if book.is_empty() {
                    resend
                } else {
                    due.saturating_duration_since(Instant::now())
                };
                match rx.recv_timeout(wait) {
                    Ok(notice) => {
                        book.apply(notice, now_unix_ms());
                        // Something changed: every Alertmanager hears it now.
                        let now = Instant::now();
                        for t in &mut targets {
                            t.next = now;
                            t.backoff = FIRST_BACKOFF;
                        }
                        // Take in whatever else is queued before sending.
                        while let Ok(more) = rx.try_recv() {
                            book.apply(more, now_unix_ms());
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if book.is_empty() {
                    continue;
                }
                for t in &mut targets {
                    if t.next > Instant::now() {
                        continue;
                    }
                    let sent_ms = now_unix_ms();
                    let body = book.payload(sent_ms).to_string();
                    match agent
                        .post(&t.url)
                        .header("Content-Type", "application/json")
                        .send(body.as_bytes())
                    {
                        Ok(_) => {
                            stats.sent.fetch_add(1, Ordering::Relaxed);
                            t.last_ok_ms = sent_ms;
                            t.backoff = FIRST_BACKOFF;
                            t.next = Instant::now() + resend;
                        }
                        Err(e) => {
                            stats.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(url = %t.url, error = %e, retry_in_ms = t.backoff.as_millis() as u64, "alert not delivered to Alertmanager");
                            t.next = Instant::now() + t.backoff;
                            t.backoff = (t.backoff * 2).min(resend);
                        }
                    }
                }
                let all = targets.iter().map(|t| t.last_ok_ms).min().unwrap_or(0);
                let any = targets.iter().map(|t| t.last_ok_ms).max().unwrap_or(0);
                for id in book.newly_delivered(any) {
                    delivered(id);
                }
                book.prune(now_unix_ms(), all, any);
            }
        })
        .expect("spawn alertmanager thread");
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::StallDetails;

    const RESEND: Duration = Duration::from_secs(60);

    fn stall(id: i64, at: u64) -> Incident {
        Incident {
            id: Some(id),
            at_unix_ms: at,
            kind: Kind::SyscallStall,
            class: "syscall-budget".into(),
            summary: "thread 8 (stuck) of pid 6: vfork".into(),
            host: "node-a".into(),
            monitored: true,
            stopped_heartbeat: true,
            pid: Some(6),
            tid: Some(8),
            comm: Some("stuck".into()),
            report: None,
            stall: Some(StallDetails {
                reason: "vfork in uninterruptible sleep for 501 ms".into(),
                budget_ms: 500,
                ..Default::default()
            }),
            signal: None,
            gates_closed: vec![],
            previous_boot: None,
        }
    }

    fn alerts(book: &AlertBook, now: u64) -> Vec<Value> {
        book.payload(now).as_array().unwrap().clone()
    }

    #[test]
    fn a_stall_holds_with_its_labels_until_resumed_then_is_resolved_then_goes() {
        let mut book = AlertBook::new("node-a", RESEND);
        book.apply(
            Notice::Incident {
                incident: Box::new(stall(3, 1_000)),
                cgroup: Some("/system.slice/db.service".into()),
                key: Some("node-a/b00t/3".into()),
            },
            1_000,
        );
        let a = &alerts(&book, 2_000)[0];
        assert_eq!(
            a["labels"],
            json!({"alertname": "WatchdogIncident", "node": "node-a", "kind": "syscall-stall",
                   "class": "syscall-budget", "severity": "critical", "incident": "node-a/b00t/3",
                   "comm": "stuck", "cgroup": "/system.slice/db.service"})
        );
        assert_eq!(
            a["annotations"]["description"],
            "vfork in uninterruptible sleep for 501 ms"
        );
        assert_eq!(a["startsAt"], "1970-01-01T00:00:01.000Z");
        // Holding: it ends four resends from each send, so it lives while re-sent.
        assert_eq!(a["endsAt"], rfc3339(2_000 + 240_000));
        assert_eq!(
            alerts(&book, 100_000)[0]["endsAt"],
            rfc3339(100_000 + 240_000)
        );
        book.prune(500_000, 500_000, 500_000);
        assert!(!book.is_empty(), "a holding alert is never dropped");
        book.apply(Notice::Resumed, 600_000);
        assert_eq!(alerts(&book, 601_000)[0]["endsAt"], rfc3339(600_000));
        // Not yet delivered everywhere since it was resolved: kept.
        book.prune(601_000, 599_000, 601_000);
        assert!(!book.is_empty());
        book.prune(601_000, 601_000, 601_000);
        assert!(book.is_empty());
    }

    #[test]
    fn an_incident_that_stopped_nothing_fires_from_its_first_delivery_then_ends() {
        let mut book = AlertBook::new("node-a", RESEND);
        let mut inc = stall(4, 1_000);
        inc.stopped_heartbeat = false;
        book.apply(
            Notice::Incident {
                incident: Box::new(inc),
                cgroup: None,
                key: None,
            },
            1_000,
        );
        book.apply(Notice::Resumed, 2_000);
        assert!(alerts(&book, 2_000)[0]["labels"].get("cgroup").is_none());
        // No Alertmanager took it yet (down for ten minutes): still firing when sent.
        book.prune(600_000, 0, 0);
        assert_eq!(
            alerts(&book, 600_000)[0]["endsAt"],
            rfc3339(600_000 + 240_000)
        );
        // Taken at 601 s: it fires until four resends later, then goes.
        book.prune(601_000, 601_000, 601_000);
        assert_eq!(
            alerts(&book, 700_000)[0]["endsAt"],
            rfc3339(601_000 + 240_000)
        );
        book.prune(841_001, 841_001, 841_001);
        assert!(book.is_empty());
    }

    #[test]
    fn a_latch_from_before_a_restart_holds_until_resumed() {
        let mut book = AlertBook::new("node-a", RESEND);
        book.apply(
            Notice::LatchedBeforeStart {
                reason: "thread 8 (stuck) of pid 6: vfork".into(),
                at_unix_ms: 5_000,
            },
            9_000,
        );
        let a = &alerts(&book, 9_000)[0];
        assert_eq!(a["labels"]["kind"], "heartbeat-stopped");
        assert_eq!(
            a["annotations"]["description"],
            "thread 8 (stuck) of pid 6: vfork"
        );
        book.apply(Notice::Resumed, 10_000);
        assert_eq!(alerts(&book, 10_000)[0]["endsAt"], rfc3339(10_000));
    }
}
