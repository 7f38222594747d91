//! The SMS and WhatsApp channel, through Twilio. Outbound (`outbound`): a new request addressed
//! to a phone number (`channel.sms` or `channel.whatsapp`) is sent as one short text with a
//! four-digit code and how to answer (`countersign_core::sms` renders it). Inbound (`inbound`):
//! Twilio posts each reply to `POST /twilio/inbound`, signed with the project's auth token; a
//! reply from the number a request was sent to decides it through the one typed decision path,
//! and the sender is answered in the webhook's own response (TwiML).

pub mod api;
pub mod inbound;
pub mod outbound;

pub use api::{DEFAULT_API_BASE, TwilioApi, TwilioError};
pub use outbound::SmsChannel;

use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;

/// How to reach Twilio.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// The REST API's base URL: `https://api.twilio.com`, or a local fake in tests.
    pub api_base: String,
}

impl Default for TwilioSettings {
    fn default() -> Self {
        Self { api_base: DEFAULT_API_BASE.to_owned() }
    }
}

/// The endpoint Twilio calls for every SMS and WhatsApp message to a connected number.
pub fn routes() -> Router<AppState> {
    Router::new().route("/twilio/inbound", post(inbound::inbound)).layer(DefaultBodyLimit::max(inbound::MAX_BODY))
}

/// A phone number as stored: E.164 (`+` and 8 to 15 digits), from what a spec or Twilio gives
/// (`whatsapp:` prefix, spaces, dashes, dots and parentheses dropped); `None` when it is not one.
pub fn e164(number: &str) -> Option<String> {
    let number = number.trim();
    let number = number.strip_prefix("whatsapp:").unwrap_or(number).trim();
    let digits: String = number.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let rest = digits.strip_prefix('+')?;
    (rest.len() >= 8 && rest.len() <= 15 && rest.bytes().all(|b| b.is_ascii_digit()) && !rest.starts_with('0'))
        .then(|| format!("+{rest}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_stored_in_e164() {
        assert_eq!(super::e164("+1 (555) 123-4567").as_deref(), Some("+15551234567"));
        assert_eq!(super::e164("whatsapp:+15551234567").as_deref(), Some("+15551234567"));
        assert_eq!(super::e164("+44.20.7946.0958").as_deref(), Some("+442079460958"));
        for bad in ["5551234567", "+1555", "+1234567890123456", "+0555123456", "+1555abc4567", ""] {
            assert_eq!(super::e164(bad), None, "{bad}");
        }
    }
}
