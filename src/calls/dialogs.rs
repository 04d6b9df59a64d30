//! Dialogs that outlive the process. Each phone leg's established dialog is kept in the store
//! while it lives ([`keep`]; `PhoneLegs::end_leg` forgets it), so that after a crash the next
//! start can send the BYE its phone still waits for ([`left_over`], then [`hang_up_left_over`]).

use std::sync::Arc;

use dialbridge_sip::dialog::Dialog;
use dialbridge_sip::ua::{CallHandle, UaEvent};

use super::router::CallRouter;
use crate::room::unix_now;
use crate::runtime::sip::{SipError, SipHandle};
use crate::store::Store;

/// Stores (or, after a target refresh, updates) the dialog of leg `leg`.
pub(crate) async fn keep(sip: &SipHandle, store: &Store, leg: &str, call: CallHandle) {
    let dialog = match sip.dialog(call).await {
        Ok(Some(dialog)) => dialog.save(),
        Ok(None) => return tracing::debug!(call_id = %leg, "no dialog to store"),
        Err(e) => return tracing::warn!(call_id = %leg, error = %e, "dialog not stored"),
    };
    let stored = store.write(|tx| tx.save_dialog(leg, &dialog, unix_now()));
    if let Err(e) = stored {
        tracing::warn!(call_id = %leg, error = %e, "dialog not stored: a crash would leave the phone in the call");
    }
}

/// Forgets the dialog of leg `leg` (none stored is fine).
pub(crate) fn forget(store: &Store, leg: &str) {
    if let Err(e) = store.write(|tx| tx.delete_dialog(leg)) {
        tracing::warn!(call_id = %leg, error = %e, "ended dialog not deleted from the store");
    }
}

/// A dialog an earlier run of the service left in the store.
pub struct LeftOver {
    row: i64,
    leg: String,
    dialog: Dialog,
}

/// The dialogs an earlier run left in the store. Read it before SIP events flow, so that no
/// new leg's dialog is among them. A row that cannot be used is logged and deleted.
pub fn left_over(store: &Store) -> Vec<LeftOver> {
    let rows = match store.write(|tx| tx.saved_dialogs()) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the dialogs left by the previous run");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for (row, stored) in rows {
        let restored = stored.and_then(|s| match Dialog::restore(&s.dialog) {
            Ok(dialog) => Ok((s.leg, dialog)),
            Err(e) => Err(format!("leg {}: {e}", s.leg)),
        });
        match restored {
            Ok((leg, dialog)) => found.push(LeftOver { row, leg, dialog }),
            Err(reason) => {
                tracing::warn!(row, %reason, "stored dialog unusable: no BYE sent, row deleted");
                delete_row(store, row);
            }
        }
    }
    found
}

/// Sends a BYE in each left-over dialog, all at once; each row goes once its BYE is answered
/// or timed out (one log line each). A row stays when the service stops first.
pub fn hang_up_left_over(
    left: Vec<LeftOver>,
    store: Arc<Store>,
    sip: SipHandle,
    router: Arc<CallRouter>,
) {
    for dialog in left {
        tokio::spawn(hang_up(dialog, store.clone(), sip.clone(), router.clone()));
    }
}

async fn hang_up(left: LeftOver, store: Arc<Store>, sip: SipHandle, router: Arc<CallRouter>) {
    let LeftOver { row, leg, dialog } = left;
    let call_id = dialog.id.call_id.clone();
    let target = dialog.remote_target.to_string();
    let result = match router.bye_restored(&sip, dialog).await {
        Ok((handle, mut events)) => {
            let mut result = None;
            while let Some(event) = events.recv().await {
                if let UaEvent::RestoredByeDone { code, reason, .. } = event {
                    result = Some(format!("{code} {reason}"));
                    break;
                }
            }
            router.forget(handle).await;
            result
        }
        Err(SipError::Stopped) => None,
        Err(e) => Some(format!("not sent: {e}")),
    };
    match result {
        Some(result) => {
            tracing::info!(call_id = %leg, sip_call_id = %call_id, %target, %result, "BYE for a call left up by the previous run");
            delete_row(&store, row);
        }
        None => {
            tracing::info!(call_id = %leg, sip_call_id = %call_id, %target, "BYE for a call left up by the previous run unfinished: the SIP driver stopped; kept for the next start");
        }
    }
}

fn delete_row(store: &Store, row: i64) {
    if let Err(e) = store.write(|tx| tx.delete_dialog_row(row)) {
        tracing::warn!(row, error = %e, "stored dialog not deleted");
    }
}
