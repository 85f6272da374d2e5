//! Free text the ledger keeps only sealed (issue 20 item 4, docs/adr/0013): an emergency
//! access's reason is encrypted on the clinician's machine to the record's owner and to every
//! auditor the configuration in force names (`medledger_crypto::seal_text`). The chaincode
//! cannot read it; it checks what it can: the size, the shape of each reader's entry, and
//! that the readers are exactly the ones the rules name, so that no clinician can leave the
//! patient or an auditor out, or add a reader of their own choosing.

use medledger_proto::v1::{PatientRecord, SealedText};

use crate::error::ChaincodeError;
use crate::limits::{KEY_LEN, MAX_REASON_LEN};
use crate::stub::Stub;

/// AES-256-GCM's tag, which ends every sealed ciphertext.
pub const SEALED_TAG_LEN: usize = 16;
/// A content key wrapped with HPKE to one reader: enc (32) ‖ ciphertext (32) ‖ tag (16).
pub const WRAPPED_KEY_LEN: usize = 80;
/// The commitment to the content key (SHA-256).
pub const KEY_COMMITMENT_LEN: usize = 32;
/// Most readers of one sealed text: the record's owner and up to 32 named auditors
/// (`medledger_execution::config::MAX_AUDITORS`).
pub const MAX_SEALED_READERS: usize = 33;

/// X25519 public keys of small order, as encoded (RFC 7748; the list libsodium's
/// `has_small_order` refuses): any private key agrees with them on an all-zero secret, so
/// nothing can be sealed to them. (Their variants with the top bit set are refused as not
/// canonical.)
pub const SMALL_ORDER: [[u8; 32]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    high(0xec),
    high(0xed),
    high(0xee),
];

/// `first ‖ 0xff × 30 ‖ 0x7f`: p − 1, p and p + 1 for 0xec, 0xed, 0xee.
const fn high(first: u8) -> [u8; 32] {
    let mut key = [0xff; 32];
    key[0] = first;
    key[31] = 0x7f;
    key
}

/// Checks that `key` is an X25519 public key something can be sealed to: 32 bytes, its top
/// bit clear (RFC 7748 §5 encodings as X25519 makes them), not of small order.
///
/// # Errors
/// `INVALID_ARGUMENT` naming `field`.
pub fn encryption_key(field: &'static str, key: &[u8]) -> Result<(), ChaincodeError> {
    let Ok(key) = <[u8; KEY_LEN]>::try_from(key) else {
        return Err(ChaincodeError::invalid(
            field,
            format!("must be {KEY_LEN} bytes, got {}", key.len()),
        ));
    };
    if key[31] & 0x80 != 0 {
        // X25519 ignores the top bit, HPKE does not: a key with it set is not the encoding
        // of its own point, and a wrapped key would not open for its holder.
        return Err(ChaincodeError::invalid(
            field,
            "is not a canonical X25519 key (its top bit is set)",
        ));
    }
    if SMALL_ORDER.contains(&key) {
        return Err(ChaincodeError::invalid(
            field,
            "is an X25519 key of small order, to which nothing can be sealed",
        ));
    }
    Ok(())
}

/// Refuses a reason given in clear text (the old `reason` fields, kept only for decoding).
///
/// # Errors
/// `INVALID_ARGUMENT` on `reason` when it is not empty.
pub fn refuse_clear_reason(reason: &str) -> Result<(), ChaincodeError> {
    if reason.is_empty() {
        return Ok(());
    }
    Err(ChaincodeError::invalid(
        "reason",
        "is never taken in clear text: seal it to the patient and the auditors (sealed_reason)",
    ))
}

/// The X25519 keys a reason about `record` must be sealed to: the record's owner key (when
/// the record has one) and every auditor the configuration in force names, each once.
pub fn reason_readers(stub: &dyn Stub, record: &PatientRecord) -> Vec<[u8; 32]> {
    let mut readers: Vec<[u8; 32]> = Vec::new();
    if let Ok(owner) = <[u8; 32]>::try_from(record.owner_encryption_key.as_slice()) {
        readers.push(owner);
    }
    for key in stub.auditor_keys() {
        if !readers.contains(key) {
            readers.push(*key);
        }
    }
    readers
}

