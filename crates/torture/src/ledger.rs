//! What the server acknowledged against what it holds: every create, decision and escalation the
//! load sent is entered here with how it was answered (2xx, refused, or no answer at all), every
//! decision seen in a successful read is noted, and [`Ledger::check`] compares all of it with the
//! requests as the server returns them. No I/O.

use crate::request::{Decision, Key, Stored};
use serde::Serialize;
use std::collections::HashMap;

/// How the server answered one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Sent, no answer yet.
    Sent,
    /// A 2xx: the server promised it is stored.
    Acked,
    /// An error status: the server promised nothing changed.
    Refused(u16),
    /// No HTTP answer (connection reset by a kill, timeout): it may or may not be stored.
    Unknown,
}

/// Everything sent about one request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub run_id: String,
    /// The spec as sent, serialized (the server must return it byte for byte).
    pub spec: String,
    pub create: Answer,
    /// Each decision sent and how it was answered.
    pub decisions: Vec<(Decision, Answer)>,
    /// Decisions read back in a 2xx GET or long-poll (or a webhook): once seen, they must stay.
    pub observed: Vec<Decision>,
    /// Escalation messages sent and how they were answered.
    pub escalations: Vec<(String, Answer)>,
    /// Reads that answered 404 after the create was acknowledged.
    pub reads_missing: u32,
}

/// The load's record of one run, shared by its workers behind a mutex.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<Key, Entry>,
    /// Requests created (acknowledged) that no decision has been sent for yet: the decide ops'
    /// pool, also where escalations and long-polls pick from.
    pending: Vec<Key>,
    /// Requests with an acknowledged decision, for reads of decided requests.
    decided: Vec<Key>,
}

/// What one comparison of the ledger with the store found.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Tally {
    pub creates_acked: u64,
    pub creates_found: u64,
    /// Acknowledged creates that are missing.
    pub creates_lost: u64,
    /// Acknowledged creates stored with another spec or run id.
    pub creates_changed: u64,
    /// Creates without an answer that turned out stored / not stored (both are allowed).
    pub creates_unanswered_stored: u64,
    pub creates_unanswered_absent: u64,
    /// Creates answered with an error status but stored anyway (the error said nothing changed).
    pub creates_refused_but_stored: u64,
    pub decisions_acked: u64,
    pub decisions_found: u64,
    /// Acknowledged decisions not stored (the request pending, or decided otherwise).
    pub decisions_lost: u64,
    /// Requests with two acknowledged decisions, or a stored decision that was refused with 409.
    pub double_decisions: u64,
    /// Stored decisions that nobody sent.
    pub phantom_decisions: u64,
    /// Decisions answered with an error status other than 409 but stored anyway.
    pub decisions_refused_but_stored: u64,
    /// Decisions refused with 409 (a conflicting decision already won): expected under races.
    pub decisions_conflict_refused: u64,
    /// Decisions without an answer that turned out stored / not stored.
    pub decisions_unanswered_stored: u64,
    pub decisions_unanswered_absent: u64,
    /// Decisions a successful read or webhook showed that the store no longer has.
    pub observed_decisions: u64,
    pub observed_lost: u64,
    pub escalations_acked: u64,
    pub escalations_found: u64,
    pub escalations_lost: u64,
    /// Requests that could not be read back at all (neither found nor a clean 404).
    pub unreadable: u64,
    /// Reads during the load that answered 404 for an acknowledged create.
    pub reads_missing_acked: u64,
}

impl Tally {
    /// Whether anything acknowledged was lost or decided twice, or a write refused with an
    /// error (which says nothing changed) was stored after all.
    pub fn is_clean(&self) -> bool {
        self.creates_lost == 0
            && self.creates_refused_but_stored == 0
            && self.decisions_refused_but_stored == 0
            && self.creates_changed == 0
            && self.decisions_lost == 0
            && self.double_decisions == 0
            && self.phantom_decisions == 0
            && self.observed_lost == 0
            && self.escalations_lost == 0
            && self.unreadable == 0
            && self.reads_missing_acked == 0
    }
}

/// One request read back: what the ledger compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A 404.
    Missing,
    Present(Stored),
    /// No clean answer after retries (a transport error or an error status).
    Unreadable(String),
}

