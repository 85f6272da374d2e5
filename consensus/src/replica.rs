//! The replica: normal case (Castro–Liskov §4.2), checkpoints and garbage collection (§4.3),
//! state transfer, and the glue to view changes (§4.4, in `view_change.rs`).
//!
//! # How a host drives it
//! Call an input method (`request`, `receive`, `tick`, `executed`, `persisted`); each returns
//! the [`Action`]s to perform, **in order**:
//! - `Persist { token }`: write [`Replica::durable_state`] to disk, then call
//!   `persisted(token)`. The core holds every `Send`/`Broadcast` produced after it until
//!   then, so a replica never says something a crash could make it forget (and then
//!   contradict).
//! - `Send` / `Broadcast`: sign-and-deliver is already done; deliver the message.
//! - `Execute { seq, batch }`: execute batches in the order given (seq increases by one each
//!   time), make the block durable, then call `executed(seq, state_root)`. The batch's
//!   `timestamp_ms` is its consensus time, never decreasing from batch to batch.
//! - `SetTimer { at_ms }`: call `tick(now)` once `at_ms - timer_clock_ms()` milliseconds have
//!   passed (on a monotonic clock: `at_ms` is on the replica's timer clock, which moves on
//!   with the wall clock's forward steps only; see [`Replica::timer_clock_ms`]).
//! - `AlreadyCommitted`, `Busy`, `Divergence`: tell the client or the operator.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::Config;
use crate::message::*;

/// What the host must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Persist {
        token: u64,
    },
    Send {
        to: ReplicaId,
        message: Message,
    },
    Broadcast {
        message: Message,
    },
    Execute {
        seq: Seq,
        batch: Batch,
    },
    SetTimer {
        at_ms: u64,
    },
    /// The request committed before (at `seq`): send the client its receipt again.
    AlreadyCommitted {
        tx_id: TxId,
        seq: Seq,
    },
    /// Too many pending requests: the client should retry later.
    Busy {
        tx_id: TxId,
    },
    /// State transfer (§4.3, adr 0006): send replica `to` a `FetchReply` with the committed
    /// batches of `range` (each with its commit certificate) and `checkpoint`. The core has
    /// bounded the range and budgeted the sender; the host reads the batches from wherever it
    /// keeps them (a peer and the simulator: their blocks, which hold each batch with its
    /// certificate) and may send fewer, in order from the start.
    ServeFetch {
        to: ReplicaId,
        range: std::ops::RangeInclusive<Seq>,
        checkpoint: CheckpointProof,
    },
    /// 2f+1 replicas agree on a state root at `seq` that differs from ours.
    Divergence {
        seq: Seq,
        ours: Digest,
        agreed: Digest,
    },
}

/// Why the core dropped a message or request: counted (see [`Replica::drops`]) so an
/// operator or a test can tell a Byzantine sender from a quiet network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// A request whose id is not its payload's (a lying backup's forward).
    MislabelledRequest,
    /// A pre-prepare whose batch breaks a rule (its primary is suspected).
    BadBatch,
    /// A signature that does not verify.
    BadSignature,
    /// A checkpoint at or below the stable one, or not at a checkpoint interval.
    CheckpointOutsideWindow,
    /// A sender's oldest far-future checkpoint, evicted by its newer ones.
    CheckpointFlood,
    /// A view change for a view too far ahead, or from a sender over its quota.
    ViewChangeFlood,
    /// A fetch for nothing we have.
    EmptyFetch,
    /// A fetch from a replica served less than [`Config::FETCH_INTERVAL_MS`] ago.
    FetchTooSoon,
    /// A normal-case message for a view being installed, beyond its sender's share of the
    /// early queue.
    EarlyQueueFull,
    /// A request arriving while the pending queue is full (in requests or bytes).
    PendingFull,
    /// A forward to a replica that is not the primary of its view (it would sit in the
    /// pending queue, never be ordered, and make the replica suspect a correct primary).
    ForwardToBackup,
    /// A forward from a replica whose forwards already hold their share of the pending
    /// queue ([`Config::max_forwarded_bytes`], [`Config::max_forwarded_requests`]).
    ForwarderOverBudget,
}

/// In a map keyed by sequence number or view, then by sender: keeps at most `quota` of
/// `from`'s entries at keys ≥ `start`, evicting its lowest (empty keys go too). Another
/// sender's entries are never touched. Returns how many were evicted.
pub(crate) fn evict_over_quota<T>(
    map: &mut BTreeMap<u64, BTreeMap<ReplicaId, T>>,
    from: ReplicaId,
    start: u64,
    quota: usize,
) -> usize {
    let keys: Vec<u64> = map
        .range(start..)
        .filter(|(_, by)| by.contains_key(&from))
        .map(|(key, _)| *key)
        .collect();
    let excess = keys.len().saturating_sub(quota);
    for key in keys.into_iter().take(excess) {
        if let Some(by) = map.get_mut(&key) {
            by.remove(&from);
            if by.is_empty() {
                map.remove(&key);
            }
        }
    }
    excess
}

/// Where a request stands on one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Executed(Seq),
    /// In a pre-prepare of the current log at this sequence number.
    Ordered(Seq),
    Pending,
    Unknown,
}

/// What must survive a crash (see `Action::Persist`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableState {
    pub view: View,
    /// The pre-prepare digest accepted for each sequence number, with its view: a restarted
    /// replica never prepares a different batch for the same (view, seq).
    pub accepted: BTreeMap<Seq, (View, Digest)>,
    pub prepared: BTreeMap<Seq, PreparedProof>,
    pub stable: CheckpointProof,
    /// Committed batches with their commit certificates: every one dispatched and not yet
    /// executed (the host reads its certificate when it executes it), those committed above
    /// a gap (at most `retain_committed` beyond the last executed), and a tail of
    /// `retain_committed` sequence numbers below the last dispatched.
    pub committed: BTreeMap<Seq, CommittedBatch>,
    /// Requests executed in the last `retain_committed` sequence numbers below the stable
    /// checkpoint, and since. A host need not persist it: losing it costs only duplicate
    /// ordering, which the host's transaction index catches at execution.
    pub executed_tx: BTreeMap<TxId, Seq>,
    pub last_timestamp_ms: u64,
    /// The last view whose new view this replica installed (view 0 needs none). A replica
    /// restarted in a view it never saw installed resumes that view's change.
    pub installed_view: Option<View>,
    /// As the primary of its view, the new view it sent: sent again to a replica that asks
    /// for the view after missing it, also after a restart (only the primary may send it:
    /// hosts refuse a message signed by another replica than the link's). At most one window
    /// of batches (see `view_change.rs`).
    pub new_view: Option<Signed<NewView>>,
}

#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) pre_prepare: Option<Signed<PrePrepare>>,
    pub(crate) prepares: BTreeMap<(View, ReplicaId), Signed<Vote>>,
    pub(crate) commits: BTreeMap<(View, ReplicaId), Signed<Vote>>,
    pub(crate) sent_commit: bool,
    pub(crate) committed: bool,
}

