//! Requests, batches and the signed protocol messages, with the canonical byte encoding
//! their signatures cover. Every kind of message is signed in its own domain.

use sha2::{Digest as _, Sha256};

pub type ReplicaId = u32;
pub type View = u64;
pub type Seq = u64;
pub type Digest = [u8; 32];
pub type TxId = [u8; 32];

/// A client request: its id (which commits at most once) and opaque payload. The host
/// checks the client's signature before handing a request to the core.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    pub tx_id: TxId,
    pub payload: Vec<u8>,
}

impl Request {
    /// The bytes a request counts for in batch and queue limits: its id and payload.
    pub fn size_bytes(&self) -> usize {
        self.payload.len().saturating_add(32)
    }
}

/// An ordered batch of requests, stamped with consensus time by the primary. A batch with
/// no requests and timestamp 0 is the null batch a new primary uses to fill gaps (§4.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub timestamp_ms: u64,
    pub requests: Vec<Request>,
}

impl Batch {
    pub fn null() -> Batch {
        Batch::default()
    }

    pub fn is_null(&self) -> bool {
        self.requests.is_empty()
    }

    pub fn size_bytes(&self) -> usize {
        self.requests
            .iter()
            .fold(0usize, |sum, r| sum.saturating_add(r.size_bytes()))
    }

    pub fn digest(&self) -> Digest {
        let mut e = Encoder::new(b"batch");
        e.u64(self.timestamp_ms);
        e.u64(self.requests.len() as u64);
        for r in &self.requests {
            e.bytes(&r.tx_id);
            e.bytes(&r.payload);
        }
        e.finish_digest()
    }
}

/// What a signature is for: one domain per message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
}

impl Domain {
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::PrePrepare => b"medledger/v1/pbft/pre-prepare",
            Domain::Prepare => b"medledger/v1/pbft/prepare",
            Domain::Commit => b"medledger/v1/pbft/commit",
            Domain::Checkpoint => b"medledger/v1/pbft/checkpoint",
            Domain::ViewChange => b"medledger/v1/pbft/view-change",
            Domain::NewView => b"medledger/v1/pbft/new-view",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrePrepare {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
    pub batch: Batch,
}

/// Prepare and Commit have the same shape; the domain tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vote {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    pub seq: Seq,
    pub state_root: Digest,
}

/// Proof that a batch prepared at `seq` in some view: the primary's pre-prepare and 2f
/// matching prepares from distinct backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedProof {
    pub pre_prepare: Signed<PrePrepare>,
    pub prepares: Vec<Signed<Vote>>,
}

impl PreparedProof {
    /// The proof with its batch left out (the null batch in its place): the signatures cover
    /// only view, sequence number and digest, so it proves the same. A new-view message
    /// carries its view changes this way and each batch once, in its O set (Castro–Liskov
    /// §4.4 sends digests in view changes for the same reason: message size).
    pub fn without_batch(&self) -> PreparedProof {
        let mut proof = self.clone();
        proof.pre_prepare.message.batch = Batch::null();
        proof
    }
}

/// 2f+1 signed checkpoints for the same (seq, state root). Empty for the genesis state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointProof {
    pub seq: Seq,
    pub state_root: Digest,
    pub signatures: Vec<Signed<Checkpoint>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewChange {
    pub new_view: View,
    pub checkpoint: CheckpointProof,
    pub prepared: Vec<PreparedProof>,
}

