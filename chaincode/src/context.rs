//! Helpers every function uses: typed reads and writes, loading a patient record, appending
//! audit entries, and looking up a grantee's permissions.

use medledger_proto::v1::{AuditAction, AuditEntry, Outcome, PatientRecord, Permission, Right};
use prost::Message;

use crate::access::evaluate;
use crate::error::{AuditContext, ChaincodeError, Denial};
use crate::keys;
use crate::limits::{self, MAX_PERMISSIONS_PER_GRANTEE, PSEUDONYM_LEN};
use crate::stub::{Creator, Stub};

/// The categories every network has from the start (the paper's three).
pub const DEFAULT_CATEGORIES: [&str; 3] =
    ["history-and-physical", "lab-results", "radiation-doses"];

pub fn get<M: Message + Default>(stub: &dyn Stub, key: &str) -> Result<Option<M>, ChaincodeError> {
    stub.get(key)?
        .map(|bytes| {
            M::decode(bytes.as_slice()).map_err(|e| ChaincodeError::Corrupt(format!("{key}: {e}")))
        })
        .transpose()
}

pub fn put<M: Message>(stub: &mut dyn Stub, key: &str, message: &M) -> Result<(), ChaincodeError> {
    Ok(stub.put(key, message.encode_to_vec())?)
}

pub fn scan<M: Message + Default>(
    stub: &dyn Stub,
    prefix: &str,
    limit: usize,
) -> Result<Vec<(String, M)>, ChaincodeError> {
    stub.scan_prefix(prefix, None, limit)?
        .into_iter()
        .map(|(key, bytes)| {
            M::decode(bytes.as_slice())
                .map(|m| (key.clone(), m))
                .map_err(|e| ChaincodeError::Corrupt(format!("{key}: {e}")))
        })
        .collect()
}

/// A patient record that exists and is not erased.
pub struct Patient {
    pub hex: String,
    pub record: PatientRecord,
}

impl Patient {
    pub fn is_owner(&self, creator: &Creator) -> bool {
        self.record.owner == creator.name
    }

    /// Where a denial concerning this patient is audited.
    pub fn context(&self, action: AuditAction, category: &str, item: &str) -> AuditContext {
        AuditContext {
            pseudonym: self.record.pseudonym.clone(),
            action,
            category: category.to_string(),
            item: item.to_string(),
            study_id: String::new(),
        }
    }

    /// Fails with a denial audited on this record unless the caller owns it.
    pub fn require_owner(
        &self,
        creator: &Creator,
        action: AuditAction,
        category: &str,
    ) -> Result<(), ChaincodeError> {
        if self.is_owner(creator) {
            return Ok(());
        }
        Err(ChaincodeError::denied(Denial::NotOwner).audited_at(self.context(action, category, "")))
    }

    /// Appends an audit entry; the caller saves the record afterwards.
    pub fn audit(
        &mut self,
        stub: &mut dyn Stub,
        mut entry: AuditEntry,
    ) -> Result<(), ChaincodeError> {
        entry.seq = crate::limits::add_u64("audit sequence", self.record.next_audit_seq, 1)?;
        entry.time = stub.time();
        entry.actor = stub.creator().name.clone();
        entry.actor_role = stub.creator().role.as_str().to_string();
        entry.tx_id = stub.tx_id().to_vec();
        self.record.next_audit_seq = entry.seq;
        put(stub, &keys::audit(&self.hex, entry.seq), &entry)
    }

    pub fn save(&self, stub: &mut dyn Stub) -> Result<(), ChaincodeError> {
        put(stub, &keys::patient(&self.hex), &self.record)
    }
}

/// An allowed audit entry for `action`.
pub fn allowed(action: AuditAction, category: &str, item: &str) -> AuditEntry {
    AuditEntry {
        action: action as i32,
        category: category.to_string(),
        item: item.to_string(),
        outcome: Outcome::Allowed as i32,
        ..AuditEntry::default()
    }
}

/// Loads the record of `pseudonym`: it must exist and not be erased.
pub fn load_patient(stub: &dyn Stub, pseudonym: &[u8]) -> Result<Patient, ChaincodeError> {
    let patient = load_record(stub, pseudonym)?;
    if patient.record.erased {
        return Err(ChaincodeError::PatientErased);
    }
    Ok(patient)
}

/// The record of `pseudonym` (32 bytes), erased or not: for what outlives an erasure (its
/// purge, the trail's sealed reasons).
///
/// # Errors
/// `INVALID_ARGUMENT` for a pseudonym of another length; `UnknownPatient`.
pub fn load_record(stub: &dyn Stub, pseudonym: &[u8]) -> Result<Patient, ChaincodeError> {
    limits::exact_len("pseudonym", pseudonym, PSEUDONYM_LEN)?;
    let hex = keys::pseudonym_hex(pseudonym);
    let record: PatientRecord =
        get(stub, &keys::patient(&hex))?.ok_or(ChaincodeError::UnknownPatient)?;
    Ok(Patient { hex, record })
}

