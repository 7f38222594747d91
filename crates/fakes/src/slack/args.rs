//! Reading a Web API call's arguments and token the ways Slack accepts them: a JSON body, a
//! form-encoded body, query parameters, and the token as a bearer header or a `token`
//! argument.

use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

/// The arguments of one call, as one JSON object.
pub(super) type Args = Map<String, Value>;

/// One call's request, read without trusting any of it.
pub(super) struct Request {
    /// The bearer token, else the `token` argument.
    pub token: Option<String>,
    /// The merged arguments, or the Slack error for a body that could not be read
    /// (`invalid_json`, `json_not_object`).
    pub args: Result<Args, &'static str>,
    /// What [`super::Call::body`] records: the merged arguments, or the raw body as a string
    /// when it could not be read.
    pub recorded_body: Value,
}

impl Request {
    /// Reads the arguments from the query string and the body (the body's win when both name
    /// one), and the token from the `Authorization` header or the arguments.
    pub fn read(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Request {
        let args = body_args(headers, body).map(|from_body| {
            let mut args = query.map(form_args).unwrap_or_default();
            args.extend(from_body);
            args
        });
        let token = bearer_token(headers).or_else(|| token_arg(args.as_ref().ok()));
        let recorded_body = match &args {
            Ok(args) => Value::Object(args.clone()),
            Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        Request { token, args, recorded_body }
    }
}

/// The body's arguments: a JSON object when the content type says JSON, else form fields.
fn body_args(headers: &HeaderMap, body: &[u8]) -> Result<Args, &'static str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Args::new());
    }
    if is_json(headers) { json_args(body) } else { Ok(form_args(&String::from_utf8_lossy(body))) }
}

/// Whether the request's content type is `application/json` (with or without a charset).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// A JSON body's arguments, kept as they were sent.
fn json_args(body: &[u8]) -> Result<Args, &'static str> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(args)) => Ok(args),
        Ok(_) => Err("json_not_object"),
        Err(_) => Err("invalid_json"),
    }
}

/// Form-encoded fields (`a=1&b=two+words`) as string arguments; a repeated field keeps its last
/// value.
pub(super) fn form_args(text: &str) -> Args {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), Value::String(percent_decode(value)))
        })
        .collect()
}

/// Decodes one form-encoded name or value: `+` is a space, `%XX` a byte; a `%` not followed by
/// two hex digits stays as it is, and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex_byte(&bytes[i + 1..])) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte written by the two hex digits at the start of `bytes`, if they are hex digits.
fn hex_byte(bytes: &[u8]) -> Option<u8> {
    let digits = bytes.get(..2)?;
    let high = (digits[0] as char).to_digit(16)?;
    let low = (digits[1] as char).to_digit(16)?;
    u8::try_from(high * 16 + low).ok()
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The `token` argument, when it is a non-empty string.
fn token_arg(args: Option<&Args>) -> Option<String> {
    match args?.get("token")? {
        Value::String(token) if !token.is_empty() => Some(token.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let args = form_args("text=two+words%21&channel=C1&empty=&flag&bad=%zz%4");
        assert_eq!(args["text"], "two words!");
        assert_eq!(args["channel"], "C1");
        assert_eq!(args["empty"], "");
        assert_eq!(args["flag"], "");
        assert_eq!(args["bad"], "%zz%4");
    }

    #[test]
    fn utf8_in_form_fields_survives() {
        let args = form_args("text=caf%C3%A9+%E2%9C%85");
        assert_eq!(args["text"], "café ✅");
    }

    #[test]
    fn body_wins_over_query_and_bearer_wins_over_token_argument() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer xoxb-header".parse().unwrap());
        let request = Request::read(&headers, Some("channel=Cq&token=xoxb-arg"), b"channel=Cb&text=hi");
        let args = request.args.unwrap();
        assert_eq!(args["channel"], "Cb");
        assert_eq!(args["text"], "hi");
        assert_eq!(request.token.as_deref(), Some("xoxb-header"));
    }

    #[test]
    fn malformed_json_is_kept_as_a_string() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let request = Request::read(&headers, None, b"{nope");
        assert_eq!(request.args.unwrap_err(), "invalid_json");
        assert_eq!(request.recorded_body, "{nope");
        let request = Request::read(&headers, None, b"[1]");
        assert_eq!(request.args.unwrap_err(), "json_not_object");
    }
}
