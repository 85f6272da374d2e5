//! The functions that change the ledger. Each one validates its arguments, then authorizes
//! the caller at consensus time, then writes: a malformed call changes nothing, and a denied
//! one leaves only its audit entry (written by the dispatcher after rollback).

use medledger_proto::v1::{
    AccessKeysArgs, AccessKeysResult, AddItemArgs, AuditAction, Category, CategoryKey,
    ClinicalItem, EmergencyAccessArgs, EmergencyAccessEvent, GrantArgs, GrantResult, IdResult,
    Outcome, PatientRecord, Permission, PrivateData, RecordAccessArgs, RecordAccessResult,
    RecordStudyAccessArgs, RecordStudyAccessResult, RegisterCategoryArgs, RegisterPatientArgs,
    RegisterStudyArgs, ReportStudyIncidentArgs, RevokeArgs, RevokeResult, Right,
    RotateCategoryKeyArgs, SetPrivateDataArgs, ShareForStudyArgs, Study, StudyIncident, StudyItem,
};
use prost::Message;

use crate::access::has_right;
use crate::context::{Patient, allowed, category_exists, decide, get, load_patient, put, scan};
use crate::error::{AuditContext, ChaincodeError, Denial};
use crate::keys;
use crate::limits::{self, *};
use crate::sealed;
use crate::stub::{Role, Stub};

fn require_role(stub: &dyn Stub, role: Role) -> Result<(), ChaincodeError> {
    let actual = stub.creator().role;
    if actual != role {
        return Err(ChaincodeError::denied(Denial::WrongRole {
            needed: role.as_str(),
            actual,
        }));
    }
    Ok(())
}

fn require_category(stub: &dyn Stub, category: &str) -> Result<(), ChaincodeError> {
    limits::identifier("category", category)?;
    if !category_exists(stub, category)? {
        return Err(ChaincodeError::not_found("category", category));
    }
    Ok(())
}

fn category_key(
    stub: &dyn Stub,
    patient: &Patient,
    category: &str,
) -> Result<CategoryKey, ChaincodeError> {
    get(stub, &keys::category_key(&patient.hex, category))?.ok_or_else(|| {
        ChaincodeError::invalid(
            "category",
            format!("the patient has no key for {category}; register one first"),
        )
    })
}

/// Parses a list of rights: non-empty, no duplicates, no unspecified.
fn parse_rights(rights: &[i32]) -> Result<Vec<Right>, ChaincodeError> {
    if rights.is_empty() {
        return Err(ChaincodeError::invalid(
            "rights",
            "give at least one of read, write, share",
        ));
    }
    let mut parsed = Vec::new();
    for &r in rights {
        let right = Right::try_from(r)
            .ok()
            .filter(|r| *r != Right::Unspecified)
            .ok_or_else(|| ChaincodeError::invalid("rights", format!("unknown right {r}")))?;
        if parsed.contains(&right) {
            return Err(ChaincodeError::invalid("rights", "a right appears twice"));
        }
        parsed.push(right);
    }
    Ok(parsed)
}

/// Moves a permission out of the live index (at `live_key`) to the ended one: every access
/// and every cap stops counting it; the patient and auditors still list it, and its grant
/// and revocation stay on the audit trail.
fn end_permission(
    stub: &mut dyn Stub,
    patient_hex: &str,
    live_key: &str,
    permission: &Permission,
) -> Result<(), ChaincodeError> {
    stub.delete(live_key)?;
    put(
        stub,
        &keys::ended_permission(patient_hex, &permission.grantee, &permission.id),
        permission,
    )
}

/// Saves a new permission with its indexes. First the grantee's standing permissions that
/// have ended (revoked, or `until` ≤ consensus time) leave the live index, so the caps count
/// only permissions live now or still to start (issue 19 item 6): no number of ended grants
/// or emergency accesses can lock a grantee out. The patient's grants and emergency
/// accesses are counted apart ([`MAX_PERMISSIONS_PER_GRANTEE`],
/// [`MAX_EMERGENCY_PERMISSIONS_PER_GRANTEE`]), so grants cannot shut a clinician out of
/// break-glass. Each permission is swept once, so the work is bounded by the live index and
/// paid for by the grants that made it. Errors: the grantee already holds the cap of its
/// kind live or to come.
fn store_permission(
    stub: &mut dyn Stub,
    patient: &mut Patient,
    mut permission: Permission,
) -> Result<String, ChaincodeError> {
    let t = stub.time();
    let mut standing = 0usize;
    for (key, held) in scan::<Permission>(
        stub,
        &keys::permissions_of(&patient.hex, &permission.grantee),
        MAX_STANDING_PERMISSIONS,
    )? {
        if held.revoked || held.until <= t {
            end_permission(stub, &patient.hex, &key, &held)?;
        } else if held.emergency == permission.emergency {
            standing = standing.saturating_add(1);
        }
    }
    let cap = if permission.emergency {
        MAX_EMERGENCY_PERMISSIONS_PER_GRANTEE
    } else {
        MAX_PERMISSIONS_PER_GRANTEE
    };
    if standing >= cap {
        return Err(ChaincodeError::invalid(
            "grantee",
            format!(
                "already holds {cap} {} on this record that are live or still to start; \
                 {}",
                if permission.emergency {
                    "emergency accesses"
                } else {
                    "permissions"
                },
                if permission.emergency {
                    "the next opens when one ends"
                } else {
                    "revoke some first"
                }
            ),
        ));
    }
    patient.record.next_permission_seq =
        limits::add_u64("permission sequence", patient.record.next_permission_seq, 1)?;
    permission.id = format!("perm-{}", patient.record.next_permission_seq);
    let id = permission.id.clone();
    put(
        stub,
        &keys::permission(&patient.hex, &permission.grantee, &id),
        &permission,
    )?;
    stub.put(
        &keys::permission_id(&patient.hex, &id),
        permission.grantee.clone().into_bytes(),
    )?;
    stub.put(
        &keys::grantee_index(&permission.grantee, &patient.hex),
        Vec::new(),
    )?;
    Ok(id)
}

