//! The configuration chain (docs/adr/0010) on the fixture network (fuzz/fixtures: a genesis
//! naming one admin, that admin's and a clinician's enrollments, the four peers' keys):
//! an approved update is in force from the next block, every way an update can fail to
//! follow from the configuration in force is refused with BAD_CONFIG_UPDATE and changes
//! nothing, and a client following the chain with proofs accepts only what was committed.
//! Membership changes (docs/adr/0011): accepted on networks of ledger format 3 (refused on
//! format 2, whose builds never switched replica sets), bounded to f peers in and out, and
//! followed by clients to the new peers' votes.
// A host, not the deterministic crate: it may read files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::Arc;

use medledger_crypto::{SignatureDomain, SigningIdentity, certificate_hash};
use medledger_execution::audit::Auditor;
use medledger_execution::block::{envelope_hash, header_hash};
use medledger_execution::chain::{ChainError, ConfigChain};
use medledger_execution::config::EpochBase;
use medledger_execution::config::{ConfigError, approval_bytes, config_hash};
use medledger_execution::execute::{CertifiedBatch, execute_block};
use medledger_execution::genesis::Genesis;
use medledger_execution::memory::MemoryState;
use medledger_execution::merkle::Tree;
use medledger_execution::proof::{ProofError, build_proof, check_commit_proof, vote_bytes};
use medledger_execution::state::BlockCommit;
use medledger_execution::validate::Validator;
use medledger_pbft as pbft;
use medledger_pbft::Signable as _;
use medledger_proto::v1;
use prost::Message;
use v1::TxStatus;

mod common;
use common::{fixture, key};

struct Net {
    genesis: Arc<Genesis>,
    validator: Validator,
    state: MemoryState,
    time_s: i64,
    admin: SigningIdentity,
    admin_der: Vec<u8>,
    admin2: SigningIdentity,
    admin2_der: Vec<u8>,
    clinician: SigningIdentity,
    clinician_der: Vec<u8>,
    /// peer0..peer3 (the genesis's) and peer4, peer5 (enrolled, in no configuration).
    peers: Vec<SigningIdentity>,
    /// The certificates of peer4 and peer5.
    extra_ders: Vec<Vec<u8>>,
}

fn net() -> Net {
    let genesis = Arc::new(
        Genesis::from_block(v1::Block::decode(fixture("genesis.pb").as_slice()).unwrap()).unwrap(),
    );
    Net {
        validator: Validator::new(genesis.clone()),
        state: MemoryState::new(&genesis),
        time_s: String::from_utf8(fixture("time"))
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
        admin: key("admin.key"),
        admin_der: fixture("admin.der"),
        admin2: key("admin2.key"),
        admin2_der: fixture("admin2.der"),
        clinician: key("clinician.key"),
        clinician_der: fixture("clinician.der"),
        peers: (0..6).map(|i| key(&format!("peer{i}.key"))).collect(),
        extra_ders: (4..6).map(|i| fixture(&format!("peer{i}.der"))).collect(),
        genesis,
    }
}

impl Net {
    fn current(&self) -> Arc<medledger_execution::config::Configuration> {
        self.validator.configuration_in_force(&self.state).unwrap()
    }

    /// The next configuration with a new transaction lifetime, approved by `signers`
    /// (certificate, key).
    fn update(&self, lifetime_ms: u64, signers: &[(&[u8], &SigningIdentity)]) -> v1::ConfigUpdate {
        let mut value = self.current().successor();
        value.consensus.as_mut().unwrap().max_tx_lifetime_ms = lifetime_ms;
        self.approved(value, signers)
    }

    fn approved(
        &self,
        value: v1::NetworkConfig,
        signers: &[(&[u8], &SigningIdentity)],
    ) -> v1::ConfigUpdate {
        self.approved_until(value, signers, self.time_s * 1000 + 3_600_000)
    }

    fn approved_until(
        &self,
        value: v1::NetworkConfig,
        signers: &[(&[u8], &SigningIdentity)],
        expires_at_ms: i64,
    ) -> v1::ConfigUpdate {
        let signed = approval_bytes(
            &self.genesis.network_id,
            &config_hash(&value),
            expires_at_ms,
        );
        v1::ConfigUpdate {
            expires_at_ms,
            signatures: signers
                .iter()
                .map(|(der, key)| v1::AdminSignature {
                    certificate: der.to_vec(),
                    signature: key
                        .sign(SignatureDomain::ConfigUpdate, &signed)
                        .to_bytes()
                        .to_vec(),
                })
                .collect(),
            config: Some(value),
        }
    }

