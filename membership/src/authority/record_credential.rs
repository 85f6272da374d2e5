//! Record credentials (issue 20 item 2), the seed design's transaction certificates: a
//! patient asks, under their enrollment certificate, for a certificate with no name of theirs
//! in it, and acts on their record only under it, so that neither the ledger nor the peers
//! ever see the enrollment name next to the record. Only the CA keeps which enrollment a
//! credential belongs to.

use medledger_crypto::{EnrolledIdentity, Role};
use rand::RngCore;

use super::{CaError, CertificateAuthority, IssuedCertificate, requested_keys};
use crate::store::{Changes, IdentityRecord};
use medledger_crypto::read_enrollment_certificate;

/// How the name of every record credential begins; no one may register such a name, in any
/// case ([`is_reserved_name`]).
pub const RECORD_CREDENTIAL_PREFIX: &str = "record-";
/// Most record credentials one patient enrollment may be issued (one per record a patient
/// keeps, with room for replacing lost ones). Renewals do not count.
pub const MAX_RECORD_CREDENTIALS: u32 = 16;
/// Longest lifetime of a record credential's certificate (seconds; one day). Short, because
/// its lapse is its revocation: once the enrollment is revoked, the CA renews none of its
/// credentials, and revoking them by hand would publish revocation records next to the
/// enrollment's, linking the two.
pub const RECORD_CREDENTIAL_LIFETIME_SECONDS: i64 = 86_400;

/// Whether `name` is in the record credentials' range: it begins with
/// [`RECORD_CREDENTIAL_PREFIX`], in any case (so that no registered `Record-…` passes for a
/// credential to a reader).
pub fn is_reserved_name(name: &str) -> bool {
    name.get(..RECORD_CREDENTIAL_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RECORD_CREDENTIAL_PREFIX))
}

/// The lifetime of a record credential's certificate when enrollment certificates last
/// `validity_seconds` (seconds): [`RECORD_CREDENTIAL_LIFETIME_SECONDS`], or less on a
/// network of shorter certificates.
pub fn record_credential_lifetime(validity_seconds: i64) -> i64 {
    validity_seconds.min(RECORD_CREDENTIAL_LIFETIME_SECONDS)
}

/// The width of the windows a record credential's validity is aligned to (seconds): an
/// eighth of its `lifetime`, at least one second. Every credential issued or renewed in one
/// window carries the same notBefore and notAfter (the window's start, less the usual
/// backdating, and that start plus `lifetime`), so its times tell no more than the window.
pub fn validity_window(lifetime: i64) -> i64 {
    (lifetime / 8).max(1)
}

