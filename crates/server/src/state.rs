//! The state every handler reaches: the store, the in-memory requests, the key cache, the
//! sign-in gate, the settings, and what email links need.

use crate::services::auth::KeyCache;
use crate::services::requests::Requests;
use countersign_store::Store;
use std::ops::Deref;
use std::sync::Arc;

/// Settings of the HTTP face.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Organization name reported by `GET /project`.
    pub organization: String,
    /// Public base URL; when it is `https://...`, session cookies are marked `Secure` (they also
    /// are behind a proxy that sends `X-Forwarded-Proto: https`). Links in emails start with it
    /// (without it, with `http://` and the bound address).
    pub public_url: Option<String>,
    /// How to send email.
    pub email: crate::channels::email::EmailSettings,
    /// How to reach Slack.
    pub slack: crate::channels::slack::SlackSettings,
    /// How to reach Twilio (SMS and WhatsApp).
    pub twilio: crate::channels::sms::TwilioSettings,
    /// Bounds on what clients can send and make the server hold.
    pub limits: crate::limits::Limits,
    /// Where `/metrics` is served (nowhere by default).
    pub metrics: crate::metrics::MetricsSettings,
    /// The git commit the binary was built from (`/healthz`, `countersign_build_info`).
    pub commit: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            organization: "countersign".into(),
            public_url: None,
            email: crate::channels::email::EmailSettings::default(),
            slack: crate::channels::slack::SlackSettings::default(),
            twilio: crate::channels::sms::TwilioSettings::default(),
            limits: crate::limits::Limits::default(),
            metrics: crate::metrics::MetricsSettings::default(),
            commit: "unknown",
        }
    }
}

/// What every handler can reach.
pub struct Inner {
    pub store: Arc<dyn Store>,
    pub requests: Requests,
    pub keys: KeyCache,
    pub settings: Settings,
    /// Signs and checks the links in emails.
    pub links: Arc<crate::channels::email::links::LinkSigner>,
    /// The public base URL, without a trailing slash.
    pub public_base: String,
    /// The Slack Web API client (`settings.slack.api_base`).
    pub slack: crate::channels::slack::SlackApi,
    /// The Twilio REST API client (`settings.twilio.api_base`).
    pub twilio: crate::channels::sms::TwilioApi,
    /// Guards passwords: the argon2 cap and the login throttles of this server.
    pub people: crate::services::people::Gate,
    /// Signs approval receipts with the installation's current key.
    pub signer: Arc<crate::services::receipts::Signer>,
    /// Reads the store's gauges for `/metrics`.
    pub scraper: crate::metrics::Scraper,
}

/// Cheaply clonable handle to [`Inner`].
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// State over a store; `links` signs email links, `public_base` starts them.
    pub fn new(
        store: Arc<dyn Store>,
        settings: Settings,
        links: Arc<crate::channels::email::links::LinkSigner>,
        public_base: String,
        signer: crate::services::receipts::Signer,
    ) -> Self {
        let signer = Arc::new(signer);
        Self(Arc::new(Inner {
            requests: Requests::new(store.clone(), settings.limits.clone(), signer.clone()),
            keys: KeyCache::default(),
            people: crate::services::people::Gate::new(&settings.limits),
            slack: crate::channels::slack::SlackApi::new(&settings.slack.api_base),
            twilio: crate::channels::sms::TwilioApi::new(&settings.twilio.api_base),
            store,
            settings,
            links,
            public_base,
            signer,
            scraper: crate::metrics::Scraper::default(),
        }))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
