//! One test per acceptance rule of the PBFT handlers, citing Castro–Liskov (OSDI '99):
//! pre-prepare (§4.2; §4.4 for what makes a backup suspect its primary), prepare and commit
//! (§4.2), checkpoint (§4.3) and view change (§4.4, §4.5.2), on one replica driven by hand:
//! replica 1 of 4 in view 0, whose primary is replica 0. Signatures are the simulator's.
// A host, not the deterministic crate: it may read the clock and the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod sim;

use medledger_pbft::*;
use sim::{SimCrypto, payload_for, sim_signature, view_change};

const NOW: u64 = 1_000_000;

fn config() -> Config {
    let mut config = Config::new(4);
    config.checkpoint_interval = 8;
    config.watermark_window = 16;
    config
}

/// A fresh replica `id` (nothing durable, nothing executed).
fn fresh(id: ReplicaId, config: Config) -> Replica {
    // Test threads may be reused: sign as this replica's set, whatever ran before.
    sim::set_epoch(&config);
    Replica::new(
        id,
        config,
        Box::new(SimCrypto { id }),
        DurableState::default(),
        0,
    )
}

fn backup() -> Replica {
    fresh(1, config())
}

fn batch(first: u64) -> Batch {
    Batch {
        timestamp_ms: NOW,
        requests: (first..first + 2)
            .map(|n| {
                let mut tx_id = [0u8; 32];
                tx_id[..8].copy_from_slice(&n.to_be_bytes());
                client_request(tx_id)
            })
            .collect(),
    }
}

/// A client's request `tx_id`, its payload the simulator's for that id.
fn client_request(tx_id: TxId) -> Request {
    Request {
        tx_id,
        payload: payload_for(&tx_id),
    }
}

fn pre_prepare(from: ReplicaId, view: View, seq: Seq, batch: Batch, digest: Digest) -> Message {
    let pp = PrePrepare {
        view,
        seq,
        digest,
        batch,
    };
    let signature = sim_signature(from, Domain::PrePrepare, &pp.signed_bytes());
    Message::PrePrepare(Signed {
        from,
        message: pp,
        signature,
    })
}

/// A correct primary's pre-prepare of `batch` at `seq` in view 0.
fn proposal(seq: Seq, batch: Batch) -> Message {
    let digest = batch.digest();
    pre_prepare(0, 0, seq, batch, digest)
}

/// Delivers `message`, confirming every Persist; returns what the replica sent and the
/// sequence numbers it handed to the host to execute.
fn drive(replica: &mut Replica, message: Message) -> (Vec<Message>, Vec<Seq>) {
    drive_at(replica, message, NOW)
}

/// [`drive`] at time `now_ms`.
fn drive_at(replica: &mut Replica, message: Message, now_ms: u64) -> (Vec<Message>, Vec<Seq>) {
    let actions = replica.receive(message, now_ms);
    perform(replica, actions)
}

/// Performs `actions` as a host would, confirming every Persist; returns what was sent and
/// the sequence numbers handed to the host to execute.
fn perform(replica: &mut Replica, mut actions: Vec<Action>) -> (Vec<Message>, Vec<Seq>) {
    let (mut sent, mut executed) = (Vec::new(), Vec::new());
    while !actions.is_empty() {
        let mut next = Vec::new();
        for action in actions {
            match action {
                Action::Persist { token } => next.extend(replica.persisted(token)),
                Action::Send { message, .. } | Action::Broadcast { message } => sent.push(message),
                Action::Execute { seq, .. } => executed.push(seq),
                _ => {}
            }
        }
        actions = next;
    }
    (sent, executed)
}

/// What the replica sent on `message`.
fn deliver(replica: &mut Replica, message: Message) -> Vec<Message> {
    drive(replica, message).0
}

/// What the replica handed to the host to execute on `message`.
fn executed(replica: &mut Replica, message: Message) -> Vec<Seq> {
    drive(replica, message).1
}

fn prepares(sent: &[Message]) -> Vec<Vote> {
    sent.iter()
        .filter_map(|m| match m {
            Message::Prepare(v) => Some(v.message),
            _ => None,
        })
        .collect()
}

fn suspicions(sent: &[Message]) -> Vec<View> {
    sent.iter()
        .filter_map(|m| match m {
            Message::Suspect { view, .. } => Some(*view),
            _ => None,
        })
        .collect()
}

fn view_changes(sent: &[Message]) -> Vec<View> {
    sent.iter()
        .filter_map(|m| match m {
            Message::ViewChange(vc) => Some(vc.message.new_view),
            _ => None,
        })
        .collect()
}

/// §4.2: a pre-prepare signed by the primary of our view, inside the watermarks, whose
/// digest is its batch's, is accepted: the backup multicasts a matching prepare.
#[test]
fn a_correct_pre_prepare_is_prepared() {
    let mut r = backup();
    let b = batch(1);
    let digest = b.digest();
    let sent = deliver(&mut r, proposal(1, b));
    assert_eq!(
        prepares(&sent),
        vec![Vote {
            view: 0,
            seq: 1,
            digest
        }]
    );
}

/// §4.2: only the primary of the view may pre-prepare; anyone else's is ignored.
#[test]
fn a_pre_prepare_from_a_backup_is_ignored() {
    let mut r = backup();
    let b = batch(1);
    let digest = b.digest();
    let sent = deliver(&mut r, pre_prepare(2, 0, 1, b, digest));
    assert!(prepares(&sent).is_empty());
    assert_eq!(r.view(), 0);
}

/// §4.2: "it is in view v": a pre-prepare for another view is not accepted.
#[test]
fn a_pre_prepare_for_another_view_is_ignored() {
    let mut r = backup();
    let b = batch(1);
    let digest = b.digest();
    // View 1's primary is replica 1 itself; view 2's is replica 2.
    let sent = deliver(&mut r, pre_prepare(2, 2, 1, b, digest));
    assert!(prepares(&sent).is_empty());
    assert_eq!(r.view(), 0);
}

