//! Changing the network's configuration (docs/adr/0010, membership changes docs/adr/0011):
//! one admin proposes the next configuration ([`propose`]), each admin the policy needs
//! approves it ([`approve`]: a signature over the update's hash, domain
//! `medledger/v1/config-update`), and any of them submits it ([`submit`]); it is in force
//! from the block after the one that commits it. [`change`] does all three for admins who
//! hold their wallets in one place (a local network, the fault harness).
//!
//! Trust: every check the ledger makes is made here first (the same `Configuration::next`),
//! so a proposal the ledger would refuse is refused before anyone signs it; approvals are
//! verified against the configuration in force as this client follows it with proofs.

use std::path::{Path, PathBuf};

use medledger_crypto::{SignatureDomain, VerifyingKey};
use medledger_execution::config::{
    ConfigError, Configuration, approval_bytes, config_hash, majority_policy,
};
use medledger_proto::v1;

use crate::error::ClientError;
use crate::peer::PeerSet;
use crate::wallet::{Wallet, pem_decode};

/// What a proposal changes in the configuration in force (`medledger admin config
/// propose`'s flags).
#[derive(Default)]
pub struct Changes {
    pub max_tx_lifetime_ms: Option<u64>,
    pub max_envelope_bytes: Option<u32>,
    /// The new admins' certificate files (none: the admins stay).
    pub admins: Vec<PathBuf>,
    pub admin_threshold: Option<u32>,
    /// Names of peers to remove.
    pub remove_peers: Vec<String>,
    /// Certificate files (PEM, role peer) of peers to add, each with its HOST:PORT.
    pub add_peers: Vec<(PathBuf, String)>,
    /// Certificate files (PEM, role auditor) of auditors to name as readers of blocks.
    pub add_auditors: Vec<PathBuf>,
    /// Names of auditors no longer to read blocks.
    pub remove_auditors: Vec<String>,
    /// How long the admins have to approve and submit it: 1 to 720 hours.
    pub valid_for_hours: u32,
}

/// The next configuration — the one in force (`current`) with `changes` — as an update for
/// the admins to approve (no approvals yet), and the configuration it would put in force,
/// checked as the ledger will check it.
///
/// # Errors
/// `Usage`: a change names an unknown peer, a file that is not a valid certificate of the
/// expected role, changes the peers of a network of ledger format 2, or makes a
/// configuration the ledger refuses (`ConfigError`'s words).
pub fn propose(
    wallet: &Wallet,
    current: &Configuration,
    changes: &Changes,
) -> Result<(v1::ConfigUpdate, Configuration), ClientError> {
    let changes_peers = !changes.remove_peers.is_empty() || !changes.add_peers.is_empty();
    let format = current.parameters.ledger_format;
    if changes_peers && format < medledger_execution::genesis::MEMBERSHIP_CHANGES_FORMAT {
        // The ledger would refuse it as BAD_CONFIG_UPDATE; said here, in words, before
        // anyone signs.
        return Err(ClientError::Usage(format!(
            "this network is of ledger format {format}: its peers are its genesis's for good \
             (changes of the peers need a network of format {} or later, docs/adr/0011)",
            medledger_execution::genesis::MEMBERSHIP_CHANGES_FORMAT
        )));
    }
    let mut value = current.successor();
    for name in &changes.remove_peers {
        if !value.peers.iter().any(|p| p.name == *name) {
            return Err(ClientError::Usage(format!(
                "--remove-peer {name}: no peer of that name in the configuration in force"
            )));
        }
        value.peers.retain(|p| p.name != *name);
    }
    for (path, address) in &changes.add_peers {
        let (name, certificate) = peer_certificate(wallet, path)?;
        value.peers.push(v1::GenesisPeer {
            replica: 0,
            name,
            address: address.clone(),
            certificate,
        });
    }
    // Replica ids follow the order of the peers.
    for (i, peer) in value.peers.iter_mut().enumerate() {
        peer.replica = i as u32;
    }
    let mut parameters = current.parameters;
    if let Some(ms) = changes.max_tx_lifetime_ms {
        parameters.max_tx_lifetime_ms = ms;
    }
    if let Some(bytes) = changes.max_envelope_bytes {
        parameters.max_envelope_bytes = bytes;
    }
    value.consensus = Some(parameters);
    if !changes.admins.is_empty() {
        let keys = changes
            .admins
            .iter()
            .map(|path| admin_key(wallet, path))
            .collect::<Result<Vec<_>, _>>()?;
        value.admin_policy = Some(majority_policy(&keys));
    }
    if let (Some(t), Some(policy)) = (changes.admin_threshold, value.admin_policy.as_mut()) {
        policy.threshold = t;
    }
    for name in &changes.remove_auditors {
        let named = current
            .auditors
            .iter()
            .zip(&current.auditor_certificates)
            .find(|(a, _)| a.name == *name)
            .map(|(_, der)| der.clone())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "--remove-auditor {name}: no auditor of that name in the configuration in force"
                ))
            })?;
        value.auditors.retain(|der| *der != named);
    }
    for path in &changes.add_auditors {
        let (_, der) = enrolled_as(wallet, path, medledger_crypto::Role::Auditor)?;
        value.auditors.push(der);
    }
    // Refused here rather than at the ledger: the same checks it will make.
    let next = next_configuration(wallet, current, &value)?
        .map_err(|e| ClientError::Usage(format!("this configuration is refused: {e}")))?;
    if !(1..=720).contains(&changes.valid_for_hours) {
        return Err(ClientError::Usage(
            "--valid-for-hours is 1 to 720 (30 days)".into(),
        ));
    }
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let update = v1::ConfigUpdate {
        config: Some(value),
        signatures: Vec::new(),
        expires_at_ms: now_ms + i64::from(changes.valid_for_hours) * 3_600_000,
    };
    Ok((update, next))
}

