//! The policies' tests: `evaluate` for which rule decides a request, `validate` for what a policy
//! file may say and how its mistakes are reported. Shared fixtures live here.

mod evaluate;
mod validate;

use super::*;
use serde_json::Value;

/// Parses a policy that must be valid.
fn policy(text: &str) -> Policy {
    Policy::parse("policy.toml", text).unwrap_or_else(|e| panic!("the policy should parse:\n{e}"))
}

/// Parses a policy that must be refused, and returns why.
fn refused(text: &str) -> PolicyError {
    match Policy::parse("policy.toml", text) {
        Ok(_) => panic!("the policy should be refused:\n{text}"),
        Err(error) => error,
    }
}

/// A function call of `fn_name` with `args`, in run `run-1`, with no channel.
fn call<'a>(fn_name: &'a str, args: &'a Value) -> Call<'a> {
    Call { kind: RequestKind::FunctionCall, fn_name, args, run_id: "run-1", channel: "", msg: "" }
}

/// The name of the rule that decides `call`, if any.
fn decided<'p>(policy: &'p Policy, call: &Call<'_>) -> Option<&'p str> {
    policy.evaluate(call).rule.map(|rule| rule.name.as_str())
}

/// The policy of the module's documentation.
const EXAMPLE: &str = r#"[[rule]]
name  = "small refunds"
match = { fn = "refund*" }               # glob on the function name; also run_id, kind
when  = "args.amount < 100 && args.currency == 'USD'"   # CEL condition over the call
action = "approve"                       # approve | deny | ask
[[rule]]
name = "large refunds"
match = { fn = "refund*" }
when = "args.amount >= 10000"
action = "ask"
approvers = { group = "finance", count = 2 }     # quorum: 2 distinct people of the group
separation_of_duties = true              # whoever owns the requesting key may not approve
expire_after = "4h"
on_expire = "deny"                       # deny | approve
escalate = [ { after = "30m", to = { email = "lead@example.com" } },
             { after = "2h",  to = { slack = "C0FINANCE" } } ]
[[rule]]
name = "never"
match = { fn = "drop_*" }
action = "deny"
message = "dropping tables is never allowed from an agent"
"#;