impl Signed<ViewChange> {
    /// The view change with every prepared proof's batch left out; its signature still
    /// holds (see [`PreparedProof::without_batch`]).
    pub fn without_batches(&self) -> Signed<ViewChange> {
        Signed {
            from: self.from,
            message: ViewChange {
                new_view: self.message.new_view,
                checkpoint: self.message.checkpoint.clone(),
                prepared: self
                    .message
                    .prepared
                    .iter()
                    .map(PreparedProof::without_batch)
                    .collect(),
            },
            signature: self.signature.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<Signed<ViewChange>>,
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

/// A committed batch with the 2f+1 commits that prove it, for state transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBatch {
    pub seq: Seq,
    pub batch: Batch,
    pub commits: Vec<Signed<Vote>>,
}

/// A message signed by `from` in the domain of its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<M> {
    pub from: ReplicaId,
    pub message: M,
    pub signature: Vec<u8>,
}

/// Everything replicas send each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A client request a backup passes to the primary (unsigned: the host authenticated
    /// the client, and the channel to `from`; the primary recomputes the id and charges the
    /// request to `from`'s share of its pending queue).
    Forward {
        from: ReplicaId,
        request: Request,
    },
    PrePrepare(Signed<PrePrepare>),
    Prepare(Signed<Vote>),
    Commit(Signed<Vote>),
    Checkpoint(Signed<Checkpoint>),
    ViewChange(Signed<ViewChange>),
    NewView(Signed<NewView>),
    /// `from` suspects the primary of `view` and still takes part in it (see `suspicion.rs`;
    /// unsigned: the host authenticated the channel to `from`).
    Suspect {
        from: ReplicaId,
        view: View,
    },
    /// Ask for committed batches in `(after, up_to]` (unsigned: the host authenticated the
    /// channel to `from`).
    Fetch {
        from: ReplicaId,
        after: Seq,
        up_to: Seq,
    },
    /// Committed batches with their commit certificates, and the proof of the checkpoint
    /// they lead to.
    FetchReply {
        batches: Vec<CommittedBatch>,
        checkpoint: CheckpointProof,
    },
}

impl Message {
    /// Bytes of batches (as [`Batch::size_bytes`] counts them) this message carries, in every
    /// pre-prepare, prepared proof and committed batch in it. A correct replica never sends
    /// more than [`Config::max_message_batch_bytes`](crate::Config::max_message_batch_bytes).
    pub fn batch_bytes(&self) -> usize {
        let proofs = |vc: &ViewChange| {
            vc.prepared.iter().fold(0usize, |sum, p| {
                sum.saturating_add(p.pre_prepare.message.batch.size_bytes())
            })
        };
        match self {
            Message::Forward { request, .. } => request.size_bytes(),
            Message::PrePrepare(pp) => pp.message.batch.size_bytes(),
            Message::ViewChange(vc) => proofs(&vc.message),
            Message::NewView(nv) => {
                let in_view_changes = nv
                    .message
                    .view_changes
                    .iter()
                    .fold(0usize, |sum, vc| sum.saturating_add(proofs(&vc.message)));
                nv.message
                    .pre_prepares
                    .iter()
                    .fold(in_view_changes, |sum, pp| {
                        sum.saturating_add(pp.message.batch.size_bytes())
                    })
            }
            Message::FetchReply { batches, .. } => batches
                .iter()
                .fold(0usize, |sum, c| sum.saturating_add(c.batch.size_bytes())),
            Message::Prepare(_)
            | Message::Commit(_)
            | Message::Checkpoint(_)
            | Message::Suspect { .. }
            | Message::Fetch { .. } => 0,
        }
    }
}

/// Canonical encoding: a domain label, then fixed-width integers and length-prefixed bytes.
pub struct Encoder(Vec<u8>);

impl Encoder {
    pub fn new(label: &[u8]) -> Self {
        let mut e = Encoder(Vec::with_capacity(128));
        e.bytes(label);
        e
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
    pub fn finish_digest(self) -> Digest {
        Sha256::digest(&self.0).into()
    }
}

/// What a message signs: its canonical bytes, in its domain.
pub trait Signable {
    const DOMAIN: Domain;
    fn signed_bytes(&self) -> Vec<u8>;
}

impl Signable for PrePrepare {
    const DOMAIN: Domain = Domain::PrePrepare;
    fn signed_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(Self::DOMAIN.tag());
        e.u64(self.view);
        e.u64(self.seq);
        e.bytes(&self.digest);
        e.finish()
    }
}

