//! Block execution on the in-memory world state, with a real network's genesis and an
//! identity it enrolled (fuzz/fixtures): what a block records for a refused envelope and a
//! refused chaincode call (codes, no words), that the words still reach the submitter, that
//! execution is a function of its inputs, and that a committed transaction cannot replay.
// A host, not the deterministic crate: it may read files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::Arc;

use medledger_crypto::{SignatureDomain, SigningIdentity, certificate_hash};
use medledger_execution::execute::{CertifiedBatch, execute_block};
use medledger_execution::genesis::Genesis;
use medledger_execution::memory::MemoryState;
use medledger_execution::state::{BlockCommit, HistoryEntry, StateError, TxLocation, WorldState};
use medledger_execution::validate::Validator;
use medledger_pbft as pbft;
use medledger_proto::v1;
use prost::Message;

mod common;
use common::fixture;

struct Network {
    genesis: Arc<Genesis>,
    clinician: SigningIdentity,
    certificate: Vec<u8>,
    time_s: i64,
}

fn network() -> Network {
    let genesis =
        Genesis::from_block(v1::Block::decode(fixture("genesis.pb").as_slice()).unwrap()).unwrap();
    let key = String::from_utf8(fixture("clinician.key")).unwrap();
    let time = String::from_utf8(fixture("time")).unwrap();
    Network {
        genesis: Arc::new(genesis),
        clinician: SigningIdentity::from_pkcs8_pem(&key).unwrap(),
        certificate: fixture("clinician.der"),
        time_s: time.trim().parse().unwrap(),
    }
}

/// A transaction by the fixture clinician, carrying its certificate.
fn transaction(net: &Network, function: &str, args: Vec<u8>, nonce: u8) -> pbft::Request {
    transaction_by(net, &net.clinician, &net.certificate, function, args, nonce)
}

/// A transaction signed by `key`, carrying `certificate` (DER).
fn transaction_by(
    net: &Network,
    key: &SigningIdentity,
    certificate: &[u8],
    function: &str,
    args: Vec<u8>,
    nonce: u8,
) -> pbft::Request {
    let transaction = v1::Transaction {
        function: function.into(),
        args,
        creator_cert_hash: certificate_hash(certificate).to_vec(),
        creator_certificate: certificate.to_vec(),
        nonce: vec![nonce; 24],
        client_time_ms: net.time_s * 1000,
        network_id: net.genesis.network_id.to_vec(),
        expires_at_ms: net.time_s * 1000 + 60_000,
    }
    .encode_to_vec();
    let signature = key
        .sign(SignatureDomain::Transaction, &transaction)
        .to_bytes()
        .to_vec();
    let payload = v1::Envelope {
        kind: Some(v1::envelope::Kind::Transaction(v1::SignedTransaction {
            transaction,
            signature,
        })),
    }
    .encode_to_vec();
    pbft::Request {
        tx_id: medledger_crypto::transaction_id(&[nonce; 24], &certificate_hash(certificate)),
        payload,
    }
}

fn execute(net: &Network, state: &MemoryState, requests: Vec<pbft::Request>) -> BlockCommit {
    let batch = pbft::Batch {
        timestamp_ms: (net.time_s * 1000) as u64,
        requests,
    };
    let certified = CertifiedBatch {
        seq: state.height() + 1,
        batch: &batch,
        commits: &[],
    };
    execute_block(state, &Validator::new(net.genesis.clone()), &certified).unwrap()
}

#[test]
fn a_block_records_refusals_by_code_and_hands_their_words_to_the_submitters() {
    let net = network();
    let state = MemoryState::new(&net.genesis);
    let garbage = pbft::Request {
        tx_id: [9; 32],
        payload: vec![0xff; 7],
    };
    // A clinician may not register a patient: the chaincode refuses it.
    let refused = transaction(&net, "register_patient", vec![0xff, 0x01], 1);
    let commit = execute(&net, &state, vec![garbage, refused]);
    let results = &commit.block.results;
    assert_eq!(results.len(), 2);
    assert_ne!(results[0].status, v1::TxStatus::Valid as i32);
    assert_eq!(results[1].status, v1::TxStatus::ChaincodeError as i32);
    for (i, r) in results.iter().enumerate() {
        assert_ne!(r.code, 0, "result {i} has a code");
        assert!(
            r.message.is_empty(),
            "result {i} stores words: {:?}",
            r.message
        );
        assert!(
            !commit.messages[i].is_empty(),
            "result {i} has words for its submitter"
        );
    }
    assert_eq!(results[1].function, "register_patient");
}

