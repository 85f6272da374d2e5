//! View changes (Castro–Liskov §4.4, the variant with signed certificates): a replica that
//! suspects the primary sends a view-change message with its stable checkpoint's proof and a
//! proof for every batch it prepared; the new primary gathers 2f+1 of them and computes the
//! batches of the new view (the O set), which every backup recomputes and checks.
//!
//! Message size: a view change carries the batches it proves prepared (the new primary needs
//! them), at most one watermark window of them; a new view carries its view changes without
//! their batches ([`Signed::without_batches`]) and each batch of its O set once. So neither
//! is larger than one window of full batches plus signatures, whatever the load — a bound
//! the host checks against its transport's message limit.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::message::*;
use crate::replica::{DropReason, Replica, evict_over_quota};

impl Replica {
    /// Moves to `new_view` and asks for it. Timers back off: each further view change in a row
    /// waits twice as long for its new view.
    pub(crate) fn start_view_change(&mut self, new_view: View) {
        if new_view <= self.durable.view && self.in_view_change {
            return;
        }
        if new_view < self.durable.view {
            return;
        }
        self.durable.view = new_view;
        self.in_view_change = true;
        self.clear_suspicions();
        // A replica never returns to a view: the new view it sent as primary is of no use.
        self.durable.new_view = None;
        self.views_asked_far.retain(|_, asked| *asked > new_view);
        self.take_early();
        self.dirty = true;
        self.batch_deadline = None;
        self.progress_deadline = None;
        self.view_change_deadline = None;
        self.view_change_attempts = self.view_change_attempts.saturating_add(1);
        self.view_change_resend_at =
            Some(self.now_ms.saturating_add(self.config.request_timeout_ms));
        let low = self.low_watermark();
        let vc = ViewChange {
            new_view,
            checkpoint: self.durable.stable.clone(),
            prepared: self
                .durable
                .prepared
                .range(low.saturating_add(1)..)
                .map(|(_, p)| p.clone())
                .collect(),
        };
        let signed = self.sign(vc, |m| m.signed_bytes(), Domain::ViewChange);
        self.broadcast(Message::ViewChange(signed.clone()));
        self.store_view_change(signed);
        self.arm_view_change_timer();
        self.try_new_view();
    }

    /// §4.5.2: the view-change timer starts only once 2f+1 replicas (ourselves included)
    /// ask for our view or a later one, so a replica that moved on early, or that no one
    /// followed, waits for the others instead of running ahead alone. A view change asking
    /// for a later view counts: that replica gave up on ours. Each further view change in a
    /// row waits twice as long (capped at 64 times).
    fn arm_view_change_timer(&mut self) {
        if !self.in_view_change || self.view_change_deadline.is_some() {
            return;
        }
        let asking: BTreeSet<ReplicaId> = self
            .view_changes
            .range(self.durable.view..)
            .flat_map(|(_, by)| by.keys().copied())
            .collect();
        if asking.len() < self.config.quorum() {
            return;
        }
        let backoff = 1u64 << self.view_change_attempts.saturating_sub(1).min(6);
        self.view_change_deadline = Some(
            self.now_ms
                .saturating_add(self.config.request_timeout_ms.saturating_mul(backoff)),
        );
    }

    /// Castro–Liskov retransmit view changes until the new view arrives: messages get lost,
    /// and a replica that joined late or restarted needs ours to reach 2f+1. Every request
    /// timeout, while in a view change, we send ours again (receivers skip a copy they hold
    /// before checking it).
    pub(crate) fn resend_view_change(&mut self) {
        self.view_change_resend_at =
            Some(self.now_ms.saturating_add(self.config.request_timeout_ms));
        let own = self
            .view_changes
            .get(&self.durable.view)
            .and_then(|by| by.get(&self.id))
            .cloned();
        if let Some(own) = own {
            self.broadcast(Message::ViewChange(own));
        }
    }

