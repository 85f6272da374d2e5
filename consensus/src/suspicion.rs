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
//! What counts as another replica's suspicion of our view, for two request timeouts after
//! it last said so (a suspecting replica says it again every request timeout, and a replica
//! changing views sends its view change again as often, so a suspicion no one repeats
//! lapses): its [`Message::Suspect`] for our view or a later one (it is further along, and
//! stuck too), its view change for a later view (it left ours), or, from the primary of our
//! view, its view change for our view while we are in it (restarted, it lost its new view:
//! the view has no primary). Suspicions are not signed: they
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

    /// Whether we suspect the primary of our view and have not left it (for operators: one
    /// replica suspecting while most do not is cut off from them).
    pub fn suspects_primary(&self) -> bool {
        !self.in_view_change && self.suspicion_resend_at.is_some()
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

    /// Another replica's suspicion of the primary of `view`, which it is in. One for a view
    /// we left is not answered: the normal-case messages of our view take its sender along
    /// (`note_view_ahead`), or, if our view is stuck too, our own suspicion of it does.
    pub(crate) fn on_suspect(&mut self, from: ReplicaId, view: View) {
        let current = self.durable.view;
        if view < current || view > current.saturating_add(Config::MAX_VIEW_LEAD) {
            return;
        }
        self.note_suspicion(from, view);
        self.act_on_suspicions();
    }

    /// `from` (another replica, named by the host's authenticated link or by its signature)
    /// suspects `view`, or left it, now: counted until two request timeouts from now.
    pub(crate) fn note_suspicion(&mut self, from: ReplicaId, view: View) {
        if from == self.id || from >= self.config.n {
            return;
        }
        let lapses = self
            .now_ms
            .saturating_add(self.config.request_timeout_ms.saturating_mul(2));
        let entry = self.suspicions.entry(from).or_insert((view, lapses));
        if entry.1 <= self.now_ms || view >= entry.0 {
            *entry = (view, lapses);
        }
    }

    /// The other replicas that suspect the primary of our view or of a later one now, each
    /// with the view it suspects.
    fn others_suspecting(&self) -> BTreeMap<ReplicaId, View> {
        let current = self.durable.view;
        let now = self.now_ms;
        self.suspicions
            .iter()
            .filter(|(_, (view, lapses))| *lapses > now && *view >= current)
            .map(|(from, (view, _))| (*from, *view))
            .collect()
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