    /// Both admins, in the policy's order.
    fn admins(&self) -> [(&[u8], &SigningIdentity); 2] {
        [
            (self.admin_der.as_slice(), &self.admin),
            (self.admin2_der.as_slice(), &self.admin2),
        ]
    }

    fn by_admins(&self, lifetime_ms: u64) -> v1::ConfigUpdate {
        self.update(lifetime_ms, &self.admins())
    }

    /// A clinician's transaction expiring `expires_in_ms` after the fixture time.
    fn transaction(&self, nonce: u8, expires_in_ms: i64) -> Vec<u8> {
        let transaction = v1::Transaction {
            function: "register_patient".into(),
            args: vec![nonce],
            creator_cert_hash: certificate_hash(&self.clinician_der).to_vec(),
            creator_certificate: self.clinician_der.clone(),
            nonce: vec![nonce; 24],
            client_time_ms: self.time_s * 1000,
            network_id: self.genesis.network_id.to_vec(),
            expires_at_ms: self.time_s * 1000 + expires_in_ms,
            private_commitments: Vec::new(),
        }
        .encode_to_vec();
        let signature = self
            .clinician
            .sign(SignatureDomain::Transaction, &transaction)
            .to_bytes()
            .to_vec();
        v1::Envelope {
            kind: Some(v1::envelope::Kind::Transaction(v1::SignedTransaction {
                transaction,
                signature,
                private_data_acks: Vec::new(),
                acks_signature: Vec::new(),
            })),
        }
        .encode_to_vec()
    }

    /// Executes `payloads` as the next block, certified by the replicas `signers` of the
    /// configuration in force in the epoch that started at `base`, and commits it.
    fn execute_certified(
        &mut self,
        payloads: Vec<Vec<u8>>,
        signers: &[usize],
        base: EpochBase,
    ) -> BlockCommit {
        let batch = self.batch(payloads);
        let seq = self.state.height() + 1;
        let replicas = self.current().replica_config(base).unwrap();
        let vote = pbft::Vote {
            view: 0,
            seq,
            digest: batch.digest(),
        };
        let bytes = replicas.epoch_signed(pbft::CommitVote(&vote).signed_bytes());
        let commits: Vec<pbft::Signed<pbft::Vote>> = signers
            .iter()
            .map(|&r| pbft::Signed {
                from: r as u32,
                message: vote,
                signature: self.peers[self.current_index(r)]
                    .sign(SignatureDomain::Consensus, &bytes)
                    .to_bytes()
                    .to_vec(),
            })
            .collect();
        let commit = execute_block(
            &self.state,
            &self.validator,
            &CertifiedBatch {
                seq,
                batch: &batch,
                commits: &commits,
            },
        )
        .unwrap();
        self.state.apply(&commit).unwrap();
        commit
    }

    /// Which of `peers` (0..6) is replica `r` of the configuration in force.
    fn current_index(&self, r: usize) -> usize {
        let key = self.current().peer_keys[r];
        self.peers
            .iter()
            .position(|p| p.verifying_key() == key)
            .unwrap()
    }

    fn batch(&self, payloads: Vec<Vec<u8>>) -> pbft::Batch {
        pbft::Batch {
            timestamp_ms: (self.time_s * 1000) as u64,
            requests: payloads
                .into_iter()
                .map(|payload| pbft::Request {
                    tx_id: envelope_hash(&payload),
                    payload,
                })
                .collect(),
        }
    }

    /// Executes `payloads` as the next block and commits it.
    fn execute(&mut self, payloads: Vec<Vec<u8>>) -> BlockCommit {
        let batch = self.batch(payloads);
        let commit = execute_block(
            &self.state,
            &self.validator,
            &CertifiedBatch {
                seq: self.state.height() + 1,
                batch: &batch,
                commits: &[],
            },
        )
        .unwrap();
        self.state.apply(&commit).unwrap();
        commit
    }

