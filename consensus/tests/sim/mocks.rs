//! Byzantine replicas as small named mocks. Each runs the honest core and twists what it
//! sends; none can forge another replica's signature.

use medledger_pbft::*;

use super::{Sim, sim_signature};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    Honest,
    /// Says nothing and hears nothing.
    Silent,
    /// Corrupts the signature of everything it sends.
    InvalidSignatures,
    /// As primary, sends half the replicas one batch and the other half another.
    EquivocatingPrimary,
    /// Prepares and commits random digests.
    ConflictingPrepares,
    /// Replays old messages (old views, old sequence numbers) to everyone.
    Replayer,
    /// As primary, stamps batches far from the real time.
    BadTimestamps,
    /// One of two replicas sharing one identity and key.
    Twin,
}

impl Behavior {
    pub const BYZANTINE: [Behavior; 7] = [
        Behavior::Silent,
        Behavior::InvalidSignatures,
        Behavior::EquivocatingPrimary,
        Behavior::ConflictingPrepares,
        Behavior::Replayer,
        Behavior::BadTimestamps,
        Behavior::Twin,
    ];
}

#[derive(Default)]
pub struct MockState {
    pub seen: Vec<Message>,
}

fn resign_pre_prepare(id: ReplicaId, mut pp: Signed<PrePrepare>) -> Signed<PrePrepare> {
    pp.message.digest = pp.message.batch.digest();
    pp.signature = sim_signature(id, Domain::PrePrepare, &pp.message.signed_bytes());
    pp
}

fn corrupt(sig: &mut [u8]) {
    if let Some(b) = sig.first_mut() {
        *b ^= 0x55;
    }
}

/// What actually leaves a node when its core sends `message` to `to` (None: everyone).
pub fn transform(
    sim: &mut Sim,
    index: usize,
    to: Option<ReplicaId>,
    message: Message,
) -> Vec<(Option<ReplicaId>, Message)> {
    let id = sim.nodes[index].id;
    match sim.nodes[index].behavior {
        Behavior::Honest | Behavior::Twin | Behavior::Replayer => vec![(to, message)],
        Behavior::Silent => vec![],
        Behavior::InvalidSignatures => {
            let mut m = message;
            match &mut m {
                Message::PrePrepare(s) => corrupt(&mut s.signature),
                Message::Prepare(s) | Message::Commit(s) => corrupt(&mut s.signature),
                Message::Checkpoint(s) => corrupt(&mut s.signature),
                Message::ViewChange(s) => corrupt(&mut s.signature),
                Message::NewView(s) => corrupt(&mut s.signature),
                _ => {}
            }
            vec![(to, m)]
        }
        Behavior::EquivocatingPrimary => match message {
            Message::PrePrepare(pp) if pp.from == id && to.is_none() => {
                let mut other = pp.clone();
                other.message.batch.timestamp_ms += 1;
                if other.message.batch.requests.len() > 1 {
                    other.message.batch.requests.pop();
                }
                let other = resign_pre_prepare(id, other);
                let half = sim.config.n / 2;
                (0..sim.config.n)
                    .filter(|&r| r != id)
                    .map(|r| {
                        (
                            Some(r),
                            Message::PrePrepare(if r < half { pp.clone() } else { other.clone() }),
                        )
                    })
                    .collect()
            }
            m => vec![(to, m)],
        },
        Behavior::ConflictingPrepares => match message {
            Message::Prepare(mut v) => {
                v.message.digest = [sim.rng.next() as u8; 32];
                v.signature =
                    sim_signature(id, Domain::Prepare, &PrepareVote(&v.message).signed_bytes());
                vec![(to, Message::Prepare(v))]
            }
            Message::Commit(mut v) => {
                v.message.digest = [sim.rng.next() as u8; 32];
                v.signature =
                    sim_signature(id, Domain::Commit, &CommitVote(&v.message).signed_bytes());
                vec![(to, Message::Commit(v))]
            }
            m => vec![(to, m)],
        },
        Behavior::BadTimestamps => match message {
            Message::PrePrepare(mut pp) if pp.from == id => {
                let skew = sim.config.max_clock_skew_ms;
                pp.message.batch.timestamp_ms = if sim.rng.chance(500) {
                    sim.now + 10 * skew
                } else {
                    1
                };
                vec![(to, Message::PrePrepare(resign_pre_prepare(id, pp)))]
            }
            m => vec![(to, m)],
        },
    }
}

pub fn drops_incoming(behavior: &Behavior) -> bool {
    matches!(behavior, Behavior::Silent)
}

/// Replayers remember what they hear (bounded).
pub fn observe(sim: &mut Sim, index: usize, message: &Message) {
    if sim.nodes[index].behavior == Behavior::Replayer {
        let seen = &mut sim.nodes[index].mock.seen;
        if seen.len() < 4000 {
            seen.push(message.clone());
        } else {
            let i = (sim.rng.next() as usize) % seen.len();
            seen[i] = message.clone();
        }
    }
}

/// Periodic mischief: replayers resend old messages to random replicas.
pub fn act(sim: &mut Sim) {
    if !sim.now.is_multiple_of(40) {
        return;
    }
    for index in 0..sim.nodes.len() {
        if sim.nodes[index].behavior != Behavior::Replayer || sim.nodes[index].mock.seen.is_empty()
        {
            continue;
        }
        let from = sim.nodes[index].id;
        for _ in 0..8 {
            let seen = &sim.nodes[index].mock.seen;
            let message = seen[(sim.rng.next() as usize) % seen.len()].clone();
            let to = (sim.rng.next() % u64::from(sim.config.n)) as ReplicaId;
            if to != from {
                sim.enqueue_public(from, to, message);
            }
        }
    }
}
