//! Verifying a ledger from its blocks alone, as an auditor does: nothing a peer says is
//! trusted but the genesis block the auditor pins.
//!
//! For each block, in order: the number follows, `prev_hash` is the hash of the previous
//! header, `tx_root` is the Merkle root of its envelopes, the commit certificate holds a
//! quorum of valid commit signatures from distinct peers of the configuration in force over
//! the block's batch (signed in their epoch, docs/adr/0011), and
//! re-executing the batch — every transaction's signature, certificate, window and the
//! chaincode, exactly as a peer runs them — gives the same header and the same results. The
//! re-execution runs on a [`MemoryState`] of its own, so the final world state is the one
//! the blocks imply, and [`Auditor::stored_objects`] lists what the object store must hold.
//! Results are compared by outcome (status, code, result, events), never by their words.
//!
//! Format 2 blocks (docs/adr/0009) are also checked for their header's format, result root
//! and configuration against re-execution, and every block vote a block carries must be a
//! valid vote of a peer of the configuration in force on that block's header (votes are metadata: a block may
//! carry none, but never a wrong one).

use std::collections::BTreeMap;
use std::sync::Arc;

use medledger_proto::v1;
use prost::Message;

use crate::block::{header_hash, tx_root};
use crate::certified::{batch_of, check_block_certificate};
use crate::config::EpochBase;
use crate::execute::{CertifiedBatch, execute_block};
use crate::genesis::Genesis;
use crate::memory::MemoryState;
use crate::state::{StateError, WorldState};
use crate::validate::Validator;

/// What the auditor found about one block. No problems: the block verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockVerdict {
    pub number: u64,
    pub transactions: usize,
    pub valid_transactions: usize,
    pub problems: Vec<String>,
    /// Set once re-execution has diverged: later state roots cannot be re-derived.
    pub state_unchecked: bool,
    /// No header, not the next number, no readable batch or no valid commit certificate:
    /// nothing after this block can be checked.
    pub ends_chain: bool,
}

impl BlockVerdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An object the ledger says the store holds (or, once erased, must no longer hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedObject {
    pub path: String,
    pub sha256: Vec<u8>,
    pub size: u64,
    /// Erased with its patient's record: the object must be gone.
    pub erased: bool,
    /// Erased, and still in the erasure queue: the storage gateway has not confirmed
    /// deleting it (docs/adr/0015).
    pub queued: bool,
}

/// An erased record, as the re-executed state holds it (docs/adr/0015).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// The record's pseudonym, lowercase hex.
    pub pseudonym: String,
    /// Consensus time (Unix seconds) of the erasure.
    pub erased_at: i64,
    /// When its purge completed (Unix seconds); `None` while it is under way (key material
    /// and file keys of the record are still in the state).
    pub purged_at: Option<i64>,
    /// Once the purge says it completed: how many of the record's state entries still hold
    /// key material (an item not tombstoned or with its file key or commitment, a
    /// permission with its envelope or commitment, a category key, a key chain link, its
    /// private data, a copy of it in a study not tombstoned or with its wrapped file key),
    /// found by scanning them rather than trusting the purge's cursor. 0
    /// for a purge done as it should be; also 0 while it is under way (not looked at).
    pub key_material_left: usize,
    /// The first [`LISTED_LEFT`] of those entries' state keys.
    pub key_material_keys: Vec<String>,
}

/// Most state keys an [`Erasure`] lists of those still holding key material.
pub const LISTED_LEFT: usize = 16;

/// Verifies a chain block by block against a pinned genesis, re-executing it in memory.
pub struct Auditor {
    genesis: Arc<Genesis>,
    state: MemoryState,
    validator: Validator,
    /// The last block's header as the auditor received it (links are checked against it).
    previous: v1::BlockHeader,
    /// The first block whose re-execution did not match.
    diverged_at: Option<u64>,
    /// Where the epoch of the replicas whose certificates the next block carries started
    /// (docs/adr/0011): the genesis, then each block that changed the peers.
    epoch: EpochBase,
}

impl Auditor {
    /// Starts from `genesis` (the one the auditor pins), at height 0.
    pub fn new(genesis: Genesis) -> Auditor {
        let genesis = Arc::new(genesis);
        let state = MemoryState::new(&genesis);
        Auditor {
            validator: Validator::new(genesis.clone()),
            previous: genesis.block.header.clone().unwrap_or_default(),
            genesis,
            state,
            diverged_at: None,
            epoch: EpochBase::default(),
        }
    }

    pub fn network_id(&self) -> [u8; 32] {
        self.genesis.network_id
    }

