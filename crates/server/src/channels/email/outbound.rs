//! The email channel's outbound side: one email of one event, composed from the request and sent
//! over SMTP. The delivery worker (`workers::delivery`) claims, leases and records; this only sends.

use super::compose::{self, Composed};
use super::links::LinkSigner;
use super::render::{TemplateLimits, TemplateRenderer};
use super::{EmailSettings, links_for};
use crate::channels::Outbound;
use countersign_core::Timestamp;
use countersign_core::route::{Channel, EmailPurpose};
use countersign_core::webhook::retry_delay;
use countersign_store::{AttemptOutcome, Claimed, Store};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why an email was not sent.
#[derive(Debug)]
struct Failure {
    reason: String,
    /// Trying again cannot help (a bad address, a template over its limits): no retries.
    permanent: bool,
}

impl Failure {
    fn permanent(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), permanent: true }
    }

    fn transient(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), permanent: false }
    }
}

/// Sends emails.
pub struct EmailChannel {
    store: Arc<dyn Store>,
    signer: Arc<LinkSigner>,
    base: String,
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    templates: TemplateRenderer,
}

impl Outbound for EmailChannel {
    const CHANNEL: Channel = Channel::Email;
    /// The SMTP timeout is 30 s; after a crash mid-send, any instance retries.
    const LEASE: Duration = Duration::from_secs(60);
    /// A slow email (a template rendering, a slow SMTP server) holds one slot, not the others.
    const IN_FLIGHT: usize = 16;

    async fn attempt(&self, claimed: &Claimed) -> AttemptOutcome {
        let m = &claimed.delivery;
        let (at, started) = (Timestamp::now(), Instant::now());
        let (recipients, failure) = match self.deliver(claimed).await {
            Ok(recipients) => (recipients, None),
            Err(failure) => (Vec::new(), Some(failure)),
        };
        let retry_at = match &failure {
            Some(f) if !f.permanent => retry_delay(m.attempts + 1).map(|d| Timestamp::now().plus(d)),
            _ => None,
        };
        let purpose = EmailPurpose::of(m.event_type).as_str();
        match &failure {
            None => tracing::info!(message_id = %m.id, call_id = %m.call_id, purpose, "email sent"),
            Some(f) => {
                tracing::warn!(message_id = %m.id, call_id = %m.call_id, purpose, error = %f.reason, retry = retry_at.is_some(), "email not sent")
            }
        }
        AttemptOutcome {
            at,
            status_code: None,
            delivered: failure.is_none(),
            error: failure.map(|f| f.reason),
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            retry_at,
            recipients,
            deferred: false,
        }
    }
}

