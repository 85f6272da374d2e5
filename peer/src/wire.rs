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
        pbft::Message::Forward(r) => Kind::Forward(request_to_proto(r)),
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
    v1::ReplicaMessage { kind: Some(kind) }
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

pub fn from_proto(message: v1::ReplicaMessage) -> Result<pbft::Message> {
    Ok(match required(message.kind, "empty replica message")? {
        Kind::Forward(r) => pbft::Message::Forward(request_from_proto(r)?),
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
        Kind::Fetch(f) => pbft::Message::Fetch {
            from: f.from,
            after: f.after,
            up_to: f.up_to,
        },
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
        pbft::Message::Fetch { from, .. } => Some(*from),
        pbft::Message::Forward(_) | pbft::Message::FetchReply { .. } => None,
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
        let messages = vec![
            pbft::Message::Forward(batch.requests[0].clone()),
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
        ];
        for m in messages {
            let encoded = prost::Message::encode_to_vec(&to_proto(&m));
            let decoded: v1::ReplicaMessage = prost::Message::decode(encoded.as_slice()).unwrap();
            assert_eq!(from_proto(decoded).unwrap(), m);
        }
    }

    #[test]
    fn missing_fields_and_short_digests_are_refused() {
        assert!(from_proto(v1::ReplicaMessage { kind: None }).is_err());
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
        };
        assert_eq!(
            from_proto(short),
            Err(WireError("a digest must be 32 bytes"))
        );
        let bodiless = v1::ReplicaMessage {
            kind: Some(Kind::Commit(v1::PbftSignedVote {
                from: 1,
                message: None,
                signature: vec![],
            })),
        };
        assert!(from_proto(bodiless).is_err());
    }
}
