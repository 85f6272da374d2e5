//! Executing a committed batch into a block: every envelope is validated at the block's
//! consensus time and against the revocations in force, valid transactions run in the
//! chaincode, invalid ones are recorded with their status (never dropped), and the block
//! with its write set, key history, transaction index and commit certificate is returned
//! as a [`BlockCommit`] for the host to store in one write.
//!
//! Execution reads only the [`WorldState`] it is given and the certified batch, so every
//! correct peer — and the auditor re-executing on a [`crate::memory::MemoryState`] —
//! produces the same block, byte for byte.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use medledger_chaincode as chaincode;
use medledger_chaincode::private::PrivateKeys;
use medledger_pbft as pbft;
use medledger_proto::v1;
use v1::TxStatus;

use crate::block::{
    HEADER_FORMAT_2, WriteSet, envelope_hash, header_hash, next_state_root, result_leaf, tx_root,
};
use crate::config::Configuration;
use crate::merkle::Tree;
use crate::result_code::{chaincode_code, refusal_code};
use crate::state::{BlockCommit, HistoryEntry, PrivateDataOf, StateError, TxLocation, WorldState};
use crate::stub::BlockStub;
use crate::validate::{Checked, LedgerFacts, Refusal, Validator, creator};

/// The committed state plus the block so far, as validation sees it. A read that fails is
/// a fault of this reader's storage, not a fact of the ledger: it is remembered, and
/// execution stops rather than decide a transaction on it.
struct BlockFacts<'a, S: WorldState + ?Sized> {
    state: &'a S,
    certificates: BTreeMap<[u8; 32], Vec<u8>>,
    used: BTreeSet<[u8; 32]>,
    /// Revoked by earlier transactions of this block.
    revoked: BTreeSet<Vec<u8>>,
    sequence: u64,
    /// The configuration in force for this block (docs/adr/0010).
    configuration: Arc<Configuration>,
    /// A configuration update was accepted earlier in this block.
    configuration_pending: bool,
    read_failure: RefCell<Option<StateError>>,
}

impl<S: WorldState + ?Sized> BlockFacts<'_, S> {
    fn failed<T>(&self, e: StateError, instead: T) -> T {
        self.read_failure.borrow_mut().get_or_insert(e);
        instead
    }
}

impl<S: WorldState + ?Sized> LedgerFacts for BlockFacts<'_, S> {
    fn certificate(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        if let Some(der) = self.certificates.get(hash) {
            return Some(der.clone());
        }
        self.state
            .certificate(hash)
            .unwrap_or_else(|e| self.failed(e, None))
    }
    fn tx_id_used(&self, tx_id: &[u8; 32]) -> bool {
        self.used.contains(tx_id)
            || self
                .state
                .tx_location(tx_id)
                .map(|l| l.is_some())
                .unwrap_or_else(|e| self.failed(e, true))
    }
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.contains(serial) || self.state.is_revoked(serial)
    }
    fn revocation_sequence(&self) -> u64 {
        self.sequence
    }
    fn configuration(&self) -> &Configuration {
        &self.configuration
    }
    fn configuration_pending(&self) -> bool {
        self.configuration_pending
    }
}

/// A batch as PBFT committed it at sequence number `seq` (the block number), with the 2f+1
/// commit votes that certify it (Castro–Liskov §4.2, the commit certificate).
pub struct CertifiedBatch<'a> {
    pub seq: pbft::Seq,
    pub batch: &'a pbft::Batch,
    pub commits: &'a [pbft::Signed<pbft::Vote>],
}

/// The commit certificate as a block records it.
pub fn certificate_to_proto(c: &CertifiedBatch<'_>) -> v1::CommitCertificate {
    v1::CommitCertificate {
        view: c.commits.first().map_or(0, |v| v.message.view),
        batch_digest: c.batch.digest().to_vec(),
        commits: c
            .commits
            .iter()
            .map(|v| v1::ReplicaSignature {
                replica: v.from,
                signature: v.signature.clone(),
            })
            .collect(),
    }
}

fn refused(r: Refusal) -> v1::TxResult {
    v1::TxResult {
        tx_id: r.tx_id.map(|t| t.to_vec()).unwrap_or_default(),
        status: r.status as i32,
        code: refusal_code(r.status) as i32,
        message: r.message,
        ..Default::default()
    }
}

/// What running a transaction's chaincode function came to.
enum Invoked {
    Returned(Result<Vec<u8>, chaincode::ChaincodeError>),
    /// The chaincode panicked: a fault it did not foresee. The panic is deterministic (the
    /// chaincode is pure and overflow checks are on in every profile), so every correct peer
    /// records the same failure and discards the same writes.
    Panicked,
}

/// Runs the chaincode for one valid transaction, containing any panic to that transaction:
/// hostile input must fail its own transaction, never the peer (THREAT-MODEL: availability).
fn invoke_isolated<S: WorldState + ?Sized>(
    stub: &mut BlockStub<'_, S>,
    transaction: &v1::Transaction,
) -> Invoked {
    let run = std::panic::AssertUnwindSafe(|| {
        chaincode::invoke(stub, &transaction.function, &transaction.args)
    });
    match std::panic::catch_unwind(run) {
        Ok(result) => Invoked::Returned(result),
        Err(_) => Invoked::Panicked,
    }
}