/// Permission `id` of the record, with the key it is stored under: the live index, or the
/// ended one once revoked or swept.
fn find_permission(
    stub: &dyn Stub,
    patient: &Patient,
    id: &str,
) -> Result<(String, Permission), ChaincodeError> {
    limits::identifier("permission_id", id)?;
    let grantee = stub
        .get(&keys::permission_id(&patient.hex, id))?
        .ok_or_else(|| ChaincodeError::not_found("permission", id))?;
    let grantee = String::from_utf8(grantee).map_err(|e| ChaincodeError::Corrupt(e.to_string()))?;
    for key in [
        keys::permission(&patient.hex, &grantee, id),
        keys::ended_permission(&patient.hex, &grantee, id),
    ] {
        if let Some(permission) = get(stub, &key)? {
            return Ok((key, permission));
        }
    }
    Err(ChaincodeError::Corrupt(format!(
        "permission {id} is indexed but missing"
    )))
}

pub fn register_patient(
    stub: &mut dyn Stub,
    args: RegisterPatientArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    limits::exact_len("pseudonym", &args.pseudonym, PSEUDONYM_LEN)?;
    sealed::encryption_key("owner_encryption_key", &args.owner_encryption_key)?;
    if args.category_keys.len() > MAX_CATEGORY_KEYS {
        return Err(ChaincodeError::invalid(
            "category_keys",
            format!("at most {MAX_CATEGORY_KEYS}"),
        ));
    }
    for (i, key) in args.category_keys.iter().enumerate() {
        require_category(stub, &key.category)?;
        limits::exact_len("category_keys.public_key", &key.public_key, KEY_LEN)?;
        // Verified by the clients that encrypt to the key, against the owner key recorded
        // below (issue 17 item 4); the ledger keeps it with the key.
        limits::exact_len(
            "category_keys.owner_signature",
            &key.owner_signature,
            SIGNATURE_LEN,
        )?;
        if args
            .category_keys
            .iter()
            .take(i)
            .any(|k| k.category == key.category)
        {
            return Err(ChaincodeError::invalid(
                "category_keys",
                format!("{} appears twice", key.category),
            ));
        }
    }
    require_role(stub, Role::Patient)?;
    let hex = keys::pseudonym_hex(&args.pseudonym);
    if stub.get(&keys::patient(&hex))?.is_some() {
        return Err(ChaincodeError::AlreadyExists {
            what: "patient",
            id: hex,
        });
    }
    let owner = stub.creator().name.clone();
    if stub.get(&keys::patient_owner(&owner))?.is_some() {
        return Err(ChaincodeError::AlreadyExists {
            what: "patient record of",
            id: owner,
        });
    }
    let t = stub.time();
    let mut patient = Patient {
        hex,
        record: PatientRecord {
            pseudonym: args.pseudonym.clone(),
            owner: owner.clone(),
            registered_at: t,
            owner_key: stub.creator().signing_key.to_vec(),
            owner_encryption_key: args.owner_encryption_key.clone(),
            ..PatientRecord::default()
        },
    };
    for key in &args.category_keys {
        let stored = CategoryKey {
            category: key.category.clone(),
            epoch: 1,
            public_key: key.public_key.clone(),
            since: t,
            owner_signature: key.owner_signature.clone(),
        };
        put(
            stub,
            &keys::category_key(&patient.hex, &key.category),
            &stored,
        )?;
    }
    stub.put(&keys::patient_owner(&owner), args.pseudonym.clone())?;
    patient.audit(stub, allowed(AuditAction::Register, "", ""))?;
    patient.save(stub)?;
    Ok(Vec::new())
}

pub fn grant(stub: &mut dyn Stub, args: GrantArgs) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    let t = stub.time();
    limits::name("grantee", &args.grantee)?;
    require_category(stub, &args.category)?;
    let key = category_key(stub, &patient, &args.category)?;
    let rights = parse_rights(&args.rights)?;
    let (from, until) = limits::resolve_window(
        args.from,
        args.until,
        args.from_commit,
        args.duration_seconds,
        t,
    )?;
    let shares = rights.contains(&Right::Share);
    if shares {
        limits::identifier("study_id", &args.study_id)?;
        if stub.get(&keys::study(&args.study_id))?.is_none() {
            return Err(ChaincodeError::not_found("study", &args.study_id));
        }
    } else if !args.study_id.is_empty()
        || args.anonymize
        || !args.study_pseudonym.is_empty()
        || !args.study_owner_key.is_empty()
        || !args.study_owner_signature.is_empty()
    {
        return Err(ChaincodeError::invalid(
            "study_id",
            "a study, anonymization and a study pseudonym go with the right share",
        ));
    }
    let needs_key = rights.contains(&Right::Read) || shares;
    let envelope = crate::private::take(
        stub,
        "key_envelope",
        args.key_envelope,
        &args.key_envelope_commitment,
        MAX_ENVELOPE_LEN,
    )?;
    if needs_key && envelope.is_absent() {
        return Err(ChaincodeError::invalid(
            "key_envelope",
            "read and share need the category key wrapped to the grantee",
        ));
    }
    let (key_envelope, key_envelope_commitment) = envelope.into_fields();
    patient.require_owner(stub.creator(), AuditAction::Grant, &args.category)?;
    // After the owner check, so that anyone else's attempt is refused as theirs and audited
    // on the owner's trail.
    if shares {
        crate::study::check_owner(
            &args.study_id,
            &args.pseudonym,
            &args.study_pseudonym,
            &args.study_owner_key,
            &args.study_owner_signature,
        )?;
    }

    let permission = Permission {
        id: String::new(),
        grantee: args.grantee.clone(),
        category: args.category.clone(),
        rights: rights.iter().map(|r| *r as i32).collect(),
        from,
        until,
        study_id: args.study_id.clone(),
        anonymize: args.anonymize,
        study_pseudonym: args.study_pseudonym,
        study_owner_key: args.study_owner_key,
        granted_at: t,
        key_envelope,
        key_envelope_commitment,
        key_epoch: key.epoch,
        ..Permission::default()
    };
    let id = store_permission(stub, &mut patient, permission)?;
    let mut entry = allowed(AuditAction::Grant, &args.category, "");
    entry.permission_id = id.clone();
    entry.study_id = args.study_id;
    patient.audit(stub, entry)?;
    patient.save(stub)?;
    Ok(GrantResult { id, from, until }.encode_to_vec())
}

