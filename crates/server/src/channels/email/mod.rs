//! The email channel. Outbound (`outbound`): the emails routed into the delivery queue with each
//! event (a request with an email channel, an escalation), composed (`compose`, agents' templates
//! in `render`) and sent over SMTP with lettre. Inbound: the signed links in them open small pages
//! that decide that one request (`links`, `pages`), and replies come back through the inbound
//! endpoint (`inbound`). Its routes are mounted by [`routes`] and [`inbound_routes`].

pub mod compose;
pub mod inbound;
pub mod links;
pub mod outbound;
pub mod pages;
pub mod render;

pub use outbound::EmailChannel;

use crate::state::AppState;
use axum::Router;
use axum::routing::get;
use compose::Links;
use countersign_core::{RequestKind, RequestRecord, Timestamp};
use links::{LINK_TTL, LinkAction, LinkSigner};
use std::path::PathBuf;
use utoipa_axum::router::OpenApiRouter;

/// The pages behind the emails' links: `GET /email/{token}` shows, `POST` decides.
pub fn routes() -> Router<AppState> {
    Router::new().route("/email/{token}", get(pages::show).post(pages::decide))
}

/// The endpoint of replies by email, relative to `/humanlayer/v1` (where `app` nests it, in the
/// OpenAPI document): `POST /email/inbound`.
pub fn inbound_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(inbound::receive))
}

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
