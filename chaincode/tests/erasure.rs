//! The objects an erasure leaves in the store wait on the ledger for the storage gateway,
//! however the erasure was submitted, until it confirms them deleted (issue 20 item 6).
// A host, not the deterministic crate: it may read the clock and the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;
use medledger_chaincode::{ChaincodeError, Denial, Role};
use medledger_proto::v1::{self, Right};
use prost::Message;

const LAB: &str = "lab-results";
const HP: &str = "history-and-physical";

fn gateway() -> medledger_chaincode::Creator {
    creator("gateway", Role::Gateway)
}

fn page(after: &str, limit: u32) -> v1::PendingDeletionsArgs {
    v1::PendingDeletionsArgs {
        after: after.into(),
        limit,
    }
}

fn confirm(paths: &[&str]) -> v1::ConfirmDeletionsArgs {
    v1::ConfirmDeletionsArgs {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    }
}

fn pending(w: &mut World, t: i64) -> Vec<String> {
    let answer: v1::PendingDeletions = w
        .query(&gateway(), t, "pending_object_deletions", &page("", 0))
        .unwrap();
    answer.deletions.into_iter().map(|d| d.path).collect()
}

#[test]
fn an_erasures_objects_wait_for_the_gateway_until_it_confirms_them() {
    let mut w = World::new();
    w.register_patient(1, T0);
    w.register_patient(2, T0);
    w.register_study("res-1", "study-1", T0);
    let args = grant_args(1, "dr.a", LAB, &[Right::Share], T0, T0 + DAY);
    w.call(&patient(1), T0, "grant", &args).unwrap();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    w.add_item(&patient(1), 1, "item-2", HP, T0).unwrap();
    w.add_item(&patient(2), 2, "item-3", HP, T0).unwrap();
    w.call(
        &clinician("dr.a"),
        T0 + 1,
        "share_for_study",
        &share_args(1, "item-1", "study-1", "s-1", true),
    )
    .unwrap();
    assert!(pending(&mut w, T0 + 1).is_empty());

    // However it was submitted, the erasure queues every object it names, with its time.
    let erased: v1::ErasureResult = w
        .call_decode(
            &patient(1),
            T0 + 5,
            "erase_patient",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    assert_eq!(erased.deleted_paths.len(), 3, "{:?}", erased.deleted_paths);
    let mut expected = erased.deleted_paths.clone();
    expected.sort();
    assert_eq!(pending(&mut w, T0 + 6), expected);
    let all: v1::PendingDeletions = w
        .query(&auditor(), T0 + 6, "pending_object_deletions", &page("", 0))
        .unwrap();
    assert!(all.deletions.iter().all(|d| d.since == T0 + 5));
    assert!(all.next_after.is_empty());
    // Patient 2's object is not among them.
    assert!(!expected.iter().any(|p| p.ends_with("/item-3")));

    // Only the gateway and auditors read the queue; only the gateway confirms.
    for who in [patient(1), clinician("dr.a"), researcher("res-1"), admin()] {
        let refused = w.query::<_, v1::PendingDeletions>(
            &who,
            T0 + 6,
            "pending_object_deletions",
            &page("", 0),
        );
        assert!(
            matches!(denial(refused), Denial::WrongRole { .. }),
            "{}",
            who.name
        );
    }
    for who in [patient(1), clinician("dr.a"), auditor(), admin()] {
        assert!(
            matches!(
                denial(w.call(
                    &who,
                    T0 + 6,
                    "confirm_object_deletions",
                    &confirm(&[&expected[0]])
                )),
                Denial::WrongRole { .. }
            ),
            "{}",
            who.name
        );
    }
    assert_eq!(
        pending(&mut w, T0 + 6),
        expected,
        "a refusal changes nothing"
    );

    // Paged in path order.
    let first: v1::PendingDeletions = w
        .query(&gateway(), T0 + 6, "pending_object_deletions", &page("", 2))
        .unwrap();
    assert_eq!(first.deletions.len(), 2);
    assert_eq!(first.next_after, expected[1]);
    let second: v1::PendingDeletions = w
        .query(
            &gateway(),
            T0 + 6,
            "pending_object_deletions",
            &page(&first.next_after, 2),
        )
        .unwrap();
    assert_eq!(second.deletions.len(), 1);
    assert_eq!(second.deletions[0].path, expected[2]);
    assert!(second.next_after.is_empty());

    // Malformed requests are refused, naming the field.
    let too_long = "p".repeat(513);
    for (args, field) in [(page("", 257), "limit"), (page(&too_long, 1), "after")] {
        let refused = w.query::<_, v1::PendingDeletions>(
            &gateway(),
            T0 + 6,
            "pending_object_deletions",
            &args,
        );
        assert!(
            matches!(refused, Err(ChaincodeError::InvalidArgument { field: f, .. }) if f == field),
            "{field}"
        );
    }
    let many: Vec<String> = (0..257).map(|i| format!("patients/x/{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for paths in [
        vec![],
        many,
        vec![""],
        vec![too_long.as_str()],
        vec!["a\0b"],
    ] {
        assert!(
            matches!(
                w.call(
                    &gateway(),
                    T0 + 6,
                    "confirm_object_deletions",
                    &confirm(&paths)
                ),
                Err(ChaincodeError::InvalidArgument { field: "paths", .. })
            ),
            "{} paths",
            paths.len()
        );
    }

    // Confirmed paths leave the queue; unknown or repeated ones are passed over (a gateway
    // that restarted confirms again).
    let done: v1::ConfirmDeletionsResult = w
        .call_decode(
            &gateway(),
            T0 + 7,
            "confirm_object_deletions",
            &confirm(&[&expected[0], "patients/none/lab-results/x"]),
        )
        .unwrap();
    assert_eq!(done.confirmed, 1);
    assert_eq!(pending(&mut w, T0 + 7), expected[1..]);
    let again: v1::ConfirmDeletionsResult = w
        .call_decode(
            &gateway(),
            T0 + 8,
            "confirm_object_deletions",
            &confirm(&[&expected[0]]),
        )
        .unwrap();
    assert_eq!(again.confirmed, 0);
    let rest: Vec<&str> = expected[1..].iter().map(String::as_str).collect();
    let done: v1::ConfirmDeletionsResult = w
        .call_decode(
            &gateway(),
            T0 + 9,
            "confirm_object_deletions",
            &confirm(&rest),
        )
        .unwrap();
    assert_eq!(done.confirmed, 2);
    assert!(pending(&mut w, T0 + 9).is_empty());
    assert!(
        !w.ledger
            .state()
            .keys()
            .any(|k| k.starts_with("object-deletion/"))
    );
}

fn purges(w: &mut World, who: &medledger_chaincode::Creator, t: i64) -> Vec<Vec<u8>> {
    let answer: v1::PatientList = w.query(who, t, "pending_purges", &page("", 0)).unwrap();
    answer.pseudonyms
}

/// An erasure too large for one step closes the record at once and is purged in bounded
/// steps by `purge_erased`, which only the storage gateway and the owner may send; every
/// object of every step is queued, and at the end nothing of the record's keys is left.
#[test]
fn a_large_erasure_is_purged_in_bounded_steps() {
    let mut w = World::new();
    w.register_patient(1, T0);
    w.register_patient(2, T0);
    w.register_study("res-1", "study-1", T0);
    let args = grant_args(1, "dr.a", LAB, &[Right::Read, Right::Share], T0, T0 + DAY);
    w.call(&patient(1), T0, "grant", &args).unwrap();
    let items = 2 * medledger_chaincode::erasure::PURGE_STEP_ENTRIES + 500;
    for i in 0..items {
        w.add_item(&patient(1), 1, &format!("item-{i:05}"), LAB, T0)
            .unwrap();
    }
    w.call(
        &clinician("dr.a"),
        T0 + 1,
        "share_for_study",
        &share_args(1, "item-00000", "study-1", "s-1", true),
    )
    .unwrap();
    w.call(
        &patient(1),
        T0 + 1,
        "set_private_data",
        &v1::SetPrivateDataArgs {
            pseudonym: pseudonym(1),
            ciphertext: vec![5; 100],
        },
    )
    .unwrap();
    let record = v1::PatientArgs {
        pseudonym: pseudonym(1),
    };
    // Not erased: nothing to purge, for anyone.
    assert!(matches!(
        w.call(&gateway(), T0 + 2, "purge_erased", &record),
        Err(ChaincodeError::InvalidArgument {
            field: "pseudonym",
            ..
        })
    ));

    let first: v1::ErasureResult = w
        .call_decode(&patient(1), T0 + 3, "erase_patient", &record)
        .unwrap();
    assert!(!first.purge_complete);
    assert_eq!(
        first.deleted_paths.len(),
        medledger_chaincode::erasure::PURGE_STEP_ENTRIES
    );
    // Closed at once: every call on the record fails from the closing block, and its study
    // copy, not yet reached by the purge, is shown to the researcher as erased, without its
    // file key.
    assert!(matches!(
        w.call(&patient(1), T0 + 4, "erase_patient", &record),
        Err(ChaincodeError::PatientErased)
    ));
    let copies: v1::StudyItemList = w
        .query(
            &researcher("res-1"),
            T0 + 4,
            "study_items",
            &v1::StudyArgs {
                study_id: "study-1".into(),
            },
        )
        .unwrap();
    assert_eq!(copies.items.len(), 1);
    assert!(copies.items[0].tombstoned);
    assert!(copies.items[0].wrapped_dek.is_empty());
    assert_eq!(purges(&mut w, &gateway(), T0 + 4), [pseudonym(1)]);
    assert_eq!(purges(&mut w, &auditor(), T0 + 4), [pseudonym(1)]);
    assert!(matches!(
        denial(w.query::<_, v1::PatientList>(&patient(1), T0 + 4, "pending_purges", &page("", 0))),
        Denial::WrongRole { .. }
    ));
    // Neither a clinician, nor a researcher, nor another patient steps the purge.
    for who in [
        clinician("dr.a"),
        researcher("res-1"),
        patient(2),
        auditor(),
    ] {
        assert!(
            matches!(
                denial(w.call(&who, T0 + 4, "purge_erased", &record)),
                Denial::WrongRole { .. }
            ),
            "{}",
            who.name
        );
    }
    // The owner may step it; the gateway finishes it.
    let second: v1::ErasureResult = w
        .call_decode(&patient(1), T0 + 5, "purge_erased", &record)
        .unwrap();
    assert!(!second.purge_complete);
    let mut deleted: Vec<String> = first
        .deleted_paths
        .into_iter()
        .chain(second.deleted_paths)
        .collect();
    let mut t = T0 + 6;
    let mut complete = second.purge_complete;
    while !complete {
        let step: v1::ErasureResult = w
            .call_decode(&gateway(), t, "purge_erased", &record)
            .unwrap();
        deleted.extend(step.deleted_paths);
        complete = step.purge_complete;
        t += 1;
        assert!(t < T0 + 20, "the purge does not end");
    }
    assert!(matches!(
        w.call(&gateway(), t, "purge_erased", &record),
        Err(ChaincodeError::InvalidArgument {
            field: "pseudonym",
            ..
        })
    ));
    assert!(purges(&mut w, &gateway(), t).is_empty());

    // Every item and the study copy, each once, all queued for the gateway.
    assert_eq!(deleted.len(), items + 1);
    deleted.sort();
    deleted.dedup();
    assert_eq!(deleted.len(), items + 1);
    let mut queued = Vec::new();
    let mut after = String::new();
    loop {
        let answer: v1::PendingDeletions = w
            .query(&gateway(), t, "pending_object_deletions", &page(&after, 0))
            .unwrap();
        queued.extend(answer.deletions.into_iter().map(|d| d.path));
        if answer.next_after.is_empty() {
            break;
        }
        after = answer.next_after;
    }
    assert_eq!(queued, deleted);

    // Nothing that opens a file is left; the record says when the purge completed.
    let p = hex::encode(pseudonym(1));
    let state = w.ledger.state();
    for (key, value) in state.iter() {
        assert!(
            !key.starts_with(&format!("patient/{p}/key"))
                && !key.starts_with(&format!("patient/{p}/private"))
                && !key.starts_with("purge-"),
            "{key} is left"
        );
        if key.starts_with(&format!("patient/{p}/item/")) {
            let item = v1::ClinicalItem::decode(value.as_slice()).unwrap();
            assert!(item.tombstoned && item.wrapped_dek.is_empty(), "{key}");
        }
        if key.starts_with(&format!("patient/{p}/perm")) && !key.contains("/perm-id/") {
            let permission = v1::Permission::decode(value.as_slice()).unwrap();
            assert!(permission.key_envelope.is_empty(), "{key}");
        }
        if key.starts_with("study-item/") {
            let copy = v1::StudyItem::decode(value.as_slice()).unwrap();
            assert!(copy.tombstoned && copy.wrapped_dek.is_empty(), "{key}");
        }
    }
    let stored = v1::PatientRecord::decode(state[&format!("patient/{p}")].as_slice()).unwrap();
    assert!(stored.erased && stored.erased_at == T0 + 3);
    assert_eq!(stored.purged_at, t - 1);
    // Patient 2's record is untouched.
    let other = hex::encode(pseudonym(2));
    assert!(
        state
            .keys()
            .any(|k| k.starts_with(&format!("patient/{other}/key/")))
    );
}