/// Adds `wallet`'s approval (an admin of `current`) to `update`, keeping the valid
/// approvals in the policy's order. Returns the configuration it would put in force and
/// the names of the admins who approved it so far.
///
/// # Errors
/// `Usage`: the update does not follow `current`, or `wallet` is not one of its admins.
pub fn approve(
    wallet: &Wallet,
    current: &Configuration,
    update: &mut v1::ConfigUpdate,
) -> Result<(Configuration, Vec<String>), ClientError> {
    let value = update.config.clone().unwrap_or_default();
    let next = next_configuration(wallet, current, &value)?.map_err(|e| {
        ClientError::Usage(format!(
            "the update does not follow the configuration in force ({}): {e}",
            current.sequence
        ))
    })?;
    let admins = current
        .admins
        .as_ref()
        .ok_or_else(|| ClientError::Usage("the configuration in force names no admins".into()))?;
    if !admins.keys.contains(&wallet.signing.verifying_key()) {
        return Err(ClientError::Usage(format!(
            "{} is not an admin of the configuration in force",
            wallet.info.name
        )));
    }
    let signed = approval_bytes(
        &current.network_id,
        &config_hash(&value),
        update.expires_at_ms,
    );
    let signature = wallet
        .signing
        .sign(SignatureDomain::ConfigUpdate, &signed)
        .to_bytes()
        .to_vec();
    let certificate = wallet.cert_der()?;
    update.signatures.retain(|s| s.certificate != certificate);
    update.signatures.push(v1::AdminSignature {
        certificate,
        signature,
    });
    let approvals = in_policy_order(wallet, current, &signed, &update.signatures)?;
    update.signatures = approvals.iter().map(|(_, s)| s.clone()).collect();
    Ok((next, approvals.into_iter().map(|(name, _)| name).collect()))
}

/// Orders `update` (approved by as many admins of `current` as its policy needs) through
/// `peers`. Returns the block that committed it and the configuration this client follows
/// after it.
///
/// # Errors
/// `Usage`: too few valid approvals; the ledger's refusal or a network failure otherwise.
pub async fn submit(
    wallet: &Wallet,
    peers: &PeerSet,
    current: &Configuration,
    mut update: v1::ConfigUpdate,
) -> Result<(u64, u64), ClientError> {
    let sequence = update.config.as_ref().map_or(0, |c| c.sequence);
    let value = update.config.clone().unwrap_or_default();
    let signed = approval_bytes(
        &current.network_id,
        &config_hash(&value),
        update.expires_at_ms,
    );
    let needed = current.admins.as_ref().map_or(0, |a| a.threshold);
    let mut approvals = in_policy_order(wallet, current, &signed, &update.signatures)?;
    if approvals.len() < needed {
        return Err(ClientError::Usage(format!(
            "the update holds {} valid approvals; configuration {sequence} needs {needed}",
            approvals.len()
        )));
    }
    // Exactly the threshold, in the policy's order: the one envelope these approvals make
    // (docs/adr/0010 §3).
    approvals.truncate(needed);
    update.signatures = approvals.into_iter().map(|(_, s)| s).collect();
    let committed = peers
        .submit_envelope(v1::Envelope {
            kind: Some(v1::envelope::Kind::ConfigUpdate(update)),
        })
        .await?
        .into_valid()?;
    let learned = peers.learn_configuration(None).await?;
    Ok((committed.block, learned))
}

