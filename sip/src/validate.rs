//! Decides what to do with a received message before any transaction sees it: accept it, answer a
//! malformed or unsupported request with the right 4xx/5xx (RFC 3261 sections 8.2 and 16.3), or drop a
//! malformed response. The contract is the RFC 4475 / RFC 5118 torture table in the conformance data.

use crate::message::{
    request_line_version, Head, Headers, Limits, Message, Method, ParseError, ParseErrorKind,
    Request, Response, StartLine, Uri,
};

/// What the gateway supports; used for 420, 415 and 406 decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Option tags accepted in Require (RFC 3261 section 8.2.2.3).
    pub supported: Vec<String>,
    /// Body types understood in requests that carry a session description.
    pub accepted_body_types: Vec<String>,
    /// Body types the gateway answers INVITEs with (checked against Accept).
    pub answer_body_types: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            supported: Vec::new(),
            accepted_body_types: vec!["application/sdp".into(), "multipart/mixed".into()],
            answer_body_types: vec!["application/sdp".into()],
        }
    }
}

/// Why a request is rejected: the status code, the response to send and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub error: ParseError,
    /// Headers the response must carry besides the copied ones (Unsupported, Accept).
    pub extra_headers: Vec<(String, String)>,
}

impl Rejection {
    fn new(code: u16, error: ParseError) -> Self {
        Rejection {
            code,
            error,
            extra_headers: Vec::new(),
        }
    }

    /// Builds the response from the request's headers (To tag not added).
    pub fn response(&self, request_headers: &Headers) -> Response {
        let mut r = Response::from_request_headers(
            request_headers,
            self.code,
            crate::message::reason_phrase(self.code),
        );
        for (n, v) in &self.extra_headers {
            r.headers.push(n, v.clone());
        }
        r
    }
}

/// The outcome of receiving one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A well-formed message for the transaction layer.
    Accept(Message),
    /// A request to answer with `response` (already built, To tag not added).
    Reject {
        response: Response,
        error: ParseError,
    },
    /// Discard silently (malformed response, or a request that cannot be answered); log `error`.
    Drop { error: ParseError },
    /// Only CRLFs: a keep-alive, nothing to do.
    KeepAlive,
}

/// Parses and validates one datagram (or one framed stream message).
pub fn check_datagram(bytes: &[u8], limits: &Limits, policy: &Policy) -> Verdict {
    if bytes.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Verdict::KeepAlive;
    }
    if bytes.len() > limits.max_message_size {
        return Verdict::Drop {
            error: ParseError::too_large(format!(
                "message of {} bytes exceeds {}",
                bytes.len(),
                limits.max_message_size
            )),
        };
    }
    let head = match Head::parse(bytes, limits) {
        Ok(h) => h,
        Err(error) => return Verdict::Drop { error },
    };
    let is_request = head.is_request();
    let headers = head.headers.clone();
    // An ACK is never answered (RFC 3261 section 17.2.1), however malformed.
    let is_ack = matches!(&head.start, StartLine::Request { line } if line.starts_with("ACK "));
    let reject = |rej: Rejection| -> Verdict {
        if headers.top_via_lenient().is_err() || is_ack {
            // No usable Via: a response could not be routed.
            return Verdict::Drop { error: rej.error };
        }
        Verdict::Reject {
            response: rej.response(&headers),
            error: rej.error,
        }
    };
    if let StartLine::Request { line } = &head.start {
        if let Err(e) = crate::message::check_version(request_line_version(line)) {
            return reject(Rejection::new(505, e));
        }
    }
    let message = head
        .datagram_body(bytes)
        .map(<[u8]>::to_vec)
        .and_then(|body| head.into_message(body));
    match (message, is_request) {
        (Ok(Message::Request(req)), _) => match validate_request(&req, policy) {
            Ok(()) => Verdict::Accept(Message::Request(req)),
            Err(rej) => reject(rej),
        },
        (Ok(Message::Response(resp)), _) => match validate_response(&resp) {
            Ok(()) => Verdict::Accept(Message::Response(resp)),
            Err(error) => Verdict::Drop { error },
        },
        (Err(e), true) => {
            let code = if e.kind == ParseErrorKind::Version {
                505
            } else {
                400
            };
            reject(Rejection::new(code, e))
        }
        (Err(error), false) => Verdict::Drop { error },
    }
}

