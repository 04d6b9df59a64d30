//! FCM HTTP v1: a service account's OAuth2 token (an RS256 JWT exchanged at its token endpoint,
//! kept until shortly before it expires) and high-priority data messages, collapsed by call so a
//! call's end replaces an undelivered ring.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use web_push_native::jwt_simple::algorithms::{RS256KeyPair, RSAKeyPairLike};
use web_push_native::jwt_simple::claims::Claims;

use super::message::Message;
use crate::config::FcmConfig;
use crate::store::push::PushRow;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// `urn:ietf:params:oauth:grant-type:jwt-bearer`, form-encoded.
const GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// The fields of a service account key file that matter here.
#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    token_uri: Option<String>,
}

#[derive(serde::Serialize, Deserialize)]
struct Scope {
    scope: String,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
    expires_in: u64,
}

pub(super) struct Fcm {
    project_id: String,
    client_email: String,
    key: RS256KeyPair,
    token_url: String,
    send_url: String,
    client: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
}

impl Fcm {
    pub(super) fn new(config: &FcmConfig, timeout: Duration) -> anyhow::Result<Fcm> {
        let path = &config.service_account;
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "push.fcm.service_account: cannot read {}: {e}",
                path.display()
            )
        })?;
        let account: ServiceAccount = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("push.fcm.service_account: not a service account key file: {e}")
        })?;
        let key = RS256KeyPair::from_pem(&account.private_key).map_err(|e| {
            anyhow::anyhow!("push.fcm.service_account: private_key is not an RSA key: {e}")
        })?;
        let token_url = config
            .token_url
            .as_ref()
            .map(|u| u.0.clone())
            .or(account.token_uri)
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".to_string());
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            config.url.0.trim_end_matches('/'),
            account.project_id
        );
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Fcm {
            project_id: account.project_id,
            client_email: account.client_email,
            key,
            token_url,
            send_url,
            client,
            token: Mutex::new(None),
        })
    }

    /// An access token for FCM, fetched when there is none or it expires within a minute.
    async fn access_token(&self) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let mut claims = Claims::with_custom_claims(
            Scope {
                scope: SCOPE.to_string(),
            },
            Duration::from_secs(3600).into(),
        )
        .with_issuer(&self.client_email)
        .with_audience(&self.token_url);
        claims.invalid_before = None;
        let assertion = self.key.sign(claims).map_err(|e| e.to_string())?;
        let response = self
            .client
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(format!("grant_type={GRANT}&assertion={assertion}"))
            .send()
            .await
            .map_err(|e| format!("FCM token endpoint: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "FCM token endpoint refused the service account ({})",
                response.status()
            ));
        }
        let token: Token = response
            .json()
            .await
            .map_err(|e| format!("FCM token endpoint: {e}"))?;
        let until = Instant::now() + Duration::from_secs(token.expires_in.saturating_sub(60));
        *cached = Some((token.access_token.clone(), until));
        tracing::debug!(project = %self.project_id, "FCM access token fetched");
        Ok(token.access_token)
    }

    /// The request of one data message to `device` (FCM data values are strings).
    pub(super) async fn request(
        &self,
        device: &PushRow,
        message: &Message,
    ) -> Result<reqwest::RequestBuilder, String> {
        let payload: Value = serde_json::from_slice(&message.body).unwrap_or_else(|_| json!({}));
        let data: BTreeMap<String, String> = payload
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => (k.clone(), s.clone()),
                other => (k.clone(), other.to_string()),
            })
            .collect();
        let mut android = json!({
            "priority": "HIGH",
            "ttl": format!("{}s", message.ttl.as_secs()),
        });
        if let Some(topic) = &message.topic {
            android["collapse_key"] = json!(topic);
        }
        let body = json!({"message": {"token": device.value, "data": data, "android": android}});
        Ok(self
            .client
            .post(&self.send_url)
            .bearer_auth(self.access_token().await?)
            .json(&body))
    }
}
