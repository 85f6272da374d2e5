//! The ledger on disk, in RocksDB (ARCHITECTURE §3).
//!
//! Column families:
//! - `blocks`: number (u64 BE) → encoded `Block` (envelopes, results, commit certificate)
//! - `state`: key → block (u64 BE) ‖ tx (u32 BE) ‖ value — the world state with versions
//! - `history`: key ‖ 0x00 ‖ block ‖ tx → tx_id ‖ time (i64 BE) ‖ present (u8) ‖ value
//! - `tx_index`: tx_id → block ‖ tx: every transaction id ever ordered, valid or not
//! - `certificates`: SHA-256 → DER of every creator certificate the ledger has seen
//! - `revocations`: serial → block ‖ CA sequence
//! - `pbft`: the replica's durable protocol state (see [`PbftStore`])
//! - `meta`: `network_id`, `height`, `revocation_sequence`, `configuration` (the encoded
//!   `NetworkConfig` in force, once one replaced the genesis's), and `config/{sequence BE}`
//!   → SHA-256 of the envelope that committed that configuration (the configuration chain),
//!   and `revocation/{CA sequence BE}` → that revocation's signed record, as the CA signed it
//!
//! A block and everything it changes commit in one synced `WriteBatch`: after a crash the
//! ledger holds whole blocks only, and nothing is acknowledged before it is on disk.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use medledger_proto::v1;
use prost::Message;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions,
    Snapshot, WriteBatch, WriteOptions,
};

use crate::block::{WriteSet, header_hash};
use crate::genesis::Genesis;
pub use medledger_execution::state::{BlockCommit, HistoryEntry, TxLocation};

pub const CF_BLOCKS: &str = "blocks";
pub const CF_STATE: &str = "state";
pub const CF_HISTORY: &str = "history";
pub const CF_TX_INDEX: &str = "tx_index";
pub const CF_CERTIFICATES: &str = "certificates";
pub const CF_REVOCATIONS: &str = "revocations";
pub const CF_PBFT: &str = "pbft";
pub const CF_META: &str = "meta";
/// Format 2: the block votes (`v1::BlockVotes`) this peer holds on each block's header, by
/// block number: metadata, not consensus state (written unsynced; lost votes are only a
/// proof this peer cannot serve, and the others can).
pub const CF_VOTES: &str = "votes";
/// Format 2: SHA-256 of every envelope ordered → where it was first ordered (`TxLocation`).
pub const CF_ENVELOPES: &str = "envelope_index";
/// Private values of committed transactions (docs/adr/0017): commitment (32 bytes) → salt
/// (32 bytes) ‖ value. Never in a block, a result or history; written in the block's own
/// write, so a block and its private values commit together.
pub const CF_PRIVATE: &str = "private";
/// Private values acknowledged and not committed yet (docs/adr/0017 §4), written synced
/// before the acknowledgment is signed, so that a restart loses none an acknowledgment
/// vouches for: transaction hash (32) ‖ commitment (32) → keep-until (i64 ms, big-endian) ‖
/// creator key (32) ‖ salt (32) ‖ value. Deleted in the write of the block that takes them.
pub const CF_PRIVATE_PENDING: &str = "private_pending";
/// Committed private values this peer does not hold (docs/adr/0017 §7): commitment (32
/// bytes) → the number (u64, big-endian) of the block that committed it. Written in that
/// block's own write for each value of its valid transactions this peer was not given;
/// deleted when reconciliation stores the value, or when a later block purges it (a value
/// purged is never reconciled).
pub const CF_PRIVATE_MISSING: &str = "private_missing";
const ALL_CFS: [&str; 13] = [
    CF_BLOCKS,
    CF_STATE,
    CF_HISTORY,
    CF_TX_INDEX,
    CF_CERTIFICATES,
    CF_REVOCATIONS,
    CF_PBFT,
    CF_META,
    CF_VOTES,
    CF_ENVELOPES,
    CF_PRIVATE,
    CF_PRIVATE_PENDING,
    CF_PRIVATE_MISSING,
];

const META_NETWORK_ID: &[u8] = b"network_id";
const META_HEIGHT: &[u8] = b"height";
const META_REVOCATION_SEQUENCE: &[u8] = b"revocation_sequence";
const META_CONFIGURATION: &[u8] = b"configuration";
/// The number of the last block that changed the peers (docs/adr/0011); absent: none did.
const META_EPOCH_BASE: &[u8] = b"epoch_base";
/// `to-compact/` ‖ commitment: a private value a block purged whose bytes are still to be
/// compacted out of the ledger's files ([`Ledger::compact_purged_in_background`]); written
/// in the purging block's own write, deleted once compacted, so a restart resumes them.
const META_TO_COMPACT: &[u8] = b"to-compact/";
/// Least time between two compactions of purged values (one batch takes all purged since the
/// last): bounds the rewriting that a run of revocations or erasures makes every peer do.
pub const PURGED_COMPACTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The meta key of configuration `sequence`'s envelope hash.
fn config_link_key(sequence: u64) -> Vec<u8> {
    let mut key = b"config/".to_vec();
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The meta key of revocation `sequence`'s signed record.
fn revocation_record_key(sequence: u64) -> Vec<u8> {
    let mut key = b"revocation/".to_vec();
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A RocksDB error other than corruption (which is [`LedgerError::Corrupt`]).
    #[error("RocksDB: {0}")]
    Rocks(rocksdb::Error),
    #[error("the ledger is corrupt ({what}): {why}")]
    Corrupt { what: &'static str, why: String },
    #[error(
        "this data directory belongs to network {found}, but the genesis block given is network \
         {expected}; point the peer at its own data directory or at the genesis it started with"
    )]
    WrongGenesis { expected: String, found: String },
}

pub type Result<T> = std::result::Result<T, LedgerError>;

impl From<rocksdb::Error> for LedgerError {
    /// RocksDB's corruption (a checksum that does not match, a damaged table or log, found
    /// whenever it is read) is the ledger's: [`LedgerError::Corrupt`], noticed.
    fn from(e: rocksdb::Error) -> LedgerError {
        if e.kind() == rocksdb::ErrorKind::Corruption {
            corrupt("rocksdb", e)
        } else {
            LedgerError::Rocks(e)
        }
    }
}

