//! The SMS and WhatsApp channel's inbound side: `POST /twilio/inbound`, where Twilio posts every
//! message sent to a connected number (form fields `From`, `To`, `Body`, `MessageSid`, ...).
//!
//! - The post must carry `X-Twilio-Signature` made with the auth token of a project that sends
//!   from the `To` number, over the public URL Twilio called (`public_url` + path): otherwise 403
//!   and nothing changes. A `MessageSid` acted on before is acknowledged and ignored (a replay).
//! - STOP/START/HELP keep Twilio's meaning; a STOP is recorded so nothing more is sent.
//! - Otherwise the message is a reply (`YES 4821`, `NO 4821 too much`, `2 4821`, an answer, ...):
//!   only a request sent to the `From` number can be answered, named by its code, or without one
//!   when it is the only one pending for that number. It decides through the one typed decision
//!   path, and the sender is answered in the response (TwiML `<Message>`).

use super::api::verify;
use super::e164;
use super::outbound::options;
use crate::error::ApiError;
use crate::services::live::RequestKey;
use crate::services::requests::{actor_name, describe};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use countersign_core::request::{Fields, Intent};
use countersign_core::sms::{Keyword, Verb, keyword, parse_reply};
use countersign_core::{Actor, DecisionChannel, RequestKind, RequestRecord, Timestamp};
use countersign_store::{Medium, SmsCode, TwilioConnection};
use serde_json::Value;
use std::collections::HashSet;

/// Largest inbound post accepted (Twilio's are a few KB).
pub const MAX_BODY: usize = 64 * 1024;
/// Most form fields read from one post.
const MAX_FIELDS: usize = 100;
/// How long a `MessageSid` is remembered (replays later than that are refused by their age alone
/// nowhere, but Twilio retries a webhook within minutes).
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// Most pending requests listed back when a reply names none of several.
const MAX_LISTED: usize = 5;

fn forbidden(why: impl Into<String>) -> Response {
    let why = why.into();
    tracing::warn!(reason = %why, "Twilio webhook refused");
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response()
}

/// A TwiML answer: the text sent back to the sender, or nothing.
fn twiml(text: Option<&str>) -> Response {
    let body = match text {
        Some(text) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            escape(text)
        ),
        None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".to_owned(),
    };
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `POST /twilio/inbound`.
pub async fn inbound(State(state): State<AppState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(fields) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return ApiError::invalid(countersign_core::Invalid::new(
            ".",
            "the body is not a form (application/x-www-form-urlencoded)",
        ))
        .into_response();
    };
    if fields.len() > MAX_FIELDS {
        return ApiError::invalid(countersign_core::Invalid::new(".", format!("more than {MAX_FIELDS} form fields")))
            .into_response();
    }
    let Some(to) = field(&fields, "To").and_then(e164) else {
        return forbidden("no To number: not a Twilio message webhook");
    };
    let connections = match state.store.twilio_connections_to(&to).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(signature) = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()) else {
        return forbidden("no X-Twilio-Signature header");
    };
    let url = format!("{}{}", state.public_base, uri.path_and_query().map_or("/twilio/inbound", |p| p.as_str()));
    let verified: Vec<&TwilioConnection> =
        connections.iter().filter(|c| verify(&c.auth_token, &url, &fields, signature)).collect();
    if verified.is_empty() {
        return forbidden(format!(
            "the X-Twilio-Signature is not that of a project sending from {to} (signed URL taken as {url}; \
             behind a proxy, set public_url to the address Twilio calls)"
        ));
    }
    let projects: Vec<String> = verified.iter().map(|c| c.project_id.clone()).collect();
    let now = Timestamp::now();
    if let Some(sid) = field(&fields, "MessageSid") {
        match state
            .store
            .first_twilio_message(sid, now, Timestamp::from_micros(now.as_micros() - REMEMBER.as_micros() as i64))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(sid, "a Twilio message seen before was posted again; ignored");
                return twiml(None);
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let from_field = field(&fields, "From").unwrap_or_default();
    let medium = if from_field.trim_start().starts_with("whatsapp:") { Medium::Whatsapp } else { Medium::Sms };
    let Some(phone) = e164(from_field) else {
        return forbidden("no From number in international form");
    };
    let text = field(&fields, "Body").unwrap_or_default().trim().to_owned();
    match reply(&state, &projects, medium, &phone, &text, now).await {
        Ok(answer) => twiml(answer.as_deref()),
        Err(e) => e.into_response(),
    }
}