/// The configuration `value` would put in force after `current`, checked as the ledger
/// will check it (certificates at this machine's time; revocations are the ledger's).
pub fn next_configuration(
    wallet: &Wallet,
    current: &Configuration,
    value: &v1::NetworkConfig,
) -> Result<Result<Configuration, ConfigError>, ClientError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(current.next(
        value,
        &wallet.root()?,
        now,
        &std::collections::BTreeSet::<Vec<u8>>::new(),
    ))
}

/// The approvals among `signatures` that verify now for `signed` by an admin of `current`,
/// one per admin, in the policy's order, each with its admin's name.
pub fn in_policy_order(
    wallet: &Wallet,
    current: &Configuration,
    signed: &[u8],
    signatures: &[v1::AdminSignature],
) -> Result<Vec<(String, v1::AdminSignature)>, ClientError> {
    let Some(admins) = current.admins.as_ref() else {
        return Ok(Vec::new());
    };
    let root = wallet.root()?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut valid = std::collections::BTreeMap::new();
    for approval in signatures {
        let Ok(identity) = medledger_crypto::validate_enrollment_certificate(
            &approval.certificate,
            &root,
            now,
            &std::collections::BTreeSet::<Vec<u8>>::new(),
        ) else {
            continue;
        };
        let Some(slot) = admins.keys.iter().position(|k| *k == identity.signing_key) else {
            continue;
        };
        let verifies =
            medledger_crypto::Signature::from_slice(&approval.signature).is_ok_and(|s| {
                identity
                    .signing_key
                    .verify(SignatureDomain::ConfigUpdate, signed, &s)
                    .is_ok()
            });
        if verifies && identity.role == medledger_crypto::Role::Admin {
            valid.insert(slot, (identity.name, approval.clone()));
        }
    }
    Ok(valid.into_values().collect())
}

/// The identity and certificate (DER) in certificate file `path` (PEM), which must be an
/// enrollment of `role` by this wallet's CA, valid now.
pub fn enrolled_as(
    wallet: &Wallet,
    path: &Path,
    role: medledger_crypto::Role,
) -> Result<(medledger_crypto::EnrolledIdentity, Vec<u8>), ClientError> {
    let pem_text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    let der = pem_decode(&pem_text, "CERTIFICATE")
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let identity = medledger_crypto::validate_enrollment_certificate(
        &der,
        &wallet.root()?,
        now,
        &std::collections::BTreeSet::<Vec<u8>>::new(),
    )
    .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    if identity.role != role {
        return Err(ClientError::Usage(format!(
            "{}: {} is enrolled as {}, not as {role}",
            path.display(),
            identity.name,
            identity.role
        )));
    }
    Ok((identity, der))
}

/// A peer's name and certificate (DER) from its certificate file.
pub fn peer_certificate(wallet: &Wallet, path: &Path) -> Result<(String, Vec<u8>), ClientError> {
    let (identity, der) = enrolled_as(wallet, path, medledger_crypto::Role::Peer)?;
    Ok((identity.name, der))
}

/// An admin's signing key from their certificate file.
pub fn admin_key(wallet: &Wallet, path: &Path) -> Result<VerifyingKey, ClientError> {
    let (identity, _) = enrolled_as(wallet, path, medledger_crypto::Role::Admin)?;
    Ok(identity.signing_key)
}

/// One configuration change: `changes` proposed by the first of `approvers`, approved by
/// each of them (at least as many as the policy in force needs), and submitted through
/// `peers`, after learning the configuration in force (a change must follow it). Returns the
/// block that committed it.
///
/// # Errors
/// As [`propose`], [`approve`] and [`submit`]; `Usage` when `approvers` is empty.
pub async fn change(
    peers: &PeerSet,
    approvers: &[&Wallet],
    changes: &Changes,
) -> Result<u64, ClientError> {
    let Some(proposer) = approvers.first() else {
        return Err(ClientError::Usage(
            "a configuration change needs at least one admin".into(),
        ));
    };
    peers.learn_configuration(None).await?;
    let current = peers.configuration();
    let (mut update, _) = propose(proposer, &current, changes)?;
    for admin in approvers {
        approve(admin, &current, &mut update)?;
    }
    let (block, _) = submit(proposer, peers, &current, update).await?;
    Ok(block)
}
