//! # medledger-deid
//!
//! De-identification of FHIR R4 JSON for research copies, by an allow-list: a copy carries
//! only what is known to be safe under the HIPAA Safe Harbor method (45 CFR 164.514(b)(2)),
//! and everything else is dropped or the share is refused. This room is pure: no clock (the
//! share year is an argument), no randomness of its own (replacement ids come from the
//! caller), no I/O. It imports only `serde_json` and `thiserror`.
//!
//! - [`deidentify`]: input bytes → [`Deidentified`] copy and [`Report`], or a [`DeidError`].
//! - [`check`]: the researcher's re-check of a received copy (the copy must be a fixed
//!   point of the same walk); it returns the canonical bytes, which are what the caller
//!   writes — never the bytes it received.
//! - [`PROFILE`], [`PROFILE_VERSION`]: the name and version a copy records it was made by.
//! - [`counter_ids`], [`uuid_ids`]: sources of replacement ids.
//!
//! What survives (see `docs/researcher.md` for the worked example), by file:
//! [`schema`] (the per-resource tables), [`codes`] (code systems and their syntax checks),
//! [`displays`] (the shipped display texts), [`value_sets`] (FHIR's own codes and the
//! bindings of `status`-like elements), [`units`] (UCUM), [`quantity`] (measurements and
//! the 90-or-older category), [`dates`] (years), [`address`] (state and ZIP3); `walk` applies
//! them.

#![warn(missing_docs)]

pub mod address;
pub mod codes;
pub mod dates;
pub mod displays;
mod error;
pub mod ids;
mod inference;
pub mod quantity;
mod report;
pub mod schema;
pub mod units;
pub mod value_sets;
mod walk;

pub use error::DeidError;
pub use ids::{counter_ids, is_replacement_id, uuid_ids};
pub use report::Report;

use serde_json::Value;

use crate::walk::{Ids, Walker};

/// The name of this de-identification profile, recorded with each copy.
pub const PROFILE: &str = "safe-harbor-allowlist";
/// The version of [`PROFILE`]; it changes whenever what survives changes.
pub const PROFILE_VERSION: u32 = 2;
/// Largest input accepted, and largest copy made or returned by [`check`], in bytes.
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting of JSON objects and arrays accepted.
pub const MAX_DEPTH: usize = 64;

/// Choices within [`PROFILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Keep the first three digits of a US ZIP code (`000` for the 17 restricted areas);
    /// when false, addresses keep the state only.
    pub keep_zip3: bool,
}

impl Profile {
    /// Safe Harbor as written: the state and the ZIP3 where HHS allows it.
    pub const SAFE_HARBOR: Profile = Profile { keep_zip3: true };
}

impl Default for Profile {
    fn default() -> Profile {
        Profile::SAFE_HARBOR
    }
}

/// A de-identified copy: compact FHIR R4 JSON and what was dropped and generalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deidentified {
    /// The copy: FHIR R4 JSON, compact (no whitespace), keys in sorted order — the canonical
    /// encoding that [`check`] returns for it.
    pub bytes: Vec<u8>,
    /// What was dropped and generalized, by schema path.
    pub report: Report,
}

/// De-identifies `input`, one FHIR R4 resource in JSON (a Bundle, or any type in
/// [`schema::SUPPORTED`]), for a share made in `share_year`.
///
/// Every resource id and every id in a reference or `fullUrl` is replaced by the next value
/// of `ids` — the same old id gets the same replacement within this call, and nothing is
/// carried from one call to the next. `ids` must return distinct ids of the shapes
/// [`is_replacement_id`] accepts, not derived from the input: [`counter_ids`], or
/// [`uuid_ids`] over the caller's random bytes.
///
/// # Errors
/// [`DeidError::TooLarge`], [`DeidError::NotJson`], [`DeidError::TooDeep`],
/// [`DeidError::NotAResource`], [`DeidError::UnsupportedResourceType`] (anywhere in the
/// input, a Bundle entry or a contained resource included; a [`schema::DROPPED`] type only
/// at the top, since inside it is dropped), [`DeidError::ModifierExtension`]
/// (anywhere), [`DeidError::BadReplacementId`], [`DeidError::OutputTooLarge`] (the copy
/// would be larger than [`MAX_INPUT_BYTES`], so no researcher's [`check`] could accept it).
pub fn deidentify(
    input: &[u8],
    profile: &Profile,
    share_year: i32,
    ids: &mut dyn FnMut() -> String,
) -> Result<Deidentified, DeidError> {
    let value = parse(input)?;
    let mut walker = Walker::new(Ids::Replace(ids), share_year, profile.keep_zip3);
    let mut copy = walker
        .resource(&value, &mut Vec::new())?
        .ok_or(DeidError::NotAResource)?;
    inference::drop_years_that_date_old_ages(&mut copy, share_year);
    let bytes = encode(&copy)?;
    Ok(Deidentified {
        bytes,
        report: walker.report,
    })
}

