//! The certificate authority's rules, independent of gRPC: who may register, enroll, reenroll
//! and revoke, how certificates and revocation records are made, and what is stored.
//! Every operation takes the current time as a parameter.

use std::collections::HashSet;
use std::sync::{Mutex, RwLock};

use medledger_crypto::{
    Attribute, AttributeWindow, CertificateError, ENROLLMENT_EXTENSION_OID, EncryptionPublicKey,
    EnrolledIdentity, EnrollmentExtension, Role, RootCertificate, SignatureDomain, SigningIdentity,
    VerifyingKey, parse_csr, validate_enrollment_certificate, validate_name,
};
use medledger_proto::v1;
use prost::Message;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::files::{CaDir, read_private, write_private, write_public};
use crate::store::{CertificateRecord, Changes, IdentityRecord, Store, StoreError};

mod record_credential;
pub use record_credential::{
    MAX_RECORD_CREDENTIALS, RECORD_CREDENTIAL_LIFETIME_SECONDS, RECORD_CREDENTIAL_PREFIX,
    is_reserved_name, record_credential_lifetime, validity_window,
};

/// Name of the identity `init` registers so the first administrator can enroll.
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// Default lifetime of an enrollment certificate: one year.
pub const DEFAULT_CERTIFICATE_VALIDITY_SECONDS: i64 = 365 * 24 * 3600;
// Certificates start this long before they are issued, so a client whose clock is a little
// behind the CA's can use its certificate at once.
use medledger_crypto::BACKDATE_SECONDS;
const ROOT_VALIDITY_SECONDS: i64 = 20 * 365 * 24 * 3600;
/// Default lifetime of the CA's TLS certificate: five years.
pub const DEFAULT_TLS_VALIDITY_SECONDS: i64 = 5 * 365 * 24 * 3600;
#[cfg(test)]
const TLS_VALIDITY_SECONDS: i64 = DEFAULT_TLS_VALIDITY_SECONDS;
const CRL_VALIDITY_SECONDS: i64 = 7 * 24 * 3600;
/// Longest enrollment secret accepted on the wire (ours are 64 characters).
const MAX_SECRET_LEN: usize = 128;
/// Most enrollments one registration may allow.
pub const MAX_ENROLLMENTS: u32 = 100;
/// Page limits for list calls.
pub const MAX_REVOCATIONS_PAGE: usize = 1000;
pub const MAX_IDENTITIES_PAGE: usize = 500;
const SECRET_HASH_DOMAIN: &[u8] = b"medledger/v1/enrollment-secret";

/// Why the CA refused or failed a request. Mapped once to gRPC statuses in `service`.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("invalid {field}: {why}")]
    InvalidArgument { field: &'static str, why: String },
    #[error("unknown name or wrong enrollment secret")]
    BadSecret,
    #[error(
        "the enrollment secret for {0:?} has been used up; ask an administrator to register a new identity"
    )]
    SecretUsedUp(String),
    #[error("the identity {0:?} has been revoked")]
    IdentityRevoked(String),
    #[error("this call needs a client certificate; enroll first")]
    NoClientCertificate,
    #[error("the client certificate is not acceptable: {0}")]
    BadClientCertificate(#[from] CertificateError),
    #[error("only the role admin may {action}; this certificate has role {role}")]
    NotAdmin { action: &'static str, role: Role },
    #[error("an identity named {0:?} is already registered")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("the CA directory {0} is already initialized")]
    AlreadyInitialized(String),
    #[error("CA storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("CA files: {0}")]
    Io(#[from] std::io::Error),
    #[error("the CA could not build a certificate or CRL: {0}")]
    Build(String),
    #[error("a record credential is issued only to {0}")]
    RecordCredentialRefused(&'static str),
    #[error("this enrollment has been issued its {0} record credentials, the most one may have")]
    TooManyRecordCredentials(u32),
}

/// The refusal of a name in the record credentials' range ([`is_reserved_name`]).
fn reserved_name() -> CaError {
    invalid(
        "name",
        format!(
            "names starting with {RECORD_CREDENTIAL_PREFIX:?} (in any case) are the CA's, for record credentials"
        ),
    )
}

fn invalid(field: &'static str, why: impl ToString) -> CaError {
    CaError::InvalidArgument {
        field,
        why: why.to_string(),
    }
}

fn build_error(e: impl ToString) -> CaError {
    CaError::Build(e.to_string())
}

/// What an administrator asks to register.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub role: String,
    pub attributes: Vec<v1::Attribute>,
    pub max_enrollments: u32,
}

/// A freshly issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate's subject name.
    pub name: String,
    pub der: Vec<u8>,
    pub serial: Vec<u8>,
    pub not_after_unix: i64,
}

/// What `init` created.
#[derive(Debug)]
pub struct InitOutcome {
    pub root_fingerprint: String,
    pub admin_secret_path: std::path::PathBuf,
}

struct CachedCrl {
    der: Vec<u8>,
    number: u64,
    this_update: i64,
}

pub struct CertificateAuthority {
    root_key: SigningIdentity,
    root_params: CertificateParams,
    root: RootCertificate,
    store: Store,
    /// Serialises read-modify-write operations; reads need no lock.
    write_lock: Mutex<()>,
    revoked: RwLock<HashSet<Vec<u8>>>,
    crl: RwLock<CachedCrl>,
    validity_seconds: i64,
}

fn datetime(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(build_error)
}

/// RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the public key.
fn key_id(key: &VerifyingKey) -> KeyIdMethod {
    KeyIdMethod::PreSpecified(Sha256::digest(key.to_bytes())[..20].to_vec())
}

/// The root's parameters. Rebuilt identically at every start, so the issuer name and key
/// identifier in issued certificates always match the root certificate on disk.
fn root_params(root_key: &VerifyingKey) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "medledger");
    // The key's identifier in the name tells networks apart, for people and for TLS stacks
    // (which pick an issuer by name before checking its signature).
    let tag = hex::encode(&Sha256::digest(root_key.to_bytes())[..4]);
    dn.push(DnType::CommonName, format!("medledger root CA {tag}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = key_id(root_key);
    params
}

/// An identity's newest certificate, not revoked, that is within its warning window of its
/// end or past it ([`CertificateAuthority::expiring`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub name: String,
    pub serial: Vec<u8>,
    /// Its notAfter, in Unix seconds.
    pub not_after_unix: i64,
}

/// How long before its end a certificate is reported as expiring: from the moment it is due
/// for renewal ([`medledger_crypto::renewal_due_at`]: a quarter of the lifetime it was
/// issued for, at most 30 days). A one-year certificate is reported 30 days ahead, a
/// one-minute certificate 15 seconds ahead.
pub fn expiry_warning_seconds(lifetime_seconds: i64) -> i64 {
    (lifetime_seconds / 4).clamp(0, medledger_crypto::MAX_RENEWAL_WINDOW_SECONDS)
}

/// How long after its end a certificate no one renewed is still reported: 30 days.
pub const EXPIRED_REPORT_GRACE_SECONDS: i64 = 30 * 86_400;

/// The subjectPublicKeyInfo of a certificate (DER), as its bytes.
fn subject_public_key(der: &[u8]) -> Result<Vec<u8>, CaError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaError::Build(format!("stored certificate: {e}")))?;
    Ok(cert.public_key().raw.to_vec())
}

/// The notBefore and notAfter of a certificate (DER), in Unix seconds.
pub fn certificate_validity(der: &[u8]) -> Result<(i64, i64), CaError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaError::Build(format!("certificate: {e}")))?;
    Ok((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// The notAfter of a certificate (DER), in Unix seconds.
pub fn certificate_not_after(der: &[u8]) -> Result<i64, CaError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaError::Build(format!("certificate: {e}")))?;
    Ok(cert.validity().not_after.timestamp())
}

