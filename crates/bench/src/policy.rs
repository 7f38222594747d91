//! The cost of a policy on creates: durable creates/s and their latency for a project with a
//! [`RULES`]-rule policy against a project without one, on one server of its own (two keys, two
//! projects, the same settings), measured alternately (none, policy, none, policy, ...) so that
//! drift of the machine falls on both alike; the medians of the rounds are reported.
//!
//! Every create calls [`FN`] with [`KWARGS`]. [`MATCHING`] of the rules have a `match.fn` glob
//! that selects it, so their CEL `when` runs on every create and is false; the others select
//! other functions. No rule decides, so both projects' calls end pending, stored alike. The
//! policy is checked with `POST /policy/test` before the rounds: no rule, no condition errors.

use crate::client::{self, Conn, LoadResult, MakeRequest, Target};
use crate::stats::Samples;
use crate::{Launch, Opts, process};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::sync::Arc;

/// Rules in the measured policy.
pub const RULES: usize = 50;
/// Rules whose glob selects [`FN`] (their conditions run on every create).
pub const MATCHING: usize = 42;
/// The function every measured create calls.
pub const FN: &str = "refund_order";
/// Its arguments: no rule's condition holds for them.
const KWARGS: &str = r#"{"amount":250,"currency":"EUR","order_id":"o-20931","reason":"damaged","customer":{"tier":"standard","country":"DE"}}"#;
/// The creates' run id.
const RUN_ID: &str = "bench-agent";

/// Globs that select [`FN`], used in turn by the matching rules.
const SELECTING: [&str; 5] = ["refund*", "refund_*", "*_order", "*", "refund_order"];
/// Globs that do not, one per other rule.
const OTHER: [&str; RULES - MATCHING] =
    ["send_email*", "delete_*", "deploy*", "db_*", "transfer_*", "wire_*", "refund_payment", "*_user"];

/// What the policy part measured on one server.
#[derive(Debug, Default)]
pub struct PolicyResult {
    /// The rounds of the project without a policy, in order.
    pub none: Vec<LoadResult>,
    /// The rounds of the project with the policy, each right after its `none` round.
    pub policy: Vec<LoadResult>,
    /// Bytes of the policy file.
    pub policy_bytes: usize,
}

impl PolicyResult {
    /// The median creates/s of `rounds`.
    pub fn rate(rounds: &[LoadResult]) -> f64 {
        median(rounds.iter().map(LoadResult::rate).collect())
    }

    /// The median over `rounds` of each round's `p`-th latency percentile, in ms.
    pub fn latency_ms(rounds: &[LoadResult], p: f64) -> f64 {
        median(rounds.iter().map(|r| Samples::from_micros(r.latencies_us.clone()).percentile_ms(p)).collect())
    }
}

/// The median (the mean of the middle two for an even count); NaN without values.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// The condition of matching rule `i`: realistic, and false for [`KWARGS`] and [`RUN_ID`]
/// (without errors, which would make a `deny` or `ask` rule apply).
fn condition(i: usize) -> String {
    let limit = 50 + 5 * i;
    match i % 8 {
        0 => format!("args.amount < {limit} && args.currency == 'USD'"),
        1 => format!("args.currency == 'GBP' && args.amount > {limit}"),
        2 => format!("args.reason in ['fraud', 'chargeback'] && args.amount >= {limit}"),
        3 => format!("args.customer.tier == 'vip' && args.amount < {}", limit * 10),
        4 => format!("run_id.startsWith('ci-') && args.amount < {limit}"),
        5 => format!("channel == 'slack' && args.amount > {limit}"),
        6 => format!("args.amount > {} || args.customer.country in ['KP', 'IR', 'SY']", 10_000 + limit),
        _ => format!("has(args.override) && args.amount < {limit}"),
    }
}

/// The measured policy: [`RULES`] rules, those not selecting [`FN`] spread among the others.
pub fn policy_text() -> String {
    let mut text = String::new();
    let (mut selecting, mut other) = (0, 0);
    for i in 0..RULES {
        let spread = i % 6 == 5 && other < OTHER.len();
        let (glob, when) = if spread || selecting == MATCHING {
            other += 1;
            (OTHER[other - 1], format!("args.amount < {} && args.currency == 'USD'", 100 + i))
        } else {
            selecting += 1;
            (SELECTING[i % SELECTING.len()], condition(i))
        };
        text.push_str(&format!("[[rule]]\nname = \"rule {i:02}\"\nmatch = {{ fn = \"{glob}\" }}\nwhen = \"{when}\"\n"));
        match i % 3 {
            0 => text.push_str("action = \"approve\"\n"),
            1 => text.push_str(&format!("action = \"deny\"\nmessage = \"refused by rule {i:02}\"\n")),
            _ => text.push_str("action = \"ask\"\nexpire_after = \"4h\"\n"),
        }
        text.push('\n');
    }
    debug_assert_eq!((selecting, other), (MATCHING, RULES - MATCHING));
    text
}