pub struct Replica {
    pub(crate) id: ReplicaId,
    pub(crate) config: Config,
    pub(crate) crypto: Box<dyn Crypto>,
    pub(crate) durable: DurableState,
    pub(crate) in_view_change: bool,
    pub(crate) view_change_attempts: u32,
    pub(crate) slots: BTreeMap<Seq, Slot>,
    /// Highest sequence number handed to the host for execution.
    pub(crate) last_dispatched: Seq,
    pub(crate) last_executed: Seq,
    pub(crate) own_roots: BTreeMap<Seq, Digest>,
    pub(crate) checkpoints: BTreeMap<Seq, BTreeMap<ReplicaId, Signed<Checkpoint>>>,
    pub(crate) diverged: BTreeSet<Seq>,
    pub(crate) view_changes: BTreeMap<View, BTreeMap<ReplicaId, Signed<ViewChange>>>,
    /// Requests seen but not yet executed, oldest first.
    pub(crate) pending: VecDeque<Request>,
    /// The ids in `pending`, each with the replica it came from (ourselves for a client's).
    pub(crate) pending_ids: BTreeMap<TxId, ReplicaId>,
    /// Requests and bytes of `pending` by the replica each came from.
    pub(crate) pending_from: BTreeMap<ReplicaId, (usize, usize)>,
    /// Bytes of the requests in `pending`, kept as they come and go.
    pub(crate) pending_bytes: usize,
    /// Requests inside a pre-prepare of the current log, by sequence number.
    pub(crate) in_log: BTreeMap<TxId, Seq>,
    pub(crate) next_seq: Seq,
    /// The timer clock (ms): the sum of the wall clock's forward steps between the times the
    /// host gave us, so a wall clock set back leaves the timers running instead of stopped
    /// until it catches up. Every deadline is on it.
    pub(crate) now_ms: u64,
    /// The wall clock (Unix ms) the host gave us last, set back or not: what consensus time
    /// is stamped and checked against (a replica that kept the highest reading it ever saw
    /// refused every other primary's batches as skewed for as long as its clock had been
    /// ahead, issue 18).
    pub(crate) wall_ms: u64,
    pub(crate) batch_deadline: Option<u64>,
    pub(crate) progress_deadline: Option<u64>,
    /// When the view change we are in times out: armed only once 2f+1 replicas ask for our
    /// view or a later one (Castro–Liskov §4.5.2).
    pub(crate) view_change_deadline: Option<u64>,
    /// When we next send our view change again, while in one.
    pub(crate) view_change_resend_at: Option<u64>,
    pub(crate) timer_set: Option<u64>,
    pub(crate) fetching_up_to: Seq,
    pub(crate) dirty: bool,
    /// Normal-case messages for the view being installed, received before its new view.
    pub(crate) early: Vec<Message>,
    /// Early messages kept per sender, and the bytes of their batches.
    early_count: BTreeMap<ReplicaId, usize>,
    early_bytes: usize,
    /// When it was last sent again to each replica, in this view.
    pub(crate) new_view_resent: BTreeMap<ReplicaId, (u64, u32)>,
    /// When each replica's last fetch was answered (ms).
    pub(crate) fetches_served: BTreeMap<ReplicaId, u64>,
    /// The view each other replica was last seen in, when above ours (see `note_view_ahead`).
    pub(crate) views_ahead: BTreeMap<ReplicaId, View>,
    /// Views more than [`Config::MAX_VIEW_LEAD`] above ours that other replicas asked for in
    /// correctly signed view changes (not kept: only the view, the highest per replica).
    pub(crate) views_asked_far: BTreeMap<ReplicaId, View>,
    /// While we suspect the primary of our view (see `suspicion.rs`): when we say it again.
    pub(crate) suspicion_resend_at: Option<u64>,
    /// Other replicas' suspicions, each of the view it suspects (ours or later) and when it
    /// lapses (ms).
    pub(crate) suspicions: BTreeMap<ReplicaId, (View, u64)>,
    /// As the installed primary: replicas seen in a view change past our view, each with
    /// since when and when that lapses (ms; see `suspicion.rs`, stepping down).
    pub(crate) left_out: BTreeMap<ReplicaId, (u64, u64)>,
    /// As a primary: how often we stepped down for each replica, and when last (ms).
    pub(crate) stepped_down_for: BTreeMap<ReplicaId, (u32, u64)>,
    /// While we suspect ourselves, as primary, to bring back replicas left out: until when
    /// (ms). The suspicion is said again whatever executes meanwhile, until the view changes
    /// or this passes (the others did not join: a step-down never lingers).
    pub(crate) stepping_down_until: Option<u64>,
    next_token: u64,
    pub(crate) drops: BTreeMap<DropReason, u64>,
    held: Option<(u64, Vec<Action>)>,
    out: Vec<Action>,
}

impl std::fmt::Display for Replica {
    /// Compact state for logs: `(r2 view 3 vc, h 16, exec 20/21, pending 4)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "(r{} view {}{}, h {}, exec {}/{}, pending {})",
            self.id,
            self.durable.view,
            if self.in_view_change { " vc" } else { "" },
            self.low_watermark(),
            self.last_executed,
            self.last_dispatched,
            self.pending.len()
        )
    }
}

impl Replica {
    /// A fresh replica, or one restarted from `durable` with the host's ledger at
    /// `executed_up_to`.
    pub fn new(
        id: ReplicaId,
        config: Config,
        crypto: Box<dyn Crypto>,
        mut durable: DurableState,
        executed_up_to: Seq,
    ) -> Replica {
        config.validate();
        assert!(id < config.n, "replica id out of range");
        // A replica set starting after `epoch_base` (docs/adr/0011 §5) starts with its stable
        // checkpoint there. The host passes the durable state of this replica set only, and
        // has executed up to the base.
        assert!(
            executed_up_to >= config.epoch_base,
            "a replica starts only once its host has executed up to the epoch's base"
        );
        // Durable state of another replica set (its stable checkpoint below the base, or at
        // the base but not this set's unsigned one) is dropped whole: its view, its accepted
        // and prepared batches and its committed ones belong to that set (red team).
        let base_proof = CheckpointProof {
            seq: config.epoch_base,
            state_root: config.epoch_base_digest,
            signatures: Vec::new(),
        };
        let ours = durable.stable.seq > config.epoch_base
            || (durable.stable.seq == config.epoch_base
                && (config.epoch_base == 0 || durable.stable == base_proof));
        if !ours {
            durable = DurableState {
                stable: base_proof,
                ..DurableState::default()
            };
        }
        durable.last_timestamp_ms = durable.last_timestamp_ms.max(config.epoch_base_time_ms);
        // The highest sequence number we accepted a batch for in our view: restarted as its
        // primary, we never propose another batch there (that would be equivocation by a
        // correct primary; red team, issue 18).
        let view = durable.view;
        let accepted_in_view = durable
            .accepted
            .iter()
            .filter(|(_, (v, _))| *v == view)
            .map(|(seq, _)| *seq)
            .max();
        let mut replica = Replica {
            id,
            next_seq: executed_up_to
                .max(durable.stable.seq)
                .max(accepted_in_view.unwrap_or(0))
                .saturating_add(1),
            config,
            crypto,
            in_view_change: false,
            view_change_attempts: 0,
            slots: BTreeMap::new(),
            last_dispatched: executed_up_to,
            last_executed: executed_up_to,
            own_roots: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            diverged: BTreeSet::new(),
            view_changes: BTreeMap::new(),
            pending: VecDeque::new(),
            pending_ids: BTreeMap::new(),
            pending_from: BTreeMap::new(),
            pending_bytes: 0,
            in_log: BTreeMap::new(),
            now_ms: 0,
            wall_ms: 0,
            batch_deadline: None,
            progress_deadline: None,
            view_change_deadline: None,
            view_change_resend_at: None,
            timer_set: None,
            fetching_up_to: 0,
            dirty: false,
            early: Vec::new(),
            early_count: BTreeMap::new(),
            early_bytes: 0,
            new_view_resent: BTreeMap::new(),
            views_ahead: BTreeMap::new(),
            fetches_served: BTreeMap::new(),
            views_asked_far: BTreeMap::new(),
            suspicion_resend_at: None,
            suspicions: BTreeMap::new(),
            left_out: BTreeMap::new(),
            stepped_down_for: BTreeMap::new(),
            stepping_down_until: None,
            next_token: 1,
            drops: BTreeMap::new(),
            held: None,
            out: Vec::new(),
            durable,
        };
        // Committed batches beyond the ledger (crash between commit and execution) run again.
        replica.dispatch_committed();
        // The new view we persisted is sent again only if it is ours, for the view we are in,
        // and signed as we sign (a host's disk may have flipped a bit): a new view others
        // drop would keep us from counting the replica asking for it as a suspicion.
        let own_new_view = replica.durable.new_view.as_ref().is_some_and(|nv| {
            nv.from == id
                && nv.message.view == view
                && replica.config.primary(view) == id
                && replica.verify(nv, nv.message.signed_bytes(), Domain::NewView)
        });
        if !own_new_view {
            replica.durable.new_view = None;
        }
        // Restarted in a view we never saw installed: we persisted it by asking for it, so we
        // resume its view change (Castro–Liskov: a replica returns to a view only with its
        // new view; if the view was installed, its primary sends the new view again on our
        // view change). One in which we accepted a batch was installed (state written before
        // `installed_view` was persisted).
        if !replica.view_installed() && accepted_in_view.is_none() {
            replica.start_view_change(view);
        }
        replica
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }
    pub fn view(&self) -> View {
        self.durable.view
    }
    pub fn is_primary(&self) -> bool {
        self.config.primary(self.durable.view) == self.id
    }
    /// Whether the view we are in was installed here (view 0 needs no new view).
    pub(crate) fn view_installed(&self) -> bool {
        self.durable.view == 0 || self.durable.installed_view == Some(self.durable.view)
    }