/// The file a peer leaves in its ledger's directory when it finds the ledger corrupt while
/// running (written by its [`on_corruption`] hook): what it found. A ledger holding it is
/// refused at [`Ledger::open`], so that a peer whose damage lies where opening does not
/// read (a filter block, an old block) does not start, serve and stop again (issue 18).
pub const CORRUPTION_MARKER: &str = "CORRUPT";

type CorruptionHook = Box<dyn Fn(&LedgerError) + Send + Sync>;

/// What this process does when it finds its ledger corrupt (see [`on_corruption`]).
static CORRUPTION_HOOK: std::sync::OnceLock<CorruptionHook> = std::sync::OnceLock::new();

/// Installs, once per process, what it does on finding its ledger corrupt anywhere after
/// opening it (a read, a write, a compaction, a decode): the peer writes
/// [`CORRUPTION_MARKER`] and stops, saying so, rather than serve or sign from damaged data.
/// Returns false if a hook was installed already (the first stays).
pub fn on_corruption(hook: impl Fn(&LedgerError) + Send + Sync + 'static) -> bool {
    CORRUPTION_HOOK.set(Box::new(hook)).is_ok()
}

/// A [`LedgerError::Corrupt`] of `what`, noticed by the process's [`on_corruption`] hook.
pub(crate) fn corrupt(what: &'static str, why: impl ToString) -> LedgerError {
    let error = LedgerError::Corrupt {
        what,
        why: why.to_string(),
    };
    if let Some(hook) = CORRUPTION_HOOK.get() {
        hook(&error);
    }
    error
}

pub fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The meta key marking `commitment` as to be compacted ([`META_TO_COMPACT`]).
fn to_compact_key(commitment: &[u8; 32]) -> Vec<u8> {
    [META_TO_COMPACT, commitment.as_slice()].concat()
}

/// A private value as [`CF_PRIVATE`] stores it: salt ‖ value.
fn stored_value(salted: &crate::private_data::SaltedValue) -> Vec<u8> {
    let mut stored = Vec::with_capacity(salted.salt.len() + salted.value.len());
    stored.extend_from_slice(&salted.salt);
    stored.extend_from_slice(&salted.value);
    stored
}

/// The key of a pending private value: transaction hash ‖ commitment.
fn pending_key(transaction_hash: &[u8; 32], commitment: &[u8; 32]) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(transaction_hash);
    key[32..].copy_from_slice(commitment);
    key
}

pub fn history_key(key: &str, location: TxLocation) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 13);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&location.encode());
    k
}

pub struct Ledger {
    db: DB,
    height: AtomicU64,
    /// The consensus time (Unix ms) of the block at `height`, kept so that a refusal can
    /// compare an expiry with it without reading the block.
    head_time_ms: std::sync::atomic::AtomicI64,
    network_id: [u8; 32],
    /// A reader's scratch directory, removed with it.
    scratch: Option<std::path::PathBuf>,
    /// Held by a block's write and by a reconciled value's, so that a value is stored only
    /// while it is still missing: a block that purges it and the value reconciled cannot
    /// interleave.
    private_write: std::sync::Mutex<()>,
    /// Purged private values whose bytes are still to be compacted out of the ledger's files
    /// ([`Ledger::compact_purged_in_background`]).
    purged_queue: Arc<PurgedQueue>,
}