    /// The link a peer would serve for the configuration update at `index` of `commit`,
    /// voted by `voters`.
    fn link(&self, commit: &BlockCommit, index: usize, voters: &[usize]) -> v1::ConfigLink {
        let header = commit.block.header.as_ref().unwrap();
        let hash = header_hash(header);
        let votes = voters
            .iter()
            .map(|&r| v1::ReplicaSignature {
                replica: r as u32,
                signature: self.peers[r]
                    .sign(
                        SignatureDomain::BlockVote,
                        &vote_bytes(&self.genesis.network_id, header.number, &hash),
                    )
                    .to_bytes()
                    .to_vec(),
            })
            .collect();
        let envelope = commit.block.envelopes[index].clone();
        v1::ConfigLink {
            proof: build_proof(
                header,
                votes,
                &Tree::new(commit.result_leaves.clone()),
                index,
                &envelope_hash(&envelope),
                &commit.block.results[index],
            ),
            envelope,
        }
    }
}

fn envelope(update: v1::ConfigUpdate) -> Vec<u8> {
    v1::Envelope {
        kind: Some(v1::envelope::Kind::ConfigUpdate(update)),
    }
    .encode_to_vec()
}

fn statuses(commit: &BlockCommit) -> Vec<TxStatus> {
    commit
        .block
        .results
        .iter()
        .map(|r| TxStatus::try_from(r.status).unwrap())
        .collect()
}

#[test]
fn an_approved_configuration_is_in_force_from_the_next_block() {
    let mut n = net();
    let genesis_hash = n.genesis.network_id;
    assert_eq!(n.current().sequence, 0);
    assert_eq!(n.current().parameters.max_tx_lifetime_ms, 300_000);

    let update = n.by_admins(60_000);
    let expected = config_hash(update.config.as_ref().unwrap());
    // In the block that commits it, the genesis configuration still rules: a transaction
    // living 200 s is valid, and the header names the genesis configuration.
    let block = n.execute(vec![envelope(update), n.transaction(1, 200_000)]);
    assert_eq!(
        statuses(&block),
        vec![TxStatus::Valid, TxStatus::ChaincodeError],
        "the update is accepted; the clinician's call is valid (and refused by the chaincode)"
    );
    assert_eq!(block.block.header.as_ref().unwrap().config, genesis_hash);
    assert_eq!(block.configuration.as_ref().map(|c| c.0), Some(1));

    // From the next block: configuration 1, a 60 s lifetime.
    assert_eq!(n.current().sequence, 1);
    assert_eq!(n.current().hash, expected);
    let next = n.execute(vec![n.transaction(2, 200_000), n.transaction(3, 50_000)]);
    assert_eq!(
        statuses(&next),
        vec![TxStatus::BadEnvelope, TxStatus::ChaincodeError],
        "200 s is now too long a life; 50 s is not"
    );
    assert_eq!(next.block.header.as_ref().unwrap().config, expected);
    assert!(next.configuration.is_none());
}