    /// Keeps a valid view change: only for views we could still move to, and per sender only
    /// its newest [`Config::VIEW_CHANGES_PER_SENDER`] views, so a replica asking for view
    /// after view evicts only its own messages.
    fn store_view_change(&mut self, vc: Signed<ViewChange>) {
        let from = vc.from;
        self.view_changes
            .entry(vc.message.new_view)
            .or_default()
            .insert(from, vc);
        let current = self.durable.view;
        self.view_changes.retain(|v, _| *v >= current);
        let quota = Config::VIEW_CHANGES_PER_SENDER;
        for _ in 0..evict_over_quota(&mut self.view_changes, from, current, quota) {
            self.dropped(DropReason::ViewChangeFlood);
        }
    }

    /// §4.5.2 (liveness): the view to move to because f+1 *other* replicas ask for views
    /// above ours — the smallest view one of them asks for. Our own request never counts, so
    /// f Byzantine replicas can neither start a view change nor drag one along to a later
    /// view. Replicas that drifted apart in view meet again through retransmitted view
    /// changes and the timer rule ([`Replica::arm_view_change_timer`]). How far one view
    /// change can take us is bounded all the same: a view more than
    /// [`Config::MAX_VIEW_LEAD`] ahead is never stored.
    fn view_to_join(&self) -> Option<View> {
        let current = self.durable.view;
        let mut smallest: BTreeMap<ReplicaId, View> = BTreeMap::new();
        for (view, by) in self.view_changes.range(current.saturating_add(1)..) {
            for from in by.keys().filter(|from| **from != self.id) {
                smallest.entry(*from).or_insert(*view);
            }
        }
        for (from, view) in &self.views_asked_far {
            if *view > current {
                smallest.entry(*from).or_insert(*view);
            }
        }
        if smallest.len() < self.config.weak_quorum() {
            return None;
        }
        smallest.into_values().min()
    }

    /// A view-change message is valid when signed, its checkpoint proof holds, and each
    /// prepared proof is a pre-prepare from the primary of an earlier view with 2f matching
    /// prepares from distinct backups of that view, inside the message's watermarks. Sent on
    /// its own (`batches` = [`Batches::Carried`]) each proof carries its batch, within the
    /// batch limits; inside a new view ([`Batches::LeftOut`]) each carries the null batch.
    pub(crate) fn valid_view_change(&self, vc: &Signed<ViewChange>, batches: Batches) -> bool {
        let m = &vc.message;
        if !self.verify(vc, m.signed_bytes(), Domain::ViewChange) {
            return false;
        }
        if !self.valid_checkpoint_proof(&m.checkpoint) {
            return false;
        }
        let low = m.checkpoint.seq;
        if m.prepared.len() as u64 > self.config.watermark_window {
            return false;
        }
        let mut seqs = BTreeSet::new();
        for p in &m.prepared {
            let pp = &p.pre_prepare.message;
            if pp.view >= m.new_view
                || pp.seq <= low
                || pp.seq > low.saturating_add(self.config.watermark_window)
                || !seqs.insert(pp.seq)
                || p.pre_prepare.from != self.config.primary(pp.view)
                || !self.proof_batch_fits(pp, batches)
                || !self.verify(&p.pre_prepare, pp.signed_bytes(), Domain::PrePrepare)
            {
                return false;
            }
            let mut signers = BTreeSet::new();
            for v in &p.prepares {
                if v.message
                    != (Vote {
                        view: pp.view,
                        seq: pp.seq,
                        digest: pp.digest,
                    })
                    || v.from == p.pre_prepare.from
                    || !signers.insert(v.from)
                    || !self.verify(v, PrepareVote(&v.message).signed_bytes(), Domain::Prepare)
                {
                    return false;
                }
            }
            if signers.len() < self.config.prepare_quorum() {
                return false;
            }
        }
        true
    }

    /// Does a proof's batch take the form `batches` asks for: its digest's batch within the
    /// batch limits, or left out?
    fn proof_batch_fits(&self, pp: &PrePrepare, batches: Batches) -> bool {
        match batches {
            Batches::Carried => {
                pp.batch.requests.len() <= self.config.max_batch_requests
                    && pp.batch.size_bytes() <= self.config.max_batch_bytes
                    && pp.batch.digest() == pp.digest
            }
            Batches::LeftOut => pp.batch == Batch::null(),
        }
    }

