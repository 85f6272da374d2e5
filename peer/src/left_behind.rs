//! A replica left behind by a change of the peers (docs/adr/0011 §5): the block that changes
//! the peers is the last its epoch's replica set orders, and the replicas that go on switch
//! at once. A replica that had not committed that block by then — one being removed that was
//! a little slower than the quorum, or one down across the change — finds its streams
//! refused (`PERMISSION_DENIED`: the others follow a replica set without it), and no replica
//! of its epoch is left to answer its state-transfer fetches (`Castro–Liskov` §4.3).
//!
//! So it reads the blocks it lacks through the client API (`GetBlocks`) of the peers that
//! refuse it, and gives each to its consensus thread as a state-transfer reply: the core
//! takes a batch only with a commit certificate of a quorum of its epoch's replicas, in
//! order. Once it executes the block that changed the peers it follows the new replica set,
//! or, removed, says so and orders nothing more.
//!
//! Who can lie here: the peer that refuses, and the blocks it serves. A correct peer refuses
//! only a peer that is not one of its replicas; a lying one costs a call a second and the
//! checking of what it sends, which the core refuses unless certified.

use std::sync::Arc;
use std::time::Duration;

use medledger_pbft as pbft;
use medledger_proto::v1;

use crate::execute::ConfigurationInForce;
use crate::inputs::Inputs;
use crate::join::{CALL_TIMEOUT, ledger_client};
use crate::ledger::Ledger;
use crate::network::Network;

/// How often the refusing peers are asked for blocks.
const INTERVAL: Duration = Duration::from_secs(1);
/// Blocks asked for per call.
const BLOCKS_PER_CALL: u32 = 16;

/// What the follower needs of the node.
pub struct LeftBehind {
    pub ledger: Arc<Ledger>,
    pub network: Arc<Network>,
    pub inputs: Inputs,
    pub configuration: Arc<ConfigurationInForce>,
    pub revoked: medledger_tls::SharedRevocations,
}

impl LeftBehind {
    /// Runs until aborted: while a peer of this one's replica set refuses it, fetches the
    /// blocks after this peer's height from the refusing peers, one after the other, until
    /// one of them gives the next blocks in order. Each round starts with the next refusing
    /// peer (a liar that answers first with blocks the core refuses delays the others by one
    /// round, not for ever).
    pub async fn run(self) {
        let mut said = false;
        let mut turn: usize = 0;
        loop {
            tokio::time::sleep(INTERVAL).await;
            let refusing = self.network.refusing();
            if refusing.is_empty() {
                said = false;
                continue;
            }
            if !said {
                said = true;
                tracing::info!(
                    height = self.ledger.height(),
                    refusing = ?refusing.iter().map(|(id, ..)| *id).collect::<Vec<_>>(),
                    "replicas refuse this one: reading the blocks it lacks from them"
                );
            }
            turn = turn.wrapping_add(1);
            let first = turn % refusing.len();
            let (before, after) = refusing.split_at(first);
            for (replica, address, tls) in after.iter().chain(before).cloned() {
                match self.fetch(replica, &address, tls).await {
                    Ok(0) => {}
                    Ok(given) => {
                        metrics::counter!("medledger_left_behind_blocks_total")
                            .increment(given as u64);
                        break;
                    }
                    Err(e) => tracing::debug!(replica, %address, error = %e, "no blocks"),
                }
            }
        }
    }

    /// Asks replica `replica` at `address` for the blocks after this peer's height and queues
    /// each as a state-transfer reply from it. Returns how many were queued.
    async fn fetch(
        &self,
        replica: pbft::ReplicaId,
        address: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<usize, String> {
        let mut client = ledger_client(address, tls, self.revoked.clone()).await?;
        let from = self.ledger.height().saturating_add(1);
        let call = client.get_blocks(v1::GetBlocksRequest {
            from,
            limit: BLOCKS_PER_CALL,
        });
        let blocks = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "answering took too long".to_string())?
            .map_err(|s| s.to_string())?
            .into_inner()
            .blocks;
        let epoch = self.configuration.epoch().1.seq;
        let mut given = 0;
        for (batch, bytes) in asked_for(from, &blocks) {
            let reply = pbft::Message::FetchReply {
                batches: vec![batch],
                checkpoint: pbft::CheckpointProof::default(),
            };
            if self.inputs.message(replica, reply, bytes, epoch).is_err() {
                break;
            }
            given += 1;
        }
        Ok(given)
    }
}

/// The certified batches of `blocks` (an answer to a request for blocks from `from` on) that
/// were asked for, in order, each with its block's encoded size: the first [`BLOCKS_PER_CALL`]
/// at most, stopping at the first block out of place or without a certified batch. Anything
/// else is not given on (the core would skip or refuse it) and costs the liar its turn.
fn asked_for(from: u64, blocks: &[v1::Block]) -> Vec<(pbft::CommittedBatch, usize)> {
    let mut batches = Vec::new();
    for (expected, block) in (from..).zip(blocks.iter().take(BLOCKS_PER_CALL as usize)) {
        if block.header.as_ref().map(|h| h.number) != Some(expected) {
            break;
        }
        let Some(batch) = crate::state_transfer::certified_batch(block) else {
            break;
        };
        batches.push((batch, prost::Message::encoded_len(block)));
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block numbered `number` carrying an empty batch under a commit certificate (its
    /// signatures are the core's to check).
    fn block(number: u64) -> v1::Block {
        v1::Block {
            header: Some(v1::BlockHeader {
                number,
                ..Default::default()
            }),
            certificate: Some(v1::CommitCertificate::default()),
            ..Default::default()
        }
    }

    /// Red team of the left-behind reader: a liar answering first with an old block (or a
    /// flood of them) must not count as progress, nor be given on.
    #[test]
    fn only_the_blocks_asked_for_in_order_are_given_on() {
        let numbers = |from: u64, blocks: &[v1::Block]| -> Vec<u64> {
            asked_for(from, blocks).iter().map(|(b, _)| b.seq).collect()
        };
        let run: Vec<v1::Block> = (5..40).map(block).collect();
        assert_eq!(
            numbers(5, &run),
            (5..5 + u64::from(BLOCKS_PER_CALL)).collect::<Vec<_>>()
        );
        // An old block first: nothing.
        assert_eq!(numbers(6, &run), Vec::<u64>::new());
        // A gap: up to it.
        let gapped = vec![block(5), block(6), block(8)];
        assert_eq!(numbers(5, &gapped), vec![5, 6]);
        // A block with no certificate: up to it.
        let mut broken = vec![block(5), block(6), block(7)];
        broken[1].certificate = None;
        assert_eq!(numbers(5, &broken), vec![5]);
    }
}
