//! Dial-in settings of rooms: a number per room, a PIN per room (made on first need), and whether
//! a caller waits for the call to start or is refused when the room has none.

use rand::Rng;
use serde::Serialize;

use super::{
    unix_now, CallRooms, ErrorKind, MediaParticipant, Membership, RoomError, RoomResult, Rooms,
};
use crate::auth::AuthUser;
use crate::room::{actor_type, participant_type, CallStatus, PhoneNumber};
use crate::store::dialin::DialinRow;
use crate::store::{PhoneCallRecord, Tx};

/// Display name of a caller who withholds the number.
pub const ANONYMOUS_CALLER: &str = "Anonymous";

/// A caller about to join a room: its attendee, call record and who it is in the media.
#[derive(Debug, Clone)]
pub struct DialinCaller {
    pub record: PhoneCallRecord,
    pub record_id: i64,
    pub who: MediaParticipant,
}

/// Digits of a room PIN: 10^8 PINs against a few tries per call and rate-limited sources.
pub const PIN_DIGITS: usize = 8;

/// A room's dial-in settings as its moderators see them (`PUT /api/v1/rooms/{token}/dialin`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DialinSettings {
    pub number: Option<String>,
    pub pin: String,
    pub wait_for_call: bool,
}

/// The room an inbound call leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialinRoom {
    pub room_id: i64,
    pub token: String,
    /// A caller waits for the call to start; otherwise a room without a call refuses.
    pub wait_for_call: bool,
}

impl From<DialinRow> for DialinRoom {
    fn from(row: DialinRow) -> DialinRoom {
        DialinRoom {
            room_id: row.room_id,
            token: row.token,
            wait_for_call: row.wait_for_call,
        }
    }
}

fn conflict(message: String) -> RoomError {
    RoomError::new(ErrorKind::Conflict, "number", message)
}

impl Rooms {
    /// Numbers the configuration routes itself (the PIN number, static routes): no room may take them.
    pub fn with_reserved_numbers(mut self, numbers: Vec<PhoneNumber>) -> Rooms {
        self.reserved_numbers = numbers;
        self
    }

    /// Sets or clears (`Some(None)`) the room's number and its waiting rule; moderators only.
    pub fn set_dialin(
        &self,
        user: &AuthUser,
        token: &str,
        number: Option<Option<String>>,
        wait_for_call: Option<bool>,
    ) -> RoomResult<DialinSettings> {
        self.transact(|tx, _| {
            let m = Self::membership(tx, user, token)?;
            m.check_moderator()?;
            if number.is_none() && wait_for_call.is_none() {
                return Err(RoomError::new(
                    ErrorKind::BadRequest,
                    "parameter",
                    "give `number` (an E.164 number, or null to clear it) or `waitForCall`",
                ));
            }
            if let Some(number) = number {
                let number = number
                    .map(|n| n.parse::<PhoneNumber>())
                    .transpose()
                    .map_err(|e| RoomError::new(ErrorKind::BadRequest, "number", e))?;
                if let Some(n) = &number {
                    if self.reserved_numbers.contains(n) {
                        return Err(conflict(format!(
                            "{n} is routed by the gateway's configuration"
                        )));
                    }
                    if tx
                        .room_by_dialin_number(n.as_str())?
                        .is_some_and(|other| other.room_id != m.room.id)
                    {
                        return Err(conflict(format!("{n} is the dial-in number of another room")));
                    }
                }
                tx.set_room_dialin_number(m.room.id, number.as_ref().map(PhoneNumber::as_str))?;
            }
            if let Some(wait) = wait_for_call {
                tx.set_room_dialin_wait(m.room.id, wait)?;
            }
            let pin = Self::ensure_pin(tx, m.room.id)?;
            let row = tx
                .room_dialin(m.room.id)?
                .ok_or_else(|| RoomError::new(ErrorKind::Internal, "internal", "room vanished"))?;
            tracing::info!(%token, number = ?row.number, wait = row.wait_for_call, by = %user.id, "dial-in settings changed");
            Ok(DialinSettings {
                number: row.number,
                pin,
                wait_for_call: row.wait_for_call,
            })
        })
    }

    /// `dialinNumber` and `dialinPin` of `GET /room/{token}`: moderators only.
    pub(super) fn dialin_fields(
        tx: &Tx,
        m: &Membership,
    ) -> RoomResult<(Option<String>, Option<String>)> {
        if !m.is_moderator() {
            return Ok((None, None));
        }
        let pin = Self::ensure_pin(tx, m.room.id)?;
        let number = tx.room_dialin(m.room.id)?.and_then(|r| r.number);
        Ok((number, Some(pin)))
    }

