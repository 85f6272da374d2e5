//! Private values a peer holds for transactions not committed yet (docs/adr/0017 §4): what
//! `Ledger.PutPrivateData` accepted and acknowledged, kept until the transaction commits
//! (then moved into the ledger's private column family in the block's write) or until its
//! expiry plus a grace, whichever comes first. Bounded in bytes per value, per creator and
//! in all: a client that sends values for transactions it never submits fills only its own
//! share, for no longer than a transaction lives.

use std::collections::BTreeMap;
use std::sync::Mutex;

use medledger_crypto::PRIVATE_SALT_LEN;

/// Largest value taken (bytes): key material (an 80-byte envelope or wrapped key) fits many
/// times over, and so does the largest sealed reason (ledger format 7: 512 bytes of text
/// sealed to the owner and 32 auditors, 4,459 bytes encoded). The chaincode bounds a clear
/// envelope at 512 bytes but cannot see a committed value's length, so this bound is what
/// keeps a private value from costing every holder more than a few KiB.
pub const MAX_VALUE_BYTES: usize = 8 << 10;
/// Most bytes pending for one creator (by certificate hash).
pub const MAX_CREATOR_BYTES: usize = 4 << 20;
/// Most bytes pending in all.
pub const MAX_TOTAL_BYTES: usize = 256 << 20;
/// How long past its transaction's expiry a value is kept (ms), in consensus time: what
/// [`PendingPrivateData::expire`] is given is a committed block's time, past which no later
/// block can validate the transaction.
pub const GRACE_MS: i64 = 120_000;
/// How long past that this peer's own clock keeps a value at most (ms): a backstop for a
/// network that commits no block for an hour. A batch keeps the time it was stamped with
/// even when it commits much later (after view changes), so the wall clock alone must not
/// drop what a late block may still validate.
pub const WALL_CLOCK_BACKSTOP_MS: i64 = 3_600_000;
/// What one value costs beyond its bytes: its commitment, salt and bookkeeping.
const VALUE_OVERHEAD: usize = 32 + PRIVATE_SALT_LEN + 64;
/// What one pending transaction costs beyond its values: its entry in two maps (counted so
/// that many transactions of empty values fill a budget as their memory does).
const TRANSACTION_OVERHEAD: usize = 1024;

/// One private value and the salt its commitment was made with.
#[derive(Clone, PartialEq, Eq)]
pub struct SaltedValue {
    pub salt: [u8; PRIVATE_SALT_LEN],
    pub value: Vec<u8>,
}

impl std::fmt::Debug for SaltedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret (a wrapped key, a sealed reason): its size only, never its bytes.
        write!(f, "SaltedValue({} bytes)", self.value.len())
    }
}

/// One pending value as kept on disk (`Ledger::pending_private`), to restore at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    pub transaction_hash: [u8; 32],
    /// Its transaction's expiry plus [`GRACE_MS`] (ms).
    pub keep_until_ms: i64,
    /// The creator's signing key, whose share it counts in.
    pub creator: [u8; 32],
    pub commitment: [u8; 32],
    pub value: SaltedValue,
}

/// Why values were not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PendingError {
    #[error("a private value of {0} bytes; at most {MAX_VALUE_BYTES}")]
    ValueTooLarge(usize),
    #[error(
        "this creator already has {held} bytes of private values pending; with {more} more it \
         would pass {MAX_CREATOR_BYTES}: submit or let expire the transactions they belong to"
    )]
    CreatorOverBudget { held: usize, more: usize },
    #[error("this peer holds {MAX_TOTAL_BYTES} bytes of pending private values; try later")]
    Full,
    #[error("the transaction is already in a block: its values are not taken now")]
    Committed,
}

/// How many transactions committed last are remembered as taken ([`PendingPrivateData::take`]):
/// a put for one of them is refused under the store's lock, closing the moment between a
/// block taking its values and its transaction index reaching the disk (which
/// `PutPrivateData` checks too, for anything older). 2 MiB of hashes at most.
const REMEMBERED_TAKEN: usize = 65_536;

