//! Each chaincode function: what it allows, and each way it says no.
// A host, not the deterministic crate: it may read the clock and the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;
use medledger_chaincode::{ChaincodeError, Denial, Role, limits};
use medledger_proto::v1::{self, AuditAction, Outcome, Right};
use prost::Message;

const LAB: &str = "lab-results";
const HP: &str = "history-and-physical";
const RAD: &str = "radiation-doses";

fn world() -> World {
    let mut w = World::new();
    w.register_patient(1, T0);
    w
}

#[test]
fn register_patient_rules() {
    let mut w = world();
    let record: v1::GetRecordResult = w
        .query(
            &patient(1),
            T0,
            "get_record",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    assert_eq!(record.record.unwrap().owner, "patient-1");
    assert_eq!(record.category_keys.len(), 3);
    assert!(record.category_keys.iter().all(|k| k.epoch == 1));

    let args = |p: Vec<u8>| v1::RegisterPatientArgs {
        pseudonym: p,
        owner_encryption_key: vec![9; 32],
        category_keys: vec![],
    };
    assert!(matches!(
        denial(w.call(
            &clinician("dr.a"),
            T0,
            "register_patient",
            &args(pseudonym(9))
        )),
        Denial::WrongRole {
            needed: "patient",
            actual: Role::Clinician
        }
    ));
    assert!(matches!(
        w.call(&patient(2), T0, "register_patient", &args(pseudonym(1))),
        Err(ChaincodeError::AlreadyExists {
            what: "patient",
            ..
        })
    ));
    assert!(matches!(
        w.call(&patient(1), T0, "register_patient", &args(pseudonym(7))),
        Err(ChaincodeError::AlreadyExists { .. })
    ));
    assert!(matches!(
        w.call(&patient(2), T0, "register_patient", &args(vec![1; 31])),
        Err(ChaincodeError::InvalidArgument {
            field: "pseudonym",
            ..
        })
    ));
    let unknown = v1::RegisterPatientArgs {
        pseudonym: pseudonym(2),
        owner_encryption_key: vec![9; 32],
        category_keys: vec![v1::CategoryKey {
            category: "dental".into(),
            public_key: vec![0; 32],
            owner_signature: vec![0; 64],
            ..Default::default()
        }],
    };
    assert!(matches!(
        w.call(&patient(2), T0, "register_patient", &unknown),
        Err(ChaincodeError::NotFound {
            what: "category",
            ..
        })
    ));
    let twice = v1::RegisterPatientArgs {
        pseudonym: pseudonym(2),
        owner_encryption_key: vec![9; 32],
        category_keys: vec![
            v1::CategoryKey {
                category: LAB.into(),
                public_key: vec![0; 32],
                owner_signature: vec![0; 64],
                ..Default::default()
            },
            v1::CategoryKey {
                category: LAB.into(),
                public_key: vec![1; 32],
                owner_signature: vec![0; 64],
                ..Default::default()
            },
        ],
    };
    assert!(matches!(
        w.call(&patient(2), T0, "register_patient", &twice),
        Err(ChaincodeError::InvalidArgument { .. })
    ));
}

#[test]
fn a_grant_opens_exactly_its_window() {
    let mut w = world();
    let id = w
        .grant(1, "dr.a", LAB, &[Right::Read], T0 + HOUR, T0 + 2 * HOUR, T0)
        .unwrap();
    assert_eq!(id, "perm-1");
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let dr = clinician("dr.a");
    assert_eq!(
        denial(w.access(&dr, 1, "item-1", T0 + HOUR - 1)),
        Denial::WindowNotStarted { from: T0 + HOUR }
    );
    let ok = w.access(&dr, 1, "item-1", T0 + HOUR).unwrap();
    assert_eq!(ok.permission_id, "perm-1");
    assert_eq!(ok.key_envelope, vec![0xee; 80]);
    w.access(&dr, 1, "item-1", T0 + 2 * HOUR - 1).unwrap();
    assert_eq!(
        denial(w.access(&dr, 1, "item-1", T0 + 2 * HOUR)),
        Denial::WindowExpired {
            until: T0 + 2 * HOUR
        }
    );
    // Another clinician, or another category, has nothing.
    assert!(matches!(
        denial(w.access(&clinician("dr.b"), 1, "item-1", T0 + HOUR)),
        Denial::NoPermission { .. }
    ));
    w.add_item(&patient(1), 1, "item-2", HP, T0).unwrap();
    assert_eq!(
        denial(w.access(&dr, 1, "item-2", T0 + HOUR)),
        Denial::NoPermission {
            right: Right::Read,
            category: HP.into()
        }
    );
}

#[test]
fn write_does_not_imply_read_nor_read_write() {
    let mut w = world();
    w.grant(1, "dr.w", LAB, &[Right::Write], T0, T0 + DAY, T0)
        .unwrap();
    w.grant(1, "dr.r", LAB, &[Right::Read], T0, T0 + DAY, T0)
        .unwrap();
    w.add_item(&clinician("dr.w"), 1, "item-1", LAB, T0 + 1)
        .unwrap();
    assert_eq!(
        denial(w.access(&clinician("dr.w"), 1, "item-1", T0 + 2)),
        Denial::NoPermission {
            right: Right::Read,
            category: LAB.into()
        }
    );
    assert_eq!(
        denial(w.add_item(&clinician("dr.r"), 1, "item-2", LAB, T0 + 2)),
        Denial::NoPermission {
            right: Right::Write,
            category: LAB.into()
        }
    );
    w.access(&clinician("dr.r"), 1, "item-1", T0 + 3).unwrap();
}

#[test]
fn only_the_owner_grants_and_revokes_and_it_is_audited() {
    let mut w = world();
    w.register_patient(2, T0);
    let args = grant_args(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY);
    assert_eq!(
        denial(w.call(&patient(2), T0, "grant", &args)),
        Denial::NotOwner
    );
    assert_eq!(
        denial(w.call(&clinician("dr.a"), T0, "grant", &args)),
        Denial::NotOwner
    );
    let id = w
        .grant(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY, T0)
        .unwrap();
    let revoke = v1::RevokeArgs {
        pseudonym: pseudonym(1),
        permission_id: id.clone(),
    };
    assert_eq!(
        denial(w.call(&clinician("dr.a"), T0 + 1, "revoke", &revoke)),
        Denial::NotOwner
    );
    w.call(&patient(1), T0 + 2, "revoke", &revoke).unwrap();
    assert_eq!(
        w.call(&patient(1), T0 + 3, "revoke", &revoke),
        Err(ChaincodeError::AlreadyRevoked(id.clone()))
    );
    let missing = v1::RevokeArgs {
        pseudonym: pseudonym(1),
        permission_id: "perm-99".into(),
    };
    assert!(matches!(
        w.call(&patient(1), T0, "revoke", &missing),
        Err(ChaincodeError::NotFound {
            what: "permission",
            ..
        })
    ));
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    assert_eq!(
        denial(w.access(&clinician("dr.a"), 1, "item-1", T0 + 4)),
        Denial::Revoked { permission_id: id }
    );

    let trail = w.audit(1, T0 + 5);
    let summary: Vec<(i32, i32, &str)> = trail
        .iter()
        .map(|e| (e.action, e.outcome, e.actor.as_str()))
        .collect();
    use AuditAction as A;
    use Outcome as O;
    assert_eq!(
        summary,
        [
            (A::Register as i32, O::Allowed as i32, "patient-1"),
            (A::Grant as i32, O::Denied as i32, "patient-2"),
            (A::Grant as i32, O::Denied as i32, "dr.a"),
            (A::Grant as i32, O::Allowed as i32, "patient-1"),
            (A::Revoke as i32, O::Denied as i32, "dr.a"),
            (A::Revoke as i32, O::Allowed as i32, "patient-1"),
            (A::AddItem as i32, O::Allowed as i32, "patient-1"),
            (A::Access as i32, O::Denied as i32, "dr.a"),
        ]
    );
    let denied = trail[7]
        .denied
        .clone()
        .expect("a denial is recorded as a code");
    assert_eq!(denied.reason, v1::DenialReason::Revoked as i32);
    assert!(!denied.permission_id.is_empty());
    assert!(trail[7].reason.is_empty(), "no words of ours in the trail");
    assert!(medledger_chaincode::describe_denial(&denied).contains("revoked"));
    assert_eq!(trail[7].item, "item-1");
}

/// Issue 16, item 3: a denial is consensus data (it is in world state, so in the state root)
/// and holds codes and facts only. The words for it are written once, for clients
/// (`describe_denial`); none of them reaches the stored entry, so rewording one changes no
/// state root. Every kind of denial is checked.
#[test]
fn recorded_denials_hold_codes_not_words() {
    let denials = [
        Denial::NotOwner,
        Denial::WrongRole {
            needed: Role::Clinician.as_str(),
            actual: Role::Patient,
        },
        Denial::NoPermission {
            right: Right::Read,
            category: "lab-results".into(),
        },
        Denial::WindowNotStarted {
            from: 1_700_000_000,
        },
        Denial::WindowExpired {
            until: 1_700_000_000,
        },
        Denial::Revoked {
            permission_id: "perm-1".into(),
        },
        Denial::NotEmergencyClinician,
        Denial::AnonymizationRequired,
        Denial::NotStudyOwner("study-1".into()),
    ];
    let mut codes = std::collections::BTreeSet::new();
    for denial in denials {
        let denied = denial.to_proto();
        assert!(codes.insert(denied.reason), "{denial:?} shares a code");
        let stored = v1::AuditEntry {
            denied: Some(denied.clone()),
            ..v1::AuditEntry::default()
        }
        .encode_to_vec();
        let words = medledger_chaincode::describe_denial(&denied);
        assert_eq!(words, denial.to_string());
        // Every word of four letters or more of the description is absent from the bytes
        // (the facts it names, such as a category or an id, are data and may be there).
        let facts = [
            denied.needed_role.as_str(),
            denied.actual_role.as_str(),
            denied.category.as_str(),
            denied.permission_id.as_str(),
            denied.study_id.as_str(),
        ];
        for word in words.split(|c: char| !c.is_ascii_alphabetic()) {
            if word.len() < 4 || facts.iter().any(|f| f.contains(word)) {
                continue;
            }
            assert!(
                !stored.windows(word.len()).any(|w| w == word.as_bytes()),
                "{word:?} of {words:?} is in the stored entry"
            );
        }
    }
}

#[test]
fn grant_arguments_are_checked() {
    let mut w = world();
    let base = grant_args(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY);
    let cases: Vec<(&str, v1::GrantArgs)> = vec![
        (
            "empty window",
            v1::GrantArgs {
                until: T0,
                ..base.clone()
            },
        ),
        (
            "ten years",
            v1::GrantArgs {
                until: T0 + 11 * 366 * DAY,
                ..base.clone()
            },
        ),
        (
            "ended",
            v1::GrantArgs {
                from: T0 - 2 * DAY,
                until: T0 - DAY,
                ..base.clone()
            },
        ),
        (
            "no rights",
            v1::GrantArgs {
                rights: vec![],
                ..base.clone()
            },
        ),
        (
            "twice",
            v1::GrantArgs {
                rights: vec![1, 1],
                ..base.clone()
            },
        ),
        (
            "unknown right",
            v1::GrantArgs {
                rights: vec![7],
                ..base.clone()
            },
        ),
        (
            "no envelope",
            v1::GrantArgs {
                key_envelope: vec![],
                ..base.clone()
            },
        ),
        (
            "huge envelope",
            v1::GrantArgs {
                key_envelope: vec![0; 513],
                ..base.clone()
            },
        ),
        (
            "bad grantee",
            v1::GrantArgs {
                grantee: "dr a".into(),
                ..base.clone()
            },
        ),
        (
            "study without share",
            v1::GrantArgs {
                study_id: "study-1".into(),
                ..base.clone()
            },
        ),
        (
            "share without study",
            v1::GrantArgs {
                rights: vec![Right::Share as i32],
                ..base.clone()
            },
        ),
    ];
    for (what, args) in cases {
        assert!(
            matches!(
                w.call(&patient(1), T0, "grant", &args),
                Err(ChaincodeError::InvalidArgument { .. })
            ),
            "{what}"
        );
    }
    let unknown_cat = v1::GrantArgs {
        category: "dental".into(),
        ..base.clone()
    };
    assert!(matches!(
        w.call(&patient(1), T0, "grant", &unknown_cat),
        Err(ChaincodeError::NotFound { .. })
    ));
    let unknown_study = grant_args(1, "dr.a", LAB, &[Right::Share], T0, T0 + DAY);
    assert!(matches!(
        w.call(&patient(1), T0, "grant", &unknown_study),
        Err(ChaincodeError::NotFound { what: "study", .. })
    ));
    let unknown_patient = v1::GrantArgs {
        pseudonym: pseudonym(9),
        ..base.clone()
    };
    assert_eq!(
        w.call(&patient(1), T0, "grant", &unknown_patient),
        Err(ChaincodeError::UnknownPatient)
    );
    // None of it wrote anything but the registration.
    assert_eq!(w.audit(1, T0).len(), 1);
    // Extreme windows (the grant that once panicked every peer at `until - from`): each end
    // at every boundary of i64 and of the accepted range, in every combination.
    let extremes = [
        i64::MIN,
        i64::MIN + 1,
        -1,
        0,
        T0,
        limits::MAX_TIME_S,
        limits::MAX_TIME_S + 1,
        i64::MAX - 1,
        i64::MAX,
    ];
    for &from in &extremes {
        for &until in &extremes {
            let args = v1::GrantArgs {
                from,
                until,
                ..base.clone()
            };
            let result = w.call(&patient(1), T0, "grant", &args);
            assert!(
                matches!(
                    result,
                    Err(ChaincodeError::InvalidArgument {
                        field: "window",
                        ..
                    })
                ),
                "from {from} until {until}: {result:?}"
            );
        }
    }
    assert_eq!(w.audit(1, T0).len(), 1);
    // A window that ends at the last accepted instant is fine.
    let latest = v1::GrantArgs {
        from: limits::MAX_TIME_S - DAY,
        until: limits::MAX_TIME_S,
        ..base.clone()
    };
    w.call(&patient(1), T0, "grant", &latest).unwrap();
    // A write-only grant needs no envelope.
    let write_only = v1::GrantArgs {
        rights: vec![Right::Write as i32],
        key_envelope: vec![],
        ..base
    };
    w.call(&patient(1), T0, "grant", &write_only).unwrap();
}

#[test]
fn a_denied_call_leaves_only_its_audit_entry() {
    let mut w = world();
    w.grant(1, "dr.a", LAB, &[Right::Write], T0, T0 + DAY, T0)
        .unwrap();
    let before = w.ledger.state().clone();
    let _ = denial(w.add_item(&clinician("dr.a"), 1, "item-x", RAD, T0 + 1));
    let after = w.ledger.state();
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    let p = hex::encode(pseudonym(1));
    assert_eq!(
        changed,
        [
            &format!("patient/{p}"),
            &format!("patient/{p}/audit/{:020}", 3)
        ]
    );
    assert!(!after.contains_key(&format!("patient/{p}/item/item-x")));
}

#[test]
fn add_item_rules() {
    let mut w = world();
    w.grant(1, "dr.a", LAB, &[Right::Write], T0, T0 + DAY, T0)
        .unwrap();
    let dr = clinician("dr.a");
    w.add_item(&dr, 1, "item-1", LAB, T0 + 1).unwrap();
    assert!(matches!(
        w.add_item(&dr, 1, "item-1", LAB, T0 + 2),
        Err(ChaincodeError::AlreadyExists { what: "item", .. })
    ));
    let mut bad_path = item_args(1, "item-2", LAB, 1);
    bad_path.path = "patients/elsewhere/lab-results/item-2".into();
    assert!(matches!(
        w.call(&dr, T0, "add_item", &bad_path),
        Err(ChaincodeError::InvalidArgument { field: "path", .. })
    ));
    let mut bad_hash = item_args(1, "item-2", LAB, 1);
    bad_hash.sha256 = vec![1; 31];
    assert!(matches!(
        w.call(&dr, T0, "add_item", &bad_hash),
        Err(ChaincodeError::InvalidArgument {
            field: "sha256",
            ..
        })
    ));
    let mut huge = item_args(1, "item-2", LAB, 1);
    huge.size = (64 << 30) + 1;
    assert!(matches!(
        w.call(&dr, T0, "add_item", &huge),
        Err(ChaincodeError::InvalidArgument { field: "size", .. })
    ));
    assert!(matches!(
        w.call(&dr, T0, "add_item", &item_args(1, "item-2", LAB, 2)),
        Err(ChaincodeError::InvalidArgument {
            field: "key_epoch",
            ..
        })
    ));
    assert!(matches!(
        w.call(&dr, T0, "add_item", &item_args(1, "../x", LAB, 1)),
        Err(ChaincodeError::InvalidArgument {
            field: "item_id",
            ..
        })
    ));
    assert!(matches!(
        denial(w.add_item(&researcher("res"), 1, "item-3", LAB, T0 + 1)),
        Denial::WrongRole {
            needed: "clinician",
            ..
        }
    ));
    let items: v1::ItemList = w
        .query(
            &patient(1),
            T0 + 2,
            "list_items",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    assert_eq!(items.items.len(), 1);
    assert_eq!(items.items[0].uploader, "dr.a");
    assert_eq!(items.items[0].created_at, T0 + 1);
}

#[test]
fn reads_are_receipted_on_the_patients_trail() {
    let mut w = world();
    w.grant(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY, T0)
        .unwrap();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    w.access(&clinician("dr.a"), 1, "item-1", T0 + 60).unwrap();
    let receipt = w.audit(1, T0 + 61).pop().unwrap();
    assert_eq!(receipt.action, AuditAction::Access as i32);
    assert_eq!(receipt.actor, "dr.a");
    assert_eq!(receipt.actor_role, "clinician");
    assert_eq!(receipt.item, "item-1");
    assert_eq!(receipt.time, T0 + 60);
    assert_eq!(receipt.permission_id, "perm-1");
    assert_eq!(receipt.outcome, Outcome::Allowed as i32);
    assert_eq!(receipt.tx_id.len(), 32);
    // The owner reads without a permission; unknown items are not found.
    w.access(&patient(1), 1, "item-1", T0).unwrap();
    assert!(matches!(
        w.access(&patient(1), 1, "item-9", T0),
        Err(ChaincodeError::NotFound { what: "item", .. })
    ));
}

#[test]
fn sharing_for_a_study_follows_the_grant() {
    let mut w = world();
    w.register_study("res-1", "study-1", T0);
    w.register_study("res-2", "study-2", T0);
    let mut args = grant_args(1, "dr.a", LAB, &[Right::Share], T0, T0 + DAY);
    args.anonymize = true;
    w.call(&patient(1), T0, "grant", &args).unwrap();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let share = |study: &str, anonymized: bool, item: &str| {
        share_args(1, "item-1", study, item, anonymized)
    };
    let dr = clinician("dr.a");
    assert_eq!(
        denial(w.call(
            &dr,
            T0 + 1,
            "share_for_study",
            &share("study-1", false, "s-1")
        )),
        Denial::AnonymizationRequired
    );
    assert!(matches!(
        denial(w.call(
            &dr,
            T0 + 1,
            "share_for_study",
            &share("study-2", true, "s-1")
        )),
        Denial::NoPermission { .. }
    ));
    assert!(matches!(
        denial(w.call(
            &clinician("dr.b"),
            T0 + 1,
            "share_for_study",
            &share("study-1", true, "s-1")
        )),
        Denial::NoPermission { .. }
    ));
    let mut wrong_path = share("study-1", true, "s-1");
    wrong_path.path = format!("studies/study-1/{}/s-1", hex::encode(pseudonym(1)));
    assert!(matches!(
        w.call(&dr, T0 + 1, "share_for_study", &wrong_path),
        Err(ChaincodeError::InvalidArgument { field: "path", .. })
    ));
    w.call(
        &dr,
        T0 + 1,
        "share_for_study",
        &share("study-1", true, "s-1"),
    )
    .unwrap();
    assert!(matches!(
        denial(w.call(
            &dr,
            T0 + DAY,
            "share_for_study",
            &share("study-1", true, "s-2")
        )),
        Denial::WindowExpired { .. }
    ));

    let items: v1::StudyItemList = w
        .query(
            &researcher("res-1"),
            T0 + 2,
            "study_items",
            &v1::StudyArgs {
                study_id: "study-1".into(),
            },
        )
        .unwrap();
    assert_eq!(items.items.len(), 1);
    assert_eq!(
        items.items[0].study_pseudonym,
        study_pseudonym(1, "study-1")
    );
    assert!(items.items[0].anonymized);
    assert_eq!(
        w.query::<_, v1::StudyItemList>(
            &researcher("res-2"),
            T0 + 2,
            "study_items",
            &v1::StudyArgs {
                study_id: "study-1".into()
            }
        )
        .map(|_| ())
        .unwrap_err()
        .denial(),
        Some(&Denial::NotStudyOwner("study-1".into()))
    );
    let own: v1::StudyList = w
        .query(&researcher("res-2"), T0, "list_studies", &v1::Empty {})
        .unwrap();
    assert_eq!(
        own.studies
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["study-2"]
    );
    let all: v1::StudyList = w
        .query(&auditor(), T0, "list_studies", &v1::Empty {})
        .unwrap();
    assert_eq!(all.studies.len(), 2);
    assert!(
        w.query::<_, v1::StudyList>(&clinician("dr.a"), T0, "list_studies", &v1::Empty {})
            .is_err()
    );
    let trail = w.audit(1, T0 + 3);
    let shared = trail
        .iter()
        .find(|e| e.action == AuditAction::Share as i32 && e.outcome == Outcome::Allowed as i32)
        .unwrap();
    assert_eq!(shared.study_id, "study-1");
}

/// Issue 15: a study copy records the de-identification that produced it, and only the
/// study's researcher can report, on the patient's trail, a copy that failed its re-check.
#[test]
fn study_copies_record_their_deidentification_and_incidents_reach_the_trail() {
    let mut w = world();
    w.register_study("res-1", "study-1", T0);
    let args = grant_args(1, "dr.a", LAB, &[Right::Share], T0, T0 + DAY);
    w.call(&patient(1), T0, "grant", &args).unwrap();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let dr = clinician("dr.a");
    let good = share_args(1, "item-1", "study-1", "s-1", true);
    let bad_profiles = [
        v1::ShareForStudyArgs {
            deid_profile: String::new(),
            ..good.clone()
        },
        v1::ShareForStudyArgs {
            deid_profile: "Safe Harbor!".into(),
            ..good.clone()
        },
        v1::ShareForStudyArgs {
            deid_profile_version: 0,
            ..good.clone()
        },
        v1::ShareForStudyArgs {
            deid_year: i32::MIN,
            ..good.clone()
        },
        v1::ShareForStudyArgs {
            deid_year: 10_000,
            ..good.clone()
        },
        // The sharer may not pick the year that decides which dates are old enough to keep.
        v1::ShareForStudyArgs {
            deid_year: 1900,
            ..good.clone()
        },
        v1::ShareForStudyArgs {
            deid_year: 2028,
            ..good.clone()
        },
        // A copy that is not anonymized names no profile.
        v1::ShareForStudyArgs {
            anonymized: false,
            ..good.clone()
        },
    ];
    for args in &bad_profiles {
        let result = w.call(&dr, T0 + 1, "share_for_study", args);
        assert!(
            matches!(result, Err(ChaincodeError::InvalidArgument { .. })),
            "{args:?}: {result:?}"
        );
    }
    w.call(&dr, T0 + 1, "share_for_study", &good).unwrap();
    let items: v1::StudyItemList = w
        .query(
            &researcher("res-1"),
            T0 + 2,
            "study_items",
            &v1::StudyArgs {
                study_id: "study-1".into(),
            },
        )
        .unwrap();
    let copy = &items.items[0];
    assert_eq!(
        (
            copy.deid_profile.as_str(),
            copy.deid_profile_version,
            copy.deid_year
        ),
        ("safe-harbor-allowlist", 1, 2026)
    );

    let report = |incident: v1::StudyIncident| v1::ReportStudyIncidentArgs {
        study_id: "study-1".into(),
        study_pseudonym: study_pseudonym(1, "study-1"),
        item_id: "s-1".into(),
        incident: incident as i32,
    };
    let failed = report(v1::StudyIncident::DeidentificationFailed);
    assert!(matches!(
        w.call(
            &researcher("res-1"),
            T0 + 3,
            "report_study_incident",
            &report(v1::StudyIncident::Unspecified)
        ),
        Err(ChaincodeError::InvalidArgument {
            field: "incident",
            ..
        })
    ));
    assert_eq!(
        denial(w.call(
            &researcher("res-2"),
            T0 + 3,
            "report_study_incident",
            &failed
        )),
        Denial::NotStudyOwner("study-1".into())
    );
    assert_eq!(
        denial(w.call(&dr, T0 + 3, "report_study_incident", &failed)),
        Denial::NotStudyOwner("study-1".into())
    );
    w.call(
        &researcher("res-1"),
        T0 + 4,
        "report_study_incident",
        &failed,
    )
    .unwrap();
    let incidents: Vec<_> = w
        .audit(1, T0 + 5)
        .into_iter()
        .filter(|e| e.action == AuditAction::StudyIncident as i32)
        .map(|e| (e.actor, e.outcome, e.incident, e.study_id, e.item))
        .collect();
    let failed_code = v1::StudyIncident::DeidentificationFailed as i32;
    assert_eq!(
        incidents,
        [
            (
                "res-2".to_string(),
                Outcome::Denied as i32,
                0,
                "study-1".to_string(),
                "s-1".to_string()
            ),
            (
                "dr.a".to_string(),
                Outcome::Denied as i32,
                0,
                "study-1".to_string(),
                "s-1".to_string()
            ),
            (
                "res-1".to_string(),
                Outcome::Denied as i32,
                failed_code,
                "study-1".to_string(),
                "s-1".to_string()
            ),
        ]
    );
}

#[test]
fn study_fetches_are_audited_and_erasure_removes_study_copies() {
    let mut w = world();
    w.register_study("res-1", "study-1", T0);
    let args = grant_args(1, "dr.a", LAB, &[Right::Share], T0, T0 + DAY);
    w.call(&patient(1), T0, "grant", &args).unwrap();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let dr = clinician("dr.a");
    w.call(
        &dr,
        T0 + 1,
        "share_for_study",
        &share_args(1, "item-1", "study-1", "s-1", true),
    )
    .unwrap();
    let fetch = |item: &str| v1::RecordStudyAccessArgs {
        study_id: "study-1".into(),
        study_pseudonym: study_pseudonym(1, "study-1"),
        item_id: item.into(),
    };
    let fetched: v1::RecordStudyAccessResult = w
        .call_decode(
            &researcher("res-1"),
            T0 + 2,
            "record_study_access",
            &fetch("s-1"),
        )
        .unwrap();
    let copy = fetched.item.unwrap();
    assert_eq!(
        copy.path,
        format!(
            "studies/study-1/{}/s-1",
            hex::encode(study_pseudonym(1, "study-1"))
        )
    );
    // Another researcher is refused, and the attempt is on the patient's trail too.
    assert_eq!(
        denial(w.call(
            &researcher("res-2"),
            T0 + 3,
            "record_study_access",
            &fetch("s-1")
        )),
        Denial::NotStudyOwner("study-1".into())
    );
    assert!(matches!(
        w.call(
            &researcher("res-1"),
            T0 + 3,
            "record_study_access",
            &fetch("s-9")
        ),
        Err(ChaincodeError::NotFound {
            what: "study item",
            ..
        })
    ));
    let trail = w.audit(1, T0 + 4);
    let fetches: Vec<_> = trail
        .iter()
        .filter(|e| e.action == AuditAction::StudyAccess as i32)
        .map(|e| {
            (
                e.actor.as_str(),
                e.outcome,
                e.study_id.as_str(),
                e.item.as_str(),
            )
        })
        .collect();
    assert_eq!(
        fetches,
        [
            ("res-1", Outcome::Allowed as i32, "study-1", "s-1"),
            ("res-2", Outcome::Denied as i32, "study-1", "s-1"),
        ]
    );

    // Erasure deletes the study copy with the record's own items.
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
    assert!(
        erased.deleted_paths.contains(&copy.path),
        "{:?}",
        erased.deleted_paths
    );
    assert_eq!(erased.deleted_paths.len(), 2);
    assert!(matches!(
        w.call(
            &researcher("res-1"),
            T0 + 6,
            "record_study_access",
            &fetch("s-1")
        ),
        Err(ChaincodeError::PatientErased)
    ));
    let items: v1::StudyItemList = w
        .query(
            &researcher("res-1"),
            T0 + 6,
            "study_items",
            &v1::StudyArgs {
                study_id: "study-1".into(),
            },
        )
        .unwrap();
    assert!(items.items[0].tombstoned && items.items[0].wrapped_dek.is_empty());
}

#[test]
fn study_registration_rules() {
    let mut w = world();
    w.register_study("res-1", "study-1", T0);
    let args = v1::RegisterStudyArgs {
        id: "study-1".into(),
        title: "x".into(),
        protocol_hash: vec![0; 32],
        study_key: vec![0; 32],
        study_key_signature: vec![0; 64],
    };
    assert!(matches!(
        w.call(&researcher("res-2"), T0, "register_study", &args),
        Err(ChaincodeError::AlreadyExists { .. })
    ));
    let other = v1::RegisterStudyArgs {
        id: "study-9".into(),
        ..args.clone()
    };
    assert!(matches!(
        denial(w.call(&clinician("dr.a"), T0, "register_study", &other)),
        Denial::WrongRole { .. }
    ));
    let bad_key = v1::RegisterStudyArgs {
        study_key: vec![0; 3],
        ..other.clone()
    };
    assert!(matches!(
        w.call(&researcher("res-2"), T0, "register_study", &bad_key),
        Err(ChaincodeError::InvalidArgument { .. })
    ));
    let no_title = v1::RegisterStudyArgs {
        title: " ".into(),
        ..other
    };
    assert!(matches!(
        w.call(&researcher("res-2"), T0, "register_study", &no_title),
        Err(ChaincodeError::InvalidArgument { .. })
    ));
}

/// Issue 20 item 4: a reason is sealed to exactly the record's owner and the auditors the
/// configuration names. Leaving one out, adding a reader, a malformed entry or a key nothing
/// can be sealed to is refused before anything is written.
#[test]
fn an_emergency_reason_is_sealed_to_exactly_the_owner_and_the_named_auditors() {
    let mut w = world();
    let mut rng = rand_core::OsRng;
    let auditors = [
        medledger_crypto::EncryptionKey::generate(&mut rng),
        medledger_crypto::EncryptionKey::generate(&mut rng),
    ];
    w.ledger
        .set_auditor_keys(auditors.iter().map(|a| a.public_key().to_bytes()).collect());
    let er = emergency_clinician("dr.er", None, None);
    let owner = record_key(1).public_key();
    let all = [owner, auditors[0].public_key(), auditors[1].public_key()];
    let call = |w: &mut World, sealed: v1::SealedText| {
        let args = v1::EmergencyAccessArgs {
            pseudonym: pseudonym(1),
            category: LAB.into(),
            sealed_reason: Some(sealed),
            ..Default::default()
        };
        w.call(&er, T0, "emergency_access", &args)
    };
    let refused_on = |result: Result<Vec<u8>, ChaincodeError>| match result {
        Err(ChaincodeError::InvalidArgument { field, why }) => (field, why),
        other => panic!("{other:?}"),
    };

    // What a clinician's client asks first.
    let readers: v1::ReasonReadersResult = w
        .query(
            &clinician("dr.er"),
            T0,
            "reason_readers",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    assert_eq!(readers.owner_encryption_key, owner.to_bytes().to_vec());
    assert_eq!(readers.auditor_keys.len(), 2);
    assert!(matches!(
        w.query::<_, v1::ReasonReadersResult>(
            &researcher("res-1"),
            T0,
            "reason_readers",
            &v1::PatientArgs {
                pseudonym: pseudonym(1)
            }
        ),
        Err(ChaincodeError::Denied { .. })
    ));

    let before = w.ledger.state().clone();
    let (_, why) = refused_on(call(&mut w, seal_to(1, LAB, "code blue", &all[..2])));
    assert!(why.contains("not sealed to the auditor"), "{why}");
    assert!(why.contains("reason_readers"), "{why}");
    let (_, why) = refused_on(call(&mut w, seal_to(1, LAB, "code blue", &all[1..])));
    assert!(why.contains("the record's owner"), "{why}");
    let stranger = medledger_crypto::EncryptionKey::generate(&mut rng).public_key();
    let mut four = all.to_vec();
    four.push(stranger);
    let (_, why) = refused_on(call(&mut w, seal_to(1, LAB, "code blue", &four)));
    assert!(why.contains("neither"), "{why}");
    let good = seal_to(1, LAB, "code blue", &all);
    let mut twice = good.clone();
    twice.readers.push(twice.readers[0].clone());
    assert_eq!(refused_on(call(&mut w, twice)).0, "sealed_reason.readers");
    let mut short_key = good.clone();
    short_key.readers[1].wrapped_key.truncate(79);
    assert_eq!(
        refused_on(call(&mut w, short_key)).0,
        "sealed_reason.readers.wrapped_key"
    );
    for small in medledger_chaincode::sealed::SMALL_ORDER {
        let mut weak = good.clone();
        weak.readers[0].public_key = small.to_vec();
        assert_eq!(
            refused_on(call(&mut w, weak)).0,
            "sealed_reason.readers.public_key"
        );
    }
    let mut empty = good.clone();
    empty.ciphertext.truncate(16);
    assert_eq!(
        refused_on(call(&mut w, empty)).0,
        "sealed_reason.ciphertext"
    );
    let too_long = seal_to(1, LAB, &"x".repeat(limits::MAX_REASON_LEN + 1), &all);
    assert_eq!(
        refused_on(call(&mut w, too_long)).0,
        "sealed_reason.ciphertext"
    );
    let longest = seal_to(1, LAB, &"x".repeat(limits::MAX_REASON_LEN), &all);
    let mut none = longest.clone();
    none.readers.clear();
    assert_eq!(refused_on(call(&mut w, none)).0, "sealed_reason.readers");
    assert_eq!(w.ledger.state(), &before, "nothing written by a refusal");

    // Sealed to exactly them: taken; each reader opens it, the clinician does not.
    call(&mut w, longest).unwrap();
    call(&mut w, good).unwrap();
    let entry = w
        .audit(1, T0)
        .into_iter()
        .rfind(|e| e.action == AuditAction::EmergencyAccess as i32)
        .unwrap();
    let sealed = entry.sealed_reason.unwrap();
    for key in [&record_key(1), &auditors[0], &auditors[1]] {
        assert_eq!(open_reason(key, 1, LAB, &sealed).unwrap(), "code blue");
    }
    assert!(
        open_reason(
            &medledger_crypto::EncryptionKey::generate(&mut rng),
            1,
            LAB,
            &sealed
        )
        .is_err()
    );
    // Moved to another category it does not open.
    assert!(open_reason(&record_key(1), 1, RAD, &sealed).is_err());
}

/// A record's key must be one something can be sealed to: a patient cannot make emergency
/// access to their record impossible with a key of small order.
#[test]
fn a_record_is_registered_with_a_key_reasons_can_be_sealed_to() {
    let mut w = World::new();
    let args = |key: Vec<u8>| v1::RegisterPatientArgs {
        pseudonym: pseudonym(1),
        owner_encryption_key: key,
        category_keys: vec![],
    };
    for bad in [Vec::new(), vec![9; 31]] {
        assert!(matches!(
            w.call(&patient(1), T0, "register_patient", &args(bad)),
            Err(ChaincodeError::InvalidArgument {
                field: "owner_encryption_key",
                ..
            })
        ));
    }
    let mut rng = rand_core::OsRng;
    for small in medledger_chaincode::sealed::SMALL_ORDER {
        // Every key the chaincode refuses agrees on an all-zero secret with any private key.
        let any = medledger_crypto::EncryptionKey::generate(&mut rng);
        assert_eq!(
            *any.diffie_hellman(&medledger_crypto::EncryptionPublicKey(small)),
            [0; 32]
        );
        assert!(
            w.call(&patient(1), T0, "register_patient", &args(small.to_vec()))
                .is_err()
        );
    }
    w.call(
        &patient(1),
        T0,
        "register_patient",
        &args(record_key(1).public_key().to_bytes().to_vec()),
    )
    .unwrap();
}

#[test]
fn emergency_access_is_short_flagged_and_announced() {
    let mut w = world();
    w.add_item(&patient(1), 1, "item-1", RAD, T0).unwrap();
    let er = emergency_clinician("dr.er", Some(T0 - DAY), Some(T0 + 30 * DAY));
    let args = v1::EmergencyAccessArgs {
        pseudonym: pseudonym(1),
        category: RAD.into(),
        sealed_reason: sealed_reason(1, RAD, "unconscious on arrival"),
        duration_seconds: 0,
        ..Default::default()
    };
    let id = v1::IdResult::decode(
        w.call(&er, T0, "emergency_access", &args)
            .unwrap()
            .as_slice(),
    )
    .unwrap()
    .id;
    let read = w.access(&er, 1, "item-1", T0 + DAY - 1).unwrap();
    assert!(read.emergency);
    assert_eq!(read.permission_id, id);
    assert_eq!(
        denial(w.access(&er, 1, "item-1", T0 + DAY)),
        Denial::WindowExpired { until: T0 + DAY }
    );

    let entry = w
        .audit(1, T0)
        .into_iter()
        .find(|e| e.action == AuditAction::EmergencyAccess as i32)
        .unwrap();
    assert!(entry.emergency);
    assert!(entry.reason.is_empty(), "no words in clear");
    assert_eq!(
        open_reason(
            &record_key(1),
            1,
            RAD,
            entry.sealed_reason.as_ref().unwrap()
        )
        .unwrap(),
        "unconscious on arrival"
    );
    let event = w
        .ledger
        .events()
        .iter()
        .find(|e| e.name == "emergency_access")
        .unwrap();
    // Led by its record, as every event (peers forward it to that record's follower).
    let subject = v1::EventSubject::decode(event.payload.as_slice()).unwrap();
    assert_eq!(subject.pseudonym, pseudonym(1));
    let event = v1::EmergencyAccessEvent::decode(event.payload.as_slice()).unwrap();
    assert_eq!((event.clinician.as_str(), event.until), ("dr.er", T0 + DAY));
    assert!(event.reason.is_empty());
    assert_eq!(
        open_reason(
            &record_key(1),
            1,
            RAD,
            event.sealed_reason.as_ref().unwrap()
        )
        .unwrap(),
        "unconscious on arrival"
    );

    let too_long = v1::EmergencyAccessArgs {
        duration_seconds: DAY + 1,
        ..args.clone()
    };
    assert!(matches!(
        w.call(&er, T0, "emergency_access", &too_long),
        Err(ChaincodeError::InvalidArgument { .. })
    ));
    let no_reason = v1::EmergencyAccessArgs {
        sealed_reason: None,
        ..args.clone()
    };
    assert!(matches!(
        w.call(&er, T0, "emergency_access", &no_reason),
        Err(ChaincodeError::InvalidArgument {
            field: "sealed_reason",
            ..
        })
    ));
    let in_clear = v1::EmergencyAccessArgs {
        reason: "unconscious on arrival".into(),
        ..args.clone()
    };
    assert!(matches!(
        w.call(&er, T0, "emergency_access", &in_clear),
        Err(ChaincodeError::InvalidArgument {
            field: "reason",
            ..
        })
    ));
    // The attribute must hold now, and only clinicians may ask.
    assert_eq!(
        denial(w.call(&er, T0 + 31 * DAY, "emergency_access", &args)),
        Denial::NotEmergencyClinician
    );
    assert_eq!(
        denial(w.call(&clinician("dr.plain"), T0, "emergency_access", &args)),
        Denial::NotEmergencyClinician
    );
    let not_yet = emergency_clinician("dr.soon", Some(T0 + DAY), None);
    assert_eq!(
        denial(w.call(&not_yet, T0, "emergency_access", &args)),
        Denial::NotEmergencyClinician
    );
    let mut researcher_er = researcher("res");
    researcher_er.attributes = er.attributes.clone();
    assert!(matches!(
        denial(w.call(&researcher_er, T0, "emergency_access", &args)),
        Denial::WrongRole { .. }
    ));
    let denied = w
        .audit(1, T0)
        .into_iter()
        .filter(|e| {
            e.outcome == Outcome::Denied as i32 && e.action == AuditAction::EmergencyAccess as i32
        })
        .count();
    assert_eq!(denied, 4);
}

#[test]
fn rotating_a_category_key_moves_readers_forward() {
    let mut w = world();
    let keep = w
        .grant(1, "dr.keep", LAB, &[Right::Read], T0, T0 + DAY, T0)
        .unwrap();
    w.grant(1, "dr.drop", LAB, &[Right::Read], T0, T0 + DAY, T0)
        .unwrap();
    w.add_item(&patient(1), 1, "item-0", LAB, T0).unwrap();
    let args = v1::RotateCategoryKeyArgs {
        pseudonym: pseudonym(1),
        category: LAB.into(),
        public_key: vec![0x77; 32],
        envelopes: vec![v1::EnvelopeUpdate {
            permission_id: keep.clone(),
            key_envelope: vec![0x11; 80],
            key_envelope_commitment: Vec::new(),
        }],
        owner_signature: vec![0x77; 64],
        epoch: 2,
        previous_key_envelope: vec![0x33; 80],
        previous_key_envelope_commitment: Vec::new(),
    };
    // The key chain is required: without it readers moved forward lose the earlier items.
    let no_chain = v1::RotateCategoryKeyArgs {
        previous_key_envelope: Vec::new(),
        ..args.clone()
    };
    assert!(matches!(
        w.call(&patient(1), T0, "rotate_category_key", &no_chain),
        Err(ChaincodeError::InvalidArgument {
            field: "previous_key_envelope",
            ..
        })
    ));
    assert_eq!(
        denial(w.call(&clinician("dr.keep"), T0, "rotate_category_key", &args)),
        Denial::NotOwner
    );
    w.call(&patient(1), T0 + 1, "rotate_category_key", &args)
        .unwrap();
    assert!(matches!(
        w.call(&patient(1), T0 + 2, "rotate_category_key", &args),
        Err(ChaincodeError::InvalidArgument {
            field: "public_key",
            ..
        })
    ));
    // New items must use epoch 2; the kept reader gets the new envelope, the other keeps the old.
    assert!(w.add_item(&patient(1), 1, "item-1", LAB, T0 + 2).is_err());
    w.call(
        &patient(1),
        T0 + 2,
        "add_item",
        &item_args(1, "item-1", LAB, 2),
    )
    .unwrap();
    let kept = w
        .access(&clinician("dr.keep"), 1, "item-1", T0 + 3)
        .unwrap();
    assert_eq!(kept.key_envelope, vec![0x11; 80]);
    assert_eq!((kept.key_epoch, kept.key_chain.len()), (2, 0));
    // An item of epoch 1, read with the epoch-2 envelope: the chain's link comes with it.
    let older = w
        .access(&clinician("dr.keep"), 1, "item-0", T0 + 3)
        .unwrap();
    assert_eq!(older.key_epoch, 2);
    assert_eq!(older.key_chain, vec![vec![0x33; 80]]);
    // The reader left behind holds epoch 1 only: no chain leads up, so the new item's
    // file key (wrapped to epoch 2) stays closed to it.
    let dropped = w
        .access(&clinician("dr.drop"), 1, "item-1", T0 + 3)
        .unwrap();
    assert_eq!(dropped.key_envelope, vec![0xee; 80]);
    assert_eq!((dropped.key_epoch, dropped.key_chain.len()), (1, 0));
    let bad = v1::RotateCategoryKeyArgs {
        public_key: vec![0x78; 32],
        envelopes: vec![v1::EnvelopeUpdate {
            permission_id: "perm-99".into(),
            key_envelope: vec![1],
            key_envelope_commitment: Vec::new(),
        }],
        ..args.clone()
    };
    assert!(matches!(
        w.call(&patient(1), T0 + 4, "rotate_category_key", &bad),
        Err(ChaincodeError::NotFound { .. })
    ));
    // An emergency access carries no key, and a rotation cannot hand it one.
    let er = emergency_clinician("dr.er", Some(T0 - DAY), Some(T0 + 30 * DAY));
    let emergency_id = v1::IdResult::decode(
        w.call(
            &er,
            T0 + 4,
            "emergency_access",
            &v1::EmergencyAccessArgs {
                pseudonym: pseudonym(1),
                category: LAB.into(),
                sealed_reason: sealed_reason(1, LAB, "unconscious on arrival"),
                duration_seconds: 0,
                ..Default::default()
            },
        )
        .unwrap()
        .as_slice(),
    )
    .unwrap()
    .id;
    let to_emergency = v1::RotateCategoryKeyArgs {
        public_key: vec![0x79; 32],
        epoch: 3,
        envelopes: vec![v1::EnvelopeUpdate {
            permission_id: emergency_id,
            key_envelope: vec![0x12; 80],
            key_envelope_commitment: Vec::new(),
        }],
        ..args.clone()
    };
    assert!(matches!(
        w.call(&patient(1), T0 + 4, "rotate_category_key", &to_emergency),
        Err(ChaincodeError::InvalidArgument {
            field: "envelopes",
            ..
        })
    ));
    // The chain is key material: erasure removes it with the keys.
    assert!(w.ledger.state().keys().any(|k| k.contains("/key-chain/")));
    w.call(
        &patient(1),
        T0 + 5,
        "erase_patient",
        &v1::PatientArgs {
            pseudonym: pseudonym(1),
        },
    )
    .unwrap();
    assert!(!w.ledger.state().keys().any(|k| k.contains("/key-chain/")));
}

#[test]
fn erasure_shreds_keys_and_closes_the_record() {
    let mut w = world();
    w.grant(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY, T0)
        .unwrap();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    w.add_item(&patient(1), 1, "item-2", HP, T0).unwrap();
    w.call(
        &patient(1),
        T0,
        "set_private_data",
        &v1::SetPrivateDataArgs {
            pseudonym: pseudonym(1),
            ciphertext: vec![5; 100],
        },
    )
    .unwrap();
    let erase = v1::PatientArgs {
        pseudonym: pseudonym(1),
    };
    assert_eq!(
        denial(w.call(&clinician("dr.a"), T0 + 1, "erase_patient", &erase)),
        Denial::NotOwner
    );
    let result = v1::ErasureResult::decode(
        w.call(&patient(1), T0 + 2, "erase_patient", &erase)
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let p = hex::encode(pseudonym(1));
    assert_eq!(
        result.deleted_paths,
        [
            format!("patients/{p}/lab-results/item-1"),
            format!("patients/{p}/history-and-physical/item-2")
        ]
    );

    let state = w.ledger.state();
    for (key, value) in state
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("patient/{p}/item/")))
    {
        let item = v1::ClinicalItem::decode(value.as_slice()).unwrap();
        assert!(item.tombstoned && item.wrapped_dek.is_empty(), "{key}");
    }
    for (key, value) in state
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("patient/{p}/perm/")))
    {
        assert!(
            v1::Permission::decode(value.as_slice())
                .unwrap()
                .key_envelope
                .is_empty(),
            "{key}"
        );
    }
    assert!(
        !state
            .keys()
            .any(|k| k.starts_with(&format!("patient/{p}/key/")))
    );
    assert!(!state.contains_key(&format!("patient/{p}/private")));
    let event = w
        .ledger
        .events()
        .iter()
        .find(|e| e.name == "patient_erased")
        .unwrap();
    let subject = v1::EventSubject::decode(event.payload.as_slice()).unwrap();
    assert_eq!(subject.pseudonym, pseudonym(1));
    assert_eq!(
        v1::PatientErasedEvent::decode(event.payload.as_slice())
            .unwrap()
            .deleted_paths
            .len(),
        2
    );

    // Every call on the patient now fails with the same clear error.
    let t = T0 + 3;
    assert_eq!(
        w.grant(1, "dr.a", LAB, &[Right::Read], t, t + DAY, t)
            .unwrap_err(),
        ChaincodeError::PatientErased
    );
    assert_eq!(
        w.access(&clinician("dr.a"), 1, "item-1", t).unwrap_err(),
        ChaincodeError::PatientErased
    );
    assert_eq!(
        w.access(&patient(1), 1, "item-1", t).unwrap_err(),
        ChaincodeError::PatientErased
    );
    assert_eq!(
        w.add_item(&patient(1), 1, "item-3", LAB, t).unwrap_err(),
        ChaincodeError::PatientErased
    );
    assert_eq!(
        w.call(&patient(1), t, "erase_patient", &erase).unwrap_err(),
        ChaincodeError::PatientErased
    );
    for function in ["get_record", "list_permissions", "list_items"] {
        let result = w
            .query::<_, v1::Empty>(&patient(1), t, function, &erase)
            .map(|_| ());
        assert_eq!(
            result.unwrap_err(),
            ChaincodeError::PatientErased,
            "{function}"
        );
    }
    let trail = v1::AuditTrailArgs {
        pseudonym: pseudonym(1),
        after_seq: 0,
        limit: 10,
    };
    assert_eq!(
        w.query::<_, v1::AuditTrail>(&auditor(), t, "audit_trail", &trail)
            .unwrap_err(),
        ChaincodeError::PatientErased
    );
    // The patient may start again under a new pseudonym.
    w.register_patient(2, t);
}