#[test]
fn an_update_that_does_not_follow_is_refused_and_changes_nothing() {
    let mut n = net();
    let both = n.admins();
    let [admin, admin2] = both;
    let clinician = (n.clinician_der.as_slice(), &n.clinician);
    let successor = || n.current().successor();
    let mut skipped = successor();
    skipped.sequence = 2;
    let mut other_parent = successor();
    other_parent.previous = vec![7; 32];
    let mut peers_changed = successor();
    peers_changed.peers.pop();
    let mut pbft_changed = successor();
    pbft_changed.consensus.as_mut().unwrap().checkpoint_interval += 1;
    let mut out_of_bounds = successor();
    out_of_bounds.consensus.as_mut().unwrap().max_tx_lifetime_ms = 5_000;
    let mut no_threshold = successor();
    no_threshold.admin_policy.as_mut().unwrap().threshold = 0;
    let mut one_alone = successor();
    one_alone.admin_policy.as_mut().unwrap().threshold = 1;
    let mut wrong_hash = n.by_admins(60_000);
    if let Some(p) = wrong_hash
        .config
        .as_mut()
        .and_then(|c| c.consensus.as_mut())
    {
        p.max_tx_lifetime_ms = 70_000;
    }
    let mut twice = n.by_admins(60_000);
    twice.signatures[1] = twice.signatures[0].clone();
    let mut extra = n.by_admins(60_000);
    extra.signatures.push(extra.signatures[0].clone());
    let mut bad_signature = n.by_admins(60_000);
    bad_signature.signatures[1].signature[0] ^= 1;
    let mut extended = n.by_admins(60_000);
    extended.expires_at_ms += 1;
    // Readers of blocks are auditors' certificates under the genesis CA, at most 32.
    let mut clinician_as_auditor = successor();
    clinician_as_auditor.auditors = vec![n.clinician_der.clone()];
    let mut no_certificate = successor();
    no_certificate.auditors = vec![vec![0x30, 3, 1, 2, 3]];
    let mut too_many_auditors = successor();
    too_many_auditors.auditors = vec![n.clinician_der.clone(); 33];
    let now_ms = n.time_s * 1000;
    let far = n.approved_until(successor(), &both, now_ms + 31 * 24 * 3_600_000);
    let cases: Vec<(&str, v1::ConfigUpdate)> = vec![
        ("unapproved", n.update(60_000, &[])),
        ("approved by one admin alone", n.update(60_000, &[admin])),
        (
            "approved by an admin and a clinician",
            n.update(60_000, &[admin, clinician]),
        ),
        (
            "approved out of the policy's order",
            n.update(60_000, &[admin2, admin]),
        ),
        ("skipping a sequence number", n.approved(skipped, &both)),
        (
            "naming another predecessor",
            n.approved(other_parent, &both),
        ),
        ("changing the peer set", n.approved(peers_changed, &both)),
        ("changing a PBFT parameter", n.approved(pbft_changed, &both)),
        ("a lifetime out of bounds", n.approved(out_of_bounds, &both)),
        ("a policy no one can meet", n.approved(no_threshold, &both)),
        (
            "a policy one admin meets alone",
            n.approved(one_alone, &both),
        ),
        ("approving other values", wrong_hash),
        ("approved twice by one admin", twice),
        ("carrying more approvals than needed", extra),
        ("with a forged approval", bad_signature),
        ("with no configuration", v1::ConfigUpdate::default()),
        ("whose expiry its approvals did not sign", extended),
        ("expiring in more than 30 days", far),
        (
            "naming a clinician as an auditor",
            n.approved(clinician_as_auditor, &both),
        ),
        (
            "naming as an auditor what is no certificate",
            n.approved(no_certificate, &both),
        ),
        (
            "naming more than 32 auditors",
            n.approved(too_many_auditors, &both),
        ),
    ];
    for (what, update) in cases {
        let block = n.execute(vec![envelope(update)]);
        assert_eq!(
            statuses(&block),
            vec![TxStatus::BadConfigUpdate],
            "an update {what} is refused"
        );
        assert!(block.configuration.is_none(), "{what}: nothing in force");
        assert_eq!(
            n.current().sequence,
            0,
            "{what}: the genesis configuration rules"
        );
        assert_eq!(
            block.block.results[0].code,
            v1::ResultCode::FailedPrecondition as i32
        );
        assert!(
            block.block.results[0].tx_id.is_empty(),
            "{what}: an unapproved update is nobody's transaction"
        );
    }
    // Approved, but ordered after its expiry.
    let late = n.approved_until(n.current().successor(), &n.admins(), now_ms - 1);
    let block = n.execute(vec![envelope(late)]);
    assert_eq!(statuses(&block), vec![TxStatus::Expired]);
    assert_eq!(n.current().sequence, 0);
}

#[test]
fn one_configuration_change_per_block_and_none_twice() {
    let mut n = net();
    let first = n.by_admins(60_000);
    let rival = n.by_admins(90_000);
    let block = n.execute(vec![envelope(first.clone()), envelope(rival)]);
    assert_eq!(
        statuses(&block),
        vec![TxStatus::Valid, TxStatus::BadConfigUpdate],
        "a second change in the same block does not follow the first"
    );
    assert_eq!(n.current().parameters.max_tx_lifetime_ms, 60_000);
    // The same update again, in a later block: configuration 1 is already on the ledger.
    let again = n.execute(vec![envelope(first)]);
    assert_eq!(statuses(&again), vec![TxStatus::DuplicateEnvelope]);
    // A new policy: the admin hands over to nobody else, then the next change needs it.
    let second = n.by_admins(120_000);
    let block = n.execute(vec![envelope(second)]);
    assert_eq!(statuses(&block), vec![TxStatus::Valid]);
    assert_eq!(n.current().sequence, 2);
}