#[derive(Debug)]
struct Pending {
    creator: [u8; 32],
    keep_until_ms: i64,
    values: BTreeMap<[u8; 32], SaltedValue>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    by_transaction: BTreeMap<[u8; 32], Pending>,
    /// (keep-until ms, transaction hash) of every pending transaction: expiry pops from the
    /// front instead of scanning the store under the lock.
    by_expiry: std::collections::BTreeSet<(i64, [u8; 32])>,
    by_creator: BTreeMap<[u8; 32], usize>,
    total: usize,
    /// Hashes of the transactions whose block took their values, oldest first, at most
    /// [`REMEMBERED_TAKEN`], and the same as a set.
    taken_order: std::collections::VecDeque<[u8; 32]>,
    taken: std::collections::HashSet<[u8; 32]>,
}

impl Inner {
    fn remove(&mut self, transaction_hash: &[u8; 32]) -> Option<Pending> {
        let pending = self.by_transaction.remove(transaction_hash)?;
        self.by_expiry
            .remove(&(pending.keep_until_ms, *transaction_hash));
        self.total = self.total.saturating_sub(pending.bytes);
        if let Some(held) = self.by_creator.get_mut(&pending.creator) {
            *held = held.saturating_sub(pending.bytes);
            if *held == 0 {
                self.by_creator.remove(&pending.creator);
            }
        }
        Some(pending)
    }
}

/// The pending store: thread-safe, in memory, with a copy on disk the host writes before it
/// acknowledges ([`crate::ledger::Ledger::put_pending_private`]) and restores at start
/// ([`Self::restore`]): an acknowledgment vouches for values that survive a restart.
#[derive(Debug, Default)]
pub struct PendingPrivateData {
    inner: Mutex<Inner>,
}

impl PendingPrivateData {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `values` (by commitment) for the transaction whose hash is `transaction_hash`
    /// (returns until when, ms: what the copy on disk records),
    /// created by the certificate whose hash is `creator`, until `expires_at_ms` (the
    /// transaction's expiry, Unix ms) plus [`GRACE_MS`] in consensus time
    /// ([`Self::expire`]). Values already held for it are kept (a client may send them
    /// again); entries past the [`WALL_CLOCK_BACKSTOP_MS`] of `now_ms` (this peer's clock)
    /// are dropped first.
    ///
    /// # Errors
    /// [`PendingError`]: a value too large, or the creator's or the peer's budget full.
    /// Nothing is taken then.
    pub fn put(
        &self,
        transaction_hash: [u8; 32],
        creator: [u8; 32],
        expires_at_ms: i64,
        values: Vec<([u8; 32], SaltedValue)>,
        now_ms: i64,
    ) -> Result<i64, PendingError> {
        if let Some((_, v)) = values.iter().find(|(_, v)| v.value.len() > MAX_VALUE_BYTES) {
            return Err(PendingError::ValueTooLarge(v.value.len()));
        }
        let mut inner = self.lock();
        if inner.taken.contains(&transaction_hash) {
            return Err(PendingError::Committed);
        }
        // What the backstop drops stays on disk until the next block's expiry pass misses
        // it; a restart restores it and the first block past it drops it again.
        let _ = Self::expire_locked(&mut inner, now_ms.saturating_sub(WALL_CLOCK_BACKSTOP_MS));
        let held_here = inner.by_transaction.get(&transaction_hash);
        let new: Vec<([u8; 32], SaltedValue)> = values
            .into_iter()
            .filter(|(c, _)| held_here.is_none_or(|p| !p.values.contains_key(c)))
            .collect();
        let more: usize = new
            .iter()
            .map(|(_, v)| v.value.len().saturating_add(VALUE_OVERHEAD))
            .fold(
                if held_here.is_some() {
                    0
                } else {
                    TRANSACTION_OVERHEAD
                },
                usize::saturating_add,
            );
        let held = inner.by_creator.get(&creator).copied().unwrap_or(0);
        if held.saturating_add(more) > MAX_CREATOR_BYTES {
            return Err(PendingError::CreatorOverBudget { held, more });
        }
        if inner.total.saturating_add(more) > MAX_TOTAL_BYTES {
            return Err(PendingError::Full);
        }
        let keep_until_ms = expires_at_ms.saturating_add(GRACE_MS);
        if !inner.by_transaction.contains_key(&transaction_hash) {
            inner.by_expiry.insert((keep_until_ms, transaction_hash));
        }
        let pending = inner
            .by_transaction
            .entry(transaction_hash)
            .or_insert_with(|| Pending {
                creator,
                keep_until_ms,
                values: BTreeMap::new(),
                bytes: 0,
            });
        pending.values.extend(new);
        pending.bytes = pending.bytes.saturating_add(more);
        let creator = pending.creator;
        let keep_until_ms = pending.keep_until_ms;
        *inner.by_creator.entry(creator).or_insert(0) += more;
        inner.total = inner.total.saturating_add(more);
        Ok(keep_until_ms)
    }

