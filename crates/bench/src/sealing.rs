//! Sealing lag: how long after an event happened it had its place in its project's hash chain,
//! read back from the server's own audit log (`sealed_at` minus the event's `at_us`) for the last
//! events of the creates part.

use crate::client::{Conn, Target};
use crate::stats::Samples;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Most events sampled (the last ones sealed).
pub const SAMPLE: u64 = 20_000;

/// The lag of the last [`SAMPLE`] events of the key's project, once all are sealed.
pub async fn lag(target: &Target) -> Result<Samples> {
    let mut conn = Conn::connect(target.addr).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let head = loop {
        let page = get(&mut conn, target, "/humanlayer/v1/audit?limit=1").await?;
        if page["unsealed"] == 0 {
            break page["head"]["count"].as_u64().unwrap_or(0);
        }
        if Instant::now() > deadline {
            bail!("events still unsealed after 30 s: {}", page["unsealed"]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut after = head.saturating_sub(SAMPLE);
    let mut micros = Vec::new();
    loop {
        let page = get(&mut conn, target, &format!("/humanlayer/v1/audit?after={after}&limit=1000")).await?;
        let events = page["events"].as_array().context("no events in the audit page")?;
        if events.is_empty() {
            break;
        }
        for e in events {
            let body: Value = serde_json::from_str(e["event"].as_str().context("an event without text")?)?;
            let at = body["at_us"].as_i64().context("an event without at_us")?;
            let sealed = chrono::DateTime::parse_from_rfc3339(e["sealed_at"].as_str().context("no sealed_at")?)?
                .timestamp_micros();
            micros.push(u32::try_from((sealed - at).max(0)).unwrap_or(u32::MAX));
            after = e["seq"].as_u64().context("an event without seq")?;
        }
    }
    Ok(Samples::from_micros(micros))
}

async fn get(conn: &mut Conn, target: &Target, path: &str) -> Result<Value> {
    let (status, body) = conn.send(&target.request("GET", path, None)).await?;
    if !(200..300).contains(&status) {
        bail!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}
