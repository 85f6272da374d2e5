//! Commit proofs (ledger format 2, docs/adr/0009 §3–4): what lets a client, the gateway or
//! anyone holding the genesis believe a transaction's outcome without trusting the peer that
//! told it.
//!
//! After executing block N every peer signs a block vote, `(network id, N, header hash)` in
//! the domain `medledger/v2/block-vote`. A [`v1::CommitProof`] is the header, the votes of
//! f+1 distinct peers of the configuration in force on its hash (so at least one correct
//! peer executed that block to that header), and the RFC 9162 inclusion path of one result
//! leaf to the header's `result_root`. Every correct peer computes the same header from the
//! same ordered batch, so f+1 matching votes fix the outcome of every transaction in it.

use medledger_crypto::{Signature, SignatureDomain};
use medledger_pbft::Encoder;
use medledger_proto::v1;

use crate::block::{HEADER_FORMAT_2, header_hash, result_leaf};
use crate::config::Configuration;
use crate::genesis::Genesis;
use crate::merkle::{Hash, Tree, verify_inclusion};

/// Most path entries a proof may carry: a block of 2^32 leaves needs 32.
pub const MAX_PATH: usize = 32;

/// Why a commit proof does not prove what it claims. Each names the first check that
/// failed; none is a fault of the verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof has no header or no result")]
    Incomplete,
    #[error("the header is of ledger format {0}; commit proofs are format 2")]
    NotFormat2(u32),
    #[error(
        "the block is of a configuration this verifier does not know (follow the \
         network's configuration chain from its genesis)"
    )]
    UnknownConfiguration,
    #[error("the proof names envelope {found}, not the one sent ({sent})")]
    OtherEnvelope { sent: String, found: String },
    #[error("the result carries words; a proven result has none")]
    WordsInResult,
    #[error(
        "the leaf records a repeat of an envelope ordered earlier, not its outcome (the first \
         leaf is)"
    )]
    Repeat,
    #[error("the Merkle path does not lead to the header's result root")]
    BadPath,
    #[error("vote {index}: {why}")]
    BadVote { index: usize, why: String },
    #[error("{0} votes: more than the network has peers")]
    TooManyVotes(usize),
    #[error("{got} distinct peers signed the header; {needed} are needed")]
    TooFewVotes { got: usize, needed: usize },
}

/// The bytes a block vote signs (domain [`SignatureDomain::BlockVote`]).
pub fn vote_bytes(network_id: &[u8; 32], number: u64, header_hash: &[u8; 32]) -> Vec<u8> {
    let mut e = Encoder::new(b"medledger/v2/block-vote");
    e.bytes(network_id);
    e.u64(number);
    e.bytes(header_hash);
    e.finish()
}

/// The configurations a verifier knows, by the hash headers name them with in `config`:
/// the genesis alone, or a configuration chain followed from it
/// (docs/adr/0010).
pub trait KnownConfigurations {
    fn by_hash(&self, hash: &[u8]) -> Option<&Configuration>;
}

impl<T: KnownConfigurations + ?Sized> KnownConfigurations for std::sync::Arc<T> {
    fn by_hash(&self, hash: &[u8]) -> Option<&Configuration> {
        (**self).by_hash(hash)
    }
}

impl KnownConfigurations for Genesis {
    fn by_hash(&self, hash: &[u8]) -> Option<&Configuration> {
        (hash == self.network_id).then_some(&self.configuration)
    }
}

/// Whether `vote` is a valid vote of a peer of `configuration` on header `hash` of block
/// `number`.
///
/// # Errors
/// Why not, as text for [`ProofError::BadVote`].
pub fn check_vote(
    genesis: &Configuration,
    number: u64,
    hash: &[u8; 32],
    vote: &v1::ReplicaSignature,
) -> Result<(), String> {
    let key = genesis
        .peer_keys
        .get(vote.replica as usize)
        .ok_or_else(|| format!("replica {} is not a peer of this network", vote.replica))?;
    let signature = Signature::from_slice(&vote.signature).map_err(|e| e.to_string())?;
    key.verify(
        SignatureDomain::BlockVote,
        &vote_bytes(&genesis.network_id, number, hash),
        &signature,
    )
    .map_err(|_| format!("replica {}'s signature does not verify", vote.replica))
}

/// Checks that f+1 distinct peers of `configuration` signed `header` among `votes` (at
/// most one vote per peer counted, at most n votes looked at).
fn check_votes(
    configuration: &Configuration,
    header: &v1::BlockHeader,
    votes: &[v1::ReplicaSignature],
) -> Result<(), ProofError> {
    let hash = header_hash(header);
    // Bounded before any signature is checked: at most one vote per peer.
    if votes.len() > configuration.peer_keys.len() {
        return Err(ProofError::TooManyVotes(votes.len()));
    }
    let mut signers = std::collections::BTreeSet::new();
    for (index, vote) in votes.iter().enumerate() {
        if !signers.insert(vote.replica) {
            continue;
        }
        check_vote(configuration, header.number, &hash, vote)
            .map_err(|why| ProofError::BadVote { index, why })?;
    }
    let needed = configuration.weak_quorum();
    if signers.len() < needed {
        return Err(ProofError::TooFewVotes {
            got: signers.len(),
            needed,
        });
    }
    Ok(())
}

