//! Fuzz target: the PBFT core (replica 0 of four) fed arbitrary protocol messages from the
//! other replicas, correctly signed with their keys (a Byzantine replica signs whatever it
//! likes), arbitrary client requests and clock ticks, with the host contract kept (batches
//! executed in order, persists confirmed). Any panic is a bug: nothing a replica sends may
//! stop a peer (issue 14). Views, sequence numbers and times are mostly small, so the
//! fuzzer reaches the protocol's states, and sometimes extreme, so it reaches the edges.

use arbitrary::{Arbitrary, Unstructured};
use medledger_pbft::*;
use sha2::{Digest as _, Sha256};

/// Signatures: SHA-256 of the signer, the domain and the bytes (as the simulator's).
fn signature(id: ReplicaId, domain: Domain, bytes: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"fuzz-secret");
    h.update(id.to_be_bytes());
    h.update(domain.tag());
    h.update(bytes);
    h.finalize().to_vec()
}

struct FuzzCrypto(ReplicaId);

impl Crypto for FuzzCrypto {
    fn request_id(&self, payload: &[u8]) -> Option<TxId> {
        payload.get(..32)?.try_into().ok()
    }
    fn sign(&self, domain: Domain, bytes: &[u8]) -> Vec<u8> {
        signature(self.0, domain, bytes)
    }
    fn verify(&self, signer: ReplicaId, domain: Domain, bytes: &[u8], sig: &[u8]) -> bool {
        signature(signer, domain, bytes) == sig
    }
}

fn number(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    if u.ratio(1, 16)? {
        u64::arbitrary(u)
    } else {
        Ok(u64::from(u.int_in_range(0..=80u8)?))
    }
}

fn sender(u: &mut Unstructured<'_>) -> arbitrary::Result<ReplicaId> {
    u.int_in_range(1..=3)
}

fn request(u: &mut Unstructured<'_>) -> arbitrary::Result<Request> {
    let mut tx_id = [0u8; 32];
    tx_id[0] = u.int_in_range(0..=15u8)?;
    let mut payload = tx_id.to_vec();
    payload.extend(Vec::<u8>::arbitrary(u)?.into_iter().take(64));
    if u.ratio(1, 8)? {
        // Mislabelled: the id is not the payload's.
        tx_id[1] = 1;
    }
    Ok(Request { tx_id, payload })
}

fn batch(u: &mut Unstructured<'_>) -> arbitrary::Result<Batch> {
    let count = u.int_in_range(0..=3u8)?;
    let mut requests = Vec::new();
    for _ in 0..count {
        requests.push(request(u)?);
    }
    Ok(Batch {
        timestamp_ms: number(u)?,
        requests,
    })
}

fn signed<M>(from: ReplicaId, message: M, domain: Domain, bytes: Vec<u8>) -> Signed<M> {
    Signed {
        from,
        signature: signature(from, domain, &bytes),
        message,
    }
}

fn pre_prepare(u: &mut Unstructured<'_>) -> arbitrary::Result<Signed<PrePrepare>> {
    let from = sender(u)?;
    let batch = batch(u)?;
    let digest = if u.ratio(1, 8)? {
        [7; 32]
    } else {
        batch.digest()
    };
    let pp = PrePrepare {
        view: number(u)?,
        seq: number(u)?,
        digest,
        batch,
    };
    let bytes = pp.signed_bytes();
    Ok(signed(from, pp, Domain::PrePrepare, bytes))
}

fn vote(u: &mut Unstructured<'_>, domain: Domain) -> arbitrary::Result<Signed<Vote>> {
    let from = sender(u)?;
    let v = Vote {
        view: number(u)?,
        seq: number(u)?,
        digest: [u.int_in_range(0..=3u8)?; 32],
    };
    let bytes = match domain {
        Domain::Prepare => PrepareVote(&v).signed_bytes(),
        _ => CommitVote(&v).signed_bytes(),
    };
    Ok(signed(from, v, domain, bytes))
}

fn checkpoint_proof(u: &mut Unstructured<'_>) -> arbitrary::Result<CheckpointProof> {
    let seq = number(u)?;
    let state_root = [u.int_in_range(0..=3u8)?; 32];
    let mut signatures = Vec::new();
    for from in 1..=3 {
        if u.ratio(3, 4)? {
            let c = Checkpoint { seq, state_root };
            let bytes = c.signed_bytes();
            signatures.push(signed(from, c, Domain::Checkpoint, bytes));
        }
    }
    Ok(CheckpointProof {
        seq,
        state_root,
        signatures,
    })
}

