//! Issue 19, items 6 and 7: caps that count only live entries, so no number of ended grants
//! or emergency accesses locks anyone out; and windows resolved in consensus time, so a
//! patient whose clock is off still gets the window they asked for, or a clear error.
// A host, not the deterministic crate: it may read the clock and the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;
use medledger_chaincode::{ChaincodeError, Denial, Role, limits};
use medledger_proto::v1::{self, AuditAction, Right};
use prost::Message;

const LAB: &str = "lab-results";
const CAP: usize = limits::MAX_PERMISSIONS_PER_GRANTEE;

fn world() -> World {
    let mut w = World::new();
    w.register_patient(1, T0);
    w
}

fn permissions(w: &mut World, t: i64) -> Vec<v1::Permission> {
    let list: v1::PermissionList = w
        .query(
            &patient(1),
            t,
            "list_permissions",
            &v1::PatientArgs {
                pseudonym: pseudonym(1),
            },
        )
        .unwrap();
    list.permissions
}

fn cap_refusal(result: Result<String, ChaincodeError>) -> bool {
    matches!(
        result,
        Err(ChaincodeError::InvalidArgument {
            field: "grantee",
            ..
        })
    )
}

/// The bug as reported: after 256 short grants had expired, the next was refused for good.
#[test]
fn expired_grants_stop_counting() {
    let mut w = world();
    let mut t = T0;
    for _ in 0..CAP {
        w.grant(1, "dr.a", LAB, &[Right::Read], t, t + 20, t)
            .unwrap();
    }
    // All 256 still live or to come: the cap holds.
    assert!(cap_refusal(w.grant(
        1,
        "dr.a",
        LAB,
        &[Right::Read],
        t,
        t + 20,
        t
    )));
    // Once they have ended, a new grant is accepted, and another 255 after it.
    t += 20;
    for _ in 0..CAP {
        w.grant(1, "dr.a", LAB, &[Right::Read], t, t + DAY, t)
            .unwrap();
    }
    assert!(cap_refusal(w.grant(
        1,
        "dr.a",
        LAB,
        &[Right::Read],
        t,
        t + DAY,
        t
    )));
    // Every permission is still listed for the patient, ended or not, and every grant is
    // on the trail.
    let listed = permissions(&mut w, t);
    assert_eq!(listed.len(), 2 * CAP);
    assert_eq!(listed.iter().filter(|p| p.until <= t).count(), CAP);
    let grants = w
        .ledger
        .state()
        .iter()
        .filter(|(k, _)| k.contains("/audit/"))
        .filter(|(_, v)| {
            v1::AuditEntry::decode(v.as_slice()).unwrap().action == AuditAction::Grant as i32
        })
        .count();
    assert!(grants >= 2 * CAP, "{grants} grant entries");
    // The live index holds only the standing ones: each access scans no more.
    let live = w
        .ledger
        .state()
        .keys()
        .filter(|k| k.starts_with(&format!("patient/{}/perm/", hex::encode(pseudonym(1)))))
        .count();
    assert_eq!(live, CAP);
}

#[test]
fn revoked_grants_stop_counting_and_still_say_revoked() {
    let mut w = world();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let mut ids = Vec::new();
    for _ in 0..CAP {
        ids.push(
            w.grant(1, "dr.a", LAB, &[Right::Read], T0, T0 + DAY, T0)
                .unwrap(),
        );
    }
    assert!(cap_refusal(w.grant(
        1,
        "dr.a",
        LAB,
        &[Right::Read],
        T0,
        T0 + DAY,
        T0
    )));
    for id in &ids {
        let revoke = v1::RevokeArgs {
            pseudonym: pseudonym(1),
            permission_id: id.clone(),
        };
        w.call(&patient(1), T0 + 1, "revoke", &revoke).unwrap();
        // Revoking twice is still refused, from the ended index.
        assert_eq!(
            w.call(&patient(1), T0 + 1, "revoke", &revoke),
            Err(ChaincodeError::AlreadyRevoked(id.clone()))
        );
    }
    // The reader is told why: revoked, though nothing of theirs is in the live index.
    assert!(matches!(
        denial(w.access(&clinician("dr.a"), 1, "item-1", T0 + 2)),
        Denial::Revoked { .. }
    ));
    let check: v1::CheckAccessResult = w
        .query(
            &patient(1),
            T0 + 2,
            "check_access",
            &v1::CheckAccessArgs {
                pseudonym: pseudonym(1),
                grantee: "dr.a".into(),
                category: LAB.into(),
                right: Right::Read as i32,
                study_id: String::new(),
            },
        )
        .unwrap();
    assert!(!check.allowed);
    assert_eq!(
        check.denied.unwrap().reason,
        v1::DenialReason::Revoked as i32
    );
    // The record left the clinician's list with their last standing permission.
    let list: v1::PatientList = w
        .query(
            &clinician("dr.a"),
            T0 + 2,
            "list_patients_for_grantee",
            &v1::Empty {},
        )
        .unwrap();
    assert!(list.pseudonyms.is_empty());
    assert!(
        !w.ledger
            .state()
            .keys()
            .any(|k| k.starts_with("grantee/dr.a/"))
    );
    // A full set of new grants fits, and the new ones open the item again.
    for _ in 0..CAP {
        w.grant(1, "dr.a", LAB, &[Right::Read], T0 + 2, T0 + DAY, T0 + 2)
            .unwrap();
    }
    w.access(&clinician("dr.a"), 1, "item-1", T0 + 3).unwrap();
    assert_eq!(permissions(&mut w, T0 + 3).len(), 2 * CAP);
}

