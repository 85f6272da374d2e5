//! Free text as private data (ledger format 7, docs/adr/0017 step 4): an emergency access's
//! sealed reason reaches the block, state, history and events only as a commitment and the
//! keys it is sealed to; the sealed text is kept apart, given back by the query
//! `sealed_reasons` to the record's owner and the auditors alone; after the record's erasure
//! the trail stays, and so does the reason, for the auditors (docs/adr/0013). Below format 7
//! the sealed text stays where format-6 builds put it.

mod common;

use common::*;
use medledger_chaincode::private::PrivateKeys;
use medledger_chaincode::{ChaincodeError, Denial, check_before_ordering};
use medledger_proto::v1;
use prost::Message;

const LAB: &str = "lab-results";
const WORDS: &str = "unconscious on arrival, prior radiation unknown";

/// A ledger with the newest rules (format 7), patient 1 registered and one named auditor.
fn world() -> (World, medledger_crypto::EncryptionKey) {
    let mut w = World::new();
    w.ledger.keep_private_data();
    let auditor_key = medledger_crypto::EncryptionKey::from_bytes([0x42; 32]);
    w.ledger
        .set_auditor_keys(vec![auditor_key.public_key().to_bytes()]);
    w.register_patient(1, T0);
    (w, auditor_key)
}

/// The keys a reason about patient 1's record must be sealed to: the owner's, the auditor's.
fn readers(
    auditor: &medledger_crypto::EncryptionKey,
) -> Vec<medledger_crypto::EncryptionPublicKey> {
    vec![record_key(1).public_key(), auditor.public_key()]
}

fn key_bytes(keys: &[medledger_crypto::EncryptionPublicKey]) -> Vec<Vec<u8>> {
    keys.iter().map(|k| k.to_bytes().to_vec()).collect()
}

/// Breaks the glass on patient 1's LAB with `value` beside the transaction; `build` makes
/// the arguments from the commitments.
fn break_glass(
    w: &mut World,
    t: i64,
    value: Vec<u8>,
    build: impl FnOnce(&[[u8; 32]]) -> v1::EmergencyAccessArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    w.call_private(
        &emergency_clinician(AUTHOR, None, None),
        t,
        "emergency_access",
        &[value],
        build,
    )
}

fn args(commitment: &[u8], readers: Vec<Vec<u8>>) -> v1::EmergencyAccessArgs {
    v1::EmergencyAccessArgs {
        pseudonym: pseudonym(1),
        category: LAB.into(),
        duration_seconds: 3600,
        sealed_reason_commitment: commitment.to_vec(),
        sealed_reason_readers: readers,
        ..Default::default()
    }
}

fn reasons_for(
    w: &mut World,
    who: &medledger_chaincode::Creator,
    seqs: Vec<u64>,
    t: i64,
) -> Result<v1::SealedReasonsResult, ChaincodeError> {
    w.query(
        who,
        t,
        "sealed_reasons",
        &v1::SealedReasonsArgs {
            pseudonym: pseudonym(1),
            seqs,
        },
    )
}

