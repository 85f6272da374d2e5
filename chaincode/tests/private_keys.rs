//! Key material as private data (docs/adr/0017, step 2): on a ledger that keeps it, grant
//! envelopes, a rotation's envelopes and the key chain's links reach state only as
//! commitments; the values are kept apart, given back only by the query `access_keys` to a
//! clinician whose permission is live, replaced at rotation and purged at erasure. Below
//! format 4 nothing changes.

mod common;

use common::*;
use medledger_chaincode::private::PrivateKeys;
use medledger_chaincode::{ChaincodeError, Denial, check_before_ordering};
use medledger_proto::v1::{self, Right};
use prost::Message;

const LAB: &str = "lab-results";
const ENVELOPE: [u8; 80] = [0xe1; 80];
const WRAPPED: [u8; 80] = [0xd1; 80];

/// A ledger that keeps private data, with patient 1 registered.
fn private_world() -> World {
    let mut w = World::new();
    w.ledger.keep_private_data();
    w.register_patient(1, T0);
    w
}

/// Patient 1 grants `grantee` read on LAB for a day, the envelope `envelope` as private data.
fn grant_private(w: &mut World, grantee: &str, envelope: &[u8], t: i64) -> String {
    let result = w
        .call_private(
            &patient(1),
            t,
            "grant",
            &[envelope.to_vec()],
            |commitments| v1::GrantArgs {
                key_envelope: Vec::new(),
                key_envelope_commitment: commitments[0].to_vec(),
                ..grant_args(1, grantee, LAB, &[Right::Read], T0, T0 + DAY)
            },
        )
        .expect("the grant commits");
    v1::GrantResult::decode(result.as_slice()).unwrap().id
}

/// `who` adds item `item` to LAB (epoch 1), its wrapped file key `wrapped` as private data.
fn add_item_private(
    w: &mut World,
    who: &medledger_chaincode::Creator,
    item: &str,
    wrapped: &[u8],
    t: i64,
) {
    w.call_private(who, t, "add_item", &[wrapped.to_vec()], |c| {
        v1::AddItemArgs {
            wrapped_dek: Vec::new(),
            wrapped_dek_commitment: c[0].to_vec(),
            ..item_args(1, item, LAB, 1)
        }
    })
    .expect("the item is added");
}

fn keys_of(
    w: &mut World,
    who: &str,
    item: &str,
    t: i64,
) -> Result<v1::AccessKeysResult, ChaincodeError> {
    w.query(
        &clinician(who),
        t,
        "access_keys",
        &v1::AccessKeysArgs {
            pseudonym: pseudonym(1),
            item_id: item.into(),
        },
    )
}

