//! Push delivery to registered devices: Web Push and UnifiedPush (RFC 8030 delivery, RFC 8291
//! aes128gcm payloads, RFC 8292 VAPID with the gateway's own key). Every message is its own task,
//! at most `[push] concurrency` at once, each attempt bounded by `[push] timeout`; a slow push
//! service holds one slot and delays nobody else.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use web_push_native::jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair,
};
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::{p256, Auth, WebPushBuilder};

pub use super::message::Message;
use crate::config::PushConfig;
use crate::links::when::now_ms;
use crate::store::push::{PushRow, VAPID_KEY};
use crate::store::Store;

/// Registration types, as `POST push.token` names them.
pub mod kind {
    pub const APN: &str = "apn";
    pub const GCM: &str = "gcm";
    pub const WEBPUSH: &str = "webpush";
    pub const UNIFIEDPUSH: &str = "unifiedpush";
    pub const ALL: [&str; 4] = [APN, GCM, WEBPUSH, UNIFIEDPUSH];
}

/// What became of one message.
pub mod outcome {
    pub const SENT: &str = "sent";
    pub const NO_DEVICE: &str = "no_device";
    pub const FAILED: &str = "failed";
    /// The push service says the registration no longer exists: it was removed.
    pub const GONE: &str = "gone";
}

/// How long an activation message waits for an offline device.
const ACTIVATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// A device to register: the checked fields of `POST push.token`.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub kind: &'static str,
    /// The device token, or the push endpoint URL.
    pub value: String,
    /// RFC 8291 keys (p256dh, auth), base64url, checked.
    pub keys: Option<(String, String)>,
    pub app_name: String,
    pub device_id: String,
    pub voip: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("no such push registration")]
    NotFound,
    #[error("activationToken: not the token pushed to this registration")]
    WrongToken,
    #[error("store: {0}")]
    Store(String),
}

impl From<crate::store::StoreError> for RegisterError {
    fn from(e: crate::store::StoreError) -> RegisterError {
        RegisterError::Store(e.to_string())
    }
}

#[derive(Clone)]
pub struct Push {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    config: PushConfig,
    vapid: ES256KeyPair,
    vapid_public: String,
    apns: Option<super::apns::Apns>,
    fcm: Option<super::fcm::Fcm>,
}

