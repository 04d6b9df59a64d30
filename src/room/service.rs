//! Room behaviour with Nextcloud Talk's rules: who may see a room, join it, join its call, ring and dial.
//!
//! Each operation runs its checks and its change in one store transaction, then publishes its events.
//! Checks run in the order Talk applies them, so each case yields the status code the call API documents.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde::Serialize;

use super::{
    actor_type, in_call, lobby, participant_type, permissions, room_type, CallStatus, Cause,
    PhoneMute, PhoneNumber,
};
use crate::auth::AuthUser;
use crate::events::{EventBus, RoomEvent};
use crate::store::{
    AttendeeRow, CallRecord, PhoneCallRecord, RoomRow, SessionRow, Store, StoreError, Tx,
};
use crate::sync::lock;

mod dialin;

pub use dialin::{DialinCaller, DialinRoom, DialinSettings, ANONYMOUS_CALLER, PIN_DIGITS};

/// Length of a session id, as in Talk.
const SESSION_ID_LEN: usize = 512;
const ROOM_TOKEN_LEN: usize = 8;
const MAX_ROOM_NAME: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Forbidden,
    NotFound,
    /// The lobby keeps non-moderators out (412).
    Lobby,
    NotImplemented,
    /// The change clashes with another room's (a dial-in number in use): 409.
    Conflict,
    /// A limit was reached (a trunk's calls per second): try again later (429).
    TooManyRequests,
    /// No capacity now (a trunk's concurrent calls, RTP ports): 503.
    Unavailable,
    /// A spend limit was reached (a call link's organization): 402.
    PaymentRequired,
    Internal,
}

/// A refused operation: the kind decides the HTTP status, `error` is Talk's short reason word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomError {
    pub kind: ErrorKind,
    pub error: &'static str,
    pub message: String,
}

impl RoomError {
    pub fn new(kind: ErrorKind, error: &'static str, message: impl Into<String>) -> RoomError {
        RoomError {
            kind,
            error,
            message: message.into(),
        }
    }
    fn bad_request(error: &'static str, message: impl Into<String>) -> RoomError {
        RoomError::new(ErrorKind::BadRequest, error, message)
    }
    fn forbidden(error: &'static str, message: impl Into<String>) -> RoomError {
        RoomError::new(ErrorKind::Forbidden, error, message)
    }
    fn not_found(error: &'static str, message: impl Into<String>) -> RoomError {
        RoomError::new(ErrorKind::NotFound, error, message)
    }
}

impl From<StoreError> for RoomError {
    fn from(e: StoreError) -> RoomError {
        tracing::error!(error = %e, "store operation failed");
        RoomError::new(ErrorKind::Internal, "internal", "internal error")
    }
}

pub type RoomResult<T> = Result<T, RoomError>;

/// A room as its attendee sees it (`GET /room/{token}`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    pub id: i64,
    pub token: String,
    #[serde(rename = "type")]
    pub room_type: i64,
    pub name: String,
    pub display_name: String,
    pub participant_type: i64,
    pub attendee_id: i64,
    pub actor_type: String,
    pub actor_id: String,
    pub permissions: i64,
    pub attendee_permissions: i64,
    pub default_permissions: i64,
    pub read_only: i64,
    pub lobby_state: i64,
    pub recording_consent: i64,
    pub has_call: bool,
    pub call_flag: i64,
    pub can_start_call: bool,
    pub participant_flags: i64,
    pub session_id: String,
    /// The room's dial-in number and PIN, shown to moderators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialin_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialin_pin: Option<String>,
}

/// One attendee in `GET /room/{token}/participants`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantView {
    pub attendee_id: i64,
    pub actor_type: String,
    pub actor_id: String,
    pub display_name: String,
    pub participant_type: i64,
    pub permissions: i64,
    pub attendee_permissions: i64,
    pub in_call: i64,
    pub last_ping: i64,
    pub session_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_status: Option<String>,
}

/// One session in the call (`GET /call/{token}`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallParticipantView {
    pub attendee_id: i64,
    pub actor_type: String,
    pub actor_id: String,
    pub display_name: String,
    pub last_ping: i64,
    pub session_id: String,
    pub in_call: i64,
}

/// Where participants are added from (`source` of `POST /room/{token}/participants`).
pub enum NewParticipant {
    User(String),
    Phone(PhoneNumber),
}

/// What a dial-out request resolved to, once every check passed.
#[derive(Debug, Clone)]
pub struct DialoutTarget {
    pub room_id: i64,
    pub room_token: String,
    pub attendee_id: i64,
    pub actor_id: String,
    pub number: String,
    /// The From number the moderator asked for (`caller`), instead of the trunk's.
    pub caller: Option<String>,
    /// Withhold the caller id (CLIR).
    pub anonymous: bool,
}

/// Options of a dial-out request (`caller`, `anonymous`).
#[derive(Debug, Clone, Default)]
pub struct DialoutOptions {
    pub caller: Option<String>,
    pub anonymous: bool,
}

/// A phone leg's change of status, as reported into its room.
#[derive(Debug, Clone)]
pub struct PhoneStatus {
    pub status: CallStatus,
    pub cause: Option<Cause>,
    pub code: Option<u16>,
    pub message: Option<String>,
}

/// Places phone calls; provided once SIP trunks are configured.
pub trait Dialer: Send + Sync {
    /// Starts the call and returns its call id, or refuses it.
    fn dial(&self, target: DialoutTarget) -> RoomResult<String>;
    /// Whether a trunk may dial `number`, before anything is set up for it.
    fn check(&self, number: &PhoneNumber) -> RoomResult<()>;
    /// Where a phone transferred to `number` is sent (Refer-To): the URI a dial-out to it
    /// would call, so the same allowlists apply.
    fn transfer_target(&self, number: &PhoneNumber) -> RoomResult<String>;
}

/// What moderators do to a running phone call of either direction.
pub trait PhoneControls: Send + Sync {
    /// Sends key presses (RFC 4733) to the phone of call `call_id` in room `room_id`.
    fn send_dtmf(&self, room_id: i64, call_id: &str, digits: &str) -> RoomResult<()>;
    /// Ends the phone call `call_id` in room `room_id` (BYE, or CANCEL while it rings).
    fn hangup_phone(&self, room_id: i64, call_id: &str) -> RoomResult<()>;
    /// Mutes or unmutes the phone of call `call_id` in room `room_id`.
    fn mute_phone(&self, room_id: i64, call_id: &str, mute: PhoneMute) -> RoomResult<()>;
    /// Asks the phone of call `call_id` in room `room_id` to call `refer_to()` instead (REFER);
    /// the target is worked out only once the call is known, so an unknown call is 404 first.
    fn transfer_phone(
        &self,
        room_id: i64,
        call_id: &str,
        refer_to: &dyn Fn() -> RoomResult<String>,
    ) -> RoomResult<()>;
}

pub(crate) fn not_configured() -> RoomError {
    RoomError::new(
        ErrorKind::NotImplemented,
        "sip",
        "SIP dial-out is not configured: add a [[trunks]] entry to the configuration",
    )
}

/// Told which sessions left a room's call, after the change is committed (the media engine
/// ends their media). Leaving the call, leaving the room, removal and ending the call for
/// everyone all count.
pub trait CallObserver: Send + Sync {
    fn left_call(&self, room_id: i64, sessions: &[String]);
    /// An attendee was removed from the room (a phone attendee's call must end with it).
    fn attendee_removed(&self, _room_id: i64, _attendee_id: i64) {}
}

