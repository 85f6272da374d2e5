//! A peer's signing key replaced, as its operator does it (docs/membership.md, ADR 0011 §9):
//! a new key from the CA, then the configuration change that removes the peer and adds it
//! back with that key at the same address. `medledger network rekey-peer` and the fault
//! harness's `rekey` fault both go through [`replace_peer_key`].

use medledger_sdk::configuration::{Changes, change};
use medledger_sdk::error::ClientError;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::wallet::Wallet;

use crate::Layout;

/// What [`replace_peer_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekeyed {
    /// The Ed25519 key the peer signed with, hex (64 characters).
    pub old_key: String,
    /// The one it signs with now, hex.
    pub new_key: String,
    /// The block that committed the change; the new key is in force from the next one.
    pub block: u64,
}

/// Renews peer `name`'s wallet (of `layout`) at the CA with a new signing key — the CA
/// revokes the earlier certificates as superseded — and orders, through `peers`, approved
/// by `approvers` (each their own admin identity, as many as the policy needs), the change
/// that removes `name` and adds it back with the new key at `address`. The peer must be
/// stopped first; it is the last replica of the new configuration, and starts again with
/// `--join` (its ledger names its old key until it reaches the change).
///
/// Its old certificate is revoked before the change commits: if the change fails, the peer
/// is out until it is run again (which renews once more and retries), so callers check
/// first that the other peers can order the change without it.
///
/// # Errors
/// The renewal or the change failed ([`ClientError`] says which step and why).
pub async fn replace_peer_key(
    layout: &Layout,
    name: &str,
    address: &str,
    peers: &PeerSet,
    approvers: &[&Wallet],
) -> Result<Rekeyed, ClientError> {
    let mut wallet = Wallet::open(&layout.wallets().join(name))?;
    let old_key = hex::encode(wallet.signing.verifying_key().to_bytes());
    medledger_sdk::reenroll(
        &layout.ca_url(),
        &mut wallet,
        medledger_sdk::Renewal {
            new_signing_key: true,
            ..Default::default()
        },
    )
    .await?;
    let new_key = hex::encode(wallet.signing.verifying_key().to_bytes());
    let block = change(
        peers,
        approvers,
        &Changes {
            remove_peers: vec![name.to_string()],
            add_peers: vec![(wallet.dir.join("cert.pem"), address.to_string())],
            valid_for_hours: 1,
            ..Default::default()
        },
    )
    .await?;
    Ok(Rekeyed {
        old_key,
        new_key,
        block,
    })
}
