//! Protocol parameters. Every queue and message has a limit derived from these.

use crate::message::ReplicaId;

#[derive(Debug, Clone)]
pub struct Config {
    /// Number of replicas, n = 3f + 1.
    pub n: u32,
    /// A checkpoint every K sequence numbers.
    pub checkpoint_interval: u64,
    /// Sequence numbers in (h, h + L] may be proposed; L is a multiple of K.
    pub watermark_window: u64,
    pub max_batch_requests: usize,
    pub max_batch_bytes: usize,
    /// The primary proposes a partial batch after this long.
    pub batch_timeout_ms: u64,
    /// A backup suspects the primary when a pending request makes no progress this long;
    /// doubled for each further view change in a row.
    pub request_timeout_ms: u64,
    /// How far a primary's timestamp may be from a backup's own clock.
    pub max_clock_skew_ms: u64,
    /// Requests a replica holds before refusing more.
    pub max_pending_requests: usize,
    /// Committed batches kept in memory to serve state transfer.
    pub retain_committed: u64,
}

impl Config {
    pub fn new(n: u32) -> Config {
        assert!(
            n >= 4 && (n - 1).is_multiple_of(3),
            "n must be 3f + 1 with f ≥ 1"
        );
        Config {
            n,
            checkpoint_interval: 16,
            watermark_window: 64,
            max_batch_requests: 64,
            max_batch_bytes: 1 << 20,
            batch_timeout_ms: 5,
            request_timeout_ms: 400,
            max_clock_skew_ms: 2_000,
            max_pending_requests: 100_000,
            retain_committed: 4096,
        }
    }

    /// The number of faults tolerated.
    pub fn f(&self) -> usize {
        ((self.n - 1) / 3) as usize
    }

    /// 2f + 1.
    pub fn quorum(&self) -> usize {
        2 * self.f() + 1
    }

    pub fn primary(&self, view: u64) -> ReplicaId {
        (view % u64::from(self.n)) as ReplicaId
    }

    pub fn validate(&self) {
        assert!(self.checkpoint_interval > 0);
        assert!(self.watermark_window >= self.checkpoint_interval);
        assert!(
            self.watermark_window
                .is_multiple_of(self.checkpoint_interval)
        );
        assert!(self.max_batch_requests > 0 && self.max_batch_bytes > 0);
        assert!(self.retain_committed >= self.watermark_window);
    }
}