/// Several observers told in turn.
pub struct Observers(pub Vec<Arc<dyn CallObserver>>);

impl CallObserver for Observers {
    fn left_call(&self, room_id: i64, sessions: &[String]) {
        for o in &self.0 {
            o.left_call(room_id, sessions);
        }
    }
    fn attendee_removed(&self, room_id: i64, attendee_id: i64) {
        for o in &self.0 {
            o.attendee_removed(room_id, attendee_id);
        }
    }
}

/// Rules another product lays over some rooms (call links): asked inside the transaction of
/// each join and dial-out, and told, inside every room transaction, what it changed, so its own
/// records (a meter, a status) commit or roll back with the change.
pub trait RoomPolicy: Send + Sync {
    /// Refuses a join of room `room_id` (entering the room or its call).
    fn check_join(&self, tx: &Tx, room_id: i64) -> RoomResult<()>;
    /// Refuses a dial-out from room `room_id`.
    fn check_dialout(&self, tx: &Tx, room_id: i64) -> RoomResult<()>;
    /// The events of a transaction about to commit: (room, target user, event).
    fn record(&self, tx: &Tx, events: &[(i64, Option<String>, RoomEvent)]) -> RoomResult<()>;
    /// The same events once committed, for what must not run inside a transaction.
    fn committed(&self, _events: &[(i64, Option<String>, RoomEvent)]) {}
}

/// The participant a media session belongs to (`POST /api/v1/rooms/{token}/media`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaParticipant {
    pub room_id: i64,
    pub session_id: String,
    pub attendee_id: i64,
    pub actor_type: String,
    pub actor_id: String,
}

impl MediaParticipant {
    /// The room's `dtmf` event for a key press of this participant (RFC 4733 or SIP INFO).
    pub fn dtmf_event(&self, digit: char) -> RoomEvent {
        RoomEvent::Dtmf {
            attendee_id: self.attendee_id,
            actor_type: self.actor_type.clone(),
            actor_id: self.actor_id.clone(),
            session_id: self.session_id.clone(),
            digit: digit.to_string(),
        }
    }
}

/// The rooms: built once over the store and the event bus; its clones (the API's, the phone
/// legs', dial-in's) share the call observer, so a change a phone leg makes reaches the media
/// engine and the legs just as an API user's does.
#[derive(Clone)]
pub struct Rooms {
    store: Arc<Store>,
    events: Arc<EventBus>,
    dialer: Option<Arc<dyn Dialer>>,
    phones: Option<Arc<dyn PhoneControls>>,
    /// Set once the observers exist (they need the rooms themselves to be built first).
    observer: Arc<OnceLock<Arc<dyn CallObserver>>>,
    /// Dial-in numbers the configuration routes; rooms cannot take them.
    reserved_numbers: Vec<PhoneNumber>,
    /// Set once the product above the rooms exists (it needs the rooms first).
    policy: Arc<OnceLock<Arc<dyn RoomPolicy>>>,
    /// Held from a dial-out's checks to its call record, so that two dial-outs cannot both pass
    /// a check (a spend limit) that only one fits.
    dialouts: Arc<Mutex<()>>,
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The caller's place in a room: the room and, unless they only look at a public room, their attendee.
struct Membership {
    room: RoomRow,
    attendee: AttendeeRow,
}

impl Membership {
    fn is_moderator(&self) -> bool {
        participant_type::is_moderator(self.attendee.participant_type)
    }

    fn permissions(&self) -> i64 {
        effective_permissions(&self.room, &self.attendee)
    }

    fn check_lobby(&self) -> RoomResult<()> {
        if self.room.lobby_state == lobby::MODERATORS_ONLY
            && !self.is_moderator()
            && self.permissions() & permissions::LOBBY_IGNORE == 0
        {
            return Err(RoomError::new(
                ErrorKind::Lobby,
                "lobby",
                "the lobby is active: only moderators may take part in the call",
            ));
        }
        Ok(())
    }

    fn check_writable(&self) -> RoomResult<()> {
        if self.room.read_only {
            return Err(RoomError::forbidden(
                "read-only",
                "the conversation is read-only",
            ));
        }
        Ok(())
    }

    fn check_moderator(&self) -> RoomResult<()> {
        if !self.is_moderator() {
            return Err(RoomError::forbidden(
                "moderator",
                "only moderators of the conversation may do this",
            ));
        }
        Ok(())
    }
}

/// The actor type of a caller's attendees (Talk's `users` or `guests`).
fn actor_type_of(user: &AuthUser) -> &'static str {
    if user.is_guest() {
        actor_type::GUESTS
    } else {
        actor_type::USERS
    }
}

fn effective_permissions(room: &RoomRow, attendee: &AttendeeRow) -> i64 {
    if participant_type::is_moderator(attendee.participant_type) {
        permissions::MAX_CUSTOM & !permissions::CUSTOM
    } else if attendee.permissions & permissions::CUSTOM != 0 {
        attendee.permissions
    } else if room.default_permissions != permissions::DEFAULT {
        room.default_permissions
    } else {
        permissions::USER_DEFAULT
    }
}

fn check_permission_bits(value: i64) -> RoomResult<()> {
    if !(0..=permissions::MAX_CUSTOM).contains(&value) {
        return Err(RoomError::bad_request(
            "permissions",
            "permissions must be between 0 and 255",
        ));
    }
    Ok(())
}

fn room_not_found() -> RoomError {
    RoomError::not_found("room", "the conversation could not be found")
}

fn no_session() -> RoomError {
    RoomError::not_found(
        "session",
        "you did not join the conversation: POST /room/{token}/participants/active first",
    )
}

/// Events to publish once the transaction committed: (room, target user, event).
type Outbox = Vec<(i64, Option<String>, RoomEvent)>;

impl Rooms {
    pub fn new(store: Arc<Store>, events: Arc<EventBus>) -> Rooms {
        Rooms {
            store,
            events,
            dialer: None,
            phones: None,
            observer: Arc::new(OnceLock::new()),
            reserved_numbers: Vec::new(),
            policy: Arc::new(OnceLock::new()),
            dialouts: Arc::new(Mutex::new(())),
        }
    }

    /// Sets the policy of rooms that belong to another product, for this instance and every
    /// clone; only the first one set counts.
    pub fn set_policy(&self, policy: Arc<dyn RoomPolicy>) {
        if self.policy.set(policy).is_err() {
            tracing::warn!("the rooms' policy was set already; the new one is ignored");
        }
    }

    fn check_join(&self, tx: &Tx, room_id: i64) -> RoomResult<()> {
        match self.policy.get() {
            Some(policy) => policy.check_join(tx, room_id),
            None => Ok(()),
        }
    }

    /// Adds the controls of running phone calls (key presses, hangup, mute).
    pub fn with_phone_controls(mut self, phones: Arc<dyn PhoneControls>) -> Rooms {
        self.phones = Some(phones);
        self
    }

    /// Adds the dialer of dial-outs.
    pub fn with_dialer(mut self, dialer: Arc<dyn Dialer>) -> Rooms {
        self.dialer = Some(dialer);
        self
    }

    /// Adds the observer told about sessions leaving calls.
    pub fn with_call_observer(self, observer: Arc<dyn CallObserver>) -> Rooms {
        self.set_call_observer(observer);
        self
    }

