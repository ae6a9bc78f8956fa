//! The node's heartbeat: packet format, sender, listener.
pub mod listener;
pub mod packet;
pub mod sender;
pub mod socket;

pub use packet::{DecodeError, Heartbeat, Status};