pub fn revoke(stub: &mut dyn Stub, args: RevokeArgs) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    let (key, mut permission) = find_permission(stub, &patient, &args.permission_id)?;
    patient.require_owner(stub.creator(), AuditAction::Revoke, &permission.category)?;
    if permission.revoked {
        return Err(ChaincodeError::AlreadyRevoked(permission.id));
    }
    permission.revoked = true;
    permission.revoked_at = stub.time();
    // No query gives a revoked grantee the envelope again: it leaves every peer now, not at
    // the record's erasure (format 5; the commitment stays, and an erasure's purge of it
    // again is a no-op).
    crate::private::purge(stub, &permission.key_envelope_commitment)?;
    // Out of the live index at once (a no-op rewrite for one already swept there).
    end_permission(stub, &patient.hex, &key, &permission)?;
    // The grantee's last standing permission gone: the record leaves their list.
    if stub
        .scan_prefix(
            &keys::permissions_of(&patient.hex, &permission.grantee),
            None,
            1,
        )?
        .is_empty()
    {
        stub.delete(&keys::grantee_index(&permission.grantee, &patient.hex))?;
    }
    let mut entry = allowed(AuditAction::Revoke, &permission.category, "");
    entry.permission_id = permission.id;
    patient.audit(stub, entry)?;
    patient.save(stub)?;
    Ok(RevokeResult {
        category: permission.category,
        rights: permission.rights,
        key_epoch: permission.key_epoch,
    }
    .encode_to_vec())
}

/// The owner (`None`; never for a study), or a clinician holding a permission live now that
/// gives `right` on `category` (and for share, into `study`): that permission. A refusal is a
/// denial audited at `context`.
fn authorize(
    stub: &dyn Stub,
    patient: &Patient,
    right: Right,
    category: &str,
    study: Option<&str>,
    context: AuditContext,
) -> Result<Option<Permission>, ChaincodeError> {
    let creator = stub.creator();
    if patient.is_owner(creator) && study.is_none() {
        return Ok(None);
    }
    if creator.role != Role::Clinician {
        let reason = Denial::WrongRole {
            needed: Role::Clinician.as_str(),
            actual: creator.role,
        };
        return Err(ChaincodeError::denied(reason).audited_at(context));
    }
    match decide(
        stub,
        &patient.hex,
        &creator.name,
        category,
        right,
        study,
        stub.time(),
    )? {
        Ok(permission) => Ok(Some(permission)),
        Err(reason) => Err(ChaincodeError::denied(reason).audited_at(context)),
    }
}

pub fn add_item(stub: &mut dyn Stub, args: AddItemArgs) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    limits::identifier("item_id", &args.item_id)?;
    require_category(stub, &args.category)?;
    let key = category_key(stub, &patient, &args.category)?;
    if args.path != keys::item_path(&patient.hex, &args.category, &args.item_id) {
        return Err(ChaincodeError::invalid(
            "path",
            "must be patients/<pseudonym>/<category>/<item_id>",
        ));
    }
    // What state keeps of the wrapped file key: the key below format 5, its commitment
    // from 4 on (the key beside the transaction, docs/adr/0017).
    let (wrapped_dek, wrapped_dek_commitment) = crate::private::take(
        stub,
        "wrapped_dek",
        args.wrapped_dek,
        &args.wrapped_dek_commitment,
        MAX_ENVELOPE_LEN,
    )?
    .into_fields();
    let stored_key = if wrapped_dek.is_empty() {
        &wrapped_dek_commitment
    } else {
        &wrapped_dek
    };
    limits::stored_object(&args.sha256, args.size, stored_key, "category")?;
    if args.key_epoch != key.epoch {
        return Err(ChaincodeError::invalid(
            "key_epoch",
            format!(
                "the category key is at epoch {}; wrap the file key to the current key",
                key.epoch
            ),
        ));
    }
    if stub
        .get(&keys::item(&patient.hex, &args.item_id))?
        .is_some()
    {
        return Err(ChaincodeError::AlreadyExists {
            what: "item",
            id: args.item_id,
        });
    }
    let used = authorize(
        stub,
        &patient,
        Right::Write,
        &args.category,
        None,
        patient.context(AuditAction::AddItem, &args.category, &args.item_id),
    )?
    .map(|p| p.id);
    let item = ClinicalItem {
        id: args.item_id.clone(),
        category: args.category.clone(),
        uploader: stub.creator().name.clone(),
        path: args.path,
        sha256: args.sha256,
        size: args.size,
        created_at: stub.time(),
        wrapped_dek,
        key_epoch: args.key_epoch,
        tombstoned: false,
        wrapped_dek_commitment,
    };
    put(stub, &keys::item(&patient.hex, &args.item_id), &item)?;
    let mut entry = allowed(AuditAction::AddItem, &args.category, &args.item_id);
    entry.permission_id = used.unwrap_or_default();
    patient.audit(stub, entry)?;
    patient.save(stub)?;
    Ok(Vec::new())
}

