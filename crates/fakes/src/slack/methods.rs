//! The Web API methods the fake implements, each answering as Slack documents it. Every answer
//! here is the JSON of an HTTP 200 response: `"ok": true` with the method's result, or
//! `"ok": false` with Slack's error code for the arguments that were wrong.

use serde_json::{Map, Value, json};

use super::Inner;
use super::args::Args;

/// The fake workspace's identity, as `auth.test` reports it.
const TEAM_ID: &str = "T0FAKE";
/// The bot user the fake's token belongs to.
const BOT_USER_ID: &str = "UBOT";
/// The bot the fake's token belongs to.
const BOT_ID: &str = "B0FAKE";

/// The methods the fake answers; any other is `unknown_method`.
const METHODS: &[&str] =
    &["auth.test", "chat.postMessage", "chat.update", "chat.postEphemeral", "views.open", "users.info"];

/// Whether the fake implements `method`.
pub(super) fn is_known(method: &str) -> bool {
    METHODS.contains(&method)
}

/// The answer of an authenticated call of a known method.
pub(super) fn call(state: &mut Inner, method: &str, args: &Args) -> Value {
    let result = match method {
        "auth.test" => Ok(auth_test()),
        "chat.postMessage" => post_message(state, args),
        "chat.update" => update(state, args),
        "chat.postEphemeral" => post_ephemeral(state, args),
        "views.open" => open_view(state, args),
        "users.info" => user_info(state, args),
        _ => Err("unknown_method"),
    };
    result.unwrap_or_else(|error| json!({ "ok": false, "error": error }))
}

/// A method's result, or Slack's error code.
type Outcome = Result<Value, &'static str>;

/// `auth.test`: who the token belongs to.
fn auth_test() -> Value {
    json!({
        "ok": true,
        "url": "https://fake-workspace.slack.com/",
        "team": "Fake Workspace",
        "user": "countersign",
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": BOT_ID,
    })
}

/// `chat.postMessage`: posts to a channel (a user id posts to the DM with that user) and hands
/// out a fresh `ts`.
fn post_message(state: &mut Inner, args: &Args) -> Outcome {
    let channel = dm_channel(string(args, "channel").ok_or("channel_not_found")?);
    let content = Content::read(args)?;
    let ts = state.next_ts();
    state.posted.insert((channel.clone(), ts.clone()));
    let mut message = content.message(&ts);
    if let Some(thread_ts) = string(args, "thread_ts") {
        message.insert("thread_ts".into(), thread_ts.into());
    }
    Ok(json!({ "ok": true, "channel": channel, "ts": ts, "message": message }))
}

/// `chat.update`: replaces a message the fake posted earlier in that channel.
fn update(state: &mut Inner, args: &Args) -> Outcome {
    let channel = string(args, "channel").ok_or("channel_not_found")?;
    let ts = string(args, "ts").ok_or("message_not_found")?;
    if !state.posted.contains(&(channel.to_owned(), ts.to_owned())) {
        return Err("message_not_found");
    }
    let content = Content::read(args)?;
    Ok(json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "text": content.text,
        "message": content.message(ts),
    }))
}

/// `chat.postEphemeral`: shows a message to one user in a channel.
fn post_ephemeral(state: &mut Inner, args: &Args) -> Outcome {
    string(args, "channel").ok_or("channel_not_found")?;
    string(args, "user").ok_or("user_not_found")?;
    Content::read(args)?;
    Ok(json!({ "ok": true, "message_ts": state.next_ts() }))
}

/// `views.open`: opens a modal for a trigger; the view may be a JSON object or a JSON string.
fn open_view(state: &mut Inner, args: &Args) -> Outcome {
    string(args, "trigger_id").ok_or("invalid_arguments")?;
    let view = match json_arg(args, "view") {
        Some(Ok(Value::Object(view))) => view,
        _ => return Err("invalid_arguments"),
    };
    let mut opened = Map::new();
    opened.insert("id".into(), state.next_view_id().into());
    opened.insert("team_id".into(), TEAM_ID.into());
    opened.extend(view.into_iter().filter(|(key, _)| key != "id"));
    Ok(json!({ "ok": true, "view": opened }))
}

