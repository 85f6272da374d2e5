//! Protocol parameters. Every queue and message has a limit derived from these.

use crate::message::{Digest, ReplicaId, Seq};

#[derive(Debug, Clone)]
pub struct Config {
    /// Number of replicas, n ≥ 4: f = ⌊(n − 1)/3⌋ of them may be faulty (n = 3f + 1 wastes
    /// none; 5 or 6 replicas tolerate one fault, as 4 do, with larger quorums).
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
    /// Bytes of requests (ids and payloads) a replica holds before refusing more.
    pub max_pending_bytes: usize,
    /// Committed batches (sequence numbers) kept below the last dispatched one, and the
    /// most a replica keeps committed above a gap beyond the last executed one (it fetches
    /// the rest); also how far back executed request ids are remembered.
    pub retain_committed: u64,
    /// The sequence number this replica set starts after: 0 for the network's first, the
    /// number of the batch that changed the set for a later one (docs/adr/0011 §5). The
    /// replicas start with their stable checkpoint there, proven by no signatures: every
    /// member executed that batch before it started.
    pub epoch_base: Seq,
    /// The checkpoint digest every member holds after `epoch_base` (what the host's
    /// checkpoints carry: the block's header hash in ledger format 2): the only checkpoint
    /// at `epoch_base` any replica accepts (ignored for the first set, whose base 0 is the
    /// genesis). With `epoch_base`, it names the replica set in every signature (see
    /// [`Config::epoch_signed`]).
    pub epoch_base_digest: Digest,
    /// The consensus time (Unix ms) of the batch at `epoch_base`: the set's first batches
    /// are stamped no earlier.
    pub epoch_base_time_ms: u64,
}

