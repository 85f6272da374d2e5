//! Record credentials (issue 20 item 2), the seed design's transaction certificates: a
//! patient asks, under their enrollment certificate, for a certificate with no name of theirs
//! in it, and acts on their record only under it, so that neither the ledger nor the peers
//! ever see the enrollment name next to the record. Only the CA keeps which enrollment a
//! credential belongs to.

use medledger_crypto::{EnrolledIdentity, Role};
use rand::RngCore;

use super::{CaError, CertificateAuthority, IssuedCertificate, requested_keys};
use crate::store::IdentityRecord;

/// How the name of every record credential begins; no one may register such a name.
pub const RECORD_CREDENTIAL_PREFIX: &str = "record-";
/// Most record credentials one patient enrollment may be issued (one per record a patient
/// keeps, with room for replacing lost ones).
pub const MAX_RECORD_CREDENTIALS: u32 = 16;

impl CertificateAuthority {
    /// Issues `caller`, a patient under their enrollment certificate, a record credential
    /// (issue 20 item 2; the seed design's transaction certificate): a new identity with the
    /// role patient, no attributes and a random name ([`RECORD_CREDENTIAL_PREFIX`] and 32 hex
    /// digits, 128 bits), and its certificate for the CSR's key and `encryption_key`.
    ///
    /// The link to the enrollment is kept only in the credential's [`IdentityRecord`]
    /// (`record_of`), read back only to refuse a renewal once the enrollment is revoked; it is
    /// never listed ([`Self::identities`] leaves record credentials out), never logged and
    /// never published: revoking the enrollment by name revokes its own certificates, and the
    /// credential, whose keys are its own, stops at its next renewal. The credential has no
    /// enrollment secret and cannot ask for another credential.
    ///
    /// Errors: [`CaError::RecordCredentialRefused`] for a caller that is not a patient or is a
    /// record credential; [`CaError::TooManyRecordCredentials`] past
    /// [`MAX_RECORD_CREDENTIALS`]; [`CaError::IdentityRevoked`] for a revoked enrollment;
    /// [`CaError::InvalidArgument`] for a bad CSR or key.
    pub fn issue_record_credential(
        &self,
        caller: &EnrolledIdentity,
        csr_der: &[u8],
        encryption_key: &[u8],
        now: i64,
    ) -> Result<IssuedCertificate, CaError> {
        if caller.role != Role::Patient {
            return Err(CaError::RecordCredentialRefused("patients"));
        }
        if caller.name.starts_with(RECORD_CREDENTIAL_PREFIX) {
            return Err(CaError::RecordCredentialRefused(
                "a patient's enrollment, not to a record credential",
            ));
        }
        let (subject_key, encryption_key) = requested_keys(csr_der, encryption_key)?;
        let _guard = self.lock();
        let mut enrollment = self
            .store
            .identity(&caller.name)?
            .ok_or_else(|| CaError::NotFound(format!("identity {:?}", caller.name)))?;
        if enrollment.revoked {
            return Err(CaError::IdentityRevoked(enrollment.name));
        }
        if !enrollment.record_of.is_empty() {
            return Err(CaError::RecordCredentialRefused(
                "a patient's enrollment, not to a record credential",
            ));
        }
        if enrollment.record_credentials >= MAX_RECORD_CREDENTIALS {
            return Err(CaError::TooManyRecordCredentials(MAX_RECORD_CREDENTIALS));
        }
        let name = loop {
            let mut drawn = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut drawn);
            let name = format!("{RECORD_CREDENTIAL_PREFIX}{}", hex::encode(drawn));
            if self.store.identity(&name)?.is_none() {
                break name;
            }
        };
        enrollment.record_credentials += 1;
        let credential = IdentityRecord {
            name,
            role: Role::Patient.as_str().into(),
            attributes: Vec::new(),
            max_enrollments: 0,
            enrollments_used: 0,
            secret_salt: Vec::new(),
            secret_hash: Vec::new(),
            revoked: false,
            // The day only: an exact time would match the enrollment's request in its logs.
            registered_at_unix: now - now.rem_euclid(86_400),
            certificate_serials: Vec::new(),
            registered_by: String::new(),
            record_of: enrollment.name.clone(),
            record_credentials: 0,
        };
        let (issued, mut changes) = self.issue(credential, subject_key, encryption_key, now)?;
        changes.put_identity(enrollment);
        self.store.commit(changes)?;
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{NOW, admin, enroll_new, new_ca, registration};
    use super::*;
    use medledger_crypto::{EncryptionKey, SigningIdentity, build_signing_request};
    use medledger_proto::v1;

    /// A new signing key, its CSR under `name`, and a new X25519 public key: what a client
    /// sends the CA.
    fn new_keys(name: &str) -> (SigningIdentity, Vec<u8>, [u8; 32]) {
        let key = SigningIdentity::generate(&mut rand::rngs::OsRng);
        let csr = build_signing_request(&key, name).unwrap();
        let enc = EncryptionKey::generate(&mut rand::rngs::OsRng).public_key();
        (key, csr, enc.to_bytes())
    }

