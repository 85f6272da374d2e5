//! # medledger-crypto
//!
//! The cryptographic room of medledger: pure functions and types, no I/O, no clock (time is
//! always a parameter), no randomness except where a caller passes an RNG.
//!
//! It may import nothing of ours. Its main types:
//! - [`SigningIdentity`] / [`VerifyingKey`]: Ed25519 keys with domain-separated signatures
//!   ([`SignatureDomain`]), so a signature made for one purpose is never valid for another.
//! - [`EncryptionKey`] / [`EncryptionPublicKey`]: X25519 keys used to wrap data keys to a person.
//! - [`Role`], [`Attribute`], [`EnrollmentExtension`]: what an enrollment certificate says about
//!   its holder, and the DER encoding of that custom X.509 extension.
//! - [`RootCertificate`], [`validate_enrollment_certificate`], [`parse_csr`]: chain, time,
//!   revocation and role checks on certificates issued by the membership CA.
//! - [`FileEncryptor`] / [`FileDecryptor`]: the encrypted file format (AES-256-GCM STREAM).
//! - [`wrap_key`] / [`unwrap_key`]: HPKE (RFC 9180) wrapping of file keys and category keys.
//! - [`seal_text`] / [`open_text`]: free text (an emergency access's reason) sealed to its
//!   readers, the record's owner ([`derive_record_encryption_key`]) and the auditors.
//! - [`derive_pseudonym`]: the patient pseudonym `HMAC-SHA256(K, "pseudonym" ‖ UII)`.

mod certificate;
mod encryption;
mod extension;
mod file;
mod hashing;
mod identity;
mod private_data;
mod pseudonym;
mod sealed;
mod signing;
mod wrap;

pub use certificate::{
    BACKDATE_SECONDS, CertificateError, EnrolledIdentity, MAX_RENEWAL_WINDOW_SECONDS,
    RevocationSet, RootCertificate, SigningRequest, build_signing_request, certificate_hash,
    check_renewal, issued_lifetime, parse_csr, read_enrollment_certificate, renewal_due_at,
    serial_and_not_after, validate_enrollment_certificate,
};
pub use encryption::{EncryptionKey, EncryptionPublicKey};
pub use extension::{ENROLLMENT_EXTENSION_OID, EnrollmentExtension, ExtensionError};
pub use file::{
    DEFAULT_CHUNK_SIZE, FileDecryptor, FileEncryptor, FileError, FileHeader, FileKey, TAG_LEN,
};
pub use hashing::{HeaderFields, block_header_hash, transaction_id};
pub use identity::{
    Attribute, AttributeWindow, IdentityError, MAX_ATTRIBUTE_KEY_LEN, MAX_ATTRIBUTE_VALUE_LEN,
    MAX_ATTRIBUTES, MAX_NAME_LEN, Role, validate_name,
};
pub use private_data::{
    MAX_PRIVATE_COMMITMENTS, PRIVATE_SALT_LEN, private_commitment, private_data_ack_statement,
    private_data_acks_statement, private_salt, sign_private_data_ack, verify_private_data_ack,
};
pub use pseudonym::{
    PSEUDONYM_LEN, PatientKey, Pseudonym, STUDY_PSEUDONYM_TAG, derive_pseudonym,
    derive_record_encryption_key, derive_study_identity, derive_study_pseudonym,
    study_pseudonym_of,
};
pub use sealed::{
    KEY_COMMITMENT_LEN, SEALED_TEXT_TAG_LEN, SealError, SealedText, open_text, seal_text,
};
pub use signing::{
    SIGNATURE_LEN, Signature, SignatureDomain, SignatureError, SigningIdentity, VerifyingKey,
    category_key_statement, study_grant_statement, study_key_statement,
};
pub use wrap::{
    WRAPPED_KEY_LEN, WrapContext, WrapError, derive_encryption_key, unwrap_key, wrap_key,
};
