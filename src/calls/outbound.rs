//! One phone leg from its INVITE to its end: status into the room (`accepted`, `ringing`,
//! `connected`, then `rejected` or `cleared` with cause, SIP code and reason), the phone as a
//! virtual session of its attendee once answered, its RTP in the room's mix (from a 183's
//! early media on), every way it can end, and its call record.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use dialbridge_bridge::ports::PortLease;
use dialbridge_sip::endpoint::Target;
use dialbridge_sip::message::{NameAddr, Uri};
use dialbridge_sip::sdp::{Direction, LocalMedia, SessionDescription};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaEvent};
use tokio::sync::mpsc;

use super::leg_media::LegMedia;
use super::legs::{self, report, Control, LiveLeg, PhoneLegs};
use super::phone_call::{Action, Limits, MediaInput, PhoneCall, SipInput};
use super::task::{self, Effects, Inputs};
use crate::config::TrunkConfig;
use crate::room::{
    CallStatus, Cause, DialoutTarget, ErrorKind, MediaParticipant, PhoneNumber, PhoneStatus,
    RoomError, RoomResult, Rooms,
};
use crate::runtime::dns::LocateError;
use crate::runtime::media::PhoneMediaEvent;
use crate::runtime::sip::Credentials;
use crate::store::PhoneCallRecord;

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
pub(crate) fn start_recorded(shared: &PhoneLegs, setup: &LegSetup) -> RoomResult<i64> {
    shared.rooms.phone_leg_started(&record_of(setup))
}

/// Starts a dial-out leg through `trunk` (checks of the attendee and the trunk's concurrency
/// first, then `take_rate`): its record says `accepted` before the call id is returned. A leg
/// that `replaces` another (the phone of that leg transferred us) may share its attendee.
pub(crate) fn start_leg(
    shared: &Arc<PhoneLegs>,
    runtime: &tokio::runtime::Handle,
    trunk: &TrunkConfig,
    target: DialoutTarget,
    replaces: Option<String>,
    take_rate: impl FnOnce() -> RoomResult<()>,
) -> RoomResult<String> {
    let busy_attendee = |legs: &HashMap<String, LiveLeg>| {
        legs.iter().any(|(id, l)| {
            !l.finished && l.attendee_id == target.attendee_id && Some(id) != replaces.as_ref()
        })
    };
    let call_id = {
        let legs = shared.legs();
        if busy_attendee(&legs) {
            return Err(RoomError::new(
                ErrorKind::BadRequest,
                "attendee",
                "this phone attendee is already in a call",
            ));
        }
        let busy = legs
            .values()
            .filter(|l| !l.finished && !l.inbound && l.trunk == trunk.name)
            .count();
        if trunk.max_concurrent_calls > 0 && busy >= trunk.max_concurrent_calls as usize {
            return Err(RoomError::new(
                ErrorKind::Unavailable,
                "limit",
                format!(
                    "trunk `{}` already carries its maximum of {} concurrent calls",
                    trunk.name, trunk.max_concurrent_calls
                ),
            ));
        }
        drop(legs);
        take_rate()?;
        format!("{:032x}", rand::random::<u128>())
    };
    let transport = trunk.transport;
    let (ip, announce) = shared.media_ip.get(&transport).copied().ok_or_else(|| {
        RoomError::new(
            ErrorKind::Internal,
            "sip",
            "no SIP listener for the trunk's transport",
        )
    })?;
    let (lease, rtp, rtcp) = shared.lease_and_bind(ip)?;
    let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let session_id = Rooms::phone_session_id(&call_id);
    {
        let mut legs = shared.legs();
        // Checked again under the same lock that inserts: two requests may race here.
        if busy_attendee(&legs) {
            return Err(RoomError::new(
                ErrorKind::BadRequest,
                "attendee",
                "this phone attendee is already in a call",
            ));
        }
        legs.insert(
            call_id.clone(),
            LiveLeg {
                room_id: target.room_id,
                attendee_id: target.attendee_id,
                trunk: trunk.name.clone(),
                inbound: false,
                session_id,
                control,
                has_media: false,
                finished: false,
                replaces: replaces.clone(),
            },
        );
    }
    shared.publish_gauges();
    let setup = LegSetup {
        call_id: call_id.clone(),
        target,
        outbound: Outbound {
            trunk: trunk.clone(),
            transport,
        },
        announce_ip: announce,
        lease,
        rtp,
        rtcp,
    };
    tracing::info!(
        call_id = %call_id,
        trunk = %trunk.name,
        number = %setup.target.number,
        room = %setup.target.room_token,
        replaces = replaces.as_deref(),
        "dial-out accepted"
    );
    let record_id = match start_recorded(shared, &setup) {
        Ok(id) => id,
        Err(e) => {
            shared.legs().remove(&call_id);
            shared.publish_gauges();
            return Err(e);
        }
    };
    runtime.spawn(run(shared.clone(), setup, record_id, control_rx));
    Ok(call_id)
}