    /// The room's PIN, made now if it has none yet.
    fn ensure_pin(tx: &Tx, room_id: i64) -> RoomResult<String> {
        if let Some(pin) = tx.room_dialin(room_id)?.and_then(|r| r.pin) {
            return Ok(pin);
        }
        loop {
            let pin = format!(
                "{:0width$}",
                rand::rng().random_range(0..10u64.pow(PIN_DIGITS as u32)),
                width = PIN_DIGITS
            );
            if tx.room_by_dialin_pin(&pin)?.is_none() {
                tx.set_room_dialin_pin(room_id, &pin)?;
                return Ok(pin);
            }
        }
    }
}

impl CallRooms {
    /// The room whose own dial-in number this is.
    pub fn dialin_by_number(&self, number: &PhoneNumber) -> RoomResult<Option<DialinRoom>> {
        self.0
            .transact(|tx, _| Ok(tx.room_by_dialin_number(number.as_str())?.map(Into::into)))
    }

    /// The room with this PIN.
    pub fn dialin_by_pin(&self, pin: &str) -> RoomResult<Option<DialinRoom>> {
        self.0
            .transact(|tx, _| Ok(tx.room_by_dialin_pin(pin)?.map(Into::into)))
    }

    /// A room named by the configuration's static routes.
    pub fn dialin_by_token(&self, token: &str) -> RoomResult<Option<DialinRoom>> {
        self.0
            .transact(|tx, _| Ok(tx.room_dialin_by_token(token)?.map(Into::into)))
    }

    /// Whether the room's call is in progress (some session is in it).
    pub fn call_in_progress(&self, room_id: i64) -> RoomResult<bool> {
        self.0.transact(|tx, _| Rooms::call_active(tx, room_id))
    }

    /// Makes an inbound caller a phone attendee of the room (the attendee of the same number
    /// when one is not in a call; a new one otherwise, named "Anonymous" when the number is
    /// withheld), opens its `dialin` call record and sets the attendee's call id. The caller is
    /// in the call once [`CallRooms::phone_leg_status`] reports it `connected`.
    pub fn dialin_caller(
        &self,
        room_id: i64,
        caller: Option<&PhoneNumber>,
        trunk: &str,
        call_id: &str,
    ) -> RoomResult<DialinCaller> {
        self.0.transact(|tx, _| {
            // A call link's room may refuse (closed link, spend limit).
            self.0.check_join(tx, room_id)?;
            let idle = |status: &Option<String>| {
                status.as_deref().is_none_or(|s| {
                    s == CallStatus::Cleared.as_str() || s == CallStatus::Rejected.as_str()
                })
            };
            let existing = match caller {
                Some(number) => tx.attendees(room_id)?.into_iter().find(|a| {
                    a.actor_type == actor_type::PHONES
                        && a.phone_number.as_deref() == Some(number.as_str())
                        && idle(&a.call_status)
                }),
                None => None,
            };
            let (attendee_id, actor_id) = match existing {
                Some(a) => (a.id, a.actor_id),
                None => {
                    let actor_id = format!("phone-{:016x}", rand::rng().random::<u64>());
                    let name = caller.map_or(ANONYMOUS_CALLER, PhoneNumber::as_str);
                    let id = tx.insert_attendee(
                        room_id,
                        actor_type::PHONES,
                        &actor_id,
                        name,
                        participant_type::USER,
                        caller.map(PhoneNumber::as_str),
                    )?;
                    (id, actor_id)
                }
            };
            let record = PhoneCallRecord {
                room_id,
                kind: "dialin",
                attendee_id,
                number: caller.map(|n| n.as_str().to_string()).unwrap_or_default(),
                trunk: trunk.to_string(),
                call_id: call_id.to_string(),
            };
            let record_id = tx.insert_phone_call_record(&record, unix_now())?;
            tx.set_attendee_call(
                attendee_id,
                Some(call_id),
                Some(CallStatus::Accepted.as_str()),
            )?;
            tracing::info!(
                room_id,
                attendee_id,
                call_id,
                "inbound caller is a phone attendee"
            );
            Ok(DialinCaller {
                record,
                record_id,
                who: MediaParticipant {
                    room_id,
                    session_id: Rooms::phone_session_id(call_id),
                    attendee_id,
                    actor_type: actor_type::PHONES.to_string(),
                    actor_id,
                },
            })
        })
    }
}
