//! `medledger ledger verify`: an auditor's check of the whole ledger and of every stored
//! object against it. Blocks come from a peer over gRPC or from a peer's data directory on
//! disk; they are checked by [`medledger_execution::audit::Auditor`] against a pinned genesis
//! block; objects are read straight from the object store (the auditor's own read access),
//! never through the gateway.

use std::path::Path;

use futures_util::StreamExt;
use medledger_execution::audit::{Auditor, BlockVerdict, ExpectedObject};
use medledger_execution::genesis::Genesis;
#[cfg(feature = "data-dir")]
use medledger_peer::ledger::Ledger;
use medledger_proto::v1;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

use medledger_sdk::error::ClientError;
use medledger_sdk::peer::PeerSet;

/// How long one peer may take to answer one call for blocks before it is passed over.
pub const BLOCKS_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Where the blocks come from.
pub enum BlockSource<'a> {
    /// Peer `index` of a connected set, over gRPC. `ledger`: the auditor asked for the
    /// network's ledger, not this peer's copy (`--as-served` not given): a block it serves that f+1
    /// peers' votes do not cover is verified from another peer's proven copy and named in
    /// the report ([`Report::substituted`]). Otherwise its copy is verified as served.
    Peer {
        peers: &'a PeerSet,
        index: usize,
        ledger: bool,
    },
    /// A peer's RocksDB data directory (read-only; the peer may be running or stopped).
    #[cfg(feature = "data-dir")]
    DataDir(Ledger),
}