struct Leg {
    shared: Arc<PhoneLegs>,
    /// Who and where the leg calls for (a replacement after a transfer calls for the same).
    target: DialoutTarget,
    record: PhoneCallRecord,
    record_id: i64,
    who: MediaParticipant,
    media: LegMedia,
}

impl Leg {
    /// Reports a status the call decided (which says each once, a final one last), or the
    /// failure of a call that never got to its dialog.
    fn report(
        &self,
        status: CallStatus,
        cause: Option<Cause>,
        code: Option<u16>,
        message: Option<&str>,
    ) {
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
    #[error("trunk address {0}")]
    Locate(#[from] LocateError),
    #[error("trunk address {host}: {reason}")]
    Tls { host: String, reason: String },
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

/// The INVITE for `setup`: request URI at the trunk, From with the caller id (or withheld),
/// privacy headers, SDP offer.
fn invite_for(
    dialled: &DialoutTarget,
    outbound: &Outbound,
    targets: &[SocketAddr],
    offer: &SessionDescription,
) -> Result<OutgoingCall, InviteError> {
    let trunk = &outbound.trunk;
    let host = &trunk.address.host;
    let (&first, rest) = targets.split_first().ok_or_else(|| {
        InviteError::Locate(LocateError::Nothing {
            name: trunk.address.to_string(),
        })
    })?;
    let number = &dialled.number;
    let uri_text = trunk.number_uri(number);
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
            addr: first,
        },
        alternates: rest
            .iter()
            .map(|&addr| Target {
                transport: outbound.transport,
                addr,
            })
            .collect(),
        body: Some(Body::sdp(offer.to_string().into_bytes())),
        headers,
    })
}

/// Runs a dial-out leg to its end, then frees everything it held.
pub(crate) async fn run(
    shared: Arc<PhoneLegs>,
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
        trunk.srtp.0,
    );
    let offer = media.offer();
    let mut leg = Leg {
        shared: shared.clone(),
        target: target.clone(),
        record,
        record_id,
        who,
        media,
    };
    let invite = async {
        let addrs = shared
            .dns
            .locate(&trunk.address.host, trunk.address.port, outbound.transport)
            .await?;
        if outbound.transport == Transport::Tls {
            for &addr in &addrs {
                shared
                    .sip
                    .tls_peer(addr, &trunk.name, &trunk.address.host)
                    .await
                    .map_err(|reason| InviteError::Tls {
                        host: trunk.address.host.clone(),
                        reason,
                    })?;
            }
        }
        invite_for(&target, &outbound, &addrs, &offer)
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

/// Calls the target of the phone's REFER through the same trunk, for the same attendee, as a
/// leg that takes this one's place once answered: the number must be one the trunk may dial
/// and the room's dial-out checks must pass, as for a moderator's dial-out.
fn place_replacement(leg: &Leg, trunk: &TrunkConfig, to: &str) -> RoomResult<String> {
    let forbidden = |why: String| RoomError::new(ErrorKind::Forbidden, "number", why);
    let number = Uri::parse(to)
        .ok()
        .and_then(|uri| uri.user_number())
        .and_then(|user| PhoneNumber::from_sip_user(&user))
        .ok_or_else(|| forbidden(format!("the transfer target {to} is not a phone number")))?;
    if !trunk.may_dial(number.as_str()) {
        return Err(forbidden(format!(
            "trunk `{}` is not allowed to dial {}",
            trunk.name,
            number.as_str()
        )));
    }
    leg.shared.rooms.check_dialout(leg.target.room_id)?;
    let target = DialoutTarget {
        number: number.as_str().to_string(),
        caller: None,
        anonymous: false,
        ..leg.target.clone()
    };
    start_leg(
        &leg.shared,
        &tokio::runtime::Handle::current(),
        trunk,
        target,
        Some(leg.record.call_id.clone()),
        || Ok(()),
    )
}

/// The leg's task: feeds the call's state machine ([`PhoneCall`]) with SIP events, room
/// commands, media events and its timer, and carries out what it decides.
async fn drive(
    leg: &mut Leg,
    trunk: &TrunkConfig,
    offer: &SessionDescription,
    handle: CallHandle,
    events: mpsc::UnboundedReceiver<UaEvent>,
    control: mpsc::UnboundedReceiver<Control>,
    media_rx: mpsc::UnboundedReceiver<PhoneMediaEvent>,
) {
    let call_id = leg.record.call_id.clone();
    // The leg answers the phone's re-INVITEs itself (see `LegMedia::reinvite`).
    if let Err(e) = leg.shared.sip.manual_reinvites(handle).await {
        tracing::warn!(%call_id, error = %e, "re-INVITEs stay auto-answered");
    }
    if trunk.allow_refer {
        if let Err(e) = leg.shared.sip.perform_peer_refer(handle).await {
            tracing::warn!(%call_id, error = %e, "REFER stays refused");
        }
    }
    let call = PhoneCall::dialling(
        Instant::now(),
        Limits {
            ringing_timeout: trunk.ringing_timeout.0,
            max_duration: trunk.max_call_duration.0,
        },
    );
    let mut dialled = Dialled {
        leg,
        trunk,
        offer,
        handle,
    };
    let inputs = Inputs {
        events,
        control,
        media: media_rx,
    };
    task::drive(&mut dialled, call, inputs).await;
}

/// A dial-out in its dialog: what its decisions are carried out with.
struct Dialled<'a> {
    leg: &'a mut Leg,
    trunk: &'a TrunkConfig,
    offer: &'a SessionDescription,
    handle: CallHandle,
}