    /// The values held for the transaction whose hash is `transaction_hash`, removed from
    /// the pending store (it committed: they move to the ledger's private column family).
    /// The transaction is remembered as taken: a later [`Self::put`] for it is refused
    /// ([`PendingError::Committed`]).
    pub fn take(&self, transaction_hash: &[u8; 32]) -> Option<BTreeMap<[u8; 32], SaltedValue>> {
        let mut inner = self.lock();
        if inner.taken.insert(*transaction_hash) {
            inner.taken_order.push_back(*transaction_hash);
            while inner.taken_order.len() > REMEMBERED_TAKEN {
                if let Some(oldest) = inner.taken_order.pop_front() {
                    inner.taken.remove(&oldest);
                }
            }
        }
        inner.remove(transaction_hash).map(|p| p.values)
    }

    /// The values held for the transaction whose hash is `transaction_hash`, dropped
    /// without remembering it as taken: a put undone (its write to disk failed).
    pub fn withdraw(&self, transaction_hash: &[u8; 32]) {
        self.lock().remove(transaction_hash);
    }

    /// Drops what was kept past its transaction's expiry and grace at `block_time_ms`, the
    /// consensus time of a committed block (ms): no later block validates it. Returns what
    /// it dropped (transaction hash, commitment), for the copy on disk.
    pub fn expire(&self, block_time_ms: i64) -> Vec<([u8; 32], [u8; 32])> {
        Self::expire_locked(&mut self.lock(), block_time_ms)
    }

    fn expire_locked(inner: &mut Inner, now_ms: i64) -> Vec<([u8; 32], [u8; 32])> {
        let ended: Vec<[u8; 32]> = inner
            .by_expiry
            .range(..(now_ms, [0; 32]))
            .map(|(_, hash)| *hash)
            .collect();
        let mut dropped = Vec::new();
        for hash in ended {
            if let Some(pending) = inner.remove(&hash) {
                dropped.extend(pending.values.keys().map(|c| (hash, *c)));
            }
        }
        dropped
    }

    /// Restores what was pending on disk at start (`Ledger::pending_private`), each value
    /// counted in its creator's share and in all as [`Self::put`] counts it, whatever the
    /// budgets (they held when it was taken).
    pub fn restore(&self, entries: Vec<PendingEntry>) {
        let mut inner = self.lock();
        for entry in entries {
            let fresh = !inner.by_transaction.contains_key(&entry.transaction_hash);
            let cost = entry
                .value
                .value
                .len()
                .saturating_add(VALUE_OVERHEAD)
                .saturating_add(if fresh { TRANSACTION_OVERHEAD } else { 0 });
            if fresh {
                inner
                    .by_expiry
                    .insert((entry.keep_until_ms, entry.transaction_hash));
            }
            let pending = inner
                .by_transaction
                .entry(entry.transaction_hash)
                .or_insert_with(|| Pending {
                    creator: entry.creator,
                    keep_until_ms: entry.keep_until_ms,
                    values: BTreeMap::new(),
                    bytes: 0,
                });
            if pending
                .values
                .insert(entry.commitment, entry.value)
                .is_some()
            {
                continue;
            }
            pending.bytes = pending.bytes.saturating_add(cost);
            let creator = pending.creator;
            *inner.by_creator.entry(creator).or_insert(0) += cost;
            inner.total = inner.total.saturating_add(cost);
        }
    }

