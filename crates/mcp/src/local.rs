//! The tools' [`Desk::Local`](crate::tools::Desk::Local): the server's own requests, created and
//! waited on in process (no HTTP round trip to itself), for the caller `/mcp` authenticated.

use countersign_client::{Answer, Approval, FunctionCall, FunctionCallSpec, HumanContact};
use countersign_core::{NewRequest, RequestKind};
use countersign_server::services::auth::Caller;
use countersign_server::services::live::RequestKey;
use countersign_server::state::AppState;
use rmcp::RoleServer;
use rmcp::service::RequestContext;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// How long one in-process wait lasts before it is renewed.
const LOCAL_WAIT: Duration = Duration::from_secs(30);

/// Creates the approval of `spec` (idempotently, by `call_id`) and waits for the human's decision.
pub(crate) async fn approval(
    state: &AppState,
    ctx: &RequestContext<RoleServer>,
    run_id: &str,
    call_id: &str,
    spec: FunctionCallSpec,
) -> Result<Approval, String> {
    let caller = crate::http::caller(ctx)?;
    let run_id = crate::http::requested_run_id(ctx).unwrap_or_else(|| run_id.to_owned());
    let body = json!({"run_id": run_id, "call_id": call_id, "spec": spec});
    let key = key(&caller, RequestKind::FunctionCall, call_id);
    let call: FunctionCall = create_and_wait(state, &caller, key, &body).await?;
    Approval::from_call(call).ok_or_else(|| "the approval has no decision".to_owned())
}

/// Asks `question` (idempotently, by `call_id`) and waits for the human's answer.
pub(crate) async fn answer(
    state: &AppState,
    ctx: &RequestContext<RoleServer>,
    run_id: &str,
    call_id: &str,
    question: String,
) -> Result<Answer, String> {
    let caller = crate::http::caller(ctx)?;
    let run_id = crate::http::requested_run_id(ctx).unwrap_or_else(|| run_id.to_owned());
    let body = json!({"run_id": run_id, "call_id": call_id, "spec": {"msg": question}});
    let key = key(&caller, RequestKind::HumanContact, call_id);
    let contact: HumanContact = create_and_wait(state, &caller, key, &body).await?;
    Answer::from_contact(contact).ok_or_else(|| "the question has no answer".to_owned())
}

/// Creates the request (idempotently) and waits in-process until a human decides it.
async fn create_and_wait<T: for<'de> Deserialize<'de>>(
    state: &AppState,
    caller: &Caller,
    key: RequestKey,
    body: &Value,
) -> Result<T, String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let new = NewRequest::parse(key.kind, &bytes).map_err(|e| e.to_string())?;
    let mut json = state
        .requests
        .create(&caller.project.id, new, caller.owner.as_deref())
        .await
        .map_err(|e| e.message().to_owned())?;
    let mut closing = state.requests.closing();
    loop {
        let current: Value = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
        if decided(&current) {
            return serde_json::from_value(current).map_err(|e| e.to_string());
        }
        if *closing.borrow_and_update() {
            return Err("the Countersign server is shutting down; the request stays pending".into());
        }
        json = state.requests.wait(&key, LOCAL_WAIT).await.map_err(|e| e.message().to_owned())?;
    }
}

/// True when a function call has a decision or a question has an answer.
fn decided(request: &Value) -> bool {
    let status = &request["status"];
    !status["approved"].is_null() || !status["response"].is_null()
}

fn key(caller: &Caller, kind: RequestKind, call_id: &str) -> RequestKey {
    RequestKey { project_id: caller.project.id.clone(), kind, call_id: call_id.to_owned() }
}
