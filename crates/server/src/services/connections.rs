//! Connecting a project to Slack and Twilio: the credentials are checked with the provider
//! before anything is stored, and the change is logged with who made it. The CLI's `connect`
//! commands and the admin pages both come here.

use crate::channels::slack::SlackApi;
use crate::channels::sms::{TwilioApi, e164};
use crate::error::ApiError;
use countersign_core::Timestamp;
use countersign_core::event::Stamp;
use countersign_store::{SlackConnection, Store, TwilioConnection};
use serde_json::{Value, json};

/// The longest token, secret or account value accepted (Slack's and Twilio's are far shorter).
pub const MAX_SECRET_CHARS: usize = 256;
/// The longest Slack channel name or id (Slack's limit is 80).
pub const MAX_CHANNEL_CHARS: usize = 80;

/// Refuses a value longer than `max` characters, naming it.
fn bounded(what: &str, value: &str, max: usize) -> Result<(), Refused> {
    if value.chars().count() > max {
        return Err(Refused::Invalid(format!("the {what} is longer than {max} characters")));
    }
    Ok(())
}

/// Why a connection was not made.
#[derive(Debug)]
pub enum Refused {
    /// What was given cannot be right (the message says what is expected).
    Invalid(String),
    /// The provider refused the credentials, or could not be reached.
    Provider(String),
    /// The store failed.
    Store(ApiError),
}

impl Refused {
    /// The message for people.
    pub fn message(&self) -> &str {
        match self {
            Self::Invalid(m) | Self::Provider(m) => m,
            Self::Store(e) => e.message(),
        }
    }
}

/// What connects a project to Slack.
pub struct SlackCredentials {
    /// `xoxb-...`.
    pub bot_token: String,
    pub signing_secret: Option<String>,
    pub default_channel: Option<String>,
    pub require_known_users: bool,
}

/// Checks the bot token with `auth.test`, then stores the connection (replacing any earlier
/// one). Returns it and what `auth.test` said.
pub async fn connect_slack(
    store: &dyn Store,
    api: &SlackApi,
    project_id: &str,
    given: SlackCredentials,
    stamp: &Stamp,
) -> Result<(SlackConnection, Value), Refused> {
    let bot_token = given.bot_token.trim().to_owned();
    bounded("bot token", &bot_token, MAX_SECRET_CHARS)?;
    bounded("signing secret", given.signing_secret.as_deref().unwrap_or_default(), MAX_SECRET_CHARS)?;
    bounded("default channel", given.default_channel.as_deref().unwrap_or_default().trim(), MAX_CHANNEL_CHARS)?;
    if !bot_token.starts_with("xoxb-") {
        return Err(Refused::Invalid(
            "the bot token starts with xoxb- (OAuth & Permissions → Bot User OAuth Token)".into(),
        ));
    }
    let who = api.call("auth.test", &bot_token, &json!({})).await.map_err(|e| {
        Refused::Provider(format!(
            "Slack refused the bot token ({e}); check it, and that slack_api_base ({}) is right",
            api.base()
        ))
    })?;
    let text = |key: &str| who.get(key).and_then(Value::as_str).map(str::to_owned);
    let nonempty = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let connection = SlackConnection {
        project_id: project_id.to_owned(),
        bot_token,
        signing_secret: nonempty(given.signing_secret),
        default_channel: nonempty(given.default_channel),
        team_id: text("team_id"),
        team_name: text("team"),
        bot_user_id: text("user_id"),
        require_known_users: given.require_known_users,
        connected_at: Timestamp::now(),
    };
    store.set_slack_connection(&connection, stamp).await.map_err(|e| Refused::Store(e.into()))?;
    tracing::info!(project_id, team = connection.team_name.as_deref().unwrap_or("?"), by = %stamp.by, "connected to Slack");
    Ok((connection, who))
}

/// What connects a project to Twilio.
pub struct TwilioCredentials {
    pub account_sid: String,
    pub auth_token: String,
    /// The SMS sender, in international form.
    pub from: String,
    pub whatsapp_from: Option<String>,
}

/// Checks the account SID and auth token with Twilio, then stores the connection (replacing
/// any earlier one).
pub async fn connect_twilio(
    store: &dyn Store,
    api: &TwilioApi,
    project_id: &str,
    given: TwilioCredentials,
    stamp: &Stamp,
) -> Result<TwilioConnection, Refused> {
    let account_sid = given.account_sid.trim().to_owned();
    if !(account_sid.len() == 34
        && account_sid.starts_with("AC")
        && account_sid[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Refused::Invalid(
            "the account SID is AC followed by 32 hexadecimal digits (Twilio console → Account Info)".into(),
        ));
    }
    let auth_token = given.auth_token.trim().to_owned();
    bounded("auth token", &auth_token, MAX_SECRET_CHARS)?;
    if auth_token.is_empty() {
        return Err(Refused::Invalid("the auth token is empty".into()));
    }
    let number = |given: &str, what: &str| {
        e164(given).ok_or_else(|| {
            Refused::Invalid(format!(
                "the {what} {given:?} is not a number in international form: + and the country code, e.g. +15550001111"
            ))
        })
    };
    let from = number(&given.from, "SMS sender")?;
    let whatsapp_from = given
        .whatsapp_from
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| number(w, "WhatsApp sender"))
        .transpose()?;
    api.check(&account_sid, &auth_token).await.map_err(|e| {
        Refused::Provider(format!(
            "Twilio refused the account SID and auth token ({e}); check them, and that twilio_api_base ({}) is right",
            api.base()
        ))
    })?;
    let connection = TwilioConnection {
        project_id: project_id.to_owned(),
        account_sid,
        auth_token,
        from,
        whatsapp_from,
        connected_at: Timestamp::now(),
    };
    store.set_twilio_connection(&connection, stamp).await.map_err(|e| Refused::Store(e.into()))?;
    tracing::info!(project_id, account = %connection.account_sid, by = %stamp.by, "connected to Twilio");
    Ok(connection)
}
