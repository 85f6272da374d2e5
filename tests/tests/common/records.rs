//! Chaincode arguments the real-peer tests submit (shared by `peer.rs` and
//! `private_data.rs`, each of which includes this file).
#![allow(dead_code)] // each test binary that includes this file uses some of it

use medledger_proto::v1;
use prost::Message;

/// The record key of the test record `pseudonym` (its pseudonym key taken to be the
/// pseudonym's bytes, as only these tests do).
pub fn record_key(pseudonym: &[u8; 32]) -> medledger_crypto::EncryptionKey {
    medledger_crypto::derive_record_encryption_key(&medledger_crypto::PatientKey::from_bytes(
        *pseudonym,
    ))
}

/// `register_patient` of record `pseudonym`, with one category (lab-results).
pub fn register_args(pseudonym: &[u8; 32]) -> Vec<u8> {
    v1::RegisterPatientArgs {
        pseudonym: pseudonym.to_vec(),
        owner_encryption_key: record_key(pseudonym).public_key().to_bytes().to_vec(),
        category_keys: vec![v1::CategoryKey {
            category: "lab-results".into(),
            public_key: vec![7; 32],
            // Only its length is the ledger's to check; no file is encrypted to this key.
            owner_signature: vec![7; 64],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A write grant on record `pseudonym` to `grantee` for an hour (no key envelope needed).
pub fn grant_args(pseudonym: &[u8; 32], grantee: &str) -> Vec<u8> {
    let now = medledger_tls::now_unix();
    v1::GrantArgs {
        pseudonym: pseudonym.to_vec(),
        grantee: grantee.into(),
        category: "lab-results".into(),
        rights: vec![v1::Right::Write as i32],
        from: now - 60,
        until: now + 3600,
        ..Default::default()
    }
    .encode_to_vec()
}

/// A read grant on record `pseudonym` to `grantee` for an hour, its key envelope sent as
/// the private value committed to by `commitment` (docs/adr/0017).
pub fn read_grant_args(pseudonym: &[u8; 32], grantee: &str, commitment: &[u8]) -> Vec<u8> {
    let mut grant = v1::GrantArgs::decode(grant_args(pseudonym, grantee).as_slice()).unwrap();
    grant.rights = vec![v1::Right::Read as i32];
    grant.key_envelope_commitment = commitment.to_vec();
    grant.encode_to_vec()
}

/// `add_item` of item `item_id` (lab-results, key epoch 1: the first) on record `pseudonym`.
pub fn item_args(pseudonym: &[u8; 32], item_id: &str) -> v1::AddItemArgs {
    v1::AddItemArgs {
        pseudonym: pseudonym.to_vec(),
        item_id: item_id.into(),
        category: "lab-results".into(),
        path: format!("patients/{}/lab-results/{item_id}", hex::encode(pseudonym)),
        sha256: vec![7; 32],
        size: 1024,
        wrapped_dek: vec![6; 80],
        key_epoch: 1,
        ..Default::default()
    }
}
