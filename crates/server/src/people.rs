//! People signing in and deciding: password checks with lockout, sessions for browsers and the
//! terminal, set-password links, and decisions made by a person (never outside their projects).
//! The web pages and the terminal API are thin over this.

use crate::error::{ApiError, ApiResult};
use crate::live::RequestKey;
use crate::requests::Requests;
use axum::http::StatusCode;
use bytes::Bytes;
use countersign_core::api_key::KeyHash;
use countersign_core::session::{PASSWORD_LINK_TTL, PASSWORD_TOKEN_PREFIX, SESSION_PREFIX, Secret, SessionKind};
use countersign_core::{Actor, DecisionChannel, Email, Project, RequestKind, RequestRecord, Timestamp, user};
use countersign_store::{NewSession, RequestFilter, Session, Store};
use serde_json::{Value, json};
use std::sync::OnceLock;

/// A new session: the token to hand out once (cookie or terminal) and what it grants.
pub struct SignedIn {
    pub token: String,
    pub session: Session,
}

/// Checks an email and password and opens a session. Wrong email and wrong password are the same
/// 401 (and cost the same argon2 verification); the failure that reaches the limit locks the
/// account for a while (429), and a locked account refuses even the right password until then.
pub async fn login(store: &dyn Store, email: &str, password: &str, kind: SessionKind) -> ApiResult<SignedIn> {
    let wrong = || ApiError::unauthorized("wrong email or password");
    let now = Timestamp::now();
    let credentials = match Email::parse(email) {
        Ok(email) => store.credentials(&email).await?,
        Err(_) => None,
    };
    let hash = credentials.as_ref().and_then(|c| c.password_hash.clone());
    let password = password.to_owned();
    let matches = tokio::task::spawn_blocking(move || match hash {
        Some(hash) => user::verify_password(&password, &hash),
        None => {
            // Same work for unknown people and people without a password.
            let _ = user::verify_password(&password, dummy_hash());
            false
        }
    })
    .await
    .map_err(ApiError::internal)?;
    let Some(credentials) = credentials else { return Err(wrong()) };
    if let Some(until) = credentials.locked_until.filter(|until| *until > now) {
        return Err(locked(until));
    }
    if !matches {
        tracing::info!(user_id = %credentials.user_id, "failed login");
        if let Some(until) = store.login_failed(&credentials.user_id, now).await? {
            tracing::warn!(user_id = %credentials.user_id, until = %until, "account locked after repeated failed logins");
            return Err(locked(until));
        }
        return Err(wrong());
    }
    store.login_succeeded(&credentials.user_id).await?;
    let secret = Secret::generate(SESSION_PREFIX);
    let new = NewSession {
        hash: secret.hash,
        user_id: credentials.user_id.clone(),
        kind,
        csrf_token: countersign_core::session::random_text(32),
        created_at: now,
        expires_at: now.plus(kind.ttl()),
    };
    store.create_session(&new).await?;
    let session = store
        .session(&secret.hash, now)
        .await?
        .ok_or_else(|| ApiError::internal("a session just stored cannot be read back"))?;
    tracing::info!(user_id = %credentials.user_id, kind = kind.as_str(), "signed in");
    Ok(SignedIn { token: secret.text, session })
}

fn locked(until: Timestamp) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "locked",
        format!(
            "too many failed logins: this account is locked until {} UTC; try again then",
            &until.to_rfc3339()[..19].replace('T', " ")
        ),
    )
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| user::hash_password("no-such-person-password").expect("a long password hashes"))
}

/// The session a token opens, if it is live.
pub async fn session(store: &dyn Store, token: &str) -> ApiResult<Option<Session>> {
    if !token.starts_with(SESSION_PREFIX) {
        return Ok(None);
    }
    Ok(store.session(&KeyHash::of(token), Timestamp::now()).await?)
}

/// Ends the session of a token.
pub async fn logout(store: &dyn Store, token: &str) -> ApiResult<()> {
    Ok(store.delete_session(&KeyHash::of(token)).await?)
}

/// Issues a one-time link token to set a person's password; returns the token text.
pub async fn password_link_token(store: &dyn Store, user_id: &str) -> ApiResult<String> {
    let secret = Secret::generate(PASSWORD_TOKEN_PREFIX);
    store.create_password_token(user_id, &secret.hash, Timestamp::now().plus(PASSWORD_LINK_TTL)).await?;
    Ok(secret.text)
}

/// Sets a password with a one-time token; 400 for a weak password, 404 for a used, expired or
/// unknown token.
pub async fn set_password(store: &dyn Store, token: &str, password: &str) -> ApiResult<countersign_core::User> {
    let password = password.to_owned();
    let hash =
        tokio::task::spawn_blocking(move || user::hash_password(&password)).await.map_err(ApiError::internal)??;
    store.set_password_with_token(&KeyHash::of(token), &hash, Timestamp::now()).await?.ok_or_else(|| {
        ApiError::not_found(
            "this link is used, expired or unknown; ask an admin for a new one (countersign users reset-password)",
        )
    })
}

