//! How wdctl shows things to a person. Pure.
use std::fmt::Write as _;

use crate::{
    control::proto::{HeartbeatState, StatusReport},
    judging::monitor::ThreadRow,
};

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub fn threads(rows: &[ThreadRow]) -> String {
    if rows.is_empty() {
        return "no monitored threads\n".into();
    }
    let ms = |v: Option<u64>| v.map(|e| format!("{e}ms")).unwrap_or_else(|| "-".into());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.pid.to_string(),
                r.tid.to_string(),
                r.comm.clone(),
                r.syscall.clone().unwrap_or_else(|| "-".into()),
                ms(r.elapsed_ms),
                r.state.map_or("-", |s| s.as_str()).to_owned(),
                ms(r.on_cpu_ms),
                ms(r.off_cpu_ms),
                format!("{}ms", r.budget_ms),
                r.verdict.as_str().to_uppercase(),
                r.why.clone(),
            ]
        })
        .collect();
    table(
        &[
            "PID", "TID", "COMM", "SYSCALL", "ELAPSED", "STATE", "ON-CPU", "OFF-CPU", "BUDGET",
            "VERDICT", "WHY",
        ],
        &cells,
    )
}

pub fn status(s: &StatusReport) -> String {
    let mut out = String::new();
    let hb = match s.heartbeat {
        HeartbeatState::Sending => "sending".to_owned(),
        HeartbeatState::Stopped => format!(
            "STOPPED ({})",
            s.stopped_reason.as_deref().unwrap_or("no reason recorded")
        ),
    };
    let _ = writeln!(out, "node:               {}", s.node_id);
    let _ = writeln!(out, "heartbeat:          {hb}");
    let _ = writeln!(
        out,
        "heartbeats sent:    {} ({} send errors)",
        s.heartbeats_sent, s.heartbeat_send_errors
    );
    let pids: Vec<String> = s.monitored_pids.iter().map(u32::to_string).collect();
    let _ = writeln!(
        out,
        "monitored:          {} threads in pids {}",
        s.monitored_threads,
        pids.join(", ")
    );
    let _ = writeln!(out, "budget:             {}ms", s.budget_ms);
    let _ = writeln!(out, "kernel lines read:  {}", s.kernel_lines);
    let _ = writeln!(out, "lost events:        {}", s.lost_events);
    let _ = writeln!(out, "untracked syscalls: {}", s.untracked_syscalls);
    if s.unmatched_error_lines > 0 {
        let _ = writeln!(
            out,
            "unknown err lines: {} (kernel lines at level err or worse no rule knows)",
            s.unmatched_error_lines
        );
    }
    if !s.gates.is_empty() {
        let state = match s.gates_closed.is_empty() {
            true => "open",
            false => "CLOSED",
        };
        let _ = writeln!(
            out,
            "gates:              {state}, {} packets held back",
            s.gated_packets
        );
        for g in &s.gates {
            let _ = writeln!(
                out,
                "  {}: {} dropped",
                crate::terminal::printable(&g.gate),
                g.dropped
            );
        }
    }
    let _ = writeln!(
        out,
        "incidents:          {} stored ({} store errors), exec hook {} runs ({} failed)",
        s.incidents_stored, s.incident_store_errors, s.exec_hook_runs, s.exec_hook_failures
    );
    for o in &s.outbox {
        let _ = writeln!(
            out,
            "outbox:             {}: {} pending ({} failed)",
            crate::terminal::printable(&o.destination),
            o.pending,
            o.failed
        );
    }
    if s.stalls.is_empty() {
        let _ = writeln!(out, "stalls:             none");
    } else {
        let _ = writeln!(out, "stalls:");
        for st in &s.stalls {
            let _ = writeln!(
                out,
                "  pid {} tid {} ({}): {}",
                st.pid, st.tid, st.comm, st.reason
            );
        }
    }
    out
}

/// The incident list, for a person.
pub fn incidents(list: &[crate::incidents::IncidentSummary]) -> String {
    if list.is_empty() {
        return "no incidents\n".into();
    }
    let cells: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.kind.as_str().to_owned(),
                i.class.clone(),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                i.tid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                i.comm.clone().unwrap_or_else(|| "-".into()),
                if i.stopped_heartbeat {
                    "STOPPED"
                } else if i.monitored {
                    "monitored"
                } else {
                    "-"
                }
                .into(),
                i.summary.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "KIND",
            "CLASS",
            "PID",
            "TID",
            "COMM",
            "HEARTBEAT",
            "SUMMARY",
        ],
        &cells,
    )
}

