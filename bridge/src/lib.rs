//! Sans-IO media core. The service drives it from `src/runtime`; nothing here opens a socket,
//! spawns a task or reads a clock.

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod mixer;
pub mod opus_codec;
pub mod plc;
pub mod ports;
pub mod rtp_leg;
pub mod testing;
pub mod transcode;
