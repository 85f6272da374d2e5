//! The gateway finishes every committed erasure, however it was submitted (issue 20 item 6;
//! docs/adr/0015). An erasure too large for one step leaves its purge under way: the gateway
//! sends `purge_erased`, a bounded step each, until it is complete. The ledger queues each
//! object a purge tombstones (`medledger_chaincode::erasure`); the gateway pages through
//! that queue, deletes each object from the store (one already gone counts as deleted), and
//! confirms them in one transaction per page, which takes them off. Nothing of it is kept
//! here: a gateway that crashed, or was down when the erasure committed, finds the same
//! purges and queue at its next round.
//!
//! Trust: the gateway deletes only what f+1 peers agree is queued
//! ([`PeerSet::query_agreed_as`]), so no single lying peer can make it delete a live
//! record's files; and only paths of the two shapes the chaincode writes
//! (`patients/…`, `studies/…`).

use std::sync::Arc;
use std::time::Duration;

use medledger_proto::v1;
use medledger_sdk::error::ClientError;
use medledger_sdk::peer::PeerSet;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use prost::Message;

/// Pause between rounds while nothing is queued (an erasure's objects are deleted within
/// about this of its commit).
pub const ROUND_EVERY: Duration = Duration::from_secs(3);
/// Paths asked for per page (the chaincode's `MAX_DELETIONS_PAGE`).
const PAGE: u32 = 256;
/// Most pages one round works through before it pauses.
const PAGES_PER_ROUND: usize = 16;
/// Most records whose purge one round steps, and steps per record.
const PURGES_PER_ROUND: u32 = 16;
const STEPS_PER_PURGE: usize = 8;

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Purge steps committed.
    pub purge_steps: usize,
    /// Objects deleted (or found gone) and confirmed on the ledger.
    pub confirmed: usize,
    /// Objects left queued: the store refused them, or their path is not one the chaincode
    /// writes (logged; tried again next round).
    pub left: usize,
}

/// Where the next round goes on in both lists: a round that stops short (its page or purge
/// budget spent) leaves them here, so entries the store keeps refusing, or purges at the
/// front of the list, cannot starve the ones behind them; at the end of a list it wraps.
#[derive(Debug, Default, Clone)]
pub struct Cursors {
    /// The last pseudonym (hex) whose purge was stepped.
    pub purges: String,
    /// The last queued path looked at.
    pub objects: String,
}

/// Runs rounds for as long as the task lives, logging what each one did.
pub async fn follow(peers: Arc<PeerSet>, store: Arc<dyn ObjectStore>) {
    let mut cursors = Cursors::default();
    loop {
        match round(&peers, store.as_ref(), &mut cursors).await {
            Ok(done) if done == Round::default() => {}
            Ok(done) => tracing::info!(
                purge_steps = done.purge_steps,
                confirmed = done.confirmed,
                left = done.left,
                "erased records' objects deleted from the store"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not read or confirm the erased objects queue; trying again")
            }
        }
        tokio::time::sleep(ROUND_EVERY).await;
    }
}

/// One round: up to [`STEPS_PER_PURGE`] steps of up to [`PURGES_PER_ROUND`] purges under
/// way, then up to [`PAGES_PER_ROUND`] pages of the queue, each deleted and confirmed; both
/// from `cursors`, which it moves on. A purge whose step fails (refused, or finished
/// meanwhile by its owner) is logged and passed over: it never keeps the round from the
/// objects.
///
/// # Errors
/// The peers could not agree on a page of the objects queue (`NoQuorum`, unreachable) or
/// refused the confirmation; what was confirmed before stays confirmed.
pub async fn round(
    peers: &PeerSet,
    store: &dyn ObjectStore,
    cursors: &mut Cursors,
) -> Result<Round, ClientError> {
    let mut done = Round::default();
    if let Err(e) = purge_steps(peers, cursors, &mut done).await {
        tracing::warn!(error = %e, "could not read the purges under way; the objects go on");
    }
    delete_queued(peers, store, cursors, &mut done).await?;
    Ok(done)
}