#[test]
fn a_client_follows_the_chain_only_with_proofs() {
    let mut n = net();
    let update = n.by_admins(60_000);
    let block = n.execute(vec![envelope(update), n.transaction(1, 50_000)]);
    let link = n.link(&block, 0, &[0, 2]);
    // A block under configuration 1, and the proof of one of its transactions.
    let later = n.execute(vec![n.transaction(2, 50_000)]);
    let later_link = n.link(&later, 0, &[1, 3]);
    let later_proof = later_link.proof.clone().unwrap();
    let sent = envelope_hash(&later.block.envelopes[0]);

    // The genesis alone does not know configuration 1.
    assert_eq!(
        check_commit_proof(&*n.genesis, &later_proof, &sent),
        Err(ProofError::UnknownConfiguration)
    );
    let mut chain = ConfigChain::new(&n.genesis);

    // Forgeries: one peer's vote; another envelope under the update's proof; the update
    // under another envelope's proof; a refused update, proven; a transaction's proof as a
    // link.
    let mut lone = link.clone();
    lone.proof.as_mut().unwrap().votes.truncate(1);
    assert!(matches!(
        chain.follow(&lone),
        Err(ChainError::Proof(ProofError::TooFewVotes { .. }))
    ));
    let mut swapped = link.clone();
    swapped.envelope = block.block.envelopes[1].clone();
    assert!(matches!(
        chain.follow(&swapped),
        Err(ChainError::NotAnUpdate)
    ));
    let mut other = n.link(&block, 1, &[0, 2]);
    other.envelope = link.envelope.clone();
    assert!(matches!(
        chain.follow(&other),
        Err(ChainError::Proof(ProofError::OtherEnvelope { .. }))
    ));
    let refused_block = {
        let mut m = net();
        let b = m.execute(vec![envelope(m.update(60_000, &[]))]);
        m.link(&b, 0, &[0, 1])
    };
    assert!(matches!(
        chain.follow(&refused_block),
        Err(ChainError::Refused(s)) if s == TxStatus::BadConfigUpdate as i32
    ));
    assert!(matches!(
        chain.follow(&later_link),
        Err(ChainError::NotAnUpdate)
    ));
    assert_eq!(
        chain.current().sequence,
        0,
        "nothing followed from a forgery"
    );

    // The true link: configuration 1, and then the later proof checks.
    let followed = chain.follow(&link).unwrap();
    assert_eq!(followed.sequence, 1);
    assert_eq!(followed.parameters.max_tx_lifetime_ms, 60_000);
    let proven = check_commit_proof(&chain, &later_proof, &sent).unwrap();
    assert_eq!(proven.block, later.block.header.as_ref().unwrap().number);
    // Following the same link again is out of order.
    assert!(matches!(
        chain.follow(&link),
        Err(ChainError::OutOfOrder) | Err(ChainError::Update(ConfigError::Sequence { .. }))
    ));
}

impl Net {
    /// Genesis peer `i` as configurations list it, at replica id `replica`.
    fn genesis_peer(&self, i: usize, replica: u32) -> v1::GenesisPeer {
        v1::GenesisPeer {
            replica,
            ..self.genesis.config.peers[i].clone()
        }
    }

    /// Enrolled peer `i` (4 or 5) at replica id `replica`.
    fn new_peer(&self, i: usize, replica: u32) -> v1::GenesisPeer {
        v1::GenesisPeer {
            replica,
            name: format!("peer{i}"),
            address: format!("10.0.0.{i}:7051"),
            certificate: self.extra_ders[i - 4].clone(),
        }
    }

    /// The next configuration with `peers`, approved by both admins.
    fn with_peers(&self, peers: Vec<v1::GenesisPeer>) -> v1::ConfigUpdate {
        let mut value = self.current().successor();
        value.peers = peers;
        self.approved(value, &self.admins())
    }
}

/// The fixture network made again in ledger format 3 (`MEMBERSHIP_CHANGES_FORMAT`): its
/// configuration transactions may change the peers. The fixture genesis is format 2.
fn switching_net() -> Net {
    let mut block = v1::Block::decode(fixture("genesis.pb").as_slice()).unwrap();
    let config = block.genesis.as_mut().unwrap();
    config.consensus.as_mut().unwrap().ledger_format =
        medledger_execution::genesis::MEMBERSHIP_CHANGES_FORMAT;
    // The header commits to the configuration.
    block.header.as_mut().unwrap().tx_root =
        <sha2::Sha256 as sha2::Digest>::digest(config.encode_to_vec()).to_vec();
    let genesis = Arc::new(Genesis::from_block(block).unwrap());
    let mut n = net();
    n.validator = Validator::new(genesis.clone());
    n.state = MemoryState::new(&genesis);
    n.genesis = genesis;
    n
}