/// What a person decides, from the inbox or the terminal.
#[derive(Debug, Clone)]
pub enum Action {
    /// With `updated_kwargs`, the function runs with these arguments instead of the agent's.
    Approve {
        comment: Option<String>,
        updated_kwargs: Option<Value>,
    },
    Reject {
        comment: Option<String>,
        option: Option<String>,
    },
    Answer {
        text: Option<String>,
        option: Option<String>,
    },
}

impl Action {
    /// The kind of request the action applies to.
    pub fn kind(&self) -> RequestKind {
        match self {
            Self::Approve { .. } | Self::Reject { .. } => RequestKind::FunctionCall,
            Self::Answer { .. } => RequestKind::HumanContact,
        }
    }

    /// The equivalent HumanLayer respond body, validated by the same rules as the API.
    fn body(&self) -> Value {
        let text = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        match self {
            Self::Approve { comment, updated_kwargs } => {
                json!({"approved": true, "comment": text(comment), "updated_kwargs": updated_kwargs})
            }
            Self::Reject { comment, option } => {
                json!({"approved": false, "comment": text(comment), "reject_option_name": text(option)})
            }
            Self::Answer { text: answer, option } => {
                json!({"response": text(answer), "response_option_name": text(option)})
            }
        }
    }
}

/// A signed-in person's view of requests: only their projects, ever.
pub struct Person<'a> {
    pub session: &'a Session,
    pub channel: DecisionChannel,
}

impl Person<'_> {
    /// Ids of the person's projects.
    pub fn project_ids(&self) -> Vec<String> {
        self.session.projects.iter().map(|p| p.id.clone()).collect()
    }

    /// The person's project with this name; 404 (not 403) for others, so names do not leak.
    pub fn project(&self, name: &str) -> ApiResult<&Project> {
        self.session
            .projects
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ApiError::not_found(format!("you have no project named {name:?}")))
    }

    /// One request of the person's projects.
    pub async fn request(
        &self,
        store: &dyn Store,
        project: &str,
        kind: RequestKind,
        call_id: &str,
    ) -> ApiResult<RequestRecord> {
        let project = self.project(project)?;
        store
            .request(&project.id, kind, call_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no {} {call_id:?} in project {}", kind.noun(), project.name)))
    }

    /// Finds a request by call id across the person's projects (or in `project`); 409 with code
    /// `ambiguous` when several projects have one.
    pub async fn find(
        &self,
        store: &dyn Store,
        kind: RequestKind,
        call_id: &str,
        project: Option<&str>,
    ) -> ApiResult<RequestRecord> {
        if let Some(name) = project {
            return self.request(store, name, kind, call_id).await;
        }
        let mut found = Vec::new();
        for p in &self.session.projects {
            if let Some(record) = store.request(&p.id, kind, call_id).await? {
                found.push((p.name.clone(), record));
            }
        }
        match found.len() {
            0 => Err(ApiError::not_found(format!("no {} {call_id:?} in your projects", kind.noun()))),
            1 => Ok(found.pop().expect("one").1),
            _ => {
                let names: Vec<String> = found.into_iter().map(|(name, _)| name).collect();
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "ambiguous",
                    format!(
                        "{call_id:?} exists in several of your projects ({}); name one with --project",
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    /// Decides a request as this person; returns the decided request's JSON. A request already
    /// decided is a 409 whose message says who decided it and what.
    pub async fn decide(&self, requests: &Requests, record: &RequestRecord, action: &Action) -> ApiResult<Bytes> {
        if record.kind != action.kind() {
            return Err(ApiError::invalid(countersign_core::Invalid::new(
                "action",
                match record.kind {
                    RequestKind::FunctionCall => "this is an approval: approve or reject it",
                    RequestKind::HumanContact => "this is a question: answer it",
                },
            )));
        }
        let actor = Actor {
            channel: self.channel,
            api_key: None,
            user_id: Some(self.session.user.id.clone()),
            email: Some(self.session.user.email.clone()),
        };
        requests.decide(&RequestKey::of(record), &action.body(), actor).await.map_err(|err| {
            if err.status() != StatusCode::BAD_REQUEST {
                return err;
            }
            // People chose an option or typed text; they never saw the API's field names.
            let message = err.message();
            let renamed = [
                ("reject_option_name: ", "option: "),
                ("response_option_name: ", "option: "),
                ("response: ", "answer: "),
            ]
            .into_iter()
            .find_map(|(api, person)| message.strip_prefix(api).map(|rest| format!("{person}{rest}")));
            match renamed {
                Some(message) => ApiError::new(StatusCode::BAD_REQUEST, err.code(), message),
                None => err,
            }
        })
    }

    /// Pending requests of the person's projects, newest first.
    pub async fn inbox(&self, store: &dyn Store, limit: u32) -> ApiResult<countersign_store::Page> {
        let filter = RequestFilter { pending: true, ..RequestFilter::default() };
        Ok(store.list_requests(&self.project_ids(), &filter, limit, 0).await?)
    }

    /// The project name of one of the person's project ids.
    pub fn project_name(&self, project_id: &str) -> &str {
        self.session.projects.iter().find(|p| p.id == project_id).map_or("?", |p| p.name.as_str())
    }
}
