//! The OCS envelope of the Talk-compatible API, its errors, and request parameters.
//!
//! Talk clients send parameters as JSON, as form fields or in the query string; all three are accepted
//! and merged (body over query), with numbers and booleans accepted as strings too.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use crate::room::{ErrorKind, RoomError};

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// A successful OCS answer.
pub struct Ocs<T> {
    pub status: StatusCode,
    pub data: T,
    pub headers: Vec<(header::HeaderName, String)>,
}

impl<T: Serialize> Ocs<T> {
    pub fn ok(data: T) -> Ocs<T> {
        Ocs {
            status: StatusCode::OK,
            data,
            headers: Vec::new(),
        }
    }

    pub fn created(data: T) -> Ocs<T> {
        Ocs {
            status: StatusCode::CREATED,
            ..Ocs::ok(data)
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: String) -> Ocs<T> {
        self.headers.push((name, value));
        self
    }
}

impl<T: Serialize> IntoResponse for Ocs<T> {
    fn into_response(self) -> Response {
        let body = json!({"ocs": {
            "meta": {"status": "ok", "statuscode": self.status.as_u16(), "message": "OK"},
            "data": self.data,
        }});
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = value.parse() {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

/// A failed OCS answer: the HTTP status, Talk's short `error` word in `data`, and a message for people.
#[derive(Debug)]
pub struct OcsError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

impl OcsError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> OcsError {
        OcsError {
            status,
            error,
            message: message.into(),
        }
    }

    pub fn bad_request(error: &'static str, message: impl Into<String>) -> OcsError {
        OcsError::new(StatusCode::BAD_REQUEST, error, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> OcsError {
        OcsError::new(StatusCode::UNAUTHORIZED, "auth", message)
    }

    pub fn internal() -> OcsError {
        OcsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<RoomError> for OcsError {
    fn from(e: RoomError) -> OcsError {
        let status = match e.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Lobby => StatusCode::PRECONDITION_FAILED,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        OcsError::new(status, e.error, e.message)
    }
}

impl IntoResponse for OcsError {
    fn into_response(self) -> Response {
        tracing::info!(status = self.status.as_u16(), error = self.error, message = %self.message, "request refused");
        let mut response = (
            self.status,
            Json(json!({"ocs": {
                "meta": {"status": "failure", "statuscode": self.status.as_u16(), "message": self.message},
                "data": {"error": self.error},
            }})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"dialbridge\""),
            );
        }
        response
    }
}

/// Request parameters from the query string and the body (JSON or form).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Params<T> {
    type Rejection = OcsError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, OcsError> {
        let mut merged = Map::new();
        if let Some(query) = request.uri().query() {
            merge_form(&mut merged, query.as_bytes());
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                OcsError::bad_request("body", format!("request body larger than {MAX_BODY} bytes"))
            })?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            if content_type.starts_with("application/x-www-form-urlencoded") {
                merge_form(&mut merged, &body);
            } else {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(fields)) => merged.extend(fields),
                    Ok(_) => {
                        return Err(OcsError::bad_request(
                            "body",
                            "the JSON body must be an object",
                        ))
                    }
                    Err(e) => {
                        return Err(OcsError::bad_request(
                            "body",
                            format!("malformed JSON body: {e}"),
                        ))
                    }
                }
            }
        }
        serde_path_to_error::deserialize(Value::Object(merged))
            .map(Params)
            .map_err(|e| {
                let field = e.path().to_string();
                OcsError::bad_request(
                    "parameter",
                    format!("parameter `{field}`: {}", e.into_inner()),
                )
            })
    }
}

fn merge_form(into: &mut Map<String, Value>, raw: &[u8]) {
    for (key, value) in form_urlencoded_pairs(raw) {
        into.insert(key, Value::String(value));
    }
}

fn form_urlencoded_pairs(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut parts = pair.splitn(2, |b| *b == b'=');
            let key = percent_decode(parts.next().unwrap_or_default());
            let value = percent_decode(parts.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => {
                let hex = std::str::from_utf8(&raw[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Field deserializers that accept the string forms query strings and forms carry.
pub mod lenient {
    use super::*;

    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not an integer"))),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an integer"))),
            other => Err(serde::de::Error::custom(format!(
                "`{other}` is not an integer"
            ))),
        }
    }

    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(b)),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(Some(false)),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(Some(true)),
            Value::String(s) if s == "true" || s == "1" => Ok(Some(true)),
            Value::String(s) if s == "false" || s == "0" || s.is_empty() => Ok(Some(false)),
            other => Err(serde::de::Error::custom(format!(
                "`{other}` is not a boolean"
            ))),
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "`{other}` is not a string"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_forms() {
        assert_eq!(
            form_urlencoded_pairs(b"a=1&b=x+y&c=%2B49&d&e=%zz&f=%4"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "+49".into()),
                ("d".into(), "".into()),
                ("e".into(), "%zz".into()),
                ("f".into(), "%4".into()),
            ]
        );
    }

    proptest! {
        #[test]
        fn form_decoder_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = form_urlencoded_pairs(&raw);
        }
    }
}