#[test]
fn a_peer_added_is_a_replica_from_the_next_block_and_ends_the_epoch() {
    let mut n = switching_net();
    let mut peers: Vec<v1::GenesisPeer> = (0..4).map(|i| n.genesis_peer(i, i as u32)).collect();
    peers.push(n.new_peer(4, 4));
    let update = n.with_peers(peers.clone());

    // A network of ledger format 2 (its peers the genesis's for good) refuses it, and
    // nothing changes.
    // nothing changes (the same change, approved for that network: refused for the peers
    // alone, since it follows the configuration in force in every other way).
    let mut fixed = net();
    let same = fixed.with_peers(peers.clone());
    let refused = fixed.execute(vec![envelope(same)]);
    assert_eq!(statuses(&refused), vec![TxStatus::BadConfigUpdate]);
    assert!(!refused.ends_epoch);
    assert_eq!(fixed.current().peers.len(), 4);
    let unchanged = (0..4).map(|i| fixed.genesis_peer(i, i as u32)).collect();
    let kept = fixed.with_peers(unchanged);
    assert_eq!(
        statuses(&fixed.execute(vec![envelope(kept)])),
        vec![TxStatus::Valid],
        "a format-2 network takes a change that keeps its peers"
    );

    let block = n.execute(vec![envelope(update), n.transaction(1, 50_000)]);
    assert_eq!(
        statuses(&block),
        vec![TxStatus::Valid, TxStatus::ChaincodeError]
    );
    assert!(
        block.ends_epoch,
        "the block that changes the peers ends the epoch"
    );
    let current = n.current();
    assert_eq!(current.sequence, 1);
    assert_eq!(current.peers, peers);
    assert_eq!(current.peer_keys[4], n.peers[4].verifying_key());
    assert_eq!(current.weak_quorum(), 2);
    // A change of the parameters only does not end an epoch.
    let block = n.execute(vec![envelope(n.by_admins(60_000))]);
    assert_eq!(statuses(&block), vec![TxStatus::Valid]);
    assert!(!block.ends_epoch);
    assert_eq!(
        n.current().peers.len(),
        5,
        "the peers stay as configuration 1 set them"
    );
}

#[test]
fn a_peer_set_that_is_not_one_is_refused() {
    let n = switching_net();
    let genesis =
        |n: &Net| -> Vec<v1::GenesisPeer> { (0..4).map(|i| n.genesis_peer(i, i as u32)).collect() };
    let plus = |n: &Net, extra: v1::GenesisPeer| {
        let mut peers = genesis(n);
        peers.push(extra);
        peers
    };
    let mut clinician = n.new_peer(4, 4);
    clinician.name = "fuzz-clinician".into();
    clinician.certificate = n.clinician_der.clone();
    let mut misnamed = n.new_peer(4, 4);
    misnamed.name = "peer9".into();
    let mut same_address = n.new_peer(4, 4);
    same_address.address = n.genesis.config.peers[0].address.clone();
    let mut no_address = n.new_peer(4, 4);
    no_address.address.clear();
    let mut garbage = n.new_peer(4, 4);
    garbage.certificate = vec![0x30, 0x03, 1, 2, 3];
    let mut shuffled = plus(&n, n.new_peer(4, 4));
    shuffled.swap(0, 1);
    let mut three = genesis(&n);
    three.pop();
    let replace_two = vec![
        n.genesis_peer(0, 0),
        n.genesis_peer(1, 1),
        n.new_peer(4, 2),
        n.new_peer(5, 3),
    ];
    let add_two = plus(&n, n.new_peer(4, 4))
        .into_iter()
        .chain([n.new_peer(5, 5)])
        .collect::<Vec<_>>();
    let mut moved_two = genesis(&n);
    moved_two[0].address = "10.0.0.100:7051".into();
    moved_two[1].address = "10.0.0.101:7051".into();
    let mut reordered = genesis(&n);
    reordered.swap(0, 1);
    for (i, peer) in reordered.iter_mut().enumerate() {
        peer.replica = i as u32;
    }
    let cases: Vec<(&str, Vec<v1::GenesisPeer>)> = vec![
        ("two peers moved to new addresses at once", moved_two),
        ("the same peers in another order", reordered),
        ("a clinician as a peer", plus(&n, clinician)),
        ("a certificate under another name", plus(&n, misnamed)),
        ("a peer listed twice", plus(&n, n.genesis_peer(0, 4))),
        ("two peers at one address", plus(&n, same_address)),
        ("a peer with no address", plus(&n, no_address)),
        ("a certificate that is not one", plus(&n, garbage)),
        ("replica ids out of order", shuffled),
        ("three peers", three),
        ("two of four peers replaced at once", replace_two),
        ("two peers added to four at once", add_two),
    ];
    for (what, peers) in cases {
        let mut m = switching_net();
        let block = m.execute(vec![envelope(m.with_peers(peers))]);
        assert_eq!(
            statuses(&block),
            vec![TxStatus::BadConfigUpdate],
            "{what} is refused"
        );
        assert!(!block.ends_epoch && block.configuration.is_none(), "{what}");
        assert_eq!(m.current().peers.len(), 4, "{what}: nothing changed");
    }
    // One replaced (a key rotation looks the same: one key out, one in) is a step.
    let mut m = switching_net();
    let replace_one = vec![
        n.genesis_peer(0, 0),
        n.genesis_peer(1, 1),
        n.genesis_peer(2, 2),
        n.new_peer(4, 3),
    ];
    let block = m.execute(vec![envelope(m.with_peers(replace_one))]);
    assert_eq!(statuses(&block), vec![TxStatus::Valid]);
    assert!(block.ends_epoch);
}

