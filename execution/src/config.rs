//! The network's configuration chain (docs/adr/0010): the genesis configuration, then each
//! configuration a committed configuration transaction put in force, each checked against
//! the one before it — the way Fabric's config blocks verify against the previous config.
//!
//! A [`v1::ConfigUpdate`] carries the whole next [`v1::NetworkConfig`] (sequence + 1, naming
//! the hash of the configuration in force) and the approvals of at least the threshold of
//! admins that configuration's [`v1::AdminPolicy`] names, each an Ed25519 signature in the
//! domain `medledger/v2/config-update` on (network id, configuration hash) by an admin
//! enrollment certificate valid and unrevoked at the block's consensus time. It takes effect
//! from the block after the one that commits it; every format-2 header names the hash of the
//! configuration it was executed under (`config`), and the votes that prove that block are
//! checked against that configuration's peers.
//!
//! What a configuration may change: the admin policy, the auditors who read blocks, the
//! execution parameters (`max_envelope_bytes`, `max_tx_lifetime_ms`) and the peer set (docs/adr/0011: a
//! *membership change*, which ends the epoch of the replicas at the block that commits it).
//! The PBFT parameters and the ledger format stay as the genesis fixed them; an update that
//! changes them is refused as `BAD_CONFIG_UPDATE`, never half applied.

use std::collections::BTreeSet;

use medledger_crypto::{
    EnrolledIdentity, RevocationSet, Role, RootCertificate, Signature, SignatureDomain,
    VerifyingKey, read_enrollment_certificate, validate_enrollment_certificate,
};
use medledger_pbft::Encoder;
use medledger_proto::v1;
use prost::Message;
use sha2::{Digest, Sha256};

/// Bounds a configuration (the genesis's included) may set on a transaction's life (ms):
/// from 10 s to one hour.
pub const TX_LIFETIME_BOUNDS_MS: std::ops::RangeInclusive<u64> = 10_000..=3_600_000;
/// The first byte of a canonically encoded `Envelope` of kind `config_update` (field 3,
/// length-delimited).
pub const CONFIG_UPDATE_TAG: u8 = (3 << 3) | 2;
/// Fewest approvals a policy may ask for: no one admin changes the configuration alone.
pub const MIN_APPROVALS: usize = 2;
/// Most admins a policy may name, and so most approvals an update may carry.
pub const MAX_ADMINS: usize = 32;
/// Most auditors a configuration may name as readers of its blocks.
pub const MAX_AUDITORS: usize = 32;
/// Fewest bytes `max_envelope_bytes` may be set to: a transaction carrying its creator's
/// certificate must still fit.
pub const MIN_ENVELOPE_BYTES: u32 = 8 * 1024;
/// Fewest peers a configuration may name: PBFT needs 3f + 1 with f ≥ 1.
pub const MIN_PEERS: usize = 4;
/// Most peers a configuration may name (f = 10).
pub const MAX_PEERS: usize = 31;

/// Why a configuration update does not follow from the configuration in force. Each names
/// the first check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the update carries no configuration")]
    Empty,
    #[error("the update is configuration {got}; the next one is {expected}")]
    Sequence { expected: u64, got: u64 },
    #[error("the update replaces another configuration than the one in force")]
    Previous,
    #[error("the configuration in force names no admins: this network's configuration is fixed")]
    NoAdmins,
    #[error("auditors: {0}")]
    Auditors(String),
    #[error("admin policy: {0}")]
    Policy(String),
    #[error("approval {index}: {why}")]
    Approval { index: usize, why: String },
    #[error(
        "{got} approvals; the policy needs exactly {needed} distinct admins' (drop the extra ones)"
    )]
    ApprovalCount { got: usize, needed: usize },
    #[error("{0}")]
    Unsupported(String),
    #[error("parameters: {0}")]
    Parameters(String),
    #[error("peer {replica} ({name:?}): {why}")]
    Peer {
        replica: u32,
        name: String,
        why: String,
    },
    #[error("peer set: {0}")]
    PeerSet(String),
}

