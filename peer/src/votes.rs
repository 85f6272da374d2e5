//! Block votes (ledger format 2, docs/adr/0009 §3): after executing block N this peer signs
//! `(network id, N, header hash)` and sends it to every other peer; the votes it gathers on
//! the header it computed itself are what its commit proofs carry (f+1 of them).
//!
//! Who sends what, and what a liar gets: a vote arrives on a replica stream whose TLS
//! certificate names its sender, and is kept only when it is that sender's, its signature
//! verifies, and its block lies in a bounded window around this peer's height — one vote per
//! replica and block, so a Byzantine peer holds at most one slot per block. A vote on a
//! header other than this peer's is kept apart and never goes into a proof (a correct peer
//! seeing it has diverged, or the sender lies: it is logged and counted). Memory is bounded
//! by `n × (RETAINED + AHEAD)` votes; older blocks' votes are read from the ledger, where
//! they are stored once f+1 match.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medledger_crypto::{SignatureDomain, SigningIdentity, VerifyingKey};
use medledger_execution::block::header_hash;
use medledger_execution::proof::{check_vote, vote_bytes};
use medledger_pbft as pbft;
use medledger_proto::v1;
use tokio::sync::watch;

use crate::genesis::Genesis;
use crate::ledger::Ledger;
use medledger_execution::config::Configuration;

/// Blocks behind this peer's height whose votes are still gathered in memory.
pub const RETAINED: u64 = 256;
/// Blocks ahead of this peer's height whose votes are accepted (a peer behind the others
/// keeps their votes until it executes those blocks).
pub const AHEAD: u64 = 1024;

/// Why a vote was not kept.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefused {
    #[error("replica {sender} sent a vote signed as replica {claimed}")]
    NotSender { sender: u32, claimed: u32 },
    #[error("block {0} is outside the window of votes this peer keeps")]
    OutOfWindow(u64),
    #[error("replica already voted on block {0}")]
    Repeated(u64),
    #[error("the header hash must be 32 bytes")]
    Malformed,
    #[error("{0}")]
    BadSignature(String),
}

/// One block's votes: replica → (header hash it signed, signature).
type BlockVotes = BTreeMap<pbft::ReplicaId, ([u8; 32], Vec<u8>)>;

#[derive(Default)]
struct Inner {
    /// The last block this peer executed.
    height: u64,
    /// Votes by block number, within the window.
    blocks: BTreeMap<u64, BlockVotes>,
    /// This peer's header hash of each executed block still in the window.
    own: BTreeMap<u64, [u8; 32]>,
    /// Blocks in the window whose f+1 matching votes are stored.
    stored: std::collections::BTreeSet<u64>,
}

/// The replica set that votes on blocks from `first` on: its configuration and this peer's
/// id in it (`None`: not a member, it does not vote).
#[derive(Debug, Clone)]
struct Epoch {
    first: u64,
    configuration: Arc<Configuration>,
    me: Option<pbft::ReplicaId>,
}

pub struct Votes {
    genesis: Arc<Genesis>,
    ledger: Arc<Ledger>,
    identity: Arc<SigningIdentity>,
    /// The epochs this peer knows, oldest first (the first one from its start; later ones
    /// as blocks change the peers, docs/adr/0011): who votes on which block.
    epochs: Mutex<Vec<Epoch>>,
    /// Debug builds, in tests (`lies.rs`): sign votes on a header other than the one executed.
    lie: bool,
    inner: Mutex<Inner>,
    /// Bumped whenever a vote is kept: proofs waiting for votes look again.
    changed: watch::Sender<u64>,
}