    /// The number of the last block checked (0: none yet).
    pub fn height(&self) -> u64 {
        self.state.height()
    }

    /// Verifies the next block: its problems are in the verdict.
    ///
    /// # Errors
    /// Only a fault of the auditor's own state (never of the block), as [`StateError`].
    pub fn check(&mut self, block: &v1::Block) -> Result<BlockVerdict, StateError> {
        let expected_number = self.state.height().saturating_add(1);
        let mut verdict = BlockVerdict {
            number: block.header.as_ref().map_or(expected_number, |h| h.number),
            transactions: block.envelopes.len(),
            valid_transactions: block
                .results
                .iter()
                .filter(|r| r.status == v1::TxStatus::Valid as i32)
                .count(),
            problems: Vec::new(),
            state_unchecked: self.diverged_at.is_some(),
            ends_chain: false,
        };
        let problems = &mut verdict.problems;
        let Some(header) = &block.header else {
            problems.push("no header".into());
            verdict.ends_chain = true;
            return Ok(verdict);
        };
        if header.number != expected_number {
            problems.push(format!(
                "numbered {}, but block {expected_number} comes next",
                header.number
            ));
            verdict.ends_chain = true;
            return Ok(verdict);
        }
        if header.prev_hash != header_hash(&self.previous) {
            problems.push(format!(
                "prev_hash does not match the hash of block {}'s header: the chain is broken here",
                expected_number - 1
            ));
        }
        if header.tx_root != tx_root(&block.envelopes) {
            problems.push("tx_root is not the Merkle root of the block's transactions".into());
        }
        let batch = match batch_of(block) {
            Ok(batch) => batch,
            Err(why) => {
                problems.push(why);
                verdict.ends_chain = true;
                return Ok(verdict);
            }
        };
        // The replicas that ordered this block: those of the configuration in force, in the
        // epoch that started at the last membership change.
        let configuration = self.validator.configuration_in_force(&self.state)?;
        let commits = match check_block_certificate(
            &configuration,
            self.epoch,
            header.number,
            &batch,
            block.certificate.as_ref(),
        ) {
            Ok(commits) => commits,
            Err(why) => {
                problems.push(why);
                // Nothing after an uncertified block can be trusted, and a peer serving
                // uncertified blocks could serve them without end: the chain ends here.
                verdict.ends_chain = true;
                return Ok(verdict);
            }
        };

        let hash = header_hash(header);
        for (i, vote) in block.votes.iter().enumerate() {
            if let Err(why) = crate::proof::check_vote(&configuration, header.number, &hash, vote) {
                problems.push(format!("block vote {i}: {why}"));
            }
        }
        let certified = CertifiedBatch {
            seq: header.number,
            batch: &batch,
            commits: &commits,
        };
        let commit = execute_block(&self.state, &self.validator, &certified)?;
        let ours = commit.block.header.clone().unwrap_or_default();
        if self.diverged_at.is_none() {
            let mut diverged = false;
            if ours.state_root != header.state_root {
                problems.push(
                    "state_root differs from re-execution: the block's effects were altered".into(),
                );
                diverged = true;
            }
            if ours.format != header.format {
                problems.push(format!(
                    "header format {} where the network's ledger format gives {}",
                    header.format, ours.format
                ));
            }
            if ours.result_root != header.result_root {
                problems.push(
                    "result_root differs from re-execution: a recorded outcome was altered".into(),
                );
            }
            if ours.config != header.config {
                problems.push("config names another configuration than the one in force".into());
            }
            if ours.time_ms != header.time_ms {
                problems.push(format!(
                    "time {} ms differs from the consensus time {} ms of its batch",
                    header.time_ms, ours.time_ms
                ));
            }
            if block.results.len() != commit.block.results.len() {
                problems.push(format!(
                    "{} results for {} transactions",
                    block.results.len(),
                    commit.block.results.len()
                ));
                diverged = true;
            }
            for (i, (stored, again)) in block.results.iter().zip(&commit.block.results).enumerate()
            {
                if !same_outcome(stored, again) {
                    problems.push(format!(
                        "transaction {i}: the block records {} ({}), re-execution gives {} ({})",
                        status_name(stored.status),
                        words(&stored.message),
                        status_name(again.status),
                        words(&again.message),
                    ));
                    diverged = true;
                }
            }
            if diverged {
                self.diverged_at = Some(header.number);
            }
        }
        self.state.apply(&commit)?;
        if commit.ends_epoch {
            self.epoch = EpochBase::after(header);
        }
        self.previous = header.clone();
        Ok(verdict)
    }

