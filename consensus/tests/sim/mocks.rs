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
    /// Floods every replica with validly signed checkpoints far beyond the watermarks and
    /// with made-up state roots inside them, hoping to push the real ones out.
    CheckpointFlooder,
    /// Asks, with validly signed view changes, for views far ahead (up to `u64::MAX`),
    /// hoping to drag correct replicas along or overflow their view arithmetic.
    ViewJumper,
    /// As primary, labels each batched payload with another request's id (and re-signs).
    MislabellingPrimary,
    /// Floods replicas changing views with pre-prepares and votes for the view they are
    /// moving to: large batches it has no right to propose, and many votes, hoping to fill
    /// the queue that holds such messages until the new view arrives.
    EarlyFlooder,
    /// Forwards every replica a stream of requests of its own making (each correctly named
    /// by its payload, as a replica replaying clients' envelopes would), hoping to fill the
    /// pending queue so that clients' requests are refused.
    ForwardFlooder,
    /// Never helps a view change complete (drops its own view changes) and, on each view
    /// change it hears for view v, asks at once for v + 1, hoping to pull the replicas
    /// changing views one view further each time, for ever.
    ViewPusher,
    /// Suspects every primary all the time, for its own view and for views far ahead
    /// (`u64::MAX` too), hoping to depose a correct primary or drag replicas to far views
    /// (issue 18, `suspicion.rs`).
    FalseSuspect,
}

impl Behavior {
    pub const BYZANTINE: [Behavior; 14] = [
        Behavior::Silent,
        Behavior::InvalidSignatures,
        Behavior::EquivocatingPrimary,
        Behavior::ConflictingPrepares,
        Behavior::Replayer,
        Behavior::BadTimestamps,
        Behavior::Twin,
        Behavior::CheckpointFlooder,
        Behavior::ViewJumper,
        Behavior::MislabellingPrimary,
        Behavior::EarlyFlooder,
        Behavior::ForwardFlooder,
        Behavior::ViewPusher,
        Behavior::FalseSuspect,
    ];
}

