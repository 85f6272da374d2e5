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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use medledger_crypto::{RootCertificate, VerifyingKey, validate_enrollment_certificate};
use medledger_pbft as pbft;
use medledger_proto::v1;
use medledger_proto::v1::replication_client::ReplicationClient;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::execute::ConfigurationInForce;
use crate::inputs::Inputs;
use crate::queue::{Budget, Queued};
use crate::wire;
use medledger_execution::config::Configuration;

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

/// The TLS client configuration pinning the given peer keys (one link's dialer).
pub type DialerConfig = dyn Fn(BTreeSet<[u8; 32]>) -> Arc<rustls::ClientConfig> + Send + Sync;

/// One outbound link: its queue, its byte budget, and whether its stream is open.
struct Link {
    key: [u8; 32],
    address: String,
    queue: mpsc::Sender<Outbound>,
    budget: Budget,
    connected: Arc<AtomicBool>,
    /// Whether the peer's last answer refused this one as a replica (see [`Network::refusing`]).
    refused: Arc<AtomicBool>,
    /// The dialer pinning the peer's key.
    tls: Arc<rustls::ClientConfig>,
}

/// The links of the replica set in force, by replica id (`None`: this peer's own id).
struct Links {
    me: Option<pbft::ReplicaId>,
    /// The base of the epoch this peer's messages belong to (`ReplicaMessage.epoch`).
    epoch: u64,
    outbound: Vec<Option<Link>>,
}

pub struct Network {
    links: RwLock<Links>,
    tls: Box<DialerConfig>,
    /// Changes when this peer's certificate is renewed: every stream is made again with it.
    renewed: tokio::sync::watch::Receiver<u64>,
    revoked: medledger_tls::SharedRevocations,
    /// Where link tasks run (reconfiguration is called from the consensus thread).
    runtime: tokio::runtime::Handle,
}

impl Network {
    /// Starts one outbound stream task per other peer of `configuration` (`me`: this peer's
    /// id in it). Each stream dials with `tls` (pinning that peer's key in the
    /// configuration) and ends when that peer's certificate is in `revoked` or expires
    /// ([`medledger_tls::Guarded`]); it is made again, before either certificate ends, when
    /// `renewed` changes (this peer's certificate was renewed) and shortly before the other
    /// peer's certificate ends (it has renewed by then). Must be called within the Tokio
    /// runtime.
    pub fn start(
        me: Option<pbft::ReplicaId>,
        configuration: &Configuration,
        epoch: u64,
        revoked: medledger_tls::SharedRevocations,
        renewed: tokio::sync::watch::Receiver<u64>,
        tls: impl Fn(BTreeSet<[u8; 32]>) -> Arc<rustls::ClientConfig> + Send + Sync + 'static,
    ) -> Arc<Network> {
        let network = Network {
            links: RwLock::new(Links {
                me,
                epoch,
                outbound: Vec::new(),
            }),
            tls: Box::new(tls),
            renewed,
            revoked,
            runtime: tokio::runtime::Handle::current(),
        };
        network.reconfigure(me, configuration, epoch);
        Arc::new(network)
    }

