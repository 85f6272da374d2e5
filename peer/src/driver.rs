//! The driver: one thread that owns the PBFT replica and the ledger's write side. It feeds
//! the replica client requests, replica messages and clock ticks, and performs the actions it
//! returns, in order (the contract at the top of `medledger-pbft`'s replica.rs):
//!
//! 1. Inputs are taken in bursts (up to [`BURST`]); every action of the burst is performed as
//!    it comes, except `Persist`, whose tokens are collected.
//! 2. After the burst, the durable PBFT state is written once, synced (group commit), and
//!    `persisted(token)` releases the messages the core held back until then.
//! 3. `Execute` executes the batch into a block and commits the block with all its changes in
//!    one synced write *before* `executed` is called and before any client hears of it.
//!
//! Replica-to-replica `Fetch` requests go to the core, which bounds and budgets them; the
//! `ServeFetch` it returns is answered from the ledger's blocks (which keep every commit
//! certificate) on the state-transfer thread (`state_transfer.rs`), so a peer that was down
//! for any length of time can catch up without taking this thread's time.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medledger_pbft as pbft;
use medledger_proto::v1;
use tokio::sync::{oneshot, watch};

use crate::execute::{LedgerState, Revocations};
use crate::inputs::{Input, Outcome};
use crate::ledger::Ledger;
use crate::network::Network;
use crate::pbft_store::{PbftStore, committed_key};
use crate::state_transfer::StateTransfer;
use crate::validate::Validator;
use crate::votes::Votes;
use medledger_execution::block::header_hash;
use medledger_execution::config::{Configuration, EpochBase};
use medledger_execution::execute::{CertifiedBatch, execute_block};
use medledger_execution::merkle::Tree;
use medledger_execution::proof::build_proof;

/// Most inputs handled before the durable state is written.
pub const BURST: usize = 1024;

/// This peer's wall clock (Unix ms): consensus time, timer deadlines, the clock it reports.
/// Debug builds add the offset a test gives it ([`crate::fault_clock`]).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        .saturating_add_signed(crate::fault_clock::offset_ms())
}

/// What the rest of the peer may read about the replica.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub view: u64,
    pub primary: u32,
    pub in_view_change: bool,
    /// The replica suspects the primary of its view (`Replica::suspects_primary`).
    pub suspects_primary: bool,
    pub pending_requests: u64,
    pub last_executed: u64,
    /// The last pre-prepare's batch time minus this peer's clock on its arrival (ms).
    pub clock_offset_from_primary_ms: i64,
    /// This peer's replica id in the configuration in force (`None`: it was removed).
    pub replica: Option<pbft::ReplicaId>,
}

/// State shared between the driver and the services.
pub struct Shared {
    pub status: Mutex<Status>,
    pub height: watch::Sender<u64>,
    pub revocations: Revocations,
    pub configuration: Arc<crate::execute::ConfigurationInForce>,
    /// Private values acknowledged and not committed yet (docs/adr/0017).
    pub pending_private: crate::private_data::PendingPrivateData,
    /// What the last reconciliation pass left missing (docs/adr/0017, step 5).
    pub reconciliation: Arc<crate::reconcile::Progress>,
}

struct Waiter {
    reply: oneshot::Sender<Outcome>,
    since: Instant,
}

/// The answer for a client waiting on the envelope whose SHA-256 is `waited_for` (its
/// request id), when the bytes hashing to `ordered` under that id were executed in `block` with
/// `result` (whose words are `message`) and `proof` (votes to come). Correct backups refuse
/// a pre-prepare whose request ids are not its envelopes' hashes, but an outcome is only
/// ever given for the very envelope the client sent.
fn answer(
    waited_for: &[u8; 32],
    ordered: &[u8; 32],
    block: u64,
    result: &v1::TxResult,
    message: &str,
    proof: impl FnOnce() -> Option<v1::CommitProof>,
) -> Outcome {
    if ordered != waited_for {
        return Outcome::Displaced { block };
    }
    match proof() {
        Some(proof) => Outcome::Committed {
            block,
            result: v1::TxResult {
                message: message.to_string(),
                ..result.clone()
            },
            proof: Box::new(proof),
        },
        None => Outcome::Busy,
    }
}