/// An ended permission that left the live index still tells its reader it expired, and a
/// permission not yet started still counts (it is coming).
#[test]
fn ended_permissions_keep_their_reasons_and_future_ones_count() {
    let mut w = world();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    w.grant(1, "dr.a", LAB, &[Right::Read], T0, T0 + HOUR, T0)
        .unwrap();
    // A later grant sweeps the ended one out of the live index.
    w.grant(
        1,
        "dr.a",
        LAB,
        &[Right::Write],
        T0 + HOUR,
        T0 + DAY,
        T0 + HOUR,
    )
    .unwrap();
    assert_eq!(
        denial(w.access(&clinician("dr.a"), 1, "item-1", T0 + HOUR)),
        Denial::WindowExpired { until: T0 + HOUR }
    );
    let mut w = world();
    for _ in 0..CAP {
        w.grant(1, "dr.b", LAB, &[Right::Read], T0 + DAY, T0 + 2 * DAY, T0)
            .unwrap();
    }
    assert!(cap_refusal(w.grant(
        1,
        "dr.b",
        LAB,
        &[Right::Read],
        T0 + HOUR,
        T0 + 2 * HOUR,
        T0 + HOUR
    )));
}

/// "Same for repeated emergency accesses": a clinician on call through many emergencies is
/// never refused for the ones that have ended.
#[test]
fn repeated_emergency_accesses_never_lock_a_clinician_out() {
    let mut w = world();
    let er = emergency_clinician("dr.er", Some(T0 - DAY), Some(T0 + 30 * DAY));
    let args = v1::EmergencyAccessArgs {
        pseudonym: pseudonym(1),
        category: LAB.into(),
        sealed_reason: sealed_reason(1, LAB, "unconscious on arrival"),
        duration_seconds: 60,
        ..Default::default()
    };
    for n in 0..(2 * CAP + 10) as i64 {
        w.call(&er, T0 + n * 61, "emergency_access", &args)
            .unwrap_or_else(|e| panic!("emergency access {n}: {e:?}"));
    }
    // Live ones still count: 256 open at once is the most.
    let t = T0 + DAY;
    let day_long = v1::EmergencyAccessArgs {
        duration_seconds: 0,
        ..args
    };
    for n in 0..CAP as i64 {
        w.call(&er, t + n, "emergency_access", &day_long).unwrap();
    }
    assert!(matches!(
        w.call(&er, t + CAP as i64, "emergency_access", &day_long),
        Err(ChaincodeError::InvalidArgument {
            field: "grantee",
            ..
        })
    ));
}

/// Erasure reaches permissions in both indexes: no envelope is left, and copies shared under
/// an ended share permission are tombstoned too.
#[test]
fn erasure_shreds_ended_permissions_too() {
    let mut w = world();
    w.register_study("res-1", "study-1", T0);
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let share = w
        .grant(
            1,
            "dr.a",
            LAB,
            &[Right::Read, Right::Share],
            T0,
            T0 + HOUR,
            T0,
        )
        .unwrap();
    w.call(
        &clinician("dr.a"),
        T0 + 1,
        "share_for_study",
        &share_args(1, "item-1", "study-1", "copy-1", false),
    )
    .unwrap();
    let revoke = v1::RevokeArgs {
        pseudonym: pseudonym(1),
        permission_id: share,
    };
    w.call(&patient(1), T0 + 2, "revoke", &revoke).unwrap();
    w.call(
        &patient(1),
        T0 + 3,
        "erase_patient",
        &v1::PatientArgs {
            pseudonym: pseudonym(1),
        },
    )
    .unwrap();
    let state = w.ledger.state();
    for (key, value) in state.iter() {
        if key.contains("/perm") && !key.contains("/perm-id/") {
            let p = v1::Permission::decode(value.as_slice()).unwrap();
            assert!(p.key_envelope.is_empty(), "{key} keeps its envelope");
        }
        if key.starts_with("study-item/") {
            let copy = v1::StudyItem::decode(value.as_slice()).unwrap();
            assert!(copy.tombstoned && copy.wrapped_dek.is_empty(), "{key}");
        }
    }
}

