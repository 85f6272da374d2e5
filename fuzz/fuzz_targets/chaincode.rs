//! Fuzz target: every chaincode function, with arbitrary arguments, from arbitrary callers
//! at arbitrary times, against an in-memory ledger holding two registered patients, a study
//! and some grants. Any panic is a bug: a transaction must fail with a typed error, never
//! take a peer down (issue 14). Each input is a sequence of calls; for the functions whose
//! arguments carry numbers (windows, durations, years) the fields come straight from the
//! input bytes, so the fuzzer reaches the arithmetic; any function may also get raw bytes
//! as its protobuf arguments.

use arbitrary::{Arbitrary, Unstructured};
use medledger_chaincode::private::PrivateKeys;
use medledger_chaincode::{
    Creator, CreatorAttribute, MemoryLedger, QUERIES, Role, TRANSACTIONS, invoke, query,
};
use medledger_proto::v1;
use prost::Message;

const T0: i64 = 1_800_000_000;

fn caller(u: &mut Unstructured<'_>) -> arbitrary::Result<Creator> {
    let (name, role) = match u.int_in_range(0..=7u8)? {
        0 => ("patient-1", Role::Patient),
        1 => ("patient-2", Role::Patient),
        2 => ("dr.a", Role::Clinician),
        3 => ("res-1", Role::Researcher),
        4 => ("admin", Role::Admin),
        5 => ("auditor", Role::Auditor),
        6 => ("gateway", Role::Gateway),
        _ => ("dr.e", Role::Clinician),
    };
    let attributes = if name == "dr.e" {
        vec![CreatorAttribute {
            key: "emergency".into(),
            value: "true".into(),
            not_before: Option::<i64>::arbitrary(u)?,
            not_after: Option::<i64>::arbitrary(u)?,
        }]
    } else {
        Vec::new()
    };
    Ok(Creator {
        name: name.into(),
        role,
        attributes,
        cert_hash: [1; 32],
        encryption_key: [2; 32],
        signing_key: [3; 32],
    })
}

fn pseudonym(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 | 1 => vec![1; 32],
        2 => vec![2; 32],
        _ => Vec::<u8>::arbitrary(u)?,
    })
}

/// The keys a reason may be sealed to: the two records' owner keys and the one auditor's
/// ([`setup`]), or anything.
fn reader_key(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => OWNER_KEYS[0].to_vec(),
        1 => OWNER_KEYS[1].to_vec(),
        2 | 3 => AUDITOR_KEY.to_vec(),
        _ => Vec::<u8>::arbitrary(u)?,
    })
}

/// A sealed reason: mostly well formed (the chaincode cannot open it, only check its shape
/// and readers), sometimes anything.
fn sealed(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<v1::SealedText>> {
    if u.ratio(1, 8)? {
        return Ok(None);
    }
    let len = u.int_in_range(0..=600usize)?;
    let mut readers = Vec::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        readers.push(v1::SealedTextReader {
            public_key: reader_key(u)?,
            wrapped_key: if u.ratio(7, 8)? {
                vec![7; 80]
            } else {
                Vec::<u8>::arbitrary(u)?
            },
        });
    }
    Ok(Some(v1::SealedText {
        ciphertext: vec![9; len],
        readers,
        key_commitment: if u.ratio(7, 8)? {
            vec![5; 32]
        } else {
            Vec::<u8>::arbitrary(u)?
        },
    }))
}

fn text(u: &mut Unstructured<'_>, choices: &[&str]) -> arbitrary::Result<String> {
    if u.ratio(1, 4)? {
        String::arbitrary(u)
    } else {
        Ok(u.choose(choices)?.to_string())
    }
}

/// Arguments for `function`: structured where the function takes numbers, else raw bytes.
/// A commitment field: one of the transaction's `commitments` (a value it carries), empty,
/// or anything.
fn commitment(u: &mut Unstructured<'_>, commitments: &[[u8; 32]]) -> arbitrary::Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 | 1 if !commitments.is_empty() => u.choose(commitments)?.to_vec(),
        2 => Vec::new(),
        _ => Vec::<u8>::arbitrary(u)?,
    })
}