pub struct Driver {
    replica: pbft::Replica,
    ledger: Arc<Ledger>,
    validator: Arc<Validator>,
    network: Arc<Network>,
    shared: Arc<Shared>,
    votes: Arc<Votes>,
    store: PbftStore,
    waiters: HashMap<pbft::TxId, Vec<Waiter>>,
    /// When to call `tick` (the core's `SetTimer`, turned into a monotonic instant: the
    /// wall clock may be set back or forward meanwhile).
    timer_due: Option<std::time::Instant>,
    pending_token: Option<u64>,
    /// A state transfer in progress: (replica asked, up to, what we had when we asked).
    catching_up: Option<(pbft::ReplicaId, pbft::Seq, pbft::Seq)>,
    last_progress: Instant,
    next_probe: u32,
    /// Serves state transfer off this thread.
    state_transfer: StateTransfer,
    /// Debug builds only: the block before whose execution the consensus thread panics
    /// (see [`FAULT_CONSENSUS_PANIC`]).
    panic_before: Option<u64>,
    /// The last pre-prepare's batch time minus our clock on its arrival (ms).
    clock_offset_ms: i64,
    /// When the operator was last told that this clock is off (at most every 10 s).
    clock_warned: Option<Instant>,
    /// The wall clock at the last turn of the loop (ms): a turn takes at most 200 ms plus
    /// its work, so a longer gap means this process was stopped, starved, or its clock
    /// jumped.
    last_turn_ms: u64,
    /// The view and whether it was being changed, as last logged.
    standing: (pbft::View, bool),
    /// Whether the replica was stepping down, as last logged.
    stepping_down: bool,
    /// The last view this peer said it suspects (logged once per view).
    suspected: Option<pbft::View>,
    /// This peer's signing identity: the replica of a next epoch signs with it.
    identity: Option<Arc<medledger_crypto::SigningIdentity>>,
    /// Set by `execute` when the block it committed changed the peers: the epoch that
    /// starts after it, and its configuration (docs/adr/0011).
    epoch_ended: Option<(EpochBase, Arc<Configuration>)>,
    /// The block after which this peer is no replica any more (it was removed).
    left_at: Option<u64>,
}

/// Debug builds only (tests of real processes): `NAME:BLOCK` makes the consensus thread of
/// the peer named `NAME` panic before it executes block `BLOCK`, the fault a bug in
/// execution would be. Release builds never read it.
pub const FAULT_CONSENSUS_PANIC: &str = "MEDLEDGER_FAULT_CONSENSUS_PANIC";

/// A gap between two turns of the consensus loop this long is a stall ([`Driver::note_stall`]).
const STALL: Duration = Duration::from_secs(1);
/// How long an expired timer waits after a stall.
const STALL_GRACE: Duration = Duration::from_secs(1);

/// With no block executed for this long, ask a peer whether we are behind.
const SYNC_PROBE_INTERVAL: Duration = Duration::from_secs(1);

impl Driver {
    pub fn new(
        replica: pbft::Replica,
        store: PbftStore,
        ledger: Arc<Ledger>,
        validator: Arc<Validator>,
        network: Arc<Network>,
        shared: Arc<Shared>,
        votes: Arc<Votes>,
    ) -> Driver {
        let state_transfer = StateTransfer::start(ledger.clone(), network.clone());
        Driver {
            replica,
            ledger,
            validator,
            network,
            shared,
            votes,
            store,
            waiters: HashMap::new(),
            timer_due: None,
            pending_token: None,
            catching_up: None,
            last_progress: Instant::now(),
            next_probe: 0,
            state_transfer,
            panic_before: None,
            clock_offset_ms: 0,
            clock_warned: None,
            last_turn_ms: now_ms(),
            standing: (0, false),
            stepping_down: false,
            suspected: None,
            identity: None,
            epoch_ended: None,
            left_at: None,
        }
    }

