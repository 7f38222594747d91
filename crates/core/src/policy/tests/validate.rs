//! What a policy file may say, and how its mistakes are reported.

use super::*;
use std::time::Duration;

/// The line, column and message of the error refusing `text`.
fn at(text: &str) -> (usize, usize, String) {
    let error = refused(text);
    (error.line, error.column, error.message)
}

/// A rule named `r` with the given lines.
fn rule(lines: &str) -> String {
    format!("[[rule]]\nname = \"r\"\n{lines}\n")
}

#[test]
fn the_example_policy_reads_into_exactly_its_fields() {
    let policy = policy(EXAMPLE);
    assert_eq!(policy.text(), EXAMPLE);
    let [small, large, never] = policy.rules() else { panic!("three rules") };

    assert_eq!((small.name.as_str(), small.line), ("small refunds", 1));
    assert_eq!(small.fn_glob.as_deref(), Some("refund*"));
    assert_eq!((small.run_id_glob.as_deref(), small.kind), (None, None));
    assert_eq!(small.when.as_deref(), Some("args.amount < 100 && args.currency == 'USD'"));
    assert_eq!(small.action, PolicyAction::Approve);
    assert_eq!((small.message.as_deref(), small.approvers.as_ref()), (None, None));
    assert!(!small.separation_of_duties);
    assert_eq!((small.expire_after, small.on_expire), (None, OnExpire::Deny));
    assert!(small.escalate.is_empty());

    assert_eq!((large.name.as_str(), large.line), ("large refunds", 6));
    assert_eq!(large.when.as_deref(), Some("args.amount >= 10000"));
    assert_eq!(large.action, PolicyAction::Ask);
    assert_eq!(large.approvers, Some(Approvers { group: Some("finance".into()), count: 2 }));
    assert!(large.separation_of_duties);
    assert_eq!(large.expire_after, Some(Duration::from_secs(4 * 3600)));
    assert_eq!(large.on_expire, OnExpire::Deny);
    assert_eq!(
        large.escalate,
        [
            LadderStep {
                after: Duration::from_secs(30 * 60),
                to: StepTarget { email: Some("lead@example.com".into()), slack: None },
            },
            LadderStep {
                after: Duration::from_secs(2 * 3600),
                to: StepTarget { email: None, slack: Some("C0FINANCE".into()) }
            },
        ]
    );

    assert_eq!((never.name.as_str(), never.line, never.fn_glob.as_deref()), ("never", 17, Some("drop_*")));
    assert_eq!((never.action, never.when.as_deref()), (PolicyAction::Deny, None));
    assert_eq!(never.message.as_deref(), Some("dropping tables is never allowed from an agent"));
    assert_eq!(policy.groups(), ["finance"]);
    assert_eq!(policy.rule("never").map(|r| r.line), Some(17));
}

#[test]
fn an_empty_policy_is_valid_and_decides_nothing() {
    for text in ["", "# no rules yet\n\n", "\u{feff}"] {
        let policy = policy(text);
        assert!(policy.is_empty());
        assert!(policy.groups().is_empty());
        assert!(policy.evaluate(&call("f", &serde_json::json!({}))).rule.is_none());
    }
}

#[test]
fn groups_are_listed_once_in_order_of_mention() {
    let policy = policy(
        "[[rule]]\nname = \"a\"\naction = \"ask\"\napprovers = { group = \"ops\" }\n\
         [[rule]]\nname = \"b\"\naction = \"ask\"\napprovers = { count = 3 }\n\
         [[rule]]\nname = \"c\"\naction = \"ask\"\napprovers = { group = \"finance\", count = 2 }\n\
         [[rule]]\nname = \"d\"\naction = \"ask\"\n[rule.approvers]\ngroup = \"ops\"\n",
    );
    assert_eq!(policy.groups(), ["ops", "finance"]);
    assert_eq!(policy.rules()[1].approvers, Some(Approvers { group: None, count: 3 }));
    assert_eq!(
        policy.rules()[3].approvers,
        Some(Approvers { group: Some("ops".into()), count: 1 }),
        "count defaults to 1"
    );
}

