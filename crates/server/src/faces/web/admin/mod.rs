//! The admin pages, for people with the `admin` role (everyone else gets 403): their projects,
//! and in each the API keys, people and groups, webhook endpoints with their delivery logs,
//! channel connections with a test message, the policy file, and the audit log.
//!
//! An admin administers the projects they belong to, as they decide in them. Every change goes
//! through the same store calls as the CLI's, which log it in the project's audit chain with the
//! admin's email, in the change's own transaction. Secrets (a new key, a webhook's signing
//! secret, a password link) are shown once, in the answer to the form that made them.

mod views;

use super::session::WebSession;
use super::{chrome, csrf_failed};
use crate::error::ApiError;
use crate::html::extract::{PageForm, PagePath, PageQuery};
use crate::html::{PageError, render, segment};
use crate::services::{audit, people, policies, webhooks};
use crate::state::AppState;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use countersign_core::api_key::{self, Scope, Scopes};
use countersign_core::event::{ProjectEventBody, Stamp};
use countersign_core::{Email, Project, ProjectName, RequestKind, Role};
use countersign_store::{GroupChange, NewApiKey, Store};
use serde::Deserialize;
use views::*;

/// The admin routes, under `/admin`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(projects).post(create_project))
        .route("/admin/p/{project}", get(project_home))
        .route("/admin/p/{project}/keys", get(keys).post(create_key))
        .route("/admin/p/{project}/keys/{id}/revoke", post(revoke_key))
        .route("/admin/p/{project}/people", get(people_page).post(add_person))
        .route("/admin/p/{project}/people/{email}/{action}", post(change_person))
        .route("/admin/p/{project}/groups", post(create_group))
        .route("/admin/p/{project}/groups/{name}/{action}", post(change_group))
        .route("/admin/p/{project}/webhooks", get(webhooks_page).post(add_webhook))
        .route("/admin/p/{project}/webhooks/{id}", get(webhook_log))
        .route("/admin/p/{project}/webhooks/{id}/remove", post(remove_webhook))
        .route("/admin/p/{project}/deliveries/{id}/redeliver", post(redeliver))
        .route("/admin/p/{project}/channels", get(channels))
        .route("/admin/p/{project}/channels/{channel}/{action}", post(channel_action))
        .route("/admin/p/{project}/policy", get(policy_page).post(set_policy))
        .route("/admin/p/{project}/policy/test", post(test_policy))
        .route("/admin/p/{project}/audit", get(audit_page))
        .route("/admin/p/{project}/audit/verify", post(verify_audit))
}

type PageResult = Result<Response, PageError>;

/// A signed-in admin; anyone else is refused with 403 (and sent to sign in without a session).
pub struct AdminSession(WebSession);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let who = WebSession::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        if who.session.user.role != Role::Admin {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "Admins only",
                "These pages are for admins. Ask an admin to change your role if you need them.",
            )
            .into_response());
        }
        Ok(Self(who))
    }
}

impl AdminSession {
    /// The admin's project with this name (404 for any other, so names do not leak).
    fn project(&self, name: &str) -> Result<Project, PageError> {
        self.0.session.projects.iter().find(|p| p.name == name).cloned().ok_or_else(|| {
            PageError::new(StatusCode::NOT_FOUND, "Not found", format!("you administer no project named {name:?}"))
        })
    }

    /// The project a form posts to: the CSRF check first, then the admin's project by name.
    fn posted(&self, name: &str, csrf: &str, headers: &HeaderMap) -> Result<Project, PageError> {
        self.check(csrf, headers)?;
        self.project(name)
    }

    /// Who made a change, for the audit log: the admin's email, now.
    fn stamp(&self) -> Stamp {
        Stamp::now(self.0.session.user.email.clone())
    }

    fn email(&self) -> &str {
        &self.0.session.user.email
    }

    /// True when every project of `user` is one this admin administers: only then may the admin
    /// change the account itself (disable it, set its phone, add it to a project), which would
    /// otherwise reach into projects that are not theirs.
    fn holds_all_of(&self, user: &countersign_core::User) -> bool {
        user.projects.iter().all(|name| self.0.session.projects.iter().any(|p| &p.name == name))
    }

    /// Refuses a form whose CSRF token is not this session's.
    fn check(&self, csrf: &str, headers: &HeaderMap) -> Result<(), PageError> {
        if self.0.csrf_ok(csrf, headers) { Ok(()) } else { Err(csrf_failed()) }
    }

    fn frame(&self, project: &Project, tab: &'static str) -> Frame {
        Frame { project: project.name.clone(), tab }
    }

    fn chrome(&self) -> super::views::Chrome {
        chrome(&self.0, "admin", "")
    }
}

fn store_error(e: countersign_store::StoreError) -> PageError {
    PageError::from(ApiError::from(e))
}

fn bad(message: impl Into<String>) -> PageError {
    PageError::new(StatusCode::BAD_REQUEST, "Cannot do that", message)
}