#[test]
fn a_grant_envelope_is_kept_apart_and_given_to_its_grantee_alone() {
    let mut w = private_world();
    let id = grant_private(&mut w, "dr.a", &ENVELOPE, T0);
    add_item_private(&mut w, &patient(1), "item-0", &WRAPPED, T0);

    // State, history and events hold the commitments, never the envelope or the file key.
    for secret in [&ENVELOPE, &WRAPPED] {
        assert!(!contains(&w.ledger.all_bytes(), secret));
    }
    let kept = w.ledger.private_values();
    assert_eq!(kept.len(), 2);
    let commitment_of = |value: &[u8]| *kept.iter().find(|(_, v)| *v == value).unwrap().0;
    let (commitment, item_commitment) = (commitment_of(&ENVELOPE), commitment_of(&WRAPPED));
    assert!(contains(&w.ledger.all_bytes(), &commitment));

    // The access's result (in the block) names the commitments and holds no key.
    let access = w.access(&clinician("dr.a"), 1, "item-0", T0 + 1).unwrap();
    assert!(access.key_envelope.is_empty());
    assert_eq!(access.key_envelope_commitment, commitment);
    assert_eq!(access.permission_id, id);
    let item = access.item.unwrap();
    assert!(item.wrapped_dek.is_empty());
    assert_eq!(item.wrapped_dek_commitment, item_commitment);

    // The grantee's query gives the envelope, the file key and the salts that check them.
    let keys = keys_of(&mut w, "dr.a", "item-0", T0 + 1).unwrap();
    assert_eq!(keys.key_envelope, ENVELOPE);
    assert_eq!(keys.wrapped_dek, WRAPPED);
    assert_eq!(keys.permission_id, id);
    let salt: [u8; 32] = keys.key_envelope_salt.as_slice().try_into().unwrap();
    assert_eq!(
        medledger_crypto::private_commitment(&salt, &ENVELOPE),
        commitment
    );
    let salt: [u8; 32] = keys.wrapped_dek_salt.as_slice().try_into().unwrap();
    assert_eq!(
        medledger_crypto::private_commitment(&salt, &WRAPPED),
        item_commitment
    );

    // The owner gets the file key alone (it holds the category keys).
    let own: v1::AccessKeysResult = w
        .query(
            &patient(1),
            T0 + 1,
            "access_keys",
            &v1::AccessKeysArgs {
                pseudonym: pseudonym(1),
                item_id: "item-0".into(),
            },
        )
        .unwrap();
    assert_eq!(own.wrapped_dek, WRAPPED);
    assert!(own.key_envelope.is_empty() && own.permission_id.is_empty());

    // Nobody else: another clinician, another patient, a researcher; nor the grantee
    // before the window opens, after it ends, or once revoked.
    assert!(matches!(
        denial(keys_of(&mut w, "dr.b", "item-0", T0 + 1)),
        Denial::NoPermission { .. }
    ));
    for who in [patient(2), researcher("res"), auditor(), admin()] {
        let answer: Result<v1::AccessKeysResult, _> = w.query(
            &who,
            T0 + 1,
            "access_keys",
            &v1::AccessKeysArgs {
                pseudonym: pseudonym(1),
                item_id: "item-0".into(),
            },
        );
        assert!(
            matches!(denial(answer), Denial::WrongRole { .. }),
            "{}",
            who.name
        );
    }
    assert!(matches!(
        denial(keys_of(&mut w, "dr.a", "item-0", T0 - 1)),
        Denial::WindowNotStarted { .. }
    ));
    assert!(matches!(
        denial(keys_of(&mut w, "dr.a", "item-0", T0 + DAY)),
        Denial::WindowExpired { .. }
    ));
    w.call(
        &patient(1),
        T0 + 2,
        "revoke",
        &v1::RevokeArgs {
            pseudonym: pseudonym(1),
            permission_id: id,
        },
    )
    .unwrap();
    assert!(keys_of(&mut w, "dr.a", "item-0", T0 + 3).is_err());
    // The revocation purged the envelope from the peers; the file key stays.
    let kept = w.ledger.private_values();
    assert!(
        !kept.contains_key(&commitment),
        "the revoked envelope is purged"
    );
    assert!(kept.contains_key(&item_commitment));
    assert!(matches!(
        keys_of(&mut w, "dr.a", "missing", T0 + 1),
        Err(ChaincodeError::NotFound { .. })
    ));
}

