//! The in-memory view of pending requests: polls of a pending request are answered from here
//! without touching the database, and long-polls park here until the decision arrives.
//!
//! It is kept correct by the same code path that decides: a decision is committed first, then the
//! entry leaves this view and every waiter is handed the decided object.

use bytes::Bytes;
use countersign_core::{RequestKind, RequestRecord};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Identifies a request across projects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
}

impl RequestKey {
    /// The key of a record.
    pub fn of(record: &RequestRecord) -> Self {
        Self { project_id: record.project_id.clone(), kind: record.kind, call_id: record.call_id.clone() }
    }
}

/// A pending request held in memory.
#[derive(Clone)]
pub struct LiveEntry {
    /// The current record (pending).
    pub record: Arc<RequestRecord>,
    /// Its serialized JSON, served to polls as is.
    pub json: Bytes,
    /// Becomes `Some(decided JSON)` once decided; long-polls watch it.
    decided: Arc<watch::Sender<Option<Bytes>>>,
}

impl LiveEntry {
    fn new(record: RequestRecord) -> Self {
        let json = Bytes::from(record.to_json());
        Self { record: Arc::new(record), json, decided: Arc::new(watch::channel(None).0) }
    }

    /// A receiver that changes when this request is decided.
    pub fn subscribe(&self) -> watch::Receiver<Option<Bytes>> {
        self.decided.subscribe()
    }
}

/// All pending requests this process knows about.
#[derive(Default)]
pub struct LiveRequests {
    entries: RwLock<HashMap<RequestKey, LiveEntry>>,
}

impl LiveRequests {
    /// The pending entry, if held.
    pub fn get(&self, key: &RequestKey) -> Option<LiveEntry> {
        self.entries.read().expect("live map lock").get(key).cloned()
    }

    /// Holds a pending record (after its create committed); keeps an existing entry.
    pub fn insert(&self, record: RequestRecord) -> LiveEntry {
        let key = RequestKey::of(&record);
        self.entries.write().expect("live map lock").entry(key).or_insert_with(|| LiveEntry::new(record)).clone()
    }

    /// Replaces the record of a held entry (after an escalation), keeping its waiters. A request
    /// not held (or no longer: decided meanwhile) is left alone, so a late update can never bring
    /// back a pending copy of a decided request; escalations only accumulate, so an update that
    /// knows fewer of them than the entry (two escalations racing) is stale and dropped.
    pub fn update(&self, record: RequestRecord) {
        if !record.is_pending() {
            return; // its decision reaches this view through `complete`
        }
        let key = RequestKey::of(&record);
        let mut entries = self.entries.write().expect("live map lock");
        if let Some(entry) = entries.get_mut(&key).filter(|e| e.record.escalations.len() < record.escalations.len()) {
            entry.json = Bytes::from(record.to_json());
            entry.record = Arc::new(record);
        }
    }

    /// Removes a request that has been decided and wakes its waiters with the decided object.
    pub fn complete(&self, key: &RequestKey, decided_json: Bytes) {
        let entry = self.entries.write().expect("live map lock").remove(key);
        if let Some(entry) = entry {
            entry.decided.send_replace(Some(decided_json));
        }
    }

    /// The keys of every held request.
    pub fn keys(&self) -> Vec<RequestKey> {
        self.entries.read().expect("live map lock").keys().cloned().collect()
    }

    /// How many pending requests are held.
    pub fn len(&self) -> usize {
        self.entries.read().expect("live map lock").len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
