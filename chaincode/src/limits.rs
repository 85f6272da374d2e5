//! A limit on every argument, and the checks that enforce them.

use crate::error::ChaincodeError;

pub const PSEUDONYM_LEN: usize = 32;
pub const KEY_LEN: usize = 32;
/// An Ed25519 signature (RFC 8032): 64 bytes.
pub const SIGNATURE_LEN: usize = 64;
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
/// Earliest instant a client may name (permission windows): the Unix epoch, in seconds.
pub const MIN_TIME_S: i64 = 0;
/// Latest instant a client may name: 9999-12-31T23:59:59Z, in Unix seconds (the end of
/// the range FHIR `instant` and RFC 3339 can write).
pub const MAX_TIME_S: i64 = 253_402_300_799;
/// Longest emergency access: 24 hours.
pub const MAX_EMERGENCY_SECONDS: i64 = 24 * 3600;
pub const MAX_CATEGORY_KEYS: usize = 64;
pub const MAX_ENVELOPE_UPDATES: usize = 1000;
/// Most links of the key chain a read returns (epochs between the reader's key and the
/// item's); an item older than that is opened by a reader granted at a nearer epoch.
pub const MAX_KEY_CHAIN: u32 = 256;
/// Most permissions live or still to start that one grantee may hold on one record from the
/// patient's grants (each check scans them; ended ones do not count).
pub const MAX_PERMISSIONS_PER_GRANTEE: usize = 256;
/// Most emergency accesses live at once for one clinician on one record: counted apart from
/// the patient's grants, so no number of grants can lock a clinician out of break-glass.
pub const MAX_EMERGENCY_PERMISSIONS_PER_GRANTEE: usize = 256;
/// The live index of one grantee on one record holds at most this many permissions.
pub const MAX_STANDING_PERMISSIONS: usize =
    MAX_PERMISSIONS_PER_GRANTEE + MAX_EMERGENCY_PERMISSIONS_PER_GRANTEE;
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
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
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
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
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

/// A permission window `[from, until)` in Unix seconds, as a client proposes it: both ends
/// inside [`MIN_TIME_S`, `MAX_TIME_S`], `from < until`, at most [`MAX_WINDOW_SECONDS`] long.
/// Every bound is checked before any arithmetic, so no value can overflow.
pub fn window(from: i64, until: i64) -> Result<(), ChaincodeError> {
    let in_range = |t: i64| (MIN_TIME_S..=MAX_TIME_S).contains(&t);
    if !in_range(from) || !in_range(until) {
        return Err(ChaincodeError::invalid(
            "window",
            format!("from and until must be Unix seconds between {MIN_TIME_S} and {MAX_TIME_S}"),
        ));
    }
    if from >= until {
        return Err(ChaincodeError::invalid(
            "window",
            "from must be before until",
        ));
    }
    // Both ends are in [0, MAX_TIME_S]: the difference cannot overflow; checked all the same.
    if until
        .checked_sub(from)
        .is_none_or(|length| length > MAX_WINDOW_SECONDS)
    {
        return Err(ChaincodeError::invalid("window", "longer than ten years"));
    }
    Ok(())
}

/// Resolves a grant's window `[from, until)` in Unix seconds against consensus time `now_s`
/// (issue 19 item 7): with `from_commit` the window starts at `now_s` (`from` must be 0);
/// with `duration_seconds` > 0 it ends that many seconds after its start (`until` must be 0).
/// The result is checked as [`window`] checks a client's window, and must not have ended at
/// `now_s`. Errors: [`ChaincodeError::InvalidArgument`] on `window` or `duration_seconds`.
pub fn resolve_window(
    from: i64,
    until: i64,
    from_commit: bool,
    duration_seconds: i64,
    now_s: i64,
) -> Result<(i64, i64), ChaincodeError> {
    if from_commit && from != 0 {
        return Err(ChaincodeError::invalid(
            "window",
            "a window that starts at commit gives no from",
        ));
    }
    if duration_seconds != 0 && until != 0 {
        return Err(ChaincodeError::invalid(
            "window",
            "give until or duration_seconds, not both",
        ));
    }
    if !(0..=MAX_WINDOW_SECONDS).contains(&duration_seconds) {
        return Err(ChaincodeError::invalid(
            "duration_seconds",
            format!("between 1 and {MAX_WINDOW_SECONDS} seconds"),
        ));
    }
    let from = if from_commit { now_s } else { from };
    let until = if duration_seconds > 0 {
        // `from` is unchecked here (a client's value): saturate, and let `window` refuse
        // whatever lands outside the range.
        from.saturating_add(duration_seconds)
    } else {
        until
    };
    window(from, until)?;
    if until <= now_s {
        return Err(ChaincodeError::invalid(
            "window",
            format!(
                "it ended at {until}, before the ledger's consensus time {now_s} (Unix seconds); \
                 a window that starts at commit and gives a duration does not depend on the \
                 client's clock"
            ),
        ));
    }
    Ok((from, until))
}

