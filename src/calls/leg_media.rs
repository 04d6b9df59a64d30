//! The media side of a phone leg, whichever side started the call: the RTP sockets until the
//! media engine takes them, where the engine sends, our SDP state for the phone's re-INVITEs
//! (a new address or codec, hold), and the mute the room and a hold ask for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dialbridge_bridge::g711::G711;
use dialbridge_sip::sdp::{
    process_answer, AudioConfig, Codec, LocalMedia, NegotiatedAudio, SdpSession,
    SessionDescription, SrtpPolicy,
};
use dialbridge_sip::ua::{Body, CallHandle, Reply};
use tokio::sync::mpsc;

use super::legs::PhoneLegs;
use crate::room::{MediaParticipant, PhoneMute};
use crate::runtime::media::{MediaError, MediaId, PhoneMedia, PhoneMediaEvent, PhoneRemote};

/// Why a phone's SDP cannot be used, or its media not started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LegMediaError {
    #[error("the body is `{0}`, not SDP")]
    NotSdp(String),
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// The offer or answer agrees on nothing we can bridge.
    #[error("{0}")]
    Negotiation(String),
    #[error("answer chose {0}, not G.711")]
    NotG711(&'static str),
    #[error("answer's c= `{0}` is not an IP address")]
    NotAnAddress(String),
    #[error(transparent)]
    Engine(#[from] MediaError),
}

fn is_sdp_type(content_type: &str) -> bool {
    content_type
        .to_ascii_lowercase()
        .starts_with("application/sdp")
}

/// The body, if it is SDP.
pub(crate) fn is_sdp(body: &Option<Body>) -> Option<&Body> {
    body.as_ref().filter(|b| is_sdp_type(&b.content_type))
}

/// The body, if it is SDP (other bodies are no offer or answer).
pub(crate) fn sdp_only(body: Option<Body>) -> Option<Body> {
    body.filter(|b| is_sdp_type(&b.content_type))
}

/// The session description in a message body of `content_type`.
pub(crate) fn sdp_of(
    content_type: &str,
    bytes: &[u8],
) -> Result<SessionDescription, LegMediaError> {
    if !is_sdp_type(content_type) {
        return Err(LegMediaError::NotSdp(content_type.to_string()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| LegMediaError::NotUtf8)?;
    SessionDescription::parse(text).map_err(|e| LegMediaError::BadSdp(e.to_string()))
}

fn g711_of(codec: Codec) -> Option<G711> {
    match codec {
        Codec::Pcmu => Some(G711::Pcmu),
        Codec::Pcma => Some(G711::Pcma),
        _ => None,
    }
}

/// Where to send media, from the negotiated answer.
fn remote_of(audio: &NegotiatedAudio) -> Result<PhoneRemote, LegMediaError> {
    let law = g711_of(audio.codec).ok_or(LegMediaError::NotG711(audio.codec.encoding_name()))?;
    let ip = audio
        .remote_ip
        .ok_or_else(|| LegMediaError::NotAnAddress(audio.remote_host.clone()))?;
    Ok(PhoneRemote {
        law,
        dtmf_pt: audio.telephone_event,
        rtp: SocketAddr::new(ip, audio.remote_port),
        rtcp: SocketAddr::new(ip, audio.remote_rtcp_port),
        receives: audio.remote_direction.receives() && !audio.remote_hold,
        srtp: audio.srtp,
    })
}

pub(crate) struct LegMedia {
    shared: Arc<PhoneLegs>,
    call_id: String,
    id: MediaId,
    /// The sockets until the media engine takes them.
    sockets: Option<(std::net::UdpSocket, std::net::UdpSocket)>,
    timeout: Duration,
    events: mpsc::UnboundedSender<PhoneMediaEvent>,
    remote: Option<PhoneRemote>,
    /// The room whose mix the phone is in; `None` while in no room (an inbound caller before
    /// its PIN or its room's call).
    who: Option<MediaParticipant>,
    session: SdpSession,
    local: LocalMedia,
    /// The phone put us on hold: the room's audio towards it is muted.
    held: bool,
    /// What moderators asked (`Control::Mute`); a hold adds muted listening to it.
    room_mute: PhoneMute,
    /// The phone is not holding the call and its last SDP says it sends RTP, so silence means
    /// trouble; a held phone may send nothing (many do not play music on hold).
    phone_sends: bool,
    /// Our offer in the 200 to a re-INVITE that had none, until the ACK answers it.
    offered: Option<SessionDescription>,
}

impl LegMedia {
    /// Media for leg `call_id` on the bound `sockets`, announced as `local`; its events arrive
    /// on the returned receiver.
    pub(super) fn new(
        shared: Arc<PhoneLegs>,
        call_id: &str,
        sockets: (std::net::UdpSocket, std::net::UdpSocket),
        local: LocalMedia,
        timeout: Duration,
        who: Option<MediaParticipant>,
        srtp: SrtpPolicy,
    ) -> (LegMedia, mpsc::UnboundedReceiver<PhoneMediaEvent>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let mut session = SdpSession::new(rand::random::<u32>() as u64);
        session.set_srtp(srtp, rand::random());
        let media = LegMedia {
            shared,
            call_id: call_id.to_string(),
            id: MediaId(rand::random()),
            sockets: Some(sockets),
            timeout,
            events,
            remote: None,
            who,
            session,
            local,
            held: false,
            room_mute: PhoneMute::default(),
            phone_sends: true,
            offered: None,
        };
        (media, receiver)
    }

    /// Whether the engine runs the media (it took the sockets).
    pub(super) fn started(&self) -> bool {
        self.sockets.is_none()
    }

    /// Whether the phone's silence should end the call (it is not holding it).
    pub(super) fn phone_sends(&self) -> bool {
        self.phone_sends
    }

    /// Our offer (dial-out, or an inbound INVITE without SDP).
    pub(super) fn offer(&mut self) -> SessionDescription {
        self.session
            .create_offer(&AudioConfig::default(), &self.local)
    }

    /// Our answer to the phone's offer, and where its media goes (not started yet).
    pub(super) fn answer(
        &mut self,
        offer: &SessionDescription,
    ) -> Result<(SessionDescription, PhoneRemote), LegMediaError> {
        let answer = self
            .session
            .create_answer(offer, &AudioConfig::default(), &self.local)
            .map_err(|e| LegMediaError::Negotiation(e.to_string()))?;
        let remote = remote_of(&answer.audio)?;
        Ok((answer.sdp, remote))
    }

    /// Starts or re-points the media at the address of the phone's `answer` to our `offer`.
    pub(super) fn apply_answer(
        &mut self,
        offer: &SessionDescription,
        answer: &Body,
    ) -> Result<(), LegMediaError> {
        self.point(remote_of(&negotiated(offer, answer)?)?)
    }

    /// Hands the sockets to the media engine with `remote`, or re-points the running media.
    pub(super) fn point(&mut self, remote: PhoneRemote) -> Result<(), LegMediaError> {
        if let Some((rtp, rtcp)) = self.sockets.take() {
            self.shared.media.add_phone(
                self.id,
                PhoneMedia {
                    who: self.who.clone(),
                    rtp,
                    rtcp,
                    remote,
                    media_timeout: self.timeout,
                    events: self.events.clone(),
                },
            )?;
            // Key presses from the room can be carried from now on.
            if let Some(live) = self.shared.legs().get_mut(&self.call_id) {
                live.has_media = true;
            }
            // A mute asked for while the phone had no media (ringing) holds from its first packet.
            if self.room_mute != PhoneMute::default() {
                self.apply_mute();
            }
        } else {
            // Sent even when unchanged: the media timeout counts from the answer again.
            self.shared.media.update_phone(self.id, remote)?;
        }
        self.remote = Some(remote);
        Ok(())
    }

    /// Puts the phone in `who`'s room mix (now, or when its media starts).
    pub(super) fn join(&mut self, who: MediaParticipant) {
        if self.started() {
            if let Err(e) = self.shared.media.join_phone(self.id, who.clone()) {
                tracing::warn!(call_id = %self.call_id, error = %e, "phone media not in the room");
            }
        }
        self.who = Some(who);
    }

    pub(super) fn mute(&mut self, mute: PhoneMute) {
        self.room_mute = mute;
        if self.started() {
            self.apply_mute();
        } else {
            tracing::debug!(call_id = %self.call_id, speaking = mute.speaking, listening = mute.listening, "phone has no media yet: mute kept, applied when its media starts");
        }
    }

    /// Hands the engine the room's mute, with muted listening while the phone holds the call.
    fn apply_mute(&self) {
        let mute = PhoneMute {
            speaking: self.room_mute.speaking,
            listening: self.room_mute.listening || self.held,
        };
        if let Err(e) = self.shared.media.mute_phone(self.id, mute) {
            tracing::warn!(call_id = %self.call_id, error = %e, "mute not applied");
        }
    }

    /// The call is over on our side (our BYE is out): the room and the phone hear no more of
    /// each other while the dialog waits for the far end.
    pub(super) fn cut_off(&mut self) {
        self.mute(PhoneMute {
            speaking: true,
            listening: true,
        });
    }

    /// Queues key presses to the phone.
    pub(super) fn dtmf(&self, digits: String) {
        if let Err(e) = self.shared.media.phone_dtmf(self.id, digits) {
            tracing::warn!(call_id = %self.call_id, error = %e, "DTMF not queued");
        }
    }

    /// Plays a prompt to the phone (`None` stops it); false if the engine refused.
    pub(super) fn prompt(&self, samples: Option<&'static [i16]>) -> bool {
        match self.shared.media.play_prompt(self.id, samples) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(call_id = %self.call_id, error = %e, "prompt not played");
                false
            }
        }
    }

    /// Answers the phone's re-INVITE (RFC 3264 section 8): 200 with our answer, or 488 when the
    /// offer is unusable (nothing changes then).
    pub(super) async fn reinvite(&mut self, call: CallHandle, body: &Option<Body>) {
        let (code, reason, answer) = match self.renegotiate(body) {
            Ok(sdp) => (200, "OK", Some(Body::sdp(sdp.to_string().into_bytes()))),
            Err(e) => {
                tracing::warn!(call_id = %self.call_id, error = %e, "re-INVITE offer refused");
                (488, "Not Acceptable Here", None)
            }
        };
        if let Err(e) = self
            .shared
            .sip
            .respond(
                call,
                Reply::new(code, reason).with_body(answer).to_reinvite(),
            )
            .await
        {
            tracing::warn!(call_id = %self.call_id, error = %e, "re-INVITE not answered");
        }
    }

    /// Our answer to a re-INVITE's offer, with the media following it: a new address or codec
    /// re-points the leg; hold (sendonly, inactive, c=0.0.0.0) mutes the room towards the phone
    /// and keeps the last real address (RTP never goes to 0.0.0.0). A re-INVITE without an
    /// offer gets our offer (all our codecs, RFC 6337 section 5.3), answered in its ACK.
    fn renegotiate(&mut self, body: &Option<Body>) -> Result<SessionDescription, LegMediaError> {
        let Some(body) = is_sdp(body) else {
            let offer = self
                .session
                .create_offer(&AudioConfig::default(), &self.local);
            self.offered = Some(offer.clone());
            return Ok(offer);
        };
        self.offered = None;
        let offer = sdp_of(&body.content_type, &body.bytes)?;
        let answer = self
            .session
            .create_answer(&offer, &AudioConfig::default(), &self.local)
            .map_err(|e| LegMediaError::Negotiation(e.to_string()))?;
        self.follow(&answer.audio)?;
        Ok(answer.sdp)
    }

    /// The ACK's answer to the offer our 200 carried for a re-INVITE without one: the media
    /// follows it as it follows an offer. Nothing changes for an unusable answer (logged), for
    /// a retransmitted ACK, or for a body we did not ask for.
    pub(super) fn reinvite_ack(&mut self, body: &Body) {
        let Some(offer) = self.offered.take() else {
            return;
        };
        let followed = negotiated(&offer, body).and_then(|audio| self.follow(&audio));
        if let Err(e) = followed {
            tracing::warn!(call_id = %self.call_id, error = %e, "the ACK's answer is unusable; media unchanged");
        }
    }

    /// Points the media where the negotiated `audio` says, and follows its hold state.
    fn follow(&mut self, audio: &NegotiatedAudio) -> Result<(), LegMediaError> {
        let held = audio.remote_hold;
        let remote = match self.remote {
            // c=0.0.0.0 (RFC 2543 hold): the last real address stays, and gets no RTP.
            Some(last) if audio.remote_ip.is_some_and(|ip| ip.is_unspecified()) => PhoneRemote {
                receives: false,
                ..last
            },
            _ => remote_of(audio)?,
        };
        self.point(remote)?;
        if held != self.held {
            self.held = held;
            self.apply_mute();
        }
        tracing::info!(call_id = %self.call_id, held, remote = ?self.remote.map(|r| r.rtp), "phone re-INVITE followed");
        self.phone_sends = audio.remote_direction.sends() && !held;
        Ok(())
    }

    /// Ends the media: the engine's leg when it runs, else the sockets are closed here.
    /// Returns the engine's media id to remove, if any.
    pub(super) fn finish(mut self) -> Option<MediaId> {
        let started = self.sockets.take().is_none();
        started.then_some(self.id)
    }
}

/// The audio our `offer` and the phone's `answer` agreed on.
fn negotiated(offer: &SessionDescription, answer: &Body) -> Result<NegotiatedAudio, LegMediaError> {
    let answer = sdp_of(&answer.content_type, &answer.bytes)?;
    process_answer(offer, &answer).map_err(|e| LegMediaError::Negotiation(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use dialbridge_sip::sdp::Direction;

    use super::*;

    #[test]
    fn only_g711_answers_with_an_ip_are_bridged() {
        let answer = |codec, ip: Option<IpAddr>| NegotiatedAudio {
            media_index: 0,
            remote_host: "phone.example".into(),
            remote_ip: ip,
            remote_port: 4000,
            remote_rtcp_port: 4001,
            codec,
            payload_type: 0,
            clock_rate: 8000,
            channels: 1,
            telephone_event: Some(101),
            direction: Direction::SendRecv,
            remote_direction: Direction::SendRecv,
            ptime: 20,
            maxptime: None,
            remote_hold: false,
            srtp: None,
        };
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let remote = remote_of(&answer(Codec::Pcma, ip)).expect("PCMA");
        assert_eq!(remote.law, G711::Pcma);
        assert_eq!(remote.rtp, "127.0.0.1:4000".parse().expect("addr"));
        assert_eq!(remote.rtcp.port(), 4001);
        assert_eq!(remote.dtmf_pt, Some(101));
        assert!(remote_of(&answer(Codec::Opus, ip)).is_err());
        assert!(remote_of(&answer(Codec::Pcmu, None)).is_err());
    }
}