/// Executes `certified` as block `certified.seq` on top of `state` (which must be at
/// height `certified.seq - 1`). Returns what to commit, revocations included.
///
/// # Errors
/// [`StateError`] when a read of `state` failed: nothing was decided, and the host must
/// not commit (a peer stops; the auditor reports its own fault).
pub fn execute_block<S: WorldState + ?Sized>(
    state: &S,
    validator: &Validator,
    certified: &CertifiedBatch<'_>,
) -> Result<BlockCommit, StateError> {
    let number = certified.seq;
    let previous = state.header(number.saturating_sub(1))?;
    // Consensus time never runs backwards; a null batch keeps the previous time.
    let time_ms = if certified.batch.is_null() {
        previous.time_ms
    } else {
        (certified.batch.timestamp_ms as i64).max(previous.time_ms)
    };
    let time_s = time_ms.div_euclid(1000);
    let format = validator.ledger_format();
    let mut facts = BlockFacts {
        state,
        certificates: BTreeMap::new(),
        used: BTreeSet::new(),
        revoked: BTreeSet::new(),
        sequence: state.revocation_sequence(),
        configuration: validator.configuration_in_force(state)?,
        configuration_pending: false,
        read_failure: RefCell::new(None),
    };
    // The auditors free text is sealed to: those named in force whose certificate is not
    // revoked, made again after a revocation in this block.
    let mut auditor_keys = facts
        .configuration
        .auditor_keys(|serial| facts.is_revoked(serial));
    let mut commit = BlockCommit::default();
    let mut block_writes = WriteSet::new();
    let mut last_writer: BTreeMap<String, TxLocation> = BTreeMap::new();
    let mut history: Vec<HistoryEntry> = Vec::new();
    let mut results = Vec::with_capacity(certified.batch.requests.len());
    let mut envelopes = Vec::with_capacity(certified.batch.requests.len());
    // Format 2: the envelopes this block ordered so far, by SHA-256.
    let mut ordered: BTreeSet<[u8; 32]> = BTreeSet::new();

    for (index, request) in certified.batch.requests.iter().enumerate() {
        let location = TxLocation {
            block: number,
            index: index as u32,
        };
        envelopes.push(request.payload.clone());
        if format >= 2 {
            // One outcome per envelope (docs/adr/0009): a repeat of an envelope ordered
            // before — by a faulty primary, or a forward that outlived the core's window —
            // is recorded as such and changes nothing; its outcome stays its first leaf.
            let hash = envelope_hash(&request.payload);
            commit.envelope_hashes.push(hash);
            if ordered.contains(&hash) || state.envelope_location(&hash)?.is_some() {
                results.push(v1::TxResult {
                    status: TxStatus::DuplicateEnvelope as i32,
                    code: refusal_code(TxStatus::DuplicateEnvelope) as i32,
                    message: "this envelope was ordered before; its outcome is there".into(),
                    ..Default::default()
                });
                continue;
            }
            ordered.insert(hash);
            commit.envelope_index.push((hash, location));
        }
        let checked = validator.check(&request.payload, time_ms, &facts);
        if let Some(e) = facts.read_failure.borrow_mut().take() {
            return Err(e);
        }
        let checked = match checked {
            Ok(checked) => checked,
            Err(refusal) => {
                results.push(refused(refusal));
                continue;
            }
        };
        let tx_id = checked.tx_id();
        facts.used.insert(tx_id);
        commit.tx_index.push((tx_id, location));
        match checked {
            Checked::Revocation { record, signed, .. } => {
                facts.revoked.insert(record.serial.clone());
                auditor_keys = facts
                    .configuration
                    .auditor_keys(|serial| facts.is_revoked(serial));
                facts.sequence = record.sequence;
                commit
                    .revocations
                    .push((record.serial.clone(), record.sequence));
                commit
                    .revocation_records
                    .push((record.sequence, prost::Message::encode_to_vec(&signed)));
                results.push(v1::TxResult {
                    tx_id: tx_id.to_vec(),
                    status: TxStatus::Valid as i32,
                    function: "revoke_certificate".into(),
                    ..Default::default()
                });
            }
            Checked::ConfigUpdate {
                value,
                configuration,
                ..
            } => {
                // In force from the next block: this block's header names the one before.
                facts.configuration_pending = true;
                commit.ends_epoch = !facts.configuration.same_replicas(&configuration);
                commit.configuration = Some((
                    value.sequence,
                    prost::Message::encode_to_vec(&value),
                    commit.envelope_hashes.last().copied().unwrap_or_default(),
                ));
                results.push(v1::TxResult {
                    tx_id: tx_id.to_vec(),
                    status: TxStatus::Valid as i32,
                    function: "config_update".into(),
                    ..Default::default()
                });
            }
            Checked::Transaction(valid) => {
                if let Some((hash, der)) = valid.certificate.clone() {
                    facts.certificates.insert(hash, der.clone());
                    commit.certificates.push((hash, der));
                }
                let private_keys = crate::genesis::private_keys(format);
                let keeps_private_data = private_keys >= PrivateKeys::RecordKeys;
                let commitments = if keeps_private_data {
                    valid
                        .transaction
                        .private_commitments
                        .iter()
                        .filter_map(|c| <[u8; 32]>::try_from(c.as_slice()).ok())
                        .collect()
                } else {
                    Vec::new()
                };
                let mut stub = BlockStub::new(
                    state,
                    &block_writes,
                    &history,
                    creator(&valid.identity),
                    tx_id,
                    time_s,
                    &auditor_keys,
                )
                .with_private_data(private_keys, commitments);
                let outcome = invoke_isolated(&mut stub, &valid.transaction);
                // A failed read stops execution whatever the chaincode made of it (returned
                // it, dropped it, or panicked): it is this host's fault, not an outcome.
                if let Some(e) = stub.storage_failure() {
                    return Err(e);
                }
                let (writes, events, purges) = match &outcome {
                    Invoked::Panicked => (WriteSet::new(), Vec::new(), Vec::new()),
                    _ => (
                        std::mem::take(&mut stub.writes),
                        std::mem::take(&mut stub.events),
                        std::mem::take(&mut stub.purges),
                    ),
                };
                drop(stub);
                if let Invoked::Panicked = outcome {
                    commit
                        .chaincode_panics
                        .push(valid.transaction.function.clone());
                }
                let (status, code, message, result) = match outcome {
                    Invoked::Returned(Ok(result)) => (TxStatus::Valid, 0, String::new(), result),
                    Invoked::Returned(Err(e)) => (
                        TxStatus::ChaincodeError,
                        chaincode_code(&e) as i32,
                        e.to_string(),
                        Vec::new(),
                    ),
                    Invoked::Panicked => (
                        TxStatus::ChaincodeError,
                        v1::ResultCode::Internal as i32,
                        "the transaction failed in execution; it changed nothing".to_string(),
                        Vec::new(),
                    ),
                };
                if status == TxStatus::Valid {
                    commit.private_purges.extend(purges);
                }
                // Values are kept from format 5 on, where a field refers to each (claimed)
                // and an erasure purges it; on format 4 nothing would ever read or purge
                // them.
                if status == TxStatus::Valid
                    && keeps_private_data
                    && let Some(transaction_hash) = valid.private_data_hash
                {
                    commit.private_data.push(PrivateDataOf {
                        transaction_hash,
                        commitments: valid.transaction.private_commitments.clone(),
                    });
                }
                for (key, value) in writes {
                    history.push(HistoryEntry {
                        key: key.clone(),
                        location,
                        tx_id,
                        time_s,
                        value: value.clone(),
                    });
                    last_writer.insert(key.clone(), location);
                    block_writes.insert(key, value);
                }
                results.push(v1::TxResult {
                    tx_id: tx_id.to_vec(),
                    status: status as i32,
                    message,
                    result,
                    events: events
                        .into_iter()
                        .map(|(name, payload)| v1::ChaincodeEvent { name, payload })
                        .collect(),
                    creator: valid.identity.name.clone(),
                    function: valid.transaction.function.clone(),
                    code,
                });
            }
        }
    }

    // Words are for the people waiting on this block, not consensus data: the block records
    // each outcome by status, code, result and events, and its messages stay empty.
    commit.messages = results
        .iter_mut()
        .map(|r| std::mem::take(&mut r.message))
        .collect();
    let state_root = next_state_root(&previous.state_root, &block_writes);
    let mut header = v1::BlockHeader {
        number,
        prev_hash: header_hash(&previous).to_vec(),
        tx_root: tx_root(&envelopes).to_vec(),
        state_root: state_root.to_vec(),
        time_ms,
        ..Default::default()
    };
    if format >= 2 {
        // Format 2: the header commits to every outcome (docs/adr/0009 §1–2).
        commit.result_leaves = commit
            .envelope_hashes
            .iter()
            .zip(&results)
            .map(|(hash, result)| result_leaf(hash, result))
            .collect();
        header.format = HEADER_FORMAT_2;
        header.result_root = Tree::new(commit.result_leaves.clone()).root().to_vec();
        header.config = facts.configuration.hash.to_vec();
    }
    commit.state = block_writes
        .into_iter()
        .map(|(k, v)| {
            let location = last_writer[&k];
            (k, v, location)
        })
        .collect();
    commit.history = history;
    commit.block = v1::Block {
        header: Some(header),
        envelopes,
        results,
        certificate: Some(certificate_to_proto(certified)),
        batch_time_ms: certified.batch.timestamp_ms,
        genesis: None,
        votes: Vec::new(),
        request_ids: certified
            .batch
            .requests
            .iter()
            .map(|r| r.tx_id.to_vec())
            .collect(),
    };
    Ok(commit)
}
