//! The in-memory view of pending requests: polls of a pending request are answered from here
//! without touching the database, and long-polls park here until the decision arrives.
//!
//! It is kept correct by the same code path that decides: a decision is committed first, then the
//! entry leaves this view and every waiter is handed the decided object.

use bytes::Bytes;
use countersign_core::{RequestKind, RequestRecord};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::ops::Range;
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

/// A pending request held in memory: its JSON, served to polls as is, and the record's other
/// fields; the spec is held once, inside the JSON.
#[derive(Clone)]
pub struct LiveEntry {
    /// Its serialized JSON, served to polls as is.
    pub json: Bytes,
    /// Where the spec sits in `json`.
    spec: Range<usize>,
    /// The record with a placeholder spec (see [`LiveEntry::record`]).
    meta: Arc<RequestRecord>,
    /// Becomes `Some(decided JSON)` once decided; long-polls watch it.
    decided: Arc<watch::Sender<Option<Bytes>>>,
}

impl LiveEntry {
    fn new(record: RequestRecord) -> Self {
        Self::of(record, Arc::new(watch::channel(None).0))
    }

    fn of(mut record: RequestRecord, decided: Arc<watch::Sender<Option<Bytes>>>) -> Self {
        let (json, spec) = record.to_json_with_spec();
        record.spec = placeholder();
        Self { json: Bytes::from(json), spec, meta: Arc::new(record), decided }
    }

    /// The whole record (its spec copied out of the JSON).
    pub fn record(&self) -> RequestRecord {
        let mut record = (*self.meta).clone();
        let text = std::str::from_utf8(&self.json[self.spec.clone()]).expect("JSON is UTF-8");
        record.spec = RawValue::from_string(text.to_owned()).expect("the spec was valid JSON when it was held");
        record
    }

    /// The record without its spec (a `null` placeholder): kind, ids, escalations.
    pub fn meta(&self) -> &RequestRecord {
        &self.meta
    }

    /// A receiver that changes when this request is decided.
    pub fn subscribe(&self) -> watch::Receiver<Option<Bytes>> {
        self.decided.subscribe()
    }
}

fn placeholder() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// What one project holds pending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Pending requests.
    pub count: u64,
    /// Bytes of their JSON.
    pub bytes: u64,
}

#[derive(Default)]
struct Held {
    entries: HashMap<RequestKey, LiveEntry>,
    usage: HashMap<String, Usage>,
    /// Room taken by creates between their check and their commit ([`Reservation`]).
    in_flight: HashMap<String, Usage>,
}

impl Held {
    fn account(&mut self, project_id: &str, count: i64, bytes: i64) {
        let usage = self.usage.entry(project_id.to_owned()).or_default();
        usage.count = usage.count.saturating_add_signed(count);
        usage.bytes = usage.bytes.saturating_add_signed(bytes);
        if usage.count == 0 {
            self.usage.remove(project_id);
        }
    }
}

/// Room for one create of a project, taken before it is stored and given back when dropped (by
/// then the request is held, or its create failed), so creates racing each other cannot together
/// pass a project's pending limits.
pub struct Reservation<'a> {
    live: &'a LiveRequests,
    project_id: String,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut held = self.live.held.write().expect("live map lock");
        if let Some(room) = held.in_flight.get_mut(&self.project_id) {
            room.count = room.count.saturating_sub(1);
            room.bytes = room.bytes.saturating_sub(self.bytes);
            if room.count == 0 {
                held.in_flight.remove(&self.project_id);
            }
        }
    }
}