/// One incident, whole, for a person.
pub fn incident(i: &crate::incidents::Incident) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "incident {} ({}, class {})",
        i.id.unwrap_or(-1),
        i.kind.as_str(),
        i.class
    );
    let _ = writeln!(out, "summary:   {}", i.summary);
    let _ = writeln!(out, "host:      {}", i.host);
    let _ = writeln!(out, "at:        {} ms since the epoch", i.at_unix_ms);
    let _ = writeln!(
        out,
        "task:      pid {} tid {} comm {}",
        i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        i.tid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        i.comm.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "monitored: {}, stopped the heartbeat: {}",
        i.monitored, i.stopped_heartbeat
    );
    if let Some(st) = &i.stall {
        let _ = writeln!(
            out,
            "syscall:   {} for {} ms (budget {} ms)",
            st.syscall.as_deref().unwrap_or("-"),
            st.elapsed_ms.unwrap_or(0),
            st.budget_ms
        );
        let _ = writeln!(
            out,
            "state:     {}  wchan: {}",
            st.state.as_deref().unwrap_or("?"),
            st.wchan.as_deref().unwrap_or("?")
        );
        let _ = writeln!(out, "args:      {}", st.args.join(" "));
        let _ = writeln!(out, "reason:    {}", st.reason);
        for l in &st.kernel_stack {
            let _ = writeln!(out, "  {l}");
        }
    }
    if let Some(sig) = &i.signal {
        let _ = writeln!(
            out,
            "signal:    {} ({}) to tid {} from pid {} ({})",
            sig.signal, sig.code_meaning, sig.target_tid, sig.sender_pid, sig.sender_comm
        );
        if let Some(f) = &sig.fault_line {
            let _ = writeln!(out, "fault:     {f}");
        }
    }
    if let Some(r) = &i.report {
        out.push_str(&reports(std::slice::from_ref(r)));
        for l in &r.lines {
            let _ = writeln!(out, "  | {l}");
        }
    }
    out
}

/// Assembled kernel reports, for a person.
pub fn reports(reports: &[crate::judging::kmsg::report::Report]) -> String {
    if reports.is_empty() {
        return "no kernel problem reports\n".into();
    }
    let mut out = String::new();
    for (i, r) in reports.iter().enumerate() {
        let _ = write!(
            out,
            "#{} {} ({})",
            i + 1,
            r.class,
            r.rule.as_deref().unwrap_or("-")
        );
        if let Some(pid) = r.pid {
            let _ = write!(out, " pid {pid}");
        }
        if let Some(comm) = &r.comm {
            let _ = write!(out, " comm {comm}");
        }
        if let Some(cpu) = r.cpu {
            let _ = write!(out, " cpu {cpu}");
        }
        if let Some(t) = &r.tainted {
            let _ = write!(out, " tainted [{t}]");
        }
        let _ = writeln!(out, ", {} lines", r.lines.len());
        let _ = writeln!(out, "  {}", r.first_line);
        if let Some(ip) = &r.ip {
            let _ = writeln!(out, "  at {ip}");
        }
        if !r.call_trace.is_empty() {
            let _ = writeln!(out, "  trace: {}", r.call_trace.join(" < "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judging::verdict::Verdict;

    #[test]
    fn thread_table_is_aligned() {
        let row = |tid: u32, sys: Option<&str>, v: Verdict| ThreadRow {
            pid: 10,
            tid,
            comm: "svc".into(),
            syscall: sys.map(Into::into),
            elapsed_ms: sys.map(|_| 1234),
            budget_ms: 300,
            verdict: v,
            state: sys.map(|_| crate::judging::verdict::RunState::Waiting),
            on_cpu_ms: sys.map(|_| 4),
            off_cpu_ms: sys.map(|_| 1230),
            why: "because".into(),
            last_syscall: None,
            last_duration_us: None,
        };
        let out = threads(&[
            row(10, Some("epoll_wait"), Verdict::Ok),
            row(1234567, None, Verdict::Stalled),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "PID  TID      COMM  SYSCALL     ELAPSED  STATE    ON-CPU  OFF-CPU  BUDGET  VERDICT  WHY"
        );
        assert_eq!(
            lines[1],
            "10   10       svc   epoll_wait  1234ms   waiting  4ms     1230ms   300ms   OK       because"
        );
        assert_eq!(
            lines[2],
            "10   1234567  svc   -           -        -        -       -        300ms   STALLED  because"
        );
    }
}
