//! PIN entry on the shared dial-in number, sans-IO: digits (from RFC 4733 events or SIP INFO) and
//! timer expiries go in with `now`; "play this prompt", "hang up" and "join this room" come out.
//! The phone leg plays the prompts and carries out the rest.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dialbridge_bridge::dtmf::event_to_digit;

/// The voice prompts in `assets/prompts/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// "Welcome. Please enter the conference PIN, followed by the hash key."
    Welcome,
    WrongPin,
    /// "Please wait. The call will start when a moderator joins."
    Waiting,
    Goodbye,
    /// "This call is recorded." (to each phone of a recorded call).
    Recorded,
}

impl Prompt {
    pub fn file_name(self) -> &'static str {
        match self {
            Prompt::Welcome => "welcome.wav",
            Prompt::WrongPin => "wrong_pin.wav",
            Prompt::Waiting => "waiting.wav",
            Prompt::Goodbye => "goodbye.wav",
            Prompt::Recorded => "recorded.wav",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<R> {
    Play(Prompt),
    HangUp,
    Join(R),
}

/// Longest PIN accepted; more digits are ignored until `#`.
const MAX_DIGITS: usize = 16;
/// Time allowed for a prompt to play before the wait for the first digit starts anyway
/// (normally [`PinEntry::prompt_finished`] starts it).
const PROMPT_ALLOWANCE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Collecting,
    Done,
}

/// See the module documentation. `R` is what a PIN leads to (a room).
#[derive(Debug)]
pub struct PinEntry<R> {
    state: State,
    digits: String,
    attempts_left: u32,
    digit_timeout: Duration,
    deadline: Option<Instant>,
    actions: VecDeque<Action<R>>,
}

impl<R> PinEntry<R> {
    /// Starts with the welcome prompt. `attempts` wrong PINs end the call.
    pub fn new(now: Instant, attempts: u32, digit_timeout: Duration) -> PinEntry<R> {
        let mut actions = VecDeque::new();
        actions.push_back(Action::Play(Prompt::Welcome));
        PinEntry {
            state: State::Collecting,
            digits: String::new(),
            attempts_left: attempts.max(1),
            digit_timeout,
            deadline: Some(now + PROMPT_ALLOWANCE + digit_timeout),
            actions,
        }
    }

    pub fn poll_action(&mut self) -> Option<Action<R>> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.state == State::Collecting)
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The last prompt finished playing: the caller now has `digit_timeout` to start typing.
    pub fn prompt_finished(&mut self, now: Instant) {
        if self.state == State::Collecting && self.digits.is_empty() {
            self.deadline = Some(now + self.digit_timeout);
        }
    }

    /// A key press. `lookup` finds what a complete PIN leads to.
    pub fn handle_digit(
        &mut self,
        now: Instant,
        digit: char,
        lookup: impl FnOnce(&str) -> Option<R>,
    ) {
        if self.state != State::Collecting {
            return;
        }
        match digit {
            '0'..='9' => {
                if self.digits.len() < MAX_DIGITS {
                    self.digits.push(digit);
                }
                self.deadline = Some(now + self.digit_timeout);
            }
            '#' => self.submit(now, lookup),
            // Start the entry over.
            '*' => {
                self.digits.clear();
                self.deadline = Some(now + self.digit_timeout);
            }
            _ => {}
        }
    }

    /// The timer of [`PinEntry::poll_timeout`] expired: what was typed so far counts as the entry.
    pub fn handle_timeout(&mut self, now: Instant, lookup: impl FnOnce(&str) -> Option<R>) {
        if self.poll_timeout().is_some_and(|at| at <= now) {
            self.submit(now, lookup);
        }
    }

    fn submit(&mut self, now: Instant, lookup: impl FnOnce(&str) -> Option<R>) {
        let pin = std::mem::take(&mut self.digits);
        let found = if pin.is_empty() { None } else { lookup(&pin) };
        if let Some(room) = found {
            self.state = State::Done;
            self.deadline = None;
            self.actions.push_back(Action::Join(room));
            return;
        }
        self.attempts_left = self.attempts_left.saturating_sub(1);
        if self.attempts_left == 0 {
            self.state = State::Done;
            self.deadline = None;
            self.actions.push_back(Action::Play(Prompt::Goodbye));
            self.actions.push_back(Action::HangUp);
        } else {
            self.actions.push_back(Action::Play(Prompt::WrongPin));
            self.deadline = Some(now + PROMPT_ALLOWANCE + self.digit_timeout);
        }
    }
}

/// The key of a SIP INFO body: `application/dtmf-relay` (`Signal=5`, with `Duration=...` lines)
/// or `application/dtmf` (just the key). Signals 10 and 11 are `*` and `#` as in RFC 4733.
pub fn digit_from_info(content_type: &str, body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let signal = match kind.as_str() {
        "application/dtmf-relay" => text.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("signal")
                .then(|| value.trim())
        })?,
        "application/dtmf" => text.trim(),
        _ => return None,
    };
    if let Ok(code) = signal.parse::<u8>() {
        return event_to_digit(code);
    }
    let mut chars = signal.chars();
    let c = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')).then_some(c)
}