/// §4.2: the sequence number must lie between the watermarks h and H = h + L.
#[test]
fn a_pre_prepare_outside_the_watermarks_is_ignored() {
    let mut r = backup();
    let high = config().watermark_window;
    for seq in [0, high + 1, u64::MAX] {
        let sent = deliver(&mut r, proposal(seq, batch(seq.min(1000))));
        assert!(prepares(&sent).is_empty(), "seq {seq}");
    }
    assert_eq!(r.view(), 0);
}

/// §4.2: the signature must verify; a forged pre-prepare changes nothing.
#[test]
fn a_pre_prepare_with_a_bad_signature_is_ignored() {
    let mut r = backup();
    let mut message = proposal(1, batch(1));
    if let Message::PrePrepare(pp) = &mut message {
        pp.signature[0] ^= 1;
    }
    let sent = deliver(&mut r, message);
    assert!(prepares(&sent).is_empty());
    assert_eq!(r.view(), 0);
}

/// §4.2, "d is the digest for m": a batch that is not its digest's is a faulty primary's;
/// the backup does not prepare it and suspects the primary (§4.4; it leaves the view once
/// 2f+1 do, `suspicion.rs`).
#[test]
fn a_pre_prepare_whose_digest_is_not_its_batch_is_suspected() {
    let mut r = backup();
    let sent = deliver(&mut r, pre_prepare(0, 0, 1, batch(1), [7; 32]));
    assert!(prepares(&sent).is_empty());
    assert_eq!(suspicions(&sent), vec![0]);
    assert!(view_changes(&sent).is_empty());
}

/// §4.2: "has not accepted a pre-prepare for view v and sequence number n containing a
/// different digest": a second batch at the same (view, seq) is equivocation (§4.4).
#[test]
fn an_equivocating_primary_is_suspected() {
    let mut r = backup();
    assert_eq!(prepares(&deliver(&mut r, proposal(1, batch(1)))).len(), 1);
    let sent = deliver(&mut r, proposal(1, batch(10)));
    assert!(prepares(&sent).is_empty());
    assert_eq!(suspicions(&sent), vec![0]);
    assert!(view_changes(&sent).is_empty());
}

/// The same pre-prepare again is a retransmission, not equivocation: nothing happens.
#[test]
fn a_repeated_pre_prepare_is_not_equivocation() {
    let mut r = backup();
    assert_eq!(prepares(&deliver(&mut r, proposal(1, batch(1)))).len(), 1);
    let sent = deliver(&mut r, proposal(1, batch(1)));
    assert!(view_changes(&sent).is_empty());
    assert_eq!(r.view(), 0);
}

/// Request ids are the payloads' own (issue 14, item 3): a batch labelling a payload with
/// another request's id makes the backup suspect its primary.
#[test]
fn a_pre_prepare_mislabelling_a_request_is_suspected() {
    let mut r = backup();
    let mut b = batch(1);
    b.requests[0].tx_id[31] ^= 1;
    let sent = deliver(&mut r, proposal(1, b));
    assert!(prepares(&sent).is_empty());
    assert_eq!(suspicions(&sent), vec![0]);
    assert!(view_changes(&sent).is_empty());
}

/// Consensus time (adr 0003): a stamp further from the backup's clock than the allowed skew
/// makes the backup suspect the primary.
#[test]
fn a_pre_prepare_stamped_far_from_our_clock_is_suspected() {
    let mut r = backup();
    let mut b = batch(1);
    b.timestamp_ms = NOW + config().max_clock_skew_ms + 1;
    let sent = deliver(&mut r, proposal(1, b));
    assert!(prepares(&sent).is_empty());
    assert_eq!(suspicions(&sent), vec![0]);
    assert!(view_changes(&sent).is_empty());
}

fn vote(from: ReplicaId, domain: Domain, seq: Seq, digest: Digest) -> Message {
    let v = Vote {
        view: 0,
        seq,
        digest,
    };
    let bytes = match domain {
        Domain::Prepare => PrepareVote(&v).signed_bytes(),
        _ => CommitVote(&v).signed_bytes(),
    };
    let signed = Signed {
        from,
        message: v,
        signature: sim_signature(from, domain, &bytes),
    };
    match domain {
        Domain::Prepare => Message::Prepare(signed),
        _ => Message::Commit(signed),
    }
}

fn commits(sent: &[Message]) -> usize {
    sent.iter()
        .filter(|m| matches!(m, Message::Commit(_)))
        .count()
}

/// §4.2, prepared(m, v, n, i): the pre-prepare and 2f prepares from distinct backups. The
/// primary's prepare does not count (it sent the pre-prepare), nor does a second prepare
/// from the same backup; a replica that prepared multicasts its commit.
#[test]
fn prepared_needs_2f_prepares_from_distinct_backups() {
    let mut r = backup();
    let b = batch(1);
    let d = b.digest();
    deliver(&mut r, proposal(1, b));
    assert_eq!(commits(&deliver(&mut r, vote(0, Domain::Prepare, 1, d))), 0);
    assert_eq!(
        commits(&deliver(&mut r, vote(2, Domain::Prepare, 1, [9; 32]))),
        0
    );
    assert_eq!(commits(&deliver(&mut r, vote(2, Domain::Prepare, 1, d))), 1);
}

/// §4.2, committed-local(m, v, n, i): prepared and 2f+1 matching commits (its own among
/// them) — then, in order, the batch is handed to the host to execute.
#[test]
fn committed_local_needs_2f_plus_1_commits_then_executes_in_order() {
    let mut r = backup();
    let first = batch(1);
    let second = batch(10);
    let (d1, d2) = (first.digest(), second.digest());
    deliver(&mut r, proposal(1, first));
    deliver(&mut r, proposal(2, second));
    for (seq, d) in [(1, d1), (2, d2)] {
        deliver(&mut r, vote(2, Domain::Prepare, seq, d));
    }
    // Batch 2 commits first: nothing executes until batch 1 has too.
    assert!(executed(&mut r, vote(0, Domain::Commit, 2, d2)).is_empty());
    assert_eq!(
        executed(&mut r, vote(2, Domain::Commit, 2, d2)),
        Vec::<Seq>::new()
    );
    assert!(executed(&mut r, vote(0, Domain::Commit, 1, d1)).is_empty());
    assert_eq!(executed(&mut r, vote(2, Domain::Commit, 1, d1)), vec![1, 2]);
}

