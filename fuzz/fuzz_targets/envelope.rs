//! Fuzz target for envelope decoding and validation (`medledger_execution::validate`),
//! cargo-afl. The validator runs against a real network's genesis (fuzz/fixtures, written
//! by `tests/tests/fuzz_fixtures.rs`) and an in-memory ledger. The first input byte picks:
//! - odd: the rest is an envelope as a client or a lying replica would send it, raw;
//! - even: the rest steers the making of a transaction signed by the fixture clinician
//!   (function, arguments, nonce, certificate carried or stored, mutated, signature
//!   corrupted or not, network, time, what the ledger holds, private commitments and peers'
//!   acknowledgments of them), so that mutations reach every
//!   check behind a valid signature.
//!
//! Properties: no input panics; the outcome (status and transaction id) is the same on a
//! fresh validator and on one whose caches the same envelope, and others before it,
//! already filled (the caches must never change an outcome, or peers fork).
//! Seeds: `fuzz/corpus/envelope/`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arbitrary::Unstructured;
use medledger_crypto::{SignatureDomain, SigningIdentity, certificate_hash};
use medledger_execution::config::Configuration;
use medledger_execution::genesis::Genesis;
use medledger_execution::validate::{Checked, LedgerFacts, Refusal, Validator};
use medledger_proto::v1;
use prost::Message;

const GENESIS: &[u8] = include_bytes!("../fixtures/genesis.pb");
const CERTIFICATE: &[u8] = include_bytes!("../fixtures/clinician.der");
const KEY: &str = include_str!("../fixtures/clinician.key");
const TIME: &str = include_str!("../fixtures/time");
/// The genesis replicas' keys, by replica id: they sign private-data acknowledgments.
const PEER_KEYS: [&str; 4] = [
    include_str!("../fixtures/peer0.key"),
    include_str!("../fixtures/peer1.key"),
    include_str!("../fixtures/peer2.key"),
    include_str!("../fixtures/peer3.key"),
];

struct Facts {
    certificates: HashMap<[u8; 32], Vec<u8>>,
    used: HashSet<[u8; 32]>,
    revoked: HashSet<Vec<u8>>,
    sequence: u64,
    /// The configuration in force: the fixture genesis's.
    configuration: Configuration,
}

impl Facts {
    fn new(genesis: &Genesis) -> Facts {
        Facts {
            certificates: HashMap::new(),
            used: HashSet::new(),
            revoked: HashSet::new(),
            sequence: 0,
            configuration: genesis.configuration.clone(),
        }
    }
}

impl LedgerFacts for Facts {
    fn certificate(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        self.certificates.get(hash).cloned()
    }
    fn tx_id_used(&self, tx_id: &[u8; 32]) -> bool {
        self.used.contains(tx_id)
    }
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.contains(serial)
    }
    fn revocation_sequence(&self) -> u64 {
        self.sequence
    }
    fn configuration(&self) -> &Configuration {
        &self.configuration
    }
}

struct Fixture {
    genesis: Arc<Genesis>,
    signing: SigningIdentity,
    peers: Vec<SigningIdentity>,
    time_s: i64,
    warm: Validator,
}

/// What the fuzzer compares: the status and id of a refusal, or the id of a success.
fn outcome(result: &Result<Checked, Refusal>) -> (i32, Option<[u8; 32]>) {
    match result {
        Ok(checked) => (0, Some(checked.tx_id())),
        Err(refusal) => (refusal.status as i32, refusal.tx_id),
    }
}

fn function(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let known: Vec<&str> = medledger_chaincode::TRANSACTIONS
        .iter()
        .chain(medledger_chaincode::QUERIES.iter())
        .copied()
        .collect();
    Ok(if u.ratio(7, 8)? {
        known[u.choose_index(known.len())?].to_string()
    } else {
        u.arbitrary()?
    })
}

