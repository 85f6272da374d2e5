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
use sha2::Digest as _;

mod common;
use common::fixture;

struct Network {
    genesis: Arc<Genesis>,
    clinician: SigningIdentity,
    certificate: Vec<u8>,
    time_s: i64,
}

fn network() -> Network {
    network_of_format(None)
}

/// The fixture network (ledger format 2), or made again in ledger format `format`.
fn network_of_format(format: Option<u32>) -> Network {
    let mut block = v1::Block::decode(fixture("genesis.pb").as_slice()).unwrap();
    if let Some(format) = format {
        let config = block.genesis.as_mut().unwrap();
        config.consensus.as_mut().unwrap().ledger_format = format;
        // The header commits to the configuration.
        block.header.as_mut().unwrap().tx_root =
            sha2::Sha256::digest(config.encode_to_vec()).to_vec();
    }
    let genesis = Genesis::from_block(block).unwrap();
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
    private_transaction(
        net,
        key,
        certificate,
        function,
        args,
        nonce,
        Vec::new(),
        &[],
    )
}

/// A transaction signed by `key`, carrying `certificate`, committing to `commitments`, with
/// the acknowledgments `acks` (replica id and the key that signs as it) over them.
#[allow(clippy::too_many_arguments)]
fn private_transaction(
    net: &Network,
    key: &SigningIdentity,
    certificate: &[u8],
    function: &str,
    args: Vec<u8>,
    nonce: u8,
    commitments: Vec<Vec<u8>>,
    acks: &[(u32, &SigningIdentity)],
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
        private_commitments: commitments.clone(),
    }
    .encode_to_vec();
    let signature = key
        .sign(SignatureDomain::Transaction, &transaction)
        .to_bytes()
        .to_vec();
    let hash = sha2::Sha256::digest(&transaction);
    let private_data_acks: Vec<v1::PrivateDataAck> = acks
        .iter()
        .map(|(replica, peer)| v1::PrivateDataAck {
            replica: *replica,
            signature: medledger_crypto::sign_private_data_ack(
                peer,
                &net.genesis.network_id,
                &hash,
                &commitments,
            )
            .to_bytes()
            .to_vec(),
        })
        .collect();
    let payload = v1::Envelope {
        kind: Some(v1::envelope::Kind::Transaction(v1::SignedTransaction {
            transaction,
            signature,
            acks_signature: countersign(key, &hash, &private_data_acks),
            private_data_acks,
        })),
    }
    .encode_to_vec();
    pbft::Request {
        tx_id: medledger_crypto::transaction_id(&[nonce; 24], &certificate_hash(certificate)),
        payload,
    }
}

/// The creator's signature over `acks` of the transaction hashing to `hash` (none without
/// acknowledgments).
fn countersign(key: &SigningIdentity, hash: &[u8], acks: &[v1::PrivateDataAck]) -> Vec<u8> {
    if acks.is_empty() {
        return Vec::new();
    }
    let listed: Vec<(u32, &[u8])> = acks
        .iter()
        .map(|a| (a.replica, a.signature.as_slice()))
        .collect();
    key.sign(
        SignatureDomain::PrivateDataAcks,
        &medledger_crypto::private_data_acks_statement(hash, &listed),
    )
    .to_bytes()
    .to_vec()
}

/// `request` with its acknowledgments replaced by `acks`, countersigned by `key` when given.
fn with_acks(
    request: &pbft::Request,
    acks: Vec<v1::PrivateDataAck>,
    key: Option<&SigningIdentity>,
) -> pbft::Request {
    let mut envelope = v1::Envelope::decode(request.payload.as_slice()).unwrap();
    let Some(v1::envelope::Kind::Transaction(signed)) = &mut envelope.kind else {
        unreachable!()
    };
    let hash = sha2::Sha256::digest(&signed.transaction);
    signed.acks_signature = key.map_or_else(Vec::new, |key| countersign(key, &hash, &acks));
    signed.private_data_acks = acks;
    pbft::Request {
        tx_id: request.tx_id,
        payload: envelope.encode_to_vec(),
    }
}

/// `request` with `bytes` in its signed transaction's `acks_signature`, as a relay could
/// put them.
fn with_signature_bytes(request: &pbft::Request, bytes: Vec<u8>) -> pbft::Request {
    let mut envelope = v1::Envelope::decode(request.payload.as_slice()).unwrap();
    if let Some(v1::envelope::Kind::Transaction(signed)) = &mut envelope.kind {
        signed.acks_signature = bytes;
    }
    pbft::Request {
        tx_id: request.tx_id,
        payload: envelope.encode_to_vec(),
    }
}