pub fn record_access(
    stub: &mut dyn Stub,
    args: RecordAccessArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    limits::identifier("item_id", &args.item_id)?;
    let item: ClinicalItem = get(stub, &keys::item(&patient.hex, &args.item_id))?
        .ok_or_else(|| ChaincodeError::not_found("item", &args.item_id))?;
    let used = authorize(
        stub,
        &patient,
        Right::Read,
        &item.category,
        None,
        patient.context(AuditAction::Access, &item.category, &item.id),
    )?;
    let mut entry = allowed(AuditAction::Access, &item.category, &item.id);
    let mut result = RecordAccessResult {
        item: Some(item),
        ..RecordAccessResult::default()
    };
    if let Some(permission) = used {
        entry.permission_id = permission.id.clone();
        entry.emergency = permission.emergency;
        // A ledger that keeps private data gives keys by the query `access_keys` alone: the
        // envelope and the links are commitments here, and results are in the block.
        let links = key_chain(
            stub,
            &patient.hex,
            &permission.category,
            permission.key_epoch,
            result.item.as_ref().map_or(0, |i| i.key_epoch),
        )?;
        if stub.keeps_private_data() {
            result.key_chain_commitments = links;
        } else {
            result.key_chain = links;
        }
        result.key_envelope_commitment = permission.key_envelope_commitment;
        result.key_envelope = permission.key_envelope;
        result.key_epoch = permission.key_epoch;
        result.permission_id = permission.id;
        result.emergency = permission.emergency;
    }
    patient.audit(stub, entry)?;
    patient.save(stub)?;
    Ok(result.encode_to_vec())
}

/// Query `access_keys` ([`AccessKeysArgs`] → [`AccessKeysResult`]; docs/adr/0017 §5):
/// for a clinician whose permission to read item `item_id`'s category is live now, that
/// permission's key envelope, the key chain down to the item's epoch and the item's wrapped
/// file key; for the record's owner, the wrapped file key alone. Read from this peer's
/// private data (on a ledger below format 5, from state). The reader records the access
/// first (`record_access`), which the gateway requires before it serves the file.
///
/// # Errors
/// `UnknownPatient`, `PatientErased`, `NotFound` (item); `Denied` (`WrongRole` for anyone
/// but a clinician, `NoPermission`, `WindowNotStarted`, `WindowExpired`, `Revoked`). A
/// value this peer does not hold comes empty, with an empty salt: the client gathers it
/// from another peer.
pub fn access_keys(stub: &dyn Stub, args: AccessKeysArgs) -> Result<Vec<u8>, ChaincodeError> {
    let patient = load_patient(stub, &args.pseudonym)?;
    limits::identifier("item_id", &args.item_id)?;
    let item: ClinicalItem = get(stub, &keys::item(&patient.hex, &args.item_id))?
        .ok_or_else(|| ChaincodeError::not_found("item", &args.item_id))?;
    let creator = stub.creator();
    // The owner holds the category keys: the wrapped file key is all it needs. The owner
    // by name and by the key the record was registered with (a certificate the CA issued
    // in the owner's name with another key is not the owner), as rotation checks.
    let owner_key = &patient.record.owner_key;
    if patient.is_owner(creator) && (owner_key.is_empty() || *owner_key == creator.signing_key) {
        let (wrapped_dek, wrapped_dek_salt) =
            crate::private::read(stub, &item.wrapped_dek, &item.wrapped_dek_commitment)?;
        return Ok(AccessKeysResult {
            wrapped_dek,
            wrapped_dek_salt,
            ..AccessKeysResult::default()
        }
        .encode_to_vec());
    }
    if creator.role != Role::Clinician {
        return Err(ChaincodeError::denied(Denial::WrongRole {
            needed: Role::Clinician.as_str(),
            actual: creator.role,
        }));
    }
    let permission = decide(
        stub,
        &patient.hex,
        &creator.name,
        &item.category,
        Right::Read,
        None,
        stub.time(),
    )?
    .map_err(ChaincodeError::denied)?;
    // Values are read once the caller is allowed: no one else learns whether this peer
    // holds them.
    let (wrapped_dek, wrapped_dek_salt) =
        crate::private::read(stub, &item.wrapped_dek, &item.wrapped_dek_commitment)?;
    let (key_envelope, key_envelope_salt) = crate::private::read(
        stub,
        &permission.key_envelope,
        &permission.key_envelope_commitment,
    )?;
    let mut result = AccessKeysResult {
        permission_id: permission.id,
        key_envelope,
        key_envelope_salt,
        key_epoch: permission.key_epoch,
        wrapped_dek,
        wrapped_dek_salt,
        ..AccessKeysResult::default()
    };
    let links = key_chain(
        stub,
        &patient.hex,
        &permission.category,
        permission.key_epoch,
        item.key_epoch,
    )?;
    for link in links {
        let (value, salt) = if stub.keeps_private_data() {
            crate::private::read(stub, &[], &link)?
        } else {
            (link, Vec::new())
        };
        result.key_chain.push(value);
        result.key_chain_salts.push(salt);
    }
    Ok(result.encode_to_vec())
}

/// The links of `category`'s key chain that lead from the key of epoch `from` down to the
/// key of epoch `to`, newest first (none when `to` is not earlier; at most
/// [`MAX_KEY_CHAIN`]; a link missing, as before rotations kept one, ends the chain there).
fn key_chain(
    stub: &dyn Stub,
    patient_hex: &str,
    category: &str,
    from: u32,
    to: u32,
) -> Result<Vec<Vec<u8>>, ChaincodeError> {
    let mut links = Vec::new();
    let mut epoch = from;
    while epoch > to && links.len() < MAX_KEY_CHAIN as usize {
        epoch = epoch.saturating_sub(1);
        match stub.get(&keys::key_chain_link(patient_hex, category, epoch))? {
            Some(link) => links.push(link),
            None => break,
        }
    }
    Ok(links)
}