#[test]
fn key_material_in_clear_or_uncommitted_is_refused_on_a_private_ledger() {
    let mut w = private_world();
    // The envelope in clear: refused before ordering and at execution alike.
    let clear = grant_args(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY);
    assert!(
        check_before_ordering("grant", &clear.encode_to_vec(), PrivateKeys::RecordKeys).is_err()
    );
    assert!(check_before_ordering("grant", &clear.encode_to_vec(), PrivateKeys::None).is_ok());
    assert_eq!(
        invalid_field(w.call(&patient(1), T0, "grant", &clear)),
        "key_envelope"
    );

    // A commitment the transaction does not carry, or of the wrong length.
    for commitment in [vec![7u8; 32], vec![7u8; 31]] {
        let args = v1::GrantArgs {
            key_envelope: Vec::new(),
            key_envelope_commitment: commitment,
            ..clear.clone()
        };
        assert_eq!(
            invalid_field(w.call(&patient(1), T0, "grant", &args)),
            "key_envelope"
        );
    }
    // Read without any envelope at all.
    let none = v1::GrantArgs {
        key_envelope: Vec::new(),
        ..clear.clone()
    };
    assert_eq!(
        invalid_field(w.call(&patient(1), T0, "grant", &none)),
        "key_envelope"
    );

    // A value no field refers to: refused, and not kept.
    let result = w.call_private(
        &patient(1),
        T0,
        "grant",
        &[ENVELOPE.to_vec(), vec![0x99; 40]],
        |commitments| v1::GrantArgs {
            key_envelope: Vec::new(),
            key_envelope_commitment: commitments[0].to_vec(),
            ..clear.clone()
        },
    );
    assert_eq!(invalid_field(result), "private_commitments");
    // A write-only grant carries no key, so no private value either.
    let result = w.call_private(&patient(1), T0, "grant", &[ENVELOPE.to_vec()], |_| {
        v1::GrantArgs {
            key_envelope: Vec::new(),
            ..grant_args(1, "dr.w", LAB, &[Right::Write], T0, T0 + DAY)
        }
    });
    assert_eq!(invalid_field(result), "private_commitments");
    // A file key in clear, refused before ordering and at execution.
    let clear_item = item_args(1, "item-9", LAB, 1);
    assert!(
        check_before_ordering(
            "add_item",
            &clear_item.encode_to_vec(),
            PrivateKeys::RecordKeys
        )
        .is_err()
    );
    assert_eq!(
        invalid_field(w.call(&patient(1), T0, "add_item", &clear_item)),
        "wrapped_dek"
    );
    // A function that takes no private data (an admin's new category), carrying some.
    let result = w.call_private(
        &admin(),
        T0,
        "register_category",
        &[ENVELOPE.to_vec()],
        |_| v1::RegisterCategoryArgs {
            name: "imaging".into(),
            description: String::new(),
        },
    );
    assert_eq!(invalid_field(result), "private_commitments");
    // Refused by someone else than the owner: audited, nothing kept.
    let result = w.call_private(&clinician("dr.x"), T0, "grant", &[ENVELOPE.to_vec()], |c| {
        v1::GrantArgs {
            key_envelope: Vec::new(),
            key_envelope_commitment: c[0].to_vec(),
            ..clear.clone()
        }
    });
    assert!(matches!(denial(result), Denial::NotOwner));
    assert!(w.ledger.private_values().is_empty());
    assert!(!contains(&w.ledger.all_bytes(), &ENVELOPE));
}

/// A rotation keeping dr.keep: its new envelope and the key chain's link as private data.
fn rotate_private(w: &mut World, keep: &str, t: i64) -> Result<Vec<u8>, ChaincodeError> {
    let keep = keep.to_string();
    w.call_private(
        &patient(1),
        t,
        "rotate_category_key",
        &[vec![0x11; 80], vec![0x33; 80]],
        move |c| v1::RotateCategoryKeyArgs {
            pseudonym: pseudonym(1),
            category: LAB.into(),
            public_key: vec![0x77; 32],
            envelopes: vec![v1::EnvelopeUpdate {
                permission_id: keep,
                key_envelope: Vec::new(),
                key_envelope_commitment: c[0].to_vec(),
            }],
            owner_signature: vec![0x77; 64],
            epoch: 2,
            previous_key_envelope: Vec::new(),
            previous_key_envelope_commitment: c[1].to_vec(),
        },
    )
}

