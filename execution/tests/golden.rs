//! Golden bytes of ledger formats 1 and 2 (`genesis::LEDGER_FORMAT`; formats 3 to 7 encode
//! as 2 and differ in outcomes only, docs/adr/0011 and 0017): a block, a result,
//! world-state values, the header hash, the transaction root and the state root, each for
//! fixed inputs; for format 2 also the header hash, the result leaf, the result root, the
//! block vote and a commit proof's path (docs/adr/0009).
//! These are what peers of different versions must compute alike and what an auditor
//! re-derives from old blocks. A test failing here means an encoding changed: that is a new
//! ledger format (a new `LEDGER_FORMAT`, a migration, a note), never a value to paste over.
// A host, not the deterministic crate: it may read the clock and the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use medledger_execution::block::{
    WriteSet, header_hash, next_state_root, result_leaf_data, result_leaves, tx_root,
};
use medledger_execution::genesis::LEDGER_FORMAT;
use medledger_execution::merkle::Tree;
use medledger_execution::proof::vote_bytes;
use medledger_proto::v1;
use prost::Message;
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn result() -> v1::TxResult {
    v1::TxResult {
        tx_id: vec![0x11; 32],
        status: v1::TxStatus::ChaincodeError as i32,
        message: String::new(),
        result: vec![1, 2, 3],
        events: vec![v1::ChaincodeEvent {
            name: "access".into(),
            payload: vec![9; 4],
        }],
        creator: "dr.house".into(),
        function: "record_access".into(),
        code: 7,
    }
}

fn block() -> v1::Block {
    let envelopes = vec![vec![0xaa; 40], vec![0xbb; 3]];
    v1::Block {
        header: Some(v1::BlockHeader {
            number: 7,
            prev_hash: vec![0x22; 32],
            tx_root: tx_root(&envelopes).to_vec(),
            state_root: vec![0x33; 32],
            time_ms: 1_764_460_800_000,
            ..Default::default()
        }),
        results: vec![result(), v1::TxResult::default()],
        envelopes,
        certificate: Some(v1::CommitCertificate {
            view: 2,
            batch_digest: vec![0x44; 32],
            commits: (0..3)
                .map(|replica| v1::ReplicaSignature {
                    replica,
                    signature: vec![replica as u8; 64],
                })
                .collect(),
        }),
        batch_time_ms: 1_764_460_799_999,
        genesis: None,
        request_ids: vec![vec![0x11; 32], vec![0x12; 32]],
        votes: Vec::new(),
    }
}

#[test]
fn new_networks_are_format_7_and_format_1_still_reads() {
    assert_eq!(LEDGER_FORMAT, 7);
    assert_eq!(medledger_execution::genesis::OLDEST_LEDGER_FORMAT, 1);
    let block = v1::Block::decode(FORMAT_1_GENESIS).unwrap();
    let genesis = medledger_execution::genesis::Genesis::from_block(block)
        .expect("a format-1 genesis still reads");
    assert_eq!(genesis.ledger_format(), 1);
}

/// A genesis of ledger format 1, written before format 2 existed (fuzz/fixtures of then).
const FORMAT_1_GENESIS: &[u8] = include_bytes!("data/format1-genesis.pb");

#[test]
fn block_and_header() {
    let block = block();
    let header = block.header.as_ref().unwrap();
    assert_eq!(
        hex(&header.tx_root),
        "5cc40d7e136de435a8b3b255e5163988eabc7e7cc27b94a933ecfa3313034104",
        "the transaction root of ledger format 1"
    );
    assert_eq!(
        hex(&header_hash(header)),
        "434b1d8dfcb7b16c7c2ef4aa76baad7453e9b9845eda8d9883d1fd5ec0b468e4"
    );
    assert_eq!(
        sha256_hex(&block.encode_to_vec()),
        "673f6150cb1da94a27324f7a6dc7465250b9ac4ecb89c4e13daff9d8ae5255c8"
    );
    assert_eq!(
        sha256_hex(&result().encode_to_vec()),
        "ee2518edd074d90da4c51a204bd9c4dab5845fb3f70f1213a4753dd2283cb2fb"
    );
}

#[test]
fn state_root_chain() {
    let mut writes = WriteSet::new();
    writes.insert("patient/abc".into(), Some(vec![1, 2, 3]));
    writes.insert("permission/abc/1".into(), None);
    assert_eq!(
        hex(&next_state_root(&[0x55; 32], &writes)),
        "de1d44b2a0dece1fa7fa89be3251397e4ad1d42a26275d8bbf2d140b2527d44e"
    );
}

