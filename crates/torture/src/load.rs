//! The mixed load: workers that create function calls and human contacts, decide them (some
//! twice at once, with conflicting decisions, on different instances), escalate them and read
//! them, plus long-polls waiting on pending requests. Every write is entered in the ledger before
//! it is sent and marked with its answer after; every decision a read shows is noted.

use crate::http::{Api, Reply, Stats, Target};
use crate::ledger::{Answer, Ledger};
use crate::request::{Decision, Key, Kind, create_body, parse_stored};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How hard to push.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Concurrent workers (each one request at a time).
    pub workers: usize,
    /// Operations per second over all workers (0: as fast as they go).
    pub rate: f64,
    /// Concurrent long-polls.
    pub long_polls: usize,
    /// `?wait=` of each long-poll, in seconds.
    pub long_poll_wait: u32,
    /// Our give-up time for one request (a long-poll gets its wait on top).
    pub timeout: Duration,
}

/// The operations and their weights.
#[derive(Clone, Copy, Debug)]
enum Op {
    CreateCall,
    CreateContact,
    Decide,
    Race,
    Escalate,
    GetPending,
    GetDecided,
}

const OPS: [(Op, u32); 7] = [
    (Op::CreateCall, 24),
    (Op::CreateContact, 12),
    (Op::Decide, 26),
    (Op::Race, 6),
    (Op::Escalate, 10),
    (Op::GetPending, 12),
    (Op::GetDecided, 10),
];

/// What the load shares across cycles: the ledger, the counts, the ids.
#[derive(Clone)]
pub struct Load {
    pub api: Api,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stats: Stats,
    run_id: Arc<str>,
    next_id: Arc<AtomicU64>,
    /// The cycle number, written into every spec's state.
    pub cycle: Arc<AtomicU32>,
}

/// A load in progress; [`Running::stop`] ends it.
pub struct Running {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn new(api: Api, run_id: &str) -> Self {
        Self {
            api,
            ledger: Arc::default(),
            stats: Stats::default(),
            run_id: run_id.into(),
            next_id: Arc::default(),
            cycle: Arc::default(),
        }
    }

    /// Starts the workers and long-polls against `targets` (each op picks one at random).
    pub fn start(&self, targets: &[Target], config: &LoadConfig) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let targets: Arc<[Target]> = targets.into();
        let mut tasks = Vec::new();
        let interval =
            if config.rate > 0.0 { Some(Duration::from_secs_f64(config.workers as f64 / config.rate)) } else { None };
        for _ in 0..config.workers {
            let worker = Worker {
                load: self.clone(),
                targets: targets.clone(),
                rng: StdRng::from_os_rng(),
                timeout: config.timeout,
            };
            tasks.push(tokio::spawn(worker.run(stop.clone(), interval)));
        }
        for _ in 0..config.long_polls {
            let worker = Worker {
                load: self.clone(),
                targets: targets.clone(),
                rng: StdRng::from_os_rng(),
                timeout: config.timeout,
            };
            tasks.push(tokio::spawn(worker.long_polls(stop.clone(), config.long_poll_wait)));
        }
        Running { stop, tasks }
    }
}

