//! Rooms and the state vocabulary every other module speaks: in-call flags, participant types,
//! permissions and phone call status, each defined once here with Nextcloud Talk's values.

mod service;

pub use service::*;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Participant in-call flags (Nextcloud Talk constants). A phone is announced with `IN_CALL | WITH_PHONE`.
pub mod in_call {
    pub const DISCONNECTED: i64 = 0;
    pub const IN_CALL: i64 = 1;
    pub const WITH_AUDIO: i64 = 2;
    pub const WITH_VIDEO: i64 = 4;
    pub const WITH_PHONE: i64 = 8;
    pub const ALL: i64 = IN_CALL | WITH_AUDIO | WITH_VIDEO | WITH_PHONE;
    /// What Talk assumes when a client joins a call without saying.
    pub const DEFAULT_JOIN: i64 = IN_CALL | WITH_AUDIO | WITH_VIDEO;
}

/// Participant types (Nextcloud Talk constants).
pub mod participant_type {
    pub const OWNER: i64 = 1;
    pub const MODERATOR: i64 = 2;
    pub const USER: i64 = 3;
    pub const USER_SELF_JOINED: i64 = 5;

    pub fn is_moderator(t: i64) -> bool {
        t == OWNER || t == MODERATOR
    }
}

/// Attendee permissions (Nextcloud Talk constants). Moderators always hold all of them.
pub mod permissions {
    /// 0 as a room default means "Talk's default for the attendee type".
    pub const DEFAULT: i64 = 0;
    pub const CUSTOM: i64 = 1;
    pub const CALL_START: i64 = 2;
    pub const CALL_JOIN: i64 = 4;
    pub const LOBBY_IGNORE: i64 = 8;
    pub const PUBLISH_AUDIO: i64 = 16;
    pub const PUBLISH_VIDEO: i64 = 32;
    pub const PUBLISH_SCREEN: i64 = 64;
    pub const CHAT: i64 = 128;
    pub const MAX_CUSTOM: i64 = 255;
    /// What an ordinary attendee may do when nobody set anything.
    pub const USER_DEFAULT: i64 =
        CALL_START | CALL_JOIN | PUBLISH_AUDIO | PUBLISH_VIDEO | PUBLISH_SCREEN | CHAT;
}

/// Room types this service hosts (Talk's 1 one-to-one and 4 changelog are not offered).
pub mod room_type {
    pub const GROUP: i64 = 2;
    pub const PUBLIC: i64 = 3;
}

/// Lobby states: everyone, or moderators only.
pub mod lobby {
    pub const ALL: i64 = 0;
    pub const MODERATORS_ONLY: i64 = 1;
}

/// Attendee actor types.
pub mod actor_type {
    pub const USERS: &str = "users";
    pub const PHONES: &str = "phones";
    /// A call link's guest (no account).
    pub const GUESTS: &str = "guests";
}

/// Status of a phone leg, as the Nextcloud signaling server reports dial-out progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    Accepted,
    Ringing,
    Connected,
    Rejected,
    Cleared,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Accepted => "accepted",
            CallStatus::Ringing => "ringing",
            CallStatus::Connected => "connected",
            CallStatus::Rejected => "rejected",
            CallStatus::Cleared => "cleared",
        }
    }

    /// The status a wire word names.
    pub fn from_word(word: &str) -> Option<CallStatus> {
        [
            CallStatus::Accepted,
            CallStatus::Ringing,
            CallStatus::Connected,
            CallStatus::Rejected,
            CallStatus::Cleared,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }

    pub fn is_final(self) -> bool {
        matches!(self, CallStatus::Rejected | CallStatus::Cleared)
    }
}

/// Why a phone call (or a room's call) ended: the `cause` of `rejected` and `cleared`, in
/// events, call records and `dialbridge_phone_calls_ended_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The far end answered busy (486, 600).
    Busy,
    /// The far end declined (603, 607, 608).
    Declined,
    /// The far end is not reachable now (480).
    Unavailable,
    /// The number does not exist (404, 410, 484, 485, 604).
    InvalidNumber,
    /// Nobody answered: the ringing timeout, or a 408 from the network.
    NoAnswer,
    /// Anything else that kept or took the call down (a failed INVITE, an unusable answer).
    Failed,
    /// The phone (or the last participant) hung up.
    Hangup,
    /// A moderator ended it.
    Ended,
    /// Its attendee was removed from the room.
    Removed,
    /// The phone sent no RTP for the media timeout.
    MediaTimeout,
    /// The trunk's maximum call duration.
    MaxDuration,
    /// The service stopped.
    Shutdown,
    /// A caller typed a wrong PIN too often.
    WrongPin,
    /// A caller's room had no call (and it could not wait, or waited in vain).
    NoCall,
    /// The process died while the call was up (closed out at the next start).
    Restart,
    /// The call link's organization reached its monthly spend limit.
    SpendLimit,
    /// The session timer ran out: the other side's refresh did not come (RFC 4028).
    SessionExpired,
    /// A moderator transferred the phone elsewhere (REFER) and the far end's new call was
    /// answered: our leg hung up.
    Transferred,
}

