//! Webhooks of call links: events are queued in the store in the transaction of the change they
//! report (so none is lost to a crash or restart), then delivered by one task, signed, and
//! retried with exponential backoff until the receiver answers 2xx.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{watch, Notify};

use super::when::{iso, now_ms};
use crate::config::LinksConfig;
use crate::store::links::{ProjectRow, WebhookRow};
use crate::store::{Store, StoreResult, Tx};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Dialbridge-Signature";

/// Deliveries taken from the queue per round.
const BATCH: i64 = 32;

/// Event names, each defined once.
pub mod event {
    pub const CALL_CREATED: &str = "call.created";
    pub const CALL_STARTED: &str = "call.started";
    pub const CALL_ENDED: &str = "call.ended";
    pub const CALL_EXPIRED: &str = "call.expired";
    pub const PARTICIPANT_JOINED: &str = "participant.joined";
    pub const PARTICIPANT_LEFT: &str = "participant.left";
    pub const RECORDING_READY: &str = "recording.ready";
}

/// `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn signature(secret: &str, unix: i64, body: &str) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={unix},v1={hex}")
}

/// Queues `event` for the project's receiver, if it has one. `call` is the link as the API shows it.
pub fn enqueue(
    tx: &Tx,
    project: &ProjectRow,
    event: &str,
    call: &Value,
    data: Value,
) -> StoreResult<()> {
    let (Some(url), Some(secret)) = (&project.webhook_url, &project.webhook_secret) else {
        return Ok(());
    };
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let id: String = format!(
        "evt_{}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let now = now_ms();
    let body = json!({
        "id": id,
        "event": event,
        "call": call,
        "data": data,
        "timestamp": iso(now),
    });
    tx.enqueue_webhook(
        &WebhookRow {
            id,
            url: url.clone(),
            secret: secret.clone(),
            body: body.to_string(),
            attempts: 0,
        },
        project.id,
        now,
    )
}

/// The delivery task: wakes when told (an event was queued) or when the next retry is due.
pub async fn deliver(
    store: Arc<Store>,
    config: LinksConfig,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(config.webhook_timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; webhooks are not delivered");
            return;
        }
    };
    loop {
        let due = match store.write(|tx| tx.due_webhooks(now_ms(), BATCH)) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the webhook queue");
                Vec::new()
            }
        };
        let full = due.len() as i64 == BATCH;
        for delivery in due {
            let ok = send(&client, &delivery).await;
            let result = store.write(|tx| {
                if ok {
                    metrics::counter!("dialbridge_webhook_deliveries_total", "result" => "delivered")
                        .increment(1);
                    return tx.webhook_delivered(&delivery.id);
                }
                let attempts = delivery.attempts + 1;
                if attempts >= i64::from(config.webhook_attempts.get()) {
                    metrics::counter!("dialbridge_webhook_deliveries_total", "result" => "dropped")
                        .increment(1);
                    tracing::warn!(id = %delivery.id, url = %delivery.url, attempts, "webhook dropped after its last attempt");
                    return tx.webhook_delivered(&delivery.id);
                }
                metrics::counter!("dialbridge_webhook_deliveries_total", "result" => "failed")
                    .increment(1);
                let wait = backoff(&config, attempts);
                tx.webhook_retry(&delivery.id, attempts, now_ms() + wait)
            });
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot update the webhook queue");
            }
        }
        if full {
            continue;
        }
        let next = store.write(|tx| tx.next_webhook_ms()).ok().flatten();
        let wait = match next {
            Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Milliseconds before attempt `attempts + 1`: the first retry's wait, doubled each time, capped.
fn backoff(config: &LinksConfig, attempts: i64) -> i64 {
    let first = i64::try_from(config.webhook_retry.0.as_millis()).unwrap_or(i64::MAX);
    let cap = i64::try_from(config.webhook_max_retry.0.as_millis()).unwrap_or(i64::MAX);
    let shift = u32::try_from(attempts - 1).unwrap_or(0).min(30);
    first
        .saturating_mul(1 << shift)
        .min(cap)
        .max(first.min(cap))
}

async fn send(client: &reqwest::Client, delivery: &WebhookRow) -> bool {
    let unix = now_ms() / 1000;
    let response = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            signature(&delivery.secret, unix, &delivery.body),
        )
        .body(delivery.body.clone())
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            tracing::info!(id = %delivery.id, status = r.status().as_u16(), "webhook refused; will retry");
            false
        }
        Err(e) => {
            tracing::info!(id = %delivery.id, error = %e, "webhook not delivered; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_t_dot_body() {
        // What openssl computes:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = LinksConfig {
            webhook_retry: crate::config::Seconds(Duration::from_secs(1)),
            webhook_max_retry: crate::config::Seconds(Duration::from_secs(5)),
            ..LinksConfig::default()
        };
        let waits: Vec<i64> = (1..=5).map(|a| backoff(&config, a)).collect();
        assert_eq!(waits, vec![1000, 2000, 4000, 5000, 5000]);
    }
}
