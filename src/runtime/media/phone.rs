//! One phone leg on its shard: its RTP leg and sockets, and what it sends and reports.

use std::time::{Duration, Instant};

use dialbridge_bridge::resample::{Downsampler, Upsampler, FRAME_48K, FRAME_8K};
use dialbridge_bridge::rtp_leg::{self, RtpLeg, RtpLegConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::srtp::Srtp;
use super::types::{MediaId, PhoneMediaEvent, PhoneRemote};
use crate::room::{MediaParticipant, PhoneMute};

/// Length of a DTMF digit sent to a phone, and the pause after it.
const DTMF_TONE: Duration = Duration::from_millis(100);
const DTMF_GAP: Duration = Duration::from_millis(60);

/// A phone leg on its shard (sockets in the shard's reactor) or, with std sockets, on its way
/// to another.
pub(super) struct PhoneSlot<S = UdpSocket> {
    /// `None` while in no room.
    pub(super) who: Option<MediaParticipant>,
    pub(super) mute: PhoneMute,
    /// The prompt playing and how far it got.
    pub(super) prompt: Option<(&'static [i16], usize)>,
    pub(super) rtp: S,
    pub(super) rtcp: S,
    pub(super) leg: RtpLeg,
    pub(super) media_timeout: Duration,
    pub(super) events: mpsc::UnboundedSender<PhoneMediaEvent>,
    pub(super) up: Upsampler,
    pub(super) down: Downsampler,
    pub(super) wide: Box<[i16; FRAME_48K]>,
    pub(super) narrow: [i16; FRAME_8K],
    pub(super) dtmf: std::collections::VecDeque<char>,
    pub(super) dtmf_next: Instant,
    /// In a two-party room: RTP is read as it arrives and forwarded at once.
    pub(super) direct: bool,
    /// SRTP, when the leg's SDP agreed keys.
    pub(super) srtp: Option<Srtp>,
}

impl<S> PhoneSlot<S> {
    /// The same leg with its sockets converted (for a hand-over between shards' reactors).
    pub(super) fn map_sockets<T>(self, f: impl Fn(S) -> Option<T>) -> Option<PhoneSlot<T>> {
        let PhoneSlot {
            who,
            mute,
            prompt,
            rtp,
            rtcp,
            leg,
            media_timeout,
            events,
            up,
            down,
            wide,
            narrow,
            dtmf,
            dtmf_next,
            direct,
            srtp,
        } = self;
        Some(PhoneSlot {
            who,
            mute,
            prompt,
            rtp: f(rtp)?,
            rtcp: f(rtcp)?,
            leg,
            media_timeout,
            events,
            up,
            down,
            wide,
            narrow,
            dtmf,
            dtmf_next,
            direct,
            srtp,
        })
    }

    /// Key presses queued or being sent, or a prompt playing: the tick drives the outbound
    /// stream meanwhile, also on a direct path.
    pub(super) fn tick_drives(&self) -> bool {
        self.leg.is_sending_dtmf() || !self.dtmf.is_empty() || self.prompt.is_some()
    }

    pub(super) fn room_id(&self) -> Option<i64> {
        self.who.as_ref().map(|w| w.room_id)
    }
}

pub(super) fn phone_leg(now: Instant, remote: &PhoneRemote, media_timeout: Duration) -> RtpLeg {
    RtpLeg::new(
        now,
        std::time::SystemTime::now(),
        phone_leg_config(remote, media_timeout),
    )
}

pub(super) fn phone_leg_config(remote: &PhoneRemote, media_timeout: Duration) -> RtpLegConfig {
    let mut cfg = RtpLegConfig::new(remote.law, rand::random(), remote.rtp);
    cfg.remote_rtcp = remote.rtcp;
    cfg.dtmf_pt = remote.dtmf_pt;
    cfg.inactivity_timeout = Some(media_timeout);
    cfg.send = remote.receives;
    cfg
}

/// Sends one frame to a phone when `send`: `slot.narrow` (its mix or silence), or its prompt
/// while one plays; queued key presses go first. Then its timers, datagrams and events.
pub(super) fn phone_out(now: Instant, id: MediaId, slot: &mut PhoneSlot, send: bool) {
    if !send {
        phone_timers(now, id, slot);
        return;
    }
    if now >= slot.dtmf_next {
        if let Some(digit) = slot.dtmf.pop_front() {
            match slot.leg.send_dtmf(now, digit, DTMF_TONE) {
                Ok(()) => tracing::info!(media = %id, %digit, "DTMF to phone"),
                Err(e) => tracing::info!(media = %id, %digit, error = %e, "DTMF not sent"),
            }
            slot.dtmf_next = now + DTMF_TONE + DTMF_GAP;
        }
    }
    if let Some((samples, at)) = slot.prompt {
        let rest = samples.get(at..).unwrap_or(&[]);
        let n = rest.len().min(FRAME_8K);
        slot.narrow[..n].copy_from_slice(&rest[..n]);
        slot.narrow[n..].fill(0);
        if at + n >= samples.len() {
            slot.prompt = None;
            let _ = slot.events.send(PhoneMediaEvent::PromptDone);
        } else {
            slot.prompt = Some((samples, at + n));
        }
    }
    slot.leg.send_audio(now, &slot.narrow);
    phone_timers(now, id, slot);
}

/// A phone leg's timers, then what it has to send and to report.
fn phone_timers(now: Instant, id: MediaId, slot: &mut PhoneSlot) {
    if slot.leg.poll_timeout().is_some_and(|t| t <= now) {
        slot.leg.handle_timeout(now);
    }
    send_phone(id, slot);
    phone_events(id, slot);
}

pub(super) fn send_phone(id: MediaId, slot: &mut PhoneSlot) {
    let mut out = [0u8; rtp_leg::MAX_DATAGRAM];
    while let Some(t) = slot.leg.poll_transmit(&mut out) {
        let socket = if t.rtcp { &slot.rtcp } else { &slot.rtp };
        let Some(bytes) = out.get(..t.len) else {
            continue;
        };
        let sealed;
        let bytes = match slot.srtp.as_mut() {
            Some(srtp) => match srtp.protect(id, t.rtcp, bytes) {
                Some(packet) => {
                    sealed = packet;
                    &sealed[..]
                }
                None => continue,
            },
            None => bytes,
        };
        if let Err(e) = socket.try_send_to(bytes, t.to) {
            tracing::debug!(media = %id, to = %t.to, error = %e, "phone send failed");
        }
    }
}

/// Key presses, inactivity and BYE go to the leg's owner (who knows whether a key press is a
/// PIN digit or the room's event).
pub(super) fn phone_events(id: MediaId, slot: &mut PhoneSlot) {
    while let Some(event) = slot.leg.poll_event() {
        match event {
            rtp_leg::LegEvent::Dtmf(d) => {
                let Some(digit) = d.digit() else {
                    continue;
                };
                tracing::info!(media = %id, %digit, "DTMF from phone");
                let _ = slot.events.send(PhoneMediaEvent::Dtmf(digit));
            }
            rtp_leg::LegEvent::Inactive => {
                let _ = slot.events.send(PhoneMediaEvent::Inactive);
            }
            rtp_leg::LegEvent::Bye => {
                let _ = slot.events.send(PhoneMediaEvent::Bye);
            }
            rtp_leg::LegEvent::Latched(from) => {
                tracing::debug!(media = %id, %from, "phone media latched")
            }
            rtp_leg::LegEvent::Active => {}
        }
    }
}
