//! Asking a human a question.

use crate::support::TestServer;
use countersign_client::{HumanContactSpec, ResponseOption};
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_human_returns_the_answer() {
    let server = Arc::new(TestServer::start().await);
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            let pending = server.next_pending("human_contacts").await;
            assert_eq!(pending["spec"], json!({"msg": "Which region?"}));
            server.answer(pending["call_id"].as_str().unwrap(), json!({"response": "eu-west-1"})).await;
        })
    };
    let answer = server.client().ask_human("Which region?").await.unwrap();
    human.await.unwrap();
    assert_eq!(answer.response, "eu-west-1");
    assert_eq!(answer.response_option_name, None);
    assert_eq!(answer.contact.spec.msg, "Which region?");
    assert_eq!(answer.user_info.and_then(|u| u.channel).as_deref(), Some("api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_option_is_reported() {
    let server = Arc::new(TestServer::start().await);
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            server.next_pending("human_contacts").await;
            server.answer("ship-1", json!({"response": "yes, ship it", "response_option_name": "yes"})).await;
        })
    };
    let question = HumanContactSpec::new("Ship it?")
        .subject("release 1.2")
        .response_option(ResponseOption::new("yes").prompt_fill("yes, ship it"))
        .response_option(ResponseOption::new("no").prompt_fill("no"));
    let answer = server.client().ask_human_with_id("ship-1", question).await.unwrap();
    human.await.unwrap();
    assert_eq!(answer.response, "yes, ship it");
    assert_eq!(answer.response_option_name.as_deref(), Some("yes"));
    assert_eq!(answer.contact.spec.subject.as_deref(), Some("release 1.2"));
    assert_eq!(server.client().wait_human_contact("ship-1").await.unwrap(), answer, "waiting again is instant");
}
