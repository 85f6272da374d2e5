//! Erasure (issue 20 item 6; docs/adr/0015): the patient's `erase_patient` closes the
//! record in one transaction, and its purge runs in bounded steps: that transaction does the
//! first [`PURGE_STEP_ENTRIES`] entries, and `purge_erased` transactions (the storage
//! gateway submits them; the owner may too) do the rest, a step each, from the cursor the
//! last step left (`purge-cursor/{P}`). No transaction does unbounded work, and no record is
//! too large to erase. From the closing transaction on, every call on the record fails with
//! `PatientErased`; the purge removes what is left to remove: items and study copies
//! tombstoned with their file keys cleared, envelopes cleared, category keys, the key chain
//! and private data deleted; from ledger format 5 the private values behind envelopes and
//! the key chain are purged from every peer (docs/adr/0017). The record's audit trail stays.
//!
//! The objects the purge tombstones (the record's files and its copies in studies) are then
//! only deleted by the gateway, the one party that writes to the store. So the purge queues
//! each one in the ledger's state (`object-deletion/{path}`, [`queue`]); the gateway pages
//! through the queue ([`pending_object_deletions`], agreed by f+1 peers before it acts),
//! deletes, and confirms ([`confirm_object_deletions`]), which takes the paths off. A gateway
//! that crashed in between finds the same queue when it is back; an object deleted twice is
//! deleted once. `ledger verify` (with the objects checked) names any erased object still
//! in the store, and the queue says which ones the gateway still owes.

use medledger_proto::v1::{
    AuditAction, ClinicalItem, ConfirmDeletionsArgs, ConfirmDeletionsResult, ErasureResult,
    PatientArgs, PatientErasedEvent, PatientList, PatientRecord, PendingDeletions,
    PendingDeletionsArgs, PendingObjectDeletion, Permission, PurgeCursor, PurgeStudy, StudyItem,
};
use prost::Message;

use crate::context::{Patient, allowed, get, load_patient, load_record, put};
use crate::error::{ChaincodeError, Denial};
use crate::keys;
use crate::stub::{Role, Stub};

/// Most entries one purge step looks at (items, permissions, study copies, keys): each
/// costs a few reads and at most three writes, far inside a transaction's budget
/// ([`crate::stub::MAX_TX_WRITES`]).
pub const PURGE_STEP_ENTRIES: usize = 1_000;

/// The purge's phases, in order ([`PurgeCursor::phase`]).
const ITEMS: u32 = 0;
const PERMISSIONS: u32 = 1;
const ENDED_PERMISSIONS: u32 = 2;
const STUDY_COPIES: u32 = 3;
const CATEGORY_KEYS: u32 = 4;
const KEY_CHAIN: u32 = 5;

fn decoded<M: Message + Default>(key: &str, bytes: &[u8]) -> Result<M, ChaincodeError> {
    M::decode(bytes).map_err(|e| ChaincodeError::Corrupt(format!("{key}: {e}")))
}

/// Transaction `erase_patient` ([`PatientArgs`] → [`ErasureResult`]), by the record's
/// owner: closes the record (every later call on it fails with `PatientErased`), drops the
/// owner's index entry, audits the erasure, and runs the purge's first step. Emits
/// `patient_erased` with the paths that step tombstoned.
///
/// # Errors
/// `UnknownPatient`, `PatientErased`; `Denied` (`NotOwner`, audited on the record).
pub fn erase_patient(stub: &mut dyn Stub, args: PatientArgs) -> Result<Vec<u8>, ChaincodeError> {
    let mut patient = load_patient(stub, &args.pseudonym)?;
    patient.require_owner(stub.creator(), AuditAction::Erase, "")?;
    stub.delete(&keys::patient_owner(&patient.record.owner))?;
    patient.audit(stub, allowed(AuditAction::Erase, "", ""))?;
    let now = stub.time();
    patient.record.erased = true;
    patient.record.erased_at = now;
    let (deleted_paths, purge_complete) = step(
        stub,
        &patient.hex,
        &mut patient.record,
        PurgeCursor::default(),
    )?;
    patient.save(stub)?;
    let event = PatientErasedEvent {
        pseudonym: patient.record.pseudonym.clone(),
        deleted_paths: deleted_paths.clone(),
    };
    stub.emit_event("patient_erased", event.encode_to_vec())?;
    Ok(ErasureResult {
        deleted_paths,
        purge_complete,
    }
    .encode_to_vec())
}