impl Votes {
    /// Votes of the replicas of `configuration`, whose epoch started after block `base`
    /// (this peer votes if it is one of them).
    pub fn new(
        genesis: Arc<Genesis>,
        ledger: Arc<Ledger>,
        identity: Arc<SigningIdentity>,
        configuration: Arc<Configuration>,
        base: u64,
        lie: bool,
    ) -> Votes {
        let height = ledger.height();
        let me = configuration.replica_of(&identity.verifying_key());
        let votes = Votes {
            genesis,
            ledger,
            identity,
            epochs: Mutex::new(vec![Epoch {
                first: base.saturating_add(1),
                configuration,
                me,
            }]),
            lie,
            inner: Mutex::new(Inner {
                height,
                ..Inner::default()
            }),
            changed: watch::Sender::new(0),
        };
        // After a restart: this peer's own headers of the recent blocks of this epoch, so
        // that votes the others send late still match (and are stored), and its own votes on
        // them again.
        let from = height
            .saturating_sub(RETAINED)
            .saturating_add(1)
            .max(base.saturating_add(1));
        for number in from..=height {
            match votes.ledger.header(number) {
                Ok(header) => {
                    votes.executed(number, header_hash(&header));
                }
                Err(e) => tracing::warn!(block = number, error = %e, "cannot read a header"),
            }
        }
        votes
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replicas that vote on block `number`, as far as this peer knows (a later epoch
    /// it has not reached yet is not known).
    fn epoch_of(&self, number: u64) -> Epoch {
        let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        epochs
            .iter()
            .rev()
            .find(|e| e.first <= number)
            .or_else(|| epochs.first())
            .cloned()
            .expect("a peer knows at least one epoch")
    }

    /// The last block the peer signing with `key` may read as one of the replicas: every
    /// block (`u64::MAX`) while it is one of the replicas in force; up to the block that
    /// ended the last epoch it was one of the replicas of, after it left (it reads the
    /// blocks up to its removal from the others, `left_behind`); `None` if it never was.
    pub fn readable_by_replica(&self, key: &medledger_crypto::VerifyingKey) -> Option<u64> {
        let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let last = epochs
            .iter()
            .rposition(|e| e.configuration.replica_of(key).is_some())?;
        Some(
            epochs
                .get(last + 1)
                .map_or(u64::MAX, |next| next.first.saturating_sub(1)),
        )
    }

    /// Block `base` changed the peers: from the next block on, the replicas of
    /// `configuration` vote (docs/adr/0011).
    pub fn new_epoch(&self, base: u64, configuration: Arc<Configuration>) {
        let me = configuration.replica_of(&self.identity.verifying_key());
        let first = base.saturating_add(1);
        // (Locks are taken one at a time: `inner` is held while `epochs` is read elsewhere.)
        {
            let mut inner = self.inner();
            // Votes kept for blocks of the new epoch were checked against the old one.
            let ahead: Vec<u64> = inner.blocks.range(first..).map(|(n, _)| *n).collect();
            for number in ahead {
                inner.blocks.remove(&number);
            }
        }
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        epochs.retain(|e| e.first <= base);
        epochs.push(Epoch {
            first,
            configuration,
            me,
        });
        // Every epoch is kept (one per change of the peers): a block's votes are judged by
        // its own epoch's replicas however old it is (a proof of an old configuration link
        // needs f+1 of that epoch's, not of today's).
    }

    /// The replica sets before the one this peer started in, oldest first: the first
    /// block each ordered and its configuration (`execute::earlier_epochs`).
    pub fn remember_epochs(&self, earlier: Vec<(u64, Arc<Configuration>)>) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let first_known = epochs.first().map_or(u64::MAX, |e| e.first);
        let mut all: Vec<Epoch> = earlier
            .into_iter()
            .filter(|(first, _)| *first < first_known)
            .map(|(first, configuration)| Epoch {
                first,
                me: configuration.replica_of(&self.identity.verifying_key()),
                configuration,
            })
            .collect();
        all.append(&mut epochs);
        *epochs = all;
    }

    /// Debug builds, in tests (`lies.rs`): this peer's signature on any header, recorded
    /// nowhere, and its public key.
    pub fn sign_anything(&self, header: &v1::BlockHeader) -> (v1::ReplicaSignature, [u8; 32]) {
        let signature = self.identity.sign(
            SignatureDomain::BlockVote,
            &vote_bytes(
                &self.genesis.network_id,
                header.number,
                &header_hash(header),
            ),
        );
        (
            v1::ReplicaSignature {
                replica: self.epoch_of(header.number).me.unwrap_or(u32::MAX),
                signature: signature.to_bytes().to_vec(),
            },
            self.identity.verifying_key().to_bytes(),
        )
    }

    /// This peer executed block `number` to a header hashing to `hash`: signs its vote,
    /// keeps it, and returns it for the others; `None` when this peer is not one of the
    /// replicas of that block (it keeps its header, to match the others' votes).
    pub fn executed(&self, number: u64, hash: [u8; 32]) -> Option<v1::BlockVote> {
        let Some(me) = self.epoch_of(number).me else {
            let mut inner = self.inner();
            inner.height = inner.height.max(number);
            inner.own.insert(number, hash);
            return None;
        };
        let signed_hash = if self.lie {
            let mut other = hash;
            other[0] ^= 0xff;
            other
        } else {
            hash
        };
        let signature = self
            .identity
            .sign(
                SignatureDomain::BlockVote,
                &vote_bytes(&self.genesis.network_id, number, &signed_hash),
            )
            .to_bytes()
            .to_vec();
        let proven;
        {
            let mut inner = self.inner();
            inner.height = inner.height.max(number);
            inner.own.insert(number, hash);
            inner
                .blocks
                .entry(number)
                .or_default()
                .insert(me, (signed_hash, signature.clone()));
            let low = inner.height.saturating_sub(RETAINED);
            inner.blocks = inner.blocks.split_off(&low);
            inner.own = inner.own.split_off(&low);
            inner.stored = inner.stored.split_off(&low);
            proven = self.persist_if_proven(&mut inner, number);
        }
        if proven {
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
        Some(v1::BlockVote {
            from: me,
            number,
            header_hash: signed_hash.to_vec(),
            signature,
        })
    }

    /// A vote that arrived on the stream of the peer whose signing key is `sender_key`:
    /// kept when it is valid and in the window. Its sender's replica id is the one the key
    /// has among the replicas of the vote's block (ids move when the peers change).
    ///
    /// # Errors
    /// [`VoteRefused`]: why it was dropped (the caller counts it; a vote signed as another
    /// replica closes the stream).
    pub fn receive(
        &self,
        sender_key: &VerifyingKey,
        vote: v1::BlockVote,
    ) -> Result<(), VoteRefused> {
        let epoch = self.epoch_of(vote.number);
        let sender = epoch.configuration.replica_of(sender_key);
        if sender != Some(vote.from) {
            // Beyond the next block the peers may have changed in blocks this peer has not
            // executed yet: dropped without blame.
            if vote.number > self.inner().height.saturating_add(1) {
                return Err(VoteRefused::OutOfWindow(vote.number));
            }
            return Err(VoteRefused::NotSender {
                sender: sender.unwrap_or(u32::MAX),
                claimed: vote.from,
            });
        }
        let sender = vote.from;
        let hash: [u8; 32] = vote
            .header_hash
            .as_slice()
            .try_into()
            .map_err(|_| VoteRefused::Malformed)?;
        {
            let inner = self.inner();
            let low = inner.height.saturating_sub(RETAINED);
            if vote.number <= low || vote.number > inner.height.saturating_add(AHEAD) {
                return Err(VoteRefused::OutOfWindow(vote.number));
            }
            // One vote per replica and block: a repeat costs a lookup, not a signature check,
            // a write or a wake-up.
            if inner
                .blocks
                .get(&vote.number)
                .is_some_and(|b| b.contains_key(&sender))
            {
                return Err(VoteRefused::Repeated(vote.number));
            }
        }
        let signature = v1::ReplicaSignature {
            replica: vote.from,
            signature: vote.signature,
        };
        if let Err(why) = check_vote(&epoch.configuration, vote.number, &hash, &signature) {
            // Beyond the next block the peers may have changed in blocks this peer has not
            // executed yet: a vote that does not check against the replicas it knows may be
            // a new replica's, dropped without blame.
            let height = self.inner().height;
            if vote.number > height.saturating_add(1) {
                return Err(VoteRefused::OutOfWindow(vote.number));
            }
            return Err(VoteRefused::BadSignature(why));
        }
        let proven;
        {
            let mut inner = self.inner();
            // The peers changed while the vote was checked: it was checked against the
            // replicas of another epoch.
            if self.epoch_of(vote.number).first != epoch.first {
                return Err(VoteRefused::OutOfWindow(vote.number));
            }
            let slot = inner.blocks.entry(vote.number).or_default();
            if slot.contains_key(&sender) {
                return Err(VoteRefused::Repeated(vote.number));
            }
            slot.insert(sender, (hash, signature.signature));
            if let Some(own) = inner.own.get(&vote.number)
                && *own != hash
            {
                metrics::counter!("medledger_block_votes_diverging_total").increment(1);
                tracing::warn!(
                    block = vote.number,
                    replica = sender,
                    "a peer signed another header for a block this peer executed"
                );
            }
            proven = self.persist_if_proven(&mut inner, vote.number);
        }
        if proven {
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
        Ok(())
    }

    /// The votes held on this peer's own header of block `number` (from memory, or for an
    /// older block from the ledger).
    fn matching(inner: &Inner, number: u64) -> Option<Vec<v1::ReplicaSignature>> {
        let own = inner.own.get(&number)?;
        Some(
            inner
                .blocks
                .get(&number)?
                .iter()
                .filter(|(_, (hash, _))| hash == own)
                .map(|(replica, (_, signature))| v1::ReplicaSignature {
                    replica: *replica,
                    signature: signature.clone(),
                })
                .collect(),
        )
    }

    /// Stores block `number`'s matching votes the first time there are f+1 or more (a
    /// proof needs no more; a peer that executes a block after the others' votes came goes
    /// from one to several at once), and says whether that happened: the moment proofs of
    /// the block can be made, when waiters are woken. A failed write loses only proofs this
    /// peer could serve later: logged.
    fn persist_if_proven(&self, inner: &mut Inner, number: u64) -> bool {
        if inner.stored.contains(&number) {
            return false;
        }
        let Some(votes) = Self::matching(inner, number) else {
            return false;
        };
        if votes.len() < self.epoch_of(number).configuration.weak_quorum() {
            return false;
        }
        inner.stored.insert(number);
        if let Err(e) = self.ledger.put_votes(number, votes) {
            tracing::warn!(block = number, error = %e, "cannot store block votes");
        }
        true
    }

    /// How many votes prove block `number`: f + 1 of the replicas of its epoch.
    pub fn needed(&self, number: u64) -> usize {
        self.epoch_of(number).configuration.weak_quorum()
    }

    /// The votes this peer holds on its own header of block `number`: in memory while the
    /// block is in the window, else as stored.
    pub fn held(&self, number: u64) -> Vec<v1::ReplicaSignature> {
        let in_memory = Self::matching(&self.inner(), number).unwrap_or_default();
        if in_memory.len() >= self.epoch_of(number).configuration.weak_quorum() {
            return in_memory;
        }
        // After a restart memory holds only this peer's own vote on its recent blocks; what
        // it stored before is on disk.
        let stored = self.ledger.votes(number).unwrap_or_else(|e| {
            tracing::warn!(block = number, error = %e, "cannot read block votes");
            Vec::new()
        });
        if stored.len() > in_memory.len() {
            stored
        } else {
            in_memory
        }
    }

    /// Waits up to `timeout` until f+1 peers' votes on this peer's header of block `number`
    /// are held; returns them, or `None` when they did not come in time.
    pub async fn quorum(
        &self,
        number: u64,
        timeout: Duration,
    ) -> Option<Vec<v1::ReplicaSignature>> {
        let needed = self.epoch_of(number).configuration.weak_quorum();
        let mut changes = self.changed.subscribe();
        // Below the window no vote is kept any more: what is stored is all there will be.
        let settled = {
            let inner = self.inner();
            number <= inner.height.saturating_sub(RETAINED)
        };
        if settled {
            let votes = self.held(number);
            return (votes.len() >= needed).then_some(votes);
        }
        let wait = async {
            loop {
                let votes = self.held(number);
                if votes.len() >= needed {
                    return votes;
                }
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }
}
