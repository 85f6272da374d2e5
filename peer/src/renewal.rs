//! A peer keeps its own enrollment certificate current (issue 19 item 5). From the moment its
//! certificate is due ([`medledger_crypto::renewal_due_at`]: the last quarter of its issued
//! lifetime, at most 30 days) the peer asks the CA for a new one for the same keys
//! (`Membership.Reenroll`, over mutual TLS with the certificate it holds), checks what comes
//! back, writes it to its wallet (`cert.pem`, atomically) and presents it in every handshake
//! from then on ([`medledger_tls::LiveCertificate`]). The signing key never changes this way:
//! the configuration in force pins it, and rotating it is a configuration change
//! (`medledger network rekey-peer`).
//!
//! A certificate put in the wallet by someone else (an operator, `medledger network up`)
//! for the same key is taken too, so a peer never needs a restart to present a renewal.
//!
//! Trust: the CA is believed only as far as the certificate it returns checks out under the
//! genesis root, valid now, for this peer's name, role and keys, and ending no earlier than the
//! one held. An unreachable or lying CA can delay a renewal (the peer retries, and warns
//! while the end nears), never change who the peer is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use medledger_crypto::{
    EnrolledIdentity, RootCertificate, SigningIdentity, build_signing_request,
    read_enrollment_certificate, renewal_due_at,
};
use medledger_proto::v1;

use crate::ca_link::CaLink;

/// Longest wait for the CA's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pauses between failed attempts: from the shortest, doubling, to the longest, and never
/// more than an eighth of the time the certificate has left.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How often the wallet is looked at while no renewal is due (a certificate put there by
/// an operator is taken within this).
const WALLET_LOOK: Duration = Duration::from_secs(10);

/// Why one renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewalError {
    #[error("the CA at {0} cannot be reached: {1}")]
    Unreachable(String, String),
    #[error("the CA refused the renewal: {0}")]
    Refused(tonic::Status),
    #[error("the CA's new certificate is not one this peer can present: {0}")]
    BadCertificate(String),
    #[error("writing the new certificate to {0}: {1}")]
    Wallet(PathBuf, std::io::Error),
}

/// What renewal needs of the peer.
pub struct Renewal {
    pub ca: Arc<CaLink>,
    /// The genesis CA root.
    pub root: RootCertificate,
    /// The wallet directory holding `cert.pem`.
    pub wallet: PathBuf,
    pub signing: Arc<SigningIdentity>,
}

