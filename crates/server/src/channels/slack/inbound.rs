//! The Slack channel's inbound side: `POST /slack/interactions` (buttons, selects, modal
//! submissions) and `POST /slack/events` (the Events API: URL verification, replies in a
//! request's thread).
//!
//! Every request is verified before anything is done with it: the timestamp first (within five
//! minutes), then only as much of the payload is read as finds the project (the request a button
//! or modal names, or the message a thread reply answers), then the signature with that project's
//! signing secret (constant time), then the signature is remembered so a replay is refused on any
//! instance. Forged, stale and replayed requests get 401 and change nothing. Interactions are
//! acknowledged at once and worked on after the answer (Slack allows 3 s); a modal's submission is
//! decided before answering, so a problem shows in the modal.

use super::api::SlackApi;
use super::blocks::{self, ActionRef, ModalMeta, action, callback};
use super::outbound::refresh;
use super::spec::SlackTarget;
use crate::error::ApiError;
use crate::services::live::RequestKey;
use crate::services::requests::{actor_name, describe};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use countersign_core::slack::{MAX_SKEW_SECS, verify};
use countersign_core::{Actor, DecisionChannel, Fields, Intent, RequestKind, RequestRecord, Timestamp};
use countersign_store::{RequestClaim, SlackConnection};
use serde_json::{Value, json};
use std::time::Duration;

/// Largest accepted inbound Slack request (an interaction carries the whole message: up to 50
/// blocks of 3,000 characters, URL-encoded).
pub const MAX_SLACK_BODY: usize = 1 << 20;

