//! `countersign login|logout|inbox|approve|reject|answer`: a person deciding from the terminal,
//! through a running server's `/api/v1` with the token `login` stored. No database is opened.

mod client;
mod credentials;

use crate::cli::{AnswerArgs, ApproveArgs, DecisionOptions, InboxArgs, LoginArgs, LogoutArgs, RejectArgs, ServerArgs};
use crate::exit::{self, Exit, Failure};
use anyhow::Context;
use chrono::{DateTime, Utc};
use client::Client;
use credentials::Credentials;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal};

/// The server when neither a flag, the environment nor a stored login names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8484";

/// A token that replaces the stored one, for scripts.
const TOKEN_ENV: &str = "COUNTERSIGN_TOKEN";

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let stored = Credentials::load().ok().flatten();
    let server = server_url(&args.server, stored.as_ref())?;
    let password = read_password(&args)?;
    let client = Client::new(&server, None)?;
    let signed_in = client.post("/login", Some(&json!({"email": args.email, "password": password}))).await?;
    #[derive(Deserialize)]
    struct SignedIn {
        token: String,
        email: String,
        projects: Vec<String>,
        expires_at: String,
    }
    let signed_in: SignedIn = serde_json::from_value(signed_in).context("unexpected answer to the login")?;
    let path = Credentials {
        server: server.clone(),
        token: signed_in.token,
        email: signed_in.email.clone(),
        expires_at: signed_in.expires_at,
    }
    .save()?;
    if let Some(previous) = stored.filter(|c| c.server == server) {
        // The replaced login is of no more use: end it rather than leave it valid until it expires.
        let _ = Client::new(&server, Some(previous.token))?.post("/logout", None).await;
    }
    let projects = if signed_in.projects.is_empty() {
        "no projects yet: ask an admin to add you to one".to_owned()
    } else {
        format!("projects: {}", signed_in.projects.join(", "))
    };
    println!("Signed in to {server} as {} ({projects}).", signed_in.email);
    tracing::debug!(path = %path.display(), "stored the login");
    Ok(())
}

/// The password: one line of stdin with `--password-stdin`, else typed at the terminal unechoed.
fn read_password(args: &LoginArgs) -> anyhow::Result<String> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {}: ", args.email)).context("cannot read the password")?
    } else {
        return Err(Failure::new(
            Exit::Usage,
            "standard input is not a terminal, so the password cannot be typed: pass it on standard input with --password-stdin",
        )
        .into());
    };
    if password.is_empty() {
        return Err(Failure::new(Exit::Usage, "the password is empty").into());
    }
    Ok(password)
}

pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let stored = Credentials::load()?;
    let server = server_url(&args.server, stored.as_ref())?;
    let (token, from_file) = match token(&server, stored.as_ref()) {
        Ok(token) => token,
        Err(_) if stored.is_none() => {
            println!("Not signed in; nothing to do.");
            return Ok(());
        }
        Err(_) => {
            println!("Not signed in to {server}; nothing to do.");
            return Ok(());
        }
    };
    let revoked = Client::new(&server, Some(token))?.post("/logout", None).await;
    if from_file {
        Credentials::remove()?;
    }
    match revoked {
        Ok(_) => {}
        Err(e) if exit::of(&e) == Exit::SignIn => {} // already expired or revoked: signed out all the same
        Err(e) if from_file => {
            return Err(e.context(
                "deleted the stored login, but the server did not revoke it (it stays valid until it expires)",
            ));
        }
        Err(e) => return Err(e),
    }
    if from_file {
        println!("Signed out of {server}.");
    } else {
        println!("Revoked the login in {TOKEN_ENV} on {server}.");
    }
    Ok(())
}

/// One pending request as `/api/v1/inbox` and `/api/v1/decide` describe it.
#[derive(Deserialize)]
struct Item {
    project: String,
    kind: String,
    call_id: String,
    run_id: String,
    summary: String,
    requested_at: String,
    /// How many distinct approvals complete it, when its policy rule asks several people.
    #[serde(default)]
    needed: Option<u32>,
    /// The votes cast toward that quorum so far.
    #[serde(default)]
    votes: Vec<VoteSeen>,
}

/// One person's vote toward a quorum, as the inbox lists it.
#[derive(Deserialize)]
struct VoteSeen {
    voter: String,
    #[serde(default = "approved")]
    approved: bool,
}

fn approved() -> bool {
    true
}

impl Item {
    fn kind(&self) -> &str {
        match self.kind.as_str() {
            "function_call" => "approval",
            "human_contact" => "question",
            other => other,
        }
    }