    /// The identity this peer's replicas sign with (required for the peer set to change).
    pub fn with_identity(mut self, identity: Arc<medledger_crypto::SigningIdentity>) -> Driver {
        self.identity = Some(identity);
        self
    }

    /// After a stall of this process (SIGSTOP, a starved machine, a clock jumping ahead),
    /// a timer that expired meanwhile waits [`STALL_GRACE`] more: the messages the other
    /// peers sent during the stall are still in the sockets, and handling them first may
    /// show the network live. Without it a paused peer resumes straight into a view change
    /// no other peer joins, and sits out until the next one. Timers only ever delay a view
    /// change, so waiting is safe.
    fn note_stall(&mut self) {
        let now = now_ms();
        let gap = now.saturating_sub(self.last_turn_ms);
        self.last_turn_ms = now;
        if gap < STALL.as_millis() as u64 {
            return;
        }
        let now = std::time::Instant::now();
        let grace = now + STALL_GRACE;
        if let Some(due) = self.timer_due.filter(|due| *due < grace) {
            tracing::info!(
                stalled_ms = gap,
                overdue_ms = now.saturating_duration_since(due).as_millis() as u64,
                "the consensus thread stalled (paused, starved, or the clock jumped): its \
                 expired timers wait {} ms more for what arrived meanwhile",
                STALL_GRACE.as_millis()
            );
            self.timer_due = Some(grace);
        }
    }

    /// Notes how far a primary's batch time `batch_ms` is from this peer's clock. Beyond
    /// the allowed skew the core refuses the batch (Castro–Liskov's timestamps, our
    /// consensus time), and this peer would sit the view out in silence: it says so instead
    /// (log at most every 10 s, the `medledger_clock_offset_from_primary_ms` gauge, and
    /// `GetStatus`).
    fn observe_clock(&mut self, batch_ms: u64) {
        let now = now_ms();
        let offset =
            (batch_ms as i128 - now as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        self.clock_offset_ms = offset;
        metrics::gauge!("medledger_clock_offset_from_primary_ms").set(offset as f64);
        let allowed = self.replica.config().max_clock_skew_ms;
        if offset.unsigned_abs() > allowed
            && self
                .clock_warned
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            self.clock_warned = Some(Instant::now());
            tracing::warn!(
                offset_ms = offset,
                allowed_ms = allowed,
                primary = self.replica.config().primary(self.replica.view()),
                "the primary's batch time is {offset} ms from this peer's clock, beyond the \
                 allowed {allowed} ms: this peer refuses that batch. If this repeats, check \
                 this machine's time (NTP) against the other peers' (`medledger network \
                 status` compares them); a batch held up in the network looks the same"
            );
        }
    }

    /// Debug builds: reads [`FAULT_CONSENSUS_PANIC`] for the peer named `name`.
    #[cfg(debug_assertions)]
    pub fn with_injected_fault(mut self, name: &str) -> Driver {
        self.panic_before = std::env::var(FAULT_CONSENSUS_PANIC).ok().and_then(|v| {
            let (peer, block) = v.split_once(':')?;
            (peer == name).then(|| block.parse().ok())?
        });
        self
    }

    /// Release builds inject nothing.
    #[cfg(not(debug_assertions))]
    pub fn with_injected_fault(self, _name: &str) -> Driver {
        self
    }