/// Handles a verified message; what to answer the sender, if anything.
async fn reply(
    state: &AppState,
    projects: &[String],
    medium: Medium,
    phone: &str,
    text: &str,
    now: Timestamp,
) -> Result<Option<String>, ApiError> {
    let store = &state.store;
    match keyword(text) {
        Some(Keyword::OptOut) => {
            store.set_sms_opt_out(phone, medium, true, now).await?;
            tracing::info!(phone, medium = medium.as_str(), "a number replied STOP: no more messages to it");
            return Ok(None);
        }
        Some(Keyword::OptIn) => {
            store.set_sms_opt_out(phone, medium, false, now).await?;
            // A bare YES is also Twilio's opt-in; it may still approve the one pending request.
            if !text.eq_ignore_ascii_case("yes") {
                return Ok(None);
            }
        }
        Some(Keyword::Help) => {
            return Ok(Some(
                "Countersign approvals: reply YES <code> to approve, NO <code> <reason> to reject, or the option's \
                 number and the code. Reply STOP to receive no more."
                    .into(),
            ));
        }
        None => {}
    }
    let open = store.open_sms_codes(phone, medium, projects).await?;
    // Four-digit words at the start that are codes this number was given (pending or not).
    let mut known: HashSet<String> = open.iter().map(|c| c.code.clone()).collect();
    let mut decided = None;
    for word in text.split_whitespace().take(2).filter(|w| w.len() == 4 && w.bytes().all(|b| b.is_ascii_digit())) {
        if !known.contains(word)
            && let Some(found) = store.sms_code_lookup(phone, medium, word, projects).await?
        {
            known.insert(found.code.clone());
            decided = Some(found);
        }
    }
    let parsed = parse_reply(text, |c| known.contains(c));
    let target: &SmsCode = match &parsed.code {
        Some(code) => match open.iter().find(|c| &c.code == code) {
            Some(found) => found,
            None => {
                // A code of this number whose request is decided: say who decided it.
                let Some(found) = decided.filter(|d| &d.code == code) else {
                    return Ok(Some(format!("No request {code} waits for an answer from this number.")));
                };
                let record = store
                    .request(&found.project_id, found.kind, &found.call_id)
                    .await?
                    .ok_or_else(|| ApiError::internal("a coded request vanished"))?;
                return Ok(Some(already(&record)));
            }
        },
        None => match open.as_slice() {
            [] if decided.is_none() => {
                // A stranger, or a number whose requests are all decided: nothing to answer.
                tracing::warn!(
                    phone,
                    medium = medium.as_str(),
                    "a message from a number nothing is pending for; ignored"
                );
                return Ok(None);
            }
            [] => return Ok(Some("Nothing waits for an answer from this number.".into())),
            [only] => only,
            several => return Ok(Some(listing(state, several).await?)),
        },
    };
    let record = store
        .request(&target.project_id, target.kind, &target.call_id)
        .await?
        .ok_or_else(|| ApiError::internal("a coded request vanished"))?;
    let Some(intent) = intent(&record, &parsed, text, &target.code) else {
        return Ok(Some(instructions(&record, &target.code)));
    };
    let mut actor = Actor::new(match medium {
        Medium::Sms => DecisionChannel::Sms,
        Medium::Whatsapp => DecisionChannel::Whatsapp,
    });
    actor.phone_number = Some(phone.to_owned());
    if let Some((user_id, email)) = store.user_by_phone(phone).await? {
        actor.user_id = Some(user_id);
        actor.email = Some(email);
    }
    let key = RequestKey::of(&record);
    match state.requests.decide(&key, intent, &Fields::PERSON, actor).await {
        Ok(json) => {
            let now: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
            tracing::info!(phone, call_id = %record.call_id, medium = medium.as_str(), "decided by text message");
            Ok(Some(if now.pointer("/status/responded_at").is_some_and(Value::is_string) {
                done(&now, &record, &target.code)
            } else {
                format!("Your approval of {} is recorded; more approvals are needed.", target.code)
            }))
        }
        Err(e) if e.status() == StatusCode::CONFLICT => {
            match store.request(&record.project_id, record.kind, &record.call_id).await? {
                Some(fresh) if fresh.outcome.is_some() => Ok(Some(already(&fresh))),
                _ => Ok(Some(e.message().to_owned())),
            }
        }
        Err(e) if e.status().is_client_error() => Ok(Some(e.message().chars().take(300).collect())),
        Err(e) => Err(e),
    }
}