    /// `1/2 ada@example.com` under a quorum; empty otherwise.
    fn progress(&self) -> String {
        let Some(needed) = self.needed.filter(|n| *n > 1) else { return String::new() };
        let voters: Vec<&str> = self.votes.iter().filter(|v| v.approved).map(|v| v.voter.as_str()).collect();
        match voters.is_empty() {
            true => format!("0/{needed}"),
            false => format!("{}/{needed} {}", voters.len(), voters.join(", ")),
        }
    }
}

pub async fn inbox(args: InboxArgs) -> anyhow::Result<()> {
    let client = signed_in(&args.server)?;
    let page = client.get(&format!("/inbox?limit={}", args.limit)).await?;
    let values = page["items"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(());
    }
    if values.is_empty() {
        println!("Nothing is waiting for you.");
        return Ok(());
    }
    let items: Vec<Item> = values.into_iter().map(serde_json::from_value).collect::<Result<_, _>>()?;
    let now = Utc::now();
    // The approvals column shows only when some request's rule asks several people.
    let quorums = items.iter().any(|i| !i.progress().is_empty());
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let asked = asked(&i.requested_at, now);
            let progress = i.progress();
            let mut cells: Vec<&str> = vec![&i.call_id, &i.project, i.kind(), &i.summary, &i.run_id, &asked];
            if quorums {
                cells.push(&progress);
            }
            cells.into_iter().map(printable).collect()
        })
        .collect();
    let kind_colour = |column: usize, text: &str| match (column, text) {
        (2, "approval") => Some(YELLOW),
        (2, "question") => Some(CYAN),
        _ => None,
    };
    let style: Option<super::table::CellStyle<'_>> = colour().then_some(&kind_colour);
    let mut header = vec!["ID", "PROJECT", "KIND", "WHAT", "RUN", "ASKED"];
    if quorums {
        header.push("APPROVALS");
    }
    print!("{}", super::table::render(&header, &rows, style));
    let total = page["total"].as_u64().unwrap_or(0);
    if total > items.len() as u64 {
        println!("Showing {} of {total}; pass --limit to see more.", items.len());
    }
    Ok(())
}

pub async fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let updated_kwargs = match args.kwargs.as_deref() {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => Some(value),
            Ok(_) => {
                return Err(Failure::new(Exit::Usage, "--kwargs must be a JSON object, e.g. '{\"to\": \"x\"}'").into());
            }
            Err(e) => return Err(Failure::new(Exit::Usage, format!("--kwargs is not valid JSON: {e}")).into()),
        },
    };
    let body = json!({"action": "approve", "comment": args.comment, "updated_kwargs": updated_kwargs});
    decide(&args.call_id, args.options, body).await
}

pub async fn reject(args: RejectArgs) -> anyhow::Result<()> {
    decide(&args.call_id, args.options, json!({"action": "reject", "comment": args.comment, "option": args.option}))
        .await
}

pub async fn answer(args: AnswerArgs) -> anyhow::Result<()> {
    decide(&args.call_id, args.options, json!({"action": "answer", "text": args.text, "option": args.option})).await
}

/// Posts one decision on `call_id` and reports it.
async fn decide(call_id: &str, options: DecisionOptions, mut body: Value) -> anyhow::Result<()> {
    let client = signed_in(&options.server)?;
    body["call_id"] = json!(call_id);
    body["project"] = json!(options.project);
    let decided = client.post("/decide", Some(&body)).await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&decided)?);
        return Ok(());
    }
    let item: Item = serde_json::from_value(decided.clone()).context("unexpected answer to the decision")?;
    let (verb, ansi) = match decided["status"].as_str() {
        Some("approved") => ("Approved", GREEN),
        Some("rejected") => ("Rejected", RED),
        // An approval under a quorum is a vote: the request waits for more people.
        Some("pending") => ("Counted your approval of", YELLOW),
        _ => ("Answered", GREEN),
    };
    let verb = if colour() { format!("{ansi}{verb}{RESET}") } else { verb.to_owned() };
    let what = printable(&item.summary);
    let what = if item.kind == "human_contact" { format!("\"{what}\"") } else { what };
    let waiting = match (decided["status"].as_str(), item.progress()) {
        (Some("pending"), progress) if progress.is_empty() => "; it waits for more approvals".to_owned(),
        (Some("pending"), progress) => format!("; approvals so far: {}", printable(&progress)),
        _ => String::new(),
    };
    println!("{verb} {what} (call {}) in project {}{waiting}.", printable(&item.call_id), printable(&item.project));
    Ok(())
}

