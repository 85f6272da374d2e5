//! The genesis block: the network's peer set (each peer's enrollment certificate and
//! address), the CA root every peer trusts, and the consensus parameters. Every peer starts
//! from the same one and refuses to run against a ledger that began with another.

use std::path::Path;

use medledger_crypto::{RootCertificate, VerifyingKey};
use medledger_pbft as pbft;
use medledger_proto::v1;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::block::header_hash;
use crate::config::{Configuration, consensus_config};

/// Largest genesis file accepted.
pub const MAX_GENESIS_BYTES: usize = 1 << 20;
/// Largest encoded envelope (one transaction) by default.
pub const DEFAULT_MAX_ENVELOPE_BYTES: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("cannot read the genesis block {path}: {why}")]
    Read { path: String, why: String },
    #[error("the genesis block is malformed: {0}")]
    Malformed(String),
    #[error("genesis peer {replica} ({name}): {why}")]
    BadPeer {
        replica: u32,
        name: String,
        why: String,
    },
}

/// A validated genesis block, with what peers need from it at hand.
#[derive(Debug, Clone)]
pub struct Genesis {
    pub block: v1::Block,
    pub config: v1::GenesisConfig,
    pub root: RootCertificate,
    /// The replicas' signing keys, by replica id.
    pub peer_keys: Vec<VerifyingKey>,
    /// SHA-256 of the genesis header: the network's identity.
    pub network_id: [u8; 32],
    /// The genesis configuration, sequence 0 of the configuration chain (docs/adr/0010).
    pub configuration: Configuration,
}

pub struct GenesisPeerSpec {
    pub name: String,
    pub certificate_der: Vec<u8>,
    pub address: String,
}

/// The ledger format new networks are made with: the encodings of blocks, results and world
/// state and what the header hashes. Fixed by the golden tests (`execution/tests/golden.rs`);
/// any change to them is a new format, with a new number; so is any change to an outcome.
/// Format 2 (docs/adr/0009): headers with a result root, commit proofs, transaction expiry,
/// envelope-hash request ids. Format 3 (docs/adr/0011): the encodings of format 2, and a
/// configuration transaction may change the peers ([`MEMBERSHIP_CHANGES_FORMAT`]); on a
/// format-2 chain such a change stays `BAD_CONFIG_UPDATE`, as the builds that wrote those
/// chains recorded it. Format 4 (docs/adr/0017): the encodings of format 3, and a
/// transaction may commit to private values acknowledged by f + 1 peers
/// ([`PRIVATE_DATA_FORMAT`]). Format 5: the encodings of format 4, and key material (grant
/// and rotation envelopes, the key chain's links, items' wrapped file keys) is taken only as
/// commitments to private values ([`PRIVATE_KEYS_FORMAT`]). Format 6: the encodings of
/// format 5, and study copies' wrapped file keys are private too
/// ([`PRIVATE_STUDY_KEYS_FORMAT`]). Format 7: the encodings of format 6, and an emergency
/// access's sealed reason is private too ([`PRIVATE_FREE_TEXT_FORMAT`]).
pub const LEDGER_FORMAT: u32 = 7;
/// The oldest ledger format this code reads (and re-executes in `ledger verify`).
pub const OLDEST_LEDGER_FORMAT: u32 = 1;
/// The oldest ledger format a peer of this build runs (a format-2 network goes on, with the
/// peers of its genesis; format 1 only verifies).
pub const OLDEST_RUNNING_FORMAT: u32 = 2;
/// The first ledger format whose configuration transactions may change the peers: what
/// decides that outcome is the network's format, fixed in its genesis, never the build
/// (peers of two versions of one network must agree on it).
pub const MEMBERSHIP_CHANGES_FORMAT: u32 = 3;
/// The first ledger format whose transactions may commit to private values
/// (`Transaction.private_commitments`, `SignedTransaction.private_data_acks`, docs/adr/0017).
/// Below it, a transaction's commitments are ignored, as the builds that wrote those chains
/// ignored a field they did not know, and an envelope carrying acknowledgments is not
/// canonical (format 2 and 3) as it was to them.
pub const PRIVATE_DATA_FORMAT: u32 = 4;
/// The first ledger format whose chaincode takes key material only as commitments to
/// private values, claimed once by one field and read by queries alone (docs/adr/0017,
/// steps 2 and 3). Below it key material is kept in clear and the commitment fields are
/// ignored, as the builds that wrote format-4 chains did.
pub const PRIVATE_KEYS_FORMAT: u32 = 5;
/// The first ledger format whose chaincode takes a study copy's wrapped file key (wrapped
/// to the study's key) only as a commitment to a private value, read by the study's
/// researcher with the query `study_access_keys` (docs/adr/0017, step 4). Below it that key
/// is kept in clear, as format-5 builds did.
pub const PRIVATE_STUDY_KEYS_FORMAT: u32 = 6;
/// The first ledger format whose chaincode takes free text (an emergency access's reason,
/// sealed to the patient and the auditors, docs/adr/0013) only as a commitment to a private
/// value, read by the record's owner and the auditors with the query `sealed_reasons` (the
/// auditors after the record's erasure too, docs/adr/0013 and 0017 step 4). Below it the
/// sealed text is kept in the block, the audit entry and the event, as format-6 builds did.
pub const PRIVATE_FREE_TEXT_FORMAT: u32 = 7;