fn arguments(
    u: &mut Unstructured<'_>,
    function: &str,
    commitments: &[[u8; 32]],
) -> arbitrary::Result<Vec<u8>> {
    if u.ratio(1, 4)? {
        return Vec::<u8>::arbitrary(u);
    }
    let categories = ["lab-results", "radiation-doses", "history-and-physical"];
    Ok(match function {
        "grant" => {
            let record = pseudonym(u)?;
            let study_id = text(u, &["", "study-1"])?;
            // Half the time a real proof of a study pseudonym (docs/adr/0014), from one of a
            // few pseudonym keys, so that grants into a study, shares and the erasure of
            // study copies are reached; else any bytes.
            let (study_pseudonym, study_owner_key, study_owner_signature) = if u.ratio(1, 2)? {
                let key = medledger_crypto::PatientKey::from_bytes([u.int_in_range(1..=3u8)?; 32]);
                let owner = medledger_crypto::derive_study_identity(&key, &study_id);
                let signed = owner.sign(
                    medledger_crypto::SignatureDomain::StudyGrant,
                    &medledger_crypto::study_grant_statement(&study_id, &record),
                );
                (
                    medledger_crypto::derive_study_pseudonym(&key, &study_id)
                        .0
                        .to_vec(),
                    owner.verifying_key().to_bytes().to_vec(),
                    signed.to_bytes().to_vec(),
                )
            } else {
                (
                    Vec::<u8>::arbitrary(u)?,
                    Vec::<u8>::arbitrary(u)?,
                    Vec::<u8>::arbitrary(u)?,
                )
            };
            v1::GrantArgs {
                pseudonym: record,
                grantee: text(u, &["dr.a", "dr.e", "res-1"])?,
                category: text(u, &categories)?,
                rights: Vec::<i32>::arbitrary(u)?,
                from: i64::arbitrary(u)?,
                until: i64::arbitrary(u)?,
                study_id,
                anonymize: bool::arbitrary(u)?,
                study_pseudonym,
                key_envelope: Vec::<u8>::arbitrary(u)?,
                from_commit: bool::arbitrary(u)?,
                duration_seconds: i64::arbitrary(u)?,
                study_owner_key,
                study_owner_signature,
                key_envelope_commitment: commitment(u, commitments)?,
            }
            .encode_to_vec()
        }
        "emergency_access" => v1::EmergencyAccessArgs {
            pseudonym: pseudonym(u)?,
            category: text(u, &categories)?,
            reason: if u.ratio(1, 8)? {
                String::arbitrary(u)?
            } else {
                String::new()
            },
            duration_seconds: i64::arbitrary(u)?,
            sealed_reason: sealed(u)?,
            // Format 7: the reason's commitment and the readers it names.
            sealed_reason_commitment: commitment(u, commitments)?,
            sealed_reason_readers: (0..u.int_in_range(0..=4u8)?)
                .map(|_| reader_key(u))
                .collect::<arbitrary::Result<_>>()?,
        }
        .encode_to_vec(),
        "sealed_reasons" => v1::SealedReasonsArgs {
            pseudonym: pseudonym(u)?,
            seqs: (0..u.int_in_range(0..=4u8)?)
                .map(|_| u.int_in_range(0..=8u64))
                .collect::<arbitrary::Result<_>>()?,
        }
        .encode_to_vec(),
        "share_for_study" => v1::ShareForStudyArgs {
            pseudonym: pseudonym(u)?,
            source_item_id: text(u, &["item-1"])?,
            study_id: text(u, &["study-1"])?,
            item_id: text(u, &["copy-1"])?,
            // Half the time the path of a copy under a study pseudonym a grant above proves.
            path: if u.ratio(1, 2)? {
                let key = medledger_crypto::PatientKey::from_bytes([u.int_in_range(1..=3u8)?; 32]);
                let study = medledger_crypto::derive_study_pseudonym(&key, "study-1");
                format!("studies/study-1/{study}/copy-1")
            } else {
                String::arbitrary(u)?
            },
            sha256: vec![3; 32],
            size: u64::arbitrary(u)?,
            wrapped_dek: if u.ratio(1, 2)? {
                vec![4; 80]
            } else {
                Vec::new()
            },
            anonymized: bool::arbitrary(u)?,
            deid_profile: text(u, &["safe-harbor-allowlist"])?,
            deid_profile_version: u32::arbitrary(u)?,
            deid_year: i32::arbitrary(u)?,
            wrapped_dek_commitment: commitment(u, commitments)?,
        }
        .encode_to_vec(),
        "add_item" => v1::AddItemArgs {
            pseudonym: pseudonym(u)?,
            item_id: text(u, &["item-1", "item-2"])?,
            category: text(u, &categories)?,
            path: String::arbitrary(u)?,
            sha256: vec![3; 32],
            size: u64::arbitrary(u)?,
            wrapped_dek: if u.ratio(1, 2)? {
                vec![4; 80]
            } else {
                Vec::new()
            },
            key_epoch: u32::arbitrary(u)?,
            wrapped_dek_commitment: commitment(u, commitments)?,
        }
        .encode_to_vec(),
        "rotate_category_key" => v1::RotateCategoryKeyArgs {
            pseudonym: pseudonym(u)?,
            category: text(u, &categories)?,
            public_key: Vec::<u8>::arbitrary(u)?,
            envelopes: (0..u.int_in_range(0..=3u8)?)
                .map(|_| {
                    Ok(v1::EnvelopeUpdate {
                        permission_id: text(u, &["perm-1", "perm-2"])?,
                        key_envelope: Vec::<u8>::arbitrary(u)?,
                        key_envelope_commitment: commitment(u, commitments)?,
                    })
                })
                .collect::<arbitrary::Result<_>>()?,
            owner_signature: Vec::<u8>::arbitrary(u)?,
            epoch: u32::arbitrary(u)?,
            previous_key_envelope: Vec::<u8>::arbitrary(u)?,
            previous_key_envelope_commitment: commitment(u, commitments)?,
        }
        .encode_to_vec(),
        "record_access" => v1::RecordAccessArgs {
            pseudonym: pseudonym(u)?,
            item_id: text(u, &["item-1", "item-2"])?,
        }
        .encode_to_vec(),
        "record_study_access" | "study_access_keys" | "report_study_incident" => {
            // A copy under a study pseudonym a grant above may prove, or anything.
            let study_pseudonym = if u.ratio(3, 4)? {
                let key = medledger_crypto::PatientKey::from_bytes([u.int_in_range(1..=3u8)?; 32]);
                medledger_crypto::derive_study_pseudonym(&key, "study-1")
                    .0
                    .to_vec()
            } else {
                Vec::<u8>::arbitrary(u)?
            };
            let (study_id, item_id) = (text(u, &["study-1"])?, text(u, &["copy-1"])?);
            if function == "report_study_incident" {
                v1::ReportStudyIncidentArgs {
                    study_id,
                    study_pseudonym,
                    item_id,
                    incident: i32::arbitrary(u)?,
                }
                .encode_to_vec()
            } else {
                v1::RecordStudyAccessArgs {
                    study_id,
                    study_pseudonym,
                    item_id,
                }
                .encode_to_vec()
            }
        }
        "access_keys" => v1::AccessKeysArgs {
            pseudonym: pseudonym(u)?,
            item_id: text(u, &["item-1", "item-2"])?,
        }
        .encode_to_vec(),
        "audit_trail" => v1::AuditTrailArgs {
            pseudonym: pseudonym(u)?,
            after_seq: u64::arbitrary(u)?,
            limit: u32::arbitrary(u)?,
        }
        .encode_to_vec(),
        "erase_patient" | "purge_erased" | "get_record" | "list_items" | "list_permissions" => {
            v1::PatientArgs {
                pseudonym: pseudonym(u)?,
            }
            .encode_to_vec()
        }
        "pending_object_deletions" | "pending_purges" => v1::PendingDeletionsArgs {
            after: object_path(u)?,
            limit: u32::arbitrary(u)?,
        }
        .encode_to_vec(),
        "confirm_object_deletions" => v1::ConfirmDeletionsArgs {
            paths: (0..u.int_in_range(0..=4u8)?)
                .map(|_| object_path(u))
                .collect::<arbitrary::Result<_>>()?,
        }
        .encode_to_vec(),
        _ => Vec::<u8>::arbitrary(u)?,
    })
}