impl Ledger {
    /// Notes a create about to be sent (before it is sent, so a kill cannot hide it).
    pub fn create_sent(&mut self, key: Key, run_id: String, spec: String) {
        self.entries.insert(
            key,
            Entry {
                run_id,
                spec,
                create: Answer::Sent,
                decisions: Vec::new(),
                observed: Vec::new(),
                escalations: Vec::new(),
                reads_missing: 0,
            },
        );
    }

    /// Records how a create was answered; an acknowledged one joins the pending pool.
    pub fn create_answered(&mut self, key: &Key, answer: Answer) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.create = answer;
            if answer == Answer::Acked {
                self.pending.push(key.clone());
            }
        }
    }

    /// Takes a pending request out of the pool for deciding (`pick` is an index source).
    pub fn take_pending(&mut self, pick: usize) -> Option<Key> {
        if self.pending.is_empty() {
            return None;
        }
        let at = pick % self.pending.len();
        Some(self.pending.swap_remove(at))
    }

    /// A pending request, left in the pool (for escalations and long-polls).
    pub fn peek_pending(&self, pick: usize) -> Option<Key> {
        if self.pending.is_empty() { None } else { Some(self.pending[pick % self.pending.len()].clone()) }
    }

    /// How many acknowledged requests no decision was sent for.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Notes a decision about to be sent; returns its index for [`Ledger::decision_answered`].
    pub fn decision_sent(&mut self, key: &Key, decision: Decision) -> usize {
        let entry = self.entries.get_mut(key).expect("decisions are sent for known requests");
        entry.decisions.push((decision, Answer::Sent));
        entry.decisions.len() - 1
    }

    pub fn decision_answered(&mut self, key: &Key, index: usize, answer: Answer) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.decisions[index].1 = answer;
            if answer == Answer::Acked {
                self.decided.push(key.clone());
            }
        }
    }

    /// A request with an acknowledged decision.
    pub fn peek_decided(&self, pick: usize) -> Option<Key> {
        if self.decided.is_empty() { None } else { Some(self.decided[pick % self.decided.len()].clone()) }
    }

    /// Notes that a read answered 404 for a request whose create was acknowledged.
    pub fn read_missing(&mut self, key: &Key) {
        if let Some(entry) = self.entries.get_mut(key)
            && entry.create == Answer::Acked
        {
            entry.reads_missing += 1;
        }
    }

    /// Notes an escalation about to be sent; returns its index.
    pub fn escalation_sent(&mut self, key: &Key, message: String) -> usize {
        let entry = self.entries.get_mut(key).expect("escalations are sent for known requests");
        entry.escalations.push((message, Answer::Sent));
        entry.escalations.len() - 1
    }

    pub fn escalation_answered(&mut self, key: &Key, index: usize, answer: Answer) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.escalations[index].1 = answer;
        }
    }

    /// Notes a decision a successful read (GET, long-poll, webhook) showed.
    pub fn observed(&mut self, key: &Key, decision: Decision) {
        if let Some(entry) = self.entries.get_mut(key)
            && !entry.observed.contains(&decision)
        {
            entry.observed.push(decision);
        }
    }

    /// Writes still marked as sent become unanswered: called once the load has stopped, when
    /// no answer can come any more.
    pub fn settle(&mut self) {
        for entry in self.entries.values_mut() {
            if entry.create == Answer::Sent {
                entry.create = Answer::Unknown;
            }
            let answers =
                entry.decisions.iter_mut().map(|(_, a)| a).chain(entry.escalations.iter_mut().map(|(_, a)| a));
            for answer in answers {
                if *answer == Answer::Sent {
                    *answer = Answer::Unknown;
                }
            }
        }
    }

    /// Every request a create was sent for (what a check must read back).
    pub fn keys(&self) -> Vec<Key> {
        self.entries.keys().cloned().collect()
    }

    /// Compares every entry with what was read back; `problems` gets one line per finding (the
    /// caller keeps the first few). A key absent from `found` counts as unreadable.
    pub fn check(&self, found: &HashMap<Key, Found>, problems: &mut Vec<String>) -> Tally {
        let mut tally = Tally::default();
        let mut keys: Vec<&Key> = self.entries.keys().collect();
        keys.sort();
        for key in keys {
            let entry = &self.entries[key];
            let found = found.get(key).cloned().unwrap_or_else(|| Found::Unreadable("not read".into()));
            check_entry(key, entry, &found, &mut tally, problems);
        }
        tally
    }
}

