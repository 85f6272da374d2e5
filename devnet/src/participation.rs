//! Which peers take part in consensus right now, and how many more may fail before the
//! network stops committing (issue 18 item 5): what `medledger network status` tells an
//! operator after a fault. PBFT commits with a quorum of ⌈(n + f + 1)/2⌉ of n peers, f =
//! ⌊(n − 1)/3⌋ (2f + 1 of n = 3f + 1, Castro–Liskov §2);
//! a peer takes part when it answers, is in the view most peers are in and not changing it,
//! is not far behind the highest peer, does not suspect the primary (alone: it is cut off
//! from the others; with more than f: the primary gets nothing committed, and a view change
//! follows), and its clock agrees with the others' within the network's allowed skew. (A peer's offset from the last pre-prepare's batch time is not
//! a reason: a batch delayed in the network looks the same as a clock behind.)

use serde::Serialize;

use medledger_proto::v1;

/// A peer further behind the highest than this many blocks is catching up, not taking part.
pub const MAX_LAG_BLOCKS: u64 = 128;

/// The peers' participation, from their `GetStatus` answers.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Participation {
    pub n: usize,
    pub f: usize,
    /// The names of the peers taking part.
    pub taking_part: Vec<String>,
    /// The peers not taking part, each with why (words for the operator).
    pub out: Vec<(String, String)>,
}

impl Participation {
    /// The peers it takes to commit: ⌈(n + f + 1)/2⌉, as `medledger_pbft::Config::quorum`
    /// (2f + 1 when n = 3f + 1).
    pub fn quorum(&self) -> usize {
        self.n.saturating_add(self.f).saturating_add(1).div_ceil(2)
    }

    /// How many more peers may fail with the network still committing (a quorum needed);
    /// `None` when it cannot commit now.
    pub fn more_may_fail(&self) -> Option<usize> {
        self.taking_part.len().checked_sub(self.quorum())
    }

    /// Judges each peer (`names[i]` answered `statuses[i]`, `None`: no answer) against the
    /// others; `max_clock_skew_ms` is the network's allowed skew.
    pub fn judge(
        names: &[String],
        statuses: &[Option<v1::GetStatusResponse>],
        max_clock_skew_ms: u64,
    ) -> Participation {
        let n = names.len();
        let f = n.saturating_sub(1) / 3;
        let answering: Vec<&v1::GetStatusResponse> = statuses.iter().flatten().collect();
        // The (f+1)-th highest height: at least one correct peer reached it, so a liar
        // claiming a height no peer has makes no honest peer look behind.
        let mut heights: Vec<u64> = answering.iter().map(|s| s.height).collect();
        heights.sort_unstable_by(|a, b| b.cmp(a));
        let highest = heights.get(f).or(heights.last()).copied().unwrap_or(0);
        // A view counts as the network's only when f+1 peers report it (one of them correct).
        let view = most_common(answering.iter().map(|s| s.view))
            .filter(|(_, count)| *count > f)
            .map(|(v, _)| v);
        let clock = median(answering.iter().map(|s| s.clock_ms).collect());
        // At most f peers suspecting the primary: they, not the primary, are cut off; more,
        // and the primary gets nothing committed (down, cut off, or a split): a view change
        // follows if a quorum of peers can reach each other.
        let suspecting = answering.iter().filter(|s| s.suspects_primary).count();
        let skew = i64::try_from(max_clock_skew_ms).unwrap_or(i64::MAX);
        let mut taking_part = Vec::new();
        let mut out = Vec::new();
        for (name, status) in names.iter().zip(statuses) {
            let why = match status {
                None => Some("not answering".to_string()),
                Some(s) => {
                    let behind = highest.saturating_sub(s.height);
                    let off = s.clock_ms.saturating_sub(clock);
                    if off.saturating_abs() > skew {
                        Some(format!(
                            "its clock is {off} ms from the other peers' (allowed ±{skew} ms): \
                             check its time (NTP)"
                        ))
                    } else if s.in_view_change {
                        Some(format!("changing view (from view {})", s.view))
                    } else if let Some(view) = view.filter(|v| *v != s.view) {
                        Some(format!("in view {}, most peers in view {view}", s.view))
                    } else if s.suspects_primary {
                        let primary = names
                            .get(s.primary as usize)
                            .cloned()
                            .unwrap_or_else(|| format!("replica {}", s.primary));
                        Some(if suspecting <= f {
                            format!(
                                "gets no batches through from the primary ({primary}) while the \
                                 others do: check its links to the other peers"
                            )
                        } else {
                            format!(
                                "{suspecting} peers suspect the primary ({primary}): a view \
                                 change follows once a quorum of peers reach each other"
                            )
                        })
                    } else if behind > MAX_LAG_BLOCKS {
                        Some(format!("{behind} blocks behind, catching up"))
                    } else {
                        None
                    }
                }
            };
            match why {
                None => taking_part.push(name.clone()),
                Some(why) => out.push((name.clone(), why)),
            }
        }
        Participation {
            n,
            f,
            taking_part,
            out,
        }
    }

