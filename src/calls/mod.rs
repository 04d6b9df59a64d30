//! Call orchestration: ties SIP dialogs, media legs and room participants together.
//!
//! - [`admission`] and [`dialin`]: which inbound INVITEs are taken, and the room they reach.
//! - [`dialout`]: the trunk-side checks (trunk choice, limits) and the INVITE of a dial-out.
//! - [`phone_leg`]: a dial-out leg from INVITE to its end: status into the room, media into the
//!   mix, hangup paths, call record; [`inbound`]: the same for an answered inbound call, with PIN
//!   entry and waiting before it joins.
//! - [`dialogs`]: both kinds of legs keep their dialog in the store, so that a restart after a
//!   crash hangs up the phones whose calls died with the process.

pub mod admission;
pub mod dialin;
pub mod dialogs;
pub mod dialout;
pub mod inbound;
mod leg_media;
pub mod phone_leg;
pub mod pin;
pub mod wav;

use std::collections::HashMap;
use std::future::Future;

use dialbridge_sip::dialog::Dialog;
use dialbridge_sip::ua::{CallHandle, OutgoingCall, UaEvent};
use tokio::sync::{mpsc, Mutex};

use crate::runtime::sip::{Credentials, SipError, SipHandle};

/// Hands each SIP event of a call to the task that owns the call.
#[derive(Default)]
pub struct CallRouter {
    calls: Mutex<HashMap<CallHandle, mpsc::UnboundedSender<UaEvent>>>,
}

impl CallRouter {
    /// Sends an INVITE and returns its handle with the call's event stream.
    pub async fn invite(
        &self,
        sip: &SipHandle,
        call: OutgoingCall,
        credentials: Option<Credentials>,
    ) -> Result<(CallHandle, mpsc::UnboundedReceiver<UaEvent>), SipError> {
        self.start(sip.invite(call, credentials)).await
    }

    /// Sends the BYE of a dialog restored from the store; its outcome comes on the stream.
    pub async fn bye_restored(
        &self,
        sip: &SipHandle,
        dialog: Dialog,
    ) -> Result<(CallHandle, mpsc::UnboundedReceiver<UaEvent>), SipError> {
        self.start(sip.bye_restored(dialog)).await
    }

    /// Runs `send`, which starts a call, and takes over the call's events. The table stays
    /// locked until the handle is known, so no early response can miss its owner.
    async fn start(
        &self,
        send: impl Future<Output = Result<CallHandle, SipError>>,
    ) -> Result<(CallHandle, mpsc::UnboundedReceiver<UaEvent>), SipError> {
        let mut calls = self.calls.lock().await;
        let handle = send.await?;
        let (tx, rx) = mpsc::unbounded_channel();
        calls.insert(handle, tx);
        Ok((handle, rx))
    }

    /// Takes over the events of an incoming call.
    pub async fn register(&self, call: CallHandle) -> mpsc::UnboundedReceiver<UaEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.calls.lock().await.insert(call, tx);
        rx
    }

    pub async fn forget(&self, call: CallHandle) {
        self.calls.lock().await.remove(&call);
    }

    /// Delivers `event` to its call's owner; gives it back when nobody owns it.
    async fn route(&self, event: UaEvent) -> Option<UaEvent> {
        let Some(call) = event.call() else {
            return Some(event);
        };
        let calls = self.calls.lock().await;
        match calls.get(&call) {
            Some(owner) => owner.send(event).err().map(|e| e.0),
            None => Some(event),
        }
    }
}

/// Consumes the SIP driver's events: each call's events go to the task that owns it (phone
/// legs); new inbound calls go to dial-in.
pub async fn run_sip_events(
    sip: SipHandle,
    mut events: mpsc::UnboundedReceiver<UaEvent>,
    dialin: std::sync::Arc<dialin::DialIn>,
    router: std::sync::Arc<CallRouter>,
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
            UaEvent::Discarded { .. } => {}
            other => tracing::debug!(?other, "SIP event"),
        }
    }
}
