//! Dial-out through the configured trunks: after the room's own checks ([`Rooms::dialout`]),
//! picks the trunk, applies its limits, refuses an attendee already in a call, allocates the
//! RTP ports and starts the phone leg. The call id is returned at once (status `accepted`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dialbridge_bridge::ports::{PortLease, RtpPortPool};
use dialbridge_sip::transport::Transport;

use super::phone_leg::{self, Control, LegSetup, Outbound};
use super::CallRouter;
use crate::config::{Config, TrunkConfig};
use crate::room::{CallObserver, Dialer, DialoutTarget, ErrorKind, RoomError, RoomResult, Rooms};
use crate::room::{Cause, PhoneMute};
use crate::runtime::media::{MediaHandle, MediaId};
use crate::runtime::sip::SipHandle;

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
}

pub(crate) struct Shared {
    pub sip: SipHandle,
    pub media: MediaHandle,
    pub rooms: Rooms,
    pub router: Arc<CallRouter>,
    pub ports: RtpPortPool,
    pub legs: Mutex<HashMap<String, LiveLeg>>,
    /// Where RTP binds and what SDP announces, per SIP transport.
    pub media_ip: HashMap<Transport, (IpAddr, IpAddr)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn legs(&self) -> MutexGuard<'_, HashMap<String, LiveLeg>> {
        lock(&self.legs)
    }

    /// Refreshes the gauges the leak checks read.
    pub fn publish_gauges(&self) {
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
    pub fn lease_and_bind(
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
    pub fn end_leg(&self, call_id: &str, media: Option<MediaId>, lease: PortLease) {
        if let Some(media) = media {
            self.media.remove_phone(media);
        }
        drop(lease);
        super::dialogs::forget(self.rooms.store(), call_id);
        self.legs().remove(call_id);
        self.publish_gauges();
    }

    /// Asks a live leg of room `room_id` to do `control`.
    pub fn control(&self, room_id: i64, call_id: &str, control: Control) -> RoomResult<()> {
        let legs = self.legs();
        let leg = legs
            .get(call_id)
            .filter(|l| l.room_id == room_id)
            .ok_or_else(|| {
                RoomError::new(
                    ErrorKind::NotFound,
                    "call",
                    "no phone call with this id in the conversation",
                )
            })?;
        leg.control
            .send(control)
            .map_err(|_| RoomError::new(ErrorKind::NotFound, "call", "the phone call has ended"))
    }
}

/// Places dial-outs through `[[trunks]]`.
pub struct TrunkDialer {
    shared: Arc<Shared>,
    trunks: Vec<TrunkConfig>,
    /// Start times of the last second's calls, per trunk.
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    runtime: tokio::runtime::Handle,
}

impl TrunkDialer {
    /// Needs a running tokio runtime (legs are spawned on it). `rooms` must be an instance
    /// without a dialer or observer: the legs report through it.
    pub fn new(
        config: &Config,
        sip: SipHandle,
        media: MediaHandle,
        rooms: Rooms,
        router: Arc<CallRouter>,
    ) -> anyhow::Result<Arc<TrunkDialer>> {
        let mut media_ip = HashMap::new();
        for (transport, addr) in sip.local_addrs.iter() {
            // RTP binds where SIP listens; a wildcard needs media.public_ip to announce.
            let announce = match (addr.ip().is_unspecified(), config.media.public_ip) {
                (false, _) => addr.ip(),
                (true, Some(public)) => public,
                (true, None) => continue,
            };
            media_ip.entry(*transport).or_insert((addr.ip(), announce));
        }
        for trunk in &config.trunks {
            if !media_ip.contains_key(&trunk.transport) {
                anyhow::bail!(
                    "trunk `{}` uses {} but no [sip] listen address has that transport \
                     with an address to announce (set media.public_ip for a wildcard listen)",
                    trunk.name,
                    trunk.transport.name()
                );
            }
        }
        let ports = RtpPortPool::new(config.media.rtp_ports.first, config.media.rtp_ports.last);
        let dialer = Arc::new(TrunkDialer {
            shared: Arc::new(Shared {
                sip,
                media,
                rooms,
                router,
                ports,
                legs: Mutex::new(HashMap::new()),
                media_ip,
            }),
            trunks: config.trunks.clone(),
            recent: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        });
        dialer.shared.publish_gauges();
        let shared = dialer.shared.clone();
        dialer.runtime.spawn(async move {
            // SIP core counters for /metrics (read by the leak checks).
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                let Ok(stats) = shared.sip.stats().await else {
                    break;
                };
                metrics::gauge!("dialbridge_sip_calls").set(stats.calls as f64);
                metrics::gauge!("dialbridge_sip_transactions").set(stats.transactions as f64);
                metrics::gauge!("dialbridge_sip_tcp_connections").set(stats.tcp_connections as f64);
                shared.publish_gauges();
            }
        });
        Ok(dialer)
    }

    fn trunk_for(&self, number: &str) -> RoomResult<&TrunkConfig> {
        self.trunks
            .iter()
            .find(|t| t.allowed_numbers.iter().any(|p| p.matches(number)))
            .ok_or_else(|| {
                RoomError::new(
                    ErrorKind::Forbidden,
                    "number",
                    format!("no trunk is allowed to dial {number}: it matches no allowed_numbers pattern"),
                )
            })
    }

    /// Takes one call of the trunk's calls-per-second budget, or says why not.
    fn take_rate(&self, trunk: &TrunkConfig, now: Instant) -> RoomResult<()> {
        if trunk.calls_per_second <= 0.0 {
            return Ok(());
        }
        let mut recent = lock(&self.recent);
        let starts = recent.entry(trunk.name.clone()).or_default();
        // At most cps calls in any one second; below one per second, one per 1/cps seconds.
        let (window, budget) = if trunk.calls_per_second >= 1.0 {
            (
                Duration::from_secs(1),
                trunk.calls_per_second.floor() as usize,
            )
        } else {
            (Duration::from_secs_f64(1.0 / trunk.calls_per_second), 1)
        };
        while starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            starts.pop_front();
        }
        if starts.len() >= budget {
            return Err(RoomError::new(
                ErrorKind::TooManyRequests,
                "limit",
                format!(
                    "trunk `{}` allows {} call(s) per second; try again shortly",
                    trunk.name, trunk.calls_per_second
                ),
            ));
        }
        starts.push_back(now);
        Ok(())
    }
}

