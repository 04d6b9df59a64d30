//! The phone legs of both directions: the table of running legs (for limits, duplicates and
//! room commands), what they share (SIP, media engine, rooms, RTP ports, the addresses media
//! binds to), the room's commands to a leg, and how a leg's status reaches the room.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dialbridge_bridge::ports::{PortLease, RtpPortPool};
use dialbridge_sip::message::Uri;
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::CallHandle;

use super::dialogs;
use super::router::CallRouter;
use crate::config::Config;
use crate::room::{
    CallObserver, CallRooms, CallStatus, Cause, ErrorKind, PhoneControls, PhoneMute, PhoneStatus,
    RoomError, RoomResult,
};
use crate::runtime::dns::SipResolver;
use crate::runtime::media::{MediaHandle, MediaId};
use crate::runtime::sip::SipHandle;
use crate::store::PhoneCallRecord;
use crate::sync::lock;

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
    /// Blind transfer: ask the phone to call this URI instead (REFER).
    Transfer(String),
    /// How the leg that replaces this one (the phone transferred us) goes, as a SIP status.
    Replacement { code: u16, reason: String },
}

/// Binding tries per dial-out when ports of the range are held by other programs.
const BIND_ATTEMPTS: usize = 8;

/// A leg in progress, as the dialer tracks it for limits, duplicates and hangups. An inbound
/// caller not in a room yet has room and attendee 0 (store ids start at 1).
pub(crate) struct LiveLeg {
    pub room_id: i64,
    pub attendee_id: i64,
    /// The trunk's name, in `[[trunks]]` or (when `inbound`) in `[[inbound]]`.
    pub trunk: String,
    pub inbound: bool,
    pub session_id: String,
    pub control: tokio::sync::mpsc::UnboundedSender<Control>,
    /// The phone's media runs (answered or early media): key presses can be sent.
    pub has_media: bool,
    /// Its final status is out: the attendee and the trunk's slot are free again, though
    /// the leg is still letting go of its dialog and ports.
    pub finished: bool,
    /// The leg this one replaces (its phone transferred us here): it hears our statuses.
    pub replaces: Option<String>,
}

/// The running phone legs of both directions and what they share.
pub struct PhoneLegs {
    pub(crate) sip: SipHandle,
    pub(crate) media: MediaHandle,
    pub(crate) rooms: CallRooms,
    pub(crate) router: Arc<CallRouter>,
    pub(crate) ports: RtpPortPool,
    pub(crate) legs: Mutex<HashMap<String, LiveLeg>>,
    /// Where RTP binds and what SDP announces, per SIP transport.
    pub(crate) media_ip: HashMap<Transport, (IpAddr, IpAddr)>,
    /// Trunk host names to addresses (RFC 3263).
    pub(crate) dns: SipResolver,
}

impl PhoneLegs {
    /// The legs' shared parts; RTP binds where SIP listens (a wildcard listen needs
    /// `media.public_ip` to announce).
    pub fn new(
        config: &Config,
        sip: SipHandle,
        media: MediaHandle,
        rooms: CallRooms,
        router: Arc<CallRouter>,
    ) -> Result<Arc<PhoneLegs>, String> {
        let dns = SipResolver::new(&config.sip.dns_servers)?;
        let mut media_ip = HashMap::new();
        for (transport, addr) in sip.local_addrs.iter() {
            let announce = match (addr.ip().is_unspecified(), config.media.public_ip) {
                (false, _) => addr.ip(),
                (true, Some(public)) => public,
                (true, None) => continue,
            };
            media_ip.entry(*transport).or_insert((addr.ip(), announce));
        }
        let ports = RtpPortPool::new(config.media.rtp_ports.first, config.media.rtp_ports.last);
        let legs = Arc::new(PhoneLegs {
            sip,
            media,
            rooms,
            router,
            ports,
            legs: Mutex::new(HashMap::new()),
            media_ip,
            dns,
        });
        legs.publish_gauges();
        Ok(legs)
    }

