//! Prometheus metrics on an optional `--metrics ADDR:PORT` (off by default), in the text
//! exposition format (prometheus-client). Counters and histograms are updated as things
//! happen; the rest is read from the daemon when scraped.
use std::{net::SocketAddr, sync::Mutex};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

type Labels = Vec<(String, String)>;

/// What is current when scraped, supplied by the daemon.
pub struct Snapshot {
    pub heartbeat_sending: bool,
    /// Why the heartbeat is stopped, while it is.
    pub stopped_reason: Option<String>,
    pub heartbeats_sent: u64,
    pub monitored_threads: i64,
    pub lost_events: u64,
    pub untracked_syscalls: u64,
    pub kernel_lines: u64,
    /// Kernel log lines at level err or worse that no rule knows.
    pub unmatched_error_lines: u64,
    /// (destination, pending, failed) of the incident outbox.
    pub outbox: Vec<(String, u64, u64)>,
    /// Pushes of the alerts to an Alertmanager that succeeded, and that failed.
    pub alertmanager_sent: u64,
    pub alertmanager_failures: u64,
    /// (gate, packets dropped) of each service heartbeat gate.
    pub gates: Vec<(String, u64)>,
    /// (program, run time ns, runs) from the kernel's BPF statistics (zero unless
    /// --probe-stats or kernel.bpf_stats_enabled=1).
    pub probes: Vec<(String, u64, u64)>,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    verdicts: Family<Labels, Counter>,
    kernel_reports: Family<Labels, Counter>,
    syscall_seconds: Family<Labels, Histogram>,
    heartbeat_sending: Gauge,
    heartbeat_stop: Family<Labels, Gauge>,
    heartbeats_sent: Gauge,
    monitored_threads: Gauge,
    lost_events: Gauge,
    untracked_syscalls: Gauge,
    kernel_lines: Gauge,
    probe_run_seconds: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    probe_runs: Family<Labels, Gauge>,
    gated_packets: Family<Labels, Counter>,
    unmatched_error_lines: Gauge,
    alertmanager_sent: Counter,
    alertmanager_failures: Counter,
    outbox_pending: Family<Labels, Gauge>,
    outbox_failed: Family<Labels, Gauge>,
}

fn histogram() -> Histogram {
    // 10 µs to ~10 s, by factors of 4.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-5, 4.0, 11,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("watchdog")),
            verdicts: Family::default(),
            kernel_reports: Family::default(),
            syscall_seconds: Family::new_with_constructor(histogram),
            heartbeat_sending: Gauge::default(),
            heartbeat_stop: Family::default(),
            heartbeats_sent: Gauge::default(),
            monitored_threads: Gauge::default(),
            lost_events: Gauge::default(),
            untracked_syscalls: Gauge::default(),
            kernel_lines: Gauge::default(),
            probe_run_seconds: Family::default(),
            probe_runs: Family::default(),
            gated_packets: Family::default(),
            unmatched_error_lines: Gauge::default(),
            alertmanager_sent: Counter::default(),
            alertmanager_failures: Counter::default(),
            outbox_pending: Family::default(),
            outbox_failed: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "heartbeat_sending",
                "1 while the heartbeat is sent, 0 when stopped",
                m.heartbeat_sending.clone(),
            );
            r.register(
                "heartbeat_stop_info",
                "1, labelled with the reason, while the heartbeat is stopped",
                m.heartbeat_stop.clone(),
            );
            r.register(
                "heartbeats_sent",
                "Heartbeat datagrams sent since start",
                m.heartbeats_sent.clone(),
            );
            r.register(
                "verdicts",
                "Verdicts that stopped the heartbeat, by cause",
                m.verdicts.clone(),
            );
            r.register(
                "kernel_reports",
                "Kernel messages classified as problems, by class and severity (info, warning, error, critical)",
                m.kernel_reports.clone(),
            );
            r.register(
                "syscall_duration_seconds",
                "Durations of monitored syscalls, by target program (sampled: the last syscall of each thread per scan; to a jiffy, 0 under one)",
                m.syscall_seconds.clone(),
            );
            r.register(
                "monitored_threads",
                "Threads of the monitored processes",
                m.monitored_threads.clone(),
            );
            r.register(
                "lost_events",
                "Kernel events lost because the ring buffer was full",
                m.lost_events.clone(),
            );
            r.register(
                "untracked_syscalls",
                "Monitored syscalls not tracked because the in-flight table was full",
                m.untracked_syscalls.clone(),
            );
            r.register(
                "kernel_lines",
                "Kernel messages read",
                m.kernel_lines.clone(),
            );
            r.register(
                "probe_run_seconds",
                "Time the kernel spent in each probe (needs --probe-stats or kernel.bpf_stats_enabled=1)",
                m.probe_run_seconds.clone(),
            );
            r.register(
                "kernel_lines_unmatched_errors",
                "Kernel log lines at level err or worse that no rule knows (a rule may be missing: wdctl kmsg classify --unmatched)",
                m.unmatched_error_lines.clone(),
            );
            r.register(
                "gated_packets",
                "Packets of the service's own heartbeat dropped by each gate while the heartbeat was stopped",
                m.gated_packets.clone(),
            );
            r.register(
                "outbox_pending",
                "Incidents not delivered yet, by destination (exec-hook, alertmanager)",
                m.outbox_pending.clone(),
            );
            r.register(
                "outbox_failed",
                "Incidents not delivered yet whose delivery failed at least once (it is retried), by destination",
                m.outbox_failed.clone(),
            );
            r.register(
                "alertmanager_sends",
                "Pushes of the alerts to an Alertmanager that it accepted",
                m.alertmanager_sent.clone(),
            );
            r.register(
                "alertmanager_failures",
                "Pushes of the alerts to an Alertmanager that failed (refused, timed out, error status); each is retried",
                m.alertmanager_failures.clone(),
            );
            r.register(
                "probe_runs",
                "Runs of each probe (needs --probe-stats or kernel.bpf_stats_enabled=1)",
                m.probe_runs.clone(),
            );
        }
        m
    }
}

