//! Call orchestration: ties SIP dialogs, media legs and room participants together.

pub mod admission;
pub mod dialin;
pub mod pin;
pub mod wav;

use dialbridge_sip::ua::UaEvent;
use tokio::sync::mpsc;

use crate::runtime::sip::SipHandle;

/// Consumes the SIP driver's events. Inbound calls go through dial-in admission and routing.
pub async fn run_sip_events(
    sip: SipHandle,
    mut events: mpsc::UnboundedReceiver<UaEvent>,
    dialin: std::sync::Arc<dialin::DialIn>,
) {
    while let Some(event) = events.recv().await {
        dialin.observe(&event);
        match event {
            UaEvent::IncomingCall {
                call,
                request,
                transport,
                remote,
            } => {
                dialin
                    .incoming(&sip, call, request, transport, remote)
                    .await
            }
            UaEvent::Discarded { .. } => {}
            other => tracing::debug!(?other, "SIP event"),
        }
    }
}