    /// Publishes the SIP core's counters and the legs' gauges for /metrics twice a second
    /// (the leak checks read them), until the SIP driver stops.
    pub fn spawn_metrics(self: &Arc<Self>) {
        let legs = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                let Ok(stats) = legs.sip.stats().await else {
                    break;
                };
                metrics::gauge!("dialbridge_sip_calls").set(stats.calls as f64);
                metrics::gauge!("dialbridge_sip_transactions").set(stats.transactions as f64);
                metrics::gauge!("dialbridge_sip_tcp_connections").set(stats.tcp_connections as f64);
                legs.publish_gauges();
            }
        });
    }

    /// Stores (or, after a target refresh, updates) the dialog of leg `call_id`.
    pub(crate) async fn keep_dialog(&self, call_id: &str, call: CallHandle) {
        dialogs::keep(&self.sip, self.rooms.store(), call_id, call).await;
    }
    pub(crate) fn legs(&self) -> MutexGuard<'_, HashMap<String, LiveLeg>> {
        lock(&self.legs)
    }

    /// Refreshes the gauges the leak checks read.
    pub(crate) fn publish_gauges(&self) {
        let (all, inbound) = {
            let legs = self.legs();
            (legs.len(), legs.values().filter(|l| l.inbound).count())
        };
        metrics::gauge!("dialbridge_dialout_legs").set((all - inbound) as f64);
        metrics::gauge!("dialbridge_dialin_legs").set(inbound as f64);
        metrics::gauge!("dialbridge_rtp_ports_in_use")
            .set((self.ports.capacity() - self.ports.available()) as f64);
    }

    /// An RTP/RTCP port pair bound on `ip`, skipping ports other programs hold.
    pub(crate) fn lease_and_bind(
        &self,
        ip: IpAddr,
    ) -> RoomResult<(PortLease, std::net::UdpSocket, std::net::UdpSocket)> {
        for _ in 0..BIND_ATTEMPTS {
            let Some(lease) = self.ports.allocate() else {
                break;
            };
            let bound =
                std::net::UdpSocket::bind(SocketAddr::new(ip, lease.rtp())).and_then(|rtp| {
                    let rtcp = std::net::UdpSocket::bind(SocketAddr::new(ip, lease.rtcp()))?;
                    rtp.set_nonblocking(true)?;
                    rtcp.set_nonblocking(true)?;
                    Ok((rtp, rtcp))
                });
            match bound {
                Ok((rtp, rtcp)) => return Ok((lease, rtp, rtcp)),
                Err(e) => tracing::warn!(port = lease.rtp(), error = %e, "RTP port busy; next"),
            }
        }
        Err(RoomError::new(
            ErrorKind::Unavailable,
            "media",
            "no RTP port is free in [media] rtp_ports; try again later",
        ))
    }

    /// Frees what a finished leg held: its media in the engine (`media`, once the engine took
    /// its sockets), its RTP ports, its stored dialog and its entry in the table.
    pub(crate) fn end_leg(&self, call_id: &str, media: Option<MediaId>, lease: PortLease) {
        if let Some(media) = media {
            self.media.remove_phone(media);
        }
        drop(lease);
        dialogs::forget(self.rooms.store(), call_id);
        self.legs().remove(call_id);
        self.publish_gauges();
    }

    /// Asks a live leg of room `room_id` to do `control`.
    pub(crate) fn control(&self, room_id: i64, call_id: &str, control: Control) -> RoomResult<()> {
        send_control(&self.control_of(room_id, call_id)?, control)
    }

    /// The control channel of phone call `call_id` in room `room_id`.
    fn control_of(
        &self,
        room_id: i64,
        call_id: &str,
    ) -> RoomResult<tokio::sync::mpsc::UnboundedSender<Control>> {
        self.legs()
            .get(call_id)
            .filter(|l| l.room_id == room_id)
            .map(|l| l.control.clone())
            .ok_or_else(|| {
                RoomError::new(
                    ErrorKind::NotFound,
                    "call",
                    "no phone call with this id in the conversation",
                )
            })
    }
}

fn send_control(
    channel: &tokio::sync::mpsc::UnboundedSender<Control>,
    control: Control,
) -> RoomResult<()> {
    channel
        .send(control)
        .map_err(|_| RoomError::new(ErrorKind::NotFound, "call", "the phone call has ended"))
}

/// Sleeps until `deadline` (a call's next timeout), or for ever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
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

/// Sends a transfer's REFER; why it could not go out, if it could not.
pub(crate) async fn refer(
    shared: &PhoneLegs,
    call_id: &str,
    call: CallHandle,
    to: &str,
) -> Result<(), String> {
    tracing::info!(%call_id, %to, "transferring phone leg (REFER)");
    let sent = match Uri::parse(to) {
        Ok(uri) => shared.sip.refer(call, uri).await.map_err(|e| e.to_string()),
        Err(e) => Err(format!("bad transfer target {to}: {e:?}")),
    };
    sent.inspect_err(|error| tracing::warn!(%call_id, %error, "REFER not sent"))
}

/// Tells the room how a transfer goes (`status`: the `transfer` event's word).
pub(crate) fn report_transfer(
    shared: &PhoneLegs,
    record: &PhoneCallRecord,
    status: &'static str,
    code: Option<u16>,
    message: String,
) {
    tracing::info!(call_id = %record.call_id, status, code, %message, "transfer status");
    shared
        .rooms
        .phone_transfer_status(record, status, code, Some(message));
}