/// The permissions `grantee` holds standing on the record (the live index: at most
/// [`limits::MAX_STANDING_PERMISSIONS`], live now, not yet started, or ended but not yet
/// swept).
pub fn permissions_of(
    stub: &dyn Stub,
    patient_hex: &str,
    grantee: &str,
) -> Result<Vec<Permission>, ChaincodeError> {
    permissions_under(
        stub,
        &keys::permissions_of(patient_hex, grantee),
        limits::MAX_STANDING_PERMISSIONS,
    )
}

/// At most `limit` permissions stored under `prefix`, in key order.
fn permissions_under(
    stub: &dyn Stub,
    prefix: &str,
    limit: usize,
) -> Result<Vec<Permission>, ChaincodeError> {
    Ok(scan(stub, prefix, limit)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// The newest [`MAX_PERMISSIONS_PER_GRANTEE`] of `grantee`'s ended permissions on the
/// record (revoked, or swept after their window ended): consulted only to say why a caller
/// is refused.
pub fn ended_permissions_of(
    stub: &dyn Stub,
    patient_hex: &str,
    grantee: &str,
) -> Result<Vec<Permission>, ChaincodeError> {
    permissions_under(
        stub,
        &keys::ended_permissions_of(patient_hex, grantee),
        MAX_PERMISSIONS_PER_GRANTEE,
    )
}

/// May `grantee` use `right` on `category` (and, for share, `study`) at consensus time `t`?
/// The permission that allows it, chosen by [`evaluate`] among the standing ones; else the
/// reason, drawn from the standing and the ended ones, so a revoked or expired grantee is
/// told so after their permission left the live index. Errors: reading state.
pub fn decide(
    stub: &dyn Stub,
    patient_hex: &str,
    grantee: &str,
    category: &str,
    right: Right,
    study: Option<&str>,
    t: i64,
) -> Result<Result<Permission, Denial>, ChaincodeError> {
    let mut permissions = permissions_of(stub, patient_hex, grantee)?;
    if let Ok(permission) = evaluate(&permissions, category, right, study, t) {
        return Ok(Ok(permission.clone()));
    }
    permissions.extend(ended_permissions_of(stub, patient_hex, grantee)?);
    Ok(evaluate(&permissions, category, right, study, t).cloned())
}

pub fn category_exists(stub: &dyn Stub, name: &str) -> Result<bool, ChaincodeError> {
    Ok(DEFAULT_CATEGORIES.contains(&name) || stub.get(&keys::category(name))?.is_some())
}

/// Records a denied attempt on the patient's audit trail (called after rollback).
/// How many of the newest entries of a trail a repeated denial may be counted on.
pub const COALESCE_WINDOW: u64 = 8;

pub fn record_denial(
    stub: &mut dyn Stub,
    context: &AuditContext,
    reason: &Denial,
) -> Result<(), ChaincodeError> {
    let mut patient = match load_patient(stub, &context.pseudonym) {
        Ok(patient) => patient,
        Err(_) => return Ok(()),
    };
    let entry = AuditEntry {
        action: context.action as i32,
        category: context.category.clone(),
        item: context.item.clone(),
        study_id: context.study_id.clone(),
        outcome: Outcome::Denied as i32,
        denied: Some(reason.to_proto()),
        ..AuditEntry::default()
    };
    // The same denial again by the same caller, among the last few entries: counted on that
    // entry (THREAT-MODEL: no one can bury a patient's trail in denials, even alternating
    // between a few).
    let newest = patient.record.next_audit_seq;
    let oldest = newest
        .saturating_sub(COALESCE_WINDOW)
        .saturating_add(1)
        .max(1);
    for seq in (oldest..=newest).rev() {
        let key = keys::audit(&patient.hex, seq);
        if let Some(mut earlier) = get::<AuditEntry>(stub, &key)?
            && earlier.actor == stub.creator().name
            && earlier.outcome == entry.outcome
            && earlier.action == entry.action
            && earlier.category == entry.category
            && earlier.item == entry.item
            && earlier.study_id == entry.study_id
            && earlier.denied == entry.denied
        {
            earlier.repeats = earlier.repeats.saturating_add(1);
            earlier.last_time = stub.time();
            return put(stub, &key, &earlier);
        }
    }
    patient.audit(stub, entry)?;
    patient.save(stub)
}
