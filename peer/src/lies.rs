//! A lying peer, for tests of real processes (debug builds only; release builds never read
//! the variable). `MEDLEDGER_FAULT_LIE=NAME:KIND+KIND…` makes the peer named `NAME` lie to
//! everyone who asks it, so that tests can show that clients, the gateway and the other peers
//! believe nothing that peer says alone (issue 17, THREAT-MODEL: up to f peers Byzantine):
//!
//! - `genesis`: serves a genesis block of another network (a forged configuration) as block 0;
//! - `proof`: answers every submission with a forged outcome — its real commit proof with
//!   the outcome turned into a refusal, or the proof of another transaction — and words
//!   that go with the lie;
//! - `votes`: signs block votes on a header other than the one it executed;
//! - `keys`: answers `check_access` with a category key and a study key of its own (the keys
//!   a clinician or researcher would encrypt a file to), `access_keys` with an envelope, a
//!   key chain and a file key of its own making (the keys a grantee would open a file with),
//!   `study_access_keys` with a study copy's file key of its own making, and
//!   `sealed_reasons` with reasons of its own sealing (under the real salts).
//! - `stale`: answers every query (but `check_access` and `access_keys` under `keys`) from
//!   the genesis state — nothing registered, nothing granted — claiming its current height;
//! - `config`: serves a forged configuration chain: every real link with its configuration
//!   altered (the longest transaction life, and itself as the only admin), and, before the
//!   first real one, a configuration of its own making, voted by itself alone.
//! - `revocations`: answers every `GetRevocations` at once with a full page of records the
//!   CA never signed, for ever (a client that asked for the next page of every full one
//!   would never stop asking).
//! - `blocks`: serves auditors blocks (past the genesis) whitewashed: every outcome turned
//!   into a success (a denied emergency access, a refused grant, all shown as done), its
//!   votes left as they were.
//! - `withhold`: acknowledges private values (`PutPrivateData`) without keeping them, so a
//!   transaction it acknowledged has one holder fewer than its acknowledgments say: readers
//!   must find the values on the others (docs/adr/0017).
//! - `unchecked`: acknowledges private values without checking the shapes their
//!   transaction describes (an emergency access's sealed reason, docs/adr/0017), as a peer of
//!   an older build, or a Byzantine one, would: f such peers must not be enough to commit a
//!   reason that leaves a reader out.
//! - `stall`: holds every `Query` call open and never answers (not part of `all`: each
//!   client it stalls waits a query timeout first).
//!
//! `all` is every kind but `stall`. Lies it cannot tell yet are listed in docs/RELIABILITY.md.

use medledger_proto::v1;

/// The variable naming the lying peer and its lies.
pub const FAULT_LIE: &str = "MEDLEDGER_FAULT_LIE";

/// Which lies this peer tells (none, in a correct peer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lies {
    pub genesis: bool,
    pub proof: bool,
    pub votes: bool,
    pub keys: bool,
    pub config: bool,
    pub stale: bool,
    pub revocations: bool,
    pub blocks: bool,
    pub withhold: bool,
    pub unchecked: bool,
    pub stall: bool,
}

impl Lies {
    /// Debug builds: the lies [`FAULT_LIE`] gives the peer named `name`.
    #[cfg(debug_assertions)]
    pub fn from_env(name: &str) -> Lies {
        std::env::var(FAULT_LIE)
            .ok()
            .and_then(|v| {
                let (peer, kinds) = v.split_once(':')?;
                (peer == name).then(|| Lies::parse(kinds))
            })
            .unwrap_or_default()
    }

    /// Release builds tell no lies.
    #[cfg(not(debug_assertions))]
    pub fn from_env(_name: &str) -> Lies {
        Lies::default()
    }