#[test]
fn durations_read_as_people_write_them() {
    for (written, seconds) in
        [("2s", 2), ("30m", 1800), ("4h", 14400), ("1d", 86400), ("1h 30m", 5400), ("365d", 31_536_000)]
    {
        let policy = policy(&rule(&format!("action = \"ask\"\nexpire_after = \"{written}\"")));
        assert_eq!(policy.rules()[0].expire_after, Some(Duration::from_secs(seconds)), "{written}");
    }
    let (line, column, message) = at(&rule("action = \"ask\"\nexpire_after = \"4 parsecs\""));
    assert_eq!((line, column), (4, 16));
    assert!(message.starts_with("`expire_after`: `4 parsecs` is not a duration"), "{message}");
    assert!(message.ends_with("write e.g. \"30m\", \"4h\", \"1d\" or \"1h 30m\""), "{message}");
    let (_, _, message) = at(&rule("action = \"ask\"\nexpire_after = \"0s\""));
    assert_eq!(message, "`expire_after` must be more than 0s");
    let (_, _, message) = at(&rule("action = \"ask\"\nexpire_after = \"366d\""));
    assert_eq!(message, "`expire_after` is longer than 365 days, the limit");
    let (_, _, message) = at(&rule("action = \"ask\"\nexpire_after = 3600"));
    assert!(message.starts_with("`expire_after` must be a duration in quotes such as \"30m\""), "{message}");
    assert!(message.ends_with("not an integer"), "{message}");
}

#[test]
fn unknown_keys_are_named_with_what_is_allowed() {
    let (line, column, message) = at(&rule("actoin = \"deny\""));
    assert_eq!((line, column), (3, 1));
    assert_eq!(
        message,
        "unknown key `actoin` (did you mean `action`?); expected one of name, match, when, action, message, \
         approvers, separation_of_duties, expire_after, on_expire, escalate"
    );
    let (line, column, message) = at(&rule("action = \"deny\"\nmatch = { fn = \"x\", tool = \"y\" }"));
    assert_eq!((line, column), (4, 21));
    assert_eq!(message, "unknown key `tool`; expected one of fn, run_id, kind");
    let (_, _, message) = at(&rule("action = \"ask\"\napprovers = { groups = \"x\" }"));
    assert!(message.starts_with("unknown key `groups` (did you mean `group`?)"), "{message}");
    let (_, _, message) = at(&rule("action = \"ask\"\nescalate = [ { after = \"1h\", to = { phone = \"1\" } } ]"));
    assert_eq!(message, "unknown key `phone`; expected one of email, slack");
    let (line, column, message) = at("version = 2\n");
    assert_eq!((line, column), (1, 1));
    assert_eq!(message, "unknown key `version`; a policy holds only rules, each under a `[[rule]]` header");
    let (_, _, message) = at("[rule]\nname = \"r\"\naction = \"deny\"\n");
    assert_eq!(message, "write each rule under a `[[rule]]` header (two brackets)");
}

#[test]
fn names_are_required_short_and_unique() {
    let (line, column, message) = at("# a\n[[rule]]\naction = \"deny\"\n");
    assert_eq!((line, column), (2, 1), "at the rule's header");
    assert!(message.starts_with("this rule has no `name`"), "{message}");
    let (line, column, message) = at("[[rule]]\nname = \"  \"\naction = \"deny\"\n");
    assert_eq!((line, column), (2, 8));
    assert!(message.starts_with("`name` is empty"), "{message}");
    let (_, _, message) = at(&format!("[[rule]]\nname = \"{}\"\naction = \"deny\"\n", "n".repeat(201)));
    assert_eq!(message, "`name` is 201 characters long; the limit is 200");
    let (_, _, message) = at("[[rule]]\nname = 5\naction = \"deny\"\n");
    assert_eq!(message, "`name` must be text in quotes, not an integer");
    let (line, column, message) =
        at("[[rule]]\nname = \"same\"\naction = \"deny\"\n\n[[rule]]\nname   = \"same\"\naction = \"ask\"\n");
    assert_eq!((line, column), (6, 10));
    assert_eq!(message, "the rule on line 1 is also named `same`; rule names must be unique");
}

#[test]
fn actions_are_required_and_spelled_out() {
    let (line, column, message) = at("\n[[rule]]\nname = \"r\"\n");
    assert_eq!((line, column), (2, 1));
    assert_eq!(message, "rule `r` has no `action`; add `action = \"approve\"`, \"deny\" or \"ask\"");
    let (line, column, message) = at(&rule("action = \"allow\""));
    assert_eq!((line, column), (3, 10));
    assert_eq!(message, "unknown action `allow`; expected approve, deny or ask");
    let (_, _, message) = at(&rule("action = \"ask\"\non_expire = \"escalate\""));
    assert_eq!(message, "unknown on_expire `escalate`; expected deny or approve");
    let policy = policy(&rule("action = \"ask\"\non_expire = \"approve\""));
    assert_eq!(policy.rules()[0].on_expire, OnExpire::Approve);
}