/// The acknowledgments `request` carries.
fn acks_of(request: &pbft::Request) -> Vec<v1::PrivateDataAck> {
    match v1::Envelope::decode(request.payload.as_slice())
        .unwrap()
        .kind
    {
        Some(v1::envelope::Kind::Transaction(signed)) => signed.private_data_acks,
        _ => unreachable!(),
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

/// Private data (docs/adr/0017 §3): a transaction that commits to private values executes
/// only with acknowledgments of f+1 distinct replicas in force (2 of the fixture's 4),
/// each over its own hash and commitments; malformed commitments or acknowledgments without
/// any are bad envelopes. Every peer decides alike: the rule reads only the block and the
/// configuration.
#[test]
fn private_values_need_f_plus_1_acknowledgments_of_distinct_replicas() {
    let net = network_of_format(Some(medledger_execution::genesis::PRIVATE_DATA_FORMAT));
    let state = MemoryState::new(&net.genesis);
    let peers: Vec<SigningIdentity> = (0..4)
        .map(|i| common::key(&format!("peer{i}.key")))
        .collect();
    let commitment = |i: u8| medledger_crypto::private_commitment(&[i; 32], b"a value").to_vec();
    let (key, cert) = (&net.clinician, &net.certificate);
    let tx = |nonce: u8, commitments: Vec<Vec<u8>>, acks: &[(u32, &SigningIdentity)]| {
        private_transaction(
            &net,
            key,
            cert,
            "register_patient",
            vec![0xff],
            nonce,
            commitments,
            acks,
        )
    };
    let two = [commitment(1), commitment(2)];
    use v1::TxStatus::{BadEnvelope, BadSignature, ChaincodeError, PrivateDataUnacknowledged};
    let acked = tx(1, two.to_vec(), &[(0, &peers[0]), (2, &peers[2])]);
    // An acknowledgment is bound to its transaction: nonce 1's, moved onto another
    // transaction with the same commitments (and countersigned there), does not count.
    let borrowed = {
        let own = tx(13, two.to_vec(), &[(3, &peers[3])]);
        let mut acks = vec![acks_of(&acked)[0].clone()];
        acks.extend(acks_of(&own));
        with_acks(&own, acks, Some(key))
    };
    let mut reordered = acks_of(&acked);
    reordered.reverse();
    let mut dropped = acks_of(&acked);
    dropped.pop();
    let cases: Vec<(&str, pbft::Request, v1::TxStatus)> = vec![
        // What a relaying peer could do to the creator's envelope: reorder, drop or strip
        // the countersignature; none of these copies is valid,
        // and ordered first, none keeps the creator's own envelope from committing after.
        (
            "acknowledgments reordered after the creator signed them",
            with_acks(&acked, reordered, None),
            BadEnvelope,
        ),
        (
            "one dropped after the creator signed them",
            {
                let mut r = with_acks(&acked, dropped.clone(), Some(key));
                // The countersignature of the full list, kept.
                let full = v1::Envelope::decode(acked.payload.as_slice()).unwrap();
                let mut e = v1::Envelope::decode(r.payload.as_slice()).unwrap();
                if let (
                    Some(v1::envelope::Kind::Transaction(from)),
                    Some(v1::envelope::Kind::Transaction(to)),
                ) = (full.kind, &mut e.kind)
                {
                    to.acks_signature = from.acks_signature;
                }
                r.payload = e.encode_to_vec();
                r
            },
            BadSignature,
        ),
        (
            "not countersigned",
            with_acks(&acked, acks_of(&acked), None),
            BadSignature,
        ),
        (
            "a countersignature with no acknowledgments",
            with_signature_bytes(&tx(14, Vec::new(), &[]), vec![1]),
            BadEnvelope,
        ),
        (
            "countersigned by a peer",
            with_acks(&acked, acks_of(&acked), Some(&peers[0])),
            BadSignature,
        ),
        ("f+1 acknowledgments", acked.clone(), ChaincodeError),
        (
            "one acknowledgment",
            tx(2, two.to_vec(), &[(1, &peers[1])]),
            PrivateDataUnacknowledged,
        ),
        ("none", tx(3, two.to_vec(), &[]), PrivateDataUnacknowledged),
        (
            "signed by another peer than the replica it names",
            tx(5, two.to_vec(), &[(0, &peers[0]), (1, &peers[2])]),
            PrivateDataUnacknowledged,
        ),
        (
            "a replica not in force",
            tx(6, two.to_vec(), &[(0, &peers[0]), (7, &peers[1])]),
            PrivateDataUnacknowledged,
        ),
        (
            "a client's own signature",
            tx(7, two.to_vec(), &[(0, &peers[0]), (1, key)]),
            PrivateDataUnacknowledged,
        ),
        (
            "an acknowledgment of another transaction",
            borrowed,
            PrivateDataUnacknowledged,
        ),
        (
            "one replica twice",
            tx(4, two.to_vec(), &[(1, &peers[1]), (1, &peers[1])]),
            BadEnvelope,
        ),
        (
            "acknowledgments without commitments",
            tx(8, Vec::new(), &[(0, &peers[0]), (1, &peers[1])]),
            BadEnvelope,
        ),
        (
            "more acknowledgments than replicas",
            tx(
                12,
                two.to_vec(),
                &[
                    (0, &peers[0]),
                    (1, &peers[1]),
                    (2, &peers[2]),
                    (3, &peers[3]),
                    (3, &peers[3]),
                ],
            ),
            BadEnvelope,
        ),
        // Malformed commitments are the creator's own doing.
        (
            "a short commitment",
            tx(9, vec![vec![1; 31]], &[(0, &peers[0]), (1, &peers[1])]),
            BadEnvelope,
        ),
        (
            "the same commitment twice",
            tx(
                10,
                vec![commitment(1), commitment(1)],
                &[(0, &peers[0]), (1, &peers[1])],
            ),
            BadEnvelope,
        ),
        (
            "65 commitments",
            tx(
                11,
                (0..65).map(commitment).collect(),
                &[(0, &peers[0]), (1, &peers[1])],
            ),
            BadEnvelope,
        ),
    ];
    let creators_own = [
        "f+1 acknowledgments",
        "a short commitment",
        "the same commitment twice",
        "65 commitments",
    ];
    let (names, requests, expected): (Vec<&str>, Vec<_>, Vec<_>) = cases.into_iter().fold(
        (vec![], vec![], vec![]),
        |(mut n, mut r, mut e), (a, b, c)| {
            n.push(a);
            r.push(b);
            e.push(c);
            (n, r, e)
        },
    );
    let commit = execute(&net, &state, requests);
    assert_eq!(commit.block.results.len(), names.len());
    for (i, result) in commit.block.results.iter().enumerate() {
        assert_eq!(
            result.status, expected[i] as i32,
            "{}: {}",
            names[i], commit.messages[i]
        );
        if expected[i] == PrivateDataUnacknowledged {
            assert_eq!(
                result.code,
                v1::ResultCode::FailedPrecondition as i32,
                "{}",
                names[i]
            );
        }
        // What travels beside the signed transaction may be a relay's doing: such a
        // refusal names no transaction.
        assert_eq!(
            result.tx_id.is_empty(),
            !creators_own.contains(&names[i]),
            "{}: tx_id {:?}",
            names[i],
            result.tx_id
        );
    }
    // None of them is valid (a clinician may not register a patient): no private data is
    // kept for a transaction the chaincode refused.
    assert!(commit.private_data.is_empty());
}

/// Before ledger format 4 (the fixture network is format 2), the builds that wrote a chain
/// did not know private data: a transaction's commitments were an unknown field they
/// ignored, and acknowledgments made the envelope non-canonical. Re-executed now, such
/// blocks keep those outcomes.
#[test]
fn before_format_4_commitments_are_ignored_and_acknowledgments_are_not_canonical() {
    let net = network();
    assert!(net.genesis.ledger_format() < medledger_execution::genesis::PRIVATE_DATA_FORMAT);
    let state = MemoryState::new(&net.genesis);
    let peer0 = common::key("peer0.key");
    let (key, cert) = (&net.clinician, &net.certificate);
    let commitment = medledger_crypto::private_commitment(&[1; 32], b"a value").to_vec();
    let ignored = private_transaction(
        &net,
        key,
        cert,
        "register_patient",
        vec![0xff],
        1,
        vec![commitment.clone()],
        &[],
    );
    let acked = private_transaction(
        &net,
        key,
        cert,
        "register_patient",
        vec![0xff],
        2,
        vec![commitment],
        &[(0, &peer0)],
    );
    // A countersignature alone (field 4) was unknown to those builds too.
    let plain = private_transaction(
        &net,
        key,
        cert,
        "register_patient",
        vec![0xff],
        3,
        Vec::new(),
        &[],
    );
    let countersigned = with_signature_bytes(&plain, vec![1]);
    let commit = execute(&net, &state, vec![ignored, acked, countersigned]);
    assert_eq!(
        commit.block.results[2].status,
        v1::TxStatus::BadEnvelope as i32
    );
    assert!(commit.block.results[2].tx_id.is_empty());
    let results = &commit.block.results;
    // As without commitments: the chaincode's refusal (a clinician registers no patient).
    assert_eq!(results[0].status, v1::TxStatus::ChaincodeError as i32);
    assert_eq!(results[1].status, v1::TxStatus::BadEnvelope as i32);
    assert!(results[1].tx_id.is_empty(), "not canonical: nobody's");
    assert!(commit.private_data.is_empty());
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