    pub fn in_view_change(&self) -> bool {
        self.in_view_change
    }
    pub fn low_watermark(&self) -> Seq {
        self.durable.stable.seq
    }
    /// The last batch handed to the host (`Action::Execute`); at least `last_executed`.
    pub fn last_dispatched(&self) -> Seq {
        self.last_dispatched
    }
    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }
    /// Every request this replica holds that is not in a batch at or below `executed`:
    /// pending, in a batch of its log above it, or committed above it; each once, in that
    /// order. For a host whose replica set ends at batch `executed` (docs/adr/0011), called
    /// once the host executed it (whether or not `executed` was reported): what the next
    /// set must order. Requests of batches at or below `executed` are left out, also when
    /// still pending here.
    pub fn unexecuted_requests(&self, executed: Seq) -> Vec<Request> {
        let done: BTreeSet<TxId> = self
            .slots
            .range(..=executed)
            .filter_map(|(_, slot)| slot.pre_prepare.as_ref())
            .flat_map(|pp| pp.message.batch.requests.iter())
            .chain(
                self.durable
                    .committed
                    .range(..=executed)
                    .flat_map(|(_, c)| c.batch.requests.iter()),
            )
            .map(|r| r.tx_id)
            .collect();
        let mut seen = done;
        let above = executed.saturating_add(1);
        let in_log = self
            .slots
            .range(above..)
            .filter_map(|(_, slot)| slot.pre_prepare.as_ref())
            .flat_map(|pp| pp.message.batch.requests.iter());
        let committed = self
            .durable
            .committed
            .range(above..)
            .flat_map(|(_, c)| c.batch.requests.iter());
        self.pending
            .iter()
            .chain(in_log)
            .chain(committed)
            .filter(|r| {
                seen.insert(r.tx_id)
                    && self
                        .durable
                        .executed_tx
                        .get(&r.tx_id)
                        .is_none_or(|&s| s > executed)
            })
            .cloned()
            .collect()
    }

    pub fn durable_state(&self) -> &DurableState {
        &self.durable
    }
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where a request stands on this replica.
    pub fn request_status(&self, tx_id: &TxId) -> RequestStatus {
        if let Some(&seq) = self.durable.executed_tx.get(tx_id) {
            RequestStatus::Executed(seq)
        } else if let Some(&seq) = self.in_log.get(tx_id) {
            RequestStatus::Ordered(seq)
        } else if self.pending_ids.contains_key(tx_id) {
            RequestStatus::Pending
        } else {
            RequestStatus::Unknown
        }
    }

    // ------------------------------------------------------------------ inputs

    /// A client request, already authenticated by the host.
    pub fn request(&mut self, request: Request, now_ms: u64) -> Vec<Action> {
        self.observe_clock(now_ms);
        self.accept_request(request, None);
        self.finish()
    }

    /// A message from another replica.
    pub fn receive(&mut self, message: Message, now_ms: u64) -> Vec<Action> {
        self.observe_clock(now_ms);
        if self.in_view_change && self.is_early(&message) {
            self.keep_early(message);
            return self.finish();
        }
        self.handle(message);
        self.finish()
    }

    fn is_early(&self, message: &Message) -> bool {
        let view = match message {
            Message::PrePrepare(pp) => pp.message.view,
            Message::Prepare(v) | Message::Commit(v) => v.message.view,
            _ => return false,
        };
        view == self.durable.view
    }

    /// The new primary may start before its new view reaches us: normal-case messages for
    /// the view being installed are kept and replayed once it is. Only what could count is
    /// kept — a pre-prepare from that view's primary, a vote from another replica, each
    /// correctly signed — and each sender has an equal share of the queue, in messages and in
    /// bytes, so one replica can neither exhaust memory nor crowd out the others.
    fn keep_early(&mut self, message: Message) {
        let (from, bytes) = match &message {
            Message::PrePrepare(pp) => (pp.from, pp.message.batch.size_bytes()),
            Message::Prepare(v) | Message::Commit(v) => (v.from, 0),
            _ => return,
        };
        // The cheap checks first: a sender over its share costs no signature check.
        let per_sender = self.config.max_early_messages() / self.config.n as usize;
        let count = self.early_count.get(&from).copied().unwrap_or(0);
        let total_bytes = self.early_bytes.saturating_add(bytes);
        if count >= per_sender || total_bytes > self.config.max_early_bytes() {
            self.dropped(DropReason::EarlyQueueFull);
            return;
        }
        let signed_ok = from != self.id
            && match &message {
                Message::PrePrepare(pp) => {
                    pp.from == self.config.primary(pp.message.view)
                        && self.verify(pp, pp.message.signed_bytes(), Domain::PrePrepare)
                }
                Message::Prepare(v) => {
                    self.verify(v, PrepareVote(&v.message).signed_bytes(), Domain::Prepare)
                }
                Message::Commit(v) => {
                    self.verify(v, CommitVote(&v.message).signed_bytes(), Domain::Commit)
                }
                _ => false,
            };
        if !signed_ok {
            self.dropped(DropReason::BadSignature);
            return;
        }
        self.early_count.insert(from, count.saturating_add(1));
        self.early_bytes = total_bytes;
        self.early.push(message);
    }

    /// Empties the early queue (a new view change, or the view installed).
    pub(crate) fn take_early(&mut self) -> Vec<Message> {
        self.early_count.clear();
        self.early_bytes = 0;
        std::mem::take(&mut self.early)
    }

    pub(crate) fn handle(&mut self, message: Message) {
        self.note_view_ahead(&message);
        match message {
            Message::Forward { from, request } => self.accept_request(request, Some(from)),
            Message::PrePrepare(pp) => self.on_pre_prepare(pp),
            Message::Prepare(v) => self.on_prepare(v),
            Message::Commit(v) => self.on_commit(v),
            Message::Checkpoint(c) => self.on_checkpoint(c),
            Message::ViewChange(vc) => self.on_view_change(vc),
            Message::NewView(nv) => self.on_new_view(nv),
            Message::Suspect { from, view } => self.on_suspect(from, view),
            Message::Fetch { from, after, up_to } => self.on_fetch(from, after, up_to),
            Message::FetchReply {
                batches,
                checkpoint,
            } => self.on_fetch_reply(batches, checkpoint),
        }
    }

    /// The host's wall clock reads `wall_ms` (Unix ms): the timer clock moves on by how far
    /// it moved forward since the last reading (nothing when it was set back), and consensus
    /// time is judged against this reading.
    fn observe_clock(&mut self, wall_ms: u64) {
        self.now_ms = self
            .now_ms
            .saturating_add(wall_ms.saturating_sub(self.wall_ms));
        self.wall_ms = wall_ms;
    }

    /// The timer clock (ms) that `Action::SetTimer` deadlines are on: equal to the wall clock
    /// until the wall clock is set back, then ahead of it by as much. A host waits
    /// `at_ms - timer_clock_ms()` on a monotonic clock.
    pub fn timer_clock_ms(&self) -> u64 {
        self.now_ms
    }

    /// Time passes.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        self.observe_clock(now_ms);
        let now = self.now_ms;
        // The host's timer fired: whatever is due next is set again, even the same deadline.
        self.timer_set = None;
        // No new view in time: on to the next view. No progress on a pending request: suspect
        // the primary (`suspicion.rs`), and say it again while no progress is made.
        self.end_step_down_if_over();
        let view_change_late = self.view_change_deadline.is_some_and(|d| now >= d);
        let no_progress = !self.in_view_change && self.progress_deadline.is_some_and(|d| now >= d);
        let say_again = !self.in_view_change && self.suspicion_resend_at.is_some_and(|d| now >= d);
        if view_change_late {
            let next = self.durable.view.saturating_add(1);
            self.start_view_change(next);
        } else if no_progress || say_again {
            self.suspect_primary();
        } else if self.in_view_change && self.view_change_resend_at.is_some_and(|d| now >= d) {
            self.resend_view_change();
        }
        if self.is_primary() && !self.left_out.is_empty() {
            self.step_down_if_left_out();
        }
        if self.batch_deadline.is_some_and(|d| now >= d) {
            self.batch_deadline = None;
            self.propose(true);
        }
        self.finish()
    }

    /// The host executed batch `seq` (in order) and its state root is now `state_root`.
    pub fn executed(&mut self, seq: Seq, state_root: Digest) -> Vec<Action> {
        assert_eq!(
            Some(seq),
            self.last_executed.checked_add(1),
            "batches execute in order"
        );
        assert!(
            seq <= self.last_dispatched,
            "only dispatched batches execute"
        );
        self.last_executed = seq;
        self.trim_committed();
        // Progress: we suspect the primary no longer, and restart the timer for what is
        // still pending.
        self.withdraw_suspicion();
        self.progress_deadline = None;
        self.arm_progress_timer();
        if seq.is_multiple_of(self.config.checkpoint_interval) {
            self.own_roots.insert(seq, state_root);
            let checkpoint = Checkpoint { seq, state_root };
            let signed = self.sign(checkpoint, |c| c.signed_bytes(), Domain::Checkpoint);
            self.broadcast(Message::Checkpoint(signed.clone()));
            self.on_checkpoint(signed);
        }
        self.finish()
    }

    /// The state saved for `Persist { token }` is on disk.
    pub fn persisted(&mut self, token: u64) -> Vec<Action> {
        if let Some((held_token, actions)) = self.held.take() {
            if token >= held_token {
                self.out.extend(actions);
            } else {
                self.held = Some((held_token, actions));
            }
        }
        self.finish()
    }

    // ---------------------------------------------------------------- plumbing

    /// The highest sequence number that may be proposed or accepted: h + L.
    pub(crate) fn high_watermark(&self) -> Seq {
        self.low_watermark()
            .saturating_add(self.config.watermark_window)
    }

    /// Is `seq` inside the watermarks (h, h + L]?
    pub(crate) fn in_window(&self, seq: Seq) -> bool {
        seq > self.low_watermark() && seq <= self.high_watermark()
    }

    /// Does the request carry its payload's own id (see [`Crypto::request_id`])?
    pub(crate) fn names_itself(&self, request: &Request) -> bool {
        self.crypto.request_id(&request.payload) == Some(request.tx_id)
    }

    /// Counts a message or request dropped for `reason`.
    pub(crate) fn dropped(&mut self, reason: DropReason) {
        let count = self.drops.entry(reason).or_default();
        *count = count.saturating_add(1);
    }

    /// How many messages were dropped, by reason, since the replica started.
    pub fn drops(&self) -> &BTreeMap<DropReason, u64> {
        &self.drops
    }

    pub(crate) fn sign<M>(
        &self,
        message: M,
        bytes: impl Fn(&M) -> Vec<u8>,
        domain: Domain,
    ) -> Signed<M> {
        let signature = self
            .crypto
            .sign(domain, &self.config.epoch_signed(bytes(&message)));
        Signed {
            from: self.id,
            message,
            signature,
        }
    }

    pub(crate) fn verify<M>(&self, signed: &Signed<M>, bytes: Vec<u8>, domain: Domain) -> bool {
        signed.from < self.config.n
            && self.crypto.verify(
                signed.from,
                domain,
                &self.config.epoch_signed(bytes),
                &signed.signature,
            )
    }

    pub(crate) fn broadcast(&mut self, message: Message) {
        self.out.push(Action::Broadcast { message });
    }

    pub(crate) fn send(&mut self, to: ReplicaId, message: Message) {
        if to != self.id {
            self.out.push(Action::Send { to, message });
        }
    }

    /// Debug builds: the core's invariants, checked at the end of every input (the simulator's
    /// seeds and the fuzz target run with them). Panics naming the one broken.
    #[cfg(debug_assertions)]
    fn check_invariants(&self) {
        // The pending queue, its id index and its byte and per-origin accounting agree (the
        // walk over every request only while the queue is short: it runs at every input).
        assert_eq!(self.pending.len(), self.pending_ids.len(), "pending ids");
        let (count, held) = self
            .pending_from
            .values()
            .fold((0usize, 0usize), |(c, b), (n, m)| {
                (c.saturating_add(*n), b.saturating_add(*m))
            });
        assert_eq!(count, self.pending.len(), "pending by origin (requests)");
        assert_eq!(held, self.pending_bytes, "pending by origin (bytes)");
        if self.pending.len() <= 64 {
            let mut from: BTreeMap<ReplicaId, (usize, usize)> = BTreeMap::new();
            for r in &self.pending {
                let origin = self.pending_ids.get(&r.tx_id);
                assert!(origin.is_some(), "a pending request without its id");
                if let Some(origin) = origin {
                    let entry = from.entry(*origin).or_default();
                    entry.0 = entry.0.saturating_add(1);
                    entry.1 = entry.1.saturating_add(r.size_bytes());
                }
            }
            assert_eq!(from, self.pending_from, "pending by origin");
        }
        assert!(self.pending.len() <= self.config.max_pending_requests);
        assert!(self.pending_bytes <= self.config.max_pending_bytes);
        // Execution follows dispatch; a primary proposes only above what it dispatched.
        assert!(
            self.last_executed <= self.last_dispatched,
            "executed beyond dispatched"
        );
        if self.is_primary() && !self.in_view_change {
            assert!(
                self.last_dispatched < self.next_seq,
                "a primary would propose at {} having dispatched {}",
                self.next_seq,
                self.last_dispatched
            );
        }
        // The log lies above the low watermark; view changes kept are for our view or later.
        let low = self.low_watermark();
        assert!(self.slots.keys().all(|s| *s > low), "a slot at or below h");
        assert!(
            self.view_changes.keys().all(|v| *v >= self.durable.view),
            "a view change below our view"
        );
        assert!(self.early_bytes <= self.config.max_early_bytes());
    }

    /// Orders this step's actions: a Persist first if durable state changed, with every
    /// message held back until it is confirmed; then the timer.
    fn finish(&mut self) -> Vec<Action> {
        #[cfg(debug_assertions)]
        self.check_invariants();
        let produced = std::mem::take(&mut self.out);
        let mut actions = Vec::new();
        let (sends, others): (Vec<Action>, Vec<Action>) = produced
            .into_iter()
            .partition(|a| matches!(a, Action::Send { .. } | Action::Broadcast { .. }));
        if self.dirty {
            self.dirty = false;
            let token = self.next_token;
            self.next_token = self.next_token.wrapping_add(1);
            actions.push(Action::Persist { token });
            let mut held = self.held.take().map(|(_, a)| a).unwrap_or_default();
            held.extend(sends);
            self.held = Some((token, held));
        } else if let Some((_, held)) = &mut self.held {
            held.extend(sends);
        } else {
            actions.extend(sends);
        }
        actions.extend(others);
        let next = [
            self.batch_deadline,
            self.progress_deadline,
            self.suspicion_resend_at,
            self.view_change_deadline,
            self.view_change_resend_at,
            self.step_down_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at_ms) = next
            && self.timer_set != Some(at_ms)
        {
            self.timer_set = Some(at_ms);
            actions.push(Action::SetTimer { at_ms });
        }
        actions
    }

    pub(crate) fn arm_progress_timer(&mut self) {
        if self.pending.is_empty() || self.in_view_change {
            self.progress_deadline = None;
        } else if self.progress_deadline.is_none() {
            self.progress_deadline =
                Some(self.now_ms.saturating_add(self.config.request_timeout_ms));
        }
    }

    // ----------------------------------------------------------- normal case

    /// §4.2: a request from a client (`forwarded_by` is `None`) or forwarded by a backup.
    fn accept_request(&mut self, request: Request, forwarded_by: Option<ReplicaId>) {
        let from_client = forwarded_by.is_none();
        if !from_client && (!self.is_primary() || self.in_view_change) {
            self.dropped(DropReason::ForwardToBackup);
            return;
        }
        // The id must be the payload's own: a request labelled with another's id is dropped
        // (from a client, the host already checked it; from a backup, it may lie).
        if !self.names_itself(&request) {
            self.dropped(DropReason::MislabelledRequest);
            return;
        }
        if let Some(&seq) = self.durable.executed_tx.get(&request.tx_id) {
            if from_client {
                self.out.push(Action::AlreadyCommitted {
                    tx_id: request.tx_id,
                    seq,
                });
            }
            return;
        }
        let known = self.pending_ids.contains_key(&request.tx_id)
            || self.in_log.contains_key(&request.tx_id);
        if !known {
            let over_bytes = self.pending_bytes.saturating_add(request.size_bytes())
                > self.config.max_pending_bytes;
            if self.pending.len() >= self.config.max_pending_requests || over_bytes {
                self.dropped(DropReason::PendingFull);
                if from_client {
                    self.out.push(Action::Busy {
                        tx_id: request.tx_id,
                    });
                }
                return;
            }
            if request.size_bytes() > self.config.max_batch_bytes {
                return;
            }
            let origin = forwarded_by.unwrap_or(self.id);
            let (count, bytes) = self.pending_from.get(&origin).copied().unwrap_or((0, 0));
            let (count, bytes) = (
                count.saturating_add(1),
                bytes.saturating_add(request.size_bytes()),
            );
            if forwarded_by.is_some()
                && (bytes > self.config.max_forwarded_bytes()
                    || count > self.config.max_forwarded_requests())
            {
                self.dropped(DropReason::ForwarderOverBudget);
                return;
            }
            self.pending_ids.insert(request.tx_id, origin);
            self.pending_from.insert(origin, (count, bytes));
            self.pending_bytes = self.pending_bytes.saturating_add(request.size_bytes());
            self.pending.push_back(request.clone());
            self.arm_progress_timer();
        }
        if self.is_primary() && !self.in_view_change {
            self.propose(false);
        } else if from_client {
            // A retransmission may mean the primary never saw it: forward again.
            let primary = self.config.primary(self.durable.view);
            let from = self.id;
            self.send(primary, Message::Forward { from, request });
        }
    }

    /// Accounts for `r` leaving `pending`: its id, and its bytes in the totals.
    fn unpend(&mut self, r: &Request) {
        let bytes = r.size_bytes();
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
        if let Some(origin) = self.pending_ids.remove(&r.tx_id)
            && let Some((count, held)) = self.pending_from.get_mut(&origin)
        {
            *count = count.saturating_sub(1);
            *held = held.saturating_sub(bytes);
            if *count == 0 {
                self.pending_from.remove(&origin);
            }
        }
    }

    /// The primary cuts batches from its pending requests while the window allows.
    pub(crate) fn propose(&mut self, timer_fired: bool) {
        if !self.is_primary() || self.in_view_change {
            return;
        }
        let mut force = timer_fired;
        loop {
            // Drop requests that were ordered meanwhile (e.g. re-proposed by a new view).
            while let Some(front) = self.pending.front() {
                if self.in_log.contains_key(&front.tx_id)
                    || self.durable.executed_tx.contains_key(&front.tx_id)
                {
                    let r = self.pending.pop_front().expect("front exists");
                    self.unpend(&r);
                } else {
                    break;
                }
            }
            if self.pending.is_empty() {
                self.batch_deadline = None;
                return;
            }
            if self.next_seq > self.high_watermark() {
                return;
            }
            let bytes = self.pending_bytes;
            let full = self.pending.len() >= self.config.max_batch_requests
                || bytes >= self.config.max_batch_bytes;
            if !full && !force {
                if self.batch_deadline.is_none() {
                    self.batch_deadline =
                        Some(self.now_ms.saturating_add(self.config.batch_timeout_ms));
                }
                return;
            }
            force = false;
            let mut batch = Batch {
                timestamp_ms: 0,
                requests: Vec::new(),
            };
            let mut size: usize = 0;
            while let Some(r) = self.pending.front() {
                if batch.requests.len() == self.config.max_batch_requests
                    || (size.saturating_add(r.size_bytes()) > self.config.max_batch_bytes
                        && !batch.requests.is_empty())
                {
                    break;
                }
                let stale = self.in_log.contains_key(&r.tx_id)
                    || self.durable.executed_tx.contains_key(&r.tx_id);
                let r = self.pending.pop_front().expect("front exists");
                // `pending` and `pending_ids` always move together: an id left behind would
                // make every retransmission look known, and a batch lost in a view change
                // would lose the request for good.
                self.unpend(&r);
                if stale {
                    continue;
                }
                size = size.saturating_add(r.size_bytes());
                batch.requests.push(r);
            }
            if batch.requests.is_empty() {
                continue;
            }
            // Non-decreasing: batches cut in the same millisecond share it (a strictly
            // increasing stamp would run ahead of the clock past 1,000 batches a second).
            batch.timestamp_ms = self.wall_ms.max(self.latest_timestamp());
            let seq = self.next_seq;
            self.next_seq = seq.saturating_add(1);
            let pp = PrePrepare {
                view: self.durable.view,
                seq,
                digest: batch.digest(),
                batch,
            };
            let signed = self.sign(pp, |m| m.signed_bytes(), Domain::PrePrepare);
            self.record_pre_prepare(signed.clone());
            self.broadcast(Message::PrePrepare(signed));
            self.batch_deadline = None;
        }
    }

    /// The latest timestamp of any batch accepted or executed (null batches carry none).
    fn latest_timestamp(&self) -> u64 {
        self.slots
            .values()
            .filter_map(|s| s.pre_prepare.as_ref())
            .map(|pp| pp.message.batch.timestamp_ms)
            .max()
            .unwrap_or(0)
            .max(self.durable.last_timestamp_ms)
    }

    /// Logs an accepted pre-prepare.
    pub(crate) fn record_pre_prepare(&mut self, pp: Signed<PrePrepare>) {
        let seq = pp.message.seq;
        for r in &pp.message.batch.requests {
            self.in_log.insert(r.tx_id, seq);
        }
        self.durable
            .accepted
            .insert(seq, (pp.message.view, pp.message.digest));
        self.dirty = true;
        let slot = self.slots.entry(seq).or_default();
        slot.pre_prepare = Some(pp);
        slot.sent_commit = false;
    }

    /// §4.2, a backup accepts a pre-prepare when:
    /// - it is signed by the primary of its view, which is our view, and we are not changing views;
    /// - its sequence number is inside the watermarks (h, h + L];
    /// - its digest is its batch's, the batch respects the size limits, every request
    ///   carries its payload's own id and appears once, and its timestamp follows its
    ///   neighbours' and is within the allowed skew of our clock (a request ordered before
    ///   is allowed: it is deduplicated at execution, see `batch_is_acceptable`);
    /// - we accepted no other digest for this view and sequence number.
    ///
    /// A pre-prepare failing the batch, timestamp or equivocation checks makes us suspect the
    /// primary (`suspicion.rs`).
    fn on_pre_prepare(&mut self, pp: Signed<PrePrepare>) {
        let m = &pp.message;
        let view = self.durable.view;
        if m.view != view
            || self.in_view_change
            || pp.from != self.config.primary(view)
            || pp.from == self.id
        {
            return;
        }
        if !self.verify(&pp, m.signed_bytes(), Domain::PrePrepare) {
            return;
        }
        let seq = m.seq;
        if !self.in_window(seq) {
            return;
        }
        if let Some((v, digest)) = self.durable.accepted.get(&seq)
            && *v == view
        {
            if *digest != m.digest {
                // Equivocation: two batches for one (view, seq).
                self.suspect_primary();
            }
            return;
        }
        if !self.batch_is_acceptable(&pp.message) {
            self.dropped(DropReason::BadBatch);
            self.suspect_primary();
            return;
        }
        self.record_pre_prepare(pp.clone());
        let vote = Vote {
            view,
            seq,
            digest: pp.message.digest,
        };
        let signed = self.sign(vote, |v| PrepareVote(v).signed_bytes(), Domain::Prepare);
        self.broadcast(Message::Prepare(signed.clone()));
        self.store_prepare(signed);
        self.check_prepared(seq);
    }

    fn batch_is_acceptable(&self, m: &PrePrepare) -> bool {
        let batch = &m.batch;
        if batch.digest() != m.digest
            || batch.is_null()
            || batch.requests.len() > self.config.max_batch_requests
            || batch.size_bytes() > self.config.max_batch_bytes
        {
            return false;
        }
        let mut seen = BTreeSet::new();
        for r in &batch.requests {
            if !self.names_itself(r) {
                return false;
            }
            // A request this replica remembers as executed, or ordered at another sequence
            // number, is no reason to suspect the primary: `executed_tx` and the log are not
            // the same on every replica (a restarted primary has forgotten both), and a
            // correct primary may order such a request again. It never executes twice:
            // `dispatch_committed` drops what executed at a lower sequence number, and the
            // host's transaction index refuses the rest, identically everywhere.
            if !seen.insert(r.tx_id) {
                return false;
            }
        }
        // Consensus time: after every earlier batch, before every later one, near our clock.
        let ts = batch.timestamp_ms;
        let mut floor = self.durable.last_timestamp_ms;
        for slot in self.slots.range(..m.seq).map(|(_, s)| s) {
            if let Some(p) = &slot.pre_prepare {
                floor = floor.max(p.message.batch.timestamp_ms);
            }
        }
        if ts < floor {
            return false;
        }
        for slot in self.slots.range(m.seq.saturating_add(1)..).map(|(_, s)| s) {
            if slot
                .pre_prepare
                .as_ref()
                .is_some_and(|p| !p.message.batch.is_null() && p.message.batch.timestamp_ms < ts)
            {
                return false;
            }
        }
        // Near our clock: not more than the skew behind it, and not more than the skew ahead
        // of it, unless consensus time is already ahead (clocks set back after a batch
        // committed while they were ahead): then only that time, which pauses until the
        // clocks catch up, instead of the network refusing every batch meanwhile.
        let skew = self.config.max_clock_skew_ms;
        ts.saturating_add(skew) >= self.wall_ms
            && ts <= self.wall_ms.saturating_add(skew).max(floor)
    }

    fn store_prepare(&mut self, v: Signed<Vote>) {
        let seq = v.message.seq;
        self.slots
            .entry(seq)
            .or_default()
            .prepares
            .insert((v.message.view, v.from), v);
    }

    /// §4.2: prepares are accepted from backups of the message's view, signed, inside the
    /// watermarks; they count once the matching pre-prepare is in.
    fn on_prepare(&mut self, v: Signed<Vote>) {
        let m = v.message;
        if m.view != self.durable.view || v.from == self.config.primary(m.view) {
            return;
        }
        if !self.in_window(m.seq) {
            return;
        }
        if !self.verify(&v, PrepareVote(&m).signed_bytes(), Domain::Prepare) {
            return;
        }
        self.store_prepare(v);
        self.check_prepared(m.seq);
    }

    /// prepared(m, v, n): the pre-prepare and 2f matching prepares from distinct backups.
    /// Then we record the proof (for view changes) and multicast a commit.
    pub(crate) fn check_prepared(&mut self, seq: Seq) {
        let view = self.durable.view;
        let primary = self.config.primary(view);
        let needed = self.config.prepare_quorum();
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        let Some(pp) = slot.pre_prepare.clone() else {
            return;
        };
        if pp.message.view != view || slot.sent_commit {
            return;
        }
        let digest = pp.message.digest;
        let prepares: Vec<Signed<Vote>> = slot
            .prepares
            .iter()
            .filter(|((v, from), p)| *v == view && *from != primary && p.message.digest == digest)
            .map(|(_, p)| p.clone())
            .collect();
        if prepares.len() < needed {
            return;
        }
        let proof = PreparedProof {
            pre_prepare: pp,
            prepares: prepares.into_iter().take(needed).collect(),
        };
        self.durable.prepared.insert(seq, proof);
        self.dirty = true;
        let vote = Vote { view, seq, digest };
        let signed = self.sign(vote, |v| CommitVote(v).signed_bytes(), Domain::Commit);
        self.slots.get_mut(&seq).expect("slot exists").sent_commit = true;
        self.broadcast(Message::Commit(signed.clone()));
        self.store_commit(signed);
        self.check_committed(seq);
    }

    fn store_commit(&mut self, v: Signed<Vote>) {
        let seq = v.message.seq;
        self.slots
            .entry(seq)
            .or_default()
            .commits
            .insert((v.message.view, v.from), v);
    }

    /// §4.2: commits are accepted when signed, of our view and inside the watermarks.
    fn on_commit(&mut self, v: Signed<Vote>) {
        let m = v.message;
        if m.view != self.durable.view {
            return;
        }
        if !self.in_window(m.seq) {
            return;
        }
        if !self.verify(&v, CommitVote(&m).signed_bytes(), Domain::Commit) {
            return;
        }
        self.store_commit(v);
        self.check_committed(m.seq);
    }

    /// committed-local(m, v, n): prepared, and 2f+1 matching commits (ours included).
    fn check_committed(&mut self, seq: Seq) {
        let view = self.durable.view;
        let quorum = self.config.quorum();
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        if slot.committed || !slot.sent_commit {
            return;
        }
        let Some(pp) = slot.pre_prepare.clone() else {
            return;
        };
        let digest = pp.message.digest;
        let commits: Vec<Signed<Vote>> = slot
            .commits
            .iter()
            .filter(|((v, _), c)| *v == view && c.message.digest == digest)
            .map(|(_, c)| c.clone())
            .collect();
        if commits.len() < quorum {
            return;
        }
        self.slots.get_mut(&seq).expect("slot exists").committed = true;
        let signers: Vec<ReplicaId> = commits.iter().map(|c| c.from).collect();
        // A replica far behind (catching up while it takes part in the live view) keeps
        // what it committed above the gap up to a bound, and fetches the rest later.
        let within = seq
            <= self
                .last_executed
                .saturating_add(self.config.retain_committed);
        if !within {
            self.fetch(seq, &signers);
        }
        if within && seq > self.last_dispatched && !self.durable.committed.contains_key(&seq) {
            self.durable.committed.insert(
                seq,
                CommittedBatch {
                    seq,
                    batch: pp.message.batch,
                    commits: commits.into_iter().take(quorum).collect(),
                },
            );
            self.dirty = true;
        }
        self.dispatch_committed();
        // A gap below a committed batch (we missed batches, e.g. while restarting): fetch it
        // from replicas that committed this one rather than wait for the next checkpoint.
        if self.last_dispatched.saturating_add(1) < seq {
            self.fetch(seq.saturating_sub(1), &signers);
        }
    }

    /// Hands the host every committed batch that follows the last dispatched one.
    pub(crate) fn dispatch_committed(&mut self) {
        while let Some(committed) = self
            .durable
            .committed
            .get(&self.last_dispatched.saturating_add(1))
            .cloned()
        {
            let seq = committed.seq;
            let mut batch = committed.batch;
            // Whether the batch carries a time is a fact of the certified batch, not of what
            // this replica remembers executing (that differs between replicas).
            let stamped = !batch.is_null();
            // A request already executed at a lower sequence number is never executed again.
            // (At this same one it may be marked already: a restart replays a batch that was
            // dispatched but not yet executed.)
            batch.requests.retain(|r| {
                self.durable
                    .executed_tx
                    .get(&r.tx_id)
                    .is_none_or(|&s| s >= seq)
            });
            for r in &batch.requests {
                self.durable.executed_tx.insert(r.tx_id, seq);
                if self.pending_ids.contains_key(&r.tx_id)
                    && let Some(i) = self.pending.iter().position(|p| p.tx_id == r.tx_id)
                {
                    let removed = self.pending.remove(i).expect("position is valid");
                    self.unpend(&removed);
                }
            }
            // Consensus time never runs backwards: after view changes a batch stamped earlier
            // can be ordered after one stamped later, so a batch's time is its stamp or the
            // previous batch's, whichever is later. Every replica computes the same.
            if stamped {
                batch.timestamp_ms = batch.timestamp_ms.max(self.durable.last_timestamp_ms);
                self.durable.last_timestamp_ms = batch.timestamp_ms;
            }
            self.last_dispatched = seq;
            // A primary proposes only above what it dispatched (a restarted primary learns
            // of commits from the others before it proposes).
            self.next_seq = self.next_seq.max(seq.saturating_add(1));
            self.dirty = true;
            self.out.push(Action::Execute { seq, batch });
        }
        self.trim_committed();
    }

    /// Keeps of the committed batches a tail of `retain_committed` below the last dispatched,
    /// and every one not yet executed: a fetch that closes a gap may dispatch a long run at
    /// once, and the host reads each batch's certificate only when it executes it (issue 18:
    /// a peer catching up stopped on a batch trimmed before it executed).
    fn trim_committed(&mut self) {
        let keep_from = self
            .last_dispatched
            .saturating_sub(self.config.retain_committed)
            .min(self.last_executed.saturating_add(1));
        if self
            .durable
            .committed
            .first_key_value()
            .is_some_and(|(&first, _)| first < keep_from)
        {
            self.durable.committed = self.durable.committed.split_off(&keep_from);
        }
    }

    // ------------------------------------------------------------ checkpoints

    pub(crate) fn valid_checkpoint_proof(&self, proof: &CheckpointProof) -> bool {
        let base = self.config.epoch_base;
        if proof.seq < base {
            return false;
        }
        if proof.seq == base {
            // The epoch's base needs no signatures: every member executed it before
            // starting (the network's genesis, 0, has no digest to match).
            return proof.signatures.is_empty()
                && (base == 0 || proof.state_root == self.config.epoch_base_digest);
        }
        if proof.signatures.len() > self.config.n as usize {
            return false;
        }
        let mut signers = BTreeSet::new();
        let mut items = Vec::new();
        for s in &proof.signatures {
            if s.message.seq != proof.seq
                || s.message.state_root != proof.state_root
                || !signers.insert(s.from)
                || s.from >= self.config.n
            {
                return false;
            }
            items.push((
                s.from,
                Domain::Checkpoint,
                self.config.epoch_signed(s.message.signed_bytes()),
                s.signature.as_slice(),
            ));
        }
        signers.len() >= self.config.quorum() && self.crypto.verify_all(&items)
    }

    /// §4.3: a checkpoint becomes stable with 2f+1 matching signed checkpoints. We then
    /// collect garbage below it, and fetch what we have not executed up to it.
    pub(crate) fn on_checkpoint(&mut self, c: Signed<Checkpoint>) {
        let m = c.message;
        if m.seq <= self.low_watermark() || !m.seq.is_multiple_of(self.config.checkpoint_interval) {
            self.dropped(DropReason::CheckpointOutsideWindow);
            return;
        }
        if c.from != self.id && !self.verify(&c, m.signed_bytes(), Domain::Checkpoint) {
            self.dropped(DropReason::BadSignature);
            return;
        }
        self.store_checkpoint(c);
        if !self.checkpoints.contains_key(&m.seq) {
            return;
        }
        let votes = &self.checkpoints[&m.seq];
        let mut by_root: BTreeMap<Digest, Vec<Signed<Checkpoint>>> = BTreeMap::new();
        for v in votes.values() {
            by_root
                .entry(v.message.state_root)
                .or_default()
                .push(v.clone());
        }
        let Some((root, signatures)) = by_root
            .into_iter()
            .find(|(_, v)| v.len() >= self.config.quorum())
        else {
            return;
        };
        if let Some(ours) = self.own_roots.get(&m.seq)
            && *ours != root
            && self.diverged.insert(m.seq)
        {
            self.out.push(Action::Divergence {
                seq: m.seq,
                ours: *ours,
                agreed: root,
            });
            return;
        }
        let proof = CheckpointProof {
            seq: m.seq,
            state_root: root,
            signatures: signatures.into_iter().take(self.config.quorum()).collect(),
        };
        self.make_stable(proof);
    }

    /// Keeps a verified checkpoint message. Inside the watermark window (h, h + L] every
    /// sender's checkpoint is kept (at most L/K sequence numbers × n senders). Beyond it (we
    /// may be behind and must learn so), each sender keeps only its newest
    /// [`Config::FUTURE_CHECKPOINTS_PER_SENDER`]: a replica flooding far-future checkpoints
    /// evicts only its own, never another replica's.
    fn store_checkpoint(&mut self, c: Signed<Checkpoint>) {
        let (seq, from) = (c.message.seq, c.from);
        self.checkpoints.entry(seq).or_default().insert(from, c);
        if seq <= self.high_watermark() {
            return;
        }
        let beyond = self.high_watermark().saturating_add(1);
        let quota = Config::FUTURE_CHECKPOINTS_PER_SENDER;
        for _ in 0..evict_over_quota(&mut self.checkpoints, from, beyond, quota) {
            self.dropped(DropReason::CheckpointFlood);
        }
    }

    pub(crate) fn make_stable(&mut self, proof: CheckpointProof) {
        if proof.seq <= self.low_watermark() {
            return;
        }
        let seq = proof.seq;
        let signers: Vec<ReplicaId> = proof.signatures.iter().map(|s| s.from).collect();
        self.durable.stable = proof;
        self.dirty = true;
        self.slots = self.slots.split_off(&seq.saturating_add(1));
        self.durable.accepted = self.durable.accepted.split_off(&seq.saturating_add(1));
        self.durable.prepared = self.durable.prepared.split_off(&seq.saturating_add(1));
        self.checkpoints = self.checkpoints.split_off(&seq.saturating_add(1));
        self.own_roots = self.own_roots.split_off(&seq);
        self.in_log.retain(|_, s| *s > seq);
        // Remember executed request ids for `retain_committed` sequence numbers below the
        // checkpoint, no longer: memory stays bounded. The host's ledger (its transaction
        // index) refuses older duplicates deterministically at execution.
        let forget_below = seq.saturating_sub(self.config.retain_committed);
        if forget_below > 0 {
            self.durable.executed_tx.retain(|_, s| *s >= forget_below);
        }
        if self.next_seq <= seq {
            self.next_seq = seq.saturating_add(1);
        }
        if self.last_dispatched < seq {
            self.fetch(seq, &signers);
        }
        self.propose(false);
    }

    // --------------------------------------------------------- state transfer

    /// Asks the replicas that signed a stable checkpoint for the batches we lack.
    pub(crate) fn fetch(&mut self, up_to: Seq, from: &[ReplicaId]) {
        if up_to <= self.fetching_up_to.max(self.last_dispatched) {
            return;
        }
        self.fetching_up_to = up_to;
        let after = self.last_dispatched;
        let me = self.id;
        let targets: Vec<ReplicaId> = from
            .iter()
            .copied()
            .filter(|&r| r != me)
            .take(self.config.weak_quorum())
            .collect();
        for r in targets {
            self.send(
                r,
                Message::Fetch {
                    from: me,
                    after,
                    up_to,
                },
            );
        }
    }

    /// Serves committed batches in (after, up_to], at most one window's worth.
    /// §4.3 state transfer, the serving side: any values a replica sends give at most one
    /// watermark window of what we executed, one answer per replica per
    /// [`Config::FETCH_INTERVAL_MS`]; the host serves it ([`Action::ServeFetch`]).
    fn on_fetch(&mut self, from: ReplicaId, after: Seq, up_to: Seq) {
        if from == self.id || from >= self.config.n {
            return;
        }
        if self
            .fetches_served
            .get(&from)
            .is_some_and(|at| self.now_ms < at.saturating_add(Config::FETCH_INTERVAL_MS))
        {
            self.dropped(DropReason::FetchTooSoon);
            return;
        }
        let Some(range) = self.config.fetch_range(after, up_to, self.last_executed) else {
            self.dropped(DropReason::EmptyFetch);
            return;
        };
        self.fetches_served.insert(from, self.now_ms);
        self.out.push(Action::ServeFetch {
            to: from,
            range,
            checkpoint: self.durable.stable.clone(),
        });
    }

    /// Applies fetched batches, each only with a valid commit certificate: 2f+1 commits from
    /// distinct replicas, one view, signed, for this batch's digest.
    fn on_fetch_reply(&mut self, batches: Vec<CommittedBatch>, checkpoint: CheckpointProof) {
        if batches.len() as u64 > self.config.watermark_window {
            return;
        }
        if checkpoint.seq > self.low_watermark() && self.valid_checkpoint_proof(&checkpoint) {
            self.make_stable(checkpoint);
        }
        for committed in batches {
            if Some(committed.seq) != self.last_dispatched.checked_add(1) {
                continue;
            }
            if !self.valid_commit_certificate(&committed) {
                return;
            }
            self.durable.committed.insert(committed.seq, committed);
            self.dirty = true;
            self.dispatch_committed();
        }
        if self.last_dispatched >= self.fetching_up_to {
            self.fetching_up_to = 0;
        }
    }

    fn valid_commit_certificate(&self, c: &CommittedBatch) -> bool {
        crate::certificate::check_commit_certificate(
            &self.config,
            c.seq,
            &c.batch.digest(),
            &c.commits,
            |items| self.crypto.verify_all(items),
        )
        .is_ok()
    }
}