/// Transaction `purge_erased` ([`PatientArgs`] → [`ErasureResult`]), by the storage gateway
/// or the record's owner: the next step of an erased record's purge.
///
/// # Errors
/// `UnknownPatient`; `InvalidArgument` (`pseudonym`) when the record is not erased or its
/// purge is complete; `Denied` (`WrongRole`) for anyone else.
pub fn purge_erased(stub: &mut dyn Stub, args: PatientArgs) -> Result<Vec<u8>, ChaincodeError> {
    let Patient { hex, mut record } = load_record(stub, &args.pseudonym)?;
    let creator = stub.creator();
    let owner = creator.role == Role::Patient && creator.name == record.owner;
    if creator.role != Role::Gateway && !owner {
        return Err(ChaincodeError::denied(Denial::WrongRole {
            needed: Role::Gateway.as_str(),
            actual: creator.role,
        }));
    }
    if !record.erased {
        return Err(ChaincodeError::invalid(
            "pseudonym",
            "this record is not erased",
        ));
    }
    let Some(cursor) = get::<PurgeCursor>(stub, &keys::purge_cursor(&hex))? else {
        return Err(ChaincodeError::invalid(
            "pseudonym",
            "this record's purge is complete",
        ));
    };
    let (deleted_paths, purge_complete) = step(stub, &hex, &mut record, cursor)?;
    put(stub, &keys::patient(&hex), &record)?;
    Ok(ErasureResult {
        deleted_paths,
        purge_complete,
    }
    .encode_to_vec())
}

/// Query `pending_purges` ([`PendingDeletionsArgs`], `after` a pseudonym in hex →
/// [`PatientList`]): erased records whose purge is under way, in pseudonym order. For the
/// storage gateway and auditors.
///
/// # Errors
/// As [`pending_object_deletions`].
pub fn pending_purges(
    stub: &dyn Stub,
    args: PendingDeletionsArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    require(stub, &[Role::Gateway, Role::Auditor])?;
    let limit = page_limit(&args)?;
    let after = (!args.after.is_empty()).then(|| keys::purge_cursor(&args.after));
    let page = stub.scan_prefix(keys::purge_cursors_prefix(), after.as_deref(), limit)?;
    let mut pseudonyms = Vec::with_capacity(page.len());
    for (key, _) in &page {
        let hex = key
            .strip_prefix(keys::purge_cursors_prefix())
            .unwrap_or_default();
        pseudonyms
            .push(hex::decode(hex).map_err(|e| ChaincodeError::Corrupt(format!("{key}: {e}")))?);
    }
    Ok(PatientList { pseudonyms }.encode_to_vec())
}

