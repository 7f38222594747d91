//! Receipt signing keys: made on first start (one per installation, shared by instances on one
//! PostgreSQL), published as a JWK set, rotated by the CLI with the old key still published; and
//! `countersign receipt verify` accepting a valid receipt and refusing altered ones.

use crate::support::{TestServer, run_cli};
use countersign_receipt::{Claims, KeyPair, VERSION, args_sha256};
use serde_json::{Value, json};

/// The server's published receipt keys (checked to be cacheable).
pub async fn keys_json(s: &TestServer) -> Value {
    let answer = s.http.get(format!("http://{}/.well-known/countersign/keys.json", s.addr)).send().await.unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    assert!(answer.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    answer.json().await.unwrap()
}

fn claims(args: &Value) -> Claims {
    Claims {
        v: VERSION,
        project: "alpha".into(),
        kind: "function_call".into(),
        call_id: "r1".into(),
        run_id: "run".into(),
        function: Some("refund".into()),
        args_sha256: Some(args_sha256(args)),
        decision: "approved".into(),
        comment_sha256: None,
        decided_by: json!({"channel": "web", "email": "ada@example.com"}),
        decided_at: "2026-12-07T03:00:00.000000Z".into(),
        rule: None,
        kid: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_is_made_once_published_rotated_and_receipts_verify_from_the_cli() {
    let s = TestServer::start().await;
    let published = keys_json(&s).await;
    let keys = published["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{published}");
    let first = keys[0]["kid"].as_str().unwrap().to_owned();
    assert!(first.starts_with("cs-"));
    assert_eq!(
        (keys[0]["kty"].as_str(), keys[0]["crv"].as_str(), keys[0]["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(keys[0]["valid_until"], Value::Null);
    assert!(keys[0].get("d").is_none() && !published.to_string().contains("secret"), "no secret is published");

    // A receipt signed with the installation's key (as a decision's will be).
    let stored = s.store.current_signing_key().await.unwrap().unwrap();
    let pair = KeyPair::from_secret(&stored.secret);
    let args = json!({"amount": 50, "currency": "USD"});
    let receipt = pair.sign(&claims(&args));
    let dir = s.dir.path();
    let verify = |extra: &[&str], stdin: &str| {
        let mut argv = vec!["receipt", "verify"];
        argv.extend_from_slice(extra);
        run_cli(dir, &argv, &[], stdin)
    };
    let ok = verify(&[receipt.as_str(), "--args", r#"{"currency": "USD", "amount": 50}"#], "");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("arguments are the approved ones"));
    let other_args = verify(&[receipt.as_str(), "--args", r#"{"currency": "USD", "amount": 5000}"#], "");
    assert_eq!(other_args.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&other_args.stderr).contains("arguments differ"),
        "{}",
        String::from_utf8_lossy(&other_args.stderr)
    );
    let other_call = verify(&[receipt.as_str(), "--call-id", "r2"], "");
    assert_eq!(other_call.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other_call.stderr).contains("the receipt is for function_call \"r1\""));
    assert!(verify(&[receipt.as_str(), "--call-id", "r1"], "").status.success());
    let mut tampered = receipt.clone();
    tampered.replace_range(tampered.len() - 3.., "AAA");
    assert_eq!(verify(&[tampered.as_str()], "").status.code(), Some(1));
    let stranger = KeyPair::from_secret(&[3; 32]).sign(&claims(&args));
    let unknown = verify(&[stranger.as_str()], "");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not among the published keys"));
    // From standard input, with the keys from the server's URL, as JSON.
    let url = format!("http://{}/.well-known/countersign/keys.json", s.addr);
    let by_url = verify(&["-", "--keys", url.as_str(), "--json"], &receipt);
    assert!(by_url.status.success(), "{}", String::from_utf8_lossy(&by_url.stderr));
    let said: Value = serde_json::from_slice(&by_url.stdout).unwrap();
    assert_eq!(said["valid"], true);
    assert_eq!(said["receipt"]["call_id"], "r1");
    assert_eq!(verify(&[receipt.as_str(), "--args", "{not json"], "").status.code(), Some(2));

    // Rotation: a new current key; the old one stays published with valid_until, and its
    // receipts still verify.
    let rotated = run_cli(dir, &["receipts", "rotate-key", "--json"], &[], "");
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let rotated: Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(rotated["rotated_out"], first);
    let published = keys_json(&s).await;
    let keys = published["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{published}");
    assert_eq!(keys[0]["kid"], first.as_str());
    assert!(keys[0]["valid_until"].is_string());
    assert_eq!(keys[1]["kid"], rotated["current"]);
    assert_eq!(keys[1]["valid_until"], Value::Null);
    assert!(verify(&[receipt.as_str()], "").status.success(), "an old receipt still verifies");
    let listed = run_cli(dir, &["receipts", "keys"], &[], "");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("rotated out") && listed.contains("current"), "{listed}");
}

/// Instances on one database agree on one key, whoever starts first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_database_share_one_signing_key() {
    let s = TestServer::start().await;
    if std::env::var_os("COUNTERSIGN_TEST_DATABASE_URL").is_none() {
        // One SQLite file is one installation: a restart keeps the key.
        let before = keys_json(&s).await;
        let again = s.restart().await;
        assert_eq!(keys_json(&again).await, before);
        return;
    }
    let other = s.another_instance().await;
    assert_eq!(keys_json(&s).await, keys_json(&other).await);
    assert_eq!(keys_json(&s).await["keys"].as_array().unwrap().len(), 1);
    // A round trip across them: asked on one, decided on the other, read back on the first;
    // the receipt verifies with the keys either publishes, and the call starts once.
    let args = json!({"amount": 75, "currency": "EUR"});
    let call = json!({"run_id": "run-i", "call_id": "i1", "spec": {"fn": "refund", "kwargs": args}});
    assert_eq!(s.post("/function_calls", call).await.0, reqwest::StatusCode::OK);
    let (status, decided) = other.post("/agent/function_calls/i1/respond", json!({"approved": true})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{decided}");
    let (_, read) = s.get("/function_calls/i1?wait=5").await;
    let receipt = read["status"]["receipt"].as_str().unwrap_or_else(|| panic!("no receipt: {read}"));
    let stated =
        countersign_receipt::verify(receipt, &countersign_receipt::PublicKey::from_jwks(&keys_json(&other).await))
            .unwrap();
    stated.check_call("function_call", "i1", &args).unwrap();
    assert_eq!(receipt, decided["status"]["receipt"].as_str().unwrap(), "both instances sign the same statement");
    assert_eq!(
        other.post("/function_calls/i1/execution", json!({"state": "started"})).await.0,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        s.post("/function_calls/i1/execution", json!({"state": "started"})).await.0,
        reqwest::StatusCode::CONFLICT
    );
}

/// Every decision shown carries a receipt that verifies with the published keys and states the
/// exact call: the arguments approved (the edited ones when edited), a rejection, an expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_carry_receipts_over_the_exact_arguments() {
    use countersign_receipt::{PublicKey, verify};
    let s = TestServer::start().await;
    let keys = PublicKey::from_jwks(&keys_json(&s).await);
    let call = |id: &str| json!({"run_id": "run-r", "call_id": id, "spec": {"fn": "refund", "kwargs": {"amount": 50, "currency": "USD"}}});
    for id in ["a1", "a2", "a3"] {
        let (status, created) = s.post("/function_calls", call(id)).await;
        assert_eq!(status, reqwest::StatusCode::OK);
        assert!(created["status"].get("receipt").is_none(), "no receipt while pending: {created}");
    }
    s.post("/agent/function_calls/a1/respond", json!({"approved": true, "comment": "fine"})).await;
    s.post(
        "/agent/function_calls/a2/respond",
        json!({"approved": true, "updated_kwargs": {"amount": 40, "currency": "USD"}}),
    )
    .await;
    s.post("/agent/function_calls/a3/respond", json!({"approved": false, "comment": "no"})).await;

    let receipt_of =
        |fc: &Value| fc["status"]["receipt"].as_str().unwrap_or_else(|| panic!("no receipt: {fc}")).to_owned();
    let (_, a1) = s.get("/function_calls/a1").await;
    let stated = verify(&receipt_of(&a1), &keys).unwrap();
    assert_eq!(
        (stated.kind.as_str(), stated.call_id.as_str(), stated.run_id.as_str()),
        ("function_call", "a1", "run-r")
    );
    assert_eq!(stated.function.as_deref(), Some("refund"));
    assert_eq!(stated.decision, "approved");
    assert_eq!(stated.comment_sha256, Some(countersign_receipt::text_sha256("fine")));
    assert_eq!(stated.decided_by["channel"], "api");
    assert_eq!(stated.decided_at, a1["status"]["responded_at"].as_str().unwrap());
    assert!(stated.check_call("function_call", "a1", &json!({"currency": "USD", "amount": 50})).is_ok());
    assert!(stated.check_args(&json!({"currency": "USD", "amount": 51})).is_err());
    assert_eq!(receipt_of(&s.get("/function_calls/a1").await.1), receipt_of(&a1), "the same receipt every time");

    let (_, a2) = s.get("/function_calls/a2").await;
    let edited = verify(&receipt_of(&a2), &keys).unwrap();
    assert!(
        edited.check_args(&json!({"amount": 40, "currency": "USD"})).is_ok(),
        "the edited arguments are the approved ones"
    );
    assert!(edited.check_args(&json!({"amount": 50, "currency": "USD"})).is_err());

    let (_, a3) = s.get("/function_calls/a3").await;
    let rejected = verify(&receipt_of(&a3), &keys).unwrap();
    assert_eq!(rejected.decision, "rejected");
    assert!(rejected.check_call("function_call", "a3", &json!({"amount": 50, "currency": "USD"})).is_err());

    // A question's answer too.
    s.post("/contact_requests", json!({"run_id": "run-r", "call_id": "q1", "spec": {"msg": "colour?"}})).await;
    s.post("/agent/human_contacts/q1/respond", json!({"response": "blue"})).await;
    let (_, q1) = s.get("/contact_requests/q1").await;
    let answered = verify(&receipt_of(&q1), &keys).unwrap();
    assert_eq!((answered.decision.as_str(), answered.args_sha256.as_deref()), ("answered", None));
    assert_eq!(answered.comment_sha256, Some(countersign_receipt::text_sha256("blue")));

    // The CLI verifies what the API returned.
    let out = run_cli(
        s.dir.path(),
        &["receipt", "verify", &receipt_of(&a1), "--args", r#"{"amount": 50, "currency": "USD"}"#],
        &[],
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
