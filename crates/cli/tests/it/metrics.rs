//! `/metrics` through the real binary (the metrics recorder is one per process, so each server
//! here is a process of its own): off by default, behind a token on the main address or open on
//! its own address, the figures it reports after real traffic, and the Grafana dashboard naming
//! only metrics that exist.

use crate::binary::{Served, countersign, database, fresh_dir, stdout};
use countersign_server::metrics::METRICS;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const TOKEN: &str = "metrics-token-0123456789";

/// One sample of the text exposition: the metric name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').unwrap()),
                None => (series, ""),
            };
            let mut map = BTreeMap::new();
            // Label values here hold no `",` (routes, names, channels).
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair:?}: {line}"));
                map.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
            Sample { name: name.to_owned(), labels: map, value }
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// The metric a sample belongs to (a histogram's `_bucket`, `_sum` and `_count` are its own).
fn family(sample_name: &str) -> &str {
    let known = |n: &str| METRICS.iter().any(|m| m.0 == n);
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample_name.strip_suffix(suffix)
            && known(base)
        {
            return base;
        }
    }
    sample_name
}

async fn scrape(http: &reqwest::Client, url: &str) -> (String, Vec<Sample>) {
    let res = http.get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200, "{url}");
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let dir = fresh_dir().await;
    let server = Served::start(dir.path());
    let http = crate::support::client();
    let res = http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("metrics_token"), "says how to turn them on: {body}");
    assert!(server.terminate().success());

    let short = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", &database(dir.path())])
        .env("COUNTERSIGN_METRICS_TOKEN", "short")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16 characters"), "{short:?}");
}

