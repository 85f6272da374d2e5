//! A deterministic simulator for the PBFT core, in the spirit of TigerBeetle's VOPR: n
//! replicas in one thread, a simulated clock and network, crash/restart from the persisted
//! state, and Byzantine replicas as small named mocks. Everything random comes from one seed.

#![allow(dead_code)]

pub mod mocks;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use medledger_pbft::*;
use sha2::{Digest as _, Sha256};

pub use mocks::Behavior;

/// SplitMix64.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The payload of request `tx_id`: the id itself (the simulated host's transaction format
/// names its own id, as the peer's envelopes do), then filler whose size and bytes follow from
/// it, so a retransmission carries exactly what the first transmission did.
pub fn payload_for(tx_id: &TxId) -> Vec<u8> {
    let n = u64::from_be_bytes(tx_id[..8].try_into().unwrap());
    let mut payload = tx_id.to_vec();
    payload.extend(vec![(n % 251) as u8; 1 + (n % 64) as usize]);
    payload
}

/// The simulated host's request id: the payload's first 32 bytes.
pub fn sim_request_id(payload: &[u8]) -> Option<TxId> {
    payload.get(..32)?.try_into().ok()
}

/// A view change for `view` signed by `from` (the simulation's signature), from the genesis
/// checkpoint, with `prepared` proofs.
pub fn view_change(from: ReplicaId, view: View, prepared: Vec<PreparedProof>) -> Message {
    let vc = ViewChange {
        new_view: view,
        checkpoint: CheckpointProof::default(),
        prepared,
    };
    let signature = sim_signature(from, Domain::ViewChange, &vc.signed_bytes());
    Message::ViewChange(Signed {
        from,
        message: vc,
        signature,
    })
}

/// Signatures for the simulation: SHA-256 of the signer's secret, the domain and the bytes.
/// Only the signer's own instance can make them (the mocks use their own).
pub struct SimCrypto {
    pub id: ReplicaId,
}

thread_local! {
    /// The replica set the mocks and tests of this thread sign as (its epoch base tags
    /// every signature, as the core's do: `Config::epoch_signed`).
    static EPOCH: std::cell::RefCell<Option<Config>> = const { std::cell::RefCell::new(None) };
}

/// Makes [`sim_signature`] sign as a member of `config`'s replica set.
pub fn set_epoch(config: &Config) {
    EPOCH.with(|e| *e.borrow_mut() = Some(config.clone()));
}

/// `id`'s signature over a message's own signed `bytes`, as a member of the replica set of
/// [`set_epoch`] (the genesis set if none): what the core itself signs.
pub fn sim_signature(id: ReplicaId, domain: Domain, bytes: &[u8]) -> Vec<u8> {
    let tagged = EPOCH
        .with(|e| e.borrow().as_ref().map(|c| c.epoch_signed(bytes.to_vec())))
        .unwrap_or_else(|| bytes.to_vec());
    raw_signature(id, domain, &tagged)
}

/// The signature over `bytes` exactly as given (the core has tagged them already).
fn raw_signature(id: ReplicaId, domain: Domain, bytes: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"sim-secret");
    h.update(id.to_be_bytes());
    h.update(domain.tag());
    h.update(bytes);
    h.finalize().to_vec()
}

/// No signatures at all: for measuring the protocol's own cost.
pub struct NoCrypto;