/// What a page says after a form: done, or why not.
fn flash(result: Result<String, String>) -> (StatusCode, Flash) {
    match result {
        Ok(notice) => (StatusCode::OK, Flash { notice, error: String::new() }),
        Err(error) => (StatusCode::BAD_REQUEST, Flash { notice: String::new(), error }),
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

// ---- projects -------------------------------------------------------------------------------

async fn projects(State(state): State<AppState>, admin: AdminSession) -> PageResult {
    projects_with(&state, &admin, StatusCode::OK, Flash::default()).await
}

async fn projects_with(state: &AppState, admin: &AdminSession, status: StatusCode, flash: Flash) -> PageResult {
    let store = state.store.as_ref();
    let mut rows = Vec::new();
    for p in &admin.0.session.projects {
        let keys = store.api_keys(Some(&p.name)).await.map_err(store_error)?;
        let people = store.users(Some(&p.name)).await.map_err(store_error)?;
        let hooks = store.webhooks(Some(&p.id)).await.map_err(store_error)?;
        rows.push(ProjectRow {
            name: p.name.clone(),
            created: p.created_at.to_rfc3339()[..10].to_owned(),
            keys: keys.iter().filter(|k| k.revoked_at.is_none()).count(),
            people: people.iter().filter(|u| u.disabled_at.is_none()).count(),
            webhooks: hooks.len(),
        });
    }
    let page = ProjectsPage { chrome: chrome(&admin.0, "admin", ""), rows, flash };
    Ok((status, render(&page)).into_response())
}

#[derive(Deserialize)]
struct NewProjectForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// Creates a project (or joins an existing one of that name is refused) with the admin in it.
async fn create_project(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PageForm(form): PageForm<NewProjectForm>,
) -> PageResult {
    admin.check(&form.csrf, &headers)?;
    let store = state.store.as_ref();
    let result = async {
        let name = ProjectName::parse(form.name.trim()).map_err(|e| e.to_string())?;
        // One transaction: the project, the admin in it, and their events; a taken name fails.
        if store.create_project(&name, admin.email(), &admin.stamp()).await.map_err(|e| e.to_string())?.is_none() {
            return Err(format!("A project named {name:?} exists already; ask one of its admins to add you."));
        }
        tracing::info!(project = %name, by = admin.email(), "project created in the admin pages");
        Ok(name.as_str().to_owned())
    }
    .await;
    match result {
        Ok(name) => Ok(Redirect::to(&format!("/admin/p/{}/keys", segment(&name))).into_response()),
        Err(error) => {
            projects_with(&state, &admin, StatusCode::BAD_REQUEST, Flash { notice: String::new(), error }).await
        }
    }
}

async fn project_home(admin: AdminSession, PagePath(project): PagePath<String>) -> PageResult {
    let project = admin.project(&project)?;
    Ok(Redirect::to(&format!("/admin/p/{}/keys", segment(&project.name))).into_response())
}

// ---- keys -----------------------------------------------------------------------------------

async fn keys(State(state): State<AppState>, admin: AdminSession, PagePath(project): PagePath<String>) -> PageResult {
    let project = admin.project(&project)?;
    keys_with(&state, &admin, &project, StatusCode::OK, Flash::default(), String::new()).await
}

async fn keys_with(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    status: StatusCode,
    flash: Flash,
    secret: String,
) -> PageResult {
    let keys = state.store.api_keys(Some(&project.name)).await.map_err(store_error)?;
    let rows = keys
        .iter()
        .rev()
        .map(|k| KeyRow {
            id: k.id.clone(),
            prefix: k.display_prefix.clone(),
            name: k.name.clone().unwrap_or_default(),
            scopes: k.scopes.to_text(),
            owner: k.owner.clone().unwrap_or_default(),
            created: short(k.created_at),
            revoked: k.revoked_at.map(short).unwrap_or_default(),
        })
        .collect();
    let page = KeysPage { chrome: admin.chrome(), frame: admin.frame(project, "keys"), rows, flash, secret };
    Ok((status, render(&page)).into_response())
}

fn short(t: countersign_core::Timestamp) -> String {
    t.to_rfc3339()[..19].replace('T', " ")
}

#[derive(Deserialize)]
struct NewKeyForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner: String,
    scope_agent: Option<String>,
    scope_decide: Option<String>,
    scope_admin: Option<String>,
}

async fn create_key(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath(project): PagePath<String>,
    PageForm(form): PageForm<NewKeyForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let chosen: Vec<Scope> = [
        (form.scope_agent.is_some(), Scope::Agent),
        (form.scope_decide.is_some(), Scope::Decide),
        (form.scope_admin.is_some(), Scope::Admin),
    ]
    .into_iter()
    .filter_map(|(on, scope)| on.then_some(scope))
    .collect();
    let result: Result<api_key::GeneratedKey, String> = async {
        if chosen.is_empty() {
            return Err("Choose at least one scope for the key.".to_owned());
        }
        let owner = match form.owner.trim() {
            "" => None,
            o => Some(Email::parse(o).map_err(|e| e.to_string())?.as_str().to_owned()),
        };
        let name = Some(form.name.trim().to_owned()).filter(|n| !n.is_empty());
        if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
            return Err("The key's name is longer than 100 characters.".to_owned());
        }
        let key = api_key::generate();
        let new = NewApiKey {
            project_id: project.id.clone(),
            name,
            display_prefix: key.display_prefix.clone(),
            hash: key.hash,
            scopes: Scopes::of(&chosen),
            owner,
        };
        state.store.insert_api_key(new, &admin.stamp()).await.map_err(|e| e.to_string())?;
        tracing::info!(project = %project.name, key = %key.display_prefix, by = admin.email(), "API key created");
        Ok(key)
    }
    .await;
    match result {
        Ok(key) => {
            let notice = format!(
                "Created key {}. Copy it now: it is shown only this once, and only its hash is kept.",
                key.display_prefix
            );
            keys_with(&state, &admin, &project, StatusCode::OK, Flash { notice, error: String::new() }, key.secret)
                .await
        }
        Err(error) => {
            let flash = Flash { notice: String::new(), error };
            keys_with(&state, &admin, &project, StatusCode::BAD_REQUEST, flash, String::new()).await
        }
    }
}

async fn revoke_key(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath((project, id)): PagePath<(String, String)>,
    PageForm(form): PageForm<CsrfOnly>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let keys = state.store.api_keys(Some(&project.name)).await.map_err(store_error)?;
    let Some(key) = keys.iter().find(|k| k.id == id) else {
        return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", format!("no key {id:?} in this project")));
    };
    let result = if key.revoked_at.is_some() {
        Err(format!("Key {} was revoked already.", key.display_prefix))
    } else {
        state.store.revoke_api_key(&key.id, &admin.stamp()).await.map_err(store_error)?;
        tracing::info!(project = %project.name, key = %key.display_prefix, by = admin.email(), "API key revoked");
        Ok(format!("Revoked key {}; servers refuse it within a second.", key.display_prefix))
    };
    let (status, flash) = flash(result);
    keys_with(&state, &admin, &project, status, flash, String::new()).await
}

