//! Drivers that own sockets, threads and clocks, and pump the sans-IO cores of `sip` and `bridge`.

pub mod dns;
pub mod media;
pub mod sip;
pub mod sip_tls;

pub use media::{MediaError, MediaHandle, MediaId, RecordingSink, VideoAnswer, RECORD_FRAME};