/// Private values blocks purged, and pending values deleted, waiting to be compacted out of
/// the ledger's files (docs/adr/0017 §6).
#[derive(Default)]
struct PurgedQueue {
    waiting: std::sync::Mutex<Compactions>,
    wake: std::sync::Condvar,
    /// Purged values the compaction under way took (their bytes may still be in files).
    compacting: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Compactions {
    /// Purged commitments of `private`.
    purged: Vec<[u8; 32]>,
    /// Pending values were deleted (expired: never committed, a value of an erased record
    /// among them perhaps) since the last compaction of `private_pending`.
    pending_deleted: bool,
}

impl PurgedQueue {
    /// Purged values whose bytes may still be in the ledger's files: waiting for a
    /// compaction, or in the one under way.
    fn uncompacted(&self) -> u64 {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        (waiting.purged.len() as u64)
            .saturating_add(self.compacting.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn add(&self, purged: &[[u8; 32]], pending_deleted: bool) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.purged.extend_from_slice(purged);
        waiting.pending_deleted |= pending_deleted;
        self.wake.notify_one();
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Ledger {
    /// Opens (or creates, from `genesis`) the ledger under `dir`. A ledger that began with a
    /// different genesis block is refused.
    pub fn open(dir: &Path, genesis: &Genesis) -> Result<Ledger> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_max_open_files(512);
        // A flush and a compaction beside the one that purged private values runs
        // (`compact_purged`): RocksDB's default of two jobs leaves one compaction slot, which a
        // manual compaction would hold while level-0 files pile up toward a write stall.
        options.set_max_background_jobs(4);
        // Every write is synced before it is acknowledged: a record torn at the log's end (a
        // crash during an unacknowledged write) is dropped, but a damaged record before it is
        // corruption, never silently the end of the log. RocksDB's default (point-in-time
        // recovery) replayed a log with one flipped byte up to that byte and dropped the rest:
        // a peer came back 329 blocks and its votes lower, saying nothing (issue 18).
        options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        options.set_paranoid_checks(true);
        // Point lookups that mostly miss (every submission asks whether its transaction id
        // was used; a refusal asks whether its envelope was ordered): a Bloom filter answers
        // a miss without reading the table.
        let mut lookups = options.clone();
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        lookups.set_block_based_table_factory(&table);
        // Small table files for private values: compacting one purged key out rewrites the
        // file that holds it, 8 MiB at most rather than RocksDB's 64.
        let mut private = options.clone();
        private.set_target_file_size_base(8 << 20);
        let cfs = ALL_CFS.iter().map(|name| {
            let cf_options = match *name {
                CF_TX_INDEX | CF_ENVELOPES | CF_CERTIFICATES => lookups.clone(),
                CF_PRIVATE => private.clone(),
                _ => options.clone(),
            };
            ColumnFamilyDescriptor::new(*name, cf_options)
        });
        match std::fs::read(dir.join(CORRUPTION_MARKER)) {
            Ok(found) => {
                let found = String::from_utf8_lossy(&found);
                return Err(corrupt("found while running", found.trim()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(corrupt("its corruption marker cannot be read", e)),
        }
        let db = DB::open_cf_descriptors(&options, dir, cfs)?;
        let ledger = Ledger {
            db,
            height: AtomicU64::new(0),
            head_time_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            network_id: genesis.network_id,
            scratch: None,
            private_write: std::sync::Mutex::new(()),
            purged_queue: Arc::default(),
        };
        match ledger.db.get_cf(ledger.cf(CF_META), META_NETWORK_ID)? {
            Some(found) if found.as_slice() == genesis.network_id.as_slice() => {}
            Some(found) => {
                return Err(LedgerError::WrongGenesis {
                    expected: hex::encode(genesis.network_id),
                    found: hex::encode(found),
                });
            }
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(ledger.cf(CF_BLOCKS), 0u64.to_be_bytes(), genesis.encode());
                batch.put_cf(ledger.cf(CF_META), META_HEIGHT, 0u64.to_be_bytes());
                batch.put_cf(ledger.cf(CF_META), META_NETWORK_ID, genesis.network_id);
                ledger.write_synced(batch)?;
            }
        }
        ledger.load_height()?;
        ledger.backfill_revocation_records()?;
        Ok(ledger)
    }

    /// Reads every entry of every column family with checksums verified and without
    /// filling the block cache: every table file's data and index blocks, and (opened to
    /// read them) its filter and properties blocks. A flipped bit in any of them is
    /// [`LedgerError::Corrupt`] here (noticed by the process's [`on_corruption`] hook)
    /// instead of whenever that data is next read, perhaps years later by a peer catching
    /// up. RocksDB checks every block it reads anyway: the scrub finds damage early, it
    /// does not keep damaged data from being served. One sequential read of the ledger; with
    /// `bytes_per_second`, paced to about that rate (a peer scrubs in the background).
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] for damage; [`LedgerError::Rocks`] for other I/O errors.
    pub fn scrub(&self, bytes_per_second: Option<u64>) -> Result<()> {
        const SLICE: u64 = 4 << 20;
        let mut read = 0u64;
        for name in ALL_CFS {
            let mut options = ReadOptions::default();
            options.set_verify_checksums(true);
            options.fill_cache(false);
            options.set_readahead_size(2 << 20);
            let mut entries = self.db.raw_iterator_cf_opt(self.cf(name), options);
            entries.seek_to_first();
            while entries.valid() {
                let len =
                    entries.key().map_or(0, <[u8]>::len) + entries.value().map_or(0, <[u8]>::len);
                read = read.saturating_add(len as u64);
                if let Some(rate) = bytes_per_second.filter(|r| *r > 0)
                    && read >= SLICE
                {
                    read = 0;
                    std::thread::sleep(std::time::Duration::from_millis(
                        SLICE.saturating_mul(1_000) / rate,
                    ));
                }
                entries.next();
            }
            entries.status()?;
        }
        Ok(())
    }

    fn load_height(&self) -> Result<()> {
        let height = self
            .db
            .get_cf(self.cf(CF_META), META_HEIGHT)?
            .and_then(|b| be_u64(&b))
            .ok_or_else(|| corrupt("meta", "no height"))?;
        self.height.store(height, Ordering::SeqCst);
        let time = self.header(height)?.time_ms;
        self.head_time_ms.store(time, Ordering::SeqCst);
        Ok(())
    }

    /// The last committed block's number and consensus time (Unix ms). Both are set after
    /// the block is on disk, so every block up to the one whose time is read here is in the
    /// indexes a later read looks at.
    pub fn head(&self) -> (u64, i64) {
        let height = self.height.load(Ordering::SeqCst);
        let time = self.head_time_ms.load(Ordering::SeqCst);
        (height, time)
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    pub fn network_id(&self) -> [u8; 32] {
        self.network_id
    }

    /// Number of the last committed block (0: only genesis).
    pub fn height(&self) -> u64 {
        self.height.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> Snapshot<'_> {
        self.db.snapshot()
    }

    pub fn block(&self, number: u64) -> Result<Option<v1::Block>> {
        self.db
            .get_cf(self.cf(CF_BLOCKS), number.to_be_bytes())?
            .map(|b| v1::Block::decode(b.as_slice()).map_err(|e| corrupt("blocks", e)))
            .transpose()
    }

    pub fn header(&self, number: u64) -> Result<v1::BlockHeader> {
        self.block(number)?
            .and_then(|b| b.header)
            .ok_or_else(|| corrupt("blocks", format!("block {number} is missing")))
    }

    pub fn last_hash(&self) -> Result<[u8; 32]> {
        Ok(header_hash(&self.header(self.height())?))
    }

    pub fn tx_location(&self, tx_id: &[u8]) -> Result<Option<TxLocation>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_TX_INDEX), tx_id)?
            .and_then(|b| TxLocation::decode(&b)))
    }