// ---- people and groups ----------------------------------------------------------------------

async fn people_page(
    State(state): State<AppState>,
    admin: AdminSession,
    PagePath(project): PagePath<String>,
) -> PageResult {
    let project = admin.project(&project)?;
    people_with(&state, &admin, &project, StatusCode::OK, Flash::default(), String::new()).await
}

async fn people_with(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    status: StatusCode,
    flash: Flash,
    link: String,
) -> PageResult {
    let store = state.store.as_ref();
    let users = store.users(Some(&project.name)).await.map_err(store_error)?;
    let mut rows = Vec::with_capacity(users.len());
    for u in &users {
        rows.push(PersonRow {
            email: u.email.clone(),
            phone: store.user_phone(&u.email).await.map_err(store_error)?.unwrap_or_default(),
            role: u.role.as_str(),
            state: if u.disabled_at.is_some() {
                "disabled"
            } else if u.has_password {
                "active"
            } else {
                "invited"
            },
            enabled: u.disabled_at.is_none(),
            me: u.email == admin.email(),
        });
    }
    let groups = store
        .groups(Some(&project.id))
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|g| GroupRow { name: g.name, members: g.members })
        .collect();
    let page = PeoplePage { chrome: admin.chrome(), frame: admin.frame(project, "people"), rows, groups, flash, link };
    Ok((status, render(&page)).into_response())
}

#[derive(Deserialize)]
struct PersonForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

/// Adds a person to the project: an existing account joins it; a new one is created and gets a
/// one-time link to set a password (shown once, for the admin to pass on).
async fn add_person(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath(project): PagePath<String>,
    PageForm(form): PageForm<PersonForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let store = state.store.as_ref();
    let stamp = admin.stamp();
    let mut link = String::new();
    let result: Result<String, String> = async {
        let email = Email::parse(form.email.trim()).map_err(|e| e.to_string())?;
        let role =
            Role::parse(if form.role.is_empty() { "approver" } else { &form.role }).map_err(|e| e.to_string())?;
        let known = store.users(None).await.map_err(|e| e.to_string())?.into_iter().find(|u| u.email == email.as_str());
        match known {
            Some(user) if user.projects.contains(&project.name) => {
                Err(format!("{email} is in {} already.", project.name))
            }
            Some(user) if !admin.holds_all_of(&user) => Err(format!(
                "{email} has an account in projects you do not administer; an operator adds it to {} with \
                 `countersign users add-project {email} --project {}`.",
                project.name, project.name
            )),
            Some(_) => {
                store
                    .change_user_projects(&email, std::slice::from_ref(&project.id), &[], &stamp)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("{email} joined {} (with the role their account has).", project.name))
            }
            None => {
                let created = store
                    .create_user(&email, role, None, std::slice::from_ref(&project.id), &stamp)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{email} was created meanwhile; try again"))?;
                let token =
                    people::password_link_token(store, &created.id).await.map_err(|e| e.message().to_owned())?;
                link = format!("{}/set-password?token={token}", state.public_base);
                Ok(format!(
                    "Created {} {email}. Send them this one-time link to set a password; it is shown only once.",
                    role.as_str()
                ))
            }
        }
    }
    .await;
    if result.is_ok() {
        tracing::info!(project = %project.name, by = admin.email(), "person added in the admin pages");
    }
    let (status, flash) = flash(result);
    people_with(&state, &admin, &project, status, flash, link).await
}

#[derive(Deserialize)]
struct PersonActionForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    /// The new phone number of `phone` (empty removes it).
    #[serde(default)]
    phone: String,
}

/// Sets (or, empty, removes) a person's phone number for SMS and WhatsApp.
async fn set_phone(
    store: &dyn Store,
    admin: &AdminSession,
    email: &Email,
    given: &str,
) -> Result<Result<String, String>, PageError> {
    let phone = match given {
        "" => None,
        number => match crate::channels::sms::e164(number) {
            Some(n) => Some(n),
            None => {
                return Ok(Err(format!(
                    "{number:?} is not a phone number in international form: + and the country code, like +15550001111."
                )));
            }
        },
    };
    Ok(match store.set_user_phone(email.as_str(), phone.as_deref(), &admin.stamp()).await.map_err(store_error)? {
        countersign_store::PhoneSet::Done => Ok(match &phone {
            Some(p) => format!("{email} gets texts at {p}."),
            None => format!("{email} has no phone number now."),
        }),
        countersign_store::PhoneSet::Taken(_) => Err("That number belongs to another account.".to_owned()),
        countersign_store::PhoneSet::NoSuchPerson => Err(format!("There is no account {email}.")),
    })
}

