//! Respond → long-poll wake latency: one connection holds `GET …?wait=30` on a fresh pending
//! call, another sends the respond; latency runs from sending the respond to the waiting GET's
//! full answer. The two may go to different instances sharing one database (cross-instance wake).

use crate::client::{Conn, Target};
use crate::stats::Samples;
use anyhow::{Context, Result, anyhow, bail};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct WakeResult {
    pub wake: Samples,
    pub respond: Samples,
    /// Round trip of the durable create that precedes each wait (one connection, otherwise idle).
    pub create: Samples,
    /// Iterations whose GET answered before the respond was sent (the server did not park it).
    pub not_parked: u64,
    /// Iterations whose woken GET did not show the call as approved.
    pub not_decided: u64,
    pub first_problem: Option<String>,
}

/// Creates and responds through `target`, holds the long-poll on `waiter` (the same server, or
/// another instance on the same database).
pub async fn run_wake(
    target: &Target,
    waiter_target: &Target,
    tag: &str,
    iters: usize,
    delay: Duration,
) -> Result<WakeResult> {
    let mut control = Conn::connect(target.addr).await?;
    let mut waiter = Some(Conn::connect(waiter_target.addr).await?);
    let (mut wake, mut respond, mut creates) =
        (Vec::with_capacity(iters), Vec::with_capacity(iters), Vec::with_capacity(iters));
    let mut result = WakeResult::default();
    let warmup = 10.min(iters / 10);
    for i in 0..iters + warmup {
        let call_id = format!("wake-{tag}-{i}");
        let create = target.request("POST", "/humanlayer/v1/function_calls", Some(&crate::create_body(&call_id)));
        let create_sent = Instant::now();
        let (status, body) = control.send(&create).await?;
        let create_rtt = create_sent.elapsed();
        if !(200..300).contains(&status) {
            bail!("create {call_id}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }

        let mut conn = waiter.take().expect("waiter connection is returned each iteration");
        let poll = waiter_target.request("GET", &format!("/humanlayer/v1/function_calls/{call_id}?wait=30"), None);
        let pending = tokio::spawn(async move {
            let answer = conn.send(&poll).await;
            let at = Instant::now();
            (conn, answer, at)
        });

        tokio::time::sleep(delay).await;
        let parked = !pending.is_finished();
        let decision = target.request(
            "POST",
            &format!("/humanlayer/v1/agent/function_calls/{call_id}/respond"),
            Some(r#"{"approved":true,"comment":"ok"}"#),
        );
        let sent = Instant::now();
        let (status, body) = control.send(&decision).await?;
        let responded = Instant::now();
        if !(200..300).contains(&status) {
            bail!("respond {call_id}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        let (conn, answer, woken) = pending.await.context("waiter task panicked")?;
        waiter = Some(conn);
        let (status, body) = answer.with_context(|| format!("long-poll on {call_id}"))?;
        if !(200..300).contains(&status) {
            bail!("long-poll {call_id}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        let approved = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.pointer("/status/approved").and_then(serde_json::Value::as_bool));
        let mut problem = None;
        if !parked || woken < sent {
            result.not_parked += 1;
            problem = Some(format!(
                "GET ?wait=30 on {call_id} answered before the respond was sent: {}",
                String::from_utf8_lossy(&body)
            ));
        } else if approved != Some(true) {
            result.not_decided += 1;
            problem =
                Some(format!("woken GET on {call_id} does not show approved=true: {}", String::from_utf8_lossy(&body)));
        } else if i >= warmup {
            wake.push(woken - sent);
            respond.push(responded - sent);
            creates.push(create_rtt);
        }
        if result.first_problem.is_none() {
            result.first_problem = problem;
        }
    }
    if wake.is_empty() {
        return Err(anyhow!("no valid wake sample: {}", result.first_problem.clone().unwrap_or_default()));
    }
    result.wake = Samples::from_durations(wake);
    result.respond = Samples::from_durations(respond);
    result.create = Samples::from_durations(creates);
    Ok(result)
}
