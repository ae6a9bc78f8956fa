//! Control protocol messages. Pure serde types shared by the daemon and wdctl.
use serde::{Deserialize, Serialize};

use crate::{
    incidents::{Incident, IncidentSummary},
    judging::monitor::{Stall, ThreadRow},
};

/// Longest request line the daemon reads; longer ones are refused.
pub const MAX_REQUEST: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Threads,
    Status,
    /// The newest incidents, newest first.
    Incidents {
        limit: usize,
    },
    /// One incident, whole.
    Incident {
        id: i64,
    },
    /// Send the heartbeat again, if nothing is stalled.
    Resume,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatState {
    Sending,
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub node_id: String,
    pub heartbeat: HeartbeatState,
    /// Why the heartbeat stopped, if it did.
    pub stopped_reason: Option<String>,
    /// When it stopped (CLOCK_MONOTONIC ns), if it did.
    #[serde(default)]
    pub stopped_at_ns: Option<u64>,
    pub heartbeats_sent: u64,
    pub heartbeat_send_errors: u64,
    pub monitored_pids: Vec<u32>,
    pub monitored_threads: usize,
    pub budget_ms: u64,
    /// Kernel messages read from the ring buffer since start.
    #[serde(default)]
    pub kernel_lines: u64,
    /// Kernel events that could not be delivered (ring buffer full).
    pub lost_events: u64,
    /// Monitored syscalls that could not be tracked (in-flight table full).
    pub untracked_syscalls: u64,
    /// Every stall verdict so far, oldest first.
    pub stalls: Vec<Stall>,
    pub incidents_stored: u64,
    pub incident_store_errors: u64,
    pub exec_hook_runs: u64,
    pub exec_hook_failures: u64,
    /// Kernel log lines at level err or worse that no rule knows (`wdctl kmsg classify
    /// --unmatched` shows such lines in a log).
    #[serde(default)]
    pub unmatched_error_lines: u64,
    /// Packets of the service's own heartbeat the gates dropped since start.
    #[serde(default)]
    pub gated_packets: u64,
    /// Each gate and what it dropped.
    #[serde(default)]
    pub gates: Vec<crate::heartbeat::service_gate::GateReport>,
    /// The gates that are closed now.
    #[serde(default)]
    pub gates_closed: Vec<String>,
    /// Deliveries of incidents not made yet, per destination (the outbox).
    #[serde(default)]
    pub outbox: Vec<crate::incidents::store::OutboxCounts>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Threads(Vec<ThreadRow>),
    Status(Box<StatusReport>),
    Incidents(Vec<IncidentSummary>),
    Incident(Box<Incident>),
    /// What resuming did.
    Resumed(String),
}

/// The response line: `{"ok": reply}` or `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Ok(Reply),
    Error(String),
}

/// Parse a request line, with an error that says what was wrong.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!(
            "request of {} bytes exceeds the {MAX_REQUEST}-byte limit",
            line.len()
        ));
    }
    serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_errors_say_why() {
        assert_eq!(parse_request(br#"{"cmd":"threads"}"#), Ok(Request::Threads));
        assert_eq!(parse_request(br#"{"cmd":"status"}"#), Ok(Request::Status));
        assert_eq!(
            parse_request(br#"{"cmd":"incident","id":7}"#),
            Ok(Request::Incident { id: 7 })
        );
        let e = parse_request(br#"{"cmd":"reboot"}"#).unwrap_err();
        assert!(
            e.starts_with("malformed request: unknown variant `reboot`"),
            "{e}"
        );
        let e = parse_request(&[b' '; MAX_REQUEST + 1]).unwrap_err();
        assert!(e.contains("exceeds"), "{e}");
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::Error("nope".into());
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"error":"nope"}"#);
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
    }
}