impl BlockSource<'_> {
    /// Blocks `from..` (at most `limit`), in order; empty past the end.
    async fn blocks(&self, from: u64, limit: u32) -> Result<Vec<v1::Block>, ClientError> {
        match self {
            BlockSource::Peer { peers, index, .. } => Ok(tokio::time::timeout(
                BLOCKS_CALL_TIMEOUT,
                peers
                    .peer(*index)
                    .get_blocks(v1::GetBlocksRequest { from, limit }),
            )
            .await
            .map_err(|_| {
                ClientError::Protocol(format!(
                    "the peer served no blocks from {from} within {} s",
                    BLOCKS_CALL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(ClientError::from_ledger_status)?
            .into_inner()
            .blocks),
            #[cfg(feature = "data-dir")]
            BlockSource::DataDir(ledger) => {
                let mut out = Vec::new();
                for number in from..from + u64::from(limit) {
                    match ledger
                        .block(number)
                        .map_err(|e| ClientError::Protocol(format!("block {number}: {e}")))?
                    {
                        Some(block) => out.push(block),
                        None => break,
                    }
                }
                Ok(out)
            }
        }
    }

    /// The genesis block this source holds.
    pub async fn genesis(&self) -> Result<Genesis, ClientError> {
        let block = self
            .blocks(0, 1)
            .await?
            .pop()
            .ok_or_else(|| ClientError::Protocol("the source has no genesis block".into()))?;
        Genesis::from_block(block).map_err(|e| ClientError::Protocol(format!("genesis: {e}")))
    }
}

/// What became of one object the ledger references (or one it does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectState {
    Ok,
    Missing,
    /// Present but not the bytes the ledger hashed.
    Tampered(String),
    /// Its patient's record was erased, and the object is gone as it should be.
    Erased,
    /// Erased on the ledger, still in the store, and the gateway confirmed it deleted (or
    /// it was never queued): the store or the gateway failed.
    ErasedButPresent,
    /// Erased on the ledger, still in the store, and still in the erasure queue: the
    /// gateway has not deleted it yet (it does within seconds while it runs).
    ErasedAwaitingGateway,
    /// In the store, but no item on the ledger references it.
    Unreferenced,
    Unreadable(String),
}

impl ObjectState {
    pub fn ok(&self) -> bool {
        matches!(self, ObjectState::Ok | ObjectState::Erased)
    }
    pub fn describe(&self) -> String {
        match self {
            ObjectState::Ok => "ok".into(),
            ObjectState::Missing => "MISSING from the store".into(),
            ObjectState::Tampered(why) => format!("TAMPERED: {why}"),
            ObjectState::Erased => "erased (object deleted, as it should be)".into(),
            ObjectState::ErasedButPresent => {
                "ERASED on the ledger but still in the store, which the gateway confirmed \
                 deleted"
                    .into()
            }
            ObjectState::ErasedAwaitingGateway => {
                "ERASED on the ledger but still in the store: queued, the gateway has not \
                 deleted it yet"
                    .into()
            }
            ObjectState::Unreferenced => "NOT ON THE LEDGER (no item references it)".into(),
            ObjectState::Unreadable(why) => format!("UNREADABLE: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ObjectVerdict {
    pub path: String,
    pub state: ObjectState,
}

pub struct Report {
    pub network_id: [u8; 32],
    pub blocks: Vec<BlockVerdict>,
    /// None: objects were not checked (no store given).
    pub objects: Option<Vec<ObjectVerdict>>,
    pub diverged_at: Option<u64>,
    /// Every erased record: when it was erased and when its purge completed. One whose
    /// purge is under way still holds key material in the state: a finding until the
    /// gateway's `purge_erased` steps finish it (docs/adr/0015). One whose purge completed
    /// and whose entries still hold key material (found by scanning them) is a finding too.
    pub erasures: Vec<medledger_execution::audit::Erasure>,
    /// Blocks the named peer served that f+1 peers did not vote for, each replaced by
    /// another peer's proven copy (one line each, naming both): a finding about that peer,
    /// not about the ledger.
    pub substituted: Vec<String>,
    /// What each peer reports of its private values (docs/adr/0017 step 5), when the blocks
    /// came from the peers: committed values it lacks, and purged values whose bytes are
    /// still in its files until its next compaction (an erased record's key material among
    /// them). Each peer's own word, shown as such: information, not part of [`Report::ok`]
    /// (a compaction follows a purge within a minute; a count that stays is a finding).
    pub peer_private: Vec<PeerPrivate>,
}

/// One peer's report of its private values, or why there is none (down, refused).
pub struct PeerPrivate {
    pub peer: String,
    pub status: Result<v1::PrivateDataStatus, String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.blocks.iter().all(BlockVerdict::ok)
            && self
                .erasures
                .iter()
                .all(|e| e.purged_at.is_some() && e.key_material_left == 0)
            && self
                .objects
                .as_ref()
                .is_none_or(|o| o.iter().all(|v| v.state.ok()))
    }
    pub fn failed_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| !b.ok()).count()
    }
    pub fn failed_objects(&self) -> usize {
        self.objects
            .as_ref()
            .map_or(0, |o| o.iter().filter(|v| !v.state.ok()).count())
    }
}

/// Verifies every block of `source` from `genesis`, then every object in `store`.
pub async fn verify(
    genesis: Genesis,
    source: &BlockSource<'_>,
    store: Option<&dyn ObjectStore>,
) -> Result<Report, ClientError> {
    let served = source.genesis().await?;
    if served.network_id != genesis.network_id {
        return Err(ClientError::VerificationFailed(format!(
            "the source's genesis block is network {}, not the pinned {}",
            hex::encode(&served.network_id[..8]),
            hex::encode(&genesis.network_id[..8])
        )));
    }
    let network_id = genesis.network_id;
    let mut auditor = Auditor::new(genesis);
    let mut blocks = Vec::new();
    let mut substituted = Vec::new();
    let mut next = 1;
    'blocks: loop {
        let mut page = source.blocks(next, 100).await?;
        if let BlockSource::Peer {
            peers,
            index,
            ledger: true,
        } = source
        {
            substituted.extend(proven_copies(peers, *index, &mut page).await);
        }
        if page.is_empty() {
            break;
        }
        for block in &page {
            let verdict = auditor
                .check(block)
                .map_err(|e| ClientError::Protocol(format!("re-executing block {next}: {e}")))?;
            let ends_chain = verdict.ends_chain;
            blocks.push(verdict);
            next += 1;
            if ends_chain {
                break 'blocks;
            }
        }
    }
    let objects = match store {
        Some(store) => {
            let expected = auditor.stored_objects().map_err(|e| {
                ClientError::Protocol(format!("reading the re-executed state: {e}"))
            })?;
            Some(check_objects(store, &expected).await?)
        }
        None => None,
    };
    let erasures = auditor
        .erasures()
        .map_err(|e| ClientError::Protocol(format!("reading the re-executed state: {e}")))?;
    let peer_private = match source {
        BlockSource::Peer { peers, .. } => private_reports(peers).await,
        #[cfg(feature = "data-dir")]
        BlockSource::DataDir(_) => Vec::new(),
    };
    Ok(Report {
        network_id,
        blocks,
        objects,
        erasures,
        diverged_at: auditor.diverged_at(),
        substituted,
        peer_private,
    })
}

/// Every peer's `GetStatus`, in the order of [`PeerSet::names`], all asked at once, each for
/// at most [`BLOCKS_CALL_TIMEOUT`] (a peer that holds the call open costs its own answer
/// only): the answer, or the refusal's code (`None`: no answer in time). A refusal's words
/// are the peer's own and are not kept.
pub async fn statuses(peers: &PeerSet) -> Vec<Result<v1::GetStatusResponse, Option<tonic::Code>>> {
    futures_util::future::join_all((0..peers.names().len()).map(|i| {
        let mut client = peers.peer(i);
        async move {
            match tokio::time::timeout(
                BLOCKS_CALL_TIMEOUT,
                client.get_status(v1::GetStatusRequest {}),
            )
            .await
            {
                Ok(Ok(answer)) => Ok(answer.into_inner()),
                Ok(Err(status)) => Err(Some(status.code())),
                Err(_) => Err(None),
            }
        }
    }))
    .await
}

/// Every peer's report of its private values (`GetStatus.private_data`), all asked at once,
/// each for at most [`BLOCKS_CALL_TIMEOUT`]; none when no peer counts the caller among the
/// ledger's readers. When one does, a peer that gives no report is named as such.
async fn private_reports(peers: &PeerSet) -> Vec<PeerPrivate> {
    let names = peers.names();
    let asked: Vec<Result<Option<v1::PrivateDataStatus>, String>> = statuses(peers)
        .await
        .into_iter()
        .map(|asked| match asked {
            Ok(answer) => Ok(answer.private_data),
            Err(Some(code)) => Err(format!("refused: {code:?}")),
            Err(None) => Err("no answer in time".to_string()),
        })
        .collect();
    // Reports from fewer than f+1 peers: the caller is not one of the ledger's readers (a
    // Byzantine peer's report alone says nothing about the others).
    let reports = asked.iter().filter(|a| matches!(a, Ok(Some(_)))).count();
    if reports < peers.votes_needed() {
        return Vec::new();
    }
    names
        .into_iter()
        .zip(asked)
        .map(|(peer, asked)| PeerPrivate {
            peer,
            status: asked.and_then(|report| {
                report.ok_or_else(|| {
                    "no report, though f+1 other peers count this wallet among the ledger's \
                     readers"
                        .to_string()
                })
            }),
        })
        .collect()
}

/// Checks each block of `page`, served by peer `source` of `peers`, whole against f+1
/// peers' votes (`PeerSet::check_block`: the header they signed, every envelope and outcome
/// under its roots). A block that does not check is asked of the other peers, and the first
/// copy that does replaces it: the auditor verifies the ledger f+1 peers committed, not one
/// peer's word for it (a peer may serve auditors whitewashed outcomes). Returns one line per
/// replaced block, naming the peer that served it and why it did not check. A block served
/// with fewer votes than f+1 (the newest, or older ones after a restart, may carry none) is
/// left as served, for the re-execution to judge: a copy from elsewhere is taken only in
/// place of one whose own votes are there but whose content they do not cover. Each call
/// waits [`BLOCKS_CALL_TIMEOUT`] at most.
async fn proven_copies(peers: &PeerSet, source: usize, page: &mut [v1::Block]) -> Vec<String> {
    let names = peers.names();
    let name_of = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("peer {i}"));
    let others: Vec<usize> = (0..peers.n()).filter(|i| *i != source).collect();
    let mut substituted = Vec::new();
    for block in page.iter_mut() {
        if block.votes.len() < peers.votes_needed() {
            continue;
        }
        let Err(why) = peers.check_block(block).await else {
            continue;
        };
        let Some(number) = block.header.as_ref().map(|h| h.number) else {
            continue;
        };
        for &other in &others {
            if other >= peers.n() {
                break;
            }
            let Ok(Ok(copy)) = tokio::time::timeout(
                BLOCKS_CALL_TIMEOUT,
                peers.peer(other).get_block(v1::GetBlockRequest { number }),
            )
            .await
            else {
                continue;
            };
            let copy = copy.into_inner();
            if copy.header.as_ref().map(|h| h.number) == Some(number)
                && peers.check_block(&copy).await.is_ok()
            {
                substituted.push(format!(
                    "block {number}: {} served a copy f+1 peers did not vote for ({why}); \
                     {}'s copy, which they did, was verified instead",
                    name_of(source),
                    name_of(other)
                ));
                *block = copy;
                break;
            }
        }
    }
    substituted
}