#[test]
fn private_data_is_the_owners_alone() {
    let mut w = world();
    let set = v1::SetPrivateDataArgs {
        pseudonym: pseudonym(1),
        ciphertext: vec![5; 100],
    };
    assert_eq!(
        denial(w.call(&clinician("dr.a"), T0, "set_private_data", &set)),
        Denial::NotOwner
    );
    w.call(&patient(1), T0, "set_private_data", &set).unwrap();
    let huge = v1::SetPrivateDataArgs {
        pseudonym: pseudonym(1),
        ciphertext: vec![5; 64 * 1024 + 1],
    };
    assert!(matches!(
        w.call(&patient(1), T0, "set_private_data", &huge),
        Err(ChaincodeError::InvalidArgument { .. })
    ));
    let args = v1::PatientArgs {
        pseudonym: pseudonym(1),
    };
    let own: v1::GetRecordResult = w.query(&patient(1), T0, "get_record", &args).unwrap();
    assert_eq!(own.private_data.unwrap().ciphertext, vec![5; 100]);
    let audited: v1::GetRecordResult = w.query(&auditor(), T0, "get_record", &args).unwrap();
    assert!(audited.private_data.is_none());
    assert!(
        w.query::<_, v1::GetRecordResult>(&clinician("dr.a"), T0, "get_record", &args)
            .is_err()
    );
}

