//! The enrollment-certificate extension: what the CA vouches for about a certificate holder.
//!
//! ```text
//! MedledgerEnrollment ::= SEQUENCE {
//!     version        INTEGER (1),
//!     role           UTF8String,          -- admin | peer | clinician | patient | researcher | auditor
//!     attributes     SEQUENCE OF Attribute,
//!     encryptionKey  UTF8String           -- "x25519:" followed by 64 lowercase hex digits
//! }
//! Attribute ::= SEQUENCE {
//!     key        UTF8String,
//!     value      UTF8String,
//!     notBefore  [0] IMPLICIT GeneralizedTime OPTIONAL,
//!     notAfter   [1] IMPLICIT GeneralizedTime OPTIONAL   -- exclusive
//! }
//! ```
//!
//! Everything is text or a time on purpose: `openssl x509 -text` prints an unknown extension's
//! bytes, so an operator reads the role, the attributes and the X25519 key there without tools.
//! The extension is non-critical (TLS stacks refuse certificates with unknown critical
//! extensions); medledger's own validation requires it.

use time::OffsetDateTime;
use yasna::models::GeneralizedTime;
use yasna::{ASN1Error, ASN1ErrorKind, Tag};

use crate::encryption::EncryptionPublicKey;
use crate::identity::{Attribute, AttributeWindow, IdentityError, MAX_ATTRIBUTES, Role};

/// OID of the extension: `1.3.6.1.4.1.4242424242.1.1`, in a private-enterprise arc that
/// medledger uses until it holds an IANA Private Enterprise Number of its own.
pub const ENROLLMENT_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 4_242_424_242, 1, 1];

const VERSION: u64 = 1;
const KEY_PREFIX: &str = "x25519:";
/// An encoded extension never needs more than this (32 attributes of maximal size fit).
const MAX_ENCODED_LEN: usize = 16 * 1024;

/// Why an extension could not be decoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExtensionError {
    #[error("the enrollment extension is not valid DER of the expected shape: {0}")]
    Malformed(String),
    #[error("unsupported enrollment extension version {0}")]
    UnsupportedVersion(u64),
    #[error("the enrollment extension is larger than {MAX_ENCODED_LEN} bytes")]
    TooLarge,
    #[error("the encryption key must be \"x25519:\" followed by 64 lowercase hex digits")]
    BadEncryptionKey,
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// What an enrollment certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentExtension {
    pub role: Role,
    pub attributes: Vec<Attribute>,
    pub encryption_key: EncryptionPublicKey,
}

impl EnrollmentExtension {
    /// DER encoding. Validates first, so nothing malformed is ever signed.
    pub fn encode(&self) -> Result<Vec<u8>, ExtensionError> {
        Attribute::validate_list(&self.attributes)?;
        let key_text = format!("{KEY_PREFIX}{}", hex::encode(self.encryption_key.0));
        Ok(yasna::construct_der(|writer| {
            writer.write_sequence(|seq| {
                seq.next().write_u64(VERSION);
                seq.next().write_utf8_string(self.role.as_str());
                seq.next().write_sequence_of(|list| {
                    for attribute in &self.attributes {
                        list.next().write_sequence(|a| {
                            a.next().write_utf8_string(&attribute.key);
                            a.next().write_utf8_string(&attribute.value);
                            if let Some(t) = attribute.window.not_before {
                                a.next().write_tagged_implicit(Tag::context(0), |w| {
                                    w.write_generalized_time(&generalized(t))
                                });
                            }
                            if let Some(t) = attribute.window.not_after {
                                a.next().write_tagged_implicit(Tag::context(1), |w| {
                                    w.write_generalized_time(&generalized(t))
                                });
                            }
                        });
                    }
                });
                seq.next().write_utf8_string(&key_text);
            })
        }))
    }

    /// Strict DER decoding followed by the same validation the CA applies at registration.
    pub fn decode(der: &[u8]) -> Result<Self, ExtensionError> {
        if der.len() > MAX_ENCODED_LEN {
            return Err(ExtensionError::TooLarge);
        }
        let (version, role, attributes, key_text) = yasna::parse_der(der, |reader| {
            reader.read_sequence(|seq| {
                let version = seq.next().read_u64()?;
                if version != VERSION {
                    // A later version may have another shape: skip it, report the version.
                    while seq.read_optional(|r| r.read_der())?.is_some() {}
                    return Ok((version, String::new(), Vec::new(), String::new()));
                }
                let role = seq.next().read_utf8string()?;
                let mut attributes = Vec::new();
                seq.next().read_sequence_of(|item| {
                    if attributes.len() == MAX_ATTRIBUTES {
                        return Err(ASN1Error::new(ASN1ErrorKind::Invalid));
                    }
                    attributes.push(item.read_sequence(|a| {
                        let key = a.next().read_utf8string()?;
                        let value = a.next().read_utf8string()?;
                        let not_before = a.read_optional(|r| {
                            r.read_tagged_implicit(Tag::context(0), |r| r.read_generalized_time())
                        })?;
                        let not_after = a.read_optional(|r| {
                            r.read_tagged_implicit(Tag::context(1), |r| r.read_generalized_time())
                        })?;
                        Ok(Attribute {
                            key,
                            value,
                            window: AttributeWindow {
                                not_before: not_before.map(|t| t.datetime().unix_timestamp()),
                                not_after: not_after.map(|t| t.datetime().unix_timestamp()),
                            },
                        })
                    })?);
                    Ok(())
                })?;
                let key_text = seq.next().read_utf8string()?;
                Ok((version, role, attributes, key_text))
            })
        })
        .map_err(|e| ExtensionError::Malformed(e.to_string()))?;
        if version != VERSION {
            return Err(ExtensionError::UnsupportedVersion(version));
        }
        let role: Role = role.parse()?;
        Attribute::validate_list(&attributes)?;
        Ok(EnrollmentExtension {
            role,
            attributes,
            encryption_key: parse_key_text(&key_text)?,
        })
    }