    /// §4.5.2: accept a valid view change for a later view; join once f+1 replicas ask for
    /// views above ours; the new primary answers 2f+1 with a new view.
    pub(crate) fn on_view_change(&mut self, vc: Signed<ViewChange>) {
        let view = vc.message.new_view;
        if view == self.durable.view && !self.in_view_change {
            // A replica asks for the view we are in: it missed the new view (it restarted, or
            // was cut off, or its view change crossed the new view). Its primary sends it
            // again. If the primary cannot (restarted, it lost its new view: the asker is
            // the primary itself, or we are), the view has no working primary: that counts
            // as a suspicion of the view. Otherwise it does not (view changes still in
            // flight when the new view is installed would depose the new primary at once:
            // found by the fault harness). We never go back into a view change for the view
            // we are in: having restarted in it, we may have accepted batches in it, and a
            // second new view for it could order others at their sequence numbers (red team,
            // issue 18).
            let primary_lost_it = vc.from == self.config.primary(view)
                || (self.is_primary()
                    && self
                        .durable
                        .new_view
                        .as_ref()
                        .is_none_or(|nv| nv.message.view != view));
            if primary_lost_it {
                if self.verify(&vc, vc.message.signed_bytes(), Domain::ViewChange) {
                    self.note_suspicion(vc.from, view);
                    self.act_on_suspicions();
                }
            } else {
                self.resend_new_view(&vc);
            }
            return;
        }
        if view < self.durable.view {
            // A replica behind us in view (cut off, down a long while): the primary of the
            // view we are in sends it our new view, which takes it straight there.
            if !self.in_view_change {
                self.resend_new_view(&vc);
            }
            return;
        }
        if view > self.durable.view.saturating_add(Config::MAX_VIEW_LEAD) {
            self.note_view_asked_far(&vc);
            return;
        }
        // A copy we hold (a retransmission): nothing new, and no need to check it again; it
        // says again that its sender left our view.
        if self
            .view_changes
            .get(&view)
            .and_then(|by| by.get(&vc.from))
            .is_some_and(|held| held.signature == vc.signature)
        {
            if view > self.durable.view {
                self.note_suspicion(vc.from, view.saturating_sub(1));
                self.note_left_out(vc.from);
                self.act_on_suspicions();
            }
            return;
        }
        // Cheap checks before the costly validation: how far ahead, and whether the sender
        // already filled its quota with views at or above this one (it would evict nothing).
        let newer_from_sender = self
            .view_changes
            .range(view..)
            .filter(|(_, by)| by.contains_key(&vc.from))
            .count();
        if newer_from_sender >= Config::VIEW_CHANGES_PER_SENDER {
            self.dropped(DropReason::ViewChangeFlood);
            return;
        }
        if !self.valid_view_change(&vc, Batches::Carried) {
            return;
        }
        if view > self.durable.view {
            self.note_suspicion(vc.from, view.saturating_sub(1));
            self.note_left_out(vc.from);
        }
        self.store_view_change(vc);
        if let Some(view) = self.view_to_join() {
            self.start_view_change(view);
        }
        self.act_on_suspicions();
        self.arm_view_change_timer();
        self.try_new_view();
    }

