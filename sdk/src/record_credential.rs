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

use std::path::PathBuf;

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

/// Whether `enrollment` holds a record credential.
pub fn has_record_credential(enrollment: &Wallet) -> bool {
    record_wallet_dir(enrollment).join("cert.pem").exists()
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
    if dir.join("signing.key").exists() {
        return Err(ClientError::wallet(
            &dir,
            "already holds this patient's record credential",
        ));
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
