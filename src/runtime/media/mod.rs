//! The media engine: one UDP socket at `[media] webrtc_listen` for every WebRTC peer, and the
//! WebRTC legs, phone legs and N-1 mixers of the rooms, sharded by room over a fixed number of
//! media threads (`[media] threads`, one per core by default).
//!
//! A reader thread owns the socket's receive side: it reads each datagram into a buffer taken
//! from a preallocated pool and passes it through a bounded channel to the shard that owns the
//! peer (by remote address; a new address by the ICE username of its first check); the shard
//! hands it back to the pool when done. Once a leg's peer sends media, the leg gets a socket of
//! its own on the same port, connected to the peer, and its shard reads it directly (`demux`:
//! where the kernel hands such a socket its peer's datagrams). Shards send themselves. Each shard
//! runs a single-threaded tokio runtime with one loop: it hands datagrams to their legs, sends
//! what the legs produce, fires their timers, and every 20 ms (paced from a monotonic clock,
//! without drift) pulls one frame from every leg of its mixing rooms, mixes each room and pushes
//! each listener's mix back. A room with exactly two participants skips the mixer: each packet
//! is transcoded and sent to the other participant as it arrives. Nothing on these paths
//! allocates per packet or per tick (str0m keeps its own packet buffers). Leg setup (SDP, DTLS
//! certificate, codecs) runs off these threads, on the API's blocking pool, so a join never
//! stalls the audio of calls in progress.
//!
//! The API talks to the engine through [`MediaHandle`] (channels); when sessions leave a call,
//! the room service calls [`CallObserver::left_call`](crate::room::CallObserver::left_call) and the engine ends their media.

#[cfg(any(test, feature = "bench-hooks"))]
#[doc(hidden)]
pub mod bench;
mod command;
mod demux;
mod direct;
mod direct_path;
mod event_loop;
mod handle;
mod peer_sockets;
mod phone;
mod phone_commands;
mod phone_sockets;
mod reader;
mod registry;
mod room;
mod shard;
mod srtp;
mod start;
#[cfg(test)]
mod tests;
mod tick;
mod types;
mod video;
mod wakers;
mod web_leg;
mod webrtc;

pub use handle::{MediaHandle, VideoAnswer};
pub use start::start;
pub use types::{MediaError, MediaId, RecordingSink, RECORD_FRAME};
pub(crate) use types::{PhoneMedia, PhoneMediaEvent, PhoneRemote};
