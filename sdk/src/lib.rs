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
//!   [`patient`]: a record's keys; [`research`]: study copies; [`store`]: object stores.
//! - [`deid`]: the FHIR de-identifier research copies go through (`medledger-deid`).
//! - [`enroll`] / [`reenroll`]: create keys locally, send only a CSR and the X25519 public key.

pub use medledger_deid as deid;

pub mod ca;
pub mod error;
pub mod files;
pub mod patient;
pub mod peer;
pub mod research;
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

/// Replaces the wallet's keys with new ones and gets a certificate for them.
pub async fn reenroll(
    ca_url: &str,
    wallet: &mut Wallet,
) -> Result<v1::EnrollResponse, ClientError> {
    let signing = SigningIdentity::generate(&mut rand_core::OsRng);
    let encryption = EncryptionKey::generate(&mut rand_core::OsRng);
    let csr = build_signing_request(&signing, &wallet.info.name)
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let root_der = wallet.root()?.der().to_vec();
    let response = {
        let mut ca = CaClient::connect(ca_url, &root_der, TlsIdentity::Wallet(wallet)).await?;
        ca.reenroll(v1::ReenrollRequest {
            csr_der: csr,
            encryption_public_key: encryption.public_key().to_bytes().to_vec(),
        })
        .await?
    };
    wallet.replace(signing, encryption, &response.certificate_der)?;
    Ok(response)
}