#[test]
fn admins_register_categories() {
    let mut w = world();
    let args = v1::RegisterCategoryArgs {
        name: "genomics".into(),
        description: "Sequencing results".into(),
    };
    assert!(matches!(
        denial(w.call(&clinician("dr.a"), T0, "register_category", &args)),
        Denial::WrongRole {
            needed: "admin",
            ..
        }
    ));
    w.call(&admin(), T0, "register_category", &args).unwrap();
    assert!(matches!(
        w.call(&admin(), T0, "register_category", &args),
        Err(ChaincodeError::AlreadyExists { .. })
    ));
    let default = v1::RegisterCategoryArgs {
        name: LAB.into(),
        description: String::new(),
    };
    assert!(matches!(
        w.call(&admin(), T0, "register_category", &default),
        Err(ChaincodeError::AlreadyExists { .. })
    ));
    let bad = v1::RegisterCategoryArgs {
        name: "Gen Omics".into(),
        description: String::new(),
    };
    assert!(matches!(
        w.call(&admin(), T0, "register_category", &bad),
        Err(ChaincodeError::InvalidArgument { .. })
    ));
    let list: v1::CategoryList = w
        .query(&clinician("dr.a"), T0, "list_categories", &v1::Empty {})
        .unwrap();
    assert_eq!(list.categories.len(), 4);
    // A new patient can hold a key for it.
    let reg = v1::RegisterPatientArgs {
        pseudonym: pseudonym(3),
        owner_encryption_key: vec![9; 32],
        category_keys: vec![v1::CategoryKey {
            category: "genomics".into(),
            public_key: vec![1; 32],
            owner_signature: vec![0; 64],
            ..Default::default()
        }],
    };
    w.call(&patient(3), T0, "register_patient", &reg).unwrap();
}

