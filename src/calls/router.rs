//! Each SIP event of a call goes to the task that owns the call.

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
    pub(crate) async fn route(&self, event: UaEvent) -> Option<UaEvent> {
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