/// `remove` takes a person out of the project; `disable` ends their account everywhere; `phone`
/// sets their phone number.
async fn change_person(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath((project, email, action)): PagePath<(String, String, String)>,
    PageForm(form): PageForm<PersonActionForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let store = state.store.as_ref();
    let email = Email::parse(&email).map_err(|e| bad(e.to_string()))?;
    let Some(person) =
        store.users(Some(&project.name)).await.map_err(store_error)?.into_iter().find(|u| u.email == email.as_str())
    else {
        return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", format!("{email} is not in {}", project.name)));
    };
    let whole_account = ["phone", "disable", "password-link"].contains(&action.as_str());
    let result = if whole_account && !admin.holds_all_of(&person) {
        Err(format!(
            "{email} is also in projects you do not administer: here you may only remove them from {}.",
            project.name
        ))
    } else if action == "phone" {
        set_phone(store, &admin, &email, form.phone.trim()).await?
    } else if action == "password-link" {
        if person.disabled_at.is_some() {
            Err(format!("{email} is disabled; a password link would not let them in."))
        } else {
            // Logged before the link exists: a failure to log leaves no unlogged link behind.
            let event =
                admin.stamp().event(&project.id, ProjectEventBody::PasswordLinkIssued { email: email.as_str().into() });
            store.log_project_event(&event).await.map_err(store_error)?;
            let token = people::password_link_token(store, &person.id).await?;
            let link = format!("{}/set-password?token={token}", state.public_base);
            tracing::info!(project = %project.name, person = %email, by = admin.email(), "password link issued");
            let notice = format!("A new one-time link for {email} to set a password; it is shown only once.");
            return people_with(&state, &admin, &project, StatusCode::OK, Flash { notice, error: String::new() }, link)
                .await;
        }
    } else if email.as_str() == admin.email() {
        Err("You cannot remove or disable yourself here; ask another admin.".to_owned())
    } else {
        match action.as_str() {
            "remove" => {
                store
                    .change_user_projects(&email, &[], std::slice::from_ref(&project.id), &admin.stamp())
                    .await
                    .map_err(store_error)?;
                Ok(format!("{email} is no longer in {}.", project.name))
            }
            "disable" => {
                store.disable_user(&email, &admin.stamp()).await.map_err(store_error)?;
                Ok(format!("{email} is disabled: they can no longer sign in or decide."))
            }
            _ => return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "no such action")),
        }
    };
    if result.is_ok() {
        tracing::info!(project = %project.name, person = %email, action, by = admin.email(), "person changed in the admin pages");
    }
    let (status, flash) = flash(result);
    people_with(&state, &admin, &project, status, flash, String::new()).await
}

#[derive(Deserialize)]
struct GroupForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    name: String,
    /// Emails, separated by commas or spaces.
    #[serde(default)]
    members: String,
    #[serde(default)]
    member: String,
}

/// The people of the project among `emails`; an error names the first that is not.
async fn members_of(store: &dyn Store, project: &Project, emails: &[&str]) -> Result<Vec<String>, String> {
    let people = store.users(Some(&project.name)).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for raw in emails {
        let email = Email::parse(raw).map_err(|e| e.to_string())?;
        if !people.iter().any(|u| u.email == email.as_str()) {
            return Err(format!("{email} is not in {}; add them under People first.", project.name));
        }
        out.push(email.as_str().to_owned());
    }
    Ok(out)
}

fn group_event(
    stamp: &Stamp,
    project: &Project,
    group: &countersign_store::Group,
    added: &[String],
    removed: &[String],
) -> countersign_core::event::ProjectEvent {
    stamp.event(
        &project.id,
        ProjectEventBody::GroupChanged {
            group: group.name.clone(),
            members: group.members.clone(),
            added: added.to_vec(),
            removed: removed.to_vec(),
        },
    )
}

async fn create_group(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath(project): PagePath<String>,
    PageForm(form): PageForm<GroupForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let store = state.store.as_ref();
    let result: Result<String, String> = async {
        let name = form.name.trim();
        countersign_core::policy::check_group_name(name).map_err(|e| e.to_string())?;
        let emails: Vec<&str> = form.members.split([',', ' ', '\n']).map(str::trim).filter(|m| !m.is_empty()).collect();
        let mut members = members_of(store, &project, &emails).await?;
        members.sort();
        members.dedup();
        let planned = countersign_store::Group {
            project_id: project.id.clone(),
            name: name.to_owned(),
            members: members.clone(),
            created_at: countersign_core::Timestamp::now(),
        };
        let event = group_event(&admin.stamp(), &project, &planned, &members, &[]);
        match store.create_group(name, &members, &event).await.map_err(|e| e.to_string())? {
            GroupChange::Done(group) => {
                Ok(format!("Created group {} with {} member(s).", group.name, group.members.len()))
            }
            GroupChange::Exists => Err(format!("Group {name} exists already; add members to it below.")),
            GroupChange::NoSuchGroup => Err(format!("Group {name} vanished while being created.")),
        }
    }
    .await;
    let (status, flash) = flash(result);
    people_with(&state, &admin, &project, status, flash, String::new()).await
}

/// `add` or `remove` one member of a group.
async fn change_group(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath((project, name, action)): PagePath<(String, String, String)>,
    PageForm(form): PageForm<GroupForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let store = state.store.as_ref();
    let Some(group) = store.group(&project.id, &name).await.map_err(store_error)? else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no group {name:?} in {}", project.name),
        ));
    };
    let result: Result<String, String> = async {
        let (add, remove) = match action.as_str() {
            "add" => {
                let add = members_of(store, &project, &[form.member.trim()]).await?;
                if add.iter().all(|m| group.members.contains(m)) {
                    return Err(format!("{} is in group {name} already.", form.member.trim()));
                }
                (add, Vec::new())
            }
            "remove" => {
                let email = Email::parse(form.member.trim()).map_err(|e| e.to_string())?.as_str().to_owned();
                if !group.members.contains(&email) {
                    return Err(format!("{email} is not in group {name}."));
                }
                (Vec::new(), vec![email])
            }
            _ => return Err("no such action".to_owned()),
        };
        let mut members: Vec<String> =
            group.members.iter().filter(|m| !remove.contains(m)).cloned().chain(add.iter().cloned()).collect();
        members.sort();
        members.dedup();
        let planned = countersign_store::Group { members, ..group.clone() };
        let event = group_event(&admin.stamp(), &project, &planned, &add, &remove);
        match store.change_group(&name, &add, &remove, &event).await.map_err(|e| e.to_string())? {
            GroupChange::Done(group) => Ok(format!("Group {} now has {} member(s).", group.name, group.members.len())),
            _ => Err(format!("Group {name} vanished meanwhile.")),
        }
    }
    .await;
    let (status, flash) = flash(result);
    people_with(&state, &admin, &project, status, flash, String::new()).await
}