#[test]
fn a_rotation_replaces_the_envelope_and_commits_the_key_chain() {
    let mut w = private_world();
    let keep = grant_private(&mut w, "dr.keep", &ENVELOPE, T0);
    add_item_private(&mut w, &patient(1), "item-0", &WRAPPED, T0);

    // The same commitment named twice (the envelope and the link) is refused.
    let twice = w.call_private(
        &patient(1),
        T0 + 1,
        "rotate_category_key",
        &[vec![0x11; 80]],
        |c| v1::RotateCategoryKeyArgs {
            pseudonym: pseudonym(1),
            category: LAB.into(),
            public_key: vec![0x77; 32],
            envelopes: vec![v1::EnvelopeUpdate {
                permission_id: keep.clone(),
                key_envelope: Vec::new(),
                key_envelope_commitment: c[0].to_vec(),
            }],
            owner_signature: vec![0x77; 64],
            epoch: 2,
            previous_key_envelope: Vec::new(),
            previous_key_envelope_commitment: c[0].to_vec(),
        },
    );
    assert_eq!(invalid_field(twice), "envelopes.key_envelope");

    rotate_private(&mut w, &keep, T0 + 1).unwrap();
    // The epoch-1 envelope is purged; the new one and the link are kept.
    let kept: Vec<Vec<u8>> = w.ledger.private_values().into_values().collect();
    assert!(!kept.contains(&ENVELOPE.to_vec()));
    assert!(kept.contains(&vec![0x11; 80]) && kept.contains(&vec![0x33; 80]));
    assert!(!contains(&w.ledger.all_bytes(), &[0x33; 80]));

    // An item of epoch 1: the access names the link's commitment; the query gives it.
    let access = w
        .access(&clinician("dr.keep"), 1, "item-0", T0 + 2)
        .unwrap();
    assert!(access.key_chain.is_empty());
    assert_eq!(access.key_chain_commitments.len(), 1);
    let keys = keys_of(&mut w, "dr.keep", "item-0", T0 + 2).unwrap();
    assert_eq!(keys.key_envelope, vec![0x11; 80]);
    assert_eq!(keys.key_epoch, 2);
    assert_eq!(keys.key_chain, vec![vec![0x33; 80]]);
    let salt: [u8; 32] = keys.key_chain_salts[0].as_slice().try_into().unwrap();
    assert_eq!(
        medledger_crypto::private_commitment(&salt, &keys.key_chain[0])[..],
        access.key_chain_commitments[0][..]
    );
}

#[test]
fn an_erasure_purges_every_private_value_of_the_record() {
    let mut w = private_world();
    let keep = grant_private(&mut w, "dr.keep", &ENVELOPE, T0);
    grant_private(&mut w, "dr.other", &[0xe2; 80], T0);
    add_item_private(&mut w, &patient(1), "item-0", &WRAPPED, T0);
    rotate_private(&mut w, &keep, T0 + 1).unwrap();
    // Another record's envelope stays.
    w.register_patient(2, T0);
    w.call_private(&patient(2), T0, "grant", &[vec![0xe3; 80]], |c| {
        v1::GrantArgs {
            key_envelope: Vec::new(),
            key_envelope_commitment: c[0].to_vec(),
            ..grant_args(2, "dr.keep", LAB, &[Right::Read], T0, T0 + DAY)
        }
    })
    .unwrap();
    assert_eq!(w.ledger.private_values().len(), 5);

    let record = v1::PatientArgs {
        pseudonym: pseudonym(1),
    };
    let erased: v1::ErasureResult = w
        .call_decode(&patient(1), T0 + 2, "erase_patient", &record)
        .unwrap();
    assert!(erased.purge_complete);
    let kept: Vec<Vec<u8>> = w.ledger.private_values().into_values().collect();
    assert_eq!(kept, [vec![0xe3; 80]]);
}