/// §4.2: votes must carry the view we are in and a sequence number inside the watermarks.
#[test]
fn votes_outside_the_view_or_the_watermarks_are_ignored() {
    let mut r = backup();
    let b = batch(1);
    let d = b.digest();
    deliver(&mut r, proposal(1, b));
    let mut other_view = vote(2, Domain::Prepare, 1, d);
    if let Message::Prepare(v) = &mut other_view {
        v.message.view = 3;
        v.signature = sim_signature(2, Domain::Prepare, &PrepareVote(&v.message).signed_bytes());
    }
    assert_eq!(commits(&deliver(&mut r, other_view)), 0);
    let high = config().watermark_window;
    assert_eq!(
        commits(&deliver(&mut r, vote(2, Domain::Prepare, high + 1, d))),
        0
    );
    assert_eq!(commits(&deliver(&mut r, vote(2, Domain::Prepare, 1, d))), 1);
}

fn checkpoint(from: ReplicaId, seq: Seq, root: Digest) -> Message {
    let c = Checkpoint {
        seq,
        state_root: root,
    };
    let signature = sim_signature(from, Domain::Checkpoint, &c.signed_bytes());
    Message::Checkpoint(Signed {
        from,
        message: c,
        signature,
    })
}

/// §4.3: a checkpoint becomes stable with 2f+1 matching (seq, state root) from distinct
/// replicas; the low watermark moves to it, and a replica that has not executed that far
/// fetches what it lacks (state transfer) from those that signed it.
#[test]
fn a_checkpoint_is_stable_with_2f_plus_1_matching_and_a_replica_behind_fetches() {
    let mut r = backup();
    let root = [5; 32];
    deliver(&mut r, checkpoint(0, 8, root));
    deliver(&mut r, checkpoint(2, 8, [6; 32]));
    deliver(&mut r, checkpoint(2, 8, root));
    assert_eq!(r.low_watermark(), 0, "two matching are not a quorum");
    let sent = deliver(&mut r, checkpoint(3, 8, root));
    assert_eq!(r.low_watermark(), 8);
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::Fetch { up_to: 8, .. })),
        "{sent:?}"
    );
}

/// §4.3: checkpoints only at multiples of K and above the low watermark; a forged one is
/// not counted.
#[test]
fn checkpoints_off_the_interval_or_forged_do_not_count() {
    let mut r = backup();
    let root = [5; 32];
    for from in [0, 2, 3] {
        deliver(&mut r, checkpoint(from, 7, root));
    }
    assert_eq!(r.low_watermark(), 0);
    let mut forged = checkpoint(3, 8, root);
    if let Message::Checkpoint(c) = &mut forged {
        c.signature[0] ^= 1;
    }
    deliver(&mut r, checkpoint(0, 8, root));
    deliver(&mut r, checkpoint(2, 8, root));
    deliver(&mut r, forged);
    assert_eq!(r.low_watermark(), 0);
    assert!(r.drops().get(&DropReason::BadSignature).is_some());
}

/// §4.5.2: a replica joins a view change when f+1 *other* replicas ask for a later view;
/// one is not enough (it could be the faulty one).
#[test]
fn a_view_change_is_joined_on_f_plus_1_others() {
    let mut r = backup();
    assert!(view_changes(&deliver(&mut r, view_change(2, 1, Vec::new()))).is_empty());
    assert_eq!(r.view(), 0);
    let sent = deliver(&mut r, view_change(3, 1, Vec::new()));
    assert_eq!(view_changes(&sent), vec![1]);
    // Replica 1 is view 1's primary: with 2f+1 view changes (its own among them) it sends
    // the new view and enters it (§4.4).
    assert!(sent.iter().any(|m| matches!(m, Message::NewView(_))));
    assert_eq!(r.view(), 1);
    assert!(!r.in_view_change());
}

fn suspect(from: ReplicaId) -> Message {
    Message::Suspect { from, view: 0 }
}

/// Issue 18 (`suspicion.rs`): a backup joins a suspicion of its primary that f+1 other
/// replicas hold (one of them is correct; one alone could be the faulty one), and leaves the
/// view once 2f+1, itself included, suspect it.
#[test]
fn a_backup_leaves_its_view_only_when_2f_plus_1_suspect_the_primary() {
    let mut r = backup();
    let sent = deliver(&mut r, suspect(2));
    assert!(suspicions(&sent).is_empty());
    assert!(view_changes(&sent).is_empty());
    let sent = deliver(&mut r, suspect(3));
    assert_eq!(suspicions(&sent), vec![0]);
    assert_eq!(view_changes(&sent), vec![1]);
}

/// Issue 18: a backup suspecting its primary with fewer than 2f+1 (cut off, paused, its clock
/// off) keeps its view and goes on preparing the primary's batches, so it is back in the
/// normal case as soon as the fault ends.
#[test]
fn a_backup_suspecting_without_a_quorum_keeps_its_view_and_votes() {
    let mut r = backup();
    let sent = deliver(&mut r, pre_prepare(0, 0, 1, batch(1), [7; 32]));
    assert_eq!(suspicions(&sent), vec![0]);
    let sent = deliver(&mut r, suspect(2));
    assert!(view_changes(&sent).is_empty());
    assert_eq!(r.view(), 0);
    assert!(!r.in_view_change());
    assert_eq!(prepares(&deliver(&mut r, proposal(2, batch(3)))).len(), 1);
}

