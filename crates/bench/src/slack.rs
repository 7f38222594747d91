//! The Slack channel, against a fake Slack Web API inside the bench process
//! (`countersign_fakes::slack::FakeSlack` on `127.0.0.1:0`; the server has only its
//! `COUNTERSIGN_SLACK_API_BASE` changed), on a server of its own whose project is connected with
//! `countersign slack connect`:
//!
//! - decision click → agent's long-poll wake, one request at a time: a function call addressed to
//!   a Slack channel of its own (so that the server's pacing of one post per second per channel
//!   never holds it up) is created; once its `chat.postMessage` has reached the fake, a long-poll
//!   `GET …?wait=30` is parked on it and, after a settle, the Approve button is clicked (a signed
//!   `block_actions` interaction, form-encoded, to `POST /slack/interactions`); latency runs from
//!   sending the click to the long-poll's full answer. Baseline, interleaved with it in the same
//!   run: the same round with the decision sent through the API
//!   (`POST …/agent/function_calls/{id}/respond`) instead of the click.
//! - posts/s at the per-channel limit: [`CHANNELS`] × [`PER_CHANNEL`] requests created at once,
//!   spread over [`CHANNELS`] channels; from the first create sent to the last `chat.postMessage`
//!   at the fake, against the ideal of one post per second per channel (the first at once, so
//!   `PER_CHANNEL` posts to a channel take `PER_CHANNEL - 1` seconds); and the shortest gap
//!   between two posts to one channel (Slack's limit: about one per second).

use crate::client::{self, Conn, LoadResult, MakeRequest, Phase, Target};
use crate::stats::Samples;
use crate::{Launch, Opts, process};
use anyhow::{Context, Result, bail};
use countersign_fakes::slack::{Call, FakeSlack, sign};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The bot token the project is connected with (the fake takes any `xoxb-` token).
const BOT_TOKEN: &str = "xoxb-countersign-bench";
/// The signing secret the project is connected with, and the clicks are signed with.
const SIGNING_SECRET: &str = "countersign-bench-signing-secret";
/// The Slack user who clicks (known to the fake's `users.info`, with an email no Countersign
/// person has, so the decision is the Slack user's own).
const CLICKER: &str = "UBENCH";
const TEAM: &str = "T0FAKE";
/// The project the bench's API key belongs to.
const PROJECT: &str = "bench";
/// Discarded rounds before the measured ones.
const WARMUP_ROUNDS: usize = 10;
/// How long a round waits after the post reached the fake before it decides: the server records
/// the message and finishes the attempt meanwhile, so the decision meets an idle server (as a
/// person's click, seconds after the post, would). The long-poll is parked during it.
const SETTLE: Duration = Duration::from_millis(25);
/// The longest wait for one post, update or wake.
const WAIT: Duration = Duration::from_secs(30);
/// Channels of the posts/s test.
pub const CHANNELS: usize = 50;
/// Requests per channel in the posts/s test.
pub const PER_CHANNEL: usize = 5;
/// Slack's pacing: one post per second per channel.
pub const POST_INTERVAL: Duration = Duration::from_secs(1);

/// How a round's request is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Click,
    Api,
}

/// The samples of one way of deciding.
#[derive(Debug, Default)]
pub struct Decided {
    /// Decision sent → long-poll answered with the decision.
    pub wake: Samples,
    /// Decision sent → its answer read (the click's 200 acknowledgement, or the respond's answer).
    pub ack: Samples,
    /// Decision sent → the `chat.update` showing the outcome at the fake.
    pub update: Samples,
    /// Decision sent → the server's `users.info` at the fake (clicks only: who clicked).
    pub users_info: Samples,
    /// Create sent → its `chat.postMessage` at the fake.
    pub post: Samples,
}

/// What the slack part measured on one server.
#[derive(Debug, Default)]
pub struct SlackResult {
    pub rounds: usize,
    pub click: Decided,
    pub api: Decided,
    /// Rounds whose long-poll answered before the decision was sent.
    pub not_parked: u64,
    /// Rounds whose woken long-poll did not show the call approved.
    pub not_decided: u64,
    /// Decisions whose `chat.update` did not reach the fake within [`WAIT`].
    pub not_updated: u64,
    pub first_problem: Option<String>,
    /// The posts/s test.
    pub posts: PostsResult,
    /// Size of an interaction's body (form-encoded, with the message's blocks as Slack sends them).
    pub click_bytes: usize,
    /// The pause between a post reaching the fake and its decision (the long-poll parked meanwhile).
    pub settle: Duration,
}