#[test]
fn only_an_ask_rule_takes_what_waits_for_people() {
    for key in [
        "approvers = { count = 2 }",
        "separation_of_duties = true",
        "expire_after = \"1h\"",
        "on_expire = \"deny\"",
        "escalate = []",
    ] {
        for action in ["approve", "deny"] {
            let (line, column, message) = at(&rule(&format!("action = \"{action}\"\n{key}")));
            assert_eq!((line, column), (4, 1), "{key}");
            let name = key.split(' ').next().unwrap();
            assert_eq!(
                message,
                format!(
                    "`{name}` is for `ask` rules only (only an `ask` rule waits for people); this rule's action is `{action}`"
                )
            );
        }
    }
    for action in ["approve", "deny", "ask"] {
        let policy = policy(&rule(&format!("action = \"{action}\"\nmessage = \"why\"")));
        assert_eq!(policy.rules()[0].message.as_deref(), Some("why"), "a message is allowed on {action}");
    }
}

#[test]
fn matches_need_good_globs_and_kinds() {
    let (line, column, message) = at(&rule("action = \"deny\"\nmatch = { fn = \"[oops\" }"));
    assert_eq!((line, column), (4, 16));
    assert!(message.starts_with("bad glob `[oops` in `fn`: "), "{message}");
    let (_, _, message) = at(&rule("action = \"deny\"\nmatch = { run_id = \"a**b\" }"));
    assert!(message.starts_with("bad glob `a**b` in `run_id`: "), "{message}");
    let (_, _, message) = at(&rule("action = \"deny\"\nmatch = { kind = \"question\" }"));
    assert_eq!(message, "unknown kind `question`; expected function_call or human_contact");
    let (_, _, message) = at(&rule("action = \"deny\"\nmatch = \"refund*\""));
    assert_eq!(message, "`match` must be a table, not a string");
}

#[test]
fn approvers_are_a_real_quorum() {
    let (line, column, message) = at(&rule("action = \"ask\"\napprovers = { count = 0 }"));
    assert_eq!((line, column), (4, 23));
    assert_eq!(message, "`count` must be from 1 to 100: how many distinct people must approve");
    let (_, _, message) = at(&rule("action = \"ask\"\napprovers = { count = 101 }"));
    assert_eq!(message, "`count` must be from 1 to 100: how many distinct people must approve");
    let (_, _, message) = at(&rule("action = \"ask\"\napprovers = { count = \"2\" }"));
    assert_eq!(message, "`count` must be a whole number, not a string");
    let (_, _, message) = at(&rule("action = \"ask\"\napprovers = { group = \"\" }"));
    assert!(message.starts_with("`group` is empty"), "{message}");
    let (_, _, message) = at(&rule("action = \"ask\"\nseparation_of_duties = \"yes\""));
    assert_eq!(message, "`separation_of_duties` must be true or false, not a string");
}

#[test]
fn escalation_ladders_climb_and_reach_someone() {
    let ladder = |steps: &str| at(&rule(&format!("action = \"ask\"\nescalate = [\n{steps}\n]")));
    let (line, column, message) =
        ladder("{ after = \"1h\", to = { slack = \"C1\" } },\n{ after = \"60m\", to = { slack = \"C2\" } },");
    assert_eq!((line, column), (6, 11));
    assert_eq!(message, "each step must come after the one before it: 1h is not later than 1h");
    let (line, column, message) = ladder("{ after = \"1h\", to = {} }");
    assert_eq!((line, column), (5, 22));
    assert_eq!(message, "`to` names nobody; give `email`, `slack` or both");
    let (_, _, message) = ladder("{ after = \"1h\" }");
    assert!(message.starts_with("this step has no `to`"), "{message}");
    let (_, _, message) = ladder("{ to = { slack = \"C1\" } }");
    assert!(message.starts_with("this step has no `after`"), "{message}");
    let (_, _, message) = ladder("{ after = \"1h\", to = { email = \"lead.example.com\" } }");
    assert_eq!(message, "`lead.example.com` is not an email address (like lead@example.com)");
    let (_, _, message) = ladder("{ after = \"1h\", to = { slack = \"#finance team\" } }");
    assert!(message.starts_with("`#finance team` is not a Slack channel or user id"), "{message}");
    let (_, _, message) = ladder(&format!("{{ after = \"1h\", to = {{ slack = \"{}\" }} }}", "C".repeat(81)));
    assert!(message.ends_with("no spaces, at most 80 characters)"), "{message}");
    let (_, _, message) = at(&rule("action = \"ask\"\nescalate = { after = \"1h\" }"));
    assert!(message.starts_with("`escalate` must be a list of steps"), "{message}");

    let both = policy(&rule(
        "action = \"ask\"\n[[rule.escalate]]\nafter = \"10m\"\nto = { email = \"Lead@Example.com\", slack = \"U024BE7LH\" }",
    ));
    let expected = StepTarget { email: Some("lead@example.com".into()), slack: Some("U024BE7LH".into()) };
    assert_eq!(both.rules()[0].escalate, [LadderStep { after: Duration::from_secs(600), to: expected }]);
}

