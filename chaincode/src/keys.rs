//! The layout of the chaincode's keys in world state. Pseudonyms appear as lowercase hex.
//!
//! ```text
//! category/{name}                              Category (registered beyond the defaults)
//! patient/{P}                                  PatientRecord
//! patient-owner/{owner}                        P (one record per patient identity)
//! patient/{P}/key/{category}                   CategoryKey (current epoch)
//! patient/{P}/key-chain/{category}/{epoch}     epoch's private key wrapped to epoch + 1's
//! patient/{P}/perm/{grantee}/{id}              Permission, standing (the live index)
//! patient/{P}/perm-ended/{grantee}/{MAX-N}     Permission perm-N, revoked or swept (newest first)
//! patient/{P}/perm-id/{id}                     grantee (find a permission by id)
//! patient/{P}/item/{id}                        ClinicalItem
//! patient/{P}/private                          PrivateData
//! patient/{P}/audit/{seq, 20 digits}           AuditEntry
//! grantee/{name}/{P}                           (index: records where name holds a permission)
//! study/{id}                                   Study
//! study-item/{id}/{study P}/{item}            StudyItem
//! researcher/{name}/{study}                    (index: a researcher's studies)
//! study-source/{id}/{study P}                  P (whose trail a study access is audited on)
//! object-deletion/{path}                       PendingObjectDeletion (an erased object the
//!                                              gateway has not confirmed deleted)
//! purge-cursor/{P}                             PurgeCursor (an erasure's purge under way)
//! purge-study/{P}/{study}/{study P}            PurgeStudy (a study whose copies it owes)
//! ```

pub fn pseudonym_hex(pseudonym: &[u8]) -> String {
    hex::encode(pseudonym)
}

