//! Byte budgets for the peer's queues. Every queue between the network, the client service
//! and the consensus thread is bounded twice: in messages by its channel, and in bytes by a
//! [`ByteBudget`]. A sender takes a [`Queued`] permit for a message's encoded size before
//! queueing it; the permit travels with the message and gives the bytes back when the
//! message leaves the queue (the permit is dropped). A message that does not fit is dropped
//! (replica traffic: PBFT recovers lost messages) or refused (a client submission gets
//! `RESOURCE_EXHAUSTED`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A number of bytes a queue may hold, shared by its senders.
#[derive(Debug, Clone)]
pub struct ByteBudget(Arc<Semaphore>);

/// Bytes held in a queue by one message; given back when dropped.
#[derive(Debug)]
pub struct Queued(#[allow(dead_code)] OwnedSemaphorePermit);

impl ByteBudget {
    /// A budget of `bytes` (at most [`Semaphore::MAX_PERMITS`]).
    pub fn new(bytes: usize) -> ByteBudget {
        ByteBudget(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }

    /// Takes `bytes` from the budget, or `None` when fewer are left (or `bytes` exceeds
    /// `u32::MAX`). Never waits.
    pub fn take(&self, bytes: usize) -> Option<Queued> {
        let bytes = u32::try_from(bytes).ok()?;
        self.0
            .clone()
            .try_acquire_many_owned(bytes)
            .ok()
            .map(Queued)
    }

    /// Bytes left.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_when_the_message_leaves_the_queue() {
        let budget = ByteBudget::new(100);
        let first = budget.take(60).unwrap();
        assert!(budget.take(41).is_none(), "over the budget");
        let second = budget.take(40).unwrap();
        assert_eq!(budget.available(), 0);
        drop(first);
        assert_eq!(budget.available(), 60);
        drop(second);
        assert_eq!(budget.available(), 100);
        assert!(budget.take(usize::MAX).is_none());
    }
}