    /// Where the envelope whose SHA-256 is `hash` was first ordered (format 2).
    pub fn envelope_location(&self, hash: &[u8]) -> Result<Option<TxLocation>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_ENVELOPES), hash)?
            .and_then(|b| TxLocation::decode(&b)))
    }

    /// Block `location.block` and the position of a transaction in it, checked.
    pub fn located(&self, location: TxLocation) -> Result<v1::Block> {
        let block = self
            .block(location.block)?
            .ok_or_else(|| corrupt("index", "points at a missing block"))?;
        let i = location.index as usize;
        if i >= block.envelopes.len() || i >= block.results.len() {
            return Err(corrupt("index", "points past a block's transactions"));
        }
        Ok(block)
    }

    /// The block votes stored for block `number` (checked when they arrived).
    pub fn votes(&self, number: u64) -> Result<Vec<v1::ReplicaSignature>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_VOTES), number.to_be_bytes())?
            .map(|b| v1::BlockVotes::decode(b.as_slice()).map_err(|e| corrupt("votes", e)))
            .transpose()?
            .map(|v| v.votes)
            .unwrap_or_default())
    }

    /// Stores the block votes held for block `number` (unsynced: see [`CF_VOTES`]).
    pub fn put_votes(&self, number: u64, votes: Vec<v1::ReplicaSignature>) -> Result<()> {
        self.db.put_cf(
            self.cf(CF_VOTES),
            number.to_be_bytes(),
            v1::BlockVotes { votes }.encode_to_vec(),
        )?;
        Ok(())
    }

    pub fn certificate(&self, hash: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_CERTIFICATES), hash)?)
    }

    /// Serial numbers revoked on the ledger so far.
    pub fn revoked_serials(&self) -> Result<BTreeSet<Vec<u8>>> {
        let mut out = BTreeSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_REVOCATIONS), IteratorMode::Start)
        {
            let (k, _) = item?;
            out.insert(k.to_vec());
        }
        Ok(out)
    }

    /// The CA sequence number of the last revocation on the ledger.
    pub fn revocation_sequence(&self) -> Result<u64> {
        self.meta_u64(META_REVOCATION_SEQUENCE)
    }

    /// A big-endian number kept under `key` in the meta column, 0 when absent.
    fn meta_u64(&self, key: &[u8]) -> Result<u64> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), key)?
            .and_then(|b| be_u64(&b))
            .unwrap_or(0))
    }

    /// The encoded `v1::NetworkConfig` in force, or `None` while the genesis's is.
    pub fn configuration(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_META), META_CONFIGURATION)?)
    }

    /// The number of the last block that changed the peers, where the epoch of the replicas
    /// in force started (docs/adr/0011); 0 while the genesis's peers order.
    pub fn epoch_base(&self) -> Result<u64> {
        self.meta_u64(META_EPOCH_BASE)
    }

    /// The SHA-256 of the envelope that committed configuration `sequence` (1, 2, ...), if
    /// the ledger has it.
    pub fn config_link(&self, sequence: u64) -> Result<Option<[u8; 32]>> {
        match self
            .db
            .get_cf(self.cf(CF_META), config_link_key(sequence))?
        {
            None => Ok(None),
            // Another length is damage, never "no such link": read as absent, the chain of
            // epochs would end early and drop a real one without a word.
            Some(v) => <[u8; 32]>::try_from(v.as_slice()).map(Some).map_err(|_| {
                corrupt(
                    "configuration links",
                    format!("link {sequence} is {} bytes, not 32", v.len()),
                )
            }),
        }
    }

    /// CA revocation `sequence` (1, 2, ...) as the CA signed it (an encoded
    /// `v1::SignedRevocationRecord`), if it is on the ledger.
    pub fn revocation_record(&self, sequence: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), revocation_record_key(sequence))?)
    }

    /// Writes the signed records of revocations committed before the ledger kept them
    /// (`revocation/{sequence}`), from their blocks: once, when a ledger written by an
    /// earlier version is opened.
    fn backfill_revocation_records(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        for item in self
            .db
            .iterator_cf(self.cf(CF_REVOCATIONS), IteratorMode::Start)
        {
            let (_, value) = item?;
            let (Some(block), Some(sequence)) = (
                value.get(..8).and_then(be_u64),
                value.get(8..16).and_then(be_u64),
            ) else {
                return Err(corrupt("revocations", "a short entry"));
            };
            if self.revocation_record(sequence)?.is_some() {
                continue;
            }
            let Some(stored) = self.block(block)? else {
                return Err(corrupt("revocations", "an entry names a missing block"));
            };
            for envelope in &stored.envelopes {
                if let Ok(v1::Envelope {
                    kind: Some(v1::envelope::Kind::Revocation(signed)),
                }) = v1::Envelope::decode(envelope.as_slice())
                    && v1::RevocationRecord::decode(signed.record.as_slice())
                        .is_ok_and(|r| r.sequence == sequence)
                {
                    batch.put_cf(
                        self.cf(CF_META),
                        revocation_record_key(sequence),
                        signed.encode_to_vec(),
                    );
                }
            }
        }
        if !batch.is_empty() {
            self.write_synced(batch)?;
        }
        Ok(())
    }

    /// The private value committed to by `commitment` (32 bytes), with its salt, if this
    /// peer holds it.
    ///
    /// # Errors
    /// RocksDB failed, or the stored entry is shorter than a salt (corruption).
    pub fn private_value(
        &self,
        commitment: &[u8],
    ) -> Result<Option<crate::private_data::SaltedValue>> {
        // Absent from a ledger last written before private data existed, opened read-only.
        let Some(cf) = self.db.cf_handle(CF_PRIVATE) else {
            return Ok(None);
        };
        let Some(stored) = self.db.get_cf(cf, commitment)? else {
            return Ok(None);
        };
        let (salt, value) = stored
            .split_first_chunk::<{ medledger_crypto::PRIVATE_SALT_LEN }>()
            .ok_or_else(|| corrupt("private", "an entry shorter than its salt"))?;
        Ok(Some(crate::private_data::SaltedValue {
            salt: *salt,
            value: value.to_vec(),
        }))
    }

    /// Starts the thread that compacts purged private values out of the ledger's files: a
    /// RocksDB deletion only adds a tombstone, and the value stays in the write-ahead log and
    /// in table files until they are rewritten. After each block that purges values (an
    /// erasure's step, a revocation, a rotation), the thread flushes every column family (so
    /// the write-ahead logs that held the values, at their put and at their commit, are
    /// obsolete and deleted) and compacts the purged keys of `private`, and all of
    /// `private_pending`, to the bottom level (so no table file keeps them); so it does too
    /// after pending values expired (a value of a transaction that never committed). It runs
    /// beside the consensus thread, never in a block's write, at most once every
    /// [`PURGED_COMPACTION_INTERVAL`] (each run takes everything purged since the last, so a
    /// run of revocations costs one), and ends with the ledger. The values a block purged are
    /// marked in its own write (`to-compact/` in `meta`) until compacted, so a restart
    /// resumes them; RocksDB's compaction reports no failure, so "compacted" means run.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn compact_purged_in_background(self: &Arc<Self>) -> std::io::Result<()> {
        // Those a block purged before the last stop and not compacted yet.
        let mut left = Vec::new();
        for entry in self
            .db
            .prefix_iterator_cf(self.cf(CF_META), META_TO_COMPACT)
        {
            let Ok((key, _)) = entry else { break };
            let Some(rest) = key.strip_prefix(META_TO_COMPACT) else {
                break;
            };
            if let Ok(commitment) = <[u8; 32]>::try_from(rest) {
                left.push(commitment);
            }
        }
        if !left.is_empty() {
            self.purged_queue.add(&left, true);
        }
        let queue = self.purged_queue.clone();
        let ledger = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("purged-compaction".into())
            .spawn(move || {
                loop {
                    let taken = {
                        let mut waiting = queue.waiting.lock().unwrap_or_else(|p| p.into_inner());
                        while waiting.purged.is_empty() && !waiting.pending_deleted {
                            waiting = queue.wake.wait(waiting).unwrap_or_else(|p| p.into_inner());
                        }
                        let taken = std::mem::take(&mut *waiting);
                        queue.compacting.store(
                            taken.purged.len() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        taken
                    };
                    let Some(ledger) = ledger.upgrade() else {
                        return;
                    };
                    let compacted = ledger.compact_purged(&taken.purged);
                    // Back in the queue before the count drops, when not compacted: the
                    // count never reads low.
                    if !matches!(compacted, Ok(true)) {
                        queue.add(&taken.purged, true);
                    }
                    queue
                        .compacting
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    match compacted {
                        Ok(true) => tracing::info!(
                            values = taken.purged.len(),
                            "purged private values compacted out of the ledger's files"
                        ),
                        Ok(false) => tracing::info!(
                            values = taken.purged.len(),
                            "purged private values compacted while a reader's snapshot may \
                             keep them: compacted again later"
                        ),
                        Err(e) => {
                            tracing::warn!(
                                error = %e,
                                "purged private values not compacted yet: tried again later"
                            );
                        }
                    }
                    drop(ledger);
                    std::thread::sleep(PURGED_COMPACTION_INTERVAL);
                }
            })?;
        Ok(())
    }

    /// How many private values blocks purged whose bytes may still be in this ledger's files
    /// (write-ahead log, table files): waiting for [`Ledger::compact_purged_in_background`]'s
    /// next run (at most [`PURGED_COMPACTION_INTERVAL`] after the last), in the one under
    /// way, or left by a failed one. 0 when every purged value was compacted out, and in a
    /// ledger whose compaction thread does not run (a reader).
    pub fn purged_uncompacted(&self) -> u64 {
        self.purged_queue.uncompacted()
    }

    /// Flushes every column family and compacts `purged` out of `private`, and all of
    /// `private_pending`, down to the bottom level; then forgets them as to be compacted
    /// ([`Ledger::compact_purged_in_background`]) and returns true. A snapshot older than
    /// the purges (a query's view of the state, taken before the purge committed) keeps the
    /// version it sees through any compaction: while one is open, nothing is compacted, the
    /// values stay marked, and this returns false, to be tried again.
    ///
    /// # Errors
    /// RocksDB could not flush, read its oldest snapshot, or forget them.
    fn compact_purged(&self, purged: &[[u8; 32]]) -> Result<bool> {
        // Every purge of `purged` is at or below this sequence number (its block committed
        // before the purge was queued). A snapshot below it may see a value's put; RocksDB
        // copies the open snapshots when a compaction job starts, so the check comes first:
        // any snapshot taken later is at or above it and sees the deletions. With one open,
        // nothing is compacted now (no rewrite that would keep the bytes anyway).
        let purged_by = self.db.latest_sequence_number();
        // 0: no snapshot open.
        let oldest_snapshot = self
            .db
            .property_int_value("rocksdb.oldest-snapshot-sequence")?
            .unwrap_or(0);
        if oldest_snapshot != 0 && oldest_snapshot < purged_by {
            return Ok(false);
        }
        self.flush()?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        for commitment in purged {
            self.db.compact_range_cf_opt(
                self.cf(CF_PRIVATE),
                Some(commitment),
                Some(commitment),
                &options,
            );
        }
        self.db.compact_range_cf_opt(
            self.cf(CF_PRIVATE_PENDING),
            None::<&[u8]>,
            None::<&[u8]>,
            &options,
        );
        let mut done = WriteBatch::default();
        for commitment in purged {
            done.delete_cf(self.cf(CF_META), to_compact_key(commitment));
        }
        self.db.write(done)?;
        Ok(true)
    }

    /// Up to `limit` commitments of committed values this peer lacks
    /// ([`CF_PRIVATE_MISSING`]), in commitment order, after `after` (none: from the first),
    /// so that a caller walking them with a cursor reaches every one, however many it can
    /// never find.
    ///
    /// # Errors
    /// RocksDB failed, or an entry's key is not 32 bytes (corruption).
    pub fn missing_private(&self, after: Option<&[u8; 32]>, limit: usize) -> Result<Vec<[u8; 32]>> {
        let Some(cf) = self.db.cf_handle(CF_PRIVATE_MISSING) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mode = match after {
            Some(after) => rocksdb::IteratorMode::From(after, rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        for entry in self.db.iterator_cf(cf, mode) {
            if out.len() >= limit {
                break;
            }
            let (key, _) = entry?;
            let commitment = <[u8; 32]>::try_from(key.as_ref())
                .map_err(|_| corrupt("private_missing", "a key that is not 32 bytes"))?;
            if Some(&commitment) != after {
                out.push(commitment);
            }
        }
        Ok(out)
    }

    /// Stores `values` (commitment, salted value), each already checked against its
    /// commitment, that reconciliation brought: each only while it is still missing here
    /// (a block may have purged it since it was asked for), in one synced write. Returns
    /// how many were stored.
    ///
    /// # Errors
    /// RocksDB failed.
    pub fn store_reconciled(
        &self,
        values: &[([u8; 32], crate::private_data::SaltedValue)],
    ) -> Result<usize> {
        let _private = self.private_write.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let mut stored = 0;
        for (commitment, salted) in values {
            if self
                .db
                .get_cf(self.cf(CF_PRIVATE_MISSING), commitment)?
                .is_none()
            {
                continue;
            }
            batch.put_cf(self.cf(CF_PRIVATE), commitment, stored_value(salted));
            batch.delete_cf(self.cf(CF_PRIVATE_MISSING), commitment);
            stored += 1;
        }
        if stored > 0 {
            self.write_synced(batch)?;
        }
        Ok(stored)
    }

    /// Writes `entries` (the pending values of the transaction hashing to
    /// `transaction_hash`, held until `keep_until_ms`, for `creator`'s key) synced: done
    /// before this peer acknowledges them.
    ///
    /// # Errors
    /// RocksDB failed.
    pub fn put_pending_private(
        &self,
        transaction_hash: &[u8; 32],
        keep_until_ms: i64,
        creator: &[u8; 32],
        entries: &[([u8; 32], crate::private_data::SaltedValue)],
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (commitment, salted) in entries {
            let mut stored = Vec::with_capacity(8 + 32 + 32 + salted.value.len());
            stored.extend_from_slice(&keep_until_ms.to_be_bytes());
            stored.extend_from_slice(creator);
            stored.extend_from_slice(&salted.salt);
            stored.extend_from_slice(&salted.value);
            batch.put_cf(
                self.cf(CF_PRIVATE_PENDING),
                pending_key(transaction_hash, commitment),
                stored,
            );
        }
        self.write_synced(batch)
    }

    /// Deletes pending values (transaction hash, commitment) that expired (unsynced: one
    /// that comes back after a crash expires again).
    ///
    /// # Errors
    /// RocksDB failed.
    pub fn delete_pending_private(&self, keys: &[([u8; 32], [u8; 32])]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (transaction_hash, commitment) in keys {
            batch.delete_cf(
                self.cf(CF_PRIVATE_PENDING),
                pending_key(transaction_hash, commitment),
            );
        }
        self.db.write(batch)?;
        // Their bytes stay in the table files until compacted (a value of a transaction
        // that never committed may be an erased record's).
        self.purged_queue.add(&[], true);
        Ok(())
    }

    /// Every pending value on disk, for the pending store at start: (transaction hash,
    /// keep-until ms, creator key, commitment, salted value).
    ///
    /// # Errors
    /// RocksDB failed, or an entry is malformed (corruption).
    pub fn pending_private(&self) -> Result<Vec<crate::private_data::PendingEntry>> {
        let Some(cf) = self.db.cf_handle(CF_PRIVATE_PENDING) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, stored) = item?;
            let bad = || corrupt("private_pending", "a malformed entry");
            let (transaction_hash, commitment) = key
                .split_first_chunk::<32>()
                .and_then(|(t, c)| Some((*t, <[u8; 32]>::try_from(c).ok()?)))
                .ok_or_else(bad)?;
            let (keep_until, rest) = stored.split_first_chunk::<8>().ok_or_else(bad)?;
            let (creator, rest) = rest.split_first_chunk::<32>().ok_or_else(bad)?;
            let (salt, value) = rest.split_first_chunk::<32>().ok_or_else(bad)?;
            out.push(crate::private_data::PendingEntry {
                transaction_hash,
                keep_until_ms: i64::from_be_bytes(*keep_until),
                creator: *creator,
                commitment,
                value: crate::private_data::SaltedValue {
                    salt: *salt,
                    value: value.to_vec(),
                },
            });
        }
        Ok(out)
    }

    /// Writes block `commit.block` and all it changes in one synced batch, deleting the
    /// PBFT state keys `pbft_deletes` the block makes obsolete in the same write (a block
    /// that ends an epoch makes all of them obsolete: the next replicas start afresh),
    /// storing `private`, the private values of its valid transactions this peer holds
    /// (commitment, salted value), and deleting `taken_pending` (transaction hash,
    /// commitment) from the pending values on disk.
    pub fn commit_block(
        &self,
        commit: &BlockCommit,
        pbft_deletes: &[Vec<u8>],
        private: &[([u8; 32], crate::private_data::SaltedValue)],
        taken_pending: &[([u8; 32], [u8; 32])],
    ) -> Result<()> {
        let number = commit
            .block
            .header
            .as_ref()
            .map(|h| h.number)
            .ok_or_else(|| corrupt("commit", "block without header"))?;
        assert_eq!(number, self.height() + 1, "blocks commit in order");
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_BLOCKS),
            number.to_be_bytes(),
            commit.block.encode_to_vec(),
        );
        for (key, value, location) in &commit.state {
            match value {
                Some(v) => {
                    let mut stored = Vec::with_capacity(12 + v.len());
                    stored.extend_from_slice(&location.encode());
                    stored.extend_from_slice(v);
                    batch.put_cf(self.cf(CF_STATE), key.as_bytes(), stored);
                }
                None => batch.delete_cf(self.cf(CF_STATE), key.as_bytes()),
            }
        }
        for h in &commit.history {
            let mut stored = Vec::with_capacity(41 + h.value.as_ref().map_or(0, Vec::len));
            stored.extend_from_slice(&h.tx_id);
            stored.extend_from_slice(&h.time_s.to_be_bytes());
            match &h.value {
                Some(v) => {
                    stored.push(1);
                    stored.extend_from_slice(v);
                }
                None => stored.push(0),
            }
            batch.put_cf(self.cf(CF_HISTORY), history_key(&h.key, h.location), stored);
        }
        for (tx_id, location) in &commit.tx_index {
            batch.put_cf(self.cf(CF_TX_INDEX), tx_id, location.encode());
        }
        for (hash, location) in &commit.envelope_index {
            batch.put_cf(self.cf(CF_ENVELOPES), hash, location.encode());
        }
        for (hash, der) in &commit.certificates {
            batch.put_cf(self.cf(CF_CERTIFICATES), hash, der);
        }
        let mut last_sequence = None;
        for (serial, sequence) in &commit.revocations {
            let mut v = number.to_be_bytes().to_vec();
            v.extend_from_slice(&sequence.to_be_bytes());
            batch.put_cf(self.cf(CF_REVOCATIONS), serial, v);
            last_sequence = Some(*sequence);
        }
        if let Some(sequence) = last_sequence {
            batch.put_cf(
                self.cf(CF_META),
                META_REVOCATION_SEQUENCE,
                sequence.to_be_bytes(),
            );
        }
        for (sequence, signed) in &commit.revocation_records {
            batch.put_cf(self.cf(CF_META), revocation_record_key(*sequence), signed);
        }
        if let Some((sequence, value, envelope)) = &commit.configuration {
            batch.put_cf(self.cf(CF_META), META_CONFIGURATION, value);
            batch.put_cf(self.cf(CF_META), config_link_key(*sequence), envelope);
        }
        if commit.ends_epoch {
            batch.put_cf(self.cf(CF_META), META_EPOCH_BASE, number.to_be_bytes());
        }
        for key in pbft_deletes {
            batch.delete_cf(self.cf(CF_PBFT), key);
        }
        for (transaction_hash, commitment) in taken_pending {
            batch.delete_cf(
                self.cf(CF_PRIVATE_PENDING),
                pending_key(transaction_hash, commitment),
            );
        }
        for (commitment, salted) in private {
            batch.put_cf(self.cf(CF_PRIVATE), commitment, stored_value(salted));
        }
        // The values of its valid transactions this peer was not given: missing, until
        // reconciliation brings them (docs/adr/0017 §7).
        let held: std::collections::HashSet<&[u8; 32]> = private.iter().map(|(c, _)| c).collect();
        for of in &commit.private_data {
            for commitment in &of.commitments {
                if let Ok(commitment) = <[u8; 32]>::try_from(commitment.as_slice())
                    && !held.contains(&commitment)
                {
                    batch.put_cf(
                        self.cf(CF_PRIVATE_MISSING),
                        commitment,
                        number.to_be_bytes(),
                    );
                }
            }
        }
        // After the puts: a value stored and purged by the same block is gone, and no
        // longer missing; its bytes are to be compacted out of the files.
        for commitment in &commit.private_purges {
            batch.delete_cf(self.cf(CF_PRIVATE), commitment);
            batch.delete_cf(self.cf(CF_PRIVATE_MISSING), commitment);
            batch.put_cf(self.cf(CF_META), to_compact_key(commitment), []);
        }
        batch.put_cf(self.cf(CF_META), META_HEIGHT, number.to_be_bytes());
        {
            let _private = self.private_write.lock().unwrap_or_else(|p| p.into_inner());
            self.write_synced(batch)?;
        }
        if !commit.private_purges.is_empty() {
            self.purged_queue.add(&commit.private_purges, false);
        }
        let time = commit.block.header.as_ref().map_or(i64::MIN, |h| h.time_ms);
        self.head_time_ms.store(time, Ordering::SeqCst);
        self.height.store(number, Ordering::SeqCst);
        Ok(())
    }

    /// Writes every column family's memtable to table files, synced (what RocksDB does by
    /// itself as they fill). The fault harness uses it to give a peer's ledger table files
    /// to damage.
    ///
    /// # Errors
    /// RocksDB could not write them.
    pub fn flush(&self) -> Result<()> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }

    /// Writes `puts` into column family `cf` and flushes every column family to table
    /// files (tests that damage tables).
    #[cfg(test)]
    pub(crate) fn put_and_flush(&self, cf: &str, puts: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in puts {
            batch.put_cf(self.cf(cf), k, v);
        }
        self.write_synced(batch)?;
        self.flush()
    }

    /// Writes PBFT protocol state (puts and deletes) in one synced batch.
    pub fn write_pbft(&self, puts: Vec<(Vec<u8>, Vec<u8>)>, deletes: Vec<Vec<u8>>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in puts {
            batch.put_cf(self.cf(CF_PBFT), k, v);
        }
        for k in deletes {
            batch.delete_cf(self.cf(CF_PBFT), k);
        }
        self.write_synced(batch)
    }

    /// Every (key, value) of the PBFT column family.
    pub fn read_pbft(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PBFT), IteratorMode::Start) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// Reads of the world state and key history through a snapshot: one consistent block.