    /// The block where re-execution first diverged, if any.
    pub fn diverged_at(&self) -> Option<u64> {
        self.diverged_at
    }

    /// Every clinical file and study copy the re-executed state references.
    ///
    /// # Errors
    /// [`StateError`] when a stored value does not decode (the re-executed chaincode wrote
    /// it, so this would be a chaincode fault).
    pub fn stored_objects(&self) -> Result<Vec<ExpectedObject>, StateError> {
        let view = &self.state;
        let mut out = Vec::new();
        let corrupt = |key: &str, e: prost::DecodeError| StateError(format!("{key}: {e}"));
        for (prefix, study) in [("patient/", false), ("study-item/", true)] {
            each_under(view, prefix, |key, value| {
                let object = if study {
                    v1::StudyItem::decode(value.as_slice()).map(|i| ExpectedObject {
                        path: i.path,
                        sha256: i.sha256,
                        size: i.size,
                        erased: i.tombstoned,
                        queued: false,
                    })
                } else if key.split('/').nth(2) == Some("item") {
                    v1::ClinicalItem::decode(value.as_slice()).map(|i| ExpectedObject {
                        path: i.path,
                        sha256: i.sha256,
                        size: i.size,
                        erased: i.tombstoned,
                        queued: false,
                    })
                } else {
                    return Ok(());
                };
                out.push(object.map_err(|e| corrupt(&key, e))?);
                Ok(())
            })?;
        }
        for object in out.iter_mut().filter(|o| o.erased) {
            let key = medledger_chaincode::keys::object_deletion(&object.path);
            object.queued = view.get(&key)?.is_some();
        }
        Ok(out)
    }
}

impl Auditor {
    /// Every erased record in the re-executed state, in pseudonym order, with when its
    /// purge completed.
    ///
    /// # Errors
    /// The state cannot be read, or holds a record that does not decode.
    pub fn erasures(&self) -> Result<Vec<Erasure>, StateError> {
        let view = &self.state;
        let mut out = Vec::new();
        let prefix = "patient/";
        each_under(view, prefix, |key, value| {
            // The record itself (`patient/{P}`), not what lies under it.
            let Some(pseudonym) = key.strip_prefix(prefix).filter(|p| !p.contains('/')) else {
                return Ok(());
            };
            let record = v1::PatientRecord::decode(value.as_slice())
                .map_err(|e| StateError(format!("{key}: {e}")))?;
            if record.erased {
                let under_way = view
                    .get(&medledger_chaincode::keys::purge_cursor(pseudonym))?
                    .is_some();
                out.push(Erasure {
                    pseudonym: pseudonym.to_string(),
                    erased_at: record.erased_at,
                    purged_at: (!under_way).then_some(record.purged_at),
                    key_material_left: 0,
                    key_material_keys: Vec::new(),
                });
            }
            Ok(())
        })?;
        let copies = if out.iter().any(|e| e.purged_at.is_some()) {
            unpurged_study_copies(view)?
        } else {
            BTreeMap::new()
        };
        for erasure in out.iter_mut().filter(|e| e.purged_at.is_some()) {
            let (mut left, mut keys) = key_material_left(view, &erasure.pseudonym)?;
            for copy in copies.get(&erasure.pseudonym).into_iter().flatten() {
                left = left.saturating_add(1);
                if keys.len() < LISTED_LEFT {
                    keys.push(copy.clone());
                }
            }
            erasure.key_material_left = left;
            erasure.key_material_keys = keys;
        }
        Ok(out)
    }
}

/// Study copies not purged (not tombstoned, or still holding a wrapped file key or its
/// commitment), by the
/// record they came from (pseudonym, lowercase hex): the copy's own source
/// (`study-item-source/…`), else, for copies made before copies had one, the study
/// pseudonym's (`study-source/…`). One scan for every erasure.
///
/// # Errors
/// The state cannot be read, or holds a copy that does not decode.
fn unpurged_study_copies(view: &MemoryState) -> Result<BTreeMap<String, Vec<String>>, StateError> {
    use medledger_chaincode::keys;
    let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    each_under(view, "study-item/", |key, value| {
        let copy = v1::StudyItem::decode(value.as_slice())
            .map_err(|e| StateError(format!("{key}: {e}")))?;
        if copy.tombstoned && copy.wrapped_dek.is_empty() && copy.wrapped_dek_commitment.is_empty()
        {
            return Ok(());
        }
        let mut parts = key
            .strip_prefix("study-item/")
            .unwrap_or_default()
            .splitn(3, '/');
        let (Some(study), Some(study_pseudonym), Some(item)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Ok(());
        };
        let source = match view.get(&keys::study_item_source(study, study_pseudonym, item))? {
            Some(source) => Some(source),
            None => view.get(&keys::study_source(study, study_pseudonym))?,
        };
        if let Some(source) = source {
            by_source
                .entry(String::from_utf8_lossy(&source).into_owned())
                .or_default()
                .push(key);
        }
        Ok(())
    })?;
    Ok(by_source)
}

