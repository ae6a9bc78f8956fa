//! Stage 4, incidents and alerts: the incident record, its store, and the sinks it
//! goes to once stored (log, Alertmanager, exec hook).
pub mod alert;
pub mod alertmanager;
pub mod pstore;
pub mod record;
pub mod store;

pub use record::{
    Incident, IncidentSummary, Kind, SignalDetails, StallDetails, now_unix_ms, signal_code_meaning,
    signal_name,
};
