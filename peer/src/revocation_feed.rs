//! Revocations reach the ledger by themselves (issue 19 item 1). Every peer follows the
//! membership CA's numbered revocation records (`Membership.ListRevocations`, over mutual
//! TLS with the peer's own certificate) and orders each record the ledger lacks, in
//! sequence, exactly as a client could with `medledger admin sync-revocations`. No operator
//! step is needed: a revocation at the CA is on the ledger within one poll
//! ([`POLL_INTERVAL`]) and one commit, and from that block it holds for every peer, the
//! gateway and every TLS link.
//!
//! Trust: nothing the CA answers is ordered unchecked. A record is submitted only when the
//! validator accepts it as a submission (signed by the genesis root, the next sequence
//! number, docs/membership.md "Revocation"), and execution checks it again. An unreachable,
//! slow or lying CA endpoint can delay a revocation, never forge one; every peer follows, so
//! one peer that does not (faulty, or cut off from the CA) delays nothing. The peers'
//! copies of a record are the same bytes, so one request id: it commits once, whoever
//! brings it first.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use medledger_pbft as pbft;
use medledger_proto::v1;
use medledger_proto::v1::membership_client::MembershipClient;
use prost::Message;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::driver::Shared;
use crate::execute::CommittedFacts;
use crate::inputs::{Inputs, Outcome};
use crate::ledger::Ledger;
use crate::validate::{Checked, Validator};

/// How often a peer asks the CA for revocations the ledger lacks: the longest a revocation
/// waits at the CA before a peer orders it.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Records asked for per call (each a few hundred bytes; the CA caps its pages too).
pub const RECORDS_PER_CALL: u32 = 16;
/// Longest wait for a call to the CA, and for one record to commit.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the feed needs of the peer: who it is at the CA, and where it orders records.
pub struct RevocationFeed {
    pub ca: Arc<crate::ca_link::CaLink>,
    pub ledger: Arc<Ledger>,
    pub validator: Arc<Validator>,
    pub shared: Arc<Shared>,
    pub inputs: Inputs,
}

/// Why one round of following the CA stopped short.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the CA at {0} cannot be reached: {1}")]
    Unreachable(String, String),
    #[error("the CA refused the call: {0}")]
    Refused(tonic::Status),
    #[error("the CA served revocation #{sequence}, which this peer will not order: {why}")]
    BadRecord { sequence: u64, why: String },
    #[error("revocation #{0} was not ordered in time: {1}")]
    NotOrdered(u64, &'static str),
    #[error("the CA's answer does not follow the ledger's revocation #{since}: {why}")]
    OutOfSequence { since: u64, why: String },
    #[error(
        "the CA's last revocation is #{ca}, the ledger's #{ledger}: the CA is behind the \
         ledger (restored from an old backup?) and revocations it numbers again will not \
         reach the ledger"
    )]
    CaBehind { ca: u64, ledger: u64 },
}

/// Checks a page of the CA's answer against the ledger's last sequence `since`: each record
/// must decode and carry the next number, `since + 1`, `since + 2`, …, with no gap,
/// repeat or going back; and the CA's latest number must not be behind the ledger's. So a
/// corrupt, replayed or lagging answer is an error (logged, retried after a pause), never
/// a reason to ask again at once. Returns each record with its sequence number.
pub fn triage(
    since: u64,
    latest_sequence: u64,
    records: Vec<v1::SignedRevocationRecord>,
) -> Result<Vec<(u64, v1::SignedRevocationRecord)>, FeedError> {
    if latest_sequence < since {
        return Err(FeedError::CaBehind {
            ca: latest_sequence,
            ledger: since,
        });
    }
    let mut expected = since;
    let mut out = Vec::with_capacity(records.len());
    for signed in records.into_iter().take(RECORDS_PER_CALL as usize) {
        expected = expected
            .checked_add(1)
            .ok_or_else(|| FeedError::OutOfSequence {
                since,
                why: "sequence numbers are exhausted".into(),
            })?;
        let sequence = v1::RevocationRecord::decode(signed.record.as_slice())
            .map_err(|e| FeedError::OutOfSequence {
                since,
                why: format!("a record does not decode: {e}"),
            })?
            .sequence;
        if sequence != expected {
            return Err(FeedError::OutOfSequence {
                since,
                why: format!("record #{sequence} where #{expected} was due"),
            });
        }
        out.push((sequence, signed));
    }
    Ok(out)
}

/// Most revocation records [`signed_serials`] reads (a CA answering for ever is cut off).
const MAX_SIGNED_SERIALS: usize = 1 << 20;

