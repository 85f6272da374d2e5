//! Replica-to-replica transport: one gRPC client stream from this replica to every other,
//! over mutual TLS. Outbound, the dialer pins the exact key the genesis block gives the
//! replica it dials. Inbound, the sender is the replica its TLS certificate names, and a
//! message signed by any other replica is refused and the stream closed.
//!
//! Sends never block the consensus thread: each outbound stream has a queue bounded in
//! messages and in bytes ([`OUTBOUND_QUEUE_BYTES`]), and a message that does not fit is
//! dropped (PBFT recovers lost messages through retransmission, checkpoints, state transfer
//! and view changes). Inbound, each replica's messages waiting for the consensus thread are
//! charged to that replica's byte budget (`inputs::Inputs`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use medledger_crypto::{RootCertificate, validate_enrollment_certificate};
use medledger_pbft as pbft;
use medledger_proto::v1;
use medledger_proto::v1::replication_client::ReplicationClient;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::genesis::Genesis;
use crate::inputs::Inputs;
use crate::queue::{Budget, Queued};
use crate::wire;

/// Messages queued per outbound stream before new ones are dropped.
const OUTBOUND_QUEUE: usize = 8192;
/// Bytes (encoded) queued per outbound stream before new messages are dropped: two of the
/// largest messages.
pub const OUTBOUND_QUEUE_BYTES: usize = 2 * MAX_REPLICA_MESSAGE_BYTES;
/// Messages handed to a stream's gRPC call ahead of the network (their bytes still count).
const STREAM_BUFFER: usize = 64;

/// An outbound message with the bytes it holds of its queue's budget.
type Outbound = (v1::ReplicaMessage, Queued);
pub use crate::wire::MAX_REPLICA_MESSAGE_BYTES;

pub struct Network {
    me: pbft::ReplicaId,
    outbound: Vec<Option<(mpsc::Sender<Outbound>, Budget)>>,
    pub connected: Vec<Arc<AtomicBool>>,
}

impl Network {
    /// Starts one outbound stream task per other replica.
    /// Each stream dials with `tls` (pinning the replica's genesis key) and ends when that
    /// replica's certificate is in `revoked` or expires ([`medledger_tls::Guarded`]).
    pub fn start(
        me: pbft::ReplicaId,
        genesis: &Genesis,
        revoked: medledger_tls::SharedRevocations,
        tls: impl Fn(BTreeSet<[u8; 32]>) -> Arc<rustls::ClientConfig>,
    ) -> Arc<Network> {
        let mut outbound = Vec::new();
        let mut connected = Vec::new();
        for (i, peer) in genesis.config.peers.iter().enumerate() {
            let flag = Arc::new(AtomicBool::new(i as u32 == me));
            connected.push(flag.clone());
            if i as u32 == me {
                outbound.push(None);
                continue;
            }
            let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
            outbound.push(Some((tx, Budget::new(OUTBOUND_QUEUE_BYTES))));
            let pins = BTreeSet::from([genesis.peer_keys[i].to_bytes()]);
            let config = tls(pins);
            tokio::spawn(outbound_stream(
                i as u32,
                peer.address.clone(),
                config,
                revoked.clone(),
                rx,
                flag,
            ));
        }
        Arc::new(Network {
            me,
            outbound,
            connected,
        })
    }

    pub fn send(&self, to: pbft::ReplicaId, message: &pbft::Message) {
        let encoded = wire::to_proto(message);
        let bytes = prost::Message::encoded_len(&encoded);
        self.send_proto(to, encoded, bytes);
    }

    pub fn broadcast(&self, message: &pbft::Message) {
        let encoded = wire::to_proto(message);
        let bytes = prost::Message::encoded_len(&encoded);
        for to in 0..self.outbound.len() as u32 {
            if to != self.me {
                self.send_proto(to, encoded.clone(), bytes);
            }
        }
    }

    /// Sends this peer's block vote to every other replica.
    pub fn broadcast_vote(&self, vote: v1::BlockVote) {
        let encoded = v1::ReplicaMessage {
            kind: Some(v1::replica_message::Kind::BlockVote(vote)),
        };
        let bytes = prost::Message::encoded_len(&encoded);
        for to in 0..self.outbound.len() as u32 {
            if to != self.me {
                self.send_proto(to, encoded.clone(), bytes);
            }
        }
    }

    fn send_proto(&self, to: pbft::ReplicaId, message: v1::ReplicaMessage, bytes: usize) {
        let Some(Some((tx, budget))) = self.outbound.get(to as usize) else {
            return;
        };
        let sent = budget
            .take(bytes)
            .is_some_and(|queued| tx.try_send((message, queued)).is_ok());
        if !sent {
            metrics::counter!("medledger_replica_messages_dropped_total").increment(1);
        }
    }
}