#[test]
fn below_format_4_the_envelope_stays_in_clear_and_a_commitment_is_ignored() {
    let mut w = World::new();
    w.register_patient(1, T0);
    let args = v1::GrantArgs {
        key_envelope_commitment: vec![7; 32],
        ..grant_args(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY)
    };
    w.call(&patient(1), T0, "grant", &args).unwrap();
    w.add_item(&patient(1), 1, "item-0", LAB, T0).unwrap();
    let access = w.access(&clinician("dr.a"), 1, "item-0", T0 + 1).unwrap();
    assert_eq!(access.key_envelope, vec![0xee; 80]);
    assert_eq!(access.item.unwrap().wrapped_dek, vec![6; 80]);
    assert!(access.key_envelope_commitment.is_empty());
    // The query serves the same key from state, with no salt.
    let keys = keys_of(&mut w, "dr.a", "item-0", T0 + 1).unwrap();
    assert_eq!(keys.key_envelope, vec![0xee; 80]);
    assert!(keys.key_envelope_salt.is_empty());
}

#[test]
fn a_transaction_never_reads_a_private_value() {
    use medledger_chaincode::Stub;
    use medledger_chaincode::stub::StubError;
    let mut w = private_world();
    grant_private(&mut w, "dr.a", &ENVELOPE, T0);
    let commitment = *w.ledger.private_values().keys().next().unwrap();
    let tx = w.ledger.transaction(clinician("dr.a"), T0);
    assert_eq!(
        tx.private_value(&commitment),
        Err(StubError::PrivateOnlyInQueries)
    );
    drop(tx);
    let query = w.ledger.query_stub(clinician("dr.a"), T0);
    assert_eq!(query.private_value(&commitment).unwrap().1, ENVELOPE);
    assert_eq!(
        query.private_value(&[0; 32]),
        Err(StubError::PrivateValueUnavailable)
    );
}

/// A red team of step 2: a commitment claimed by one record could be claimed again by
/// another (the private column family is keyed by commitment alone), whose rotation or
/// erasure then purged the first record's value from every peer. A commitment is now taken
/// once, for good.
#[test]
fn a_commitment_is_taken_once_across_records_and_after_a_purge() {
    let mut w = private_world();
    w.register_patient(2, T0);
    grant_private(&mut w, "dr.a", &ENVELOPE, T0);
    let taken = *w.ledger.private_values().keys().next().unwrap();
    // Patient 2 sends the same value under the same salt (a grantee of record 1 learns both
    // from access_keys): the same commitment, refused.
    let again = w.call_private(&patient(2), T0 + 1, "grant", &[ENVELOPE.to_vec()], |c| {
        assert_eq!(
            c[0], taken,
            "the same value and salt make the same commitment"
        );
        v1::GrantArgs {
            key_envelope: Vec::new(),
            key_envelope_commitment: c[0].to_vec(),
            ..grant_args(2, "dr.b", LAB, &[Right::Read], T0, T0 + DAY)
        }
    });
    assert_eq!(invalid_field(again), "key_envelope");
    // Record 2's erasure leaves record 1's envelope with every peer.
    w.call(
        &patient(2),
        T0 + 2,
        "erase_patient",
        &v1::PatientArgs {
            pseudonym: pseudonym(2),
        },
    )
    .unwrap();
    assert!(w.ledger.private_values().contains_key(&taken));
    // Nor may record 1 itself claim it again once purged (an erased value coming back).
    let record = v1::PatientArgs {
        pseudonym: pseudonym(1),
    };
    w.call(&patient(1), T0 + 3, "erase_patient", &record)
        .unwrap();
    assert!(w.ledger.private_values().is_empty());
    w.register_patient(3, T0 + 4);
    let back = w.call_private(&patient(3), T0 + 4, "grant", &[ENVELOPE.to_vec()], |c| {
        v1::GrantArgs {
            key_envelope: Vec::new(),
            key_envelope_commitment: c[0].to_vec(),
            ..grant_args(3, "dr.a", LAB, &[Right::Read], T0, T0 + DAY)
        }
    });
    assert_eq!(invalid_field(back), "key_envelope");
}

