//! The email channel: a worker sends the emails the database queued with each change (a request
//! with an email channel, an escalation), over SMTP with lettre; the links in them open small
//! pages that decide that one request (see `pages`), and replies come back through the inbound
//! endpoint (see `inbound`).

pub mod compose;
pub mod inbound;
pub mod links;
pub mod pages;
pub mod render;

use compose::{Composed, Links};
use countersign_core::webhook::retry_delay;
use countersign_core::{RequestKind, RequestRecord, Timestamp};
use countersign_store::{ClaimedEmail, Store};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use links::{LINK_TTL, LinkAction, LinkSigner};
use render::{TemplateLimits, TemplateRenderer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How long a claim lasts (the SMTP timeout is 30 s); after a crash mid-send, any instance retries.
const LEASE: Duration = Duration::from_secs(60);
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Emails in flight at once: a slow one (a template rendering, a slow SMTP server) holds one slot,
/// not the others.
const IN_FLIGHT: usize = 16;

/// How to send email.
#[derive(Debug, Clone, Default)]
pub struct EmailSettings {
    /// `smtp://user:pass@host:587?tls=required`, `smtps://host:465`, or `smtp://host:25` (plain).
    pub smtp_url: Option<String>,
    /// The From address, e.g. `Countersign <approvals@example.com>`.
    pub from: Option<String>,
    /// The program that renders agents' templates in a child process with a memory cap: the
    /// `countersign` binary, whose `main` handles [`render::CHILD_ARG`] (`countersign serve` sets
    /// it to itself). Without it templates render on a blocking thread of this process, bounded
    /// by fuel, output size and time but not memory (see [`render`]).
    pub template_renderer: Option<PathBuf>,
}

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

/// The links of a request's email, under `base` (the server's public URL).
pub fn links_for(signer: &LinkSigner, base: &str, record: &RequestRecord) -> Links {
    let expires = Timestamp::now().plus(LINK_TTL);
    let url = |action| {
        let token = signer.token(&record.project_id, record.kind, &record.call_id, action, expires);
        format!("{base}/email/{token}")
    };
    let of: Vec<(LinkAction, String)> = match record.kind {
        RequestKind::FunctionCall => {
            vec![(LinkAction::Approve, url(LinkAction::Approve)), (LinkAction::Reject, url(LinkAction::Reject))]
        }
        RequestKind::HumanContact => vec![(LinkAction::Answer, url(LinkAction::Answer))],
    };
    Links { view: of[0].1.clone(), of }
}

/// Sends queued emails until told to stop.
pub struct Mailer {
    store: Arc<dyn Store>,
    signer: Arc<LinkSigner>,
    base: String,
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    wake: Arc<Notify>,
    templates: TemplateRenderer,
}

impl Mailer {
    /// A mailer; fails when the SMTP URL or From address cannot be used. `limits` bound the
    /// agents' templates.
    pub fn new(
        store: Arc<dyn Store>,
        signer: Arc<LinkSigner>,
        base: String,
        settings: &EmailSettings,
        limits: &crate::limits::Limits,
        wake: Arc<Notify>,
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
        Ok(Self { store, signer, base, transport, from, wake, templates })
    }

    /// Runs until `closing` turns true (then finishes the emails in flight).
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        let mut sending = FuturesUnordered::new();
        loop {
            if *closing.borrow() {
                break;
            }
            let now = Timestamp::now();
            let free = IN_FLIGHT - sending.len();
            if free > 0 {
                let limit = u32::try_from(free).unwrap_or(1);
                let claim = self.store.claim_emails(now, now.plus(LEASE), limit);
                let claimed = alongside(&mut sending, claim).await.unwrap_or_else(|err| {
                    tracing::warn!(%err, "cannot claim emails to send; retrying");
                    Vec::new()
                });
                if !claimed.is_empty() {
                    sending.extend(claimed.into_iter().map(|c| self.send(c)));
                    continue;
                }
            }
            let sleep = match alongside(&mut sending, self.store.next_email_due()).await {
                Ok(Some(at)) => Duration::from_micros(u64::try_from(at.as_micros() - now.as_micros()).unwrap_or(0)),
                _ => IDLE_CHECK,
            }
            .min(IDLE_CHECK);
            tokio::select! {
                Some(()) = sending.next(), if !sending.is_empty() => {}
                () = tokio::time::sleep(sleep), if sending.len() < IN_FLIGHT => {}
                () = self.wake.notified(), if sending.len() < IN_FLIGHT => {}
                _ = closing.wait_for(|c| *c) => break,
            }
        }
        while sending.next().await.is_some() {}
    }

    async fn send(&self, claimed: ClaimedEmail) {
        let m = &claimed.message;
        let (recipients, error) = match self.deliver(&claimed).await {
            Ok(recipients) => (recipients, None),
            Err(failure) => (Vec::new(), Some(failure)),
        };
        let retry_at = match &error {
            Some(f) if !f.permanent => retry_delay(m.attempts + 1).map(|d| Timestamp::now().plus(d)),
            _ => None,
        };
        let error = error.map(|f| f.reason);
        match &error {
            None => tracing::info!(message_id = %m.id, call_id = %m.call_id, purpose = %m.purpose, "email sent"),
            Some(e) => {
                tracing::warn!(message_id = %m.id, call_id = %m.call_id, error = %e, retry = retry_at.is_some(), "email not sent")
            }
        }
        if let Err(err) = self.store.finish_email(&claimed, &recipients, error.as_deref(), retry_at).await {
            tracing::warn!(%err, message_id = %m.id, "cannot record an email attempt; it will be retried");
        }
    }

    /// Composes and sends one email; returns everyone it went to.
    async fn deliver(&self, claimed: &ClaimedEmail) -> Result<Vec<String>, Failure> {
        let m = &claimed.message;
        let Some(transport) = &self.transport else {
            return Err(Failure::permanent(
                "no SMTP server is configured: set smtp_url (and email_from) in the configuration",
            ));
        };
        let record = self
            .store
            .request(&m.project_id, m.kind, &m.call_id)
            .await
            .map_err(|e| Failure::transient(format!("cannot read the request: {e}")))?
            .ok_or_else(|| Failure::permanent("the request is gone"))?;
        let escalation = match m.purpose.as_str() {
            "escalation" => Some(
                record
                    .escalations
                    .get(usize::try_from(m.event_seq).unwrap_or(0).saturating_sub(1))
                    .cloned()
                    .ok_or_else(|| Failure::permanent("the escalation is missing"))?,
            ),
            _ => None,
        };
        let fallback = self
            .store
            .default_email(&m.project_id)
            .await
            .map_err(|e| Failure::transient(format!("cannot read the project: {e}")))?;
        let channel = compose::channel_of(&record, fallback.as_deref());
        let links = links_for(&self.signer, &self.base, &record);
        let (mut composed, template) =
            compose::compose(&record, channel, escalation.as_ref(), &links).map_err(Failure::permanent)?;
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

/// Awaits `work` while driving the emails in flight. The sends run inside the worker's task, so
/// while it waits on the store they must still be polled: each may hold one of the pool's
/// connections, and with as many sends in flight as connections, a claim waiting for a free one
/// would otherwise wait forever.
async fn alongside<T>(sending: &mut FuturesUnordered<impl Future<Output = ()>>, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            Some(()) = sending.next(), if !sending.is_empty() => {}
        }
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