/// A replacing leg's status, as the SIP status line its replaced leg NOTIFYs the phone
/// that transferred us: ringing, answered, or why it failed. Statuses after the answer do not
/// matter to it (it hung up then).
fn tell_replaced_leg(shared: &PhoneLegs, record: &PhoneCallRecord, change: &PhoneStatus) {
    let line = match change.status {
        CallStatus::Ringing => (change.code.unwrap_or(180), "Ringing"),
        CallStatus::Connected => (200, "OK"),
        CallStatus::Rejected => (change.code.unwrap_or(503), "Service Unavailable"),
        CallStatus::Accepted | CallStatus::Cleared => return,
    };
    let legs = shared.legs();
    let replaced = legs
        .get(&record.call_id)
        .and_then(|l| l.replaces.as_ref())
        .and_then(|id| legs.get(id));
    if let Some(replaced) = replaced {
        let (code, default_reason) = line;
        let reason = match (&change.message, change.status) {
            (Some(m), CallStatus::Ringing | CallStatus::Rejected) if !m.is_empty() => m.clone(),
            _ => default_reason.to_string(),
        };
        let _ = replaced.control.send(Control::Replacement { code, reason });
    }
}

/// Logs a leg's new status, records it and announces it in the room.
pub(crate) fn report(
    shared: &PhoneLegs,
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
    tell_replaced_leg(shared, record, &change);
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

impl PhoneControls for PhoneLegs {
    fn send_dtmf(&self, room_id: i64, call_id: &str, digits: &str) -> RoomResult<()> {
        // A phone still ringing without early media has nothing to carry key presses yet.
        let has_media = self
            .legs()
            .get(call_id)
            .filter(|l| l.room_id == room_id)
            .map(|l| l.has_media);
        if has_media == Some(false) {
            return Err(RoomError::new(
                ErrorKind::BadRequest,
                "call",
                "the phone call is not connected yet: key presses need its media",
            ));
        }
        self.control(room_id, call_id, Control::Dtmf(digits.to_string()))
    }

    fn hangup_phone(&self, room_id: i64, call_id: &str) -> RoomResult<()> {
        self.control(room_id, call_id, Control::Hangup(Cause::Ended))
    }

    fn mute_phone(&self, room_id: i64, call_id: &str, mute: PhoneMute) -> RoomResult<()> {
        self.control(room_id, call_id, Control::Mute(mute))
    }

    fn transfer_phone(
        &self,
        room_id: i64,
        call_id: &str,
        refer_to: &dyn Fn() -> RoomResult<String>,
    ) -> RoomResult<()> {
        let channel = self.control_of(room_id, call_id)?;
        send_control(&channel, Control::Transfer(refer_to()?))
    }
}

impl CallObserver for PhoneLegs {
    /// A phone's own session leaving (a moderator ended the call for all), or the last
    /// non-phone participant leaving, ends the room's phone legs.
    fn left_call(&self, room_id: i64, sessions: &[String]) {
        let in_room: Vec<(String, bool, i64)> = self
            .legs()
            .iter()
            .filter(|(_, l)| l.room_id == room_id)
            .map(|(id, l)| (id.clone(), sessions.contains(&l.session_id), l.attendee_id))
            .collect();
        if in_room.is_empty() {
            return;
        }
        let nobody_left = !self.rooms.has_non_phone_in_call(room_id).unwrap_or(true);
        for (call_id, own_session, attendee_id) in in_room {
            // A removed attendee's session leaves too; `attendee_removed` names that cause.
            let removed = !self
                .rooms
                .attendee_exists(room_id, attendee_id)
                .unwrap_or(true);
            if removed {
                continue;
            }
            if own_session || nobody_left {
                self.hangup(&call_id, Cause::Ended);
            }
        }
    }

    fn attendee_removed(&self, _room_id: i64, attendee_id: i64) {
        let calls: Vec<String> = self
            .legs()
            .iter()
            .filter(|(_, l)| l.attendee_id == attendee_id)
            .map(|(id, _)| id.clone())
            .collect();
        for call_id in calls {
            self.hangup(&call_id, Cause::Removed);
        }
    }
}

impl PhoneLegs {
    /// Ends every leg (BYE or CANCEL, cause `shutdown`) and waits up to `grace` for them to
    /// finish, so no phone stays connected to a stopped gateway.
    pub async fn shutdown(&self, grace: Duration) {
        let calls: Vec<String> = self.legs().keys().cloned().collect();
        if calls.is_empty() {
            return;
        }
        tracing::info!(legs = calls.len(), "ending phone legs before stopping");
        for call_id in &calls {
            self.hangup(call_id, Cause::Shutdown);
        }
        let end = Instant::now() + grace;
        while !self.legs().is_empty() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks every leg in room `room_id` to end with `cause`.
    pub fn hang_up_room(&self, room_id: i64, cause: Cause) {
        let calls: Vec<String> = self
            .legs()
            .iter()
            .filter(|(_, l)| l.room_id == room_id)
            .map(|(id, _)| id.clone())
            .collect();
        for call_id in calls {
            self.hangup(&call_id, cause);
        }
    }

    /// Asks leg `call_id` to end with `cause`, if it still runs.
    pub(crate) fn hangup(&self, call_id: &str, cause: Cause) {
        if let Some(leg) = self.legs().get(call_id) {
            tracing::info!(%call_id, %cause, "ending phone leg from the room");
            let _ = leg.control.send(Control::Hangup(cause));
        }
    }
}