fn relative(from_commit: bool, from: i64, until: i64, duration_seconds: i64) -> v1::GrantArgs {
    v1::GrantArgs {
        from_commit,
        duration_seconds,
        ..grant_args(1, "dr.a", LAB, &[Right::Read], from, until)
    }
}

/// The bug as reported: a patient's client computed a one-second window from its own clock
/// and, under load, the grant committed after it had ended. Resolved at commit, it opens
/// exactly at the commit's consensus time, whatever the client's clock said.
#[test]
fn windows_are_resolved_in_consensus_time() {
    let mut w = world();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let commit = T0 + 600; // the patient's clock is ten minutes behind the ledger's
    let result: v1::GrantResult = w
        .call_decode(&patient(1), commit, "grant", &relative(true, 0, 0, 1))
        .unwrap();
    assert_eq!((result.from, result.until), (commit, commit + 1));
    w.access(&clinician("dr.a"), 1, "item-1", commit).unwrap();
    assert_eq!(
        denial(w.access(&clinician("dr.a"), 1, "item-1", commit + 1)),
        Denial::WindowExpired { until: commit + 1 }
    );
    // A start given, a length resolved: [from, from + d).
    let result: v1::GrantResult = w
        .call_decode(
            &patient(1),
            commit,
            "grant",
            &relative(false, commit + HOUR, 0, HOUR),
        )
        .unwrap();
    assert_eq!(
        (result.from, result.until),
        (commit + HOUR, commit + 2 * HOUR)
    );
    // From commit to a given end.
    let result: v1::GrantResult = w
        .call_decode(
            &patient(1),
            commit,
            "grant",
            &relative(true, 0, commit + DAY, 0),
        )
        .unwrap();
    assert_eq!((result.from, result.until), (commit, commit + DAY));
    // The permission stored is the resolved one.
    let stored = permissions(&mut w, commit);
    assert!(
        stored
            .iter()
            .any(|p| (p.from, p.until) == (commit, commit + 1))
    );
    // The old way, with the client's clock: the window ended before the commit, and the
    // error says so in consensus time.
    match w.call(
        &patient(1),
        commit,
        "grant",
        &relative(false, T0, T0 + 1, 0),
    ) {
        Err(ChaincodeError::InvalidArgument { field, why }) => {
            assert_eq!(field, "window");
            assert!(why.contains(&commit.to_string()), "{why}");
        }
        other => panic!("expected a window error, got {other:?}"),
    }
}

#[test]
fn relative_windows_are_checked() {
    let cases = [
        ("a start and from_commit", relative(true, T0, 0, HOUR)),
        ("an end and a duration", relative(false, T0, T0 + DAY, HOUR)),
        ("a negative duration", relative(true, 0, 0, -1)),
        ("no end at all", relative(true, 0, 0, 0)),
        (
            "longer than ten years",
            relative(true, 0, 0, limits::MAX_WINDOW_SECONDS + 1),
        ),
        ("the largest duration", relative(true, 0, 0, i64::MAX)),
        ("the smallest duration", relative(true, 0, 0, i64::MIN)),
        (
            "a start past the range",
            relative(false, limits::MAX_TIME_S, 0, HOUR),
        ),
        ("the largest start", relative(false, i64::MAX, 0, 1)),
        ("the smallest start", relative(false, i64::MIN, 0, 1)),
        ("an end before commit", relative(true, 0, T0 - 1, 0)),
        ("an end at commit", relative(true, 0, T0, 0)),
    ];
    let mut w = world();
    for (what, args) in cases {
        let result = w.call(&patient(1), T0, "grant", &args);
        assert!(
            matches!(result, Err(ChaincodeError::InvalidArgument { .. })),
            "{what}: {result:?}"
        );
    }
    // None of it wrote anything but the registration.
    assert_eq!(w.audit(1, T0).len(), 1);
    // The longest window fits exactly.
    w.call(
        &patient(1),
        T0,
        "grant",
        &relative(true, 0, 0, limits::MAX_WINDOW_SECONDS),
    )
    .unwrap();
}