impl Crypto for NoCrypto {
    fn request_id(&self, payload: &[u8]) -> Option<TxId> {
        sim_request_id(payload)
    }
    fn sign(&self, _: Domain, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn verify(&self, _: ReplicaId, _: Domain, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

impl Crypto for SimCrypto {
    fn request_id(&self, payload: &[u8]) -> Option<TxId> {
        sim_request_id(payload)
    }
    fn sign(&self, domain: Domain, bytes: &[u8]) -> Vec<u8> {
        raw_signature(self.id, domain, bytes)
    }
    fn verify(&self, signer: ReplicaId, domain: Domain, bytes: &[u8], signature: &[u8]) -> bool {
        raw_signature(signer, domain, bytes) == signature
    }
}

/// A network fault configuration.
#[derive(Debug, Clone, Default)]
pub struct NetworkFaults {
    pub loss_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Directed links that deliver nothing (a one-way partition is one direction only).
    pub blocked: BTreeSet<(ReplicaId, ReplicaId)>,
}

/// One simulated node: a replica (absent while crashed), what it persisted, and its host's
/// ledger, which survives crashes.
pub struct Node {
    pub id: ReplicaId,
    pub behavior: Behavior,
    pub replica: Option<Replica>,
    pub durable: DurableState,
    pub ledger: Vec<(Seq, Digest, Digest)>,
    /// Each executed batch with its commit certificate, as a peer's blocks hold them: state
    /// transfer is served from here, not from the core's bounded tail of committed batches.
    pub blocks: BTreeMap<Seq, CommittedBatch>,
    pub state_root: Digest,
    pub timer_at: Option<u64>,
    /// Each executed request and the sequence number it executed at (the host's index).
    pub executed: BTreeMap<TxId, Seq>,
    pub last_timestamp: u64,
    /// A host whose execution is broken (its state roots are wrong).
    pub corrupt_state: bool,
    /// Restarted without its executed request ids (as `medledger-peer` restarts: they are
    /// not persisted): its host refuses duplicates by its transaction index.
    pub forgot_executed: bool,
    /// The ledger height at the last idle probe.
    pub probed_at_height: Option<u64>,
    pub mock: mocks::MockState,
}

impl Node {
    pub fn is_correct(&self) -> bool {
        matches!(self.behavior, Behavior::Honest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: u64,
    order: u64,
    to: usize,
    from: ReplicaId,
}

pub struct Sim {
    pub seed: u64,
    pub rng: Rng,
    pub now: u64,
    pub config: Config,
    pub nodes: Vec<Node>,
    pub faults: NetworkFaults,
    queue: BinaryHeap<Reverse<InFlight>>,
    payloads: BTreeMap<u64, Message>,
    order: u64,
    pub submitted: BTreeMap<TxId, u64>,
    /// Requests a Byzantine replica made up and forwarded, well formed (as enrolled clients'
    /// envelopes it replays would be): they may execute, and need not.
    pub forwarded_only: BTreeSet<TxId>,
    next_tx: u64,
    /// seq → digest of the first correct execution (agreement).
    pub agreed: BTreeMap<Seq, Digest>,
    pub violations: Vec<String>,
    pub trace_hash: Sha256,
    pub stats: Stats,
    /// Skip signatures (benchmarks only).
    pub free_crypto: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub messages: u64,
    pub executed_batches: u64,
    pub max_view: View,
    /// Requests ordered again after a replica forgot them, refused by its host.
    pub refused_duplicates: u64,
}

impl Sim {
    /// n replicas; `behaviors[i]` for replica i (twins add a second node with the same id).
    /// Honest replicas without signatures, for measuring the protocol alone.
    pub fn without_crypto(seed: u64, config: Config) -> Sim {
        let n = config.n;
        let mut sim = Sim::new(seed, config.clone(), &vec![Behavior::Honest; n as usize]);
        for node in &mut sim.nodes {
            node.replica = Some(Replica::new(
                node.id,
                sim.config.clone(),
                Box::new(NoCrypto),
                DurableState::default(),
                sim.config.epoch_base,
            ));
        }
        sim.free_crypto = true;
        sim
    }

    pub fn new(seed: u64, mut config: Config, behaviors: &[Behavior]) -> Sim {
        // A replica set starting after `epoch_base` (a reconfiguration, docs/adr/0011):
        // every node has executed the same batches up to it, and the base's digest is the
        // state root they reached.
        let mut prefix = Vec::new();
        let mut base_root = [0u8; 32];
        for seq in 1..=config.epoch_base {
            let digest: Digest = Sha256::digest(seq.to_be_bytes()).into();
            let mut h = Sha256::new();
            h.update(base_root);
            h.update(digest);
            base_root = h.finalize().into();
            prefix.push((seq, digest, base_root));
        }
        if config.epoch_base > 0 {
            config.epoch_base_digest = base_root;
        }
        set_epoch(&config);
        let mut nodes = Vec::new();
        for (i, behavior) in behaviors.iter().enumerate() {
            let id = (i as u32) % config.n;
            nodes.push(Node {
                id,
                behavior: behavior.clone(),
                replica: Some(Replica::new(
                    id,
                    config.clone(),
                    Box::new(SimCrypto { id }),
                    DurableState::default(),
                    config.epoch_base,
                )),
                durable: DurableState::default(),
                ledger: prefix.clone(),
                blocks: BTreeMap::new(),
                state_root: base_root,
                timer_at: None,
                executed: BTreeMap::new(),
                last_timestamp: 0,
                corrupt_state: false,
                forgot_executed: false,
                probed_at_height: None,
                mock: mocks::MockState::default(),
            });
        }
        Sim {
            seed,
            rng: Rng(seed),
            now: 0,
            config,
            nodes,
            faults: NetworkFaults {
                min_delay_ms: 1,
                max_delay_ms: 5,
                ..Default::default()
            },
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            order: 0,
            submitted: BTreeMap::new(),
            forwarded_only: BTreeSet::new(),
            next_tx: 0,
            agreed: BTreeMap::new(),
            violations: Vec::new(),
            trace_hash: Sha256::new(),
            stats: Stats::default(),
            free_crypto: false,
        }
    }

    fn trace(&mut self, event: impl AsRef<[u8]>) {
        self.trace_hash.update(self.now.to_be_bytes());
        self.trace_hash.update(event.as_ref());
    }

    /// A fresh client request, submitted to replica `to` (or to every replica).
    pub fn submit(&mut self, to: Option<ReplicaId>) -> TxId {
        self.next_tx += 1;
        let mut tx_id = [0u8; 32];
        tx_id[..8].copy_from_slice(&self.next_tx.to_be_bytes());
        tx_id[8..16].copy_from_slice(&self.seed.to_be_bytes());
        let request = Request {
            tx_id,
            payload: payload_for(&tx_id),
        };
        self.submitted.insert(tx_id, self.now);
        self.send_request(request, to);
        tx_id
    }

    /// A hostile client's request to every replica: a payload labelled with another id, an
    /// empty payload, or one larger than any batch may be. None of them may ever execute,
    /// and none may stop the network.
    pub fn submit_hostile(&mut self) {
        self.next_tx += 1;
        let mut tx_id = [0xffu8; 32];
        tx_id[..8].copy_from_slice(&self.next_tx.to_be_bytes());
        let request = match self.rng.below(3) {
            0 => {
                let mut payload = payload_for(&tx_id);
                payload[31] ^= 1;
                Request { tx_id, payload }
            }
            1 => Request {
                tx_id,
                payload: Vec::new(),
            },
            _ => {
                let mut payload = payload_for(&tx_id);
                payload.resize(self.config.max_batch_bytes + 1, 0);
                Request { tx_id, payload }
            }
        };
        self.send_request(request, None);
    }

    fn send_request(&mut self, request: Request, to: Option<ReplicaId>) {
        let targets: Vec<usize> = match to {
            Some(id) => (0..self.nodes.len())
                .filter(|&i| self.nodes[i].id == id)
                .collect(),
            None => (0..self.nodes.len()).collect(),
        };
        for i in targets {
            let now = self.now;
            if let Some(replica) = self.nodes[i].replica.as_mut() {
                let actions = replica.request(request.clone(), now);
                self.perform(i, actions);
            }
        }
    }

    /// Retransmits every request that has not executed on a quorum of correct replicas yet.
    pub fn retransmit(&mut self) {
        let missing: Vec<TxId> = self
            .submitted
            .keys()
            .filter(|tx| {
                self.correct_executions(tx) < self.config.quorum().min(self.correct_count())
            })
            .take(256)
            .copied()
            .collect();
        for tx_id in missing {
            self.resubmit(tx_id, None);
        }
    }

    pub fn correct_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_correct()).count()
    }

    pub fn correct_executions(&self, tx: &TxId) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.is_correct() && n.executed.contains_key(tx))
            .count()
    }

    /// Performs a node's actions as its host would.
    pub fn perform(&mut self, index: usize, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Persist { token } => {
                    // The simulated disk is synchronous and every input ends with its Persist,
                    // so between inputs the replica's durable state is exactly what it last
                    // persisted: `crash` takes the snapshot then, instead of copying it here.
                    let Some(replica) = self.nodes[index].replica.as_mut() else {
                        return;
                    };
                    queue.extend(replica.persisted(token));
                }
                Action::Send { to, message } => self.outgoing(index, Some(to), message),
                Action::Broadcast { message } => {
                    if std::env::var("PBFT_SIM_TRACE").is_ok() {
                        let what = match &message {
                            Message::ViewChange(vc) => format!("VC {}", vc.message.new_view),
                            Message::NewView(nv) => format!("NV {}", nv.message.view),
                            Message::Suspect { view, .. } => format!("SUSPECT {view}"),
                            _ => String::new(),
                        };
                        if !what.is_empty() {
                            let state = self.nodes[index].replica.as_ref().map(|r| r.to_string());
                            eprintln!("t={} node {index} {what} {state:?}", self.now);
                        }
                    }
                    self.outgoing(index, None, message)
                }
                Action::Execute { seq, batch } => {
                    // The host's block holds the batch as certified (the core leaves out of
                    // `batch` what it remembers executing; a host that forgot refuses those
                    // by its index): agreement and state roots follow the certified batch.
                    let certificate = self.nodes[index]
                        .replica
                        .as_ref()
                        .and_then(|r| r.durable_state().committed.get(&seq))
                        .cloned();
                    let held = certificate.as_ref().map(|c| c.batch.digest());
                    if let Some(certificate) = certificate {
                        self.nodes[index].blocks.insert(seq, certificate);
                    }
                    // A host stores each block's commit certificate from the core's committed
                    // batches (the peer stops without it): a batch handed over without them
                    // is a fault of the core (issue 18: "dispatched without its commits").
                    if held.is_none() && self.nodes[index].is_correct() {
                        self.violations.push(format!(
                            "replica {} was handed batch {seq} without its commits",
                            self.nodes[index].id
                        ));
                    }
                    let certified = held.unwrap_or_else(|| batch.digest());
                    let root = self.execute(index, seq, &batch, certified);
                    if let Some(replica) = self.nodes[index].replica.as_mut() {
                        queue.extend(replica.executed(seq, root));
                    }
                }
                Action::SetTimer { at_ms } => self.nodes[index].timer_at = Some(at_ms),
                Action::Divergence { seq, .. } => {
                    if self.nodes[index].is_correct() {
                        self.violations.push(format!(
                            "replica {} reported divergence at {seq}",
                            self.nodes[index].id
                        ));
                    }
                }
                Action::AlreadyCommitted { .. } | Action::Busy { .. } => {}
                // Served from the host's blocks, as a peer serves them.
                Action::ServeFetch {
                    to,
                    range,
                    checkpoint,
                } => {
                    let batches: Vec<CommittedBatch> = self.nodes[index]
                        .blocks
                        .range(range)
                        .map(|(_, b)| b.clone())
                        .collect();
                    if !batches.is_empty() {
                        let reply = Message::FetchReply {
                            batches,
                            checkpoint,
                        };
                        self.outgoing(index, Some(to), reply);
                    }
                }
            }
        }
    }

    /// The host executes a batch: its ledger grows and its state root chains the batch.
    fn execute(&mut self, index: usize, seq: Seq, batch: &Batch, digest: Digest) -> Digest {
        let node = &mut self.nodes[index];
        let correct = node.is_correct();
        if correct && seq != node.ledger.len() as u64 + 1 {
            self.violations.push(format!(
                "replica {} executed {seq} after {}",
                node.id,
                node.ledger.len()
            ));
        }
        let mut h = Sha256::new();
        h.update(node.state_root);
        h.update(digest);
        if node.corrupt_state {
            h.update(b"a bug in this host's execution");
        }
        node.state_root = h.finalize().into();
        node.ledger.push((seq, digest, node.state_root));
        let id = node.id;
        let mut problems = Vec::new();
        let mut refused_duplicates = 0;
        for r in &batch.requests {
            if correct && sim_request_id(&r.payload) != Some(r.tx_id) {
                problems.push(format!(
                    "replica {id} executed a payload under another request's id (seq {seq})"
                ));
            }
            if let Some(&first) = node.executed.get(&r.tx_id) {
                // The core leaves out requests executed from `retain_committed` below its
                // stable checkpoint on (unless restarted); older repeats the host's
                // transaction index refuses (DUPLICATE_TX_ID).
                let low = node.replica.as_ref().map_or(0, |r| r.low_watermark());
                let remembered = !node.forgot_executed
                    && first.saturating_add(self.config.retain_committed) >= low;
                if remembered && correct {
                    problems.push(format!(
                        "replica {id} executed a request twice (seq {seq}, first at {first})"
                    ));
                }
                refused_duplicates += 1;
                continue;
            }
            node.executed.insert(r.tx_id, seq);
        }
        // Consensus time: never decreasing, and never ahead of the clock by more than
        // the allowed skew (null batches carry no time).
        if correct && !batch.is_null() {
            if batch.timestamp_ms < node.last_timestamp {
                problems.push(format!(
                    "replica {id} executed seq {seq} with a timestamp before the previous batch's ({} after {})",
                    batch.timestamp_ms, node.last_timestamp
                ));
            }
            if batch.timestamp_ms > self.now + self.config.max_clock_skew_ms {
                problems.push(format!(
                    "replica {id} executed seq {seq} stamped in the future"
                ));
            }
            node.last_timestamp = batch.timestamp_ms;
        }
        let root = node.state_root;
        self.stats.executed_batches += 1;
        self.stats.refused_duplicates += refused_duplicates;
        if correct {
            for r in &batch.requests {
                if !self.submitted.contains_key(&r.tx_id) && !self.forwarded_only.contains(&r.tx_id)
                {
                    problems.push(format!(
                        "replica {id} executed a request nobody submitted (seq {seq})"
                    ));
                }
            }
            match self.agreed.get(&seq) {
                Some(d) if *d != digest => problems.push(format!(
                    "agreement broken at seq {seq}: replica {id} executed another batch"
                )),
                Some(_) => {}
                None => {
                    self.agreed.insert(seq, digest);
                }
            }
        }
        self.violations.extend(problems);
        self.trace(format!("exec {id} {seq}"));
        root
    }

    fn outgoing(&mut self, index: usize, to: Option<ReplicaId>, message: Message) {
        let from = self.nodes[index].id;
        let carried = message.batch_bytes();
        if self.nodes[index].is_correct() && carried > self.config.max_message_batch_bytes() {
            self.violations.push(format!(
                "replica {from} sent a message carrying {carried} bytes of batches (at most {})",
                self.config.max_message_batch_bytes()
            ));
        }
        let messages = mocks::transform(self, index, to, message);
        for (to, message) in messages {
            let targets: Vec<ReplicaId> = match to {
                Some(t) => vec![t],
                None => (0..self.config.n).filter(|&t| t != from).collect(),
            };
            for t in targets {
                self.enqueue(from, t, message.clone());
            }
        }
    }

    pub fn enqueue_public(&mut self, from: ReplicaId, to: ReplicaId, message: Message) {
        self.enqueue(from, to, message);
    }

    /// Sends with the network's smallest delay (an adversary placed well in the network).
    pub fn enqueue_fast(&mut self, from: ReplicaId, to: ReplicaId, message: Message) {
        self.enqueue_within(from, to, message, self.faults.min_delay_ms);
    }

    fn enqueue(&mut self, from: ReplicaId, to: ReplicaId, message: Message) {
        self.enqueue_within(from, to, message, self.faults.max_delay_ms);
    }

    /// Delivers after a random delay between the network's smallest and `max_delay_ms`.
    fn enqueue_within(
        &mut self,
        from: ReplicaId,
        to: ReplicaId,
        message: Message,
        max_delay_ms: u64,
    ) {
        if self.faults.blocked.contains(&(from, to)) || self.rng.chance(self.faults.loss_per_mille)
        {
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.faults.min_delay_ms
                + self
                    .rng
                    .below(max_delay_ms.saturating_sub(self.faults.min_delay_ms) + 1);
            for index in 0..self.nodes.len() {
                if self.nodes[index].id != to {
                    continue;
                }
                self.order += 1;
                self.payloads.insert(self.order, message.clone());
                self.queue.push(Reverse(InFlight {
                    at: self.now + delay,
                    order: self.order,
                    to: index,
                    from,
                }));
                self.stats.messages += 1;
            }
        }
    }

    /// Advances simulated time by one millisecond: deliveries, then timers.
    pub fn step(&mut self) {
        self.now += 1;
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > self.now {
                break;
            }
            let Reverse(flight) = self.queue.pop().unwrap();
            let mut message = self.payloads.remove(&flight.order).unwrap();
            // As the peer's transport does, the host names a forward's sender by its link.
            if let Message::Forward { from, .. } = &mut message {
                *from = flight.from;
            }
            // A link cut after sending still loses what was in flight.
            if self
                .faults
                .blocked
                .contains(&(flight.from, self.nodes[flight.to].id))
            {
                continue;
            }
            let now = self.now;
            let index = flight.to;
            if mocks::drops_incoming(&self.nodes[index].behavior) {
                continue;
            }
            mocks::observe(self, index, &message);
            if let Some(replica) = self.nodes[index].replica.as_mut() {
                let actions = replica.receive(message, now);
                self.perform(index, actions);
            }
        }
        for index in 0..self.nodes.len() {
            let due = self.nodes[index].timer_at.is_some_and(|t| t <= self.now)
                || self.now.is_multiple_of(50);
            if due && self.nodes[index].replica.is_some() {
                self.nodes[index].timer_at = None;
                let now = self.now;
                let actions = self.nodes[index].replica.as_mut().unwrap().tick(now);
                self.perform(index, actions);
            }
            if let Some(r) = self.nodes[index].replica.as_ref() {
                self.stats.max_view = self.stats.max_view.max(r.view());
            }
        }
        self.probe_idle_replicas();
        mocks::act(self);
    }

    pub fn crash(&mut self, index: usize) {
        if let Some(replica) = self.nodes[index].replica.take() {
            self.nodes[index].durable = replica.durable_state().clone();
        }
        self.nodes[index].timer_at = None;
        if std::env::var("PBFT_SIM_TRACE").is_ok() {
            eprintln!("t={} crash {index}", self.now);
        }
        self.trace(format!("crash {index}"));
    }

    /// Restarts from what the node persisted and its host's ledger.
    /// Every second, a replica whose ledger did not grow asks the next replica in turn for
    /// batches after its own, as the peer's driver does (`probe_if_idle`): a replica that fell
    /// behind learns it even when no checkpoint can become stable for it.
    fn probe_idle_replicas(&mut self) {
        if !self.now.is_multiple_of(1000) {
            return;
        }
        let n = self.config.n;
        for index in 0..self.nodes.len() {
            let height = self.nodes[index].ledger.len() as u64;
            let idle = self.nodes[index].probed_at_height == Some(height);
            self.nodes[index].probed_at_height = Some(height);
            if !idle || self.nodes[index].replica.is_none() {
                continue;
            }
            let from = self.nodes[index].id;
            let to = (from + 1 + (self.now / 1000) as u32 % (n - 1)) % n;
            let up_to = height + self.config.watermark_window;
            self.enqueue(
                from,
                to,
                Message::Fetch {
                    from,
                    after: height,
                    up_to,
                },
            );
        }
    }

    /// Restarts node `index` as `medledger-peer` restarts: from its durable state without
    /// the executed request ids, which the peer does not persist.
    pub fn restart_as_peer(&mut self, index: usize) {
        self.nodes[index].durable.executed_tx.clear();
        self.nodes[index].forgot_executed = true;
        self.restart(index);
    }

    /// Sends request `tx_id` again (its payload follows from the id) to `to`, or to everyone.
    pub fn resubmit(&mut self, tx_id: TxId, to: Option<ReplicaId>) {
        let payload = payload_for(&tx_id);
        self.send_request(Request { tx_id, payload }, to);
    }

    pub fn restart(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if node.replica.is_some() {
            return;
        }
        let id = node.id;
        node.replica = Some(Replica::new(
            id,
            self.config.clone(),
            Box::new(SimCrypto { id }),
            node.durable.clone(),
            node.ledger.len() as u64,
        ));
        let now = self.now;
        let actions = self.nodes[index].replica.as_mut().unwrap().tick(now);
        self.perform(index, actions);
        self.trace(format!("restart {index}"));
    }

    pub fn heal(&mut self) {
        self.faults = NetworkFaults {
            min_delay_ms: 1,
            max_delay_ms: 5,
            ..Default::default()
        };
    }

    /// Checkpoint agreement: correct replicas' ledgers agree seq by seq (roots included).
    pub fn check_ledgers(&mut self) {
        let correct: Vec<&Node> = self.nodes.iter().filter(|n| n.is_correct()).collect();
        for a in &correct {
            for b in &correct {
                for (x, y) in a.ledger.iter().zip(&b.ledger) {
                    if x != y {
                        self.violations.push(format!(
                            "ledgers of {} and {} differ at seq {}",
                            a.id, b.id, x.0
                        ));
                        return;
                    }
                }
            }
        }
    }

    pub fn trace_digest(&self) -> [u8; 32] {
        self.trace_hash.clone().finalize().into()
    }
}
