//! Who may read the ledger's blocks, and what a record's follower sees of them (issue 20
//! item 1).
//!
//! Blocks say who did what to which pseudonym: the creator's certificate and name next to
//! the arguments (`register_patient` puts a patient's enrollment name next to their new
//! pseudonym). As Fabric's channel Readers policy, only the ledger's *readers* — peers (they
//! replicate it) and auditors (they verify it) — get blocks and every block's events.
//! Patients, clinicians, researchers, admins and the gateway see the ledger through the
//! chaincode's queries, which check each one's right; the genesis block (the configuration:
//! the CA root, peers and admin keys, no patient data) is given to every enrolled caller,
//! who pins the network by it.
//!
//! A record's owner may follow that record's events ([`for_follower`]): the results of their
//! own transactions, and of others' transactions only the events that concern the record
//! (an emergency access to it), without the result bytes (which answer the other creator).

use medledger_crypto::{EnrolledIdentity, Role};
use medledger_proto::v1;
use prost::Message;

/// Longest record pseudonym a subscription may name (bytes; pseudonyms are 32).
pub const MAX_RECORD_BYTES: usize = 64;

/// Whether `identity` is one of the ledger's readers: a peer or an auditor.
#[must_use]
pub fn reads_blocks(identity: &EnrolledIdentity) -> bool {
    matches!(identity.role, Role::Peer | Role::Auditor)
}

/// `Ok` for a reader of the ledger; else PERMISSION_DENIED, saying what the caller may use
/// instead.
///
/// # Errors
/// `identity` is not a peer or an auditor.
pub fn readers_only(identity: &EnrolledIdentity, what: &str) -> Result<(), tonic::Status> {
    if reads_blocks(identity) {
        return Ok(());
    }
    Err(tonic::Status::permission_denied(format!(
        "{what} are read by peers and auditors only (the ledger's readers); {} {} sees the \
         ledger through the chaincode's queries, and a record's owner may follow that \
         record's events (Subscribe naming the record)",
        if identity.role == Role::Admin {
            "an"
        } else {
            "a"
        },
        identity.role.as_str()
    )))
}

/// Whether `event` concerns the record `record`: its payload leads with the record's
/// pseudonym (`EventSubject`, field 1 of every event the chaincode emits). A payload that
/// does not decode concerns no record.
#[must_use]
pub fn concerns(event: &v1::ChaincodeEvent, record: &[u8]) -> bool {
    v1::EventSubject::decode(event.payload.as_slice())
        .is_ok_and(|subject| !subject.pseudonym.is_empty() && subject.pseudonym == record)
}

/// What the follower of `record`, enrolled as `caller`, sees of one block's `results`: the
/// results of the caller's own transactions whole; of any other, only its events that
/// concern `record` (with its transaction id, status, code, function and creator, but no
/// result bytes and no message); results with neither are left out.
#[must_use]
pub fn for_follower(results: Vec<v1::TxResult>, record: &[u8], caller: &str) -> Vec<v1::TxResult> {
    results
        .into_iter()
        .filter_map(|mut result| {
            if !caller.is_empty() && result.creator == caller {
                return Some(result);
            }
            result.events.retain(|event| concerns(event, record));
            if result.events.is_empty() {
                return None;
            }
            result.result.clear();
            result.message.clear();
            Some(result)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, pseudonym: &[u8]) -> v1::ChaincodeEvent {
        v1::ChaincodeEvent {
            name: name.into(),
            payload: v1::EmergencyAccessEvent {
                pseudonym: pseudonym.to_vec(),
                clinician: "dr-a".into(),
                category: "imaging".into(),
                until: 5,
                reason: "unconscious".into(),
            }
            .encode_to_vec(),
        }
    }

    fn result(creator: &str, events: Vec<v1::ChaincodeEvent>) -> v1::TxResult {
        v1::TxResult {
            tx_id: vec![1],
            creator: creator.into(),
            function: "f".into(),
            result: vec![9, 9],
            message: "words".into(),
            events,
            ..Default::default()
        }
    }

    #[test]
    fn a_follower_sees_its_own_results_and_the_events_of_its_record_only() {
        let mine = [7u8; 32];
        let other = [8u8; 32];
        let seen = for_follower(
            vec![
                result("alice", vec![]),
                result("dr-a", vec![event("emergency_access", &mine)]),
                result("dr-a", vec![event("emergency_access", &other)]),
                result(
                    "dr-b",
                    vec![
                        event("emergency_access", &other),
                        event("emergency_access", &mine),
                    ],
                ),
                result("bob", vec![]),
                result(
                    "dr-c",
                    vec![v1::ChaincodeEvent {
                        name: "junk".into(),
                        payload: vec![0xff, 0xff],
                    }],
                ),
            ],
            &mine,
            "alice",
        );
        assert_eq!(seen.len(), 3, "{seen:?}");
        // Its own: whole.
        assert_eq!(seen[0].creator, "alice");
        assert_eq!(seen[0].result, vec![9, 9]);
        // Others': the events of its record, nothing of their answers.
        for r in &seen[1..] {
            assert!(r.result.is_empty() && r.message.is_empty(), "{r:?}");
            assert_eq!(r.events.len(), 1);
            assert!(concerns(&r.events[0], &mine));
        }
        assert_eq!(seen[2].creator, "dr-b");
    }

    #[test]
    fn an_empty_pseudonym_or_caller_matches_nothing() {
        let seen = for_follower(
            vec![result("", vec![event("emergency_access", &[])])],
            &[],
            "",
        );
        assert!(seen.is_empty(), "{seen:?}");
    }

    #[test]
    fn the_erasure_event_leads_with_its_record_too() {
        let mine = [3u8; 32];
        let erased = v1::ChaincodeEvent {
            name: "patient_erased".into(),
            payload: v1::PatientErasedEvent {
                pseudonym: mine.to_vec(),
                deleted_paths: vec!["p".into()],
            }
            .encode_to_vec(),
        };
        assert!(concerns(&erased, &mine));
        assert!(!concerns(&erased, &[4u8; 32]));
    }
}
