//! SDP (RFC 4566) and the offer/answer model (RFC 3264) for the audio leg of a call.
//!
//! ```
//! use dialbridge_sip::sdp::*;
//!
//! let cfg = AudioConfig::default(); // PCMU, PCMA, telephone-event/8000 on 101, ptime 20
//! let local = LocalMedia {
//!     address: "192.0.2.10".parse().unwrap(),
//!     port: 40000,
//!     direction: Direction::SendRecv,
//! };
//! // Outbound call: offer in the INVITE, answer in the 200 (or offer in the 200, answer in the ACK).
//! let mut ours = SdpSession::new(3_900_000_000);
//! let offer = ours.create_offer(&cfg, &local);
//! let body = offer.to_bytes();
//!
//! // The far end answers (here: another SdpSession playing the trunk).
//! let trunk_media = LocalMedia { port: 20000, ..local };
//! let answer = SdpSession::new(1)
//!     .create_answer(&SessionDescription::from_bytes(&body).unwrap(), &cfg, &trunk_media)
//!     .unwrap(); // Err(NegotiationError::NoAcceptableAudio) -> 488
//!
//! let audio = process_answer(&offer, &answer.sdp).unwrap();
//! assert_eq!((audio.codec, audio.payload_type), (Codec::Pcmu, 0));
//! assert_eq!(audio.telephone_event, Some(101));
//! assert_eq!(audio.remote_port, 20000);
//! assert!(!audio.remote_hold);
//! ```

mod crypto;
mod negotiate;
mod session;

pub use crypto::{Crypto, CryptoSuite, SrtpKeys, SrtpPolicy, KEY_SALT_LEN};
pub use negotiate::{
    process_answer, Answer, AudioConfig, Codec, CodecPreference, LocalMedia, NegotiatedAudio,
    NegotiationError, SdpSession,
};
pub use session::{
    Attribute, Bandwidth, Connection, Direction, MediaDescription, Origin, Rtcp, RtpMap,
    RtpMapTable, SdpError, SessionDescription, Timing,
};
