//! The chaincode's only window on the world: state, history, the caller, the transaction's
//! id and consensus time, and events. The peer implements it over RocksDB; [`MemoryLedger`]
//! implements it in memory for tests.
//!
//! Contract with the host: every transaction's writes are committed, whether the call
//! succeeded or not. The chaincode keeps that safe by rolling back its own writes on failure
//! ([`Stub::rollback`]) and leaving behind only the audit entry of a denied attempt.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// Who submitted the transaction, as the peer validated it from the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creator {
    /// Enrollment name: stable across reenrollment, never reused.
    pub name: String,
    pub role: Role,
    pub attributes: Vec<CreatorAttribute>,
    pub cert_hash: [u8; 32],
    pub encryption_key: [u8; 32],
    /// The Ed25519 key the transaction was signed with (from the creator's certificate):
    /// what a record's or a study's owner binding records.
    pub signing_key: [u8; 32],
}

impl Creator {
    /// The value of attribute `key` if it holds at `time`.
    pub fn attribute_at(&self, key: &str, time: i64) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| {
                a.key == key
                    && a.not_before.is_none_or(|from| from <= time)
                    && a.not_after.is_none_or(|until| time < until)
            })
            .map(|a| a.value.as_str())
    }
}

/// A certificate attribute with its optional window `[not_before, not_after)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatorAttribute {
    pub key: String,
    pub value: String,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

