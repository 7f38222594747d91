//! Conditions: a rule's `when`, a CEL expression compiled once when the policy is parsed and run
//! against each call's variables.

use super::Call;
use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value as CelValue};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

/// The variables a condition may use.
pub const VARIABLES: [&str; 6] = ["fn", "args", "run_id", "kind", "channel", "msg"];

/// CEL's type names, which a condition may spell as identifiers (`type(args.n) == int`).
const TYPE_NAMES: [&str; 13] = [
    "bool",
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "timestamp",
    "type",
    "uint",
];

/// Arguments nested deeper than this are not given to conditions: `args` is then unbound, so
/// every condition that reads it fails, safely.
const MAX_ARGS_DEPTH: usize = 128;

/// The standard CEL environment, built once: conditions are compiled and run with it.
static CEL: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled `when` condition.
#[derive(Clone)]
pub struct Condition {
    program: Arc<Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Condition { .. }")
    }
}

/// What is wrong with a condition's text, and where in it (1-based line and column, in
/// characters; `None` when the parser did not say).
#[derive(Debug)]
pub struct ConditionError {
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl Condition {
    /// Compiles `text`, refusing syntax errors and variables a condition does not have.
    pub fn compile(text: &str) -> Result<Self, ConditionError> {
        let program = CEL.compile(text).map_err(|errors| {
            let first = errors.errors.first();
            let position = first.and_then(|e| Some((usize::try_from(e.pos.0).ok()?, usize::try_from(e.pos.1).ok()?)));
            let detail = first.map_or_else(|| errors.to_string(), |e| e.msg.clone());
            let detail = detail.strip_prefix("Syntax error: ").unwrap_or(&detail);
            ConditionError { position, message: format!("`when` is not a valid CEL condition: {detail}") }
        })?;
        if let Some((name, id)) = unknown_variable(program.expression(), &mut Vec::new()) {
            let position = program.source_info().offset_for(id).map(|(start, _)| line_and_column(text, start));
            return Err(ConditionError {
                position,
                message: format!(
                    "unknown variable `{name}` in `when`; a condition can use {}",
                    VARIABLES.map(|v| format!("`{v}`")).join(", ")
                ),
            });
        }
        Ok(Self { program: Arc::new(program) })
    }

    /// Whether the condition holds in `context`; the reason when it cannot be told (an error, or
    /// a result that is not a bool).
    pub fn holds(&self, context: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(context) {
            Ok(CelValue::Bool(holds)) => Ok(holds),
            Ok(other) => Err(format!("`when` gave a value of type {}, not true or false", other.type_of())),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// The first identifier in `expr` that is neither a condition's variable, nor a type name, nor
/// bound by an enclosing macro (`args.items.all(x, x > 0)` binds `x`); with its node's id.
fn unknown_variable<'e>(expr: &'e IdedExpr, bound: &mut Vec<&'e str>) -> Option<(&'e str, u64)> {
    match &expr.expr {
        Expr::Ident(name) => {
            let known = VARIABLES.contains(&name.as_str())
                || TYPE_NAMES.contains(&name.as_str())
                || name.starts_with('@')
                || bound.contains(&name.as_str());
            (!known).then_some((name.as_str(), expr.id))
        }
        Expr::Call(call) => call
            .target
            .as_deref()
            .and_then(|target| unknown_variable(target, bound))
            .or_else(|| call.args.iter().find_map(|arg| unknown_variable(arg, bound))),
        Expr::Comprehension(comp) => {
            if let Some(found) = unknown_variable(&comp.iter_range, bound) {
                return Some(found);
            }
            let outer = bound.len();
            bound.extend([comp.iter_var.as_str(), comp.accu_var.as_str()]);
            bound.extend(comp.iter_var2.as_deref());
            let found = [&comp.accu_init, &comp.loop_cond, &comp.loop_step, &comp.result]
                .into_iter()
                .find_map(|part| unknown_variable(part, bound));
            bound.truncate(outer);
            found
        }
        Expr::List(list) => list.elements.iter().find_map(|element| unknown_variable(element, bound)),
        Expr::Map(map) => map.entries.iter().find_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                unknown_variable(&entry.key, bound).or_else(|| unknown_variable(&entry.value, bound))
            }
            EntryExpr::StructField(field) => unknown_variable(&field.value, bound),
        }),
        Expr::Struct(object) => object.entries.iter().find_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                unknown_variable(&entry.key, bound).or_else(|| unknown_variable(&entry.value, bound))
            }
            EntryExpr::StructField(field) => unknown_variable(&field.value, bound),
        }),
        Expr::Select(select) => unknown_variable(&select.operand, bound),
        Expr::Literal(_) | Expr::Unspecified => None,
    }
}

/// The 1-based line and column of the character at `offset` (counted in characters) of `text`.
fn line_and_column(text: &str, offset: u32) -> (usize, usize) {
    let before: String = text.chars().take(offset as usize).collect();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// The CEL context holding a call's variables; built once per evaluation, shared by its rules.
pub fn context(call: &Call<'_>) -> Context<'static, 'static> {
    let mut context = Context::with_env(Arc::clone(&CEL));
    context.add_variable_from_value("fn", call.fn_name);
    if let Some(args) = to_cel(call.args, 0) {
        context.add_variable_from_value("args", args);
    }
    context.add_variable_from_value("run_id", call.run_id);
    context.add_variable_from_value("kind", call.kind.as_str());
    context.add_variable_from_value("channel", call.channel);
    context.add_variable_from_value("msg", call.msg);
    context
}

/// A JSON value as CEL sees it: integers that fit are `int` (so `args.n + 1` works), larger ones
/// `uint`, others `double`. `None` past [`MAX_ARGS_DEPTH`].
fn to_cel(value: &Value, depth: usize) -> Option<CelValue> {
    if depth > MAX_ARGS_DEPTH {
        return None;
    }
    Some(match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            _ => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let items: Option<Vec<CelValue>> = items.iter().map(|item| to_cel(item, depth + 1)).collect();
            CelValue::List(Arc::new(items?))
        }
        Value::Object(fields) => {
            let mut map = HashMap::with_capacity(fields.len());
            for (key, field) in fields {
                map.insert(Key::String(Arc::new(key.clone())), to_cel(field, depth + 1)?);
            }
            CelValue::Map(Map { map: Arc::new(map) })
        }
    })
}