/// Decodes base64url with or without padding (browsers send it unpadded).
pub fn base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// An URL's origin (RFC 6454): scheme, host, and the port unless it is the scheme's default.
fn origin(url: &axum::http::Uri) -> Option<String> {
    let scheme = url.scheme_str()?;
    let host = url.host()?;
    let default = match scheme {
        "https" => 443,
        _ => 80,
    };
    Some(match url.port_u16().filter(|p| *p != default) {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// A subscription's RFC 8291 keys, checked: the P-256 point and the 16-byte auth secret.
pub fn subscription_keys(p256dh: &str, auth: &str) -> Result<(p256::PublicKey, Auth), String> {
    let point = base64url(p256dh)
        .and_then(|b| p256::PublicKey::from_sec1_bytes(&b).ok())
        .ok_or("keys.p256dh: not a base64url P-256 public key")?;
    let secret = base64url(auth)
        .filter(|b| b.len() == 16)
        .ok_or("keys.auth: not 16 bytes of base64url")?;
    Ok((point, Auth::clone_from_slice(&secret)))
}

impl Push {
    /// The delivery service, with the gateway's VAPID key (made on first start, kept in the store).
    pub fn new(store: Arc<Store>, config: PushConfig) -> anyhow::Result<Push> {
        let stored = store.write(|tx| tx.setting(VAPID_KEY))?;
        let vapid = match stored.as_deref().and_then(base64url) {
            Some(bytes) => ES256KeyPair::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("the stored VAPID key is unusable: {e}"))?,
            None => {
                let key = ES256KeyPair::generate();
                let text = URL_SAFE_NO_PAD.encode(key.to_bytes());
                store.write(|tx| tx.set_setting(VAPID_KEY, &text))?;
                tracing::info!("VAPID key generated");
                key
            }
        };
        let vapid_public =
            URL_SAFE_NO_PAD.encode(vapid.public_key().public_key().to_bytes_uncompressed());
        let client = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let slots = usize::try_from(config.concurrency.get()).unwrap_or(usize::MAX);
        let apns = match &config.apns {
            Some(apns) => Some(super::apns::Apns::new(apns.clone(), config.timeout.0)?),
            None => None,
        };
        let fcm = match &config.fcm {
            Some(fcm) => Some(super::fcm::Fcm::new(fcm, config.timeout.0)?),
            None => None,
        };
        Ok(Push {
            inner: Arc::new(Inner {
                store,
                client,
                slots: Arc::new(Semaphore::new(slots)),
                config,
                vapid,
                vapid_public,
                apns,
                fcm,
            }),
        })
    }

    /// The VAPID public key (an uncompressed P-256 point, base64url), the browser's
    /// `applicationServerKey`.
    pub fn vapid_public_key(&self) -> &str {
        &self.inner.vapid_public
    }

    /// Registers a device of `user`. APNs and FCM tokens are used at once; a Web Push or
    /// UnifiedPush subscription gets an activation message and is used once the client posts it
    /// back ([`Push::activate`]).
    pub fn register(&self, user: &str, device: NewDevice) -> Result<PushRow, RegisterError> {
        let web = device.kind == kind::WEBPUSH || device.kind == kind::UNIFIEDPUSH;
        let row = PushRow {
            id: crate::auth::new_token(),
            user_id: user.to_string(),
            kind: device.kind.to_string(),
            value: device.value,
            p256dh: device.keys.as_ref().map(|k| k.0.clone()),
            auth: device.keys.map(|k| k.1),
            app_name: device.app_name,
            device_id: device.device_id,
            voip: device.voip,
            activation_token: crate::auth::new_token(),
            activated: !web,
        };
        let row = self
            .inner
            .store
            .write(|tx| tx.upsert_push(&row, now_ms()))
            .map_err(|e| RegisterError::Store(e.to_string()))?;
        if web {
            let body = serde_json::json!({
                "type": "activation",
                "id": row.id,
                "activationToken": row.activation_token,
            });
            let message = Message {
                body: body.to_string().into_bytes(),
                topic: None,
                ttl: ACTIVATION_TTL,
                ring: false,
                title: "Calls will ring here".to_string(),
            };
            drop(self.deliver(row.clone(), message));
        }
        tracing::info!(user, device = %row.id, kind = %row.kind, "push device registered");
        Ok(row)
    }

    /// Confirms a Web Push or UnifiedPush registration with the token pushed through it.
    pub fn activate(&self, user: &str, id: &str, token: &str) -> Result<(), RegisterError> {
        self.inner.store.write(|tx| {
            let row = tx
                .push_registration(id)?
                .filter(|r| r.user_id == user)
                .ok_or(RegisterError::NotFound)?;
            if crate::auth::hash_token(&row.activation_token) != crate::auth::hash_token(token) {
                return Err(RegisterError::WrongToken);
            }
            tx.activate_push(id)?;
            Ok(())
        })
    }

    /// Removes a registration of `user` named by its id or value.
    pub fn unregister(&self, user: &str, token: &str) -> Result<(), RegisterError> {
        match self.inner.store.write(|tx| tx.delete_push(user, token)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegisterError::NotFound),
            Err(e) => Err(RegisterError::Store(e.to_string())),
        }
    }

    /// Sends `message` to the device in the background; the task's result is an [`outcome`].
    pub fn deliver(&self, device: PushRow, message: Message) -> JoinHandle<&'static str> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let Ok(_slot) = inner.slots.clone().acquire_owned().await else {
                return outcome::FAILED;
            };
            inner.deliver(&device, &message).await
        })
    }
}