/// Issue 18: another replica's suspicion lapses two request timeouts after it was last said,
/// so suspicions said at different times, each alone, never add up to a view change.
#[test]
fn suspicions_lapse_unless_said_again() {
    let mut r = backup();
    deliver(&mut r, pre_prepare(0, 0, 1, batch(1), [7; 32]));
    deliver(&mut r, suspect(2));
    let later = NOW + 3 * config().request_timeout_ms;
    let (sent, _) = drive_at(&mut r, suspect(3), later);
    assert!(view_changes(&sent).is_empty());
    assert_eq!(r.view(), 0);
    // Said again, replica 2's suspicion counts: 2f+1 suspect the primary.
    let (sent, _) = drive_at(&mut r, suspect(2), later + 1);
    assert_eq!(view_changes(&sent), vec![1]);
}

/// §4.4: a view change's prepared proofs must each hold the primary's pre-prepare and 2f
/// matching prepares from distinct backups; a view change with a short proof is invalid and
/// not counted toward f+1.
#[test]
fn a_view_change_with_a_short_prepared_proof_is_not_counted() {
    let mut r = backup();
    let b = batch(1);
    let d = b.digest();
    let Message::PrePrepare(pp) = proposal(1, b) else {
        unreachable!()
    };
    let Message::Prepare(one) = vote(2, Domain::Prepare, 1, d) else {
        unreachable!()
    };
    let short = PreparedProof {
        pre_prepare: pp.clone(),
        prepares: vec![one.clone()],
    };
    deliver(&mut r, view_change(2, 1, vec![short]));
    deliver(&mut r, view_change(3, 1, Vec::new()));
    assert_eq!(r.view(), 0, "an invalid view change was counted");
    let Message::Prepare(two) = vote(3, Domain::Prepare, 1, d) else {
        unreachable!()
    };
    let full = PreparedProof {
        pre_prepare: pp,
        prepares: vec![one, two],
    };
    let sent = deliver(&mut r, view_change(2, 1, vec![full]));
    assert_eq!(view_changes(&sent), vec![1]);
}

/// Castro–Liskov §4.5.2, with views beyond the lead kept as numbers only: a replica cut off
/// while the others changed views more than [`Config::MAX_VIEW_LEAD`] times joins them once
/// f + 1 other replicas ask for such a view (the smallest of theirs); one replica asking, or
/// the replica itself, is not enough. Before, such view changes were dropped unread and the
/// replica never rejoined (red team, second review of issue 14).
#[test]
fn a_replica_more_than_the_view_lead_behind_joins_f_plus_1_replicas_far_ahead() {
    let mut replica = fresh(3, config());
    replica.receive(view_change(1, 500, Vec::new()), 10);
    assert_eq!(replica.view(), 0, "one replica far ahead moved us");
    // A forged signature is not counted.
    let mut forged = view_change(2, 300, Vec::new());
    if let Message::ViewChange(vc) = &mut forged {
        vc.signature[0] ^= 1;
    }
    replica.receive(forged, 11);
    assert_eq!(replica.view(), 0, "an unsigned view change moved us");
    replica.receive(view_change(2, 300, Vec::new()), 12);
    assert_eq!(
        replica.view(),
        300,
        "f + 1 others far ahead: the smallest they ask"
    );
    assert!(replica.in_view_change());
}

/// Replica 1 restarted in view 1 (whose primary it is), having accepted `accepted` in it.
fn restarted_in_view_1(accepted: Option<Digest>) -> Replica {
    let mut durable = DurableState {
        view: 1,
        ..Default::default()
    };
    if let Some(digest) = accepted {
        durable.accepted.insert(1, (1, digest));
    }
    Replica::new(1, config(), Box::new(SimCrypto { id: 1 }), durable, 0)
}

/// Red team of the suspicion phase (issue 18): a primary that pre-prepared a batch in its view,
/// crashed before it prepared and restarted, never goes back into that view's change, whoever
/// asks: a second new view for the view could order another batch at the same sequence number
/// (before, a view change for its view from anyone took it back in).
#[test]
fn a_restarted_primary_that_pre_prepared_does_not_reenter_its_view() {
    let mut p = restarted_in_view_1(Some(batch(1).digest()));
    let sent = deliver(&mut p, Message::Suspect { from: 3, view: 0 });
    assert!(view_changes(&sent).is_empty());
    let mut sent = deliver(&mut p, view_change(3, 1, Vec::new()));
    assert!(!p.in_view_change());
    assert!(p.is_primary());
    // f+1 others cannot get into view 1, whose new view its primary lost: they count as
    // suspicions of it, and the primary moves on to view 2, never back into view 1's change.
    sent.extend(deliver(&mut p, view_change(0, 1, Vec::new())));
    assert_eq!(view_changes(&sent), vec![2], "re-entered view 1");
    assert!(
        !sent
            .iter()
            .any(|m| matches!(m, Message::NewView(nv) if nv.message.view == 1)),
        "a second new view for view 1"
    );
}

/// What the replica sent on `actions` (see [`perform`]).
fn sent_by(replica: &mut Replica, actions: Vec<Action>) -> Vec<Message> {
    perform(replica, actions).0
}

/// Red team, issue 18: restarted as primary, a replica proposes above every sequence number it
/// accepted a batch for in its view (before, from its ledger's height: a second batch at a
/// sequence number it had pre-prepared, equivocation by a correct primary).
#[test]
fn a_restarted_primary_proposes_above_what_it_accepted() {
    let mut p = restarted_in_view_1(Some(batch(1).digest()));
    let request = client_request([9; 32]);
    let actions = p.request(request, NOW);
    let mut sent = sent_by(&mut p, actions);
    let actions = p.tick(NOW + 1_000);
    sent.extend(sent_by(&mut p, actions));
    let proposed: Vec<Seq> = sent
        .iter()
        .filter_map(|m| match m {
            Message::PrePrepare(pp) => Some(pp.message.seq),
            _ => None,
        })
        .collect();
    assert_eq!(proposed, vec![2]);
}

