//! Call orchestration: ties SIP dialogs, media legs and room participants together.
//!
//! - [`admission`] and [`dialin`]: which inbound INVITEs are taken, and the room they reach.
//! - [`dialout`]: the trunk-side checks (trunk choice, limits) and the start of a dial-out.
//! - [`legs`]: the running legs of both directions, the room's commands to them, and how their
//!   status reaches the room; `leg_media`: a leg's media and SDP.
//! - `phone_call`: one phone call of either direction as a sans-IO state machine; `task`: the
//!   task that drives it; [`outbound`]: a dial-out from INVITE to its end; [`inbound`]: an
//!   answered inbound call, with PIN entry and waiting before it joins.
//! - [`router`]: each SIP event to the task of its call.
//! - [`registration`]: the trunks that register, and their state.
//! - [`dialogs`]: both kinds of legs keep their dialog in the store, so that a restart after a
//!   crash hangs up the phones whose calls died with the process.

pub mod admission;
pub mod dialin;
pub mod dialogs;
pub mod dialout;
pub mod inbound;
mod leg_media;
pub mod legs;
pub mod outbound;
mod phone_call;
pub mod pin;
pub mod registration;
pub mod router;
mod task;
pub mod wav;

use dialbridge_sip::ua::UaEvent;
use tokio::sync::mpsc;

use crate::runtime::sip::SipHandle;
use router::CallRouter;

/// Consumes the SIP driver's events: each call's events go to the task that owns it (phone
/// legs); new inbound calls go to dial-in; registrations to the trunks' state.
pub async fn run_sip_events(
    sip: SipHandle,
    mut events: mpsc::UnboundedReceiver<UaEvent>,
    dialin: std::sync::Arc<dialin::DialIn>,
    router: std::sync::Arc<CallRouter>,
    registrations: std::sync::Arc<registration::TrunkRegistrations>,
) {
    while let Some(event) = events.recv().await {
        let Some(event) = router.route(event).await else {
            continue;
        };
        match event {
            UaEvent::IncomingCall {
                call,
                request,
                transport,
                remote,
            } => {
                dialin
                    .incoming(&sip, call, request, transport, remote)
                    .await;
            }
            UaEvent::Registration {
                registration,
                state,
            } => registrations.on_event(registration, state),
            UaEvent::Discarded { .. } => {}
            other => tracing::debug!(?other, "SIP event"),
        }
    }
}