    /// Sets the observer told about sessions leaving calls, for this instance and every clone;
    /// only the first observer set counts.
    pub fn set_call_observer(&self, observer: Arc<dyn CallObserver>) {
        if self.observer.set(observer).is_err() {
            tracing::warn!("the rooms' call observer was set already; the new one is ignored");
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Publishes an event of the room that no room operation makes (a call link's warning).
    pub fn announce(&self, room_id: i64, event: RoomEvent) {
        self.events.publish(room_id, None, event);
    }

    /// The store, for tasks that outlive a borrow of the rooms.
    pub fn shared_store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The call code's view of the same rooms.
    pub fn for_calls(&self) -> CallRooms {
        CallRooms(self.clone())
    }

    /// Runs `f` in a transaction and publishes the events it produced once committed.
    fn transact<T>(&self, f: impl FnOnce(&Tx, &mut Outbox) -> RoomResult<T>) -> RoomResult<T> {
        let mut outbox = Outbox::new();
        let result = self.store.write(|tx| {
            let result = f(tx, &mut outbox)?;
            if let Some(policy) = self.policy.get() {
                policy.record(tx, &outbox)?;
            }
            Ok::<_, RoomError>(result)
        })?;
        if let Some(policy) = self.policy.get() {
            policy.committed(&outbox);
        }
        if let Some(observer) = self.observer.get() {
            // The events say exactly which sessions left a call: flags back to 0, or gone.
            let mut left: Vec<(i64, Vec<String>)> = Vec::new();
            for (room_id, _, event) in &outbox {
                let session = match event {
                    RoomEvent::ParticipantFlags {
                        session_id,
                        in_call: in_call::DISCONNECTED,
                        ..
                    }
                    | RoomEvent::ParticipantLeft { session_id, .. } => session_id,
                    _ => continue,
                };
                match left.iter_mut().find(|(r, _)| r == room_id) {
                    Some((_, sessions)) => sessions.push(session.clone()),
                    None => left.push((*room_id, vec![session.clone()])),
                }
            }
            for (room_id, sessions) in left {
                observer.left_call(room_id, &sessions);
            }
        }
        for (room_id, target, event) in outbox {
            self.events.publish(room_id, target, event);
        }
        Ok(result)
    }

    fn membership(tx: &Tx, user: &AuthUser, token: &str) -> RoomResult<Membership> {
        let room = tx.room_by_token(token)?.ok_or_else(room_not_found)?;
        let attendee = tx
            .attendee_by_actor(room.id, actor_type_of(user), &user.id)?
            .ok_or_else(room_not_found)?;
        Ok(Membership { room, attendee })
    }

    /// The caller's session in this room: the one named by the cookie, else their only one.
    fn session(tx: &Tx, m: &Membership, cookie: Option<&str>) -> RoomResult<Option<SessionRow>> {
        let sessions = tx.sessions_of_attendee(m.attendee.id)?;
        Ok(match cookie {
            Some(id) => sessions.into_iter().find(|s| s.id == id),
            None if sessions.len() == 1 => sessions.into_iter().next(),
            None => None,
        })
    }

    fn call_active(tx: &Tx, room_id: i64) -> RoomResult<bool> {
        Ok(tx
            .sessions_of_room(room_id)?
            .iter()
            .any(|s| s.in_call != in_call::DISCONNECTED))
    }

    /// Opens or closes the room's call record when the first session joins or the last one leaves.
    fn settle_call(
        tx: &Tx,
        out: &mut Outbox,
        room_id: i64,
        was_active: bool,
        started_by: &AttendeeRow,
        silent: bool,
        ended_for_all: bool,
    ) -> RoomResult<()> {
        let now_active = Self::call_active(tx, room_id)?;
        let now = unix_now();
        if !was_active && now_active {
            tx.insert_room_call_record(room_id, now)?;
            tracing::info!(room_id, actor = %started_by.actor_id, "call started");
            out.push((
                room_id,
                None,
                RoomEvent::CallStarted {
                    silent,
                    actor_type: started_by.actor_type.clone(),
                    actor_id: started_by.actor_id.clone(),
                },
            ));
        } else if was_active && !now_active {
            if let Some(record) = tx.open_room_call_record(room_id)? {
                tx.end_call_record(
                    record,
                    now,
                    "cleared",
                    if ended_for_all {
                        Cause::Ended
                    } else {
                        Cause::Hangup
                    }
                    .as_str(),
                )?;
            }
            tracing::info!(room_id, all = ended_for_all, "call ended");
            out.push((room_id, None, RoomEvent::CallEnded { all: ended_for_all }));
        }
        Ok(())
    }

    fn flags_event(attendee: &AttendeeRow, session_id: &str, flags: i64) -> RoomEvent {
        RoomEvent::ParticipantFlags {
            attendee_id: attendee.id,
            actor_type: attendee.actor_type.clone(),
            actor_id: attendee.actor_id.clone(),
            session_id: session_id.to_string(),
            in_call: flags,
        }
    }

    fn view(tx: &Tx, m: &Membership, cookie: Option<&str>) -> RoomResult<RoomView> {
        let sessions = tx.sessions_of_room(m.room.id)?;
        let call_flag = sessions.iter().fold(0, |acc, s| acc | s.in_call);
        let own = Self::session(tx, m, cookie)?;
        let perms = m.permissions();
        let (dialin_number, dialin_pin) = Self::dialin_fields(tx, m)?;
        Ok(RoomView {
            id: m.room.id,
            token: m.room.token.clone(),
            room_type: m.room.room_type,
            name: m.room.name.clone(),
            display_name: m.room.name.clone(),
            participant_type: m.attendee.participant_type,
            attendee_id: m.attendee.id,
            actor_type: m.attendee.actor_type.clone(),
            actor_id: m.attendee.actor_id.clone(),
            permissions: perms,
            attendee_permissions: m.attendee.permissions,
            default_permissions: m.room.default_permissions,
            read_only: i64::from(m.room.read_only),
            lobby_state: m.room.lobby_state,
            recording_consent: m.room.recording_consent,
            has_call: call_flag != 0,
            call_flag,
            can_start_call: perms & permissions::CALL_START != 0,
            participant_flags: own.as_ref().map(|s| s.in_call).unwrap_or(0),
            session_id: own.map(|s| s.id).unwrap_or_else(|| "0".to_string()),
            dialin_number,
            dialin_pin,
        })
    }

    // Rooms.

    /// A fresh room token no room has.
    fn new_room_token(tx: &Tx) -> RoomResult<String> {
        loop {
            let candidate: String = {
                let mut rng = rand::rng();
                (0..ROOM_TOKEN_LEN)
                    .map(|_| {
                        let i = rng.random_range(0..36u8);
                        char::from(if i < 10 { b'0' + i } else { b'a' + i - 10 })
                    })
                    .collect()
            };
            if tx.room_by_token(&candidate)?.is_none() {
                return Ok(candidate);
            }
        }
    }

    pub fn create_room(&self, user: &AuthUser, kind: i64, name: &str) -> RoomResult<RoomView> {
        if user.is_guest() {
            return Err(RoomError::forbidden(
                "guest",
                "a call link's guest takes part in that link's room only",
            ));
        }
        if kind != room_type::GROUP && kind != room_type::PUBLIC {
            return Err(RoomError::bad_request(
                "type",
                format!("roomType must be 2 (group) or 3 (public), not {kind}"),
            ));
        }
        // Counted before trimming, so the documented maxLength is the whole rule.
        if name.chars().count() > MAX_ROOM_NAME || name.trim().is_empty() {
            return Err(RoomError::bad_request(
                "name",
                format!("roomName must have 1 to {MAX_ROOM_NAME} characters, not all white space"),
            ));
        }
        let name = name.trim();
        self.transact(|tx, _| {
            let token = Self::new_room_token(tx)?;
            let room_id = tx.insert_room(&token, name, kind, unix_now())?;
            tx.insert_attendee(
                room_id,
                actor_type::USERS,
                &user.id,
                &user.display_name,
                participant_type::OWNER,
                None,
            )?;
            tracing::info!(%token, owner = %user.id, "room created");
            let m = Self::membership(tx, user, &token)?;
            Self::view(tx, &m, None)
        })
    }

    pub fn room(&self, user: &AuthUser, token: &str, cookie: Option<&str>) -> RoomResult<RoomView> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            Self::view(tx, &m, cookie)
        })
    }

