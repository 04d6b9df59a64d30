//! One phone leg from its INVITE to its end: status into the room (`accepted`, `ringing`,
//! `connected`, then `rejected` or `cleared` with cause, SIP code and reason), the phone as a
//! virtual session of its attendee once answered, its RTP in the room's mix (from a 183's
//! early media on), every way it can end, and its call record.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dialbridge_bridge::ports::PortLease;
use dialbridge_sip::endpoint::Target;
use dialbridge_sip::message::{NameAddr, Uri};
use dialbridge_sip::sdp::{Direction, LocalMedia, SessionDescription};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dialogs;
use super::dialout::Shared;
use super::leg_media::{is_sdp, LegMedia, LegMediaError};
use crate::config::TrunkConfig;
use crate::room::PhoneMute;
use crate::room::{
    CallStatus, Cause, DialoutTarget, MediaParticipant, PhoneStatus, RoomResult, Rooms,
};
use crate::runtime::media::PhoneMediaEvent;
use crate::runtime::sip::Credentials;
use crate::store::PhoneCallRecord;

/// How long to wait for the far end to confirm our CANCEL or BYE before giving the call up.
pub(crate) const HANGUP_GRACE: Duration = Duration::from_secs(40);

/// What the room asks of a running leg.
#[derive(Debug)]
pub enum Control {
    /// End the call (CANCEL while ringing, BYE once answered) with this cause.
    Hangup(Cause),
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

/// Counts the end of a phone call, whichever side started it and however far it got:
/// `dialbridge_phone_calls_ended_total{kind, status, cause}`.
pub(crate) fn count_end(kind: &'static str, status: CallStatus, cause: Option<Cause>) {
    metrics::counter!(
        "dialbridge_phone_calls_ended_total",
        "kind" => kind,
        "status" => status.as_str(),
        "cause" => cause.map_or("none", Cause::as_str)
    )
    .increment(1);
}

/// Counts a dial-in refused with `code` before it became a phone leg.
pub(crate) fn count_refused_dialin(code: u16) {
    count_end(
        "dialin",
        CallStatus::Rejected,
        Some(Cause::of_rejection(code, false)),
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
        cause = change.cause.map(Cause::as_str),
        code = change.code,
        message = change.message.as_deref(),
        "phone leg status"
    );
    if change.status.is_final() {
        count_end(record.kind, change.status, change.cause);
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
        cause: Option<Cause>,
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
                cause,
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

/// Why a dial-out's INVITE could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InviteError {
    #[error("cannot resolve trunk address {host}:{port}: {source}")]
    Resolve {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("trunk address {host}:{port} resolves to nothing")]
    Unresolved { host: String, port: u16 },
    /// A URI built from the configuration and the number does not parse.
    #[error("bad {what} {text}: {reason}")]
    BadUri {
        what: &'static str,
        text: String,
        reason: String,
    },
}

fn parse_uri(what: &'static str, text: &str) -> Result<Uri, InviteError> {
    Uri::parse(text).map_err(|e| InviteError::BadUri {
        what,
        text: text.to_string(),
        reason: format!("{e:?}"),
    })
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, InviteError> {
    let mut addrs = tokio::net::lookup_host((host.trim_matches(&['[', ']'][..]), port))
        .await
        .map_err(|source| InviteError::Resolve {
            host: host.to_string(),
            port,
            source,
        })?;
    addrs.next().ok_or_else(|| InviteError::Unresolved {
        host: host.to_string(),
        port,
    })
}

/// The INVITE for `setup`: request URI at the trunk, From with the caller id (or withheld),
/// privacy headers, SDP offer.
fn invite_for(
    dialled: &DialoutTarget,
    outbound: &Outbound,
    target: SocketAddr,
    offer: &SessionDescription,
) -> Result<OutgoingCall, InviteError> {
    let trunk = &outbound.trunk;
    let tcp = outbound.transport == Transport::Tcp;
    let host = &trunk.address.host;
    let port = trunk.address.port;
    let number = &dialled.number;
    let uri_text = format!(
        "sip:{number}@{host}:{port}{}",
        if tcp { ";transport=tcp" } else { "" }
    );
    let uri = parse_uri("request URI", &uri_text)?;
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
        let mut from = NameAddr::new(parse_uri(
            "anonymous URI",
            "sip:anonymous@anonymous.invalid",
        )?);
        from.display = Some("Anonymous".into());
        from
    } else {
        let user = real.unwrap_or_else(|| "dialbridge".to_string());
        let text = format!("sip:{user}@{domain}");
        NameAddr::new(parse_uri("From URI", &text)?)
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
                        Some(Cause::Failed),
                        Some(503),
                        Some(&e.to_string()),
                    );
                }
            }
        }
        Err(reason) => {
            tracing::warn!(%call_id, %reason, "INVITE not built");
            let reason = reason.to_string();
            leg.report(
                CallStatus::Rejected,
                Some(Cause::Failed),
                None,
                Some(&reason),
            );
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
    let mut ending: Option<(Cause, Instant)> = None;
    loop {
        let deadline = match (&ending, &answered) {
            (Some((_, since)), _) => *since + HANGUP_GRACE,
            (None, None) => ringing_deadline,
            (None, Some((at, _, _))) => *at + trunk.max_call_duration.0,
        };
        let mut hangup: Option<Cause> = None;
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    leg.report(final_status(&answered), Some(Cause::Failed), None, Some("SIP driver stopped"));
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
                            None => Err(LegMediaError::NoAnswer("the 200 OK")),
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
                                hangup = Some(Cause::Failed);
                            }
                        }
                    }
                    UaEvent::Failed { code, reason, response, .. } => {
                        let cause = match ending {
                            Some((cause, _)) => cause,
                            None => Cause::of_rejection(code, response.is_some()),
                        };
                        leg.report(CallStatus::Rejected, Some(cause), Some(code), Some(&reason));
                        return;
                    }
                    UaEvent::Ended { by_remote, .. } => {
                        let cause = match (by_remote, ending) {
                            (true, _) | (false, None) => Cause::Hangup,
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
                None => hangup = Some(Cause::Shutdown),
            },
            Some(event) = media_rx.recv() => match event {
                // A phone that said it sends nothing (held, inactive) is silent on purpose.
                PhoneMediaEvent::Inactive if answered.is_some() && leg.media.phone_sends() => hangup = Some(Cause::MediaTimeout),
                PhoneMediaEvent::Inactive => {}
                PhoneMediaEvent::Bye => tracing::info!(%call_id, "phone sent RTCP BYE"),
                PhoneMediaEvent::Dtmf(digit) => leg.key_press(digit),
                PhoneMediaEvent::PromptDone => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                match (&ending, &answered) {
                    (Some((cause, _)), _) => {
                        tracing::warn!(%call_id, "far end never confirmed the hangup; giving the call up");
                        leg.report(final_status(&answered), Some(*cause), None, Some("no answer to our hangup"));
                        return;
                    }
                    (None, None) => hangup = Some(Cause::NoAnswer),
                    (None, Some(_)) => hangup = Some(Cause::MaxDuration),
                }
            }
        }
        if let (Some(cause), None) = (hangup, &ending) {
            tracing::info!(%call_id, %cause, "hanging up phone leg");
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