    /// The new primary, with 2f+1 view changes for its view, sends the new view.
    fn try_new_view(&mut self) {
        let view = self.durable.view;
        if !self.in_view_change || self.config.primary(view) != self.id {
            return;
        }
        let Some(vcs) = self.view_changes.get(&view) else {
            return;
        };
        if vcs.len() < self.config.quorum() {
            return;
        }
        let mut chosen: Vec<Signed<ViewChange>> = Vec::new();
        if let Some(own) = vcs.get(&self.id) {
            chosen.push(own.clone());
        }
        for (from, vc) in vcs {
            if chosen.len() == self.config.quorum() {
                break;
            }
            if *from != self.id {
                chosen.push(vc.clone());
            }
        }
        let (_, digests) = self.compute_o_set(&chosen);
        // The batches come from the chosen view changes, which carry them (checked on receipt).
        let mut known: BTreeMap<Digest, &Batch> = BTreeMap::new();
        for p in chosen.iter().flat_map(|vc| &vc.message.prepared) {
            known.insert(p.pre_prepare.message.digest, &p.pre_prepare.message.batch);
        }
        let null = Batch::null();
        let null_digest = null.digest();
        let mut pre_prepares = Vec::with_capacity(digests.len());
        for (seq, digest) in digests {
            let batch = if digest == null_digest {
                &null
            } else if let Some(batch) = known.get(&digest) {
                batch
            } else {
                debug_assert!(false, "a chosen view change without its batch");
                return;
            };
            let pp = PrePrepare {
                view,
                seq,
                digest,
                batch: (*batch).clone(),
            };
            pre_prepares.push(self.sign(pp, |m| m.signed_bytes(), Domain::PrePrepare));
        }
        let nv = NewView {
            view,
            view_changes: chosen.iter().map(Signed::without_batches).collect(),
            pre_prepares,
        };
        let signed = self.sign(nv, |m| m.signed_bytes(), Domain::NewView);
        self.broadcast(Message::NewView(signed.clone()));
        self.durable.new_view = Some(signed.clone());
        self.new_view_resent.clear();
        self.enter_view(signed.message);
    }

    /// A view change for a view too far ahead to keep (a replica that was cut off while the
    /// others changed views many times sees those): its signature is checked (only when the
    /// sender asks for more than it did before) and the view remembered, one per replica,
    /// so that f+1 other replicas far ahead still take us there ([`Replica::view_to_join`]).
    fn note_view_asked_far(&mut self, vc: &Signed<ViewChange>) {
        let view = vc.message.new_view;
        if vc.from == self.id || vc.from >= self.config.n {
            return;
        }
        let asked = self.views_asked_far.get(&vc.from).copied();
        // The same view asked again (a replica saying its view change again, as it does
        // every request timeout): it still counts as a suspicion and as left out, checked at
        // most once per request timeout per replica (red team, issue 18).
        let due = self.suspicions.get(&vc.from).is_none_or(|(_, lapses)| {
            lapses.saturating_sub(self.now_ms) <= self.config.request_timeout_ms
        });
        if asked == Some(view) && due {
            if self.verify(vc, vc.message.signed_bytes(), Domain::ViewChange) {
                self.note_suspicion(vc.from, view.saturating_sub(1));
                self.note_left_out(vc.from);
                self.act_on_suspicions();
            }
            return;
        }
        if asked.is_some_and(|asked| asked >= view) {
            if asked != Some(view) {
                self.dropped(DropReason::ViewChangeFlood);
            }
            return;
        }
        if !self.verify(vc, vc.message.signed_bytes(), Domain::ViewChange) {
            return;
        }
        self.views_asked_far.insert(vc.from, view);
        self.note_suspicion(vc.from, view.saturating_sub(1));
        self.note_left_out(vc.from);
        if let Some(view) = self.view_to_join() {
            self.start_view_change(view);
        }
        self.act_on_suspicions();
    }

    /// The primary of the current view sends its new-view message again to a replica whose
    /// signed view change asks for this view (at most once per request timeout to each
    /// replica, so a replica cannot make us send it over and over; the asking replica
    /// retransmits its view change until the new view reaches it).
    fn resend_new_view(&mut self, vc: &Signed<ViewChange>) {
        if self.may_resend_new_view(vc.from)
            && self.verify(vc, vc.message.signed_bytes(), Domain::ViewChange)
        {
            self.resend_new_view_to(vc.from);
        }
    }

    /// Whether we hold a new view of our view to send again to `to`, and are past the wait
    /// after the last time: one request timeout after the first, doubling with each further
    /// one (at most 64 timeouts), so that a few hundred bytes of view change cannot make us
    /// send a window of batches every timeout (red team, issue 18).
    fn may_resend_new_view(&self, to: ReplicaId) -> bool {
        let recently = self.new_view_resent.get(&to).is_some_and(|(at, times)| {
            let wait = self
                .config
                .request_timeout_ms
                .saturating_mul(1u64 << times.saturating_sub(1).min(6));
            self.now_ms < at.saturating_add(wait)
        });
        to != self.id
            && !recently
            && self
                .durable
                .new_view
                .as_ref()
                .is_some_and(|nv| nv.message.view == self.durable.view)
    }

