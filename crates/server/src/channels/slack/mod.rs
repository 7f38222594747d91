//! The Slack channel. Outbound (`outbound`): requests addressed to Slack (or to a project's
//! default Slack channel) are posted as Block Kit messages (`blocks`), updated when decided
//! anywhere, and answered in their thread when escalated, through the Web API (`api`). Inbound
//! (`inbound`): button clicks, modal submissions and thread replies come back signed by the
//! project's Slack app and decide through the one typed decision path.

pub mod api;
pub mod blocks;
pub mod inbound;
pub mod outbound;
pub mod spec;

pub use api::{DEFAULT_API_BASE, SlackApi, SlackError};
pub use outbound::SlackChannel;

use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;

/// How to reach Slack.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// The Web API's base URL: `https://slack.com/api`, or a local fake in tests.
    pub api_base: String,
}

impl Default for SlackSettings {
    fn default() -> Self {
        Self { api_base: DEFAULT_API_BASE.to_owned() }
    }
}

/// The endpoints a Slack app calls: `POST /slack/interactions` and `POST /slack/events`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/slack/interactions", post(inbound::interactions))
        .route("/slack/events", post(inbound::events))
        .layer(DefaultBodyLimit::max(inbound::MAX_SLACK_BODY))
}