/// The key material a ledger of `format` takes only as commitments to private values: what
/// the chaincode's rules ask of the format ([`PRIVATE_KEYS_FORMAT`],
/// [`PRIVATE_STUDY_KEYS_FORMAT`], [`PRIVATE_FREE_TEXT_FORMAT`]).
pub fn private_keys(format: u32) -> medledger_chaincode::private::PrivateKeys {
    use medledger_chaincode::private::PrivateKeys;
    if format >= PRIVATE_FREE_TEXT_FORMAT {
        PrivateKeys::FreeText
    } else if format >= PRIVATE_STUDY_KEYS_FORMAT {
        PrivateKeys::StudyKeys
    } else if format >= PRIVATE_KEYS_FORMAT {
        PrivateKeys::RecordKeys
    } else {
        PrivateKeys::None
    }
}
/// Default longest life of a transaction (ms): five minutes from the consensus time.
pub const DEFAULT_MAX_TX_LIFETIME_MS: u64 = 300_000;
pub use crate::config::TX_LIFETIME_BOUNDS_MS;

/// Defaults tuned for a LAN of 4 to 10 peers.
pub fn default_parameters() -> v1::ConsensusParameters {
    let c = pbft::Config::new(4);
    v1::ConsensusParameters {
        checkpoint_interval: c.checkpoint_interval,
        watermark_window: c.watermark_window,
        max_batch_requests: 256,
        // A view change carries one window of full batches and must fit one replica
        // message (`wire::max_encoded_bytes`): 64 × 384 KiB leaves room under 32 MiB.
        max_batch_bytes: 384 << 10,
        batch_timeout_ms: c.batch_timeout_ms,
        request_timeout_ms: 2_000,
        max_clock_skew_ms: c.max_clock_skew_ms,
        max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
        ledger_format: LEDGER_FORMAT,
        max_tx_lifetime_ms: DEFAULT_MAX_TX_LIFETIME_MS,
    }
}

