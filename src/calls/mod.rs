//! Call orchestration: ties SIP dialogs, media legs and room participants together.

use dialbridge_sip::ua::UaEvent;
use tokio::sync::mpsc;

use crate::runtime::sip::SipHandle;

/// Consumes the SIP driver's events. Until dial-in routing exists, every inbound call is refused
/// with 404: no room is reachable by a number yet.
pub async fn run_sip_events(sip: SipHandle, mut events: mpsc::UnboundedReceiver<UaEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            UaEvent::IncomingCall {
                call,
                request,
                transport,
                remote,
            } => {
                tracing::info!(%remote, %transport, uri = %request.uri, "inbound call refused: no route");
                if let Err(e) = sip.respond(call, 404, "Not Found", None).await {
                    tracing::warn!(error = %e, "cannot refuse inbound call");
                }
            }
            UaEvent::Discarded { .. } => {}
            other => tracing::debug!(?other, "SIP event"),
        }
    }
}