/// `users.info`: a user added with [`super::FakeSlack::add_user`].
fn user_info(state: &Inner, args: &Args) -> Outcome {
    let id = string(args, "user").ok_or("user_not_found")?;
    let user = state.users.get(id).ok_or("user_not_found")?;
    let mut profile = Map::new();
    if let Some(email) = &user.email {
        profile.insert("email".into(), email.clone().into());
    }
    Ok(json!({
        "ok": true,
        "user": {
            "id": id,
            "team_id": user.team_id,
            "name": user_name(id, user.email.as_deref()),
            "is_bot": false,
            "deleted": false,
            "profile": profile,
        },
    }))
}

/// A user's handle: the email's local part, else the lowercased id.
fn user_name(id: &str, email: Option<&str>) -> String {
    email
        .and_then(|email| email.split('@').next())
        .filter(|local| !local.is_empty())
        .map_or_else(|| id.to_lowercase(), str::to_owned)
}

/// The text and blocks of a message.
struct Content {
    text: String,
    blocks: Option<Value>,
}

impl Content {
    /// Reads `text` and `blocks` (an array, or a JSON string of one as form fields send it):
    /// `invalid_blocks_format` when `blocks` is not an array, `no_text` when neither is there.
    fn read(args: &Args) -> Result<Content, &'static str> {
        let blocks = match json_arg(args, "blocks") {
            None => None,
            Some(Ok(Value::Array(blocks))) => Some(blocks).filter(|blocks| !blocks.is_empty()),
            Some(_) => return Err("invalid_blocks_format"),
        };
        let text = string(args, "text");
        if text.is_none() && blocks.is_none() {
            return Err("no_text");
        }
        Ok(Content { text: text.unwrap_or_default().to_owned(), blocks: blocks.map(Value::Array) })
    }

    /// The `message` object of an answer, as posted by the fake's bot.
    fn message(&self, ts: &str) -> Map<String, Value> {
        let mut message = Map::new();
        message.insert("type".into(), "message".into());
        message.insert("user".into(), BOT_USER_ID.into());
        message.insert("bot_id".into(), BOT_ID.into());
        message.insert("text".into(), self.text.clone().into());
        if let Some(blocks) = &self.blocks {
            message.insert("blocks".into(), blocks.clone());
        }
        message.insert("ts".into(), ts.into());
        message
    }
}

/// A string argument, when it is there and not empty.
fn string<'a>(args: &'a Args, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str).filter(|value| !value.is_empty())
}

/// A JSON argument: a JSON value as sent, or parsed from a string (as form fields carry JSON).
/// `None` when absent (or null, or an empty string), `Err` when a string does not parse.
fn json_arg(args: &Args, name: &str) -> Option<Result<Value, serde_json::Error>> {
    match args.get(name)? {
        Value::Null => None,
        Value::String(text) if text.trim().is_empty() => None,
        Value::String(text) => Some(serde_json::from_str(text)),
        value => Some(Ok(value.clone())),
    }
}

/// The channel a message lands in: a user id (`U...` or `W...`) becomes the id of the DM with
/// that user (`D...`); any other channel id stays as it is.
fn dm_channel(channel: &str) -> String {
    match channel.strip_prefix(['U', 'W']) {
        Some(rest) => format!("D{rest}"),
        None => channel.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_become_dm_channels() {
        assert_eq!(dm_channel("U123"), "D123");
        assert_eq!(dm_channel("W9"), "D9");
        assert_eq!(dm_channel("C42"), "C42");
    }

    #[test]
    fn timestamps_increase_with_six_decimals() {
        let mut state = Inner::default();
        assert_eq!(state.next_ts(), "1700000000.000001");
        assert_eq!(state.next_ts(), "1700000000.000002");
        state.last_ts = 999_999;
        assert_eq!(state.next_ts(), "1700000001.000000");
    }

    #[test]
    fn user_names_come_from_emails() {
        assert_eq!(user_name("U1", Some("ada@example.com")), "ada");
        assert_eq!(user_name("U1", None), "u1");
    }
}