    /// Follows a change of the peers (docs/adr/0011) to the epoch that started after block
    /// `epoch`: links to peers that stay (same key, same address) keep their streams under
    /// their new ids; links to new peers are started; links to peers that left are closed
    /// (their tasks end). A peer that is not one of them (`me` is `None`) closes them all.
    pub fn reconfigure(
        &self,
        me: Option<pbft::ReplicaId>,
        configuration: &Configuration,
        epoch: u64,
    ) {
        let mut links = self.links.write().unwrap_or_else(|p| p.into_inner());
        let mut old: Vec<Link> = std::mem::take(&mut links.outbound)
            .into_iter()
            .flatten()
            .collect();
        if me.is_none() {
            *links = Links {
                me,
                epoch,
                outbound: Vec::new(),
            };
            return;
        }
        let mut outbound = Vec::with_capacity(configuration.peers.len());
        for (i, (peer, key)) in configuration
            .peers
            .iter()
            .zip(&configuration.peer_keys)
            .enumerate()
        {
            if Some(i as u32) == me {
                outbound.push(None);
                continue;
            }
            let key = key.to_bytes();
            if let Some(at) = old
                .iter()
                .position(|l| l.key == key && l.address == peer.address)
            {
                outbound.push(Some(old.swap_remove(at)));
                continue;
            }
            let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
            let connected = Arc::new(AtomicBool::new(false));
            let refused = Arc::new(AtomicBool::new(false));
            let tls = (self.tls)(BTreeSet::from([key]));
            self.runtime.spawn(outbound_stream(
                i as u32,
                peer.address.clone(),
                tls.clone(),
                self.revoked.clone(),
                self.renewed.clone(),
                rx,
                (connected.clone(), refused.clone()),
            ));
            outbound.push(Some(Link {
                key,
                address: peer.address.clone(),
                queue: tx,
                budget: Budget::new(OUTBOUND_QUEUE_BYTES),
                connected,
                refused,
                tls,
            }));
        }
        // What is left of `old` is dropped here: those links' tasks see their queues close.
        *links = Links {
            me,
            epoch,
            outbound,
        };
    }

