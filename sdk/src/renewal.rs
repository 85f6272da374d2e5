//! A running client keeps its certificate current (issue 19 item 5). The storage gateway,
//! the load generator and any long-running application renew their wallet's certificate
//! from the moment it is due ([`medledger_crypto::renewal_due_at`]: the last quarter of its
//! issued lifetime, at most 30 days), for the same signing and encryption keys, and present
//! the new one through their [`PeerSet`] from then on (handshakes, and the certificate every
//! transaction names). One-shot commands renew at their next use instead
//! (`medledger network up`, or [`renew_if_due`]).
//!
//! Trust: the CA's answer is checked by [`crate::reenroll`] (the same keys, under the
//! wallet's root); a lying or unreachable CA delays a renewal and is retried, with a warning
//! while the end nears.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ClientError;
use crate::peer::PeerSet;
use crate::wallet::Wallet;

/// Pauses between failed attempts: doubling from the shortest to the longest, never more than
/// an eighth of the time the certificate has left.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest sleep before the due time is looked at again (the wallet may be renewed by
/// another process meanwhile).
const LOOK_AGAIN: Duration = Duration::from_secs(10);

/// Renews `wallet`'s certificate when it is due at `now` (Unix seconds), keeping both keys,
/// from the CA at `ca_url`, else the one the wallet names. Returns whether it renewed. For one-shot commands, which
/// present the wallet afresh at their next connection.
///
/// # Errors
/// The wallet cannot be read, or the renewal failed ([`crate::reenroll`]): a certificate
/// already expired or revoked cannot be renewed.
pub async fn renew_wallet_if_due(
    wallet: &mut Wallet,
    ca_url: Option<&str>,
    now: i64,
) -> Result<bool, ClientError> {
    if !wallet.renewal_due(now)? {
        return Ok(false);
    }
    let ca_url = ca_url.map_or_else(|| wallet.info.ca_url.clone(), str::to_string);
    crate::reenroll(
        &ca_url,
        wallet,
        crate::Renewal {
            keep_encryption_key: true,
            ..Default::default()
        },
    )
    .await?;
    Ok(true)
}

/// [`renew_wallet_if_due`], then presents the renewed certificate through `peers` (their
/// next handshakes and every transaction name it). Returns whether it renewed.
///
/// # Errors
/// As [`renew_wallet_if_due`], or the renewed certificate cannot be read back.
pub async fn renew_if_due(
    wallet: &mut Wallet,
    peers: &PeerSet,
    now: i64,
) -> Result<bool, ClientError> {
    if !renew_wallet_if_due(wallet, None, now).await? {
        return Ok(false);
    }
    peers.present(wallet.cert_der()?)?;
    Ok(true)
}

/// [`keep_renewed`] on a task of its own for as long as the guard lives (aborted when it is
/// dropped): what a one-shot command that may outlast its certificate holds while it runs,
/// such as `medledger ledger verify` of a chain of millions of transactions. Without it the
/// peers cut the command's links at the certificate's end (`medledger_tls` guard).
#[must_use = "renewal stops when the guard is dropped"]
pub struct Renewing(tokio::task::JoinHandle<()>);

impl Renewing {
    /// Starts renewing `wallet` for `peers` (a Tokio runtime must be running).
    pub fn start(wallet: Wallet, peers: Arc<PeerSet>) -> Renewing {
        Renewing(tokio::spawn(keep_renewed(wallet, peers)))
    }
}

impl Drop for Renewing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps `wallet`'s certificate current for `peers` until the task is dropped. A
/// certificate another process put in the wallet directory meanwhile (for the same key) is
/// taken as it is.
pub async fn keep_renewed(mut wallet: Wallet, peers: Arc<PeerSet>) {
    let mut retry = RETRY_MIN;
    loop {
        let Ok(held) = wallet.certificate_identity() else {
            tracing::error!(wallet = %wallet.dir.display(), "the wallet's certificate cannot be read; not renewing it");
            return;
        };
        // Another process (`network up`, an operator) may have renewed the wallet: taken
        // only as a renewal of the one held, under the network's pinned root.
        if let Ok(fresh) = Wallet::open(&wallet.dir)
            && let Ok(der) = fresh.cert_der()
            && wallet.cert_der().ok().as_ref() != Some(&der)
            && medledger_crypto::check_renewal(
                &der,
                peers.root(),
                &held,
                &wallet.signing.verifying_key(),
                &fresh.encryption.public_key(),
                medledger_tls::now_unix(),
            )
            .is_ok()
            && fresh.signing.verifying_key() == wallet.signing.verifying_key()
            && peers.present(der).is_ok()
        {
            tracing::info!(name = %fresh.info.name, "presenting the certificate renewed in the wallet");
            wallet = fresh;
            continue;
        }
        let now = medledger_tls::now_unix();
        let due = medledger_crypto::renewal_due_at(held.not_before, held.not_after);
        if now < due {
            let wait = u64::try_from(due.saturating_sub(now)).unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait).min(LOOK_AGAIN)).await;
            continue;
        }
        if now > held.not_after {
            tracing::error!(
                name = %held.name,
                not_after = held.not_after,
                "this certificate has expired and can no longer be renewed: enroll again"
            );
            tokio::time::sleep(LOOK_AGAIN).await;
            continue;
        }
        match renew_if_due(&mut wallet, &peers, now).await {
            // Not due after all (its last second): looked at again shortly.
            Ok(false) => tokio::time::sleep(RETRY_MIN).await,
            Ok(true) => {
                retry = RETRY_MIN;
                if let Ok(new) = wallet.certificate_identity() {
                    tracing::info!(
                        name = %new.name,
                        serial = %new.serial_hex(),
                        not_after = new.not_after,
                        "renewed the certificate (same keys); presented from now on"
                    );
                }
            }
            Err(e) => {
                let left = held.not_after.saturating_sub(now);
                tracing::warn!(
                    name = %held.name,
                    error = %e,
                    seconds_left = left,
                    "could not renew the certificate; trying again"
                );
                let cap = Duration::from_secs(u64::try_from(left / 8).unwrap_or(0).max(1));
                tokio::time::sleep(retry.min(cap)).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}