/// A red team of step 2: a rotation naming one permission twice claimed two envelopes and
/// kept one, leaving a value nothing refers to, which no erasure would purge.
#[test]
fn a_rotation_names_each_permission_once() {
    let mut w = private_world();
    let keep = grant_private(&mut w, "dr.keep", &ENVELOPE, T0);
    let twice = w.call_private(
        &patient(1),
        T0 + 1,
        "rotate_category_key",
        &[vec![0x11; 80], vec![0x12; 80], vec![0x33; 80]],
        |c| v1::RotateCategoryKeyArgs {
            pseudonym: pseudonym(1),
            category: LAB.into(),
            public_key: vec![0x77; 32],
            envelopes: [c[0], c[1]]
                .iter()
                .map(|c| v1::EnvelopeUpdate {
                    permission_id: keep.clone(),
                    key_envelope: Vec::new(),
                    key_envelope_commitment: c.to_vec(),
                })
                .collect(),
            owner_signature: vec![0x77; 64],
            epoch: 2,
            previous_key_envelope: Vec::new(),
            previous_key_envelope_commitment: c[2].to_vec(),
        },
    );
    assert_eq!(invalid_field(twice), "envelopes");
    assert_eq!(
        w.ledger.private_values().len(),
        1,
        "only the grant's envelope"
    );
}

/// A red team of step 2: `access_keys` read the file key before it checked the caller, so
/// anyone learned whether a peer held it. A caller who may not read is refused as such.
#[test]
fn who_may_not_read_never_learns_whether_a_value_is_held() {
    let mut w = private_world();
    grant_private(&mut w, "dr.a", &ENVELOPE, T0);
    add_item_private(&mut w, &patient(1), "item-0", &WRAPPED, T0);
    let file_key = *w
        .ledger
        .private_values()
        .iter()
        .find(|(_, v)| v.as_slice() == WRAPPED)
        .unwrap()
        .0;
    w.ledger.forget_private_value(&file_key);
    let args = v1::AccessKeysArgs {
        pseudonym: pseudonym(1),
        item_id: "item-0".into(),
    };
    let researcher: Result<v1::AccessKeysResult, _> =
        w.query(&researcher("res"), T0 + 1, "access_keys", &args);
    assert!(matches!(denial(researcher), Denial::WrongRole { .. }));
    assert!(matches!(
        denial(keys_of(&mut w, "dr.b", "item-0", T0 + 1)),
        Denial::NoPermission { .. }
    ));
    // The grantee learns it: this peer lacks the file key (empty, no salt) and answers the
    // envelope it holds; the client gathers the file key from another peer.
    let keys = keys_of(&mut w, "dr.a", "item-0", T0 + 1).unwrap();
    assert!(keys.wrapped_dek.is_empty() && keys.wrapped_dek_salt.is_empty());
    assert_eq!(keys.key_envelope, ENVELOPE);
    assert_eq!(keys.key_envelope_salt.len(), 32);
}

/// A red team of steps 2 and 3: `access_keys` knew the owner by name alone. A certificate
/// in the owner's name with another key than the record was registered with is not the
/// owner, here as for a rotation.
#[test]
fn the_owner_is_known_by_the_registered_key_too() {
    let mut w = private_world();
    add_item_private(&mut w, &patient(1), "item-0", &WRAPPED, T0);
    let args = v1::AccessKeysArgs {
        pseudonym: pseudonym(1),
        item_id: "item-0".into(),
    };
    let own: v1::AccessKeysResult = w.query(&patient(1), T0 + 1, "access_keys", &args).unwrap();
    assert_eq!(own.wrapped_dek, WRAPPED);
    let mut other_key = patient(1);
    other_key.signing_key = [0x5f; 32];
    let answer: Result<v1::AccessKeysResult, _> = w.query(&other_key, T0 + 1, "access_keys", &args);
    assert!(matches!(denial(answer), Denial::WrongRole { .. }));
}