    /// Bytes pending in all, and for `creator`.
    pub fn held(&self, creator: &[u8; 32]) -> (usize, usize) {
        let inner = self.lock();
        (
            inner.total,
            inner.by_creator.get(creator).copied().unwrap_or(0),
        )
    }
}

/// Pairs `values` (salt seed and value, as the creator whose signing key is `creator_key`
/// sent them) with `commitments` (a transaction's): each value, under the salt derived from
/// its seed and `creator_key` (`medledger_crypto::private_salt`), must commit to one of
/// them, each commitment must be matched exactly once, and every value must fit
/// [`MAX_VALUE_BYTES`]. Returns the values by commitment, with their salts.
///
/// # Errors
/// Words saying which value or commitment is wrong (the caller answers INVALID_ARGUMENT).
pub fn matched_values(
    creator_key: &[u8; 32],
    commitments: &[Vec<u8>],
    values: &[medledger_proto::v1::PrivateValue],
) -> Result<Vec<([u8; 32], SaltedValue)>, String> {
    if commitments.is_empty() {
        return Err("the transaction commits to no private value".into());
    }
    medledger_execution::validate::check_commitments(commitments)?;
    if values.len() != commitments.len() {
        return Err(format!(
            "{} values for {} commitments: send one value for each",
            values.len(),
            commitments.len()
        ));
    }
    // Checked above: 32 bytes each, distinct.
    let mut wanted: std::collections::BTreeSet<[u8; 32]> = commitments
        .iter()
        .filter_map(|c| <[u8; 32]>::try_from(c.as_slice()).ok())
        .collect();
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let seed: [u8; PRIVATE_SALT_LEN] = v.salt_seed.as_slice().try_into().map_err(|_| {
            format!(
                "value {i}: the salt seed must be {PRIVATE_SALT_LEN} bytes (a client older \
                     than this peer sends a salt in its place: upgrade it)"
            )
        })?;
        let salt = medledger_crypto::private_salt(creator_key, &seed);
        if v.value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "value {i}: {} bytes; at most {MAX_VALUE_BYTES}",
                v.value.len()
            ));
        }
        let c = medledger_crypto::private_commitment(&salt, &v.value);
        if !wanted.remove(&c) {
            return Err(format!(
                "value {i} matches none of the transaction's commitments (or one already matched)"
            ));
        }
        out.push((
            c,
            SaltedValue {
                salt,
                value: v.value.clone(),
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_proto::v1::PrivateValue;

    #[test]
    fn each_value_must_match_one_commitment_exactly_once() {
        const CREATOR: [u8; 32] = [5; 32];
        let sent = |tag: u8, value: &[u8]| PrivateValue {
            salt_seed: vec![tag; 32],
            value: value.to_vec(),
        };
        let c = |tag: u8, value: &[u8]| {
            let salt = medledger_crypto::private_salt(&CREATOR, &[tag; 32]);
            medledger_crypto::private_commitment(&salt, value).to_vec()
        };
        let commitments = vec![c(1, b"one"), c(2, b"two")];
        let matched =
            matched_values(&CREATOR, &commitments, &[sent(2, b"two"), sent(1, b"one")]).unwrap();
        assert_eq!(matched.len(), 2);
        assert_eq!(matched[0].1.value, b"two");
        assert_eq!(
            matched[0].1.salt,
            medledger_crypto::private_salt(&CREATOR, &[2; 32])
        );
        let refused = |values: &[PrivateValue], commitments: &[Vec<u8>]| {
            matched_values(&CREATOR, commitments, values).unwrap_err()
        };
        // Another creator sending the same seeds and values (one who learned them from a
        // peer that held them) matches none of the commitments.
        assert!(
            matched_values(&[6; 32], &commitments, &[sent(1, b"one"), sent(2, b"two")])
                .unwrap_err()
                .contains("value 0")
        );
        // The salt itself sent as the seed does not match either.
        let salt_as_seed = PrivateValue {
            salt_seed: medledger_crypto::private_salt(&CREATOR, &[1; 32]).to_vec(),
            value: b"one".to_vec(),
        };
        assert!(refused(&[salt_as_seed, sent(2, b"two")], &commitments).contains("value 0"));
        // Wrong value, wrong salt, one missing, one twice, a short salt, none at all.
        assert!(refused(&[sent(1, b"one"), sent(2, b"tw0")], &commitments).contains("value 1"));
        assert!(refused(&[sent(1, b"one"), sent(3, b"two")], &commitments).contains("value 1"));
        assert!(refused(&[sent(1, b"one")], &commitments).contains("1 values for 2"));
        assert!(refused(&[sent(1, b"one"), sent(1, b"one")], &commitments).contains("already"));
        let short = PrivateValue {
            salt_seed: vec![1; 31],
            value: b"one".to_vec(),
        };
        assert!(refused(&[short, sent(2, b"two")], &commitments).contains("salt"));
        assert!(refused(&[], &[]).contains("no private value"));
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(refused(&[sent(1, &big)], &[c(1, &big)]).contains("at most"));
        assert!(refused(&[sent(1, b"one")], &[vec![1; 31]]).contains("32 bytes"));
    }

    fn value(len: usize, tag: u8) -> ([u8; 32], SaltedValue) {
        let salt = [tag; 32];
        let value = vec![tag; len];
        (
            medledger_crypto::private_commitment(&salt, &value),
            SaltedValue { salt, value },
        )
    }

    #[test]
    fn values_are_held_until_taken_or_expired() {
        let store = PendingPrivateData::default();
        store
            .put([1; 32], [9; 32], 1_000, vec![value(10, 1), value(20, 2)], 0)
            .unwrap();
        store
            .put([2; 32], [9; 32], 5_000, vec![value(10, 3)], 0)
            .unwrap();
        let (total, mine) = store.held(&[9; 32]);
        assert_eq!(total, mine);
        assert_eq!(total, 40 + 3 * VALUE_OVERHEAD + 2 * TRANSACTION_OVERHEAD);
        let taken = store.take(&[1; 32]).unwrap();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[&value(20, 2).0], value(20, 2).1);
        assert!(store.take(&[1; 32]).is_none(), "taken once");
        // Values sent after their block took the transaction's are refused, not held
        // until they expire; a withdrawn put is not remembered as taken.
        assert_eq!(
            store.put([1; 32], [9; 32], 1_000, vec![value(10, 1)], 0),
            Err(PendingError::Committed)
        );
        store
            .put([3; 32], [9; 32], 1_000, vec![value(10, 4)], 0)
            .unwrap();
        store.withdraw(&[3; 32]);
        store
            .put([3; 32], [9; 32], 1_000, vec![value(10, 4)], 0)
            .unwrap();
        assert!(store.take(&[3; 32]).is_some());
        // Kept through the grace after expiry, then dropped.
        store.expire(5_000 + GRACE_MS);
        assert_eq!(
            store.held(&[9; 32]).0,
            10 + VALUE_OVERHEAD + TRANSACTION_OVERHEAD
        );
        store.expire(5_001 + GRACE_MS);
        assert!(store.take(&[2; 32]).is_none());
        assert_eq!(store.held(&[9; 32]), (0, 0));
    }

    /// A batch keeps the time it was stamped with even when it commits late: this peer's
    /// clock past a transaction's expiry must not drop values a late block still validates.
    #[test]
    fn values_outlive_the_wall_clock_until_a_block_passes_their_expiry() {
        let store = PendingPrivateData::default();
        store
            .put([1; 32], [9; 32], 1_000, vec![value(10, 1)], 0)
            .unwrap();
        // Another client's put, long after the expiry by this peer's clock.
        let later = 1_000 + GRACE_MS + 60_000;
        store
            .put([2; 32], [8; 32], 1_000_000, vec![value(10, 2)], later)
            .unwrap();
        store.expire(1_000);
        assert!(
            store.take(&[1; 32]).is_some(),
            "a block stamped before the expiry takes it"
        );
        // The backstop: an hour past, by this peer's clock.
        store
            .put([3; 32], [9; 32], 1_000, vec![value(10, 3)], 0)
            .unwrap();
        let backstop = 1_001 + GRACE_MS + WALL_CLOCK_BACKSTOP_MS;
        store
            .put([4; 32], [8; 32], 1_000_000, vec![value(10, 4)], backstop)
            .unwrap();
        assert!(store.take(&[3; 32]).is_none());
    }

    #[test]
    fn restored_values_count_as_they_did() {
        let store = PendingPrivateData::default();
        store
            .put([1; 32], [9; 32], 1_000, vec![value(10, 1), value(20, 2)], 0)
            .unwrap();
        let held = store.held(&[9; 32]);
        let restored = PendingPrivateData::default();
        let entries = [value(10, 1), value(20, 2)]
            .into_iter()
            .map(|(commitment, value)| PendingEntry {
                transaction_hash: [1; 32],
                keep_until_ms: 1_000 + GRACE_MS,
                creator: [9; 32],
                commitment,
                value,
            })
            .collect::<Vec<_>>();
        restored.restore(entries.clone());
        restored.restore(entries);
        assert_eq!(restored.held(&[9; 32]), held, "the same, once");
        assert_eq!(restored.expire(1_001 + GRACE_MS).len(), 2);
        assert_eq!(restored.held(&[9; 32]), (0, 0));
    }

    #[test]
    fn the_same_values_sent_again_count_once() {
        let store = PendingPrivateData::default();
        store
            .put([1; 32], [9; 32], 1_000, vec![value(10, 1)], 0)
            .unwrap();
        store
            .put([1; 32], [9; 32], 1_000, vec![value(10, 1), value(5, 2)], 0)
            .unwrap();
        assert_eq!(
            store.held(&[9; 32]).1,
            15 + 2 * VALUE_OVERHEAD + TRANSACTION_OVERHEAD
        );
        assert_eq!(store.take(&[1; 32]).unwrap().len(), 2);
    }

    #[test]
    fn budgets_refuse_without_taking_anything() {
        let store = PendingPrivateData::default();
        assert_eq!(
            store.put(
                [1; 32],
                [9; 32],
                1_000,
                vec![value(MAX_VALUE_BYTES + 1, 1)],
                0
            ),
            Err(PendingError::ValueTooLarge(MAX_VALUE_BYTES + 1))
        );
        assert_eq!(store.held(&[9; 32]), (0, 0));
        // One creator fills its share; another is still served.
        let per = MAX_VALUE_BYTES + VALUE_OVERHEAD + TRANSACTION_OVERHEAD;
        let fits = MAX_CREATOR_BYTES / per;
        for i in 0..fits {
            let mut transaction = [0u8; 32];
            transaction[..4].copy_from_slice(&(i as u32).to_be_bytes());
            store
                .put(
                    transaction,
                    [9; 32],
                    1_000,
                    vec![value(MAX_VALUE_BYTES, i as u8)],
                    0,
                )
                .unwrap();
        }
        let refused = store.put(
            [250; 32],
            [9; 32],
            1_000,
            vec![value(MAX_VALUE_BYTES, 250)],
            0,
        );
        assert!(
            matches!(refused, Err(PendingError::CreatorOverBudget { .. })),
            "{refused:?}"
        );
        assert_eq!(store.held(&[9; 32]).1, fits * per);
        store
            .put([251; 32], [8; 32], 1_000, vec![value(10, 251)], 0)
            .unwrap();
        // Past their expiry in consensus time, the share is free again.
        store.expire(2_000 + GRACE_MS);
        store
            .put(
                [250; 32],
                [9; 32],
                1_000,
                vec![value(MAX_VALUE_BYTES, 250)],
                0,
            )
            .unwrap();
    }

    #[test]
    fn the_peer_wide_budget_holds_across_creators() {
        let store = PendingPrivateData::default();
        let per = MAX_VALUE_BYTES + VALUE_OVERHEAD + TRANSACTION_OVERHEAD;
        let per_creator = MAX_CREATOR_BYTES / per;
        let mut refused = None;
        'fill: for creator in 0..=255u8 {
            for i in 0..per_creator {
                let tx = [
                    creator, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ];
                if let Err(e) = store.put(
                    tx,
                    [creator; 32],
                    1_000,
                    vec![value(MAX_VALUE_BYTES, i as u8)],
                    0,
                ) {
                    refused = Some(e);
                    break 'fill;
                }
            }
        }
        assert_eq!(refused, Some(PendingError::Full));
        assert!(store.held(&[0; 32]).0 <= MAX_TOTAL_BYTES);
    }
}
