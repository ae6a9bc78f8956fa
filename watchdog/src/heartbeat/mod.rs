//! Stage 5, the heartbeat: the packet format and its key, the socket on the chosen
//! interface, the sender with its latch and the liveness it checks, and the listener.
pub mod fleet;
pub mod gate_spec;
pub mod iface;
pub mod key;
pub mod listener;
pub mod liveness;
pub mod packet;
pub mod sender;
pub mod service_gate;
pub mod socket;
pub mod state_hook;

pub use packet::{Auth, DecodeError, Heartbeat, Status};
