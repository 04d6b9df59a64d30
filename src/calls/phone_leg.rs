//! One phone leg from its INVITE to its end: status into the room (`accepted`, `ringing`,
//! `connected`, then `rejected` or `cleared` with cause, SIP code and reason), the phone as a
//! virtual session of its attendee once answered, its RTP in the room's mix (from a 183's
//! early media on), every way it can end, and its call record.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dialbridge_bridge::g711::G711;
use dialbridge_bridge::ports::PortLease;
use dialbridge_sip::endpoint::Target;
use dialbridge_sip::message::{NameAddr, Uri};
use dialbridge_sip::sdp::{Codec, Direction, LocalMedia, NegotiatedAudio, SessionDescription};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dialogs;
use super::dialout::Shared;
use super::leg_media::LegMedia;
use crate::config::TrunkConfig;
use crate::room::PhoneMute;
use crate::room::{CallStatus, DialoutTarget, MediaParticipant, PhoneStatus, RoomResult, Rooms};
use crate::runtime::media::{PhoneMediaEvent, PhoneRemote};
use crate::runtime::sip::Credentials;
use crate::store::PhoneCallRecord;

/// How long to wait for the far end to confirm our CANCEL or BYE before giving the call up.
pub(crate) const HANGUP_GRACE: Duration = Duration::from_secs(40);

/// What the room asks of a running leg.
#[derive(Debug)]
pub enum Control {
    /// End the call (CANCEL while ringing, BYE once answered) with this cause.
    Hangup(&'static str),
    /// Send these key presses to the phone.
    Dtmf(String),
    /// Mute or unmute the phone in the room's mix.
    Mute(PhoneMute),
}

/// The trunk side of a dial-out.
pub struct Outbound {
    pub trunk: TrunkConfig,
    pub transport: Transport,
}

/// Everything a dial-out leg starts with.
pub struct LegSetup {
    pub call_id: String,
    pub target: DialoutTarget,
    pub outbound: Outbound,
    pub announce_ip: IpAddr,
    pub lease: PortLease,
    pub rtp: std::net::UdpSocket,
    pub rtcp: std::net::UdpSocket,
}

fn record_of(setup: &LegSetup) -> PhoneCallRecord {
    PhoneCallRecord {
        room_id: setup.target.room_id,
        kind: "dialout",
        attendee_id: setup.target.attendee_id,
        number: setup.target.number.clone(),
        trunk: setup.outbound.trunk.name.clone(),
        call_id: setup.call_id.clone(),
    }
}

/// Opens the leg's call record and announces `accepted`, before the HTTP answer goes out.
pub(crate) fn start_recorded(shared: &Shared, setup: &LegSetup) -> RoomResult<i64> {
    shared.rooms.phone_leg_started(&record_of(setup))
}

/// The cause word for a final non-2xx answer to our INVITE.
pub fn rejection_cause(code: u16, from_network: bool) -> &'static str {
    match code {
        486 | 600 => "busy",
        603 | 607 | 608 => "declined",
        480 => "unavailable",
        404 | 410 | 484 | 485 | 604 => "invalid-number",
        408 if from_network => "no-answer",
        _ => "failed",
    }
}

fn g711_of(codec: Codec) -> Option<G711> {
    match codec {
        Codec::Pcmu => Some(G711::Pcmu),
        Codec::Pcma => Some(G711::Pcma),
        _ => None,
    }
}

/// Where to send media, from the negotiated answer.
pub(crate) fn remote_of(audio: &NegotiatedAudio) -> Result<PhoneRemote, String> {
    let law = g711_of(audio.codec)
        .ok_or_else(|| format!("answer chose {}, not G.711", audio.codec.encoding_name()))?;
    let ip = audio
        .remote_ip
        .ok_or_else(|| format!("answer's c= `{}` is not an IP address", audio.remote_host))?;
    Ok(PhoneRemote {
        law,
        dtmf_pt: audio.telephone_event,
        rtp: SocketAddr::new(ip, audio.remote_port),
        rtcp: SocketAddr::new(ip, audio.remote_rtcp_port),
        receives: audio.remote_direction.receives() && !audio.remote_hold,
    })
}