/// A refusal: 401 with a JSON error.
fn refused(why: impl Into<String>) -> ApiError {
    let why = why.into();
    tracing::warn!(reason = %why, "slack request refused");
    ApiError::unauthorized(why)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request's timestamp, if it is within five minutes of now (checked before any parsing).
fn fresh_timestamp(headers: &HeaderMap) -> Result<i64, ApiError> {
    let now = Timestamp::now().as_micros() / 1_000_000;
    match header(headers, "x-slack-request-timestamp").and_then(|t| t.trim().parse::<i64>().ok()) {
        None => Err(refused("the X-Slack-Request-Timestamp header is missing or not a number")),
        Some(t) if now.abs_diff(t) > MAX_SKEW_SECS.unsigned_abs() => {
            Err(refused("the request's timestamp is more than 5 minutes from now (a replay, or a clock off)"))
        }
        Some(t) => Ok(t),
    }
}

/// Checks the signature with `secret`, then that it was not seen before.
async fn authentic(state: &AppState, headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), ApiError> {
    let now = Timestamp::now();
    let signature = header(headers, "x-slack-signature");
    verify(secret, header(headers, "x-slack-request-timestamp"), body, signature, now.as_micros() / 1_000_000)
        .map_err(|e| refused(e.to_string()))?;
    let signature = signature.unwrap_or_default();
    let expires = now.plus(Duration::from_secs(2 * MAX_SKEW_SECS as u64));
    match state.store.first_use_of_signature(signature, expires, now).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(refused("this request was already received (a replay)")),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// The connection of a project that can verify requests (it has a signing secret).
async fn verifying(state: &AppState, project_id: &str) -> Result<(SlackConnection, String), ApiError> {
    let connection = state.store.slack_connection(project_id).await?;
    let Some(connection) = connection else {
        return Err(refused("the project of this request is not connected to Slack (countersign slack connect)"));
    };
    let Some(secret) = connection.signing_secret.clone() else {
        return Err(refused("the project has no Slack signing secret (countersign slack connect --signing-secret)"));
    };
    Ok((connection, secret))
}

/// What an interaction is about, read before it is verified (only to find the secret).
struct Located {
    record: RequestRecord,
    option: Option<usize>,
    /// Where the message is, when the interaction came from one.
    channel: Option<String>,
    ts: Option<String>,
}

/// Finds the request an interaction payload names.
async fn locate(state: &AppState, payload: &Value) -> Option<Located> {
    let kind = payload.get("type").and_then(Value::as_str)?;
    let (reference, channel, ts) = match kind {
        "block_actions" => {
            let channel = payload.pointer("/container/channel_id").or(payload.pointer("/channel/id"));
            let channel = channel.and_then(Value::as_str).map(str::to_owned);
            let ts = payload.pointer("/container/message_ts").and_then(Value::as_str).map(str::to_owned);
            let first = payload.pointer("/actions/0")?;
            let by_value = first.get("value").and_then(Value::as_str).and_then(ActionRef::decode);
            let reference = match by_value {
                Some(r) => r,
                None => {
                    // A select: the message it sits on names the request.
                    let m = state.store.slack_message_at(channel.as_deref()?, ts.as_deref()?).await.ok()??;
                    ActionRef {
                        project_id: m.project_id,
                        kind: m.kind.as_str().to_owned(),
                        call_id: m.call_id,
                        option: None,
                    }
                }
            };
            (reference, channel, ts)
        }
        "view_submission" => {
            let meta = ModalMeta::decode(payload.pointer("/view/private_metadata").and_then(Value::as_str)?)?;
            (meta.r, meta.channel, meta.ts)
        }
        _ => return None,
    };
    let kind = RequestKind::parse(&reference.kind)?;
    let record = state.store.request(&reference.project_id, kind, &reference.call_id).await.ok()??;
    Some(Located { record, option: reference.option, channel, ts })
}

/// `POST /slack/interactions`: a click on a button or select, or a modal's submission.
pub async fn interactions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = fresh_timestamp(&headers) {
        return refusal.into_response();
    }
    let payload = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|fields| fields.into_iter().find(|(k, _)| k == "payload"));
    if let Some((_, p)) = &payload
        && let Err(e) = countersign_core::json_depth::check(p.as_bytes(), state.settings.limits.max_json_depth)
    {
        return ApiError::invalid(countersign_core::Invalid::new("payload", format!("the payload {e}")))
            .into_response();
    }
    let payload = payload.and_then(|(_, p)| serde_json::from_str::<Value>(&p).ok());
    let Some(payload) = payload else {
        return refused("not a Slack interaction: the body has no JSON `payload` field").into_response();
    };
    let Some(located) = locate(&state, &payload).await else {
        return refused("this interaction names no request of a project connected to Slack").into_response();
    };
    let (connection, secret) = match verifying(&state, &located.record.project_id).await {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = authentic(&state, &headers, &body, &secret).await {
        return refusal.into_response();
    }
    let who = Slacker::of(&payload);
    match payload.get("type").and_then(Value::as_str) {
        Some("view_submission") => submit(&state, &connection, &payload, located, who).await,
        _ => {
            // Acknowledged now; the work (a modal to open within trigger_id's 3 s, a decision,
            // an update) follows.
            tokio::spawn(async move { act(state, connection, payload, located, who).await });
            StatusCode::OK.into_response()
        }
    }
}

/// The Slack user behind an interaction or event.
#[derive(Debug, Clone)]
struct Slacker {
    user: String,
    team: Option<String>,
}

impl Slacker {
    fn of(payload: &Value) -> Self {
        let user = payload.pointer("/user/id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let team =
            payload.pointer("/user/team_id").or(payload.pointer("/team/id")).and_then(Value::as_str).map(str::to_owned);
        Self { user, team }
    }
}

/// Who a Slack user is for Countersign, or why they may not decide.
async fn actor(
    state: &AppState,
    connection: &SlackConnection,
    record: &RequestRecord,
    who: &Slacker,
    api: &SlackApi,
    token: &str,
) -> Result<Actor, String> {
    if who.user.is_empty() {
        return Err("the interaction names no Slack user".into());
    }
    if !SlackTarget::of(record).allows(&who.user) {
        return Err("You are not allowed to decide this request.".into());
    }
    let email = match api.user_info(token, &who.user).await {
        Ok(info) => info.pointer("/user/profile/email").and_then(Value::as_str).map(str::to_lowercase),
        Err(e) => {
            tracing::info!(user = %who.user, error = %e, "cannot read the Slack user's email (users:read.email scope?)");
            None
        }
    };
    let mut person = None;
    if let Some(email) = email.as_deref().and_then(|e| countersign_core::Email::parse(e).ok())
        && let Ok(Some(credentials)) = state.store.credentials(&email).await
        && let Ok(Some(user)) = state.store.user(&credentials.user_id).await
    {
        let project = state.store.project_by_id(&record.project_id).await.ok().flatten();
        let member = project.is_some_and(|p| user.projects.iter().any(|n| n == p.name.as_str()));
        if user.disabled_at.is_none() && member {
            person = Some(user.id);
        }
    }
    if connection.require_known_users && person.is_none() {
        return Err(format!(
            "Only people of this Countersign project may decide here; {} is not one. An admin can add them with \
             `countersign users create`.",
            email.as_deref().unwrap_or("your Slack account (no email visible)")
        ));
    }
    Ok(Actor {
        user_id: person,
        email,
        slack_user_id: Some(who.user.clone()),
        slack_team_id: who.team.clone(),
        ..Actor::new(DecisionChannel::Slack)
    })
}

/// "already approved by X at T".
fn already(record: &RequestRecord) -> String {
    match &record.outcome {
        Some(o) => format!(
            "This request was already {} by {} at {}.",
            describe(record),
            decider(&o.decided_by),
            crate::html::detail::short_time(o.responded_at)
        ),
        None => "This request is still pending.".into(),
    }
}

/// Who decided, as Slack shows it.
fn decider(actor: &Actor) -> String {
    match (&actor.slack_user_id, &actor.email) {
        (Some(user), _) => format!("<@{user}>"),
        _ => actor_name(actor),
    }
}

/// The token for a request: its own `bot_token`, else its project's.
fn token_for(record: &RequestRecord, connection: &SlackConnection) -> String {
    SlackTarget::of(record).bot_token.unwrap_or_else(|| connection.bot_token.clone())
}

/// Handles a click (after the acknowledgement).
async fn act(state: AppState, connection: SlackConnection, payload: Value, located: Located, who: Slacker) {
    let api = state.slack.clone();
    let record = located.record;
    let token = token_for(&record, &connection);
    let channel = located.channel.clone().unwrap_or_default();
    let tell = |text: String| {
        let (api, token, channel, user) = (api.clone(), token.clone(), channel.clone(), who.user.clone());
        async move { whisper(&api, &token, json!({"channel": channel, "user": user, "text": text})).await }
    };
    let Some(first) = payload.pointer("/actions/0") else { return };
    let action_id = first.get("action_id").and_then(Value::as_str).unwrap_or_default();
    let option = match action_id {
        action::OPTION_SELECT => {
            first.pointer("/selected_option/value").and_then(Value::as_str).and_then(|v| v.parse::<usize>().ok())
        }
        _ => located.option,
    };
    if record.outcome.is_some() {
        return tell(already(&record)).await;
    }
    let actor = match actor(&state, &connection, &record, &who, &api, &token).await {
        Ok(actor) => actor,
        Err(why) => return tell(why).await,
    };
    let options = record.options();
    let option_name = option.and_then(|i| options.get(i)).map(|o| o.name.clone());
    let meta =
        ModalMeta { r: ActionRef::of(&record, option), channel: located.channel.clone(), ts: located.ts.clone() };
    let trigger = payload.get("trigger_id").and_then(Value::as_str).unwrap_or_default();
    let open_modal = |option: Option<usize>| {
        let view = blocks::modal(&record, option, &meta);
        let (api, token, trigger) = (api.clone(), token.clone(), trigger.to_owned());
        async move { api.call("views.open", &token, &json!({"trigger_id": trigger, "view": view})).await }
    };
    let intent = match (record.kind, action_id) {
        (RequestKind::FunctionCall, action::APPROVE) => Some(Intent::Approve { comment: None, updated_kwargs: None }),
        (RequestKind::FunctionCall, a) if a == action::REJECT || a.starts_with(action::REJECT_OPTION) => None,
        (RequestKind::FunctionCall, action::OPTION_SELECT) => None,
        (RequestKind::HumanContact, a) if a.starts_with(action::RESPOND_OPTION) || a == action::OPTION_SELECT => {
            let interactive = option.and_then(|i| options.get(i)).is_some_and(|o| o.interactive == Some(true));
            (!interactive && option_name.is_some())
                .then(|| Intent::Answer { response: None, option: option_name.clone() })
        }
        (_, action::CLAIM) => {
            let claim = RequestClaim { by: format!("<@{}>", who.user), channel: "slack".into(), at: Timestamp::now() };
            if let Err(e) = state.store.claim_request(&record.project_id, record.kind, &record.call_id, &claim).await {
                tracing::warn!(error = %e, "cannot record a claim");
                return;
            }
            state.requests.notify_inbox(&record.project_id);
            if let Err(e) = refresh(&state.store, &api, &state.public_base, &record, &token).await {
                tracing::info!(error = %e, call_id = %record.call_id, "cannot show the claim on the Slack message");
            }
            return;
        }
        _ => None,
    };
    match intent {
        Some(intent) => {
            if let Err(why) = decide(&state, &record, intent, actor).await {
                tell(why).await;
            }
        }
        None => {
            // Reject (with or without an option) and Answer ask for text in a modal.
            if let Err(e) = open_modal(option).await {
                tracing::info!(error = %e, "cannot open the Slack modal (its trigger lasts 3 s)");
                tell(format!("Cannot open the form ({e}); decide in the inbox instead.")).await;
            }
        }
    }
}

/// Decides from a modal's submission; the answer closes the modal, or shows what is wrong in it.
async fn submit(
    state: &AppState,
    connection: &SlackConnection,
    payload: &Value,
    located: Located,
    who: Slacker,
) -> Response {
    let record = located.record;
    let error = |text: String| {
        Json(json!({"response_action": "errors", "errors": {blocks::INPUT_BLOCK: blocks::truncate(&text, 1900)}}))
            .into_response()
    };
    if record.outcome.is_some() {
        return error(already(&record));
    }
    let token = token_for(&record, connection);
    let actor = match actor(state, connection, &record, &who, &state.slack, &token).await {
        Ok(actor) => actor,
        Err(why) => return error(why),
    };
    let pointer = format!("/view/state/values/{}/{}/value", blocks::INPUT_BLOCK, blocks::INPUT_ACTION);
    let text = payload.pointer(&pointer).and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty());
    let option = located.option.and_then(|i| record.options().get(i).map(|o| o.name.clone()));
    let intent = match (payload.pointer("/view/callback_id").and_then(Value::as_str), record.kind) {
        (Some(callback::REJECT), RequestKind::FunctionCall) => {
            if text.is_none() && option.is_none() {
                return error("Say why: the agent gets this comment.".into());
            }
            Intent::Reject { comment: text.map(str::to_owned), option }
        }
        (Some(callback::ANSWER), RequestKind::HumanContact) => {
            if text.is_none() && option.is_none() {
                return error("Write an answer: the agent gets it.".into());
            }
            Intent::Answer { response: text.map(str::to_owned), option }
        }
        _ => return error("This form does not match its request.".into()),
    };
    match decide(state, &record, intent, actor).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(why) => error(why),
    }
}

