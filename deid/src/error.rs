//! Why a share was refused. No variant carries text taken from the input: an error message
//! may be logged or shown, and the input is clinical content (THREAT-MODEL: "never in ... an
//! error message"). Paths are built from the schema's own element names.

/// A refusal by [`crate::deidentify`] or [`crate::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeidError {
    /// The input is larger than [`crate::MAX_INPUT_BYTES`].
    #[error("the input is {size_bytes} bytes; de-identification accepts at most {limit_bytes}")]
    TooLarge {
        /// The input's size.
        size_bytes: usize,
        /// [`crate::MAX_INPUT_BYTES`].
        limit_bytes: usize,
    },
    /// The copy would be larger than [`crate::MAX_INPUT_BYTES`] (replacement ids and shipped
    /// displays can make it longer than its input).
    #[error("the copy would be {size_bytes} bytes; a copy may be at most {limit_bytes}")]
    OutputTooLarge {
        /// The copy's size.
        size_bytes: usize,
        /// [`crate::MAX_INPUT_BYTES`].
        limit_bytes: usize,
    },
    /// The input is not JSON (position of the first syntax error).
    #[error(
        "not JSON (error at line {line}, column {column}); de-identification accepts FHIR R4 JSON only"
    )]
    NotJson {
        /// Line of the first syntax error (1-based).
        line: usize,
        /// Column of the first syntax error (1-based).
        column: usize,
    },
    /// The input is JSON but not an object with a string `resourceType`.
    #[error("not a FHIR resource (no resourceType); de-identification accepts FHIR R4 JSON only")]
    NotAResource,
    /// A resource (at the top, in a Bundle entry or `contained`) of a type the schema does
    /// not know. The offending type name is not echoed: it is input.
    #[error("a resource of a type this profile does not support; supported: {}", supported.join(", "))]
    UnsupportedResourceType {
        /// [`crate::schema::SUPPORTED`].
        supported: &'static [&'static str],
    },
    /// JSON nested deeper than [`crate::MAX_DEPTH`] objects and arrays.
    #[error("nested deeper than {limit} levels")]
    TooDeep {
        /// [`crate::MAX_DEPTH`].
        limit: usize,
    },
    /// A `modifierExtension` anywhere: dropping it would change the meaning of what stays.
    #[error("a modifierExtension (it changes the meaning of its element, so it cannot be dropped)")]
    ModifierExtension,
    /// The caller's id source returned a value that is not a
    /// [replacement id](crate::is_replacement_id), or one it had returned before.
    #[error("the replacement id source returned an invalid or repeated id")]
    BadReplacementId,
    /// [`crate::check`]: the copy holds something the profile would not have let through.
    #[error("not de-identified under this profile: {path} ({reason})")]
    NotDeidentified {
        /// The schema path of the first element that would be dropped or changed
        /// (`Observation.*` for an element the schema does not list).
        path: String,
        /// Why it would be.
        reason: &'static str,
    },
    /// Serializing the output failed (not expected for a JSON value).
    #[error("the de-identified copy could not be encoded")]
    Encode,
}