/// Only a gateway submits `confirm_object_deletions` (the erasure queue, issue 20 item 6):
/// a peer's is refused before the chaincode runs, as every transaction of a peer's own; a
/// clinician's reaches the chaincode, which refuses the role.
#[test]
fn a_peer_or_a_clinician_cannot_confirm_an_erased_objects_deletion() {
    let net = network();
    let state = MemoryState::new(&net.genesis);
    let args = v1::ConfirmDeletionsArgs {
        paths: vec!["patients/00/lab-results/x".into()],
    }
    .encode_to_vec();
    let peer = transaction_by(
        &net,
        &common::key("peer4.key"),
        &fixture("peer4.der"),
        "confirm_object_deletions",
        args.clone(),
        1,
    );
    let clinician = transaction(&net, "confirm_object_deletions", args, 2);
    let commit = execute(&net, &state, vec![peer, clinician]);
    let results = &commit.block.results;
    assert_eq!(results[0].status, v1::TxStatus::UnknownFunction as i32);
    assert!(
        commit.messages[0].contains("peers and gateways"),
        "{}",
        commit.messages[0]
    );
    assert_eq!(results[1].status, v1::TxStatus::ChaincodeError as i32);
    assert!(
        commit.messages[1].contains("gateway"),
        "{}",
        commit.messages[1]
    );
}

#[test]
fn the_same_inputs_give_the_same_block_and_a_committed_transaction_does_not_replay() {
    let net = network();
    let mut state = MemoryState::new(&net.genesis);
    let requests = || {
        vec![
            transaction(&net, "register_patient", Vec::new(), 2),
            transaction(&net, "register_patient", vec![1, 2, 3], 3),
        ]
    };
    let first = execute(&net, &state, requests());
    let again = execute(&net, &MemoryState::new(&net.genesis), requests());
    assert_eq!(first.block.encode_to_vec(), again.block.encode_to_vec());
    assert_eq!(first.messages, again.messages);
    assert_eq!(
        first.tx_index.len(),
        2,
        "both were recorded, refused or not"
    );
    state.apply(&first).unwrap();
    assert_eq!(
        state.header(1).unwrap(),
        first.block.header.clone().unwrap()
    );

    // The very same envelopes again: repeats, which keep their first outcome. Other
    // envelopes under the same transaction ids (same nonce, other arguments): duplicates.
    let replay = execute(&net, &state, requests());
    for r in &replay.block.results {
        assert_eq!(r.status, v1::TxStatus::DuplicateEnvelope as i32, "{r:?}");
    }
    let reused = execute(
        &net,
        &state,
        vec![
            transaction(&net, "register_patient", vec![9], 2),
            transaction(&net, "register_patient", vec![9], 3),
        ],
    );
    for r in &reused.block.results {
        assert_eq!(r.status, v1::TxStatus::DuplicateTxId as i32, "{r:?}");
    }
    assert!(
        replay.tx_index.is_empty() && reused.tx_index.is_empty(),
        "a replay is not indexed again"
    );
}

/// The committed state with reads of the world state failing, as a failing disk would.
struct FailingReads(MemoryState);

impl WorldState for FailingReads {
    fn header(&self, number: u64) -> Result<v1::BlockHeader, StateError> {
        self.0.header(number)
    }
    fn get(&self, _: &str) -> Result<Option<Vec<u8>>, StateError> {
        Err(StateError("the disk is gone".into()))
    }
    fn scan(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        Err(StateError("the disk is gone".into()))
    }
    fn history(&self, _: &str, _: usize) -> Result<Vec<HistoryEntry>, StateError> {
        Err(StateError("the disk is gone".into()))
    }
    fn certificate(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StateError> {
        self.0.certificate(hash)
    }
    fn tx_location(&self, tx_id: &[u8; 32]) -> Result<Option<TxLocation>, StateError> {
        self.0.tx_location(tx_id)
    }
    fn envelope_location(&self, hash: &[u8; 32]) -> Result<Option<TxLocation>, StateError> {
        self.0.envelope_location(hash)
    }
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.0.is_revoked(serial)
    }
    fn revocation_sequence(&self) -> u64 {
        self.0.revocation_sequence()
    }
    fn configuration(&self) -> Result<Option<Vec<u8>>, StateError> {
        self.0.configuration()
    }
}

/// A read that fails on this host's disk is not a fact of the ledger: execution stops (the
/// peer then stops) instead of recording an outcome other peers would not.
#[test]
fn a_failed_read_stops_execution_instead_of_becoming_an_outcome() {
    let net = network();
    let state = FailingReads(MemoryState::new(&net.genesis));
    let args = v1::RecordAccessArgs {
        pseudonym: vec![1; 32],
        item_id: "item-1".into(),
    }
    .encode_to_vec();
    let batch = pbft::Batch {
        timestamp_ms: (net.time_s * 1000) as u64,
        requests: vec![transaction(&net, "record_access", args, 4)],
    };
    let certified = CertifiedBatch {
        seq: 1,
        batch: &batch,
        commits: &[],
    };
    let outcome = execute_block(&state, &Validator::new(net.genesis.clone()), &certified);
    assert_eq!(outcome.err(), Some(StateError("the disk is gone".into())));
}
