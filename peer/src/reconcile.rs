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
//! `private_commitment(salt, value)`, in the block), so a forged one is dropped; an answer
//! is bounded in bytes ([`MAX_ANSWER_BYTES`]) and in entries (no more than asked for), and
//! a replica that withholds values or stalls costs one call of at most [`CALL_TIMEOUT`].
//! The missing values are walked with a cursor, so values no peer can give (all their
//! holders lost them) never hold up the others; rounds follow each other at once
//! (a page at a time) while full pages of them remain, and wait [`Reconciler::every`] at
//! the end of each pass.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use medledger_proto::v1;
use medledger_proto::v1::ledger_client::LedgerClient;

use crate::ledger::Ledger;
use crate::network::Network;
use crate::private_data::{MAX_VALUE_BYTES, SaltedValue};

/// How often a peer reconciles by default, once nothing more could be found (seconds;
/// `reconcile_seconds` in its configuration, 0 turning it off).
pub const DEFAULT_RECONCILE_SECONDS: u64 = 5;
/// Most commitments asked for in one call (and one round).
pub const MAX_COMMITMENTS_PER_CALL: usize = 256;
/// Largest answer taken: [`MAX_COMMITMENTS_PER_CALL`] values of [`MAX_VALUE_BYTES`] with
/// their commitments, salts and framing (under 74 bytes a value), with room to spare
/// (about 2 MiB).
pub const MAX_ANSWER_BYTES: usize = MAX_COMMITMENTS_PER_CALL * (MAX_VALUE_BYTES + 128);
/// How long one replica may take to connect or to answer one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Most passes a value every replica answered without is left out of before it is asked for
/// again: after the first such pass it is asked in the next, then after 2, 4, 8 and at most
/// 16 passes (a pass is `reconcile_seconds`, 5 s by default, plus its calls: up to 10 s for
/// each stalling replica and page): values whose holders all lost them cost a sixteenth of
/// the calls, and a value a replica regains waits at most 16 passes. A replica that refused,
/// timed out or was unreachable in a round backs off nothing of it (it may hold the values).
pub const MAX_BACKOFF_PASSES: u64 = 16;
/// Most values whose backoff is remembered (about 60 bytes each, some 6 MiB): past it, the
/// others are asked for every pass, as before.
pub const MAX_BACKOFF_ENTRIES: usize = 100_000;

/// One value asked for in vain.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// Passes in a row that asked every replica in vain.
    misses: u32,
    /// The first pass that asks for it again.
    next: u64,
    /// The last pass that found it missing.
    seen: u64,
}

/// Which missing values a pass asks for ([`MAX_BACKOFF_PASSES`]).
#[derive(Debug, Default)]
struct Backoff {
    waiting: std::collections::HashMap<[u8; 32], Waiting>,
}

impl Backoff {
    /// Whether pass `pass` asks for `commitment` (missing in it).
    fn due(&mut self, commitment: &[u8; 32], pass: u64) -> bool {
        match self.waiting.get_mut(commitment) {
            Some(waiting) => {
                waiting.seen = pass;
                waiting.next <= pass
            }
            None => true,
        }
    }

    /// Pass `pass` asked every replica for `commitment`, in vain.
    fn missed(&mut self, commitment: [u8; 32], pass: u64) {
        if !self.waiting.contains_key(&commitment) && self.waiting.len() >= MAX_BACKOFF_ENTRIES {
            return;
        }
        let waiting = self.waiting.entry(commitment).or_insert(Waiting {
            misses: 0,
            next: pass,
            seen: pass,
        });
        waiting.misses = waiting.misses.saturating_add(1);
        let wait = 1u64
            .checked_shl(waiting.misses.saturating_sub(1))
            .unwrap_or(u64::MAX)
            .min(MAX_BACKOFF_PASSES);
        waiting.next = pass.saturating_add(wait);
        waiting.seen = pass;
    }

    /// A replica gave `commitment`'s value.
    fn found(&mut self, commitment: &[u8; 32]) {
        self.waiting.remove(commitment);
    }

    /// Pass `pass` ended: values it did not find missing (stored, or purged) are forgotten.
    fn end_pass(&mut self, pass: u64) {
        self.waiting.retain(|_, waiting| waiting.seen == pass);
    }
}

/// What the last pass of reconciliation left (docs/adr/0017, step 5): how many committed
/// values this peer still lacks after asking every other replica for them, and when that
/// pass ended. Shared with the peer's status (`GetStatus`), the readers' report.
#[derive(Debug, Default)]
pub struct Progress {
    missing: AtomicU64,
    /// Unix ms; 0: no pass ended yet (or reconciliation is off).
    last_pass_ms: AtomicI64,
}

impl Progress {
    /// (values missing after the last pass, when it ended in Unix ms; 0: none yet).
    pub fn last_pass(&self) -> (u64, i64) {
        (
            self.missing.load(Ordering::Relaxed),
            self.last_pass_ms.load(Ordering::Relaxed),
        )
    }

