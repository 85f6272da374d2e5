//! A [`WorldState`] held in memory: the auditor re-executes a chain on it, and tests and
//! fuzz targets execute blocks without a disk. It stores exactly what the peer's RocksDB
//! ledger stores from each [`BlockCommit`] (headers, state, key history, transaction index,
//! certificates, revocations), so execution on either gives the same blocks.

use std::collections::{BTreeMap, BTreeSet};

use medledger_proto::v1;

use crate::genesis::Genesis;
use crate::state::{BlockCommit, HistoryEntry, StateError, TxLocation, WorldState};

/// The committed ledger in memory, from a genesis block on.
#[derive(Debug, Clone)]
pub struct MemoryState {
    /// Headers by block number; index 0 is the genesis header.
    headers: Vec<v1::BlockHeader>,
    state: BTreeMap<String, Vec<u8>>,
    /// Each key's modifications, oldest first.
    history: BTreeMap<String, Vec<HistoryEntry>>,
    tx_index: BTreeMap<[u8; 32], TxLocation>,
    envelope_index: BTreeMap<[u8; 32], TxLocation>,
    certificates: BTreeMap<[u8; 32], Vec<u8>>,
    revoked: BTreeSet<Vec<u8>>,
    revocation_sequence: u64,
    /// The encoded configuration in force, once one replaced the genesis's.
    configuration: Option<Vec<u8>>,
}

impl MemoryState {
    /// The state right after `genesis`: empty, at height 0.
    pub fn new(genesis: &Genesis) -> MemoryState {
        MemoryState {
            headers: vec![genesis.block.header.clone().unwrap_or_default()],
            state: BTreeMap::new(),
            history: BTreeMap::new(),
            tx_index: BTreeMap::new(),
            envelope_index: BTreeMap::new(),
            certificates: BTreeMap::new(),
            revoked: BTreeSet::new(),
            revocation_sequence: 0,
            configuration: None,
        }
    }

    /// Number of the last committed block (0: only genesis).
    pub fn height(&self) -> u64 {
        self.headers.len().saturating_sub(1) as u64
    }

    /// Stores what `commit` changes.
    ///
    /// # Errors
    /// [`StateError`] when the block has no header or is not numbered `height + 1`; the
    /// state is then unchanged.
    pub fn apply(&mut self, commit: &BlockCommit) -> Result<(), StateError> {
        let header = commit
            .block
            .header
            .as_ref()
            .ok_or_else(|| StateError("a block to commit has no header".into()))?;
        let next = self.height().saturating_add(1);
        if header.number != next {
            return Err(StateError(format!(
                "block {} cannot follow height {}",
                header.number,
                self.height()
            )));
        }
        for (key, value, _) in &commit.state {
            match value {
                Some(v) => self.state.insert(key.clone(), v.clone()),
                None => self.state.remove(key),
            };
        }
        for entry in &commit.history {
            let entries = self.history.entry(entry.key.clone()).or_default();
            // One entry per key and transaction, as the peer keys its history by both (a
            // transaction's write set holds each key once; this keeps the two alike anyway).
            match entries.last_mut() {
                Some(last) if last.location == entry.location => *last = entry.clone(),
                _ => entries.push(entry.clone()),
            }
        }
        self.tx_index.extend(commit.tx_index.iter().copied());
        self.envelope_index
            .extend(commit.envelope_index.iter().copied());
        for (hash, der) in &commit.certificates {
            self.certificates.insert(*hash, der.clone());
        }
        for (serial, sequence) in &commit.revocations {
            self.revoked.insert(serial.clone());
            self.revocation_sequence = *sequence;
        }
        if let Some((_, value, _)) = &commit.configuration {
            self.configuration = Some(value.clone());
        }
        self.headers.push(header.clone());
        Ok(())
    }
}

impl WorldState for MemoryState {
    fn header(&self, number: u64) -> Result<v1::BlockHeader, StateError> {
        usize::try_from(number)
            .ok()
            .and_then(|n| self.headers.get(n))
            .cloned()
            .ok_or_else(|| StateError(format!("block {number} is not committed")))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.state.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &str,
        start: &str,
        end: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        Ok(self
            .state
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix) && end.is_none_or(|end| k.as_str() < end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>, StateError> {
        Ok(self
            .history
            .get(key)
            .map(|entries| entries.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    fn certificate(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.certificates.get(hash).cloned())
    }

    fn tx_location(&self, tx_id: &[u8; 32]) -> Result<Option<TxLocation>, StateError> {
        Ok(self.tx_index.get(tx_id).copied())
    }
    fn envelope_location(&self, hash: &[u8; 32]) -> Result<Option<TxLocation>, StateError> {
        Ok(self.envelope_index.get(hash).copied())
    }

    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.contains(serial)
    }

    fn revocation_sequence(&self) -> u64 {
        self.revocation_sequence
    }

    fn configuration(&self) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.configuration.clone())
    }
}
