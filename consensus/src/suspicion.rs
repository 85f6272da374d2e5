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
//!
//! Suspicions lapse, and under message loss one replica may still count 2f+1 of them that
//! lapsed everywhere else before the others heard enough: it leaves the view alone, bound by
//! its view change, while the others go on (the fault harness found it at 22% packet loss).
//! The primary then steps down: a correct primary seeing, for [`STEP_DOWN_PATIENCE_TIMEOUTS`]
//! request timeouts, so many replicas in view changes past its view that the network has no
//! spare fault (n − quorum of them: f at n = 3f + 1, [`Config::spare_replicas`]), suspects
//! itself. With their view changes that is at least f+1 suspicions,
//! so every replica joins and the view changes, which brings them back: a view change costs
//! a few round trips, a network without a spare fault costs the next fault. A faulty replica
//! staying in a view change on purpose makes each correct primary step down at most once per
//! patience, and the patience doubles for each time the same replica caused it (up to
//! [`STEP_DOWN_PATIENCE_MAX_TIMEOUTS`], forgotten after [`STEP_DOWN_MEMORY_TIMEOUTS`]).

use std::collections::BTreeMap;

use crate::config::Config;
use crate::message::{Message, ReplicaId, View};
use crate::replica::Replica;

/// Request timeouts a primary waits, seeing f replicas in view changes past its view, before
/// it suspects itself (stepping down; the module's documentation says why).
pub const STEP_DOWN_PATIENCE_TIMEOUTS: u64 = 8;
/// The longest patience, after the same replica made us step down again and again.
pub const STEP_DOWN_PATIENCE_MAX_TIMEOUTS: u64 = 32;
/// Request timeouts a step-down lasts at most: if the view has not changed by then, the
/// others did not join, and our suspicion is withdrawn.
pub const STEP_DOWN_HOLD_TIMEOUTS: u64 = 2;
/// Request timeouts after which a step-down no longer lengthens the patience.
pub const STEP_DOWN_MEMORY_TIMEOUTS: u64 = 256;

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
        !self.in_view_change && self.suspicion_resend_at.is_some() && !self.stepping_down()
    }

    /// Whether we are the primary and suspect ourselves to bring back replicas left out of
    /// our view (for the host's log).
    pub fn stepping_down(&self) -> bool {
        self.stepping_down_until.is_some()
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
    /// Not while stepping down: we execute, but replicas are left out until the view changes.
    pub(crate) fn withdraw_suspicion(&mut self) {
        if !self.stepping_down() {
            self.suspicion_resend_at = None;
        }
    }

    /// Forgets every suspicion: we are moving to another view.
    pub(crate) fn clear_suspicions(&mut self) {
        self.suspicion_resend_at = None;
        self.suspicions.clear();
        self.left_out.clear();
        self.stepping_down_until = None;
    }

    /// `from` sent a view change past our view: as the installed primary of our view, we note
    /// since when it is left out of it (and keep noting it while it says so again).
    pub(crate) fn note_left_out(&mut self, from: ReplicaId) {
        if from == self.id
            || from >= self.config.n
            || !self.is_primary()
            || !self.view_installed()
            || self.in_view_change
        {
            return;
        }
        let now = self.now_ms;
        let lapses = now.saturating_add(self.config.request_timeout_ms.saturating_mul(2));
        let entry = self.left_out.entry(from).or_insert((now, lapses));
        if entry.1 <= now {
            *entry = (now, lapses);
        } else {
            entry.1 = lapses;
        }
    }

    /// How long we wait for `replica`, left out, before stepping down (ms): the patience,
    /// doubled for each recent time it made us step down, at most the longest patience.
    fn step_down_patience(&self, replica: ReplicaId) -> u64 {
        let timeout = self.config.request_timeout_ms;
        let times = self.recent_step_downs(replica);
        let timeouts = STEP_DOWN_PATIENCE_TIMEOUTS
            .saturating_mul(1u64.checked_shl(times.min(8)).unwrap_or(u64::MAX))
            .min(STEP_DOWN_PATIENCE_MAX_TIMEOUTS);
        timeout.saturating_mul(timeouts)
    }

    /// How often `replica` made us step down, counting only while the last time is within
    /// [`STEP_DOWN_MEMORY_TIMEOUTS`].
    fn recent_step_downs(&self, replica: ReplicaId) -> u32 {
        let memory = self
            .config
            .request_timeout_ms
            .saturating_mul(STEP_DOWN_MEMORY_TIMEOUTS);
        match self.stepped_down_for.get(&replica) {
            Some((times, last)) if self.now_ms.saturating_sub(*last) < memory => *times,
            _ => 0,
        }
    }

    /// As the installed primary, steps down (suspects itself) once as many replicas as may be
    /// out ([`Config::spare_replicas`]: f at n = 3f + 1) have been in
    /// view changes past our view for longer than their patience: the network has no spare
    /// fault while they are out, and only a view change brings them back.
    pub(crate) fn step_down_if_left_out(&mut self) {
        let now = self.now_ms;
        self.left_out.retain(|_, (_, lapses)| *lapses > now);
        if self.stepping_down()
            || self.in_view_change
            || !self.is_primary()
            || !self.view_installed()
        {
            return;
        }
        let waited_out: Vec<ReplicaId> = self
            .left_out
            .iter()
            .filter(|(replica, (since, _))| {
                now.saturating_sub(*since) >= self.step_down_patience(**replica)
            })
            .map(|(replica, _)| *replica)
            .collect();
        if waited_out.len() < self.config.spare_replicas().max(1) {
            return;
        }
        for replica in waited_out {
            let times = self.recent_step_downs(replica);
            self.stepped_down_for
                .insert(replica, (times.saturating_add(1), now));
            // Its next (doubled) patience counts from this step-down.
            if let Some(entry) = self.left_out.get_mut(&replica) {
                entry.0 = now;
            }
        }
        self.stepping_down_until = Some(
            now.saturating_add(
                self.config
                    .request_timeout_ms
                    .saturating_mul(STEP_DOWN_HOLD_TIMEOUTS),
            ),
        );
        self.say_suspicion();
        self.act_on_suspicions();
    }

    /// Ends a step-down the others did not join in time, or whose replicas are no longer
    /// left out (fewer than the spare replicas still in view changes past our view): our
    /// suspicion is
    /// withdrawn, so that it cannot linger and later join one faulty replica's to depose us
    /// (red team, issue 18). The replicas' patience stays doubled.
    pub(crate) fn end_step_down_if_over(&mut self) {
        let Some(until) = self.stepping_down_until else {
            return;
        };
        let now = self.now_ms;
        let live = self
            .left_out
            .values()
            .filter(|(_, lapses)| *lapses > now)
            .count();
        if now >= until || live < self.config.spare_replicas().max(1) {
            self.stepping_down_until = None;
            self.suspicion_resend_at = None;
        }
    }

    /// When the step-down logic next needs a tick (ms): the end of a step-down, or the
    /// earliest a replica left out exhausts its patience (an idle primary has no other
    /// timer running).
    /// Only when a step-down can follow: as the installed primary, with as many replicas left
    /// out (live) as may be out, at the latest end of patience among the earliest of them. A deadline that could pass without
    /// a step-down would stay the earliest timer and, already set, never be set again: the
    /// primary's other timers would stop (red team, issue 18).
    pub(crate) fn step_down_deadline(&self) -> Option<u64> {
        if let Some(until) = self.stepping_down_until {
            return Some(until);
        }
        if !self.is_primary() || self.in_view_change || !self.view_installed() {
            return None;
        }
        let now = self.now_ms;
        let mut ends: Vec<u64> = self
            .left_out
            .iter()
            .filter(|(_, (_, lapses))| *lapses > now)
            .map(|(replica, (since, _))| since.saturating_add(self.step_down_patience(*replica)))
            .collect();
        ends.sort_unstable();
        ends.get(self.config.spare_replicas().max(1).saturating_sub(1))
            .copied()
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