#[derive(Default)]
pub struct MockState {
    pub seen: Vec<Message>,
    /// The highest view a pusher asked for.
    pub pushed: View,
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
        Behavior::Honest
        | Behavior::Twin
        | Behavior::Replayer
        | Behavior::CheckpointFlooder
        | Behavior::ViewJumper
        | Behavior::EarlyFlooder
        | Behavior::FalseSuspect
        | Behavior::ForwardFlooder => vec![(to, message)],
        Behavior::ViewPusher => match message {
            Message::ViewChange(_) => Vec::new(),
            other => vec![(to, other)],
        },
        Behavior::MislabellingPrimary => match message {
            Message::PrePrepare(mut pp) if pp.from == id && pp.message.batch.requests.len() > 1 => {
                // Rotate the ids: payload i now carries request i+1's id.
                let requests = &mut pp.message.batch.requests;
                let first = requests[0].tx_id;
                for i in 0..requests.len() - 1 {
                    requests[i].tx_id = requests[i + 1].tx_id;
                }
                let last = requests.len() - 1;
                requests[last].tx_id = first;
                vec![(to, Message::PrePrepare(resign_pre_prepare(id, pp)))]
            }
            m => vec![(to, m)],
        },
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
    if sim.nodes[index].behavior == Behavior::ViewPusher
        && let Message::ViewChange(vc) = message
    {
        push_view(sim, index, vc.message.new_view.saturating_add(1));
    }
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

/// Periodic mischief: replayers resend old messages to random replicas; flooders and
/// jumpers send what they are named for.
pub fn act(sim: &mut Sim) {
    // An early flooder floods every millisecond while a replica changes views (it hears their
    // view changes): a view change all replicas join at once is over in a few milliseconds.
    let changing = sim
        .nodes
        .iter()
        .any(|n| n.replica.as_ref().is_some_and(|r| r.in_view_change()));
    if changing && !sim.now.is_multiple_of(40) {
        for index in 0..sim.nodes.len() {
            if sim.nodes[index].behavior == Behavior::EarlyFlooder {
                flood_early(sim, index);
            }
        }
    }
    if !sim.now.is_multiple_of(40) {
        return;
    }
    for index in 0..sim.nodes.len() {
        match sim.nodes[index].behavior {
            Behavior::CheckpointFlooder => flood_checkpoints(sim, index),
            Behavior::ViewJumper => jump_views(sim, index),
            Behavior::EarlyFlooder => flood_early(sim, index),
            Behavior::ForwardFlooder => flood_forwards(sim, index),
            Behavior::FalseSuspect => suspect_falsely(sim, index),
            _ => {}
        }
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

fn broadcast_from(sim: &mut Sim, index: usize, message: Message) {
    let from = sim.nodes[index].id;
    for to in 0..sim.config.n {
        if to != from {
            sim.enqueue_public(from, to, message.clone());
        }
    }
}

/// Sixteen signed checkpoints a round: most far beyond any high watermark (each at a fresh
/// sequence number), some inside it with a made-up root.
fn flood_checkpoints(sim: &mut Sim, index: usize) {
    let Some(replica) = sim.nodes[index].replica.as_ref() else {
        return;
    };
    let id = sim.nodes[index].id;
    let k = sim.config.checkpoint_interval;
    let low = replica.low_watermark();
    for i in 0..16u64 {
        let seq = if i < 12 {
            low + k * (sim.config.watermark_window / k + 1 + sim.rng.below(1 << 20))
        } else {
            low + k * (1 + sim.rng.below(sim.config.watermark_window / k))
        };
        let checkpoint = Checkpoint {
            seq,
            state_root: [sim.rng.next() as u8; 32],
        };
        let signature = sim_signature(id, Domain::Checkpoint, &checkpoint.signed_bytes());
        broadcast_from(
            sim,
            index,
            Message::Checkpoint(Signed {
                from: id,
                message: checkpoint,
                signature,
            }),
        );
    }
}

/// Valid view changes (its own stable checkpoint, nothing prepared) for views far ahead.
fn suspect_falsely(sim: &mut Sim, index: usize) {
    let Some(replica) = sim.nodes[index].replica.as_ref() else {
        return;
    };
    let from = sim.nodes[index].id;
    let current = replica.view();
    for view in [
        current,
        current.saturating_add(1),
        current.saturating_add(Config::MAX_VIEW_LEAD),
        u64::MAX,
    ] {
        broadcast_from(sim, index, Message::Suspect { from, view });
    }
}

fn jump_views(sim: &mut Sim, index: usize) {
    let Some(replica) = sim.nodes[index].replica.as_ref() else {
        return;
    };
    let id = sim.nodes[index].id;
    let current = replica.view();
    let checkpoint = replica.durable_state().stable.clone();
    let views = [
        u64::MAX,
        u64::MAX - 1,
        current.saturating_add(1 + sim.rng.below(1 << 40)),
        current.saturating_add(1000),
    ];
    for new_view in views {
        let vc = ViewChange {
            new_view,
            checkpoint: checkpoint.clone(),
            prepared: Vec::new(),
        };
        let signature = sim_signature(id, Domain::ViewChange, &vc.signed_bytes());
        broadcast_from(
            sim,
            index,
            Message::ViewChange(Signed {
                from: id,
                message: vc,
                signature,
            }),
        );
    }
}

/// To every replica changing views: a pre-prepare of a large junk batch and 32 votes, for
/// the view it is moving to, all validly signed by the flooder.
fn flood_early(sim: &mut Sim, index: usize) {
    let id = sim.nodes[index].id;
    let targets: Vec<(ReplicaId, View)> = sim
        .nodes
        .iter()
        .filter(|n| n.id != id)
        .filter_map(|n| n.replica.as_ref().map(|r| (n.id, r.view())))
        .collect();
    for (to, view) in targets {
        let tx_id = [sim.rng.next() as u8; 32];
        let mut payload = tx_id.to_vec();
        payload.resize(sim.config.max_batch_bytes / 2, 0xaa);
        let batch = Batch {
            timestamp_ms: sim.now,
            requests: vec![Request { tx_id, payload }],
        };
        let pp = PrePrepare {
            view,
            seq: 1 + sim.rng.below(1 << 30),
            digest: batch.digest(),
            batch,
        };
        let signature = sim_signature(id, Domain::PrePrepare, &pp.signed_bytes());
        sim.enqueue_public(
            id,
            to,
            Message::PrePrepare(Signed {
                from: id,
                message: pp,
                signature,
            }),
        );
        for _ in 0..32 {
            let vote = Vote {
                view,
                seq: 1 + sim.rng.below(1 << 30),
                digest: [sim.rng.next() as u8; 32],
            };
            let signature = sim_signature(id, Domain::Commit, &CommitVote(&vote).signed_bytes());
            sim.enqueue_public(
                id,
                to,
                Message::Commit(Signed {
                    from: id,
                    message: vote,
                    signature,
                }),
            );
        }
    }
}

/// Forwards to every other replica each round, each a fresh request named by its payload,
/// of up to 512 bytes: as many as the pending queue holds (between 16 and 256).
fn flood_forwards(sim: &mut Sim, index: usize) {
    let id = sim.nodes[index].id;
    for to in (0..sim.config.n).filter(|&to| to != id) {
        for _ in 0..sim.config.max_pending_requests.clamp(16, 256) {
            let mut tx_id = [0xf0; 32];
            tx_id[..8].copy_from_slice(&sim.rng.next().to_be_bytes());
            let mut payload = tx_id.to_vec();
            payload.resize((sim.config.max_batch_bytes / 4).clamp(33, 512), 0xee);
            sim.forwarded_only.insert(tx_id);
            let request = Request { tx_id, payload };
            sim.enqueue_public(id, to, Message::Forward { from: id, request });
        }
    }
}

/// A validly signed view change for `view` (no prepared batches), once per view.
fn push_view(sim: &mut Sim, index: usize, view: View) {
    let Some(replica) = sim.nodes[index].replica.as_ref() else {
        return;
    };
    if view <= sim.nodes[index].mock.pushed {
        return;
    }
    let id = sim.nodes[index].id;
    let vc = ViewChange {
        new_view: view,
        checkpoint: replica.durable_state().stable.clone(),
        prepared: Vec::new(),
    };
    let signature = sim_signature(id, Domain::ViewChange, &vc.signed_bytes());
    sim.nodes[index].mock.pushed = view;
    let message = Message::ViewChange(Signed {
        from: id,
        message: vc,
        signature,
    });
    for to in (0..sim.config.n).filter(|&to| to != id) {
        sim.enqueue_fast(id, to, message.clone());
    }
}