    /// The patient jane.doe, registered by `admin` and enrolled.
    fn jane(ca: &CertificateAuthority, admin: &EnrolledIdentity) -> EnrolledIdentity {
        let secret = ca
            .register(admin, registration("jane.doe", "patient"), NOW)
            .unwrap();
        enroll_new(ca, "jane.doe", &secret).unwrap()
    }

    /// A record credential for `caller`, as a patient's client asks for it (the subject the
    /// client puts in the CSR is ignored: the CA draws the name).
    fn request(
        caller: &EnrolledIdentity,
        ca: &CertificateAuthority,
    ) -> Result<EnrolledIdentity, CaError> {
        let (key, csr, enc) = new_keys(&caller.name);
        let issued = ca.issue_record_credential(caller, &csr, &enc, NOW)?;
        let credential = ca.authenticate(&issued.der, NOW).unwrap();
        assert_eq!(credential.name, issued.name);
        assert_eq!(credential.signing_key, key.verifying_key());
        Ok(credential)
    }

    #[test]
    fn a_record_credential_names_nothing_of_its_patient_and_is_never_listed() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let jane = jane(&ca, &admin);
        let first = request(&jane, &ca).unwrap();
        let second = request(&jane, &ca).unwrap();
        for credential in [&first, &second] {
            assert_eq!(credential.role, Role::Patient);
            assert!(
                credential.attributes.is_empty(),
                "no attributes of the enrollment"
            );
            let hex = credential
                .name
                .strip_prefix(RECORD_CREDENTIAL_PREFIX)
                .unwrap();
            assert_eq!(hex.len(), 32);
            assert!(!credential.name.contains("jane"));
        }
        assert_ne!(first.name, second.name, "one name per credential");
        // Admins list people; the credentials are not among them.
        let (listed, _) = ca.identities(&admin, "", 0).unwrap();
        let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
        assert!(names.contains(&"jane.doe"));
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with(RECORD_CREDENTIAL_PREFIX)),
            "{names:?}"
        );
        // Anyone may fetch its certificate by its name (to wrap a key to it); nothing else.
        assert!(ca.current_certificate(&first.name, NOW).is_ok());
    }

    #[test]
    fn only_a_patient_enrollment_gets_record_credentials_and_only_so_many() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let secret = ca
            .register(&admin, registration("dr.alice", "clinician"), NOW)
            .unwrap();
        let alice = enroll_new(&ca, "dr.alice", &secret).unwrap();
        assert!(matches!(
            request(&alice, &ca),
            Err(CaError::RecordCredentialRefused(_))
        ));
        assert!(matches!(
            request(&admin, &ca),
            Err(CaError::RecordCredentialRefused(_))
        ));
        let jane = jane(&ca, &admin);
        let credential = request(&jane, &ca).unwrap();
        // A credential cannot mint more (each would be another unlisted identity).
        assert!(matches!(
            request(&credential, &ca),
            Err(CaError::RecordCredentialRefused(_))
        ));
        for _ in 1..MAX_RECORD_CREDENTIALS {
            request(&jane, &ca).unwrap();
        }
        assert!(matches!(
            request(&jane, &ca),
            Err(CaError::TooManyRecordCredentials(MAX_RECORD_CREDENTIALS))
        ));
        // No one registers a name from the CA's range, so none can pose as a credential.
        let taken = registration(&credential.name, "patient");
        assert!(matches!(
            ca.register(&admin, taken, NOW),
            Err(CaError::InvalidArgument { field: "name", .. })
        ));
        // A credential has no enrollment secret: no secret enrolls under its name.
        let (_, csr, enc) = new_keys(&credential.name);
        assert!(matches!(
            ca.enroll(&credential.name, "", &csr, &enc, NOW),
            Err(CaError::BadSecret)
        ));
    }

    #[test]
    fn a_record_credential_renews_only_while_its_enrollment_stands_and_its_revocation_is_its_own() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let jane = jane(&ca, &admin);
        let credential = request(&jane, &ca).unwrap();
        let renew = |who: &EnrolledIdentity| {
            let (_, csr, enc) = new_keys(&who.name);
            ca.reenroll(who, &csr, &enc, false, NOW)
        };
        let (renewed, superseded) = renew(&credential).unwrap();
        assert_eq!(renewed.name, credential.name);
        assert_eq!(superseded.len(), 1);
        let renewed = ca.authenticate(&renewed.der, NOW).unwrap();
        // Revoking the enrollment publishes its own certificate alone: no record names the
        // credential next to it.
        let records = ca
            .revoke(
                &admin,
                &v1::revoke_request::Target::Name("jane.doe".into()),
                v1::RevocationReason::PrivilegeWithdrawn,
                NOW,
            )
            .unwrap();
        assert_eq!(records.len(), 1);
        let record = crate::authority::decode_record(&records[0]).unwrap();
        assert_eq!(record.name, "jane.doe");
        // ... and the credential renews no more, refused under its own name only.
        match renew(&renewed) {
            Err(CaError::IdentityRevoked(name)) => assert_eq!(name, credential.name),
            other => panic!("renewed a credential of a revoked enrollment: {other:?}"),
        }
    }
}