/// Private commitments (docs/adr/0017): mostly none; else mostly well-formed (32 bytes),
/// sometimes a repeat, another length, or more than the limit.
fn commitments(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<Vec<u8>>> {
    if u.ratio(3, 4)? {
        return Ok(Vec::new());
    }
    let count = if u.ratio(15, 16)? {
        u.int_in_range(1..=4usize)?
    } else {
        u.int_in_range(0..=medledger_crypto::MAX_PRIVATE_COMMITMENTS + 2)?
    };
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(count);
    for i in 0..count {
        out.push(match u.int_in_range(0..=15u8)? {
            0 if i > 0 => out[i - 1].clone(),
            1 => u.arbitrary()?,
            _ => {
                let salt: [u8; 32] = u.arbitrary()?;
                let len = u.int_in_range(0..=16usize)?;
                medledger_crypto::private_commitment(&salt, u.bytes(len)?).to_vec()
            }
        });
    }
    Ok(out)
}

/// Acknowledgments of `transaction`'s commitments: by any of the genesis replicas, under
/// its own replica id or another (sometimes out of range), over this transaction or
/// corrupted; sometimes none, sometimes with no commitments at all.
fn acks(
    u: &mut Unstructured<'_>,
    fx: &Fixture,
    transaction: &[u8],
) -> arbitrary::Result<Vec<v1::PrivateDataAck>> {
    let commitments = v1::Transaction::decode(transaction)
        .map(|t| t.private_commitments)
        .unwrap_or_default();
    if commitments.is_empty() && u.ratio(15, 16)? {
        return Ok(Vec::new());
    }
    let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(transaction).into();
    let count = u.int_in_range(0..=6usize)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let signer = u.choose_index(fx.peers.len())?;
        let replica = if u.ratio(7, 8)? {
            signer as u32
        } else {
            u.int_in_range(0..=7u32)?
        };
        let mut signature = medledger_crypto::sign_private_data_ack(
            &fx.peers[signer],
            &fx.genesis.network_id,
            &hash,
            &commitments,
        )
        .to_bytes()
        .to_vec();
        if u.ratio(1, 8)? {
            let at = u.choose_index(signature.len())?;
            signature[at] ^= 1;
        }
        out.push(v1::PrivateDataAck { replica, signature });
    }
    Ok(out)
}

