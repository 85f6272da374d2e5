//! The patient's identifying information (UII) never reaches the ledger: only the pseudonym
//! derived from it on the patient's machine does.
//! Nor does a clinician's emergency reason: the ledger holds it sealed.
// A host, not the deterministic crate: it may read the clock and the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;
use medledger_crypto::{
    PatientKey, WrapContext, derive_pseudonym, derive_record_encryption_key, seal_text,
};
use medledger_proto::v1::{self, Right};

#[test]
fn the_uii_never_appears_in_any_stored_byte() {
    let name = "Margaret Hamilton-Okafor";
    let birth = "1961-08-17";
    let mrn = "MRN-55512-ONC";
    let uii = format!("{name}|{birth}|{mrn}");
    let key = PatientKey::from_bytes([0x42; 32]);
    let pseudonym = derive_pseudonym(&key, uii.as_bytes()).0.to_vec();

    let mut w = World::new();
    let owner = patient(1);
    let register = v1::RegisterPatientArgs {
        pseudonym: pseudonym.clone(),
        owner_encryption_key: derive_record_encryption_key(&key)
            .public_key()
            .to_bytes()
            .to_vec(),
        category_keys: medledger_chaincode::DEFAULT_CATEGORIES
            .iter()
            .map(|c| v1::CategoryKey {
                category: c.to_string(),
                public_key: vec![3; 32],
                owner_signature: vec![3; 64],
                ..Default::default()
            })
            .collect(),
    };
    w.call(&owner, T0, "register_patient", &register).unwrap();
    w.register_study("res-1", "study-1", T0);
    let mut grant = grant_args(
        1,
        "dr.a",
        "lab-results",
        &[Right::Read, Right::Write, Right::Share],
        T0,
        T0 + DAY,
    );
    grant.pseudonym = pseudonym.clone();
    // The study key signs the record it is granted on.
    grant.study_owner_signature = study_signature(1, "study-1", &pseudonym);
    w.call(&owner, T0, "grant", &grant).unwrap();
    let p = hex::encode(&pseudonym);
    let item = v1::AddItemArgs {
        pseudonym: pseudonym.clone(),
        item_id: "item-1".into(),
        category: "lab-results".into(),
        path: format!("patients/{p}/lab-results/item-1"),
        sha256: vec![7; 32],
        size: 2048,
        wrapped_dek: vec![6; 80],
        key_epoch: 1,
        wrapped_dek_commitment: Vec::new(),
    };
    w.call(&clinician("dr.a"), T0 + 1, "add_item", &item)
        .unwrap();
    let access = v1::RecordAccessArgs {
        pseudonym: pseudonym.clone(),
        item_id: "item-1".into(),
    };
    w.call(&clinician("dr.a"), T0 + 2, "record_access", &access)
        .unwrap();
    let _ = w.call(&clinician("dr.b"), T0 + 3, "record_access", &access);
    let sealed = seal_text(
        "code blue",
        &[derive_record_encryption_key(&key).public_key()],
        WrapContext::TextKey {
            pseudonym: &pseudonym,
            category: "lab-results",
            author: "dr.er",
        },
        &mut rand_core::OsRng,
    )
    .unwrap();
    let emergency = v1::EmergencyAccessArgs {
        pseudonym: pseudonym.clone(),
        category: "lab-results".into(),
        sealed_reason: Some(sealed_proto(sealed)),
        duration_seconds: 3600,
        ..Default::default()
    };
    w.call(
        &emergency_clinician("dr.er", None, None),
        T0 + 4,
        "emergency_access",
        &emergency,
    )
    .unwrap();
    let private = v1::SetPrivateDataArgs {
        pseudonym: pseudonym.clone(),
        ciphertext: vec![0xc1; 64],
    };
    w.call(&owner, T0 + 5, "set_private_data", &private)
        .unwrap();
    w.call(
        &owner,
        T0 + 6,
        "erase_patient",
        &v1::PatientArgs {
            pseudonym: pseudonym.clone(),
        },
    )
    .unwrap();

    let bytes = w.ledger.all_bytes();
    assert!(!bytes.is_empty());
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for part in [
        uii.as_str(),
        name,
        "Hamilton",
        "Okafor",
        "Margaret",
        birth,
        "1961",
        mrn,
        "55512",
        "code blue",
    ] {
        assert!(!contains(part.as_bytes()), "{part:?} reached the ledger");
    }
    assert!(
        !contains(key.as_bytes()),
        "the pseudonym key reached the ledger"
    );
    assert!(
        contains(&pseudonym),
        "the pseudonym itself is what the ledger keys on"
    );
}