#[test]
fn a_reason_is_kept_apart_and_read_by_the_owner_and_the_auditors_alone() {
    let (mut w, auditor_key) = world();
    let sealed = seal_to(1, LAB, WORDS, &readers(&auditor_key));
    let value = sealed.encode_to_vec();
    let mut committed = [0u8; 32];
    break_glass(&mut w, T0, value.clone(), |c| {
        committed = c[0];
        args(&c[0], key_bytes(&readers(&auditor_key)))
    })
    .expect("the emergency access commits");

    // State, history and events hold the commitment, never the sealed text or a wrapped key.
    let everything = w.ledger.all_bytes();
    assert!(!contains(&everything, &sealed.ciphertext));
    for reader in &sealed.readers {
        assert!(!contains(&everything, &reader.wrapped_key));
    }
    assert!(contains(&everything, &committed));
    let entry = w
        .audit(1, T0 + 1)
        .into_iter()
        .find(|e| e.emergency)
        .expect("the access is on the trail");
    assert!(entry.sealed_reason.is_none());
    assert_eq!(entry.sealed_reason_commitment, committed);
    let event = w
        .ledger
        .events()
        .iter()
        .find(|e| e.name == "emergency_access")
        .expect("an event");
    let event = v1::EmergencyAccessEvent::decode(event.payload.as_slice()).unwrap();
    assert!(event.sealed_reason.is_none());
    assert_eq!(event.sealed_reason_commitment, committed);
    assert_eq!(event.audit_seq, entry.seq);

    // The owner and the auditor get the sealed text and the salt that checks it, and open it.
    for who in [patient(1), auditor()] {
        let answer = reasons_for(&mut w, &who, vec![entry.seq, entry.seq + 100], T0 + 1).unwrap();
        assert_eq!(answer.reasons.len(), 1, "the one entry with a reason");
        let reason = &answer.reasons[0];
        assert_eq!(reason.seq, entry.seq);
        assert_eq!(reason.value, value);
        let salt: [u8; 32] = reason.salt.as_slice().try_into().unwrap();
        assert_eq!(
            medledger_crypto::private_commitment(&salt, &reason.value),
            committed
        );
    }
    let opened = v1::SealedText::decode(value.as_slice()).unwrap();
    assert_eq!(open_reason(&record_key(1), 1, LAB, &opened).unwrap(), WORDS);
    assert_eq!(open_reason(&auditor_key, 1, LAB, &opened).unwrap(), WORDS);

    // Anyone else is refused before anything is read: the clinician who wrote it, another
    // patient, a researcher.
    for who in [clinician(AUTHOR), patient(2), researcher("dr.r")] {
        assert_eq!(
            denial(reasons_for(&mut w, &who, vec![entry.seq], T0 + 1)),
            Denial::NotOwner
        );
    }
    // Too many at once.
    assert!(matches!(
        reasons_for(&mut w, &patient(1), vec![1; 501], T0 + 1),
        Err(ChaincodeError::InvalidArgument { .. })
    ));

    // A peer that lacks the value answers without it (the client asks the next one).
    let mut lacking = w.ledger.clone();
    lacking.forget_private_value(&committed);
    let mut lacking = World { ledger: lacking };
    let answer = reasons_for(&mut lacking, &patient(1), vec![entry.seq], T0 + 1).unwrap();
    assert!(answer.reasons.is_empty());

    // After the erasure the trail and its reason stay for the auditors (accountability,
    // docs/adr/0013); the record's owner, whose record key went with the wallet, is told the
    // record is erased.
    let erased: v1::ErasureResult = w
        .call_decode(
            &patient(1),
            T0 + 2,
            "erase_patient",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    assert!(erased.purge_complete);
    let kept: Vec<Vec<u8>> = w.ledger.private_values().into_values().collect();
    assert_eq!(kept, std::slice::from_ref(&value));
    let answer = reasons_for(&mut w, &auditor(), vec![entry.seq], T0 + 3).unwrap();
    assert_eq!(answer.reasons.len(), 1);
    assert_eq!(answer.reasons[0].value, value);
    for who in [patient(1), clinician(AUTHOR)] {
        assert!(matches!(
            reasons_for(&mut w, &who, vec![entry.seq], T0 + 3),
            Err(ChaincodeError::PatientErased)
        ));
    }
}

#[test]
fn a_reason_in_clear_uncommitted_or_sealed_to_others_is_refused_on_format_7() {
    let (mut w, auditor_key) = world();
    let readers = readers(&auditor_key);
    let sealed = seal_to(1, LAB, WORDS, &readers);
    let value = sealed.encode_to_vec();

    // In the block, as below format 7: refused before ordering and at execution.
    let in_block = v1::EmergencyAccessArgs {
        sealed_reason: Some(sealed.clone()),
        ..args(&[], Vec::new())
    };
    let encoded = in_block.encode_to_vec();
    assert!(check_before_ordering("emergency_access", &encoded, PrivateKeys::FreeText).is_err());
    assert!(check_before_ordering("emergency_access", &encoded, PrivateKeys::StudyKeys).is_ok());
    assert_eq!(
        invalid_field(w.call(
            &emergency_clinician(AUTHOR, None, None),
            T0,
            "emergency_access",
            &in_block
        )),
        "sealed_reason"
    );

    // No commitment; one the transaction does not carry.
    assert_eq!(
        invalid_field(w.call(
            &emergency_clinician(AUTHOR, None, None),
            T0,
            "emergency_access",
            &args(&[], key_bytes(&readers))
        )),
        "sealed_reason_commitment"
    );
    assert_eq!(
        invalid_field(break_glass(&mut w, T0, value.clone(), |_| args(
            &[7; 32],
            key_bytes(&readers)
        ))),
        "sealed_reason_commitment"
    );

    // Readers: the auditor left out, the owner left out, one of the clinician's own added,
    // one named twice, none, a key of small order.
    let own = medledger_crypto::EncryptionKey::from_bytes([0x77; 32]).public_key();
    let cases: Vec<Vec<Vec<u8>>> = vec![
        key_bytes(&readers[..1]),
        key_bytes(&readers[1..]),
        key_bytes(&[readers[0], readers[1], own]),
        key_bytes(&[readers[0], readers[0], readers[1]]),
        Vec::new(),
        vec![vec![0; 32], key_bytes(&readers[1..])[0].clone()],
    ];
    for keys in cases {
        assert_eq!(
            invalid_field(break_glass(&mut w, T0, value.clone(), |c| args(
                &c[0], keys
            ))),
            "sealed_reason_readers"
        );
    }

    // Nothing of the refused attempts stands: no permission, no value, no reason indexed.
    let list: v1::PermissionList = w
        .query(
            &patient(1),
            T0,
            "list_permissions",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    assert!(list.permissions.is_empty(), "{list:?}");
    assert!(w.ledger.private_values().is_empty());
    assert!(
        w.audit(1, T0)
            .iter()
            .all(|e| e.sealed_reason_commitment.is_empty())
    );

    // Well formed, it commits.
    break_glass(&mut w, T0, value, |c| args(&c[0], key_bytes(&readers))).unwrap();
}

#[test]
fn below_format_7_the_sealed_reason_stays_where_format_6_put_it() {
    let mut w = World::new();
    w.ledger.keep_private_data_as(PrivateKeys::StudyKeys);
    w.register_patient(1, T0);
    let sealed = seal_to(1, LAB, WORDS, &[record_key(1).public_key()]);
    let in_block = v1::EmergencyAccessArgs {
        sealed_reason: Some(sealed.clone()),
        ..args(&[], Vec::new())
    };
    w.call(
        &emergency_clinician(AUTHOR, None, None),
        T0,
        "emergency_access",
        &in_block,
    )
    .expect("format 6 takes the sealed reason in the block");
    let entry = w
        .audit(1, T0 + 1)
        .into_iter()
        .find(|e| e.emergency)
        .unwrap();
    assert_eq!(entry.sealed_reason.as_ref(), Some(&sealed));
    assert!(entry.sealed_reason_commitment.is_empty());
    let event = w
        .ledger
        .events()
        .iter()
        .find(|e| e.name == "emergency_access")
        .unwrap();
    let event = v1::EmergencyAccessEvent::decode(event.payload.as_slice()).unwrap();
    // The event's bytes are format 6's: no sequence number, no commitment.
    assert_eq!(event.audit_seq, 0);
    assert_eq!(event.sealed_reason.as_ref(), Some(&sealed));
}