/// Roles, as in the enrollment certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Peer,
    Clinician,
    Patient,
    Researcher,
    Auditor,
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Peer => "peer",
            Role::Clinician => "clinician",
            Role::Patient => "patient",
            Role::Researcher => "researcher",
            Role::Auditor => "auditor",
            Role::Gateway => "gateway",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One past value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyModification {
    pub tx_id: Vec<u8>,
    pub time: i64,
    /// `None` when the transaction deleted the key.
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StubError {
    #[error("ledger storage failed: {0}")]
    Storage(String),
    #[error("a scan may return at most {max} entries, {asked} asked")]
    LimitTooLarge { asked: usize, max: usize },
    /// The transaction did more work than [`Budget`] allows; the limit is named.
    #[error("the transaction exceeds its work budget: {0}")]
    OverBudget(&'static str),
    /// A state key that cannot be stored (empty, or holding a NUL byte).
    #[error("invalid state key")]
    InvalidKey,
    /// A transaction asked for a private value: they are read in queries only, since not
    /// every peer holds every value (docs/adr/0017 §5), and execution must not depend on
    /// what one peer holds.
    #[error("private values are read in queries only")]
    PrivateOnlyInQueries,
    /// This peer does not hold the private value (it did not acknowledge it, or lost it,
    /// or it was purged): the client asks another peer.
    #[error("this peer does not hold that private value; ask another peer")]
    PrivateValueUnavailable,
}

/// Most entries one scan or history call may return.
pub const MAX_SCAN: usize = 10_000;
/// Most entries (keys read, scan and history entries returned) one transaction may read.
pub const MAX_TX_READ_ENTRIES: u64 = 200_000;
/// Most bytes of values one transaction may read.
pub const MAX_TX_READ_BYTES: u64 = 256 << 20;
/// Most puts and deletes one transaction may make.
pub const MAX_TX_WRITES: u64 = 50_000;
/// Most bytes (keys and values) one transaction may write.
pub const MAX_TX_WRITE_BYTES: u64 = 16 << 20;
/// Most events one transaction may emit, and their bytes.
pub const MAX_TX_EVENTS: u64 = 64;
pub const MAX_TX_EVENT_BYTES: u64 = 1 << 20;

/// The work one transaction may do, charged by every [`Stub`] implementation in the same
/// way, so every peer refuses an over-budget transaction at the same call. Counters only
/// grow (saturating); [`Budget::forget_writes`] resets the write side when a transaction's
/// writes are rolled back (its reads were still done).
#[derive(Debug, Default)]
pub struct Budget {
    read_entries: Cell<u64>,
    read_bytes: Cell<u64>,
    writes: Cell<u64>,
    write_bytes: Cell<u64>,
    events: Cell<u64>,
    event_bytes: Cell<u64>,
}

fn charge(counter: &Cell<u64>, amount: u64, max: u64, what: &'static str) -> Result<(), StubError> {
    let total = counter.get().saturating_add(amount);
    counter.set(total);
    if total > max {
        return Err(StubError::OverBudget(what));
    }
    Ok(())
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

impl Budget {
    /// Charges the entries a read returned (a `get` is one entry).
    pub fn charge_read<'v>(
        &self,
        values: impl IntoIterator<Item = &'v [u8]>,
    ) -> Result<(), StubError> {
        let (mut entries, mut bytes) = (0u64, 0u64);
        for value in values {
            entries = entries.saturating_add(1);
            bytes = bytes.saturating_add(len_u64(value.len()));
        }
        charge(
            &self.read_entries,
            entries.max(1),
            MAX_TX_READ_ENTRIES,
            "entries read",
        )?;
        charge(&self.read_bytes, bytes, MAX_TX_READ_BYTES, "bytes read")
    }

    /// Checks `key` and charges one put (`value` set) or delete.
    pub fn charge_write(&self, key: &str, value: Option<&[u8]>) -> Result<(), StubError> {
        if key.is_empty() || key.contains('\0') {
            return Err(StubError::InvalidKey);
        }
        let bytes = len_u64(key.len()).saturating_add(len_u64(value.map_or(0, <[u8]>::len)));
        charge(&self.writes, 1, MAX_TX_WRITES, "writes")?;
        charge(
            &self.write_bytes,
            bytes,
            MAX_TX_WRITE_BYTES,
            "bytes written",
        )
    }

    /// Charges one event.
    pub fn charge_event(&self, name: &str, payload: &[u8]) -> Result<(), StubError> {
        let bytes = len_u64(name.len()).saturating_add(len_u64(payload.len()));
        charge(&self.events, 1, MAX_TX_EVENTS, "events")?;
        charge(&self.event_bytes, bytes, MAX_TX_EVENT_BYTES, "event bytes")
    }

    /// The transaction's writes and events were rolled back: they no longer count.
    pub fn forget_writes(&self) {
        self.writes.set(0);
        self.write_bytes.set(0);
        self.events.set(0);
        self.event_bytes.set(0);
    }
}

pub trait Stub {
    /// The value of `key`, seeing this transaction's own earlier writes.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StubError>;
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StubError>;
    fn delete(&mut self, key: &str) -> Result<(), StubError>;
    /// Keys starting with `prefix` and greater than `start_after`, ascending, at most `limit`
    /// (≤ [`MAX_SCAN`]).
    fn scan_prefix(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StubError>;
    /// Keys in `[start, end)`, ascending, at most `limit` (≤ [`MAX_SCAN`]).
    fn scan_range(
        &self,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StubError>;
    /// Committed values of `key`, oldest first, at most `limit` (≤ [`MAX_SCAN`]).
    fn history(&self, key: &str, limit: usize) -> Result<Vec<KeyModification>, StubError>;
    fn creator(&self) -> &Creator;
    fn tx_id(&self) -> &[u8];
    /// Consensus time of the block, Unix seconds.
    fn time(&self) -> i64;
    /// The X25519 encryption keys of the auditors the configuration in force names (from
    /// their certificates in `GenesisConfig.auditors` / `NetworkConfig.auditors`, in that
    /// order): the readers, besides the record's owner, that free text must be sealed to.
    /// An input of consensus like the time: the configuration is on the ledger.
    fn auditor_keys(&self) -> &[[u8; 32]];
    /// Publishes an event with the transaction (several per transaction are fine).
    fn emit_event(&mut self, name: &str, payload: Vec<u8>) -> Result<(), StubError>;
    /// Forgets every write, event, claim and purge of this transaction so far.
    fn rollback(&mut self);

    /// Which key material this ledger takes only as commitments to private values
    /// (docs/adr/0017), by its format. An input of consensus (the genesis fixes it).
    fn private_keys(&self) -> PrivateKeys;
    /// Whether this ledger keeps private data (ledger format 5 on): key material then comes
    /// as commitments to private values, never in clear.
    fn keeps_private_data(&self) -> bool {
        self.private_keys() >= PrivateKeys::RecordKeys
    }
    /// Claims `commitment` (32 bytes) for a field of this transaction's arguments: true
    /// when the transaction carries it (`Transaction.private_commitments`, acknowledged by
    /// f+1 peers) and no field claimed it before. A transaction that leaves a commitment
    /// unclaimed is refused ([`crate::invoke`]): no peer keeps a value nothing refers to.
    fn claim_private(&mut self, commitment: &[u8]) -> bool;
    /// How many of this transaction's commitments no field has claimed.
    fn unclaimed_private(&self) -> usize;
    /// Queries only: the private value committed to by `commitment`, with its 32-byte
    /// salt, checked against it: (salt, value).
    ///
    /// # Errors
    /// [`StubError::PrivateOnlyInQueries`] in a transaction;
    /// [`StubError::PrivateValueUnavailable`] when this peer does not hold it.
    fn private_value(&self, commitment: &[u8; 32]) -> Result<([u8; 32], Vec<u8>), StubError>;
    /// Deletes the private value committed to by `commitment` from every peer when this
    /// transaction commits (an erasure's purge, docs/adr/0015); charged as a write. The
    /// commitment stays wherever a block holds it.
    fn purge_private(&mut self, commitment: &[u8; 32]) -> Result<(), StubError>;
}

/// Which key material a ledger takes only as commitments to private values, by its format
/// (docs/adr/0017): an input of consensus, fixed in the genesis. Each step is a ledger
/// format of its own, so that a chain re-executes with the rules of the builds that
/// wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum PrivateKeys {
    /// Below format 5: key material is kept in clear, commitment fields are ignored.
    #[default]
    None,
    /// Format 5: grant and rotation envelopes, the key chain's links, items' wrapped file
    /// keys.
    RecordKeys,
    /// Format 6: and study copies' wrapped file keys (wrapped to a study's key).
    StudyKeys,
    /// Format 7: and free text (an emergency access's sealed reason, docs/adr/0013).
    FreeText,
}

/// An event a committed transaction emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub tx_id: Vec<u8>,
    pub name: String,
    pub payload: Vec<u8>,
}

/// Private values by commitment: (salt, value).
type SaltedValues = BTreeMap<[u8; 32], ([u8; 32], Vec<u8>)>;

/// An in-memory ledger for tests: committed state, key history and events.
#[derive(Debug, Default, Clone)]
pub struct MemoryLedger {
    state: BTreeMap<String, Vec<u8>>,
    history: BTreeMap<String, Vec<KeyModification>>,
    events: Vec<Event>,
    transactions: u64,
    auditor_keys: Vec<[u8; 32]>,
    /// Format 5: the private values committed transactions left, by commitment: (salt,
    /// value).
    private: Option<SaltedValues>,
    /// Which key material the ledger keeps as private data (with `private`).
    private_keys: PrivateKeys,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a transaction by `creator` at consensus time `time`. Commit it with
    /// [`MemoryStub::commit`]; dropping it discards it.
    pub fn transaction(&mut self, creator: Creator, time: i64) -> MemoryStub<'_> {
        self.transactions = self.transactions.wrapping_add(1);
        let tx_id = Sha256::digest(self.transactions.to_be_bytes()).to_vec();
        MemoryStub {
            ledger: self,
            writes: BTreeMap::new(),
            events: Vec::new(),
            budget: Budget::default(),
            creator,
            tx_id,
            time,
            private: PrivateOfTransaction::default(),
            query: false,
        }
    }

    /// Starts a transaction as [`MemoryLedger::transaction`] does, carrying `values` as
    /// private data (the ledger must keep it: [`MemoryLedger::keep_private_data`]).
    /// Returns the stub and each value's commitment, in order. Committed, the values of
    /// the commitments the chaincode claimed are kept.
    pub fn private_transaction(
        &mut self,
        creator: Creator,
        time: i64,
        values: &[Vec<u8>],
    ) -> (MemoryStub<'_>, Vec<[u8; 32]>) {
        let mut pending = BTreeMap::new();
        let mut commitments = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let salt: [u8; 32] = Sha256::digest((i as u64).to_be_bytes()).into();
            let commitment = medledger_crypto::private_commitment(&salt, value);
            pending.insert(commitment, (salt, value.clone()));
            commitments.push(commitment);
        }
        let mut stub = self.transaction(creator, time);
        stub.private.values = pending;
        (stub, commitments)
    }

    /// A read-only view for a query by `creator` at `time`: it reads private values.
    pub fn query_stub(&mut self, creator: Creator, time: i64) -> MemoryStub<'_> {
        let mut stub = self.transaction(creator, time);
        stub.query = true;
        stub
    }

    /// Makes this a ledger that keeps private data, with the newest rules
    /// ([`PrivateKeys::FreeText`], format 7).
    pub fn keep_private_data(&mut self) {
        self.keep_private_data_as(PrivateKeys::FreeText);
    }

    /// Makes this a ledger that keeps `keys` as private data (`None`: none, as below
    /// format 5).
    pub fn keep_private_data_as(&mut self, keys: PrivateKeys) {
        self.private_keys = keys;
        if keys == PrivateKeys::None {
            self.private = None;
        } else {
            self.private.get_or_insert_with(BTreeMap::new);
        }
    }

    /// Forgets the private value behind `commitment`, as a peer that never held it.
    pub fn forget_private_value(&mut self, commitment: &[u8; 32]) {
        if let Some(kept) = &mut self.private {
            kept.remove(commitment);
        }
    }

    /// The private values kept, by commitment (empty below format 5).
    pub fn private_values(&self) -> BTreeMap<[u8; 32], Vec<u8>> {
        self.private
            .iter()
            .flatten()
            .map(|(commitment, (_, value))| (*commitment, value.clone()))
            .collect()
    }

    pub fn state(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.state
    }

    /// The auditors' encryption keys every later transaction sees ([`Stub::auditor_keys`]).
    pub fn set_auditor_keys(&mut self, keys: Vec<[u8; 32]>) {
        self.auditor_keys = keys;
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Every byte the ledger holds: state, history and events.
    pub fn all_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (key, value) in &self.state {
            bytes.extend_from_slice(key.as_bytes());
            bytes.extend_from_slice(value);
        }
        for (key, mods) in &self.history {
            bytes.extend_from_slice(key.as_bytes());
            for m in mods {
                bytes.extend_from_slice(m.value.as_deref().unwrap_or_default());
            }
        }
        for event in &self.events {
            bytes.extend_from_slice(event.name.as_bytes());
            bytes.extend_from_slice(&event.payload);
        }
        bytes
    }
}