    /// Whether the stream to replica `to` is open (this peer itself counts as connected).
    pub fn connected(&self, to: pbft::ReplicaId) -> bool {
        let links = self.links.read().unwrap_or_else(|p| p.into_inner());
        if links.me == Some(to) {
            return true;
        }
        links
            .outbound
            .get(to as usize)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.connected.load(Ordering::Relaxed))
    }

    /// The peers of this peer's replica set whose last answer refused it as a replica
    /// (`PERMISSION_DENIED` on its stream): they follow a replica set without it, so this
    /// peer is behind a change of the peers (docs/adr/0011) — the one that removed it, or one
    /// it missed while its streams were down. Each comes with its address, and the dialer
    /// pinning its key, for fetching blocks from it (`left_behind`).
    pub fn refusing(&self) -> Vec<(pbft::ReplicaId, String, Arc<rustls::ClientConfig>)> {
        self.links_where(|link| link.refused.load(Ordering::Relaxed))
    }

    /// Every other replica of this peer's replica set: (replica id, address, a dialer
    /// pinning its key), e.g. to reconcile private values from (`reconcile.rs`).
    pub fn others(&self) -> Vec<(pbft::ReplicaId, String, Arc<rustls::ClientConfig>)> {
        self.links_where(|_| true)
    }

    fn links_where(
        &self,
        keep: impl Fn(&Link) -> bool,
    ) -> Vec<(pbft::ReplicaId, String, Arc<rustls::ClientConfig>)> {
        let links = self.links.read().unwrap_or_else(|p| p.into_inner());
        links
            .outbound
            .iter()
            .enumerate()
            .filter_map(|(i, link)| {
                let link = link.as_ref()?;
                keep(link).then(|| (i as pbft::ReplicaId, link.address.clone(), link.tls.clone()))
            })
            .collect()
    }

    pub fn send(&self, to: pbft::ReplicaId, message: &pbft::Message) {
        let encoded = wire::to_proto(message);
        let bytes = prost::Message::encoded_len(&encoded);
        self.send_proto(to, encoded, bytes);
    }

    pub fn broadcast(&self, message: &pbft::Message) {
        let encoded = wire::to_proto(message);
        let bytes = prost::Message::encoded_len(&encoded);
        self.send_all(encoded, bytes);
    }

    /// Sends this peer's block vote to every other replica.
    pub fn broadcast_vote(&self, vote: v1::BlockVote) {
        let encoded = v1::ReplicaMessage {
            kind: Some(v1::replica_message::Kind::BlockVote(vote)),
            epoch: 0,
        };
        let bytes = prost::Message::encoded_len(&encoded);
        self.send_all(encoded, bytes);
    }

    fn send_all(&self, mut message: v1::ReplicaMessage, bytes: usize) {
        let links = self.links.read().unwrap_or_else(|p| p.into_inner());
        message.epoch = links.epoch;
        for link in links.outbound.iter().flatten() {
            Self::enqueue(link, message.clone(), bytes);
        }
    }

    fn send_proto(&self, to: pbft::ReplicaId, mut message: v1::ReplicaMessage, bytes: usize) {
        let links = self.links.read().unwrap_or_else(|p| p.into_inner());
        message.epoch = links.epoch;
        if let Some(Some(link)) = links.outbound.get(to as usize) {
            Self::enqueue(link, message, bytes);
        }
    }

    fn enqueue(link: &Link, message: v1::ReplicaMessage, bytes: usize) {
        let sent = link
            .budget
            .take(bytes)
            .is_some_and(|queued| link.queue.try_send((message, queued)).is_ok());
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
    mut renewed: tokio::sync::watch::Receiver<u64>,
    mut queue: mpsc::Receiver<Outbound>,
    (connected, refused): (Arc<AtomicBool>, Arc<AtomicBool>),
) {
    let mut backoff = MIN_BACKOFF;
    renewed.borrow_and_update();
    // Whether this peer's renewals are still announced (always, while the peer runs).
    let mut watching_renewals = true;
    loop {
        // Whether the stream was closed on purpose, to be made again at once.
        let mut remade = false;
        match medledger_tls::connect_watching(&address, config.clone(), revoked.clone()).await {
            Ok((channel, server_not_after)) => {
                let mut client = ReplicationClient::new(channel)
                    .max_encoding_message_size(MAX_REPLICA_MESSAGE_BYTES)
                    .max_decoding_message_size(MAX_REPLICA_MESSAGE_BYTES);
                // The stream gives each message's bytes back to the budget as gRPC takes it.
                let (tx, rx) = mpsc::channel::<Outbound>(STREAM_BUFFER);
                let call = client.stream(ReceiverStream::new(rx).map(|(m, _queued)| m));
                tokio::pin!(call);
                connected.store(true, Ordering::Relaxed);
                let opened = tokio::time::Instant::now();
                let settled = tokio::time::sleep(STREAM_SETTLED);
                tokio::pin!(settled);
                // Made again shortly before the other peer's certificate ends (it renewed
                // by then); not if it ends sooner than that (it would come back the same).
                let remake_in = server_not_after
                    .map(|end| {
                        end.saturating_sub(REMAKE_BEFORE_END_S)
                            .saturating_sub(medledger_tls::now_unix())
                    })
                    .and_then(|s| u64::try_from(s).ok())
                    .filter(|s| *s > 0);
                let remake = tokio::time::sleep(Duration::from_secs(remake_in.unwrap_or(0)));
                tokio::pin!(remake);
                let mut tx = Some(tx);
                let ended: Option<Status> = loop {
                    tokio::select! {
                        result = &mut call => break result.err(),
                        // Still open: the peer took this one as a replica.
                        () = &mut settled, if !settled.is_elapsed() => {
                            refused.store(false, Ordering::Relaxed);
                            tracing::info!(replica = to, %address, "stream to replica open");
                        }
                        // A certificate on either side is about to end: the stream is
                        // closed cleanly (what it took is sent first) and made again at
                        // once, with what is queued kept for the new one.
                        changed = renewed.changed(), if watching_renewals && !remade => {
                            if changed.is_err() {
                                watching_renewals = false;
                            } else {
                                remade = true;
                                tx = None;
                            }
                        }
                        () = &mut remake, if remake_in.is_some() && !remade => {
                            remade = true;
                            tx = None;
                        }
                        message = queue.recv(), if !remade => match message {
                            Some(m) => {
                                let Some(sender) = &tx else { break None };
                                // A stream that takes nothing for this long is stalled (its
                                // peer reads nothing of it): made again rather than waited
                                // on for ever, which also kept it from ever settling.
                                match tokio::time::timeout(STALLED, sender.send(m)).await {
                                    Ok(Ok(())) => {}
                                    Ok(Err(_)) => break None,
                                    Err(_) => {
                                        tracing::info!(replica = to, "stream to replica stalled; making it again");
                                        metrics::counter!("medledger_replica_streams_stalled_total").increment(1);
                                        break None;
                                    }
                                }
                            }
                            None => return,
                        },
                    }
                    if remade {
                        // The request stream ended: the peer answers once it took the rest.
                        let _ = tokio::time::timeout(REMAKE_DRAIN, &mut call).await;
                        break None;
                    }
                };
                if remade {
                    // Still linked: made again at once, with what is queued.
                    tracing::debug!(
                        replica = to,
                        "stream to replica made again (a certificate renewed)"
                    );
                    continue;
                }
                connected.store(false, Ordering::Relaxed);
                let denied = ended
                    .as_ref()
                    .is_some_and(|s| s.code() == tonic::Code::PermissionDenied);
                if denied {
                    // Only once per refusal spell: the peer refuses every retry alike.
                    if !refused.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            replica = to,
                            reason = ?ended.as_ref().map(Status::message),
                            "the replica refuses this peer's stream: it may follow a change \
                             of the peers this one has not executed yet"
                        );
                    }
                } else {
                    tracing::info!(replica = to, reason = ?ended, "stream to replica closed");
                }
                // A stream that stayed open was a success: the next connection is tried
                // soon. One refused or broken at once is retried ever more slowly.
                if !denied && opened.elapsed() >= STREAM_SETTLED {
                    backoff = MIN_BACKOFF;
                }
            }
            Err(e) => {
                // A stream made again (a renewal) that could not be: not linked any more.
                connected.store(false, Ordering::Relaxed);
                tracing::debug!(replica = to, %address, error = %e, "cannot reach replica");
            }
        }
        // Do not let stale messages pile up while the replica is away.
        while queue.try_recv().is_ok() {}
        // The link was closed (the peer left the network, docs/adr/0011).
        if queue.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How long before the other peer's certificate ends a stream to it is made again (seconds):