#[test]
fn queries_show_each_role_its_part() {
    let mut w = world();
    w.register_patient(2, T0);
    w.grant(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY, T0)
        .unwrap();
    w.grant(2, "dr.a", HP, &[Right::Read], T0 + DAY, T0 + 2 * DAY, T0)
        .unwrap();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    w.add_item(&patient(1), 1, "item-2", HP, T0).unwrap();
    let dr = clinician("dr.a");
    let args = v1::PatientArgs {
        pseudonym: pseudonym(1),
    };
    let items: v1::ItemList = w.query(&dr, T0 + 1, "list_items", &args).unwrap();
    assert_eq!(
        items
            .items
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        ["item-1"]
    );
    let patients: v1::PatientList = w
        .query(&dr, T0 + 1, "list_patients_for_grantee", &v1::Empty {})
        .unwrap();
    assert_eq!(patients.pseudonyms, [pseudonym(1)]);
    let later: v1::PatientList = w
        .query(
            &dr,
            T0 + DAY + 1,
            "list_patients_for_grantee",
            &v1::Empty {},
        )
        .unwrap();
    assert_eq!(later.pseudonyms, [pseudonym(2)]);

    let check = |grantee: &str, right: Right| v1::CheckAccessArgs {
        pseudonym: pseudonym(1),
        grantee: grantee.into(),
        category: LAB.into(),
        right: right as i32,
        ..Default::default()
    };
    let yes: v1::CheckAccessResult = w
        .query(&dr, T0 + 1, "check_access", &check("dr.a", Right::Read))
        .unwrap();
    assert!(yes.allowed);
    // An allowed answer carries the category's public key, to wrap new files' keys to.
    let key = yes.category_key.expect("the category key");
    assert_eq!((key.category.as_str(), key.epoch), (LAB, 1));
    assert_eq!(key.public_key.len(), 32);
    let no: v1::CheckAccessResult = w
        .query(
            &patient(1),
            T0 + 1,
            "check_access",
            &check("dr.a", Right::Write),
        )
        .unwrap();
    assert!(!no.allowed && no.reason.contains("no permission"));
    assert!(no.category_key.is_none());
    assert!(
        w.query::<_, v1::CheckAccessResult>(
            &clinician("dr.b"),
            T0,
            "check_access",
            &check("dr.a", Right::Read)
        )
        .is_err()
    );

    // Auditors read trails; clinicians and researchers do not.
    let trail = v1::AuditTrailArgs {
        pseudonym: pseudonym(1),
        after_seq: 0,
        limit: 2,
    };
    let page: v1::AuditTrail = w.query(&auditor(), T0, "audit_trail", &trail).unwrap();
    assert_eq!(page.entries.len(), 2);
    let next = v1::AuditTrailArgs {
        after_seq: page.next_after_seq,
        limit: 100,
        ..trail.clone()
    };
    let rest: v1::AuditTrail = w.query(&auditor(), T0, "audit_trail", &next).unwrap();
    assert_eq!(rest.entries.first().unwrap().seq, 3);
    assert_eq!(rest.next_after_seq, 0);
    assert!(
        w.query::<_, v1::AuditTrail>(&dr, T0, "audit_trail", &trail)
            .is_err()
    );
    assert!(
        w.query::<_, v1::AuditTrail>(&researcher("res"), T0, "audit_trail", &trail)
            .is_err()
    );
    let too_many = v1::AuditTrailArgs {
        limit: 501,
        ..trail
    };
    assert!(matches!(
        w.query::<_, v1::AuditTrail>(&auditor(), T0, "audit_trail", &too_many),
        Err(ChaincodeError::InvalidArgument { .. })
    ));
    assert!(matches!(
        w.query::<_, v1::ItemList>(&researcher("res"), T0, "list_items", &args)
            .unwrap_err()
            .denial(),
        Some(Denial::WrongRole { .. })
    ));
}