/// One bounded step of record `hex`'s purge from `cursor`: at most [`PURGE_STEP_ENTRIES`]
/// entries. Queues the objects it tombstones, and leaves the cursor for the next step, or,
/// when it finished, deletes the private data and the cursor and sets `purged_at`. Returns
/// the paths tombstoned and whether the purge is complete.
fn step(
    stub: &mut dyn Stub,
    hex: &str,
    record: &mut PatientRecord,
    mut cursor: PurgeCursor,
) -> Result<(Vec<String>, bool), ChaincodeError> {
    let mut deleted = Vec::new();
    let mut left = PURGE_STEP_ENTRIES;
    let complete = loop {
        if left == 0 {
            break false;
        }
        let after = (!cursor.after.is_empty()).then(|| cursor.after.clone());
        let (prefix, study) = match cursor.phase {
            ITEMS => (keys::items_prefix(hex), None),
            PERMISSIONS => (keys::permissions_prefix(hex), None),
            ENDED_PERMISSIONS => (keys::ended_permissions_prefix(hex), None),
            STUDY_COPIES => {
                // The study under way, else the first after the last one finished (deleted,
                // but still where the next one starts): never a scan from the start again.
                let studies = keys::purge_studies_prefix(hex);
                let next = if cursor.study.is_empty() {
                    stub.scan_prefix(&studies, None, 1)?
                } else if cursor.after.is_empty() && cursor.study.starts_with(&studies) {
                    // The last study finished: the next one.
                    stub.scan_prefix(&studies, Some(&cursor.study), 1)?
                } else {
                    let key = cursor.study.clone();
                    stub.get(&key)?
                        .map(|bytes| (key, bytes))
                        .into_iter()
                        .collect()
                };
                left = left.saturating_sub(1);
                let Some((key, bytes)) = next.into_iter().next() else {
                    next_phase(&mut cursor);
                    continue;
                };
                if left == 0 {
                    break false;
                }
                let study: PurgeStudy = decoded(&key, &bytes)?;
                let prefix = keys::study_items_of(&study.study_id, &study.study_pseudonym);
                cursor.study = key.clone();
                (prefix, Some((key, study)))
            }
            CATEGORY_KEYS => (keys::category_keys_prefix(hex), None),
            KEY_CHAIN => (keys::key_chain_prefix(hex), None),
            _ => {
                stub.delete(&keys::private_data(hex))?;
                break true;
            }
        };
        let page = stub.scan_prefix(&prefix, after.as_deref(), left)?;
        let full = page.len() == left;
        left = left.saturating_sub(page.len());
        for (key, bytes) in &page {
            match (cursor.phase, &study) {
                (ITEMS, _) => {
                    let mut item: ClinicalItem = decoded(key, bytes)?;
                    if !item.tombstoned
                        || !item.wrapped_dek.is_empty()
                        || !item.wrapped_dek_commitment.is_empty()
                    {
                        deleted.push(item.path.clone());
                        crate::private::purge(stub, &item.wrapped_dek_commitment)?;
                        item.tombstoned = true;
                        item.wrapped_dek.clear();
                        item.wrapped_dek_commitment.clear();
                        put(stub, key, &item)?;
                    }
                }
                (PERMISSIONS | ENDED_PERMISSIONS, _) => {
                    let mut permission: Permission = decoded(key, bytes)?;
                    owe_study(stub, hex, &permission)?;
                    if !permission.key_envelope.is_empty()
                        || !permission.key_envelope_commitment.is_empty()
                    {
                        crate::private::purge(stub, &permission.key_envelope_commitment)?;
                        permission.key_envelope.clear();
                        permission.key_envelope_commitment.clear();
                        put(stub, key, &permission)?;
                    }
                }
                (STUDY_COPIES, Some((_, study))) => {
                    if let Some(path) = tombstone_copy(stub, hex, study, key, bytes)? {
                        deleted.push(path);
                    }
                }
                (KEY_CHAIN, _) => {
                    // From format 5 a link is the commitment to a private value.
                    if stub.keeps_private_data() {
                        crate::private::purge(stub, bytes)?;
                    }
                    stub.delete(key)?;
                }
                _ => stub.delete(key)?,
            }
        }
        match page.last() {
            Some((last, _)) if full => cursor.after = last.clone(),
            _ => {
                // This prefix is done: the next study, or the next phase.
                if let Some((key, _)) = study {
                    // Finished: gone, and the cursor still says where the next one starts.
                    stub.delete(&key)?;
                    cursor.after.clear();
                    left = left.saturating_sub(1);
                } else {
                    next_phase(&mut cursor);
                }
            }
        }
    };
    let now = stub.time();
    queue(stub, &deleted, now)?;
    if complete {
        stub.delete(&keys::purge_cursor(hex))?;
        record.purged_at = now;
    } else {
        put(stub, &keys::purge_cursor(hex), &cursor)?;
    }
    Ok((deleted, complete))
}

fn next_phase(cursor: &mut PurgeCursor) {
    cursor.phase = cursor.phase.saturating_add(1);
    cursor.after.clear();
    cursor.study.clear();
}

/// Notes the study `permission` shared the record into, whose copies the purge owes.
fn owe_study(
    stub: &mut dyn Stub,
    hex: &str,
    permission: &Permission,
) -> Result<(), ChaincodeError> {
    if permission.study_id.is_empty() {
        return Ok(());
    }
    let study_pseudonym = keys::pseudonym_hex(&permission.study_pseudonym);
    put(
        stub,
        &keys::purge_study(hex, &permission.study_id, &study_pseudonym),
        &PurgeStudy {
            study_id: permission.study_id.clone(),
            study_pseudonym,
        },
    )
}

/// Tombstones study copy `key` if it is the erased record's: its own source is this record,
/// or it has none (a copy made before copies had a source of their own goes: an erasure
/// left incomplete is worse than a copy lost; docs/adr/0014). Another record's copy under a
/// pseudonym this record's grants named stays. Returns the path to delete, if any.
fn tombstone_copy(
    stub: &mut dyn Stub,
    hex: &str,
    study: &PurgeStudy,
    key: &str,
    bytes: &[u8],
) -> Result<Option<String>, ChaincodeError> {
    let mut copy: StudyItem = decoded(key, bytes)?;
    let source = stub.get(&keys::study_item_source(
        &study.study_id,
        &study.study_pseudonym,
        &copy.item_id,
    ))?;
    if source.is_some_and(|s| s != hex.as_bytes()) || copy.tombstoned {
        return Ok(None);
    }
    copy.tombstoned = true;
    copy.wrapped_dek.clear();
    crate::private::purge(stub, &copy.wrapped_dek_commitment)?;
    copy.wrapped_dek_commitment.clear();
    put(stub, key, &copy)?;
    Ok(Some(copy.path))
}

/// Most paths one page of [`pending_object_deletions`] returns, and one
/// [`confirm_object_deletions`] takes.
pub const MAX_DELETIONS_PAGE: usize = 256;
/// Longest object path taken (bytes): `studies/{id}/{64 hex}/{id}` and
/// `patients/{64 hex}/{category}/{id}` are under 300.
pub const MAX_PATH_LEN: usize = 512;

