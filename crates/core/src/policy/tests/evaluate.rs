//! Which rule decides a request.

use super::*;
use crate::{NewRequest, RequestRecord, Timestamp};
use serde_json::json;

#[test]
fn the_first_matching_rule_decides_and_unmatched_requests_are_asked_as_usual() {
    let policy = policy(EXAMPLE);
    let small = json!({"amount": 50, "currency": "USD"});
    let large = json!({"amount": 20000, "currency": "USD"});
    let middle = json!({"amount": 500, "currency": "USD"});
    assert_eq!(decided(&policy, &call("refund_order", &small)), Some("small refunds"));
    assert_eq!(decided(&policy, &call("refund", &large)), Some("large refunds"));
    assert_eq!(decided(&policy, &call("drop_table", &json!({}))), Some("never"));
    assert_eq!(decided(&policy, &call("refund", &middle)), None, "no rule holds: asked as today");
    assert_eq!(decided(&policy, &call("send_email", &small)), None);

    let overlapping = super::policy(
        "[[rule]]\nname = \"first\"\nmatch = { fn = \"pay*\" }\naction = \"deny\"\n\
         [[rule]]\nname = \"second\"\nmatch = { fn = \"pay\" }\naction = \"approve\"\n",
    );
    assert_eq!(decided(&overlapping, &call("pay", &json!({}))), Some("first"), "order decides, not precision");
    let evaluation = overlapping.evaluate(&call("pay", &json!({})));
    assert_eq!(evaluation.action(), Some(PolicyAction::Deny));
    assert!(evaluation.errors.is_empty());
}

#[test]
fn every_action_is_reported_with_its_rule() {
    let policy = super::policy(
        "[[rule]]\nname = \"a\"\nmatch = { fn = \"read_*\" }\naction = \"approve\"\nmessage = \"reads are fine\"\n\
         [[rule]]\nname = \"d\"\nmatch = { fn = \"rm\" }\naction = \"deny\"\n\
         [[rule]]\nname = \"q\"\naction = \"ask\"\n",
    );
    let args = json!({});
    let approve = policy.evaluate(&call("read_file", &args));
    assert_eq!(approve.action(), Some(PolicyAction::Approve));
    assert_eq!(approve.rule.unwrap().message.as_deref(), Some("reads are fine"));
    assert_eq!(policy.evaluate(&call("rm", &args)).action(), Some(PolicyAction::Deny));
    assert_eq!(policy.evaluate(&call("anything", &args)).action(), Some(PolicyAction::Ask), "no `match`: all");
    assert_eq!(
        [PolicyAction::Approve, PolicyAction::Deny, PolicyAction::Ask].map(PolicyAction::as_str),
        ["approve", "deny", "ask"]
    );
    assert_eq!([OnExpire::Deny, OnExpire::Approve].map(OnExpire::as_str), ["deny", "approve"]);
}

#[test]
fn globs_select_on_the_function_name_the_run_and_the_kind() {
    let policy = super::policy(
        "[[rule]]\nname = \"paths\"\nmatch = { fn = \"fs*write\" }\naction = \"deny\"\n\
         [[rule]]\nname = \"nightly\"\nmatch = { run_id = \"nightly-*\", fn = \"deploy?\" }\naction = \"approve\"\n\
         [[rule]]\nname = \"classes\"\nmatch = { fn = \"[!a-m]*\", kind = \"function_call\" }\naction = \"ask\"\n\
         [[rule]]\nname = \"questions\"\nmatch = { kind = \"human_contact\" }\naction = \"approve\"\n",
    );
    let args = json!({});
    assert_eq!(decided(&policy, &call("fs/tmp/write", &args)), Some("paths"), "`*` crosses '/'");
    let nightly = Call { run_id: "nightly-2024/06", ..call("deploy2", &args) };
    assert_eq!(decided(&policy, &nightly), Some("nightly"));
    let daily = Call { run_id: "daily-1", ..call("deploy2", &args) };
    assert_eq!(decided(&policy, &daily), None, "`deploy2` starts with a..m and the run is not nightly");
    assert_eq!(decided(&policy, &call("publish", &args)), Some("classes"));
    assert_eq!(decided(&policy, &call("Publish", &args)), Some("classes"), "globs are case-sensitive");
    let question = Call { kind: RequestKind::HumanContact, msg: "ok?", ..call("", &args) };
    assert_eq!(decided(&policy, &question), Some("questions"), "a question is not a function call");
}