/// Counts the end of a phone call, whichever side started it and however far it got:
/// `dialbridge_phone_calls_ended_total{kind, status, cause}`.
pub(crate) fn count_end(kind: &'static str, status: CallStatus, cause: Option<&str>) {
    metrics::counter!(
        "dialbridge_phone_calls_ended_total",
        "kind" => kind,
        "status" => status.as_str(),
        "cause" => cause.unwrap_or("none").to_string()
    )
    .increment(1);
}

/// Counts a dial-in refused with `code` before it became a phone leg.
pub(crate) fn count_refused_dialin(code: u16) {
    count_end(
        "dialin",
        CallStatus::Rejected,
        Some(rejection_cause(code, false)),
    );
}

/// Logs a leg's new status, records it and announces it in the room.
pub(crate) fn report(
    shared: &Shared,
    record: &PhoneCallRecord,
    record_id: i64,
    change: PhoneStatus,
) {
    tracing::info!(
        call_id = %record.call_id,
        status = change.status.as_str(),
        cause = change.cause.as_deref(),
        code = change.code,
        message = change.message.as_deref(),
        "phone leg status"
    );
    if change.status.is_final() {
        count_end(record.kind, change.status, change.cause.as_deref());
        // Free before anyone hears of the end: a dial-out right after it must not be refused.
        if let Some(live) = shared.legs().get_mut(&record.call_id) {
            live.finished = true;
        }
    }
    if let Err(e) = shared.rooms.phone_leg_status(record, record_id, &change) {
        tracing::warn!(call_id = %record.call_id, error = %e.message, "cannot record phone status");
    }
}

struct Leg {
    shared: Arc<Shared>,
    record: PhoneCallRecord,
    record_id: i64,
    status: CallStatus,
    who: MediaParticipant,
    media: LegMedia,
}

impl Leg {
    fn report(
        &mut self,
        status: CallStatus,
        cause: Option<&str>,
        code: Option<u16>,
        message: Option<&str>,
    ) {
        if self.status.is_final() {
            // Reported when we hung up; the dialog's own end changes nothing.
            return;
        }
        self.status = status;
        report(
            &self.shared,
            &self.record,
            self.record_id,
            PhoneStatus {
                status,
                cause: cause.map(str::to_string),
                code,
                message: message.map(str::to_string),
            },
        );
    }

    /// A key press of the phone (RFC 4733 or INFO) becomes the room's `dtmf` event.
    fn key_press(&self, digit: char) {
        if let Err(e) = self.shared.rooms.phone_key(&self.who, digit) {
            tracing::warn!(call_id = %self.record.call_id, error = %e.message, "key press not published");
        }
    }
}

fn is_sdp_type(content_type: &str) -> bool {
    content_type
        .to_ascii_lowercase()
        .starts_with("application/sdp")
}

pub(crate) fn is_sdp(body: &Option<Body>) -> Option<&Body> {
    body.as_ref().filter(|b| is_sdp_type(&b.content_type))
}