/// Re-checks a received copy made in `share_year` and returns its canonical bytes: the copy
/// must hold only what [`deidentify`] lets through, i.e. walking it again (keeping its ids,
/// which must be random [UUIDs](ids::is_uuid_v4) as [`uuid_ids`] makes them) drops and
/// changes nothing. Either [`Profile`] passes.
///
/// The check compares parsed values, and JSON has several byte spellings of one value
/// (duplicate keys, where the parser keeps the last; `\u` escapes; number literals longer than
/// a 64-bit float keeps; whitespace). Text can hide in those spellings, so **the caller must
/// write the returned bytes, never the bytes it received**: they are the walked value
/// encoded exactly as [`deidentify`] encodes a copy (for a copy it made, the same bytes).
///
/// # Errors
/// The refusals of [`deidentify`], and [`DeidError::NotDeidentified`] with the schema path
/// of the first element that would be dropped or changed.
pub fn check(copy: &[u8], share_year: i32) -> Result<Vec<u8>, DeidError> {
    let value = parse(copy)?;
    let mut walker = Walker::new(Ids::Keep, share_year, true);
    let mut walked = walker.resource(&value, &mut Vec::new())?;
    if let Some((path, reason)) = walker.first_change.take() {
        return Err(DeidError::NotDeidentified { path, reason });
    }
    if let Some(walked) = walked.as_mut()
        && inference::drop_years_that_date_old_ages(walked, share_year)
    {
        return Err(DeidError::NotDeidentified {
            path: String::new(),
            reason: "a kept age and a kept year date an age of 90 or more",
        });
    }
    match walked {
        Some(walked) if walked == value => encode(&walked),
        _ => Err(DeidError::NotDeidentified {
            path: String::new(),
            reason: "the copy is not a fixed point of de-identification",
        }),
    }
}

/// [`check`], then every id and reference re-keyed to fresh ids from `ids` (consistently
/// within the copy): what a researcher's client writes. A sharing client chooses the
/// UUID-shaped ids of the copy it sends, and a version-4 UUID has 122 bits it could fill
/// with digits of its choosing; re-keyed, none of them reaches the researcher's disk.
///
/// # Errors
/// Those of [`check`].
pub fn check_rekeyed(
    copy: &[u8],
    share_year: i32,
    ids: &mut dyn FnMut() -> String,
) -> Result<Vec<u8>, DeidError> {
    let canonical = check(copy, share_year)?;
    let value = parse(&canonical)?;
    let mut walker = Walker::new(Ids::Replace(ids), share_year, true);
    let rekeyed = walker
        .resource(&value, &mut Vec::new())?
        .ok_or(DeidError::NotAResource)?;
    encode(&rekeyed)
}

/// Compact JSON, at most [`MAX_INPUT_BYTES`].
fn encode(copy: &Value) -> Result<Vec<u8>, DeidError> {
    let bytes = serde_json::to_vec(copy).map_err(|_| DeidError::Encode)?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(DeidError::OutputTooLarge {
            size_bytes: bytes.len(),
            limit_bytes: MAX_INPUT_BYTES,
        });
    }
    Ok(bytes)
}

/// Size limit, JSON, depth limit, no `modifierExtension`.
fn parse(input: &[u8]) -> Result<Value, DeidError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(DeidError::TooLarge {
            size_bytes: input.len(),
            limit_bytes: MAX_INPUT_BYTES,
        });
    }
    let value: Value = serde_json::from_slice(input).map_err(|e| DeidError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    scan(&value, 0)?;
    Ok(value)
}

/// Refuses nesting deeper than [`MAX_DEPTH`] and any `modifierExtension`, wherever it is:
/// dropping a modifier extension changes the meaning of what it modifies.
fn scan(value: &Value, depth: usize) -> Result<(), DeidError> {
    if depth > MAX_DEPTH {
        return Err(DeidError::TooDeep { limit: MAX_DEPTH });
    }
    match value {
        Value::Object(object) => {
            if object.contains_key("modifierExtension") {
                return Err(DeidError::ModifierExtension);
            }
            object.values().try_for_each(|v| scan(v, depth + 1))
        }
        Value::Array(items) => items.iter().try_for_each(|v| scan(v, depth + 1)),
        _ => Ok(()),
    }
}
