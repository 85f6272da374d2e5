//! The chaincode's [`Stub`] over a [`WorldState`]: reads see the committed state (one
//! height), then the writes of earlier transactions of the same block, then this
//! transaction's own writes. Nothing here is stored; the executor collects the writes and
//! the host commits the whole block at once. Queries use it with empty overlays.

use medledger_chaincode::private::PrivateKeys;
use medledger_chaincode::stub::{Budget, KeyModification, MAX_SCAN, StubError};
use medledger_chaincode::{Creator, Stub};

use crate::block::WriteSet;
use crate::state::{HistoryEntry, StateError, WorldState};

/// A host's private values (docs/adr/0017), read by queries: the `private` column family
/// of a peer.
pub trait PrivateValues {
    /// The salt and the value committed to by `commitment`, if this host holds them.
    ///
    /// # Errors
    /// The host's storage failed.
    fn salted_value(&self, commitment: &[u8; 32]) -> Result<Option<SaltedValue>, StateError>;
}

/// A private value with the 32-byte salt of its commitment: (salt, value).
pub type SaltedValue = ([u8; 32], Vec<u8>);

fn check_limit(limit: usize) -> Result<(), StubError> {
    if limit > MAX_SCAN {
        return Err(StubError::LimitTooLarge {
            asked: limit,
            max: MAX_SCAN,
        });
    }
    Ok(())
}

/// One transaction's (or one query's) view of the ledger, charged to its [`Budget`].
pub struct BlockStub<'a, S: WorldState + ?Sized> {
    view: &'a S,
    block_writes: &'a WriteSet,
    block_history: &'a [HistoryEntry],
    /// This transaction's writes so far (`None`: deleted).
    pub writes: WriteSet,
    /// This transaction's events so far: (name, payload).
    pub events: Vec<(String, Vec<u8>)>,
    creator: Creator,
    tx_id: [u8; 32],
    time_s: i64,
    auditor_keys: &'a [[u8; 32]],
    budget: Budget,
    /// Which key material comes as commitments (docs/adr/0017), by the ledger's format.
    private_keys: PrivateKeys,
    /// The transaction's private commitments (checked by the validator: 32 bytes,
    /// distinct, acknowledged), and those a field claimed.
    private_commitments: Vec<[u8; 32]>,
    claimed: std::collections::BTreeSet<[u8; 32]>,
    /// The private values this transaction purges, for the host to delete at commit.
    pub purges: Vec<[u8; 32]>,
    /// A query's source of private values; `None` in a transaction.
    private_values: Option<&'a dyn PrivateValues>,
    /// The first read of the committed state that failed: latched here, not only returned,
    /// so that a chaincode that drops the error (or panics after it) cannot turn a fault of
    /// this host's disk into a recorded outcome.
    storage_failure: std::cell::RefCell<Option<StateError>>,
}