/// The purge part of [`round`].
async fn purge_steps(
    peers: &PeerSet,
    cursors: &mut Cursors,
    done: &mut Round,
) -> Result<(), ClientError> {
    let purges: v1::PatientList = peers
        .query_agreed_as(
            "pending_purges",
            v1::PendingDeletionsArgs {
                after: cursors.purges.clone(),
                limit: PURGES_PER_ROUND,
            },
        )
        .await?;
    let full = purges.pseudonyms.len() >= PURGES_PER_ROUND as usize;
    for pseudonym in &purges.pseudonyms {
        for _ in 0..STEPS_PER_PURGE {
            let step = peers
                .submit(
                    "purge_erased",
                    v1::PatientArgs {
                        pseudonym: pseudonym.clone(),
                    }
                    .encode_to_vec(),
                )
                .await
                .and_then(|receipt| receipt.into_valid());
            let committed = match step {
                Ok(committed) => committed,
                Err(e) => {
                    tracing::warn!(record = %hex::encode(pseudonym), error = %e, "a purge step failed; the next round tries again");
                    break;
                }
            };
            done.purge_steps = done.purge_steps.saturating_add(1);
            let step = v1::ErasureResult::decode(committed.result.as_slice()).unwrap_or_default();
            if step.purge_complete {
                break;
            }
        }
    }
    cursors.purges = match purges.pseudonyms.last() {
        Some(last) if full => hex::encode(last),
        _ => String::new(),
    };
    Ok(())
}

/// The objects part of [`round`].
async fn delete_queued(
    peers: &PeerSet,
    store: &dyn ObjectStore,
    cursors: &mut Cursors,
    done: &mut Round,
) -> Result<(), ClientError> {
    for _ in 0..PAGES_PER_ROUND {
        let page: v1::PendingDeletions = peers
            .query_agreed_as(
                "pending_object_deletions",
                v1::PendingDeletionsArgs {
                    after: cursors.objects.clone(),
                    limit: PAGE,
                },
            )
            .await?;
        let mut deleted = Vec::with_capacity(page.deletions.len());
        for pending in page.deletions {
            if !written_by_the_chaincode(&pending.path) {
                tracing::error!(path = %pending.path, "an erasure queued a path of no shape the chaincode writes; left as it is");
                done.left = done.left.saturating_add(1);
                continue;
            }
            match store.delete(&ObjectPath::from(pending.path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted.push(pending.path),
                Err(e) => {
                    tracing::warn!(path = %pending.path, error = %e, "the store did not delete an erased object; trying again next round");
                    done.left = done.left.saturating_add(1);
                }
            }
        }
        if !deleted.is_empty() {
            let committed = peers
                .submit(
                    "confirm_object_deletions",
                    v1::ConfirmDeletionsArgs { paths: deleted }.encode_to_vec(),
                )
                .await?
                .into_valid()?;
            let result =
                v1::ConfirmDeletionsResult::decode(committed.result.as_slice()).unwrap_or_default();
            done.confirmed = done
                .confirmed
                .saturating_add(usize::try_from(result.confirmed).unwrap_or(usize::MAX));
        }
        // At the end of the queue the next round starts at its front again.
        cursors.objects = page.next_after;
        if cursors.objects.is_empty() {
            break;
        }
    }
    Ok(())
}

/// `patients/{64 hex}/…` or `studies/{study}/{64 hex}/…`, without `..` or empty segments.
fn written_by_the_chaincode(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let clean = parts
        .iter()
        .all(|p| !p.is_empty() && *p != "." && *p != "..");
    clean
        && match parts.as_slice() {
            ["patients", p, _, _] => hex64(p),
            ["studies", _, p, _] => hex64(p),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::written_by_the_chaincode;

    #[test]
    fn only_paths_the_chaincode_writes_are_deleted() {
        let p = "ab".repeat(32);
        for fine in [
            format!("patients/{p}/lab-results/item-1"),
            format!("studies/study-1/{p}/s-1"),
        ] {
            assert!(written_by_the_chaincode(&fine), "{fine}");
        }
        for wrong in [
            String::new(),
            "patients".into(),
            format!("patients/{p}/lab-results"),
            format!("patients/{p}/lab-results/item-1/more"),
            format!("patients/{}/lab-results/item-1", "ab".repeat(31)),
            format!("patients/{}/lab-results/item-1", "zz".repeat(32)),
            format!("patients/{p}/../item-1"),
            format!("patients/{p}//item-1"),
            format!("other/{p}/lab-results/item-1"),
            format!("studies/study-1/{p}/"),
        ] {
            assert!(!written_by_the_chaincode(&wrong), "{wrong}");
        }
    }
}