impl Config {
    pub fn new(n: u32) -> Config {
        assert!(n >= 4, "n must be at least 4 (f ≥ 1)");
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
            max_pending_bytes: 256 << 20,
            retain_committed: 4096,
            epoch_base: 0,
            epoch_base_digest: [0; 32],
            epoch_base_time_ms: 0,
        }
    }

    /// The number of faults tolerated: ⌊(n − 1)/3⌋.
    pub fn f(&self) -> usize {
        (self.n.saturating_sub(1) / 3) as usize
    }

    /// The quorum, ⌈(n + f + 1)/2⌉ replicas: any two share at least f + 1 (so one correct
    /// replica), and the n − f correct ones make one. 2f + 1 when n = 3f + 1 (Castro–Liskov
    /// §4; the general size is Malkhi–Reiter's for Byzantine quorum systems).
    pub fn quorum(&self) -> usize {
        (self.n as usize)
            .saturating_add(self.f())
            .saturating_add(1)
            .div_ceil(2)
    }

    /// The quorum less the primary: the prepares from distinct backups that, with the
    /// pre-prepare, prove a batch prepared (Castro–Liskov §4.2; 2f when n = 3f + 1).
    pub fn prepare_quorum(&self) -> usize {
        self.quorum().saturating_sub(1)
    }

    /// The replicas that may be out with the network still committing: n − quorum (f when
    /// n = 3f + 1 or 3f + 2, f + 1 when n = 3f + 3).
    pub fn spare_replicas(&self) -> usize {
        (self.n as usize).saturating_sub(self.quorum())
    }

    /// The bytes a replica of this set signs for `bytes` (a message's own signed bytes): for
    /// the first set (base 0) the bytes themselves, so that the genesis set's signatures
    /// stay what they were; for a set after a reconfiguration, prefixed with the tag
    /// `medledger/pbft/epoch`, the base and its digest, so that no signature of one replica
    /// set counts in another, even where a peer keeps its key and its id (docs/adr/0011
    /// §4). Every signature the core makes or checks goes through it.
    pub fn epoch_signed(&self, bytes: Vec<u8>) -> Vec<u8> {
        if self.epoch_base == 0 {
            return bytes;
        }
        let tag = b"medledger/pbft/epoch";
        let mut out = Vec::with_capacity(tag.len() + 40 + bytes.len());
        out.extend_from_slice(tag);
        out.extend_from_slice(&self.epoch_base.to_be_bytes());
        out.extend_from_slice(&self.epoch_base_digest);
        out.extend_from_slice(&bytes);
        out
    }

    /// f + 1: enough replicas that one of them is correct.
    pub fn weak_quorum(&self) -> usize {
        self.f().saturating_add(1)
    }

    /// Bytes of pending requests one other replica's forwards may hold: a 1/(f+1) share of
    /// [`Config::max_pending_bytes`], so f Byzantine replicas forwarding what they like leave
    /// the rest to clients and correct replicas.
    pub fn max_forwarded_bytes(&self) -> usize {
        self.max_pending_bytes / self.weak_quorum().max(1)
    }

    /// Pending requests one other replica's forwards may hold: a 1/(f+1) share of
    /// [`Config::max_pending_requests`] (with [`Config::max_forwarded_bytes`]).
    pub fn max_forwarded_requests(&self) -> usize {
        self.max_pending_requests / self.weak_quorum().max(1)
    }

    /// Shortest time between two state-transfer answers to one replica (each may carry a
    /// window of batches; a replica catching up asks again after each).
    pub const FETCH_INTERVAL_MS: u64 = 100;

    /// Checkpoints kept per sender beyond the high watermark (how a replica learns it is behind).
    pub const FUTURE_CHECKPOINTS_PER_SENDER: usize = 2;

    /// How far ahead of ours a view change may ask (correct replicas drift apart by one view
    /// per timeout; a view change asking for more is dropped unverified).
    pub const MAX_VIEW_LEAD: u64 = 64;

    /// View-change messages kept per sender (its newest views).
    pub const VIEW_CHANGES_PER_SENDER: usize = 2;

    /// Normal-case messages for a view being installed kept until its new view arrives.
    pub fn max_early_messages(&self) -> usize {
        usize::try_from(self.watermark_window)
            .unwrap_or(usize::MAX)
            .saturating_mul(4)
            .saturating_mul(self.n as usize)
    }

    /// Bytes of batches in early pre-prepares kept for a view being installed: one window of
    /// full batches (all a correct primary can send before its new view arrives).
    pub fn max_early_bytes(&self) -> usize {
        self.max_message_batch_bytes()
    }

    /// Bytes of batches one message may carry: one watermark window of full batches. A
    /// view change carries at most that many prepared batches, a new view its O set (its
    /// view changes travel without their batches), a fetch reply one window. The host's
    /// transport limit must leave room for this plus signatures.
    pub fn max_message_batch_bytes(&self) -> usize {
        usize::try_from(self.watermark_window)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.max_batch_bytes)
    }

    /// The sequence numbers a fetch for `(after, up_to]` is served: at most one watermark
    /// window, nothing beyond `have` (the last we hold), `None` when that leaves nothing.
    /// Safe for any values a replica sends.
    pub fn fetch_range(
        &self,
        after: u64,
        up_to: u64,
        have: u64,
    ) -> Option<std::ops::RangeInclusive<u64>> {
        let up_to = up_to
            .min(after.saturating_add(self.watermark_window))
            .min(have);
        (up_to > after).then(|| after.saturating_add(1)..=up_to)
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
        assert!(self.max_pending_bytes >= self.max_batch_bytes);
        assert!(self.retain_committed >= self.watermark_window);
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    /// Quorums for any n ≥ 4: any two intersect in f + 1 replicas (one correct), and the
    /// n − f correct replicas make one; 2f + 1 at n = 3f + 1.
    #[test]
    fn quorums_intersect_in_a_correct_replica_and_the_correct_make_one() {
        let expected = [
            (4, 3),
            (5, 4),
            (6, 4),
            (7, 5),
            (8, 6),
            (9, 6),
            (10, 7),
            (31, 21),
        ];
        for (n, quorum) in expected {
            assert_eq!(Config::new(n).quorum(), quorum, "n = {n}");
        }
        for n in 4..=64u32 {
            let c = Config::new(n);
            let (n, f, q) = (n as usize, c.f(), c.quorum());
            assert!(2 * q > n + f, "n = {n}: two quorums share fewer than f + 1");
            assert!(q <= n - f, "n = {n}: the correct replicas are no quorum");
            assert_eq!(c.prepare_quorum(), q - 1);
            if n % 3 == 1 {
                assert_eq!(q, 2 * f + 1);
            }
        }
    }
}