#[test]
fn conditions_are_compiled_when_the_policy_is_read() {
    let (line, column, message) = at(&rule("action = \"deny\"\nwhen = \"args.amount < \""));
    assert_eq!((line, column), (4, 23), "at the end of the condition, where a value is missing");
    assert!(message.starts_with("`when` is not a valid CEL condition: mismatched input '<EOF>'"), "{message}");
    let (line, column, message) = at(&rule("action = \"deny\"\nwhen = \"fn == 'x' && arg.amount > 1\""));
    assert_eq!((line, column), (4, 22), "at the unknown variable");
    assert_eq!(
        message,
        "unknown variable `arg` in `when`; a condition can use `fn`, `args`, `run_id`, `kind`, `channel`, `msg`"
    );
    let (line, column, _) = at(&rule("action = \"deny\"\nwhen = '''\nfn == 'x' &&\n  nope'''"));
    assert_eq!((line, column), (6, 3), "multi-line conditions point into their own lines");
    let (line, column, _) = at(&rule("action = \"deny\"\nwhen = \"fn == \\\"x\\\" && nope\""));
    assert_eq!((line, column), (4, 8), "a condition with escapes is pointed at as a whole");
    let (_, _, message) = at(&rule("action = \"deny\"\nwhen = \" \""));
    assert!(message.starts_with("`when` is empty"), "{message}");
    let long = format!("fn == '{}'", "x".repeat(4096));
    let (_, _, message) = at(&rule(&format!("action = \"deny\"\nwhen = \"{long}\"")));
    assert_eq!(message, "`when` is 4104 bytes long; the limit is 4096 (4 KiB)");
    let macros =
        policy(&rule("action = \"deny\"\nwhen = \"args.items.exists(i, i.id == 'x') && type(args.n) == int\""));
    assert_eq!(macros.rules().len(), 1, "macro variables and type names are known");
}

#[test]
fn toml_mistakes_are_placed_and_shown_with_their_line() {
    let error = refused("[[rule]]\nname = \"r\naction = \"deny\"\n");
    assert_eq!(error.line, 2);
    assert!(error.message.starts_with("not valid TOML: "), "{}", error.message);
    let error = refused("[[rule]]\nname = \"r\"\nname = \"s\"\n");
    assert_eq!((error.line, error.column), (3, 1));
    assert_eq!(error.message, "not valid TOML: duplicate key");
    let error = refused(&rule("action = \"allow\""));
    assert_eq!(
        error.to_string(),
        "policy.toml:3:10: unknown action `allow`; expected approve, deny or ask\n  3 | action = \"allow\""
    );
}

#[test]
fn policies_are_bounded() {
    let error = refused(&"#".repeat(256 * 1024 + 1));
    assert_eq!((error.line, error.column), (0, 0));
    assert_eq!(error.to_string(), "policy.toml: the policy is 262145 bytes; the limit is 262144 (256 KiB)");
    let many: String = (0..1001).map(|i| format!("[[rule]]\nname = \"r{i}\"\naction = \"deny\"\n")).collect();
    let (line, column, message) = at(&many);
    assert_eq!((line, column), (3001, 1));
    assert_eq!(message, "too many rules; a policy holds at most 1000");
    let thousand: String = many.lines().take(3000).map(|line| format!("{line}\n")).collect();
    assert_eq!(policy(&thousand).rules().len(), 1000);
}