pub struct StateView<'a> {
    ledger: &'a Ledger,
    snapshot: Snapshot<'a>,
}

impl<'a> StateView<'a> {
    pub fn new(ledger: &'a Ledger) -> StateView<'a> {
        StateView {
            ledger,
            snapshot: ledger.snapshot(),
        }
    }

    /// The height this view reflects.
    pub fn height(&self) -> Result<u64> {
        self.snapshot
            .get_cf(self.ledger.cf(CF_META), META_HEIGHT)?
            .and_then(|b| be_u64(&b))
            .ok_or_else(|| corrupt("meta", "no height"))
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self
            .snapshot
            .get_cf(self.ledger.cf(CF_STATE), key.as_bytes())?
        {
            Some(stored) if stored.len() >= 12 => Ok(Some(stored[12..].to_vec())),
            Some(_) => Err(corrupt("state", format!("short value under {key:?}"))),
            None => Ok(None),
        }
    }

    /// Keys ≥ `start` (and < `end` if given) that start with `prefix`, ascending, at most
    /// `limit`.
    pub fn scan(
        &self,
        prefix: &str,
        start: &str,
        end: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let mut options = ReadOptions::default();
        if let Some(end) = end {
            options.set_iterate_upper_bound(end.as_bytes().to_vec());
        }
        let iter = self.snapshot.iterator_cf_opt(
            self.ledger.cf(CF_STATE),
            options,
            IteratorMode::From(start.as_bytes(), Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = String::from_utf8(k.to_vec()).map_err(|e| corrupt("state", e))?;
            if v.len() < 12 {
                return Err(corrupt("state", format!("short value under {key:?}")));
            }
            out.push((key, v[12..].to_vec()));
        }
        Ok(out)
    }

    /// Committed modifications of `key`, oldest first, at most `limit`.
    pub fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>> {
        let mut prefix = key.as_bytes().to_vec();
        prefix.push(0);
        let iter = self.snapshot.iterator_cf(
            self.ledger.cf(CF_HISTORY),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let location = TxLocation::decode(&k[prefix.len()..])
                .ok_or_else(|| corrupt("history", "bad key"))?;
            if v.len() < 41 {
                return Err(corrupt("history", "short value"));
            }
            let tx_id: [u8; 32] = v[..32].try_into().expect("length checked");
            let time_s = i64::from_be_bytes(v[32..40].try_into().expect("length checked"));
            let value = (v[40] == 1).then(|| v[41..].to_vec());
            out.push(HistoryEntry {
                key: key.to_string(),
                location,
                tx_id,
                time_s,
                value,
            });
        }
        Ok(out)
    }
}

/// Writes applied to a block so far, for [`WriteSet`] bookkeeping.
pub fn merge_writes(into: &mut WriteSet, from: &WriteSet) {
    for (k, v) in from {
        into.insert(k.clone(), v.clone());
    }
}

impl Ledger {
    /// Opens a ledger for reading only, also while its peer runs: as a RocksDB secondary
    /// instance (a plain read-only open can race the live peer's compactions), with its own
    /// small scratch directory under the system's temporary directory.
    pub fn open_read_only(dir: &Path) -> Result<Ledger> {
        let mut options = Options::default();
        options.set_max_open_files(-1);
        let scratch = std::env::temp_dir().join(format!(
            "medledger-ledger-reader-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        // A ledger last written before a column family existed (one added since, such as
        // CF_PRIVATE) opens without it: a secondary cannot create one.
        let present = DB::list_cf(&options, dir)?;
        let cfs: Vec<&str> = ALL_CFS
            .into_iter()
            .filter(|name| present.iter().any(|p| p == name))
            .collect();
        let db = DB::open_cf_as_secondary(&options, dir, scratch.as_path(), cfs)
            .and_then(|db| db.try_catch_up_with_primary().map(|()| db))
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&scratch);
            })?;
        let network_id: [u8; 32] = db
            .get_cf(
                db.cf_handle(CF_META).expect("column family"),
                META_NETWORK_ID,
            )?
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("meta", "no network id"))?;
        let ledger = Ledger {
            db,
            height: AtomicU64::new(0),
            head_time_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            network_id,
            scratch: Some(scratch),
            private_write: std::sync::Mutex::new(()),
            purged_queue: Arc::default(),
        };
        ledger.load_height()?;
        Ok(ledger)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Whether any file under `dir` holds `needle`, byte for byte.
    fn on_disk(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                return on_disk(&path, needle);
            }
            std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
    }