/// Reads the peer set of a configuration (the genesis's included): [`MIN_PEERS`] to
/// [`MAX_PEERS`] peers, replica ids 0, 1, 2, ... in order, each with a non-empty address and
/// an enrollment certificate of `root` of role peer that names it; names, addresses and
/// signing keys all distinct. Certificates are read for what does not change with time (see
/// [`medledger_crypto::read_enrollment_certificate`]): the caller checks their standing at
/// the time that matters. Returns each peer's identity, by replica id.
///
/// # Errors
/// [`ConfigError::PeerSet`] for the number of peers, [`ConfigError::Peer`] for the first
/// peer refused.
pub fn read_peers(
    peers: &[v1::GenesisPeer],
    root: &RootCertificate,
) -> Result<Vec<EnrolledIdentity>, ConfigError> {
    if !(MIN_PEERS..=MAX_PEERS).contains(&peers.len()) {
        return Err(ConfigError::PeerSet(format!(
            "{} peers; a network has {MIN_PEERS} to {MAX_PEERS} (PBFT tolerates f faults with \
             3f + 1 peers: 4, 7, 10, ...)",
            peers.len()
        )));
    }
    let mut identities: Vec<EnrolledIdentity> = Vec::with_capacity(peers.len());
    for (i, peer) in peers.iter().enumerate() {
        let bad = |why: String| ConfigError::Peer {
            replica: i as u32,
            name: peer.name.clone(),
            why,
        };
        if peer.replica != i as u32 {
            return Err(bad("replica ids must be 0, 1, 2, ... in order".into()));
        }
        let identity =
            read_enrollment_certificate(&peer.certificate, root).map_err(|e| bad(e.to_string()))?;
        if identity.role != Role::Peer {
            return Err(bad(format!("role is {}, not peer", identity.role)));
        }
        // A peer is named as its certificate names it: one operator holding several peer
        // certificates cannot list them under other peers' names.
        if identity.name != peer.name {
            return Err(bad(format!(
                "its certificate names {:?}, not {:?}",
                identity.name, peer.name
            )));
        }
        if peer.address.is_empty() {
            return Err(bad("no address".into()));
        }
        let earlier = &peers[..i];
        if identities
            .iter()
            .any(|o| o.signing_key == identity.signing_key)
        {
            return Err(bad("the same key appears twice".into()));
        }
        if earlier.iter().any(|o| o.name == peer.name) {
            return Err(bad("the same name appears twice".into()));
        }
        if earlier.iter().any(|o| o.address == peer.address) {
            return Err(bad("the same address appears twice".into()));
        }
        identities.push(identity);
    }
    Ok(identities)
}

/// Where an epoch of replicas starts (docs/adr/0011 §5): after block `seq`, the block that
/// committed the membership change (0 for the genesis epoch). Its replicas sign with this
/// base ([`medledger_pbft::Config::epoch_signed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochBase {
    pub seq: u64,
    /// The checkpoint digest of block `seq`: its header hash (membership changes exist in
    /// ledger format 2 only); zeros for the genesis epoch.
    pub digest: [u8; 32],
    /// Block `seq`'s consensus time (Unix ms): the epoch's first batches are stamped no
    /// earlier.
    pub time_ms: u64,
}

impl EpochBase {
    /// The epoch that starts after block `header`.
    pub fn after(header: &v1::BlockHeader) -> EpochBase {
        EpochBase {
            seq: header.number,
            digest: crate::block::header_hash(header),
            time_ms: header.time_ms.max(0) as u64,
        }
    }
}

/// An admin policy, checked: `threshold` of the distinct `admins`' keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admins {
    pub keys: Vec<VerifyingKey>,
    pub threshold: usize,
}

/// Checks a policy's shape: 2 to [`MAX_ADMINS`] distinct 32-byte Ed25519 keys and a
/// threshold from [`MIN_APPROVALS`] to their number.
///
/// # Errors
/// [`ConfigError::Policy`], saying what is wrong.
pub fn check_policy(policy: &v1::AdminPolicy) -> Result<Admins, ConfigError> {
    let bad = |why: String| ConfigError::Policy(why);
    if policy.admins.len() < MIN_APPROVALS || policy.admins.len() > MAX_ADMINS {
        return Err(bad(format!(
            "{} admins; a policy names {MIN_APPROVALS} to {MAX_ADMINS}",
            policy.admins.len()
        )));
    }
    let keys = distinct_keys(&policy.admins, "admin").map_err(bad)?;
    let threshold = policy.threshold as usize;
    // THREAT-MODEL (no single party): a configuration change needs several admins.
    if threshold < MIN_APPROVALS || threshold > keys.len() {
        return Err(bad(format!(
            "threshold {threshold} of {} admins; it must be {MIN_APPROVALS} to the number of \
             admins (no one admin may change the configuration alone)",
            keys.len()
        )));
    }
    Ok(Admins { keys, threshold })
}

