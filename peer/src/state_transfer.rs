//! State transfer, the serving side (Castro–Liskov §4.3, adr 0006): the core decides what to
//! serve and to whom (`Action::ServeFetch`, one window at most, one answer per replica per
//! 100 ms); this thread reads those blocks from RocksDB and sends them with their commit
//! certificates, so reading up to 24 MiB of blocks never holds up the consensus thread.
//! Requests beyond a small queue are dropped (the asking replica asks again).

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use medledger_pbft as pbft;
use medledger_proto::v1;

use crate::ledger::Ledger;
use crate::network::Network;

/// Largest state-transfer reply, in bytes of envelopes.
pub const MAX_FETCH_REPLY_BYTES: usize = 24 << 20;
/// Answers waiting for the state-transfer thread at most.
const QUEUE: usize = 16;

struct Job {
    to: pbft::ReplicaId,
    range: RangeInclusive<pbft::Seq>,
    checkpoint: pbft::CheckpointProof,
}

/// The handle the consensus thread gives `ServeFetch` actions to.
pub struct StateTransfer {
    jobs: SyncSender<Job>,
}

impl StateTransfer {
    /// Starts the state-transfer thread, which reads `ledger` and sends on `network`.
    pub fn start(ledger: Arc<Ledger>, network: Arc<Network>) -> StateTransfer {
        let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("state-transfer".into())
            .spawn(move || serve_all(&ledger, &network, queue));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the state-transfer thread");
        }
        StateTransfer { jobs }
    }

    /// Queues an answer to replica `to` (never waits; dropped when the queue is full).
    pub fn serve(
        &self,
        to: pbft::ReplicaId,
        range: RangeInclusive<pbft::Seq>,
        checkpoint: pbft::CheckpointProof,
    ) {
        let job = Job {
            to,
            range,
            checkpoint,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("medledger_fetches_refused_total").increment(1);
            }
        }
    }
}

fn serve_all(ledger: &Ledger, network: &Network, queue: Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        let batches = read_batches(ledger, job.range);
        if batches.is_empty() {
            continue;
        }
        let reply = pbft::Message::FetchReply {
            batches,
            checkpoint: job.checkpoint,
        };
        network.send(job.to, &reply);
    }
}

/// The committed batches of `range` from the ledger's blocks, in order, stopping at the
/// first missing one and at [`MAX_FETCH_REPLY_BYTES`] (always at least one).
pub fn read_batches(
    ledger: &Ledger,
    range: RangeInclusive<pbft::Seq>,
) -> Vec<pbft::CommittedBatch> {
    let mut batches = Vec::new();
    let mut bytes: usize = 0;
    for number in range {
        let Ok(Some(block)) = ledger.block(number) else {
            break;
        };
        let Some(batch) = certified_batch(&block) else {
            break;
        };
        bytes = bytes.saturating_add(batch.batch.size_bytes());
        if bytes > MAX_FETCH_REPLY_BYTES && !batches.is_empty() {
            break;
        }
        batches.push(batch);
    }
    batches
}

/// The committed batch a block was made from, with its commit certificate.
pub fn certified_batch(block: &v1::Block) -> Option<pbft::CommittedBatch> {
    let header = block.header.as_ref()?;
    let certificate = block.certificate.as_ref()?;
    if block.request_ids.len() != block.envelopes.len() {
        return None;
    }
    let mut requests = Vec::with_capacity(block.envelopes.len());
    for (id, payload) in block.request_ids.iter().zip(&block.envelopes) {
        requests.push(pbft::Request {
            tx_id: id.as_slice().try_into().ok()?,
            payload: payload.clone(),
        });
    }
    let batch = pbft::Batch {
        timestamp_ms: block.batch_time_ms,
        requests,
    };
    let digest = batch.digest();
    let commits = certificate
        .commits
        .iter()
        .map(|c| pbft::Signed {
            from: c.replica,
            message: pbft::Vote {
                view: certificate.view,
                seq: header.number,
                digest,
            },
            signature: c.signature.clone(),
        })
        .collect();
    Some(pbft::CommittedBatch {
        seq: header.number,
        batch,
        commits,
    })
}