// ---- webhooks -------------------------------------------------------------------------------

async fn webhooks_page(
    State(state): State<AppState>,
    admin: AdminSession,
    PagePath(project): PagePath<String>,
) -> PageResult {
    let project = admin.project(&project)?;
    webhooks_with(&state, &admin, &project, StatusCode::OK, Flash::default(), String::new()).await
}

async fn webhooks_with(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    status: StatusCode,
    flash: Flash,
    secret: String,
) -> PageResult {
    let endpoints = state.store.webhooks(Some(&project.id)).await.map_err(store_error)?;
    let rows = endpoints
        .iter()
        .map(|e| EndpointRow {
            id: e.id.clone(),
            url: e.url.clone(),
            events: e.events.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "),
            format: e.format.as_str().to_owned(),
            created: short(e.created_at),
        })
        .collect();
    let events = countersign_core::webhook::EventType::ALL.iter().map(|e| e.as_str()).collect();
    let page =
        WebhooksPage { chrome: admin.chrome(), frame: admin.frame(project, "webhooks"), rows, flash, secret, events };
    Ok((status, render(&page)).into_response())
}

#[derive(Deserialize)]
struct WebhookForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    url: String,
    /// Event names separated by commas; empty for all.
    #[serde(default)]
    events: String,
    #[serde(default)]
    format: String,
}

async fn add_webhook(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath(project): PagePath<String>,
    PageForm(form): PageForm<WebhookForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let events: Option<Vec<String>> = Some(form.events.trim().to_owned()).filter(|e| !e.is_empty()).map(|e| vec![e]);
    let format = Some(form.format.trim()).filter(|f| !f.is_empty());
    let added = webhooks::add(
        state.store.as_ref(),
        &project.id,
        form.url.trim(),
        events.as_deref(),
        format,
        state.settings.limits.allow_private_webhook_targets,
        &admin.stamp(),
    )
    .await;
    match added {
        Ok(endpoint) => {
            let notice = format!(
                "Added {} ({}). Its signing secret is below: copy it now, it is not shown again here.",
                endpoint.url, endpoint.id
            );
            let flash = Flash { notice, error: String::new() };
            webhooks_with(&state, &admin, &project, StatusCode::CREATED, flash, endpoint.secret).await
        }
        Err(err) if err.status().is_client_error() => {
            let flash = Flash { notice: String::new(), error: err.message().to_owned() };
            webhooks_with(&state, &admin, &project, err.status(), flash, String::new()).await
        }
        Err(err) => Err(err.into()),
    }
}

async fn remove_webhook(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath((project, id)): PagePath<(String, String)>,
    PageForm(form): PageForm<CsrfOnly>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let endpoint = webhooks::endpoint_of(state.store.as_ref(), &project.id, &id).await?;
    state.store.remove_webhook(&endpoint.id, &admin.stamp()).await.map_err(store_error)?;
    tracing::info!(project = %project.name, %id, by = admin.email(), "webhook endpoint removed");
    let notice = format!("Removed {}; its undelivered events are marked failed.", endpoint.url);
    webhooks_with(&state, &admin, &project, StatusCode::OK, Flash { notice, error: String::new() }, String::new()).await
}

/// Deliveries shown in an endpoint's log.
const LOG_ROWS: u32 = 100;

async fn webhook_log(
    State(state): State<AppState>,
    admin: AdminSession,
    PagePath((project, id)): PagePath<(String, String)>,
) -> PageResult {
    let project = admin.project(&project)?;
    webhook_log_with(&state, &admin, &project, &id, StatusCode::OK, Flash::default()).await
}

async fn webhook_log_with(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    id: &str,
    status: StatusCode,
    flash: Flash,
) -> PageResult {
    let store = state.store.as_ref();
    let endpoint = webhooks::endpoint_of(store, &project.id, id).await?;
    let deliveries = store.deliveries(&endpoint.id, LOG_ROWS).await.map_err(store_error)?;
    let mut rows = Vec::with_capacity(deliveries.len());
    for d in &deliveries {
        let attempts = store.attempts(&d.id).await.map_err(store_error)?;
        rows.push(DeliveryRow {
            id: d.id.clone(),
            event: d.event_type.as_str().to_owned(),
            call_id: d.call_id.clone(),
            created: short(d.created_at),
            status: d.status.as_str().to_owned(),
            attempts: attempts
                .iter()
                .map(|a| AttemptRow {
                    at: short(a.at),
                    code: a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    error: a.error.clone().unwrap_or_default(),
                    latency_ms: a.latency_ms,
                })
                .collect(),
        });
    }
    let page = WebhookLogPage {
        chrome: admin.chrome(),
        frame: admin.frame(project, "webhooks"),
        id: endpoint.id,
        url: endpoint.url,
        rows,
        flash,
    };
    Ok((status, render(&page)).into_response())
}

async fn redeliver(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath((project, id)): PagePath<(String, String)>,
    PageForm(form): PageForm<CsrfOnly>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let store = state.store.as_ref();
    let delivery = webhooks::delivery_of(store, &project.id, &id).await?;
    let endpoint = delivery.target.clone().unwrap_or_default();
    // A removed endpoint has no log page to come back to: say so on the list.
    if store.webhook(&endpoint).await.map_err(store_error)?.is_none() {
        let error = "That delivery's endpoint was removed; there is nowhere to send it.".to_owned();
        let flash = Flash { notice: String::new(), error };
        return webhooks_with(&state, &admin, &project, StatusCode::CONFLICT, flash, String::new()).await;
    }
    // Queued unless the endpoint was removed meanwhile (its status may already have moved on:
    // the worker is quick).
    let requeued = store.redeliver(&delivery.id, &admin.stamp()).await.map_err(store_error)?;
    let result = match requeued {
        Some(_) if store.webhook(&endpoint).await.map_err(store_error)?.is_some() => {
            state.requests.wake_workers();
            tracing::info!(project = %project.name, delivery = %id, by = admin.email(), "webhook redelivery requested");
            Ok(format!("Delivery {id} is queued again; its new attempt shows here shortly."))
        }
        _ => Err("That delivery's endpoint was removed; there is nowhere to send it.".to_owned()),
    };
    let (status, flash) = flash(result);
    webhook_log_with(&state, &admin, &project, &endpoint, status, flash).await
}