pub fn share_for_study(
    stub: &mut dyn Stub,
    args: ShareForStudyArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    limits::identifier("source_item_id", &args.source_item_id)?;
    limits::identifier("study_id", &args.study_id)?;
    limits::identifier("item_id", &args.item_id)?;
    let source: ClinicalItem = get(stub, &keys::item(&patient.hex, &args.source_item_id))?
        .ok_or_else(|| ChaincodeError::not_found("item", &args.source_item_id))?;
    if stub.get(&keys::study(&args.study_id))?.is_none() {
        return Err(ChaincodeError::not_found("study", &args.study_id));
    }
    // Checked here, as before study keys were private (format 6), so that older chains
    // re-execute alike: the key itself below format 6, its commitment from 6 on.
    let declared_key = if args.wrapped_dek.is_empty()
        && stub.private_keys() >= crate::private::PrivateKeys::StudyKeys
    {
        &args.wrapped_dek_commitment
    } else {
        &args.wrapped_dek
    };
    limits::stored_object(&args.sha256, args.size, declared_key, "study")?;
    limits::deidentification(
        args.anonymized,
        &args.deid_profile,
        args.deid_profile_version,
        args.deid_year,
        stub.time(),
    )?;

    let mut context = patient.context(AuditAction::Share, &source.category, &source.id);
    context.study_id = args.study_id.clone();
    let permission = match authorize(
        stub,
        &patient,
        Right::Share,
        &source.category,
        Some(&args.study_id),
        context.clone(),
    )? {
        Some(p) => p,
        // `authorize` lets only clinicians share into a study.
        None => {
            let reason = Denial::NoPermission {
                right: Right::Share,
                category: source.category.clone(),
            };
            return Err(ChaincodeError::denied(reason).audited_at(context));
        }
    };
    if permission.anonymize && !args.anonymized {
        return Err(ChaincodeError::denied(Denial::AnonymizationRequired).audited_at(context));
    }
    let study_pseudonym = keys::pseudonym_hex(&permission.study_pseudonym);
    if args.path != keys::study_item_path(&args.study_id, &study_pseudonym, &args.item_id) {
        return Err(ChaincodeError::invalid(
            "path",
            "must be studies/<study>/<study pseudonym>/<item_id>",
        ));
    }
    // Only under a study pseudonym the grant proved its patient owns (docs/adr/0014): a
    // grant made before grants were signed shares nothing; and a pseudonym stands for one
    // record.
    if permission.study_owner_key.is_empty() {
        return Err(ChaincodeError::invalid(
            "study_pseudonym",
            "was named by a grant made before study pseudonyms were signed: the patient \
             grants again",
        ));
    }
    let source_key = keys::study_source(&args.study_id, &study_pseudonym);
    if let Some(source) = stub.get(&source_key)?
        && source != patient.hex.as_bytes()
    {
        return Err(ChaincodeError::invalid(
            "study_pseudonym",
            "stands for another record in this study",
        ));
    }
    let key = keys::study_item(&args.study_id, &study_pseudonym, &args.item_id);
    if stub.get(&key)?.is_some() {
        return Err(ChaincodeError::AlreadyExists {
            what: "study item",
            id: args.item_id,
        });
    }
    // The copy's file key, wrapped to the study's key: in clear below format 6, as its
    // commitment from 6 on (the key beside the transaction, docs/adr/0017).
    let (wrapped_dek, wrapped_dek_commitment) = crate::private::take_since(
        stub,
        crate::private::PrivateKeys::StudyKeys,
        "wrapped_dek",
        args.wrapped_dek,
        &args.wrapped_dek_commitment,
        MAX_ENVELOPE_LEN,
    )?
    .into_fields();
    let item = StudyItem {
        study_id: args.study_id.clone(),
        study_pseudonym: permission.study_pseudonym.clone(),
        item_id: args.item_id,
        category: source.category.clone(),
        path: args.path,
        sha256: args.sha256,
        size: args.size,
        wrapped_dek,
        shared_by: stub.creator().name.clone(),
        shared_at: stub.time(),
        anonymized: args.anonymized,
        tombstoned: false,
        deid_profile: args.deid_profile,
        deid_profile_version: args.deid_profile_version,
        deid_year: args.deid_year,
        wrapped_dek_commitment,
    };
    put(stub, &key, &item)?;
    stub.put(
        &keys::study_item_source(&args.study_id, &study_pseudonym, &item.item_id),
        patient.hex.clone().into_bytes(),
    )?;
    if stub.get(&source_key)?.is_none() {
        stub.put(&source_key, patient.hex.clone().into_bytes())?;
    }
    let mut entry = allowed(AuditAction::Share, &source.category, &source.id);
    entry.permission_id = permission.id;
    entry.study_id = args.study_id;
    patient.audit(stub, entry)?;
    patient.save(stub)?;
    Ok(Vec::new())
}

/// A study's researcher fetches a copy shared into the study: committed, so the patient's
/// trail shows it (under the study, never with the researcher learning the pseudonym).
pub fn record_study_access(
    stub: &mut dyn Stub,
    args: RecordStudyAccessArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    let copy = study_copy(
        stub,
        &args.study_id,
        &args.study_pseudonym,
        &args.item_id,
        AuditAction::StudyAccess,
    )?;
    let StudyCopy {
        study,
        item,
        mut patient,
    } = copy;
    let mut entry = allowed(AuditAction::StudyAccess, &item.category, &item.item_id);
    entry.study_id = study.id;
    patient.audit(stub, entry)?;
    patient.save(stub)?;
    Ok(RecordStudyAccessResult { item: Some(item) }.encode_to_vec())
}