/// that peer renewed well before (a quarter of its lifetime, at most 30 days), and the
/// stream made with its old certificate would be cut at that certificate's end.
const REMAKE_BEFORE_END_S: i64 = 5;
/// Longest wait for a stream to take one message before it counts as stalled.
const STALLED: Duration = Duration::from_secs(3);
/// Longest wait for a stream closed on purpose to deliver what it took.
const REMAKE_DRAIN: Duration = Duration::from_secs(1);

/// First wait before dialing a replica again.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before dialing a replica again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a stream stays open before it counts as taken: the peer refuses a replica it
/// does not know at once.
const STREAM_SETTLED: Duration = Duration::from_secs(1);

/// Checks an envelope against the committed ledger ahead of execution: fills the
/// validator's caches, and says whether it could ever be valid (false only for refusals no
/// clock or ledger height can change; execution decides for good).
pub type Prewarm = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// The inbound side: `medledger.v1.Replication`.
pub struct ReplicationService {
    /// Who the replicas are now: a sender's id follows the configuration in force.
    pub configuration: Arc<ConfigurationInForce>,
    pub root: RootCertificate,
    pub inputs: Inputs,
    /// Checks the envelopes of incoming batches here, on the network's threads, so that
    /// executing them on the consensus thread finds their certificates and signatures
    /// already verified (see `Validator`'s caches).
    pub prewarm: Prewarm,
    /// Streams each replica may have open at once ([`STREAMS_PER_REPLICA`]), by its signing
    /// key (its id may change with the peers): each may hold a message of up to
    /// [`MAX_REPLICA_MESSAGE_BYTES`] being read. Only peers in force take one.
    pub open_streams: std::sync::Mutex<std::collections::HashMap<[u8; 32], Budget>>,
    /// Where the other peers' block votes go (not to the consensus thread).
    pub votes: Arc<crate::votes::Votes>,
}

