//! The control socket that wdctl talks to: a unix stream socket, one JSON request line
//! and one JSON response line per connection.
pub mod access;
pub mod client;
pub mod proto;
pub mod server;