    /// A fresh ledger of the fixture network (`fuzz/fixtures/genesis.pb`).
    pub(crate) fn fixture_ledger() -> (tempfile::TempDir, Ledger) {
        let bytes = std::fs::read(format!(
            "{}/../fuzz/fixtures/genesis.pb",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let genesis =
            crate::genesis::Genesis::from_block(v1::Block::decode(bytes.as_slice()).unwrap())
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), &genesis).unwrap();
        (dir, ledger)
    }

    /// Commits the next block of `ledger`: a valid transaction with the values `stored`
    /// (given to this peer) and `missing` (not given), purging `purged`.
    pub(crate) fn commit_private(
        ledger: &Ledger,
        stored: &[([u8; 32], crate::private_data::SaltedValue)],
        missing: &[[u8; 32]],
        purged: &[[u8; 32]],
    ) {
        let commit = BlockCommit {
            block: v1::Block {
                header: Some(v1::BlockHeader {
                    number: ledger.height() + 1,
                    ..Default::default()
                }),
                ..Default::default()
            },
            private_data: vec![medledger_execution::state::PrivateDataOf {
                transaction_hash: [9; 32],
                commitments: stored
                    .iter()
                    .map(|(c, _)| c)
                    .chain(missing)
                    .map(|c| c.to_vec())
                    .collect(),
            }],
            private_purges: purged.to_vec(),
            ..Default::default()
        };
        ledger.commit_block(&commit, &[], stored, &[]).unwrap();
    }

