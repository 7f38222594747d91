//! Reading every request the load ever sent back through the API (each instance in turn), so
//! the ledger can be compared with what the server now holds.

use crate::http::{Api, Reply, Target};
use crate::ledger::Found;
use crate::request::{Decision, Key, parse_stored};
use futures::StreamExt as _;
use reqwest::Method;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Requests read at once.
const CONCURRENCY: usize = 32;
/// Tries per request before it counts as unreadable.
const TRIES: u32 = 6;

/// What a read-back found, and how long it took.
pub struct Readback {
    pub found: HashMap<Key, Found>,
    pub took: Duration,
}

impl Readback {
    /// The requests the store holds decided, with their decisions.
    pub fn decided(&self) -> HashMap<Key, Decision> {
        self.found
            .iter()
            .filter_map(|(key, found)| match found {
                Found::Present(stored) => stored.decision.clone().map(|d| (key.clone(), d)),
                _ => None,
            })
            .collect()
    }
}

/// GETs every key (spread over `targets`), retrying transport errors and error statuses.
pub async fn read_all(api: &Api, targets: &[Target], keys: Vec<Key>) -> Readback {
    let started = Instant::now();
    let found = futures::stream::iter(keys.into_iter().enumerate())
        .map(|(i, key)| {
            let target = &targets[i % targets.len()];
            async move {
                let found = read_one(api, target, &key).await;
                (key, found)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<HashMap<_, _>>()
        .await;
    Readback { found, took: started.elapsed() }
}

async fn read_one(api: &Api, target: &Target, key: &Key) -> Found {
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
        }
        let reply = api.send(target, Method::GET, &key.get_path(), None, Duration::from_secs(15)).await;
        match &reply {
            Reply::Answer { status: 404, .. } => return Found::Missing,
            Reply::Answer { status: 200, .. } => match reply.json().map(|v| parse_stored(key.kind, &v)) {
                Some(Ok(stored)) => return Found::Present(stored),
                Some(Err(why)) => last = format!("unexpected body: {why}"),
                None => last = "a 200 that is not JSON".to_owned(),
            },
            other => last = other.label(),
        }
    }
    Found::Unreadable(format!("{last} after {TRIES} tries"))
}