/// Checks a sealed reason about `record`: a text of 1 to [`MAX_REASON_LEN`] bytes, each
/// reader's entry well formed and named once, and the readers exactly [`reason_readers`]
/// (any at all, at most [`MAX_SEALED_READERS`], for a record without an owner key on a
/// network that names no auditor: the reason must still never be taken in clear).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field; a reader missing or not expected says which, so
/// that a client that read the readers before the configuration changed asks again.
pub fn check_reason(
    stub: &dyn Stub,
    record: &PatientRecord,
    sealed: Option<&SealedText>,
) -> Result<(), ChaincodeError> {
    let Some(sealed) = sealed else {
        return Err(ChaincodeError::invalid(
            "sealed_reason",
            "say why emergency access is needed, sealed to the patient and the auditors",
        ));
    };
    check_shape(sealed)?;
    let keys: Vec<&[u8]> = sealed
        .readers
        .iter()
        .map(|r| r.public_key.as_slice())
        .collect();
    exactly_the_readers(stub, record, &keys, "sealed_reason.readers")
}

/// Checks a sealed text's shape, whoever its readers are: a text of 1 to
/// [`MAX_REASON_LEN`] bytes and its tag, a [`KEY_COMMITMENT_LEN`]-byte key commitment, and 1
/// to [`MAX_SEALED_READERS`] readers, each a well-formed X25519 key named once with a
/// [`WRAPPED_KEY_LEN`]-byte wrapped key.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the `sealed_reason` field at fault.
fn check_shape(sealed: &SealedText) -> Result<(), ChaincodeError> {
    let len = sealed.ciphertext.len();
    if len <= SEALED_TAG_LEN || len > MAX_REASON_LEN + SEALED_TAG_LEN {
        return Err(ChaincodeError::invalid(
            "sealed_reason.ciphertext",
            format!(
                "a reason of 1 to {MAX_REASON_LEN} bytes and its {SEALED_TAG_LEN}-byte tag, got {len} bytes"
            ),
        ));
    }
    if sealed.key_commitment.len() != KEY_COMMITMENT_LEN {
        return Err(ChaincodeError::invalid(
            "sealed_reason.key_commitment",
            format!(
                "must be {KEY_COMMITMENT_LEN} bytes, got {}",
                sealed.key_commitment.len()
            ),
        ));
    }
    if sealed.readers.is_empty() || sealed.readers.len() > MAX_SEALED_READERS {
        return Err(ChaincodeError::invalid(
            "sealed_reason.readers",
            format!("1 to {MAX_SEALED_READERS}"),
        ));
    }
    for (i, reader) in sealed.readers.iter().enumerate() {
        encryption_key("sealed_reason.readers.public_key", &reader.public_key)?;
        if reader.wrapped_key.len() != WRAPPED_KEY_LEN {
            return Err(ChaincodeError::invalid(
                "sealed_reason.readers.wrapped_key",
                format!(
                    "must be {WRAPPED_KEY_LEN} bytes, got {}",
                    reader.wrapped_key.len()
                ),
            ));
        }
        if sealed
            .readers
            .iter()
            .take(i)
            .any(|r| r.public_key == reader.public_key)
        {
            return Err(ChaincodeError::invalid(
                "sealed_reason.readers",
                "a reader appears twice",
            ));
        }
    }
    Ok(())
}

/// Decodes `value` as a `SealedText` in its canonical encoding (nothing but its fields, so
/// that no bytes ride along unseen) and of [`check_shape`]'s shape, whoever its readers are:
/// what a reader of a private sealed reason checks before showing it.
///
/// # Errors
/// `INVALID_ARGUMENT` on `sealed_reason` naming what is wrong.
pub fn well_formed(value: &[u8]) -> Result<SealedText, ChaincodeError> {
    use prost::Message;
    let sealed = SealedText::decode(value)
        .map_err(|e| ChaincodeError::invalid("sealed_reason", format!("not a SealedText: {e}")))?;
    if sealed.encode_to_vec() != value {
        return Err(ChaincodeError::invalid(
            "sealed_reason",
            "not in its canonical encoding (unknown or repeated fields)",
        ));
    }
    check_shape(&sealed)?;
    Ok(sealed)
}

/// Ledger format 7 (docs/adr/0017): checks a private sealed reason, as a peer asked to
/// acknowledge it sees it (`PutPrivateData`), against the readers its transaction names
/// (`EmergencyAccessArgs.sealed_reason_readers`, which the chaincode checks at execution):
/// `value` must be a `SealedText` in its canonical encoding (nothing but its fields, so
/// that no bytes ride along unseen), of [`check_shape`]'s shape, sealed to exactly `readers`
/// in the same order. An honest peer acknowledges nothing else, and a transaction needs f+1
/// acknowledgments, so a committed reason names its readers as the block does. (Whether
/// each wrapped key opens only its reader can tell; the clinician's signed transaction is
/// their evidence.)
///
/// # Errors
/// `INVALID_ARGUMENT` on `sealed_reason` naming what is wrong.
pub fn check_private_reason(value: &[u8], readers: &[Vec<u8>]) -> Result<(), ChaincodeError> {
    let sealed = well_formed(value)?;
    let named = sealed.readers.iter().map(|r| r.public_key.as_slice());
    if !named.eq(readers.iter().map(Vec::as_slice)) {
        return Err(ChaincodeError::invalid(
            "sealed_reason.readers",
            "not the readers the transaction names (sealed_reason_readers), in their order",
        ));
    }
    Ok(())
}