/// Builds the genesis block for `peers` (replica ids in the given order), with the admins
/// who may change its configuration (`None`: nobody, ever) and the `auditors` (their
/// enrollment certificates, DER, role auditor) who with the peers read its blocks.
pub fn build(
    network_name: &str,
    root_der: &[u8],
    peers: Vec<GenesisPeerSpec>,
    parameters: v1::ConsensusParameters,
    admin_policy: Option<v1::AdminPolicy>,
    auditors: Vec<Vec<u8>>,
    created_at_ms: i64,
) -> Result<Genesis, GenesisError> {
    let config = v1::GenesisConfig {
        network_name: network_name.to_string(),
        ca_root: root_der.to_vec(),
        peers: peers
            .into_iter()
            .enumerate()
            .map(|(i, p)| v1::GenesisPeer {
                replica: i as u32,
                name: p.name,
                certificate: p.certificate_der,
                address: p.address,
            })
            .collect(),
        consensus: Some(parameters),
        created_at_ms,
        admin_policy,
        auditors,
    };
    let format = match parameters.ledger_format {
        1 => 0,
        _ => crate::block::HEADER_FORMAT_2,
    };
    let header = v1::BlockHeader {
        number: 0,
        prev_hash: vec![0; 32],
        tx_root: Sha256::digest(config.encode_to_vec()).to_vec(),
        state_root: vec![0; 32],
        time_ms: created_at_ms,
        format,
        ..Default::default()
    };
    let block = v1::Block {
        header: Some(header),
        genesis: Some(config),
        ..Default::default()
    };
    Genesis::from_block(block)
}

impl Genesis {
    pub fn from_block(block: v1::Block) -> Result<Genesis, GenesisError> {
        let malformed = |why: &str| GenesisError::Malformed(why.to_string());
        let header = block
            .header
            .as_ref()
            .ok_or_else(|| malformed("no header"))?;
        let config = block
            .genesis
            .clone()
            .ok_or_else(|| malformed("no genesis configuration"))?;
        if header.number != 0 || header.prev_hash != [0; 32] {
            return Err(malformed("a genesis block is number 0 with no predecessor"));
        }
        if header.tx_root != Sha256::digest(config.encode_to_vec()).as_slice() {
            return Err(malformed("the header does not match the configuration"));
        }
        let root = RootCertificate::from_der(&config.ca_root)
            .map_err(|e| GenesisError::Malformed(format!("CA root: {e}")))?;
        let n = config.peers.len();
        if n < 4 {
            return Err(GenesisError::Malformed(format!(
                "{n} peers: PBFT needs at least 4 peers (f faults need 3f + 1: 4, 7, 10, ...)"
            )));
        }
        let parameters = config
            .consensus
            .ok_or_else(|| malformed("no consensus parameters"))?;
        if !(OLDEST_LEDGER_FORMAT..=LEDGER_FORMAT).contains(&parameters.ledger_format) {
            return Err(GenesisError::Malformed(format!(
                "the network's ledger format is {}; this binary reads formats \
                 {OLDEST_LEDGER_FORMAT} to {LEDGER_FORMAT}",
                parameters.ledger_format
            )));
        }
        let header_format = match parameters.ledger_format {
            1 => 0,
            _ => crate::block::HEADER_FORMAT_2,
        };
        if header.format != header_format
            || (header_format == 0 && (!header.result_root.is_empty() || !header.config.is_empty()))
        {
            return Err(malformed(
                "the genesis header's format differs from the network's ledger format",
            ));
        }
        if parameters.ledger_format >= 2
            && !TX_LIFETIME_BOUNDS_MS.contains(&parameters.max_tx_lifetime_ms)
        {
            return Err(GenesisError::Malformed(format!(
                "max_tx_lifetime_ms is {}; it must be within {TX_LIFETIME_BOUNDS_MS:?}",
                parameters.max_tx_lifetime_ms
            )));
        }
        let peer_error = |e: crate::config::ConfigError| match e {
            crate::config::ConfigError::Peer { replica, name, why } => {
                GenesisError::BadPeer { replica, name, why }
            }
            other => GenesisError::Malformed(other.to_string()),
        };
        let identities = crate::config::read_peers(&config.peers, &root).map_err(peer_error)?;
        let mut peer_keys = Vec::with_capacity(n);
        for (i, identity) in identities.iter().enumerate() {
            // Checked at the genesis time: a peer certificate may expire later and be renewed.
            identity
                .check_standing(
                    &root,
                    config.created_at_ms / 1000,
                    &std::collections::BTreeSet::<Vec<u8>>::new(),
                )
                .map_err(|e| GenesisError::BadPeer {
                    replica: i as u32,
                    name: identity.name.clone(),
                    why: e.to_string(),
                })?;
            peer_keys.push(identity.signing_key);
        }
        let admins = match &config.admin_policy {
            Some(policy) => Some(
                crate::config::check_policy(policy)
                    .map_err(|e| GenesisError::Malformed(e.to_string()))?,
            ),
            None => None,
        };
        let others: Vec<_> = peer_keys
            .iter()
            .chain(admins.iter().flat_map(|a| a.keys.iter()))
            .copied()
            .collect();
        let auditors = crate::config::check_auditors(&config.auditors, &root, &others)
            .map_err(|e| GenesisError::Malformed(e.to_string()))?;
        let network_id = header_hash(header);
        let configuration = Configuration {
            sequence: 0,
            hash: network_id,
            network_id,
            peers: config.peers.clone(),
            peer_keys: peer_keys.clone(),
            parameters,
            admins,
            policy: config.admin_policy.clone(),
            auditors,
            auditor_certificates: config.auditors.clone(),
        };
        let genesis = Genesis {
            network_id,
            block,
            root,
            peer_keys,
            config,
            configuration,
        };
        genesis.pbft_config_checked(&parameters)?;
        Ok(genesis)
    }

