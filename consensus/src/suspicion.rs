//! Suspecting the primary before leaving its view. Castro–Liskov send a view change (and stop
//! taking part in the view) as soon as a request timer expires. A replica cut off alone, paused
//! or with its clock off then leaves a view no other replica leaves: its view change binds it
//! (a correct replica never votes in a view it asked to leave, §4.4), so it is out of the
//! normal case until the network's next view change, and the network runs with no spare
//! fault. Here, as in BFT-SMaRt's STOP phase (Sousa & Bessani, EDCC 2012, §IV), a replica that
//! suspects the primary first says so with [`Message::Suspect`] and keeps taking part; it
//! joins the suspicion once f+1 other replicas suspect the view (one of them is correct), and
//! sends its view change only once 2f+1 replicas (itself included) do. A replica suspecting
//! alone keeps its view, and is back in the normal case as soon as its links heal.
//!
//! What counts as another replica's suspicion of our view: its [`Message::Suspect`] for it
//! or for a later view (it is further along, and stuck too), received in the last two
//! request timeouts (a suspecting replica says it again every request timeout, so a suspicion
//! no one repeats lapses), or its view change for a later view (it left ours). Suspicions are not signed: they
//! prove nothing to third parties and are never relayed; the host names their sender by its
//! authenticated link, as for [`Message::Fetch`].

use std::collections::BTreeMap;

use crate::config::Config;
use crate::message::{Message, ReplicaId, View};
use crate::replica::Replica;

impl Replica {
    /// Our request timer expired, or the primary sent a batch we cannot accept: we suspect the
    /// primary of our view. Said at most once per request timeout (a primary sending bad
    /// batches would otherwise make us say it for each).
    pub(crate) fn suspect_primary(&mut self) {
        if self.in_view_change {
            return;
        }
        if self.suspicion_resend_at.is_none_or(|at| self.now_ms >= at) {
            self.say_suspicion();
        }
        // The progress timer is spent; the resend timer takes over until progress is made.
        self.progress_deadline = None;
        self.act_on_suspicions();
    }

    /// Tells every replica we suspect the primary of our view, and when to say it again.
    pub(crate) fn say_suspicion(&mut self) {
        self.suspicion_resend_at = Some(self.now_ms.saturating_add(self.config.request_timeout_ms));
        let from = self.id;
        let view = self.durable.view;
        self.broadcast(Message::Suspect { from, view });
    }

    /// We made progress (a batch executed): we no longer suspect the primary. Others' copies
    /// of our suspicion lapse by themselves.
    pub(crate) fn withdraw_suspicion(&mut self) {
        self.suspicion_resend_at = None;
    }

    /// Forgets every suspicion: we are moving to another view.
    pub(crate) fn clear_suspicions(&mut self) {
        self.suspicion_resend_at = None;
        self.suspicions.clear();
    }

    /// Another replica's suspicion of the primary of `view`, which it is in.
    pub(crate) fn on_suspect(&mut self, from: ReplicaId, view: View) {
        let current = self.durable.view;
        if from == self.id || from >= self.config.n {
            return;
        }
        if view < current {
            self.help_replica_behind(from);
            return;
        }
        if view > current.saturating_add(Config::MAX_VIEW_LEAD) {
            return;
        }
        let lapses = self
            .now_ms
            .saturating_add(self.config.request_timeout_ms.saturating_mul(2));
        self.suspicions.insert(from, (view, lapses));
        self.act_on_suspicions();
    }

    /// A replica suspecting a view we left missed how we left it. The primary of our view
    /// sends it the new view again (rate-limited per replica). A replica that restarted in
    /// its view not knowing whether it was installed, and prepared nothing in it, takes part
    /// in its view change again, so that the one behind sees a view change that counts as a
    /// suspicion of its view (one that prepared in it knows the view was installed, and may
    /// not ask for it). Otherwise our view change, resent every request timeout while we are
    /// in one, or the normal-case messages of our view (`note_view_ahead`), or our own
    /// suspicion of our view, take it along.
    fn help_replica_behind(&mut self, from: ReplicaId) {
        let current = self.durable.view;
        if self.in_view_change {
            return;
        }
        if self.installed_view == Some(current) {
            self.resend_new_view_to(from);
        } else if self
            .durable
            .prepared
            .values()
            .all(|p| p.pre_prepare.message.view < current)
        {
            self.start_view_change(current);
        }
    }

    /// The other replicas that suspect the primary of our view or of a later one, each with
    /// the view it suspects: a suspicion said in the last two request timeouts, or a view
    /// change asking for view t (it gave up on t - 1).
    fn others_suspecting(&self) -> BTreeMap<ReplicaId, View> {
        let current = self.durable.view;
        let now = self.now_ms;
        let mut others: BTreeMap<ReplicaId, View> = BTreeMap::new();
        let mut note = |from: ReplicaId, view: View| {
            let held = others.entry(from).or_insert(view);
            *held = (*held).max(view);
        };
        for (from, (view, lapses)) in &self.suspicions {
            if *lapses > now && *view >= current {
                note(*from, *view);
            }
        }
        for (asked, by) in self.view_changes.range(current.saturating_add(1)..) {
            for from in by.keys() {
                note(*from, asked.saturating_sub(1));
            }
        }
        for (from, asked) in &self.views_asked_far {
            if *asked > current {
                note(*from, asked.saturating_sub(1));
            }
        }
        others.remove(&self.id);
        others
    }

    /// Joins a suspicion f+1 other replicas hold (not while changing views: we already left
    /// the view). Once 2f+1 replicas, ourselves included, suspect our view (in a view change,
    /// the view we wait for), moves to the view after the (f+1)-th highest view suspected: at
    /// most f replicas suspect a higher one, so a correct replica is at least that far, and f
    /// faulty ones cannot drag the others further.
    pub(crate) fn act_on_suspicions(&mut self) {
        let now = self.now_ms;
        let current = self.durable.view;
        self.suspicions
            .retain(|_, (view, lapses)| *lapses > now && *view >= current);
        let others = self.others_suspecting();
        if !self.in_view_change
            && self.suspicion_resend_at.is_none()
            && others.len() >= self.config.weak_quorum()
        {
            self.say_suspicion();
        }
        let we_suspect = self.in_view_change || self.suspicion_resend_at.is_some();
        if !we_suspect || others.len().saturating_add(1) < self.config.quorum() {
            return;
        }
        let mut views: Vec<View> = others.into_values().chain([current]).collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        let f = self.config.f();
        let target = views
            .get(f)
            .copied()
            .unwrap_or(current)
            .saturating_add(1)
            .max(current.saturating_add(1));
        self.start_view_change(target);
    }
}