/// Ledger format 7 (docs/adr/0017): checks the readers a private sealed reason about
/// `record` names in the transaction (`EmergencyAccessArgs.sealed_reason_readers`): 1 to
/// [`MAX_SEALED_READERS`] X25519 keys, each well formed and named once, exactly
/// [`reason_readers`] (any, for a record without an owner key on a network that names no
/// auditor). The sealed text itself is private: its readers' entries are the clinician's
/// word, as the wrapped keys were before (no one but a reader can tell one that does not
/// open).
///
/// # Errors
/// `INVALID_ARGUMENT` on `sealed_reason_readers`, as [`check_reason`].
pub fn check_reader_keys(
    stub: &dyn Stub,
    record: &PatientRecord,
    keys: &[Vec<u8>],
) -> Result<(), ChaincodeError> {
    if keys.is_empty() || keys.len() > MAX_SEALED_READERS {
        return Err(ChaincodeError::invalid(
            "sealed_reason_readers",
            format!("1 to {MAX_SEALED_READERS}"),
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        encryption_key("sealed_reason_readers", key)?;
        if keys.iter().take(i).any(|k| k == key) {
            return Err(ChaincodeError::invalid(
                "sealed_reason_readers",
                "a reader appears twice",
            ));
        }
    }
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    exactly_the_readers(stub, record, &keys, "sealed_reason_readers")
}

/// Checks that `keys` (distinct) are exactly [`reason_readers`] of `record`, or any when it
/// names none; errors name `field`.
fn exactly_the_readers(
    stub: &dyn Stub,
    record: &PatientRecord,
    keys: &[&[u8]],
    field: &'static str,
) -> Result<(), ChaincodeError> {
    let expected = reason_readers(stub, record);
    if expected.is_empty() {
        return Ok(());
    }
    if let Some(missing) = expected.iter().find(|k| !keys.contains(&k.as_slice())) {
        let who = if record.owner_encryption_key == missing.as_slice() {
            "the record's owner".to_string()
        } else {
            format!("the auditor with key {}", hex::encode(missing))
        };
        return Err(ChaincodeError::invalid(
            field,
            format!("not sealed to {who}; ask the ledger for the readers again (reason_readers)"),
        ));
    }
    if keys.len() != expected.len() {
        return Err(ChaincodeError::invalid(
            field,
            "sealed to a key that is neither the record's owner nor a named auditor",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_order_keys_are_refused_and_others_taken() {
        for key in SMALL_ORDER {
            assert!(encryption_key("k", &key).is_err());
            let mut top = key;
            top[31] |= 0x80;
            assert!(encryption_key("k", &top).is_err(), "not canonical");
        }
        assert!(encryption_key("k", &[9; 32]).is_ok());
        assert!(encryption_key("k", &[9; 31]).is_err());
    }

    #[test]
    fn a_private_reason_must_be_a_canonical_sealed_text_to_the_readers_named_in_order() {
        use medledger_proto::v1::SealedTextReader;
        use prost::Message;
        let sealed = |keys: &[[u8; 32]]| SealedText {
            ciphertext: vec![1; 40],
            readers: keys
                .iter()
                .map(|k| SealedTextReader {
                    public_key: k.to_vec(),
                    wrapped_key: vec![2; WRAPPED_KEY_LEN],
                })
                .collect(),
            key_commitment: vec![3; KEY_COMMITMENT_LEN],
        };
        let (a, b) = ([9; 32], [10; 32]);
        let named = [a.to_vec(), b.to_vec()];
        let good = sealed(&[a, b]).encode_to_vec();
        assert!(check_private_reason(&good, &named).is_ok());
        assert!(
            check_private_reason(&good, &named[..1]).is_err(),
            "one left out"
        );
        assert!(check_private_reason(&sealed(&[b, a]).encode_to_vec(), &named).is_err());
        assert!(check_private_reason(&sealed(&[a]).encode_to_vec(), &named).is_err());
        assert!(check_private_reason(&sealed(&[a, b, [11; 32]]).encode_to_vec(), &named).is_err());
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0x7a, 1, 0]);
        assert!(
            check_private_reason(&trailing, &named).is_err(),
            "unknown field"
        );
        assert!(check_private_reason(b"\xffjunk", &named).is_err());
        let mut no_text = sealed(&[a, b]);
        no_text.ciphertext.truncate(SEALED_TAG_LEN);
        assert!(check_private_reason(&no_text.encode_to_vec(), &named).is_err());
    }
}
