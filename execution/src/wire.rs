//! PBFT messages on the wire: the consensus core's types to and from `medledger.v1`
//! protobuf. Decoding is strict: a missing field or a digest that is not 32 bytes is an
//! error, never a default.

use medledger_pbft as pbft;
use medledger_proto::v1;
use v1::replica_message::Kind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed replica message: {0}")]
pub struct WireError(pub &'static str);

type Result<T> = std::result::Result<T, WireError>;

fn digest(bytes: &[u8]) -> Result<pbft::Digest> {
    bytes
        .try_into()
        .map_err(|_| WireError("a digest must be 32 bytes"))
}

fn required<T>(value: Option<T>, what: &'static str) -> Result<T> {
    value.ok_or(WireError(what))
}

// --------------------------------------------------------------------------------- size

/// Largest replica message accepted or sent, encoded (the transport's limit).
pub const MAX_REPLICA_MESSAGE_BYTES: usize = 32 << 20;

/// Protobuf framing per request beyond [`pbft::Request::size_bytes`]: tags and lengths.
const REQUEST_FRAMING: usize = 16;
/// A batch's framing besides its requests: timestamp, tags, lengths.
const BATCH_FRAMING: usize = 32;
/// One signed vote, checkpoint or pre-prepare header: two 10-byte varints, a 32-byte digest,
/// a 64-byte signature, the sender, tags and lengths (130 bytes at most; rounded up).
const SIGNED_HEADER: usize = 160;
/// A message's own fields and framing besides what it carries.
const MESSAGE_FRAMING: usize = 64;

/// The largest encoded replica message a correct replica sends under `config`: the larger
/// of a view change carrying one window of full batches, a new view (2f+1 view changes
/// without their batches, and one window of full batches), and a fetch reply (one window of
/// committed batches with their commits). An upper bound, checked against encodings of
/// those messages in the tests; the genesis refuses parameters whose bound exceeds
/// [`MAX_REPLICA_MESSAGE_BYTES`], so no view change can be too large to send.
pub fn max_encoded_bytes(config: &pbft::Config) -> usize {
    let n = config.n as usize;
    let window = usize::try_from(config.watermark_window).unwrap_or(usize::MAX);
    let batch = config
        .max_batch_bytes
        .saturating_add(config.max_batch_requests.saturating_mul(REQUEST_FRAMING))
        .saturating_add(BATCH_FRAMING);
    let signatures = n.saturating_mul(SIGNED_HEADER);
    let checkpoint_proof = MESSAGE_FRAMING.saturating_add(signatures);
    let proof = SIGNED_HEADER.saturating_add(signatures);
    let view_change_without_batches = MESSAGE_FRAMING
        .saturating_add(SIGNED_HEADER)
        .saturating_add(checkpoint_proof)
        .saturating_add(window.saturating_mul(proof));
    let view_change = view_change_without_batches.saturating_add(window.saturating_mul(batch));
    let new_view = MESSAGE_FRAMING
        .saturating_add(SIGNED_HEADER)
        .saturating_add(config.quorum().saturating_mul(view_change_without_batches))
        .saturating_add(window.saturating_mul(SIGNED_HEADER.saturating_add(batch)));
    let fetch_reply = MESSAGE_FRAMING
        .saturating_add(checkpoint_proof)
        .saturating_add(
            window.saturating_mul(
                MESSAGE_FRAMING
                    .saturating_add(batch)
                    .saturating_add(signatures),
            ),
        );
    view_change.max(new_view).max(fetch_reply)
}

// ------------------------------------------------------------------------------- encode

pub fn request_to_proto(r: &pbft::Request) -> v1::PbftRequest {
    v1::PbftRequest {
        tx_id: r.tx_id.to_vec(),
        payload: r.payload.clone(),
    }
}

pub fn batch_to_proto(b: &pbft::Batch) -> v1::PbftBatch {
    v1::PbftBatch {
        timestamp_ms: b.timestamp_ms,
        requests: b.requests.iter().map(request_to_proto).collect(),
    }
}

fn vote_to_proto(v: &pbft::Signed<pbft::Vote>) -> v1::PbftSignedVote {
    v1::PbftSignedVote {
        from: v.from,
        message: Some(v1::PbftVote {
            view: v.message.view,
            seq: v.message.seq,
            digest: v.message.digest.to_vec(),
        }),
        signature: v.signature.clone(),
    }
}

fn pre_prepare_to_proto(p: &pbft::Signed<pbft::PrePrepare>) -> v1::PbftSignedPrePrepare {
    v1::PbftSignedPrePrepare {
        from: p.from,
        message: Some(v1::PbftPrePrepare {
            view: p.message.view,
            seq: p.message.seq,
            digest: p.message.digest.to_vec(),
            batch: Some(batch_to_proto(&p.message.batch)),
        }),
        signature: p.signature.clone(),
    }
}

fn checkpoint_to_proto(c: &pbft::Signed<pbft::Checkpoint>) -> v1::PbftSignedCheckpoint {
    v1::PbftSignedCheckpoint {
        from: c.from,
        message: Some(v1::PbftCheckpoint {
            seq: c.message.seq,
            state_root: c.message.state_root.to_vec(),
        }),
        signature: c.signature.clone(),
    }
}

pub fn checkpoint_proof_to_proto(p: &pbft::CheckpointProof) -> v1::PbftCheckpointProof {
    v1::PbftCheckpointProof {
        seq: p.seq,
        state_root: p.state_root.to_vec(),
        signatures: p.signatures.iter().map(checkpoint_to_proto).collect(),
    }
}

pub fn prepared_to_proto(p: &pbft::PreparedProof) -> v1::PbftPreparedProof {
    v1::PbftPreparedProof {
        pre_prepare: Some(pre_prepare_to_proto(&p.pre_prepare)),
        prepares: p.prepares.iter().map(vote_to_proto).collect(),
    }
}

fn view_change_to_proto(vc: &pbft::Signed<pbft::ViewChange>) -> v1::PbftSignedViewChange {
    v1::PbftSignedViewChange {
        from: vc.from,
        message: Some(v1::PbftViewChange {
            new_view: vc.message.new_view,
            checkpoint: Some(checkpoint_proof_to_proto(&vc.message.checkpoint)),
            prepared: vc.message.prepared.iter().map(prepared_to_proto).collect(),
        }),
        signature: vc.signature.clone(),
    }
}

pub fn committed_to_proto(c: &pbft::CommittedBatch) -> v1::PbftCommittedBatch {
    v1::PbftCommittedBatch {
        seq: c.seq,
        batch: Some(batch_to_proto(&c.batch)),
        commits: c.commits.iter().map(vote_to_proto).collect(),
    }
}

pub fn to_proto(message: &pbft::Message) -> v1::ReplicaMessage {
    let kind = match message {
        pbft::Message::Forward { request, .. } => Kind::Forward(request_to_proto(request)),
        pbft::Message::PrePrepare(p) => Kind::PrePrepare(pre_prepare_to_proto(p)),
        pbft::Message::Prepare(v) => Kind::Prepare(vote_to_proto(v)),
        pbft::Message::Commit(v) => Kind::Commit(vote_to_proto(v)),
        pbft::Message::Checkpoint(c) => Kind::Checkpoint(checkpoint_to_proto(c)),
        pbft::Message::ViewChange(vc) => Kind::ViewChange(view_change_to_proto(vc)),
        pbft::Message::NewView(nv) => Kind::NewView(v1::PbftSignedNewView {
            from: nv.from,
            message: Some(v1::PbftNewView {
                view: nv.message.view,
                view_changes: nv
                    .message
                    .view_changes
                    .iter()
                    .map(view_change_to_proto)
                    .collect(),
                pre_prepares: nv
                    .message
                    .pre_prepares
                    .iter()
                    .map(pre_prepare_to_proto)
                    .collect(),
            }),
            signature: nv.signature.clone(),
        }),
        pbft::Message::Suspect { from, view } => Kind::Suspect(v1::PbftSuspect {
            from: *from,
            view: *view,
        }),
        pbft::Message::Fetch { from, after, up_to } => Kind::Fetch(v1::PbftFetch {
            from: *from,
            after: *after,
            up_to: *up_to,
        }),
        pbft::Message::FetchReply {
            batches,
            checkpoint,
        } => Kind::FetchReply(v1::PbftFetchReply {
            batches: batches.iter().map(committed_to_proto).collect(),
            checkpoint: Some(checkpoint_proof_to_proto(checkpoint)),
        }),
    };
    // The epoch is the sending link's to set (medledger-peer's network).
    v1::ReplicaMessage {
        kind: Some(kind),
        epoch: 0,
    }
}

// ------------------------------------------------------------------------------- decode

pub fn request_from_proto(r: v1::PbftRequest) -> Result<pbft::Request> {
    Ok(pbft::Request {
        tx_id: digest(&r.tx_id)?,
        payload: r.payload,
    })
}

pub fn batch_from_proto(b: v1::PbftBatch) -> Result<pbft::Batch> {
    Ok(pbft::Batch {
        timestamp_ms: b.timestamp_ms,
        requests: b
            .requests
            .into_iter()
            .map(request_from_proto)
            .collect::<Result<_>>()?,
    })
}

fn vote_from_proto(v: v1::PbftSignedVote) -> Result<pbft::Signed<pbft::Vote>> {
    let m = required(v.message, "vote without body")?;
    Ok(pbft::Signed {
        from: v.from,
        message: pbft::Vote {
            view: m.view,
            seq: m.seq,
            digest: digest(&m.digest)?,
        },
        signature: v.signature,
    })
}

fn pre_prepare_from_proto(p: v1::PbftSignedPrePrepare) -> Result<pbft::Signed<pbft::PrePrepare>> {
    let m = required(p.message, "pre-prepare without body")?;
    Ok(pbft::Signed {
        from: p.from,
        message: pbft::PrePrepare {
            view: m.view,
            seq: m.seq,
            digest: digest(&m.digest)?,
            batch: batch_from_proto(required(m.batch, "pre-prepare without batch")?)?,
        },
        signature: p.signature,
    })
}

fn checkpoint_from_proto(c: v1::PbftSignedCheckpoint) -> Result<pbft::Signed<pbft::Checkpoint>> {
    let m = required(c.message, "checkpoint without body")?;
    Ok(pbft::Signed {
        from: c.from,
        message: pbft::Checkpoint {
            seq: m.seq,
            state_root: digest(&m.state_root)?,
        },
        signature: c.signature,
    })
}

pub fn checkpoint_proof_from_proto(p: v1::PbftCheckpointProof) -> Result<pbft::CheckpointProof> {
    Ok(pbft::CheckpointProof {
        seq: p.seq,
        state_root: if p.seq == 0 && p.state_root.is_empty() {
            [0; 32]
        } else {
            digest(&p.state_root)?
        },
        signatures: p
            .signatures
            .into_iter()
            .map(checkpoint_from_proto)
            .collect::<Result<_>>()?,
    })
}

pub fn prepared_from_proto(p: v1::PbftPreparedProof) -> Result<pbft::PreparedProof> {
    Ok(pbft::PreparedProof {
        pre_prepare: pre_prepare_from_proto(required(p.pre_prepare, "proof without pre-prepare")?)?,
        prepares: p
            .prepares
            .into_iter()
            .map(vote_from_proto)
            .collect::<Result<_>>()?,
    })
}

fn view_change_from_proto(vc: v1::PbftSignedViewChange) -> Result<pbft::Signed<pbft::ViewChange>> {
    let m = required(vc.message, "view change without body")?;
    Ok(pbft::Signed {
        from: vc.from,
        message: pbft::ViewChange {
            new_view: m.new_view,
            checkpoint: checkpoint_proof_from_proto(required(
                m.checkpoint,
                "view change without checkpoint",
            )?)?,
            prepared: m
                .prepared
                .into_iter()
                .map(prepared_from_proto)
                .collect::<Result<_>>()?,
        },
        signature: vc.signature,
    })
}

pub fn committed_from_proto(c: v1::PbftCommittedBatch) -> Result<pbft::CommittedBatch> {
    Ok(pbft::CommittedBatch {
        seq: c.seq,
        batch: batch_from_proto(required(c.batch, "committed batch without batch")?)?,
        commits: c
            .commits
            .into_iter()
            .map(vote_from_proto)
            .collect::<Result<_>>()?,
    })
}

/// Decodes a message that arrived from replica `sender` (named by its TLS certificate): a
/// forward is `sender`'s; every other message names its signer, or asks as `from`.
pub fn from_proto(message: v1::ReplicaMessage, sender: pbft::ReplicaId) -> Result<pbft::Message> {
    Ok(match required(message.kind, "empty replica message")? {
        Kind::Forward(r) => pbft::Message::Forward {
            from: sender,
            request: request_from_proto(r)?,
        },
        Kind::PrePrepare(p) => pbft::Message::PrePrepare(pre_prepare_from_proto(p)?),
        Kind::Prepare(v) => pbft::Message::Prepare(vote_from_proto(v)?),
        Kind::Commit(v) => pbft::Message::Commit(vote_from_proto(v)?),
        Kind::Checkpoint(c) => pbft::Message::Checkpoint(checkpoint_from_proto(c)?),
        Kind::ViewChange(vc) => pbft::Message::ViewChange(view_change_from_proto(vc)?),
        Kind::NewView(nv) => {
            let m = required(nv.message, "new view without body")?;
            pbft::Message::NewView(pbft::Signed {
                from: nv.from,
                message: pbft::NewView {
                    view: m.view,
                    view_changes: m
                        .view_changes
                        .into_iter()
                        .map(view_change_from_proto)
                        .collect::<Result<_>>()?,
                    pre_prepares: m
                        .pre_prepares
                        .into_iter()
                        .map(pre_prepare_from_proto)
                        .collect::<Result<_>>()?,
                },
                signature: nv.signature,
            })
        }
        Kind::Suspect(s) => pbft::Message::Suspect {
            from: s.from,
            view: s.view,
        },
        Kind::Fetch(f) => pbft::Message::Fetch {
            from: f.from,
            after: f.after,
            up_to: f.up_to,
        },
        Kind::BlockVote(_) => return Err(WireError("a block vote is not a PBFT message")),
        Kind::FetchReply(r) => pbft::Message::FetchReply {
            batches: r
                .batches
                .into_iter()
                .map(committed_from_proto)
                .collect::<Result<_>>()?,
            checkpoint: checkpoint_proof_from_proto(required(
                r.checkpoint,
                "fetch reply without checkpoint",
            )?)?,
        },
    })
}

/// The replica a message claims to come from, for the ones that carry a signer. The network
/// layer refuses a message whose signer is not the replica its TLS certificate names.
pub fn claimed_sender(message: &pbft::Message) -> Option<pbft::ReplicaId> {
    match message {
        pbft::Message::PrePrepare(p) => Some(p.from),
        pbft::Message::Prepare(v) | pbft::Message::Commit(v) => Some(v.from),
        pbft::Message::Checkpoint(c) => Some(c.from),
        pbft::Message::ViewChange(vc) => Some(vc.from),
        pbft::Message::NewView(nv) => Some(nv.from),
        pbft::Message::Fetch { from, .. } | pbft::Message::Suspect { from, .. } => Some(*from),
        pbft::Message::Forward { .. } | pbft::Message::FetchReply { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(from: u32) -> pbft::Signed<pbft::Vote> {
        pbft::Signed {
            from,
            message: pbft::Vote {
                view: 2,
                seq: 9,
                digest: [from as u8; 32],
            },
            signature: vec![7; 64],
        }
    }

    #[test]
    fn every_message_kind_round_trips() {
        for m in sample_messages() {
            let encoded = prost::Message::encode_to_vec(&to_proto(&m));
            let decoded: v1::ReplicaMessage = prost::Message::decode(encoded.as_slice()).unwrap();
            assert_eq!(from_proto(decoded, 2).unwrap(), m);
        }
    }

    /// The seeds of the `wire` fuzz target are each sample message, encoded, after the byte
    /// that names its sender (replica 2), so the fuzzer starts from every kind as it is
    /// encoded now. When the encoding changes this fails; write them again with
    /// `MEDLEDGER_WRITE_FUZZ_SEEDS=1 cargo test -p medledger-execution wire_fuzz_seeds`.
    #[test]
    #[allow(clippy::disallowed_methods)] // a test host may read its environment
    fn the_wire_fuzz_seeds_are_every_message_kind_as_encoded_now() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire");
        let write = std::env::var_os("MEDLEDGER_WRITE_FUZZ_SEEDS").is_some();
        for (i, m) in sample_messages().iter().enumerate() {
            let mut bytes = vec![2u8];
            bytes.extend(prost::Message::encode_to_vec(&to_proto(m)));
            let path = dir.join(format!("kind-{i}"));
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let seed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (write the seeds)", path.display()));
            assert_eq!(seed, bytes, "{} is out of date", path.display());
        }
    }

    /// One message of every kind.
    fn sample_messages() -> Vec<pbft::Message> {
        let batch = pbft::Batch {
            timestamp_ms: 1_700_000_000_000,
            requests: vec![pbft::Request {
                tx_id: [1; 32],
                payload: b"envelope".to_vec(),
            }],
        };
        let pp = pbft::Signed {
            from: 0,
            message: pbft::PrePrepare {
                view: 2,
                seq: 9,
                digest: batch.digest(),
                batch: batch.clone(),
            },
            signature: vec![1; 64],
        };
        let checkpoint = pbft::CheckpointProof {
            seq: 16,
            state_root: [3; 32],
            signatures: vec![pbft::Signed {
                from: 1,
                message: pbft::Checkpoint {
                    seq: 16,
                    state_root: [3; 32],
                },
                signature: vec![2; 64],
            }],
        };
        let vc = pbft::Signed {
            from: 3,
            message: pbft::ViewChange {
                new_view: 3,
                checkpoint: checkpoint.clone(),
                prepared: vec![pbft::PreparedProof {
                    pre_prepare: pp.clone(),
                    prepares: vec![vote(1), vote(2)],
                }],
            },
            signature: vec![4; 64],
        };
        vec![
            pbft::Message::Forward {
                from: 2,
                request: batch.requests[0].clone(),
            },
            pbft::Message::PrePrepare(pp.clone()),
            pbft::Message::Prepare(vote(1)),
            pbft::Message::Commit(vote(2)),
            pbft::Message::Checkpoint(checkpoint.signatures[0].clone()),
            pbft::Message::ViewChange(vc.clone()),
            pbft::Message::NewView(pbft::Signed {
                from: 3,
                message: pbft::NewView {
                    view: 3,
                    view_changes: vec![vc],
                    pre_prepares: vec![pp],
                },
                signature: vec![5; 64],
            }),
            pbft::Message::Suspect { from: 2, view: 7 },
            pbft::Message::Fetch {
                from: 2,
                after: 4,
                up_to: 16,
            },
            pbft::Message::FetchReply {
                batches: vec![pbft::CommittedBatch {
                    seq: 5,
                    batch,
                    commits: vec![vote(0), vote(1), vote(2)],
                }],
                checkpoint: pbft::CheckpointProof::default(),
            },
        ]
    }

    /// A batch of `config.max_batch_requests` requests filling `config.max_batch_bytes`.
    fn full_batch(config: &pbft::Config, tag: u8) -> pbft::Batch {
        let count = config.max_batch_requests;
        let each = config.max_batch_bytes / count - 32;
        pbft::Batch {
            timestamp_ms: u64::MAX,
            requests: (0..count)
                .map(|i| pbft::Request {
                    tx_id: [tag ^ i as u8; 32],
                    payload: vec![tag; each],
                })
                .collect(),
        }
    }

    fn signed<M>(from: u32, message: M) -> pbft::Signed<M> {
        pbft::Signed {
            from,
            message,
            signature: vec![0xff; 64],
        }
    }

    /// The largest view change, new view and fetch reply correct replicas send under the
    /// genesis defaults (4 and 7 peers): each encodes within [`max_encoded_bytes`], which
    /// is within the transport's limit.
    #[test]
    fn the_largest_messages_fit_the_bound_and_the_transport() {
        use crate::genesis::default_parameters;
        for n in [4u32, 7] {
            let p = default_parameters();
            let mut config = pbft::Config::new(n);
            config.watermark_window = p.watermark_window;
            config.max_batch_requests = p.max_batch_requests as usize;
            config.max_batch_bytes = p.max_batch_bytes as usize;
            let bound = max_encoded_bytes(&config);
            assert!(bound <= MAX_REPLICA_MESSAGE_BYTES, "{bound}");
            let votes = |view, seq, digest| -> Vec<pbft::Signed<pbft::Vote>> {
                (0..n)
                    .map(|from| signed(from, pbft::Vote { view, seq, digest }))
                    .collect()
            };
            let checkpoint = pbft::CheckpointProof {
                seq: u64::MAX,
                state_root: [9; 32],
                signatures: (0..n)
                    .map(|from| {
                        signed(
                            from,
                            pbft::Checkpoint {
                                seq: u64::MAX,
                                state_root: [9; 32],
                            },
                        )
                    })
                    .collect(),
            };
            let window = config.watermark_window;
            let batches: Vec<pbft::Batch> =
                (0..window).map(|s| full_batch(&config, s as u8)).collect();
            let pre_prepare = |seq: u64, batch: &pbft::Batch| {
                signed(
                    n - 1,
                    pbft::PrePrepare {
                        view: u64::MAX - 1,
                        seq: u64::MAX - seq,
                        digest: batch.digest(),
                        batch: batch.clone(),
                    },
                )
            };
            let view_change = signed(
                n - 1,
                pbft::ViewChange {
                    new_view: u64::MAX,
                    checkpoint: checkpoint.clone(),
                    prepared: batches
                        .iter()
                        .enumerate()
                        .map(|(s, b)| pbft::PreparedProof {
                            pre_prepare: pre_prepare(s as u64, b),
                            prepares: votes(u64::MAX - 1, u64::MAX - s as u64, b.digest()),
                        })
                        .collect(),
                },
            );
            let new_view = signed(
                n - 1,
                pbft::NewView {
                    view: u64::MAX,
                    view_changes: vec![view_change.without_batches(); config.quorum()],
                    pre_prepares: batches
                        .iter()
                        .enumerate()
                        .map(|(s, b)| pre_prepare(s as u64, b))
                        .collect(),
                },
            );
            let fetch_reply = pbft::Message::FetchReply {
                batches: batches
                    .iter()
                    .enumerate()
                    .map(|(s, b)| pbft::CommittedBatch {
                        seq: u64::MAX - s as u64,
                        batch: b.clone(),
                        commits: votes(u64::MAX, u64::MAX - s as u64, b.digest()),
                    })
                    .collect(),
                checkpoint,
            };
            for message in [
                pbft::Message::ViewChange(view_change),
                pbft::Message::NewView(new_view),
                fetch_reply,
            ] {
                assert!(message.batch_bytes() <= config.max_message_batch_bytes());
                let encoded = prost::Message::encoded_len(&to_proto(&message));
                assert!(encoded <= bound, "n = {n}: {encoded} > {bound}");
            }
        }
    }

    #[test]
    fn missing_fields_and_short_digests_are_refused() {
        assert!(from_proto(v1::ReplicaMessage::default(), 1).is_err());
        let short = v1::ReplicaMessage {
            kind: Some(Kind::Prepare(v1::PbftSignedVote {
                from: 1,
                message: Some(v1::PbftVote {
                    view: 0,
                    seq: 1,
                    digest: vec![0; 31],
                }),
                signature: vec![],
            })),
            ..Default::default()
        };
        assert_eq!(
            from_proto(short, 1),
            Err(WireError("a digest must be 32 bytes"))
        );
        let bodiless = v1::ReplicaMessage {
            kind: Some(Kind::Commit(v1::PbftSignedVote {
                from: 1,
                message: None,
                signature: vec![],
            })),
            ..Default::default()
        };
        assert!(from_proto(bodiless, 1).is_err());
    }
}
