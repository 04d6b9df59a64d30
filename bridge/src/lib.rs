//! Sans-IO media core. The service drives it from `src/runtime`; nothing here opens a socket,
//! spawns a task or reads a clock: time comes in as `now: Instant`, packets as bytes, and
//! what to send or report comes out of `poll_*` calls.
//!
//! - [`g711`]: PCMU/PCMA tables and encoders.
//! - [`dtmf`]: RFC 4733 telephone-event payload, sender and one-report-per-press receiver.
//! - [`jitter`]: adaptive jitter buffer per inbound leg (RFC 3550 jitter, loss statistics).
//! - [`plc`]: repeat-and-fade concealment for G.711.
//! - [`opus_codec`]: libopus 1.6 encoder/decoder per leg (8 kHz API rate, FEC, PLC).
//! - [`transcode`]: inbound paths (jitter buffer, decode, concealment) and the two directions
//!   of a phone <-> browser call, which need neither mixer nor resampler.
//! - [`mixer`]: N-1 room mixer with soft clipping and mutes.
//! - [`bypass`]: timing of a two-party room's direct path (no mixer tick).
//! - [`rtp_leg`]: the phone's RTP/RTCP session (latching, inactivity, DTMF, reports).
//! - [`ports`]: RTP/RTCP port pairs from the configured range.
//! - [`resample`]: 8 kHz <-> 48 kHz for phone legs in rooms mixing at 48 kHz.
//! - [`testing`]: tone generator and Goertzel detector for tests.

pub mod bypass;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod mixer;
pub mod opus_codec;
pub mod plc;
pub mod ports;
pub mod resample;
pub mod rtp_leg;
pub mod testing;
pub mod transcode;
pub mod webrtc;