/// Query: the file key of study copy `item_id` under `study_pseudonym` in `study_id`,
/// wrapped to the study's key, for the study's researcher (docs/adr/0017): in
/// `AccessKeysResult.wrapped_dek`, with its salt in `wrapped_dek_salt` on a ledger that
/// keeps study keys as private data (format 6), checked by the client against the
/// commitment of its committed `record_study_access`. Both empty when this peer does not
/// hold the value: the client gathers it from another peer.
///
/// # Errors
/// `NotFound` (study), then `Denied` (`NotStudyOwner`) for anyone but the study's researcher
/// (a researcher by role and name), before anything of the copy is looked at: no one else
/// learns whether a copy exists or its record was erased. Then as `record_study_access`:
/// `NotFound` (copy), `PatientErased` (the copy or its record erased).
pub fn study_access_keys(
    stub: &dyn Stub,
    args: RecordStudyAccessArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    limits::identifier("study_id", &args.study_id)?;
    let study: Study = get(stub, &keys::study(&args.study_id))?
        .ok_or_else(|| ChaincodeError::not_found("study", &args.study_id))?;
    let creator = stub.creator();
    if creator.role != Role::Researcher || creator.name != study.researcher {
        return Err(ChaincodeError::denied(Denial::NotStudyOwner(study.id)));
    }
    let StudyCopy { item, .. } = study_copy(
        stub,
        &args.study_id,
        &args.study_pseudonym,
        &args.item_id,
        AuditAction::StudyAccess,
    )?;
    // Read once the caller is known to be allowed: no one else learns whether this peer
    // holds the value.
    let (wrapped_dek, wrapped_dek_salt) =
        crate::private::read(stub, &item.wrapped_dek, &item.wrapped_dek_commitment)?;
    Ok(AccessKeysResult {
        wrapped_dek,
        wrapped_dek_salt,
        ..AccessKeysResult::default()
    }
    .encode_to_vec())
}

/// A study's researcher reports a copy its client refused (a copy recorded as
/// de-identified that failed the re-check of its profile): an incident on the patient's
/// trail, under the study, with its code. Detective, not preventive: the chaincode never
/// sees plaintext, so it records what the researcher's client found.
pub fn report_study_incident(
    stub: &mut dyn Stub,
    args: ReportStudyIncidentArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    let incident = match StudyIncident::try_from(args.incident) {
        Ok(StudyIncident::Unspecified) | Err(_) => {
            return Err(ChaincodeError::invalid(
                "incident",
                "must name a known incident",
            ));
        }
        Ok(incident) => incident,
    };
    let StudyCopy {
        study,
        item,
        mut patient,
    } = study_copy(
        stub,
        &args.study_id,
        &args.study_pseudonym,
        &args.item_id,
        AuditAction::StudyIncident,
    )?;
    if incident == StudyIncident::DeidentificationFailed && !item.anonymized {
        return Err(ChaincodeError::invalid(
            "incident",
            "the copy is not recorded as de-identified",
        ));
    }
    let mut entry = allowed(AuditAction::StudyIncident, &item.category, &item.item_id);
    entry.outcome = Outcome::Denied as i32;
    entry.study_id = study.id;
    entry.incident = incident as i32;
    patient.audit(stub, entry)?;
    patient.save(stub)?;
    Ok(Vec::new())
}

/// A study copy with its study and the patient record it came from.
struct StudyCopy {
    study: Study,
    item: StudyItem,
    patient: Patient,
}

/// The record (pseudonym bytes) study copy `item_id` under `pseudonym_hex` came from: the
/// copy's own source; the pseudonym's for a copy made before copies had one (docs/adr/0014).
///
/// # Errors
/// `Corrupt` when neither is stored or it is not hex.
pub(crate) fn copy_source(
    stub: &dyn Stub,
    study_id: &str,
    pseudonym_hex: &str,
    item_id: &str,
) -> Result<Vec<u8>, ChaincodeError> {
    match stub.get(&keys::study_item_source(study_id, pseudonym_hex, item_id))? {
        Some(source) => Some(source),
        None => stub.get(&keys::study_source(study_id, pseudonym_hex))?,
    }
    .and_then(|hex_text| hex::decode(hex_text).ok())
    .ok_or_else(|| ChaincodeError::Corrupt(format!("study item {item_id} has no source")))
}

/// Looks up study copy `item_id` of `study_pseudonym` in `study_id` for the study's
/// researcher; anyone else is denied, audited as `action` on the patient's trail.
fn study_copy(
    stub: &dyn Stub,
    study_id: &str,
    study_pseudonym: &[u8],
    item_id: &str,
    action: AuditAction,
) -> Result<StudyCopy, ChaincodeError> {
    limits::identifier("study_id", study_id)?;
    limits::exact_len("study_pseudonym", study_pseudonym, PSEUDONYM_LEN)?;
    limits::identifier("item_id", item_id)?;
    let study: Study = get(stub, &keys::study(study_id))?
        .ok_or_else(|| ChaincodeError::not_found("study", study_id))?;
    let pseudonym_hex = keys::pseudonym_hex(study_pseudonym);
    let item: StudyItem = get(stub, &keys::study_item(study_id, &pseudonym_hex, item_id))?
        .ok_or_else(|| ChaincodeError::not_found("study item", item_id))?;
    if item.tombstoned {
        return Err(ChaincodeError::PatientErased);
    }
    let source = copy_source(stub, study_id, &pseudonym_hex, item_id)?;
    let patient = load_patient(stub, &source)?;
    let mut context = patient.context(action, &item.category, &item.item_id);
    context.study_id = study.id.clone();
    if stub.creator().name != study.researcher {
        return Err(ChaincodeError::denied(Denial::NotStudyOwner(study.id)).audited_at(context));
    }
    Ok(StudyCopy {
        study,
        item,
        patient,
    })
}

