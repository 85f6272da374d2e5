//! Certificates issued by the membership CA: parsing and validation of enrollment certificates
//! against the root, at a given time, against a given revocation set; and certificate signing
//! requests (PKCS #10), built by clients and checked by the CA.
//!
//! Only Ed25519 is accepted anywhere in this chain. Validation is a pure function of its
//! inputs, so every peer given the same block (time, revocations) reaches the same verdict.

use std::collections::{BTreeSet, HashSet};

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_SIG_ED25519, Oid};
use x509_parser::prelude::FromDer;

use crate::encryption::EncryptionPublicKey;
use crate::extension::{ENROLLMENT_EXTENSION_OID, EnrollmentExtension, ExtensionError};
use crate::identity::{Attribute, IdentityError, Role, validate_name};
use crate::signing::{SigningIdentity, VerifyingKey};

/// Largest certificate or CSR we parse, in bytes. Ours are well under 2 KiB.
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;

/// Why a certificate or CSR was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("not a well-formed X.509 structure: {0}")]
    Malformed(String),
    #[error("larger than {MAX_CERTIFICATE_LEN} bytes")]
    TooLarge,
    #[error("only Ed25519 keys and signatures are accepted")]
    NotEd25519,
    #[error("not issued by this network's root CA")]
    NotIssuedByRoot,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("not valid before {not_before} (Unix time), checked at {at}")]
    NotYetValid { not_before: i64, at: i64 },
    #[error("expired at {not_after} (Unix time), checked at {at}")]
    Expired { not_after: i64, at: i64 },
    #[error("certificate {serial} has been revoked")]
    Revoked { serial: String },
    #[error("a CA certificate cannot be used as an enrollment certificate")]
    IsCa,
    #[error("the root certificate is not a self-signed CA certificate")]
    RootNotCa,
    #[error("the subject has no valid common name: {0}")]
    BadSubject(String),
    #[error("the certificate carries no medledger enrollment extension (role)")]
    MissingExtension,
    #[error("the enrollment extension is invalid: {0}")]
    BadExtension(#[from] ExtensionError),
}

/// A set of revoked certificate serial numbers (DER integer content bytes).
pub trait RevocationSet {
    fn is_revoked(&self, serial: &[u8]) -> bool;
}

impl RevocationSet for HashSet<Vec<u8>> {
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.contains(serial)
    }
}

impl RevocationSet for BTreeSet<Vec<u8>> {
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.contains(serial)
    }
}