    pub fn rooms(&self, user: &AuthUser) -> RoomResult<Vec<RoomView>> {
        self.transact(|tx, _| {
            tx.rooms_of_user(actor_type_of(user), &user.id)?
                .into_iter()
                .map(|room| {
                    let m = Self::membership(tx, user, &room.token)?;
                    Self::view(tx, &m, None)
                })
                .collect()
        })
    }

    /// A change of room settings, which only moderators may make.
    fn moderator_change(
        &self,
        user: &AuthUser,
        token: &str,
        change: impl FnOnce(&Tx, &RoomRow) -> Result<(), StoreError>,
    ) -> RoomResult<()> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_moderator()?;
            Ok(change(tx, &m.room)?)
        })
    }

    pub fn set_read_only(&self, user: &AuthUser, token: &str, state: i64) -> RoomResult<()> {
        let read_only = match state {
            0 => false,
            1 => true,
            _ => return Err(RoomError::bad_request("state", "state must be 0 or 1")),
        };
        self.moderator_change(user, token, |tx, room| {
            tx.set_room_read_only(room.id, read_only)
        })
    }

    pub fn set_lobby(&self, user: &AuthUser, token: &str, state: i64) -> RoomResult<()> {
        if state != lobby::ALL && state != lobby::MODERATORS_ONLY {
            return Err(RoomError::bad_request("state", "state must be 0 or 1"));
        }
        self.moderator_change(user, token, |tx, room| tx.set_room_lobby(room.id, state))
    }

    pub fn set_recording_consent(
        &self,
        user: &AuthUser,
        token: &str,
        value: i64,
    ) -> RoomResult<()> {
        if value != 0 && value != 1 {
            return Err(RoomError::bad_request(
                "recordingConsent",
                "recordingConsent must be 0 or 1",
            ));
        }
        self.moderator_change(user, token, |tx, room| {
            tx.set_room_recording_consent(room.id, value)
        })
    }

    pub fn set_default_permissions(
        &self,
        user: &AuthUser,
        token: &str,
        value: i64,
    ) -> RoomResult<()> {
        check_permission_bits(value)?;
        self.moderator_change(user, token, |tx, room| {
            tx.set_room_default_permissions(room.id, value)
        })
    }

    /// `method` is `set`, `add` or `remove`, as in Talk.
    pub fn set_attendee_permissions(
        &self,
        user: &AuthUser,
        token: &str,
        attendee_id: i64,
        method: &str,
        value: i64,
    ) -> RoomResult<()> {
        check_permission_bits(value)?;
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_moderator()?;
            let target = tx
                .attendee(m.room.id, attendee_id)?
                .ok_or_else(|| RoomError::not_found("attendee", "attendee not found"))?;
            let current = effective_permissions(&m.room, &target);
            let updated = match method {
                "set" => value,
                "add" => current | value,
                "remove" => current & !value,
                other => {
                    return Err(RoomError::bad_request(
                        "method",
                        format!("method must be set, add or remove, not `{other}`"),
                    ))
                }
            };
            // As in Talk: setting 0 clears the custom flag, so the defaults apply again.
            let stored = if method == "set" && value == permissions::DEFAULT {
                permissions::DEFAULT
            } else {
                updated | permissions::CUSTOM
            };
            tx.set_attendee_permissions(target.id, stored)?;
            Ok(())
        })
    }

    // Participants.

    pub fn add_participant(
        &self,
        user: &AuthUser,
        token: &str,
        new: NewParticipant,
    ) -> RoomResult<ParticipantView> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_moderator()?;
            let attendee_id = match new {
                NewParticipant::User(id) => {
                    let target = tx.user(&id)?.ok_or_else(|| {
                        RoomError::not_found("user", format!("no user `{id}` exists"))
                    })?;
                    match tx.attendee_by_actor(m.room.id, actor_type::USERS, &target.id)? {
                        Some(existing) => existing.id,
                        None => tx.insert_attendee(
                            m.room.id,
                            actor_type::USERS,
                            &target.id,
                            &target.display_name,
                            participant_type::USER,
                            None,
                        )?,
                    }
                }
                NewParticipant::Phone(number) => {
                    let actor_id = format!("phone-{:016x}", rand::rng().random::<u64>());
                    tx.insert_attendee(
                        m.room.id,
                        actor_type::PHONES,
                        &actor_id,
                        number.as_str(),
                        participant_type::USER,
                        Some(number.as_str()),
                    )?
                }
            };
            let attendee = tx
                .attendee(m.room.id, attendee_id)?
                .ok_or_else(|| RoomError::new(ErrorKind::Internal, "internal", "attendee vanished"))?;
            tracing::info!(%token, attendee_id, actor_type = %attendee.actor_type, "attendee added");
            Self::participant_view(tx, &m.room, attendee)
        })
    }

    fn participant_view(tx: &Tx, room: &RoomRow, a: AttendeeRow) -> RoomResult<ParticipantView> {
        let sessions = tx.sessions_of_attendee(a.id)?;
        let is_phone = a.actor_type == actor_type::PHONES;
        Ok(ParticipantView {
            attendee_id: a.id,
            permissions: effective_permissions(room, &a),
            attendee_permissions: a.permissions,
            in_call: sessions.iter().fold(0, |acc, s| acc | s.in_call),
            last_ping: sessions.iter().map(|s| s.last_ping).max().unwrap_or(0),
            session_ids: sessions.into_iter().map(|s| s.id).collect(),
            phone_number: a.phone_number,
            call_id: if is_phone {
                Some(a.call_id.unwrap_or_default())
            } else {
                None
            },
            call_status: a.call_status,
            actor_type: a.actor_type,
            actor_id: a.actor_id,
            display_name: a.display_name,
            participant_type: a.participant_type,
        })
    }

    pub fn participants(&self, user: &AuthUser, token: &str) -> RoomResult<Vec<ParticipantView>> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            tx.attendees(m.room.id)?
                .into_iter()
                .map(|a| Self::participant_view(tx, &m.room, a))
                .collect()
        })
    }

    pub fn remove_attendee(
        &self,
        user: &AuthUser,
        token: &str,
        attendee_id: i64,
    ) -> RoomResult<()> {
        self.transact(|tx, out| {
            let m = Self::membership(tx, user, token)?;
            m.check_moderator()?;
            let target = tx
                .attendee(m.room.id, attendee_id)?
                .ok_or_else(|| RoomError::not_found("attendee", "attendee not found"))?;
            if target.participant_type == participant_type::OWNER {
                return Err(RoomError::forbidden("owner", "the owner cannot be removed"));
            }
            let was_active = Self::call_active(tx, m.room.id)?;
            for session in tx.sessions_of_attendee(target.id)? {
                out.push((m.room.id, None, Self::left_event(&target, &session.id)));
            }
            tx.delete_attendee(target.id)?;
            if target.actor_type == actor_type::USERS {
                // In the room's event order, so the removed user's streams end before the next event.
                out.push((
                    m.room.id,
                    Some(target.actor_id.clone()),
                    RoomEvent::AccessRevoked {
                        reason: "removed".into(),
                    },
                ));
            }
            Self::settle_call(tx, out, m.room.id, was_active, &m.attendee, false, false)?;
            tracing::info!(%token, attendee_id, by = %user.id, "attendee removed");
            Ok(m.room.id)
        })
        .map(|room_id| {
            if let Some(observer) = self.observer.get() {
                observer.attendee_removed(room_id, attendee_id);
            }
        })
    }

    /// `promote` makes a user attendee a moderator; otherwise a moderator becomes a user again.
    pub fn set_moderator(
        &self,
        user: &AuthUser,
        token: &str,
        attendee_id: i64,
        promote: bool,
    ) -> RoomResult<()> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_moderator()?;
            let target = tx
                .attendee(m.room.id, attendee_id)?
                .ok_or_else(|| RoomError::not_found("attendee", "attendee not found"))?;
            let (from, to) = if promote {
                (participant_type::USER, participant_type::MODERATOR)
            } else {
                (participant_type::MODERATOR, participant_type::USER)
            };
            let eligible = target.actor_type == actor_type::USERS
                && (target.participant_type == from
                    || (promote && target.participant_type == participant_type::USER_SELF_JOINED));
            if !eligible {
                return Err(RoomError::bad_request(
                    "participant",
                    if promote {
                        "only user attendees who are not moderators can be promoted"
                    } else {
                        "only moderators (not the owner) can be demoted"
                    },
                ));
            }
            tx.set_participant_type(target.id, to)?;
            Ok(())
        })
    }

    // Sessions.

    /// Joins the room (`POST /room/{token}/participants/active`); a public room lets anyone join.
    pub fn join_room(&self, user: &AuthUser, token: &str) -> RoomResult<(RoomView, String)> {
        self.transact(|tx, out| {
            let room = tx.room_by_token(token)?.ok_or_else(room_not_found)?;
            let attendee = match tx.attendee_by_actor(room.id, actor_type_of(user), &user.id)? {
                Some(a) => a,
                // A guest enters its own link's room only.
                None if room.room_type == room_type::PUBLIC && !user.is_guest() => {
                    let id = tx.insert_attendee(
                        room.id,
                        actor_type::USERS,
                        &user.id,
                        &user.display_name,
                        participant_type::USER_SELF_JOINED,
                        None,
                    )?;
                    tx.attendee(room.id, id)?.ok_or_else(room_not_found)?
                }
                None => return Err(room_not_found()),
            };
            self.check_join(tx, room.id)?;
            let session_id = Alphanumeric.sample_string(&mut rand::rng(), SESSION_ID_LEN);
            tx.insert_session(&session_id, attendee.id, unix_now())?;
            out.push((
                room.id,
                None,
                RoomEvent::ParticipantJoined {
                    attendee_id: attendee.id,
                    actor_type: attendee.actor_type.clone(),
                    actor_id: attendee.actor_id.clone(),
                    display_name: attendee.display_name.clone(),
                    session_id: session_id.clone(),
                },
            ));
            tracing::info!(%token, user = %user.id, "joined room");
            let m = Membership { room, attendee };
            let view = Self::view(tx, &m, Some(&session_id))?;
            Ok((view, session_id))
        })
    }

    fn left_event(attendee: &AttendeeRow, session_id: &str) -> RoomEvent {
        RoomEvent::ParticipantLeft {
            attendee_id: attendee.id,
            actor_type: attendee.actor_type.clone(),
            actor_id: attendee.actor_id.clone(),
            session_id: session_id.to_string(),
        }
    }

    /// Leaves the room, and with it the call.
    pub fn leave_room(&self, user: &AuthUser, token: &str, cookie: Option<&str>) -> RoomResult<()> {
        self.transact(|tx, out| {
            let m = Self::membership(tx, user, token)?;
            let session = Self::session(tx, &m, cookie)?.ok_or_else(no_session)?;
            let was_active = Self::call_active(tx, m.room.id)?;
            if session.in_call != in_call::DISCONNECTED {
                out.push((
                    m.room.id,
                    None,
                    Self::flags_event(&m.attendee, &session.id, in_call::DISCONNECTED),
                ));
            }
            tx.delete_session(&session.id)?;
            out.push((m.room.id, None, Self::left_event(&m.attendee, &session.id)));
            Self::settle_call(tx, out, m.room.id, was_active, &m.attendee, false, false)?;
            tracing::info!(%token, user = %user.id, "left room");
            Ok(())
        })
    }

    // Calls.

    pub fn call_participants(
        &self,
        user: &AuthUser,
        token: &str,
    ) -> RoomResult<Vec<CallParticipantView>> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_writable()?;
            m.check_lobby()?;
            let attendees = tx.attendees(m.room.id)?;
            Ok(tx
                .sessions_of_room(m.room.id)?
                .into_iter()
                .filter(|s| s.in_call != in_call::DISCONNECTED)
                .filter_map(|s| {
                    let a = attendees.iter().find(|a| a.id == s.attendee_id)?;
                    Some(CallParticipantView {
                        attendee_id: a.id,
                        actor_type: a.actor_type.clone(),
                        actor_id: a.actor_id.clone(),
                        display_name: a.display_name.clone(),
                        last_ping: s.last_ping,
                        session_id: s.id,
                        in_call: s.in_call,
                    })
                })
                .collect())
        })
    }

    fn check_flags(flags: i64) -> RoomResult<()> {
        if !(0..=in_call::ALL).contains(&flags) {
            return Err(RoomError::bad_request(
                "flags",
                format!(
                    "flags must combine 1 in call, 2 audio, 4 video, 8 phone; {flags} does not"
                ),
            ));
        }
        Ok(())
    }

    pub fn join_call(
        &self,
        user: &AuthUser,
        token: &str,
        cookie: Option<&str>,
        flags: Option<i64>,
        silent: bool,
        recording_consent: bool,
    ) -> RoomResult<i64> {
        let flags = flags.unwrap_or(in_call::DEFAULT_JOIN);
        Self::check_flags(flags)?;
        let flags = flags | in_call::IN_CALL;
        self.transact(|tx, out| {
            let m = Self::membership(tx, user, token)?;
            m.check_writable()?;
            m.check_lobby()?;
            let session = Self::session(tx, &m, cookie)?.ok_or_else(no_session)?;
            if m.room.recording_consent == 1 && !recording_consent {
                return Err(RoomError::bad_request(
                    "consent",
                    "this conversation may be recorded: join with recordingConsent=true",
                ));
            }
            if session.in_call == in_call::DISCONNECTED {
                self.check_join(tx, m.room.id)?;
            }
            let was_active = Self::call_active(tx, m.room.id)?;
            tx.set_session_in_call(&session.id, flags, unix_now())?;
            out.push((
                m.room.id,
                None,
                Self::flags_event(&m.attendee, &session.id, flags),
            ));
            Self::settle_call(tx, out, m.room.id, was_active, &m.attendee, silent, false)?;
            tracing::info!(%token, user = %user.id, flags, "joined call");
            Ok(flags)
        })
    }

    pub fn update_call_flags(
        &self,
        user: &AuthUser,
        token: &str,
        cookie: Option<&str>,
        flags: i64,
    ) -> RoomResult<i64> {
        self.transact(|tx, out| {
            let m = Self::membership(tx, user, token)?;
            m.check_writable()?;
            m.check_lobby()?;
            let session = Self::session(tx, &m, cookie)?.ok_or_else(no_session)?;
            if session.in_call == in_call::DISCONNECTED {
                return Err(RoomError::bad_request("call", "you are not in the call"));
            }
            Self::check_flags(flags)?;
            if flags & in_call::IN_CALL == 0 {
                return Err(RoomError::bad_request(
                    "flags",
                    "flags must contain 1 (in call); leave with DELETE /call/{token}",
                ));
            }
            tx.set_session_in_call(&session.id, flags, unix_now())?;
            if flags != session.in_call {
                out.push((
                    m.room.id,
                    None,
                    Self::flags_event(&m.attendee, &session.id, flags),
                ));
            }
            Ok(flags)
        })
    }

    pub fn leave_call(
        &self,
        user: &AuthUser,
        token: &str,
        cookie: Option<&str>,
        all: bool,
    ) -> RoomResult<()> {
        self.transact(|tx, out| {
            let m = Self::membership(tx, user, token)?;
            m.check_writable()?;
            m.check_lobby()?;
            let session = Self::session(tx, &m, cookie)?.ok_or_else(no_session)?;
            let was_active = Self::call_active(tx, m.room.id)?;
            let end_for_all = all && m.is_moderator();
            let leaving: Vec<SessionRow> = if end_for_all {
                tx.sessions_of_room(m.room.id)?
            } else {
                vec![session]
            };
            let attendees = tx.attendees(m.room.id)?;
            for s in leaving
                .iter()
                .filter(|s| s.in_call != in_call::DISCONNECTED)
            {
                tx.set_session_in_call(&s.id, in_call::DISCONNECTED, unix_now())?;
                if let Some(a) = attendees.iter().find(|a| a.id == s.attendee_id) {
                    out.push((
                        m.room.id,
                        None,
                        Self::flags_event(a, &s.id, in_call::DISCONNECTED),
                    ));
                }
            }
            Self::settle_call(
                tx,
                out,
                m.room.id,
                was_active,
                &m.attendee,
                false,
                end_for_all,
            )?;
            tracing::info!(%token, user = %user.id, all = end_for_all, "left call");
            Ok(())
        })
    }

    /// Sends a call notification to a user attendee who is not in the call.
    pub fn ring(
        &self,
        user: &AuthUser,
        token: &str,
        cookie: Option<&str>,
        attendee_id: i64,
    ) -> RoomResult<()> {
        self.transact(|tx, out| {
            let m = Self::membership(tx, user, token)?;
            m.check_lobby()?;
            m.check_moderator()?;
            let target = tx.attendee(m.room.id, attendee_id)?.ok_or_else(|| {
                RoomError::not_found("attendee", "attendee not found in the conversation")
            })?;
            if target.actor_type != actor_type::USERS {
                return Err(RoomError::bad_request(
                    "attendee",
                    "only user attendees can be rung; use dialout for phone numbers",
                ));
            }
            if tx
                .sessions_of_attendee(target.id)?
                .iter()
                .any(|s| s.in_call != in_call::DISCONNECTED)
            {
                return Err(RoomError::bad_request(
                    "attendee",
                    "the attendee is already in the call",
                ));
            }
            Self::require_call_and_caller_in_it(tx, &m, cookie)?;
            out.push((
                m.room.id,
                Some(target.actor_id.clone()),
                RoomEvent::Ring {
                    attendee_id: target.id,
                    actor_id: target.actor_id.clone(),
                    caller_actor_type: m.attendee.actor_type.clone(),
                    caller_actor_id: m.attendee.actor_id.clone(),
                    caller_display_name: m.attendee.display_name.clone(),
                },
            ));
            tracing::info!(%token, target = %target.actor_id, by = %user.id, "ring sent");
            Ok(())
        })
    }

    /// Ring and dial-out need a call in progress, with the caller in it (400 otherwise).
    fn require_call_and_caller_in_it(
        tx: &Tx,
        m: &Membership,
        cookie: Option<&str>,
    ) -> RoomResult<()> {
        if !Self::call_active(tx, m.room.id)? {
            return Err(RoomError::bad_request(
                "room",
                "the conversation has no call in progress",
            ));
        }
        match Self::session(tx, m, cookie)? {
            Some(s) if s.in_call != in_call::DISCONNECTED => Ok(()),
            _ => Err(RoomError::bad_request("call", "you are not in the call")),
        }
    }

    /// Checks a dial-out request as Talk does, then hands it to the dialer. Returns the call id.
    pub fn dialout(
        &self,
        user: &AuthUser,
        token: &str,
        cookie: Option<&str>,
        attendee_id: i64,
        options: DialoutOptions,
    ) -> RoomResult<String> {
        // The dialer opens the call record before it returns; until then no other dial-out checks.
        let _serial = lock(&self.dialouts);
        let target = self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_lobby()?;
            if m.permissions() & permissions::CALL_START == 0 {
                return Err(RoomError::forbidden(
                    "permission",
                    "you do not have the permission to start a call",
                ));
            }
            Self::require_call_and_caller_in_it(tx, &m, cookie)?;
            let target = tx
                .attendee(m.room.id, attendee_id)?
                .filter(|a| a.actor_type == actor_type::PHONES)
                .ok_or_else(|| {
                    RoomError::not_found(
                        "attendee",
                        "no phone-number attendee with this id in the conversation",
                    )
                })?;
            if let Some(policy) = self.policy.get() {
                policy.check_dialout(tx, m.room.id)?;
            }
            Ok(DialoutTarget {
                room_id: m.room.id,
                room_token: m.room.token.clone(),
                attendee_id: target.id,
                actor_id: target.actor_id.clone(),
                number: target.phone_number.unwrap_or_default(),
                caller: options.caller,
                anonymous: options.anonymous,
            })
        })?;
        match &self.dialer {
            Some(dialer) => dialer.dial(target),
            None => Err(not_configured()),
        }
    }

    /// Whether `number` could be dialled out: 501 without trunks, 403 outside their allowlists.
    pub fn check_dialable(&self, number: &PhoneNumber) -> RoomResult<()> {
        match &self.dialer {
            Some(dialer) => dialer.check(number),
            None => Err(not_configured()),
        }
    }

    /// Sends key presses to a phone leg of the room (moderators only).
    pub fn phone_dtmf(
        &self,
        user: &AuthUser,
        token: &str,
        call_id: &str,
        digits: &str,
    ) -> RoomResult<()> {
        let room_id = self.moderated_room(user, token)?;
        let valid = !digits.is_empty()
            && digits.len() <= 32
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'));
        if !valid {
            return Err(RoomError::bad_request(
                "digits",
                "digits must be 1 to 32 of 0-9, *, #, A-D",
            ));
        }
        match &self.phones {
            Some(phones) => phones.send_dtmf(room_id, call_id, digits),
            None => Err(not_configured()),
        }
    }

    /// Ends a phone leg of the room (moderators only); its attendee stays.
    pub fn phone_hangup(&self, user: &AuthUser, token: &str, call_id: &str) -> RoomResult<()> {
        let room_id = self.moderated_room(user, token)?;
        match &self.phones {
            Some(phones) => phones.hangup_phone(room_id, call_id),
            None => Err(not_configured()),
        }
    }

    /// Transfers a phone leg of the room to `to` (moderators only): the number must be one a
    /// dial-out could call; the outcome comes as `transfer` and `callstatus` events.
    pub fn phone_transfer(
        &self,
        user: &AuthUser,
        token: &str,
        call_id: &str,
        to: &str,
    ) -> RoomResult<()> {
        let room_id = self.moderated_room(user, token)?;
        let number: PhoneNumber = to.parse().map_err(|_| {
            RoomError::bad_request("to", "to must be an E.164 number, e.g. +4930123456")
        })?;
        let Some(phones) = &self.phones else {
            return Err(not_configured());
        };
        phones.transfer_phone(room_id, call_id, &|| match &self.dialer {
            Some(dialer) => dialer.transfer_target(&number),
            None => Err(not_configured()),
        })
    }

    /// Mutes a phone leg's directions (moderators only): `audio` bits 1 speaking, 2 listening.
    pub fn phone_mute(
        &self,
        user: &AuthUser,
        token: &str,
        call_id: &str,
        audio: i64,
    ) -> RoomResult<()> {
        let room_id = self.moderated_room(user, token)?;
        let mute = PhoneMute::from_bits(audio).ok_or_else(|| {
            RoomError::bad_request(
                "audio",
                "audio must be 0 (unmuted), 1 (muted speaking), 2 (muted listening) or 3 (both)",
            )
        })?;
        match &self.phones {
            Some(phones) => phones.mute_phone(room_id, call_id, mute),
            None => Err(not_configured()),
        }
    }

    /// The room id, if the user moderates the room.
    fn moderated_room(&self, user: &AuthUser, token: &str) -> RoomResult<i64> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_moderator()?;
            Ok(m.room.id)
        })
    }

    pub fn call_records(&self, user: &AuthUser, token: &str) -> RoomResult<Vec<CallRecord>> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_moderator()?;
            Ok(tx.call_records(m.room.id)?)
        })
    }

    /// The caller's session for media (`POST /api/v1/rooms/{token}/media`); it must be in the call.
    pub fn media_session(
        &self,
        user: &AuthUser,
        token: &str,
        cookie: Option<&str>,
    ) -> RoomResult<MediaParticipant> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            let session = Self::session(tx, &m, cookie)?.ok_or_else(no_session)?;
            if session.in_call == in_call::DISCONNECTED {
                return Err(RoomError::forbidden(
                    "call",
                    "your session is not in the call: join it with POST /call/{token} first",
                ));
            }
            Ok(MediaParticipant {
                room_id: m.room.id,
                session_id: session.id,
                attendee_id: m.attendee.id,
                actor_type: m.attendee.actor_type,
                actor_id: m.attendee.actor_id,
            })
        })
    }

    /// The room id and all of the caller's sessions in it (whose media the caller may end).
    pub fn own_sessions(&self, user: &AuthUser, token: &str) -> RoomResult<(i64, Vec<String>)> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            let sessions = tx.sessions_of_attendee(m.attendee.id)?;
            Ok((m.room.id, sessions.into_iter().map(|s| s.id).collect()))
        })
    }

    // Rooms of call links (made and closed by the link service, not by an API user).

    /// Makes a group room without an owner for a call link; returns its id and token.
    pub fn create_link_room(&self, tx: &Tx, name: &str) -> RoomResult<(i64, String)> {
        let name: String = name.trim().chars().take(MAX_ROOM_NAME).collect();
        let name = if name.is_empty() {
            "Call".to_string()
        } else {
            name
        };
        let token = Self::new_room_token(tx)?;
        let room_id = tx.insert_room(&token, &name, room_type::GROUP, unix_now())?;
        Ok((room_id, token))
    }

    /// Adds a call link's guest to its room; moderators may dial out and end the call.
    pub fn add_guest(
        &self,
        tx: &Tx,
        room_id: i64,
        guest: &AuthUser,
        moderator: bool,
    ) -> RoomResult<i64> {
        let kind = if moderator {
            participant_type::MODERATOR
        } else {
            participant_type::USER
        };
        Ok(tx.insert_attendee(
            room_id,
            actor_type::GUESTS,
            &guest.id,
            &guest.display_name,
            kind,
            None,
        )?)
    }

    /// Ends a room's call for everyone and empties the room: every session leaves (phone legs
    /// end with their sessions, through the call observer). `then` runs in the same
    /// transaction, after the sessions left.
    pub fn close_room<T>(
        &self,
        room_id: i64,
        then: impl FnOnce(&Tx) -> RoomResult<T>,
    ) -> RoomResult<T> {
        self.transact(|tx, out| {
            let was_active = Self::call_active(tx, room_id)?;
            let attendees = tx.attendees(room_id)?;
            let mut first = None;
            for s in tx.sessions_of_room(room_id)? {
                let Some(a) = attendees.iter().find(|a| a.id == s.attendee_id) else {
                    continue;
                };
                if s.in_call != in_call::DISCONNECTED {
                    out.push((
                        room_id,
                        None,
                        Self::flags_event(a, &s.id, in_call::DISCONNECTED),
                    ));
                }
                tx.delete_session(&s.id)?;
                out.push((room_id, None, Self::left_event(a, &s.id)));
                first.get_or_insert(a);
            }
            if let Some(a) = first {
                Self::settle_call(tx, out, room_id, was_active, a, false, true)?;
            }
            then(tx)
        })
    }

    // Phone legs (reported by call orchestration, not by an API user).

    /// The virtual session that stands for a phone leg in the room once it answered.
    pub fn phone_session_id(call_id: &str) -> String {
        format!("phone-{call_id}")
    }
}

