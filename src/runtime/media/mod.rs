//! The media engine (split into files by concern in the next commit).

mod shard;

pub use shard::*;
