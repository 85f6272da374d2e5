//! A patient's record credential (issue 20 item 2; the seed design's transaction
//! certificate): a certificate the CA issues a patient, on request under their enrollment
//! certificate, with the role patient and a name the CA drew at random. The patient acts on
//! their record only under it (TLS to the peers and the gateway, queries and signed
//! transactions), so the record's owner on the ledger is that name and its key, and no
//! peer, block or log sees the enrollment name next to the record. Only the CA knows whose
//! it is.
//!
//! On disk it is a wallet of its own, `<enrollment wallet>/record/` (same files, same
//! modes), pinned to the enrollment wallet's network; the record's keys
//! (`record-keys.json`) live in it.

use std::path::{Path, PathBuf};

use medledger_crypto::{
    EncryptionKey, Role, SigningIdentity, build_signing_request, read_enrollment_certificate,
};
use medledger_proto::v1;

use crate::ca::{CaClient, TlsIdentity};
use crate::error::ClientError;
use crate::peer::{pin_network, pinned_genesis};
use crate::wallet::{Wallet, WalletInfo};

/// The directory, inside an enrollment wallet, of its record credential's wallet.
pub const RECORD_WALLET_DIR: &str = "record";
/// How the CA begins every record credential's name (`medledger_membership`'s
/// `RECORD_CREDENTIAL_PREFIX`).
pub const RECORD_CREDENTIAL_PREFIX: &str = "record-";

/// Where `enrollment`'s record credential lives (whether or not it exists yet).
pub fn record_wallet_dir(enrollment: &Wallet) -> PathBuf {
    enrollment.dir.join(RECORD_WALLET_DIR)
}

/// Whether `enrollment` holds a record credential: its wallet is complete (the certificate
/// is the last file a wallet gets).
pub fn has_record_credential(enrollment: &Wallet) -> bool {
    record_wallet_dir(enrollment).join("cert.pem").exists()
}

/// Removes the certificate of the record credential of the enrollment wallet at
/// `enrollment_dir` (first step of an erasure's cleanup, before its record keys are wiped):
/// from then on [`has_record_credential`] is false and no command acts under it, even if
/// the rest of the cleanup never runs. Returns whether there was one.
///
/// # Errors
/// The certificate cannot be removed (`ClientError::Wallet`).
pub fn disable(enrollment_dir: &Path) -> Result<bool, ClientError> {
    let cert = enrollment_dir.join(RECORD_WALLET_DIR).join("cert.pem");
    match std::fs::remove_file(&cert) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClientError::wallet(&cert, e)),
    }
}

/// Removes the record credential of the enrollment wallet at `enrollment_dir`, once its record is erased: its keys sign for
/// a record that no longer exists, and a credential kept would tie the erased record's
/// blocks to the next record `patient init` registers. Returns whether there was one.
///
/// # Errors
/// The directory cannot be removed (`ClientError::Wallet`).
pub fn discard(enrollment_dir: &Path) -> Result<bool, ClientError> {
    let dir = enrollment_dir.join(RECORD_WALLET_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClientError::wallet(&dir, e)),
    }
}

/// Opens `enrollment`'s record credential, renewed first through the enrollment when it is
/// due or has lapsed (a credential lasts at most a day: `medledger_membership`'s
/// `RECORD_CREDENTIAL_LIFETIME_SECONDS`), for the same keys, from the CA at `ca_url`.
/// Returns the wallet and whether it renewed.
///
/// # Errors
/// The credential's wallet cannot be read; the renewal failed (the CA refused: the
/// enrollment is revoked, or the credential is not this enrollment's), or the CA answered
/// with a certificate that is not a renewal of the credential for its keys
/// (`ClientError::Protocol`).
pub async fn current(enrollment: &Wallet, ca_url: &str) -> Result<(Wallet, bool), ClientError> {
    let mut credential = Wallet::open(&record_wallet_dir(enrollment))?;
    let held = credential.certificate_identity()?;
    let now = medledger_tls::now_unix();
    if now < medledger_crypto::renewal_due_at(held.not_before, held.not_after) {
        return Ok((credential, false));
    }
    let signing = SigningIdentity::from_pkcs8_pem(&credential.signing.to_pkcs8_pem())
        .map_err(|e| ClientError::wallet(&credential.dir, format!("signing.key: {e}")))?;
    let encryption = EncryptionKey::from_bytes(*credential.encryption.to_bytes());
    let csr = build_signing_request(&signing, &held.name)
        .map_err(|e| ClientError::Usage(format!("cannot renew the record credential: {e}")))?;
    let root = credential.root()?;
    let response = {
        let mut ca = CaClient::connect(ca_url, root.der(), TlsIdentity::Wallet(enrollment)).await?;
        ca.issue_record_credential(v1::IssueRecordCredentialRequest {
            csr_der: csr,
            encryption_public_key: encryption.public_key().to_bytes().to_vec(),
            renew: held.name.clone(),
        })
        .await?
    };
    medledger_crypto::check_renewal(
        &response.certificate_der,
        &root,
        &held,
        &signing.verifying_key(),
        &encryption.public_key(),
        now,
    )
    .map_err(|e| ClientError::Protocol(format!("the CA's renewed record credential: {e}")))?;
    credential.replace(signing, encryption, &response.certificate_der, true)?;
    Ok((credential, true))
}