pub fn category(name: &str) -> String {
    format!("category/{name}")
}
pub fn patient(p: &str) -> String {
    format!("patient/{p}")
}
pub fn patient_owner(owner: &str) -> String {
    format!("patient-owner/{owner}")
}
pub fn category_key(p: &str, category: &str) -> String {
    format!("patient/{p}/key/{category}")
}
pub fn category_keys_prefix(p: &str) -> String {
    format!("patient/{p}/key/")
}
/// The link of the key chain that opens `category`'s key of `epoch` with the key of
/// `epoch + 1` (epoch as 10 digits, so links sort by epoch).
pub fn key_chain_link(p: &str, category: &str, epoch: u32) -> String {
    format!("patient/{p}/key-chain/{category}/{epoch:010}")
}
pub fn key_chain_prefix(p: &str) -> String {
    format!("patient/{p}/key-chain/")
}
pub fn permission(p: &str, grantee: &str, id: &str) -> String {
    format!("patient/{p}/perm/{grantee}/{id}")
}
pub fn permissions_of(p: &str, grantee: &str) -> String {
    format!("patient/{p}/perm/{grantee}/")
}
pub fn permissions_prefix(p: &str) -> String {
    format!("patient/{p}/perm/")
}
/// Where a permission goes once revoked or ended: out of the live index that every access
/// scans and every cap counts, still listed for the patient and auditors. Keyed newest
/// first: for `perm-N`, the 20 digits of `u64::MAX - N`, so an ascending scan reads the most
/// recent ended permissions first (what a refused reader's reason is drawn from).
pub fn ended_permission(p: &str, grantee: &str, id: &str) -> String {
    match id.strip_prefix("perm-").and_then(|n| n.parse::<u64>().ok()) {
        Some(n) => format!(
            "patient/{p}/perm-ended/{grantee}/{:020}",
            u64::MAX.saturating_sub(n)
        ),
        // Ids are made by the chaincode as perm-N; any other is kept as it is.
        None => format!("patient/{p}/perm-ended/{grantee}/{id}"),
    }
}
pub fn ended_permissions_of(p: &str, grantee: &str) -> String {
    format!("patient/{p}/perm-ended/{grantee}/")
}
pub fn ended_permissions_prefix(p: &str) -> String {
    format!("patient/{p}/perm-ended/")
}
pub fn permission_id(p: &str, id: &str) -> String {
    format!("patient/{p}/perm-id/{id}")
}
pub fn item(p: &str, id: &str) -> String {
    format!("patient/{p}/item/{id}")
}
pub fn items_prefix(p: &str) -> String {
    format!("patient/{p}/item/")
}
/// A commitment (hex) some record's field claimed (docs/adr/0017): kept for good, so that
/// no other field, of this record or another, claims it again (and no purge of one deletes
/// another's value).
pub fn private_commitment(commitment_hex: &str) -> String {
    format!("private-commitment/{commitment_hex}")
}
pub fn private_data(p: &str) -> String {
    format!("patient/{p}/private")
}
pub fn audit(p: &str, seq: u64) -> String {
    format!("patient/{p}/audit/{seq:020}")
}
pub fn audit_prefix(p: &str) -> String {
    format!("patient/{p}/audit/")
}
pub fn grantee_index(name: &str, p: &str) -> String {
    format!("grantee/{name}/{p}")
}
pub fn grantee_prefix(name: &str) -> String {
    format!("grantee/{name}/")
}
pub fn study(id: &str) -> String {
    format!("study/{id}")
}
pub fn study_item(id: &str, study_pseudonym: &str, item: &str) -> String {
    format!("study-item/{id}/{study_pseudonym}/{item}")
}
pub fn study_items_prefix(id: &str) -> String {
    format!("study-item/{id}/")
}
/// The record study copy `item` came from (its pseudonym in hex): per copy, so that erasure
/// and the trail follow each copy's own record (docs/adr/0014). Never in `StudyItem`,
/// which the study's researcher reads.
pub fn study_item_source(id: &str, study_pseudonym: &str, item: &str) -> String {
    format!("study-item-source/{id}/{study_pseudonym}/{item}")
}
/// The record a study pseudonym's copies came from (kept for copies made before per-copy
/// sources, [`study_item_source`]).
pub fn study_source(id: &str, study_pseudonym: &str) -> String {
    format!("study-source/{id}/{study_pseudonym}")
}
pub fn study_items_of(id: &str, study_pseudonym: &str) -> String {
    format!("study-item/{id}/{study_pseudonym}/")
}
pub fn researcher_study(name: &str, study: &str) -> String {
    format!("researcher/{name}/{study}")
}
pub fn researcher_prefix(name: &str) -> String {
    format!("researcher/{name}/")
}
pub fn studies_prefix() -> &'static str {
    "study/"
}

/// Object path of a clinical file: `patients/<P>/<category>/<item_id>`.
pub fn item_path(p: &str, category: &str, item: &str) -> String {
    format!("patients/{p}/{category}/{item}")
}

/// Object path of a study copy: `studies/<study>/<study P>/<item_id>`.
pub fn study_item_path(study: &str, study_pseudonym: &str, item: &str) -> String {
    format!("studies/{study}/{study_pseudonym}/{item}")
}

/// An object an erasure named, until the storage gateway confirms it deleted
/// (`crate::erasure`).
pub fn object_deletion(path: &str) -> String {
    format!("{}{path}", object_deletions_prefix())
}

pub fn object_deletions_prefix() -> &'static str {
    "object-deletion/"
}

/// Where an erased record's purge stands, while it is under way.
pub fn purge_cursor(p: &str) -> String {
    format!("{}{p}", purge_cursors_prefix())
}

pub fn purge_cursors_prefix() -> &'static str {
    "purge-cursor/"
}

/// A study whose copies the purge of record `p` still has to look at.
pub fn purge_study(p: &str, study: &str, study_pseudonym: &str) -> String {
    format!("purge-study/{p}/{study}/{study_pseudonym}")
}

pub fn purge_studies_prefix(p: &str) -> String {
    format!("purge-study/{p}/")
}