impl Effects for Dialled<'_> {
    fn call_id(&self) -> &str {
        &self.leg.record.call_id
    }

    fn far_end(&self) -> &'static str {
        "phone"
    }

    fn phone_sends(&self) -> bool {
        self.leg.media.phone_sends()
    }

    async fn carry_out(&mut self, call: &mut PhoneCall, action: Action) -> bool {
        let (leg, offer, handle) = (&mut *self.leg, self.offer, self.handle);
        let call_id = leg.record.call_id.clone();
        match action {
            Action::Report {
                status,
                cause,
                code,
                message,
            } => leg.report(status, cause, code, message.as_deref()),
            Action::StartMedia { body, early } => {
                let started = leg
                    .media
                    .apply_answer(offer, &body)
                    .map_err(|e| e.to_string());
                if early && started.is_ok() {
                    tracing::info!(%call_id, "early media bridged into the room");
                }
                call.handle_media(Instant::now(), MediaInput::Started(started));
            }
            Action::KeepDialog => leg.shared.keep_dialog(&call_id, handle).await,
            Action::HangUp(cause) => {
                tracing::info!(%call_id, %cause, "hanging up phone leg");
                let input = match leg.shared.sip.hangup(handle).await {
                    Ok(()) => SipInput::HangupSent,
                    Err(e) => {
                        tracing::warn!(%call_id, error = %e, "hangup refused");
                        SipInput::HangupRefused(e.to_string())
                    }
                };
                call.handle_sip(Instant::now(), input);
            }
            Action::CutOff => leg.media.cut_off(),
            Action::SendDtmf(digits) => leg.media.dtmf(digits),
            Action::Mute(mute) => leg.media.mute(mute),
            Action::KeyPress(digit) => {
                tracing::info!(%call_id, %digit, "DTMF from phone");
                leg.key_press(digit);
            }
            Action::AnswerReInvite(body) => leg.media.reinvite(handle, &body).await,
            Action::FollowAck(body) => leg.media.reinvite_ack(&body),
            // A caller's opening (prompts, rooms, the trunk slot) has no part in a dial-out.
            Action::Play(_)
            | Action::StopPrompt
            | Action::Join(_)
            | Action::ReleaseSlot
            | Action::EndedUnjoined(_) => {
                tracing::debug!(%call_id, ?action, "not a dial-out's action");
            }
            Action::Refer(to) => {
                if let Err(error) = legs::refer(&leg.shared, &call_id, handle, &to).await {
                    call.handle_sip(Instant::now(), SipInput::ReferRefused(error));
                }
            }
            Action::TransferStatus {
                status,
                code,
                message,
            } => legs::report_transfer(&leg.shared, &leg.record, status.as_str(), code, message),
            Action::PlaceReplacement(to) => {
                if let Err(e) = place_replacement(leg, self.trunk, &to) {
                    tracing::info!(%call_id, %to, error = %e.message, "transfer target refused");
                    // Not allowed, or not now (the trunk's limits, no free RTP port).
                    let (code, reason) = match e.kind {
                        ErrorKind::Forbidden => (403, "Forbidden"),
                        _ => (503, "Service Unavailable"),
                    };
                    let refusal = Control::Replacement {
                        code,
                        reason: reason.into(),
                    };
                    call.handle_control(Instant::now(), Some(refusal));
                }
            }
            Action::NotifyTransfer { code, reason } => {
                if let Err(e) = leg.shared.sip.notify_transfer(handle, code, reason).await {
                    tracing::info!(%call_id, error = %e, "transfer NOTIFY not sent");
                }
            }
            Action::Done => return false,
        }
        true
    }
}