/// SHA-256 of a certificate's DER: how the ledger names a certificate.
pub fn certificate_hash(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// How far the CA backdates an enrollment certificate's notBefore before the moment it issues
/// it (seconds): a verifier whose clock is behind the CA's by up to this accepts it at once.
pub const BACKDATE_SECONDS: i64 = 300;

/// The longest renewal window: a certificate is renewed at most this long before its end
/// (seconds; 30 days).
pub const MAX_RENEWAL_WINDOW_SECONDS: i64 = 30 * 86_400;

/// The lifetime the CA issued a certificate for (seconds): from the moment of issue
/// (notBefore plus [`BACKDATE_SECONDS`]) to notAfter; 0 if that is negative.
pub fn issued_lifetime(not_before: i64, not_after: i64) -> i64 {
    not_after
        .saturating_sub(not_before.saturating_add(BACKDATE_SECONDS))
        .max(0)
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds, as it says)
/// enters its renewal window (Unix seconds): the last quarter of the lifetime it was issued
/// for, at most [`MAX_RENEWAL_WINDOW_SECONDS`]. A one-year certificate is due 30 days before
/// its end, a one-minute certificate 15 seconds before. Every process renews from here on
/// (peers and the gateway by themselves, clients at their next use, `medledger network up`
/// for a local network) and the CA warns from here on (docs/membership.md "Renewal").
pub fn renewal_due_at(not_before: i64, not_after: i64) -> i64 {
    let window = (issued_lifetime(not_before, not_after) / 4).clamp(0, MAX_RENEWAL_WINDOW_SECONDS);
    not_after.saturating_sub(window)
}

/// Checks `der`, the CA's answer to a renewal of `held`, before it is stored or presented:
/// an enrollment certificate of `root`, valid at `now` (Unix seconds), for the same name and
/// role as `held`, certifying `signing_key` and `encryption_key` (the keys the renewal asked
/// for), ending no earlier than `held`, and not already due for renewal itself
/// ([`renewal_due_at`]), so that a CA answering with a certificate that ends at once cannot
/// make its holder renew without pause. Returns who it names.
///
/// # Errors
/// Why it is not a renewal of `held`, in words.
pub fn check_renewal(
    der: &[u8],
    root: &RootCertificate,
    held: &EnrolledIdentity,
    signing_key: &VerifyingKey,
    encryption_key: &EncryptionPublicKey,
    now: i64,
) -> Result<EnrolledIdentity, String> {
    let new = validate_enrollment_certificate(der, root, now, &BTreeSet::<Vec<u8>>::new())
        .map_err(|e| e.to_string())?;
    if new.name != held.name || new.role != held.role {
        return Err(format!(
            "it names {} ({}), not {} ({})",
            new.name, new.role, held.name, held.role
        ));
    }
    if new.signing_key != *signing_key {
        return Err("it certifies another signing key".into());
    }
    if new.encryption_key != *encryption_key {
        return Err("it certifies another encryption key".into());
    }
    if new.not_after < held.not_after {
        return Err(format!(
            "it ends at {}, earlier than the one held ({})",
            new.not_after, held.not_after
        ));
    }
    if now >= renewal_due_at(new.not_before, new.not_after) {
        return Err(format!(
            "it is due for renewal already (valid {} to {})",
            new.not_before, new.not_after
        ));
    }
    Ok(new)
}

/// The network's trust anchor: the membership CA's self-signed Ed25519 root.
#[derive(Debug, Clone)]
pub struct RootCertificate {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    key: VerifyingKey,
    not_before: i64,
    not_after: i64,
}

impl RootCertificate {
    /// Parses a root and checks that it is a self-signed Ed25519 CA certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let cert = parse_certificate(der)?;
        let key = ed25519_subject_key(&cert)?;
        if cert.subject().as_raw() != cert.issuer().as_raw() {
            return Err(CertificateError::RootNotCa);
        }
        key.verify_x509(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
            .map_err(|_| CertificateError::BadSignature)?;
        if !cert.is_ca() {
            return Err(CertificateError::RootNotCa);
        }
        Ok(RootCertificate {
            der: der.to_vec(),
            subject_der: cert.subject().as_raw().to_vec(),
            key,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Parses a PEM root (`-----BEGIN CERTIFICATE-----`).
    pub fn from_pem(pem_text: &str) -> Result<Self, CertificateError> {
        let der = pem_certificate_der(pem_text)?;
        Self::from_der(&der)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key
    }

    /// SHA-256 of the root's DER: a fingerprint users can compare out of band.
    pub fn fingerprint(&self) -> [u8; 32] {
        certificate_hash(&self.der)
    }
}

/// Who an enrollment certificate names, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledIdentity {
    pub name: String,
    pub role: Role,
    pub attributes: Vec<Attribute>,
    pub signing_key: VerifyingKey,
    pub encryption_key: EncryptionPublicKey,
    /// Serial number: the DER integer's content bytes.
    pub serial: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub cert_hash: [u8; 32],
}

impl EnrolledIdentity {
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    /// Re-checks, at `at` (Unix seconds), what [`validate_enrollment_certificate`] checked
    /// that depends on time and revocations: `root` and this certificate valid (RFC 5280
    /// §4.1.2.5, notAfter included), the serial not in `revoked`. For an identity that
    /// validated against `root` before; errors exactly as that function would.
    pub fn check_standing(
        &self,
        root: &RootCertificate,
        at: i64,
        revoked: &impl RevocationSet,
    ) -> Result<(), CertificateError> {
        check_standing(
            root,
            self.not_before,
            self.not_after,
            &self.serial,
            at,
            revoked,
        )
    }
}

/// Validates an enrollment certificate: it chains to `root` with a valid Ed25519 signature,
/// `root` and the certificate are both valid at `at` (Unix seconds), its serial is not in
/// `revoked`, it is not a CA, and it carries a well-formed enrollment extension with a role.
pub fn validate_enrollment_certificate(
    der: &[u8],
    root: &RootCertificate,
    at: i64,
    revoked: &impl RevocationSet,
) -> Result<EnrolledIdentity, CertificateError> {
    let identity = read_enrollment_certificate(der, root)?;
    identity.check_standing(root, at, revoked)?;
    Ok(identity)
}

/// Reads who an enrollment certificate names, checking what does not change with time: it
/// chains to `root` with a valid Ed25519 signature, it is not a CA, and it carries a
/// well-formed enrollment extension with a role. Validity and revocation are not checked
/// ([`EnrolledIdentity::check_standing`] does): for a certificate whose standing was
/// checked when it was accepted, read again later (a peer of a configuration in force).
///
/// # Errors
/// [`CertificateError`], as [`validate_enrollment_certificate`] but for time and revocation.
pub fn read_enrollment_certificate(
    der: &[u8],
    root: &RootCertificate,
) -> Result<EnrolledIdentity, CertificateError> {
    let cert = parse_certificate(der)?;
    if cert.issuer().as_raw() != root.subject_der.as_slice() {
        return Err(CertificateError::NotIssuedByRoot);
    }
    root.key
        .verify_x509(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| CertificateError::NotIssuedByRoot)?;
    let signing_key = ed25519_subject_key(&cert)?;

    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let serial = cert.raw_serial().to_vec();
    if cert.is_ca() {
        return Err(CertificateError::IsCa);
    }
    let name = common_name(&cert)?;
    let oid = Oid::from(ENROLLMENT_EXTENSION_OID)
        .map_err(|_| CertificateError::Malformed("bad extension OID".into()))?;
    let extension = cert
        .get_extension_unique(&oid)
        .map_err(|e| CertificateError::Malformed(e.to_string()))?
        .ok_or(CertificateError::MissingExtension)?;
    let extension = EnrollmentExtension::decode(extension.value)?;

    Ok(EnrolledIdentity {
        name,
        role: extension.role,
        attributes: extension.attributes,
        signing_key,
        encryption_key: extension.encryption_key,
        serial,
        not_before,
        not_after,
        cert_hash: certificate_hash(der),
    })
}

/// A certificate's serial (the DER integer's content bytes) and its notAfter (Unix
/// seconds), read without any check: for a certificate a TLS handshake already verified,
/// whose standing a long-lived link keeps watching (`medledger_tls::Guarded`).
///
/// # Errors
/// [`CertificateError::Malformed`] when `der` is not an X.509 certificate.
pub fn serial_and_not_after(der: &[u8]) -> Result<(Vec<u8>, i64), CertificateError> {
    let cert = parse_certificate(der)?;
    Ok((
        cert.raw_serial().to_vec(),
        cert.validity().not_after.timestamp(),
    ))
}

/// A certificate signing request after its proof of possession was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRequest {
    /// The key the certificate will certify; the CSR was signed by its private half.
    pub public_key: VerifyingKey,
}

/// Parses a PKCS #10 CSR and verifies its self-signature (proof that the requester holds the
/// private key). Only Ed25519 is accepted. The CA reads nothing else from a CSR: subject,
/// extensions and validity all come from the registration.
pub fn parse_csr(der: &[u8]) -> Result<SigningRequest, CertificateError> {
    if der.len() > MAX_CERTIFICATE_LEN {
        return Err(CertificateError::TooLarge);
    }
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::Malformed(
            "trailing bytes after the CSR".into(),
        ));
    }
    if csr.signature_algorithm.algorithm != OID_SIG_ED25519 {
        return Err(CertificateError::NotEd25519);
    }
    let spki = &csr.certification_request_info.subject_pki;
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(CertificateError::NotEd25519);
    }
    let public_key = VerifyingKey::from_bytes(&spki.subject_public_key.data)
        .map_err(|_| CertificateError::NotEd25519)?;
    public_key
        .verify_x509(
            csr.certification_request_info.raw,
            &csr.signature_value.data,
        )
        .map_err(|_| CertificateError::BadSignature)?;
    Ok(SigningRequest { public_key })
}