/// A create of [`FN`] with [`KWARGS`].
fn create_body(call_id: &str) -> String {
    format!(r#"{{"run_id":"{RUN_ID}","call_id":"{call_id}","spec":{{"fn":"{FN}","kwargs":{KWARGS}}}}}"#)
}

/// Sets the policy of `key`'s project (`PUT /policy`, TOML body) and checks what it holds.
async fn set_policy(target: &Target, key: &str, text: &str) -> Result<()> {
    let request = format!(
        "PUT /humanlayer/v1/policy HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/toml\r\nContent-Length: {}\r\n\r\n{text}",
        target.addr,
        text.len()
    );
    let mut conn = Conn::connect(target.addr).await?;
    let (status, body) = conn.send(request.as_bytes()).await?;
    anyhow::ensure!(status == 200, "PUT /humanlayer/v1/policy: HTTP {status}: {}", String::from_utf8_lossy(&body));
    let stored: Value = serde_json::from_slice(&body).context("the policy answer is not JSON")?;
    let rules = stored["rules"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(rules == RULES, "the server holds {rules} rules of the {RULES} set");

    // What the policy does with the measured call: no rule decides, and no condition fails.
    let test = json!({"run_id": RUN_ID, "spec": {"fn": FN, "kwargs": serde_json::from_str::<Value>(KWARGS)?}});
    let (status, body) =
        conn.send(&target.request("POST", "/humanlayer/v1/policy/test", Some(&test.to_string()))).await?;
    anyhow::ensure!(
        status == 200,
        "POST /humanlayer/v1/policy/test: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let report: Value = serde_json::from_slice(&body).context("the policy test answer is not JSON")?;
    if !report["rule"].is_null() || report["errors"].as_array().is_none_or(|e| !e.is_empty()) {
        bail!("the policy is not one that evaluates every rule without deciding: {report}");
    }
    Ok(())
}

/// Creates over keep-alive HTTP for one round, each with a call id of its own.
async fn creates(opts: &Opts, target: &Target, prefix: String) -> Result<LoadResult> {
    let make: MakeRequest = Arc::new(move |t: &Target, conn, seq| {
        t.request("POST", "/humanlayer/v1/function_calls", Some(&create_body(&format!("{prefix}-{conn}-{seq}"))))
    });
    client::run_load(target, crate::phase_of(opts), opts.client_threads, make).await
}

/// Runs the part on a server of its own, on the store of `launch`.
pub async fn run(
    opts: &Opts,
    launch: &Launch<'_>,
    marker: &str,
    tag: &str,
    log: &std::path::Path,
) -> Result<PolicyResult> {
    eprintln!(
        "{marker}creating two API keys (no policy, {RULES}-rule policy) and starting a server for the policy part ..."
    );
    let none_key = process::create_key(launch.bin, "policy-none", &launch.store, &launch.config_home).await?;
    let policy_key = process::create_key(launch.bin, "policy-rules", &launch.store, &launch.config_home).await?;
    let mut server =
        launch.serve_logging(&format!("countersign serve [{marker}policy]"), log, opts.server_log.as_deref()).await?;
    eprintln!("{marker}countersign listening on {} (policy)", server.addr);
    let outcome = async {
        let none = Target::new(server.addr, Some(&none_key))?;
        let ruled = Target::new(server.addr, Some(&policy_key))?;
        let text = policy_text();
        set_policy(&ruled, &policy_key, &text).await?;
        let mut r = PolicyResult { policy_bytes: text.len(), ..PolicyResult::default() };
        for round in 0..opts.policy_rounds {
            for (name, side, target) in [("no policy", "n", &none), ("policy", "p", &ruled)] {
                eprintln!(
                    "{marker}countersign: creates with {name}, round {} of {} ({} connections) ...",
                    round + 1,
                    opts.policy_rounds,
                    opts.connections
                );
                let load = creates(opts, target, format!("pol-{tag}-{side}{round}")).await?;
                server.check_alive()?;
                eprintln!("  {:.0} creates/s", load.rate());
                if side == "n" { r.none.push(load) } else { r.policy.push(load) }
            }
        }
        Ok::<_, anyhow::Error>(r)
    }
    .await;
    let stopped = server.stop().await;
    let result = outcome?;
    stopped?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_has_its_rules_and_globs() {
        let text = policy_text();
        assert_eq!(text.matches("[[rule]]").count(), RULES);
        let selecting = SELECTING.iter().map(|g| text.matches(&format!("fn = \"{g}\"")).count()).sum::<usize>();
        assert_eq!(selecting, MATCHING);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }
}