/// Prepares and commits share a shape; these wrappers give each its domain.
pub struct PrepareVote<'a>(pub &'a Vote);
pub struct CommitVote<'a>(pub &'a Vote);

fn vote_bytes(domain: Domain, v: &Vote) -> Vec<u8> {
    let mut e = Encoder::new(domain.tag());
    e.u64(v.view);
    e.u64(v.seq);
    e.bytes(&v.digest);
    e.finish()
}

impl Signable for PrepareVote<'_> {
    const DOMAIN: Domain = Domain::Prepare;
    fn signed_bytes(&self) -> Vec<u8> {
        vote_bytes(Self::DOMAIN, self.0)
    }
}

impl Signable for CommitVote<'_> {
    const DOMAIN: Domain = Domain::Commit;
    fn signed_bytes(&self) -> Vec<u8> {
        vote_bytes(Self::DOMAIN, self.0)
    }
}

impl Signable for Checkpoint {
    const DOMAIN: Domain = Domain::Checkpoint;
    fn signed_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(Self::DOMAIN.tag());
        e.u64(self.seq);
        e.bytes(&self.state_root);
        e.finish()
    }
}

fn signed_ref<M>(e: &mut Encoder, s: &Signed<M>) {
    e.u64(u64::from(s.from));
    e.bytes(&s.signature);
}

impl Signable for ViewChange {
    const DOMAIN: Domain = Domain::ViewChange;
    fn signed_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(Self::DOMAIN.tag());
        e.u64(self.new_view);
        e.u64(self.checkpoint.seq);
        e.bytes(&self.checkpoint.state_root);
        e.u64(self.checkpoint.signatures.len() as u64);
        for s in &self.checkpoint.signatures {
            signed_ref(&mut e, s);
        }
        e.u64(self.prepared.len() as u64);
        for p in &self.prepared {
            e.bytes(&p.pre_prepare.message.signed_bytes());
            signed_ref(&mut e, &p.pre_prepare);
            e.u64(p.prepares.len() as u64);
            for v in &p.prepares {
                signed_ref(&mut e, v);
            }
        }
        e.finish()
    }
}

impl Signable for NewView {
    const DOMAIN: Domain = Domain::NewView;
    fn signed_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new(Self::DOMAIN.tag());
        e.u64(self.view);
        e.u64(self.view_changes.len() as u64);
        for vc in &self.view_changes {
            e.bytes(&vc.message.signed_bytes());
            signed_ref(&mut e, vc);
        }
        e.u64(self.pre_prepares.len() as u64);
        for pp in &self.pre_prepares {
            e.bytes(&pp.message.signed_bytes());
            signed_ref(&mut e, pp);
        }
        e.finish()
    }
}

/// Signing, verification and request ids, provided by the host so it can use its keys,
/// batch its checks, and name requests by its own transaction format.
pub trait Crypto {
    /// The id of the request whose payload is `payload`, recomputed from the payload itself
    /// (the host's transaction id), or `None` if the payload names none. The core never
    /// trusts the id a request arrives with: a primary, a backup or a view change that labels
    /// payload X with Y's id is caught by this (otherwise X would execute while the clients
    /// waiting for Y hear that Y committed).
    fn request_id(&self, payload: &[u8]) -> Option<TxId>;
    /// Signs `bytes` (already carrying their domain label) as this replica.
    fn sign(&self, domain: Domain, bytes: &[u8]) -> Vec<u8>;
    /// Is `signature` `signer`'s signature over `bytes` in `domain`?
    fn verify(&self, signer: ReplicaId, domain: Domain, bytes: &[u8], signature: &[u8]) -> bool;
    /// Verifies many at once; hosts with batch verification override this.
    fn verify_all(&self, items: &[(ReplicaId, Domain, Vec<u8>, &[u8])]) -> bool {
        items
            .iter()
            .all(|(signer, domain, bytes, sig)| self.verify(*signer, *domain, bytes, sig))
    }
}