#[test]
fn malformed_calls_are_refused() {
    use medledger_chaincode::{invoke, query};
    let mut w = world();
    let mut stub = w.ledger.transaction(patient(1), T0);
    assert_eq!(
        invoke(&mut stub, "drop_tables", &[]),
        Err(ChaincodeError::UnknownFunction("drop_tables".into()))
    );
    assert!(matches!(
        invoke(&mut stub, "get_record", &[]),
        Err(ChaincodeError::NotATransaction(_))
    ));
    assert!(matches!(
        query(&stub, "grant", &[]),
        Err(ChaincodeError::InvalidArgument { .. })
    ));
    assert!(matches!(
        invoke(&mut stub, "grant", &[0xff, 0xff, 0xff]),
        Err(ChaincodeError::InvalidArgument { field: "args", .. })
    ));
    assert!(matches!(
        invoke(&mut stub, "grant", &vec![0; 200 * 1024]),
        Err(ChaincodeError::InvalidArgument { field: "args", .. })
    ));
    stub.commit();
    assert_eq!(w.audit(1, T0).len(), 1);
}

#[test]
fn consensus_time_gives_the_utc_year() {
    for (time_s, year) in [
        (i64::MIN, 1970),
        (0, 1970),
        (951_782_400, 2000),   // 2000-02-29T00:00:00Z
        (978_307_199, 2000),   // 2000-12-31T23:59:59Z
        (978_307_200, 2001),   // 2001-01-01T00:00:00Z
        (1_709_164_800, 2024), // 2024-02-29T00:00:00Z
        (1_735_689_599, 2024), // 2024-12-31T23:59:59Z
        (1_735_689_600, 2025), // 2025-01-01T00:00:00Z
        (T0, 2027),
        (4_107_542_400, 2100), // 2100-03-01T00:00:00Z (2100 is no leap year)
        (limits::MAX_TIME_S, 9999),
        (i64::MAX, 9999),
    ] {
        assert_eq!(limits::utc_year(time_s), year, "at {time_s}");
    }
}