impl Cause {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Busy => "busy",
            Cause::Declined => "declined",
            Cause::Unavailable => "unavailable",
            Cause::InvalidNumber => "invalid-number",
            Cause::NoAnswer => "no-answer",
            Cause::Failed => "failed",
            Cause::Hangup => "hangup",
            Cause::Ended => "ended",
            Cause::Removed => "removed",
            Cause::MediaTimeout => "media-timeout",
            Cause::MaxDuration => "max-duration",
            Cause::Shutdown => "shutdown",
            Cause::WrongPin => "wrong-pin",
            Cause::NoCall => "no-call",
            Cause::Restart => "restart",
            Cause::SpendLimit => "spend-limit",
            Cause::SessionExpired => "session-expired",
            Cause::Transferred => "transferred",
        }
    }

    /// The cause of a final non-2xx answer to an INVITE; a 408 is "no answer" only when the
    /// network sent it (our own transaction timeout is a failure).
    pub fn of_rejection(code: u16, from_network: bool) -> Cause {
        match code {
            486 | 600 => Cause::Busy,
            603 | 607 | 608 => Cause::Declined,
            480 => Cause::Unavailable,
            404 | 410 | 484 | 485 | 604 => Cause::InvalidNumber,
            408 if from_network => Cause::NoAnswer,
            _ => Cause::Failed,
        }
    }
}

impl Cause {
    /// The cause a wire word names (what events and records carry).
    pub fn from_word(word: &str) -> Option<Cause> {
        const ALL: [Cause; 18] = [
            Cause::SpendLimit,
            Cause::SessionExpired,
            Cause::Transferred,
            Cause::Busy,
            Cause::Declined,
            Cause::Unavailable,
            Cause::InvalidNumber,
            Cause::NoAnswer,
            Cause::Failed,
            Cause::Hangup,
            Cause::Ended,
            Cause::Removed,
            Cause::MediaTimeout,
            Cause::MaxDuration,
            Cause::Shutdown,
            Cause::WrongPin,
            Cause::NoCall,
            Cause::Restart,
        ];
        ALL.into_iter().find(|c| c.as_str() == word)
    }
}