/// The posts/s test.
#[derive(Debug, Default)]
pub struct PostsResult {
    pub channels: usize,
    pub per_channel: usize,
    pub creates: LoadResult,
    /// First create sent → last create answered.
    pub creating: Duration,
    /// Posts of this test that reached the fake.
    pub posted: u64,
    /// First create sent → first post at the fake.
    pub first_post: Duration,
    /// First create sent → last post at the fake.
    pub span: Duration,
    /// The shortest time between two posts to one channel.
    pub min_gap: Duration,
    /// Pairs of posts to one channel less than 0.9 s apart.
    pub short_gaps: u64,
    /// Channels that got more or fewer than `per_channel` posts.
    pub uneven_channels: u64,
}

impl PostsResult {
    /// Posts per second, first create to last post.
    pub fn rate(&self) -> f64 {
        if self.span.is_zero() { 0.0 } else { self.posted as f64 / self.span.as_secs_f64() }
    }

    /// The same rate with every channel posting at exactly its limit: the first post at once, the
    /// others one interval apart.
    pub fn ideal_rate(&self) -> f64 {
        let span = POST_INTERVAL.as_secs_f64() * self.per_channel.saturating_sub(1).max(1) as f64;
        (self.channels * self.per_channel) as f64 / span
    }

    /// Posts per second after each channel's first (first post to last post), against
    /// `channels` per second.
    pub fn sustained_rate(&self) -> f64 {
        let span = self.span.saturating_sub(self.first_post);
        let after_first = self.posted.saturating_sub(self.channels as u64);
        if span.is_zero() { 0.0 } else { after_first as f64 / span.as_secs_f64() }
    }
}

/// Runs the whole part on a server of its own (`launch`: a fresh store), whose Slack is a fake
/// started here.
pub async fn run(
    opts: &Opts,
    launch: &Launch<'_>,
    marker: &str,
    tag: &str,
    log: &std::path::Path,
) -> Result<SlackResult> {
    let fake = FakeSlack::start().await;
    fake.add_user(CLICKER, TEAM, Some("bench-clicker@example.com"));
    eprintln!("{marker}creating an API key, connecting the project to a fake Slack at {} ...", fake.base());
    let key = launch.create_key().await?;
    connect(launch, &fake.base()).await?;
    let mut server = launch
        .serve_with_env(
            &format!("countersign serve [{marker}slack]"),
            log,
            &[("COUNTERSIGN_SLACK_API_BASE", &fake.base())],
        )
        .await?;
    eprintln!("{marker}countersign listening on {} (slack)", server.addr);
    let outcome = async {
        let target = Target::new(server.addr, Some(&key))?;
        let settle = SETTLE.max(Duration::from_millis(opts.wake_delay_ms));
        let mut result = SlackResult { rounds: opts.slack_rounds, settle, ..SlackResult::default() };
        decisions(opts, &target, &fake, marker, tag, &mut result).await?;
        server.check_alive()?;
        result.posts = posts(opts, &target, &fake, marker, tag).await?;
        server.check_alive()?;
        Ok::<_, anyhow::Error>(result)
    }
    .await;
    let stopped = server.stop().await;
    let result = outcome?;
    stopped?;
    Ok(result)
}

