//! Budgets for the peer's queues. Every queue between the network, the client service and
//! the consensus thread is bounded in bytes and in slots per sender, each by a [`Budget`]: a
//! sender takes a [`Queued`] permit (a message's encoded size, or one slot) before queueing
//! it; the permit travels with the message and gives its units back when the message leaves
//! the queue (the permit is dropped). A message that does not fit is dropped (replica
//! traffic: PBFT recovers lost messages) or refused (a client submission gets
//! `RESOURCE_EXHAUSTED`). The same counter bounds a replica's open streams.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A number of units (bytes, slots, streams) its holders may take, shared by them.
#[derive(Debug, Clone)]
pub struct Budget(Arc<Semaphore>);

/// Units held by one message or stream; given back when dropped.
#[derive(Debug)]
pub struct Queued(#[allow(dead_code)] OwnedSemaphorePermit);

impl Budget {
    /// A budget of `units` (at most [`Semaphore::MAX_PERMITS`]).
    pub fn new(units: usize) -> Budget {
        Budget(Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))))
    }

    /// Takes `units` from the budget, or `None` when fewer are left (or `units` exceeds
    /// `u32::MAX`). Never waits.
    pub fn take(&self, units: usize) -> Option<Queued> {
        let units = u32::try_from(units).ok()?;
        self.0
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(Queued)
    }

    /// Units left.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_when_the_message_leaves_the_queue() {
        let budget = Budget::new(100);
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