/// Issue 18: a replica restarted in a view in which it accepted nothing may never have seen
/// that view installed: it resumes the view change that made it persist the view.
#[test]
fn a_replica_restarted_in_a_view_it_accepted_nothing_in_resumes_its_view_change() {
    let mut p = restarted_in_view_1(None);
    assert!(p.in_view_change());
    let actions = p.tick(NOW);
    let asked = view_changes(&sent_by(&mut p, actions));
    assert!(
        !asked.is_empty() && asked.iter().all(|v| *v == 1),
        "{asked:?}"
    );
}

/// Found by the fault harness (issue 18): view changes for a view still in flight when its new
/// view is installed (crossing it, or sent again) are not suspicions of that view. Counted as
/// such, they deposed each new primary at once, and the peers ran through three views in 50 ms.
#[test]
fn view_changes_crossing_the_new_view_do_not_depose_its_primary() {
    let mut r = backup();
    deliver(&mut r, view_change(2, 1, Vec::new()));
    deliver(&mut r, view_change(3, 1, Vec::new()));
    assert_eq!(r.view(), 1);
    assert!(!r.in_view_change() && r.is_primary());
    let mut sent = deliver(&mut r, view_change(0, 1, Vec::new()));
    sent.extend(deliver(&mut r, suspect_view(2, 1)));
    assert!(view_changes(&sent).is_empty(), "{:?}", view_changes(&sent));
    assert_eq!(r.view(), 1);
    assert!(!r.in_view_change());
}

fn suspect_view(from: ReplicaId, view: View) -> Message {
    Message::Suspect { from, view }
}

/// Red team, second round (issue 18): a primary restarted after a stable checkpoint collected
/// every batch it accepted in its view still knows the view was installed (it is persisted),
/// and keeps it instead of leaving it.
#[test]
fn a_primary_restarted_after_its_checkpoint_keeps_its_view() {
    let durable = DurableState {
        view: 1,
        installed_view: Some(1),
        ..Default::default()
    };
    let p = Replica::new(1, config(), Box::new(SimCrypto { id: 1 }), durable, 0);
    assert!(!p.in_view_change(), "{p}");
    assert!(p.is_primary());
}

/// Red team, third round (issue 18): a primary sends its new view again to a replica asking
/// for its view at most once per request timeout after the first, doubling each time, so a
/// few hundred bytes of view change cannot make it send a window of batches every timeout.
#[test]
fn a_primary_resends_its_new_view_with_a_growing_wait() {
    let mut r = backup();
    deliver(&mut r, view_change(2, 1, Vec::new()));
    deliver(&mut r, view_change(3, 1, Vec::new()));
    assert!(r.is_primary() && !r.in_view_change());
    let step = config().request_timeout_ms + 1;
    let mut resent = 0;
    for k in 1..=10u64 {
        let (sent, _) = drive_at(&mut r, view_change(0, 1, Vec::new()), NOW + k * step);
        resent += sent
            .iter()
            .filter(|m| matches!(m, Message::NewView(_)))
            .count();
    }
    assert_eq!(resent, 4, "sent at 1, 2, 4 and 8 timeouts");
}

/// Red team, third round: a persisted new view that is not this primary's own (a flipped bit
/// on its disk) is dropped at start, so a replica asking for the view counts as a suspicion
/// of it instead of waiting for a new view every receiver would refuse.
#[test]
fn a_persisted_new_view_not_signed_by_us_is_dropped() {
    let nv = NewView {
        view: 1,
        view_changes: Vec::new(),
        pre_prepares: Vec::new(),
    };
    let signature = sim_signature(2, Domain::NewView, &nv.signed_bytes());
    let durable = DurableState {
        view: 1,
        installed_view: Some(1),
        new_view: Some(Signed {
            from: 2,
            message: nv,
            signature,
        }),
        ..Default::default()
    };
    let mut p = Replica::new(1, config(), Box::new(SimCrypto { id: 1 }), durable, 0);
    assert!(p.durable_state().new_view.is_none());
    deliver(&mut p, view_change(3, 1, Vec::new()));
    let sent = deliver(&mut p, view_change(0, 1, Vec::new()));
    assert_eq!(view_changes(&sent), vec![2]);
    // Leaving a view, a primary drops the new view it kept for it.
    assert!(p.durable_state().new_view.is_none());
}

/// The primary of view 0, with `n` replicas, ticking every request timeout from `NOW` for
/// `timeouts` timeouts while each of `left_out` says its view change for `view` again;
/// returns the timeouts at which the primary began to step down (suspected its own view).
fn step_downs(n: u32, left_out: &[ReplicaId], view: View, timeouts: u64) -> Vec<u64> {
    let mut config = config();
    config.n = n;
    let timeout = config.request_timeout_ms;
    let mut primary = fresh(0, config);
    let mut began = Vec::new();
    for k in 0..=timeouts {
        let now = NOW + k * timeout;
        let before = primary.stepping_down();
        let mut sent = Vec::new();
        for from in left_out {
            sent.extend(drive_at(&mut primary, view_change(*from, view, Vec::new()), now).0);
        }
        let ticked = primary.tick(now);
        sent.extend(perform(&mut primary, ticked).0);
        if primary.stepping_down() {
            assert!(
                suspicions(&sent).contains(&0) || before,
                "a step-down says so"
            );
            assert!(
                !primary.suspects_primary(),
                "a step-down is not a lone suspicion"
            );
            if !before {
                began.push(k);
            }
        } else {
            assert!(
                suspicions(&sent).is_empty(),
                "a suspicion said at timeout {k} outside a step-down"
            );
        }
    }
    began
}

fn primary_steps_down_after(n: u32, left_out: &[ReplicaId], timeouts: u64) -> Option<u64> {
    step_downs(n, left_out, 1, timeouts).first().copied()
}