/// `countersign slack connect` for the bench's project, checked by the fake's `auth.test`.
async fn connect(launch: &Launch<'_>, base: &str) -> Result<()> {
    let mut command = Command::new(launch.bin);
    process::isolate(&mut command, &launch.config_home);
    command.env("COUNTERSIGN_SLACK_API_BASE", base);
    command
        .args(["slack", "connect", "--project", PROJECT, "--bot-token", BOT_TOKEN, "--signing-secret", SIGNING_SECRET])
        .args(&launch.store)
        .stdin(Stdio::null());
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .context("`slack connect` took too long")?
        .context("running `countersign slack connect`")?;
    if !output.status.success() {
        bail!("`slack connect` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// A function call addressed to Slack channel `channel`.
fn slack_body(call_id: &str, channel: &str) -> String {
    json!({"run_id": "r", "call_id": call_id,
           "spec": {"fn": "f", "kwargs": {"x": 1}, "channel": {"slack": {"channel_or_user_id": channel}}}})
    .to_string()
}

/// Percent-encodes a form value.
fn form_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The interactions this process has built (each body unique: the server refuses a replayed
/// signature).
static CLICKS: AtomicU64 = AtomicU64::new(0);

/// The Approve click on the posted message, signed now: the encoded HTTP request and its body's
/// length.
fn approve_click(addr: std::net::SocketAddr, posted: &Call) -> Result<(Vec<u8>, usize)> {
    let channel = posted.answered["channel"].as_str().context("the post's answer has no channel")?;
    let ts = posted.answered["ts"].as_str().context("the post's answer has no ts")?;
    let blocks = &posted.body["blocks"];
    let approve = blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == "cs_approve")
        .with_context(|| format!("no cs_approve button in the posted blocks {blocks}"))?;
    let n = CLICKS.fetch_add(1, Ordering::Relaxed);
    let payload = json!({
        "type": "block_actions",
        "user": {"id": CLICKER, "team_id": TEAM, "username": "bench"},
        "team": {"id": TEAM, "domain": "fake"},
        "api_app_id": "A0FAKE",
        "trigger_id": format!("trigger-bench-{n}"),
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "channel": {"id": channel, "name": "bench"},
        "message": {"ts": ts, "blocks": blocks},
        "actions": [{"action_id": "cs_approve", "block_id": "cs_actions", "type": "button",
                     "value": approve["value"], "action_ts": format!("1700000000.{n:06}")}],
    });
    let body = format!("payload={}", form_value(&payload.to_string()));
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign(SIGNING_SECRET, timestamp, &body);
    let request = format!(
        "POST /slack/interactions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Slack-Request-Timestamp: {timestamp}\r\nX-Slack-Signature: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Ok((request.into_bytes(), body.len()))
}

/// Waits for a call of `method` to `channel` among those after the first `seen` of that method;
/// returns it and moves `seen` past it.
async fn wait_call(fake: &FakeSlack, method: &str, channel: &str, seen: &mut usize) -> Result<Call> {
    let deadline = Instant::now() + WAIT;
    let mut n = *seen + 1;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // The fake's own timeout (a panic) is left longer than ours.
        let calls = tokio::time::timeout(left, fake.wait_for(method, n, left + WAIT))
            .await
            .map_err(|_| anyhow::anyhow!("no {method} to {channel} reached the fake Slack within {WAIT:?}"))?;
        if let Some(i) = (*seen..calls.len()).find(|&i| calls[i].body["channel"] == channel) {
            let found = calls[i].clone();
            if i == *seen {
                *seen += 1;
            }
            return Ok(found);
        }
        n = calls.len() + 1;
    }
}

/// The rounds: each of them one request decided by a click and one decided through the API, in
/// alternating order.
async fn decisions(
    opts: &Opts,
    target: &Target,
    fake: &FakeSlack,
    marker: &str,
    tag: &str,
    r: &mut SlackResult,
) -> Result<()> {
    let rounds = opts.slack_rounds;
    eprintln!(
        "{marker}countersign: Slack Approve click → long-poll wake, and API respond → wake ({rounds} rounds of each, \
         one channel per request) ..."
    );
    let mut control = Conn::connect(target.addr).await?;
    let mut waiter = Some(Conn::connect(target.addr).await?);
    let mut clicker = Conn::connect(target.addr).await?;
    let (mut posts_seen, mut updates_seen) = (0usize, 0usize);
    let mut samples: BTreeMap<&'static str, [Vec<Duration>; 5]> = BTreeMap::new();
    for i in 0..rounds + WARMUP_ROUNDS {
        let order = if i % 2 == 0 { [Via::Click, Via::Api] } else { [Via::Api, Via::Click] };
        for via in order {
            let name = match via {
                Via::Click => "click",
                Via::Api => "api",
            };
            let call_id = format!("sl-{tag}-{name}-{i}");
            let channel = format!("C{}{i}", if via == Via::Click { "K" } else { "A" });
            let create = target.request("POST", "/humanlayer/v1/function_calls", Some(&slack_body(&call_id, &channel)));
            let created = Instant::now();
            let (status, body) = control.send(&create).await?;
            anyhow::ensure!(status < 300, "create {call_id}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            let posted = wait_call(fake, "chat.postMessage", &channel, &mut posts_seen).await?;
            let post_latency = posted.at.saturating_duration_since(created);

            let mut conn = waiter.take().expect("the waiter connection comes back each round");
            let poll = target.request("GET", &format!("/humanlayer/v1/function_calls/{call_id}?wait=30"), None);
            let pending = tokio::spawn(async move {
                let answer = conn.send(&poll).await;
                let at = Instant::now();
                (conn, answer, at)
            });
            let decision = match via {
                Via::Click => approve_click(target.addr, &posted)?,
                Via::Api => {
                    let path = format!("/humanlayer/v1/agent/function_calls/{call_id}/respond");
                    let request = target.request("POST", &path, Some(r#"{"approved":true}"#));
                    let len = request.len();
                    (request.to_vec(), len)
                }
            };
            if via == Via::Click {
                r.click_bytes = decision.1;
            }
            tokio::time::sleep(r.settle).await;
            let parked = !pending.is_finished();
            let sent = Instant::now();
            let (status, body) = match via {
                Via::Click => clicker.send(&decision.0).await?,
                Via::Api => control.send(&decision.0).await?,
            };
            let acknowledged = Instant::now();
            anyhow::ensure!(
                status < 300,
                "{name} decision of {call_id}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
            let (conn, answer, woken) = pending.await.context("the waiter task panicked")?;
            waiter = Some(conn);
            let (status, body) = answer.with_context(|| format!("long-poll on {call_id}"))?;
            anyhow::ensure!(status < 300, "long-poll {call_id}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            let approved = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.pointer("/status/approved").and_then(Value::as_bool));

            // The outcome shown on the message: every decision updates it.
            let update = match wait_call(
                fake,
                "chat.update",
                posted.answered["channel"].as_str().unwrap_or(&channel),
                &mut updates_seen,
            )
            .await
            {
                Ok(update) => Some(update.at.saturating_duration_since(sent)),
                Err(e) => {
                    r.not_updated += 1;
                    r.first_problem.get_or_insert_with(|| format!("{name} decision of {call_id}: {e:#}"));
                    None
                }
            };
            let users_info = match via {
                Via::Click => fake
                    .calls_to("users.info")
                    .iter()
                    .rev()
                    .find(|c| c.at >= sent)
                    .map(|c| c.at.saturating_duration_since(sent)),
                Via::Api => None,
            };

            if !parked || woken < sent {
                r.not_parked += 1;
                r.first_problem.get_or_insert_with(|| {
                    format!(
                        "GET ?wait=30 on {call_id} answered before the decision: {}",
                        String::from_utf8_lossy(&body)
                    )
                });
            } else if approved != Some(true) {
                r.not_decided += 1;
                r.first_problem.get_or_insert_with(|| {
                    format!(
                        "the woken GET on {call_id} does not show approved=true: {}",
                        String::from_utf8_lossy(&body)
                    )
                });
            } else if i >= WARMUP_ROUNDS {
                let s = samples.entry(name).or_default();
                s[0].push(woken - sent);
                s[1].push(acknowledged - sent);
                s[2].extend(update);
                s[3].extend(users_info);
                s[4].push(post_latency);
            }
        }
    }
    for (name, [wake, ack, update, users_info, post]) in samples {
        let decided = Decided {
            wake: Samples::from_durations(wake),
            ack: Samples::from_durations(ack),
            update: Samples::from_durations(update),
            users_info: Samples::from_durations(users_info),
            post: Samples::from_durations(post),
        };
        match name {
            "click" => r.click = decided,
            _ => r.api = decided,
        }
    }
    if r.click.wake.is_empty() || r.api.wake.is_empty() {
        bail!("no valid Slack wake sample: {}", r.first_problem.clone().unwrap_or_default());
    }
    eprintln!(
        "  click → wake p50 {:.3} ms, p99 {:.3} ms; API respond → wake p50 {:.3} ms, p99 {:.3} ms",
        r.click.wake.percentile_ms(50.0),
        r.click.wake.percentile_ms(99.0),
        r.api.wake.percentile_ms(50.0),
        r.api.wake.percentile_ms(99.0)
    );
    Ok(())
}

/// [`CHANNELS`] × [`PER_CHANNEL`] requests created at once, round-robin over the channels; waits
/// for all their posts.
async fn posts(opts: &Opts, target: &Target, fake: &FakeSlack, marker: &str, tag: &str) -> Result<PostsResult> {
    let n = CHANNELS * PER_CHANNEL;
    let mut r = PostsResult { channels: CHANNELS, per_channel: PER_CHANNEL, ..PostsResult::default() };
    let channel = |k: u64| format!("CP{:02}", k % CHANNELS as u64);
    let before = fake.calls_to("chat.postMessage").len();
    eprintln!(
        "{marker}countersign: {n} requests over {CHANNELS} Slack channels at once, posted at 1/s per channel ..."
    );
    let first_create = Arc::new(OnceLock::new());
    let make: MakeRequest = {
        let (first, next, tag) = (Arc::clone(&first_create), AtomicU64::new(0), tag.to_owned());
        Arc::new(move |t: &Target, _, _| {
            first.get_or_init(Instant::now);
            let k = next.fetch_add(1, Ordering::Relaxed);
            t.request("POST", "/humanlayer/v1/function_calls", Some(&slack_body(&format!("sp-{tag}-{k}"), &channel(k))))
        })
    };
    let phase = Phase {
        connections: opts.connections.min(n),
        warmup: Duration::ZERO,
        measure: Duration::from_secs(600),
        max_requests: n as u64,
    };
    r.creates = client::run_load(target, phase, opts.client_threads, make).await?;
    let created = Instant::now();
    let first_create = *first_create.get().context("no create was sent")?;
    r.creating = created - first_create;
    if r.creates.ok_total != n as u64 {
        bail!(
            "creating the requests to post: {} of {n} succeeded (statuses {:?}); first error: {}",
            r.creates.ok_total,
            r.creates.statuses,
            r.creates.first_error.as_deref().unwrap_or("-")
        );
    }
    // Pacing alone takes PER_CHANNEL - 1 seconds; a minute more is plenty.
    let limit = POST_INTERVAL * PER_CHANNEL as u32 + Duration::from_secs(60);
    let all = tokio::time::timeout(limit, fake.wait_for("chat.postMessage", before + n, limit + WAIT)).await;
    let calls = match all {
        Ok(calls) => calls,
        Err(_) => {
            let calls = fake.calls_to("chat.postMessage");
            eprintln!("  only {} of {n} posts within {limit:?}", calls.len() - before);
            calls
        }
    };
    let ours: Vec<&Call> =
        calls[before..].iter().filter(|c| c.body["channel"].as_str().is_some_and(|ch| ch.starts_with("CP"))).collect();
    r.posted = ours.len() as u64;
    let mut by_channel: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
    for c in &ours {
        by_channel.entry(c.body["channel"].as_str().unwrap_or_default()).or_default().push(c.at);
    }
    let (first, last) = (ours.iter().map(|c| c.at).min(), ours.iter().map(|c| c.at).max());
    r.first_post = first.map_or(Duration::ZERO, |at| at.saturating_duration_since(first_create));
    r.span = last.map_or(Duration::ZERO, |at| at.saturating_duration_since(first_create));
    r.min_gap = Duration::MAX;
    for times in by_channel.values_mut() {
        times.sort();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            r.min_gap = r.min_gap.min(gap);
            if gap < POST_INTERVAL.mul_f64(0.9) {
                r.short_gaps += 1;
            }
        }
    }
    if r.min_gap == Duration::MAX {
        r.min_gap = Duration::ZERO;
    }
    r.uneven_channels = CHANNELS.saturating_sub(by_channel.len()) as u64
        + by_channel.values().filter(|t| t.len() != PER_CHANNEL).count() as u64;
    eprintln!(
        "  {:.1} posts/s ({} in {:.2} s from the first create; ideal {:.1}/s), shortest gap in one channel {:.3} s",
        r.rate(),
        r.posted,
        r.span.as_secs_f64(),
        r.ideal_rate(),
        r.min_gap.as_secs_f64()
    );
    Ok(r)
}
