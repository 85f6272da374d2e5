//! Read-only functions, evaluated on a peer's local state. They take `&dyn Stub`, so they
//! cannot write; a refused query is not audited (there is no transaction to carry it).

use medledger_proto::v1::{
    AuditEntry, AuditTrail, AuditTrailArgs, CategoryKey, CheckAccessArgs, CheckAccessResult,
    ClinicalItem, Empty, GetRecordResult, ItemList, PatientArgs, PatientList, PatientRecord,
    Permission, PermissionList, PrivateData, ReasonReadersResult, Right, SealedReasonValue,
    SealedReasonsArgs, SealedReasonsResult, Study, StudyArgs, StudyItem, StudyItemList, StudyList,
};
use prost::Message;

use crate::access::{evaluate, is_live};
use crate::context::{Patient, category_exists, decide, get, load_patient, permissions_of, scan};
use crate::error::{ChaincodeError, Denial};
use crate::keys;
use crate::limits::{self, MAX_AUDIT_PAGE, MAX_LIST};
use crate::stub::{Role, Stub};

/// The owner or an auditor, else a denial.
fn owner_or_auditor(stub: &dyn Stub, patient: &Patient) -> Result<(), ChaincodeError> {
    let creator = stub.creator();
    if patient.is_owner(creator) || creator.role == Role::Auditor {
        return Ok(());
    }
    Err(ChaincodeError::denied(Denial::NotOwner))
}

pub fn get_record(stub: &dyn Stub, args: PatientArgs) -> Result<Vec<u8>, ChaincodeError> {
    let patient = load_patient(stub, &args.pseudonym)?;
    owner_or_auditor(stub, &patient)?;
    let category_keys: Vec<CategoryKey> =
        scan(stub, &keys::category_keys_prefix(&patient.hex), MAX_LIST)?
            .into_iter()
            .map(|(_, k)| k)
            .collect();
    let private_data: Option<PrivateData> = if patient.is_owner(stub.creator()) {
        get(stub, &keys::private_data(&patient.hex))?
    } else {
        None
    };
    Ok(GetRecordResult {
        record: Some(patient.record),
        category_keys,
        private_data,
    }
    .encode_to_vec())
}

/// The keys an emergency access's reason about this record must be sealed to
/// ([`crate::sealed::reason_readers`]), for a clinician about to break the glass, the
/// record's owner or an auditor. Clients take it from f+1 peers that agree: one lying peer
/// answering with its own key would otherwise read the reason (the chaincode then refuses
/// the transaction, but the words have left the clinician's machine).
pub fn reason_readers(stub: &dyn Stub, args: PatientArgs) -> Result<Vec<u8>, ChaincodeError> {
    let patient = load_patient(stub, &args.pseudonym)?;
    let creator = stub.creator();
    if creator.role != Role::Clinician {
        owner_or_auditor(stub, &patient)?;
    }
    Ok(ReasonReadersResult {
        owner_encryption_key: patient.record.owner_encryption_key.clone(),
        auditor_keys: stub.auditor_keys().iter().map(|k| k.to_vec()).collect(),
    }
    .encode_to_vec())
}

pub fn list_permissions(stub: &dyn Stub, args: PatientArgs) -> Result<Vec<u8>, ChaincodeError> {
    let patient = load_patient(stub, &args.pseudonym)?;
    owner_or_auditor(stub, &patient)?;
    // Standing ones first, then those revoked or swept after their end.
    let mut permissions: Vec<Permission> = Vec::new();
    for prefix in [
        keys::permissions_prefix(&patient.hex),
        keys::ended_permissions_prefix(&patient.hex),
    ] {
        let room = MAX_LIST.saturating_sub(permissions.len());
        permissions.extend(scan(stub, &prefix, room)?.into_iter().map(|(_, p)| p));
    }
    Ok(PermissionList { permissions }.encode_to_vec())
}

/// The owner and auditors see every item; a clinician sees the items of the categories they
/// may read now.
pub fn list_items(stub: &dyn Stub, args: PatientArgs) -> Result<Vec<u8>, ChaincodeError> {
    let patient = load_patient(stub, &args.pseudonym)?;
    let creator = stub.creator();
    let items: Vec<ClinicalItem> = scan(stub, &keys::items_prefix(&patient.hex), MAX_LIST)?
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    if patient.is_owner(creator) || creator.role == Role::Auditor {
        return Ok(ItemList { items }.encode_to_vec());
    }
    if creator.role != Role::Clinician {
        return Err(ChaincodeError::denied(Denial::WrongRole {
            needed: Role::Clinician.as_str(),
            actual: creator.role,
        }));
    }
    let permissions = permissions_of(stub, &patient.hex, &creator.name)?;
    let t = stub.time();
    let readable: Vec<ClinicalItem> = items
        .into_iter()
        .filter(|item| evaluate(&permissions, &item.category, Right::Read, None, t).is_ok())
        .collect();
    if readable.is_empty() && !permissions.iter().any(|p| is_live(p, t)) {
        return Err(ChaincodeError::denied(Denial::NoPermission {
            right: Right::Read,
            category: "any category".into(),
        }));
    }
    Ok(ItemList { items: readable }.encode_to_vec())
}