/// What the call code does with the rooms: the reports of phone legs (started, status, key
/// presses) and the lookups of dial-in. The API's [`Rooms`] has none of these; both share one
/// store, event bus and call observer.
#[derive(Clone)]
pub struct CallRooms(Rooms);

impl CallRooms {
    pub fn store(&self) -> &Store {
        self.0.store()
    }

    /// Opens a phone leg's call record, sets the attendee's call id and announces `accepted`.
    /// Returns the record id.
    pub fn phone_leg_started(&self, record: &PhoneCallRecord) -> RoomResult<i64> {
        self.0.transact(|tx, out| {
            let id = tx.insert_phone_call_record(record, unix_now())?;
            tx.set_attendee_call(
                record.attendee_id,
                Some(&record.call_id),
                Some(CallStatus::Accepted.as_str()),
            )?;
            out.push((
                record.room_id,
                None,
                RoomEvent::CallStatus {
                    callid: record.call_id.clone(),
                    status: CallStatus::Accepted.as_str().into(),
                    cause: None,
                    code: None,
                    message: None,
                    attendee_id: record.attendee_id,
                },
            ));
            Ok(id)
        })
    }

    /// Records and announces a phone leg's new status. `connected` puts the phone in the call
    /// (a virtual session with IN_CALL|WITH_PHONE); a final status takes it out again.
    pub fn phone_leg_status(
        &self,
        record: &PhoneCallRecord,
        record_id: i64,
        change: &PhoneStatus,
    ) -> RoomResult<()> {
        self.0.transact(|tx, out| {
            let now = unix_now();
            let room_id = record.room_id;
            let status = change.status.as_str();
            if change.status.is_final() {
                tx.end_phone_call_record(
                    record_id,
                    now,
                    status,
                    change.cause.map_or("", Cause::as_str),
                    change.code,
                )?;
            } else {
                let answered = (change.status == CallStatus::Connected).then_some(now);
                tx.update_phone_call_record(record_id, status, answered)?;
            }
            let attendee = tx.attendee(room_id, record.attendee_id)?;
            if let Some(a) = &attendee {
                // A newer leg of the same attendee owns its state.
                if a.call_id.as_deref() == Some(record.call_id.as_str()) {
                    tx.set_attendee_call(a.id, Some(&record.call_id), Some(status))?;
                }
            }
            out.push((
                room_id,
                None,
                RoomEvent::CallStatus {
                    callid: record.call_id.clone(),
                    status: status.into(),
                    cause: change.cause.map(|c| c.as_str().to_string()),
                    code: change.code,
                    message: change.message.clone(),
                    attendee_id: record.attendee_id,
                },
            ));
            let Some(a) = attendee else {
                return Ok(());
            };
            let session_id = Rooms::phone_session_id(&record.call_id);
            let existing = tx
                .sessions_of_attendee(a.id)?
                .into_iter()
                .find(|s| s.id == session_id);
            let was_active = Rooms::call_active(tx, room_id)?;
            if change.status == CallStatus::Connected && existing.is_none() {
                let flags = in_call::IN_CALL | in_call::WITH_PHONE;
                tx.insert_session(&session_id, a.id, now)?;
                tx.set_session_in_call(&session_id, flags, now)?;
                out.push((
                    room_id,
                    None,
                    RoomEvent::ParticipantJoined {
                        attendee_id: a.id,
                        actor_type: a.actor_type.clone(),
                        actor_id: a.actor_id.clone(),
                        display_name: a.display_name.clone(),
                        session_id: session_id.clone(),
                    },
                ));
                out.push((room_id, None, Rooms::flags_event(&a, &session_id, flags)));
            } else if change.status.is_final() {
                if let Some(s) = existing {
                    tx.delete_session(&s.id)?;
                    if s.in_call != in_call::DISCONNECTED {
                        out.push((
                            room_id,
                            None,
                            Rooms::flags_event(&a, &s.id, in_call::DISCONNECTED),
                        ));
                    }
                    out.push((room_id, None, Rooms::left_event(&a, &s.id)));
                }
            }
            Rooms::settle_call(tx, out, room_id, was_active, &a, false, false)?;
            Ok(())
        })
    }

