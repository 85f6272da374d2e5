//! Key material as private data (docs/adr/0017, after Fabric's private data collections).
//! On a ledger that keeps private data (format 5), a field that holds key material — a
//! grant's envelope, a rotation's new envelopes, the key chain's link — comes as a salted
//! commitment the transaction carries, never in clear; state keeps the commitment, every
//! peer that acknowledged it keeps the value, and only a query gives the value back, to
//! whom the function allows. Below format 5 the clear field is kept as before and the
//! commitment field is ignored, as by the builds that wrote those chains.

use crate::error::ChaincodeError;
use crate::limits::HASH_LEN;
use crate::stub::{Stub, StubError};

pub use crate::stub::PrivateKeys;

/// Key material the chaincode stores, as the ledger's format has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// None given (a right that carries no key).
    Absent,
    /// Below format 5: the value itself, at most the field's bound.
    Clear(Vec<u8>),
    /// Format 5: the commitment (32 bytes) to a private value the transaction carries.
    Committed([u8; 32]),
}

impl KeyMaterial {
    pub fn is_absent(&self) -> bool {
        matches!(self, KeyMaterial::Absent)
    }

    /// The (clear, commitment) pair to store in a record's two fields.
    pub fn into_fields(self) -> (Vec<u8>, Vec<u8>) {
        match self {
            KeyMaterial::Absent => (Vec::new(), Vec::new()),
            KeyMaterial::Clear(value) => (value, Vec::new()),
            KeyMaterial::Committed(commitment) => (Vec::new(), commitment.to_vec()),
        }
    }
}

/// Takes the key material of field `field` from a transaction's arguments: `clear` (the
/// value) and `commitment` (its commitment). On a ledger that keeps private data the value
/// must come as a commitment this transaction carries (claimed here, once); below it the
/// commitment is ignored and the value is bounded by `max_len` bytes.
///
/// # Errors
/// `INVALID_ARGUMENT` naming `field`: key material in clear on a private-data ledger, a
/// commitment that is not 32 bytes, not among the transaction's, claimed twice, or taken
/// by the ledger before (`private-commitment/{c}` in state, kept for good), or a clear
/// value over `max_len`.
pub fn take(
    stub: &mut dyn Stub,
    field: &'static str,
    clear: Vec<u8>,
    commitment: &[u8],
    max_len: usize,
) -> Result<KeyMaterial, ChaincodeError> {
    take_since(
        stub,
        PrivateKeys::RecordKeys,
        field,
        clear,
        commitment,
        max_len,
    )
}

/// [`take`] for a field that is private from the rules `since` on (below them, kept in
/// clear as before).
///
/// # Errors
/// As [`take`].
pub fn take_since(
    stub: &mut dyn Stub,
    since: PrivateKeys,
    field: &'static str,
    clear: Vec<u8>,
    commitment: &[u8],
    max_len: usize,
) -> Result<KeyMaterial, ChaincodeError> {
    if stub.private_keys() < since {
        crate::limits::max_len(field, &clear, max_len)?;
        return Ok(if clear.is_empty() {
            KeyMaterial::Absent
        } else {
            KeyMaterial::Clear(clear)
        });
    }
    if !clear.is_empty() {
        return Err(ChaincodeError::invalid(
            field,
            "this ledger keeps key material as private data: send its commitment, and the \
             value beside the transaction (PutPrivateData), never the value in a block",
        ));
    }
    if commitment.is_empty() {
        return Ok(KeyMaterial::Absent);
    }
    let Ok(fixed) = <[u8; HASH_LEN]>::try_from(commitment) else {
        return Err(ChaincodeError::invalid(
            field,
            format!("a commitment is {HASH_LEN} bytes, got {}", commitment.len()),
        ));
    };
    if !stub.claim_private(commitment) {
        return Err(ChaincodeError::invalid(
            field,
            "not one of this transaction's private commitments, or claimed by another field",
        ));
    }
    // A commitment names one value of one field for good: the private column family is
    // keyed by it, so a second claim (by another record, or after a purge) could make one
    // record's purge delete another's value, or bring an erased value back.
    let marker = crate::keys::private_commitment(&hex::encode(fixed));
    if stub.get(&marker)?.is_some() {
        return Err(ChaincodeError::invalid(
            field,
            "a commitment the ledger took before: draw a fresh salt for each value",
        ));
    }
    stub.put(&marker, Vec::new())?;
    Ok(KeyMaterial::Committed(fixed))
}

/// Refuses a transaction that carries a commitment no field of its arguments claimed:
/// nothing would refer to the value every acknowledging peer keeps.
///
/// # Errors
/// `INVALID_ARGUMENT` (`private_commitments`).
pub fn all_claimed(stub: &dyn Stub) -> Result<(), ChaincodeError> {
    match stub.unclaimed_private() {
        0 => Ok(()),
        n => Err(ChaincodeError::invalid(
            "private_commitments",
            format!("{n} private values that no field of the arguments refers to"),
        )),
    }
}

/// Queries only: the key material a record holds in its (`clear`, `commitment`) fields, as
/// (value, salt) — the value itself and no salt below format 5, else the private value from
/// this peer and the salt the client checks it with, or both empty when this peer does not
/// hold it. A peer answers each value it holds, and the client gathers the others from
/// other peers: the values of one transaction may be held by peers that hold none of
/// another's.
///
/// # Errors
/// `Corrupt` for a stored commitment that is not 32 bytes; the stub's other errors.
pub fn read(
    stub: &dyn Stub,
    clear: &[u8],
    commitment: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), ChaincodeError> {
    if commitment.is_empty() {
        return Ok((clear.to_vec(), Vec::new()));
    }
    let fixed = <[u8; HASH_LEN]>::try_from(commitment)
        .map_err(|_| ChaincodeError::Corrupt("a stored private commitment".into()))?;
    match stub.private_value(&fixed) {
        Ok((salt, value)) => Ok((value, salt.to_vec())),
        Err(StubError::PrivateValueUnavailable) => Ok((Vec::new(), Vec::new())),
        Err(e) => Err(e.into()),
    }
}

/// Purges the private value behind a stored `commitment` (empty: none), for an erasure.
pub fn purge(stub: &mut dyn Stub, commitment: &[u8]) -> Result<(), ChaincodeError> {
    if let Ok(fixed) = <[u8; HASH_LEN]>::try_from(commitment) {
        stub.purge_private(&fixed)?;
    }
    Ok(())
}