/// Issue 18: a primary seeing f replicas in view changes past its view (left out, bound by
/// them, while the others go on) suspects itself after its patience, so the network changes
/// view and takes them back; not before, and not for fewer than f (a spare fault is left).
#[test]
fn a_primary_steps_down_after_its_patience_for_f_replicas_left_out() {
    assert_eq!(
        primary_steps_down_after(4, &[3], 40),
        Some(STEP_DOWN_PATIENCE_TIMEOUTS)
    );
    assert_eq!(primary_steps_down_after(7, &[5], 40), None);
    assert_eq!(
        primary_steps_down_after(7, &[5, 6], 40),
        Some(STEP_DOWN_PATIENCE_TIMEOUTS)
    );
}

/// A replica that said its view change once and no more (it rejoined, or its view change was
/// a stray copy) is not left out: the primary does not step down for it.
#[test]
fn a_view_change_not_said_again_does_not_make_the_primary_step_down() {
    let mut primary = fresh(0, config());
    let timeout = config().request_timeout_ms;
    deliver(&mut primary, view_change(3, 1, Vec::new()));
    for k in 1..=4 * STEP_DOWN_PATIENCE_TIMEOUTS {
        let ticked = primary.tick(NOW + k * timeout);
        let (sent, _) = perform(&mut primary, ticked);
        assert!(suspicions(&sent).is_empty(), "stepped down at timeout {k}");
    }
}

/// Red team of the step-down: a faulty replica sending its view change to the primary alone
/// makes it step down, but the backups never join, and the step-down ends after
/// [`STEP_DOWN_HOLD_TIMEOUTS`] (else the primary's standing suspicion would later join one
/// faulty replica's to depose it); the next comes a doubled patience later, up to the longest.
#[test]
fn a_step_down_no_one_joins_ends_and_the_next_waits_longer() {
    let p = STEP_DOWN_PATIENCE_TIMEOUTS;
    let began = step_downs(4, &[3], 1, 8 * p);
    assert_eq!(
        began,
        vec![p, 3 * p, 7 * p],
        "patience 8, 16, 32 request timeouts"
    );
    assert_eq!(STEP_DOWN_PATIENCE_MAX_TIMEOUTS, 4 * p);
}

/// Red team: a replica left out far ahead (beyond the view lead) says its view change again
/// and still counts; the primary steps down for it too.
#[test]
fn a_replica_left_out_far_ahead_still_counts() {
    assert_eq!(
        step_downs(4, &[3], 1 + Config::MAX_VIEW_LEAD + 10, 20).first(),
        Some(&STEP_DOWN_PATIENCE_TIMEOUTS)
    );
}

/// Red team: an idle primary (no request pending, so no other timer) still steps down: the
/// view change of a replica left out sets a timer for when its patience runs out.
#[test]
fn an_idle_primary_sets_a_timer_to_step_down() {
    let mut primary = fresh(0, config());
    let actions = primary.receive(view_change(3, 1, Vec::new()), NOW);
    let timer = actions.iter().find_map(|a| match a {
        Action::SetTimer { at_ms } => Some(*at_ms),
        _ => None,
    });
    assert_eq!(
        timer,
        Some(NOW + STEP_DOWN_PATIENCE_TIMEOUTS * config().request_timeout_ms)
    );
}

/// Red team, second review: at seven peers one replica left out (fewer than f) once made the
/// end of its patience the primary's earliest timer, a deadline that passed without a
/// step-down and, already set, was never set again: the primary's batch timer stopped with
/// it. A request after that must still set a timer.
#[test]
fn one_replica_left_out_at_seven_does_not_stop_the_primarys_timers() {
    let mut config = config();
    config.n = 7;
    let timeout = config.request_timeout_ms;
    let mut primary = fresh(0, config);
    let end = NOW + STEP_DOWN_PATIENCE_TIMEOUTS * timeout;
    for k in 0..=STEP_DOWN_PATIENCE_TIMEOUTS {
        let now = NOW + k * timeout;
        drive_at(&mut primary, view_change(3, 1, Vec::new()), now);
        let ticked = primary.tick(now);
        perform(&mut primary, ticked);
    }
    assert!(!primary.stepping_down(), "one left out of seven is not f");
    let tx_id = [9u8; 32];
    let actions = primary.request(client_request(tx_id), end + 1);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SetTimer { at_ms } if *at_ms > end)),
        "no timer set for the batch: {actions:?}"
    );
}

/// Issue 18: a replica whose wall clock was ahead for a moment (a probe, an NTP step back)
/// judged every later batch against the highest time it had seen: for as long as the clock
/// had been ahead (100 s in the fault harness), it refused every other primary's batches
/// as skewed and suspected each new primary at once. Consensus time is judged against the
/// clock as it reads now.
#[test]
fn a_clock_set_back_does_not_make_a_backup_refuse_batches() {
    let mut r = backup();
    let ticked = r.tick(NOW + 100_000);
    perform(&mut r, ticked);
    let sent = deliver(&mut r, proposal(1, batch(1)));
    assert_eq!(prepares(&sent).len(), 1, "{sent:?}");
    assert!(suspicions(&sent).is_empty(), "{sent:?}");
}

/// After the wall clock is set back, timers run on: a request pending since before the step
/// back times out one request timeout later, not once the clock has caught up.
#[test]
fn a_clock_set_back_keeps_the_timers_running() {
    let timeout = config().request_timeout_ms;
    let mut r = backup();
    let tx_id = [7u8; 32];
    let actions = r.request(client_request(tx_id), NOW + 100_000);
    perform(&mut r, actions);
    let ticked = r.tick(NOW);
    assert!(suspicions(&perform(&mut r, ticked).0).is_empty());
    let ticked = r.tick(NOW + timeout);
    assert_eq!(suspicions(&perform(&mut r, ticked).0), vec![0]);
}

