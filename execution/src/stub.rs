//! The chaincode's [`Stub`] over a [`WorldState`]: reads see the committed state (one
//! height), then the writes of earlier transactions of the same block, then this
//! transaction's own writes. Nothing here is stored; the executor collects the writes and
//! the host commits the whole block at once. Queries use it with empty overlays.

use medledger_chaincode::stub::{Budget, KeyModification, MAX_SCAN, StubError};
use medledger_chaincode::{Creator, Stub};

use crate::block::WriteSet;
use crate::state::{HistoryEntry, StateError, WorldState};

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
            storage_failure: std::cell::RefCell::new(None),
        }
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

    /// Committed entries merged with the block's and this transaction's writes, keys
    /// accepted by `keep`, at most `limit`.
    fn merged(
        &self,
        committed: Vec<(String, Vec<u8>)>,
        keep: impl Fn(&str) -> bool,
        limit: usize,
    ) -> Vec<(String, Vec<u8>)> {
        let mut view: std::collections::BTreeMap<String, Option<Vec<u8>>> =
            committed.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for overlay in [self.block_writes, &self.writes] {
            for (k, v) in overlay.iter().filter(|(k, _)| keep(k)) {
                view.insert(k.clone(), v.clone());
            }
        }
        view.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect()
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

    fn overlay_len(&self) -> usize {
        self.block_writes.len() + self.writes.len()
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
        // Deleted keys in the overlays may hide committed ones: read that many more.
        let mut committed = self
            .view
            .scan(
                prefix,
                start,
                None,
                limit.saturating_add(self.overlay_len()).saturating_add(1),
            )
            .map_err(|e| self.storage(e))?;
        if let Some(after) = start_after {
            committed.retain(|(k, _)| k.as_str() > after);
        }
        let keep = |k: &str| k.starts_with(prefix) && start_after.is_none_or(|s| k > s);
        self.charged(self.merged(committed, keep, limit))
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
        let committed = self
            .view
            .scan(
                "",
                start,
                Some(end),
                limit.saturating_add(self.overlay_len()),
            )
            .map_err(|e| self.storage(e))?;
        self.charged(self.merged(committed, |k| k >= start && k < end, limit))
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
        self.budget.forget_writes();
    }
}