/// Checks a whole block as a peer served it, against the configurations the caller knows:
/// its header is format 2 and of a known configuration, f+1 distinct peers of it signed the
/// header (the votes the block carries), its envelopes hash to the header's `tx_root` and
/// its results, one per envelope, to its `result_root`. Then every outcome the block lists
/// (events included) is the one the peers signed, whatever its status, and none is missing.
///
/// # Errors
/// [`ProofError`]: the first check that failed ([`ProofError::BadPath`] for a root that does
/// not match).
pub fn check_block(
    known: &(impl KnownConfigurations + ?Sized),
    block: &v1::Block,
) -> Result<(), ProofError> {
    let header = block.header.as_ref().ok_or(ProofError::Incomplete)?;
    if header.format != HEADER_FORMAT_2 {
        return Err(ProofError::NotFormat2(header.format));
    }
    let configuration = known
        .by_hash(&header.config)
        .ok_or(ProofError::UnknownConfiguration)?;
    if block.envelopes.len() != block.results.len() {
        return Err(ProofError::Incomplete);
    }
    if crate::block::tx_root(&block.envelopes).as_slice() != header.tx_root.as_slice() {
        return Err(ProofError::BadPath);
    }
    let leaves = crate::block::result_leaves(&block.envelopes, &block.results);
    if Tree::new(leaves).root().as_slice() != header.result_root.as_slice() {
        return Err(ProofError::BadPath);
    }
    check_votes(configuration, header, &block.votes)
}

/// What a checked commit proof proves.
#[derive(Debug, Clone, PartialEq)]
pub struct Proven {
    pub block: u64,
    /// The leaf's position in the block, as the proof claims it (not bound by the root).
    pub index: u32,
    pub header: v1::BlockHeader,
    /// The outcome as the block records it (no words).
    pub result: v1::TxResult,
}

/// Checks `proof` against the configurations the caller knows (`known`: the genesis, or the
/// chain followed from it) and the SHA-256 of the envelope the caller sent: the header is
/// format 2 and of a known configuration, f+1 distinct peers of that configuration signed
/// its hash, and the result's leaf for that envelope is in its result root.
///
/// # Errors
/// [`ProofError`]: the first check that failed.
pub fn check_commit_proof(
    known: &(impl KnownConfigurations + ?Sized),
    proof: &v1::CommitProof,
    envelope_hash: &[u8; 32],
) -> Result<Proven, ProofError> {
    let (Some(header), Some(result)) = (&proof.header, &proof.result) else {
        return Err(ProofError::Incomplete);
    };
    if header.format != HEADER_FORMAT_2 {
        return Err(ProofError::NotFormat2(header.format));
    }
    let genesis = known
        .by_hash(&header.config)
        .ok_or(ProofError::UnknownConfiguration)?;
    if proof.envelope_hash != envelope_hash {
        return Err(ProofError::OtherEnvelope {
            sent: hex(envelope_hash),
            found: hex(&proof.envelope_hash),
        });
    }
    if !result.message.is_empty() {
        return Err(ProofError::WordsInResult);
    }
    if result.status == v1::TxStatus::DuplicateEnvelope as i32 {
        return Err(ProofError::Repeat);
    }
    let root: Hash = header
        .result_root
        .as_slice()
        .try_into()
        .map_err(|_| ProofError::BadPath)?;
    let mut path = Vec::with_capacity(proof.path.len());
    if proof.path.len() > MAX_PATH {
        return Err(ProofError::BadPath);
    }
    for step in &proof.path {
        path.push(Hash::try_from(step.as_slice()).map_err(|_| ProofError::BadPath)?);
    }
    let leaf = result_leaf(envelope_hash, result);
    if !verify_inclusion(
        u64::from(proof.index),
        u64::from(proof.leaf_count),
        &leaf,
        &path,
        &root,
    ) {
        return Err(ProofError::BadPath);
    }
    check_votes(genesis, header, &proof.votes)?;
    Ok(Proven {
        block: header.number,
        index: proof.index,
        header: header.clone(),
        result: result.clone(),
    })
}

/// The proof of leaf `index` of a block whose result tree is `tree`, with `votes` on its
/// header (the caller holds at least f+1). `result` is stored without words.
pub fn build_proof(
    header: &v1::BlockHeader,
    votes: Vec<v1::ReplicaSignature>,
    tree: &Tree,
    index: usize,
    envelope_hash: &[u8; 32],
    result: &v1::TxResult,
) -> Option<v1::CommitProof> {
    Some(v1::CommitProof {
        header: Some(header.clone()),
        votes,
        envelope_hash: envelope_hash.to_vec(),
        result: Some(v1::TxResult {
            message: String::new(),
            ..result.clone()
        }),
        index: u32::try_from(index).ok()?,
        leaf_count: u32::try_from(tree.len()).ok()?,
        path: tree.path(index)?.into_iter().map(|h| h.to_vec()).collect(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