/// The session description in a message body of `content_type`.
pub(crate) fn sdp_of(content_type: &str, bytes: &[u8]) -> Result<SessionDescription, String> {
    if !is_sdp_type(content_type) {
        return Err(format!("the body is `{content_type}`, not SDP"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "SDP is not UTF-8".to_string())?;
    SessionDescription::parse(text).map_err(|e| format!("bad SDP: {e}"))
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host((host.trim_matches(&['[', ']'][..]), port))
        .await
        .map_err(|e| format!("cannot resolve trunk address {host}:{port}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("trunk address {host}:{port} resolves to nothing"))
}

/// The INVITE for `setup`: request URI at the trunk, From with the caller id (or withheld),
/// privacy headers, SDP offer.
fn invite_for(
    dialled: &DialoutTarget,
    outbound: &Outbound,
    target: SocketAddr,
    offer: &SessionDescription,
) -> Result<OutgoingCall, String> {
    let trunk = &outbound.trunk;
    let tcp = outbound.transport == Transport::Tcp;
    let host = &trunk.address.host;
    let port = trunk.address.port;
    let number = &dialled.number;
    let uri_text = format!(
        "sip:{number}@{host}:{port}{}",
        if tcp { ";transport=tcp" } else { "" }
    );
    let uri = Uri::parse(&uri_text).map_err(|e| format!("bad request URI {uri_text}: {e:?}"))?;
    let domain = trunk.from_domain.clone().unwrap_or_else(|| host.clone());
    let real = dialled
        .caller
        .clone()
        .or_else(|| trunk.caller_id.as_ref().map(|c| c.as_str().to_string()));
    let mut headers = Vec::new();
    let from = if dialled.anonymous {
        headers.push(("Privacy".to_string(), "id".to_string()));
        if let Some(real) = &real {
            headers.push((
                "P-Asserted-Identity".to_string(),
                format!("<sip:{real}@{domain}>"),
            ));
        }
        let mut from = NameAddr::new(
            Uri::parse("sip:anonymous@anonymous.invalid")
                .map_err(|e| format!("bad anonymous URI: {e:?}"))?,
        );
        from.display = Some("Anonymous".into());
        from
    } else {
        let user = real.unwrap_or_else(|| "dialbridge".to_string());
        let text = format!("sip:{user}@{domain}");
        NameAddr::new(Uri::parse(&text).map_err(|e| format!("bad From URI {text}: {e:?}"))?)
    };
    Ok(OutgoingCall {
        request_uri: uri.clone(),
        from,
        to: NameAddr::new(uri),
        target: Target {
            transport: outbound.transport,
            addr: target,
        },
        body: Some(Body::sdp(offer.to_string().into_bytes())),
        headers,
    })
}

/// Runs a dial-out leg to its end, then frees everything it held.
pub(crate) async fn run(
    shared: Arc<Shared>,
    setup: LegSetup,
    record_id: i64,
    control: mpsc::UnboundedReceiver<Control>,
) {
    let call_id = setup.call_id.clone();
    let trunk = setup.outbound.trunk.clone();
    let who = MediaParticipant {
        room_id: setup.target.room_id,
        session_id: Rooms::phone_session_id(&call_id),
        attendee_id: setup.target.attendee_id,
        actor_type: crate::room::actor_type::PHONES.to_string(),
        actor_id: setup.target.actor_id.clone(),
    };
    let record = record_of(&setup);
    let LegSetup {
        lease,
        rtp,
        rtcp,
        announce_ip,
        target,
        outbound,
        ..
    } = setup;
    let local = LocalMedia {
        address: announce_ip,
        port: lease.rtp(),
        direction: Direction::SendRecv,
    };
    let (mut media, media_rx) = LegMedia::new(
        shared.clone(),
        &call_id,
        (rtp, rtcp),
        local,
        trunk.media_timeout.0,
        Some(who.clone()),
    );
    let offer = media.offer();
    let mut leg = Leg {
        shared: shared.clone(),
        record,
        record_id,
        status: CallStatus::Accepted,
        who,
        media,
    };
    let invite = async {
        let addr = resolve(&trunk.address.host, trunk.address.port).await?;
        invite_for(&target, &outbound, addr, &offer)
    }
    .await;
    match invite {
        Ok(invite) => {
            let credentials = match (&trunk.username, &trunk.password) {
                (Some(username), Some(password)) => Some(Credentials {
                    username: username.clone(),
                    password: password.clone(),
                    realm: trunk.realm.clone(),
                }),
                _ => None,
            };
            match shared.router.invite(&shared.sip, invite, credentials).await {
                Ok((handle, events)) => {
                    drive(&mut leg, &trunk, &offer, handle, events, control, media_rx).await;
                    shared.router.forget(handle).await;
                }
                Err(e) => {
                    tracing::warn!(%call_id, error = %e, "INVITE not sent");
                    leg.report(
                        CallStatus::Rejected,
                        Some("failed"),
                        Some(503),
                        Some(&e.to_string()),
                    );
                }
            }
        }
        Err(reason) => {
            tracing::warn!(%call_id, %reason, "INVITE not built");
            leg.report(CallStatus::Rejected, Some("failed"), None, Some(&reason));
        }
    }
    shared.end_leg(&call_id, leg.media.finish(), lease);
}

/// The leg's event loop: SIP events, room commands, media events and its three timers.
async fn drive(
    leg: &mut Leg,
    trunk: &TrunkConfig,
    offer: &SessionDescription,
    handle: CallHandle,
    mut events: mpsc::UnboundedReceiver<UaEvent>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut media_rx: mpsc::UnboundedReceiver<PhoneMediaEvent>,
) {
    let call_id = leg.record.call_id.clone();
    // The leg answers the phone's re-INVITEs itself (see `Leg::reinvite`).
    if let Err(e) = leg.shared.sip.manual_reinvites(handle).await {
        tracing::warn!(%call_id, error = %e, "re-INVITEs stay auto-answered");
    }
    let ringing_deadline = Instant::now() + trunk.ringing_timeout.0;
    let mut answered: Option<(Instant, u16, String)> = None;
    // Set once we end the call: the cause reported when the far end confirms.
    let mut ending: Option<(&'static str, Instant)> = None;
    loop {
        let deadline = match (&ending, &answered) {
            (Some((_, since)), _) => *since + HANGUP_GRACE,
            (None, None) => ringing_deadline,
            (None, Some((at, _, _))) => *at + trunk.max_call_duration.0,
        };
        let mut hangup: Option<&'static str> = None;
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    leg.report(final_status(&answered), Some("failed"), None, Some("SIP driver stopped"));
                    return;
                };
                match event {
                    UaEvent::Progress { code, reason, body, .. } => {
                        if (180..=183).contains(&code) && leg.status == CallStatus::Accepted && ending.is_none() {
                            leg.report(CallStatus::Ringing, None, Some(code), Some(&reason));
                        }
                        if let Some(sdp) = is_sdp(&body) {
                            if leg.media.remote().is_none() {
                                match leg.media.apply_answer(offer, sdp) {
                                    Ok(()) => tracing::info!(%call_id, code, "early media bridged into the room"),
                                    Err(e) => tracing::info!(%call_id, error = %e, "early media not usable"),
                                }
                            }
                        }
                    }
                    UaEvent::Answered { response, body, .. } => {
                        if ending.is_some() {
                            // A CANCEL crossed the 2xx: the user agent ACKs and hangs up itself.
                            continue;
                        }
                        let media = match is_sdp(&body) {
                            Some(sdp) => leg.media.apply_answer(offer, sdp),
                            None => Err("the 200 OK has no SDP answer".to_string()),
                        };
                        answered = Some((Instant::now(), response.code, response.reason.clone()));
                        dialogs::keep(&leg.shared, &call_id, handle).await;
                        match media {
                            Ok(()) => {
                                if leg.status == CallStatus::Accepted {
                                    // Never rang: report ringing so the sequence stays whole.
                                    leg.report(CallStatus::Ringing, None, None, None);
                                }
                                leg.report(CallStatus::Connected, None, Some(response.code), Some(&response.reason));
                            }
                            Err(e) => {
                                tracing::warn!(%call_id, error = %e, "answer unusable; hanging up");
                                hangup = Some("failed");
                            }
                        }
                    }
                    UaEvent::Failed { code, reason, response, .. } => {
                        let cause = match ending {
                            Some((cause, _)) => cause,
                            None => rejection_cause(code, response.is_some()),
                        };
                        leg.report(CallStatus::Rejected, Some(cause), Some(code), Some(&reason));
                        return;
                    }
                    UaEvent::Ended { by_remote, .. } => {
                        let cause = match (by_remote, ending) {
                            (true, _) | (false, None) => "hangup",
                            (false, Some((cause, _))) => cause,
                        };
                        let (code, reason) = answered
                            .as_ref()
                            .map(|(_, c, r)| (Some(*c), Some(r.clone())))
                            .unwrap_or((None, None));
                        leg.report(final_status(&answered), Some(cause), code, reason.as_deref());
                        return;
                    }
                    UaEvent::Info { body: Some(body), .. } => {
                        // Key presses some phones send as SIP INFO instead of RFC 4733.
                        if let Some(digit) = super::pin::digit_from_info(&body.content_type, &body.bytes) {
                            tracing::info!(%call_id, %digit, "DTMF from phone (INFO)");
                            leg.key_press(digit);
                        }
                    }
                    UaEvent::ReInvite { body, .. } => {
                        leg.media.reinvite(handle, &body).await;
                        // The phone's new Contact is where our BYE goes.
                        dialogs::keep(&leg.shared, &call_id, handle).await;
                    }
                    UaEvent::ReInviteAck { body, .. } => leg.media.reinvite_ack(&body),
                    other => tracing::debug!(%call_id, ?other, "SIP event of a phone leg"),
                }
            }
            command = control.recv() => match command {
                Some(Control::Hangup(cause)) => hangup = Some(cause),
                Some(Control::Dtmf(digits)) => {
                    if leg.media.remote().is_some() {
                        leg.media.dtmf(digits);
                    } else {
                        tracing::info!(%call_id, %digits, "DTMF dropped: the phone has no media yet");
                    }
                }
                Some(Control::Mute(mute)) => leg.media.mute(mute),
                // The dialer is gone: the service is stopping.
                None => hangup = Some("shutdown"),
            },
            Some(event) = media_rx.recv() => match event {
                // A phone that said it sends nothing (held, inactive) is silent on purpose.
                PhoneMediaEvent::Inactive if answered.is_some() && leg.media.phone_sends() => hangup = Some("media-timeout"),
                PhoneMediaEvent::Inactive => {}
                PhoneMediaEvent::Bye => tracing::info!(%call_id, "phone sent RTCP BYE"),
                PhoneMediaEvent::Dtmf(digit) => leg.key_press(digit),
                PhoneMediaEvent::PromptDone => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                match (&ending, &answered) {
                    (Some((cause, _)), _) => {
                        tracing::warn!(%call_id, "far end never confirmed the hangup; giving the call up");
                        leg.report(final_status(&answered), Some(cause), None, Some("no answer to our hangup"));
                        return;
                    }
                    (None, None) => hangup = Some("no-answer"),
                    (None, Some(_)) => hangup = Some("max-duration"),
                }
            }
        }
        if let (Some(cause), None) = (hangup, &ending) {
            tracing::info!(%call_id, cause, "hanging up phone leg");
            ending = Some((cause, Instant::now()));
            if let Err(e) = leg.shared.sip.hangup(handle).await {
                tracing::warn!(%call_id, error = %e, "hangup refused");
                leg.report(
                    final_status(&answered),
                    Some(cause),
                    None,
                    Some(&e.to_string()),
                );
                return;
            }
            if let Some((_, code, reason)) = &answered {
                // Our BYE is out: the call is over for the room and its record now, not when
                // (or if) the phone answers the BYE.
                leg.media.cut_off();
                leg.report(CallStatus::Cleared, Some(cause), Some(*code), Some(reason));
            }
        }
    }
}

fn final_status(answered: &Option<(Instant, u16, String)>) -> CallStatus {
    if answered.is_some() {
        CallStatus::Cleared
    } else {
        CallStatus::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_answers_map_to_causes() {
        assert_eq!(rejection_cause(486, true), "busy");
        assert_eq!(rejection_cause(600, true), "busy");
        assert_eq!(rejection_cause(603, true), "declined");
        assert_eq!(rejection_cause(480, true), "unavailable");
        assert_eq!(rejection_cause(404, true), "invalid-number");
        // A 408 from the far end is nobody answering; our own transaction timeout is a failure.
        assert_eq!(rejection_cause(408, true), "no-answer");
        assert_eq!(rejection_cause(408, false), "failed");
        assert_eq!(rejection_cause(503, false), "failed");
        assert_eq!(rejection_cause(500, true), "failed");
    }

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