impl<'a, S: WorldState + ?Sized> BlockStub<'a, S> {
    /// A stub for transaction `tx_id` by `creator` at consensus time `time_s` (Unix
    /// seconds), reading `view` under the block's writes so far, under a configuration
    /// naming auditors with the encryption keys `auditor_keys`
    /// ([`crate::config::Configuration::auditor_keys`]).
    pub fn new(
        view: &'a S,
        block_writes: &'a WriteSet,
        block_history: &'a [HistoryEntry],
        creator: Creator,
        tx_id: [u8; 32],
        time_s: i64,
        auditor_keys: &'a [[u8; 32]],
    ) -> BlockStub<'a, S> {
        BlockStub {
            view,
            block_writes,
            block_history,
            writes: WriteSet::new(),
            events: Vec::new(),
            creator,
            tx_id,
            time_s,
            auditor_keys,
            budget: Budget::default(),
            private_keys: PrivateKeys::None,
            private_commitments: Vec::new(),
            claimed: std::collections::BTreeSet::new(),
            purges: Vec::new(),
            private_values: None,
            storage_failure: std::cell::RefCell::new(None),
        }
    }

    /// On a ledger that keeps `keys` as private data ([`crate::genesis::private_keys`] of its
    /// format), a transaction carrying `commitments` (its `private_commitments`, as the
    /// validator accepted them).
    pub fn with_private_data(mut self, keys: PrivateKeys, commitments: Vec<[u8; 32]>) -> Self {
        self.private_keys = keys;
        self.private_commitments = commitments;
        self
    }

    /// A query reading private values from `values`, on a ledger that keeps `keys` as
    /// private data.
    pub fn reading_private(mut self, keys: PrivateKeys, values: &'a dyn PrivateValues) -> Self {
        self.private_keys = keys;
        self.private_values = Some(values);
        self
    }

    /// The first failed read of the committed state during this transaction, if any: the
    /// executor stops on it whatever the chaincode returned.
    pub fn storage_failure(&self) -> Option<StateError> {
        self.storage_failure.borrow().clone()
    }

    fn storage(&self, e: StateError) -> StubError {
        let message = e.0.clone();
        self.storage_failure.borrow_mut().get_or_insert(e);
        StubError::Storage(message)
    }

    /// The block's and this transaction's writes (the latter winning) with keys from
    /// `start` on for as long as `within` holds, in key order: a range walk, so a scan
    /// costs the writes in its own range, never the whole block's.
    fn overlay_from(
        &self,
        start: &str,
        within: impl Fn(&str) -> bool,
    ) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
        use std::ops::Bound;
        let mut view = std::collections::BTreeMap::new();
        for overlay in [self.block_writes, &self.writes] {
            for (k, v) in overlay
                .range::<str, _>((Bound::Included(start), Bound::Unbounded))
                .take_while(|(k, _)| within(k))
            {
                view.insert(k.clone(), v.clone());
            }
        }
        view
    }

    /// Committed entries merged with `overlay` (from [`Self::overlay_from`]), keys accepted
    /// by `keep`, at most `limit`.
    fn merged(
        committed: Vec<(String, Vec<u8>)>,
        overlay: std::collections::BTreeMap<String, Option<Vec<u8>>>,
        keep: impl Fn(&str) -> bool,
        limit: usize,
    ) -> Vec<(String, Vec<u8>)> {
        let mut view: std::collections::BTreeMap<String, Option<Vec<u8>>> =
            committed.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for (k, v) in overlay.into_iter().filter(|(k, _)| keep(k)) {
            view.insert(k, v);
        }
        view.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect()
    }

    /// How many of `overlay`'s entries delete a key (each may hide a committed entry).
    fn deletions(overlay: &std::collections::BTreeMap<String, Option<Vec<u8>>>) -> usize {
        overlay.values().filter(|v| v.is_none()).count()
    }

    /// Charges what a read returned to the transaction's budget.
    fn charged(
        &self,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(String, Vec<u8>)>, StubError> {
        self.budget
            .charge_read(entries.iter().map(|(_, v)| v.as_slice()))?;
        Ok(entries)
    }
}