/// Queues `paths` (objects of a record erased at consensus time `since`, Unix seconds) for
/// the storage gateway to delete.
///
/// # Errors
/// The stub's: its write budget (the erasure then fails whole).
pub fn queue(stub: &mut dyn Stub, paths: &[String], since: i64) -> Result<(), ChaincodeError> {
    for path in paths {
        put(
            stub,
            &keys::object_deletion(path),
            &PendingObjectDeletion {
                path: path.clone(),
                since,
            },
        )?;
    }
    Ok(())
}

/// Only the storage gateway acts on the queue, and auditors read it.
fn require(stub: &dyn Stub, roles: &[Role]) -> Result<(), ChaincodeError> {
    let actual = stub.creator().role;
    match roles.first() {
        Some(needed) if !roles.contains(&actual) => {
            Err(ChaincodeError::denied(Denial::WrongRole {
                needed: needed.as_str(),
                actual,
            }))
        }
        _ => Ok(()),
    }
}

/// A page's size (0 means the largest), checked with its `after`.
fn page_limit(args: &PendingDeletionsArgs) -> Result<usize, ChaincodeError> {
    if args.after.len() > MAX_PATH_LEN {
        return Err(ChaincodeError::invalid(
            "after",
            format!("longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    match usize::try_from(args.limit).unwrap_or(usize::MAX) {
        0 => Ok(MAX_DELETIONS_PAGE),
        n if n <= MAX_DELETIONS_PAGE => Ok(n),
        _ => Err(ChaincodeError::invalid(
            "limit",
            format!("at most {MAX_DELETIONS_PAGE}"),
        )),
    }
}

/// Query `pending_object_deletions` ([`PendingDeletionsArgs`] → [`PendingDeletions`]): the
/// objects erasures named that the gateway has not confirmed deleted, a page at a time in
/// path order. For the storage gateway and auditors.
///
/// # Errors
/// `Denied` (`WrongRole`) for any other role; `InvalidArgument` for a `limit` over
/// [`MAX_DELETIONS_PAGE`] or an `after` longer than [`MAX_PATH_LEN`].
pub fn pending_object_deletions(
    stub: &dyn Stub,
    args: PendingDeletionsArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    require(stub, &[Role::Gateway, Role::Auditor])?;
    let limit = page_limit(&args)?;
    let after = (!args.after.is_empty()).then(|| keys::object_deletion(&args.after));
    let page = stub.scan_prefix(keys::object_deletions_prefix(), after.as_deref(), limit)?;
    let mut deletions = Vec::with_capacity(page.len());
    for (key, bytes) in &page {
        deletions.push(
            PendingObjectDeletion::decode(bytes.as_slice())
                .map_err(|e| ChaincodeError::Corrupt(format!("{key}: {e}")))?,
        );
    }
    let next_after = match deletions.last() {
        Some(last) if deletions.len() == limit => last.path.clone(),
        _ => String::new(),
    };
    Ok(PendingDeletions {
        deletions,
        next_after,
    }
    .encode_to_vec())
}

/// Transaction `confirm_object_deletions` ([`ConfirmDeletionsArgs`] →
/// [`ConfirmDeletionsResult`]), by the storage gateway: these objects are gone from the
/// store, take them off the queue. A path not queued (never erased, or confirmed already:
/// a gateway that restarted confirms again) is passed over; nothing else changes.
///
/// # Errors
/// `Denied` (`WrongRole`) for any role but the gateway; `InvalidArgument` for no paths,
/// more than [`MAX_DELETIONS_PAGE`], or one empty or longer than [`MAX_PATH_LEN`].
pub fn confirm_object_deletions(
    stub: &mut dyn Stub,
    args: ConfirmDeletionsArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    require(stub, &[Role::Gateway])?;
    if args.paths.is_empty() || args.paths.len() > MAX_DELETIONS_PAGE {
        return Err(ChaincodeError::invalid(
            "paths",
            format!("1 to {MAX_DELETIONS_PAGE} paths"),
        ));
    }
    if args
        .paths
        .iter()
        .any(|p| p.is_empty() || p.len() > MAX_PATH_LEN || p.contains('\0'))
    {
        return Err(ChaincodeError::invalid(
            "paths",
            format!("each 1 to {MAX_PATH_LEN} bytes, without NUL"),
        ));
    }
    let mut confirmed: u32 = 0;
    for path in &args.paths {
        let key = keys::object_deletion(path);
        if stub.get(&key)?.is_some() {
            stub.delete(&key)?;
            confirmed = confirmed.saturating_add(1);
        }
    }
    Ok(ConfirmDeletionsResult { confirmed }.encode_to_vec())
}