impl EmailChannel {
    /// The channel; fails when the SMTP URL or From address cannot be used. `limits` bound the
    /// agents' templates.
    pub fn new(
        store: Arc<dyn Store>,
        signer: Arc<LinkSigner>,
        base: String,
        settings: &EmailSettings,
        limits: &crate::limits::Limits,
    ) -> Result<Self, String> {
        let transport = match &settings.smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| format!("smtp_url is not usable: {e}"))?
                    .timeout(Some(Duration::from_secs(30)))
                    .build(),
            ),
            None => None,
        };
        let from = settings.from.clone().unwrap_or_else(|| "Countersign <countersign@localhost>".into());
        let from: Mailbox = from.parse().map_err(|e| format!("email_from {from:?} is not an address: {e}"))?;
        let templates = TemplateRenderer::new(settings.template_renderer.clone(), TemplateLimits::from(limits));
        Ok(Self { store, signer, base, transport, from, templates })
    }

    /// Composes and sends one email; returns everyone it went to.
    async fn deliver(&self, claimed: &Claimed) -> Result<Vec<String>, Failure> {
        let m = &claimed.delivery;
        let record = self
            .store
            .request(&m.project_id, m.kind, &m.call_id)
            .await
            .map_err(|e| Failure::transient(format!("cannot read the request: {e}")))?
            .ok_or_else(|| Failure::permanent("the request is gone"))?;
        let escalation = match EmailPurpose::of(m.event_type) {
            EmailPurpose::Escalation => Some(
                record
                    .escalations
                    .get(usize::try_from(m.event_seq).unwrap_or(0).saturating_sub(1))
                    .cloned()
                    .ok_or_else(|| Failure::permanent("the escalation is missing"))?,
            ),
            EmailPurpose::Request => None,
        };
        let fallback = self
            .store
            .default_email(&m.project_id)
            .await
            .map_err(|e| Failure::transient(format!("cannot read the project: {e}")))?;
        let channel = compose::channel_of(&record, fallback.as_deref());
        let links = links_for(&self.signer, &self.base, &record);
        let (mut composed, template) = match compose::compose(&record, channel, escalation.as_ref(), &links) {
            Ok(composed) => composed,
            // An escalation of a request that reaches people only in Slack: nothing to email.
            Err(e) if escalation.is_some() && e == compose::NOBODY => {
                tracing::info!(message_id = %m.id, call_id = %m.call_id, "the escalation has no email recipient; nothing to email");
                return Ok(Vec::new());
            }
            Err(e) => return Err(Failure::permanent(e)),
        };
        // Composed first: an escalation with nobody to email is done, SMTP or not.
        let Some(transport) = &self.transport else {
            return Err(Failure::permanent(
                "no SMTP server is configured: set smtp_url (and email_from) in the configuration",
            ));
        };
        // Addresses first: a bad one fails the email before any template is rendered.
        let mut message = self.message(&m.id, &composed)?;
        if let Some(template) = template {
            let rendered = self.templates.render(&template.source, &template.context).await.map_err(|e| {
                tracing::warn!(message_id = %m.id, call_id = %m.call_id, reason = %e.reason, "an email template failed");
                Failure { reason: e.reason, permanent: e.permanent }
            })?;
            tracing::debug!(message_id = %m.id, peak_rss_bytes = ?rendered.peak_rss_bytes, "email template rendered");
            composed.html = rendered.html;
            message = self.message(&m.id, &composed)?;
        }
        transport.send(message).await.map_err(|e| Failure {
            reason: format!("the SMTP server refused or failed: {e}"),
            permanent: e.is_permanent(),
        })?;
        Ok(recipients(&composed))
    }

    fn message(&self, message_id: &str, c: &Composed) -> Result<Message, Failure> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(c.subject.clone())
            .message_id(Some(message_id.to_owned()));
        for a in &c.to {
            builder = builder.to(mailbox(a)?);
        }
        for a in &c.cc {
            builder = builder.cc(mailbox(a)?);
        }
        for a in &c.bcc {
            builder = builder.bcc(mailbox(a)?);
        }
        if let Some(id) = &c.in_reply_to {
            builder = builder.in_reply_to(id.clone());
        }
        if let Some(id) = &c.references {
            builder = builder.references(id.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(c.text.clone(), c.html.clone()))
            .map_err(|e| Failure::permanent(format!("cannot build the email: {e}")))
    }
}

/// A recipient as a mailbox; an address that is not one fails the email for good.
fn mailbox(address: &str) -> Result<Mailbox, Failure> {
    address.parse::<Mailbox>().map_err(|e| {
        Failure::permanent(format!("{address:?} is not a valid email address ({e}), so the email cannot be sent"))
    })
}

/// Everyone an email went to, by bare address (what a reply's `From:` is matched against).
fn recipients(c: &Composed) -> Vec<String> {
    c.recipients().into_iter().map(|a| a.parse::<Mailbox>().map_or(a, |m| m.email.to_string().to_lowercase())).collect()
}

/// Connects to the SMTP server `smtp_url` names, logs in if it has credentials, and sends NOOP
/// (`countersign doctor`). The error says what failed.
pub async fn check_smtp(smtp_url: &str) -> Result<(), String> {
    let transport: AsyncSmtpTransport<Tokio1Executor> = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
        .map_err(|e| format!("smtp_url is not usable: {e}"))?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    match transport.test_connection().await {
        Ok(true) => Ok(()),
        Ok(false) => Err("the server did not answer NOOP".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends a short plain-text test email to `to` through the configured SMTP server (the admin
/// pages' "send a test"). The error says what failed.
pub async fn send_test(settings: &EmailSettings, to: &str, text: &str) -> Result<(), String> {
    let smtp_url = settings.smtp_url.as_deref().ok_or("no SMTP server is configured (set smtp_url)")?;
    let transport: AsyncSmtpTransport<Tokio1Executor> = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
        .map_err(|e| format!("smtp_url is not usable: {e}"))?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let from = settings.from.clone().unwrap_or_else(|| "Countersign <countersign@localhost>".into());
    let from: Mailbox = from.parse().map_err(|e| format!("email_from {from:?} is not an address: {e}"))?;
    let to: Mailbox = to.parse().map_err(|e| format!("{to:?} is not an email address: {e}"))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject("Countersign test email")
        .body(text.to_owned())
        .map_err(|e| format!("cannot compose the email: {e}"))?;
    transport.send(message).await.map(|_| ()).map_err(|e| e.to_string())
}
