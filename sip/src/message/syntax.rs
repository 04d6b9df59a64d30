//! Lexical helpers shared by the header and URI parsers (RFC 3261 section 25.1).

use super::ParseError;

/// RFC 3261 `token` characters.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

pub(crate) fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits a header value at top-level `sep`, outside quoted strings and `<...>`.
/// Fails on an unterminated quoted string or `<`.
pub(crate) fn split_top_level(
    value: &str,
    sep: char,
    field: &str,
) -> Result<Vec<String>, ParseError> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut in_angle = false;
    let mut escaped = false;
    for c in value.chars() {
        if in_quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            '"' if !in_angle => {
                in_quote = true;
                cur.push(c);
            }
            '<' => {
                in_angle = true;
                cur.push(c);
            }
            '>' => {
                in_angle = false;
                cur.push(c);
            }
            c if c == sep && !in_angle => {
                parts.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    if in_quote {
        return Err(ParseError::syntax(format!(
            "{field}: unterminated quoted string"
        )));
    }
    if in_angle {
        return Err(ParseError::syntax(format!("{field}: unterminated '<'")));
    }
    parts.push(cur);
    Ok(parts)
}

/// Parses a quoted string at the start of `s` (which must begin with `"`).
/// Returns the unescaped content and the remainder after the closing quote.
pub(crate) fn take_quoted<'a>(s: &'a str, field: &str) -> Result<(String, &'a str), ParseError> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, '"')) => {}
        _ => return Err(ParseError::syntax(format!("{field}: expected '\"'"))),
    }
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Ok((out, &s[i + 1..]));
        } else {
            out.push(c);
        }
    }
    Err(ParseError::syntax(format!(
        "{field}: unterminated quoted string"
    )))
}

/// Quotes a string for use as a display name or quoted parameter value.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A `;name[=value]` parameter. Values are kept as on the wire (quoted strings keep their quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Option<String>) -> Self {
        Param {
            name: name.into(),
            value,
        }
    }

    /// The value with surrounding quotes removed and escapes resolved.
    pub fn unquoted_value(&self) -> Option<String> {
        let v = self.value.as_deref()?;
        if v.starts_with('"') {
            take_quoted(v, "param").ok().map(|(s, _)| s)
        } else {
            Some(v.to_string())
        }
    }
}

/// Characters allowed in an unquoted header parameter value: token, plus what a host
/// or IPv6 reference needs (`received=[2001:db8::1]`, `received=2001:db8::1`).
fn is_param_value_char(c: char) -> bool {
    is_token_char(c) || matches!(c, ':' | '[' | ']')
}

/// Parses header parameters: `s` is empty or starts (after optional LWS) with `;`.
/// LWS around `;` and `=` is allowed (RFC 3261 SEMI / EQUAL).
pub(crate) fn parse_header_params(s: &str, field: &str) -> Result<Vec<Param>, ParseError> {
    let mut params = Vec::new();
    let mut rest = s.trim_start_matches(is_ws);
    while !rest.is_empty() {
        rest = match rest.strip_prefix(';') {
            Some(r) => r.trim_start_matches(is_ws),
            None => {
                return Err(ParseError::syntax(format!(
                    "{field}: unexpected text {:?} where ';' was expected",
                    truncate(rest)
                )))
            }
        };
        let name_end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err(ParseError::syntax(format!("{field}: empty parameter")));
        }
        rest = rest[name_end..].trim_start_matches(is_ws);
        let mut value = None;
        if let Some(r) = rest.strip_prefix('=') {
            let r = r.trim_start_matches(is_ws);
            if r.starts_with('"') {
                let (_, after) = take_quoted(r, field)?;
                let raw_len = r.len() - after.len();
                value = Some(r[..raw_len].to_string());
                rest = after;
            } else {
                let end = r.find(|c: char| !is_param_value_char(c)).unwrap_or(r.len());
                if end == 0 {
                    return Err(ParseError::syntax(format!(
                        "{field}: parameter {name:?} has an empty value"
                    )));
                }
                value = Some(r[..end].to_string());
                rest = &r[end..];
            }
            rest = rest.trim_start_matches(is_ws);
        }
        params.push(Param::new(name, value));
    }
    Ok(params)
}

pub(crate) fn write_params(out: &mut String, params: &[Param]) {
    for p in params {
        out.push(';');
        out.push_str(&p.name);
        if let Some(v) = &p.value {
            out.push('=');
            out.push_str(v);
        }
    }
}

pub(crate) fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Sets (or replaces) a parameter value.
pub(crate) fn set_param(params: &mut Vec<Param>, name: &str, value: Option<String>) {
    if let Some(p) = params
        .iter_mut()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        p.value = value;
    } else {
        params.push(Param::new(name, value));
    }
}

/// Shortens text quoted in an error message.
pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
