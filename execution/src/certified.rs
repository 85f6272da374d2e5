//! A block's certified batch: the batch PBFT ordered, read back from the block, and its
//! commit certificate checked against the replicas of the block's epoch (docs/adr/0011) —
//! what an auditor checks of every block, and what a peer that joins checks of each block
//! it fetches before executing it.

use medledger_pbft as pbft;
use medledger_proto::v1;

use crate::config::{Configuration, EpochBase};

/// The batch PBFT ordered, as `block` records it (its request ids, envelopes and batch
/// time).
///
/// # Errors
/// Why it cannot be read: ids and envelopes do not pair up, or an id is not 32 bytes.
pub fn batch_of(block: &v1::Block) -> Result<pbft::Batch, String> {
    if block.request_ids.len() != block.envelopes.len() {
        return Err(format!(
            "{} request ids for {} transactions",
            block.request_ids.len(),
            block.envelopes.len()
        ));
    }
    let requests = block
        .request_ids
        .iter()
        .zip(&block.envelopes)
        .map(|(id, payload)| {
            Ok(pbft::Request {
                tx_id: id
                    .as_slice()
                    .try_into()
                    .map_err(|_| "a request id is not 32 bytes".to_string())?,
                payload: payload.clone(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(pbft::Batch {
        timestamp_ms: block.batch_time_ms,
        requests,
    })
}

/// Checks that `certificate` holds a quorum of commits from distinct peers of
/// `configuration`, signed in the epoch that started at `base`, for `batch` at sequence
/// number `number` ([`pbft::check_commit_certificate`], the check the replicas apply).
/// Returns the commits.
///
/// # Errors
/// Why the certificate does not certify the batch, as words for a report.
pub fn check_block_certificate(
    configuration: &Configuration,
    base: EpochBase,
    number: u64,
    batch: &pbft::Batch,
    certificate: Option<&v1::CommitCertificate>,
) -> Result<Vec<pbft::Signed<pbft::Vote>>, String> {
    let certificate = certificate.ok_or("no commit certificate")?;
    let digest = batch.digest();
    if certificate.batch_digest != digest {
        return Err(
            "the commit certificate is for another batch than the block's transactions".into(),
        );
    }
    let vote = pbft::Vote {
        view: certificate.view,
        seq: number,
        digest,
    };
    let commits: Vec<pbft::Signed<pbft::Vote>> = certificate
        .commits
        .iter()
        .map(|c| pbft::Signed {
            from: c.replica,
            message: vote,
            signature: c.signature.clone(),
        })
        .collect();
    let replicas = configuration
        .replica_config(base)
        .map_err(|e| format!("the configuration in force: {e}"))?;
    pbft::check_commit_certificate(&replicas, number, &digest, &commits, |items| {
        items.iter().all(|(replica, _, bytes, signature)| {
            configuration.verify_consensus(*replica, bytes, signature)
        })
    })
    .map_err(|e| format!("the commit certificate does not certify the block: {e}"))?;
    Ok(commits)
}
