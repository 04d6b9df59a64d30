//! dialbridge: a SIP-bridging telephony gateway with a Nextcloud Talk compatible call API.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules.

pub mod api;
pub mod auth;
pub mod calls;
pub mod config;
pub mod events;
pub mod ratelimit;
pub mod room;
pub mod runtime;
pub mod store;
mod sync;