/// A primary whose clock was set back stamps its batches with the clock as it reads now (or
/// the latest batch's time, if later), not with the highest time it ever saw: the backups
/// would refuse those as skewed.
#[test]
fn a_primary_whose_clock_was_set_back_stamps_batches_near_its_clock() {
    let mut primary = fresh(0, config());
    let ticked = primary.tick(NOW + 100_000);
    perform(&mut primary, ticked);
    let mut stamps = Vec::new();
    for k in 0..3u64 {
        let tx_id = [k as u8 + 1; 32];
        let now = NOW + k * 1_000;
        let actions = primary.request(client_request(tx_id), now);
        let (mut sent, _) = perform(&mut primary, actions);
        let ticked = primary.tick(now + config().batch_timeout_ms);
        sent.extend(perform(&mut primary, ticked).0);
        stamps.extend(sent.iter().filter_map(|m| match m {
            Message::PrePrepare(pp) => Some(pp.message.batch.timestamp_ms),
            _ => None,
        }));
    }
    assert_eq!(stamps.len(), 3, "{stamps:?}");
    for (k, stamp) in stamps.iter().enumerate() {
        assert!(
            stamp.abs_diff(NOW + k as u64 * 1_000) <= config().max_clock_skew_ms,
            "batch {k} stamped {stamp}, its clock read {}",
            NOW + k as u64 * 1_000
        );
    }
}

/// Red team: a batch committed while the clocks were ahead leaves consensus time ahead of
/// them once they are set back. Every primary then stamps that time (never less); backups
/// judging it against their clock alone refused it, and the network changed view after view
/// until the clocks caught up. Consensus time pauses instead: that stamp is accepted, and no
/// more than it.
#[test]
fn consensus_time_ahead_of_a_clock_set_back_pauses_instead_of_stalling() {
    let ahead = NOW + 100_000;
    let committed_ahead = || {
        Replica::new(
            1,
            config(),
            Box::new(SimCrypto { id: 1 }),
            DurableState {
                last_timestamp_ms: ahead,
                ..DurableState::default()
            },
            0,
        )
    };
    let mut r = committed_ahead();
    let mut paused = batch(1);
    paused.timestamp_ms = ahead;
    let sent = deliver(&mut r, proposal(1, paused));
    assert_eq!(prepares(&sent).len(), 1, "{sent:?}");
    assert!(suspicions(&sent).is_empty(), "{sent:?}");

    let mut r = committed_ahead();
    let mut further = batch(1);
    further.timestamp_ms = ahead + config().max_clock_skew_ms;
    let sent = deliver(&mut r, proposal(1, further));
    assert!(prepares(&sent).is_empty(), "{sent:?}");
    assert_eq!(suspicions(&sent), vec![0]);
}

/// A primary holding consensus time back (a stamp more than the skew behind our clock) is
/// still refused.
#[test]
fn a_pre_prepare_stamped_far_behind_our_clock_is_suspected() {
    let mut r = backup();
    let mut b = batch(1);
    b.timestamp_ms = NOW - config().max_clock_skew_ms - 1;
    let sent = deliver(&mut r, proposal(1, b));
    assert!(prepares(&sent).is_empty());
    assert_eq!(suspicions(&sent), vec![0]);
}

/// docs/adr/0011 §5: a replica set that starts after a reconfiguration at batch 40 orders
/// from 41 (its window starts at the base), executes in order from there, and refuses a
/// checkpoint proof below its base (an earlier replica set's) or at its base with another
/// digest than the one every member executed.
#[test]
fn a_replica_set_started_after_a_reconfiguration_orders_from_its_base() {
    let mut config = config();
    config.epoch_base = 40;
    config.epoch_base_digest = [7; 32];
    sim::set_epoch(&config);
    let mut r = Replica::new(
        1,
        config.clone(),
        Box::new(SimCrypto { id: 1 }),
        DurableState::default(),
        40,
    );
    assert_eq!(r.low_watermark(), 40);
    assert!(prepares(&deliver(&mut r, proposal(40, batch(1)))).is_empty());
    let sent = deliver(&mut r, proposal(41, batch(3)));
    assert_eq!(prepares(&sent).len(), 1, "{sent:?}");
    let digest = batch(3).digest();
    for from in [0, 2, 3] {
        deliver(&mut r, vote(from, Domain::Prepare, 41, digest));
    }
    let mut executed_seqs = Vec::new();
    for from in [0, 2, 3] {
        executed_seqs.extend(executed(&mut r, vote(from, Domain::Commit, 41, digest)));
    }
    assert_eq!(executed_seqs, vec![41]);
    // A view change naming the genesis as its checkpoint (an earlier set's) is not counted.
    for from in [0, 2, 3] {
        let sent = deliver(&mut r, view_change(from, 1, Vec::new()));
        assert!(view_changes(&sent).is_empty(), "{sent:?}");
    }
    sim::set_epoch(&self::config());
}

/// Red team: the old replica set's votes must not count in the new one, even where a peer
/// keeps its key and its id (growing 4 → 5 keeps ids 0–3). A commit certificate signed
/// by the genesis set for batch 41 does not certify batch 41 for the set that starts at 40.
#[test]
fn an_earlier_replica_sets_commit_certificate_does_not_count_in_the_next() {
    let genesis_set = config();
    sim::set_epoch(&genesis_set);
    let digest = batch(3).digest();
    let commits: Vec<Signed<Vote>> = [0, 1, 2, 3]
        .into_iter()
        .map(|from| {
            let vote = Vote {
                view: 0,
                seq: 41,
                digest,
            };
            let signature = sim_signature(from, Domain::Commit, &CommitVote(&vote).signed_bytes());
            Signed {
                from,
                message: vote,
                signature,
            }
        })
        .collect();
    let verify = |items: &[(ReplicaId, Domain, Vec<u8>, &[u8])]| {
        items.iter().all(|(from, domain, bytes, sig)| {
            SimCrypto { id: *from }.verify(*from, *domain, bytes, sig)
        })
    };
    assert_eq!(
        check_commit_certificate(&genesis_set, 41, &digest, &commits, verify),
        Ok(())
    );
    let mut grown = config();
    grown.n = 5;
    grown.epoch_base = 40;
    grown.epoch_base_digest = [7; 32];
    assert_eq!(
        check_commit_certificate(&grown, 41, &digest, &commits, verify),
        Err(CertificateError::BadSignature)
    );
}