pub fn register_study(
    stub: &mut dyn Stub,
    args: RegisterStudyArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    limits::identifier("id", &args.id)?;
    if args.title.trim().is_empty() {
        return Err(ChaincodeError::invalid("title", "must not be empty"));
    }
    limits::text("title", &args.title, MAX_TITLE_LEN)?;
    limits::exact_len("protocol_hash", &args.protocol_hash, HASH_LEN)?;
    limits::exact_len("study_key", &args.study_key, KEY_LEN)?;
    limits::exact_len(
        "study_key_signature",
        &args.study_key_signature,
        SIGNATURE_LEN,
    )?;
    require_role(stub, Role::Researcher)?;
    if stub.get(&keys::study(&args.id))?.is_some() {
        return Err(ChaincodeError::AlreadyExists {
            what: "study",
            id: args.id,
        });
    }
    let researcher = stub.creator().name.clone();
    let study = Study {
        id: args.id.clone(),
        title: args.title,
        protocol_hash: args.protocol_hash,
        researcher: researcher.clone(),
        study_key: args.study_key,
        registered_at: stub.time(),
        researcher_key: stub.creator().signing_key.to_vec(),
        study_key_signature: args.study_key_signature,
    };
    put(stub, &keys::study(&args.id), &study)?;
    stub.put(&keys::researcher_study(&researcher, &args.id), Vec::new())?;
    Ok(Vec::new())
}

pub fn emergency_access(
    stub: &mut dyn Stub,
    args: EmergencyAccessArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    require_category(stub, &args.category)?;
    let duration = match args.duration_seconds {
        0 => MAX_EMERGENCY_SECONDS,
        d if (1..=MAX_EMERGENCY_SECONDS).contains(&d) => d,
        _ => {
            return Err(ChaincodeError::invalid(
                "duration_seconds",
                "between 1 second and 24 hours",
            ));
        }
    };
    let t = stub.time();
    let creator = stub.creator().clone();
    let context = patient.context(AuditAction::EmergencyAccess, &args.category, "");
    if creator.role != Role::Clinician {
        let reason = Denial::WrongRole {
            needed: Role::Clinician.as_str(),
            actual: creator.role,
        };
        return Err(ChaincodeError::denied(reason).audited_at(context));
    }
    if creator.attribute_at("emergency", t) != Some("true") {
        return Err(ChaincodeError::denied(Denial::NotEmergencyClinician).audited_at(context));
    }
    // After the rules on who may ask, so that an attempt by someone who may not is on the
    // patient's trail whatever it carries.
    sealed::refuse_clear_reason(&args.reason)?;
    // From format 7 the sealed text is private data: the block names its readers and
    // carries its commitment (docs/adr/0017).
    let private_reason = stub.private_keys() >= crate::private::PrivateKeys::FreeText;
    let commitment = if private_reason {
        if args.sealed_reason.is_some() {
            return Err(ChaincodeError::invalid(
                "sealed_reason",
                "this ledger keeps free text as private data: send the sealed reason's \
                 commitment (sealed_reason_commitment) and the reason beside the transaction",
            ));
        }
        sealed::check_reader_keys(stub, &patient.record, &args.sealed_reason_readers)?;
        match crate::private::take_since(
            stub,
            crate::private::PrivateKeys::FreeText,
            "sealed_reason_commitment",
            Vec::new(),
            &args.sealed_reason_commitment,
            0,
        )? {
            crate::private::KeyMaterial::Committed(c) => c.to_vec(),
            _ => {
                return Err(ChaincodeError::invalid(
                    "sealed_reason_commitment",
                    "say why emergency access is needed, sealed to the patient and the \
                     auditors, as private data",
                ));
            }
        }
    } else {
        sealed::check_reason(stub, &patient.record, args.sealed_reason.as_ref())?;
        Vec::new()
    };
    let until = limits::add_i64("emergency window", t, duration)?;
    let permission = Permission {
        grantee: creator.name.clone(),
        category: args.category.clone(),
        rights: vec![Right::Read as i32],
        from: t,
        until,
        granted_at: t,
        emergency: true,
        ..Permission::default()
    };
    let id = store_permission(stub, &mut patient, permission)?;
    let mut entry = allowed(AuditAction::EmergencyAccess, &args.category, "");
    entry.emergency = true;
    entry.permission_id = id.clone();
    entry.sealed_reason = args.sealed_reason.clone();
    entry.sealed_reason_commitment = commitment.clone();
    patient.audit(stub, entry)?;
    // From format 7 the event names the entry, under which its readers ask for the reason
    // (`sealed_reasons`); below it the event's bytes stay format 6's.
    let audit_seq = if private_reason {
        patient.record.next_audit_seq
    } else {
        0
    };
    patient.save(stub)?;
    let event = EmergencyAccessEvent {
        pseudonym: patient.record.pseudonym.clone(),
        clinician: creator.name,
        category: args.category,
        until,
        sealed_reason: args.sealed_reason,
        sealed_reason_commitment: commitment,
        audit_seq,
        ..EmergencyAccessEvent::default()
    };
    stub.emit_event("emergency_access", event.encode_to_vec())?;
    Ok(IdResult { id }.encode_to_vec())
}