/// Bring a counter that mirrors a total kept elsewhere up to it: a counter only goes
/// up, so what is new since the last scrape is added.
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_owned(), v.to_owned())]
}

impl Metrics {
    pub fn verdict(&self, cause: &str) {
        self.verdicts.get_or_create(&label("cause", cause)).inc();
    }

    pub fn kernel_report(&self, class: &str, severity: &str) {
        self.kernel_reports
            .get_or_create(&vec![
                ("class".to_owned(), class.to_owned()),
                ("severity".to_owned(), severity.to_owned()),
            ])
            .inc();
    }

    pub fn syscall(&self, target: &str, seconds: f64) {
        self.syscall_seconds
            .get_or_create(&label("target", target))
            .observe(seconds);
    }

    /// The text exposition, with `now` filled in.
    pub fn render(&self, now: &Snapshot) -> String {
        self.heartbeat_sending.set(i64::from(now.heartbeat_sending));
        // Only the current reason: a stop's series ends when it is resumed.
        self.heartbeat_stop.clear();
        if let Some(reason) = &now.stopped_reason {
            self.heartbeat_stop
                .get_or_create(&label("reason", reason))
                .set(1);
        }
        self.heartbeats_sent.set(now.heartbeats_sent as i64);
        self.monitored_threads.set(now.monitored_threads);
        self.lost_events.set(now.lost_events as i64);
        self.untracked_syscalls.set(now.untracked_syscalls as i64);
        self.kernel_lines.set(now.kernel_lines as i64);
        self.unmatched_error_lines
            .set(now.unmatched_error_lines as i64);
        for (dest, pending, failed) in &now.outbox {
            self.outbox_pending
                .get_or_create(&label("destination", dest))
                .set(*pending as i64);
            self.outbox_failed
                .get_or_create(&label("destination", dest))
                .set(*failed as i64);
        }
        catch_up(&self.alertmanager_sent, now.alertmanager_sent);
        catch_up(&self.alertmanager_failures, now.alertmanager_failures);
        for (gate, dropped) in &now.gates {
            catch_up(
                &self.gated_packets.get_or_create(&label("gate", gate)),
                *dropped,
            );
        }
        for (prog, ns, runs) in &now.probes {
            self.probe_run_seconds
                .get_or_create(&label("probe", prog))
                .set(*ns as f64 / 1e9);
            self.probe_runs
                .get_or_create(&label("probe", prog))
                .set(*runs as i64);
        }
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        encode(&mut out, &r).expect("writing to a String");
        out
    }
}

/// Bind the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Answer `GET /metrics` with `render()`; anything else gets 404. One request per
/// connection; a client that sends nothing in 5 s is dropped.
pub async fn serve(listener: TcpListener, render: impl Fn() -> String + Send + Sync + 'static) {
    let render = std::sync::Arc::new(render);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let reply = if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                // Off the runtime's workers: the snapshot reads /proc.
                let render = render.clone();
                let Ok(body) = tokio::task::spawn_blocking(move || render()).await else {
                    return;
                };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let write = stream.write_all(reply.as_bytes());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), write).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_what_operators_alert_on() {
        let m = Metrics::default();
        m.verdict("syscall-budget");
        m.kernel_report("oops", "critical");
        m.syscall("postgres", 0.002);
        let text = m.render(&Snapshot {
            heartbeat_sending: false,
            stopped_reason: Some("thread 7 (db) of pid 6: vfork".into()),
            alertmanager_sent: 3,
            alertmanager_failures: 1,
            outbox: vec![("exec-hook".into(), 2, 1)],
            heartbeats_sent: 12,
            monitored_threads: 7,
            lost_events: 0,
            untracked_syscalls: 0,
            kernel_lines: 3,
            unmatched_error_lines: 2,
            gates: vec![("udp:5405".into(), 40)],
            probes: vec![("sys_enter".into(), 1_500_000, 10)],
        });
        for want in [
            "watchdog_heartbeat_sending 0",
            "watchdog_verdicts_total{cause=\"syscall-budget\"} 1",
            "watchdog_kernel_reports_total{class=\"oops\",severity=\"critical\"} 1",
            "watchdog_heartbeat_stop_info{reason=\"thread 7 (db) of pid 6: vfork\"} 1",
            "watchdog_syscall_duration_seconds_count{target=\"postgres\"} 1",
            "watchdog_probe_runs{probe=\"sys_enter\"} 10",
            "watchdog_gated_packets_total{gate=\"udp:5405\"} 40",
            "watchdog_kernel_lines_unmatched_errors 2",
            "watchdog_alertmanager_failures_total 1",
            "watchdog_outbox_pending{destination=\"exec-hook\"} 2",
            "watchdog_outbox_failed{destination=\"exec-hook\"} 1",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