/// An envelope made by the fixture clinician, steered by `u`, and the ledger it meets.
fn made(u: &mut Unstructured<'_>, fx: &Fixture) -> arbitrary::Result<(Vec<u8>, Facts, i64)> {
    let mut certificate = CERTIFICATE.to_vec();
    if u.ratio(1, 8)? && !certificate.is_empty() {
        let at = u.choose_index(certificate.len())?;
        certificate[at] ^= u.int_in_range(1..=255u8)?;
    }
    let cert_hash = if u.ratio(15, 16)? {
        certificate_hash(&certificate)
    } else {
        u.arbitrary()?
    };
    let nonce_len = if u.ratio(7, 8)? {
        32
    } else {
        u.int_in_range(0..=64usize)?
    };
    let nonce: Vec<u8> = (0..nonce_len)
        .map(|_| u.arbitrary())
        .collect::<Result<_, _>>()?;
    let carried = u.ratio(1, 2)?;
    let network_id = if u.ratio(15, 16)? {
        fx.genesis.network_id.to_vec()
    } else {
        u.arbitrary()?
    };
    let transaction = v1::Transaction {
        function: function(u)?,
        args: u.arbitrary()?,
        creator_cert_hash: cert_hash.to_vec(),
        creator_certificate: if carried {
            certificate.clone()
        } else {
            Vec::new()
        },
        nonce: nonce.clone(),
        client_time_ms: u.arbitrary()?,
        network_id,
        // Mostly within a few minutes of the fixture time, so that both sides of the expiry
        // and lifetime bounds are reached; sometimes anything.
        expires_at_ms: if u.ratio(7, 8)? {
            (fx.time_s * 1000).saturating_add(u.int_in_range(-600_000..=900_000i64)?)
        } else {
            u.arbitrary()?
        },
        private_commitments: commitments(u)?,
    }
    .encode_to_vec();
    let mut private_data_acks = acks(u, fx, &transaction)?;
    if u.ratio(7, 8)? {
        private_data_acks.sort_by_key(|a| a.replica);
    }
    // The creator's signature over them: mostly right, sometimes absent or of other bytes.
    let acks_signature = if private_data_acks.is_empty() && u.ratio(15, 16)? {
        Vec::new()
    } else if u.ratio(7, 8)? {
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&transaction).into();
        let listed: Vec<(u32, &[u8])> = private_data_acks
            .iter()
            .map(|a| (a.replica, a.signature.as_slice()))
            .collect();
        fx.signing
            .sign(
                SignatureDomain::PrivateDataAcks,
                &medledger_crypto::private_data_acks_statement(&hash, &listed),
            )
            .to_bytes()
            .to_vec()
    } else {
        u.arbitrary()?
    };
    let mut signature = fx
        .signing
        .sign(SignatureDomain::Transaction, &transaction)
        .to_bytes()
        .to_vec();
    if u.ratio(1, 8)? {
        let at = u.choose_index(signature.len())?;
        signature[at] ^= 1;
    }
    if u.ratio(1, 16)? {
        signature.truncate(u.int_in_range(0..=64usize)?);
    }
    let envelope = v1::Envelope {
        kind: Some(v1::envelope::Kind::Transaction(v1::SignedTransaction {
            transaction,
            signature,
            private_data_acks,
            acks_signature,
        })),
    }
    .encode_to_vec();
    let mut facts = Facts::new(&fx.genesis);
    if !carried || u.ratio(1, 4)? {
        facts.certificates.insert(cert_hash, certificate);
    }
    if u.ratio(1, 8)? {
        facts
            .used
            .insert(medledger_crypto::transaction_id(&nonce, &cert_hash));
    }
    if u.ratio(1, 16)? {
        facts.revoked.insert(u.arbitrary()?);
    }
    facts.sequence = u.arbitrary()?;
    let time_ms = match u.int_in_range(0..=3u8)? {
        0 => u.arbitrary()?,
        1 => (fx.time_s * 1000).saturating_add(u.int_in_range(-86_400_000..=86_400_000i64)?),
        _ => (fx.time_s * 1000).saturating_add(u.int_in_range(-600_000..=600_000i64)?),
    };
    Ok((envelope, facts, time_ms))
}

fn run(data: &[u8], fx: &Fixture) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (bytes, facts, time_ms) = if mode % 2 == 1 {
        (rest.to_vec(), Facts::new(&fx.genesis), fx.time_s * 1000)
    } else {
        let mut u = Unstructured::new(rest);
        match made(&mut u, fx) {
            Ok(made) => made,
            Err(_) => return,
        }
    };
    let fresh = Validator::new(fx.genesis.clone()).check(&bytes, time_ms, &facts);
    let warm = fx.warm.check(&bytes, time_ms, &facts);
    assert_eq!(
        outcome(&fresh),
        outcome(&warm),
        "a validator's caches changed an outcome"
    );
    let again = fx.warm.check(&bytes, time_ms, &facts);
    assert_eq!(outcome(&again), outcome(&fresh), "a second check differs");
}

fn main() {
    let block = v1::Block::decode(GENESIS).expect("fixture genesis decodes");
    let genesis = Arc::new(Genesis::from_block(block).expect("fixture genesis is valid"));
    let fx = Fixture {
        warm: Validator::new(genesis.clone()),
        genesis,
        signing: SigningIdentity::from_pkcs8_pem(KEY).expect("fixture key"),
        peers: PEER_KEYS
            .iter()
            .map(|key| SigningIdentity::from_pkcs8_pem(key).expect("fixture peer key"))
            .collect(),
        time_s: TIME.trim().parse().expect("fixture time"),
    };
    afl::fuzz!(|data: &[u8]| run(data, &fx));
}