#[test]
fn world_state_values() {
    let permission = v1::Permission {
        id: "perm-1".into(),
        grantee: "dr.house".into(),
        category: "lab-results".into(),
        rights: vec![v1::Right::Read as i32, v1::Right::Write as i32],
        from: 1_764_460_800,
        until: 1_767_139_200,
        study_id: String::new(),
        anonymize: false,
        study_pseudonym: Vec::new(),
        granted_at: 1_764_460_700,
        key_envelope: vec![0x66; 80],
        key_epoch: 1,
        revoked: false,
        revoked_at: 0,
        emergency: false,
        reason: String::new(),
        // Empty (not a share grant): encoded as nothing, the golden value stands.
        study_owner_key: Vec::new(),
        // Empty below ledger format 4: encoded as nothing, the golden value stands.
        key_envelope_commitment: Vec::new(),
    };
    assert_eq!(
        sha256_hex(&permission.encode_to_vec()),
        "b3ec4255a49cf5ef75f06e36d7e1990e1a94b8f01a61edda085377ef64b27e8a"
    );
    let entry = v1::AuditEntry {
        seq: 3,
        time: 1_764_460_900,
        actor: "dr.house".into(),
        actor_role: "clinician".into(),
        action: v1::AuditAction::Access as i32,
        category: "lab-results".into(),
        item: "item-1".into(),
        outcome: v1::Outcome::Denied as i32,
        tx_id: vec![0x77; 32],
        repeats: 2,
        last_time: 1_764_461_000,
        denied: Some(v1::Denied {
            reason: v1::DenialReason::WindowExpired as i32,
            until: 1_764_460_850,
            ..v1::Denied::default()
        }),
        ..v1::AuditEntry::default()
    };
    assert_eq!(
        sha256_hex(&entry.encode_to_vec()),
        "1fcf018d2cdc421b90fd61e6f64730d6a9f49f8da12d53920198c56b4ae02ba1"
    );
}

/// A genesis in another ledger format is refused with the reason, not misread.
#[test]
fn a_genesis_of_another_ledger_format_is_refused() {
    use medledger_execution::genesis::Genesis;
    let block = v1::Block::decode(FORMAT_1_GENESIS).unwrap();
    Genesis::from_block(block.clone()).expect("the fixture genesis reads");
    for format in [0, 4, u32::MAX] {
        let mut other = block.clone();
        other
            .genesis
            .as_mut()
            .unwrap()
            .consensus
            .as_mut()
            .unwrap()
            .ledger_format = format;
        // Consistently: the header commits to the configuration.
        let config = other.genesis.as_ref().unwrap().encode_to_vec();
        other.header.as_mut().unwrap().tx_root = Sha256::digest(&config).to_vec();
        let err = Genesis::from_block(other)
            .expect_err("another format is refused")
            .to_string();
        assert!(err.contains("ledger format"), "{err}");
    }
}

/// The format-2 header of `block()`: the same fields, plus format, result root and config.
fn header_v2() -> v1::BlockHeader {
    let results = vec![result(), v1::TxResult::default()];
    let envelopes = block().envelopes;
    let leaves = result_leaves(&envelopes, &results);
    v1::BlockHeader {
        format: 2,
        result_root: Tree::new(leaves).root().to_vec(),
        config: vec![0x66; 32],
        ..block().header.unwrap()
    }
}

#[test]
fn format_2_header_leaf_root_and_vote() {
    let r = result();
    assert_eq!(
        hex(&result_leaf_data(&[0xee; 32], &r)),
        GOLDEN_LEAF_DATA,
        "the result leaf of ledger format 2"
    );
    let header = header_v2();
    assert_eq!(hex(&header.result_root), GOLDEN_RESULT_ROOT);
    assert_eq!(hex(&header_hash(&header)), GOLDEN_HEADER_HASH_V2);
    assert_eq!(
        hex(&vote_bytes(&[0x77; 32], 7, &header_hash(&header))),
        GOLDEN_VOTE_BYTES
    );
    // The two leaves' paths are each other's hash.
    let leaves = result_leaves(&block().envelopes, &[result(), v1::TxResult::default()]);
    let tree = Tree::new(leaves.clone());
    assert_eq!(tree.path(0).unwrap(), vec![leaves[1]]);
    assert_eq!(tree.path(1).unwrap(), vec![leaves[0]]);
}

// Computed independently with Python's hashlib over the layout of docs/adr/0009 (its
// "Encodings" section gives the script).
const GOLDEN_LEAF_DATA: &str = "00000000000000186d65646c65646765722f76322f726573756c742d6c6561660000000000000020eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee0000000000000002000000000000000700000000000000201111111111111111111111111111111111111111111111111111111111111111000000000000000301020300000000000000010000000000000006616363657373000000000000000409090909000000000000000864722e686f757365000000000000000d7265636f72645f616363657373";
const GOLDEN_RESULT_ROOT: &str = "e7bb98f181a9b79e6b73b807ba4933ddc63c3a17918ec68390f0e0fd3f87eead";
const GOLDEN_HEADER_HASH_V2: &str =
    "e4c638dbfad50034c4c827c0f2fa994d090a311e2f41968f09d32438dee185ff";
const GOLDEN_VOTE_BYTES: &str = "00000000000000176d65646c65646765722f76322f626c6f636b2d766f74650000000000000020777777777777777777777777777777777777777777777777777777777777777700000000000000070000000000000020e4c638dbfad50034c4c827c0f2fa994d090a311e2f41968f09d32438dee185ff";