    /// Runs until `Input::Shutdown` or until every sender is gone. A storage failure stops
    /// the peer: continuing could acknowledge what is not on disk.
    pub fn run(mut self, inputs: Receiver<Input>, initial: Vec<pbft::Action>) {
        self.perform(initial);
        self.flush();
        loop {
            let wait = self
                .timer_due
                .map(|due| {
                    due.saturating_duration_since(std::time::Instant::now())
                        .as_millis()
                })
                .unwrap_or(200)
                .clamp(0, 200) as u64;
            let mut stop = false;
            match inputs.recv_timeout(Duration::from_millis(wait)) {
                Ok(input) => stop |= self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            for _ in 0..BURST {
                match inputs.try_recv() {
                    Ok(input) => stop |= self.handle(input),
                    Err(_) => break,
                }
            }
            self.note_stall();
            if self
                .timer_due
                .is_some_and(|due| std::time::Instant::now() >= due)
            {
                self.timer_due = None;
                let actions = self.replica.tick(now_ms());
                self.perform(actions);
            }
            if self.left_at.is_none() {
                self.probe_if_idle();
            }
            self.flush();
            self.publish_status();
            if stop {
                tracing::info!("consensus driver stopped");
                return;
            }
        }
    }

    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Submit { reply, .. } if self.left_at.is_some() => {
                let block = self.left_at.unwrap_or_default();
                let _ = reply.send(Outcome::Left { block });
            }
            // A removed peer's replica is gone: it takes no part any more. A message queued
            // before the peers changed is not the next replica set's.
            Input::Message { .. } if self.left_at.is_some() => {}
            Input::Message { epoch, .. } if epoch != self.replica.config().epoch_base => {
                metrics::counter!("medledger_replica_messages_other_epoch_total").increment(1);
            }
            Input::Submit { request, reply, .. } => {
                self.waiters.entry(request.tx_id).or_default().push(Waiter {
                    reply,
                    since: Instant::now(),
                });
                let actions = self.replica.request(request, now_ms());
                self.perform(actions);
            }
            Input::Message { from, message, .. } => {
                // Only the current primary's, in the current view: another replica's forged
                // pre-prepare must not set the offset this peer reports.
                if let pbft::Message::PrePrepare(pre_prepare) = &message
                    && pre_prepare.message.view == self.replica.view()
                    && from == self.replica.config().primary(self.replica.view())
                {
                    self.observe_clock(pre_prepare.message.batch.timestamp_ms);
                }
                let reply_from =
                    matches!(message, pbft::Message::FetchReply { .. }).then_some(from);
                let actions = self.replica.receive(message, now_ms());
                self.perform(actions);
                if let Some(from) = reply_from {
                    self.continue_catch_up(from);
                }
            }
            Input::Shutdown => return true,
        }
        false
    }

    /// Writes the durable state if the core asked, then releases what it held back.
    fn flush(&mut self) {
        while let Some(token) = self.pending_token.take() {
            if let Err(e) = self.store.save(&self.ledger, self.replica.durable_state()) {
                fatal(&format!("cannot persist the PBFT state: {e}"));
            }
            let actions = self.replica.persisted(token);
            self.perform(actions);
        }
    }

    /// Logs each move into a view change and each view entered (operators read view
    /// changes from the log; `network status` shows the current one).
    fn log_view_standing(&mut self) {
        let stepping_down = self.replica.stepping_down();
        if stepping_down != self.stepping_down {
            self.stepping_down = stepping_down;
            let view = self.replica.view();
            if stepping_down {
                tracing::info!(
                    view,
                    "this peer, the primary, steps down: f peers have been in a view change \
                     past its view for too long, and only a view change brings them back"
                );
            } else if self.standing == (view, false) {
                tracing::info!(view, "the step-down ended: the others did not join it");
            }
        }
        let now = (self.replica.view(), self.replica.in_view_change());
        if now == self.standing {
            return;
        }
        self.standing = now;
        let primary = self.replica.config().primary(now.0);
        if now.1 {
            tracing::info!(view = now.0, primary, "view change: asking for a new view");
        } else {
            tracing::info!(view = now.0, primary, "in a new view");
        }
    }

    fn perform(&mut self, actions: Vec<pbft::Action>) {
        let mut queue: std::collections::VecDeque<pbft::Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                pbft::Action::Persist { token } => {
                    self.pending_token = Some(self.pending_token.map_or(token, |t| t.max(token)));
                }
                pbft::Action::Send { to, message } => {
                    if let pbft::Message::Fetch { up_to, after, .. } = &message {
                        self.catching_up = Some((to, *up_to, *after));
                    }
                    self.network.send(to, &message);
                }
                pbft::Action::Broadcast { message } => {
                    if let pbft::Message::Suspect { view, .. } = &message
                        && self.suspected != Some(*view)
                    {
                        self.suspected = Some(*view);
                        if !self.replica.stepping_down() {
                            tracing::info!(
                                view,
                                "this peer suspects the primary of its view (no progress, or \
                                 a batch it refused); it changes view once 2f+1 peers do"
                            );
                        }
                    }
                    self.network.broadcast(&message)
                }
                pbft::Action::Execute { seq, .. } => {
                    let digest = self.execute(seq);
                    if let Some((base, configuration)) = self.epoch_ended.take() {
                        // What the ended replica set still had to do (later batches,
                        // messages, timers) is void: the next set starts afresh.
                        queue.clear();
                        queue.extend(self.switch_epoch(base, configuration));
                        continue;
                    }
                    queue.extend(self.replica.executed(seq, digest));
                }
                pbft::Action::SetTimer { at_ms } => {
                    // At most an hour ahead (a tick then finds nothing due and sets it again).
                    let after = at_ms
                        .saturating_sub(self.replica.timer_clock_ms())
                        .min(3_600_000);
                    self.timer_due = Some(std::time::Instant::now() + Duration::from_millis(after));
                }
                pbft::Action::AlreadyCommitted { tx_id, .. } => {
                    for w in self.waiters.remove(&tx_id).unwrap_or_default() {
                        let _ = w.reply.send(Outcome::AlreadyCommitted);
                    }
                }
                pbft::Action::ServeFetch {
                    to,
                    range,
                    checkpoint,
                } => self.state_transfer.serve(to, range, checkpoint),
                pbft::Action::Busy { tx_id } => {
                    for w in self.waiters.remove(&tx_id).unwrap_or_default() {
                        let _ = w.reply.send(Outcome::Busy);
                    }
                }
                pbft::Action::Divergence { seq, ours, agreed } => {
                    metrics::counter!("medledger_divergences_total").increment(1);
                    tracing::error!(
                        seq,
                        ours = %hex::encode(ours),
                        agreed = %hex::encode(agreed),
                        "this peer's state differs from the one 2f+1 peers agree on; stop it \
                         and restore its ledger from a healthy peer"
                    );
                }
            }
        }
        self.log_view_standing();
    }

    /// Executes committed batch `seq` into block `seq` and commits it; returns the digest its
    /// checkpoint votes on ([`checkpoint_digest`]).
    fn execute(&mut self, seq: pbft::Seq) -> pbft::Digest {
        let committed = self
            .replica
            .durable_state()
            .committed
            .get(&seq)
            .cloned()
            .unwrap_or_else(|| {
                // The core keeps every dispatched batch until it executed (the 1,000-cycle
                // fault run found one trimmed first, docs/RELIABILITY.md): should that ever
                // fail again, say everything the core knows.
                let committed = &self.replica.durable_state().committed;
                fatal(&format!(
                    "batch {seq} was dispatched without its commits (the core holds {} \
                     committed batches, {:?} to {:?}; dispatched up to {}, executed up to {}, \
                     stable checkpoint {}, view {}; this peer's ledger is at {})",
                    committed.len(),
                    committed.keys().next(),
                    committed.keys().next_back(),
                    self.replica.last_dispatched(),
                    self.replica.last_executed(),
                    self.replica.low_watermark(),
                    self.replica.view(),
                    self.ledger.height()
                ))
            });
        let height = self.ledger.height();
        if seq <= height {
            // Already on disk (a restart replays batches committed but not yet marked
            // executed in the PBFT state): report the stored header.
            let header = self
                .ledger
                .header(seq)
                .unwrap_or_else(|e| fatal(&e.to_string()));
            // Its vote may never have left before the restart.
            if header.format != 0 {
                let hash = header_hash(&header);
                if let Some(vote) = self.votes.executed(seq, hash) {
                    self.network.broadcast_vote(vote);
                }
            }
            return checkpoint_digest(&header);
        }
        assert_eq!(seq, height + 1, "blocks execute in order");
        if self.panic_before == Some(seq) {
            panic!("{FAULT_CONSENSUS_PANIC}: injected fault before block {seq}");
        }
        let certified = CertifiedBatch {
            seq,
            batch: &committed.batch,
            commits: &committed.commits,
        };
        let state = LedgerState::new(&self.ledger, &self.shared.revocations);
        let commit = execute_block(&state, &self.validator, &certified)
            .unwrap_or_else(|e| fatal(&format!("cannot execute block {seq}: {e}")));
        drop(state);
        for function in &commit.chaincode_panics {
            metrics::counter!("medledger_chaincode_panics_total").increment(1);
            tracing::error!(
                block = seq,
                %function,
                "the chaincode panicked; the transaction is recorded as failed"
            );
        }
        let header = commit
            .block
            .header
            .clone()
            .expect("executed blocks have headers");
        let hash = header_hash(&header);
        // This peer's vote on the header, to the others (their votes and ours make proofs),
        // sent while the block is being written: it attests a header that every correct peer
        // computes from this committed batch, which a crash before the write leaves
        // unchanged (the batch is re-executed to the same header), so the network's vote
        // round overlaps the disk's sync instead of following it.
        if let Some(vote) = self.votes.executed(seq, hash) {
            self.network.broadcast_vote(vote);
        }
        // A block that changes the peers makes all of this replica set's durable state
        // obsolete, deleted in the block's own write (docs/adr/0011).
        let pbft_deletes = if commit.ends_epoch {
            self.store.forget_epoch()
        } else {
            vec![committed_key(seq)]
        };
        // The private values of its valid transactions this peer acknowledged move from the
        // pending store into the block's own write; a value that does not match its
        // commitment was never taken (PutPrivateData checks), so only the matches are kept.
        let mut private: Vec<([u8; 32], crate::private_data::SaltedValue)> = Vec::new();
        let mut taken_pending: Vec<([u8; 32], [u8; 32])> = Vec::new();
        for of in &commit.private_data {
            let mut held = self
                .shared
                .pending_private
                .take(&of.transaction_hash)
                .unwrap_or_default();
            taken_pending.extend(held.keys().map(|c| (of.transaction_hash, *c)));
            for c in &of.commitments {
                if let Ok(c) = <[u8; 32]>::try_from(c.as_slice())
                    && let Some(value) = held.remove(&c)
                {
                    private.push((c, value));
                }
            }
        }
        self.ledger
            .commit_block(&commit, &pbft_deletes, &private, &taken_pending)
            .unwrap_or_else(|e| fatal(&format!("cannot commit block {seq}: {e}")));
        // What no block from this one on can validate (consensus time, not this clock).
        let expired = self.shared.pending_private.expire(header.time_ms);
        if let Err(e) = self.ledger.delete_pending_private(&expired) {
            tracing::warn!(error = %e, "expired private values stay on disk until the next start");
        }
        // The block is on disk: now the world may hear of it, handshakes included.
        self.shared.revocations.apply(&commit.revocations);
        if let Some((sequence, _, _)) = &commit.configuration {
            let state = LedgerState::new(&self.ledger, &self.shared.revocations);
            let configuration = self
                .validator
                .configuration_in_force(&state)
                .unwrap_or_else(|e| fatal(&format!("block {seq}'s configuration: {e}")));
            tracing::info!(block = seq, sequence, "a new configuration is in force");
            if commit.ends_epoch {
                self.epoch_ended = Some((EpochBase::after(&header), configuration));
            } else {
                self.shared.configuration.set(configuration, None);
            }
        }
        let block = commit.block;
        let tree = Tree::new(commit.result_leaves);
        let transactions = block.results.len();
        metrics::counter!("medledger_committed_transactions_total").increment(transactions as u64);
        metrics::histogram!("medledger_batch_size").record(transactions as f64);
        metrics::gauge!("medledger_height").set(seq as f64);
        for (i, (request, result)) in committed
            .batch
            .requests
            .iter()
            .zip(&block.results)
            .enumerate()
        {
            for w in self.waiters.remove(&request.tx_id).unwrap_or_default() {
                metrics::histogram!("medledger_commit_latency_seconds")
                    .record(w.since.elapsed().as_secs_f64());
                let message = commit.messages.get(i).map_or("", String::as_str);
                let proof = || {
                    build_proof(
                        &header,
                        Vec::new(),
                        &tree,
                        i,
                        &commit.envelope_hashes[i],
                        result,
                    )
                };
                // A repeat of an envelope ordered earlier: its outcome is the first leaf.
                if result.status == v1::TxStatus::DuplicateEnvelope as i32 {
                    let _ = w.reply.send(Outcome::AlreadyCommitted);
                    continue;
                }
                let _ = w.reply.send(answer(
                    &request.tx_id,
                    &commit.envelope_hashes[i],
                    seq,
                    result,
                    message,
                    proof,
                ));
            }
        }
        self.last_progress = Instant::now();
        tracing::debug!(block = seq, transactions, "block committed");
        self.shared.height.send_replace(seq);
        checkpoint_digest(&header)
    }

    /// Block `base.seq` changed the peers (docs/adr/0011 §2): the replica set that ordered
    /// it ends, and the one of `configuration` starts after it, in view 0 with nothing of
    /// the last one's but the requests it had not executed, which it orders anew. A peer
    /// not in `configuration` stops ordering (it keeps serving what it holds). Returns the
    /// new replica's first actions.
    fn switch_epoch(
        &mut self,
        base: EpochBase,
        configuration: Arc<Configuration>,
    ) -> Vec<pbft::Action> {
        let Some(identity) = self.identity.clone() else {
            fatal("the peers changed, and this driver was given no identity to sign with");
        };
        // The block that ended the set executed (its requests are not handed over).
        let unexecuted = self.replica.unexecuted_requests(base.seq);
        let me = configuration.replica_of(&identity.verifying_key());
        self.shared
            .configuration
            .set(configuration.clone(), Some(base));
        self.votes.new_epoch(base.seq, configuration.clone());
        self.network.reconfigure(me, &configuration, base.seq);
        self.pending_token = None;
        self.timer_due = None;
        self.catching_up = None;
        self.suspected = None;
        self.standing = (0, false);
        let Some(id) = me else {
            tracing::warn!(
                block = base.seq,
                "this peer was removed from the network at block {}: it orders nothing more \
                 and keeps serving the blocks it holds; stop it when the others no longer \
                 need them",
                base.seq
            );
            self.left_at = Some(base.seq);
            for (_, waiters) in self.waiters.drain() {
                for w in waiters {
                    let _ = w.reply.send(Outcome::Left { block: base.seq });
                }
            }
            return Vec::new();
        };
        let config = configuration
            .replica_config(base)
            .unwrap_or_else(|e| fatal(&format!("the configuration after block {}: {e}", base.seq)));
        tracing::info!(
            block = base.seq,
            replica = id,
            peers = configuration.peers.len(),
            "the peers changed: a new replica set orders from block {} on",
            base.seq + 1
        );
        self.replica = pbft::Replica::new(
            id,
            config,
            Box::new(crate::replica_crypto::ReplicaCrypto {
                identity,
                configuration,
            }),
            pbft::DurableState::default(),
            base.seq,
        );
        if let Err(e) = self.store.save(&self.ledger, self.replica.durable_state()) {
            fatal(&format!("cannot persist the PBFT state: {e}"));
        }
        let now = now_ms();
        let mut actions = self.replica.tick(now);
        for request in unexecuted {
            actions.extend(self.replica.request(request, now));
        }
        actions
    }

    /// A restarted or partitioned peer learns it is behind only from checkpoints, which an
    /// idle network does not produce. So when nothing executed for a while, ask one other
    /// replica (in turn) for blocks after ours; it answers only if it has some.
    fn probe_if_idle(&mut self) {
        if self.last_progress.elapsed() < SYNC_PROBE_INTERVAL {
            return;
        }
        self.last_progress = Instant::now();
        let n = self.replica.config().n;
        let me = self.replica.id();
        self.next_probe = (self.next_probe + 1) % n;
        if self.next_probe == me {
            self.next_probe = (self.next_probe + 1) % n;
        }
        let to = self.next_probe;
        let after = self.replica.last_executed();
        self.catching_up = Some((to, u64::MAX, after));
        self.network.send(
            to,
            &pbft::Message::Fetch {
                from: me,
                after,
                up_to: after.saturating_add(self.replica.config().watermark_window),
            },
        );
    }

    /// After a state-transfer reply: ask the same replica for the rest, if any.
    fn continue_catch_up(&mut self, from: pbft::ReplicaId) {
        let Some((asked, up_to, had)) = self.catching_up else {
            return;
        };
        // Only the replica asked ends or continues the catch-up: a reply from another (a
        // block read by `left_behind`, a stray or a liar's) says nothing of it.
        if from != asked {
            return;
        }
        let done = self.replica.last_executed();
        if done >= up_to || done <= had {
            // Finished, or the reply did not help: checkpoints and probes take over.
            self.catching_up = None;
        } else {
            self.catching_up = Some((asked, up_to, done));
            self.network.send(
                from,
                &pbft::Message::Fetch {
                    from: self.replica.id(),
                    after: done,
                    up_to,
                },
            );
        }
    }

    fn publish_status(&self) {
        let status = Status {
            view: self.replica.view(),
            primary: self.replica.config().primary(self.replica.view()),
            in_view_change: self.replica.in_view_change(),
            suspects_primary: self.replica.suspects_primary(),
            pending_requests: self.waiters.len() as u64,
            last_executed: self.replica.last_executed(),
            clock_offset_from_primary_ms: self.clock_offset_ms,
            replica: self.left_at.is_none().then(|| self.replica.id()),
        };
        metrics::gauge!("medledger_view").set(status.view as f64);
        *self.shared.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }
}