/// Every serial the CA's revocation records name, each checked against the CA root's key
/// `root_key`, paged from the first record on: what a joining peer believes about
/// revocation before it lets a named peer confirm the block it reached (docs/adr/0011 §6).
/// The blocks it fetched are not enough: a fork of an ended epoch may leave out the
/// revocation of a retired peer's certificate, and the CA's signed word does not depend on
/// them.
///
/// # Errors
/// The CA could not be reached or refused; a record is not signed by the root, out of
/// sequence or undecodable; or there are more than [`MAX_SIGNED_SERIALS`].
pub async fn signed_serials(
    ca: &crate::ca_link::CaLink,
    root_key: &medledger_crypto::VerifyingKey,
) -> Result<Vec<Vec<u8>>, FeedError> {
    let (mut client, _) = ca
        .connect(CALL_TIMEOUT)
        .await
        .map_err(|e| FeedError::Unreachable(ca.url.clone(), e))?;
    let mut since = 0;
    let mut serials = Vec::new();
    loop {
        let request = v1::ListRevocationsRequest {
            since,
            limit: RECORDS_PER_CALL,
        };
        let answer = tokio::time::timeout(CALL_TIMEOUT, client.list_revocations(request))
            .await
            .map_err(|_| FeedError::Unreachable(ca.url.clone(), "timed out".into()))?
            .map_err(FeedError::Refused)?
            .into_inner();
        let records = triage(since, answer.latest_sequence, answer.records)?;
        let Some(&(last, _)) = records.last() else {
            return Ok(serials);
        };
        for (sequence, signed) in records {
            let record = medledger_execution::revocations::checked_record(root_key, &signed)
                .ok_or_else(|| FeedError::BadRecord {
                    sequence,
                    why: "it is not signed by the CA root".into(),
                })?;
            serials.push(record.serial);
        }
        if serials.len() > MAX_SIGNED_SERIALS {
            return Err(FeedError::OutOfSequence {
                since,
                why: format!("more than {MAX_SIGNED_SERIALS} revocations"),
            });
        }
        since = last;
    }
}