/// An auditor a configuration names as a reader of its blocks: their name, signing key and
/// X25519 encryption key, as their enrollment certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedAuditor {
    pub name: String,
    pub key: VerifyingKey,
    /// What free text is sealed to for them (docs/adr/0013): an auditor renewing keeps the
    /// old key in their wallet's key ring, so the certificate named here keeps opening.
    pub encryption_key: [u8; 32],
    /// The named certificate's serial: once it is revoked (the auditor's key compromised,
    /// or the name revoked), nothing more is sealed to its key.
    pub serial: Vec<u8>,
}

/// Checks the auditors a configuration names as readers of its blocks
/// (`GenesisConfig.auditors`, `NetworkConfig.auditors`): at most [`MAX_AUDITORS`]
/// enrollment certificates (DER) issued under `root` with the role auditor, distinct keys,
/// none of them a key of `others` (the configuration's peers and admins: no one reads as an
/// auditor with a key that signs as something else). Validity in time is not checked here:
/// an auditor is their key, kept across renewals, and presents a current certificate at each
/// handshake.
///
/// # Errors
/// [`ConfigError::Auditors`], saying which certificate is wrong.
pub fn check_auditors(
    certificates: &[Vec<u8>],
    root: &RootCertificate,
    others: &[VerifyingKey],
) -> Result<Vec<NamedAuditor>, ConfigError> {
    let bad = |why: String| ConfigError::Auditors(why);
    if certificates.len() > MAX_AUDITORS {
        return Err(bad(format!(
            "{} auditors; a configuration names at most {MAX_AUDITORS}",
            certificates.len()
        )));
    }
    let mut auditors: Vec<NamedAuditor> = Vec::with_capacity(certificates.len());
    for (i, der) in certificates.iter().enumerate() {
        let identity =
            read_enrollment_certificate(der, root).map_err(|e| bad(format!("auditor {i}: {e}")))?;
        if identity.role != Role::Auditor {
            return Err(bad(format!(
                "auditor {i} ({}) is enrolled as {}, not as auditor",
                identity.name, identity.role
            )));
        }
        if others.contains(&identity.signing_key) {
            return Err(bad(format!(
                "auditor {i} ({}) signs with a key of a peer or an admin",
                identity.name
            )));
        }
        if !identity.encryption_key.is_usable() {
            return Err(bad(format!(
                "auditor {i} ({}) has an encryption key of small order or not canonical, to \
                 which nothing can be sealed",
                identity.name
            )));
        }
        if auditors
            .iter()
            .any(|a| a.encryption_key == identity.encryption_key.to_bytes())
        {
            return Err(bad(format!(
                "auditor {i} ({}) has the encryption key of another named auditor",
                identity.name
            )));
        }
        if auditors.iter().any(|a| a.key == identity.signing_key) {
            return Err(bad(format!(
                "auditor {i} ({}) is named twice",
                identity.name
            )));
        }
        auditors.push(NamedAuditor {
            name: identity.name,
            key: identity.signing_key,
            encryption_key: identity.encryption_key.to_bytes(),
            serial: identity.serial,
        });
    }
    Ok(auditors)
}