// ---- channels -------------------------------------------------------------------------------

async fn channels(
    State(state): State<AppState>,
    admin: AdminSession,
    PagePath(project): PagePath<String>,
) -> PageResult {
    let project = admin.project(&project)?;
    channels_with(&state, &admin, &project, StatusCode::OK, Flash::default()).await
}

async fn channels_with(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    status: StatusCode,
    flash: Flash,
) -> PageResult {
    let store = state.store.as_ref();
    let email = &state.settings.email;
    let smtp = email.smtp_url.as_deref().map(countersign_core::redact::mask_password).unwrap_or_default();
    let slack = store.slack_connection(&project.id).await.map_err(store_error)?.map(|c| SlackView {
        workspace: c.team_name.clone().or(c.team_id.clone()).unwrap_or_default(),
        channel: c.default_channel.clone().unwrap_or_default(),
        connected: short(c.connected_at),
    });
    let twilio = store.twilio_connection(&project.id).await.map_err(store_error)?.map(|c| TwilioView {
        account: c.account_sid.clone(),
        from: c.from.clone(),
        whatsapp: c.whatsapp_from.clone().unwrap_or_default(),
        connected: short(c.connected_at),
    });
    let phone = store.user_phone(admin.email()).await.map_err(store_error)?.unwrap_or_default();
    let default_email = store.default_email(&project.id).await.map_err(store_error)?.unwrap_or_default();
    let page = ChannelsPage {
        chrome: admin.chrome(),
        frame: admin.frame(project, "channels"),
        smtp,
        from: email.from.clone().unwrap_or_default(),
        default_email,
        me: admin.email().to_owned(),
        phone,
        slack,
        twilio,
        flash,
    };
    Ok((status, render(&page)).into_response())
}

#[derive(Deserialize)]
struct ChannelForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    /// A test's recipient: an email address, a Slack channel, or a phone number.
    #[serde(default)]
    to: String,
    /// Email: the project's default address (empty removes it).
    #[serde(default)]
    address: String,
    #[serde(default)]
    bot_token: String,
    #[serde(default)]
    signing_secret: String,
    #[serde(default)]
    default_channel: String,
    require_known_users: Option<String>,
    #[serde(default)]
    account_sid: String,
    #[serde(default)]
    auth_token: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    whatsapp_from: String,
}

/// `test`, `connect` or `disconnect` a channel of the project.
async fn channel_action(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath((project, channel, action)): PagePath<(String, String, String)>,
    PageForm(form): PageForm<ChannelForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    match action.as_str() {
        "test" => test_channel(&state, &admin, &project, &channel, form).await,
        "connect" => connect_channel(&state, &admin, &project, &channel, form).await,
        "disconnect" => {
            let store = state.store.as_ref();
            let removed = match channel.as_str() {
                "slack" => store.remove_slack_connection(&project.id, &admin.stamp()).await,
                "twilio" => store.remove_twilio_connection(&project.id, &admin.stamp()).await,
                _ => return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "no such channel")),
            }
            .map_err(store_error)?;
            let result = if removed {
                tracing::info!(project = %project.name, channel, by = admin.email(), "channel disconnected");
                Ok(format!("Disconnected {channel}: its credentials are deleted."))
            } else {
                Err(format!("{} was not connected to {channel}.", project.name))
            };
            let (status, flash) = flash(result);
            channels_with(&state, &admin, &project, status, flash).await
        }
        _ => Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "no such action")),
    }
}

/// Connects Slack or Twilio (credentials checked with the provider first), or sets the
/// project's default email address.
async fn connect_channel(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    channel: &str,
    form: ChannelForm,
) -> PageResult {
    use crate::services::connections::{self, Refused, SlackCredentials, TwilioCredentials};
    let store = state.store.as_ref();
    let stamp = admin.stamp();
    let result: Result<String, Refused> = match channel {
        "email" => {
            let address = match form.address.trim() {
                "" => None,
                a => match Email::parse(a) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        return channels_with(
                            state,
                            admin,
                            project,
                            StatusCode::BAD_REQUEST,
                            Flash { notice: String::new(), error: e.to_string() },
                        )
                        .await;
                    }
                },
            };
            store
                .set_default_email(&project.id, address.as_ref().map(Email::as_str), &stamp)
                .await
                .map_err(|e| Refused::Store(e.into()))
                .map(|_| match &address {
                    Some(a) => format!("Requests that name nobody are emailed to {a}."),
                    None => "Requests that name nobody are no longer emailed.".to_owned(),
                })
        }
        "slack" => {
            let given = SlackCredentials {
                bot_token: form.bot_token,
                signing_secret: Some(form.signing_secret),
                default_channel: Some(form.default_channel),
                require_known_users: form.require_known_users.is_some(),
            };
            connections::connect_slack(store, &state.slack, &project.id, given, &stamp)
                .await
                .map(|(c, _)| format!("Connected to the Slack workspace {}.", c.team_name.as_deref().unwrap_or("?")))
        }
        "twilio" => {
            let given = TwilioCredentials {
                account_sid: form.account_sid,
                auth_token: form.auth_token,
                from: form.from,
                whatsapp_from: Some(form.whatsapp_from),
            };
            connections::connect_twilio(store, &state.twilio, &project.id, given, &stamp)
                .await
                .map(|c| format!("Connected to the Twilio account {}.", c.account_sid))
        }
        _ => return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "no such channel")),
    };
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(Refused::Invalid(_)) => StatusCode::BAD_REQUEST,
        Err(Refused::Provider(_)) => StatusCode::BAD_GATEWAY,
        Err(Refused::Store(e)) => e.status(),
    };
    let (_, flash) = flash(result.map_err(|e| e.message().to_owned()));
    channels_with(state, admin, project, status, flash).await
}

