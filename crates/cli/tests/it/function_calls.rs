//! Approvals: create, read, decide, escalate, list; the rules of the HumanLayer contract.

use crate::support::{TestServer, approval, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The exact body the Python SDK sends (every field, nulls included).
fn python_body(call_id: &str) -> Value {
    json!({"run_id": "my-agent-Aw5Xj", "call_id": call_id,
        "spec": {"fn": "multiply", "kwargs": {"x": 2, "y": 5}, "channel": {"slack": {"channel_or_user_id": "C1",
            "context_about_channel_or_user": "the ops team", "bot_token": null, "allowed_responder_ids": null,
            "experimental_slack_blocks": true, "thread_ts": null}, "sms": null, "whatsapp": null, "email": null},
            "reject_options": [{"name": "later", "title": "Later", "description": null, "prompt_fill": "try again tomorrow", "interactive": false}],
            "state": {"step": 3, "history": [{"role": "user", "content": "hi"}], "z": null, "n": 1.5}},
        "status": {"approved": true, "comment": "clients may not decide at create"}})
}

#[tokio::test]
async fn create_returns_pending_with_the_spec_verbatim() {
    let s = TestServer::start().await;
    let body = python_body("call-1");
    let (status, created) = s.post("/function_calls", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["spec"], body["spec"]);
    assert_eq!(
        serde_json::to_string(&created["spec"]).unwrap(),
        serde_json::to_string(&body["spec"]).unwrap(),
        "key order kept"
    );
    assert_eq!(created["run_id"], "my-agent-Aw5Xj");
    assert_eq!(created["status"]["approved"], Value::Null, "a client-sent status is ignored");
    assert!(created["status"]["requested_at"].as_str().unwrap().ends_with('Z'));
    let (status, fetched) = s.get("/function_calls/call-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn approve_then_get_shows_the_decision_and_who_made_it() {
    let s = TestServer::start().await;
    s.post("/function_calls", approval("c1")).await;
    let (status, decided) =
        s.post("/agent/function_calls/c1/respond", json!({"approved": true, "comment": "go"})).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["status"]["approved"], true);
    assert_eq!(decided["status"]["comment"], "go");
    assert_eq!(decided["status"]["user_info"]["channel"], "api");
    assert!(decided["status"]["user_info"]["api_key"].as_str().unwrap().starts_with("cs_"));
    assert!(decided["status"]["responded_at"].is_string());
    let (_, fetched) = s.get("/function_calls/c1").await;
    assert_eq!(fetched, decided);
}

#[tokio::test]
async fn rejections_store_a_string_comment() {
    let s = TestServer::start().await;
    s.post("/function_calls", python_body("plain")).await;
    let (status, r) = s.post("/agent/function_calls/plain/respond", json!({"approved": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["status"]["comment"], "", "no comment is stored as an empty string, never null");
    assert_eq!(r["status"]["approved"], false);

    s.post("/function_calls", python_body("opt")).await;
    let python_status = json!({"requested_at": null, "responded_at": null, "approved": false, "comment": null,
        "reject_option_name": "later", "slack_message_ts": null});
    let (status, r) = s.post("/agent/function_calls/opt/respond", python_status).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["status"]["reject_option_name"], "later");
    assert_eq!(r["status"]["comment"], "try again tomorrow", "the option's prompt_fill fills an absent comment");
}

#[tokio::test]
async fn bad_decisions_are_refused_and_change_nothing() {
    let s = TestServer::start().await;
    s.post("/function_calls", python_body("c")).await;
    let cases = [
        (json!({"comment": "x"}), "approved"),
        (json!({"approved": null}), "approved"),
        (json!({"approved": "yes"}), "approved"),
        (json!({"approved": false, "reject_option_name": "nope"}), "reject_option_name"),
        (json!({"approved": true, "reject_option_name": "later"}), "reject_option_name"),
    ];
    for (body, field) in cases {
        let got = s.post("/agent/function_calls/c/respond", body).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", field);
    }
    let (_, still) = s.get("/function_calls/c").await;
    assert_eq!(still["status"]["approved"], Value::Null);
}

#[tokio::test]
async fn the_first_response_wins_and_later_ones_get_409() {
    let s = TestServer::start().await;
    s.post("/function_calls", approval("c")).await;
    let (status, first) = s.post("/agent/function_calls/c/respond", json!({"approved": false, "comment": "no"})).await;
    assert_eq!(status, StatusCode::OK);
    let got = s.post("/agent/function_calls/c/respond", json!({"approved": true})).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", "already has a response: rejected");
    let (_, stored) = s.get("/function_calls/c").await;
    assert_eq!(stored, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_responders_produce_exactly_one_decision() {
    let s = std::sync::Arc::new(TestServer::start().await);
    for round in 0..5 {
        let id = format!("race-{round}");
        s.post("/function_calls", approval(&id)).await;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (s, id) = (s.clone(), id.clone());
                tokio::spawn(async move {
                    let body = json!({"approved": i % 2 == 0, "comment": format!("responder {i}")});
                    s.post(&format!("/agent/function_calls/{id}/respond"), body).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            match status {
                StatusCode::OK => winners.push(body),
                StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "conflict"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one responder wins");
        let (_, stored) = s.get(&format!("/function_calls/{id}")).await;
        assert_eq!(stored, winners[0], "the stored decision is the winner's");
    }
}

/// Creates arrive together, so they are committed in groups (SQLite's writer, PostgreSQL's
/// batches): repeats of one `call_id` inside a group, and a different body under it, must still
/// come out as one request with one `created` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_committed_together_keep_each_call_id_once() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let tasks: Vec<_> = (0..96)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                // 32 distinct ids, each sent three times: twice alike, once with other arguments.
                let id = format!("group-{}", i % 32);
                let body = if i >= 64 {
                    json!({"run_id": "r", "call_id": id, "spec": {"fn": "other", "kwargs": {}}})
                } else {
                    approval(&id)
                };
                (i, s.post("/function_calls", body).await)
            })
        })
        .collect();
    let mut stored = std::collections::HashMap::new();
    for task in tasks {
        let (i, (status, body)) = task.await.unwrap();
        let id = format!("group-{}", i % 32);
        match status {
            StatusCode::OK => {
                assert_eq!(body["call_id"], id.as_str(), "{body}");
                assert_eq!(body["spec"]["fn"], if i >= 64 { "other" } else { "send_email" }, "{body}");
                let first = stored.entry(id).or_insert_with(|| body.clone());
                assert_eq!(*first, body, "every success for one call_id shows the same request");
            }
            StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "conflict", "{body}"),
            other => panic!("create {i}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(stored.len(), 32);
    let log = crate::audit::sealed_log(&s, &s.key, 32).await;
    let created: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["event"].as_str().unwrap()).unwrap())
        .filter(|event| event["type"] == "created")
        .map(|event| event["call_id"].as_str().unwrap().to_owned())
        .collect();
    let distinct: std::collections::HashSet<&String> = created.iter().collect();
    assert_eq!((created.len(), distinct.len()), (32, 32), "one created event per call_id: {log}");
}

#[tokio::test]
async fn repeating_a_create_is_safe_and_a_different_body_conflicts() {
    let s = TestServer::start().await;
    let (_, first) = s.post("/function_calls", python_body("same")).await;
    let (status, again) = s.post("/function_calls", python_body("same")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first, "an identical retry returns the stored object");

    // The TypeScript SDK omits what Python sends as null: still the same request.
    let ts = json!({"run_id": "r", "call_id": "ts", "spec": {"fn": "f", "kwargs": {"a": 1}}});
    let py = json!({"run_id": "r", "call_id": "ts", "spec": {"fn": "f", "kwargs": {"a": 1}, "channel": null, "reject_options": null, "state": null}, "status": null});
    assert_eq!(s.post("/function_calls", ts).await.0, StatusCode::OK);
    assert_eq!(s.post("/function_calls", py).await.0, StatusCode::OK);

    let mut different = python_body("same");
    different["spec"]["kwargs"]["x"] = json!(3);
    let got = s.post("/function_calls", different).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", "already exists");
    let mut other_run = python_body("same");
    other_run["run_id"] = json!("another-run");
    assert_error(&s.post("/function_calls", other_run).await, StatusCode::CONFLICT, "conflict", "call_id");
    let (_, stored) = s.get("/function_calls/same").await;
    assert_eq!(stored, first, "the stored object is unchanged");
}

#[tokio::test]
async fn escalations_are_recorded_on_pending_requests_only() {
    let s = TestServer::start().await;
    s.post("/function_calls", approval("esc")).await;
    let escalation = json!({"escalation_msg": "urgent, please look",
        "additional_recipients": [{"address": "boss@example.com", "context_about_user": null, "field": "to"}],
        "channel": {"slack": null, "sms": null, "whatsapp": null, "email": {"address": "ceo@example.com"}}});
    let (status, r) = s.post("/agent/function_calls/esc/escalate_email", escalation.clone()).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["status"]["approved"], Value::Null, "escalating does not decide");
    assert_eq!(r["spec"], approval("esc")["spec"], "the spec is unchanged");
    let recorded = &r["escalations"][0];
    assert_eq!(recorded["escalation_msg"], "urgent, please look");
    assert_eq!(recorded["channel"]["email"]["address"], "ceo@example.com");
    assert!(recorded["escalated_by"].as_str().unwrap().contains("cs_"));
    assert!(recorded["escalated_at"].is_string());

    let (_, again) = s
        .post(
            "/agent/function_calls/esc/escalate_email",
            json!({"escalation_msg": "second", "channel": {"email": {"address": "x@y.z"}}}),
        )
        .await;
    assert_eq!(again["escalations"].as_array().unwrap().len(), 2, "escalations accumulate");
    let (_, fetched) = s.get("/function_calls/esc").await;
    assert_eq!(fetched, again);

    let nobody = s
        .post(
            "/agent/function_calls/esc/escalate_email",
            json!({"escalation_msg": "m", "additional_recipients": null, "channel": null}),
        )
        .await;
    assert_error(&nobody, StatusCode::BAD_REQUEST, "invalid_request", "channel");
    let missing_msg =
        s.post("/agent/function_calls/esc/escalate_email", json!({"channel": {"email": {"address": "x@y.z"}}})).await;
    assert_error(&missing_msg, StatusCode::BAD_REQUEST, "invalid_request", "escalation_msg");
    assert_eq!(s.post("/agent/function_calls/nope/escalate_email", escalation.clone()).await.0, StatusCode::NOT_FOUND);

    s.post("/agent/function_calls/esc/respond", json!({"approved": true})).await;
    let late = s.post("/agent/function_calls/esc/escalate_email", escalation).await;
    assert_error(&late, StatusCode::CONFLICT, "conflict", "already has a response");
}

#[tokio::test]
async fn pending_lists_page_through_the_projects_open_requests() {
    let s = TestServer::start().await;
    for i in 0..5 {
        let mut body = approval(&format!("p{i}"));
        body["run_id"] = json!(if i < 3 { "run-a" } else { "run-b" });
        s.post("/function_calls", body).await;
    }
    s.post_as(&s.other_key, "/function_calls", approval("theirs")).await;
    s.post("/agent/function_calls/p1/respond", json!({"approved": true})).await;

    let (status, page) = s.get("/agent/function_calls/pending?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 4);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 0);
    assert_eq!(page["has_more"], true);
    let ids = |page: &Value| {
        page["items"].as_array().unwrap().iter().map(|i| i["call_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&page), ["p0", "p2"], "oldest first, decided ones left out");
    let (_, rest) = s.get("/agent/function_calls/pending?limit=2&offset=2").await;
    assert_eq!(ids(&rest), ["p3", "p4"]);
    assert_eq!(rest["has_more"], false);
    let (_, run_b) = s.get("/agent/function_calls/pending?run_id=run-b").await;
    assert_eq!(ids(&run_b), ["p3", "p4"]);
    let (_, questions) = s.get("/agent/human_contacts/pending").await;
    assert_eq!(questions["total"], 0, "kinds are listed apart");
}

#[tokio::test]
async fn one_project_never_sees_anothers_requests() {
    let s = TestServer::start().await;
    s.post("/function_calls", approval("mine")).await;
    let other = &s.other_key;
    let get =
        crate::support::json(s.http.get(s.api("/function_calls/mine")).bearer_auth(other).send().await.unwrap()).await;
    assert_error(&get, StatusCode::NOT_FOUND, "not_found", "mine");
    let respond = s.post_as(other, "/agent/function_calls/mine/respond", json!({"approved": true})).await;
    assert_eq!(respond.0, StatusCode::NOT_FOUND);
    let escalate = s
        .post_as(
            other,
            "/agent/function_calls/mine/escalate_email",
            json!({"escalation_msg": "m", "channel": {"email": {"address": "a@b.c"}}}),
        )
        .await;
    assert_eq!(escalate.0, StatusCode::NOT_FOUND);
    let list = crate::support::json(
        s.http.get(s.api("/agent/function_calls/pending")).bearer_auth(other).send().await.unwrap(),
    )
    .await;
    assert_eq!(list.1["total"], 0);
    // The same call_id in another project is a different request.
    let (status, theirs) = s
        .post_as(other, "/function_calls", json!({"run_id": "x", "call_id": "mine", "spec": {"fn": "g", "kwargs": {}}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(theirs["spec"]["fn"], "g");
    let (_, still_mine) = s.get("/function_calls/mine").await;
    assert_eq!(still_mine["spec"]["fn"], "send_email");
    assert_eq!(still_mine["status"]["approved"], Value::Null);
}

#[tokio::test]
async fn the_project_endpoint_names_the_keys_project() {
    let s = TestServer::start().await;
    let (status, project) = s.get("/project").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(project["name"], "alpha");
    assert_eq!(project["slug"], "alpha");
    assert!(project["organization"].is_string());
}

#[tokio::test]
async fn numbers_keep_their_exact_spelling_and_size() {
    let s = TestServer::start().await;
    let body = r#"{"run_id":"r","call_id":"big","spec":{"fn":"f","kwargs":{"big":18446744073709551617,"neg":-9223372036854775809},"state":{"x":1e2,"y":2.50,"z":123456789012345678901234567890}}}"#;
    let created = s.http.post(s.api("/function_calls")).bearer_auth(&s.key).body(body).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let fetched =
        s.http.get(s.api("/function_calls/big")).bearer_auth(&s.key).send().await.unwrap().text().await.unwrap();
    let spec = r#""spec":{"fn":"f","kwargs":{"big":18446744073709551617,"neg":-9223372036854775809},"state":{"x":1e2,"y":2.50,"z":123456789012345678901234567890}}"#;
    assert!(fetched.contains(spec), "{fetched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_escalations_are_all_kept() {
    let s = std::sync::Arc::new(TestServer::start().await);
    s.post("/function_calls", approval("many")).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let body = json!({"escalation_msg": format!("e{i}"), "channel": {"email": {"address": "a@b.c"}}});
                s.post("/agent/function_calls/many/escalate_email", body).await.0
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let (_, fetched) = s.get("/function_calls/many").await;
    let mut messages: Vec<String> = fetched["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["escalation_msg"].as_str().unwrap().to_owned())
        .collect();
    messages.sort();
    assert_eq!(messages, (0..8).map(|i| format!("e{i}")).collect::<Vec<_>>(), "polls show every escalation");
}

#[tokio::test]
async fn an_approval_may_carry_edited_arguments() {
    let s = TestServer::start().await;
    let body = serde_json::json!({"run_id": "r", "call_id": "e1", "spec": {"fn": "send_email", "kwargs": {"to": "ceo@example.com", "n": 1e2}}});
    s.post("/function_calls", body).await;
    s.post("/function_calls", approval("e2")).await;
    for (respond, field) in [
        (serde_json::json!({"approved": false, "comment": "no", "updated_kwargs": {"to": "x"}}), "updated_kwargs"),
        (serde_json::json!({"approved": true, "updated_kwargs": [1, 2]}), "updated_kwargs"),
        (serde_json::json!({"approved": true, "updated_kwargs": "to=x"}), "updated_kwargs"),
    ] {
        let got = s.post("/agent/function_calls/e1/respond", respond).await;
        crate::support::assert_error(&got, reqwest::StatusCode::BAD_REQUEST, "invalid_request", field);
    }
    let edited = serde_json::json!({"to": "cfo@example.com", "n": 100, "cc": ["a@b.c"]});
    let (status, done) = s
        .post("/agent/function_calls/e1/respond", serde_json::json!({"approved": true, "updated_kwargs": edited}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{done}");
    let (_, got) = s.get("/function_calls/e1").await;
    assert_eq!(got["status"]["updated_kwargs"], edited);
    assert_eq!(
        got["spec"]["kwargs"],
        serde_json::json!({"to": "ceo@example.com", "n": 1e2}),
        "the agent's kwargs stay"
    );
    // Without an edit (or with null) there is no updated_kwargs at all.
    s.post("/agent/function_calls/e2/respond", serde_json::json!({"approved": true, "updated_kwargs": null})).await;
    let (_, plain) = s.get("/function_calls/e2").await;
    assert!(plain["status"].get("updated_kwargs").is_none(), "{plain}");
}