    /// Announces how a moderator's transfer of a phone leg goes (the room's `transfer` event).
    pub fn phone_transfer_status(
        &self,
        record: &PhoneCallRecord,
        status: &str,
        code: Option<u16>,
        message: Option<String>,
    ) {
        self.0.announce(
            record.room_id,
            RoomEvent::Transfer {
                callid: record.call_id.clone(),
                status: status.to_string(),
                code,
                message,
                attendee_id: record.attendee_id,
            },
        );
    }

    /// Publishes a key press of a phone leg (SIP INFO) as the room's `dtmf` event.
    pub fn phone_key(&self, who: &MediaParticipant, digit: char) -> RoomResult<()> {
        self.0.transact(|_, out| {
            out.push((who.room_id, None, who.dtmf_event(digit)));
            Ok(())
        })
    }

    /// The room's own dial-out checks (its plan and spend limit), for a call the room did not
    /// ask for: the one a transferring phone makes us place.
    pub fn check_dialout(&self, room_id: i64) -> RoomResult<()> {
        self.0.transact(|tx, _| match self.0.policy.get() {
            Some(policy) => policy.check_dialout(tx, room_id),
            None => Ok(()),
        })
    }

    /// Whether the attendee is still in the room.
    pub fn attendee_exists(&self, room_id: i64, attendee_id: i64) -> RoomResult<bool> {
        self.0
            .transact(|tx, _| Ok(tx.attendee(room_id, attendee_id)?.is_some()))
    }