    #[cfg(debug_assertions)]
    fn parse(kinds: &str) -> Lies {
        let mut lies = Lies::default();
        for kind in kinds.split('+') {
            match kind {
                "genesis" => lies.genesis = true,
                "proof" => lies.proof = true,
                "votes" => lies.votes = true,
                "keys" => lies.keys = true,
                "config" => lies.config = true,
                "stale" => lies.stale = true,
                "revocations" => lies.revocations = true,
                "blocks" => lies.blocks = true,
                "withhold" => lies.withhold = true,
                "unchecked" => lies.unchecked = true,
                "stall" => lies.stall = true,
                "all" => {
                    lies = Lies {
                        genesis: true,
                        proof: true,
                        votes: true,
                        keys: true,
                        config: true,
                        stale: true,
                        revocations: true,
                        blocks: true,
                        withhold: true,
                        unchecked: true,
                        stall: lies.stall,
                    }
                }
                _ => {}
            }
        }
        lies
    }

    /// Whether this peer tells any lie (it says so in its log at start).
    pub fn any(self) -> bool {
        self != Lies::default()
    }
}

/// A genesis block of another network: the same peers and CA under another name, its
/// header consistent with it (so only the pinned network id tells it apart).
pub fn forged_genesis(block: &v1::Block) -> v1::Block {
    use prost::Message;
    use sha2::Digest;
    let mut forged = block.clone();
    if let Some(config) = forged.genesis.as_mut() {
        config.network_name.push_str("-forged");
        let tx_root = sha2::Sha256::digest(config.encode_to_vec()).to_vec();
        if let Some(header) = forged.header.as_mut() {
            header.tx_root = tx_root;
        }
    }
    forged
}

/// Block `block` whitewashed (`blocks`): every result a success, with no refusal code or
/// words; whether anything changed.
pub fn whitewash(block: &mut v1::Block) -> bool {
    let mut changed = false;
    for result in &mut block.results {
        let valid = v1::TxStatus::Valid as i32;
        let ok = v1::ResultCode::Ok as i32;
        changed |= result.status != valid || result.code != ok;
        result.status = valid;
        result.code = ok;
        result.message.clear();
    }
    changed
}

/// The liar's own X25519 public key (any 32 bytes are one): what it would decrypt with.
pub const LIAR_KEY: [u8; 32] = [0x42; 32];

/// A full page of revocation records the CA never signed, numbered from `from` as asked
/// (each names a serial, signed by nobody): only the signature check refuses them.
pub fn junk_revocations(from: u64) -> v1::GetRevocationsResponse {
    use prost::Message;
    let page = medledger_execution::revocations::REVOCATIONS_PER_PAGE;
    v1::GetRevocationsResponse {
        records: (from..from.saturating_add(page))
            .map(|sequence| v1::SignedRevocationRecord {
                record: v1::RevocationRecord {
                    sequence,
                    serial: sequence.to_be_bytes().to_vec(),
                    ..Default::default()
                }
                .encode_to_vec(),
                signature: vec![0; 64],
            })
            .collect(),
    }
}

/// A `check_access` answer with the keys it names replaced by [`LIAR_KEY`]; an
/// `access_keys` or `study_access_keys` answer (docs/adr/0017) with the envelope, the key
/// chain and the wrapped file key replaced by ones of the liar's making, under the real
/// salts.
pub fn forged_keys(function: &str, result: &[u8]) -> Vec<u8> {
    use prost::Message;
    if function == "sealed_reasons" {
        // Each reason replaced by one of the liar's sealing, under the real salt.
        let Ok(mut answer) = v1::SealedReasonsResult::decode(result) else {
            return result.to_vec();
        };
        for reason in &mut answer.reasons {
            reason.value = v1::SealedText {
                ciphertext: vec![0x5e; 40],
                readers: vec![v1::SealedTextReader {
                    public_key: LIAR_KEY.to_vec(),
                    wrapped_key: vec![0x5f; 80],
                }],
                key_commitment: vec![0x60; 32],
            }
            .encode_to_vec();
        }
        return answer.encode_to_vec();
    }
    if matches!(function, "access_keys" | "study_access_keys") {
        let Ok(mut answer) = v1::AccessKeysResult::decode(result) else {
            return result.to_vec();
        };
        answer.key_envelope = [LIAR_KEY.as_slice(), &[0x5a; 48]].concat();
        // A study copy's key is all a study answer holds: forged whether held or not (a
        // liar that withholds holds none), under a salt of the liar's.
        if !answer.wrapped_dek.is_empty() || function == "study_access_keys" {
            answer.wrapped_dek = [LIAR_KEY.as_slice(), &[0x5c; 48]].concat();
        }
        if function == "study_access_keys" && answer.wrapped_dek_salt.is_empty() {
            answer.wrapped_dek_salt = vec![0x5d; 32];
        }
        for link in &mut answer.key_chain {
            *link = [LIAR_KEY.as_slice(), &[0x5b; 48]].concat();
        }
        return answer.encode_to_vec();
    }
    let Ok(mut answer) = v1::CheckAccessResult::decode(result) else {
        return result.to_vec();
    };
    if let Some(key) = answer.category_key.as_mut() {
        key.public_key = LIAR_KEY.to_vec();
    }
    if !answer.study_key.is_empty() {
        answer.study_key = LIAR_KEY.to_vec();
    }
    answer.encode_to_vec()
}

