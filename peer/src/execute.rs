//! Executing a committed batch into a block: every envelope is validated at the block's
//! consensus time and against the revocations in force, valid transactions run in the
//! chaincode, invalid ones are recorded with their status (never dropped), and the block with
//! its write set, key history, transaction index and commit certificate is handed to the
//! ledger to commit in one synced write.
//!
//! Execution depends only on the ledger and the certified batch, so every correct peer
//! produces the same block, byte for byte.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use medledger_tls::SharedRevocations;

use medledger_chaincode as chaincode;
use medledger_chaincode::stub::StubError;
use medledger_pbft as pbft;
use medledger_proto::v1;
use v1::TxStatus;

use crate::block::{WriteSet, header_hash, next_state_root, tx_root};
use crate::ledger::{BlockCommit, HistoryEntry, Ledger, LedgerError, StateView, TxLocation};
use crate::stub::LedgerStub;
use crate::validate::{Checked, LedgerFacts, Refusal, Validator, creator};
use medledger_execution::result_code::{chaincode_code, refusal_code};

/// The revocations on the committed ledger: one shared set of serials, read by execution,
/// by checks at submission and by every TLS handshake, and changed only by the driver after
/// a block with revocations is on disk.
#[derive(Debug, Default)]
pub struct Revocations {
    pub serials: SharedRevocations,
    /// The CA sequence number of the last revocation on the ledger.
    pub sequence: AtomicU64,
}

impl Revocations {
    pub fn load(ledger: &Ledger) -> Result<Revocations, LedgerError> {
        let serials = SharedRevocations::default();
        for serial in ledger.revoked_serials()? {
            serials.insert(serial);
        }
        Ok(Revocations {
            serials,
            sequence: AtomicU64::new(ledger.revocation_sequence()?),
        })
    }

    /// Takes in the revocations a committed block made.
    pub fn apply(&self, committed: &[(Vec<u8>, u64)]) {
        for (serial, sequence) in committed {
            self.serials.insert(serial.clone());
            self.sequence.store(*sequence, Ordering::SeqCst);
        }
    }
}

/// A storage error counts as used: refusing is the safe side, and the next read of a failing
/// disk stops the peer anyway.
fn indexed(ledger: &Ledger, tx_id: &[u8; 32]) -> bool {
    ledger.tx_location(tx_id).map_or(true, |l| l.is_some())
}

/// The ledger plus the block so far, as validation sees it. A read that fails is a fault
/// of this peer's disk, not a fact of the ledger: it is remembered, and execution stops
/// the peer rather than decide a transaction on it (other peers would decide otherwise).
struct BlockFacts<'a> {
    ledger: &'a Ledger,
    committed: &'a Revocations,
    certificates: HashMap<[u8; 32], Vec<u8>>,
    used: HashSet<[u8; 32]>,
    /// Revoked by earlier transactions of this block.
    revoked: BTreeSet<Vec<u8>>,
    sequence: u64,
    read_failure: std::cell::RefCell<Option<String>>,
}

impl BlockFacts<'_> {
    fn failed<T>(&self, e: LedgerError, instead: T) -> T {
        self.read_failure.borrow_mut().get_or_insert(e.to_string());
        instead
    }

    /// The first ledger read that failed while validating, if any.
    fn take_read_failure(&self) -> Option<String> {
        self.read_failure.borrow_mut().take()
    }
}

impl LedgerFacts for BlockFacts<'_> {
    fn certificate(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        if let Some(der) = self.certificates.get(hash) {
            return Some(der.clone());
        }
        self.ledger
            .certificate(hash)
            .unwrap_or_else(|e| self.failed(e, None))
    }
    fn tx_id_used(&self, tx_id: &[u8; 32]) -> bool {
        self.used.contains(tx_id)
            || self
                .ledger
                .tx_location(tx_id)
                .map(|l| l.is_some())
                .unwrap_or_else(|e| self.failed(e, true))
    }
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.contains(serial) || self.committed.serials.contains(serial)
    }
    fn revocation_sequence(&self) -> u64 {
        self.sequence
    }
}

/// The facts of the committed ledger alone (for checks at submission).
pub struct CommittedFacts<'a> {
    pub ledger: &'a Ledger,
    pub revocations: &'a Revocations,
}

impl LedgerFacts for CommittedFacts<'_> {
    fn certificate(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        self.ledger.certificate(hash).ok().flatten()
    }
    fn tx_id_used(&self, tx_id: &[u8; 32]) -> bool {
        indexed(self.ledger, tx_id)
    }
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revocations.serials.contains(serial)
    }
    fn revocation_sequence(&self) -> u64 {
        self.revocations.sequence.load(Ordering::SeqCst)
    }
}