/// Header-level checks shared by requests and responses.
fn check_common(h: &Headers) -> Result<(), ParseError> {
    let vias = h.via()?;
    if vias.is_empty() {
        return Err(ParseError::syntax("Via: missing"));
    }
    h.from()?;
    h.to()?;
    h.call_id()?;
    h.cseq()?;
    h.max_forwards()?;
    h.content_length()?;
    h.content_type()?;
    h.contact()?;
    h.route()?;
    h.record_route()?;
    h.require()?;
    Ok(())
}

/// Checks a parsed request. `Err` carries the status code to answer with.
pub fn validate_request(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    let bad = |e: ParseError| Rejection::new(400, e);
    check_common(&req.headers).map_err(bad)?;
    let cseq = req.headers.cseq().map_err(bad)?;
    if cseq.method != req.method {
        return Err(bad(ParseError::syntax(format!(
            "CSeq: method {} differs from the request method {}",
            cseq.method, req.method
        ))));
    }
    if let Uri::Other { scheme, .. } = &req.uri {
        return Err(Rejection::new(
            416,
            ParseError::syntax(format!("Request-URI: unsupported scheme {scheme:?}")),
        ));
    }
    // ACK and CANCEL are never answered with 420 (RFC 3261 section 8.2.2.3).
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<String> = req
            .headers
            .require()
            .map_err(bad)?
            .into_iter()
            .filter(|t| !policy.supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            let mut rej = Rejection::new(
                420,
                ParseError::syntax(format!("Require: unsupported {}", unsupported.join(", "))),
            );
            rej.extra_headers
                .push(("Unsupported".into(), unsupported.join(", ")));
            return Err(rej);
        }
    }
    let session_method = matches!(req.method, Method::Invite | Method::Update | Method::Prack);
    if session_method && !req.body.is_empty() {
        if let Some(ct) = req.headers.content_type().map_err(bad)? {
            let essence = ct.essence();
            if !policy.accepted_body_types.contains(&essence) {
                let mut rej = Rejection::new(
                    415,
                    ParseError::syntax(format!("Content-Type: {essence} is not supported")),
                );
                rej.extra_headers
                    .push(("Accept".into(), policy.accepted_body_types.join(", ")));
                return Err(rej);
            }
        }
    }
    if req.method == Method::Invite {
        if let Some(accept) = req.headers.accept().map_err(bad)? {
            let ok = accept.is_empty()
                || accept.iter().any(|a| {
                    a == "*/*"
                        || policy.answer_body_types.iter().any(|t| {
                            t == a || (a.ends_with("/*") && t.starts_with(&a[..a.len() - 1]))
                        })
                });
            if !ok {
                let mut rej = Rejection::new(
                    406,
                    ParseError::syntax(format!(
                        "Accept: none of {} can be produced",
                        accept.join(", ")
                    )),
                );
                rej.extra_headers
                    .push(("Accept".into(), policy.answer_body_types.join(", ")));
                return Err(rej);
            }
        }
    }
    Ok(())
}

/// Checks a parsed response; a malformed one is dropped.
pub fn validate_response(resp: &Response) -> Result<(), ParseError> {
    check_common(&resp.headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(s: &str) -> Verdict {
        check_datagram(s.as_bytes(), &Limits::default(), &Policy::default())
    }

    #[test]
    fn bad_extension_lists_unsupported() {
        let v = verdict(
            "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
To: <sip:a@example.com>\r\nFrom: <sip:b@example.com>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\
Require: foo, 100rel\r\nContent-Length: 0\r\n\r\n",
        );
        let Verdict::Reject { response, error } = v else {
            panic!("not rejected: {v:?}")
        };
        assert_eq!(response.code, 420);
        assert_eq!(response.headers.get("Unsupported"), Some("foo, 100rel"));
        assert!(error.message.contains("foo"));
    }

    #[test]
    fn malformed_ack_is_dropped_not_answered() {
        let v = verdict(
            "ACK sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
To: <sip:a@example.com>;tag=2\r\nFrom: <sip:b@example.com>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
        );
        let Verdict::Drop { error } = v else {
            panic!("not dropped: {v:?}")
        };
        assert!(error.message.contains("CSeq"), "{error}");
    }

    #[test]
    fn missing_via_is_dropped_not_answered() {
        let v = verdict(
            "OPTIONS sip:a@example.com SIP/2.0\r\nTo: <sip:a@example.com>\r\n\
From: <sip:b@example.com>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n",
        );
        assert!(matches!(v, Verdict::Drop { .. }), "{v:?}");
        assert_eq!(verdict("\r\n\r\n"), Verdict::KeepAlive);
    }
}