impl Renewal {
    /// Keeps the certificate current until the task is dropped.
    pub async fn run(self) {
        let mut retry = RETRY_MIN;
        loop {
            let held = match read_enrollment_certificate(
                &self.ca.certificate.certificate_der(),
                &self.root,
            ) {
                Ok(held) => held,
                Err(e) => {
                    tracing::error!(error = %e, "the certificate presented cannot be read; not renewing it");
                    return;
                }
            };
            if self.take_from_wallet(&held).await {
                continue;
            }
            let now = medledger_tls::now_unix();
            let due = renewal_due_at(held.not_before, held.not_after);
            if now < due {
                let wait = u64::try_from(due.saturating_sub(now)).unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait).min(WALLET_LOOK)).await;
                continue;
            }
            if now > held.not_after {
                tracing::error!(
                    not_after = held.not_after,
                    "this peer's certificate has expired and can no longer be renewed by the \
                     peer: enroll it again (an admin registers it anew) and put the new \
                     certificate in its wallet, for the same key"
                );
                metrics::gauge!("medledger_peer_certificate_seconds_left").set(0.0);
                tokio::time::sleep(WALLET_LOOK).await;
                continue;
            }
            match self.renew(&held).await {
                Ok(new) => {
                    retry = RETRY_MIN;
                    tracing::info!(
                        serial = %new.serial_hex(),
                        not_after = new.not_after,
                        "renewed this peer's certificate (same key); presented from now on"
                    );
                    metrics::counter!("medledger_peer_certificate_renewals_total").increment(1);
                }
                Err(e) => {
                    let left = held.not_after.saturating_sub(now);
                    tracing::warn!(
                        error = %e,
                        seconds_left = left,
                        "could not renew this peer's certificate; trying again"
                    );
                    metrics::counter!("medledger_peer_certificate_renewal_failures_total")
                        .increment(1);
                    let cap = Duration::from_secs(u64::try_from(left / 8).unwrap_or(0).max(1));
                    tokio::time::sleep(retry.min(cap)).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Presents the wallet's certificate instead of `held` when it is a later certificate
    /// of this peer's, valid now. Returns whether it did.
    async fn take_from_wallet(&self, held: &EnrolledIdentity) -> bool {
        let wallet = self.wallet.clone();
        let Ok(Ok(der)) = tokio::task::spawn_blocking(move || {
            crate::wallet::read_wallet(&wallet).map(|w| w.certificate_der)
        })
        .await
        else {
            return false;
        };
        if der == self.ca.certificate.certificate_der() {
            return false;
        }
        match self.acceptable(&der, held) {
            Ok(found) => {
                if self.present(der).is_ok() {
                    tracing::info!(
                        serial = %found.serial_hex(),
                        not_after = found.not_after,
                        "presenting the certificate put in this peer's wallet"
                    );
                    return true;
                }
                false
            }
            Err(_) => false,
        }
    }

    /// One renewal at the CA, for the same keys; the new certificate written and presented.
    async fn renew(&self, held: &EnrolledIdentity) -> Result<EnrolledIdentity, RenewalError> {
        let csr = build_signing_request(&self.signing, &held.name)
            .map_err(|e| RenewalError::BadCertificate(format!("building the request: {e}")))?;
        let (mut client, _) = self
            .ca
            .connect(CALL_TIMEOUT)
            .await
            .map_err(|e| RenewalError::Unreachable(self.ca.url.clone(), e))?;
        let request = v1::ReenrollRequest {
            csr_der: csr,
            encryption_public_key: held.encryption_key.to_bytes().to_vec(),
            key_compromise: false,
        };
        let answer = tokio::time::timeout(CALL_TIMEOUT, client.reenroll(request))
            .await
            .map_err(|_| RenewalError::Unreachable(self.ca.url.clone(), "timed out".into()))?
            .map_err(RenewalError::Refused)?
            .into_inner();
        let new = self
            .acceptable(&answer.certificate_der, held)
            .map_err(RenewalError::BadCertificate)?;
        let (wallet, der) = (self.wallet.clone(), answer.certificate_der.clone());
        tokio::task::spawn_blocking(move || write_certificate(&wallet, &der))
            .await
            .map_err(|e| RenewalError::Wallet(self.wallet.clone(), std::io::Error::other(e)))?
            .map_err(|e| RenewalError::Wallet(self.wallet.clone(), e))?;
        self.present(answer.certificate_der)
            .map_err(RenewalError::BadCertificate)?;
        Ok(new)
    }

    /// `der` as a certificate to present in place of `held`
    /// ([`medledger_crypto::check_renewal`]): under the genesis root, valid now, for the same
    /// name, role and both keys, ending no earlier, and not due for renewal already.
    fn acceptable(&self, der: &[u8], held: &EnrolledIdentity) -> Result<EnrolledIdentity, String> {
        medledger_crypto::check_renewal(
            der,
            &self.root,
            held,
            &self.signing.verifying_key(),
            &held.encryption_key,
            medledger_tls::now_unix(),
        )
    }

    fn present(&self, der: Vec<u8>) -> Result<(), String> {
        self.ca
            .certificate
            .replace(der, self.signing.to_pkcs8_der().to_vec())
            .map_err(|e| e.to_string())
    }
}

/// Replaces the wallet's `cert.pem` atomically: a new temporary file (a fresh name, created
/// only if it does not exist, so no link planted in the wallet is followed), synced and
/// renamed into place (the rename replaces a link, never its target), then the directory
/// synced, so a crash leaves the old certificate or the new one.
fn write_certificate(wallet: &std::path::Path, der: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = wallet.join("cert.pem");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = wallet.join(format!("cert.pem.{}-{nanos}.tmp", std::process::id()));
    let text = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(wallet)?.sync_all()
}