    /// Sends our new view again to `to`, which missed it (at most once per request timeout).
    fn resend_new_view_to(&mut self, to: ReplicaId) {
        if !self.may_resend_new_view(to) {
            return;
        }
        if let Some(nv) = self.durable.new_view.clone() {
            let times = self.new_view_resent.get(&to).map_or(0, |(_, t)| *t);
            self.new_view_resent
                .insert(to, (self.now_ms, times.saturating_add(1)));
            self.send(to, Message::NewView(nv));
        }
    }

    /// Castro–Liskov §4.5.2 for a replica that fell behind in view (it restarted, or was cut
    /// off while the others changed views): signed normal-case messages from f+1 other
    /// replicas in views above ours mean at least one correct replica is there. We then ask
    /// for the smallest of those views; its primary answers with its new view
    /// ([`Replica::resend_new_view`]), and we take part again.
    pub(crate) fn note_view_ahead(&mut self, message: &Message) {
        let current = self.durable.view;
        let (from, view) = match message {
            Message::PrePrepare(pp) => (pp.from, pp.message.view),
            Message::Prepare(v) | Message::Commit(v) => (v.from, v.message.view),
            _ => return,
        };
        if view <= current
            || from == self.id
            || view > current.saturating_add(Config::MAX_VIEW_LEAD)
            || self
                .views_ahead
                .get(&from)
                .is_some_and(|seen| *seen >= view)
        {
            return;
        }
        let signed = match message {
            Message::PrePrepare(pp) => {
                self.verify(pp, pp.message.signed_bytes(), Domain::PrePrepare)
            }
            Message::Prepare(v) => {
                self.verify(v, PrepareVote(&v.message).signed_bytes(), Domain::Prepare)
            }
            Message::Commit(v) => {
                self.verify(v, CommitVote(&v.message).signed_bytes(), Domain::Commit)
            }
            _ => false,
        };
        if !signed {
            self.dropped(DropReason::BadSignature);
            return;
        }
        self.views_ahead.insert(from, view);
        self.views_ahead.retain(|_, v| *v > current);
        if self.views_ahead.len() >= self.config.weak_quorum()
            && let Some(target) = self.views_ahead.values().min().copied()
        {
            self.views_ahead.clear();
            self.start_view_change(target);
        }
    }

    /// The O set of §4.4: from the highest stable checkpoint among the view changes (min-s)
    /// to the highest prepared sequence number (max-s), the digest of the batch prepared in
    /// the latest view for each sequence number, or the null batch's where none prepared.
    pub(crate) fn compute_o_set(
        &self,
        vcs: &[Signed<ViewChange>],
    ) -> (CheckpointProof, Vec<(Seq, Digest)>) {
        let checkpoint = vcs
            .iter()
            .map(|vc| &vc.message.checkpoint)
            .max_by_key(|c| c.seq)
            .cloned()
            .unwrap_or_default();
        let min_s = checkpoint.seq;
        let mut best: BTreeMap<Seq, &PrePrepare> = BTreeMap::new();
        for vc in vcs {
            for p in &vc.message.prepared {
                let pp = &p.pre_prepare.message;
                if pp.seq <= min_s {
                    continue;
                }
                if best.get(&pp.seq).is_none_or(|b| b.view < pp.view) {
                    best.insert(pp.seq, pp);
                }
            }
        }
        let max_s = best.keys().next_back().copied().unwrap_or(min_s);
        let null = Batch::null().digest();
        let digests = (min_s..max_s)
            .filter_map(|seq| seq.checked_add(1))
            .map(|seq| (seq, best.get(&seq).map_or(null, |pp| pp.digest)))
            .collect();
        (checkpoint, digests)
    }

