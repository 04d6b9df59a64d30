//! The types the engine's requests and answers are made of, at the bottom of the engine's
//! modules: the handle, the commands, the registry and the shards all use them.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use dialbridge_bridge::g711::G711;
use dialbridge_bridge::mixer::ParticipantId;
use tokio::sync::mpsc;

use crate::room::MediaParticipant;

/// Identifies one media session (one WebRTC leg) in `Location` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaId(pub u64);

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for MediaId {
    type Err = ();
    fn from_str(s: &str) -> Result<MediaId, ()> {
        if s.len() != 16 {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(MediaId).map_err(|_| ())
    }
}

/// Where a recorded room's audio goes: every 20 ms mixing tick, the sum of everyone's audio
/// (48 kHz mono, [`RECORD_FRAME`] samples); a full channel drops the frame.
pub type RecordingSink = std::sync::mpsc::SyncSender<Vec<i16>>;

/// Samples of one recorded frame: 20 ms at 48 kHz.
pub const RECORD_FRAME: usize = 960;

/// A leg's name in its room's mixer.
pub(super) fn participant(id: MediaId) -> ParticipantId {
    ParticipantId(id.0)
}

/// Why a media request failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The offer cannot be answered; the reason is for the client (400).
    #[error("{0}")]
    Offer(String),
    /// The engine is not running (503).
    #[error("the media engine is not running")]
    Unavailable,
    /// Anything else (500); logged.
    #[error("{0}")]
    Internal(String),
}

/// Where a phone leg's media goes, from the SDP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PhoneRemote {
    pub(crate) law: G711,
    pub(crate) dtmf_pt: Option<u8>,
    pub(crate) rtp: SocketAddr,
    pub(crate) rtcp: SocketAddr,
    /// The phone takes our RTP: not when it holds the call or its SDP is sendonly/inactive.
    pub(crate) receives: bool,
    /// SRTP keys, when the leg's media is encrypted.
    pub(crate) srtp: Option<dialbridge_sip::sdp::SrtpKeys>,
}

/// What the engine tells the phone leg's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PhoneMediaEvent {
    /// No RTP for the media timeout.
    Inactive,
    /// The phone sent RTCP BYE.
    Bye,
    /// A key press (RFC 4733), once per press.
    Dtmf(char),
    /// The prompt given to [`MediaHandle::play_prompt`] has been played to its end.
    PromptDone,
}

/// A phone leg handed to the engine: its bound RTP and RTCP sockets, who it is in the room
/// (`None`: in no room yet, it hears only prompts and nobody hears it), where to send, and where
/// to report.
pub(crate) struct PhoneMedia {
    pub(crate) who: Option<MediaParticipant>,
    pub(crate) rtp: std::net::UdpSocket,
    pub(crate) rtcp: std::net::UdpSocket,
    pub(crate) remote: PhoneRemote,
    pub(crate) media_timeout: Duration,
    pub(crate) events: mpsc::UnboundedSender<PhoneMediaEvent>,
}