/// The state entries of record `hex` (pseudonym, lowercase hex) that still hold key
/// material, as [`Erasure::key_material_left`] counts them: (how many, the first
/// [`LISTED_LEFT`] keys).
///
/// # Errors
/// The state cannot be read, or holds an item or permission that does not decode.
fn key_material_left(view: &MemoryState, hex: &str) -> Result<(usize, Vec<String>), StateError> {
    use medledger_chaincode::keys;
    let mut count = 0usize;
    let mut listed = Vec::new();
    let mut note = |key: String| {
        count = count.saturating_add(1);
        if listed.len() < LISTED_LEFT {
            listed.push(key);
        }
    };
    fn decode<M: Message + Default>(key: &str, value: &[u8]) -> Result<M, StateError> {
        M::decode(value).map_err(|e| StateError(format!("{key}: {e}")))
    }
    each_under(view, &keys::items_prefix(hex), |key, value| {
        let item: v1::ClinicalItem = decode(&key, &value)?;
        if !item.tombstoned
            || !item.wrapped_dek.is_empty()
            || !item.wrapped_dek_commitment.is_empty()
        {
            note(key);
        }
        Ok(())
    })?;
    for prefix in [
        keys::permissions_prefix(hex),
        keys::ended_permissions_prefix(hex),
    ] {
        each_under(view, &prefix, |key, value| {
            let permission: v1::Permission = decode(&key, &value)?;
            if !permission.key_envelope.is_empty() || !permission.key_envelope_commitment.is_empty()
            {
                note(key);
            }
            Ok(())
        })?;
    }
    for prefix in [keys::category_keys_prefix(hex), keys::key_chain_prefix(hex)] {
        each_under(view, &prefix, |key, _| {
            note(key);
            Ok(())
        })?;
    }
    let private = keys::private_data(hex);
    if view.get(&private)?.is_some() {
        note(private);
    }
    Ok((count, listed))
}

/// Calls `visit` on every entry of `view` under `prefix`, a page of 1,024 at a time, in key
/// order.
fn each_under(
    view: &MemoryState,
    prefix: &str,
    mut visit: impl FnMut(String, Vec<u8>) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let mut start = prefix.to_string();
    loop {
        let page = view.scan(prefix, &start, None, 1024)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        start = format!("{last}\0");
        for (key, value) in page {
            visit(key, value)?;
        }
    }
}

/// A result's words as the report may print them: a block's text is a peer's, so control
/// characters (terminal escapes) are escaped.
fn words(message: &str) -> String {
    if message.is_empty() {
        "ok".into()
    } else {
        message.escape_debug().to_string()
    }
}