/// A client signed in to the server `args` (or the stored login) names.
fn signed_in(args: &ServerArgs) -> anyhow::Result<Client> {
    let stored = Credentials::load()?;
    let server = server_url(args, stored.as_ref())?;
    let (token, _) = token(&server, stored.as_ref())?;
    Client::new(&server, Some(token))
}

/// The server: `--server` (or `COUNTERSIGN_SERVER`), else the stored login's, else the default.
fn server_url(args: &ServerArgs, stored: Option<&Credentials>) -> anyhow::Result<String> {
    let url = args.server.as_deref().or(stored.map(|c| c.server.as_str())).unwrap_or(DEFAULT_SERVER);
    let url = url.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
        let hint = "use a URL such as http://127.0.0.1:8484 or https://countersign.example.com";
        return Err(Failure::new(Exit::Usage, format!("the server {url:?} is not an http(s) URL: {hint}")).into());
    }
    Ok(url.to_owned())
}

/// The token for `server`: `COUNTERSIGN_TOKEN`, else the stored one if it is for that server
/// (never sent elsewhere); the flag says whether it came from the file.
fn token(server: &str, stored: Option<&Credentials>) -> anyhow::Result<(String, bool)> {
    if let Some(token) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.trim().is_empty()) {
        return Ok((token.trim().to_owned(), false));
    }
    let login = format!("run `countersign login --server {server} --email YOU`");
    match stored {
        Some(c) if c.server == server => Ok((c.token.clone(), true)),
        Some(c) => Err(Failure::new(
            Exit::SignIn,
            format!("not signed in to {server} (you are signed in to {} as {}): {login}", c.server, c.email),
        )
        .into()),
        None => Err(Failure::new(Exit::SignIn, format!("not signed in to {server}: {login}")).into()),
    }
}

/// When a request was asked: "2m ago" within a week, else the UTC date and time.
fn asked(requested_at: &str, now: DateTime<Utc>) -> String {
    let Ok(at) = DateTime::parse_from_rfc3339(requested_at) else { return requested_at.to_owned() };
    let at = at.with_timezone(&Utc);
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86_400 => format!("{}h ago", seconds / 3600),
        86_400..604_800 => format!("{}d ago", seconds / 86_400),
        _ => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// Text from agents, made safe to print: a control character (an escape sequence could redraw
/// the terminal and fake what is asked) is shown as U+FFFD.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// Colour only for a person at a terminal who has not asked for none (https://no-color.org).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_is_relative_within_a_week_then_a_utc_time() {
        let now = DateTime::parse_from_rfc3339("2025-06-10T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(asked("2025-06-10T11:59:58.123456Z", now), "1s ago");
        assert_eq!(asked("2025-06-10T11:58:00Z", now), "2m ago");
        assert_eq!(asked("2025-06-10T09:00:00Z", now), "3h ago");
        assert_eq!(asked("2025-06-08T12:00:00Z", now), "2d ago");
        assert_eq!(asked("2025-05-01T08:30:00Z", now), "2025-05-01 08:30 UTC");
        assert_eq!(asked("not a time", now), "not a time");
    }

    #[test]
    fn a_quorum_shows_its_approvals_so_far() {
        let item = |extra: Value| {
            let mut v = json!({"project": "p", "kind": "function_call", "call_id": "c", "run_id": "r",
                "summary": "refund", "requested_at": "2025-06-10T12:00:00Z"});
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<Item>(v).unwrap()
        };
        assert_eq!(item(json!({})).progress(), "", "no quorum: nothing to show");
        assert_eq!(item(json!({"needed": 2, "votes": []})).progress(), "0/2");
        let votes = json!([{"voter": "ada@example.com", "approved": true, "channel": "web", "at": "x"}]);
        assert_eq!(item(json!({"needed": 2, "votes": votes})).progress(), "1/2 ada@example.com");
    }

    #[test]
    fn a_server_url_needs_a_scheme_and_loses_its_trailing_slash() {
        let args = |s: &str| ServerArgs { server: Some(s.to_owned()) };
        assert_eq!(server_url(&args("https://cs.example.com/"), None).unwrap(), "https://cs.example.com");
        let err = server_url(&args("cs.example.com"), None).unwrap_err();
        assert!(exit::of(&err) == Exit::Usage && err.to_string().contains("http"), "{err}");
        assert_eq!(server_url(&ServerArgs { server: None }, None).unwrap(), DEFAULT_SERVER);
    }
}