/// Builds a DER CSR for `identity`, with subject CN = `name`.
pub fn build_signing_request(
    identity: &SigningIdentity,
    name: &str,
) -> Result<Vec<u8>, CertificateError> {
    validate_name(name).map_err(|e: IdentityError| CertificateError::BadSubject(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(identity)
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    Ok(csr.der().to_vec())
}

fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    if der.len() > MAX_CERTIFICATE_LEN {
        return Err(CertificateError::TooLarge);
    }
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertificateError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::Malformed(
            "trailing bytes after the certificate".into(),
        ));
    }
    if cert.signature_algorithm.algorithm != OID_SIG_ED25519
        || cert.tbs_certificate.signature.algorithm != OID_SIG_ED25519
    {
        return Err(CertificateError::NotEd25519);
    }
    Ok(cert)
}

fn ed25519_subject_key(cert: &X509Certificate<'_>) -> Result<VerifyingKey, CertificateError> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(CertificateError::NotEd25519);
    }
    VerifyingKey::from_bytes(&spki.subject_public_key.data)
        .map_err(|_| CertificateError::NotEd25519)
}

/// What changes with time and revocations for a certificate whose chain and form already
/// verified: `root` and the certificate (`not_before`..=`not_after`) valid at `at`, and its
/// serial not revoked, checked in this order. A peer that remembers a validated certificate
/// calls only this afterwards ([`EnrolledIdentity::check_standing`]), so a remembered and a
/// fresh validation always agree: same outcome, same error.
fn check_standing(
    root: &RootCertificate,
    not_before: i64,
    not_after: i64,
    serial: &[u8],
    at: i64,
    revoked: &impl RevocationSet,
) -> Result<(), CertificateError> {
    check_time(root.not_before, root.not_after, at)?;
    check_time(not_before, not_after, at)?;
    if revoked.is_revoked(serial) {
        return Err(CertificateError::Revoked {
            serial: hex::encode(serial),
        });
    }
    Ok(())
}

