//! The SMS and WhatsApp channel's outbound side: one text message for each new request addressed
//! to a phone number, with the request's code for that number (handed out by the store, the same
//! on every retry) and how to answer, rendered by `countersign_core::sms`.

use super::api::{TwilioApi, TwilioError};
use super::e164;
use crate::channels::Outbound;
use countersign_core::route::Channel;
use countersign_core::sms::{Prompt, render};
use countersign_core::webhook::retry_delay;
use countersign_core::{RequestKind, RequestRecord, Timestamp};
use countersign_store::{AttemptOutcome, Claimed, Medium, Store};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a message did not go out.
#[derive(Debug)]
enum Failure {
    /// Twilio or the network said no.
    Twilio(TwilioError),
    /// Nothing can make it work (no connection, no number, the number replied STOP).
    Permanent(String),
    /// Worth trying again later.
    Transient(String),
}

impl From<countersign_store::StoreError> for Failure {
    fn from(e: countersign_store::StoreError) -> Self {
        Self::Transient(format!("cannot read the store: {e}"))
    }
}

/// What was sent: to whom, and Twilio's HTTP status.
struct Sent {
    to: String,
    status: Option<u16>,
}

/// Sends text messages through Twilio.
pub struct SmsChannel {
    store: Arc<dyn Store>,
    api: TwilioApi,
    /// The server's public base URL (links to the inbox).
    base: String,
}

impl Outbound for SmsChannel {
    const CHANNEL: Channel = Channel::Sms;
    /// One REST call of at most 10 s, plus a margin.
    const LEASE: Duration = Duration::from_secs(60);
    const IN_FLIGHT: usize = 16;

    async fn attempt(&self, claimed: &Claimed) -> AttemptOutcome {
        let d = &claimed.delivery;
        let (at, started) = (Timestamp::now(), Instant::now());
        let result = self.deliver(claimed).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = |delivered, status_code, error: Option<String>, retry_at, recipients| AttemptOutcome {
            at,
            status_code,
            error,
            latency_ms,
            delivered,
            retry_at,
            recipients,
            deferred: false,
        };
        let retry = |wait: Duration| Some(Timestamp::now().plus(wait));
        let (reason, status, retry_at) = match result {
            Ok(Some(sent)) => {
                tracing::info!(delivery = %d.id, call_id = %d.call_id, to = %sent.to, "text message sent");
                return outcome(true, sent.status, None, None, vec![sent.to]);
            }
            Ok(None) => return outcome(true, None, None, None, Vec::new()),
            Err(Failure::Twilio(e @ TwilioError::RateLimited { retry_after })) => {
                (e.to_string(), Some(429), retry(retry_after))
            }
            Err(Failure::Twilio(e)) => {
                let status = match &e {
                    TwilioError::Api { status, .. } => Some(*status),
                    _ => None,
                };
                let retry_at = if e.is_permanent() { None } else { retry_delay(d.attempts + 1).and_then(retry) };
                (e.to_string(), status, retry_at)
            }
            Err(Failure::Transient(reason)) => (reason, None, retry_delay(d.attempts + 1).and_then(retry)),
            Err(Failure::Permanent(reason)) => (reason, None, None),
        };
        if retry_at.is_some() {
            tracing::info!(delivery = %d.id, call_id = %d.call_id, error = %reason, "text message not sent; will retry");
        } else {
            tracing::warn!(delivery = %d.id, call_id = %d.call_id, error = %reason, "text message failed for good; the request stays decidable elsewhere");
        }
        outcome(false, status, Some(reason), retry_at, Vec::new())
    }
}

/// Where a request's spec asks to be sent: by SMS or WhatsApp, to this number (E.164).
pub fn address(record: &RequestRecord) -> Result<(Medium, String), String> {
    let spec: Value = serde_json::from_str(record.spec.get()).unwrap_or(Value::Null);
    let (medium, number) =
        [(Medium::Sms, "/channel/sms/phone_number"), (Medium::Whatsapp, "/channel/whatsapp/phone_number")]
            .into_iter()
            .find_map(|(medium, pointer)| spec.pointer(pointer).and_then(Value::as_str).map(|n| (medium, n)))
            .ok_or("the request names no phone number (channel.sms or channel.whatsapp)")?;
    let phone = e164(number).ok_or_else(|| {
        format!("{number:?} is not a phone number in international form (+ country code, e.g. +15551234567)")
    })?;
    Ok((medium, phone))
}

/// An option a reply may pick by its number.
pub struct Choice {
    pub name: String,
    pub title: String,
    /// What a choice without words says: its `prompt_fill`, else its description, else its title.
    pub says: String,
}

