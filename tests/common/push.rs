//! A push service on loopback for tests: it takes Web Push / UnifiedPush messages the way a
//! real one does, and reads them the way a device does: it decrypts each RFC 8291 message with the
//! subscription's private key (the `ece` crate, independent of the gateway's implementation) and
//! verifies the RFC 8292 VAPID token (ES256) against the key it names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// How an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 201 Created.
    Accept,
    /// 410 Gone: the subscription no longer exists.
    Gone,
    /// Answers 201 only after 10 seconds.
    Slow,
}

/// One message as the push service received it.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The name of a `/push/{name}` endpoint, or any other path as it came.
    pub endpoint: String,
    pub version: axum::http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Whether the push service has answered it (a slow endpoint answers late).
    pub answered: Arc<std::sync::atomic::AtomicBool>,
}

struct Shared {
    modes: Mutex<HashMap<String, Mode>>,
    received: mpsc::UnboundedSender<Pushed>,
}

pub struct PushService {
    pub base: String,
    shared: Arc<Shared>,
    received: mpsc::UnboundedReceiver<Pushed>,
}

/// A browser's subscription: its keys, and the JSON the browser would hand the gateway.
pub struct Subscription {
    pub endpoint: String,
    keys: Box<dyn ece::LocalKeyPair>,
    auth: [u8; 16],
}

impl Subscription {
    /// `PushSubscription.toJSON()`.
    pub fn json(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.keys.pub_as_raw().expect("public key")),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            },
        })
    }

    /// Decrypts a message to this subscription (RFC 8291 aes128gcm) as JSON.
    pub fn open(&self, pushed: &Pushed) -> Value {
        assert_eq!(
            pushed.headers["content-encoding"], "aes128gcm",
            "an RFC 8291 message"
        );
        let components = self.keys.raw_components().expect("key components");
        let plain = ece::decrypt(&components, &self.auth, &pushed.body).expect("decrypts");
        serde_json::from_slice(&plain).expect("a JSON payload")
    }
}

impl PushService {
    pub async fn start() -> PushService {
        let (tx, received) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            modes: Mutex::new(HashMap::new()),
            received: tx,
        });
        let app = Router::new()
            .route("/push/{name}", post(take))
            .fallback(take_any)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        PushService {
            base,
            shared,
            received,
        }
    }

    /// A new subscription at endpoint `/push/{name}`.
    pub fn subscribe(&self, name: &str) -> Subscription {
        let (keys, auth) = ece::generate_keypair_and_auth_secret().expect("keys");
        Subscription {
            endpoint: format!("{}/push/{name}", self.base),
            keys,
            auth,
        }
    }

    pub fn set_mode(&self, name: &str, mode: Mode) {
        self.shared
            .modes
            .lock()
            .expect("modes")
            .insert(name.to_string(), mode);
    }

    /// The next message received, failing the test if none comes in time.
    pub async fn next(&mut self) -> Pushed {
        tokio::time::timeout(Duration::from_secs(30), self.received.recv())
            .await
            .expect("a push in time")
            .expect("push service running")
    }

    /// The next messages, `count` of them, by endpoint.
    pub async fn next_each(&mut self, count: usize) -> HashMap<String, Pushed> {
        let mut by_endpoint = HashMap::new();
        for _ in 0..count {
            let pushed = self.next().await;
            by_endpoint.insert(pushed.endpoint.clone(), pushed);
        }
        by_endpoint
    }
}

/// The access token the stand-in OAuth2 endpoint (`/token`) hands out.
pub const ACCESS_TOKEN: &str = "ya29.test-access-token";

/// Any other request (an APNs or FCM stand-in's): recorded by its path, answered 200; `/token`
/// answers as Google's OAuth2 token endpoint does.
async fn take_any(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let _ = shared.received.send(Pushed {
        endpoint: parts.uri.path().to_string(),
        version: parts.version,
        headers: parts.headers,
        body,
        answered: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    });
    if parts.uri.path() == "/token" {
        return axum::Json(
            json!({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
        )
        .into_response();
    }
    StatusCode::OK.into_response()
}

async fn take(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mode = shared
        .modes
        .lock()
        .expect("modes")
        .get(&name)
        .copied()
        .unwrap_or(Mode::Accept);
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _ = shared.received.send(Pushed {
        endpoint: name,
        version,
        headers,
        body,
        answered: answered.clone(),
    });
    let status = match mode {
        Mode::Accept => StatusCode::CREATED,
        Mode::Gone => StatusCode::GONE,
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            StatusCode::CREATED
        }
    };
    answered.store(true, std::sync::atomic::Ordering::SeqCst);
    status
}

/// Checks a message's VAPID authorization (`vapid t=JWT, k=KEY`): the ES256 signature with the
/// key it names, which must be `public_key`, and its claims. Returns the claims.
pub fn verify_vapid(pushed: &Pushed, public_key: &str, audience: &str) -> Value {
    let header = pushed.headers["authorization"]
        .to_str()
        .expect("ascii authorization");
    let rest = header.strip_prefix("vapid ").expect("vapid scheme");
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .expect("vapid field")
            .to_string()
    };
    let (jwt, k) = (field("t"), field("k"));
    assert_eq!(k, public_key, "the gateway's VAPID key");
    let (_, claims) = verify_es256(&jwt, &URL_SAFE_NO_PAD.decode(&k).expect("b64"));
    assert_eq!(claims["aud"], audience, "aud is the push service's origin");
    assert!(claims["sub"]
        .as_str()
        .is_some_and(|s| s.starts_with("mailto:")));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(
        exp > now && exp <= now + 24 * 3600,
        "exp within a day: {claims}"
    );
    claims
}

/// Verifies an ES256 JWT with the P-256 public key `key` (SEC1 bytes); its header and claims.
pub fn verify_es256(jwt: &str, key: &[u8]) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {jwt}");
    let json = |part: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
    };
    let head = json(parts[0]);
    assert_eq!(head["alg"], "ES256");
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key).expect("a P-256 key");
    let signature =
        p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).expect("b64"))
            .expect("an ES256 signature");
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the ES256 signature verifies");
    (head, json(parts[1]))
}
