//! The consensus thread's input queue: client submissions and replica messages, each
//! sender held to its own budget of bytes and slots (docs/adr/0008-byte-budgets.md), and
//! what a submission comes to. The transport and the client service queue into it; the
//! consensus thread (`driver.rs`) alone takes from it.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use medledger_pbft as pbft;
use medledger_proto::v1;
use tokio::sync::oneshot;

use crate::queue::{Budget, Queued};
use crate::wire::MAX_REPLICA_MESSAGE_BYTES;
use medledger_execution::config::MAX_PEERS;

/// What a client's submission came to on this peer.
#[derive(Debug)]
pub enum Outcome {
    /// Executed in `block`. `result` carries the words for the client; `proof` is its
    /// commit proof without votes (the service adds f+1 of them, `votes.rs`).
    Committed {
        block: u64,
        result: v1::TxResult,
        proof: Box<v1::CommitProof>,
    },
    /// Ordered earlier (this peer had executed it before it was submitted here): the service
    /// answers from the ledger.
    AlreadyCommitted,
    /// Too many requests are pending; retry later.
    Busy,
    /// A faulty primary ordered, under this envelope's request id, bytes that do not hash
    /// to it, in block `block`. Correct backups refuse such a pre-prepare, so this needs
    /// f+1 faulty peers; the client signs again.
    Displaced { block: u64 },
    /// This peer was removed from the network at `block` (docs/adr/0011) and orders
    /// nothing more: the client submits to the peers in force.
    Left { block: u64 },
}

/// What the consensus thread takes in. Each submission and replica message holds its bytes
/// of the queue's budget until it is handled.
pub enum Input {
    Submit {
        request: pbft::Request,
        reply: oneshot::Sender<Outcome>,
        queued: Held,
    },
    Message {
        from: pbft::ReplicaId,
        message: pbft::Message,
        /// The epoch (its base block) the sender's id was read in: a message queued before
        /// a change of the peers is not handed to the next replica set (docs/adr/0011).
        epoch: u64,
        queued: Held,
    },
    Shutdown,
}

/// What one queued input holds of its sender's budgets: its bytes and its slot.
#[derive(Debug)]
pub struct Held {
    _bytes: Queued,
    _slot: Queued,
}

/// Inputs queued for the consensus thread at most (each sender gets an equal share).
pub const INPUT_QUEUE: usize = 65_536;
/// Bytes of client submissions (ids and envelopes) queued for the consensus thread at most.
pub const QUEUED_SUBMISSION_BYTES: usize = 256 << 20;
/// Bytes of one replica's messages (as encoded) queued for the consensus thread at most: two
/// of the largest it may send, so one replica cannot take the others' room.
pub const QUEUED_BYTES_PER_REPLICA: usize = 2 * MAX_REPLICA_MESSAGE_BYTES;

/// The sending side of the consensus thread's input queue, with its budgets: client
/// submissions as one sender and each replica as another, each with its bytes and an equal
/// share of the queue's slots, so that no replica (sending many small messages, or few
/// large ones) takes the others' or the clients' room.
#[derive(Clone)]
pub struct Inputs {
    sender: SyncSender<Input>,
    /// (bytes, slots) for submissions.
    submissions: (Budget, Budget),
    /// (bytes, slots) for each replica.
    replicas: Arc<[(Budget, Budget)]>,
}

/// Why an input was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is full, in inputs or in bytes.
    Full,
    /// The consensus thread has stopped.
    Disconnected,
    /// No replica of the network has that id.
    NoSuchReplica,
}

impl Inputs {
    /// A queue of `capacity` inputs for the consensus thread, with budgets for clients and
    /// for each of `replicas` replicas; the receiving side is the thread's. Each replica id
    /// a configuration may give (up to [`MAX_PEERS`]) has its budgets, so a peer set that
    /// grows (docs/adr/0011) finds them; the slots are shared as among `replicas`.
    pub fn channel(capacity: usize, replicas: usize) -> (Inputs, Receiver<Input>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(capacity);
        let share = capacity / replicas.saturating_add(1).max(1);
        let inputs = Inputs {
            sender,
            submissions: (Budget::new(QUEUED_SUBMISSION_BYTES), Budget::new(share)),
            replicas: (0..MAX_PEERS.max(replicas))
                .map(|_| (Budget::new(QUEUED_BYTES_PER_REPLICA), Budget::new(share)))
                .collect(),
        };
        (inputs, receiver)
    }

    fn hold(budgets: &(Budget, Budget), bytes: usize) -> Option<Held> {
        Some(Held {
            _bytes: budgets.0.take(bytes)?,
            _slot: budgets.1.take(1)?,
        })
    }