#[test]
fn a_client_follows_a_membership_change_to_the_new_peers_votes() {
    let mut n = switching_net();
    let mut peers: Vec<v1::GenesisPeer> = (0..4).map(|i| n.genesis_peer(i, i as u32)).collect();
    peers.push(n.new_peer(4, 4));
    let block = n.execute(vec![envelope(n.with_peers(peers))]);
    let link = n.link(&block, 0, &[0, 1]);
    let later = n.execute(vec![n.transaction(1, 50_000)]);
    let sent = envelope_hash(&later.block.envelopes[0]);
    let mut chain = ConfigChain::new(&n.genesis);
    chain.follow(&link).unwrap();
    assert_eq!(chain.current().peers.len(), 5);
    // Votes of the new set, the added peer's among them, prove the later block.
    let proof = n.link(&later, 0, &[4, 2]).proof.unwrap();
    assert!(check_commit_proof(&chain, &proof, &sent).is_ok());
    // Replica 4 is no peer of the genesis: the old set's chain refuses its vote.
    let genesis_only = ConfigChain::new(&n.genesis);
    assert!(check_commit_proof(&genesis_only, &proof, &sent).is_err());
}

/// `ledger verify` across a membership change: the blocks after it are certified by the new
/// replica set, signing in its epoch; the old set's signatures, or the new set's without
/// the epoch, do not certify them.
#[test]
fn the_auditor_checks_each_block_against_the_replicas_of_its_epoch() {
    let mut n = switching_net();
    let mut peers: Vec<v1::GenesisPeer> = (0..3).map(|i| n.genesis_peer(i, i as u32)).collect();
    peers.push(n.new_peer(4, 3));
    let genesis_epoch = EpochBase::default();
    let change = n.execute_certified(
        vec![envelope(n.with_peers(peers))],
        &[0, 1, 2],
        genesis_epoch,
    );
    assert!(change.ends_epoch);
    let new_epoch = EpochBase::after(change.block.header.as_ref().unwrap());
    // peer3 is gone; replica 3 is now peer4.
    let later = n.execute_certified(vec![n.transaction(1, 50_000)], &[1, 2, 3], new_epoch);
    let blocks = [change.block.clone(), later.block.clone()];

    let audit = |blocks: &[v1::Block]| {
        let mut auditor = Auditor::new((*n.genesis).clone());
        blocks
            .iter()
            .map(|b| auditor.check(b).unwrap().problems)
            .collect::<Vec<_>>()
    };
    assert_eq!(audit(&blocks), vec![Vec::<String>::new(), Vec::new()]);

    // The later block certified as if no epoch had begun (the old base): refused.
    let mut m = switching_net();
    let mut peers: Vec<v1::GenesisPeer> = (0..3).map(|i| m.genesis_peer(i, i as u32)).collect();
    peers.push(m.new_peer(4, 3));
    let change = m.execute_certified(
        vec![envelope(m.with_peers(peers))],
        &[0, 1, 2],
        genesis_epoch,
    );
    let unepoched = m.execute_certified(vec![m.transaction(1, 50_000)], &[1, 2, 3], genesis_epoch);
    let verdicts = audit(&[change.block, unepoched.block]);
    assert!(verdicts[0].is_empty());
    assert!(
        verdicts[1].iter().any(|p| p.contains("commit certificate")),
        "{verdicts:?}"
    );
}

