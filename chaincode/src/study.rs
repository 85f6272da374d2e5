//! Study pseudonyms their patient owns (issue 20 item 3, docs/adr/0014). A patient's
//! pseudonym in a study is the hash of an Ed25519 key only they hold (derived from their
//! record secret `K` and the study id: `medledger_crypto::derive_study_identity`). A grant
//! that lets a clinician share a record into a study names the study pseudonym with that
//! key and the key's signature on (study, record); the chaincode checks the hash and the
//! signature and nothing else, so no patient can name — and later erase — another patient's
//! copies in a study, and the ledger never needs to know which study pseudonyms are whose.

use medledger_crypto::{
    Signature, SignatureDomain, VerifyingKey, study_grant_statement, study_pseudonym_of,
};

use crate::error::ChaincodeError;
use crate::limits::{self, PSEUDONYM_LEN};

/// Checks that `study_pseudonym` in study `study_id` is owned by whoever grants on record
/// `record`: it is the hash of `owner_key` in that study (`SHA-256("medledger/v2/study-
/// pseudonym" ‖ len(study_id) ‖ study_id ‖ key)`, as `medledger_crypto::study_pseudonym_of`),
/// and `signature` is that key's, domain
/// `StudyGrant`, on `study_grant_statement(study_id, record)`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field: a pseudonym, key or signature of the wrong length, a
/// key that is not an Ed25519 point, a pseudonym that is not the key's hash, a signature
/// that does not verify (strictly, RFC 8032 §5.1.7 with no malleable encodings).
pub fn check_owner(
    study_id: &str,
    record: &[u8],
    study_pseudonym: &[u8],
    owner_key: &[u8],
    signature: &[u8],
) -> Result<(), ChaincodeError> {
    limits::exact_len("study_pseudonym", study_pseudonym, PSEUDONYM_LEN)?;
    let Ok(owner_key) = <[u8; 32]>::try_from(owner_key) else {
        return Err(ChaincodeError::invalid(
            "study_owner_key",
            format!("must be 32 bytes, got {}", owner_key.len()),
        ));
    };
    limits::exact_len(
        "study_owner_signature",
        signature,
        medledger_crypto::SIGNATURE_LEN,
    )?;
    if study_pseudonym_of(study_id, &owner_key).0.as_slice() != study_pseudonym {
        return Err(ChaincodeError::invalid(
            "study_pseudonym",
            "is not the hash of study_owner_key: a grant names only the study pseudonym of \
             its own study key",
        ));
    }
    let key = VerifyingKey::from_bytes(&owner_key)
        .map_err(|_| ChaincodeError::invalid("study_owner_key", "is not an Ed25519 key"))?;
    let signature = Signature::from_slice(signature)
        .map_err(|e| ChaincodeError::invalid("study_owner_signature", e))?;
    key.verify(
        SignatureDomain::StudyGrant,
        &study_grant_statement(study_id, record),
        &signature,
    )
    .map_err(|_| {
        ChaincodeError::invalid(
            "study_owner_signature",
            "does not verify: the study key must sign this study and this record",
        )
    })
}
