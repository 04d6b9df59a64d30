//! APNs (HTTP/2, token-based auth): a call rings a VoIP token with a VoIP push to the
//! `<bundle>.voip` topic (the app reports it to CallKit) and other tokens with an alert push; a
//! call's end is an alert push with the ring's collapse id, so an undelivered ring is replaced.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use web_push_native::jwt_simple::algorithms::{ECDSAP256KeyPairLike, ES256KeyPair};
use web_push_native::jwt_simple::claims::Claims;

use super::message::Message;
use crate::config::ApnsConfig;
use crate::store::push::PushRow;
use crate::sync::lock;

/// A provider token is good for an hour; APNs refuses new ones more often than every 20 minutes.
const TOKEN_LIFE: Duration = Duration::from_secs(40 * 60);

pub(super) struct Apns {
    config: ApnsConfig,
    key: ES256KeyPair,
    client: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
}

impl Apns {
    pub(super) fn new(config: ApnsConfig, timeout: Duration) -> anyhow::Result<Apns> {
        let pem = std::fs::read_to_string(&config.key).map_err(|e| {
            anyhow::anyhow!("push.apns.key: cannot read {}: {e}", config.key.display())
        })?;
        let key = ES256KeyPair::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("push.apns.key: not a .p8 (PKCS#8 P-256) key: {e}"))?
            .with_key_id(&config.key_id);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .http2_prior_knowledge()
            .build()?;
        Ok(Apns {
            config,
            key,
            client,
            token: Mutex::new(None),
        })
    }

    /// The provider token (ES256, `kid` the key id, `iss` the team, `iat`), reused while fresh.
    fn token(&self) -> Result<String, String> {
        let mut cached = lock(&self.token);
        if let Some((token, made)) = cached.as_ref() {
            if made.elapsed() < TOKEN_LIFE {
                return Ok(token.clone());
            }
        }
        let mut claims =
            Claims::create(Duration::from_secs(3600).into()).with_issuer(&self.config.team_id);
        // APNs reads `iss` and `iat` only.
        claims.expires_at = None;
        claims.invalid_before = None;
        let token = self.key.sign(claims).map_err(|e| e.to_string())?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// The request of one push to `device`.
    pub(super) fn request(
        &self,
        device: &PushRow,
        message: &Message,
    ) -> Result<reqwest::RequestBuilder, String> {
        let payload: Value = serde_json::from_slice(&message.body).unwrap_or_else(|_| json!({}));
        let voip = device.voip && message.ring;
        let mut body = match payload {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let (topic, push_type) = if voip {
            body.insert("aps".into(), json!({}));
            (format!("{}.voip", self.config.bundle_id), "voip")
        } else {
            let mut aps = json!({"alert": {"title": message.title, "body": body.get("message").cloned().unwrap_or(Value::Null)}});
            if message.ring {
                aps["sound"] = json!("default");
                aps["category"] = json!("INCOMING_CALL");
            }
            body.insert("aps".into(), aps);
            (self.config.bundle_id.clone(), "alert")
        };
        let expiration = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + message.ttl.as_secs();
        let url = format!(
            "{}/3/device/{}",
            self.config.url.0.trim_end_matches('/'),
            device.value
        );
        let mut request = self
            .client
            .post(url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("bearer {}", self.token()?),
            )
            .header("apns-topic", topic)
            .header("apns-push-type", push_type)
            .header("apns-priority", "10")
            .header("apns-expiration", expiration.to_string())
            .json(&Value::Object(body));
        if let Some(id) = &message.topic {
            request = request.header("apns-collapse-id", id);
        }
        Ok(request)
    }
}