fn check_entry(key: &Key, entry: &Entry, found: &Found, tally: &mut Tally, problems: &mut Vec<String>) {
    let stored = match found {
        Found::Present(stored) => Some(stored),
        Found::Missing => None,
        Found::Unreadable(why) => {
            tally.unreadable += 1;
            problems.push(format!("{key}: could not be read back: {why}"));
            return;
        }
    };
    match entry.create {
        Answer::Acked => {
            tally.creates_acked += 1;
            match stored {
                None => {
                    tally.creates_lost += 1;
                    problems.push(format!("{key}: acknowledged create is missing (404)"));
                }
                Some(s) if s.spec != entry.spec || s.run_id != entry.run_id => {
                    tally.creates_changed += 1;
                    problems.push(format!(
                        "{key}: acknowledged create changed: run_id {:?} spec {} (sent run_id {:?} spec {})",
                        s.run_id, s.spec, entry.run_id, entry.spec
                    ));
                }
                Some(_) => tally.creates_found += 1,
            }
        }
        Answer::Refused(status) => {
            if stored.is_some() {
                tally.creates_refused_but_stored += 1;
                problems.push(format!("{key}: create answered {status} is stored anyway"));
            }
        }
        Answer::Unknown | Answer::Sent => {
            if stored.is_some() {
                tally.creates_unanswered_stored += 1;
            } else {
                tally.creates_unanswered_absent += 1;
            }
        }
    }
    if entry.reads_missing > 0 {
        tally.reads_missing_acked += u64::from(entry.reads_missing);
        problems.push(format!("{key}: acknowledged, yet {} read(s) during the load answered 404", entry.reads_missing));
    }
    let decision = stored.and_then(|s| s.decision.as_ref());
    let acked: Vec<&Decision> = entry.decisions.iter().filter(|(_, a)| *a == Answer::Acked).map(|(d, _)| d).collect();
    tally.decisions_acked += acked.len() as u64;
    if acked.len() > 1 {
        tally.double_decisions += 1;
        problems.push(format!("{key}: {} decisions were acknowledged: {acked:?}", acked.len()));
    }
    for d in &acked {
        if decision == Some(*d) {
            tally.decisions_found += 1;
        } else {
            tally.decisions_lost += 1;
            problems.push(format!("{key}: acknowledged decision {d} is not stored (stored: {})", show(decision)));
        }
    }
    for (d, answer) in &entry.decisions {
        let is_stored = decision == Some(d);
        match answer {
            Answer::Refused(409) => {
                tally.decisions_conflict_refused += 1;
                if is_stored {
                    tally.double_decisions += 1;
                    problems.push(format!("{key}: decision {d} was refused with 409 yet it is the stored one"));
                }
            }
            Answer::Refused(status) if is_stored => {
                tally.decisions_refused_but_stored += 1;
                problems.push(format!("{key}: decision {d} answered {status} is stored anyway"));
            }
            Answer::Unknown | Answer::Sent if is_stored => tally.decisions_unanswered_stored += 1,
            Answer::Unknown | Answer::Sent => tally.decisions_unanswered_absent += 1,
            _ => {}
        }
    }
    if let Some(d) = decision
        && !entry.decisions.iter().any(|(sent, _)| sent == d)
    {
        tally.phantom_decisions += 1;
        problems.push(format!("{key}: stored decision {d} was never sent"));
    }
    for seen in &entry.observed {
        tally.observed_decisions += 1;
        if decision != Some(seen) {
            tally.observed_lost += 1;
            problems
                .push(format!("{key}: decision {seen} was served earlier but the store now has {}", show(decision)));
        }
    }
    let stored_escalations = stored.map(|s| s.escalations.as_slice()).unwrap_or_default();
    for (message, answer) in &entry.escalations {
        if *answer == Answer::Acked {
            tally.escalations_acked += 1;
            if stored_escalations.contains(message) {
                tally.escalations_found += 1;
            } else {
                tally.escalations_lost += 1;
                problems.push(format!("{key}: acknowledged escalation {message:?} is not stored"));
            }
        }
    }
}