/// A TLS server certificate for the CA (CN `medledger-ca`, EKU serverAuth), for
/// `localhost`, `127.0.0.1` and each of `hosts` (DNS names or IP addresses), signed by the
/// root, valid `validity_seconds` from `now`: (its key as PKCS#8 PEM, the certificate as
/// PEM).
fn issue_tls_certificate(
    root_params: &CertificateParams,
    root_key: &SigningIdentity,
    hosts: &[String],
    now: i64,
    validity_seconds: i64,
) -> Result<(Zeroizing<String>, String), CaError> {
    let tls_key = SigningIdentity::generate(&mut rand::rngs::OsRng);
    let mut tls = CertificateParams::default();
    tls.distinguished_name = DistinguishedName::new();
    tls.distinguished_name
        .push(DnType::CommonName, "medledger-ca");
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(hosts.iter().cloned());
    for name in names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.as_str().try_into().map_err(|e| invalid("host", e))?),
        };
        if !tls.subject_alt_names.contains(&san) {
            tls.subject_alt_names.push(san);
        }
    }
    tls.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    tls.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    tls.use_authority_key_identifier_extension = true;
    tls.key_identifier_method = key_id(&tls_key.verifying_key());
    tls.not_before = datetime(now - BACKDATE_SECONDS)?;
    tls.not_after = datetime(now.saturating_add(validity_seconds))?;
    tls.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    let issuer = Issuer::from_params(root_params, root_key);
    let tls_cert = tls
        .signed_by(&tls_key.verifying_key(), &issuer)
        .map_err(build_error)?;
    Ok((tls_key.to_pkcs8_pem(), tls_cert.pem()))
}