/// One transaction's private data, as a [`MemoryStub`] sees it.
#[derive(Debug, Default)]
struct PrivateOfTransaction {
    /// The values the transaction carries, by commitment: (salt, value).
    values: SaltedValues,
    claimed: BTreeSet<[u8; 32]>,
    purged: Vec<[u8; 32]>,
}

pub struct MemoryStub<'a> {
    ledger: &'a mut MemoryLedger,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    events: Vec<Event>,
    budget: Budget,
    creator: Creator,
    tx_id: Vec<u8>,
    time: i64,
    private: PrivateOfTransaction,
    /// A query's view: it reads private values, and is never committed.
    query: bool,
}

impl MemoryStub<'_> {
    pub fn commit(self) {
        if let Some(kept) = &mut self.ledger.private {
            for commitment in &self.private.claimed {
                if let Some(value) = self.private.values.get(commitment) {
                    kept.insert(*commitment, value.clone());
                }
            }
            for commitment in &self.private.purged {
                kept.remove(commitment);
            }
        }
        for (key, value) in self.writes {
            self.ledger
                .history
                .entry(key.clone())
                .or_default()
                .push(KeyModification {
                    tx_id: self.tx_id.clone(),
                    time: self.time,
                    value: value.clone(),
                });
            match value {
                Some(value) => self.ledger.state.insert(key, value),
                None => self.ledger.state.remove(&key),
            };
        }
        self.ledger.events.extend(self.events);
    }

    fn merged(
        &self,
        committed: impl Iterator<Item = (String, Vec<u8>)>,
        overlay: impl Iterator<Item = (String, Option<Vec<u8>>)>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StubError> {
        if limit > MAX_SCAN {
            return Err(StubError::LimitTooLarge {
                asked: limit,
                max: MAX_SCAN,
            });
        }
        let mut view: BTreeMap<String, Option<Vec<u8>>> =
            committed.map(|(k, v)| (k, Some(v))).collect();
        view.extend(overlay);
        let entries: Vec<(String, Vec<u8>)> = view
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect();
        self.budget
            .charge_read(entries.iter().map(|(_, v)| v.as_slice()))?;
        Ok(entries)
    }
}

