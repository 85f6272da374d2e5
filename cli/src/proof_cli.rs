//! `medledger ledger proof` and `ledger check-proof`: a transaction's outcome as a file, and
//! its check offline by anyone holding the network's genesis (issue 17: commit proofs are
//! "checkable offline by anyone holding the genesis"). The file holds the envelope as
//! ordered, its commit proof (the block header, f+1 peers' votes on it, the Merkle path of the
//! outcome) and the configuration links since the genesis. [`proven_blocks`]: blocks whose
//! every outcome is proven so, for listings drawn from them (`ledger emergencies`).

use std::path::{Path, PathBuf};

use medledger_execution::block::{envelope_hash, result_leaves};
use medledger_execution::chain::ConfigChain;
use medledger_execution::genesis::Genesis;
use medledger_execution::merkle::Tree;
use medledger_execution::proof::{build_proof, check_commit_proof};
use medledger_proto::v1;
use medledger_sdk::error::ClientError;
use medledger_sdk::peer::PeerSet;
use prost::Message;
use serde_json::json;

use crate::Output;

/// Largest proof file read: a block's envelope (at most the block size) and the links.
const MAX_PROOF_FILE: u64 = 64 << 20;

/// Writes the outcome of transaction `index` of block `block` to `out`, with a proof this
/// client checked (any peer's block serves: a lying one's is passed over).
pub async fn write_proof(
    peers: &PeerSet,
    block: u64,
    index: u32,
    out: &Path,
) -> Result<Output, ClientError> {
    let mut problems = Vec::new();
    for (i, name) in peers.names().iter().enumerate() {
        // Following the configuration while checking may change the peers.
        if i >= peers.n() {
            break;
        }
        let served = peers
            .peer(i)
            .get_block(v1::GetBlockRequest { number: block })
            .await
            .map(tonic::Response::into_inner);
        let built = served
            .map_err(|s| s.message().to_string())
            .and_then(|b| outcome_of(&b, index));
        let (envelope, proof) = match built {
            Ok(built) => built,
            Err(why) => {
                problems.push(format!("{}: {why}", name));
                continue;
            }
        };
        let decoded = v1::Envelope::decode(envelope.as_slice())
            .map_err(|e| ClientError::Protocol(format!("the envelope: {e}")))?;
        let committed = match peers.check_proof(&decoded, Some(proof.clone())).await {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{}: {e}", name));
                continue;
            }
        };
        let file = v1::OutcomeProof {
            envelope,
            proof: Some(proof),
            // The links this client followed (each proven), so the file stands alone.
            config_links: peers.configuration_links(),
        };
        std::fs::write(out, file.encode_to_vec())
            .map_err(|e| ClientError::Usage(format!("{}: {e}", out.display())))?;
        return Ok(Output {
            text: format!(
                "Wrote the proof of transaction {index} of block {block} ({}, {}) to {}; check it \
                 offline with `medledger ledger check-proof {} --genesis GENESIS`.",
                committed.status.as_str_name(),
                committed
                    .proof
                    .result
                    .as_ref()
                    .map_or("", |r| r.function.as_str()),
                out.display(),
                out.display()
            ),
            json: json!({"file": out, "block": block, "index": index,
                "status": committed.status.as_str_name()}),
        });
    }
    Err(ClientError::NoQuorum {
        needed: peers.votes_needed(),
        detail: problems.join("; "),
    })
}

/// Blocks `from..` (at most `limit`), each checked whole against the configuration chain
/// (`PeerSet::check_block`: f+1 peers' votes on its header, its envelopes and every result,
/// events included, under the header's roots). Any peer serves; of the blocks each peer
/// serves, the longest run that checks from `from` on is kept, so one lying peer can neither
/// add an outcome nor hide one inside the run. The run may end early (the newest blocks may
/// not carry f+1 votes yet, or every peer failed at a block): the second value says why it
/// ended where it did, empty when it reached `limit` or the end of the ledger.
///
/// # Errors
/// A peer's refusal (the one f+1 agree on by code, if any) when f+1 peers refused and none
/// served a checked block (PERMISSION_DENIED for a caller who is not one of the ledger's
/// readers); each peer is given [`crate::verify::BLOCKS_CALL_TIMEOUT`] at most; [`ClientError::NoQuorum`] when no peer serves a single
/// checked block though blocks exist.
pub async fn proven_blocks(
    peers: &PeerSet,
    from: u64,
    limit: u32,
) -> Result<(Vec<v1::Block>, String), ClientError> {
    let mut problems = Vec::new();
    let mut best: Vec<v1::Block> = Vec::new();
    // Whether the run kept ended at a block that did not check (rather than at the end).
    let mut best_cut = false;
    let mut any_served = false;
    // The peers' refusals: a caller f+1 peers refuse (not one of the ledger's readers) is
    // told why, not shown an empty ledger, whatever one liar answers.
    let mut refusals: Vec<tonic::Status> = Vec::new();
    for (i, name) in peers.names().iter().enumerate() {
        // Following the configuration while checking may change the peers.
        if i >= peers.n() {
            break;
        }
        let mut client = peers.peer(i);
        let call = tokio::time::timeout(
            crate::verify::BLOCKS_CALL_TIMEOUT,
            client.get_blocks(v1::GetBlocksRequest { from, limit }),
        );
        let mut blocks = match call.await {
            Ok(Ok(answer)) => answer.into_inner().blocks,
            Ok(Err(status)) => {
                problems.push(format!("{name}: {}", status.message()));
                refusals.push(status);
                continue;
            }
            Err(_) => {
                problems.push(format!(
                    "{name}: no answer within {} s",
                    crate::verify::BLOCKS_CALL_TIMEOUT.as_secs()
                ));
                continue;
            }
        };
        blocks.truncate(limit as usize);
        any_served |= !blocks.is_empty();
        let mut proven = 0;
        let mut cut = false;
        for (k, block) in blocks.iter().enumerate() {
            let expected = from.saturating_add(k as u64);
            let checked = match block.header.as_ref().map(|h| h.number) {
                Some(n) if n != expected => Err(format!("served as block {n}")),
                _ => peers.check_block(block).await,
            };
            if let Err(why) = checked {
                problems.push(format!("{name}: block {expected}: {why}"));
                cut = true;
                break;
            }
            proven = k + 1;
        }
        if proven > best.len() || (proven == best.len() && best_cut && !cut) {
            best = blocks.into_iter().take(proven).collect();
            best_cut = cut;
        }
        if best.len() == limit as usize {
            best_cut = false;
            break;
        }
    }
    if best.is_empty() && refusals.len() >= peers.votes_needed() {
        // The refusal f+1 peers agree on by code, else the first.
        let agreed = refusals
            .iter()
            .find(|s| {
                refusals.iter().filter(|o| o.code() == s.code()).count() >= peers.votes_needed()
            })
            .unwrap_or(&refusals[0])
            .clone();
        return Err(ClientError::from_ledger_status(agreed));
    }
    if best.is_empty() && any_served {
        return Err(ClientError::NoQuorum {
            needed: peers.votes_needed(),
            detail: problems.join("; "),
        });
    }
    if !best_cut {
        problems.clear();
    }
    Ok((best, problems.join("; ")))
}

