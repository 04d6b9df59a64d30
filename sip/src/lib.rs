//! Sans-IO SIP protocol core. The service drives it from `src/runtime`; nothing here opens a socket,
//! spawns a task or reads a clock.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod sdp;
pub mod transport;
pub mod ua;
pub mod validate;