    fn pass_ended(&self, missing: u64) {
        self.missing.store(missing, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.last_pass_ms.store(now, Ordering::Relaxed);
        metrics::gauge!("medledger_private_values_missing").set(missing as f64);
    }
}

/// What the reconciler needs of the node.
pub struct Reconciler {
    pub ledger: Arc<Ledger>,
    pub network: Arc<Network>,
    pub revoked: medledger_tls::SharedRevocations,
    /// Time between passes that found nothing more.
    pub every: Duration,
    /// Where each pass's end is told (the peer's status reads it).
    pub progress: Arc<Progress>,
}

impl Reconciler {
    /// Runs until aborted: each round takes up to [`MAX_COMMITMENTS_PER_CALL`] missing
    /// commitments from the cursor on and asks the other replicas in turn, from the next one
    /// each round, until every one is found or all were asked. A round that reaches the end
    /// of the missing values ends the pass: the cursor starts again from the first, after
    /// [`Reconciler::every`].
    pub async fn run(self) {
        let mut turn: usize = 0;
        let mut cursor: Option<[u8; 32]> = None;
        // Values no replica gave in this pass so far, or in the last pass that asked.
        let mut unavailable: u64 = 0;
        let mut backoff = Backoff::default();
        let mut pass: u64 = 0;
        loop {
            let ledger = self.ledger.clone();
            let after = cursor;
            let missing = match tokio::task::spawn_blocking(move || {
                ledger.missing_private(after.as_ref(), MAX_COMMITMENTS_PER_CALL)
            })
            .await
            {
                Ok(Ok(missing)) => missing,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the missing private values");
                    tokio::time::sleep(self.every).await;
                    continue;
                }
                Err(_) => return,
            };
            // A full page: the next one at once. The end of a pass: from the first again,
            // after a pause (values missing meanwhile wait for it, and are asked for
            // together).
            cursor = missing.last().copied();
            let end_of_pass = missing.len() < MAX_COMMITMENTS_PER_CALL;
            if end_of_pass {
                cursor = None;
            }
            let (due, waiting): (Vec<[u8; 32]>, Vec<[u8; 32]>) =
                missing.into_iter().partition(|c| backoff.due(c, pass));
            unavailable = unavailable.saturating_add(waiting.len() as u64);
            if !due.is_empty() {
                let (left, every_replica_answered) = self.round(&mut turn, due.clone()).await;
                for commitment in due {
                    if !left.contains(&commitment) {
                        backoff.found(&commitment);
                    } else if every_replica_answered {
                        // Only a value every replica answered without is backed off: a
                        // replica that refused (busy), timed out or was unreachable may
                        // hold it.
                        backoff.missed(commitment, pass);
                    }
                }
                unavailable = unavailable.saturating_add(left.len() as u64);
            }
            if end_of_pass {
                self.progress.pass_ended(unavailable);
                unavailable = 0;
                backoff.end_pass(pass);
                pass = pass.wrapping_add(1);
                tokio::time::sleep(self.every).await;
            }
        }
    }

    /// Asks the other replicas for `missing`, one after the other from the next one each
    /// round, storing what checks, until every value is found or all were asked. Returns
    /// those none gave, and whether every replica asked answered (none refused, timed out,
    /// was unreachable, and every value found was stored).
    async fn round(&self, turn: &mut usize, missing: Vec<[u8; 32]>) -> (HashSet<[u8; 32]>, bool) {
        let others = self.network.others();
        if others.is_empty() {
            return (missing.into_iter().collect(), false);
        }
        let mut every_replica_answered = true;
        *turn = turn.wrapping_add(1);
        let (before, after) = others.split_at(*turn % others.len());
        let mut wanted: HashSet<[u8; 32]> = missing.into_iter().collect();
        for (replica, address, tls) in after.iter().chain(before).cloned() {
            let found = match self.ask(&address, tls, &wanted).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(replica, %address, error = %e, "no private values");
                    every_replica_answered = false;
                    continue;
                }
            };
            for (commitment, _) in &found {
                wanted.remove(commitment);
            }
            let ledger = self.ledger.clone();
            match tokio::task::spawn_blocking(move || ledger.store_reconciled(&found)).await {
                Ok(Ok(stored)) => {
                    metrics::counter!("medledger_private_values_reconciled_total")
                        .increment(stored as u64);
                    if stored > 0 {
                        tracing::debug!(replica, stored, "private values reconciled");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot store reconciled private values");
                    return (wanted, false);
                }
                Err(_) => return (wanted, false),
            }
            if wanted.is_empty() {
                break;
            }
        }
        (wanted, every_replica_answered)
    }

    /// Asks the replica at `address` for the values of `wanted`; returns those that check.
    async fn ask(
        &self,
        address: &str,
        tls: Arc<rustls::ClientConfig>,
        wanted: &HashSet<[u8; 32]>,
    ) -> Result<Vec<([u8; 32], SaltedValue)>, String> {
        let connect = medledger_tls::connect(address, tls, self.revoked.clone());
        let channel = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| "connecting took too long".to_string())?
            .map_err(|e| e.to_string())?;
        let mut client = LedgerClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
        let call = client.get_private_data(v1::GetPrivateDataRequest {
            commitments: wanted.iter().map(|c| c.to_vec()).collect(),
        });
        let answer = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "answering took too long".to_string())?
            .map_err(|s| s.to_string())?
            .into_inner();
        if answer.values.len() > wanted.len() {
            return Err(format!(
                "{} values for {} commitments asked for",
                answer.values.len(),
                wanted.len()
            ));
        }
        Ok(checked(wanted, answer.values))
    }
}