/// Red-team review of items 6 and 7: a clinician with the emergency attribute piles up more
/// ended permissions than one scan page (10,000); erasure still reaches every grantee's
/// permissions and every study copy, in bounded steps (issue 20 item 6): the erasure closes
/// the record and does the first step; `purge_erased` steps finish it.
#[test]
fn erasure_reaches_past_ten_thousand_ended_permissions() {
    let mut w = world();
    w.register_study("res-1", "study-1", T0);
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let flood = emergency_clinician("dr.aaa", Some(T0 - DAY), Some(T0 + 30 * DAY));
    let one_second = v1::EmergencyAccessArgs {
        pseudonym: pseudonym(1),
        category: LAB.into(),
        sealed_reason: sealed_reason(1, LAB, "x"),
        duration_seconds: 1,
        ..Default::default()
    };
    let mut t = T0;
    for _ in 0..10_050 {
        w.call(&flood, t, "emergency_access", &one_second).unwrap();
        t += 2;
    }
    let share = w
        .grant(
            1,
            "dr.bob",
            LAB,
            &[Right::Read, Right::Share],
            t,
            t + HOUR,
            t,
        )
        .unwrap();
    w.call(
        &clinician("dr.bob"),
        t + 1,
        "share_for_study",
        &share_args(1, "item-1", "study-1", "copy-1", false),
    )
    .unwrap();
    w.call(
        &patient(1),
        t + 2,
        "revoke",
        &v1::RevokeArgs {
            pseudonym: pseudonym(1),
            permission_id: share,
        },
    )
    .unwrap();
    let ended = w
        .ledger
        .state()
        .keys()
        .filter(|k| k.contains("/perm-ended/"))
        .count();
    assert!(ended > 10_000, "{ended} ended permissions");
    let record = v1::PatientArgs {
        pseudonym: pseudonym(1),
    };
    let first: v1::ErasureResult = w
        .call_decode(&patient(1), t + 3, "erase_patient", &record)
        .unwrap();
    assert!(!first.purge_complete);
    let gateway = creator("gateway", Role::Gateway);
    let mut steps = 1;
    loop {
        steps += 1;
        let step: v1::ErasureResult = w
            .call_decode(&gateway, t + 3 + steps, "purge_erased", &record)
            .unwrap();
        if step.purge_complete {
            break;
        }
        assert!(steps < 20, "the purge does not end");
    }
    // 10,050 ended permissions and a few more entries, a thousand a step.
    assert_eq!(steps, 11);
    for (key, value) in w.ledger.state().iter() {
        if key.contains("/perm-ended/dr.bob/") || key.contains("/perm/dr.bob/") {
            let p = v1::Permission::decode(value.as_slice()).unwrap();
            assert!(p.key_envelope.is_empty(), "{key} keeps its envelope");
        }
        if key.starts_with("study-item/") {
            let copy = v1::StudyItem::decode(value.as_slice()).unwrap();
            assert!(copy.tombstoned && copy.wrapped_dek.is_empty(), "{key}");
        }
    }
}

/// A refused reader's reason comes from their newest ended permissions, however many older
/// ones there are.
#[test]
fn the_reason_comes_from_the_newest_ended_permissions() {
    let mut w = world();
    w.add_item(&patient(1), 1, "item-1", LAB, T0).unwrap();
    let mut t = T0;
    // 600: perm-601 sorts after the first 256 ids as text, so key order would miss it.
    for _ in 0..600 {
        w.grant(
            1,
            "dr.a",
            "history-and-physical",
            &[Right::Read],
            t,
            t + 1,
            t,
        )
        .unwrap();
        t += 2;
    }
    let id = w
        .grant(1, "dr.a", LAB, &[Right::Read], t, t + DAY, t)
        .unwrap();
    w.call(
        &patient(1),
        t + 1,
        "revoke",
        &v1::RevokeArgs {
            pseudonym: pseudonym(1),
            permission_id: id.clone(),
        },
    )
    .unwrap();
    assert_eq!(
        denial(w.access(&clinician("dr.a"), 1, "item-1", t + 2)),
        Denial::Revoked { permission_id: id }
    );
}

/// A patient's grants cannot shut a clinician out of break-glass: emergency accesses have a
/// cap of their own.
#[test]
fn grants_cannot_use_up_the_emergency_cap() {
    let mut w = world();
    for _ in 0..CAP {
        w.grant(
            1,
            "dr.er",
            LAB,
            &[Right::Write],
            limits::MAX_TIME_S - DAY,
            limits::MAX_TIME_S,
            T0,
        )
        .unwrap();
    }
    let er = emergency_clinician("dr.er", Some(T0 - DAY), Some(T0 + 30 * DAY));
    let args = v1::EmergencyAccessArgs {
        pseudonym: pseudonym(1),
        category: LAB.into(),
        sealed_reason: sealed_reason(1, LAB, "unconscious on arrival"),
        duration_seconds: 0,
        ..Default::default()
    };
    w.call(&er, T0 + 1, "emergency_access", &args).unwrap();
}