/// Peers renew their certificates without a configuration change (the configuration pins
/// their keys), so the certificate a peer that stays has in the configuration may have
/// ended: a membership change checks the standing of the peers it adds only.
#[test]
fn a_change_checks_the_certificates_of_the_peers_it_adds_not_of_those_that_stay() {
    let n = switching_net();
    let root = &n.genesis.root;
    let none = std::collections::BTreeSet::<Vec<u8>>::new();
    let genesis: Vec<v1::GenesisPeer> = (0..4).map(|i| n.genesis_peer(i, i as u32)).collect();
    let mut five = genesis.clone();
    five.push(n.new_peer(4, 4));
    let mut value = n.current().successor();
    value.peers = five.clone();
    let five = n.current().next(&value, root, n.time_s, &none).unwrap();

    // Past the end of every fixture certificate.
    let ended = (0..4)
        .map(|i| n.genesis.config.peers[i].certificate.clone())
        .chain(n.extra_ders.iter().cloned())
        .map(|der| {
            medledger_crypto::read_enrollment_certificate(&der, root)
                .unwrap()
                .not_after
        })
        .max()
        .unwrap()
        + 1;
    // Removing peer4: the four that stay have ended certificates, and it commits.
    let mut value = five.successor();
    value.peers = genesis.clone();
    let four = five.next(&value, root, ended, &none).unwrap();
    assert_eq!(four.peer_keys.len(), 4);
    // A peer that stays is still checked for revocation.
    let peer2 = medledger_crypto::read_enrollment_certificate(&genesis[2].certificate, root)
        .unwrap()
        .serial;
    let revoked = std::collections::BTreeSet::from([peer2]);
    assert!(matches!(
        five.next(&value, root, ended, &revoked),
        Err(ConfigError::Peer { replica: 2, .. })
    ));
    // Adding peer5 with an ended certificate: refused, naming it.
    let mut value = four.successor();
    let mut with_five = genesis.clone();
    with_five.push(n.new_peer(5, 4));
    value.peers = with_five.clone();
    match four.next(&value, root, ended, &none) {
        Err(ConfigError::Peer {
            replica: 4,
            name,
            why,
        }) => {
            assert_eq!(name, "peer5");
            assert!(why.contains("expired"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // A peer that stays but with another certificate is checked as added.
    let mut value = four.successor();
    let mut changed = genesis.clone();
    changed[3].certificate = n.extra_ders[1].clone();
    changed[3].name = "peer5".into();
    value.peers = changed;
    assert!(matches!(
        four.next(&value, root, ended, &none),
        Err(ConfigError::Peer { replica: 3, .. })
    ));
}

/// Issue 20 item 4, red team: nothing more is sealed to a named auditor whose certificate is
/// revoked (their key compromised, or their name revoked) — before any admin acts.
#[test]
fn a_revoked_auditor_is_sealed_to_no_more() {
    let n = net();
    let mut configuration = (*n.current()).clone();
    configuration.auditors = vec![
        medledger_execution::config::NamedAuditor {
            name: "audrey".into(),
            key: n.clinician.verifying_key(),
            encryption_key: [0x21; 32],
            serial: vec![1, 2, 3],
        },
        medledger_execution::config::NamedAuditor {
            name: "ann".into(),
            key: n.admin.verifying_key(),
            encryption_key: [0x22; 32],
            serial: vec![4, 5, 6],
        },
    ];
    assert_eq!(
        configuration.auditor_keys(|_| false),
        vec![[0x21; 32], [0x22; 32]]
    );
    assert_eq!(
        configuration.auditor_keys(|serial| serial == [1, 2, 3]),
        vec![[0x22; 32]]
    );
}