    /// Whether a session other than phone legs is in the room's call (phones alone do not
    /// keep a call going).
    pub fn has_non_phone_in_call(&self, room_id: i64) -> RoomResult<bool> {
        self.0.transact(|tx, _| {
            let phones: Vec<i64> = tx
                .attendees(room_id)?
                .into_iter()
                .filter(|a| a.actor_type == actor_type::PHONES)
                .map(|a| a.id)
                .collect();
            Ok(tx
                .sessions_of_room(room_id)?
                .iter()
                .any(|s| s.in_call != in_call::DISCONNECTED && !phones.contains(&s.attendee_id)))
        })
    }
}

impl Rooms {
    /// The room id for an attendee's event stream.
    pub fn event_room(&self, user: &AuthUser, token: &str) -> RoomResult<i64> {
        self.transact(|tx, _| Ok(Self::membership(tx, user, token)?.room.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what the observer is told.
    #[derive(Default)]
    struct Seen(Mutex<Vec<(i64, Vec<String>)>>);

    impl CallObserver for Seen {
        fn left_call(&self, room_id: i64, sessions: &[String]) {
            crate::sync::lock(&self.0).push((room_id, sessions.to_vec()));
        }
    }

    impl Seen {
        /// The sessions reported since the last call, each once.
        fn take(&self, room_id: i64) -> Vec<String> {
            let mut all: Vec<String> = std::mem::take(&mut *self.0.lock().expect("lock"))
                .into_iter()
                .inspect(|(room, _)| assert_eq!(*room, room_id))
                .flat_map(|(_, s)| s)
                .collect();
            all.dedup();
            all
        }
    }

    fn user(id: &str) -> AuthUser {
        AuthUser {
            id: id.into(),
            display_name: id.into(),
        }
    }

    #[test]
    fn call_observer_hears_of_every_way_out_of_a_call_and_nothing_else() {
        let store = Arc::new(Store::open_in_memory().expect("store"));
        store
            .write(|tx| {
                for id in ["alice", "bob", "carol"] {
                    tx.upsert_user(id, id, &format!("hash-{id}"), 0)?;
                }
                Ok::<_, StoreError>(())
            })
            .expect("users");
        let seen = Arc::new(Seen::default());
        let rooms =
            Rooms::new(store, Arc::new(EventBus::default())).with_call_observer(seen.clone());
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let room = rooms.create_room(&alice, 2, "Room").expect("room");
        let token = room.token.as_str();
        let bob_attendee = rooms
            .add_participant(&alice, token, NewParticipant::User("bob".into()))
            .expect("bob")
            .attendee_id;
        rooms
            .add_participant(&alice, token, NewParticipant::User("carol".into()))
            .expect("carol");
        let join = |u: &AuthUser| {
            let (_, session) = rooms.join_room(u, token).expect("join room");
            rooms
                .join_call(u, token, Some(&session), Some(3), false, false)
                .expect("join call");
            session
        };
        let (a, b, c) = (join(&alice), join(&bob), join(&carol));
        assert!(seen.take(room.id).is_empty(), "joining is not leaving");

        rooms
            .update_call_flags(&alice, token, Some(&a), 7)
            .expect("flags");
        assert!(
            seen.take(room.id).is_empty(),
            "changing flags is not leaving"
        );

        rooms
            .leave_call(&bob, token, Some(&b), false)
            .expect("leave call");
        assert_eq!(seen.take(room.id), vec![b.clone()]);

        rooms
            .leave_room(&carol, token, Some(&c))
            .expect("leave room");
        assert_eq!(seen.take(room.id), vec![c]);

        rooms
            .join_call(&bob, token, Some(&b), Some(3), false, false)
            .expect("rejoin");
        rooms
            .remove_attendee(&alice, token, bob_attendee)
            .expect("remove");
        assert_eq!(seen.take(room.id), vec![b]);

        rooms
            .leave_call(&alice, token, Some(&a), true)
            .expect("end for all");
        assert_eq!(seen.take(room.id), vec![a]);
    }
}