fn show(decision: Option<&Decision>) -> String {
    decision.map_or_else(|| "pending".to_owned(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Kind;

    fn key(n: u32) -> Key {
        Key { kind: Kind::FunctionCall, call_id: format!("fc-{n}") }
    }

    fn approved(c: &str) -> Decision {
        Decision::Approved { comment: c.into() }
    }

    fn stored(spec: &str, decision: Option<Decision>) -> Found {
        Found::Present(Stored { run_id: "r".into(), spec: spec.into(), decision, escalations: vec![] })
    }

    fn created(ledger: &mut Ledger, n: u32) -> Key {
        let k = key(n);
        ledger.create_sent(k.clone(), "r".into(), format!("{{\"n\":{n}}}"));
        ledger.create_answered(&k, Answer::Acked);
        k
    }

    fn check(ledger: &Ledger, found: Vec<(Key, Found)>) -> (Tally, Vec<String>) {
        let mut problems = Vec::new();
        let tally = ledger.check(&found.into_iter().collect(), &mut problems);
        (tally, problems)
    }

    #[test]
    fn an_acknowledged_create_found_unchanged_is_clean() {
        let mut ledger = Ledger::default();
        let k = created(&mut ledger, 1);
        let (tally, problems) = check(&ledger, vec![(k, stored("{\"n\":1}", None))]);
        assert_eq!((tally.creates_acked, tally.creates_found, tally.creates_lost), (1, 1, 0));
        assert!(tally.is_clean() && problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn an_acknowledged_create_that_is_missing_or_changed_is_lost() {
        let mut ledger = Ledger::default();
        let a = created(&mut ledger, 1);
        let b = created(&mut ledger, 2);
        let (tally, problems) = check(&ledger, vec![(a, Found::Missing), (b, stored("{\"n\":3}", None))]);
        assert_eq!((tally.creates_lost, tally.creates_changed, tally.creates_found), (1, 1, 0));
        assert!(!tally.is_clean());
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn an_unanswered_create_may_or_may_not_be_stored() {
        let mut ledger = Ledger::default();
        let (a, b) = (key(1), key(2));
        ledger.create_sent(a.clone(), "r".into(), "{\"n\":1}".into());
        ledger.create_sent(b.clone(), "r".into(), "{\"n\":2}".into());
        ledger.settle();
        let (tally, _) = check(&ledger, vec![(a, stored("{\"n\":1}", None)), (b, Found::Missing)]);
        assert_eq!((tally.creates_unanswered_stored, tally.creates_unanswered_absent), (1, 1));
        assert!(tally.is_clean());
        assert_eq!(ledger.pending_len(), 0, "only acknowledged creates are decided");
    }

    #[test]
    fn a_create_refused_with_an_error_but_stored_is_reported() {
        let mut ledger = Ledger::default();
        let k = key(1);
        ledger.create_sent(k.clone(), "r".into(), "{}".into());
        ledger.create_answered(&k, Answer::Refused(503));
        let (tally, problems) = check(&ledger, vec![(k, stored("{}", None))]);
        assert_eq!(tally.creates_refused_but_stored, 1);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn the_acknowledged_decision_of_a_race_is_stored_and_the_other_got_409() {
        let mut ledger = Ledger::default();
        let k = created(&mut ledger, 1);
        let won = ledger.decision_sent(&k, approved("a"));
        let lost = ledger.decision_sent(&k, Decision::Rejected { comment: "b".into() });
        ledger.decision_answered(&k, won, Answer::Acked);
        ledger.decision_answered(&k, lost, Answer::Refused(409));
        let (tally, problems) = check(&ledger, vec![(k, stored("{\"n\":1}", Some(approved("a"))))]);
        assert_eq!((tally.decisions_acked, tally.decisions_found, tally.decisions_conflict_refused), (1, 1, 1));
        assert!(tally.is_clean(), "{problems:?}");
    }

    #[test]
    fn two_acknowledged_decisions_are_a_double_decision() {
        let mut ledger = Ledger::default();
        let k = created(&mut ledger, 1);
        for c in ["a", "b"] {
            let i = ledger.decision_sent(&k, approved(c));
            ledger.decision_answered(&k, i, Answer::Acked);
        }
        let (tally, _) = check(&ledger, vec![(k, stored("{\"n\":1}", Some(approved("b"))))]);
        assert_eq!((tally.double_decisions, tally.decisions_found, tally.decisions_lost), (1, 1, 1));
        assert!(!tally.is_clean());
    }

    #[test]
    fn a_stored_decision_that_got_409_is_a_double_decision() {
        let mut ledger = Ledger::default();
        let k = created(&mut ledger, 1);
        let i = ledger.decision_sent(&k, approved("a"));
        ledger.decision_answered(&k, i, Answer::Refused(409));
        let (tally, _) = check(&ledger, vec![(k, stored("{\"n\":1}", Some(approved("a"))))]);
        assert_eq!(tally.double_decisions, 1);
    }

    #[test]
    fn an_acknowledged_decision_on_a_pending_request_is_lost() {
        let mut ledger = Ledger::default();
        let k = created(&mut ledger, 1);
        let i = ledger.decision_sent(&k, approved("a"));
        ledger.decision_answered(&k, i, Answer::Acked);
        let (tally, problems) = check(&ledger, vec![(k, stored("{\"n\":1}", None))]);
        assert_eq!(tally.decisions_lost, 1);
        assert!(problems[0].contains("stored: pending"), "{problems:?}");
    }

    #[test]
    fn an_unanswered_decision_may_or_may_not_be_stored() {
        let mut ledger = Ledger::default();
        let (a, b) = (created(&mut ledger, 1), created(&mut ledger, 2));
        ledger.decision_sent(&a, approved("a"));
        ledger.decision_sent(&b, approved("b"));
        ledger.settle();
        let (tally, _) =
            check(&ledger, vec![(a, stored("{\"n\":1}", Some(approved("a")))), (b, stored("{\"n\":2}", None))]);
        assert_eq!((tally.decisions_unanswered_stored, tally.decisions_unanswered_absent), (1, 1));
        assert!(tally.is_clean());
    }

    #[test]
    fn a_decision_nobody_sent_is_a_phantom() {
        let mut ledger = Ledger::default();
        let k = created(&mut ledger, 1);
        let (tally, _) = check(&ledger, vec![(k, stored("{\"n\":1}", Some(approved("x"))))]);
        assert_eq!(tally.phantom_decisions, 1);
        assert!(!tally.is_clean());
    }

    #[test]
    fn a_decision_once_served_must_stay() {
        let mut ledger = Ledger::default();
        let k = created(&mut ledger, 1);
        ledger.decision_sent(&k, approved("a"));
        ledger.observed(&k, approved("a"));
        ledger.observed(&k, approved("a"));
        ledger.settle();
        let (tally, _) = check(&ledger, vec![(k.clone(), stored("{\"n\":1}", None))]);
        assert_eq!((tally.observed_decisions, tally.observed_lost), (1, 1));
        let (tally, _) = check(&ledger, vec![(k, stored("{\"n\":1}", Some(approved("a"))))]);
        assert_eq!(tally.observed_lost, 0);
    }

    #[test]
    fn acknowledged_escalations_must_be_stored() {
        let mut ledger = Ledger::default();
        let k = created(&mut ledger, 1);
        let i = ledger.escalation_sent(&k, "e1".into());
        ledger.escalation_answered(&k, i, Answer::Acked);
        ledger.escalation_sent(&k, "e2".into());
        ledger.settle();
        let mut s = Stored { run_id: "r".into(), spec: "{\"n\":1}".into(), decision: None, escalations: vec![] };
        let (tally, _) = check(&ledger, vec![(k.clone(), Found::Present(s.clone()))]);
        assert_eq!((tally.escalations_acked, tally.escalations_lost), (1, 1));
        s.escalations.push("e1".into());
        let (tally, _) = check(&ledger, vec![(k, Found::Present(s))]);
        assert_eq!((tally.escalations_found, tally.escalations_lost), (1, 0));
    }

    #[test]
    fn a_request_that_cannot_be_read_fails_the_check() {
        let mut ledger = Ledger::default();
        created(&mut ledger, 1);
        let (tally, problems) = check(&ledger, vec![]);
        assert_eq!(tally.unreadable, 1);
        assert!(!tally.is_clean(), "{problems:?}");
    }

    #[test]
    fn the_pending_pool_hands_out_each_request_once() {
        let mut ledger = Ledger::default();
        let a = created(&mut ledger, 1);
        let b = created(&mut ledger, 2);
        assert!(ledger.peek_pending(7).is_some());
        let mut taken = vec![ledger.take_pending(5).unwrap(), ledger.take_pending(5).unwrap()];
        taken.sort();
        assert_eq!(taken, vec![a, b]);
        assert_eq!(ledger.take_pending(0), None);
    }
}