async fn outbound_stream(
    to: u32,
    address: String,
    config: Arc<rustls::ClientConfig>,
    revoked: medledger_tls::SharedRevocations,
    mut queue: mpsc::Receiver<Outbound>,
    connected: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match medledger_tls::connect(&address, config.clone(), revoked.clone()).await {
            Ok(channel) => {
                let mut client = ReplicationClient::new(channel)
                    .max_encoding_message_size(MAX_REPLICA_MESSAGE_BYTES)
                    .max_decoding_message_size(MAX_REPLICA_MESSAGE_BYTES);
                // The stream gives each message's bytes back to the budget as gRPC takes it.
                let (tx, rx) = mpsc::channel::<Outbound>(STREAM_BUFFER);
                let call = client.stream(ReceiverStream::new(rx).map(|(m, _queued)| m));
                tokio::pin!(call);
                connected.store(true, Ordering::Relaxed);
                tracing::info!(replica = to, %address, "stream to replica open");
                backoff = Duration::from_millis(100);
                let ended = loop {
                    tokio::select! {
                        result = &mut call => break result.err().map(|s| s.to_string()),
                        message = queue.recv() => match message {
                            Some(m) => if tx.send(m).await.is_err() { break None },
                            None => return,
                        },
                    }
                };
                connected.store(false, Ordering::Relaxed);
                tracing::info!(replica = to, reason = ?ended, "stream to replica closed");
            }
            Err(e) => {
                tracing::debug!(replica = to, %address, error = %e, "cannot reach replica");
            }
        }
        // Do not let stale messages pile up while the replica is away.
        while queue.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Checks an envelope against the committed ledger ahead of execution: fills the
/// validator's caches, and says whether it could ever be valid (false only for refusals no
/// clock or ledger height can change; execution decides for good).
pub type Prewarm = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// The inbound side: `medledger.v1.Replication`.
pub struct ReplicationService {
    pub genesis: Arc<Genesis>,
    pub root: RootCertificate,
    pub inputs: Inputs,
    /// Checks the envelopes of incoming batches here, on the network's threads, so that
    /// executing them on the consensus thread finds their certificates and signatures
    /// already verified (see `Validator`'s caches).
    pub prewarm: Prewarm,
    /// Streams each replica may have open at once ([`STREAMS_PER_REPLICA`]): each may hold
    /// a message of up to [`MAX_REPLICA_MESSAGE_BYTES`] being read.
    pub open_streams: Arc<[Budget]>,
    /// Where the other peers' block votes go (not to the consensus thread).
    pub votes: Arc<crate::votes::Votes>,
}

/// Inbound streams one replica may have open at once: its stream, and a few more while a
/// broken connection is noticed. Each may buffer one message being read, so this bounds
/// what one replica can make us hold before any budget is charged.
pub const STREAMS_PER_REPLICA: usize = 4;

impl ReplicationService {
    /// A stream limit for each of `replicas` replicas.
    pub fn stream_limits(replicas: usize) -> Arc<[Budget]> {
        (0..replicas)
            .map(|_| Budget::new(STREAMS_PER_REPLICA))
            .collect()
    }
}

impl ReplicationService {
    /// Which replica the TLS client certificate belongs to.
    fn sender<T>(&self, request: &Request<T>) -> Result<pbft::ReplicaId, Status> {
        let der = medledger_tls::peer_certificate(request)
            .ok_or_else(|| Status::unauthenticated("a replica must present its certificate"))?;
        let identity = validate_enrollment_certificate(
            &der,
            &self.root,
            medledger_tls::now_unix(),
            &BTreeSet::new(),
        )
        .map_err(|e| Status::unauthenticated(format!("certificate refused: {e}")))?;
        self.genesis
            .replica_of(&identity.signing_key)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "{} is not a replica of this network",
                    identity.name
                ))
            })
    }
}

#[tonic::async_trait]
impl v1::replication_server::Replication for ReplicationService {
    async fn stream(
        &self,
        request: Request<Streaming<v1::ReplicaMessage>>,
    ) -> Result<Response<v1::ReplicaAck>, Status> {
        let from = self.sender(&request)?;
        let _open = self
            .open_streams
            .get(from as usize)
            .and_then(|limit| limit.take(1))
            .ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "replica {from} already has {STREAMS_PER_REPLICA} streams open"
                ))
            })?;
        let mut stream = request.into_inner();
        tracing::info!(replica = from, "stream from replica open");
        while let Some(message) = stream.message().await? {
            let bytes = prost::Message::encoded_len(&message);
            if let Some(v1::replica_message::Kind::BlockVote(vote)) = message.kind {
                match self.votes.receive(from, vote) {
                    Ok(()) => {}
                    // A correct peer never sends a vote signed as another, or one whose
                    // signature fails: the stream closes, so a liar cannot make this peer
                    // check signatures without end.
                    Err(
                        e @ (crate::votes::VoteRefused::NotSender { .. }
                        | crate::votes::VoteRefused::BadSignature(_)),
                    ) => {
                        metrics::counter!("medledger_replica_messages_refused_total").increment(1);
                        return Err(Status::permission_denied(e.to_string()));
                    }
                    Err(e) => {
                        tracing::debug!(replica = from, error = %e, "block vote dropped");
                        metrics::counter!("medledger_block_votes_dropped_total").increment(1);
                    }
                }
                continue;
            }
            let message = match wire::from_proto(message, from) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(replica = from, error = %e, "malformed replica message");
                    metrics::counter!("medledger_replica_messages_refused_total").increment(1);
                    continue;
                }
            };
            if let Some(claimed) = wire::claimed_sender(&message)
                && claimed != from
            {
                tracing::warn!(
                    replica = from,
                    claimed,
                    "a replica sent a message signed as another; closing its stream"
                );
                metrics::counter!("medledger_replica_messages_refused_total").increment(1);
                return Err(Status::permission_denied(format!(
                    "replica {from} may not send messages of replica {claimed}"
                )));
            }
            match &message {
                pbft::Message::PrePrepare(pp) => {
                    for r in &pp.message.batch.requests {
                        (self.prewarm)(&r.payload);
                    }
                }
                // A backup forwards what a client submitted to it, which it validated: a
                // forward that can never be valid comes from a lying replica and is not queued
                // (it would take room from real requests and be ordered only to be refused).
                pbft::Message::Forward { request: r, .. } if !(self.prewarm)(&r.payload) => {
                    metrics::counter!("medledger_replica_messages_refused_total").increment(1);
                    continue;
                }
                _ => {}
            }
            if self.inputs.message(from, message, bytes).is_err() {
                metrics::counter!("medledger_replica_messages_dropped_total").increment(1);
            }
        }
        Ok(Response::new(v1::ReplicaAck {}))
    }
}