impl Dialer for TrunkDialer {
    fn dial(&self, target: DialoutTarget) -> RoomResult<String> {
        if self.trunks.is_empty() {
            return Err(crate::room::not_configured());
        }
        let trunk = self.trunk_for(&target.number)?;
        if let Some(caller) = &target.caller {
            if caller.parse::<crate::room::PhoneNumber>().is_err() {
                return Err(RoomError::new(
                    ErrorKind::BadRequest,
                    "caller",
                    format!("caller `{caller}` is not an E.164 number"),
                ));
            }
        }
        let now = Instant::now();
        let call_id = {
            let legs = self.shared.legs();
            if legs
                .values()
                .any(|l| !l.finished && l.attendee_id == target.attendee_id)
            {
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
            self.take_rate(trunk, now)?;
            format!("{:032x}", rand::random::<u128>())
        };
        let transport = trunk.transport;
        let (ip, announce) = self
            .shared
            .media_ip
            .get(&transport)
            .copied()
            .ok_or_else(|| {
                RoomError::new(
                    ErrorKind::Internal,
                    "sip",
                    "no SIP listener for the trunk's transport",
                )
            })?;
        let (lease, rtp, rtcp) = self.shared.lease_and_bind(ip)?;
        let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let session_id = Rooms::phone_session_id(&call_id);
        {
            let mut legs = self.shared.legs();
            // Checked again under the same lock that inserts: two requests may race here.
            if legs
                .values()
                .any(|l| !l.finished && l.attendee_id == target.attendee_id)
            {
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
                },
            );
        }
        self.shared.publish_gauges();
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
            "dial-out accepted"
        );
        let record_id = match phone_leg::start_recorded(&self.shared, &setup) {
            Ok(id) => id,
            Err(e) => {
                self.shared.legs().remove(&call_id);
                self.shared.publish_gauges();
                return Err(e);
            }
        };
        self.runtime.spawn(phone_leg::run(
            self.shared.clone(),
            setup,
            record_id,
            control_rx,
        ));
        Ok(call_id)
    }

    fn send_dtmf(&self, room_id: i64, call_id: &str, digits: &str) -> RoomResult<()> {
        // A phone still ringing without early media has nothing to carry key presses yet.
        let has_media = self
            .shared
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
        self.shared
            .control(room_id, call_id, Control::Dtmf(digits.to_string()))
    }

    fn hangup_phone(&self, room_id: i64, call_id: &str) -> RoomResult<()> {
        self.shared
            .control(room_id, call_id, Control::Hangup(Cause::Ended))
    }

    fn mute_phone(&self, room_id: i64, call_id: &str, mute: PhoneMute) -> RoomResult<()> {
        self.shared.control(room_id, call_id, Control::Mute(mute))
    }
}

impl CallObserver for TrunkDialer {
    /// A phone's own session leaving (a moderator ended the call for all), or the last
    /// non-phone participant leaving, ends the room's phone legs.
    fn left_call(&self, room_id: i64, sessions: &[String]) {
        let in_room: Vec<(String, bool, i64)> = self
            .shared
            .legs()
            .iter()
            .filter(|(_, l)| l.room_id == room_id)
            .map(|(id, l)| (id.clone(), sessions.contains(&l.session_id), l.attendee_id))
            .collect();
        if in_room.is_empty() {
            return;
        }
        let nobody_left = !self
            .shared
            .rooms
            .has_non_phone_in_call(room_id)
            .unwrap_or(true);
        for (call_id, own_session, attendee_id) in in_room {
            // A removed attendee's session leaves too; `attendee_removed` names that cause.
            let removed = !self
                .shared
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
            .shared
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

impl TrunkDialer {
    /// What inbound legs share with dial-out legs.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Ends every leg (BYE or CANCEL, cause `shutdown`) and waits up to `grace` for them to
    /// finish, so no phone stays connected to a stopped gateway.
    pub async fn shutdown(&self, grace: Duration) {
        let calls: Vec<String> = self.shared.legs().keys().cloned().collect();
        if calls.is_empty() {
            return;
        }
        tracing::info!(legs = calls.len(), "ending phone legs before stopping");
        for call_id in &calls {
            self.hangup(call_id, Cause::Shutdown);
        }
        let end = Instant::now() + grace;
        while !self.shared.legs().is_empty() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn hangup(&self, call_id: &str, cause: Cause) {
        if let Some(leg) = self.shared.legs().get(call_id) {
            tracing::info!(%call_id, %cause, "ending phone leg from the room");
            let _ = leg.control.send(Control::Hangup(cause));
        }
    }
}