impl RevocationFeed {
    /// Follows the CA until the task is dropped. Failures are logged once when they start
    /// and once when they end, never once per poll.
    pub async fn run(self) {
        let mut client = None;
        let mut failing: Option<String> = None;
        loop {
            match self.catch_up(&mut client).await {
                Ok(ordered) => {
                    if let Some(was) = failing.take() {
                        tracing::info!(previously = %was, "following the CA's revocations again");
                    }
                    if ordered > 0 {
                        tracing::info!(ordered, "revocations from the CA ordered onto the ledger");
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if failing.as_deref() != Some(text.as_str()) {
                        tracing::warn!(
                            error = %text,
                            "revocations at the CA do not reach the ledger through this peer \
                             (other peers, or `medledger admin sync-revocations`, still bring them)"
                        );
                        failing = Some(text);
                    }
                    metrics::counter!("medledger_revocation_feed_failures_total").increment(1);
                    // A new channel next time: the CA may have restarted or moved.
                    client = None;
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Orders every record the CA holds past the ledger's last, in sequence; returns how
    /// many this peer submitted.
    async fn catch_up(
        &self,
        client: &mut Option<(MembershipClient<Channel>, Vec<u8>)>,
    ) -> Result<usize, FeedError> {
        let mut ordered = 0;
        loop {
            let since = self.shared.revocations.sequence.load(Ordering::SeqCst);
            // A channel made with a certificate since renewed is made again: the CA drops
            // it when that certificate ends.
            if client
                .as_ref()
                .is_some_and(|(_, presented)| *presented != self.ca.certificate.certificate_der())
            {
                *client = None;
            }
            let (client, _) = match client {
                Some(c) => c,
                None => client.insert(
                    self.ca
                        .connect(CALL_TIMEOUT)
                        .await
                        .map_err(|e| FeedError::Unreachable(self.ca.url.clone(), e))?,
                ),
            };
            let request = v1::ListRevocationsRequest {
                since,
                limit: RECORDS_PER_CALL,
            };
            let answer = tokio::time::timeout(CALL_TIMEOUT, client.list_revocations(request))
                .await
                .map_err(|_| FeedError::Unreachable(self.ca.url.clone(), "timed out".into()))?
                .map_err(FeedError::Refused)?
                .into_inner();
            let records = triage(since, answer.latest_sequence, answer.records)?;
            if records.is_empty() {
                return Ok(ordered);
            }
            // Each record ordered moves the ledger's sequence past it (or fails the round), so
            // the next page starts further on: the loop makes progress or stops.
            for (sequence, signed) in records {
                if self.order(sequence, signed).await? {
                    ordered += 1;
                }
            }
        }
    }

    /// Submits record `sequence` to this peer's replica and waits until it is on the ledger.
    /// `false` when another peer ordered it first.
    async fn order(
        &self,
        sequence: u64,
        signed: v1::SignedRevocationRecord,
    ) -> Result<bool, FeedError> {
        let bytes = v1::Envelope {
            kind: Some(v1::envelope::Kind::Revocation(signed)),
        }
        .encode_to_vec();
        let facts = CommittedFacts {
            ledger: &self.ledger,
            revocations: &self.shared.revocations,
            configuration: self.shared.configuration.get(),
        };
        match self
            .validator
            .check(&bytes, crate::driver::now_ms() as i64, &facts)
        {
            Ok(Checked::Revocation { .. }) => {}
            Ok(_) => {
                return Err(FeedError::BadRecord {
                    sequence,
                    why: "it is not a revocation".into(),
                });
            }
            // Another peer's copy committed since this peer asked.
            Err(_) if self.shared.revocations.sequence.load(Ordering::SeqCst) >= sequence => {
                return Ok(false);
            }
            Err(refusal) => {
                return Err(FeedError::BadRecord {
                    sequence,
                    why: refusal.message,
                });
            }
        }
        let (reply, outcome) = oneshot::channel();
        let request = pbft::Request {
            tx_id: crate::block::envelope_hash(&bytes),
            payload: bytes,
        };
        self.inputs
            .submit(request, reply)
            .map_err(|_| FeedError::NotOrdered(sequence, "this peer's input queue is full"))?;
        match tokio::time::timeout(COMMIT_TIMEOUT, outcome).await {
            // The driver takes the block's revocations in before it answers, so the next
            // page asks past this record.
            Ok(Ok(Outcome::Committed { .. })) => Ok(true),
            Ok(Ok(Outcome::AlreadyCommitted)) => Ok(false),
            Ok(Ok(Outcome::Busy)) => Err(FeedError::NotOrdered(sequence, "the peer is busy")),
            Ok(Ok(Outcome::Displaced { .. })) => Err(FeedError::NotOrdered(
                sequence,
                "faulty peers ordered other bytes under its id",
            )),
            Ok(Ok(Outcome::Left { .. })) => Err(FeedError::NotOrdered(
                sequence,
                "this peer was removed from the network",
            )),
            Ok(Err(_)) => Err(FeedError::NotOrdered(sequence, "the peer is shutting down")),
            Err(_) => Err(FeedError::NotOrdered(sequence, "no commit within 30 s")),
        }
    }
}

/// The CA to follow: the configured address, else the one in the wallet's `wallet.json`
/// (`{"name": …, "ca_url": …}`, written at enrollment); `None` when neither says.
pub fn ca_url(configured: Option<&str>, wallet_dir: &std::path::Path) -> Option<String> {
    if let Some(url) = configured {
        return Some(url.to_string());
    }
    #[derive(serde::Deserialize)]
    struct WalletInfo {
        ca_url: String,
    }
    let text = std::fs::read_to_string(wallet_dir.join("wallet.json")).ok()?;
    serde_json::from_str::<WalletInfo>(&text)
        .ok()
        .map(|w| w.ca_url)
        .filter(|url| !url.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64) -> v1::SignedRevocationRecord {
        v1::SignedRevocationRecord {
            record: v1::RevocationRecord {
                sequence,
                ..Default::default()
            }
            .encode_to_vec(),
            signature: vec![0; 64],
        }
    }

    /// What a lying, corrupt or restored CA may answer: every case is an error (a pause and
    /// one log line), never an answer that makes the feed ask again at once.
    #[test]
    fn the_cas_answer_must_continue_the_ledgers_sequence() {
        let sequences = |r: Vec<(u64, v1::SignedRevocationRecord)>| -> Vec<u64> {
            r.into_iter().map(|(s, _)| s).collect()
        };
        assert_eq!(
            sequences(triage(4, 7, vec![record(5), record(6), record(7)]).unwrap()),
            [5, 6, 7]
        );
        assert!(triage(4, 4, vec![]).unwrap().is_empty());
        let out_of_sequence =
            |r: Result<_, FeedError>| matches!(r, Err(FeedError::OutOfSequence { .. }));
        // Old records, repeats, gaps, going back.
        assert!(out_of_sequence(triage(4, 9, vec![record(4)])));
        assert!(out_of_sequence(triage(4, 9, vec![record(0)])));
        assert!(out_of_sequence(triage(4, 9, vec![record(5), record(5)])));
        assert!(out_of_sequence(triage(4, 9, vec![record(6)])));
        assert!(out_of_sequence(triage(4, 9, vec![record(5), record(7)])));
        assert!(out_of_sequence(triage(u64::MAX, u64::MAX, vec![record(0)])));
        // A record that does not decode.
        let junk = v1::SignedRevocationRecord {
            record: vec![0xff; 9],
            signature: vec![],
        };
        assert!(out_of_sequence(triage(4, 9, vec![junk])));
        // A CA behind the ledger (restored from an old backup).
        assert!(matches!(
            triage(8, 6, vec![]),
            Err(FeedError::CaBehind { ca: 6, ledger: 8 })
        ));
        // More than a page is cut to a page.
        let many: Vec<_> = (1..=40).map(record).collect();
        assert_eq!(
            triage(0, 40, many).unwrap().len(),
            RECORDS_PER_CALL as usize
        );
    }
}