    /// A backup accepts a new view from the primary of that view when it carries 2f+1 valid
    /// view changes for it from distinct replicas (their batches left out) and exactly the
    /// batches they imply, each signed by the new primary and matching its digest. Otherwise the new primary is faulty: on to the next view.
    pub(crate) fn on_new_view(&mut self, nv: Signed<NewView>) {
        let m = &nv.message;
        if m.view < self.durable.view || (m.view == self.durable.view && !self.in_view_change) {
            return;
        }
        let primary = self.config.primary(m.view);
        if nv.from != primary
            || primary == self.id
            || !self.verify(&nv, m.signed_bytes(), Domain::NewView)
        {
            return;
        }
        let mut signers = BTreeSet::new();
        let valid = m.view_changes.len() <= self.config.n as usize
            && m.view_changes.iter().all(|vc| {
                vc.message.new_view == m.view
                    && signers.insert(vc.from)
                    && self.valid_view_change(vc, Batches::LeftOut)
            })
            && signers.len() >= self.config.quorum();
        if !valid {
            return;
        }
        let (_, expected) = self.compute_o_set(&m.view_changes);
        let matches = expected.len() == m.pre_prepares.len()
            && expected
                .iter()
                .zip(&m.pre_prepares)
                .all(|((seq, digest), pp)| {
                    pp.from == primary
                        && pp.message.view == m.view
                        && pp.message.seq == *seq
                        && pp.message.digest == *digest
                        && pp.message.batch.digest() == *digest
                        && self.verify(pp, pp.message.signed_bytes(), Domain::PrePrepare)
                });
        if !matches {
            self.start_view_change(m.view.saturating_add(1));
            return;
        }
        if m.view > self.durable.view {
            self.durable.view = m.view;
        }
        self.enter_view(nv.message);
    }

    /// Installs a new view: its checkpoint, its batches (prepared anew), and the timers.
    fn enter_view(&mut self, nv: NewView) {
        let (checkpoint, _) = self.compute_o_set(&nv.view_changes);
        self.durable.view = nv.view;
        self.in_view_change = false;
        self.clear_suspicions();
        self.durable.installed_view = Some(nv.view);
        if self.config.primary(nv.view) != self.id {
            // Only a view's primary sends its new view again.
            self.durable.new_view = None;
        }
        self.view_change_attempts = 0;
        self.view_change_deadline = None;
        self.view_change_resend_at = None;
        self.dirty = true;
        if checkpoint.seq > self.low_watermark() {
            self.make_stable(checkpoint);
        }
        // Start the log of the new view from its batches.
        self.slots.clear();
        self.in_log.clear();
        let max_s = nv
            .pre_prepares
            .last()
            .map(|pp| pp.message.seq)
            .unwrap_or(self.low_watermark());
        let primary = self.config.primary(nv.view);
        let low = self.low_watermark();
        for pp in nv.pre_prepares {
            let seq = pp.message.seq;
            let digest = pp.message.digest;
            // Below our stable checkpoint the new view orders nothing we do not hold proof of
            // already (its checkpoint may be older than ours).
            if seq <= low {
                continue;
            }
            self.record_pre_prepare(pp);
            if self.id != primary {
                let vote = Vote {
                    view: nv.view,
                    seq,
                    digest,
                };
                let signed = self.sign(vote, |v| PrepareVote(v).signed_bytes(), Domain::Prepare);
                self.broadcast(Message::Prepare(signed.clone()));
                self.slots
                    .entry(seq)
                    .or_default()
                    .prepares
                    .insert((nv.view, self.id), signed);
            }
        }
        self.next_seq = max_s
            .max(self.last_dispatched)
            .max(self.low_watermark())
            .saturating_add(1);
        self.view_changes.retain(|v, _| *v > nv.view);
        self.progress_deadline = None;
        self.arm_progress_timer();
        for message in self.take_early() {
            self.handle(message);
        }
        if self.id == primary {
            self.propose(false);
        } else {
            // Hand our pending requests to the new primary.
            let pending: Vec<Request> = self.pending.iter().cloned().collect();
            let from = self.id;
            for request in pending {
                self.send(primary, Message::Forward { from, request });
            }
        }
    }
}

/// Whether the prepared proofs of a view change carry their batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batches {
    /// A view change on its own: each proof carries its batch (the new primary needs it).
    Carried,
    /// A view change inside a new view: each proof carries the null batch.
    LeftOut,
}