/// What a checkpoint of block `header.number` votes on (Castro–Liskov §4.3, the digest of
/// the state): for format 2 the header hash (docs/adr/0009 §3), which covers the state root,
/// the results and the chain; for format 1 the state root.
pub fn checkpoint_digest(header: &v1::BlockHeader) -> pbft::Digest {
    if header.format == 0 {
        return header.state_root.as_slice().try_into().unwrap_or([0; 32]);
    }
    header_hash(header)
}

fn fatal(why: &str) -> ! {
    // A full disk is the operator's to fix, and the peer needs nothing else: say so.
    let advice = if why.contains("No space left on device") {
        " (the disk holding the data directory is full: free space and start the peer again; \
         it catches up from the others by itself)"
    } else {
        ""
    };
    tracing::error!("{why}{advice}; stopping the peer");
    eprintln!("medledger-peer: fatal: {why}{advice}");
    std::process::exit(70);
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_execution::block::envelope_hash;

    /// A faulty primary orders, under the request id of an envelope it saw, bytes that do
    /// not hash to it. The client waiting on the real envelope must hear that it was
    /// displaced, never the other bytes' refusal as its own outcome, and their words never
    /// reach it.
    #[test]
    fn a_waiting_client_hears_only_the_outcome_of_the_envelope_it_sent() {
        let sent = b"the envelope the clinician signed".to_vec();
        let forged = b"a copy with the same id and a garbage signature".to_vec();
        let refusal = v1::TxResult {
            tx_id: vec![7; 32],
            status: v1::TxStatus::BadSignature as i32,
            code: v1::ResultCode::Unauthenticated as i32,
            ..Default::default()
        };
        let waited_for = envelope_hash(&sent);
        let no_proof = || -> Option<v1::CommitProof> { panic!("no proof for another envelope") };
        assert!(matches!(
            answer(
                &waited_for,
                &envelope_hash(&forged),
                9,
                &refusal,
                "the signature does not verify",
                no_proof
            ),
            Outcome::Displaced { block: 9 }
        ));
        let valid = v1::TxResult {
            status: v1::TxStatus::Valid as i32,
            ..refusal.clone()
        };
        let proof = v1::CommitProof {
            index: 3,
            ..Default::default()
        };
        match answer(&waited_for, &waited_for, 9, &valid, "", || {
            Some(proof.clone())
        }) {
            Outcome::Committed {
                block,
                result,
                proof: got,
            } => {
                assert_eq!(block, 9);
                assert_eq!(result, valid);
                assert_eq!(*got, proof);
            }
            _ => panic!("the envelope sent committed"),
        }
    }
}
