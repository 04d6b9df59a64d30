//! The OCS envelope of the Talk-compatible API, its errors, and request parameters.
//!
//! Talk clients send parameters as JSON, as form fields or in the query string; all three are accepted
//! and merged (body over query). JSON values must have the documented type; text is parsed.

use std::collections::BTreeMap;
use std::fmt;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::LengthLimitError;
use serde::de::value::MapDeserializer;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::{json, Value};

use crate::room::{ErrorKind, RoomError};

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// A successful OCS answer.
pub(super) struct Ocs<T> {
    pub status: StatusCode,
    pub data: T,
    pub headers: Vec<(header::HeaderName, String)>,
}

impl<T: Serialize> Ocs<T> {
    pub(super) fn ok(data: T) -> Ocs<T> {
        Ocs {
            status: StatusCode::OK,
            data,
            headers: Vec::new(),
        }
    }

    pub(super) fn created(data: T) -> Ocs<T> {
        Ocs {
            status: StatusCode::CREATED,
            ..Ocs::ok(data)
        }
    }

    pub(super) fn with_header(mut self, name: header::HeaderName, value: String) -> Ocs<T> {
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
            ErrorKind::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        OcsError::new(status, e.error, e.message)
    }
}

impl From<PathRejection> for OcsError {
    fn from(e: PathRejection) -> OcsError {
        if e.status().is_server_error() {
            tracing::error!(error = %e.body_text(), "path parameters do not fit the route");
            return OcsError::internal();
        }
        OcsError::new(
            StatusCode::NOT_FOUND,
            "path",
            format!("the path names nothing: {}", e.body_text()),
        )
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

/// Request parameters from the query string and the body (JSON or form), body over query.
///
/// Types are strict where the client chose them: a JSON value must have the field's type (an integer
/// for an integer, a string for a string, a boolean for a boolean) and may not be null unless the field
/// says so. Query strings and forms carry only text, which is parsed into the field's type.
pub(super) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Params<T> {
    type Rejection = OcsError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, OcsError> {
        let mut merged = BTreeMap::new();
        if let Some(query) = request.uri().query() {
            merge_form(&mut merged, query.as_bytes());
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = read_body(request.into_body(), MAX_BODY).await?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            if content_type.starts_with("application/x-www-form-urlencoded") {
                merge_form(&mut merged, &body);
            } else {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(fields)) => merged.extend(
                        fields
                            .into_iter()
                            .map(|(name, value)| (name, Param::Json(value))),
                    ),
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
        let fields = MapDeserializer::<_, serde_json::Error>::new(merged.into_iter());
        serde_path_to_error::deserialize(fields)
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

/// Reads a request body of at most `limit` bytes; a larger one is refused with 413.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, OcsError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.into_inner().is::<LengthLimitError>() {
            OcsError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
                format!("the request body is larger than {limit} bytes"),
            )
        } else {
            OcsError::bad_request("body", "the request body could not be read")
        }
    })
}

/// A field that may be absent (`None`), null (`Some(None)`, e.g. "clear it") or a string.
pub(super) fn clearable_string<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    struct Clearable;
    impl<'de> Visitor<'de> for Clearable {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<String>, E> {
            Ok(Some(s.to_string()))
        }
    }
    // `Param` hands null to `deserialize_any` as unit; only `Option` fields refuse it.
    d.deserialize_any(Clearable).map(Some)
}

/// One parameter: typed when it came in a JSON body, text when it came from a query string or form.
enum Param {
    Json(Value),
    Text(String),
}

fn merge_form(into: &mut BTreeMap<String, Param>, raw: &[u8]) {
    for (key, value) in form_urlencoded_pairs(raw) {
        into.insert(key, Param::Text(value));
    }
}

pub(super) fn form_urlencoded_pairs(raw: &[u8]) -> Vec<(String, String)> {
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

/// What a JSON value is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(value: &Value, expected: &str) -> serde_json::Error {
    de::Error::custom(format!("expected {expected}, not {}", kind(value)))
}

impl Param {
    fn integer(self) -> Result<i64, serde_json::Error> {
        const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
        match self {
            // JSON Schema counts 2.0 as an integer, so the server does too.
            Param::Json(Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && (-LIMIT..LIMIT).contains(f))
                        .map(|f| f as i64)
                })
                .ok_or_else(|| de::Error::custom(format!("`{n}` is not a 64-bit integer"))),
            Param::Json(other) => Err(wrong_type(&other, "an integer")),
            Param::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| de::Error::custom(format!("`{s}` is not an integer"))),
        }
    }
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Param {
    type Deserializer = Param;
    fn into_deserializer(self) -> Param {
        self
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
            visitor.visit_i64(self.integer()?)
        }
    )*};
}

impl<'de> Deserializer<'de> for Param {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        match self {
            Param::Json(value) => value.deserialize_any(visitor),
            Param::Text(s) => visitor.visit_string(s),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self {
            Param::Json(Value::Null) => Err(de::Error::custom("null is not allowed here")),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        match self {
            Param::Json(Value::Bool(b)) => visitor.visit_bool(b),
            Param::Json(other) => Err(wrong_type(&other, "a boolean")),
            // As PHP reads form fields: `all=1`, `all=true`, `all=` (false).
            Param::Text(s) => match s.as_str() {
                "true" | "1" => visitor.visit_bool(true),
                "false" | "0" | "" => visitor.visit_bool(false),
                _ => Err(de::Error::custom(format!("`{s}` is not a boolean"))),
            },
        }
    }

    integers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    fn deserialize_string<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self {
            Param::Json(Value::String(s)) | Param::Text(s) => visitor.visit_string(s),
            Param::Json(other) => Err(wrong_type(&other, "a string")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 f32 f64 char bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

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

    #[derive(Deserialize)]
    struct Sample {
        n: Option<i64>,
        s: Option<String>,
        b: Option<bool>,
    }

    fn sample(name: &str, value: Param) -> Result<Sample, serde_json::Error> {
        Sample::deserialize(MapDeserializer::new(
            [(name.to_string(), value)].into_iter(),
        ))
    }

    #[test]
    fn json_values_keep_their_types_and_text_is_parsed() {
        let json = |v: Value| Param::Json(v);
        let text = |s: &str| Param::Text(s.to_string());
        assert_eq!(
            sample("n", json(json!(2.0))).ok().map(|p| p.n),
            Some(Some(2))
        );
        assert_eq!(sample("n", text(" 3 ")).ok().map(|p| p.n), Some(Some(3)));
        assert_eq!(
            sample("s", text("0")).ok().map(|p| p.s),
            Some(Some("0".into()))
        );
        assert_eq!(sample("b", text("1")).ok().map(|p| p.b), Some(Some(true)));
        assert_eq!(sample("b", text("")).ok().map(|p| p.b), Some(Some(false)));
        assert_eq!(
            sample("b", json(json!(true))).ok().map(|p| p.b),
            Some(Some(true))
        );
        assert_eq!(
            sample("other", json(Value::Null)).ok().map(|p| p.n),
            Some(None)
        );
        for (name, refused) in [
            ("s", json(json!(0))),
            ("n", json(json!("3"))),
            ("n", json(json!(2.5))),
            ("n", json(json!(1e19))),
            ("n", text("x")),
            ("b", json(json!(1))),
            ("b", text("yes")),
            ("n", json(Value::Null)),
            ("s", json(Value::Null)),
            ("b", json(Value::Null)),
        ] {
            assert!(sample(name, refused).is_err(), "{name}");
        }
    }

    proptest! {
        #[test]
        fn form_decoder_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = form_urlencoded_pairs(&raw);
        }
    }
}