fn check_time(not_before: i64, not_after: i64, at: i64) -> Result<(), CertificateError> {
    if at < not_before {
        return Err(CertificateError::NotYetValid { not_before, at });
    }
    // RFC 5280 §4.1.2.5: the validity period includes notAfter.
    if at > not_after {
        return Err(CertificateError::Expired { not_after, at });
    }
    Ok(())
}

fn common_name(cert: &X509Certificate<'_>) -> Result<String, CertificateError> {
    let mut names = cert.subject().iter_common_name();
    let name = names
        .next()
        .ok_or_else(|| CertificateError::BadSubject("no common name".into()))?
        .as_str()
        .map_err(|e| CertificateError::BadSubject(e.to_string()))?
        .to_string();
    if names.next().is_some() {
        return Err(CertificateError::BadSubject(
            "more than one common name".into(),
        ));
    }
    validate_name(&name).map_err(|e| CertificateError::BadSubject(e.to_string()))?;
    Ok(name)
}

fn pem_certificate_der(pem_text: &str) -> Result<Vec<u8>, CertificateError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    if pem.label != "CERTIFICATE" {
        return Err(CertificateError::Malformed(format!(
            "expected a CERTIFICATE PEM block, found {}",
            pem.label
        )));
    }
    Ok(pem.contents)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renewal_is_due_in_the_last_quarter_of_the_issued_lifetime_at_most_30_days() {
        let issued = 1_000_000;
        let nb = issued - BACKDATE_SECONDS;
        // One minute: due 15 s before its end, not at issue (the backdate is not lifetime).
        assert_eq!(renewal_due_at(nb, issued + 60), issued + 45);
        // One year: 30 days before its end.
        let year = 365 * 86_400;
        assert_eq!(
            renewal_due_at(nb, issued + year),
            issued + year - 30 * 86_400
        );
        // Nonsense validity never panics and is due at once.
        assert_eq!(renewal_due_at(i64::MAX, i64::MIN), i64::MIN);
        assert_eq!(issued_lifetime(i64::MIN, i64::MAX), i64::MAX);
    }

    use super::*;
    use crate::identity::AttributeWindow;
    use rcgen::{CertificateParams, CustomExtension, DnType, IsCa, Issuer, SerialNumber};
    use time::OffsetDateTime;

    const JAN_2026: i64 = 1_767_225_600;
    const JAN_2027: i64 = 1_798_761_600;

    fn at(t: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    struct TestCa {
        key: SigningIdentity,
        params: CertificateParams,
        root: RootCertificate,
    }

    fn test_ca(seed: u8) -> TestCa {
        let key = SigningIdentity::from_seed(&[seed; 32]);
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "medledger test root");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = at(JAN_2026 - 86_400);
        params.not_after = at(JAN_2027 + 86_400 * 365);
        params.serial_number = Some(SerialNumber::from_slice(&[1]));
        let cert = params.self_signed(&key).unwrap();
        let root = RootCertificate::from_der(cert.der()).unwrap();
        TestCa { key, params, root }
    }

    fn extension() -> EnrollmentExtension {
        EnrollmentExtension {
            role: Role::Clinician,
            attributes: vec![Attribute::new("emergency", "true", AttributeWindow::ALWAYS).unwrap()],
            encryption_key: EncryptionPublicKey([3; 32]),
        }
    }

    fn issue_with(
        ca: &TestCa,
        subject: &SigningIdentity,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "dr.alice");
        params.not_before = at(JAN_2026);
        params.not_after = at(JAN_2027);
        params.serial_number = Some(SerialNumber::from_slice(&[0x42, 0x01]));
        let mut ext = CustomExtension::from_oid_content(
            ENROLLMENT_EXTENSION_OID,
            extension().encode().unwrap(),
        );
        ext.set_criticality(false);
        params.custom_extensions.push(ext);
        edit(&mut params);
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        params
            .signed_by(&subject.verifying_key(), &issuer)
            .unwrap()
            .der()
            .to_vec()
    }

    fn none() -> HashSet<Vec<u8>> {
        HashSet::new()
    }

    #[test]
    fn a_certificate_from_the_root_validates_inside_its_period() {
        let ca = test_ca(1);
        let alice = SigningIdentity::from_seed(&[10; 32]);
        let der = issue_with(&ca, &alice, |_| {});
        let id = validate_enrollment_certificate(&der, &ca.root, JAN_2026 + 10, &none()).unwrap();
        assert_eq!(id.name, "dr.alice");
        assert_eq!(id.role, Role::Clinician);
        assert_eq!(id.signing_key, alice.verifying_key());
        assert_eq!(id.encryption_key, EncryptionPublicKey([3; 32]));
        assert_eq!(id.serial, vec![0x42, 0x01]);
        assert_eq!(id.serial_hex(), "4201");
        assert_eq!(id.cert_hash, certificate_hash(&der));
        assert_eq!(id.attributes, extension().attributes);
        // Both ends of the validity period are inside it (RFC 5280).
        validate_enrollment_certificate(&der, &ca.root, JAN_2026, &none()).unwrap();
        validate_enrollment_certificate(&der, &ca.root, JAN_2027, &none()).unwrap();
    }

    /// What a renewal must be before anyone stores or presents it (a lying CA's answers).
    #[test]
    fn a_renewal_is_the_same_identity_and_keys_ending_later_and_not_due_at_once() {
        let ca = test_ca(1);
        let alice = SigningIdentity::from_seed(&[10; 32]);
        let issued_at = JAN_2026 + 86_400;
        let held_der = issue_with(&ca, &alice, |p| {
            p.not_before = at(issued_at - BACKDATE_SECONDS);
            p.not_after = at(issued_at + 600);
        });
        let held = read_enrollment_certificate(&held_der, &ca.root).unwrap();
        let now = issued_at + 500;
        let renewal = |edit: &dyn Fn(&mut CertificateParams)| {
            issue_with(&ca, &alice, |p| {
                p.not_before = at(now - BACKDATE_SECONDS);
                p.not_after = at(now + 600);
                edit(p);
            })
        };
        let key = alice.verifying_key();
        let enc = EncryptionPublicKey([3; 32]);
        let check = |der: &[u8]| check_renewal(der, &ca.root, &held, &key, &enc, now);
        let good = check(&renewal(&|_| {})).unwrap();
        assert_eq!(good.not_after, now + 600);
        // Another name, another key, another root: refused.
        let other_name = renewal(&|p| {
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, "dr.mallory");
        });
        assert!(check(&other_name).unwrap_err().contains("dr.mallory"));
        let other_key = issue_with(&ca, &SigningIdentity::from_seed(&[11; 32]), |p| {
            p.not_before = at(now - BACKDATE_SECONDS);
            p.not_after = at(now + 600);
        });
        assert!(check(&other_key).unwrap_err().contains("signing key"));
        let foreign = issue_with(&test_ca(2), &alice, |p| {
            p.not_before = at(now - BACKDATE_SECONDS);
            p.not_after = at(now + 600);
        });
        assert!(check(&foreign).is_err());
        assert!(
            check_renewal(
                &renewal(&|_| {}),
                &ca.root,
                &held,
                &key,
                &EncryptionPublicKey([4; 32]),
                now
            )
            .unwrap_err()
            .contains("encryption key")
        );
        // Ended, not yet valid, ending before the one held, or due for renewal at once.
        assert!(check(&renewal(&|p| p.not_after = at(now - 1))).is_err());
        assert!(check(&renewal(&|p| p.not_before = at(now + 10))).is_err());
        assert!(
            check(&renewal(&|p| p.not_after = at(issued_at + 599)))
                .unwrap_err()
                .contains("earlier")
        );
        assert!(
            // A CA whose clock is far behind: long past its start, near its end.
            check(&renewal(&|p| {
                p.not_before = at(now - 10_000);
                p.not_after = at(issued_at + 700);
            }))
            .unwrap_err()
            .contains("due for renewal")
        );
    }

    #[test]
    fn outside_its_period_a_certificate_is_refused() {
        let ca = test_ca(1);
        let der = issue_with(&ca, &SigningIdentity::from_seed(&[10; 32]), |_| {});
        assert_eq!(
            validate_enrollment_certificate(&der, &ca.root, JAN_2026 - 1, &none()),
            Err(CertificateError::NotYetValid {
                not_before: JAN_2026,
                at: JAN_2026 - 1
            })
        );
        assert_eq!(
            validate_enrollment_certificate(&der, &ca.root, JAN_2027 + 1, &none()),
            Err(CertificateError::Expired {
                not_after: JAN_2027,
                at: JAN_2027 + 1
            })
        );
    }

    /// A peer remembers validated certificates and later re-checks only their standing; the
    /// two must agree at every instant (else peers with and without the certificate cached
    /// decide a transaction differently: a fork). The certificate here outlives its root.
    #[test]
    fn a_remembered_identity_and_a_fresh_validation_always_agree() {
        let ca = test_ca(1);
        let root_end = JAN_2027 + 86_400 * 365;
        let der = issue_with(&ca, &SigningIdentity::from_seed(&[10; 32]), |p| {
            p.not_after = at(root_end + 86_400);
        });
        let remembered =
            validate_enrollment_certificate(&der, &ca.root, JAN_2026 + 10, &none()).unwrap();
        let revoked: HashSet<Vec<u8>> = [vec![0x42, 0x01]].into();
        for t in [
            JAN_2026 - 86_400 - 1,
            JAN_2026 - 1,
            JAN_2026,
            root_end - 1,
            root_end,
            root_end + 1,
            root_end + 86_400,
            root_end + 86_400 + 1,
        ] {
            for set in [&none(), &revoked] {
                assert_eq!(
                    remembered.check_standing(&ca.root, t, set),
                    validate_enrollment_certificate(&der, &ca.root, t, set).map(|_| ()),
                    "at {t}"
                );
            }
        }
        assert!(matches!(
            remembered.check_standing(&ca.root, root_end + 1, &none()),
            Err(CertificateError::Expired { .. })
        ));
    }

    #[test]
    fn a_revoked_serial_is_refused() {
        let ca = test_ca(1);
        let der = issue_with(&ca, &SigningIdentity::from_seed(&[10; 32]), |_| {});
        let revoked: HashSet<Vec<u8>> = [vec![0x42, 0x01]].into();
        assert_eq!(
            validate_enrollment_certificate(&der, &ca.root, JAN_2026 + 1, &revoked),
            Err(CertificateError::Revoked {
                serial: "4201".into()
            })
        );
        let others: BTreeSet<Vec<u8>> = [vec![0x42, 0x02]].into();
        validate_enrollment_certificate(&der, &ca.root, JAN_2026 + 1, &others).unwrap();
    }

    #[test]
    fn a_certificate_from_a_foreign_ca_is_refused() {
        let ours = test_ca(1);
        let foreign = test_ca(2);
        let der = issue_with(&foreign, &SigningIdentity::from_seed(&[10; 32]), |_| {});
        assert_eq!(
            validate_enrollment_certificate(&der, &ours.root, JAN_2026 + 1, &none()),
            Err(CertificateError::NotIssuedByRoot)
        );
    }

    #[test]
    fn a_tampered_certificate_is_refused() {
        let ca = test_ca(1);
        let der = issue_with(&ca, &SigningIdentity::from_seed(&[10; 32]), |_| {});
        // Flip a byte of the "clinician" role string inside the signed part.
        let pos = der.windows(9).position(|w| w == b"clinician").unwrap();
        let mut tampered = der.clone();
        tampered[pos] = b'C';
        assert_eq!(
            validate_enrollment_certificate(&tampered, &ca.root, JAN_2026 + 1, &none()),
            Err(CertificateError::NotIssuedByRoot)
        );
        assert!(matches!(
            validate_enrollment_certificate(&der[..der.len() - 3], &ca.root, JAN_2026, &none()),
            Err(CertificateError::Malformed(_))
        ));
        assert!(matches!(
            validate_enrollment_certificate(b"garbage", &ca.root, JAN_2026, &none()),
            Err(CertificateError::Malformed(_))
        ));
    }

    #[test]
    fn a_certificate_without_role_or_posing_as_ca_is_refused() {
        let ca = test_ca(1);
        let alice = SigningIdentity::from_seed(&[10; 32]);
        let no_ext = issue_with(&ca, &alice, |p| p.custom_extensions.clear());
        assert_eq!(
            validate_enrollment_certificate(&no_ext, &ca.root, JAN_2026 + 1, &none()),
            Err(CertificateError::MissingExtension)
        );
        let as_ca = issue_with(&ca, &alice, |p| {
            p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        });
        assert_eq!(
            validate_enrollment_certificate(&as_ca, &ca.root, JAN_2026 + 1, &none()),
            Err(CertificateError::IsCa)
        );
        let bad_name = issue_with(&ca, &alice, |p| {
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(DnType::CommonName, "../etc/passwd");
        });
        assert!(matches!(
            validate_enrollment_certificate(&bad_name, &ca.root, JAN_2026 + 1, &none()),
            Err(CertificateError::BadSubject(_))
        ));
    }

    #[test]
    fn a_root_must_be_a_self_signed_ca() {
        let ca = test_ca(1);
        let leaf = issue_with(&ca, &SigningIdentity::from_seed(&[10; 32]), |_| {});
        assert!(RootCertificate::from_der(&leaf).is_err());
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca.root.der().to_vec()));
        let parsed = RootCertificate::from_pem(&pem).unwrap();
        assert_eq!(parsed.fingerprint(), ca.root.fingerprint());
        assert_eq!(parsed.public_key(), ca.key.verifying_key());
    }

    #[test]
    fn csr_proves_possession_of_the_key() {
        let alice = SigningIdentity::from_seed(&[10; 32]);
        let csr = build_signing_request(&alice, "dr.alice").unwrap();
        assert_eq!(parse_csr(&csr).unwrap().public_key, alice.verifying_key());

        // Tamper with the signed request info (the key itself) and the proof fails.
        let key_bytes = alice.verifying_key().to_bytes();
        let pos = csr.windows(32).position(|w| w == key_bytes).unwrap();
        let mut tampered = csr.clone();
        tampered[pos] ^= 1;
        assert!(parse_csr(&tampered).is_err());
        let mut bad_sig = csr.clone();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 1;
        assert_eq!(parse_csr(&bad_sig), Err(CertificateError::BadSignature));
        assert!(matches!(
            parse_csr(b"nope"),
            Err(CertificateError::Malformed(_))
        ));
        assert_eq!(
            parse_csr(&vec![0; MAX_CERTIFICATE_LEN + 1]),
            Err(CertificateError::TooLarge)
        );
        assert!(build_signing_request(&alice, "bad name").is_err());
    }
}