/// The options a reply may pick by number, in order.
pub fn options(record: &RequestRecord) -> Vec<Choice> {
    let field = match record.kind {
        RequestKind::FunctionCall => "reject_options",
        RequestKind::HumanContact => "response_options",
    };
    let spec: Value = serde_json::from_str(record.spec.get()).unwrap_or(Value::Null);
    spec.get(field)
        .and_then(Value::as_array)
        .map(|options| {
            options
                .iter()
                .filter_map(|o| {
                    let text = |key: &str| o.get(key).and_then(Value::as_str).filter(|t| !t.trim().is_empty());
                    let name = o.get("name").and_then(Value::as_str)?;
                    let title = text("title").unwrap_or(name);
                    let says = text("prompt_fill").or_else(|| text("description")).unwrap_or(title);
                    Some(Choice { name: name.to_owned(), title: title.to_owned(), says: says.to_owned() })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What a request asks, for its text: the function (with its arguments) or the question.
pub fn prompt_text(record: &RequestRecord, code: &str, link: Option<&str>) -> String {
    let spec: Value = serde_json::from_str(record.spec.get()).unwrap_or(Value::Null);
    let titles: Vec<String> = options(record).into_iter().map(|c| c.title).collect();
    let subject = match record.kind {
        RequestKind::FunctionCall => spec.get("fn").and_then(Value::as_str).unwrap_or("a function").to_owned(),
        RequestKind::HumanContact => spec.get("msg").and_then(Value::as_str).unwrap_or("a question").to_owned(),
    };
    render(&Prompt {
        kind: record.kind,
        subject: &subject,
        args: spec.get("kwargs").filter(|_| record.kind == RequestKind::FunctionCall),
        code,
        options: &titles,
        link,
    })
}

/// Where a code's counter starts for a number: spread over 1000-9999 by the number, so the codes
/// people see do not all start at 1000.
fn first_code(phone: &str) -> u16 {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(phone.as_bytes());
    1000 + u16::from_be_bytes([hash[0], hash[1]]) % 9000
}

impl SmsChannel {
    /// The channel, calling the REST API with `api`, linking to the inbox at `base`.
    pub fn new(store: Arc<dyn Store>, api: TwilioApi, base: String) -> Self {
        Self { store, api, base }
    }

    /// Sends the message of a new request; `None` when there was nothing to send (decided first).
    async fn deliver(&self, claimed: &Claimed) -> Result<Option<Sent>, Failure> {
        let d = &claimed.delivery;
        let record = self
            .store
            .request(&d.project_id, d.kind, &d.call_id)
            .await?
            .ok_or_else(|| Failure::Permanent("the request is gone".into()))?;
        if record.outcome.is_some() {
            tracing::info!(delivery = %d.id, call_id = %d.call_id, "not texted: decided before it went out");
            return Ok(None);
        }
        let (medium, phone) = address(&record).map_err(Failure::Permanent)?;
        let connection = self.store.twilio_connection(&d.project_id).await?.ok_or_else(|| {
            Failure::Permanent(
                "the project is not connected to Twilio (countersign twilio connect --project PROJECT ...)".into(),
            )
        })?;
        let from = match medium {
            Medium::Sms => connection.from.clone(),
            Medium::Whatsapp => connection.whatsapp_from.clone().ok_or_else(|| {
                Failure::Permanent(
                    "the project has no WhatsApp sender (countersign twilio connect --whatsapp-from whatsapp:+1...)"
                        .into(),
                )
            })?,
        };
        if self.store.sms_opted_out(&phone, medium).await? {
            return Err(Failure::Permanent(format!(
                "{phone} replied STOP: nothing is sent to it by {} until it replies START",
                medium.as_str()
            )));
        }
        let now = Timestamp::now();
        let code =
            self.store.sms_code((&d.project_id, d.kind, &d.call_id), medium, &phone, first_code(&phone), now).await?;
        let project = self.store.project_by_id(&record.project_id).await?;
        let name = project.map(|p| p.name.to_string()).unwrap_or_default();
        let link = format!("{}{}", self.base, crate::html::detail::href(&name, &record));
        let body = prompt_text(&record, &code, Some(&link));
        let (to, from) = match medium {
            Medium::Sms => (phone.clone(), from),
            Medium::Whatsapp => (format!("whatsapp:{phone}"), format!("whatsapp:{from}")),
        };
        match self.api.send(&connection.account_sid, &connection.auth_token, &to, &from, &body).await {
            Ok(sid) => {
                tracing::debug!(delivery = %d.id, sid, "Twilio accepted the message");
                Ok(Some(Sent { to, status: Some(201) }))
            }
            Err(e) => Err(Failure::Twilio(e)),
        }
    }
}
