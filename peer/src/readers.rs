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

use medledger_crypto::{EnrolledIdentity, Role, VerifyingKey};
use medledger_execution::config::Configuration;
use medledger_proto::v1;
use prost::Message;

/// Longest record pseudonym a subscription may name (bytes; pseudonyms are 32).
pub const MAX_RECORD_BYTES: usize = 64;

/// The last block `identity` may read, as one of the ledger's readers: every block
/// (`u64::MAX`) for an auditor the configuration in force names
/// ([`Configuration::is_auditor`]: the admins' policy decides who, not the CA alone) and
/// for a peer among the replicas in force; up to the block that removed it for a peer that
/// left (`replica_limit`: `Votes::readable_by_replica`, which knows every epoch).
///
/// # Errors
/// PERMISSION_DENIED, saying what the caller may use instead: any other role, an auditor
/// the configuration does not name, a peer of no configuration of this network.
pub fn readable_up_to(
    identity: &EnrolledIdentity,
    configuration: &Configuration,
    replica_limit: impl FnOnce(&VerifyingKey) -> Option<u64>,
    what: &str,
) -> Result<u64, tonic::Status> {
    let refused = |why: String| {
        tonic::Status::permission_denied(format!(
            "{what} are read by peers and auditors only (the ledger's readers): {why}"
        ))
    };
    match identity.role {
        Role::Auditor if configuration.is_auditor(&identity.name, &identity.signing_key) => {
            Ok(u64::MAX)
        }
        Role::Auditor => Err(refused(
            "this auditor is not one the configuration in force names (the admins name one \
             with `medledger admin config propose --add-auditor`)"
                .into(),
        )),
        Role::Peer => replica_limit(&identity.signing_key)
            .ok_or_else(|| refused("this peer is not one of this network's configurations".into())),
        role => Err(refused(format!(
            "{} {role} sees the ledger through the chaincode's queries, and a record's owner \
             may follow that record's events (Subscribe naming the record)",
            if role == Role::Admin { "an" } else { "a" }
        ))),
    }
}

/// `Ok` unless `identity` is an auditor the configuration in force does not name: the
/// auditor role's powers (every record's queries, reading blocks) are the configuration's to
/// give, so that no single admin or the CA makes an auditor by enrolling one.
///
/// # Errors
/// PERMISSION_DENIED for an auditor the configuration does not name.
pub fn auditor_named(
    identity: &EnrolledIdentity,
    configuration: &Configuration,
) -> Result<(), tonic::Status> {
    if identity.role == Role::Auditor
        && !configuration.is_auditor(&identity.name, &identity.signing_key)
    {
        return Err(tonic::Status::permission_denied(
            "this auditor is not one the configuration in force names (the admins name one \
             with `medledger admin config propose --add-auditor`)",
        ));
    }
    Ok(())
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

    fn configuration() -> Configuration {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/genesis.pb");
        let block = v1::Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
        crate::genesis::Genesis::from_block(block)
            .unwrap()
            .configuration
            .clone()
    }

    fn identity(role: Role, key: u8) -> EnrolledIdentity {
        let signing = medledger_crypto::SigningIdentity::from_seed(&[key; 32]);
        EnrolledIdentity {
            name: format!("{role}-{key}"),
            role,
            attributes: Vec::new(),
            signing_key: signing.verifying_key(),
            encryption_key: medledger_crypto::EncryptionPublicKey([0; 32]),
            serial: vec![key],
            not_before: 0,
            not_after: i64::MAX,
            cert_hash: [key; 32],
        }
    }

    /// Red team of issue 20 item 1: the CA (or one admin registering an identity) makes no
    /// reader; only the configuration, which the admins' policy changes, does.
    #[test]
    fn only_the_auditors_the_configuration_names_read_blocks() {
        let mut configuration = configuration();
        let named = identity(Role::Auditor, 1);
        let enrolled_only = identity(Role::Auditor, 2);
        configuration.auditors = vec![medledger_execution::config::NamedAuditor {
            name: named.name.clone(),
            key: named.signing_key,
            encryption_key: named.encryption_key.to_bytes(),
            serial: named.serial.clone(),
        }];
        let never_a_replica = |_: &VerifyingKey| None;
        assert_eq!(
            readable_up_to(&named, &configuration, never_a_replica, "blocks").unwrap(),
            u64::MAX
        );
        assert!(auditor_named(&named, &configuration).is_ok());
        // The named key under another name (a certificate issued for a stolen key after
        // the named one was revoked) is not the auditor.
        let mut renamed = identity(Role::Auditor, 1);
        renamed.name = "thief".into();
        for refused in [
            readable_up_to(&renamed, &configuration, never_a_replica, "blocks"),
            readable_up_to(&enrolled_only, &configuration, never_a_replica, "blocks"),
            auditor_named(&enrolled_only, &configuration).map(|()| 0),
        ] {
            let status = refused.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            assert!(status.message().contains("--add-auditor"), "{status:?}");
        }
        // No other role reads blocks, whatever its key; auditor_named concerns auditors.
        for role in [
            Role::Admin,
            Role::Patient,
            Role::Clinician,
            Role::Researcher,
            Role::Gateway,
        ] {
            let mut who = identity(role, 1);
            who.signing_key = named.signing_key;
            let status =
                readable_up_to(&who, &configuration, |_| Some(u64::MAX), "blocks").unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{role}");
            assert!(auditor_named(&who, &configuration).is_ok());
        }
    }

    #[test]
    fn a_peer_reads_as_far_as_it_was_one_of_the_replicas() {
        let configuration = configuration();
        let peer = identity(Role::Peer, 3);
        let read = |limit: Option<u64>| {
            readable_up_to(&peer, &configuration, |_| limit, "blocks").map_err(|s| s.code())
        };
        assert_eq!(read(Some(u64::MAX)), Ok(u64::MAX));
        assert_eq!(read(Some(41)), Ok(41));
        assert_eq!(read(None), Err(tonic::Code::PermissionDenied));
    }

    fn event(name: &str, pseudonym: &[u8]) -> v1::ChaincodeEvent {
        v1::ChaincodeEvent {
            name: name.into(),
            payload: v1::EmergencyAccessEvent {
                pseudonym: pseudonym.to_vec(),
                clinician: "dr-a".into(),
                category: "imaging".into(),
                until: 5,
                ..Default::default()
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