fn view_change(u: &mut Unstructured<'_>, from: ReplicaId) -> arbitrary::Result<Signed<ViewChange>> {
    let mut prepared = Vec::new();
    for _ in 0..u.int_in_range(0..=2u8)? {
        let pre_prepare = pre_prepare(u)?;
        let mut prepares = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8)? {
            prepares.push(vote(u, Domain::Prepare)?);
        }
        prepared.push(PreparedProof {
            pre_prepare,
            prepares,
        });
    }
    let vc = ViewChange {
        new_view: number(u)?,
        checkpoint: checkpoint_proof(u)?,
        prepared,
    };
    let bytes = vc.signed_bytes();
    Ok(signed(from, vc, Domain::ViewChange, bytes))
}

fn message(u: &mut Unstructured<'_>) -> arbitrary::Result<Message> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => Message::Forward {
            from: sender(u)?,
            request: request(u)?,
        },
        1 => Message::PrePrepare(pre_prepare(u)?),
        2 => Message::Prepare(vote(u, Domain::Prepare)?),
        3 => Message::Commit(vote(u, Domain::Commit)?),
        4 => {
            let from = sender(u)?;
            let c = Checkpoint {
                seq: number(u)?,
                state_root: [u.int_in_range(0..=3u8)?; 32],
            };
            let bytes = c.signed_bytes();
            Message::Checkpoint(signed(from, c, Domain::Checkpoint, bytes))
        }
        5 => {
            let from = sender(u)?;
            Message::ViewChange(view_change(u, from)?)
        }
        6 => {
            let from = sender(u)?;
            let mut view_changes = Vec::new();
            for r in 1..=3 {
                if u.ratio(3, 4)? {
                    view_changes.push(view_change(u, r)?);
                }
            }
            let mut pre_prepares = Vec::new();
            for _ in 0..u.int_in_range(0..=2u8)? {
                pre_prepares.push(pre_prepare(u)?);
            }
            let nv = NewView {
                view: number(u)?,
                view_changes,
                pre_prepares,
            };
            let bytes = nv.signed_bytes();
            Message::NewView(signed(from, nv, Domain::NewView, bytes))
        }
        7 => Message::Fetch {
            from: sender(u)?,
            after: number(u)?,
            up_to: number(u)?,
        },
        8 => Message::Suspect {
            from: sender(u)?,
            view: number(u)?,
        },
        _ => {
            let mut batches = Vec::new();
            for _ in 0..u.int_in_range(0..=2u8)? {
                let seq = number(u)?;
                let batch = batch(u)?;
                let digest = batch.digest();
                let view = number(u)?;
                let mut commits = Vec::new();
                for from in 1..=3 {
                    let v = Vote { view, seq, digest };
                    let bytes = CommitVote(&v).signed_bytes();
                    commits.push(signed(from, v, Domain::Commit, bytes));
                }
                batches.push(CommittedBatch {
                    seq,
                    batch,
                    commits,
                });
            }
            Message::FetchReply {
                batches,
                checkpoint: checkpoint_proof(u)?,
            }
        }
    })
}

/// Performs what the core asks, as the peer's driver does: persists are confirmed, batches
/// execute in order (each state root chains the previous one).
fn perform(replica: &mut Replica, actions: Vec<Action>, root: &mut [u8; 32]) {
    let mut queue: std::collections::VecDeque<Action> = actions.into();
    let mut steps = 0;
    while let Some(action) = queue.pop_front() {
        steps += 1;
        if steps > 10_000 {
            panic!("the core keeps asking for work: a loop");
        }
        match action {
            Action::Persist { token } => queue.extend(replica.persisted(token)),
            Action::Execute { seq, batch } => {
                let mut h = Sha256::new();
                h.update(*root);
                h.update(batch.digest());
                *root = h.finalize().into();
                queue.extend(replica.executed(seq, *root));
            }
            _ => {}
        }
    }
}

fn run(data: &[u8]) {
    let mut config = Config::new(4);
    config.checkpoint_interval = 4;
    config.watermark_window = 8;
    config.retain_committed = 16;
    let mut replica = Replica::new(
        0,
        config,
        Box::new(FuzzCrypto(0)),
        DurableState::default(),
        0,
    );
    let mut root = [0u8; 32];
    let mut now: u64 = 1_000;
    let mut u = Unstructured::new(data);
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        let Ok(kind) = u.int_in_range(0..=9u8) else {
            break;
        };
        let actions = match kind {
            0 => match request(&mut u) {
                Ok(r) => replica.request(r, now),
                Err(_) => break,
            },
            1 => {
                let Ok(step) = number(&mut u) else { break };
                now = now.saturating_add(step.saturating_mul(50));
                replica.tick(now)
            }
            _ => match message(&mut u) {
                Ok(m) => replica.receive(m, now),
                Err(_) => break,
            },
        };
        perform(&mut replica, actions, &mut root);
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| run(data));
}