impl Running {
    /// Tells every task to stop after its current request; tasks still busy after `grace` are
    /// aborted (their writes stay unanswered). Call [`Ledger::settle`] afterwards.
    pub async fn stop(self, grace: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

struct Worker {
    load: Load,
    targets: Arc<[Target]>,
    rng: StdRng,
    timeout: Duration,
}

impl Worker {
    async fn run(mut self, stop: Arc<AtomicBool>, interval: Option<Duration>) {
        let mut next = Instant::now();
        let total: u32 = OPS.iter().map(|(_, w)| w).sum();
        while !stop.load(Ordering::SeqCst) {
            if let Some(interval) = interval {
                next += interval;
                let now = Instant::now();
                if next + Duration::from_secs(1) < now {
                    next = now;
                }
                if next > now {
                    tokio::time::sleep(next - now).await;
                }
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            let mut pick = self.rng.random_range(0..total);
            let op = OPS
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map(|(op, _)| *op)
                .unwrap_or(Op::CreateCall);
            self.step(op).await;
        }
    }

    fn target(&mut self) -> Target {
        self.targets[self.rng.random_range(0..self.targets.len())].clone()
    }

    fn pick(&mut self) -> usize {
        self.rng.random_range(0..usize::MAX)
    }

    fn next_id(&self) -> u64 {
        self.load.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn step(&mut self, op: Op) {
        match op {
            Op::CreateCall => self.create(Kind::FunctionCall).await,
            Op::CreateContact => self.create(Kind::HumanContact).await,
            Op::Decide | Op::Race => {
                let pick = self.pick();
                let key = self.load.ledger.lock().unwrap().take_pending(pick);
                match key {
                    Some(key) if matches!(op, Op::Race) => self.race(key).await,
                    Some(key) => {
                        let approve = self.rng.random_bool(0.7);
                        let target = self.target();
                        self.decide(&key, approve, &target).await;
                    }
                    None => self.create(Kind::FunctionCall).await,
                }
            }
            Op::Escalate => {
                let pick = self.pick();
                let key = self.load.ledger.lock().unwrap().peek_pending(pick);
                if let Some(key) = key {
                    self.escalate(&key).await;
                }
            }
            Op::GetPending | Op::GetDecided => {
                let pick = self.pick();
                let key = {
                    let ledger = self.load.ledger.lock().unwrap();
                    if matches!(op, Op::GetPending) { ledger.peek_pending(pick) } else { ledger.peek_decided(pick) }
                };
                if let Some(key) = key {
                    let target = self.target();
                    let started = self.load.stats.start();
                    let reply = self.load.api.send(&target, Method::GET, &key.get_path(), None, self.timeout).await;
                    self.load.stats.record("get", &reply, &started);
                    self.observe(&key, &reply);
                }
            }
        }
    }

    async fn create(&mut self, kind: Kind) {
        let n = self.next_id();
        let prefix = match kind {
            Kind::FunctionCall => "fc",
            Kind::HumanContact => "hc",
        };
        let key = Key { kind, call_id: format!("{prefix}-{}-{n}", self.load.run_id) };
        let cycle = self.load.cycle.load(Ordering::Relaxed);
        let (spec, body) = create_body(&key, &self.load.run_id, n, cycle);
        self.load.ledger.lock().unwrap().create_sent(key.clone(), self.load.run_id.to_string(), spec);
        let target = self.target();
        let started = self.load.stats.start();
        let reply = self.load.api.send(&target, Method::POST, &key.create_path(), Some(&body), self.timeout).await;
        let op = match kind {
            Kind::FunctionCall => "create function call",
            Kind::HumanContact => "create human contact",
        };
        self.load.stats.record(op, &reply, &started);
        self.load.ledger.lock().unwrap().create_answered(&key, answer_of(&reply));
    }

    async fn decide(&mut self, key: &Key, approve: bool, target: &Target) {
        let decision = Decision::for_kind(key.kind, approve, &format!("d{}", self.next_id()));
        let reply = self.send_decision(key, decision, target, "decide").await;
        self.observe(key, &reply);
    }

    async fn send_decision(&self, key: &Key, decision: Decision, target: &Target, op: &str) -> Reply {
        let body = decision.body();
        let index = self.load.ledger.lock().unwrap().decision_sent(key, decision);
        let started = self.load.stats.start();
        let reply = self.load.api.send(target, Method::POST, &key.respond_path(), Some(&body), self.timeout).await;
        self.load.stats.record(op, &reply, &started);
        self.load.ledger.lock().unwrap().decision_answered(key, index, answer_of(&reply));
        reply
    }

    /// Two conflicting decisions on one request at once, each to a random instance: one must
    /// win, the other get 409.
    async fn race(&mut self, key: Key) {
        let (a, b) = (self.target(), self.target());
        let first = Decision::for_kind(key.kind, true, &format!("race{}", self.next_id()));
        let second = Decision::for_kind(key.kind, false, &format!("race{}", self.next_id()));
        let (ra, rb) = tokio::join!(
            self.send_decision(&key, first, &a, "race decide"),
            self.send_decision(&key, second, &b, "race decide")
        );
        let wins = [&ra, &rb].iter().filter(|r| r.is_success()).count();
        let refused = [&ra, &rb].iter().filter(|r| r.status() == Some(409)).count();
        let label = match (wins, refused) {
            (1, 1) => "one won, one 409",
            (2, _) => "BOTH WON",
            (0, 2) => "both 409",
            _ => "other (errors or no answer)",
        };
        self.load.stats.record_label("race outcome", label);
        self.observe(&key, &ra);
        self.observe(&key, &rb);
    }

    async fn escalate(&mut self, key: &Key) {
        let message = format!("escalation {}", self.next_id());
        // An escalation needs someone to go to; no SMTP is configured, so nothing is sent.
        let body = json!({"escalation_msg": message, "channel": {"email": {"address": "lead@example.invalid"}}});
        let index = self.load.ledger.lock().unwrap().escalation_sent(key, message);
        let target = self.target();
        let started = self.load.stats.start();
        let reply = self.load.api.send(&target, Method::POST, &key.escalate_path(), Some(&body), self.timeout).await;
        self.load.stats.record("escalate", &reply, &started);
        self.load.ledger.lock().unwrap().escalation_answered(key, index, answer_of(&reply));
        self.observe(key, &reply);
    }

    /// Notes a decision a 2xx answer showed, or a 404 for an acknowledged request.
    fn observe(&self, key: &Key, reply: &Reply) {
        if reply.status() == Some(404) {
            self.load.ledger.lock().unwrap().read_missing(key);
            return;
        }
        if !reply.is_success() {
            return;
        }
        if let Some(Ok(stored)) = reply.json().map(|v| parse_stored(key.kind, &v))
            && let Some(decision) = stored.decision
        {
            self.load.ledger.lock().unwrap().observed(key, decision);
        }
    }

    async fn long_polls(mut self, stop: Arc<AtomicBool>, wait: u32) {
        while !stop.load(Ordering::SeqCst) {
            let pick = self.pick();
            let key = self.load.ledger.lock().unwrap().peek_pending(pick);
            let Some(key) = key else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let target = self.target();
            let started = self.load.stats.start();
            let path = format!("{}?wait={wait}", key.get_path());
            let timeout = self.timeout + Duration::from_secs(u64::from(wait));
            let reply = self.load.api.send(&target, Method::GET, &path, None, timeout).await;
            self.load.stats.record("long-poll", &reply, &started);
            self.observe(&key, &reply);
            if !reply.is_success() {
                // A dead or failing server: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A write's answer as the ledger keeps it.
pub fn answer_of(reply: &Reply) -> Answer {
    match reply {
        Reply::Answer { status, .. } if (200..300).contains(status) => Answer::Acked,
        Reply::Answer { status, .. } => Answer::Refused(*status),
        Reply::NoAnswer(_) => Answer::Unknown,
    }
}
