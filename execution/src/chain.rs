//! Following the configuration chain (docs/adr/0010 §6): a verifier that holds a genesis
//! accepts each later configuration only with the commit proof of the transaction that put
//! it in force, checked against the configuration before it.

use std::collections::BTreeSet;

use medledger_crypto::RootCertificate;
use medledger_proto::v1;
use prost::Message;

use crate::config::{ConfigError, Configuration, check_update};
use crate::proof::{KnownConfigurations, ProofError, check_commit_proof};

/// Why a link of the configuration chain was not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the link's envelope is not a canonically encoded configuration update")]
    NotAnUpdate,
    #[error("the link's commit proof: {0}")]
    Proof(#[from] ProofError),
    #[error("the update was executed under another configuration than the one it follows")]
    OutOfOrder,
    #[error("the ledger refused the update (status {0}): it put nothing in force")]
    Refused(i32),
    #[error("the update: {0}")]
    Update(#[from] ConfigError),
}

/// Largest configuration envelope a chain follower decodes.
pub const MAX_CONFIG_ENVELOPE_BYTES: usize = 1 << 20;

/// The configuration chain a verifier followed from its genesis: configurations 0 (the
/// genesis's), 1, 2, ... in order, each proven committed under the one before it. What a
/// client checks commit proofs against ([`crate::proof::KnownConfigurations`]).
#[derive(Debug, Clone)]
pub struct ConfigChain {
    root: RootCertificate,
    configurations: Vec<Configuration>,
    /// The links followed, in order (for handing the chain on: an offline proof file).
    links: Vec<v1::ConfigLink>,
}

impl ConfigChain {
    /// The chain of a genesis alone.
    pub fn new(genesis: &crate::genesis::Genesis) -> ConfigChain {
        ConfigChain {
            root: genesis.root.clone(),
            configurations: vec![genesis.configuration.clone()],
            links: Vec::new(),
        }
    }

    /// The links followed since the genesis, in order, each as it was checked.
    pub fn links(&self) -> &[v1::ConfigLink] {
        &self.links
    }

    /// [`ConfigChain::follow`], but a link to a configuration already followed (one that
    /// another source served first) is passed over.
    ///
    /// # Errors
    /// As [`ConfigChain::follow`], with the sequence it was following to.
    pub fn follow_new(&mut self, link: &v1::ConfigLink) -> Result<(), (u64, ChainError)> {
        let next = self.current().sequence + 1;
        if Self::sequence_of(link).is_some_and(|s| s < next) {
            return Ok(());
        }
        self.follow(link).map(|_| ()).map_err(|e| (next, e))
    }

    /// The sequence of the configuration a link claims to put in force, if it reads as a
    /// configuration update at all (not checked: see [`ConfigChain::follow`]).
    fn sequence_of(link: &v1::ConfigLink) -> Option<u64> {
        match v1::Envelope::decode(link.envelope.as_slice()).ok()?.kind? {
            v1::envelope::Kind::ConfigUpdate(update) => update.config.map(|c| c.sequence),
            _ => None,
        }
    }

    /// The latest configuration followed.
    pub fn current(&self) -> &Configuration {
        self.configurations
            .last()
            .expect("a chain starts with its genesis configuration")
    }

    /// Follows one link: `link.envelope` is a configuration update for the next sequence,
    /// its commit proof shows it accepted (status VALID) in a block executed under the
    /// current configuration and voted by f+1 of that configuration's peers, and the update
    /// itself holds under the current configuration ([`check_update`], at the block's
    /// consensus time; revocations are what the votes vouch for). Nothing changes on error.
    ///
    /// # Errors
    /// [`ChainError`]: the first check that failed.
    pub fn follow(&mut self, link: &v1::ConfigLink) -> Result<&Configuration, ChainError> {
        let bytes = &link.envelope;
        if bytes.len() > MAX_CONFIG_ENVELOPE_BYTES {
            return Err(ChainError::NotAnUpdate);
        }
        let envelope =
            v1::Envelope::decode(bytes.as_slice()).map_err(|_| ChainError::NotAnUpdate)?;
        if envelope.encode_to_vec() != *bytes {
            return Err(ChainError::NotAnUpdate);
        }
        let Some(v1::envelope::Kind::ConfigUpdate(update)) = envelope.kind else {
            return Err(ChainError::NotAnUpdate);
        };
        let proof = link.proof.as_ref().ok_or(ProofError::Incomplete)?;
        let proven = check_commit_proof(self, proof, &crate::block::envelope_hash(bytes))?;
        let current = self.current();
        if proven.header.config != current.hash {
            return Err(ChainError::OutOfOrder);
        }
        if proven.result.status != v1::TxStatus::Valid as i32 {
            return Err(ChainError::Refused(proven.result.status));
        }
        let next = check_update(
            current,
            &self.root,
            &update,
            proven.header.time_ms.div_euclid(1000),
            &BTreeSet::<Vec<u8>>::new(),
        )?;
        self.configurations.push(next);
        self.links.push(link.clone());
        Ok(self.current())
    }
}

impl KnownConfigurations for ConfigChain {
    fn by_hash(&self, hash: &[u8]) -> Option<&Configuration> {
        self.configurations.iter().rev().find(|c| c.hash == hash)
    }
}
