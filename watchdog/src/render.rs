//! How wdctl shows things to a person. Pure.
use std::fmt::Write as _;

use crate::{
    control::proto::{HeartbeatState, StatusReport},
    monitor::ThreadRow,
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
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.pid.to_string(),
                r.tid.to_string(),
                r.comm.clone(),
                r.syscall.clone().unwrap_or_else(|| "-".into()),
                r.elapsed_ms
                    .map(|e| format!("{e}ms"))
                    .unwrap_or_else(|| "-".into()),
                format!("{}ms", r.budget_ms),
                r.verdict.as_str().to_uppercase(),
                r.why.clone(),
            ]
        })
        .collect();
    table(
        &[
            "PID", "TID", "COMM", "SYSCALL", "ELAPSED", "BUDGET", "VERDICT", "WHY",
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
    let _ = writeln!(out, "lost events:        {}", s.lost_events);
    let _ = writeln!(out, "untracked syscalls: {}", s.untracked_syscalls);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Verdict;

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
            "PID  TID      COMM  SYSCALL     ELAPSED  BUDGET  VERDICT  WHY"
        );
        assert_eq!(
            lines[1],
            "10   10       svc   epoll_wait  1234ms   300ms   OK       because"
        );
        assert_eq!(
            lines[2],
            "10   1234567  svc   -           -        300ms   STALLED  because"
        );
    }
}