/// The longest recipient of a test message (an email address is at most 254).
const MAX_TEST_TARGET_CHARS: usize = 254;
/// The longest failure kept in a test's audit event.
const MAX_OUTCOME_CHARS: usize = 300;

/// Sends a test message through one of the project's channels, and says what came of it (the
/// outcome is logged in the audit chain too).
async fn test_channel(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    channel: &str,
    form: ChannelForm,
) -> PageResult {
    let store = state.store.as_ref();
    let to = form.to.trim().to_owned();
    if to.chars().count() > MAX_TEST_TARGET_CHARS {
        let error = format!("The recipient is longer than {MAX_TEST_TARGET_CHARS} characters.");
        return channels_with(state, admin, project, StatusCode::BAD_REQUEST, Flash { notice: String::new(), error })
            .await;
    }
    let text = format!("Countersign test message for project {}, sent by {}.", project.name, admin.email());
    let sent: Result<String, String> = match channel {
        "email" => {
            let to = if to.is_empty() { admin.email().to_owned() } else { to.clone() };
            crate::channels::email::outbound::send_test(&state.settings.email, &to, &text)
                .await
                .map(|()| format!("Sent a test email to {to}."))
        }
        "slack" => match store.slack_connection(&project.id).await.map_err(store_error)? {
            None => Err("This project is not connected to Slack (countersign slack connect).".into()),
            Some(c) => match Some(to.clone()).filter(|t| !t.is_empty()).or(c.default_channel.clone()) {
                None => Err("Name a channel to post the test to: the connection has no default channel.".into()),
                Some(target) => state
                    .slack
                    .call("chat.postMessage", &c.bot_token, &serde_json::json!({"channel": target, "text": text}))
                    .await
                    .map(|_| format!("Posted a test message to {target} in Slack."))
                    .map_err(|e| format!("Slack refused the test message: {e}")),
            },
        },
        "twilio" => match store.twilio_connection(&project.id).await.map_err(store_error)? {
            None => Err("This project is not connected to Twilio (countersign twilio connect).".into()),
            Some(c) => {
                let phone = if to.is_empty() {
                    store.user_phone(admin.email()).await.map_err(store_error)?
                } else {
                    Some(to.clone())
                };
                match phone.as_deref().map(crate::channels::sms::e164) {
                    None => Err("Give a phone number to text: you have none on record.".into()),
                    Some(None) => Err(format!("{to:?} is not a phone number in E.164 form, like +15550001111.")),
                    Some(Some(number)) => state
                        .twilio
                        .send(&c.account_sid, &c.auth_token, &number, &c.from, &text)
                        .await
                        .map(|sid| format!("Sent a test SMS to {number} (Twilio message {sid})."))
                        .map_err(|e| format!("Twilio refused the test SMS: {e}")),
                }
            }
        },
        _ => return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "no such channel")),
    };
    let outcome = match &sent {
        Ok(_) => "sent".to_owned(),
        Err(e) => format!("failed: {}", e.chars().take(MAX_OUTCOME_CHARS).collect::<String>()),
    };
    let target = if to.is_empty() { "(default)".to_owned() } else { to };
    let event = admin
        .stamp()
        .event(&project.id, ProjectEventBody::ConnectionTested { channel: channel.to_owned(), target, outcome });
    store.log_project_event(&event).await.map_err(store_error)?;
    tracing::info!(project = %project.name, channel, ok = sent.is_ok(), by = admin.email(), "channel test sent");
    let status = if sent.is_ok() { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    let (_, flash) = flash(sent);
    channels_with(state, admin, project, status, flash).await
}

// ---- policy ---------------------------------------------------------------------------------

async fn policy_page(
    State(state): State<AppState>,
    admin: AdminSession,
    PagePath(project): PagePath<String>,
) -> PageResult {
    let project = admin.project(&project)?;
    let stored = state.store.policy(&project.id).await.map_err(store_error)?;
    let text = stored.as_ref().map(|p| p.source.clone()).unwrap_or_default();
    policy_with(&state, &admin, &project, StatusCode::OK, PolicyState { text, ..PolicyState::default() }).await
}

async fn policy_with(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    status: StatusCode,
    mut form: PolicyState,
) -> PageResult {
    let stored = state.store.policy(&project.id).await.map_err(store_error)?;
    form.version = stored
        .as_ref()
        .map(|p| format!("version {}, set by {} at {}", p.version, p.set_by, short(p.set_at)))
        .unwrap_or_default();
    let page = PolicyPage { chrome: admin.chrome(), frame: admin.frame(project, "policy"), p: form };
    Ok((status, render(&page)).into_response())
}

#[derive(Deserialize)]
struct PolicyForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    text: String,
}

/// The name policies set in the browser carry in their errors.
const BROWSER_SOURCE: &str = "policy";

async fn set_policy(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath(project): PagePath<String>,
    PageForm(form): PageForm<PolicyForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let text = form.text.replace("\r\n", "\n");
    let mut view = PolicyState { text: text.clone(), ..PolicyState::default() };
    let status = match policies::set(state.store.as_ref(), &project.id, BROWSER_SOURCE, &text, admin.email()).await {
        Ok(stored) => {
            state.requests.policies.forget(&project.id);
            view.notice = format!("Saved version {}; it applies to new requests from now on.", stored.version);
            StatusCode::OK
        }
        Err(policies::Refused::Invalid(err)) => {
            view.error = err.message.clone();
            view.error_line = err.line;
            view.error_column = err.column;
            view.error_text = err.text.clone();
            StatusCode::BAD_REQUEST
        }
        Err(policies::Refused::Store(err)) => return Err(err.into()),
    };
    policy_with(&state, &admin, &project, status, view).await
}