    /// The attribute `key` if it holds at `unix_time`.
    pub fn attribute_at(&self, key: &str, unix_time: i64) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.key == key && a.holds_at(unix_time))
            .map(|a| a.value.as_str())
    }
}

fn generalized(unix_time: i64) -> GeneralizedTime {
    // Attribute::validate keeps window times within 1970..=9999, which always converts.
    let datetime = OffsetDateTime::from_unix_timestamp(unix_time)
        .expect("validated window times are representable");
    GeneralizedTime::from_datetime(datetime)
}

fn parse_key_text(text: &str) -> Result<EncryptionPublicKey, ExtensionError> {
    let hex_part = text
        .strip_prefix(KEY_PREFIX)
        .ok_or(ExtensionError::BadEncryptionKey)?;
    if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ExtensionError::BadEncryptionKey);
    }
    let bytes = hex::decode(hex_part).map_err(|_| ExtensionError::BadEncryptionKey)?;
    EncryptionPublicKey::from_slice(&bytes).ok_or(ExtensionError::BadEncryptionKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EnrollmentExtension {
        EnrollmentExtension {
            role: Role::Clinician,
            attributes: vec![
                Attribute::new("license", "NPI-1234567890", AttributeWindow::ALWAYS).unwrap(),
                Attribute::new(
                    "emergency",
                    "true",
                    AttributeWindow {
                        not_before: Some(1_767_225_600), // 2026-01-01T00:00:00Z
                        not_after: Some(1_798_761_600),  // 2027-01-01T00:00:00Z
                    },
                )
                .unwrap(),
            ],
            encryption_key: EncryptionPublicKey([0x11; 32]),
        }
    }

    /// The exact DER, so a change of encoding cannot slip by: certificates already issued
    /// must keep decoding. Checked independently with `openssl asn1parse -inform DER`.
    #[test]
    fn encoding_known_answer() {
        let der = sample().encode().unwrap();
        assert_eq!(
            hex::encode(&der),
            include_str!("../testdata/extension-clinician.der.hex")
        );
    }

    #[test]
    fn round_trip() {
        let ext = sample();
        assert_eq!(
            EnrollmentExtension::decode(&ext.encode().unwrap()).unwrap(),
            ext
        );
        let bare = EnrollmentExtension {
            role: Role::Patient,
            attributes: vec![],
            encryption_key: EncryptionPublicKey([0; 32]),
        };
        assert_eq!(
            EnrollmentExtension::decode(&bare.encode().unwrap()).unwrap(),
            bare
        );
    }

    #[test]
    fn attributes_hold_only_inside_their_window() {
        let ext = sample();
        assert_eq!(ext.attribute_at("emergency", 1_767_225_599), None);
        assert_eq!(ext.attribute_at("emergency", 1_767_225_600), Some("true"));
        assert_eq!(ext.attribute_at("emergency", 1_798_761_600), None);
        assert_eq!(ext.attribute_at("license", 0), Some("NPI-1234567890"));
        assert_eq!(ext.attribute_at("missing", 0), None);
    }

    #[test]
    fn malformed_input_is_refused() {
        let der = sample().encode().unwrap();
        assert!(matches!(
            EnrollmentExtension::decode(&der[..der.len() - 1]),
            Err(ExtensionError::Malformed(_))
        ));
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(EnrollmentExtension::decode(&trailing).is_err());
        assert!(EnrollmentExtension::decode(&[]).is_err());
        assert!(matches!(
            EnrollmentExtension::decode(&vec![0x30; MAX_ENCODED_LEN + 1]),
            Err(ExtensionError::TooLarge)
        ));
    }

    fn encode_raw(version: u64, role: &str, key_text: &str) -> Vec<u8> {
        yasna::construct_der(|w| {
            w.write_sequence(|seq| {
                seq.next().write_u64(version);
                seq.next().write_utf8_string(role);
                seq.next().write_sequence_of(|_| {});
                seq.next().write_utf8_string(key_text);
            })
        })
    }

    #[test]
    fn unknown_version_role_or_key_is_refused() {
        let key = format!("x25519:{}", "ab".repeat(32));
        EnrollmentExtension::decode(&encode_raw(1, "auditor", &key)).unwrap();
        assert_eq!(
            EnrollmentExtension::decode(&encode_raw(2, "auditor", &key)),
            Err(ExtensionError::UnsupportedVersion(2))
        );
        assert!(matches!(
            EnrollmentExtension::decode(&encode_raw(1, "root", &key)),
            Err(ExtensionError::Identity(IdentityError::UnknownRole(_)))
        ));
        for bad_key in [
            "ab".repeat(32),
            format!("x25519:{}", "AB".repeat(32)),
            format!("x25519:{}", "ab".repeat(31)),
            format!("x25519:{}", "zz".repeat(32)),
        ] {
            assert_eq!(
                EnrollmentExtension::decode(&encode_raw(1, "auditor", &bad_key)),
                Err(ExtensionError::BadEncryptionKey)
            );
        }
    }

    #[test]
    fn invalid_attributes_are_never_encoded() {
        let mut ext = sample();
        ext.attributes.push(Attribute {
            key: "note".into(),
            value: "line\nbreak".into(),
            window: AttributeWindow::ALWAYS,
        });
        assert!(matches!(ext.encode(), Err(ExtensionError::Identity(_))));
    }
}