/// Red team: a host restarting into a new replica set with the durable state of the old
/// one (its view, its accepted and committed batches) must not carry them over: the new
/// set's replica starts at its base in view 0, with nothing to execute.
#[test]
fn durable_state_of_an_earlier_replica_set_is_not_carried_over() {
    let mut config = config();
    config.epoch_base = 40;
    config.epoch_base_digest = [7; 32];
    config.epoch_base_time_ms = NOW;
    let old = DurableState {
        view: 7,
        stable: CheckpointProof {
            seq: 32,
            state_root: [1; 32],
            signatures: Vec::new(),
        },
        ..DurableState::default()
    };
    sim::set_epoch(&config);
    let r = Replica::new(1, config.clone(), Box::new(SimCrypto { id: 1 }), old, 40);
    assert_eq!(r.view(), 0);
    assert_eq!(r.low_watermark(), 40);
    assert_eq!(r.durable_state().last_timestamp_ms, NOW);
    sim::set_epoch(&self::config());
}

/// Found by the 1,000-cycle fault run (issue 18, episode 24): a peer started with an empty
/// ledger took part in the live view while it fetched the blocks below it, so it held a
/// long run of committed batches above a gap. The fetch that closed the gap dispatched the
/// whole run in one turn, and the trim of the committed tail then dropped batches the host
/// had not executed yet: the host found no commit certificate for them and stopped. Every
/// batch handed over must still be held when the host executes it, in order; above a gap
/// a replica keeps at most `retain_committed` batches and fetches the others.
#[test]
fn a_replica_catching_up_keeps_every_dispatched_batch_until_it_is_executed() {
    let mut config = config();
    config.retain_committed = config.watermark_window;
    let kept = config.retain_committed;
    let mut r = fresh(1, config.clone());
    let root = [5; 32];
    let last = 4 * config.watermark_window;
    let mut fetched_up_to = 0;
    // Batch 1 is missed; 2..=last commit live while the others' checkpoints move the window.
    for seq in 2..=last {
        let b = batch(seq * 10);
        let d = b.digest();
        for message in [
            proposal(seq, b),
            vote(2, Domain::Prepare, seq, d),
            vote(0, Domain::Commit, seq, d),
            vote(2, Domain::Commit, seq, d),
        ] {
            let (sent, executed) = drive(&mut r, message);
            assert!(executed.is_empty(), "batch 1 is missing");
            for m in sent {
                if let Message::Fetch { up_to, .. } = m {
                    fetched_up_to = fetched_up_to.max(up_to);
                }
            }
        }
        if seq.is_multiple_of(config.checkpoint_interval) {
            for from in [0, 2, 3] {
                deliver(&mut r, checkpoint(from, seq, root));
            }
        }
    }
    assert_eq!(r.low_watermark(), last);
    // State transfer brings batch 1 with its commit certificate.
    let first = batch(10);
    let certificate = (0..3)
        .map(|from| match vote(from, Domain::Commit, 1, first.digest()) {
            Message::Commit(c) => c,
            _ => unreachable!("a commit vote"),
        })
        .collect();
    let reply = Message::FetchReply {
        batches: vec![CommittedBatch {
            seq: 1,
            batch: first,
            commits: certificate,
        }],
        checkpoint: CheckpointProof::default(),
    };
    // The host, as the peer's driver: each batch's certificate is read when it executes.
    let mut actions = r.receive(reply, NOW);
    let mut done = Vec::new();
    while !actions.is_empty() {
        let mut next = Vec::new();
        for action in actions {
            match action {
                Action::Persist { token } => next.extend(r.persisted(token)),
                Action::Execute { seq, .. } => {
                    assert!(
                        r.durable_state().committed.contains_key(&seq),
                        "batch {seq} was dispatched without its commits"
                    );
                    done.push(seq);
                    next.extend(r.executed(seq, root));
                }
                _ => {}
            }
        }
        actions = next;
    }
    assert_eq!(done, (1..=kept).collect::<Vec<_>>());
    assert!(fetched_up_to >= last, "what it did not keep it fetches");
    assert!(
        r.durable_state().committed.len() as u64 <= kept + 1,
        "once executed, only the tail is kept"
    );
}

/// docs/adr/0011 §2: when its replica set ends at a batch, a replica hands over every
/// request it has not executed — pending, pre-prepared, or committed above a gap — once
/// each, so the next set orders them; the requests of the batch that ended the set (and
/// of those before) are not handed over. As the peer's driver does it: the host executed
/// batch 1, which ended the set, and the core was not told.
#[test]
fn a_replica_set_that_ends_hands_over_what_it_has_not_executed() {
    let mut r = backup();
    let first = batch(1);
    let d1 = first.digest();
    deliver(&mut r, proposal(1, first.clone()));
    for message in [
        vote(2, Domain::Prepare, 1, d1),
        vote(0, Domain::Commit, 1, d1),
        vote(2, Domain::Commit, 1, d1),
    ] {
        drive(&mut r, message);
    }
    // Batch 1 dispatched (it ends the set); batch 3 pre-prepared above a gap; one request
    // only pending; and a client submitting one of batch 1's requests again.
    r.request(first.requests[1].clone(), NOW);
    let third = batch(30);
    deliver(&mut r, proposal(3, third.clone()));
    let pending = client_request([9; 32]);
    r.request(pending.clone(), NOW);
    // The same request again, and one of batch 3 submitted by a client too.
    r.request(pending.clone(), NOW);
    r.request(third.requests[0].clone(), NOW);
    let handed: Vec<TxId> = r.unexecuted_requests(1).iter().map(|q| q.tx_id).collect();
    let mut expected = vec![pending.tx_id];
    expected.extend(third.requests.iter().map(|q| q.tx_id));
    let mut sorted = handed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), handed.len(), "each once: {handed:?}");
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want);
    assert!(
        first.requests.iter().all(|q| !handed.contains(&q.tx_id)),
        "the ending batch's requests are not handed over: {handed:?}"
    );
}
