//! The one task that drives a phone call of either direction: it feeds the call's state machine
//! ([`PhoneCall`]) with the dialog's SIP events, the room's commands, the media engine's events
//! and its timer, and hands each decision to the direction's [`Effects`] (`outbound.rs` for a
//! dial-out, `inbound.rs` for a caller), which carry it out.

use std::future::Future;
use std::time::Instant;

use dialbridge_sip::ua::UaEvent;
use tokio::sync::mpsc;

use super::leg_media::sdp_only;
use super::legs::{sleep_until, Control};
use super::phone_call::{Action, MediaInput, PhoneCall, SipInput};
use super::pin::digit_from_info;
use crate::runtime::media::PhoneMediaEvent;

/// What a direction does with the call's decisions.
pub(crate) trait Effects: Send {
    /// The leg's call id, for the log.
    fn call_id(&self) -> &str;
    /// What the log calls the far end: "phone" (dial-out) or "caller" (dial-in).
    fn far_end(&self) -> &'static str;
    /// Whether the phone should be sending RTP now (it is not holding the call).
    fn phone_sends(&self) -> bool;
    /// Carries out one decision, feeding back what the call asked to know; false once the call
    /// is done.
    fn carry_out(
        &mut self,
        call: &mut PhoneCall,
        action: Action,
    ) -> impl Future<Output = bool> + Send;
}

/// Where a call's inputs come from.
pub(crate) struct Inputs {
    pub(crate) events: mpsc::UnboundedReceiver<UaEvent>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) media: mpsc::UnboundedReceiver<PhoneMediaEvent>,
}

/// Runs `call` to its end.
pub(crate) async fn drive(leg: &mut impl Effects, mut call: PhoneCall, mut inputs: Inputs) {
    loop {
        while let Some(action) = call.poll_action() {
            if !leg.carry_out(&mut call, action).await {
                return;
            }
        }
        if call.is_done() {
            return;
        }
        let deadline = call.poll_timeout();
        tokio::select! {
            event = inputs.events.recv() => {
                let now = Instant::now();
                match event {
                    None => call.handle_sip(now, SipInput::DriverStopped),
                    Some(event) => {
                        if let Some(input) = sip_input(leg.call_id(), leg.far_end(), event) {
                            call.handle_sip(now, input);
                        }
                    }
                }
            }
            command = inputs.control.recv() => call.handle_control(Instant::now(), command),
            Some(event) = inputs.media.recv() => {
                let input = match event {
                    PhoneMediaEvent::Dtmf(digit) => MediaInput::Dtmf(digit),
                    PhoneMediaEvent::PromptDone => MediaInput::PromptDone,
                    // A phone holding the call may send nothing.
                    PhoneMediaEvent::Inactive => MediaInput::Inactive { phone_sends: leg.phone_sends() },
                    PhoneMediaEvent::Bye => {
                        tracing::info!(call_id = %leg.call_id(), "{} sent RTCP BYE", leg.far_end());
                        continue;
                    }
                };
                call.handle_media(Instant::now(), input);
            }
            _ = sleep_until(deadline) => call.handle_timeout(Instant::now()),
        }
    }
}

/// The call's view of a SIP event of its dialog, if it has a use for it.
fn sip_input(call_id: &str, far_end: &str, event: UaEvent) -> Option<SipInput> {
    Some(match event {
        UaEvent::Progress {
            code, reason, body, ..
        } => SipInput::Progress {
            code,
            reason,
            body: sdp_only(body),
        },
        UaEvent::Answered { response, body, .. } => SipInput::Answered {
            code: response.code,
            reason: response.reason,
            body: sdp_only(body),
        },
        UaEvent::Confirmed { body, .. } => SipInput::Confirmed {
            body: sdp_only(body),
        },
        UaEvent::Failed {
            code,
            reason,
            response,
            ..
        } => SipInput::Failed {
            code,
            reason,
            from_network: response.is_some(),
        },
        UaEvent::Ended { by_remote, .. } => SipInput::Ended { by_remote },
        UaEvent::SessionExpired { .. } => SipInput::SessionExpired,
        UaEvent::Cancelled { .. } => SipInput::Cancelled,
        UaEvent::Info {
            body: Some(ref body),
            ..
        } => {
            // Key presses some phones send as SIP INFO instead of RFC 4733.
            let digit = digit_from_info(&body.content_type, &body.bytes)?;
            tracing::info!(%call_id, %digit, "DTMF from {far_end} (INFO)");
            SipInput::InfoDigit(digit)
        }
        UaEvent::ReInvite { body, .. } => SipInput::ReInvite { body },
        UaEvent::ReInviteAck { body, .. } => SipInput::ReInviteAck { body },
        UaEvent::Transfer { progress, .. } => {
            tracing::info!(%call_id, ?progress, "transfer of the {far_end}");
            SipInput::Transfer(progress)
        }
        UaEvent::Referred { refer_to, .. } => {
            tracing::info!(%call_id, %refer_to, "the {far_end} transfers us (REFER)");
            SipInput::Referred(refer_to.to_string())
        }
        other => {
            tracing::debug!(%call_id, ?other, "SIP event of a phone leg");
            return None;
        }
    })
}