/// An object path as the chaincode writes them (of either patient's items, or of a study
/// copy), or anything.
fn object_path(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => String::new(),
        1 => format!(
            "patients/{}/lab-results/{}",
            format!("{:02x}", u.int_in_range(1..=2u8)?).repeat(32),
            text(u, &["item-1", "item-2"])?
        ),
        2 => format!(
            "studies/study-1/{}/s-1",
            format!("{:02x}", u8::arbitrary(u)?).repeat(32)
        ),
        _ => String::arbitrary(u)?,
    })
}

const OWNER_KEYS: [[u8; 32]; 2] = [[0x41; 32], [0x42; 32]];
const AUDITOR_KEY: [u8; 32] = [0x50; 32];

/// Two registered patients and study `study-1` of researcher `res-1`, on a ledger that keeps
/// `private` key material as private data (none below format 5, record keys on format 5,
/// study keys too from format 6).
fn setup(private: PrivateKeys) -> MemoryLedger {
    let mut ledger = MemoryLedger::new();
    ledger.set_auditor_keys(vec![AUDITOR_KEY]);
    ledger.keep_private_data_as(private);
    for n in 1..=2u8 {
        let who = Creator {
            name: format!("patient-{n}"),
            role: Role::Patient,
            attributes: Vec::new(),
            cert_hash: [1; 32],
            encryption_key: [2; 32],
            signing_key: [3; 32],
        };
        let args = v1::RegisterPatientArgs {
            pseudonym: vec![n; 32],
            owner_encryption_key: OWNER_KEYS[usize::from(n - 1)].to_vec(),
            category_keys: medledger_chaincode::DEFAULT_CATEGORIES
                .iter()
                .map(|c| v1::CategoryKey {
                    category: c.to_string(),
                    epoch: 0,
                    public_key: vec![n; 32],
                    since: 0,
                    owner_signature: vec![n; 64],
                })
                .collect(),
        };
        let mut stub = ledger.transaction(who, T0);
        invoke(&mut stub, "register_patient", &args.encode_to_vec()).expect("registers");
        stub.commit();
    }
    let researcher = Creator {
        name: "res-1".into(),
        role: Role::Researcher,
        attributes: Vec::new(),
        cert_hash: [1; 32],
        encryption_key: [2; 32],
        signing_key: [3; 32],
    };
    let study = v1::RegisterStudyArgs {
        id: "study-1".into(),
        title: "Dose response".into(),
        protocol_hash: vec![9; 32],
        study_key: vec![8; 32],
        study_key_signature: vec![8; 64],
    };
    let mut stub = ledger.transaction(researcher, T0);
    invoke(&mut stub, "register_study", &study.encode_to_vec()).expect("registers a study");
    stub.commit();
    ledger
}

fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(private) = u.choose(&[
        PrivateKeys::None,
        PrivateKeys::RecordKeys,
        PrivateKeys::StudyKeys,
        PrivateKeys::FreeText,
    ]) else {
        return;
    };
    let private = *private;
    let mut ledger = setup(private);
    let mut time = T0;
    for _ in 0..32 {
        if u.is_empty() {
            return;
        }
        let Ok(who) = caller(&mut u) else { return };
        let Ok(step) = u.int_in_range(0..=86_400u32) else {
            return;
        };
        time = time.saturating_add(i64::from(step));
        let all: Vec<&str> = TRANSACTIONS.iter().chain(QUERIES.iter()).copied().collect();
        let Ok(function) = u.choose(&all).copied() else {
            return;
        };
        if TRANSACTIONS.contains(&function) {
            // On a private ledger, up to three private values beside the transaction.
            let values: Vec<Vec<u8>> = if private != PrivateKeys::None {
                let Ok(n) = u.int_in_range(0..=3u8) else {
                    return;
                };
                // Half of them a sealed text, as a reason's private value is.
                (0..n)
                    .map(|_| match u.ratio(1u8, 2u8) {
                        Ok(true) => sealed(&mut u)
                            .ok()
                            .flatten()
                            .map(|s| s.encode_to_vec())
                            .unwrap_or_default(),
                        _ => Vec::<u8>::arbitrary(&mut u).unwrap_or_default(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let (mut stub, commitments) = ledger.private_transaction(who, time, &values);
            let Ok(args) = arguments(&mut u, function, &commitments) else {
                return;
            };
            // What an acknowledging peer checks of the values first (never panics).
            let shapes: Vec<([u8; 32], &[u8])> = commitments
                .iter()
                .copied()
                .zip(values.iter().map(Vec::as_slice))
                .collect();
            let _ = medledger_chaincode::check_private_values(function, &args, &shapes);
            let _ = invoke(&mut stub, function, &args);
            // Committed whatever the outcome, as a peer does.
            stub.commit();
        } else {
            let Ok(args) = arguments(&mut u, function, &[]) else {
                return;
            };
            let stub = ledger.query_stub(who, time);
            let _ = query(&stub, function, &args);
        }
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| run(data));
}