const STUDY_WRAPPED: [u8; 80] = [0x5d; 80];

/// Patient 1 (on `w`) lets dr.a share LAB into study-1 (res-1's; res-2 registers study-2)
/// and adds item-1: the envelope and the file key as private data when `private`.
fn study_world(w: &mut World, private: bool) {
    w.register_study("res-1", "study-1", T0);
    w.register_study("res-2", "study-2", T0);
    let share = grant_args(1, "dr.a", LAB, &[Right::Share], T0, T0 + DAY);
    if !private {
        w.call(&patient(1), T0, "grant", &share).unwrap();
        w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
        return;
    }
    w.call_private(&patient(1), T0, "grant", &[ENVELOPE.to_vec()], |c| {
        v1::GrantArgs {
            key_envelope: Vec::new(),
            key_envelope_commitment: c[0].to_vec(),
            ..share
        }
    })
    .unwrap();
    add_item_private(w, &patient(1), "item-1", &WRAPPED, T0);
}

/// `who` asks for study-1's copy s-1's file key.
fn study_keys(w: &mut World, who: &str, t: i64) -> Result<v1::AccessKeysResult, ChaincodeError> {
    w.query(&researcher(who), t, "study_access_keys", &study_copy_args())
}

fn study_copy_args() -> v1::RecordStudyAccessArgs {
    v1::RecordStudyAccessArgs {
        study_id: "study-1".into(),
        study_pseudonym: study_pseudonym(1, "study-1"),
        item_id: "s-1".into(),
    }
}

