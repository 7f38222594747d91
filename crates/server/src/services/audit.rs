//! The audit log: each project's sealed events in chain order, as the API and `countersign audit`
//! export them, and the verification that recomputes a chain from the stored rows.

use countersign_core::event::{ChainBreak, ChainHash, ChainVerifier, Checkpoint, Sealed};
use countersign_store::{AuditEvent, ChainState, Store, StoreResult};
use serde_json::{Value, json};

/// Events read per query while verifying or exporting.
pub const PAGE: u32 = 1000;

/// One exported event. `event` is the stored text its hash covers, byte for byte:
/// `hash = SHA-256("countersign.event.v1\0" || seq as 8 bytes big-endian || prev_hash || event)`.
pub fn event_json(e: &AuditEvent) -> Value {
    json!({
        "seq": e.seq,
        "prev_hash": e.prev_hash.to_hex(),
        "hash": e.hash.to_hex(),
        "sealed_at": e.sealed_at.to_rfc3339(),
        "event": e.body,
    })
}

/// A chain's head as JSON (`null` before its first sealed event).
pub fn head_json(head: Option<Checkpoint>) -> Value {
    head.map_or(Value::Null, |h| json!({"count": h.count, "hash": h.head.to_hex()}))
}

/// Recomputes a project's chain from its first event to its recorded head (re-read at the end,
/// so events sealed meanwhile count); with a checkpoint kept earlier, checks the chain still
/// holds it. The inner error names the first event that does not match.
pub async fn verify(
    store: &dyn Store,
    chain: &ChainState,
    checkpoint: Option<Checkpoint>,
) -> StoreResult<Result<Checkpoint, ChainBreak>> {
    let mut verifier = ChainVerifier::new(checkpoint);
    let mut recorded = chain.head;
    loop {
        let before = verifier.head().count;
        loop {
            let page = store.audit_events(&chain.project_id, verifier.head().count, PAGE).await?;
            for e in &page {
                let sealed = Sealed { seq: e.seq, event: e.body.as_bytes(), prev: e.prev_hash, hash: e.hash };
                if let Err(err) = verifier.push(sealed) {
                    return Ok(Err(err));
                }
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        let read = verifier.head().count;
        if recorded.is_some_and(|h| h.count > read) && read > before {
            // Sealed while this ran: read on to the head recorded now.
            recorded = store.chains(Some(&chain.project_id)).await?.into_iter().next().and_then(|c| c.head);
            continue;
        }
        if recorded.is_none_or(|h| h.count < read) {
            recorded = store.chains(Some(&chain.project_id)).await?.into_iter().next().and_then(|c| c.head);
        }
        return Ok(verifier.finish(Some(recorded.unwrap_or(Checkpoint { count: 0, head: ChainHash::GENESIS }))));
    }
}