impl<S: WorldState + ?Sized> Stub for BlockStub<'_, S> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StubError> {
        let value = if let Some(v) = self.writes.get(key) {
            v.clone()
        } else if let Some(v) = self.block_writes.get(key) {
            v.clone()
        } else {
            self.view.get(key).map_err(|e| self.storage(e))?
        };
        self.budget.charge_read(value.as_deref())?;
        Ok(value)
    }

    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StubError> {
        self.budget.charge_write(key, Some(&value))?;
        self.writes.insert(key.to_string(), Some(value));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), StubError> {
        self.budget.charge_write(key, None)?;
        self.writes.insert(key.to_string(), None);
        Ok(())
    }

    fn scan_prefix(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StubError> {
        check_limit(limit)?;
        let start = match start_after {
            Some(s) if s >= prefix => s,
            _ => prefix,
        };
        let overlay = self.overlay_from(start, |k| k.starts_with(prefix));
        // Keys the overlays delete in this range may hide committed ones: read that many more.
        let mut committed = self
            .view
            .scan(
                prefix,
                start,
                None,
                limit
                    .saturating_add(Self::deletions(&overlay))
                    .saturating_add(1),
            )
            .map_err(|e| self.storage(e))?;
        if let Some(after) = start_after {
            committed.retain(|(k, _)| k.as_str() > after);
        }
        let keep = |k: &str| k.starts_with(prefix) && start_after.is_none_or(|s| k > s);
        self.charged(Self::merged(committed, overlay, keep, limit))
    }

    fn scan_range(
        &self,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StubError> {
        check_limit(limit)?;
        if start >= end {
            return Ok(Vec::new());
        }
        let overlay = self.overlay_from(start, |k| k < end);
        let committed = self
            .view
            .scan(
                "",
                start,
                Some(end),
                limit.saturating_add(Self::deletions(&overlay)),
            )
            .map_err(|e| self.storage(e))?;
        self.charged(Self::merged(
            committed,
            overlay,
            |k| k >= start && k < end,
            limit,
        ))
    }

    fn history(&self, key: &str, limit: usize) -> Result<Vec<KeyModification>, StubError> {
        check_limit(limit)?;
        // No stored key holds a NUL (writes refuse it), and the peer's history index
        // separates a key from its location by one: such a key could only misread it.
        if key.contains('\0') {
            return Err(StubError::InvalidKey);
        }
        let committed = self.view.history(key, limit).map_err(|e| self.storage(e))?;
        let mods: Vec<KeyModification> = committed
            .iter()
            .chain(self.block_history.iter().filter(|h| h.key == key))
            .take(limit)
            .map(|h| KeyModification {
                tx_id: h.tx_id.to_vec(),
                time: h.time_s,
                value: h.value.clone(),
            })
            .collect();
        self.budget
            .charge_read(mods.iter().map(|m| m.value.as_deref().unwrap_or_default()))?;
        Ok(mods)
    }

    fn creator(&self) -> &Creator {
        &self.creator
    }

    fn tx_id(&self) -> &[u8] {
        &self.tx_id
    }

    fn time(&self) -> i64 {
        self.time_s
    }

    fn auditor_keys(&self) -> &[[u8; 32]] {
        self.auditor_keys
    }

    fn emit_event(&mut self, name: &str, payload: Vec<u8>) -> Result<(), StubError> {
        self.budget.charge_event(name, &payload)?;
        self.events.push((name.to_string(), payload));
        Ok(())
    }

    fn rollback(&mut self) {
        self.writes.clear();
        self.events.clear();
        self.claimed.clear();
        self.purges.clear();
        self.budget.forget_writes();
    }

    fn private_keys(&self) -> PrivateKeys {
        self.private_keys
    }

    fn claim_private(&mut self, commitment: &[u8]) -> bool {
        let Ok(commitment) = <[u8; 32]>::try_from(commitment) else {
            return false;
        };
        self.private_commitments.contains(&commitment) && self.claimed.insert(commitment)
    }

    fn unclaimed_private(&self) -> usize {
        self.private_commitments
            .len()
            .saturating_sub(self.claimed.len())
    }

    fn private_value(&self, commitment: &[u8; 32]) -> Result<([u8; 32], Vec<u8>), StubError> {
        let Some(values) = self.private_values else {
            return Err(StubError::PrivateOnlyInQueries);
        };
        let (salt, value) = values
            .salted_value(commitment)
            .map_err(|e| self.storage(e))?
            .ok_or(StubError::PrivateValueUnavailable)?;
        // What the host holds is believed only as far as it matches the commitment.
        if medledger_crypto::private_commitment(&salt, &value) != *commitment {
            return Err(StubError::PrivateValueUnavailable);
        }
        self.budget.charge_read([value.as_slice()])?;
        Ok((salt, value))
    }

    fn purge_private(&mut self, commitment: &[u8; 32]) -> Result<(), StubError> {
        self.budget.charge_write("private", Some(commitment))?;
        self.purges.push(*commitment);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::BTreeMap;

    /// A committed state that counts the entries its scans read.
    #[derive(Default)]
    struct Counted {
        entries: BTreeMap<String, Vec<u8>>,
        read: Cell<usize>,
    }

    impl WorldState for Counted {
        fn header(&self, _: u64) -> Result<medledger_proto::v1::BlockHeader, StateError> {
            Ok(Default::default())
        }
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
            Ok(self.entries.get(key).cloned())
        }
        fn scan(
            &self,
            prefix: &str,
            start: &str,
            end: Option<&str>,
            limit: usize,
        ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
            let found: Vec<_> = self
                .entries
                .range(start.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix) && end.is_none_or(|e| k.as_str() < e))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.read.set(self.read.get() + found.len());
            Ok(found)
        }
        fn history(&self, _: &str, _: usize) -> Result<Vec<HistoryEntry>, StateError> {
            Ok(Vec::new())
        }
        fn certificate(&self, _: &[u8; 32]) -> Result<Option<Vec<u8>>, StateError> {
            Ok(None)
        }
        fn tx_location(
            &self,
            _: &[u8; 32],
        ) -> Result<Option<crate::state::TxLocation>, StateError> {
            Ok(None)
        }
        fn envelope_location(
            &self,
            _: &[u8; 32],
        ) -> Result<Option<crate::state::TxLocation>, StateError> {
            Ok(None)
        }
        fn is_revoked(&self, _: &[u8]) -> bool {
            false
        }
        fn revocation_sequence(&self) -> u64 {
            0
        }
        fn configuration(&self) -> Result<Option<Vec<u8>>, StateError> {
            Ok(None)
        }
    }

    fn creator() -> Creator {
        Creator {
            name: "gateway".into(),
            role: medledger_chaincode::Role::Gateway,
            attributes: Vec::new(),
            cert_hash: [0; 32],
            encryption_key: [0; 32],
            signing_key: [0; 32],
        }
    }

    #[test]
    fn a_scan_merges_the_block_writes_in_its_range_and_reads_only_what_they_may_hide() {
        let mut state = Counted::default();
        for i in 0..100 {
            state.entries.insert(format!("a/{i:03}"), vec![1]);
            state.entries.insert(format!("b/{i:03}"), vec![2]);
        }
        // The block so far: 10,000 writes elsewhere, and deletions of a/000..a/009.
        let mut block_writes = WriteSet::new();
        for i in 0..10_000 {
            block_writes.insert(format!("z/{i:05}"), Some(vec![3]));
        }
        for i in 0..10 {
            block_writes.insert(format!("a/{i:03}"), None);
        }
        block_writes.insert("a/500".into(), Some(vec![4]));
        let mut stub = BlockStub::new(&state, &block_writes, &[], creator(), [0; 32], 0, &[]);
        stub.delete("a/010").unwrap();

        let page = stub.scan_prefix("a/", None, 5).unwrap();
        let keys: Vec<&str> = page.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a/011", "a/012", "a/013", "a/014", "a/015"]);
        // What five results and eleven deletions ahead of them need, not the block's 10,000.
        assert!(state.read.get() <= 5 + 11 + 1, "read {}", state.read.get());

        state.read.set(0);
        let tail = stub.scan_prefix("a/", Some("a/098"), 5).unwrap();
        let keys: Vec<&str> = tail.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["a/099", "a/500"],
            "the block's own write is in the scan"
        );
        assert!(state.read.get() <= 5 + 1, "read {}", state.read.get());

        let range = stub.scan_range("a/", "a/012", 100).unwrap();
        assert_eq!(range.len(), 1, "a/011 alone: a/000..a/010 are deleted");
    }
}