pub fn audit_trail(stub: &dyn Stub, args: AuditTrailArgs) -> Result<Vec<u8>, ChaincodeError> {
    let patient = load_patient(stub, &args.pseudonym)?;
    owner_or_auditor(stub, &patient)?;
    let limit = match args.limit as usize {
        0 => 100,
        n if n <= MAX_AUDIT_PAGE => n,
        _ => {
            return Err(ChaincodeError::invalid(
                "limit",
                format!("at most {MAX_AUDIT_PAGE}"),
            ));
        }
    };
    let after = keys::audit(&patient.hex, args.after_seq);
    let page = stub.scan_prefix(&keys::audit_prefix(&patient.hex), Some(&after), limit)?;
    let entries = page
        .into_iter()
        .map(|(key, bytes)| {
            AuditEntry::decode(bytes.as_slice())
                .map_err(|e| ChaincodeError::Corrupt(format!("{key}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let next_after_seq = if entries.len() == limit {
        entries.last().map(|e| e.seq).unwrap_or(0)
    } else {
        0
    };
    Ok(AuditTrail {
        entries,
        next_after_seq,
    }
    .encode_to_vec())
}

/// Query `sealed_reasons` ([`SealedReasonsArgs`] → [`SealedReasonsResult`]), ledger format 7
/// (docs/adr/0017): the sealed reasons of a record's audit entries `seqs` that this peer
/// holds as private data, each with the salt of its commitment, for the record's owner or
/// an auditor. An entry without a reason and one this peer lacks are left out: the client
/// asks the next peer, and checks each value against the commitment its audit entry holds
/// (f+1 peers agree on the trail). The trail outlives an erasure for accountability, and so
/// do its reasons (docs/adr/0013): an auditor still reads them then.
///
/// # Errors
/// `UnknownPatient`; `PatientErased` for anyone but an auditor once the record is erased
/// (both, as for every query of a record, before the caller is checked); then `Denied`
/// (`NotOwner`) for anyone but the owner or an auditor, before any entry is read;
/// `INVALID_ARGUMENT` for more than [`MAX_AUDIT_PAGE`] sequence numbers.
pub fn sealed_reasons(stub: &dyn Stub, args: SealedReasonsArgs) -> Result<Vec<u8>, ChaincodeError> {
    let patient = crate::context::load_record(stub, &args.pseudonym)?;
    if patient.record.erased && stub.creator().role != Role::Auditor {
        return Err(ChaincodeError::PatientErased);
    }
    owner_or_auditor(stub, &patient)?;
    if args.seqs.len() > MAX_AUDIT_PAGE {
        return Err(ChaincodeError::invalid(
            "seqs",
            format!("at most {MAX_AUDIT_PAGE}"),
        ));
    }
    let mut reasons = Vec::new();
    for &seq in &args.seqs {
        let key = keys::audit(&patient.hex, seq);
        let Some(entry) = get::<AuditEntry>(stub, &key)? else {
            continue;
        };
        if entry.sealed_reason_commitment.is_empty() {
            continue;
        }
        let (value, salt) = crate::private::read(stub, &[], &entry.sealed_reason_commitment)?;
        if !value.is_empty() {
            reasons.push(SealedReasonValue { seq, value, salt });
        }
    }
    Ok(SealedReasonsResult { reasons }.encode_to_vec())
}

/// May `grantee` use `right` on `category` now? Asked by the owner, an auditor or the
/// grantee.
pub fn check_access(stub: &dyn Stub, args: CheckAccessArgs) -> Result<Vec<u8>, ChaincodeError> {
    let patient = load_patient(stub, &args.pseudonym)?;
    limits::name("grantee", &args.grantee)?;
    limits::identifier("category", &args.category)?;
    if !category_exists(stub, &args.category)? {
        return Err(ChaincodeError::not_found("category", &args.category));
    }
    let right = Right::try_from(args.right)
        .ok()
        .filter(|r| *r != Right::Unspecified)
        .ok_or_else(|| ChaincodeError::invalid("right", "read, write or share"))?;
    if stub.creator().name != args.grantee {
        owner_or_auditor(stub, &patient)?;
    }
    let study = (!args.study_id.is_empty()).then_some(args.study_id.as_str());
    let decision = decide(
        stub,
        &patient.hex,
        &args.grantee,
        &args.category,
        right,
        study,
        stub.time(),
    )?;
    let result = match decision {
        Ok(permission) => {
            // The study's key with its researcher's binding: the client checks the signature
            // before it encrypts a copy to it.
            let study = match study {
                Some(id) => get::<medledger_proto::v1::Study>(stub, &keys::study(id))?,
                None => None,
            }
            .unwrap_or_default();
            CheckAccessResult {
                allowed: true,
                permission_id: permission.id.clone(),
                reason: String::new(),
                denied: None,
                category_key: get(stub, &keys::category_key(&patient.hex, &args.category))?,
                owner_key: patient.record.owner_key.clone(),
                study_pseudonym: permission.study_pseudonym.clone(),
                anonymize: permission.anonymize,
                study_key: study.study_key,
                researcher_key: study.researcher_key,
                study_key_signature: study.study_key_signature,
            }
        }
        Err(denial) => CheckAccessResult {
            allowed: false,
            reason: denial.to_string(),
            denied: Some(denial.to_proto()),
            ..CheckAccessResult::default()
        },
    };
    Ok(result.encode_to_vec())
}

/// The records on which the caller holds a live permission now.
pub fn list_patients_for_grantee(stub: &dyn Stub, _args: Empty) -> Result<Vec<u8>, ChaincodeError> {
    let name = stub.creator().name.clone();
    let t = stub.time();
    let prefix = keys::grantee_prefix(&name);
    let mut pseudonyms = Vec::new();
    for (key, _) in stub.scan_prefix(&prefix, None, MAX_LIST)? {
        let hex = &key[prefix.len()..];
        let record: Option<PatientRecord> = get(stub, &keys::patient(hex))?;
        let Some(record) = record.filter(|r| !r.erased) else {
            continue;
        };
        if permissions_of(stub, hex, &name)?
            .iter()
            .any(|p| is_live(p, t))
        {
            pseudonyms.push(record.pseudonym);
        }
    }
    Ok(PatientList { pseudonyms }.encode_to_vec())
}

/// A researcher's own studies; auditors and admins see all.
pub fn list_studies(stub: &dyn Stub, _args: Empty) -> Result<Vec<u8>, ChaincodeError> {
    let creator = stub.creator();
    let studies: Vec<Study> = match creator.role {
        Role::Researcher => {
            let prefix = keys::researcher_prefix(&creator.name);
            let mut studies = Vec::new();
            for (key, _) in stub.scan_prefix(&prefix, None, MAX_LIST)? {
                if let Some(study) = get(stub, &keys::study(&key[prefix.len()..]))? {
                    studies.push(study);
                }
            }
            studies
        }
        Role::Auditor | Role::Admin => scan::<Study>(stub, keys::studies_prefix(), MAX_LIST)?
            .into_iter()
            .map(|(_, s)| s)
            .collect(),
        actual => {
            return Err(ChaincodeError::denied(Denial::WrongRole {
                needed: Role::Researcher.as_str(),
                actual,
            }));
        }
    };
    Ok(StudyList { studies }.encode_to_vec())
}

/// The items shared into a study: its researcher and auditors only.
pub fn study_items(stub: &dyn Stub, args: StudyArgs) -> Result<Vec<u8>, ChaincodeError> {
    limits::identifier("study_id", &args.study_id)?;
    let study: Study = get(stub, &keys::study(&args.study_id))?
        .ok_or_else(|| ChaincodeError::not_found("study", &args.study_id))?;
    let creator = stub.creator();
    if creator.role != Role::Auditor && study.researcher != creator.name {
        return Err(ChaincodeError::denied(Denial::NotStudyOwner(study.id)));
    }
    let mut items: Vec<StudyItem> =
        scan(stub, &keys::study_items_prefix(&args.study_id), MAX_LIST)?
            .into_iter()
            .map(|(_, i)| i)
            .collect();
    // A copy of a record erased but not yet purged is shown as what it is about to be: the
    // record closed at its erasure, and nothing of it (its file key above all) is served.
    for item in items.iter_mut().filter(|i| !i.tombstoned) {
        let pseudonym_hex = keys::pseudonym_hex(&item.study_pseudonym);
        let source =
            crate::transactions::copy_source(stub, &args.study_id, &pseudonym_hex, &item.item_id)?;
        let record: Option<PatientRecord> =
            get(stub, &keys::patient(&keys::pseudonym_hex(&source)))?;
        if record.is_none_or(|r| r.erased) {
            item.tombstoned = true;
            item.wrapped_dek.clear();
            item.wrapped_dek_commitment.clear();
        }
    }
    Ok(StudyItemList { items }.encode_to_vec())
}

/// Every data category: the defaults and those registered by admins. Anyone may ask.
pub fn list_categories(stub: &dyn Stub, _args: Empty) -> Result<Vec<u8>, ChaincodeError> {
    let mut categories: Vec<medledger_proto::v1::Category> = crate::context::DEFAULT_CATEGORIES
        .iter()
        .map(|name| medledger_proto::v1::Category {
            name: name.to_string(),
            description: "registered by default".into(),
            ..Default::default()
        })
        .collect();
    categories.extend(
        scan(stub, "category/", MAX_LIST)?
            .into_iter()
            .map(|(_, c)| c),
    );
    Ok(medledger_proto::v1::CategoryList { categories }.encode_to_vec())
}
