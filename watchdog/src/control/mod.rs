//! Stage 5, control: the operator's window. The control socket that wdctl talks to (a unix
//! stream socket, one JSON request line and one JSON response line per connection), and
//! the Prometheus metrics endpoint.
pub mod access;
pub mod client;
pub mod metrics;
pub mod proto;
pub mod server;