/// `raw` as Ed25519 public keys, each 32 bytes and named once; else which `what` (admin,
/// auditor) by position is wrong.
fn distinct_keys(raw: &[Vec<u8>], what: &str) -> Result<Vec<VerifyingKey>, String> {
    let mut keys = Vec::with_capacity(raw.len());
    for (i, bytes) in raw.iter().enumerate() {
        let key = <[u8; 32]>::try_from(bytes.as_slice())
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .ok_or_else(|| format!("{what} {i} is not an Ed25519 public key"))?;
        if keys.contains(&key) {
            return Err(format!("{what} {i} is named twice"));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// A majority of `admins` (Fabric's `MAJORITY Admins`): more than half of them.
pub fn majority_policy(admins: &[VerifyingKey]) -> v1::AdminPolicy {
    v1::AdminPolicy {
        admins: admins.iter().map(|k| k.to_bytes().to_vec()).collect(),
        threshold: (admins.len() / 2 + 1) as u32,
    }
}

/// One configuration of the network, as a verifier uses it.
#[derive(Debug, Clone)]
pub struct Configuration {
    /// 0 for the genesis configuration.
    pub sequence: u64,
    /// What headers executed under it name in `config`: the network id for the genesis
    /// configuration, [`config_hash`] for later ones.
    pub hash: [u8; 32],
    /// The genesis header's hash, which every vote and approval is bound to.
    pub network_id: [u8; 32],
    pub peers: Vec<v1::GenesisPeer>,
    /// The replicas' signing keys, by replica id.
    pub peer_keys: Vec<VerifyingKey>,
    pub parameters: v1::ConsensusParameters,
    /// Who may change it; `None`: nobody.
    pub admins: Option<Admins>,
    /// The policy as it is encoded (for the next configuration to repeat or change).
    pub policy: Option<v1::AdminPolicy>,
    /// The auditors who, with the peers, read blocks ([`check_auditors`]).
    pub auditors: Vec<NamedAuditor>,
    /// Their certificates as encoded (for the next configuration to repeat or change).
    pub auditor_certificates: Vec<Vec<u8>>,
}

impl Configuration {
    /// f + 1 of its peers: the votes a commit proof of a block executed under it needs.
    pub fn weak_quorum(&self) -> usize {
        (self.peer_keys.len().saturating_sub(1)) / 3 + 1
    }

    /// This configuration as the value a next one starts from (sequence + 1, naming it).
    pub fn successor(&self) -> v1::NetworkConfig {
        v1::NetworkConfig {
            sequence: self.sequence + 1,
            previous: self.hash.to_vec(),
            peers: self.peers.clone(),
            consensus: Some(self.parameters),
            admin_policy: self.policy.clone(),
            auditors: self.auditor_certificates.clone(),
        }
    }

    /// Whether the identity `name` signing with `key` is one of the auditors this
    /// configuration names as readers of blocks: both must match the named certificate's (a
    /// certificate for the key under another name, issued after the named one was revoked
    /// for key compromise, is not the auditor; names are never reused at the CA).
    pub fn is_auditor(&self, name: &str, key: &VerifyingKey) -> bool {
        self.auditors
            .iter()
            .any(|a| a.key == *key && a.name == name)
    }

    /// The encryption keys of the named auditors whose certificate `is_revoked` does not
    /// name, in the configuration's order: what the chaincode requires free text to be sealed
    /// to besides the record's owner ([`medledger_chaincode::Stub::auditor_keys`],
    /// docs/adr/0013). Revocations are on the ledger, so every peer computes the same list.
    pub fn auditor_keys(&self, is_revoked: impl Fn(&[u8]) -> bool) -> Vec<[u8; 32]> {
        self.auditors
            .iter()
            .filter(|a| !is_revoked(&a.serial))
            .map(|a| a.encryption_key)
            .collect()
    }

    /// The PBFT core's configuration for this configuration's replicas in the epoch that
    /// starts at `base`.
    ///
    /// # Errors
    /// [`ConfigError::Parameters`] when the parameters do not make one (checked when this
    /// configuration was put in force: a stored one that fails is corrupt).
    pub fn replica_config(&self, base: EpochBase) -> Result<medledger_pbft::Config, ConfigError> {
        let mut config = consensus_config(self.peer_keys.len() as u32, &self.parameters)?;
        config.epoch_base = base.seq;
        config.epoch_base_digest = base.digest;
        config.epoch_base_time_ms = base.time_ms;
        Ok(config)
    }

    /// The replica id of the peer whose signing key is `key`, if it is one of this
    /// configuration's peers (ids follow the order of the peers).
    pub fn replica_of(&self, key: &VerifyingKey) -> Option<u32> {
        self.peer_keys
            .iter()
            .position(|k| k == key)
            .map(|i| i as u32)
    }

    /// Whether `signature` is replica `replica`'s consensus signature over `bytes` (domain
    /// [`SignatureDomain::Consensus`]).
    pub fn verify_consensus(&self, replica: u32, bytes: &[u8], signature: &[u8]) -> bool {
        let Some(key) = self.peer_keys.get(replica as usize) else {
            return false;
        };
        Signature::from_slice(signature)
            .is_ok_and(|s| key.verify(SignatureDomain::Consensus, bytes, &s).is_ok())
    }

    /// Whether `other` is ordered by the same replicas as `self` (the same peers: names,
    /// addresses and certificates). When not, the block that puts `other` in force is the
    /// last of `self`'s epoch (docs/adr/0011 §2).
    pub fn same_replicas(&self, other: &Configuration) -> bool {
        self.peers == other.peers
    }

    /// The configuration `value` puts in force after this one at consensus time `time_s`
    /// (Unix seconds), checked for shape and for what may change (not for approvals: see
    /// [`check_update`]). A membership change also needs the certificate of every peer it
    /// adds valid at `time_s`, and of every peer not in `revoked` (a peer that stays, with the
    /// same name, address and certificate, had its validity checked when it was added: the
    /// configuration pins its key, and it renews its certificate without a change, so the
    /// one recorded here may have ended), and changes at most f of the peers on either side:
    /// it adds at most f of the new set and removes at most f of the old one (more at once
    /// would let peers that have not caught up decide, or leave too few that have).
    ///
    /// # Errors
    /// [`ConfigError`] other than the approval ones.
    pub fn next(
        &self,
        value: &v1::NetworkConfig,
        root: &RootCertificate,
        time_s: i64,
        revoked: &impl RevocationSet,
    ) -> Result<Configuration, ConfigError> {
        if value.sequence != self.sequence.saturating_add(1) {
            return Err(ConfigError::Sequence {
                expected: self.sequence.saturating_add(1),
                got: value.sequence,
            });
        }
        if value.previous != self.hash {
            return Err(ConfigError::Previous);
        }
        let (next, identities) = self.derive(value, root)?;
        let stays = |peer: &v1::GenesisPeer| {
            self.peers.iter().any(|p| {
                p.name == peer.name
                    && p.address == peer.address
                    && p.certificate == peer.certificate
            })
        };
        for (i, identity) in identities.iter().enumerate() {
            let standing = if value.peers.get(i).is_some_and(stays) {
                // Its time was checked when it was added; a revocation still counts.
                if revoked.is_revoked(&identity.serial) {
                    Err(medledger_crypto::CertificateError::Revoked {
                        serial: identity.serial_hex(),
                    })
                } else {
                    Ok(())
                }
            } else {
                identity.check_standing(root, time_s, revoked)
            };
            standing.map_err(|e| ConfigError::Peer {
                replica: i as u32,
                name: identity.name.clone(),
                why: e.to_string(),
            })?;
        }
        if !identities.is_empty() {
            self.check_membership_step(&next)?;
        }
        Ok(next)
    }

    /// At most f of the new set added and f of the old set removed ([`Configuration::next`]).
    /// A peer is its key at its address: one that moves counts as removed and added (its
    /// links are cut and made again). The peers that stay keep their order.
    fn check_membership_step(&self, next: &Configuration) -> Result<(), ConfigError> {
        let members = |c: &Configuration| -> Vec<(VerifyingKey, String)> {
            c.peer_keys
                .iter()
                .zip(&c.peers)
                .map(|(k, p)| (*k, p.address.clone()))
                .collect()
        };
        let (old, new) = (members(self), members(next));
        let added = new.iter().filter(|m| !old.contains(m)).count();
        let removed = old.iter().filter(|m| !new.contains(m)).count();
        let stay_old: Vec<_> = old.iter().filter(|m| new.contains(m)).collect();
        let stay_new: Vec<_> = new.iter().filter(|m| old.contains(m)).collect();
        if stay_old != stay_new {
            return Err(ConfigError::PeerSet(
                "the peers that stay must keep their order (their replica ids follow it)".into(),
            ));
        }
        let f = |n: usize| n.saturating_sub(1) / 3;
        let (f_old, f_new) = (f(self.peer_keys.len()), f(next.peer_keys.len()));
        if added > f_new || removed > f_old {
            return Err(ConfigError::PeerSet(format!(
                "the change adds {added} and removes {removed} peers; at most {f_new} may be \
                 added and {f_old} removed at once (add or remove them one change at a time)"
            )));
        }
        Ok(())
    }

    /// The configuration a stored `value` is, on a ledger whose genesis configuration is
    /// `self` and whose CA root is `root`: the shape checks of [`Configuration::next`]
    /// without sequence, predecessor and the standing of certificates (checked when it
    /// committed). For reloading the configuration in force from state.
    ///
    /// # Errors
    /// [`ConfigError`] when `value` is not a configuration this genesis allows: the state is
    /// corrupt.
    pub fn stored(
        &self,
        value: &v1::NetworkConfig,
        root: &RootCertificate,
    ) -> Result<Configuration, ConfigError> {
        self.derive(value, root).map(|(c, _)| c)
    }

    /// What may differ between `self` and `value`: the policy, the execution parameters, the
    /// auditors and the peers. Returns the configuration and, when its peers differ from `self`'s, their
    /// identities (empty when they are the same).
    fn derive(
        &self,
        value: &v1::NetworkConfig,
        root: &RootCertificate,
    ) -> Result<(Configuration, Vec<EnrolledIdentity>), ConfigError> {
        let identities = if value.peers == self.peers {
            Vec::new()
        } else {
            read_peers(&value.peers, root)?
        };
        let peer_keys = if identities.is_empty() {
            self.peer_keys.clone()
        } else {
            identities.iter().map(|i| i.signing_key).collect()
        };
        let p = value
            .consensus
            .ok_or_else(|| ConfigError::Parameters("no consensus parameters".into()))?;
        let mut fixed = p;
        fixed.max_envelope_bytes = self.parameters.max_envelope_bytes;
        fixed.max_tx_lifetime_ms = self.parameters.max_tx_lifetime_ms;
        if fixed != self.parameters {
            return Err(ConfigError::Unsupported(
                "only max_envelope_bytes and max_tx_lifetime_ms can change; the PBFT \
                 parameters and the ledger format stay as the genesis fixed them"
                    .into(),
            ));
        }
        if !TX_LIFETIME_BOUNDS_MS.contains(&p.max_tx_lifetime_ms) {
            return Err(ConfigError::Parameters(format!(
                "max_tx_lifetime_ms {} is outside {TX_LIFETIME_BOUNDS_MS:?}",
                p.max_tx_lifetime_ms
            )));
        }
        if p.max_envelope_bytes < MIN_ENVELOPE_BYTES || p.max_envelope_bytes > p.max_batch_bytes {
            return Err(ConfigError::Parameters(format!(
                "max_envelope_bytes {} must be {MIN_ENVELOPE_BYTES} to max_batch_bytes ({})",
                p.max_envelope_bytes, p.max_batch_bytes
            )));
        }
        // A view change of the new set must still fit in a replica message.
        consensus_config(peer_keys.len() as u32, &p)?;
        let admins = match &value.admin_policy {
            Some(policy) => Some(check_policy(policy)?),
            None => None,
        };
        let others: Vec<VerifyingKey> = peer_keys
            .iter()
            .chain(admins.iter().flat_map(|a| a.keys.iter()))
            .copied()
            .collect();
        let auditors = check_auditors(&value.auditors, root, &others)?;
        let configuration = Configuration {
            sequence: value.sequence,
            hash: config_hash(value),
            network_id: self.network_id,
            peers: value.peers.clone(),
            peer_keys,
            parameters: p,
            admins,
            policy: value.admin_policy.clone(),
            auditors,
            auditor_certificates: value.auditors.clone(),
        };
        Ok((configuration, identities))
    }
}

/// The PBFT core's configuration for `n` replicas under the consensus parameters `p`, or
/// [`ConfigError::Parameters`] when they are inconsistent or would let a view change
/// outgrow a replica message ([`crate::wire::max_encoded_bytes`]).
pub fn consensus_config(
    n: u32,
    p: &v1::ConsensusParameters,
) -> Result<medledger_pbft::Config, ConfigError> {
    let mut c = medledger_pbft::Config::new(n);
    c.checkpoint_interval = p.checkpoint_interval;
    c.watermark_window = p.watermark_window;
    c.max_batch_requests = p.max_batch_requests as usize;
    c.max_batch_bytes = p.max_batch_bytes as usize;
    c.batch_timeout_ms = p.batch_timeout_ms;
    c.request_timeout_ms = p.request_timeout_ms;
    c.max_clock_skew_ms = p.max_clock_skew_ms;
    c.retain_committed = c.watermark_window.max(1024);
    let sane = c.checkpoint_interval > 0
        && c.watermark_window >= c.checkpoint_interval
        && c.watermark_window.is_multiple_of(c.checkpoint_interval)
        && c.max_batch_requests > 0
        && c.max_batch_bytes >= p.max_envelope_bytes as usize
        && p.max_envelope_bytes >= 1024
        && c.request_timeout_ms > c.batch_timeout_ms;
    if !sane {
        return Err(ConfigError::Parameters(format!(
            "inconsistent consensus parameters: {p:?}"
        )));
    }
    let largest = crate::wire::max_encoded_bytes(&c);
    let limit = crate::wire::MAX_REPLICA_MESSAGE_BYTES;
    if largest > limit {
        return Err(ConfigError::Parameters(format!(
            "with these consensus parameters a view change may take {largest} bytes, more \
             than the {limit} a replica message may: lower max_batch_bytes or \
             watermark_window"
        )));
    }
    Ok(c)
}

/// The hash a configuration after the genesis is known by: SHA-256 over the tag
/// `medledger/v2/config` and the configuration's protobuf encoding.
pub fn config_hash(value: &v1::NetworkConfig) -> [u8; 32] {
    let mut e = Encoder::new(b"medledger/v2/config");
    e.bytes(&value.encode_to_vec());
    Sha256::digest(e.finish()).into()
}

/// The bytes an admin signs to approve configuration `hash` of network `network_id`, to be
/// ordered before `expires_at_ms` (domain [`SignatureDomain::ConfigUpdate`]).
pub fn approval_bytes(network_id: &[u8; 32], hash: &[u8; 32], expires_at_ms: i64) -> Vec<u8> {
    let mut e = Encoder::new(b"medledger/v2/config-update");
    e.bytes(network_id);
    e.bytes(hash);
    e.u64(expires_at_ms as u64);
    e.finish()
}

/// Longest a configuration update may wait to be ordered after the consensus time it is
/// checked at (ms): 30 days, time for every admin to approve it.
pub const MAX_CONFIG_UPDATE_LIFETIME_MS: i64 = 30 * 24 * 3_600_000;

/// The transaction id a configuration update is recorded under: one per sequence number.
pub fn config_tx_id(sequence: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medledger/v2/config-update");
    h.update(sequence.to_be_bytes());
    h.finalize().into()
}

/// Checks `update` against the configuration in force at consensus time `time_s` (Unix
/// seconds): it is the next configuration ([`Configuration::next`]), and exactly the
/// policy's threshold of distinct admins it names approved it, in the policy's order, each
/// with an admin enrollment certificate of `root`, valid at `time_s` and not in `revoked`.
/// (Its expiry is the caller's to check against consensus time.)
///
/// # Errors
/// [`ConfigError`]: the first check that failed.
pub fn check_update(
    current: &Configuration,
    root: &RootCertificate,
    update: &v1::ConfigUpdate,
    time_s: i64,
    revoked: &impl RevocationSet,
) -> Result<Configuration, ConfigError> {
    let value = update.config.as_ref().ok_or(ConfigError::Empty)?;
    let admins = current.admins.as_ref().ok_or(ConfigError::NoAdmins)?;
    let next = current.next(value, root, time_s, revoked)?;
    if update.signatures.len() != admins.threshold {
        return Err(ConfigError::ApprovalCount {
            got: update.signatures.len(),
            needed: admins.threshold,
        });
    }
    let signed = approval_bytes(&current.network_id, &next.hash, update.expires_at_ms);
    let mut approved = BTreeSet::new();
    for (index, approval) in update.signatures.iter().enumerate() {
        let bad = |why: String| ConfigError::Approval { index, why };
        let identity =
            validate_enrollment_certificate(&approval.certificate, root, time_s, revoked)
                .map_err(|e| bad(format!("certificate: {e}")))?;
        if identity.role != Role::Admin {
            return Err(bad(format!(
                "{} is a {}, not an admin",
                identity.name, identity.role
            )));
        }
        let Some(slot) = admins.keys.iter().position(|k| *k == identity.signing_key) else {
            return Err(bad(format!(
                "{} is not an admin of the configuration in force",
                identity.name
            )));
        };
        let signature =
            Signature::from_slice(&approval.signature).map_err(|e| bad(e.to_string()))?;
        identity
            .signing_key
            .verify(SignatureDomain::ConfigUpdate, &signed, &signature)
            .map_err(|_| bad(format!("{}'s signature does not verify", identity.name)))?;
        if approved.last().is_some_and(|last| *last >= slot) {
            return Err(bad(format!(
                "{} approved twice, or out of the policy's order",
                identity.name
            )));
        }
        approved.insert(slot);
    }
    if approved.len() < admins.threshold {
        return Err(ConfigError::ApprovalCount {
            got: approved.len(),
            needed: admins.threshold,
        });
    }
    Ok(next)
}