    /// Queues a client's request, charged its [`pbft::Request::size_bytes`].
    pub fn submit(
        &self,
        request: pbft::Request,
        reply: oneshot::Sender<Outcome>,
    ) -> Result<(), QueueError> {
        let queued = Self::hold(&self.submissions, request.size_bytes()).ok_or(QueueError::Full)?;
        self.send(Input::Submit {
            request,
            reply,
            queued,
        })
    }

    /// Queues a message from replica `from`, charged `bytes` (its encoded size) to that
    /// replica's budget.
    pub fn message(
        &self,
        from: pbft::ReplicaId,
        message: pbft::Message,
        bytes: usize,
        epoch: u64,
    ) -> Result<(), QueueError> {
        let budget = self
            .replicas
            .get(from as usize)
            .ok_or(QueueError::NoSuchReplica)?;
        let queued = Self::hold(budget, bytes).ok_or(QueueError::Full)?;
        self.send(Input::Message {
            from,
            message,
            epoch,
            queued,
        })
    }

    /// Asks the consensus thread to stop (waits for room in the queue).
    pub fn shutdown(&self) {
        let _ = self.sender.send(Input::Shutdown);
    }

    fn send(&self, input: Input) -> Result<(), QueueError> {
        self.sender.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) => QueueError::Full,
            TrySendError::Disconnected(_) => QueueError::Disconnected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica's message the queue can hold (its kind does not matter here).
    fn checkpoint(from: pbft::ReplicaId) -> pbft::Message {
        pbft::Message::Checkpoint(pbft::Signed {
            from,
            message: pbft::Checkpoint {
                seq: 16,
                state_root: [0; 32],
            },
            signature: vec![0; 64],
        })
    }

    /// One replica filling its byte budget keeps neither the others' messages nor clients'
    /// submissions out, and its room comes back as the consensus thread takes its inputs.
    #[test]
    fn one_replica_cannot_take_the_input_queue() {
        let (inputs, receiver) = Inputs::channel(INPUT_QUEUE_FOR_TEST, 4);
        let big = MAX_REPLICA_MESSAGE_BYTES;
        assert_eq!(inputs.message(1, checkpoint(1), big, 0), Ok(()));
        assert_eq!(inputs.message(1, checkpoint(1), big, 0), Ok(()));
        assert_eq!(
            inputs.message(1, checkpoint(1), 1, 0),
            Err(QueueError::Full),
            "replica 1 is over its budget"
        );
        assert_eq!(inputs.message(2, checkpoint(2), big, 0), Ok(()));
        let (reply, _outcome) = oneshot::channel();
        let request = pbft::Request {
            tx_id: [1; 32],
            payload: vec![0; 1000],
        };
        assert_eq!(inputs.submit(request, reply), Ok(()));
        // Any id a configuration may give has its budget (the peer set may grow); none
        // beyond.
        assert_eq!(inputs.message(9, checkpoint(1), 1, 0), Ok(()));
        assert_eq!(
            inputs.message(MAX_PEERS as u32, checkpoint(1), 1, 0),
            Err(QueueError::NoSuchReplica),
            "no such replica"
        );
        drop(receiver.recv().unwrap());
        assert_eq!(inputs.message(1, checkpoint(1), big, 0), Ok(()));
        let oversized = pbft::Request {
            tx_id: [2; 32],
            payload: vec![0; QUEUED_SUBMISSION_BYTES],
        };
        let (reply, _outcome) = oneshot::channel();
        assert_eq!(inputs.submit(oversized, reply), Err(QueueError::Full));
    }

    const INPUT_QUEUE_FOR_TEST: usize = 50;

    /// Many small messages from one replica fill its share of the queue's slots, not the
    /// queue: the others' messages and clients' submissions still get in.
    #[test]
    fn one_replica_cannot_take_the_input_queue_by_count() {
        let (inputs, _receiver) = Inputs::channel(INPUT_QUEUE_FOR_TEST, 4);
        let share = INPUT_QUEUE_FOR_TEST / 5;
        for _ in 0..share {
            assert_eq!(inputs.message(1, checkpoint(1), 110, 0), Ok(()));
        }
        assert_eq!(
            inputs.message(1, checkpoint(1), 110, 0),
            Err(QueueError::Full)
        );
        assert_eq!(inputs.message(2, checkpoint(2), 110, 0), Ok(()));
        let (reply, _outcome) = oneshot::channel();
        let request = pbft::Request {
            tx_id: [1; 32],
            payload: vec![0; 100],
        };
        assert_eq!(inputs.submit(request, reply), Ok(()));
    }
}