/// The key of an RFC 4733 telephone-event.
pub fn digit_from_event(event: u8) -> Option<char> {
    event_to_digit(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn room(pin: &str) -> Option<&'static str> {
        (pin == "12345678").then_some("room-a")
    }

    fn drain(p: &mut PinEntry<&'static str>) -> Vec<Action<&'static str>> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    fn type_keys(p: &mut PinEntry<&'static str>, now: Instant, keys: &str) {
        for k in keys.chars() {
            p.handle_digit(now, k, room);
        }
    }

    #[test]
    fn right_pin_joins_the_room() {
        let t0 = Instant::now();
        let mut p = PinEntry::new(t0, 3, TIMEOUT);
        assert_eq!(drain(&mut p), vec![Action::Play(Prompt::Welcome)]);
        type_keys(&mut p, t0, "12345678#");
        assert_eq!(drain(&mut p), vec![Action::Join("room-a")]);
        assert!(p.is_done());
        assert_eq!(p.poll_timeout(), None);
        type_keys(&mut p, t0, "1#");
        assert!(drain(&mut p).is_empty(), "nothing after the end");
    }

    #[test]
    fn three_wrong_pins_say_goodbye_and_hang_up() {
        let t0 = Instant::now();
        let mut p = PinEntry::new(t0, 3, TIMEOUT);
        drain(&mut p);
        type_keys(&mut p, t0, "1111#");
        assert_eq!(drain(&mut p), vec![Action::Play(Prompt::WrongPin)]);
        type_keys(&mut p, t0, "#");
        assert_eq!(drain(&mut p), vec![Action::Play(Prompt::WrongPin)]);
        type_keys(&mut p, t0, "87654321#");
        assert_eq!(
            drain(&mut p),
            vec![Action::Play(Prompt::Goodbye), Action::HangUp]
        );
        assert!(p.is_done());
    }

    #[test]
    fn a_pause_ends_the_entry_and_silence_counts_as_a_try() {
        let t0 = Instant::now();
        let mut p = PinEntry::new(t0, 2, TIMEOUT);
        drain(&mut p);
        p.prompt_finished(t0 + Duration::from_secs(3));
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(8)));
        // Nothing typed: the timer fires, one try is gone.
        p.handle_timeout(t0 + Duration::from_secs(7), room);
        assert!(drain(&mut p).is_empty(), "not due yet");
        p.handle_timeout(t0 + Duration::from_secs(8), room);
        assert_eq!(drain(&mut p), vec![Action::Play(Prompt::WrongPin)]);
        // Digits restart the timer; the pause after the last one submits them.
        let t1 = t0 + Duration::from_secs(10);
        type_keys(&mut p, t1, "1234");
        type_keys(&mut p, t1 + Duration::from_secs(4), "5678");
        assert_eq!(p.poll_timeout(), Some(t1 + Duration::from_secs(9)));
        p.handle_timeout(t1 + Duration::from_secs(9), room);
        assert_eq!(drain(&mut p), vec![Action::Join("room-a")]);
    }

    #[test]
    fn star_starts_over_and_long_entries_are_cut() {
        let t0 = Instant::now();
        let mut p = PinEntry::new(t0, 3, TIMEOUT);
        drain(&mut p);
        type_keys(&mut p, t0, "999*12345678#");
        assert_eq!(drain(&mut p), vec![Action::Join("room-a")]);
        let mut p = PinEntry::new(t0, 3, TIMEOUT);
        drain(&mut p);
        type_keys(&mut p, t0, &"1".repeat(100));
        type_keys(&mut p, t0, "#");
        assert_eq!(drain(&mut p), vec![Action::Play(Prompt::WrongPin)]);
    }

    #[test]
    fn info_bodies() {
        let relay = "application/dtmf-relay";
        assert_eq!(
            digit_from_info(relay, b"Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(
            digit_from_info(relay, b"Signal= #\nDuration=100"),
            Some('#')
        );
        assert_eq!(digit_from_info(relay, b"signal=*\r\n"), Some('*'));
        assert_eq!(
            digit_from_info(relay, b"Signal=11\r\nDuration=160\r\n"),
            Some('#')
        );
        assert_eq!(digit_from_info(relay, b"Signal=10\r\n"), Some('*'));
        assert_eq!(
            digit_from_info("Application/DTMF-Relay; x=y", b"Signal=a\r\n"),
            Some('A')
        );
        assert_eq!(digit_from_info("application/dtmf", b"7\r\n"), Some('7'));
        for bad in [
            &b"Signal=\r\n"[..],
            b"Signal=55\r\n",
            b"Duration=160",
            b"Signal=x",
            b"\xff",
        ] {
            assert_eq!(digit_from_info(relay, bad), None, "{bad:?}");
        }
        assert_eq!(digit_from_info("text/plain", b"Signal=5"), None);
        assert_eq!(digit_from_event(11), Some('#'));
        assert_eq!(digit_from_event(3), Some('3'));
    }

    proptest! {
        #[test]
        fn info_parser_never_panics(ct in "\\PC{0,30}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = digit_from_info(&ct, &body);
        }

        #[test]
        fn any_key_sequence_ends_in_at_most_one_join_or_goodbye(keys in "[0-9*#AB]{0,60}") {
            let t0 = Instant::now();
            let mut p = PinEntry::new(t0, 3, TIMEOUT);
            type_keys(&mut p, t0, &keys);
            let actions = drain(&mut p);
            let ends = actions.iter().filter(|a| matches!(a, Action::Join(_) | Action::HangUp)).count();
            prop_assert!(ends <= 1);
            prop_assert_eq!(ends == 1, p.is_done());
        }
    }
}