/// A batch as PBFT committed it, with its certificate.
pub struct CertifiedBatch<'a> {
    pub seq: pbft::Seq,
    pub batch: &'a pbft::Batch,
    pub commits: &'a [pbft::Signed<pbft::Vote>],
}

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
fn invoke_isolated(stub: &mut LedgerStub<'_>, transaction: &v1::Transaction) -> Invoked {
    let run = std::panic::AssertUnwindSafe(|| {
        chaincode::invoke(stub, &transaction.function, &transaction.args)
    });
    match std::panic::catch_unwind(run) {
        Ok(result) => Invoked::Returned(result),
        Err(_) => {
            metrics::counter!("medledger_chaincode_panics_total").increment(1);
            tracing::error!(
                function = %transaction.function,
                "the chaincode panicked; the transaction is recorded as failed"
            );
            Invoked::Panicked
        }
    }
}

/// Executes `certified` as block `certified.seq` on top of the ledger (whose revocations
/// are `revocations`). Returns what to commit, revocations included.
pub fn execute_block(
    ledger: &Ledger,
    validator: &Validator,
    revocations: &Revocations,
    certified: &CertifiedBatch<'_>,
) -> Result<BlockCommit, LedgerError> {
    let number = certified.seq;
    let previous = ledger.header(number - 1)?;
    // Consensus time never runs backwards; a null batch keeps the previous time.
    let time_ms = if certified.batch.is_null() {
        previous.time_ms
    } else {
        (certified.batch.timestamp_ms as i64).max(previous.time_ms)
    };
    let time_s = time_ms.div_euclid(1000);
    let view = StateView::new(ledger);
    let mut facts = BlockFacts {
        ledger,
        committed: revocations,
        certificates: HashMap::new(),
        used: HashSet::new(),
        revoked: BTreeSet::new(),
        sequence: revocations.sequence.load(Ordering::SeqCst),
        read_failure: std::cell::RefCell::new(None),
    };
    let mut commit = BlockCommit::default();
    let mut block_writes = WriteSet::new();
    let mut last_writer: HashMap<String, TxLocation> = HashMap::new();
    let mut history: Vec<HistoryEntry> = Vec::new();
    let mut results = Vec::with_capacity(certified.batch.requests.len());
    let mut envelopes = Vec::with_capacity(certified.batch.requests.len());

    for (index, request) in certified.batch.requests.iter().enumerate() {
        let location = TxLocation {
            block: number,
            index: index as u32,
        };
        envelopes.push(request.payload.clone());
        let checked = validator.check(&request.payload, time_s, &facts);
        if let Some(why) = facts.take_read_failure() {
            return Err(LedgerError::ExecutionRead(why));
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
            Checked::Revocation { record, .. } => {
                facts.revoked.insert(record.serial.clone());
                facts.sequence = record.sequence;
                commit
                    .revocations
                    .push((record.serial.clone(), record.sequence));
                results.push(v1::TxResult {
                    tx_id: tx_id.to_vec(),
                    status: TxStatus::Valid as i32,
                    function: "revoke_certificate".into(),
                    ..Default::default()
                });
            }
            Checked::Transaction(valid) => {
                if let Some((hash, der)) = valid.certificate.clone() {
                    facts.certificates.insert(hash, der.clone());
                    commit.certificates.push((hash, der));
                }
                let mut stub = LedgerStub::new(
                    &view,
                    &block_writes,
                    &history,
                    creator(&valid.identity),
                    tx_id,
                    time_s,
                );
                let outcome = invoke_isolated(&mut stub, &valid.transaction);
                if let Invoked::Returned(Err(chaincode::ChaincodeError::Stub(
                    StubError::Storage(why),
                ))) = &outcome
                {
                    return Err(LedgerError::ExecutionRead(why.clone()));
                }
                let (writes, events) = match &outcome {
                    Invoked::Panicked => (WriteSet::new(), Vec::new()),
                    _ => (
                        std::mem::take(&mut stub.writes),
                        std::mem::take(&mut stub.events),
                    ),
                };
                drop(stub);
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
    drop(view);

    let state_root = next_state_root(&previous.state_root, &block_writes);
    let header = v1::BlockHeader {
        number,
        prev_hash: header_hash(&previous).to_vec(),
        tx_root: tx_root(&envelopes).to_vec(),
        state_root: state_root.to_vec(),
        time_ms,
    };
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
        request_ids: certified
            .batch
            .requests
            .iter()
            .map(|r| r.tx_id.to_vec())
            .collect(),
    };
    Ok(commit)
}
