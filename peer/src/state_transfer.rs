//! State transfer, the serving side (Castro–Liskov §4.3, adr 0006): the core decides what to
//! serve and to whom (`Action::ServeFetch`, one window at most, one answer per replica per
//! 100 ms); this thread reads those blocks from RocksDB and sends them with their commit
//! certificates, so reading up to 24 MiB of blocks never holds up the consensus thread.
//! One answer waits per replica (a newer request replaces it) and replicas are served in
//! turn, so no replica's requests can crowd out another's.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Condvar, Mutex};

use medledger_pbft as pbft;
use medledger_proto::v1;

use crate::ledger::Ledger;
use crate::network::Network;

/// Largest state-transfer reply, in bytes of envelopes.
pub const MAX_FETCH_REPLY_BYTES: usize = 24 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    range: RangeInclusive<pbft::Seq>,
    checkpoint: pbft::CheckpointProof,
}

/// Answers waiting: at most one per replica (a newer one replaces it), taken in turn, so a
/// replica fetching as often as the core allows delays another's answer by at most one of
/// its own.
#[derive(Debug, Default)]
struct Waiting {
    jobs: BTreeMap<pbft::ReplicaId, Job>,
    /// The replica served last (the next turn goes to the one after it).
    last: Option<pbft::ReplicaId>,
    stopped: bool,
}

impl Waiting {
    fn put(&mut self, to: pbft::ReplicaId, job: Job) {
        self.jobs.insert(to, job);
    }

    fn next(&mut self) -> Option<(pbft::ReplicaId, Job)> {
        let after = self
            .last
            .and_then(|last| self.jobs.range(last.saturating_add(1)..).next())
            .map(|(to, _)| *to);
        let to = after.or_else(|| self.jobs.keys().next().copied())?;
        let job = self.jobs.remove(&to)?;
        self.last = Some(to);
        Some((to, job))
    }
}

/// The handle the consensus thread gives `ServeFetch` actions to.
pub struct StateTransfer {
    waiting: Arc<(Mutex<Waiting>, Condvar)>,
}

impl StateTransfer {
    /// Starts the state-transfer thread, which reads `ledger` and sends on `network`.
    pub fn start(ledger: Arc<Ledger>, network: Arc<Network>) -> StateTransfer {
        let waiting = Arc::new((Mutex::new(Waiting::default()), Condvar::new()));
        let shared = waiting.clone();
        let spawned = std::thread::Builder::new()
            .name("state-transfer".into())
            .spawn(move || serve_all(&ledger, &network, &shared));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the state-transfer thread");
        }
        StateTransfer { waiting }
    }

    /// Queues an answer to replica `to`, replacing one still waiting for it (never waits).
    pub fn serve(
        &self,
        to: pbft::ReplicaId,
        range: RangeInclusive<pbft::Seq>,
        checkpoint: pbft::CheckpointProof,
    ) {
        let (lock, ready) = &*self.waiting;
        let mut waiting = lock.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.jobs.contains_key(&to) {
            metrics::counter!("medledger_fetches_refused_total").increment(1);
        }
        waiting.put(to, Job { range, checkpoint });
        ready.notify_one();
    }
}

impl Drop for StateTransfer {
    fn drop(&mut self) {
        let (lock, ready) = &*self.waiting;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stopped = true;
        ready.notify_one();
    }
}

fn serve_all(ledger: &Ledger, network: &Network, waiting: &(Mutex<Waiting>, Condvar)) {
    let (lock, ready) = waiting;
    loop {
        let (to, job) = {
            let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if guard.stopped {
                    return;
                }
                if let Some(next) = guard.next() {
                    break next;
                }
                guard = ready.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
        };
        let batches = read_batches(ledger, job.range);
        if batches.is_empty() {
            continue;
        }
        let reply = pbft::Message::FetchReply {
            batches,
            checkpoint: job.checkpoint,
        };
        network.send(to, &reply);
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
    let batch = medledger_execution::certified::batch_of(block).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(up_to: pbft::Seq) -> Job {
        Job {
            range: 1..=up_to,
            checkpoint: pbft::CheckpointProof::default(),
        }
    }

    /// Red team, third review of issue 14: one replica fetching as often as it may once
    /// filled a shared queue and starved a correct replica catching up. Now each replica has
    /// one answer waiting at most, and turns go round.
    #[test]
    fn one_replica_cannot_crowd_out_another() {
        let mut waiting = Waiting::default();
        for up_to in 1..=50 {
            waiting.put(3, job(up_to));
        }
        waiting.put(1, job(7));
        assert_eq!(waiting.jobs.len(), 2, "one waiting per replica");
        assert_eq!(waiting.next().map(|(to, _)| to), Some(1));
        waiting.put(1, job(8));
        // Replica 3 asked again meanwhile: its newest request, and it is its turn.
        assert_eq!(waiting.next(), Some((3, job(50))));
        assert_eq!(waiting.next(), Some((1, job(8))));
        assert_eq!(waiting.next(), None);
    }
}