#[test]
fn conditions_see_the_call_variables() {
    let policy = super::policy(
        r#"[[rule]]
name = "typed"
when = "args.amount + 1 == 51 && args.rate < 1 && args.big > 0u && args.tags.all(t, t.startsWith('x'))"
action = "approve"
[[rule]]
name = "by channel"
when = "channel == 'slack' && run_id.startsWith('ci-') && kind == 'function_call' && fn == 'deploy'"
action = "deny"
[[rule]]
name = "nested"
when = "has(args.options.force) && args.options.force && size(args.items) == 2 && args.items[1].id == 'b'"
action = "ask"
"#,
    );
    let typed = json!({"amount": 50, "rate": 0.5, "big": 18446744073709551615u64, "tags": ["xa", "xb"]});
    assert_eq!(decided(&policy, &call("f", &typed)), Some("typed"), "integers are ints, floats compare with them");
    let args = json!({});
    let ci = Call { channel: "slack", run_id: "ci-7", ..call("deploy", &args) };
    assert_eq!(decided(&policy, &ci), Some("by channel"));
    let nested = json!({"options": {"force": true}, "items": [{"id": "a"}, {"id": "b"}]});
    assert_eq!(decided(&policy, &call("g", &nested)), Some("nested"));
    let evaluation = policy.evaluate(&call("g", &json!({"options": {}, "items": []})));
    assert!(evaluation.rule.is_none(), "`has` guards a missing field");
}

#[test]
fn questions_are_matched_on_their_text() {
    let policy = super::policy(
        "[[rule]]\nname = \"prod questions\"\nmatch = { kind = \"human_contact\" }\n\
         when = \"msg.contains('production') && fn == '' && size(args) == 0\"\naction = \"ask\"\n\
         approvers = { group = \"oncall\" }\n\
         [[rule]]\nname = \"everything\"\nmatch = { fn = \"*\" }\naction = \"approve\"\n",
    );
    let empty = json!({});
    let question = |msg| Call { kind: RequestKind::HumanContact, msg, ..call("", &empty) };
    assert_eq!(decided(&policy, &question("May I restart production?")), Some("prod questions"));
    assert_eq!(decided(&policy, &question("Lunch?")), Some("everything"), "`*` matches a question's empty fn");
}

#[test]
fn a_condition_that_cannot_be_evaluated_never_waves_a_request_through() {
    for (when, why) in [
        ("args.nope < 100", "a missing field"),
        ("args.amount < 'x'", "a type mismatch"),
        ("args.amount", "a result that is not a bool"),
    ] {
        let text = format!(
            "[[rule]]\nname = \"lenient\"\nwhen = \"{when}\"\naction = \"approve\"\n\
             [[rule]]\nname = \"strict\"\nwhen = \"{when}\"\naction = \"deny\"\n"
        );
        let strict = policy(&text);
        let args = json!({"amount": 5});
        let evaluation = strict.evaluate(&call("refund", &args));
        assert_eq!(evaluation.rule.map(|r| r.name.as_str()), Some("strict"), "{why}: approve skipped, deny holds");
        assert_eq!(evaluation.errors.len(), 2, "{why}: both failures are reported");
        assert_eq!(evaluation.errors[0].0, "lenient");
        assert!(evaluation.errors[0].1.ends_with("(so the rule is skipped: fail-safe)"), "{:?}", evaluation.errors);
        assert!(evaluation.errors[1].1.ends_with("(so the rule applies: fail-safe)"), "{:?}", evaluation.errors);

        let asked = policy(&text.replace("\"deny\"", "\"ask\""));
        assert_eq!(asked.evaluate(&call("refund", &args)).action(), Some(PolicyAction::Ask), "{why}: ask holds");
        let only_approve = policy(&text[..text.find("[[rule]]\nname = \"strict\"").unwrap()]);
        let evaluation = only_approve.evaluate(&call("refund", &args));
        assert!(evaluation.rule.is_none(), "{why}: asked as usual, not approved");
        assert_eq!(evaluation.errors.len(), 1);
    }
    let errors = policy("[[rule]]\nname = \"n\"\nwhen = \"args.nope\"\naction = \"deny\"\n")
        .evaluate(&call("f", &json!({})))
        .errors;
    assert!(errors[0].1.contains("nope"), "the error names the missing field: {errors:?}");
    let errors = policy("[[rule]]\nname = \"n\"\nwhen = \"args.n\"\naction = \"deny\"\n")
        .evaluate(&call("f", &json!({"n": 1})))
        .errors;
    assert!(errors[0].1.starts_with("`when` gave a value of type int, not true or false"), "{errors:?}");
}