async fn sha256_of(store: &dyn ObjectStore, path: &ObjectPath) -> Result<(u64, [u8; 32]), String> {
    let object = store.get(path).await.map_err(|e| e.to_string())?;
    let mut stream = object.into_stream();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((size, hasher.finalize().into()))
}

/// Each expected object present with its size and hash (erased ones absent), and nothing in
/// the store under `patients/` or `studies/` that the ledger does not reference.
pub async fn check_objects(
    store: &dyn ObjectStore,
    expected: &[ExpectedObject],
) -> Result<Vec<ObjectVerdict>, ClientError> {
    let mut present = std::collections::BTreeSet::new();
    for prefix in ["patients", "studies"] {
        let mut listing = store.list(Some(&ObjectPath::from(prefix)));
        while let Some(meta) = listing.next().await {
            let meta =
                meta.map_err(|e| ClientError::Protocol(format!("listing the object store: {e}")))?;
            present.insert(meta.location.to_string());
        }
    }
    let mut verdicts = Vec::new();
    let mut referenced = std::collections::BTreeSet::new();
    for object in expected {
        referenced.insert(object.path.clone());
        let exists = present.contains(&object.path);
        let state = match (object.erased, exists) {
            (true, false) => ObjectState::Erased,
            (true, true) if object.queued => ObjectState::ErasedAwaitingGateway,
            (true, true) => ObjectState::ErasedButPresent,
            (false, false) => ObjectState::Missing,
            (false, true) => {
                match sha256_of(store, &ObjectPath::from(object.path.as_str())).await {
                    Err(why) => ObjectState::Unreadable(why),
                    Ok((size, _)) if size != object.size => ObjectState::Tampered(format!(
                        "{size} bytes; the ledger says {}",
                        object.size
                    )),
                    Ok((_, digest)) if digest[..] != object.sha256[..] => {
                        ObjectState::Tampered("its SHA-256 is not the ledger's".into())
                    }
                    Ok(_) => ObjectState::Ok,
                }
            }
        };
        verdicts.push(ObjectVerdict {
            path: object.path.clone(),
            state,
        });
    }
    for path in present.difference(&referenced) {
        verdicts.push(ObjectVerdict {
            path: path.clone(),
            state: ObjectState::Unreferenced,
        });
    }
    Ok(verdicts)
}

/// Opens a peer's data directory for reading.
/// `dir` is a peer's `--data-dir` (its ledger is `dir/ledger`) or the ledger folder itself.
#[cfg(feature = "data-dir")]
pub fn open_data_dir(dir: &Path) -> Result<BlockSource<'static>, ClientError> {
    let ledger = if dir.join("ledger/CURRENT").exists() {
        dir.join("ledger")
    } else {
        dir.to_path_buf()
    };
    Ledger::open_read_only(&ledger)
        .map(BlockSource::DataDir)
        .map_err(|e| ClientError::Usage(format!("--data-dir {}: {e}", dir.display())))
}

/// Without the `data-dir` feature the CLI links no RocksDB: `--data-dir` is refused.
#[cfg(not(feature = "data-dir"))]
pub fn open_data_dir(dir: &Path) -> Result<BlockSource<'static>, ClientError> {
    Err(ClientError::Usage(format!(
        "--data-dir {}: this medledger was built without the data-dir feature; verify through \
         a peer (--peer) instead",
        dir.display()
    )))
}