impl Stub for MemoryStub<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StubError> {
        let value = match self.writes.get(key) {
            Some(value) => value.clone(),
            None => self.ledger.state.get(key).cloned(),
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
        let keep = |k: &String| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s);
        let committed = self
            .ledger
            .state
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()));
        let overlay = self
            .writes
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()));
        self.merged(committed, overlay, limit)
    }

    fn scan_range(
        &self,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StubError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let range = start.to_string()..end.to_string();
        let committed = self
            .ledger
            .state
            .range(range.clone())
            .map(|(k, v)| (k.clone(), v.clone()));
        let overlay = self
            .writes
            .range(range)
            .map(|(k, v)| (k.clone(), v.clone()));
        self.merged(committed, overlay, limit)
    }

    fn history(&self, key: &str, limit: usize) -> Result<Vec<KeyModification>, StubError> {
        if limit > MAX_SCAN {
            return Err(StubError::LimitTooLarge {
                asked: limit,
                max: MAX_SCAN,
            });
        }
        let mods: Vec<KeyModification> = self
            .ledger
            .history
            .get(key)
            .map(|mods| mods.iter().take(limit).cloned().collect())
            .unwrap_or_default();
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
        self.time
    }

    fn auditor_keys(&self) -> &[[u8; 32]] {
        &self.ledger.auditor_keys
    }

    fn emit_event(&mut self, name: &str, payload: Vec<u8>) -> Result<(), StubError> {
        self.budget.charge_event(name, &payload)?;
        self.events.push(Event {
            tx_id: self.tx_id.clone(),
            name: name.to_string(),
            payload,
        });
        Ok(())
    }

    fn rollback(&mut self) {
        self.writes.clear();
        self.events.clear();
        self.private.claimed.clear();
        self.private.purged.clear();
        self.budget.forget_writes();
    }

    fn private_keys(&self) -> PrivateKeys {
        self.ledger.private_keys
    }

    fn claim_private(&mut self, commitment: &[u8]) -> bool {
        let Ok(commitment) = <[u8; 32]>::try_from(commitment) else {
            return false;
        };
        self.private.values.contains_key(&commitment) && self.private.claimed.insert(commitment)
    }

    fn unclaimed_private(&self) -> usize {
        self.private
            .values
            .len()
            .saturating_sub(self.private.claimed.len())
    }

    fn private_value(&self, commitment: &[u8; 32]) -> Result<([u8; 32], Vec<u8>), StubError> {
        if !self.query {
            return Err(StubError::PrivateOnlyInQueries);
        }
        self.ledger
            .private
            .as_ref()
            .and_then(|kept| kept.get(commitment))
            .cloned()
            .ok_or(StubError::PrivateValueUnavailable)
    }

    fn purge_private(&mut self, commitment: &[u8; 32]) -> Result<(), StubError> {
        self.budget.charge_write("private", Some(commitment))?;
        self.private.purged.push(*commitment);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creator() -> Creator {
        Creator {
            name: "t".into(),
            role: Role::Admin,
            attributes: vec![],
            cert_hash: [0; 32],
            encryption_key: [0; 32],
            signing_key: [0; 32],
        }
    }

    #[test]
    fn a_transaction_has_a_bounded_amount_of_work() {
        let mut ledger = MemoryLedger::new();
        let mut tx = ledger.transaction(creator(), 10);
        for i in 0..MAX_TX_WRITES {
            tx.put(&format!("k/{i}"), Vec::new()).unwrap();
        }
        assert_eq!(
            tx.put("k/last", Vec::new()),
            Err(StubError::OverBudget("writes"))
        );
        // Rolled-back writes no longer count; the reads done stay counted.
        tx.rollback();
        tx.put("k/again", Vec::new()).unwrap();
        let big = vec![0u8; (MAX_TX_WRITE_BYTES / 2) as usize];
        tx.put("b/1", big.clone()).unwrap();
        assert_eq!(
            tx.put("b/2", big),
            Err(StubError::OverBudget("bytes written"))
        );
        for _ in 0..MAX_TX_EVENTS {
            tx.emit_event("e", Vec::new()).unwrap();
        }
        assert_eq!(
            tx.emit_event("e", Vec::new()),
            Err(StubError::OverBudget("events"))
        );
        for _ in 0..MAX_TX_READ_ENTRIES {
            tx.get("missing").unwrap();
        }
        assert_eq!(
            tx.get("missing"),
            Err(StubError::OverBudget("entries read"))
        );
        tx.rollback();
        assert_eq!(
            tx.get("missing"),
            Err(StubError::OverBudget("entries read"))
        );
    }

    #[test]
    fn keys_that_cannot_be_stored_are_refused() {
        let mut ledger = MemoryLedger::new();
        let mut tx = ledger.transaction(creator(), 10);
        assert_eq!(tx.put("", Vec::new()), Err(StubError::InvalidKey));
        assert_eq!(tx.put("a\0b", Vec::new()), Err(StubError::InvalidKey));
        assert_eq!(tx.delete(""), Err(StubError::InvalidKey));
    }

    #[test]
    fn reads_see_own_writes_and_scans_merge() {
        let mut ledger = MemoryLedger::new();
        let mut tx = ledger.transaction(creator(), 10);
        tx.put("a/1", b"x".to_vec()).unwrap();
        tx.put("a/2", b"y".to_vec()).unwrap();
        tx.put("b/1", b"z".to_vec()).unwrap();
        tx.commit();
        let mut tx = ledger.transaction(creator(), 11);
        tx.delete("a/1").unwrap();
        tx.put("a/3", b"w".to_vec()).unwrap();
        assert_eq!(tx.get("a/1").unwrap(), None);
        let keys: Vec<_> = tx
            .scan_prefix("a/", None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a/2", "a/3"]);
        assert_eq!(tx.scan_prefix("a/", Some("a/2"), 10).unwrap().len(), 1);
        assert_eq!(tx.scan_range("a/", "a/3", 10).unwrap().len(), 1);
        assert!(tx.scan_prefix("a/", None, MAX_SCAN + 1).is_err());
        tx.commit();
        let tx = ledger.transaction(creator(), 12);
        let history = tx.history("a/1", 10).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].value, None);
        assert_eq!(history[0].time, 10);
    }

    #[test]
    fn rollback_forgets_writes_and_events() {
        let mut ledger = MemoryLedger::new();
        let mut tx = ledger.transaction(creator(), 1);
        tx.put("k", b"v".to_vec()).unwrap();
        tx.emit_event("e", vec![1]).unwrap();
        tx.rollback();
        tx.commit();
        assert!(ledger.state().is_empty());
        assert!(ledger.events().is_empty());
    }
}