fn signed(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// All pending requests this process knows about.
#[derive(Default)]
pub struct LiveRequests {
    held: RwLock<Held>,
}

impl LiveRequests {
    /// The pending entry, if held.
    pub fn get(&self, key: &RequestKey) -> Option<LiveEntry> {
        self.held.read().expect("live map lock").entries.get(key).cloned()
    }

    /// Holds a pending record (after its create committed); keeps an existing entry.
    pub fn insert(&self, record: RequestRecord) -> LiveEntry {
        let key = RequestKey::of(&record);
        if let Some(entry) = self.get(&key) {
            return entry;
        }
        let fresh = LiveEntry::new(record);
        let mut held = self.held.write().expect("live map lock");
        if let Some(entry) = held.entries.get(&key) {
            return entry.clone();
        }
        held.account(&key.project_id, 1, signed(fresh.json.len()));
        held.entries.insert(key, fresh.clone());
        fresh
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
        let mut held = self.held.write().expect("live map lock");
        let Some(entry) = held.entries.get_mut(&key) else { return };
        if entry.meta.escalations.len() >= record.escalations.len() {
            return;
        }
        let before = entry.json.len();
        *entry = LiveEntry::of(record, entry.decided.clone());
        let grown = signed(entry.json.len()) - signed(before);
        held.account(&key.project_id, 0, grown);
    }

    /// Removes a request that has been decided and wakes its waiters with the decided object.
    pub fn complete(&self, key: &RequestKey, decided_json: Bytes) {
        let entry = {
            let mut held = self.held.write().expect("live map lock");
            let entry = held.entries.remove(key);
            if let Some(entry) = &entry {
                held.account(&key.project_id, -1, -signed(entry.json.len()));
            }
            entry
        };
        if let Some(entry) = entry {
            entry.decided.send_replace(Some(decided_json));
        }
    }

    /// Takes room for a create of `bytes` in a project when what it holds and what is in flight,
    /// with this one, stay within `max_count` requests and `max_bytes`; otherwise returns what is
    /// held and in flight.
    pub fn reserve(
        &self,
        project_id: &str,
        bytes: u64,
        max_count: u64,
        max_bytes: u64,
    ) -> Result<Reservation<'_>, Usage> {
        let mut held = self.held.write().expect("live map lock");
        let usage = held.usage.get(project_id).copied().unwrap_or_default();
        let room = held.in_flight.get(project_id).copied().unwrap_or_default();
        let taken = Usage { count: usage.count + room.count, bytes: usage.bytes + room.bytes };
        if taken.count >= max_count || taken.bytes.saturating_add(bytes) > max_bytes {
            return Err(taken);
        }
        let room = held.in_flight.entry(project_id.to_owned()).or_default();
        room.count += 1;
        room.bytes += bytes;
        Ok(Reservation { live: self, project_id: project_id.to_owned(), bytes })
    }

    /// What a project holds pending here.
    #[cfg(test)]
    pub fn usage(&self, project_id: &str) -> Usage {
        self.held.read().expect("live map lock").usage.get(project_id).copied().unwrap_or_default()
    }

    /// The keys of every held request.
    pub fn keys(&self) -> Vec<RequestKey> {
        self.held.read().expect("live map lock").entries.keys().cloned().collect()
    }

    /// How many pending requests are held.
    pub fn len(&self) -> usize {
        self.held.read().expect("live map lock").entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_core::{NewRequest, Timestamp};

    fn record(call_id: &str, msg: &str) -> RequestRecord {
        let body = serde_json::json!({"run_id": "r", "call_id": call_id, "spec": {"msg": msg}}).to_string();
        let new = NewRequest::parse(RequestKind::HumanContact, body.as_bytes()).unwrap();
        RequestRecord::new("p", new, Timestamp::from_micros(0))
    }

    #[test]
    fn holds_the_spec_once_and_gives_it_back() {
        let live = LiveRequests::default();
        let entry = live.insert(record("a", "é \"quoted\""));
        assert_eq!(entry.meta().spec.get(), "null");
        assert_eq!(entry.record().spec.get(), r#"{"msg":"é \"quoted\""}"#);
        assert_eq!(entry.json, Bytes::from(record("a", "é \"quoted\"").to_json()));
    }

    #[test]
    fn counts_what_each_project_holds() {
        let live = LiveRequests::default();
        let a = live.insert(record("a", "one"));
        live.insert(record("b", "two"));
        live.insert(record("a", "again")); // already held: not counted twice
        let usage = live.usage("p");
        assert_eq!(usage.count, 2);
        assert_eq!(usage.bytes, (a.json.len() * 2) as u64);
        live.complete(&RequestKey::of(&a.record()), Bytes::new());
        assert_eq!(live.usage("p").count, 1);
        live.complete(&RequestKey::of(&record("b", "two")), Bytes::new());
        assert_eq!(live.usage("p"), Usage::default());
    }
}