pub fn rotate_category_key(
    stub: &mut dyn Stub,
    args: RotateCategoryKeyArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    require_category(stub, &args.category)?;
    let mut key = category_key(stub, &patient, &args.category)?;
    limits::exact_len("public_key", &args.public_key, KEY_LEN)?;
    limits::exact_len("owner_signature", &args.owner_signature, SIGNATURE_LEN)?;
    // The link is stored as given: the envelope below format 5, its commitment from 5 on.
    let link = match crate::private::take(
        stub,
        "previous_key_envelope",
        args.previous_key_envelope,
        &args.previous_key_envelope_commitment,
        MAX_ENVELOPE_LEN,
    )? {
        crate::private::KeyMaterial::Absent => {
            return Err(ChaincodeError::invalid(
                "previous_key_envelope",
                "the current key wrapped to the new one is required (the key chain)",
            ));
        }
        crate::private::KeyMaterial::Clear(value) => value,
        crate::private::KeyMaterial::Committed(commitment) => commitment.to_vec(),
    };
    if args.public_key == key.public_key {
        return Err(ChaincodeError::invalid(
            "public_key",
            "is the current key; rotation needs a new one",
        ));
    }
    if args.envelopes.len() > MAX_ENVELOPE_UPDATES {
        return Err(ChaincodeError::invalid(
            "envelopes",
            format!("at most {MAX_ENVELOPE_UPDATES}"),
        ));
    }
    let mut updated = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for update in &args.envelopes {
        // One envelope per permission: a second would be claimed and then overwritten,
        // a value nothing refers to (and no erasure would find).
        if !named.insert(update.permission_id.as_str()) {
            return Err(ChaincodeError::invalid(
                "envelopes",
                format!("{} is named twice", update.permission_id),
            ));
        }
        let (stored_at, mut permission) = find_permission(stub, &patient, &update.permission_id)?;
        if permission.category != args.category || permission.revoked {
            return Err(ChaincodeError::invalid(
                "envelopes",
                format!(
                    "{} is not a standing permission for {}",
                    permission.id, args.category
                ),
            ));
        }
        // An emergency access carries no key (break-glass escrow is separate): a rotation
        // must not hand it one.
        if permission.emergency {
            return Err(ChaincodeError::invalid(
                "envelopes",
                format!("{} is an emergency access; it holds no key", permission.id),
            ));
        }
        if !(has_right(&permission, Right::Read) || has_right(&permission, Right::Share)) {
            return Err(ChaincodeError::invalid(
                "envelopes",
                format!("{} does not read or share", permission.id),
            ));
        }
        let envelope = crate::private::take(
            stub,
            "envelopes.key_envelope",
            update.key_envelope.clone(),
            &update.key_envelope_commitment,
            MAX_ENVELOPE_LEN,
        )?;
        if envelope.is_absent() {
            return Err(ChaincodeError::invalid("envelopes", "an envelope is empty"));
        }
        // The envelope of the epoch before is the new one's and the key chain's to give:
        // no peer keeps it longer.
        crate::private::purge(stub, &permission.key_envelope_commitment)?;
        (permission.key_envelope, permission.key_envelope_commitment) = envelope.into_fields();
        permission.key_epoch = key
            .epoch
            .checked_add(1)
            .ok_or(ChaincodeError::Overflow("key epoch"))?;
        updated.push((stored_at, permission));
    }
    patient.require_owner(stub.creator(), AuditAction::RotateKey, &args.category)?;
    // Signed with the key the record was registered with (its owner binding): a certificate
    // in the owner's name but with another key (issued by the CA alone) cannot rotate.
    if !patient.record.owner_key.is_empty()
        && patient.record.owner_key != stub.creator().signing_key
    {
        return Err(ChaincodeError::invalid(
            "owner_signature",
            "the record's keys are signed with the key it was registered with; this \
             certificate holds another",
        ));
    }
    let next_epoch = key
        .epoch
        .checked_add(1)
        .ok_or(ChaincodeError::Overflow("key epoch"))?;
    if args.epoch != next_epoch {
        return Err(ChaincodeError::invalid(
            "epoch",
            format!("the next epoch of {} is {next_epoch}", args.category),
        ));
    }
    stub.put(
        &keys::key_chain_link(&patient.hex, &args.category, key.epoch),
        link,
    )?;
    key.epoch = next_epoch;
    key.public_key = args.public_key;
    key.owner_signature = args.owner_signature;
    key.since = stub.time();
    put(
        stub,
        &keys::category_key(&patient.hex, &args.category),
        &key,
    )?;
    for (stored_at, permission) in &updated {
        put(stub, stored_at, permission)?;
    }
    patient.audit(stub, allowed(AuditAction::RotateKey, &args.category, ""))?;
    patient.save(stub)?;
    Ok(Vec::new())
}

pub fn set_private_data(
    stub: &mut dyn Stub,
    args: SetPrivateDataArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    limits::max_len("ciphertext", &args.ciphertext, MAX_PRIVATE_DATA_LEN)?;
    patient.require_owner(stub.creator(), AuditAction::SetPrivateData, "")?;
    let data = PrivateData {
        ciphertext: args.ciphertext,
        updated_at: stub.time(),
    };
    put(stub, &keys::private_data(&patient.hex), &data)?;
    patient.audit(stub, allowed(AuditAction::SetPrivateData, "", ""))?;
    patient.save(stub)?;
    Ok(Vec::new())
}

pub fn register_category(
    stub: &mut dyn Stub,
    args: RegisterCategoryArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    limits::identifier("name", &args.name)?;
    limits::text("description", &args.description, MAX_TITLE_LEN)?;
    require_role(stub, Role::Admin)?;
    if category_exists(stub, &args.name)? {
        return Err(ChaincodeError::AlreadyExists {
            what: "category",
            id: args.name,
        });
    }
    let category = Category {
        name: args.name.clone(),
        description: args.description,
        registered_by: stub.creator().name.clone(),
        registered_at: stub.time(),
    };
    put(stub, &keys::category(&args.name), &category)?;
    Ok(Vec::new())
}