/// The envelope at `index` of `block` and its proof, with the votes the block carries.
fn outcome_of(block: &v1::Block, index: u32) -> Result<(Vec<u8>, v1::CommitProof), String> {
    let header = block.header.as_ref().ok_or("the block has no header")?;
    let i = index as usize;
    let (Some(envelope), Some(result)) = (block.envelopes.get(i), block.results.get(i)) else {
        return Err(format!(
            "block {} holds {} transactions",
            header.number,
            block.envelopes.len()
        ));
    };
    let tree = Tree::new(result_leaves(&block.envelopes, &block.results));
    let proof = build_proof(
        header,
        block.votes.clone(),
        &tree,
        i,
        &envelope_hash(envelope),
        result,
    )
    .ok_or("no such leaf")?;
    Ok((envelope.clone(), proof))
}

/// Checks a proof file against `genesis` alone: follows its configuration links from the
/// genesis, then checks the commit proof of its envelope.
pub fn check_proof_file(file: &Path, genesis: &Genesis) -> Result<Output, ClientError> {
    let size = std::fs::metadata(file)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", file.display())))?
        .len();
    if size > MAX_PROOF_FILE {
        return Err(ClientError::Usage(format!(
            "{} is larger than a proof can be",
            file.display()
        )));
    }
    let bytes =
        std::fs::read(file).map_err(|e| ClientError::Usage(format!("{}: {e}", file.display())))?;
    let outcome = v1::OutcomeProof::decode(bytes.as_slice())
        .map_err(|e| ClientError::Usage(format!("{} is not a proof: {e}", file.display())))?;
    let mut chain = ConfigChain::new(genesis);
    for link in &outcome.config_links {
        chain
            .follow_new(link)
            .map_err(|(next, e)| refused(format!("configuration {next}: {e}")))?;
    }
    let proof = outcome
        .proof
        .ok_or_else(|| refused("the file holds no proof".into()))?;
    let proven = check_commit_proof(&chain, &proof, &envelope_hash(&outcome.envelope))
        .map_err(|e| refused(e.to_string()))?;
    let status = v1::TxStatus::try_from(proven.result.status)
        .map(|s| s.as_str_name())
        .unwrap_or("TX_STATUS_UNKNOWN");
    Ok(Output {
        text: format!(
            "PROVEN: transaction {} of block {} of network {}: {} {} by {} (tx {}), signed by \
             {} peers of configuration {}",
            proven.index,
            proven.block,
            hex::encode(&genesis.network_id[..8]),
            proven.result.function,
            status,
            proven.result.creator,
            hex::encode(&proven.result.tx_id),
            proof.votes.len(),
            chain.current().sequence
        ),
        json: json!({
            "proven": true,
            "network_id": hex::encode(genesis.network_id),
            "block": proven.block,
            "index": proven.index,
            "function": proven.result.function,
            "status": status,
            "code": proven.result.code,
            "creator": proven.result.creator,
            "tx_id": hex::encode(&proven.result.tx_id),
        }),
    })
}

fn refused(why: String) -> ClientError {
    ClientError::Rejected {
        code: tonic::Code::FailedPrecondition,
        message: format!("NOT PROVEN: {why}"),
        hint: "the file does not prove this outcome on the network of this genesis",
    }
}

/// The proof arguments of `ledger proof`.
#[derive(clap::Args)]
pub struct ProofArgs {
    /// The block holding the transaction.
    #[arg(long)]
    pub block: u64,
    /// Its position in the block (0, 1, ...), as `ledger blocks` lists them.
    #[arg(long)]
    pub index: u32,
    #[arg(long, short)]
    pub out: PathBuf,
}