/// Asks the CA at `ca_url` for a record credential for `enrollment` (a patient's wallet),
/// with keys made here, and writes its wallet at [`record_wallet_dir`], pinned to the
/// network `enrollment` is pinned to.
///
/// # Errors
/// The wallet already holds one (`ClientError::Wallet`); the CA refuses (PERMISSION_DENIED
/// for a wallet that is not a patient's enrollment, RESOURCE_EXHAUSTED past 16) or answers
/// with a certificate that is not a record credential for these keys under the wallet's
/// root (`ClientError::Protocol`).
pub async fn obtain(enrollment: &Wallet, ca_url: &str) -> Result<Wallet, ClientError> {
    let dir = record_wallet_dir(enrollment);
    if has_record_credential(enrollment) {
        return Err(ClientError::wallet(
            &dir,
            "already holds this patient's record credential",
        ));
    }
    if dir.exists() {
        // Left by an `obtain` cut short before its certificate was written: keys no CA
        // certified, for no record (record keys come after the credential). Anything more is
        // not this function's to remove.
        if dir.join("record-keys.json").exists() {
            return Err(ClientError::wallet(
                &dir,
                "holds record keys but no certificate; restore the credential's cert.pem from a backup",
            ));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| ClientError::wallet(&dir, e))?;
    }
    let signing = SigningIdentity::generate(&mut rand_core::OsRng);
    let encryption = EncryptionKey::generate(&mut rand_core::OsRng);
    // The CA ignores the subject and draws the name.
    let csr = build_signing_request(&signing, RECORD_WALLET_DIR)
        .map_err(|e| ClientError::Usage(format!("cannot ask for a record credential: {e}")))?;
    let root = enrollment.root()?;
    let response = {
        let mut ca = CaClient::connect(ca_url, root.der(), TlsIdentity::Wallet(enrollment)).await?;
        ca.issue_record_credential(v1::IssueRecordCredentialRequest {
            csr_der: csr,
            encryption_public_key: encryption.public_key().to_bytes().to_vec(),
            renew: String::new(),
        })
        .await?
    };
    let issued = read_enrollment_certificate(&response.certificate_der, &root)
        .map_err(|e| ClientError::Protocol(format!("the CA's record credential: {e}")))?;
    if issued.signing_key != signing.verifying_key()
        || issued.encryption_key != encryption.public_key()
        || issued.role != Role::Patient
        || !issued.attributes.is_empty()
        || !issued.name.starts_with(RECORD_CREDENTIAL_PREFIX)
        || issued.name != response.name
    {
        return Err(ClientError::Protocol(format!(
            "the CA answered with a certificate that is not a record credential for the keys \
             made here (name {:?}, role {})",
            issued.name, issued.role
        )));
    }
    let wallet = Wallet::create(
        &dir,
        WalletInfo {
            name: issued.name,
            ca_url: enrollment.info.ca_url.clone(),
        },
        signing,
        encryption,
        &response.certificate_der,
        root.der(),
    )?;
    if let Some(genesis) = pinned_genesis(enrollment)? {
        pin_network(&wallet, genesis.block)?;
    }
    Ok(wallet)
}