#[test]
fn a_study_copy_key_is_kept_apart_and_given_to_the_studys_researcher_alone() {
    let mut w = private_world();
    study_world(&mut w, true);
    let dr = clinician("dr.a");

    // In clear it is refused, before ordering and at execution.
    let clear = share_args(1, "item-1", "study-1", "s-1", false);
    assert_eq!(
        invalid_field(w.call(&dr, T0 + 1, "share_for_study", &clear)),
        "wrapped_dek"
    );
    for (rules, refused) in [
        (PrivateKeys::StudyKeys, true),
        (PrivateKeys::RecordKeys, false),
        (PrivateKeys::None, false),
    ] {
        let checked = check_before_ordering("share_for_study", &clear.encode_to_vec(), rules);
        assert_eq!(checked.is_err(), refused, "{rules:?}");
    }

    // As a commitment, the copy is recorded with it, and the key is nowhere in state,
    // history or events.
    w.call_private(
        &dr,
        T0 + 1,
        "share_for_study",
        &[STUDY_WRAPPED.to_vec()],
        |c| v1::ShareForStudyArgs {
            wrapped_dek: Vec::new(),
            wrapped_dek_commitment: c[0].to_vec(),
            ..share_args(1, "item-1", "study-1", "s-1", false)
        },
    )
    .expect("the copy is shared");
    assert!(!contains(&w.ledger.all_bytes(), &STUDY_WRAPPED));
    let commitment = *w
        .ledger
        .private_values()
        .iter()
        .find(|(_, v)| v[..] == STUDY_WRAPPED)
        .expect("the key is kept as private data")
        .0;

    // The committed access (its result is in the block) names the commitment, no key.
    let access: v1::RecordStudyAccessResult = w
        .call_decode(
            &researcher("res-1"),
            T0 + 2,
            "record_study_access",
            &study_copy_args(),
        )
        .unwrap();
    let copy = access.item.unwrap();
    assert!(copy.wrapped_dek.is_empty());
    assert_eq!(copy.wrapped_dek_commitment, commitment);

    // The researcher's query gives the key and the salt that checks it.
    let keys = study_keys(&mut w, "res-1", T0 + 2).unwrap();
    assert_eq!(keys.wrapped_dek, STUDY_WRAPPED);
    let salt: [u8; 32] = keys.wrapped_dek_salt.as_slice().try_into().unwrap();
    assert_eq!(
        medledger_crypto::private_commitment(&salt, &keys.wrapped_dek),
        commitment
    );
    // Nobody else gets it: another study's researcher, the sharing clinician, the patient.
    for who in [researcher("res-2"), dr.clone(), patient(1)] {
        let refused: Result<v1::AccessKeysResult, _> =
            w.query(&who, T0 + 2, "study_access_keys", &study_copy_args());
        assert!(
            matches!(
                refused,
                Err(ChaincodeError::Denied {
                    reason: Denial::NotStudyOwner(_),
                    ..
                })
            ),
            "{}: {refused:?}",
            who.name
        );
    }
    // Whether another copy exists, or its record was erased, is nobody else's to learn.
    let probe = v1::RecordStudyAccessArgs {
        item_id: "no-such-copy".into(),
        ..study_copy_args()
    };
    let probed: Result<v1::AccessKeysResult, _> =
        w.query(&researcher("res-2"), T0 + 2, "study_access_keys", &probe);
    assert!(
        matches!(
            probed,
            Err(ChaincodeError::Denied {
                reason: Denial::NotStudyOwner(_),
                ..
            })
        ),
        "{probed:?}"
    );
    // A peer that does not hold it answers empty, no salt.
    let mut lacking = World {
        ledger: w.ledger.clone(),
    };
    lacking.ledger.forget_private_value(&commitment);
    let keys = study_keys(&mut lacking, "res-1", T0 + 2).unwrap();
    assert!(keys.wrapped_dek.is_empty() && keys.wrapped_dek_salt.is_empty());

    // The record's erasure purges it and clears the copy's commitment.
    let erased: v1::ErasureResult = w
        .call_decode(
            &patient(1),
            T0 + 3,
            "erase_patient",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    assert!(erased.purge_complete);
    assert!(
        !w.ledger
            .private_values()
            .values()
            .any(|v| v[..] == STUDY_WRAPPED)
    );
    let items: v1::StudyItemList = w
        .query(
            &researcher("res-1"),
            T0 + 3,
            "study_items",
            &v1::StudyArgs {
                study_id: "study-1".into(),
            },
        )
        .unwrap();
    assert!(
        items.items.iter().all(|i| i.tombstoned
            && i.wrapped_dek.is_empty()
            && i.wrapped_dek_commitment.is_empty())
    );
    let after = study_keys(&mut w, "res-1", T0 + 3);
    assert!(
        matches!(after, Err(ChaincodeError::PatientErased)),
        "{after:?}"
    );
}

#[test]
fn below_format_6_a_study_copy_key_stays_in_clear() {
    let mut w = World::new();
    w.ledger.keep_private_data_as(PrivateKeys::RecordKeys);
    w.register_patient(1, T0);
    study_world(&mut w, true);
    // Format 5 takes the key in clear, as the builds that wrote format-5 chains did, and
    // ignores a commitment.
    let args = v1::ShareForStudyArgs {
        wrapped_dek_commitment: vec![7; 32],
        ..share_args(1, "item-1", "study-1", "s-1", false)
    };
    w.call(&clinician("dr.a"), T0 + 1, "share_for_study", &args)
        .unwrap();
    let access: v1::RecordStudyAccessResult = w
        .call_decode(
            &researcher("res-1"),
            T0 + 2,
            "record_study_access",
            &study_copy_args(),
        )
        .unwrap();
    let copy = access.item.unwrap();
    assert_eq!(copy.wrapped_dek, vec![4; 80]);
    assert!(copy.wrapped_dek_commitment.is_empty());
    let keys = study_keys(&mut w, "res-1", T0 + 2).unwrap();
    assert_eq!(keys.wrapped_dek, vec![4; 80]);
    assert!(keys.wrapped_dek_salt.is_empty());
}