    pub fn read(path: &Path) -> Result<Genesis, GenesisError> {
        let read_err = |why: String| GenesisError::Read {
            path: path.display().to_string(),
            why,
        };
        let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
        if bytes.len() > MAX_GENESIS_BYTES {
            return Err(read_err("larger than 1 MiB".into()));
        }
        let block = v1::Block::decode(bytes.as_slice())
            .map_err(|e| GenesisError::Malformed(e.to_string()))?;
        Genesis::from_block(block)
    }

    pub fn encode(&self) -> Vec<u8> {
        self.block.encode_to_vec()
    }

    pub fn n(&self) -> u32 {
        self.config.peers.len() as u32
    }

    pub fn parameters(&self) -> &v1::ConsensusParameters {
        self.config
            .consensus
            .as_ref()
            .expect("validated in from_block")
    }

    /// The network's ledger format (1 or 2).
    pub fn ledger_format(&self) -> u32 {
        self.parameters().ledger_format
    }

    /// f + 1: the fewest distinct peers among whom at least one is correct (the votes a
    /// commit proof needs).
    pub fn weak_quorum(&self) -> usize {
        (self.config.peers.len() - 1) / 3 + 1
    }

    pub fn max_envelope_bytes(&self) -> usize {
        self.parameters().max_envelope_bytes as usize
    }

    fn pbft_config_checked(
        &self,
        p: &v1::ConsensusParameters,
    ) -> Result<pbft::Config, GenesisError> {
        consensus_config(self.n(), p).map_err(|e| GenesisError::Malformed(e.to_string()))
    }

    /// The PBFT core's configuration.
    pub fn pbft_config(&self) -> pbft::Config {
        self.pbft_config_checked(self.parameters())
            .expect("validated in from_block")
    }

    /// Whether `signature` is genesis replica `replica`'s consensus signature over `bytes`.
    pub fn verify_consensus(
        &self,
        replica: pbft::ReplicaId,
        bytes: &[u8],
        signature: &[u8],
    ) -> bool {
        self.configuration
            .verify_consensus(replica, bytes, signature)
    }

    /// The genesis replica whose key is `key`, if any.
    pub fn replica_of(&self, key: &VerifyingKey) -> Option<pbft::ReplicaId> {
        self.configuration.replica_of(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parameters_fit_a_replica_message_and_oversized_batches_do_not() {
        for n in [4, 7, 10] {
            consensus_config(n, &default_parameters()).unwrap();
        }
        let mut p = default_parameters();
        p.max_batch_bytes = 4 << 20;
        let err = consensus_config(4, &p).unwrap_err().to_string();
        assert!(err.contains("view change may take"), "{err}");
    }
}
