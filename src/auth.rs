//! API tokens: how they are made, stored (only a hash) and checked.
//!
//! Tokens are 256 random bits, so a plain SHA-256 is enough to keep the store from holding usable
//! credentials; a slow password hash would only slow every request down.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::links::ProjectRow;
use crate::store::{Store, StoreError};

/// How a guest's id starts; user ids cannot contain `:`, so the two never meet.
pub const GUEST_PREFIX: &str = "guest:";

/// The authenticated caller of an API request: a user, or a guest of one call link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: String,
    pub display_name: String,
}

impl AuthUser {
    /// Whether this is a call link's guest (who may enter that link's room only).
    pub fn is_guest(&self) -> bool {
        self.id.starts_with(GUEST_PREFIX)
    }
}

pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a request is not authenticated; the message goes to the client as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required: send Authorization: Bearer TOKEN or Basic user:token (or, under /api/v1, X-Auth-Token and X-User-Id)")]
    Missing,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("invalid credentials")]
    Invalid,
    #[error("internal error")]
    Store,
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> AuthError {
        tracing::error!(error = %e, "store failed during authentication");
        AuthError::Store
    }
}

/// The seed's headers (Rocket.Chat's): the token in `X-Auth-Token`, its user in `X-User-Id`.
pub const AUTH_TOKEN_HEADER: &str = "x-auth-token";
pub const USER_ID_HEADER: &str = "x-user-id";

/// Checks a request's credentials: `Authorization`, or where `user_headers` (the `/api/v1`
/// family) `X-Auth-Token` with `X-User-Id`, which work as Basic `user:token` does.
pub fn authenticate_headers(
    store: &Store,
    headers: &axum::http::HeaderMap,
    user_headers: bool,
) -> Result<AuthUser, AuthError> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().map(str::trim));
    match (user_headers, text(AUTH_TOKEN_HEADER)) {
        (true, Some(token)) => {
            let token = token.map_err(|_| AuthError::Malformed)?;
            let user = text(USER_ID_HEADER)
                .ok_or(AuthError::Malformed)?
                .map_err(|_| AuthError::Malformed)?;
            check(store, Some(user.to_string()), token.to_string())
        }
        _ => {
            let header = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            authenticate(store, header)
        }
    }
}

/// Checks an `Authorization` header value: `Bearer TOKEN`, or `Basic base64(user:token)` where the
/// token must belong to that user.
pub fn authenticate(store: &Store, header: Option<&str>) -> Result<AuthUser, AuthError> {
    let header = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, value) = header.split_once(' ').ok_or(AuthError::Malformed)?;
    let value = value.trim();
    let (claimed_user, token) = if scheme.eq_ignore_ascii_case("bearer") {
        (None, value.to_string())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(value).map_err(|_| AuthError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (user, token) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        (Some(user.to_string()), token.to_string())
    } else {
        return Err(AuthError::Malformed);
    };
    check(store, claimed_user, token)
}

/// The user of `token`, which must be `claimed_user` when one is named.
fn check(
    store: &Store,
    claimed_user: Option<String>,
    token: String,
) -> Result<AuthUser, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Invalid);
    }
    let hash = hash_token(&token);
    let user = store.write(|tx| {
        if let Some(user) = tx.user_by_token_hash(&hash)? {
            return Ok(Some(AuthUser {
                id: user.id,
                display_name: user.display_name,
            }));
        }
        // Guest passes work as Bearer tokens only (a guest id holds a colon).
        if claimed_user.is_some() {
            return Ok(None);
        }
        Ok::<_, StoreError>(tx.guest_by_token_hash(&hash)?.map(|g| AuthUser {
            id: g.id,
            display_name: g.display_name,
        }))
    })?;
    let user = user.ok_or(AuthError::Invalid)?;
    if claimed_user.is_some_and(|claimed| claimed != user.id) {
        return Err(AuthError::Invalid);
    }
    Ok(user)
}

/// Checks a project API token (`Authorization: Bearer TOKEN`): the project it belongs to.
pub fn authenticate_project(store: &Store, header: Option<&str>) -> Result<ProjectRow, AuthError> {
    let header = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = header.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    store
        .write(|tx| tx.project_by_token_hash(&hash_token(token)))?
        .ok_or(AuthError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_alice() -> (Store, String) {
        let store = Store::open_in_memory().expect("store");
        let token = new_token();
        store
            .write(|tx| tx.upsert_user("alice", "Alice", &hash_token(&token), 0))
            .expect("user");
        (store, token)
    }

    #[test]
    fn bearer_and_basic() {
        let (store, token) = store_with_alice();
        let user = authenticate(&store, Some(&format!("Bearer {token}"))).expect("bearer");
        assert_eq!(user.id, "alice");
        let basic = STANDARD.encode(format!("alice:{token}"));
        assert_eq!(
            authenticate(&store, Some(&format!("Basic {basic}")))
                .expect("basic")
                .id,
            "alice"
        );
        let wrong_user = STANDARD.encode(format!("bob:{token}"));
        assert_eq!(
            authenticate(&store, Some(&format!("Basic {wrong_user}"))),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn user_headers_work_only_where_allowed() {
        let (store, token) = store_with_alice();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(AUTH_TOKEN_HEADER, token.parse().expect("value"));
        assert_eq!(
            authenticate_headers(&store, &headers, true),
            Err(AuthError::Malformed)
        );
        headers.insert(USER_ID_HEADER, "alice".parse().expect("value"));
        assert_eq!(
            authenticate_headers(&store, &headers, true)
                .expect("user headers")
                .id,
            "alice"
        );
        assert_eq!(
            authenticate_headers(&store, &headers, false),
            Err(AuthError::Missing)
        );
        headers.insert(USER_ID_HEADER, "bob".parse().expect("value"));
        assert_eq!(
            authenticate_headers(&store, &headers, true),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn refusals() {
        let (store, _) = store_with_alice();
        assert_eq!(authenticate(&store, None), Err(AuthError::Missing));
        assert_eq!(
            authenticate(&store, Some("Bearer nope")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            authenticate(&store, Some("Bearer ")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            authenticate(&store, Some("Token x")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            authenticate(&store, Some("Basic %%%")),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn tokens_are_distinct_and_hash_is_stable() {
        assert_ne!(new_token(), new_token());
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
