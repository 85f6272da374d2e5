//! # medledger-sdk
//!
//! What an application needs to use a medledger network, and what runs on a user's machine:
//! the wallet (keys created here and stored 0600), enrollment with the membership CA, signed
//! transactions to every peer, encrypted files through the gateway, research copies and
//! de-identification. The `medledger` CLI (`medledger-cli`), the storage gateway and the
//! benchmarks are built on it. It imports proto, crypto and tls, and the deterministic crates
//! (execution, chaincode, deid) to check what peers say with the peers' own code; never the
//! peer, RocksDB or the CLI.
//!
//! - [`wallet::Wallet`]: one identity's keys, certificate and CA root.
//! - [`ca::CaClient`]: the Membership API over TLS 1.3, with readable errors.
//! - [`peer::PeerSet`]: signed transactions to every peer, f+1 matching receipts, queries.
//! - [`files`]: client-side encryption, uploads and downloads through the gateway;
//!   [`patient`]: a record's keys; [`record_credential`]: the nameless credential a patient
//!   acts under on a record; [`research`]: study copies; [`store`]: object stores.
//! - [`reasons`]: an emergency access's reason, sealed to the patient and the auditors.
//! - [`deid`]: the FHIR de-identifier research copies go through (`medledger-deid`).
//! - [`enroll`] / [`reenroll`]: create keys locally, send only a CSR and the X25519 public key;
//!   [`renewal`]: a running process renews its certificate before it ends.

pub use medledger_deid as deid;

pub mod ca;
pub mod configuration;
pub mod error;
pub mod files;
pub mod patient;
pub mod peer;
pub mod private_data;
pub mod reasons;
pub mod record_credential;
pub mod renewal;
pub mod research;
pub mod rotation;
pub mod store;
pub mod wallet;

use std::path::Path;

use medledger_crypto::{EncryptionKey, SigningIdentity, build_signing_request};
use medledger_proto::v1;

use crate::ca::{CaClient, TlsIdentity};
use crate::error::ClientError;
use crate::wallet::{Wallet, WalletInfo};

/// Enrolls `name` with `secret`: generates the signing and encryption keys here, sends the CA
/// a CSR and the X25519 public key, and writes the wallet to `wallet_dir`.
pub async fn enroll(
    ca_url: &str,
    root_der: &[u8],
    name: &str,
    secret: &str,
    wallet_dir: &Path,
) -> Result<Wallet, ClientError> {
    if wallet_dir.join("signing.key").exists() {
        return Err(ClientError::wallet(
            wallet_dir,
            "already holds an identity; choose another --wallet",
        ));
    }
    let signing = SigningIdentity::generate(&mut rand_core::OsRng);
    let encryption = EncryptionKey::generate(&mut rand_core::OsRng);
    let csr = build_signing_request(&signing, name)
        .map_err(|e| ClientError::Usage(format!("cannot enroll {name:?}: {e}")))?;
    let mut ca = CaClient::connect(ca_url, root_der, TlsIdentity::Anonymous).await?;
    let response = ca
        .enroll(v1::EnrollRequest {
            name: name.to_string(),
            secret: secret.trim().to_string(),
            csr_der: csr,
            encryption_public_key: encryption.public_key().to_bytes().to_vec(),
        })
        .await?;
    if response.root_certificate_der != root_der {
        return Err(ClientError::Protocol(
            "the CA answered with a different root certificate than the one trusted".into(),
        ));
    }
    Wallet::create(
        wallet_dir,
        WalletInfo {
            name: name.to_string(),
            ca_url: ca_url.to_string(),
        },
        signing,
        encryption,
        &response.certificate_der,
        root_der,
    )
}

/// How a renewal treats the wallet's keys (issue 19 item 2). The default keeps the signing
/// key (peers and the gateway must: the genesis and the configuration pin it; a patient's
/// record is bound to it) and makes a new encryption key, keeping the old one in the key ring
/// so envelopes wrapped to it still open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Renewal {
    /// A new signing key too: the CA revokes the earlier certificates (reason superseded).
    pub new_signing_key: bool,
    /// The keys may be in other hands: new signing and encryption keys, every earlier
    /// certificate revoked with reason key compromise, and the key ring emptied.
    pub key_compromise: bool,
    /// Keep the encryption key too (ignored with `key_compromise`): a renewal of the
    /// certificate alone, as a running process makes when its certificate is due
    /// ([`renewal`]), so that what is wrapped to it meanwhile opens with the key it holds.
    pub keep_encryption_key: bool,
}

/// Renews the wallet's certificate at the CA, as [`Renewal`] says; the new certificate and
/// keys replace the old ones in the wallet (written whole). The response lists the
/// certificates the CA revoked as superseded.
pub async fn reenroll(
    ca_url: &str,
    wallet: &mut Wallet,
    renewal: Renewal,
) -> Result<v1::EnrollResponse, ClientError> {
    let signing = if renewal.new_signing_key || renewal.key_compromise {
        SigningIdentity::generate(&mut rand_core::OsRng)
    } else {
        SigningIdentity::from_pkcs8_pem(&wallet.signing.to_pkcs8_pem())
            .map_err(|e| ClientError::wallet(&wallet.dir, format!("signing.key: {e}")))?
    };
    let held = wallet.certificate_identity()?;
    let encryption = if renewal.keep_encryption_key && !renewal.key_compromise {
        EncryptionKey::from_bytes(*wallet.encryption.to_bytes())
    } else {
        EncryptionKey::generate(&mut rand_core::OsRng)
    };
    let csr = build_signing_request(&signing, &wallet.info.name)
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let root_der = wallet.root()?.der().to_vec();
    let response = {
        let mut ca = CaClient::connect(ca_url, &root_der, TlsIdentity::Wallet(wallet)).await?;
        ca.reenroll(v1::ReenrollRequest {
            csr_der: csr,
            encryption_public_key: encryption.public_key().to_bytes().to_vec(),
            key_compromise: renewal.key_compromise,
        })
        .await?
    };
    // The CA must have certified exactly these keys under the wallet's root, for the same
    // name and role, valid now and ending no earlier (revocation is the ledger's to judge): a
    // certificate that ends at once would leave a wallet that can no longer be renewed.
    medledger_crypto::check_renewal(
        &response.certificate_der,
        &wallet.root()?,
        &held,
        &signing.verifying_key(),
        &encryption.public_key(),
        medledger_tls::now_unix(),
    )
    .map_err(|e| ClientError::Protocol(format!("the CA's new certificate: {e}")))?;
    wallet.replace(
        signing,
        encryption,
        &response.certificate_der,
        !renewal.key_compromise,
    )?;
    Ok(response)
}