/// Issue 14, item 7: one caller repeating the same denied call cannot bury the patient's
/// trail: the repeats are counted on one entry, with the time of the last; anything else
/// (another caller, another item, an allowed call) starts a new entry.
#[test]
fn repeated_denials_are_coalesced_on_the_trail() {
    let mut w = world();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let read = |item: &str| v1::RecordAccessArgs {
        pseudonym: pseudonym(1),
        item_id: item.into(),
    };
    let before = w.audit(1, T0).len();
    for i in 0..1000 {
        let denied = w.call(&clinician("dr.x"), T0 + i, "record_access", &read("item-1"));
        assert!(denied.is_err());
    }
    let trail = w.audit(1, T0 + 1000);
    assert_eq!(trail.len(), before + 1, "1,000 denials became one entry");
    let last = trail.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.repeats, last.last_time),
        ("dr.x", 999, T0 + 999)
    );
    // Another caller, or the same one on another thing, is a new entry.
    w.call(
        &clinician("dr.y"),
        T0 + 1000,
        "record_access",
        &read("item-1"),
    )
    .unwrap_err();
    w.call(
        &clinician("dr.x"),
        T0 + 1001,
        "record_access",
        &read("item-1"),
    )
    .unwrap_err();
    let trail = w.audit(1, T0 + 1002);
    assert_eq!(
        trail.len(),
        before + 2,
        "dr.x's repeat joined its entry behind dr.y's"
    );
    // Alternating between two denied calls does not grow the trail either.
    w.add_item(&patient(1), 1, "item-2", LAB, T0 + 1003)
        .unwrap();
    let after_item = w.audit(1, T0 + 1003).len();
    for i in 0..100 {
        let item = if i % 2 == 0 { "item-1" } else { "item-2" };
        w.call(
            &clinician("dr.x"),
            T0 + 1004 + i,
            "record_access",
            &read(item),
        )
        .unwrap_err();
    }
    assert_eq!(w.audit(1, T0 + 1200).len(), after_item + 1);
}