/// A forged answer to a submission, from the real one: every other answer the outcome
/// turned into a permission refusal (the votes no longer cover it), and every other the
/// proof of the block's neighbouring leaf (another transaction) — or, alone in its block,
/// the refusal too.
pub fn forged_answer(real: &mut v1::SubmitResponse, turn: u64) {
    let Some(proof) = real.proof.as_mut() else {
        return;
    };
    real.message = "denied: you hold no permission on this record".into();
    if turn.is_multiple_of(2) || proof.leaf_count < 2 {
        if let Some(result) = proof.result.as_mut() {
            result.status = v1::TxStatus::ChaincodeError as i32;
            result.code = v1::ResultCode::PermissionDenied as i32;
            result.result.clear();
        }
    } else {
        // Another leaf's position, with this one's path: the path no longer leads to the
        // root for the envelope the client sent.
        proof.index = (proof.index + 1) % proof.leaf_count;
        proof.envelope_hash = vec![0x5a; 32];
    }
}

/// A forged configuration chain from the real `links` served from sequence `from`: each
/// real link's configuration altered under its real proof, or, when there is none, one
/// configuration of the liar's making (itself, `own_key`, the only admin) whose proof holds
/// its own vote alone.
pub fn forged_config_chain(
    links: &[v1::ConfigLink],
    from: u64,
    own_key: &[u8; 32],
    own_vote: impl Fn(&v1::BlockHeader) -> v1::ReplicaSignature,
) -> Vec<v1::ConfigLink> {
    use prost::Message;
    let forge = |config: &mut v1::NetworkConfig| {
        if let Some(p) = config.consensus.as_mut() {
            p.max_tx_lifetime_ms = 3_600_000;
        }
        config.admin_policy = Some(v1::AdminPolicy {
            admins: vec![own_key.to_vec()],
            threshold: 1,
        });
    };
    if links.is_empty() {
        let mut config = v1::NetworkConfig {
            sequence: from,
            previous: vec![0; 32],
            ..Default::default()
        };
        forge(&mut config);
        let header = v1::BlockHeader {
            number: 1,
            format: 2,
            ..Default::default()
        };
        return vec![v1::ConfigLink {
            envelope: v1::Envelope {
                kind: Some(v1::envelope::Kind::ConfigUpdate(v1::ConfigUpdate {
                    config: Some(config),
                    signatures: Vec::new(),
                    expires_at_ms: 0,
                })),
            }
            .encode_to_vec(),
            proof: Some(v1::CommitProof {
                votes: vec![own_vote(&header)],
                header: Some(header),
                ..Default::default()
            }),
        }];
    }
    links
        .iter()
        .map(|link| {
            let mut link = link.clone();
            if let Ok(mut envelope) = v1::Envelope::decode(link.envelope.as_slice())
                && let Some(v1::envelope::Kind::ConfigUpdate(update)) = envelope.kind.as_mut()
                && let Some(config) = update.config.as_mut()
            {
                forge(config);
                link.envelope = envelope.encode_to_vec();
            }
            link
        })
        .collect()
}
