//! Evaluation: which rule of a policy decides a request.

use super::condition;
use super::{Call, CallData, Evaluation, Policy, PolicyAction, PolicyRule};
use crate::{RequestKind, RequestRecord};
use cel::Context;
use serde::Deserialize;
use serde_json::{Map, Value};

impl Policy {
    /// The rule that decides `call`: the first whose `match` and `when` hold. A `when` that cannot
    /// be evaluated skips an `approve` rule and selects a `deny` or `ask` rule (fail-safe); each
    /// such error is reported in [`Evaluation::errors`].
    pub fn evaluate(&self, call: &Call<'_>) -> Evaluation<'_> {
        let mut errors = Vec::new();
        // Built on the first condition that needs it, then shared by the rules after it.
        let mut context: Option<Context<'static, 'static>> = None;
        for rule in &self.rules {
            if !rule.matches(call) {
                continue;
            }
            let Some(when) = &rule.condition else {
                return Evaluation { rule: Some(rule), errors };
            };
            match when.holds(context.get_or_insert_with(|| condition::context(call))) {
                Ok(true) => return Evaluation { rule: Some(rule), errors },
                Ok(false) => {}
                Err(error) => {
                    let fails_safe = rule.action != PolicyAction::Approve;
                    let consequence = if fails_safe { "the rule applies" } else { "the rule is skipped" };
                    errors.push((rule.name.clone(), format!("{error} (so {consequence}: fail-safe)")));
                    if fails_safe {
                        return Evaluation { rule: Some(rule), errors };
                    }
                }
            }
        }
        Evaluation { rule: None, errors }
    }
}

impl PolicyRule {
    /// True when the rule's `match` selects the call (whatever its `when`).
    pub fn matches(&self, call: &Call<'_>) -> bool {
        self.kind.is_none_or(|kind| kind == call.kind)
            && self.fn_pattern.as_ref().is_none_or(|glob| glob.matches(call.fn_name))
            && self.run_id_pattern.as_ref().is_none_or(|glob| glob.matches(call.run_id))
    }
}

/// The channels a request may name, in the order a spec's `channel` object is read if it names
/// several (the first present one is the request's channel).
const CHANNELS: [&str; 4] = ["email", "slack", "sms", "whatsapp"];

impl CallData {
    /// What a policy sees of a stored request: `spec.fn` and `spec.kwargs` of a function call,
    /// `spec.msg` of a question, and the first channel the spec's `channel` names.
    pub fn of(record: &RequestRecord) -> Self {
        #[derive(Deserialize, Default)]
        struct Spec {
            #[serde(rename = "fn")]
            fn_name: Option<String>,
            kwargs: Option<Value>,
            msg: Option<String>,
            channel: Option<Map<String, Value>>,
        }
        // Stored specs were validated when created; a spec that no longer reads is an empty call.
        let spec: Spec = serde_json::from_str(record.spec.get()).unwrap_or_default();
        let channel = spec.channel.as_ref().and_then(|channels| {
            channels
                .iter()
                .filter(|(_, value)| !value.is_null())
                .find_map(|(name, _)| CHANNELS.iter().copied().find(|known| known == name))
        });
        let (fn_name, args, msg) = match record.kind {
            RequestKind::FunctionCall => {
                let args = spec.kwargs.filter(Value::is_object).unwrap_or_else(|| Value::Object(Map::new()));
                (spec.fn_name.unwrap_or_default(), args, String::new())
            }
            RequestKind::HumanContact => (String::new(), Value::Object(Map::new()), spec.msg.unwrap_or_default()),
        };
        Self { kind: record.kind, fn_name, args, run_id: record.run_id.clone(), channel: channel.unwrap_or(""), msg }
    }

    /// The call, borrowing this data.
    pub fn call(&self) -> Call<'_> {
        Call {
            kind: self.kind,
            fn_name: &self.fn_name,
            args: &self.args,
            run_id: &self.run_id,
            channel: self.channel,
            msg: &self.msg,
        }
    }
}