/// The DNS names and IP addresses of a TLS certificate (PEM), in its order.
fn tls_certificate_names(pem_text: &str) -> Result<Vec<String>, CaError> {
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem_text.as_bytes())
        .map_err(|e| CaError::Build(format!("the CA's TLS certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CaError::Build(format!("the CA's TLS certificate: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => names.push(dns.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

/// The CA's root key and certificate from `dir`, checked to belong together.
fn read_root(dir: &CaDir) -> Result<(SigningIdentity, RootCertificate), CaError> {
    let root_key = SigningIdentity::from_pkcs8_pem(&read_private(&dir.root_key())?)
        .map_err(|e| CaError::Build(format!("{}: {e}", dir.root_key().display())))?;
    let root_pem = std::fs::read_to_string(dir.root_certificate())?;
    let root = RootCertificate::from_pem(&root_pem)
        .map_err(|e| CaError::Build(format!("{}: {e}", dir.root_certificate().display())))?;
    if root.public_key() != root_key.verifying_key() {
        return Err(CaError::Build(
            "ca-root.key does not belong to ca-root.pem".into(),
        ));
    }
    Ok((root_key, root))
}

/// Where a renewal writes the new version of `path` before renaming it into place.
fn renewal_file(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// Finishes a TLS renewal of `dir`: the new key, then the new certificate, renamed over the
/// old ones, and the directory synced. Run by `renew_tls` and when the CA starts, so a crash
/// between the renames never leaves the key of one certificate beside another (a new
/// certificate file alone means its key is already in place). Does nothing when no renewal
/// is pending.
pub fn complete_tls_renewal(dir: &CaDir) -> Result<(), CaError> {
    let key_new = renewal_file(&dir.tls_key());
    let cert_new = renewal_file(&dir.tls_certificate());
    if !cert_new.exists() {
        // A key alone: its certificate was never written; the renewal did not happen.
        if key_new.exists() {
            std::fs::remove_file(&key_new)?;
        }
        return Ok(());
    }
    if key_new.exists() {
        std::fs::rename(&key_new, dir.tls_key())?;
    }
    std::fs::rename(&cert_new, dir.tls_certificate())?;
    std::fs::File::open(dir.root.join("tls"))?.sync_all()?;
    Ok(())
}

fn random_serial() -> Vec<u8> {
    let mut serial = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut serial);
    // Positive and without a leading zero byte, so the DER integer is exactly these bytes.
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

/// A fresh one-time secret (256 bits as 64 lowercase hex digits: nothing a shell or an
/// option parser could misread), its salt, and the salted hash that is all the CA keeps.
fn new_secret() -> (String, Vec<u8>, Vec<u8>) {
    let mut secret = [0u8; 32];
    let mut salt = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut secret);
    rand::thread_rng().fill_bytes(&mut salt);
    let secret = hex::encode(secret);
    let hash = secret_hash(&salt, &secret);
    (secret, salt, hash)
}

/// The secrets are 256-bit random strings, so one SHA-256 with a salt is enough: there is
/// nothing to brute-force.
fn secret_hash(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(SECRET_HASH_DOMAIN);
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().to_vec()
}

pub fn attribute_from_proto(a: &v1::Attribute) -> Result<Attribute, CaError> {
    Attribute::new(
        a.key.clone(),
        a.value.clone(),
        AttributeWindow {
            not_before: a.not_before_unix,
            not_after: a.not_after_unix,
        },
    )
    .map_err(|e| invalid("attribute", e))
}

pub fn attribute_to_proto(a: &Attribute) -> v1::Attribute {
    v1::Attribute {
        key: a.key.clone(),
        value: a.value.clone(),
        not_before_unix: a.window.not_before,
        not_after_unix: a.window.not_after,
    }
}

impl CertificateAuthority {
    /// Creates a new CA in `dir`: root key and certificate, TLS server certificate for
    /// `localhost`, `127.0.0.1` and each of `hosts`, the database, and the bootstrap admin
    /// registration whose secret goes to `dir/admin.secret` (0600).
    pub fn init(dir: &CaDir, hosts: &[String], now: i64) -> Result<InitOutcome, CaError> {
        if dir.root_certificate().exists() || dir.database().exists() {
            return Err(CaError::AlreadyInitialized(dir.root.display().to_string()));
        }
        std::fs::create_dir_all(dir.root.join("tls"))?;

        let root_key = SigningIdentity::generate(&mut rand::rngs::OsRng);
        let mut params = root_params(&root_key.verifying_key());
        params.not_before = datetime(now - BACKDATE_SECONDS)?;
        params.not_after = datetime(now + ROOT_VALIDITY_SECONDS)?;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let root_cert = params.self_signed(&root_key).map_err(build_error)?;

        let (tls_key, tls_cert) =
            issue_tls_certificate(&params, &root_key, hosts, now, DEFAULT_TLS_VALIDITY_SECONDS)?;

        write_private(&dir.root_key(), root_key.to_pkcs8_pem().as_bytes())?;
        write_public(&dir.root_certificate(), root_cert.pem().as_bytes())?;
        write_private(&dir.tls_key(), tls_key.as_bytes())?;
        write_public(&dir.tls_certificate(), tls_cert.as_bytes())?;

        let ca = Self::open(dir, DEFAULT_CERTIFICATE_VALIDITY_SECONDS, now)?;
        let secret = ca.register_unchecked(
            Registration {
                name: BOOTSTRAP_ADMIN.into(),
                role: Role::Admin.as_str().into(),
                attributes: vec![],
                max_enrollments: 1,
            },
            "medledger-ca init",
            now,
        )?;
        write_private(&dir.admin_secret(), format!("{secret}\n").as_bytes())?;
        Ok(InitOutcome {
            root_fingerprint: hex::encode(ca.root.fingerprint()),
            admin_secret_path: dir.admin_secret(),
        })
    }

    /// Renews the CA's TLS server certificate in `dir` (issue 19 item 8): a new key and a
    /// certificate signed by the same root, for `localhost`, `127.0.0.1`, every name the
    /// current certificate holds and each of `add_hosts`, valid five years from `now`. The
    /// root does not change, so no client or peer needs anything new. The files are replaced
    /// atomically (new files, then rename); a running `serve` takes the new certificate at
    /// its next reload (docs/membership.md). Returns the names the new certificate holds.
    pub fn renew_tls(
        dir: &CaDir,
        add_hosts: &[String],
        now: i64,
        validity_seconds: i64,
    ) -> Result<Vec<String>, CaError> {
        if validity_seconds <= 0 {
            return Err(invalid("TLS certificate validity", "must be positive"));
        }
        let (root_key, _) = read_root(dir)?;
        let mut hosts = tls_certificate_names(&std::fs::read_to_string(dir.tls_certificate())?)?;
        for host in add_hosts {
            if !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        hosts.retain(|h| h != "localhost" && h != "127.0.0.1");
        let (key_pem, cert_pem) = issue_tls_certificate(
            &root_params(&root_key.verifying_key()),
            &root_key,
            &hosts,
            now,
            validity_seconds,
        )?;
        // Both new files first (a second renewal at the same time finds them and stops), then
        // the key, then the certificate: a crash between the two renames is completed by
        // `complete_tls_renewal` when the CA next starts.
        let key_new = renewal_file(&dir.tls_key());
        let cert_new = renewal_file(&dir.tls_certificate());
        write_private(&key_new, key_pem.as_bytes()).map_err(|e| {
            CaError::Build(format!(
                "{}: {e} (another renewal running, or one that crashed: start `serve` once to \
                 complete it)",
                key_new.display()
            ))
        })?;
        write_public(&cert_new, cert_pem.as_bytes())?;
        complete_tls_renewal(dir)?;
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(hosts);
        Ok(names)
    }

    /// Every identity's newest certificate that is not revoked and is within
    /// [`expiry_warning_seconds`] of its end at `now`, or past it by at most
    /// [`EXPIRED_REPORT_GRACE_SECONDS`], in name order (issue 19
    /// item 8: the CA warns before anything it issued expires). Reads every identity, a
    /// page at a time.
    pub fn expiring(&self, now: i64) -> Result<Vec<Expiring>, CaError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            // Record credentials left out: each lasts a day and is renewed by its holder, and
            // a warning naming one next to an enrollment expiring alike would link the two.
            let page = self.store.identities_after(
                &after,
                MAX_IDENTITIES_PAGE,
                RECORD_CREDENTIAL_PREFIX,
            )?;
            for record in &page {
                let Some(serial) = record.certificate_serials.last() else {
                    continue;
                };
                let Some(c) = self.store.certificate(serial)? else {
                    continue;
                };
                let warn_from =
                    medledger_crypto::renewal_due_at(c.not_before_unix, c.not_after_unix);
                // Past its end for more than the grace: a certificate no one renewed, reported
                // while it mattered and then dropped (an identity left to lapse).
                let long_gone = now
                    > c.not_after_unix
                        .saturating_add(EXPIRED_REPORT_GRACE_SECONDS);
                if !c.revoked && !record.revoked && now >= warn_from && !long_gone {
                    out.push(Expiring {
                        name: record.name.clone(),
                        serial: c.serial.clone(),
                        not_after_unix: c.not_after_unix,
                    });
                }
            }
            match page.last() {
                Some(last) if page.len() == MAX_IDENTITIES_PAGE => after = last.name.clone(),
                _ => return Ok(out),
            }
        }
    }

    /// Opens an initialized CA directory.
    pub fn open(dir: &CaDir, validity_seconds: i64, now: i64) -> Result<Self, CaError> {
        if validity_seconds <= 0 {
            return Err(invalid("certificate validity", "must be positive"));
        }
        let (root_key, root) = read_root(dir)?;
        let store = Store::open(&dir.database())?;
        let mut revoked = HashSet::new();
        for signed in store.revocations_since(0, usize::MAX)? {
            revoked.insert(decode_record(&signed)?.serial);
        }
        let ca = CertificateAuthority {
            root_params: root_params(&root_key.verifying_key()),
            root_key,
            root,
            store,
            write_lock: Mutex::new(()),
            revoked: RwLock::new(revoked),
            crl: RwLock::new(CachedCrl {
                der: vec![],
                number: 0,
                this_update: 0,
            }),
            validity_seconds,
        };
        {
            let _guard = ca.lock();
            ca.refresh_crl(now)?;
        }
        Ok(ca)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave half-written state (writes are one
        // batch), so a poisoned lock is safe to reuse.
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn root(&self) -> &RootCertificate {
        &self.root
    }

    pub fn validity_seconds(&self) -> i64 {
        self.validity_seconds
    }

    /// Validates a client certificate presented over TLS, including revocations made after
    /// the connection was opened.
    pub fn authenticate(&self, cert_der: &[u8], now: i64) -> Result<EnrolledIdentity, CaError> {
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        Ok(validate_enrollment_certificate(
            cert_der, &self.root, now, &*revoked,
        )?)
    }

    fn require_admin(caller: &EnrolledIdentity, action: &'static str) -> Result<(), CaError> {
        if caller.role != Role::Admin {
            return Err(CaError::NotAdmin {
                action,
                role: caller.role,
            });
        }
        Ok(())
    }

    /// Registers an identity on behalf of an admin and returns its one-time secret.
    pub fn register(
        &self,
        caller: &EnrolledIdentity,
        registration: Registration,
        now: i64,
    ) -> Result<String, CaError> {
        Self::require_admin(caller, "register identities")?;
        self.register_unchecked(registration, &caller.name, now)
    }

    fn register_unchecked(
        &self,
        registration: Registration,
        registered_by: &str,
        now: i64,
    ) -> Result<String, CaError> {
        validate_name(&registration.name).map_err(|e| invalid("name", e))?;
        if is_reserved_name(&registration.name) {
            return Err(reserved_name());
        }
        let role: Role = registration.role.parse().map_err(|e| invalid("role", e))?;
        let attributes = registration
            .attributes
            .iter()
            .map(attribute_from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        Attribute::validate_list(&attributes).map_err(|e| invalid("attributes", e))?;
        let max_enrollments = match registration.max_enrollments {
            0 => 1,
            n if n > MAX_ENROLLMENTS => {
                return Err(invalid(
                    "max_enrollments",
                    format!("at most {MAX_ENROLLMENTS}"),
                ));
            }
            n => n,
        };

        let _guard = self.lock();
        if self.store.identity(&registration.name)?.is_some() {
            return Err(CaError::AlreadyExists(registration.name));
        }
        let (secret, salt, hash) = new_secret();
        let mut changes = Changes::default();
        changes.put_identity(IdentityRecord {
            name: registration.name,
            role: role.as_str().into(),
            attributes: attributes.iter().map(attribute_to_proto).collect(),
            max_enrollments,
            enrollments_used: 0,
            secret_salt: salt,
            secret_hash: hash,
            revoked: false,
            registered_at_unix: now,
            certificate_serials: vec![],
            registered_by: registered_by.into(),
            record_of: String::new(),
            record_credentials: 0,
        });
        self.store.commit(changes)?;
        Ok(secret)
    }

    /// Exchanges a one-time secret and a CSR for an enrollment certificate.
    pub fn enroll(
        &self,
        name: &str,
        secret: &str,
        csr_der: &[u8],
        encryption_key: &[u8],
        now: i64,
    ) -> Result<IssuedCertificate, CaError> {
        if name.len() > 256 || secret.len() > MAX_SECRET_LEN {
            return Err(CaError::BadSecret);
        }
        let (subject_key, encryption_key) = requested_keys(csr_der, encryption_key)?;

        let _guard = self.lock();
        let mut identity = self.store.identity(name)?.ok_or(CaError::BadSecret)?;
        let expected = secret_hash(&identity.secret_salt, secret);
        if !bool::from(expected.ct_eq(&identity.secret_hash)) {
            return Err(CaError::BadSecret);
        }
        if identity.revoked {
            return Err(CaError::IdentityRevoked(identity.name));
        }
        if is_reserved_name(&identity.name) {
            // Registered before the prefix was reserved: a certificate under it would pass
            // for a record credential.
            return Err(reserved_name());
        }
        if identity.enrollments_used >= identity.max_enrollments {
            return Err(CaError::SecretUsedUp(identity.name));
        }
        identity.enrollments_used += 1;
        let (issued, changes) = self.issue(identity, subject_key, encryption_key, now)?;
        self.store.commit(changes)?;
        Ok(issued)
    }

    /// Issues a certificate to the holder of a valid certificate (issue 19 item 2): for the
    /// same signing key (a renewal that keeps it, as peers and gateways must) or a new one.
    /// With a new key, every earlier certificate of the identity that is not revoked is
    /// revoked with reason superseded, in the same write; with `key_compromise` (which needs
    /// a new key), with reason key compromise. A certificate for a key that is kept is left
    /// to its notAfter: whoever holds that key can present the new certificate anyway.
    /// Returns the new certificate and the revocations it made.
    pub fn reenroll(
        &self,
        caller: &EnrolledIdentity,
        csr_der: &[u8],
        encryption_key: &[u8],
        key_compromise: bool,
        now: i64,
    ) -> Result<(IssuedCertificate, Vec<v1::SignedRevocationRecord>), CaError> {
        let (subject_key, encryption_key) = requested_keys(csr_der, encryption_key)?;
        let new_key = subject_key != caller.signing_key;
        if key_compromise && !new_key {
            return Err(invalid(
                "csr",
                "a compromised key is replaced by a new one: sign the request with a new key",
            ));
        }
        let _guard = self.lock();
        let identity = self
            .store
            .identity(&caller.name)?
            .ok_or_else(|| CaError::NotFound(format!("identity {:?}", caller.name)))?;
        if identity.revoked {
            return Err(CaError::IdentityRevoked(identity.name));
        }
        if identity.record_of.is_empty() && is_reserved_name(&identity.name) {
            return Err(reserved_name());
        }
        if !identity.record_of.is_empty() && !self.enrollment_stands(&identity.record_of, now)? {
            // A record credential lives only as long as the enrollment it was issued to: not
            // revoked by name, and holding a certificate valid now (one revoked by serial, or
            // lapsed, ends its credentials too). The refusal names the credential alone:
            // nothing tells its holder (or a log) whose it is.
            return Err(CaError::IdentityRevoked(identity.name));
        }
        if !identity.record_of.is_empty() && !new_key {
            // A credential renewing its own keys before its time gets the certificate it holds:
            // no serial (and no budget at the peers) minted at will.
            if let Some(held) = self.latest_certificate(&identity)?
                && let Some(issued) = self.held_until_due(&identity, &held, now)?
            {
                return Ok((issued, Vec::new()));
            }
        }
        let reason = if key_compromise {
            v1::RevocationReason::KeyCompromise
        } else {
            v1::RevocationReason::Superseded
        };
        let superseding = if new_key { Some(reason) } else { None };
        self.reissue(
            identity,
            subject_key,
            encryption_key,
            superseding,
            Changes::default(),
            now,
        )
    }

    /// Whether the enrollment `name` stands at `now`: registered, not revoked, and holding
    /// a certificate that is neither revoked nor outside its validity (what its record
    /// credentials live by, ADR 0016 §6).
    ///
    /// # Errors
    /// The store failed.
    pub(crate) fn enrollment_stands(&self, name: &str, now: i64) -> Result<bool, CaError> {
        let Some(enrollment) = self.store.identity(name)? else {
            return Ok(false);
        };
        if enrollment.revoked {
            return Ok(false);
        }
        Ok(self.valid_certificate(&enrollment, now)?.is_some())
    }

    /// The newest of `identity`'s certificates that is neither revoked nor outside its
    /// validity at `now`, if any.
    ///
    /// # Errors
    /// The store failed.
    fn valid_certificate(
        &self,
        identity: &IdentityRecord,
        now: i64,
    ) -> Result<Option<CertificateRecord>, CaError> {
        for serial in identity.certificate_serials.iter().rev() {
            if let Some(c) = self.store.certificate(serial)?
                && !c.revoked
                && c.not_before_unix <= now
                && now < c.not_after_unix
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// The last certificate issued to `identity`, if any (whatever its state).
    ///
    /// # Errors
    /// The store failed.
    pub(crate) fn latest_certificate(
        &self,
        identity: &IdentityRecord,
    ) -> Result<Option<CertificateRecord>, CaError> {
        match identity.certificate_serials.last() {
            Some(serial) => Ok(self.store.certificate(serial)?),
            None => Ok(None),
        }
    }

    /// Issues `identity` (already checked, under the write lock) a certificate for
    /// `subject_key` and `encryption_key`; with `superseding` (a new key), every earlier
    /// certificate of it that is not revoked is revoked for that reason in the same write,
    /// which also holds `changes`. Returns the new certificate and the revocations it made.
    fn reissue(
        &self,
        identity: IdentityRecord,
        subject_key: VerifyingKey,
        encryption_key: EncryptionPublicKey,
        superseding: Option<v1::RevocationReason>,
        changes: Changes,
        now: i64,
    ) -> Result<(IssuedCertificate, Vec<v1::SignedRevocationRecord>), CaError> {
        let mut superseded = Vec::new();
        if superseding.is_some() {
            for serial in &identity.certificate_serials {
                if let Some(record) = self.store.certificate(serial)?
                    && !record.revoked
                {
                    superseded.push(record);
                }
            }
        }
        let (issued, issue_changes) = self.issue(identity, subject_key, encryption_key, now)?;
        let mut changes = changes;
        changes.extend(issue_changes);
        let reason = superseding.unwrap_or(v1::RevocationReason::Superseded);
        let records = self.revocation_changes(&mut changes, superseded, reason, now)?;
        self.store.commit(changes)?;
        self.after_revocations(&records, now)?;
        Ok((issued, records))
    }

    /// A new certificate for `identity` and the changes that store it (not yet committed).
    fn issue(
        &self,
        mut identity: IdentityRecord,
        subject_key: VerifyingKey,
        encryption_key: EncryptionPublicKey,
        now: i64,
    ) -> Result<(IssuedCertificate, Changes), CaError> {
        let role: Role = identity
            .role
            .parse()
            .map_err(|e| CaError::Build(format!("stored role: {e}")))?;
        let attributes = identity
            .attributes
            .iter()
            .map(attribute_from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        let extension = EnrollmentExtension {
            role,
            attributes,
            encryption_key,
        }
        .encode()
        .map_err(build_error)?;

        let serial = random_serial();
        let (not_before, not_after) = if identity.record_of.is_empty() {
            (now - BACKDATE_SECONDS, now + self.validity_seconds)
        } else {
            // A record credential's times say only which window it was issued in, shared by
            // every credential issued in it: never the second its patient's enrollment was
            // used, or renewed alongside it.
            let lifetime = record_credential_lifetime(self.validity_seconds);
            let start = now - now.rem_euclid(validity_window(lifetime));
            (start - BACKDATE_SECONDS, start + lifetime)
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.name.as_str());
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = datetime(not_before)?;
        params.not_after = datetime(not_after)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if matches!(role, Role::Peer | Role::Gateway) {
            // Peers and gateways also serve gRPC to clients (and peers to each other).
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = key_id(&subject_key);
        let mut custom = CustomExtension::from_oid_content(ENROLLMENT_EXTENSION_OID, extension);
        custom.set_criticality(false);
        params.custom_extensions.push(custom);
        let issuer = Issuer::from_params(&self.root_params, &self.root_key);
        let der = params
            .signed_by(&subject_key, &issuer)
            .map_err(build_error)?
            .der()
            .to_vec();

        identity.certificate_serials.push(serial.clone());
        let mut changes = Changes::default();
        changes.put_certificate(CertificateRecord {
            serial: serial.clone(),
            name: identity.name.clone(),
            der: der.clone(),
            not_before_unix: not_before,
            not_after_unix: not_after,
            revoked: false,
            revocation_reason: 0,
            revoked_at_unix: 0,
        });
        let name = identity.name.clone();
        changes.put_identity(identity);
        Ok((
            IssuedCertificate {
                name,
                der,
                serial,
                not_after_unix: not_after,
            },
            changes,
        ))
    }

    /// Revokes every certificate of a name (and stops its enrollment), or one certificate by
    /// serial. Returns one signed record per certificate newly revoked.
    pub fn revoke(
        &self,
        caller: &EnrolledIdentity,
        target: &v1::revoke_request::Target,
        reason: v1::RevocationReason,
        now: i64,
    ) -> Result<Vec<v1::SignedRevocationRecord>, CaError> {
        Self::require_admin(caller, "revoke certificates")?;
        let _guard = self.lock();
        let mut changes = Changes::default();
        let mut certificates = Vec::new();
        match target {
            v1::revoke_request::Target::Name(name) => {
                validate_name(name).map_err(|e| invalid("name", e))?;
                let mut identity = self
                    .store
                    .identity(name)?
                    .ok_or_else(|| CaError::NotFound(format!("identity {name:?}")))?;
                for serial in &identity.certificate_serials {
                    let record = self.store.certificate(serial)?.ok_or_else(|| {
                        CaError::Store(StoreError::Corrupt {
                            what: "certificate",
                            why: format!("serial {} of {name:?} is missing", hex::encode(serial)),
                        })
                    })?;
                    certificates.push(record);
                }
                identity.revoked = true;
                changes.put_identity(identity);
            }
            v1::revoke_request::Target::Serial(serial_hex) => {
                let serial = hex::decode(serial_hex)
                    .ok()
                    .filter(|s| !s.is_empty() && s.len() <= 20)
                    .ok_or_else(|| invalid("serial", "must be 1 to 20 bytes of hex"))?;
                let record = self
                    .store
                    .certificate(&serial)?
                    .ok_or_else(|| CaError::NotFound(format!("certificate {serial_hex}")))?;
                // A renewal that kept the key made siblings that would otherwise live on:
                // the holder of the key could go on with any of them. Revoking one for any
                // reason but superseded (which a renewal uses on the one it replaces, never
                // meaning the new one) revokes every certificate of the name with that key.
                if reason != v1::RevocationReason::Superseded
                    && let Some(identity) = self.store.identity(&record.name)?
                {
                    let key = subject_public_key(&record.der)?;
                    for other in &identity.certificate_serials {
                        if *other == record.serial {
                            continue;
                        }
                        // Past its end a sibling opens nothing: not revoked, so that a key
                        // renewed every few minutes for months makes one record, not
                        // thousands ahead of every later revocation in the feed.
                        if let Some(sibling) = self.store.certificate(other)?
                            && subject_public_key(&sibling.der)? == key
                            && certificate_not_after(&sibling.der)? >= now
                        {
                            certificates.push(sibling);
                        }
                    }
                }
                certificates.push(record);
            }
        }

        let records = self.revocation_changes(&mut changes, certificates, reason, now)?;
        self.store.commit(changes)?;
        self.after_revocations(&records, now)?;
        Ok(records)
    }

    /// Adds to `changes` the revocation of each of `certificates` not yet revoked: a numbered
    /// record signed by the root (domain `medledger/v1/revocation-record`) and the marked
    /// certificate. Called under the write lock; the caller commits, then calls
    /// [`Self::after_revocations`].
    fn revocation_changes(
        &self,
        changes: &mut Changes,
        certificates: Vec<CertificateRecord>,
        reason: v1::RevocationReason,
        now: i64,
    ) -> Result<Vec<v1::SignedRevocationRecord>, CaError> {
        let mut sequence = self.store.revocation_sequence()?;
        let mut records = Vec::new();
        for mut certificate in certificates.into_iter().filter(|c| !c.revoked) {
            sequence += 1;
            let record = v1::RevocationRecord {
                sequence,
                serial: certificate.serial.clone(),
                certificate_hash: Sha256::digest(&certificate.der).to_vec(),
                name: certificate.name.clone(),
                reason: reason as i32,
                revoked_at_unix: now,
            };
            let bytes = record.encode_to_vec();
            let signature = self
                .root_key
                .sign(SignatureDomain::RevocationRecord, &bytes);
            let signed = v1::SignedRevocationRecord {
                record: bytes,
                signature: signature.to_bytes().to_vec(),
            };
            certificate.revoked = true;
            certificate.revocation_reason = reason as i32;
            certificate.revoked_at_unix = now;
            changes.put_certificate(certificate);
            changes.put_revocation(sequence, signed.clone());
            records.push(signed);
        }
        Ok(records)
    }

    /// After committed revocations: the in-memory set and the CRL.
    fn after_revocations(
        &self,
        records: &[v1::SignedRevocationRecord],
        now: i64,
    ) -> Result<(), CaError> {
        {
            let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
            for signed in records {
                revoked.insert(decode_record(signed)?.serial);
            }
        }
        if !records.is_empty() {
            self.refresh_crl(now)?;
        }
        Ok(())
    }

    /// The current CRL (DER) and its number. Re-signed when a day old, so it never expires
    /// in the hands of a relying party that fetches it daily.
    pub fn crl(&self, now: i64) -> Result<(Vec<u8>, u64), CaError> {
        {
            let crl = self.crl.read().unwrap_or_else(|p| p.into_inner());
            if now - crl.this_update < 24 * 3600 {
                return Ok((crl.der.clone(), crl.number));
            }
        }
        let _guard = self.lock();
        self.refresh_crl(now)?;
        let crl = self.crl.read().unwrap_or_else(|p| p.into_inner());
        Ok((crl.der.clone(), crl.number))
    }

    /// Signs a new CRL listing every revoked certificate. Caller holds the write lock.
    fn refresh_crl(&self, now: i64) -> Result<(), CaError> {
        let mut revoked_certs = Vec::new();
        for signed in self.store.revocations_since(0, usize::MAX)? {
            let record = decode_record(&signed)?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&record.serial),
                revocation_time: datetime(record.revoked_at_unix)?,
                reason_code: Some(crl_reason(record.reason())),
                invalidity_date: None,
            });
        }
        let number = self.store.crl_number()? + 1;
        let params = CertificateRevocationListParams {
            this_update: datetime(now)?,
            next_update: datetime(now + CRL_VALIDITY_SECONDS)?,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: key_id(&self.root_key.verifying_key()),
        };
        let issuer = Issuer::from_params(&self.root_params, &self.root_key);
        let der = params
            .signed_by(&issuer)
            .map_err(build_error)?
            .der()
            .to_vec();
        let mut changes = Changes::default();
        changes.set_crl_number(number);
        self.store.commit(changes)?;
        *self.crl.write().unwrap_or_else(|p| p.into_inner()) = CachedCrl {
            der,
            number,
            this_update: now,
        };
        Ok(())
    }

    pub fn revocations_since(
        &self,
        since: u64,
        limit: u32,
    ) -> Result<(Vec<v1::SignedRevocationRecord>, u64), CaError> {
        let limit = match limit as usize {
            0 => MAX_REVOCATIONS_PAGE,
            n => n.min(MAX_REVOCATIONS_PAGE),
        };
        let records = self.store.revocations_since(since, limit)?;
        Ok((records, self.store.revocation_sequence()?))
    }

    pub fn latest_revocation_sequence(&self) -> Result<u64, CaError> {
        Ok(self.store.revocation_sequence()?)
    }

    /// The newest certificate of `name` that is valid at `now` and not revoked. Any
    /// enrolled caller may ask (certificates are public within the network).
    pub fn current_certificate(&self, name: &str, now: i64) -> Result<Vec<u8>, CaError> {
        if name.len() > 256 {
            return Err(invalid("name", "longer than 256 bytes"));
        }
        let record = self
            .store
            .identity(name)?
            .ok_or_else(|| CaError::NotFound(format!("identity {name:?}")))?;
        if let Some(c) = self.valid_certificate(&record, now)? {
            return Ok(c.der);
        }
        Err(CaError::NotFound(format!(
            "a valid certificate of {name:?} (not enrolled yet, expired or revoked)"
        )))
    }

    pub fn identities(
        &self,
        caller: &EnrolledIdentity,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<v1::IdentityInfo>, String), CaError> {
        Self::require_admin(caller, "list identities")?;
        let limit = match limit as usize {
            0 => MAX_IDENTITIES_PAGE,
            n => n.min(MAX_IDENTITIES_PAGE),
        };
        if after.len() > 256 {
            return Err(invalid("after", "longer than 256 bytes"));
        }
        // Record credentials are not people: listing them next to the enrollments (and
        // their times), or paging through their names, would help link the two. The store
        // leaves their range out, so no page and no `next_after` names one.
        let records = self
            .store
            .identities_after(after, limit, RECORD_CREDENTIAL_PREFIX)?;
        let next_after = if records.len() == limit {
            records.last().map(|r| r.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let mut certificates = Vec::new();
            for serial in &record.certificate_serials {
                if let Some(c) = self.store.certificate(serial)? {
                    certificates.push(v1::CertificateInfo {
                        serial: hex::encode(&c.serial),
                        not_before_unix: c.not_before_unix,
                        not_after_unix: c.not_after_unix,
                        revoked: c.revoked,
                        revocation_reason: c.revocation_reason,
                        certificate_hash: Sha256::digest(&c.der).to_vec(),
                    });
                }
            }
            out.push(v1::IdentityInfo {
                name: record.name,
                role: record.role,
                attributes: record.attributes,
                max_enrollments: record.max_enrollments,
                enrollments_used: record.enrollments_used,
                revoked: record.revoked,
                registered_at_unix: record.registered_at_unix,
                certificates,
            });
        }
        Ok((out, next_after))
    }
}

/// The keys a client asks to have certified: the CSR's (after its proof of possession) and
/// the X25519 key that goes into the extension.
fn requested_keys(
    csr_der: &[u8],
    encryption_key: &[u8],
) -> Result<(VerifyingKey, EncryptionPublicKey), CaError> {
    let subject_key = parse_csr(csr_der)
        .map_err(|e| invalid("csr", e))?
        .public_key;
    let encryption_key = EncryptionPublicKey::from_slice(encryption_key)
        .ok_or_else(|| invalid("encryption_public_key", "must be 32 bytes (X25519)"))?;
    if !encryption_key.is_usable() {
        // Of small order (RFC 7748 §6.1) or not canonical, nothing could be sealed or wrapped
        // to it; named as an auditor it would stop every emergency access (docs/adr/0013).
        return Err(invalid(
            "encryption_public_key",
            "is an X25519 key of small order or not canonically encoded, to which nothing can \
             be encrypted",
        ));
    }
    Ok((subject_key, encryption_key))
}

/// Decodes a stored revocation record (our own bytes; corruption is an error, not a panic).
pub fn decode_record(signed: &v1::SignedRevocationRecord) -> Result<v1::RevocationRecord, CaError> {
    v1::RevocationRecord::decode(signed.record.as_slice()).map_err(|e| {
        CaError::Store(StoreError::Corrupt {
            what: "revocation record",
            why: e.to_string(),
        })
    })
}

fn crl_reason(reason: v1::RevocationReason) -> rcgen::RevocationReason {
    use v1::RevocationReason as R;
    match reason {
        R::Unspecified => rcgen::RevocationReason::Unspecified,
        R::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
        R::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
        R::Superseded => rcgen::RevocationReason::Superseded,
        R::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        R::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use medledger_crypto::{EncryptionKey, build_signing_request};
    use std::collections::HashSet;

    pub(super) const NOW: i64 = 1_780_000_000;

    pub(super) fn new_ca() -> (tempfile::TempDir, CaDir, CertificateAuthority) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CaDir::new(tmp.path().join("ca"));
        CertificateAuthority::init(&dir, &["ca.hospital.example".into()], NOW).unwrap();
        let ca =
            CertificateAuthority::open(&dir, DEFAULT_CERTIFICATE_VALIDITY_SECONDS, NOW).unwrap();
        (tmp, dir, ca)
    }

    pub(super) fn enroll_new(
        ca: &CertificateAuthority,
        name: &str,
        secret: &str,
    ) -> Result<EnrolledIdentity, CaError> {
        let key = SigningIdentity::generate(&mut rand::rngs::OsRng);
        let enc = EncryptionKey::generate(&mut rand::rngs::OsRng);
        let csr = build_signing_request(&key, name).unwrap();
        let issued = ca.enroll(name, secret, &csr, &enc.public_key().to_bytes(), NOW)?;
        let identity = ca.authenticate(&issued.der, NOW).unwrap();
        assert_eq!(identity.signing_key, key.verifying_key());
        assert_eq!(identity.encryption_key, enc.public_key());
        Ok(identity)
    }

    pub(super) fn admin(ca: &CertificateAuthority, dir: &CaDir) -> EnrolledIdentity {
        let secret = std::fs::read_to_string(dir.admin_secret()).unwrap();
        enroll_new(ca, BOOTSTRAP_ADMIN, secret.trim()).unwrap()
    }

    pub(super) fn registration(name: &str, role: &str) -> Registration {
        Registration {
            name: name.into(),
            role: role.into(),
            attributes: vec![v1::Attribute {
                key: "department".into(),
                value: "oncology".into(),
                not_before_unix: None,
                not_after_unix: Some(NOW + 10),
            }],
            max_enrollments: 0,
        }
    }

    #[test]
    fn issued_certificates_carry_the_registration() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        assert_eq!(admin.role, Role::Admin);
        let secret = ca
            .register(&admin, registration("dr.alice", "clinician"), NOW)
            .unwrap();
        let alice = enroll_new(&ca, "dr.alice", &secret).unwrap();
        assert_eq!(alice.name, "dr.alice");
        assert_eq!(alice.role, Role::Clinician);
        assert_eq!(alice.attributes[0].window.not_after, Some(NOW + 10));
        assert_eq!(alice.not_before, NOW - BACKDATE_SECONDS);
        assert_eq!(alice.not_after, NOW + DEFAULT_CERTIFICATE_VALIDITY_SECONDS);
        // Default max_enrollments is one.
        assert!(matches!(
            enroll_new(&ca, "dr.alice", &secret),
            Err(CaError::SecretUsedUp(_))
        ));
    }

    /// Regression: base64url secrets began with '-' one time in 64, and the CLI then read
    /// `--secret -Jx...` as an option. Secrets are hex now: 256 bits, safe in any shell.
    #[test]
    fn secrets_are_hex_and_never_look_like_options() {
        for _ in 0..2000 {
            let (secret, _, _) = new_secret();
            assert_eq!(secret.len(), 64);
            assert!(
                secret
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn only_the_secret_hash_is_stored() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let secret = ca
            .register(&admin, registration("dr.alice", "clinician"), NOW)
            .unwrap();
        let record = ca.store.identity("dr.alice").unwrap().unwrap();
        assert_eq!(
            record.secret_hash,
            secret_hash(&record.secret_salt, &secret)
        );
        let bytes = record.encode_to_vec();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert_eq!(record.registered_by, "admin");
    }

    #[test]
    fn revocation_is_numbered_signed_durable_and_in_the_crl() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let secret = ca
            .register(&admin, registration("dr.alice", "clinician"), NOW)
            .unwrap();
        let alice = enroll_new(&ca, "dr.alice", &secret).unwrap();
        let (_, crl_before) = ca.crl(NOW).unwrap();

        let target = v1::revoke_request::Target::Name("dr.alice".into());
        let records = ca
            .revoke(
                &admin,
                &target,
                v1::RevocationReason::KeyCompromise,
                NOW + 1,
            )
            .unwrap();
        assert_eq!(records.len(), 1);
        let record = decode_record(&records[0]).unwrap();
        assert_eq!(record.sequence, 1);
        assert_eq!(record.serial, alice.serial);
        assert_eq!(record.certificate_hash, alice.cert_hash.to_vec());
        let signature = medledger_crypto::Signature::from_slice(&records[0].signature).unwrap();
        ca.root()
            .public_key()
            .verify(
                SignatureDomain::RevocationRecord,
                &records[0].record,
                &signature,
            )
            .unwrap();
        let (crl, number) = ca.crl(NOW + 1).unwrap();
        assert!(number > crl_before);
        let (_, parsed) = x509_parser::parse_x509_crl(&crl).unwrap();
        assert!(
            parsed
                .iter_revoked_certificates()
                .any(|r| r.raw_serial() == alice.serial.as_slice())
        );

        // The revoked certificate no longer authenticates, and the identity cannot enroll.
        let cert = ca.store.certificate(&alice.serial).unwrap().unwrap();
        assert!(matches!(
            ca.authenticate(&cert.der, NOW + 2),
            Err(CaError::BadClientCertificate(
                CertificateError::Revoked { .. }
            ))
        ));
        assert!(matches!(
            ca.revoke(&alice, &target, v1::RevocationReason::Unspecified, NOW),
            Err(CaError::NotAdmin { .. })
        ));
        drop(ca);

        // After a restart: still revoked, numbering continues.
        let ca = CertificateAuthority::open(&dir, DEFAULT_CERTIFICATE_VALIDITY_SECONDS, NOW + 3)
            .unwrap();
        assert!(ca.authenticate(&cert.der, NOW + 3).is_err());
        let secret = ca
            .register(&admin, registration("dr.bob", "clinician"), NOW)
            .unwrap();
        enroll_new(&ca, "dr.bob", &secret).unwrap();
        let bob = v1::revoke_request::Target::Name("dr.bob".into());
        let records = ca
            .revoke(&admin, &bob, v1::RevocationReason::Superseded, NOW + 4)
            .unwrap();
        assert_eq!(decode_record(&records[0]).unwrap().sequence, 2);
        let (all, latest) = ca.revocations_since(0, 0).unwrap();
        assert_eq!((all.len(), latest), (2, 2));
        let (after_one, _) = ca.revocations_since(1, 0).unwrap();
        assert_eq!(after_one.len(), 1);
    }

    #[test]
    fn a_failed_enrollment_spends_nothing() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let secret = ca
            .register(&admin, registration("dr.alice", "clinician"), NOW)
            .unwrap();
        let key = SigningIdentity::generate(&mut rand::rngs::OsRng);
        let csr = build_signing_request(&key, "dr.alice").unwrap();
        assert!(matches!(
            ca.enroll("dr.alice", &secret, b"junk", &[9; 32], NOW),
            Err(CaError::InvalidArgument { field: "csr", .. })
        ));
        assert!(matches!(
            ca.enroll("dr.alice", &secret, &csr, &[0; 16], NOW),
            Err(CaError::InvalidArgument { .. })
        ));
        // A key of small order: nothing could be sealed to it (docs/adr/0013).
        assert!(matches!(
            ca.enroll("dr.alice", &secret, &csr, &[0; 32], NOW),
            Err(CaError::InvalidArgument {
                field: "encryption_public_key",
                ..
            })
        ));
        assert!(matches!(
            ca.enroll("dr.alice", "wrong", &csr, &[9; 32], NOW),
            Err(CaError::BadSecret)
        ));
        let record = ca.store.identity("dr.alice").unwrap().unwrap();
        assert_eq!(record.enrollments_used, 0);
        assert!(record.certificate_serials.is_empty());
        enroll_new(&ca, "dr.alice", &secret).unwrap();
    }

    #[test]
    fn concurrent_enrollments_never_exceed_the_limit() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let mut reg = registration("peer-0", "peer");
        reg.max_enrollments = 3;
        let secret = ca.register(&admin, reg, NOW).unwrap();
        let successes = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| enroll_new(&ca, "peer-0", &secret).is_ok()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|ok| *ok)
                .count()
        });
        assert_eq!(successes, 3);
        let serials: HashSet<_> = ca
            .store
            .identity("peer-0")
            .unwrap()
            .unwrap()
            .certificate_serials
            .into_iter()
            .collect();
        assert_eq!(serials.len(), 3);
    }

    /// Issue 19 item 8: the CA reports every identity's newest certificate as it nears its
    /// end — not a revoked one, not one superseded by a renewal.
    #[test]
    fn certificates_near_their_end_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CaDir::new(tmp.path().join("ca"));
        CertificateAuthority::init(&dir, &[], NOW).unwrap();
        // One-minute certificates: reported from 15 s before their end.
        let ca = CertificateAuthority::open(&dir, 60, NOW).unwrap();
        let admin = admin(&ca, &dir);
        let mut identities = Vec::new();
        for name in ["dr.a", "dr.b"] {
            let secret = ca
                .register(&admin, registration(name, "clinician"), NOW)
                .unwrap();
            identities.push(enroll_new(&ca, name, &secret).unwrap());
        }
        let names = |at: i64| -> Vec<String> {
            ca.expiring(at)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert!(names(NOW + 44).is_empty());
        assert_eq!(names(NOW + 45), ["admin", "dr.a", "dr.b"]);
        // A revoked identity is not reported; a renewed one only for its new certificate.
        ca.revoke(
            &admin,
            &v1::revoke_request::Target::Name("dr.b".into()),
            v1::RevocationReason::KeyCompromise,
            NOW + 1,
        )
        .unwrap();
        let key = SigningIdentity::generate(&mut rand::rngs::OsRng);
        let enc = EncryptionKey::generate(&mut rand::rngs::OsRng);
        let csr = build_signing_request(&key, "dr.a").unwrap();
        let (renewed, superseded) = ca
            .reenroll(
                &identities[0],
                &csr,
                &enc.public_key().to_bytes(),
                false,
                NOW + 40,
            )
            .unwrap();
        assert_eq!(
            superseded.len(),
            1,
            "a new key supersedes the old certificate"
        );
        assert_eq!(names(NOW + 45), ["admin"]);
        let expiring = ca.expiring(NOW + 85).unwrap();
        assert_eq!(expiring.len(), 2, "{expiring:?}");
        assert_eq!(expiring[1].serial, renewed.serial);
        assert_eq!(expiring[1].not_after_unix, NOW + 100);
        // One past its end is still reported (as expired, by the serving loop), for 30 days.
        assert!(expiring[0].not_after_unix < NOW + 85);
        assert_eq!(
            names(NOW + 60 + EXPIRED_REPORT_GRACE_SECONDS),
            ["admin", "dr.a"]
        );
        assert!(names(NOW + 101 + EXPIRED_REPORT_GRACE_SECONDS).is_empty());
    }

    /// Red-team review of renewal: a renewal that keeps the key makes a sibling certificate;
    /// revoking one of them by serial, for any reason but superseded, revokes every
    /// certificate of the name with that key (the holder could go on with the sibling), and
    /// none with another key or of another name.
    #[test]
    fn revoking_a_certificate_revokes_every_certificate_that_carries_its_key() {
        let (_tmp, dir, ca) = new_ca();
        let admin = admin(&ca, &dir);
        let key = SigningIdentity::generate(&mut rand::rngs::OsRng);
        let other_key = SigningIdentity::generate(&mut rand::rngs::OsRng);
        let enc = EncryptionKey::generate(&mut rand::rngs::OsRng);
        let reasons = [
            ("dr.m", v1::RevocationReason::KeyCompromise, 2),
            ("dr.n", v1::RevocationReason::AffiliationChanged, 2),
            ("dr.o", v1::RevocationReason::CessationOfOperation, 2),
            ("dr.p", v1::RevocationReason::PrivilegeWithdrawn, 2),
            ("dr.q", v1::RevocationReason::Unspecified, 2),
            ("dr.r", v1::RevocationReason::Superseded, 1),
        ];
        for (name, reason, expected) in reasons {
            let secret = ca
                .register(&admin, registration(name, "clinician"), NOW)
                .unwrap();
            let csr = build_signing_request(&key, name).unwrap();
            let first = ca
                .enroll(name, &secret, &csr, &enc.public_key().to_bytes(), NOW)
                .unwrap();
            let holder = ca.authenticate(&first.der, NOW).unwrap();
            let (same_key, superseded) = ca
                .reenroll(&holder, &csr, &enc.public_key().to_bytes(), false, NOW + 1)
                .unwrap();
            assert!(superseded.is_empty(), "{name}: the key was kept");
            let records = ca
                .revoke(
                    &admin,
                    &v1::revoke_request::Target::Serial(hex::encode(&first.serial)),
                    reason,
                    NOW + 2,
                )
                .unwrap();
            let revoked: HashSet<Vec<u8>> = records
                .iter()
                .map(|r| decode_record(r).unwrap().serial)
                .collect();
            assert!(revoked.contains(&first.serial), "{name}: {reason:?}");
            assert_eq!(revoked.len(), expected, "{name}: {reason:?}");
            let sibling = ca.authenticate(&same_key.der, NOW + 3);
            assert_eq!(sibling.is_err(), expected == 2, "{name}: {reason:?}");
        }
        // A sibling past its end is left as it is (it opens nothing): one record.
        let secret = ca
            .register(&admin, registration("dr.t", "clinician"), NOW)
            .unwrap();
        let csr = build_signing_request(&key, "dr.t").unwrap();
        let first = ca
            .enroll("dr.t", &secret, &csr, &enc.public_key().to_bytes(), NOW)
            .unwrap();
        let holder = ca.authenticate(&first.der, NOW).unwrap();
        let (same_key, _) = ca
            .reenroll(&holder, &csr, &enc.public_key().to_bytes(), false, NOW + 1)
            .unwrap();
        let first_end = certificate_not_after(&first.der).unwrap();
        let records = ca
            .revoke(
                &admin,
                &v1::revoke_request::Target::Serial(hex::encode(&same_key.serial)),
                v1::RevocationReason::PrivilegeWithdrawn,
                first_end + 1,
            )
            .unwrap();
        assert_eq!(records.len(), 1, "the expired sibling is not revoked");
        // A renewal to another key supersedes the old certificate; revoking the new one
        // leaves nothing of the name standing, and revokes no certificate of another key.
        let secret = ca
            .register(&admin, registration("dr.s", "clinician"), NOW)
            .unwrap();
        let csr = build_signing_request(&key, "dr.s").unwrap();
        let first = ca
            .enroll("dr.s", &secret, &csr, &enc.public_key().to_bytes(), NOW)
            .unwrap();
        let holder = ca.authenticate(&first.der, NOW).unwrap();
        let csr = build_signing_request(&other_key, "dr.s").unwrap();
        let (renewed, superseded) = ca
            .reenroll(&holder, &csr, &enc.public_key().to_bytes(), false, NOW + 1)
            .unwrap();
        assert_eq!(superseded.len(), 1);
        let records = ca
            .revoke(
                &admin,
                &v1::revoke_request::Target::Serial(hex::encode(&renewed.serial)),
                v1::RevocationReason::PrivilegeWithdrawn,
                NOW + 2,
            )
            .unwrap();
        assert_eq!(
            records.len(),
            1,
            "only the new key's certificate was still live"
        );
    }

    /// Issue 19 item 8: the CA's TLS certificate is renewed from the same root, keeping its
    /// names and adding new ones; the files are replaced whole.
    #[test]
    fn the_tls_certificate_is_renewed_from_the_same_root() {
        let (_tmp, dir, ca) = new_ca();
        let before = std::fs::read_to_string(dir.tls_certificate()).unwrap();
        let key_before = std::fs::read_to_string(dir.tls_key()).unwrap();
        let names = CertificateAuthority::renew_tls(
            &dir,
            &["ca2.hospital.example".into(), "10.0.0.7".into()],
            NOW + 100,
            TLS_VALIDITY_SECONDS,
        )
        .unwrap();
        let expected = [
            "localhost",
            "127.0.0.1",
            "ca.hospital.example",
            "ca2.hospital.example",
            "10.0.0.7",
        ];
        assert_eq!(names, expected);
        let after = std::fs::read_to_string(dir.tls_certificate()).unwrap();
        assert_ne!(before, after);
        assert_ne!(key_before, std::fs::read_to_string(dir.tls_key()).unwrap());
        assert_eq!(tls_certificate_names(&after).unwrap(), expected);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.tls_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Issued by the same root: its issuer is the root's subject, and it chains (the
        // rustls check a client makes, with the root as the only anchor).
        let der = rustls_pki_types::CertificateDer::from_pem_slice(after.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(ca.root().der()).unwrap();
        assert_eq!(cert.issuer(), root.subject());
        assert_eq!(
            certificate_not_after(der.as_ref()).unwrap(),
            NOW + 100 + TLS_VALIDITY_SECONDS
        );
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from(
                ca.root().der().to_vec(),
            ))
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let at = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            (NOW + 200) as u64,
        ));
        verifier
            .verify_server_cert(
                &der,
                &[],
                &rustls_pki_types::ServerName::try_from("ca2.hospital.example").unwrap(),
                &[],
                at,
            )
            .unwrap();
        // Renewing again without names keeps them all.
        let again =
            CertificateAuthority::renew_tls(&dir, &[], NOW + 200, TLS_VALIDITY_SECONDS).unwrap();
        assert_eq!(again, expected);
        // A crash after the key's rename, before the certificate's: the pair is completed
        // at the next start, never left mismatched.
        let current_key = std::fs::read(dir.tls_key()).unwrap();
        std::fs::write(renewal_file(&dir.tls_certificate()), &after).unwrap();
        complete_tls_renewal(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.tls_certificate()).unwrap(),
            after
        );
        assert_eq!(std::fs::read(dir.tls_key()).unwrap(), current_key);
        // A key alone (the crash came before the certificate was written): dropped.
        std::fs::write(renewal_file(&dir.tls_key()), b"half").unwrap();
        complete_tls_renewal(&dir).unwrap();
        assert!(!renewal_file(&dir.tls_key()).exists());
        assert_eq!(std::fs::read(dir.tls_key()).unwrap(), current_key);
        // A renewal that finds another's files refuses, and changes nothing.
        std::fs::write(renewal_file(&dir.tls_key()), b"other").unwrap();
        assert!(
            CertificateAuthority::renew_tls(&dir, &[], NOW + 300, TLS_VALIDITY_SECONDS).is_err()
        );
        assert_eq!(std::fs::read(dir.tls_key()).unwrap(), current_key);
    }
}