#[test]
fn arguments_nested_too_deeply_fail_safe() {
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!({ "a": deep });
    }
    let args = json!({"amount": 5, "deep": deep});
    let policy = super::policy(
        "[[rule]]\nname = \"ok\"\nwhen = \"args.amount < 10\"\naction = \"approve\"\n\
         [[rule]]\nname = \"fn only\"\nwhen = \"fn == 'f'\"\naction = \"deny\"\n",
    );
    let evaluation = policy.evaluate(&call("f", &args));
    assert_eq!(evaluation.rule.map(|r| r.name.as_str()), Some("fn only"));
    assert_eq!(evaluation.errors.len(), 1, "the approve rule could not read args");
}

#[test]
fn a_stored_request_reads_as_a_call() {
    let record = |kind, body: Value| {
        let new = NewRequest::parse(kind, body.to_string().as_bytes()).unwrap();
        RequestRecord::new("p", new, Timestamp::from_micros(0))
    };
    let approval = record(
        RequestKind::FunctionCall,
        json!({"run_id": "r1", "call_id": "c1", "spec": {"fn": "refund", "kwargs": {"amount": 5},
            "channel": {"slack": null, "email": {"address": "a@example.com"}, "sms": {"phone_number": "+1"}}}}),
    );
    let data = CallData::of(&approval);
    let call = data.call();
    assert_eq!(
        (call.kind, call.fn_name, call.run_id, call.channel, call.msg),
        (RequestKind::FunctionCall, "refund", "r1", "email", "")
    );
    assert_eq!(call.args, &json!({"amount": 5}));

    let question =
        record(RequestKind::HumanContact, json!({"run_id": "r2", "call_id": "c2", "spec": {"msg": "Deploy?"}}));
    let data = CallData::of(&question);
    let call = data.call();
    assert_eq!(
        (call.kind, call.fn_name, call.run_id, call.channel, call.msg),
        (RequestKind::HumanContact, "", "r2", "", "Deploy?")
    );
    assert_eq!(call.args, &json!({}));
    let policy = super::policy("[[rule]]\nname = \"q\"\nwhen = \"msg == 'Deploy?'\"\naction = \"deny\"\n");
    assert_eq!(decided(&policy, &call), Some("q"));
}

#[test]
fn a_policy_is_shared_between_threads_and_evaluates_fifty_rules_quickly() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug>() {}
    shareable::<Policy>();
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nmatch = {{ fn = \"*\" }}\nwhen = \"args.amount > {i}00 && args.currency == 'EUR'\"\naction = \"deny\"\n"
        ));
    }
    let policy = super::policy(&text);
    let args = json!({"amount": 5, "currency": "USD", "note": "a small call"});
    let started = std::time::Instant::now();
    let rounds = 200;
    for _ in 0..rounds {
        assert_eq!(decided(&policy, &call("refund", &args)), None);
    }
    // A sanity figure for people, not an assertion: timing depends on the machine and the build.
    eprintln!("50 conditions: {:?} per evaluation", started.elapsed() / rounds);
    let clone = policy.clone();
    let handle = std::thread::spawn(move || {
        clone.evaluate(&call("refund", &json!({"amount": 4900, "currency": "EUR"}))).rule.map(|r| r.name.clone())
    });
    assert_eq!(handle.join().unwrap().as_deref(), Some("r0"));
}
