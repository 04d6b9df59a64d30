//! SDP (RFC 4566) and the offer/answer model (RFC 3264) for the audio leg of a call.

mod negotiate;
mod session;

pub use negotiate::{
    process_answer, Answer, AudioConfig, Codec, CodecPreference, LocalMedia, NegotiatedAudio,
    NegotiationError, SdpSession,
};
pub use session::{
    Attribute, Bandwidth, Connection, Direction, MediaDescription, Origin, Rtcp, RtpMap,
    RtpMapTable, SdpError, SessionDescription, Timing,
};
