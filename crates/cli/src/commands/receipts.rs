//! `countersign receipts verify | keys | rotate-key` (also `countersign receipt ...`).

use super::open_store;
use crate::cli::ReceiptsCommand;
use crate::config::Config;
use crate::exit::{Exit, Failure};
use anyhow::{Context, bail};
use countersign_core::Timestamp;
use countersign_receipt::{PublicKey, ReceiptError, verify};
use countersign_server::services::receipts::{jwks, new_key};
use serde_json::{Value, json};
use std::io::Read;

/// Longest keys.json read from a file or URL.
const MAX_KEYS_BYTES: usize = 1024 * 1024;

pub async fn run(config: &Config, cmd: ReceiptsCommand) -> anyhow::Result<()> {
    match cmd {
        ReceiptsCommand::Verify { receipt, args, call_id, keys, json } => {
            let receipt = if receipt == "-" {
                let mut text = String::new();
                std::io::stdin().take(countersign_receipt::MAX_RECEIPT_BYTES as u64 + 1).read_to_string(&mut text)?;
                text
            } else {
                receipt
            };
            let args: Option<Value> = args
                .map(|a| serde_json::from_str(&a))
                .transpose()
                .map_err(|e| Failure::new(Exit::Usage, format!("--args is not JSON: {e}")))?;
            let published = match keys {
                Some(source) => published_keys(&source).await?,
                None => {
                    let store = open_store(config).await?;
                    let keys = store.signing_keys().await;
                    store.close().await;
                    PublicKey::from_jwks(&jwks(&keys?))
                }
            };
            let checked = verify(&receipt, &published).and_then(|claims| {
                if let Some(expected) = call_id.as_deref().filter(|id| *id != claims.call_id) {
                    return Err(ReceiptError::OtherCall {
                        receipt: format!("{} {:?}", claims.kind, claims.call_id),
                        expected: format!("call {expected:?}"),
                    });
                }
                if let Some(args) = &args {
                    claims.check_args(args)?;
                }
                Ok(claims)
            });
            match checked {
                Ok(claims) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&json!({"valid": true, "receipt": claims}))?);
                    } else {
                        println!(
                            "Valid receipt (key {}): {} {} {:?} of run {:?} was {} by {} at {}.",
                            claims.kid,
                            claims.kind,
                            claims.function.as_deref().unwrap_or("-"),
                            claims.call_id,
                            claims.run_id,
                            claims.decision,
                            claims.decided_by,
                            claims.decided_at
                        );
                        if args.is_some() {
                            println!(
                                "The arguments are the approved ones (SHA-256 {}).",
                                claims.args_sha256.unwrap_or_default()
                            );
                        }
                    }
                }
                Err(e) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&json!({"valid": false, "error": e.to_string()}))?);
                    }
                    bail!(Failure::new(Exit::Other, format!("invalid receipt: {e}")));
                }
            }
        }
        ReceiptsCommand::Keys { json } => {
            let store = open_store(config).await?;
            let keys = store.signing_keys().await;
            store.close().await;
            let keys = keys?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jwks(&keys))?);
            } else if keys.is_empty() {
                println!("No signing key yet: the server makes one when it first starts.");
            } else {
                for k in &keys {
                    match k.valid_until {
                        None => println!("{}  current, since {}", k.kid, k.valid_from),
                        Some(until) => {
                            println!("{}  from {} until {} (rotated out, still published)", k.kid, k.valid_from, until)
                        }
                    }
                }
            }
        }
        ReceiptsCommand::RotateKey { json } => {
            let store = open_store(config).await?;
            let new = new_key(Timestamp::now());
            let old = store.rotate_signing_key(&new).await;
            store.close().await;
            let old = old?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"current": new.kid, "rotated_out": old.as_ref().map(|k| &k.kid)})
                    )?
                );
            } else {
                match old {
                    Some(old) => println!(
                        "Receipts are now signed with {}; {} signed until now and stays published. Running servers switch within 5 s.",
                        new.kid, old.kid
                    ),
                    None => println!("Receipts are now signed with {} (there was no key before).", new.kid),
                }
            }
        }
    }
    Ok(())
}

/// The keys of a keys.json file or URL.
async fn published_keys(source: &str) -> anyhow::Result<Vec<PublicKey>> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let answer = reqwest::Client::new()
            .get(source)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("cannot fetch the keys from {source}"))?;
        if !answer.status().is_success() {
            bail!("{source} answered HTTP {}", answer.status());
        }
        let body = answer.bytes().await?;
        if body.len() > MAX_KEYS_BYTES {
            bail!("{source} answered more than {MAX_KEYS_BYTES} bytes");
        }
        String::from_utf8_lossy(&body).into_owned()
    } else {
        std::fs::read_to_string(source).with_context(|| format!("cannot read the keys file {source}"))?
    };
    let jwks: Value = serde_json::from_str(&text).with_context(|| format!("{source} is not JSON"))?;
    let keys = PublicKey::from_jwks(&jwks);
    if keys.is_empty() {
        bail!(Failure::new(Exit::Usage, format!("{source} has no Ed25519 keys (a JWK set: {{\"keys\": [...]}})")));
    }
    Ok(keys)
}