/// Decides for a Slack user; when it does not go through, what to tell them (who decided first,
/// when someone did).
async fn decide(state: &AppState, record: &RequestRecord, intent: Intent, actor: Actor) -> Result<(), String> {
    match state.requests.decide(&RequestKey::of(record), intent, &Fields::PERSON, actor).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == StatusCode::CONFLICT => {
            // Still pending: the conflict is this person's earlier vote, which the message names.
            match state.store.request(&record.project_id, record.kind, &record.call_id).await {
                Ok(Some(fresh)) if fresh.outcome.is_some() => Err(already(&fresh)),
                _ => Err(e.message().to_owned()),
            }
        }
        Err(e) => Err(e.message().to_owned()),
    }
}

/// A message only one user sees (`chat.postEphemeral` with `args`); a failure is only logged.
async fn whisper(api: &SlackApi, token: &str, args: Value) {
    if let Err(e) = api.call("chat.postEphemeral", token, &args).await {
        tracing::info!(error = %e, "cannot answer the Slack user");
    }
}

/// `POST /slack/events`: the Events API. Answers the URL verification challenge, and a reply in a
/// question's thread answers it.
pub async fn events(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = fresh_timestamp(&headers) {
        return refusal.into_response();
    }
    if let Err(e) = countersign_core::json_depth::check(&body, state.settings.limits.max_json_depth) {
        return ApiError::invalid(countersign_core::Invalid::new(".", format!("the body {e}"))).into_response();
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return refused("not a Slack event: the body is not JSON").into_response();
    };
    let thread = match (
        payload.pointer("/event/channel").and_then(Value::as_str),
        payload.pointer("/event/thread_ts").and_then(Value::as_str),
    ) {
        (Some(channel), Some(ts)) => state.store.slack_message_at(channel, ts).await.ok().flatten(),
        _ => None,
    };
    let Some(message) = thread else {
        // Not about one of our messages (the URL verification, other events of a shared app):
        // accepted when any connected project's secret signs it; nothing else is done.
        let connections = match state.store.slack_connections().await {
            Ok(c) => c,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let mut verified = false;
        for secret in connections.iter().filter_map(|c| c.signing_secret.as_deref()) {
            if authentic(&state, &headers, &body, secret).await.is_ok() {
                verified = true;
                break;
            }
        }
        if !verified {
            return refused("no connected project's signing secret signs this event").into_response();
        }
        return match payload.get("type").and_then(Value::as_str) {
            Some("url_verification") => {
                Json(json!({"challenge": payload.get("challenge").cloned().unwrap_or(Value::Null)})).into_response()
            }
            _ => StatusCode::OK.into_response(),
        };
    };
    let (connection, secret) = match verifying(&state, &message.project_id).await {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = authentic(&state, &headers, &body, &secret).await {
        return refusal.into_response();
    }
    tokio::spawn(async move { thread_reply(state, connection, payload, message).await });
    StatusCode::OK.into_response()
}

/// A reply in the thread of a request's message: answers a pending question.
async fn thread_reply(
    state: AppState,
    connection: SlackConnection,
    payload: Value,
    message: countersign_store::SlackMessage,
) {
    let event = &payload["event"];
    let from_bot = event.get("bot_id").is_some()
        || event.get("subtype").is_some()
        || event.get("user").and_then(Value::as_str) == connection.bot_user_id.as_deref();
    let (Some(user), Some(text)) =
        (event.get("user").and_then(Value::as_str), event.get("text").and_then(Value::as_str))
    else {
        return;
    };
    if from_bot || message.kind != RequestKind::HumanContact || text.trim().is_empty() {
        return;
    }
    let Ok(Some(record)) = state.store.request(&message.project_id, message.kind, &message.call_id).await else {
        return;
    };
    let token = token_for(&record, &connection);
    let who = Slacker {
        user: user.to_owned(),
        team: event.get("team").or(payload.get("team_id")).and_then(Value::as_str).map(str::to_owned),
    };
    let tell = |text: String| {
        let args = json!({"channel": message.channel_id, "user": who.user, "text": text, "thread_ts": message.ts});
        let (api, token) = (state.slack.clone(), token.clone());
        async move { whisper(&api, &token, args).await }
    };
    if record.outcome.is_some() {
        return tell(already(&record)).await;
    }
    let actor = match actor(&state, &connection, &record, &who, &state.slack, &token).await {
        Ok(actor) => actor,
        Err(why) => return tell(why).await,
    };
    let intent = Intent::Answer { response: Some(text.to_owned()), option: None };
    if let Err(why) = decide(&state, &record, intent, actor).await {
        tell(why).await;
    }
}