fn status_name(status: i32) -> &'static str {
    v1::TxStatus::try_from(status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// Whether two results record the same outcome: status, code, result, events, creator,
/// function and id — never the message, which is words for people (a newer peer may word
/// a refusal differently; the block it verifies is no less valid).
fn same_outcome(stored: &v1::TxResult, again: &v1::TxResult) -> bool {
    let outcome = |r: &v1::TxResult| v1::TxResult {
        message: String::new(),
        ..r.clone()
    };
    outcome(stored) == outcome(again)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BlockCommit, TxLocation};
    use medledger_chaincode::keys;

    /// A state at height 1 holding `entries`.
    fn state_of(entries: Vec<(String, Vec<u8>)>) -> MemoryState {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/genesis.pb");
        let block = v1::Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
        let mut state = MemoryState::new(&Genesis::from_block(block).unwrap());
        let at = TxLocation { block: 1, index: 0 };
        let commit = BlockCommit {
            block: v1::Block {
                header: Some(v1::BlockHeader {
                    number: 1,
                    ..Default::default()
                }),
                ..Default::default()
            },
            state: entries.into_iter().map(|(k, v)| (k, Some(v), at)).collect(),
            ..Default::default()
        };
        state.apply(&commit).unwrap();
        state
    }

    /// A purge said complete is checked entry by entry: what still holds key material is
    /// counted and named, what the purge cleared is not, and another record's is not looked at.
    #[test]
    fn key_material_left_after_a_purge_is_found_by_scanning() {
        let (p, other) = ("aa", "bb");
        let item = |tombstoned: bool, commitment: Vec<u8>| {
            v1::ClinicalItem {
                tombstoned,
                wrapped_dek_commitment: commitment,
                ..Default::default()
            }
            .encode_to_vec()
        };
        let permission = |commitment: Vec<u8>| {
            v1::Permission {
                key_envelope_commitment: commitment,
                ..Default::default()
            }
            .encode_to_vec()
        };
        let state = state_of(vec![
            // Cleared as the purge clears: not counted.
            (keys::item(p, "done"), item(true, Vec::new())),
            (
                keys::permission(p, "dr.a", "perm-1"),
                permission(Vec::new()),
            ),
            // Left: an item not tombstoned, one tombstoned with its commitment, a permission
            // with its envelope's commitment, an ended one, a category key, a link, the
            // record's private data.
            (keys::item(p, "live"), item(false, Vec::new())),
            (keys::item(p, "keyed"), item(true, vec![1; 32])),
            (
                keys::permission(p, "dr.b", "perm-2"),
                permission(vec![2; 32]),
            ),
            (
                keys::ended_permission(p, "dr.c", "perm-3"),
                permission(vec![3; 32]),
            ),
            (keys::category_key(p, "lab"), vec![4]),
            (keys::key_chain_link(p, "lab", 1), vec![5; 32]),
            (keys::private_data(p), vec![6]),
            // Another record's: never counted for this one.
            (keys::item(other, "live"), item(false, Vec::new())),
            (keys::category_key(other, "lab"), vec![7]),
        ]);
        let (count, listed) = key_material_left(&state, p).unwrap();
        assert_eq!(count, 7, "{listed:?}");
        assert!(listed.contains(&keys::item(p, "live")));
        assert!(listed.contains(&keys::private_data(p)));
        assert!(!listed.contains(&keys::item(p, "done")));
        assert!(
            listed
                .iter()
                .all(|k| k.starts_with(&format!("patient/{p}/")))
        );
        let (none, _) = key_material_left(&state, "cc").unwrap();
        assert_eq!(none, 0);
        // Study copies: by their own source, else (older copies) by the study pseudonym's.
        let copy = |tombstoned: bool, wrapped: &[u8]| {
            v1::StudyItem {
                tombstoned,
                wrapped_dek: wrapped.to_vec(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        // Format 6: a tombstoned copy still holding the commitment to its private file key.
        let committed = v1::StudyItem {
            tombstoned: true,
            wrapped_dek_commitment: vec![7; 32],
            ..Default::default()
        }
        .encode_to_vec();
        let copies = state_of(vec![
            (keys::study_item("s1", "sp", "kept"), copy(false, b"k")),
            (
                keys::study_item_source("s1", "sp", "kept"),
                p.as_bytes().to_vec(),
            ),
            (keys::study_item("s1", "sp", "keyed"), copy(true, b"k")),
            (
                keys::study_item_source("s1", "sp", "keyed"),
                p.as_bytes().to_vec(),
            ),
            (keys::study_item("s1", "sp", "committed"), committed),
            (
                keys::study_item_source("s1", "sp", "committed"),
                p.as_bytes().to_vec(),
            ),
            (keys::study_item("s1", "sp", "done"), copy(true, b"")),
            (
                keys::study_item_source("s1", "sp", "done"),
                p.as_bytes().to_vec(),
            ),
            (keys::study_item("s1", "sp", "theirs"), copy(false, b"k")),
            (
                keys::study_item_source("s1", "sp", "theirs"),
                other.as_bytes().to_vec(),
            ),
            (keys::study_item("s2", "old", "legacy"), copy(false, b"k")),
            (keys::study_source("s2", "old"), p.as_bytes().to_vec()),
        ]);
        let by_source = unpurged_study_copies(&copies).unwrap();
        assert_eq!(
            by_source[p],
            vec![
                keys::study_item("s1", "sp", "committed"),
                keys::study_item("s1", "sp", "kept"),
                keys::study_item("s1", "sp", "keyed"),
                keys::study_item("s2", "old", "legacy"),
            ]
        );
        assert_eq!(
            by_source[other],
            vec![keys::study_item("s1", "sp", "theirs")]
        );
        // An entry that does not decode is an error, not a pass.
        let broken = state_of(vec![(keys::item(p, "x"), vec![0xff; 3])]);
        assert!(key_material_left(&broken, p).is_err());
    }
}