#[tokio::test]
async fn metrics_report_traffic_decisions_waiters_and_queues() {
    let dir = fresh_dir().await;
    let key = stdout(&countersign(dir.path(), &["keys", "create", "--project", "metered"]))
        .lines()
        .last()
        .unwrap()
        .to_owned();
    // A webhook endpoint nobody listens on: its deliveries fail and wait in the queue.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let added = Command::new(BIN)
        .args(["webhooks", "add", &dead, "--project", "metered", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", &database(dir.path())])
        .env("COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let server = Served::start_with(
        dir.path(),
        &[
            ("COUNTERSIGN_METRICS_TOKEN", TOKEN),
            ("COUNTERSIGN_METRICS_LISTEN", "127.0.0.1:0"),
            ("COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true"),
        ],
        Stdio::inherit(),
    );
    let open_addr = server
        .banner()
        .iter()
        .find_map(|l| l.strip_prefix("Metrics on http://")?.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("the banner names the metrics address: {:?}", server.banner()))
        .to_owned();
    let http = crate::support::client();

    // The token guards /metrics on the main address.
    let none = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = http.get(server.url("/metrics")).bearer_auth("metrics-token-0123456780").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    // The metrics address serves nothing else.
    assert_eq!(http.get(format!("http://{open_addr}/humanlayer/v1/project")).send().await.unwrap().status(), 404);

    let api = |path: &str| server.url(&format!("/humanlayer/v1{path}"));
    for call in ["m1", "m2", "m3"] {
        let body = json!({"run_id": "r", "call_id": call, "spec": {"fn": "pay", "kwargs": {"n": 1}}});
        let res = http.post(api("/function_calls")).bearer_auth(&key).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let question = json!({"run_id": "r", "call_id": "q1", "spec": {"msg": "which colour?"}});
    assert_eq!(
        http.post(api("/contact_requests")).bearer_auth(&key).json(&question).send().await.unwrap().status(),
        200
    );
    let missing = http.get(api("/function_calls/nope")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    // A long-poll waits while the scrape is taken.
    let waiting = {
        let (http, url, key) = (http.clone(), api("/function_calls/m3?wait=30"), key.clone());
        tokio::spawn(async move { http.get(url).bearer_auth(key).send().await.unwrap().status() })
    };
    let decided = http
        .post(api("/agent/function_calls/m1/respond"))
        .bearer_auth(&key)
        .json(&json!({"approved": true}))
        .send()
        .await;
    assert_eq!(decided.unwrap().status(), 200);
    let rejected = json!({"approved": false, "comment": "no"});
    let decided = http.post(api("/agent/function_calls/m2/respond")).bearer_auth(&key).json(&rejected).send().await;
    assert_eq!(decided.unwrap().status(), 200);

    // Wait until the long-poll is parked and a webhook attempt has failed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, samples) = loop {
        let (text, samples) = scrape(&http, &server.url("/metrics")).await;
        let parked = value(&samples, "countersign_long_polls_open", &[]) >= 1.0;
        let retried =
            value(&samples, "countersign_delivery_attempts_total", &[("channel", "webhook"), ("outcome", "retry")])
                >= 1.0;
        if parked && retried {
            break (text, samples);
        }
        assert!(Instant::now() < deadline, "no parked long-poll or failed webhook attempt in time:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fc = [("project", "metered"), ("kind", "function_call")];
    assert_eq!(value(&samples, "countersign_pending_requests", &fc), 1.0, "m3 is pending:\n{text}");
    assert_eq!(
        value(&samples, "countersign_pending_requests", &[("project", "metered"), ("kind", "human_contact")]),
        1.0
    );
    assert_eq!(value(&samples, "countersign_long_polls_open", &[]), 1.0);
    assert_eq!(value(&samples, "countersign_decisions_total", &[("channel", "api"), ("decision", "approved")]), 1.0);
    assert_eq!(value(&samples, "countersign_decisions_total", &[("channel", "api"), ("decision", "rejected")]), 1.0);
    let creates = [("route", "/humanlayer/v1/function_calls"), ("method", "POST"), ("status", "200")];
    assert_eq!(value(&samples, "countersign_http_requests_total", &creates), 3.0, "{text}");
    let reads = [("route", "/humanlayer/v1/function_calls/{call_id}"), ("method", "GET"), ("status", "404")];
    assert_eq!(value(&samples, "countersign_http_requests_total", &reads), 1.0, "{text}");
    let timed = [("route", "/humanlayer/v1/function_calls"), ("method", "POST")];
    assert_eq!(value(&samples, "countersign_http_request_duration_seconds_count", &timed), 3.0);
    assert!(value(&samples, "countersign_http_request_duration_seconds_sum", &timed) > 0.0);
    assert!(value(&samples, "countersign_delivery_queue_depth", &[("channel", "webhook")]) >= 1.0, "{text}");
    assert!(value(&samples, "countersign_delivery_queue_oldest_age_seconds", &[("channel", "webhook")]) > 0.0);
    // SQLite commits every request write in groups; PostgreSQL groups the creates.
    let batches = value(&samples, "countersign_store_commit_batch_size_count", &[]);
    let sum = value(&samples, "countersign_store_commit_batch_size_sum", &[]);
    if database(dir.path()).starts_with("sqlite") {
        assert!(batches >= 6.0, "every write committed: {text}");
    } else {
        assert!(batches >= 1.0 && sum >= 3.0, "every create committed: {text}");
    }
    assert_eq!(value(&samples, "countersign_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    let known: HashSet<&str> = METRICS.iter().map(|m| m.0).collect();
    for sample in &samples {
        assert!(known.contains(family(&sample.name)), "{} is not in METRICS", sample.name);
    }

    // The open address shows the same figures; the long-poll ends with the decision.
    let decided = http
        .post(api("/agent/function_calls/m3/respond"))
        .bearer_auth(&key)
        .json(&json!({"approved": true}))
        .send()
        .await;
    assert_eq!(decided.unwrap().status(), 200);
    assert_eq!(waiting.await.unwrap(), 200);
    let (text, samples) = scrape(&http, &format!("http://{open_addr}/metrics")).await;
    assert_eq!(value(&samples, "countersign_long_polls_open", &[]), 0.0, "{text}");
    assert_eq!(value(&samples, "countersign_pending_requests", &fc), 0.0, "nothing pending is 0, not stale: {text}");
    assert_eq!(value(&samples, "countersign_decisions_total", &[("channel", "api"), ("decision", "approved")]), 2.0);
    assert!(server.terminate().success());
}

#[test]
fn the_grafana_dashboard_names_only_metrics_that_exist() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/grafana/countersign.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let known: HashSet<&str> = METRICS.iter().map(|m| m.0).collect();
    let mut used = HashSet::new();
    let mut ids = HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("each panel has a title");
        assert!(ids.insert(panel["id"].as_u64().expect("an id")), "panel ids are unique");
        assert!(
            panel["type"].is_string() && panel["gridPos"]["w"].is_u64() && panel["gridPos"]["h"].is_u64(),
            "{title}"
        );
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: expr"));
            assert!(target["refId"].is_string(), "{title}");
            assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "{title}: {expr}");
            let mut rest = expr;
            while let Some(at) = rest.find("countersign_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                assert!(known.contains(family(&name)), "{title}: {name} is not a metric the server has");
                used.insert(family(&name).to_owned());
                rest = &rest[at + name.len()..];
            }
        }
    }
    let unused: Vec<_> = known.iter().filter(|m| !used.contains(**m)).collect();
    assert!(unused.is_empty(), "every metric has a panel; missing: {unused:?}");
}
