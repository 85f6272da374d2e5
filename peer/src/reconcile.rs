//! Reconciliation of private values (docs/adr/0017 §7, after Fabric's private data
//! reconciler). A transaction's values go to f+1 peers before it is ordered; every other
//! peer commits the block without them, and so does a peer that joined later or caught up
//! by fetching blocks. Each such value is recorded as missing in the block's own write
//! (`Ledger::commit_block`, [`crate::ledger::CF_PRIVATE_MISSING`]); this task asks the other
//! replicas for the missing values every round (`Ledger.GetPrivateData`), keeps each one
//! that matches its commitment, and stores it only while it is still missing, so a value
//! purged by an erasure in the meantime is never brought back.
//!
//! Who can lie here: the replica asked. A value is self-certifying (its commitment is
//! `private_commitment(salt, value)`, in the block), so a forged one is dropped and costs
//! the liar its turn; a replica that withholds values or stalls costs one call (bounded by
//! [`CALL_TIMEOUT`]) per round, and each round starts with the next replica.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use medledger_proto::v1;

use crate::join::{CALL_TIMEOUT, ledger_client};
use crate::ledger::Ledger;
use crate::network::Network;
use crate::private_data::{MAX_VALUE_BYTES, SaltedValue};

/// How often a peer reconciles by default (seconds; `reconcile_seconds` in its
/// configuration, 0 turning it off).
pub const DEFAULT_RECONCILE_SECONDS: u64 = 5;
/// Most commitments asked for in one call (and one round): at most this many values of
/// [`MAX_VALUE_BYTES`] come back, about 1 MiB.
pub const MAX_COMMITMENTS_PER_CALL: usize = 256;

/// What the reconciler needs of the node.
pub struct Reconciler {
    pub ledger: Arc<Ledger>,
    pub network: Arc<Network>,
    pub revoked: medledger_tls::SharedRevocations,
    /// Time between rounds.
    pub every: Duration,
}

impl Reconciler {
    /// Runs until aborted: each round reads up to [`MAX_COMMITMENTS_PER_CALL`] missing
    /// commitments and asks the other replicas in turn, from the next one each round,
    /// until every one is found or all were asked.
    pub async fn run(self) {
        let mut turn: usize = 0;
        loop {
            tokio::time::sleep(self.every).await;
            let missing = match self.ledger.missing_private(MAX_COMMITMENTS_PER_CALL) {
                Ok(missing) => missing,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the missing private values");
                    continue;
                }
            };
            if missing.is_empty() {
                continue;
            }
            let others = self.network.others();
            if others.is_empty() {
                continue;
            }
            turn = turn.wrapping_add(1);
            let (before, after) = others.split_at(turn % others.len());
            let mut wanted: Vec<[u8; 32]> = missing;
            for (replica, address, tls) in after.iter().chain(before).cloned() {
                match self.ask(&address, tls, &wanted).await {
                    Ok(found) => match self.ledger.store_reconciled(&found) {
                        Ok(stored) => {
                            metrics::counter!("medledger_private_values_reconciled_total")
                                .increment(stored as u64);
                            if stored > 0 {
                                tracing::debug!(replica, stored, "private values reconciled");
                            }
                            wanted.retain(|c| !found.iter().any(|(f, _)| f == c));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot store reconciled private values");
                            break;
                        }
                    },
                    Err(e) => {
                        tracing::debug!(replica, %address, error = %e, "no private values");
                    }
                }
                if wanted.is_empty() {
                    break;
                }
            }
        }
    }

    /// Asks the replica at `address` for the values of `wanted`; returns those that check.
    async fn ask(
        &self,
        address: &str,
        tls: Arc<rustls::ClientConfig>,
        wanted: &[[u8; 32]],
    ) -> Result<Vec<([u8; 32], SaltedValue)>, String> {
        let mut client = ledger_client(address, tls, self.revoked.clone()).await?;
        let call = client.get_private_data(v1::GetPrivateDataRequest {
            commitments: wanted.iter().map(|c| c.to_vec()).collect(),
        });
        let answer = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "answering took too long".to_string())?
            .map_err(|s| s.to_string())?
            .into_inner();
        Ok(checked(wanted, answer.values))
    }
}

/// The values of an answer to a request for `wanted` that were asked for and match their
/// commitments (`medledger_crypto::private_commitment(salt, value)`), each once, at most
/// [`MAX_VALUE_BYTES`] long. Anything else is dropped: a replica's word is not taken.
pub fn checked(
    wanted: &[[u8; 32]],
    values: Vec<v1::CommittedPrivateValue>,
) -> Vec<([u8; 32], SaltedValue)> {
    let mut found = BTreeMap::new();
    for v in values {
        let (Ok(commitment), Ok(salt)) = (
            <[u8; 32]>::try_from(v.commitment.as_slice()),
            <[u8; medledger_crypto::PRIVATE_SALT_LEN]>::try_from(v.salt.as_slice()),
        ) else {
            continue;
        };
        if !wanted.contains(&commitment)
            || found.contains_key(&commitment)
            || v.value.len() > MAX_VALUE_BYTES
            || medledger_crypto::private_commitment(&salt, &v.value) != commitment
        {
            continue;
        }
        found.insert(
            commitment,
            SaltedValue {
                salt,
                value: v.value,
            },
        );
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(tag: u8) -> v1::CommittedPrivateValue {
        let salt = [tag; 32];
        let value = vec![tag; 40];
        v1::CommittedPrivateValue {
            commitment: medledger_crypto::private_commitment(&salt, &value).to_vec(),
            salt: salt.to_vec(),
            value,
        }
    }

    #[test]
    fn only_values_asked_for_that_match_their_commitments_are_kept() {
        let (good, other, forged_of) = (value(1), value(2), value(3));
        let c =
            |v: &v1::CommittedPrivateValue| <[u8; 32]>::try_from(v.commitment.as_slice()).unwrap();
        let wanted = [c(&good), c(&forged_of)];
        let forged = v1::CommittedPrivateValue {
            value: vec![0x5c; 40],
            ..forged_of.clone()
        };
        let short_salt = v1::CommittedPrivateValue {
            salt: vec![3; 31],
            ..forged_of.clone()
        };
        let oversized = {
            let salt = [4; 32];
            let value = vec![4; MAX_VALUE_BYTES + 1];
            v1::CommittedPrivateValue {
                commitment: medledger_crypto::private_commitment(&salt, &value).to_vec(),
                salt: salt.to_vec(),
                value,
            }
        };
        let mut wanted_too = wanted.to_vec();
        wanted_too.push(<[u8; 32]>::try_from(oversized.commitment.as_slice()).unwrap());
        let kept = checked(
            &wanted_too,
            vec![
                forged,
                short_salt,
                other,
                oversized,
                good.clone(),
                good.clone(),
            ],
        );
        assert_eq!(kept.len(), 1, "the good value, once");
        assert_eq!(kept[0].0, c(&good));
        assert_eq!(kept[0].1.value, good.value);
        assert!(checked(&wanted, Vec::new()).is_empty());
    }
}
