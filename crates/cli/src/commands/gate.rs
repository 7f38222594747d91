//! `countersign mcp gate`: the flags of the gate ([`countersign_mcp::gate`]), which puts a human in
//! front of another MCP server's tools.

use crate::cli::GateArgs;
use crate::exit::{Exit, Failure};
use countersign_mcp::gate::{self, Downstream};
use serde_json::{Map, Value};

/// Loads the rules, then explains one call (`--explain`) or serves the gate on stdio until the
/// client or the downstream server goes.
pub(crate) async fn run(args: GateArgs) -> anyhow::Result<()> {
    let rules = gate::load_rules(args.rules.as_deref(), &args.ask).map_err(failure)?;
    // Standard output is the MCP protocol; warnings go to standard error, as logs do.
    for warning in rules.warnings() {
        eprintln!("warning: {warning}");
    }
    if let Some(call) = &args.explain {
        let tool = &call[0];
        println!("{}", gate::explain(&rules, tool, &explain_arguments(tool, call.get(1))?));
        return Ok(());
    }
    let downstream = match (args.url, args.command.is_empty()) {
        (Some(url), true) => Downstream::Url { url, headers: parse_headers(&args.header)? },
        (None, false) => Downstream::Command(args.command),
        _ => {
            return Err(Failure::new(
                Exit::Usage,
                "name the downstream MCP server: `countersign mcp gate [--rules FILE] -- COMMAND ARGS...` or `--url URL`",
            )
            .into());
        }
    };
    let countersign = super::mcp::client(&args.connection, "gate")?;
    gate::serve_stdio(downstream, rules, countersign).await.map_err(failure)
}

/// A gate error as the command's outcome: bad rules or headers are usage errors (exit 2).
fn failure(err: countersign_mcp::Error) -> anyhow::Error {
    match err {
        countersign_mcp::Error::Rules(_) | countersign_mcp::Error::Header(_) => {
            Failure::new(Exit::Usage, err.to_string()).into()
        }
        other => other.into(),
    }
}

/// The arguments of `--explain TOOL [ARGUMENTS]`: a JSON object, or none.
fn explain_arguments(tool: &str, json: Option<&String>) -> anyhow::Result<Map<String, Value>> {
    match json.map(|json| serde_json::from_str::<Value>(json)) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(arguments))) => Ok(arguments),
        Some(_) => {
            let message =
                format!("--explain {tool}: the arguments must be a JSON object, e.g. '{{\"path\": \"/tmp/x\"}}'");
            Err(Failure::new(Exit::Usage, message).into())
        }
    }
}

/// `Name: value` pairs from `--header`.
fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    headers
        .iter()
        .map(|header| match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
            _ => Err(Failure::new(Exit::Usage, format!("--header {header:?} is not `Name: value`")).into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_colon_value() {
        let parsed = parse_headers(&["Authorization: Bearer cs_1".into(), "X-A:b".into()]).unwrap();
        assert_eq!(parsed, [("Authorization".into(), "Bearer cs_1".into()), ("X-A".into(), "b".into())]);
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert!(parse_headers(&[": v".into()]).is_err());
    }

    #[test]
    fn bad_rules_are_usage_errors() {
        let err = failure(countersign_mcp::Error::Rules("gate.rules:1: unknown action".into()));
        assert_eq!(crate::exit::of(&err), Exit::Usage);
        let err = failure(countersign_mcp::Error::Countersign("cannot reach Countersign".into()));
        assert_eq!(crate::exit::of(&err), Exit::Other);
    }
}