/// Issue 17 item 4: the ledger keeps each key with its owner's signature and records the
/// owner binding (the signing key of the registering patient, of the study's researcher), and
/// hands both out with the key, so that a client checks them before it encrypts; a key
/// without a signature is refused.
#[test]
fn keys_carry_their_owners_signatures_and_the_owner_binding() {
    let mut w = world();
    w.grant(1, "dr.a", LAB, &[Right::Write], T0, T0 + DAY, T0)
        .unwrap();
    let answer: v1::CheckAccessResult = w
        .query(
            &clinician("dr.a"),
            T0 + 1,
            "check_access",
            &v1::CheckAccessArgs {
                pseudonym: pseudonym(1),
                grantee: "dr.a".into(),
                category: LAB.into(),
                right: Right::Write as i32,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(answer.allowed);
    // The test creators sign with [3; 32]; patient 1's keys carry the signature [1; 64].
    assert_eq!(answer.owner_key, vec![3; 32]);
    assert_eq!(answer.category_key.unwrap().owner_signature, vec![1; 64]);

    let unsigned = v1::RegisterPatientArgs {
        pseudonym: pseudonym(2),
        owner_encryption_key: vec![9; 32],
        category_keys: vec![v1::CategoryKey {
            category: LAB.into(),
            public_key: vec![2; 32],
            ..Default::default()
        }],
    };
    assert!(matches!(
        w.call(&patient(2), T0, "register_patient", &unsigned),
        Err(ChaincodeError::InvalidArgument {
            field: "category_keys.owner_signature",
            ..
        })
    ));
    let rotate = v1::RotateCategoryKeyArgs {
        pseudonym: pseudonym(1),
        category: LAB.into(),
        public_key: vec![0x77; 32],
        ..Default::default()
    };
    assert!(matches!(
        w.call(&patient(1), T0 + 2, "rotate_category_key", &rotate),
        Err(ChaincodeError::InvalidArgument {
            field: "owner_signature",
            ..
        })
    ));
    let rotate = v1::RotateCategoryKeyArgs {
        owner_signature: vec![5; 64],
        epoch: 2,
        previous_key_envelope: vec![5; 80],
        ..rotate
    };
    // The owner's name on a certificate with another key (one the CA issued alone).
    let mut impostor = patient(1);
    impostor.signing_key = [9; 32];
    assert!(matches!(
        w.call(&impostor, T0 + 2, "rotate_category_key", &rotate),
        Err(ChaincodeError::InvalidArgument {
            field: "owner_signature",
            ..
        })
    ));
    // An epoch other than the next: a rotation ordered after another, or a stale one.
    let skipping = v1::RotateCategoryKeyArgs {
        epoch: 3,
        ..rotate.clone()
    };
    assert!(matches!(
        w.call(&patient(1), T0 + 2, "rotate_category_key", &skipping),
        Err(ChaincodeError::InvalidArgument { field: "epoch", .. })
    ));
    w.call(&patient(1), T0 + 2, "rotate_category_key", &rotate)
        .unwrap();
    let study = v1::RegisterStudyArgs {
        id: "study-1".into(),
        title: "Dose response".into(),
        protocol_hash: vec![9; 32],
        study_key: vec![8; 32],
        study_key_signature: Vec::new(),
    };
    assert!(matches!(
        w.call(&researcher("res-1"), T0, "register_study", &study),
        Err(ChaincodeError::InvalidArgument {
            field: "study_key_signature",
            ..
        })
    ));
}

/// Issue 20 item 3 (docs/adr/0014): a study pseudonym is its patient's, by signature. Before,
/// patient 1 could name patient 2's study pseudonym in a grant, have a clinician share into
/// it (taking over its source, so that patient 2's fetches were audited on patient 1's
/// trail) and then erase their record, destroying patient 2's copies in the study.
#[test]
fn one_patient_can_neither_name_nor_erase_another_patients_study_copies() {
    use medledger_chaincode::keys;
    use medledger_chaincode::stub::Stub as _;

    let mut w = world();
    w.register_patient(2, T0);
    w.register_study("res-1", "study-1", T0);
    // Patient 2's copy in the study.
    let share = |n: u8| grant_args(n, "dr.b", LAB, &[Right::Share], T0, T0 + DAY);
    w.call(&patient(2), T0, "grant", &share(2)).unwrap();
    w.add_item(&patient(2), 2, "item-2", LAB, T0).unwrap();
    w.call(
        &clinician("dr.b"),
        T0 + 1,
        "share_for_study",
        &share_args(2, "item-2", "study-1", "s-2", false),
    )
    .unwrap();

    // Patient 1 names patient 2's study pseudonym: with their own key, with patient 2's
    // (public) key under their own signature, or with patient 2's whole proof replayed.
    let theirs = study_pseudonym(2, "study-1");
    let mut own_key = share(1);
    own_key.study_pseudonym = theirs.clone();
    let mut their_key = own_key.clone();
    their_key.study_owner_key = study_identity(2, "study-1")
        .verifying_key()
        .to_bytes()
        .to_vec();
    let mut replayed = their_key.clone();
    replayed.study_owner_signature = study_signature(2, "study-1", &pseudonym(2));
    // And malformed or misplaced proofs of their own.
    let mut other_study = share(1);
    other_study.study_owner_signature = study_signature(1, "study-2", &pseudonym(1));
    let mut short = share(1);
    short.study_owner_signature.pop();
    let mut no_key = share(1);
    no_key.study_owner_key.clear();
    // 32 bytes that encode no point of the curve (about half of all do not).
    let off_curve = (2u8..)
        .map(|y| {
            let mut key = [0; 32];
            key[0] = y;
            key
        })
        .find(|key| medledger_crypto::VerifyingKey::from_bytes(key).is_err())
        .unwrap();
    let mut not_a_point = share(1);
    not_a_point.study_owner_key = off_curve.to_vec();
    not_a_point.study_pseudonym = medledger_crypto::study_pseudonym_of("study-1", &off_curve)
        .0
        .to_vec();
    // Patient 1's own key of another study, with its signature on this one: the pseudonym
    // is the key's in its own study only.
    let mut cross_study = share(1);
    let other_key = study_identity(1, "study-2").verifying_key().to_bytes();
    cross_study.study_owner_key = other_key.to_vec();
    cross_study.study_owner_signature = study_identity(1, "study-2")
        .sign(
            medledger_crypto::SignatureDomain::StudyGrant,
            &medledger_crypto::study_grant_statement("study-1", &pseudonym(1)),
        )
        .to_bytes()
        .to_vec();
    cross_study.study_pseudonym = medledger_crypto::study_pseudonym_of("study-2", &other_key)
        .0
        .to_vec();
    let mut stray = grant_args(1, "dr.b", LAB, &[Right::Read], T0, T0 + DAY);
    stray.study_owner_key = share(1).study_owner_key;
    for (args, refused_field) in [
        (own_key, "study_pseudonym"),
        (their_key, "study_owner_signature"),
        (replayed, "study_owner_signature"),
        (other_study, "study_owner_signature"),
        (short, "study_owner_signature"),
        (no_key, "study_owner_key"),
        (not_a_point, "study_owner_key"),
        (cross_study, "study_pseudonym"),
        (stray, "study_id"),
    ] {
        match w.call(&patient(1), T0 + 2, "grant", &args) {
            Err(ChaincodeError::InvalidArgument { field, .. }) => {
                assert_eq!(field, refused_field, "{args:?}")
            }
            other => panic!("{refused_field}: {other:?}"),
        }
    }

    // Another patient's attempt on patient 1's record, with whatever proof: refused as not
    // the owner, and on patient 1's trail.
    assert_eq!(
        denial(w.call(&patient(2), T0 + 2, "grant", &share(1))),
        Denial::NotOwner
    );
    assert!(
        w.audit(1, T0 + 2).iter().any(|e| e.actor == "patient-2"
            && e.action == AuditAction::Grant as i32
            && e.outcome == Outcome::Denied as i32),
        "{:?}",
        w.audit(1, T0 + 2)
    );

    // A permission of patient 1 naming patient 2's study pseudonym, as an older chaincode
    // let it be granted (unsigned): sharing under it is refused, and patient 1's erasure
    // leaves patient 2's copy alone.
    w.call(&patient(1), T0 + 2, "grant", &share(1)).unwrap();
    {
        let mut stub = w.ledger.transaction(admin(), T0 + 2);
        let prefix = keys::permissions_prefix(&hex::encode(pseudonym(1)));
        for (key, bytes) in stub.scan_prefix(&prefix, None, 100).unwrap() {
            let mut permission = v1::Permission::decode(bytes.as_slice()).unwrap();
            if !permission.study_id.is_empty() {
                permission.study_pseudonym = theirs.clone();
                permission.study_owner_key.clear();
                stub.put(&key, permission.encode_to_vec()).unwrap();
            }
        }
        stub.commit();
    }
    w.add_item(&patient(1), 1, "item-1", LAB, T0 + 2).unwrap();
    let mut taken = share_args(1, "item-1", "study-1", "s-1", false);
    taken.path = format!("studies/study-1/{}/s-1", hex::encode(&theirs));
    match w.call(&clinician("dr.b"), T0 + 3, "share_for_study", &taken) {
        Err(ChaincodeError::InvalidArgument { field, why }) => {
            assert_eq!(field, "study_pseudonym");
            assert!(why.contains("before study pseudonyms were signed"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let erased: v1::ErasureResult = w
        .call_decode(
            &patient(1),
            T0 + 4,
            "erase_patient",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    assert!(
        erased
            .deleted_paths
            .iter()
            .all(|p| !p.starts_with("studies/")),
        "{:?}",
        erased.deleted_paths
    );
    let fetched: v1::RecordStudyAccessResult = w
        .call_decode(
            &researcher("res-1"),
            T0 + 5,
            "record_study_access",
            &v1::RecordStudyAccessArgs {
                study_id: "study-1".into(),
                study_pseudonym: theirs.clone(),
                item_id: "s-2".into(),
            },
        )
        .unwrap();
    assert!(!fetched.item.unwrap().tombstoned);
    assert!(
        w.audit(2, T0 + 6)
            .iter()
            .any(|e| e.action == AuditAction::StudyAccess as i32 && e.item == "s-2"),
        "the fetch is on patient 2's trail"
    );

    // State an older chaincode left: patient 2's copy with no source of its own, and the
    // pseudonym's source taken over by patient 1's share. Patient 2's erasure still
    // removes it.
    {
        let mut stub = w.ledger.transaction(admin(), T0 + 7);
        let p = hex::encode(&theirs);
        stub.delete(&keys::study_item_source("study-1", &p, "s-2"))
            .unwrap();
        stub.put(
            &keys::study_source("study-1", &p),
            hex::encode(pseudonym(1)).into_bytes(),
        )
        .unwrap();
        stub.commit();
    }
    let erased: v1::ErasureResult = w
        .call_decode(
            &patient(2),
            T0 + 8,
            "erase_patient",
            &v1::PatientArgs {
                pseudonym: pseudonym(2),
            },
        )
        .unwrap();
    assert!(
        erased
            .deleted_paths
            .iter()
            .any(|p| p.starts_with("studies/") && p.ends_with("/s-2")),
        "{:?}",
        erased.deleted_paths
    );
}
