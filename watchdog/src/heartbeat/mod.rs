//! The node's heartbeat: packet format, sender, listener.
pub mod key;
pub mod listener;
pub mod packet;
pub mod sender;
pub mod socket;

pub use packet::{Auth, DecodeError, Heartbeat, Status};