impl CertificateAuthority {
    /// Issues `caller`, a patient under their enrollment certificate, a record credential
    /// (issue 20 item 2; the seed design's transaction certificate): a new identity with the
    /// role patient, no attributes and a random name ([`RECORD_CREDENTIAL_PREFIX`] and 32 hex
    /// digits, 128 bits), and its certificate for the CSR's key and `encryption_key`, valid
    /// for [`record_credential_lifetime`] from the start of its [`validity_window`].
    ///
    /// With `renew`, the name of a credential `caller` was issued, it renews that one
    /// instead, for the same keys, whether or not its certificate has lapsed: how a patient
    /// back after a day away gets their credential again. Renewals do not count toward
    /// [`MAX_RECORD_CREDENTIALS`].
    ///
    /// The link to the enrollment is kept only in the credential's [`IdentityRecord`]
    /// (`record_of`), read back only to check a renewal; it is never listed
    /// ([`Self::identities`] and [`Self::expiring`] leave record credentials out), never
    /// logged and never published: revoking the enrollment by name revokes its own
    /// certificates, and its credentials, renewed no more, lapse within a day. The credential
    /// has no enrollment secret and cannot ask for another credential.
    ///
    /// Errors: [`CaError::RecordCredentialRefused`] for a caller that is not a patient's
    /// enrollment, and for a `renew` name that is not one of the caller's credentials (the
    /// same refusal whether or not it exists) or keys that are not its own;
    /// [`CaError::TooManyRecordCredentials`] past [`MAX_RECORD_CREDENTIALS`];
    /// [`CaError::IdentityRevoked`] for a revoked enrollment; [`CaError::InvalidArgument`]
    /// for a bad CSR or key.
    pub fn issue_record_credential(
        &self,
        caller: &EnrolledIdentity,
        csr_der: &[u8],
        encryption_key: &[u8],
        renew: Option<&str>,
        now: i64,
    ) -> Result<IssuedCertificate, CaError> {
        const NOT_AN_ENROLLMENT: &str = "a patient's enrollment, not to a record credential";
        if caller.role != Role::Patient {
            return Err(CaError::RecordCredentialRefused("patients"));
        }
        if is_reserved_name(&caller.name) {
            return Err(CaError::RecordCredentialRefused(NOT_AN_ENROLLMENT));
        }
        if renew.is_some_and(|name| name.len() > 256) {
            return Err(CaError::RecordCredentialRefused(NOT_YOURS));
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
            return Err(CaError::RecordCredentialRefused(NOT_AN_ENROLLMENT));
        }
        if let Some(name) = renew {
            let credential = self
                .store
                .identity(name)?
                .filter(|c| c.record_of == enrollment.name && !c.revoked)
                .ok_or(CaError::RecordCredentialRefused(NOT_YOURS))?;
            let held_record = self
                .latest_certificate(&credential)?
                .ok_or(CaError::RecordCredentialRefused(NOT_YOURS))?;
            let held = read_enrollment_certificate(&held_record.der, &self.root)?;
            if held.signing_key != subject_key || held.encryption_key != encryption_key {
                return Err(CaError::RecordCredentialRefused(NOT_YOURS));
            }
            // A key revoked by serial (compromised, withdrawn: anything but superseded by a
            // renewal) is never certified again; its holder makes new keys. The revocation
            // reached the peers; a renewal must not undo it.
            for serial in &credential.certificate_serials {
                let Some(record) = self.store.certificate(serial)? else {
                    continue;
                };
                let superseded = record.revocation_reason
                    == medledger_proto::v1::RevocationReason::Superseded as i32;
                if record.revoked
                    && (serial == &held_record.serial
                        || (!superseded
                            && read_enrollment_certificate(&record.der, &self.root)?.signing_key
                                == subject_key))
                {
                    return Err(CaError::RecordCredentialRefused(NOT_YOURS));
                }
            }
            // Renewed once due, not at will: every renewal is a new serial and a new
            // certificate hash, which budgets at the peers are counted by. Asked before
            // (an answer lost on the way, a retry), the certificate it holds comes back.
            if let Some(held) = self.held_until_due(&credential, &held_record, now)? {
                return Ok(held);
            }
            let (issued, _) = self.reissue(
                credential,
                subject_key,
                encryption_key,
                None,
                Changes::default(),
                now,
            )?;
            return Ok(issued);
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
        let mut changes = Changes::default();
        changes.put_identity(enrollment);
        let (issued, _) =
            self.reissue(credential, subject_key, encryption_key, None, changes, now)?;
        Ok(issued)
    }
}

impl CertificateAuthority {
    /// A record credential's latest certificate `held`, while it is not due for renewal at
    /// `now` ([`medledger_crypto::renewal_due_at`]): what a renewal asked before its time is
    /// answered with (the same certificate, no new serial), through either door.
    pub(crate) fn held_until_due(
        &self,
        credential: &IdentityRecord,
        held: &crate::store::CertificateRecord,
        now: i64,
    ) -> Result<Option<IssuedCertificate>, CaError> {
        let due_at = medledger_crypto::renewal_due_at(held.not_before_unix, held.not_after_unix);
        Ok((!held.revoked && now < due_at).then(|| IssuedCertificate {
            name: credential.name.clone(),
            der: held.der.clone(),
            serial: held.serial.clone(),
            not_after_unix: held.not_after_unix,
        }))
    }
}

/// The refusal of a renewal for a name that is not one of the caller's credentials, or keys
/// that are not its own: the same whether the name exists or not.
const NOT_YOURS: &str =
    "the renewal of one of the caller's own record credentials, for its own keys";

#[cfg(test)]
mod tests {
    use super::super::tests::{NOW, admin, enroll_new, new_ca, registration};
    use super::super::{BOOTSTRAP_ADMIN, certificate_validity};
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
        let issued = ca.issue_record_credential(caller, &csr, &enc, None, NOW)?;
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

    /// An admin paging through the identities, `limit` at a time from `after`: every page's
    /// names and the `next_after` it gave.
    fn pages(
        ca: &CertificateAuthority,
        admin: &EnrolledIdentity,
        after: &str,
        limit: u32,
    ) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        let mut after = after.to_string();
        loop {
            let (listed, next) = ca.identities(admin, &after, limit).unwrap();
            let names = listed.into_iter().map(|i| i.name).collect();
            out.push((names, next.clone()));
            if next.is_empty() {
                return out;
            }
            after = next;
        }
    }