#[derive(Deserialize)]
struct PolicyTestForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    function: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    owner: String,
}

/// What the policy in the editor (not the saved one) does with a request: nothing is stored.
async fn test_policy(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath(project): PagePath<String>,
    PageForm(form): PageForm<PolicyTestForm>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let text = form.text.replace("\r\n", "\n");
    let mut view = PolicyState {
        text: text.clone(),
        function: form.function.clone(),
        args: form.args.clone(),
        owner: form.owner.clone(),
        ..PolicyState::default()
    };
    let args = if form.args.trim().is_empty() { "{}" } else { form.args.trim() };
    let outcome: Result<policies::TestReport, String> = async {
        let args: serde_json::Value = serde_json::from_str(args)
            .map_err(|e| format!("The arguments are not JSON: {e}. Write an object, like {{\"amount\": 50}}."))?;
        if !args.is_object() {
            return Err("The arguments must be a JSON object, like {\"amount\": 50}.".to_owned());
        }
        if form.function.trim().is_empty() {
            return Err("Name the function to test.".to_owned());
        }
        let spec = serde_json::json!({"fn": form.function.trim(), "kwargs": args});
        let record =
            policies::test_record(&project.id, RequestKind::FunctionCall, None, &spec).map_err(|e| e.to_string())?;
        let policy = if text.trim().is_empty() {
            None
        } else {
            match policies::validate(state.store.as_ref(), &project.id, BROWSER_SOURCE, &text).await {
                Ok(policy) => Some(policy),
                Err(policies::Refused::Invalid(err)) => {
                    return Err(format!("line {}, column {}: {}", err.line, err.column, err.message));
                }
                Err(policies::Refused::Store(err)) => return Err(err.message().to_owned()),
            }
        };
        let owner = Some(form.owner.trim()).filter(|o| !o.is_empty());
        Ok(policies::test(policy.as_ref(), &record, owner))
    }
    .await;
    let status = match outcome {
        Ok(report) => {
            view.test_rule = report.rule.clone().unwrap_or_else(|| "(no rule matched)".into());
            view.test_action = report.action.to_owned();
            view.test_outcome = report.outcome.clone();
            view.tested = true;
            StatusCode::OK
        }
        Err(error) => {
            view.test_error = error;
            StatusCode::BAD_REQUEST
        }
    };
    policy_with(&state, &admin, &project, status, view).await
}

// ---- audit ----------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    q: String,
}

/// Events shown in the audit log (newest first).
const AUDIT_ROWS: usize = 200;
/// Events read at most to fill it, from the newest back.
const AUDIT_SCAN: u64 = 20_000;

async fn audit_page(
    State(state): State<AppState>,
    admin: AdminSession,
    PagePath(project): PagePath<String>,
    PageQuery(query): PageQuery<AuditQuery>,
) -> PageResult {
    let project = admin.project(&project)?;
    audit_with(&state, &admin, &project, query, StatusCode::OK, Flash::default()).await
}

async fn audit_with(
    state: &AppState,
    admin: &AdminSession,
    project: &Project,
    query: AuditQuery,
    status: StatusCode,
    flash: Flash,
) -> PageResult {
    let store = state.store.as_ref();
    let chain = store.chains(Some(&project.id)).await.map_err(store_error)?.into_iter().next();
    let count = chain.as_ref().and_then(|c| c.head).map_or(0, |h| h.count);
    let unsealed = chain.as_ref().map_or(0, |c| c.unsealed);
    let filter = AuditFilter::new(&query.kind, &query.by, &query.q);
    let mut rows = Vec::new();
    let mut end = count;
    let floor = count.saturating_sub(AUDIT_SCAN);
    'pages: while end > floor && rows.len() < AUDIT_ROWS {
        let start = end.saturating_sub(u64::from(audit::PAGE)).max(floor);
        let limit = u32::try_from(end - start).unwrap_or(audit::PAGE);
        let page = store.audit_events(&project.id, start, limit).await.map_err(store_error)?;
        for e in page.iter().rev() {
            let row = AuditRow::of(e);
            if row.matches(&filter) {
                rows.push(row);
                if rows.len() == AUDIT_ROWS {
                    break 'pages;
                }
            }
        }
        end = start;
    }
    let types = AuditRow::TYPES.to_vec();
    let page = AuditPage {
        chrome: admin.chrome(),
        frame: admin.frame(project, "audit"),
        kind: query.kind,
        by: query.by,
        q: query.q,
        types,
        rows,
        count,
        unsealed,
        flash,
    };
    Ok((status, render(&page)).into_response())
}

async fn verify_audit(
    State(state): State<AppState>,
    admin: AdminSession,
    headers: HeaderMap,
    PagePath(project): PagePath<String>,
    PageForm(form): PageForm<CsrfOnly>,
) -> PageResult {
    let project = admin.posted(&project, &form.csrf, &headers)?;
    let store = state.store.as_ref();
    let chain = store.chains(Some(&project.id)).await.map_err(store_error)?.into_iter().next();
    let result = match chain {
        None => Ok("This project has no events yet: there is nothing to verify.".to_owned()),
        Some(chain) => match audit::verify(store, &chain, None).await.map_err(store_error)? {
            Ok(head) => Ok(format!(
                "Verified: all {} events chain correctly, up to head {}.",
                head.count,
                &head.head.to_hex()[..16]
            )),
            Err(broken) => Err(format!("The chain does not verify: {broken}.")),
        },
    };
    if let Err(e) = &result {
        tracing::error!(project = %project.name, error = %e, "audit chain verification failed in the admin pages");
    }
    let (status, flash) = flash(result);
    let status = if status == StatusCode::OK { status } else { StatusCode::CONFLICT };
    audit_with(&state, &admin, &project, AuditQuery::default(), status, flash).await
}