/// The decision a reply asks for, or `None` when it asks nothing this request can take.
fn intent(record: &RequestRecord, parsed: &countersign_core::sms::Reply, text: &str, code: &str) -> Option<Intent> {
    let choices = options(record);
    let choice = |n: usize| choices.get(n.checked_sub(1)?);
    let comment = (!parsed.text.is_empty()).then(|| parsed.text.clone());
    match record.kind {
        RequestKind::FunctionCall => match parsed.verb {
            Some(Verb::Yes) => Some(Intent::Approve { comment, updated_kwargs: None }),
            Some(Verb::No) => Some(Intent::Reject { comment, option: None }),
            Some(Verb::Option(n)) => {
                // A bare option number says what the option says (the agent hears it as the comment).
                let choice = choice(n)?;
                Some(Intent::Reject {
                    comment: comment.or_else(|| Some(choice.says.clone())),
                    option: Some(choice.name.clone()),
                })
            }
            None => None,
        },
        RequestKind::HumanContact => match parsed.verb.and_then(|v| match v {
            Verb::Option(n) => choice(n),
            _ => None,
        }) {
            Some(choice) => Some(Intent::Answer {
                response: comment.or_else(|| Some(choice.says.clone())),
                option: Some(choice.name.clone()),
            }),
            _ => {
                // The whole reply but its code is the answer ("yes" answers a question with "yes").
                let answer = without_code(text, code);
                (!answer.is_empty()).then(|| Intent::Answer { response: Some(answer), option: None })
            }
        },
    }
}

/// A reply without its code (a word of its first two).
fn without_code(text: &str, code: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.iter().take(2).position(|w| *w == code) {
        Some(i) => words.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, w)| *w).collect::<Vec<_>>().join(" "),
        None => text.trim().to_owned(),
    }
}

/// How to answer a request, when a reply did not say.
fn instructions(record: &RequestRecord, code: &str) -> String {
    let numbered: Vec<String> =
        options(record).iter().enumerate().map(|(i, c)| format!("{} {code} for {}", i + 1, c.title)).collect();
    let more = if numbered.is_empty() { String::new() } else { format!(" Or reply {}.", numbered.join(", ")) };
    match record.kind {
        RequestKind::FunctionCall => format!("Reply YES {code} or NO {code} <reason>.{more}"),
        RequestKind::HumanContact => format!("Reply {code} <your answer>.{more}"),
    }
}

/// What the sender hears once their reply decided a request.
fn done(now: &Value, record: &RequestRecord, code: &str) -> String {
    let what = match record.kind {
        RequestKind::FunctionCall => {
            let name = serde_json::from_str::<Value>(record.spec.get())
                .ok()
                .and_then(|s| s.get("fn").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "the call".into());
            if now.pointer("/status/approved") == Some(&Value::Bool(true)) {
                format!("Approved {name} ({code}).")
            } else {
                format!("Rejected {name} ({code}).")
            }
        }
        RequestKind::HumanContact => format!("Your answer to {code} is recorded."),
    };
    format!("{what} Thank you.")
}

/// "Already approved by ..." for a request decided elsewhere (or earlier).
fn already(record: &RequestRecord) -> String {
    match &record.outcome {
        Some(o) => format!(
            "Already {} by {} via {} at {}.",
            describe(record),
            actor_name(&o.decided_by),
            o.decided_by.channel.as_str(),
            crate::html::detail::short_time(o.responded_at)
        ),
        None => "It is still pending.".into(),
    }
}

/// The codes of several pending requests, so the sender can name one.
async fn listing(state: &AppState, open: &[SmsCode]) -> Result<String, ApiError> {
    let mut lines = Vec::new();
    for code in open.iter().take(MAX_LISTED) {
        let what = match state.store.request(&code.project_id, code.kind, &code.call_id).await? {
            Some(record) => {
                let spec: Value = serde_json::from_str(record.spec.get()).unwrap_or(Value::Null);
                let field = if record.kind == RequestKind::FunctionCall { "fn" } else { "msg" };
                spec.get(field).and_then(Value::as_str).unwrap_or_default().chars().take(40).collect::<String>()
            }
            None => String::new(),
        };
        lines.push(format!("{} {what}", code.code));
    }
    let more = open.len().saturating_sub(MAX_LISTED);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    Ok(format!(
        "{} requests wait for you: {}{more}. Reply YES <code> or NO <code> <reason>, or <code> <answer>.",
        open.len(),
        lines.join("; ")
    ))
}