    /// One paragraph for the operator.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "Consensus: {} of {} peers take part",
            self.taking_part.len(),
            self.n
        );
        if !self.out.is_empty() {
            let why: Vec<String> = self.out.iter().map(|(p, w)| format!("{p}: {w}")).collect();
            text.push_str(&format!(" ({})", why.join("; ")));
        }
        let quorum = self.quorum();
        match self.more_may_fail() {
            Some(more) => text.push_str(&format!(
                ". It commits with {quorum}: {more} more may fail now (and at most {} may lie).",
                self.f
            )),
            None => text.push_str(&format!(
                ". It cannot commit: it needs {quorum}; {} more must come back.",
                quorum - self.taking_part.len()
            )),
        }
        text
    }
}

/// The most frequent value and its count (ties: the lowest value).
fn most_common(values: impl Iterator<Item = u64>) -> Option<(u64, usize)> {
    let mut counts = std::collections::BTreeMap::<u64, usize>::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(v, c)| (*c, std::cmp::Reverse(*v)))
}

fn median(mut values: Vec<i64>) -> i64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(height: u64, view: u64, clock_ms: i64) -> Option<v1::GetStatusResponse> {
        Some(v1::GetStatusResponse {
            height,
            view,
            clock_ms,
            ..Default::default()
        })
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("peer{i}")).collect()
    }

    #[test]
    fn four_healthy_peers_may_lose_one() {
        let p = Participation::judge(
            &names(4),
            &[
                status(10, 2, 1_000),
                status(10, 2, 1_500),
                status(9, 2, 900),
                status(10, 2, 2_000),
            ],
            2_000,
        );
        assert_eq!(p.taking_part.len(), 4);
        assert_eq!(p.more_may_fail(), Some(1));
        assert!(
            p.describe().contains("1 more may fail now"),
            "{}",
            p.describe()
        );
    }

    /// Issue 18: a peer cut off from the others no longer changes view alone (it suspects the
    /// primary and keeps its view), so status names it by its suspicion; when more than f
    /// suspect, nothing commits in the view (a 2–2 split showed "4 of 4 take part" before).
    #[test]
    fn a_peer_suspecting_the_primary_alone_is_named() {
        let suspecting = |height| {
            let mut s = status(height, 1, 0);
            s.as_mut().unwrap().suspects_primary = true;
            s.as_mut().unwrap().primary = 1;
            s
        };
        let p = Participation::judge(
            &names(4),
            &[
                status(10, 1, 0),
                status(10, 1, 0),
                status(10, 1, 0),
                suspecting(9),
            ],
            2_000,
        );
        assert_eq!(p.out.len(), 1, "{}", p.describe());
        assert_eq!(p.out[0].0, "peer3");
        assert!(
            p.out[0]
                .1
                .contains("no batches through from the primary (peer1)"),
            "{}",
            p.describe()
        );
        let p = Participation::judge(
            &names(4),
            &[
                status(10, 1, 0),
                suspecting(10),
                status(10, 1, 0),
                suspecting(9),
            ],
            2_000,
        );
        assert_eq!(p.more_may_fail(), None, "{}", p.describe());
        assert!(
            p.out[0]
                .1
                .contains("2 peers suspect the primary (peer1): a view change follows"),
            "{}",
            p.describe()
        );
    }

    #[test]
    fn a_liar_claiming_a_height_or_a_view_no_one_has_makes_no_honest_peer_look_out() {
        let p = Participation::judge(
            &names(4),
            &[
                status(u64::MAX, u64::MAX, 1_000),
                status(10, 2, 1_000),
                None,
                status(9, 3, 1_000),
            ],
            2_000,
        );
        assert_eq!(p.taking_part.len(), 3, "{}", p.describe());
    }

    #[test]
    fn each_reason_to_sit_out_is_named() {
        let mut changing = status(10, 2, 0);
        changing.as_mut().unwrap().in_view_change = true;
        // A late batch is no reason to sit out.
        let mut late = status(500, 3, 0);
        late.as_mut().unwrap().clock_offset_from_primary_ms = -60_000;
        let p = Participation::judge(
            &names(7),
            &[
                status(500, 3, 0),
                None,
                status(500, 3, 61_000),
                changing,
                status(500, 1, 0),
                status(500 - MAX_LAG_BLOCKS - 1, 3, 0),
                late,
            ],
            2_000,
        );
        assert_eq!(
            p.taking_part,
            vec!["peer0".to_string(), "peer6".to_string()]
        );
        let why: Vec<&str> = p.out.iter().map(|(_, w)| w.as_str()).collect();
        assert!(why[0].contains("not answering"), "{why:?}");
        assert!(why[1].contains("clock is 61000 ms"), "{why:?}");
        assert!(why[2].contains("changing view"), "{why:?}");
        assert!(
            why[3].contains("in view 1, most peers in view 3"),
            "{why:?}"
        );
        assert!(why[4].contains("129 blocks behind"), "{why:?}");
        assert_eq!(p.more_may_fail(), None);
        assert!(
            p.describe()
                .contains("cannot commit: it needs 5; 3 more must come back"),
            "{}",
            p.describe()
        );
    }
}
