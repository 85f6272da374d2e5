//! A limit on every argument, and the checks that enforce them.

use crate::error::ChaincodeError;

pub const PSEUDONYM_LEN: usize = 32;
pub const KEY_LEN: usize = 32;
pub const HASH_LEN: usize = 32;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_ID_LEN: usize = 64;
pub const MAX_TITLE_LEN: usize = 256;
pub const MAX_REASON_LEN: usize = 512;
/// An HPKE-wrapped 32-byte key is 80 bytes; leave room for other suites.
pub const MAX_ENVELOPE_LEN: usize = 512;
pub const MAX_PRIVATE_DATA_LEN: usize = 64 * 1024;
/// Largest clinical file the ledger will reference: 64 GiB.
pub const MAX_FILE_SIZE: u64 = 64 << 30;
/// Longest permission window: ten years.
pub const MAX_WINDOW_SECONDS: i64 = 10 * 366 * 24 * 3600;
/// Longest emergency access: 24 hours.
pub const MAX_EMERGENCY_SECONDS: i64 = 24 * 3600;
pub const MAX_CATEGORY_KEYS: usize = 64;
pub const MAX_ENVELOPE_UPDATES: usize = 1000;
/// Most permissions one grantee may hold on one record (each check scans them).
pub const MAX_PERMISSIONS_PER_GRANTEE: usize = 256;
pub const MAX_AUDIT_PAGE: usize = 500;
pub const MAX_LIST: usize = 1000;

pub fn exact_len(field: &'static str, value: &[u8], len: usize) -> Result<(), ChaincodeError> {
    if value.len() != len {
        return Err(ChaincodeError::invalid(
            field,
            format!("must be {len} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

pub fn max_len(field: &'static str, value: &[u8], max: usize) -> Result<(), ChaincodeError> {
    if value.len() > max {
        return Err(ChaincodeError::invalid(
            field,
            format!("at most {max} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

/// Identity names, as the CA allows them: 1–64 ASCII letters, digits and `. - _ @`,
/// starting with a letter or digit.
pub fn name(field: &'static str, value: &str) -> Result<(), ChaincodeError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'));
    if !ok {
        return Err(ChaincodeError::invalid(
            field,
            "1 to 64 ASCII letters, digits and . - _ @, starting with a letter or digit",
        ));
    }
    Ok(())
}

/// Identifiers (categories, studies, items): 1–64 of `a-z 0-9 - _ .`, starting with a
/// letter or digit. They appear in storage keys and object paths, so nothing else.
pub fn identifier(field: &'static str, value: &str) -> Result<(), ChaincodeError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && (value.as_bytes()[0].is_ascii_lowercase() || value.as_bytes()[0].is_ascii_digit())
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if !ok {
        return Err(ChaincodeError::invalid(
            field,
            "1 to 64 of a-z 0-9 - _ . starting with a letter or digit",
        ));
    }
    Ok(())
}

/// Free text (titles, reasons): bounded, no control characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<(), ChaincodeError> {
    if value.len() > max {
        return Err(ChaincodeError::invalid(
            field,
            format!("at most {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ChaincodeError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// What the ledger records of a stored file: its SHA-256, its size, and its file key wrapped
/// to the `wrapped_to` key (category or study).
pub fn stored_object(
    sha256: &[u8],
    size: u64,
    wrapped_dek: &[u8],
    wrapped_to: &str,
) -> Result<(), ChaincodeError> {
    exact_len("sha256", sha256, HASH_LEN)?;
    if size > MAX_FILE_SIZE {
        return Err(ChaincodeError::invalid("size", "larger than 64 GiB"));
    }
    if wrapped_dek.is_empty() {
        return Err(ChaincodeError::invalid(
            "wrapped_dek",
            format!("the file key wrapped to the {wrapped_to} key is required"),
        ));
    }
    max_len("wrapped_dek", wrapped_dek, MAX_ENVELOPE_LEN)
}
