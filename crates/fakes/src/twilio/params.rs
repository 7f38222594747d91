//! Reading a request the way Twilio does: form-encoded fields (`To=%2B15551234567&Body=hi`)
//! and HTTP basic auth (`Authorization: Basic base64(AccountSid:AuthToken)`); and writing form
//! fields the same way, for test bodies.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The user and password of an `Authorization: Basic ...` header, when there is one that
/// decodes (base64 of UTF-8 `user:password`; the password may contain `:`).
pub(super) fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Form-encoded fields (`a=1&b=two+words`), in the order they were sent; a field without `=`
/// has an empty value. Bytes that are not UTF-8 become U+FFFD.
pub(super) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// The value of field `name` (the last one when it is repeated), when it is there and not
/// empty.
pub(super) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).filter(|value| !value.is_empty())
}

/// Encodes fields as `application/x-www-form-urlencoded`: `name=value` pairs joined by `&`,
/// a space as `+`, ASCII letters, digits and `*-._` as they are, every other byte of the
/// UTF-8 as `%XX`.
pub(super) fn encode(params: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode(name, &mut out);
        out.push('=');
        percent_encode(value, &mut out);
    }
    out
}

/// Appends one form-encoded name or value to `out`.
fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        match byte {
            b' ' => out.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(byte as char),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 0x0f)] as char);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn encoding_keeps_unreserved_bytes_and_escapes_the_rest() {
        let encoded = encode(&[("To", "+1 555"), ("Body", "café & a*b-c._d~/=?"), ("", "")]);
        assert_eq!(encoded, "To=%2B1+555&Body=caf%C3%A9+%26+a*b-c._d%7E%2F%3D%3F&=");
    }

    #[test]
    fn decoding_undoes_encoding() {
        let params = [("To", "+15551234567"), ("Body", "héllo wörld ✅ 100% & more=+")];
        let fields = form_fields(encode(&params).as_bytes());
        let expected: Vec<(String, String)> =
            params.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn odd_form_fields_are_read_leniently() {
        let fields = form_fields(b"flag&bad=%zz%4&Body=&Body=second");
        assert_eq!(fields[0], ("flag".to_owned(), String::new()));
        assert_eq!(fields[1], ("bad".to_owned(), "%zz%4".to_owned()));
        assert_eq!(field(&fields, "Body"), Some("second"));
        assert_eq!(field(&fields, "flag"), None);
        assert_eq!(field(&fields, "To"), None);
    }

    #[test]
    fn basic_auth_is_decoded() {
        let header = format!("Basic {}", STANDARD.encode("AC123:to:ken"));
        assert_eq!(basic_auth(&headers(&header)), Some(("AC123".to_owned(), "to:ken".to_owned())));
        let lowercase = format!("basic  {}", STANDARD.encode("AC1:t"));
        assert_eq!(basic_auth(&headers(&lowercase)), Some(("AC1".to_owned(), "t".to_owned())));
        assert_eq!(basic_auth(&headers("Bearer abc")), None);
        assert_eq!(basic_auth(&headers("Basic !!!")), None);
        assert_eq!(basic_auth(&headers(&format!("Basic {}", STANDARD.encode("no-colon")))), None);
        assert_eq!(basic_auth(&HeaderMap::new()), None);
    }
}