/// Inbound streams one replica may have open at once: its stream, and a few more while a
/// broken connection is noticed. Each may buffer one message being read, so this bounds
/// what one replica can make us hold before any budget is charged.
pub const STREAMS_PER_REPLICA: usize = 4;

impl ReplicationService {
    /// The signing key and name of the TLS client certificate.
    fn sender_key<T>(&self, request: &Request<T>) -> Result<(VerifyingKey, String), Status> {
        let der = medledger_tls::peer_certificate(request)
            .ok_or_else(|| Status::unauthenticated("a replica must present its certificate"))?;
        let identity = validate_enrollment_certificate(
            &der,
            &self.root,
            medledger_tls::now_unix(),
            &BTreeSet::new(),
        )
        .map_err(|e| Status::unauthenticated(format!("certificate refused: {e}")))?;
        Ok((identity.signing_key, identity.name))
    }

    /// The replica id of the peer with signing key `key` in the configuration in force (a
    /// stream outlives a change of the peers; its sender's id is read again per message).
    fn replica_id(
        configuration: &Configuration,
        key: &VerifyingKey,
        name: &str,
    ) -> Result<pbft::ReplicaId, Status> {
        configuration.replica_of(key).ok_or_else(|| {
            Status::permission_denied(format!("{name} is not a replica of this network"))
        })
    }
}

#[tonic::async_trait]
impl v1::replication_server::Replication for ReplicationService {
    async fn stream(
        &self,
        request: Request<Streaming<v1::ReplicaMessage>>,
    ) -> Result<Response<v1::ReplicaAck>, Status> {
        let (key, name) = self.sender_key(&request)?;
        let configuration = &self.configuration;
        let first = Self::replica_id(&configuration.get(), &key, &name)?;
        let _open = {
            let mut limits = self.open_streams.lock().unwrap_or_else(|p| p.into_inner());
            limits
                .entry(key.to_bytes())
                .or_insert_with(|| Budget::new(STREAMS_PER_REPLICA))
                .take(1)
        }
        .ok_or_else(|| {
            Status::resource_exhausted(format!(
                "replica {first} already has {STREAMS_PER_REPLICA} streams open"
            ))
        })?;
        let mut epochs = configuration.epochs();
        let mut stream = request.into_inner();
        tracing::info!(replica = first, "stream from replica open");
        loop {
            let message = tokio::select! {
                message = stream.message() => match message? {
                    Some(message) => message,
                    None => break,
                },
                // A change of the peers: a stream of a peer that left ends (an idle one too).
                changed = epochs.changed() => {
                    if changed.is_ok() {
                        Self::replica_id(&configuration.get(), &key, &name)?;
                    }
                    continue;
                }
            };
            // The sender's id among the peers in force now (ids move when peers leave), and
            // the epoch, read together.
            let (in_force, base) = configuration.epoch();
            let from = Self::replica_id(&in_force, &key, &name)?;
            let epoch = base.seq;
            let bytes = prost::Message::encoded_len(&message);
            let same_epoch = message.epoch == epoch;
            if let Some(v1::replica_message::Kind::BlockVote(vote)) = message.kind {
                match self.votes.receive(&key, vote) {
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
            // A message of another epoch (a peer not yet switched, or switched before this
            // one): a fetch is served to the sender under its id now, a fetch reply is
            // checked on its own (certificates of the epoch of each batch); anything else
            // belongs to another replica set and is dropped unread.
            let message = match message {
                pbft::Message::Fetch { after, up_to, .. } if !same_epoch => {
                    pbft::Message::Fetch { from, after, up_to }
                }
                pbft::Message::FetchReply { .. } => message,
                _ if !same_epoch => {
                    metrics::counter!("medledger_replica_messages_other_epoch_total").increment(1);
                    continue;
                }
                _ => message,
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
            if self.inputs.message(from, message, bytes, epoch).is_err() {
                metrics::counter!("medledger_replica_messages_dropped_total").increment(1);
            }
        }
        Ok(Response::new(v1::ReplicaAck {}))
    }
}