impl Inner {
    async fn deliver(&self, device: &PushRow, message: &Message) -> &'static str {
        let attempts = self.config.attempts.get();
        for attempt in 1..=attempts {
            let request = match self.request(device, message).await {
                Ok(request) => request,
                Err(e) => {
                    tracing::warn!(device = %device.id, kind = %device.kind, error = %e, "push not sent");
                    return outcome::FAILED;
                }
            };
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    metrics::counter!("dialbridge_push_total", "result" => outcome::SENT)
                        .increment(1);
                    return outcome::SENT;
                }
                Ok(r) if matches!(r.status().as_u16(), 404 | 410) => {
                    tracing::info!(device = %device.id, status = r.status().as_u16(), "push registration gone; removed");
                    if let Err(e) = self.store.write(|tx| tx.drop_push(&device.id)) {
                        tracing::error!(error = %e, "cannot remove a gone push registration");
                    }
                    metrics::counter!("dialbridge_push_total", "result" => outcome::GONE)
                        .increment(1);
                    return outcome::GONE;
                }
                // Too large or malformed: the same message fails again.
                Ok(r) if matches!(r.status().as_u16(), 400 | 403 | 413) => {
                    tracing::warn!(device = %device.id, status = r.status().as_u16(), "push refused");
                    break;
                }
                Ok(r) => {
                    tracing::info!(device = %device.id, status = r.status().as_u16(), attempt, "push refused; may retry");
                }
                Err(e) => {
                    tracing::info!(device = %device.id, error = %e, attempt, "push not delivered; may retry");
                }
            }
            if attempt < attempts {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
        metrics::counter!("dialbridge_push_total", "result" => outcome::FAILED).increment(1);
        outcome::FAILED
    }

    /// `vapid t=JWT, k=KEY` (RFC 8292) for a push endpoint. Signed here rather than by
    /// web-push-native, whose `aud` leaves out the port (a UnifiedPush server on its own port
    /// would refuse the token).
    fn vapid_header(&self, endpoint: &axum::http::Uri, ttl: Duration) -> Result<String, String> {
        // RFC 8292: no more than 24 hours ahead; 12 leaves room for clocks that differ.
        let claims = Claims::create(ttl.min(Duration::from_secs(12 * 3600)).into())
            .with_audience(origin(endpoint).ok_or("the endpoint has no origin")?)
            .with_subject(&self.config.vapid_subject);
        let token = self.vapid.sign(claims).map_err(|e| e.to_string())?;
        Ok(format!("vapid t={token}, k={}", self.vapid_public))
    }

    /// The HTTP request of one attempt (Web Push messages are encrypted afresh each time).
    async fn request(
        &self,
        device: &PushRow,
        message: &Message,
    ) -> Result<reqwest::RequestBuilder, String> {
        match (device.kind.as_str(), &self.apns, &self.fcm) {
            (kind::APN, Some(apns), _) => return apns.request(device, message),
            (kind::GCM, _, Some(fcm)) => return fcm.request(device, message).await,
            (kind::WEBPUSH | kind::UNIFIEDPUSH, _, _) => {}
            (other, _, _) => return Err(format!("no credentials for {other} are configured")),
        }
        let mut builder = match (&device.p256dh, &device.auth) {
            (Some(p256dh), Some(auth)) => {
                let (point, secret) = subscription_keys(p256dh, auth)?;
                let endpoint: axum::http::Uri = device
                    .value
                    .parse()
                    .map_err(|_| "the endpoint is not a URL".to_string())?;
                let vapid = self.vapid_header(&endpoint, message.ttl)?;
                let request = WebPushBuilder::new(endpoint, point, secret)
                    .with_valid_duration(message.ttl)
                    .build(message.body.clone())
                    .map_err(|e| e.to_string())?;
                let (parts, body) = request.into_parts();
                self.client
                    .post(&device.value)
                    .headers(parts.headers)
                    .header(reqwest::header::AUTHORIZATION, vapid)
                    .body(body)
            }
            // A UnifiedPush distributor without keys takes the message as it is.
            _ => self
                .client
                .post(&device.value)
                .header("TTL", message.ttl.as_secs().to_string())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(message.body.clone()),
        };
        builder = builder.header("Urgency", "high");
        if let Some(topic) = &message.topic {
            builder = builder.header("Topic", topic);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_are_checked() {
        let point = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        assert!(subscription_keys(point, "BTBZMqHH6r4Tts7J_aSIgg").is_ok());
        assert!(subscription_keys(point, "BTBZMqHH6r4Tts7J_aSI").is_err());
        assert!(subscription_keys("AAAA", "BTBZMqHH6r4Tts7J_aSIgg").is_err());
        assert!(subscription_keys(point, "BTBZMqHH6r4Tts7J_aSIgg==").is_ok());
    }

    #[test]
    fn an_origin_keeps_a_port_that_is_not_the_default() {
        let of = |url: &str| origin(&url.parse().expect("uri"));
        assert_eq!(
            of("https://push.example:443/x").as_deref(),
            Some("https://push.example")
        );
        assert_eq!(
            of("http://127.0.0.1:8080/up?x=1").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            of("https://fcm.googleapis.com/fcm/send/abc").as_deref(),
            Some("https://fcm.googleapis.com")
        );
    }

    proptest! {
        #[test]
        fn any_key_text_is_an_answer_not_a_panic(p256dh in ".{0,100}", auth in ".{0,40}") {
            let _ = subscription_keys(&p256dh, &auth);
        }
    }
}