/// `a + b` for counters and times kept in state, or [`ChaincodeError::Overflow`] naming `what`.
pub fn add_u64(what: &'static str, a: u64, b: u64) -> Result<u64, ChaincodeError> {
    a.checked_add(b).ok_or(ChaincodeError::Overflow(what))
}

/// `a + b` for times in Unix seconds, or [`ChaincodeError::Overflow`] naming `what`.
pub fn add_i64(what: &'static str, a: i64, b: i64) -> Result<i64, ChaincodeError> {
    a.checked_add(b).ok_or(ChaincodeError::Overflow(what))
}

/// The UTC calendar year of `time_s` (Unix seconds), for times in [`MIN_TIME_S`,
/// `MAX_TIME_S`] (others are clamped into it). Proleptic Gregorian, after Howard Hinnant's
/// `civil_from_days` (days since 1970-01-01 → year); checked arithmetic throughout.
pub fn utc_year(time_s: i64) -> i32 {
    let days = time_s.clamp(MIN_TIME_S, MAX_TIME_S) / 86_400;
    // Shift the epoch to 0000-03-01, so leap days fall at the end of a 400-year era.
    let z = days.saturating_add(719_468);
    let era = z / 146_097;
    let day_of_era = z.saturating_sub(era.saturating_mul(146_097));
    let year_of_era = day_of_era
        .saturating_sub(day_of_era / 1_460)
        .saturating_add(day_of_era / 36_524)
        .saturating_sub(day_of_era / 146_096)
        / 365;
    let day_of_year = day_of_era.saturating_sub(
        year_of_era
            .saturating_mul(365)
            .saturating_add(year_of_era / 4)
            .saturating_sub(year_of_era / 100),
    );
    let month_index = day_of_year.saturating_mul(5).saturating_add(2) / 153;
    // Months from March: January and February belong to the next civil year.
    let year = year_of_era
        .saturating_add(era.saturating_mul(400))
        .saturating_add(i64::from(month_index >= 10));
    i32::try_from(year).unwrap_or(i32::MAX)
}

/// The de-identification a study copy records: for an anonymized copy a profile name (an
/// identifier), a version ≥ 1, and the year it was de-identified as of, which must be the
/// year of consensus time `now_s` or the one before (a copy made on 31 December may commit on
/// 1 January): the year decides which dates are old enough to keep, so the sharer may not
/// pick it. For any other copy none of them.
pub fn deidentification(
    anonymized: bool,
    profile: &str,
    version: u32,
    year: i32,
    now_s: i64,
) -> Result<(), ChaincodeError> {
    if !anonymized {
        if !profile.is_empty() || version != 0 || year != 0 {
            return Err(ChaincodeError::invalid(
                "deid_profile",
                "only an anonymized copy names a de-identification profile",
            ));
        }
        return Ok(());
    }
    identifier("deid_profile", profile)?;
    if version == 0 {
        return Err(ChaincodeError::invalid(
            "deid_profile_version",
            "must be 1 or more",
        ));
    }
    let this_year = utc_year(now_s);
    if year != this_year && Some(year) != this_year.checked_sub(1) {
        return Err(ChaincodeError::invalid(
            "deid_year",
            format!("must be this year ({this_year}) or the last"),
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