    #[test]
    fn paging_through_identities_never_names_a_record_credential() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let jane = jane(&ca, &admin);
        for _ in 0..3 {
            request(&jane, &ca).unwrap();
        }
        // Names on both sides of the credentials' range.
        for name in ["quinn", "rachel", "zed"] {
            ca.register(&admin, registration(name, "patient"), NOW)
                .unwrap();
        }
        for (after, limit) in [("", 1), ("", 2), ("record-", 1), ("r", 1), ("", 0)] {
            let pages = pages(&ca, &admin, after, limit);
            let listed: Vec<&String> = pages.iter().flat_map(|(n, _)| n).collect();
            for (names, next) in &pages {
                assert!(
                    !next
                        .to_ascii_lowercase()
                        .starts_with(RECORD_CREDENTIAL_PREFIX)
                        && names
                            .iter()
                            .all(|n| !n.starts_with(RECORD_CREDENTIAL_PREFIX)),
                    "after {after:?}, limit {limit}: a page named a credential: {names:?} next {next:?}"
                );
                assert!(limit == 0 || names.len() <= limit as usize);
            }
            let expected: Vec<&str> = [BOOTSTRAP_ADMIN, "jane.doe", "quinn", "rachel", "zed"]
                .into_iter()
                .filter(|n| *n > after)
                .collect();
            assert_eq!(listed, expected, "after {after:?}, limit {limit}");
        }
        // Nor does the expiry warner (or its log) name one, though all expire as jane does.
        let far = NOW + ca.validity_seconds() - 1;
        let expiring: Vec<String> = ca
            .expiring(far)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(expiring.contains(&"jane.doe".to_string()), "{expiring:?}");
        assert!(
            expiring
                .iter()
                .all(|n| !n.starts_with(RECORD_CREDENTIAL_PREFIX)),
            "{expiring:?}"
        );
    }

    #[test]
    fn record_credentials_share_coarse_validity_and_last_a_day() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let jane = jane(&ca, &admin);
        let lifetime = record_credential_lifetime(ca.validity_seconds());
        assert_eq!(lifetime, RECORD_CREDENTIAL_LIFETIME_SECONDS);
        let window = validity_window(lifetime);
        // Two patients' credentials issued apart within one window carry the same times.
        let secret = ca
            .register(&admin, registration("john.roe", "patient"), NOW)
            .unwrap();
        let john = enroll_new(&ca, "john.roe", &secret).unwrap();
        let start = NOW - NOW.rem_euclid(window);
        let times = |who: &EnrolledIdentity, at: i64| {
            let (_, csr, enc) = new_keys(&who.name);
            let issued = ca
                .issue_record_credential(who, &csr, &enc, None, at)
                .unwrap();
            certificate_validity(&issued.der).unwrap()
        };
        let first = times(&jane, start);
        let second = times(&john, start + window - 1);
        assert_eq!(first, second, "one window, one validity");
        assert_eq!(first.0, start - medledger_crypto::BACKDATE_SECONDS);
        assert_eq!(first.1, start + lifetime);
        // The enrollment's exact times are nowhere in it.
        let enrollment = ca.current_certificate("jane.doe", NOW).unwrap();
        let enrolled = certificate_validity(&enrollment).unwrap();
        assert_ne!(enrolled.0, first.0);
        assert_ne!(enrolled.1, first.1);
        // A renewal under the credential itself falls on the same grid.
        let credential = request(&jane, &ca).unwrap();
        let (_, csr, enc) = new_keys(&credential.name);
        let later = start + 5 * window + 17;
        let (renewed, _) = ca.reenroll(&credential, &csr, &enc, false, later).unwrap();
        let renewed = certificate_validity(&renewed.der).unwrap();
        let later_start = later - later.rem_euclid(window);
        assert_eq!(
            renewed,
            (
                later_start - medledger_crypto::BACKDATE_SECONDS,
                later_start + lifetime
            )
        );
        // Short-lived networks get credentials no longer than everyone else's certificates.
        assert_eq!(record_credential_lifetime(60), 60);
        assert_eq!(validity_window(60), 7);
        assert_eq!(validity_window(1), 1);
    }

    #[test]
    fn an_expired_record_credential_is_renewed_by_its_enrollment_alone() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let jane = jane(&ca, &admin);
        let (key, csr, enc) = new_keys("jane.doe");
        let issued = ca
            .issue_record_credential(&jane, &csr, &enc, None, NOW)
            .unwrap();
        let credential = ca.authenticate(&issued.der, NOW).unwrap();
        // Two days on, the credential has lapsed; the enrollment (a year) stands.
        let later = NOW + 2 * RECORD_CREDENTIAL_LIFETIME_SECONDS;
        assert!(ca.authenticate(&issued.der, later).is_err(), "lapsed");
        let jane_later = ca
            .authenticate(&ca.current_certificate("jane.doe", NOW).unwrap(), later)
            .unwrap();
        let renew = |who: &EnrolledIdentity, name: &str, at: i64| {
            let csr = build_signing_request(&key, name).unwrap();
            ca.issue_record_credential(who, &csr, &enc, Some(name), at)
        };
        let renewed = renew(&jane_later, &credential.name, later).unwrap();
        assert_eq!(
            renewed.name, credential.name,
            "the same credential, renewed"
        );
        let renewed_der = renewed.der.clone();
        let renewed = ca.authenticate(&renewed.der, later).unwrap();
        assert_eq!(renewed.signing_key, credential.signing_key);
        // Asked again in the same window (an answer lost on the way): the same certificate,
        // no new serial.
        let again = renew(&jane_later, &credential.name, later + 1).unwrap();
        assert_eq!(again.der, renewed_der);
        // Renewals are not new credentials: they do not count toward the cap.
        let mut at = later;
        for _ in 0..MAX_RECORD_CREDENTIALS {
            at += RECORD_CREDENTIAL_LIFETIME_SECONDS;
            let jane_then = ca
                .authenticate(&ca.current_certificate("jane.doe", NOW).unwrap(), at)
                .unwrap();
            renew(&jane_then, &credential.name, at).unwrap();
        }
        // Another patient cannot renew it, and cannot tell it from a name never issued.
        let secret = ca
            .register(&admin, registration("john.roe", "patient"), NOW)
            .unwrap();
        let john = enroll_new(&ca, "john.roe", &secret).unwrap();
        let foreign = renew(&john, &credential.name, NOW);
        let unknown = renew(&john, "record-00000000000000000000000000000000", NOW);
        for refused in [&foreign, &unknown] {
            assert!(
                matches!(refused, Err(CaError::RecordCredentialRefused(_))),
                "{refused:?}"
            );
        }
        assert_eq!(format!("{foreign:?}"), format!("{unknown:?}"));
        // Nor can anyone renew an enrollment through this door.
        assert!(matches!(
            renew(&jane_later, "jane.doe", later),
            Err(CaError::RecordCredentialRefused(_))
        ));
        // Once the enrollment is revoked, its credentials lapse within a day: no renewal.
        ca.revoke(
            &admin,
            &v1::revoke_request::Target::Name("jane.doe".into()),
            v1::RevocationReason::PrivilegeWithdrawn,
            later,
        )
        .unwrap();
        assert!(renew(&jane_later, &credential.name, later).is_err());
    }

    /// The red team's findings on the renewal door (ADR 0016): a key revoked for compromise
    /// is not certified again, a credential is renewed only once due, and a credential lives
    /// only while its enrollment holds a valid certificate (one revoked by serial, or lapsed,
    /// ends it as a revocation by name does).
    #[test]
    fn a_renewal_never_undoes_a_revocation_and_comes_only_when_due() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let jane = jane(&ca, &admin);
        let (key, csr, enc) = new_keys("jane.doe");
        let issued = ca
            .issue_record_credential(&jane, &csr, &enc, None, NOW)
            .unwrap();
        let credential = ca.authenticate(&issued.der, NOW).unwrap();
        let renew = |who: &EnrolledIdentity, at: i64| {
            let csr = build_signing_request(&key, &credential.name).unwrap();
            ca.issue_record_credential(who, &csr, &enc, Some(&credential.name), at)
        };
        // Not due yet (a window later, well before the last quarter): the same certificate
        // back, no new serial.
        let soon = NOW + validity_window(RECORD_CREDENTIAL_LIFETIME_SECONDS);
        let again = renew(&jane, soon).unwrap();
        assert_eq!(again.der, issued.der);
        assert_eq!(
            ca.store
                .identity(&credential.name)
                .unwrap()
                .unwrap()
                .certificate_serials
                .len(),
            1
        );
        // Its key compromised, the credential is revoked by serial: never renewed again
        // for that key, due or lapsed.
        ca.revoke(
            &admin,
            &v1::revoke_request::Target::Serial(hex::encode(&issued.serial)),
            v1::RevocationReason::KeyCompromise,
            NOW + 10,
        )
        .unwrap();
        for at in [issued.not_after_unix - 60, issued.not_after_unix + 3_600] {
            assert!(
                matches!(renew(&jane, at), Err(CaError::RecordCredentialRefused(_))),
                "renewed a compromised key at {at}"
            );
        }

        // A second credential, renewed by its own certificate (reenroll), lives only while
        // the enrollment holds a valid certificate.
        let second = request(&jane, &ca).unwrap();
        let reenroll = |at: i64| {
            let (_, csr, enc) = new_keys(&second.name);
            ca.reenroll(&second, &csr, &enc, false, at)
        };
        reenroll(NOW + 20).unwrap();
        // The enrollment's certificate revoked by serial (the identity itself is not).
        let enrollment_serial = ca
            .store
            .identity("jane.doe")
            .unwrap()
            .unwrap()
            .certificate_serials
            .last()
            .unwrap()
            .clone();
        ca.revoke(
            &admin,
            &v1::revoke_request::Target::Serial(hex::encode(enrollment_serial)),
            v1::RevocationReason::KeyCompromise,
            NOW + 30,
        )
        .unwrap();
        match reenroll(NOW + 40) {
            Err(CaError::IdentityRevoked(name)) => assert_eq!(name, second.name),
            other => panic!("a credential outlived its enrollment's certificate: {other:?}"),
        }
    }

    /// The other door (red team of the fixes): a credential renewing its own keys under its
    /// own certificate before its time gets the certificate it holds, no new serial.
    #[test]
    fn a_credential_cannot_mint_serials_through_reenroll() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let jane = jane(&ca, &admin);
        let (key, csr, enc) = new_keys("jane.doe");
        let issued = ca
            .issue_record_credential(&jane, &csr, &enc, None, NOW)
            .unwrap();
        let credential = ca.authenticate(&issued.der, NOW).unwrap();
        let same_keys = build_signing_request(&key, &credential.name).unwrap();
        for at in [NOW + 1, NOW + 2] {
            let (again, revoked) = ca
                .reenroll(&credential, &same_keys, &enc, false, at)
                .unwrap();
            assert_eq!(again.der, issued.der, "at {at}");
            assert!(revoked.is_empty());
        }
        let serials = |ca: &CertificateAuthority| {
            ca.store
                .identity(&credential.name)
                .unwrap()
                .unwrap()
                .certificate_serials
                .len()
        };
        assert_eq!(serials(&ca), 1);
        // Once due, it renews.
        let due = issued.not_after_unix - 60;
        let (renewed, _) = ca
            .reenroll(&credential, &same_keys, &enc, false, due)
            .unwrap();
        assert_ne!(renewed.der, issued.der);
        assert_eq!(serials(&ca), 2);
    }

    #[test]
    fn a_credential_ends_with_its_lapsed_enrollment() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let jane = jane(&ca, &admin);
        let credential = request(&jane, &ca).unwrap();
        let enrollment_end =
            certificate_validity(&ca.current_certificate("jane.doe", NOW).unwrap())
                .unwrap()
                .1;
        let (_, csr, enc) = new_keys(&credential.name);
        let at = enrollment_end + 1;
        assert!(matches!(
            ca.reenroll(&credential, &csr, &enc, false, at),
            Err(CaError::IdentityRevoked(_))
        ));
        assert!(ca.enrollment_stands("jane.doe", NOW).unwrap());
        assert!(!ca.enrollment_stands("jane.doe", at).unwrap());
        assert!(!ca.enrollment_stands("nobody", NOW).unwrap());
    }

    #[test]
    fn the_reserved_prefix_holds_in_any_case_and_for_names_registered_before_it() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        for name in ["Record-abc", "RECORD-abc", "record-abc"] {
            assert!(
                matches!(
                    ca.register(&admin, registration(name, "patient"), NOW),
                    Err(CaError::InvalidArgument { field: "name", .. })
                ),
                "{name}"
            );
        }
        // A person registered under such a name before the prefix was reserved can no
        // longer enroll: a certificate under it would pass for a record credential.
        let secret = ca
            .register_unchecked(registration("legacy", "patient"), BOOTSTRAP_ADMIN, NOW)
            .unwrap();
        let mut legacy = ca.store.identity("legacy").unwrap().unwrap();
        legacy.name = "record-legacy".into();
        let mut changes = crate::store::Changes::default();
        changes.put_identity(legacy);
        ca.store.commit(changes).unwrap();
        assert!(matches!(
            enroll_new(&ca, "record-legacy", &secret),
            Err(CaError::InvalidArgument { field: "name", .. })
        ));
    }
}
