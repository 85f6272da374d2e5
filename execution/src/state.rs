//! The committed world state as block execution reads it ([`WorldState`]), and what one
//! executed block changes in it ([`BlockCommit`]). The peer implements the trait over its
//! RocksDB ledger; [`crate::memory::MemoryState`] implements it in memory for the auditor,
//! the tests and the fuzz targets. Both are fed the same [`BlockCommit`]s, so the two agree
//! on every state root by construction.

use medledger_proto::v1;

/// A read of the committed state failed: a fault of the reader's storage, never a fact of
/// the ledger. Execution stops on it rather than decide a transaction (another peer, whose
/// disk answered, would decide otherwise).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading the committed state failed: {0}")]
pub struct StateError(pub String);

/// Where a transaction is on the ledger: block number and index within the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TxLocation {
    pub block: u64,
    pub index: u32,
}

impl TxLocation {
    /// 12 bytes: the block number then the index, big-endian (so locations sort in ledger
    /// order as bytes, which the peer's key history relies on).
    pub fn encode(self) -> [u8; 12] {
        let mut out = [0; 12];
        out[..8].copy_from_slice(&self.block.to_be_bytes());
        out[8..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    /// The inverse of [`TxLocation::encode`]; `None` for fewer than 12 bytes.
    pub fn decode(bytes: &[u8]) -> Option<TxLocation> {
        Some(TxLocation {
            block: u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
            index: u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?),
        })
    }
}

/// One past value of a key, as written by transaction `tx_id` at `location`, at consensus
/// time `time_s` (Unix seconds). `value: None` records a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub key: String,
    pub location: TxLocation,
    pub tx_id: [u8; 32],
    pub time_s: i64,
    pub value: Option<Vec<u8>>,
}

/// The committed ledger at one height, read-only. Every method reads that one height (a
/// snapshot), so a block executes against a consistent state.
pub trait WorldState {
    /// The header of committed block `number` (0 is the genesis block).
    fn header(&self, number: u64) -> Result<v1::BlockHeader, StateError>;
    /// The value of `key` in the world state.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Keys ≥ `start` (and < `end` if given) that start with `prefix`, ascending, at most
    /// `limit` of them.
    fn scan(
        &self,
        prefix: &str,
        start: &str,
        end: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError>;
    /// Committed modifications of `key`, oldest first, at most `limit`.
    fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>, StateError>;
    /// An enrollment certificate (DER) recorded on the ledger, by its SHA-256.
    fn certificate(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StateError>;
    /// Where transaction `tx_id` was recorded, if it was.
    fn tx_location(&self, tx_id: &[u8; 32]) -> Result<Option<TxLocation>, StateError>;
    /// Format 2: where the envelope whose SHA-256 is `hash` was first ordered, whatever its
    /// outcome (accepted or refused), if it was.
    fn envelope_location(&self, hash: &[u8; 32]) -> Result<Option<TxLocation>, StateError>;
    /// Whether a certificate serial was revoked by a committed block.
    fn is_revoked(&self, serial: &[u8]) -> bool;
    /// The CA sequence number of the last revocation committed (0: none).
    fn revocation_sequence(&self) -> u64;
    /// The configuration in force (docs/adr/0010): the encoded `v1::NetworkConfig` the last
    /// committed configuration transaction put in force, or `None` for the genesis's.
    fn configuration(&self) -> Result<Option<Vec<u8>>, StateError>;
}

/// Everything one executed block changes, to be stored at once.
#[derive(Debug, Default)]
pub struct BlockCommit {
    pub block: v1::Block,
    /// Final value of each key the block wrote (`None`: deleted), with the transaction that
    /// wrote it last; ascending by key.
    pub state: Vec<(String, Option<Vec<u8>>, TxLocation)>,
    /// Every write of every valid transaction, in block order.
    pub history: Vec<HistoryEntry>,
    /// Each recorded (not refused) transaction's id and location.
    pub tx_index: Vec<([u8; 32], TxLocation)>,
    /// Enrollment certificates first presented in this block: (SHA-256, DER).
    pub certificates: Vec<([u8; 32], Vec<u8>)>,
    /// (serial, CA sequence) of revocations that take effect with this block.
    pub revocations: Vec<(Vec<u8>, u64)>,
    /// (CA sequence, encoded `v1::SignedRevocationRecord`) of each revocation of this block,
    /// for the host to serve (`GetRevocations`).
    pub revocation_records: Vec<(u64, Vec<u8>)>,
    /// Each result's words for its submitter (why it was refused; empty when valid), by
    /// index: sent to the clients waiting on it, never stored in the block (whose `TxResult.message` is
    /// empty), so rewording an error changes no block.
    pub messages: Vec<String>,
    /// Functions of this block's transactions whose chaincode panicked (each recorded as
    /// failed with code INTERNAL): for the host's logs and metrics, not stored.
    pub chaincode_panics: Vec<String>,
    /// Format 2: the result leaf hashes whose Merkle root is the header's `result_root`, by
    /// index (the host builds commit proofs from them); empty for format 1.
    pub result_leaves: Vec<[u8; 32]>,
    /// Format 2: the SHA-256 of each envelope of the block, by index (each computed once).
    pub envelope_hashes: Vec<[u8; 32]>,
    /// Format 2: the SHA-256 and location of every envelope this block ordered for the first
    /// time (a repeat of an earlier envelope is not indexed again).
    pub envelope_index: Vec<([u8; 32], TxLocation)>,
    /// A configuration this block's configuration transaction puts in force from the next
    /// block on: its sequence, its encoded `v1::NetworkConfig`, and the SHA-256 of the
    /// envelope that carried it (for the configuration chain a client follows).
    pub configuration: Option<(u64, Vec<u8>, [u8; 32])>,
    /// That configuration changes the peers: this block is the last its replicas order, and
    /// the next is ordered by the new configuration's (docs/adr/0011 §2).
    pub ends_epoch: bool,
    /// The private data of this block's valid transactions (docs/adr/0017): what the host
    /// moves from its pending store into its private column family in the block's write.
    pub private_data: Vec<PrivateDataOf>,
    /// The private values this block's valid transactions purge (an erasure's steps, a
    /// rotation's superseded envelopes), by commitment: deleted in the block's write, after
    /// the values it stores.
    pub private_purges: Vec<[u8; 32]>,
}

/// The private commitments of one valid transaction, and the hash its values are pending
/// under (SHA-256 of the signed transaction bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateDataOf {
    pub transaction_hash: [u8; 32],
    /// 32 bytes each, in the transaction's order.
    pub commitments: Vec<Vec<u8>>,
}