    #[test]
    fn a_purged_value_is_compacted_out_of_every_file() {
        let (dir, ledger) = fixture_ledger();
        let salt = [3; 32];
        let value: Vec<u8> = (0..80u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        let commitment = medledger_crypto::private_commitment(&salt, &value);
        let salted = crate::private_data::SaltedValue {
            salt,
            value: value.clone(),
        };
        commit_private(&ledger, &[(commitment, salted)], &[], &[]);
        // In a table file, as after any flush (the positive control of the search).
        ledger.flush().unwrap();
        assert!(on_disk(dir.path(), &value));
        // Purged: deleted from the column family at once; its bytes stay in the table file
        // until the compaction, and are nowhere after it.
        commit_private(&ledger, &[], &[], &[commitment]);
        assert!(ledger.private_value(&commitment).unwrap().is_none());
        ledger.flush().unwrap();
        assert!(
            on_disk(dir.path(), &value),
            "a deletion alone leaves the bytes"
        );
        assert!(ledger.compact_purged(&[commitment]).unwrap());
        assert!(
            !on_disk(dir.path(), &value),
            "the purged value is still on disk"
        );
        // No longer marked as to be compacted.
        assert_eq!(
            ledger
                .db
                .prefix_iterator_cf(ledger.cf(CF_META), META_TO_COMPACT)
                .filter_map(|e| e.ok())
                .filter(|(k, _)| k.starts_with(META_TO_COMPACT))
                .count(),
            0
        );
    }

    #[test]
    fn purged_values_are_counted_until_the_background_compaction_ran() {
        let (dir, ledger) = fixture_ledger();
        let ledger = Arc::new(ledger);
        let value = vec![0x5a; 80];
        let commitment = medledger_crypto::private_commitment(&[4; 32], &value);
        let salted = crate::private_data::SaltedValue {
            salt: [4; 32],
            value: value.clone(),
        };
        commit_private(&ledger, &[(commitment, salted)], &[], &[]);
        assert_eq!(ledger.purged_uncompacted(), 0, "nothing purged yet");
        commit_private(&ledger, &[], &[], &[commitment]);
        assert!(ledger.purged_uncompacted() >= 1, "purged, not compacted");
        ledger.compact_purged_in_background().unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while ledger.purged_uncompacted() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(ledger.purged_uncompacted(), 0, "compacted");
        assert!(!on_disk(dir.path(), &value), "and out of every file");
    }

    #[test]
    fn a_snapshot_older_than_the_purge_keeps_the_values_marked_until_it_closes() {
        let (dir, ledger) = fixture_ledger();
        let value: Vec<u8> = (0..80u8)
            .map(|i| i.wrapping_mul(53).wrapping_add(7))
            .collect();
        let commitment = medledger_crypto::private_commitment(&[6; 32], &value);
        let salted = crate::private_data::SaltedValue {
            salt: [6; 32],
            value: value.clone(),
        };
        commit_private(&ledger, &[(commitment, salted)], &[], &[]);
        // A query's view, opened before the purge commits, is still open at the compaction.
        let snapshot = ledger.db.snapshot();
        commit_private(&ledger, &[], &[], &[commitment]);
        assert!(
            !ledger.compact_purged(&[commitment]).unwrap(),
            "a compaction under an older snapshot is not taken for done"
        );
        assert!(on_disk(dir.path(), &value), "the snapshot keeps the bytes");
        drop(snapshot);
        assert!(ledger.compact_purged(&[commitment]).unwrap());
        assert!(
            !on_disk(dir.path(), &value),
            "gone once the snapshot closed"
        );
    }
}