/// The values of an answer to a request for `wanted` that were asked for and match their
/// commitments (`medledger_crypto::private_commitment(salt, value)`), each once, at most
/// [`MAX_VALUE_BYTES`] long. Anything else is dropped: a replica's word is not taken.
pub fn checked(
    wanted: &HashSet<[u8; 32]>,
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
    use crate::ledger::tests::{commit_private, fixture_ledger};

    #[test]
    fn a_value_asked_in_vain_is_asked_less_and_less_often_until_found() {
        let mut backoff = Backoff::default();
        let (lost, other) = ([1; 32], [2; 32]);
        // The passes that ask for `lost`, given that every ask is in vain.
        let mut asked = Vec::new();
        for pass in 0..64 {
            if backoff.due(&lost, pass) {
                asked.push(pass);
                backoff.missed(lost, pass);
            }
            assert!(
                backoff.due(&other, pass),
                "a value never missed is always asked"
            );
            backoff.end_pass(pass);
        }
        // The next pass, then 2, 4, 8 and 16 passes later, then every 16th.
        assert_eq!(asked, [0, 1, 3, 7, 15, 31, 47, 63]);
        // Found: asked for again at once the next time it is missing.
        backoff.found(&lost);
        assert!(backoff.due(&lost, 64));
        // A value no longer missing (stored, purged) is forgotten at the end of a pass.
        backoff.missed(other, 64);
        backoff.end_pass(65);
        assert!(backoff.waiting.is_empty());
    }

    fn value(tag: u8) -> v1::CommittedPrivateValue {
        let salt = [tag; 32];
        let value = vec![tag; 40];
        v1::CommittedPrivateValue {
            commitment: medledger_crypto::private_commitment(&salt, &value).to_vec(),
            salt: salt.to_vec(),
            value,
        }
    }

    fn salted(v: &v1::CommittedPrivateValue) -> ([u8; 32], SaltedValue) {
        (
            v.commitment.as_slice().try_into().unwrap(),
            SaltedValue {
                salt: v.salt.as_slice().try_into().unwrap(),
                value: v.value.clone(),
            },
        )
    }

    #[test]
    fn a_value_is_stored_only_while_missing_and_never_after_its_purge() {
        let (_dir, ledger) = fixture_ledger();
        let (purged, kept) = (salted(&value(1)), salted(&value(2)));
        // A block commits both, given to this peer neither: both missing.
        commit_private(&ledger, &[], &[purged.0, kept.0], &[]);
        let mut missing = ledger.missing_private(None, 10).unwrap();
        missing.sort();
        let mut expected = vec![purged.0, kept.0];
        expected.sort();
        assert_eq!(missing, expected);
        // The cursor walks on past the first.
        assert_eq!(
            ledger.missing_private(Some(&expected[0]), 10).unwrap(),
            vec![expected[1]]
        );
        // The next block purges one; its value arrives after, and is not stored.
        commit_private(&ledger, &[], &[], &[purged.0]);
        assert_eq!(ledger.missing_private(None, 10).unwrap(), vec![kept.0]);
        assert_eq!(
            ledger
                .store_reconciled(&[purged.clone(), kept.clone()])
                .unwrap(),
            1
        );
        assert!(ledger.private_value(&purged.0).unwrap().is_none());
        assert_eq!(
            ledger.private_value(&kept.0).unwrap().unwrap().value,
            kept.1.value
        );
        // Stored once: no longer missing, not stored again.
        assert!(ledger.missing_private(None, 10).unwrap().is_empty());
        assert_eq!(ledger.store_reconciled(&[kept]).unwrap(), 0);
    }

    #[test]
    fn only_values_asked_for_that_match_their_commitments_are_kept() {
        let (good, other, forged_of) = (value(1), value(2), value(3));
        let c =
            |v: &v1::CommittedPrivateValue| <[u8; 32]>::try_from(v.commitment.as_slice()).unwrap();
        let wanted: HashSet<[u8; 32]> = [c(&good), c(&forged_of)].into_iter().collect();
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
        let mut wanted_too = wanted.clone();
        wanted_too.insert(<[u8; 32]>::try_from(oversized.commitment.as_slice()).unwrap());
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
