//! dialbridge: a SIP-bridging telephony gateway with a Nextcloud Talk compatible call API.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules.

// `pub` means part of the library's API; an item only the crate uses is `pub(crate)`, so the
// compiler reports it when nothing uses it any more.
#![warn(unreachable_pub)]

pub mod api;
pub mod auth;
pub mod calls;
pub mod config;
pub mod direct;
pub mod events;
pub mod links;
pub mod money;
pub mod ratelimit;
pub mod room;
pub mod runtime;
pub mod store;
mod sync;
pub mod voice;