/// A phone callee's state in the words of direct calls (seed 001): its status, and when it
/// ended, why. The one mapping from SIP outcomes to that vocabulary.
pub fn direct_call_words(
    status: CallStatus,
    cause: Option<Cause>,
) -> (&'static str, Option<&'static str>) {
    match status {
        CallStatus::Accepted => ("calling", None),
        CallStatus::Ringing => ("ringing", None),
        CallStatus::Connected => ("connected", None),
        CallStatus::Rejected | CallStatus::Cleared => match cause {
            Some(Cause::Busy) => ("busy", Some("busy")),
            Some(Cause::Declined) => ("disconnected", Some("declined")),
            Some(Cause::NoAnswer) => ("disconnected", Some("no answer")),
            Some(Cause::Unavailable) => ("disconnected", Some("unavailable")),
            Some(Cause::InvalidNumber) => ("disconnected", Some("invalid number")),
            Some(Cause::Hangup) | Some(Cause::Ended) => ("disconnected", Some("user hangup")),
            Some(Cause::MediaTimeout) => ("disconnected", Some("media failed")),
            _ => ("disconnected", Some("failed")),
        },
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An E.164 phone number: `+` then 8 to 15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// The number a SIP URI's user (or a tel: number) names: `+49 (30) 123-456`,
    /// `004930123456` and `4930123456` all become `+4930123456`; user parameters (`;npdi`,
    /// `;phone-context=...`) are dropped. A national number (leading 0) has no E.164 form.
    pub fn from_sip_user(user: &str) -> Option<PhoneNumber> {
        let number = user.split(';').next().unwrap_or("");
        let cleaned: String = number
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let e164 = if let Some(rest) = cleaned.strip_prefix("00") {
            format!("+{rest}")
        } else if cleaned.starts_with('+') {
            cleaned
        } else {
            format!("+{cleaned}")
        };
        e164.parse().ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PhoneNumber {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix('+').unwrap_or("");
        let valid = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(PhoneNumber(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not an E.164 phone number (+ then 8 to 15 digits, e.g. +4930123456)"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn final_answers_map_to_causes() {
        assert_eq!(Cause::of_rejection(486, true), Cause::Busy);
        assert_eq!(Cause::of_rejection(600, true), Cause::Busy);
        assert_eq!(Cause::of_rejection(603, true), Cause::Declined);
        assert_eq!(Cause::of_rejection(480, true), Cause::Unavailable);
        assert_eq!(Cause::of_rejection(404, true), Cause::InvalidNumber);
        // A 408 from the far end is nobody answering; our own transaction timeout is a failure.
        assert_eq!(Cause::of_rejection(408, true), Cause::NoAnswer);
        assert_eq!(Cause::of_rejection(408, false), Cause::Failed);
        assert_eq!(Cause::of_rejection(503, false), Cause::Failed);
        assert_eq!(Cause::of_rejection(500, true), Cause::Failed);
    }

    #[test]
    fn cause_wire_words_are_kebab_case() {
        let all = [
            (Cause::Busy, "busy"),
            (Cause::Declined, "declined"),
            (Cause::Unavailable, "unavailable"),
            (Cause::InvalidNumber, "invalid-number"),
            (Cause::NoAnswer, "no-answer"),
            (Cause::Failed, "failed"),
            (Cause::Hangup, "hangup"),
            (Cause::Ended, "ended"),
            (Cause::Removed, "removed"),
            (Cause::MediaTimeout, "media-timeout"),
            (Cause::MaxDuration, "max-duration"),
            (Cause::Shutdown, "shutdown"),
            (Cause::WrongPin, "wrong-pin"),
            (Cause::NoCall, "no-call"),
            (Cause::Restart, "restart"),
            (Cause::SessionExpired, "session-expired"),
            (Cause::Transferred, "transferred"),
        ];
        for (cause, word) in all {
            assert_eq!(cause.as_str(), word);
            assert_eq!(cause.to_string(), word);
        }
    }

    #[test]
    fn cause_words_read_back_and_map_to_direct_call_words() {
        for word in ["busy", "no-answer", "hangup", "restart", "transferred"] {
            assert_eq!(Cause::from_word(word).map(Cause::as_str), Some(word));
        }
        assert_eq!(Cause::from_word("nonsense"), None);
        assert_eq!(
            direct_call_words(CallStatus::Rejected, Some(Cause::Busy)),
            ("busy", Some("busy"))
        );
        assert_eq!(
            direct_call_words(CallStatus::Rejected, Some(Cause::NoAnswer)),
            ("disconnected", Some("no answer"))
        );
        assert_eq!(
            direct_call_words(CallStatus::Cleared, Some(Cause::Hangup)),
            ("disconnected", Some("user hangup"))
        );
        assert_eq!(
            direct_call_words(CallStatus::Ringing, None),
            ("ringing", None)
        );
        assert_eq!(
            direct_call_words(CallStatus::Connected, None),
            ("connected", None)
        );
    }

    #[test]
    fn spend_limit_cause_word() {
        assert_eq!(Cause::SpendLimit.as_str(), "spend-limit");
    }

    #[test]
    fn e164_rules() {
        for ok in [
            "+4930123456",
            "+12025550123",
            "+123456789012345",
            "+12345678",
        ] {
            assert!(ok.parse::<PhoneNumber>().is_ok(), "{ok}");
        }
        for bad in [
            "4930123456",
            "+1234567",
            "+1234567890123456",
            "+49 30 123456",
            "+0123456789",
            "+49301234a6",
            "",
            "+",
            "++4930123456",
        ] {
            assert!(bad.parse::<PhoneNumber>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn e164_parser_accepts_exactly_the_grammar(s in "\\PC{0,20}") {
            let expected = s.len() >= 9 && s.len() <= 16 && s.starts_with('+')
                && s[1..].bytes().all(|b| b.is_ascii_digit()) && !s[1..].starts_with('0');
            prop_assert_eq!(s.parse::<PhoneNumber>().is_ok(), expected);
        }
    }
}

/// Which directions of a phone participant are muted (the `mute` control of Talk's signaling:
/// 1 muted speaking, 2 muted listening, 0 neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhoneMute {
    /// The room does not hear the phone.
    pub speaking: bool,
    /// The phone does not hear the room.
    pub listening: bool,
}

impl PhoneMute {
    /// From the signaling's `audio` bits; `None` beyond 0-3.
    pub fn from_bits(bits: i64) -> Option<PhoneMute> {
        (0..=3).contains(&bits).then_some(PhoneMute {
            speaking: bits & 1 != 0,
            listening: bits & 2 != 0,
        })
    }
}
