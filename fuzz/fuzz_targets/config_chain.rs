//! Fuzz target for following the configuration chain
//! (`medledger_execution::chain::ConfigChain::follow_new`), cargo-afl. At start the fixture
//! network (fuzz/fixtures: its genesis, both admins, the four peers' keys) executes three
//! blocks in memory: configuration 1 (approved by both admins), configuration 2, and a
//! clinician's transaction under configuration 2; every peer votes on each header. The input
//! is a `GetConfigChainResponse` as a lying peer would send it, followed link by link.
//! Properties: no input panics; whatever is followed is the true chain's prefix (the
//! configurations the admins approved, in order, each proven by its own block); a refused
//! link changes nothing. Seeds (`fuzz/corpus/config_chain/`): true answers, written by this
//! binary with `MEDLEDGER_CONFIG_CHAIN_SEEDS=DIR`.

use std::sync::Arc;

use medledger_crypto::{SignatureDomain, SigningIdentity, certificate_hash};
use medledger_execution::block::{envelope_hash, header_hash};
use medledger_execution::chain::ConfigChain;
use medledger_execution::config::{approval_bytes, config_hash};
use medledger_execution::execute::{CertifiedBatch, execute_block};
use medledger_execution::genesis::Genesis;
use medledger_execution::memory::MemoryState;
use medledger_execution::merkle::Tree;
use medledger_execution::proof::{build_proof, vote_bytes};
use medledger_execution::state::BlockCommit;
use medledger_execution::validate::Validator;
use medledger_pbft as pbft;
use medledger_proto::v1;
use prost::Message;

const GENESIS: &[u8] = include_bytes!("../fixtures/genesis.pb");
const TIME: &str = include_str!("../fixtures/time");
const ADMINS: [(&[u8], &str); 2] = [
    (
        include_bytes!("../fixtures/admin.der"),
        include_str!("../fixtures/admin.key"),
    ),
    (
        include_bytes!("../fixtures/admin2.der"),
        include_str!("../fixtures/admin2.key"),
    ),
];
const CLINICIAN: (&[u8], &str) = (
    include_bytes!("../fixtures/clinician.der"),
    include_str!("../fixtures/clinician.key"),
);
const PEER_KEYS: [&str; 4] = [
    include_str!("../fixtures/peer0.key"),
    include_str!("../fixtures/peer1.key"),
    include_str!("../fixtures/peer2.key"),
    include_str!("../fixtures/peer3.key"),
];

struct Fixture {
    genesis: Arc<Genesis>,
    /// The hashes of configurations 1 and 2.
    hashes: Vec<[u8; 32]>,
    /// The true links to configurations 1 and 2, and a transaction's proof under 2.
    links: Vec<v1::ConfigLink>,
    other: v1::ConfigLink,
}

fn key(pem: &str) -> SigningIdentity {
    SigningIdentity::from_pkcs8_pem(pem).expect("fixture key")
}

fn envelope(kind: v1::envelope::Kind) -> Vec<u8> {
    v1::Envelope { kind: Some(kind) }.encode_to_vec()
}

fn fixture() -> Fixture {
    let genesis = Arc::new(
        Genesis::from_block(v1::Block::decode(GENESIS).expect("fixture genesis decodes"))
            .expect("fixture genesis is valid"),
    );
    let time_ms = TIME.trim().parse::<i64>().expect("fixture time") * 1000;
    let validator = Validator::new(genesis.clone());
    let mut state = MemoryState::new(&genesis);
    let peers: Vec<SigningIdentity> = PEER_KEYS.iter().map(|pem| key(pem)).collect();
    let execute = |state: &mut MemoryState, payloads: Vec<Vec<u8>>| -> BlockCommit {
        let batch = pbft::Batch {
            timestamp_ms: time_ms as u64,
            requests: payloads
                .into_iter()
                .map(|payload| pbft::Request {
                    tx_id: envelope_hash(&payload),
                    payload,
                })
                .collect(),
        };
        let commit = execute_block(
            &*state,
            &validator,
            &CertifiedBatch {
                seq: state.height() + 1,
                batch: &batch,
                commits: &[],
            },
        )
        .expect("fixture block executes");
        state.apply(&commit).expect("fixture block applies");
        commit
    };
    let link = |commit: &BlockCommit, index: usize, voters: &[usize]| -> v1::ConfigLink {
        let header = commit.block.header.as_ref().expect("a header");
        let hash = header_hash(header);
        let votes = voters
            .iter()
            .map(|&r| v1::ReplicaSignature {
                replica: r as u32,
                signature: peers[r]
                    .sign(
                        SignatureDomain::BlockVote,
                        &vote_bytes(&genesis.network_id, header.number, &hash),
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
    };
    let approved = |state: &MemoryState, lifetime_ms: u64| -> (v1::ConfigUpdate, [u8; 32]) {
        let mut value = validator
            .configuration_in_force(state)
            .expect("a configuration")
            .successor();
        value
            .consensus
            .as_mut()
            .expect("consensus parameters")
            .max_tx_lifetime_ms = lifetime_ms;
        let hash = config_hash(&value);
        let expires_at_ms = time_ms + 3_600_000;
        let signed = approval_bytes(&genesis.network_id, &hash, expires_at_ms);
        let signatures = ADMINS
            .iter()
            .map(|(der, pem)| v1::AdminSignature {
                certificate: der.to_vec(),
                signature: key(pem)
                    .sign(SignatureDomain::ConfigUpdate, &signed)
                    .to_bytes()
                    .to_vec(),
            })
            .collect();
        (
            v1::ConfigUpdate {
                expires_at_ms,
                signatures,
                config: Some(value),
            },
            hash,
        )
    };
    let (first, first_hash) = approved(&state, 60_000);
    let one = execute(
        &mut state,
        vec![envelope(v1::envelope::Kind::ConfigUpdate(first))],
    );
    let (second, second_hash) = approved(&state, 120_000);
    let two = execute(
        &mut state,
        vec![envelope(v1::envelope::Kind::ConfigUpdate(second))],
    );
    // A clinician's transaction under configuration 2: its proof is no link.
    let transaction = v1::Transaction {
        function: "register_patient".into(),
        args: vec![1],
        creator_cert_hash: certificate_hash(CLINICIAN.0).to_vec(),
        creator_certificate: CLINICIAN.0.to_vec(),
        nonce: vec![1; 24],
        client_time_ms: time_ms,
        network_id: genesis.network_id.to_vec(),
        expires_at_ms: time_ms + 50_000,
        private_commitments: Vec::new(),
    }
    .encode_to_vec();
    let signature = key(CLINICIAN.1)
        .sign(SignatureDomain::Transaction, &transaction)
        .to_bytes()
        .to_vec();
    let three = execute(
        &mut state,
        vec![envelope(v1::envelope::Kind::Transaction(
            v1::SignedTransaction {
                transaction,
                signature,
                private_data_acks: Vec::new(),
                acks_signature: Vec::new(),
            },
        ))],
    );
    Fixture {
        hashes: vec![first_hash, second_hash],
        links: vec![link(&one, 0, &[0, 2]), link(&two, 0, &[1, 3])],
        other: link(&three, 0, &[0, 1, 2]),
        genesis,
    }
}

fn run(data: &[u8], fx: &Fixture) {
    let Ok(answer) = v1::GetConfigChainResponse::decode(data) else {
        return;
    };
    let mut chain = ConfigChain::new(&fx.genesis);
    for link in answer.links.iter().take(8) {
        let before = chain.current().sequence;
        let followed = chain.follow_new(link);
        let now = chain.current();
        if followed.is_err() {
            assert_eq!(now.sequence, before, "a refused link changed the chain");
        }
        assert!(
            now.sequence <= fx.hashes.len() as u64,
            "a configuration no admin approved"
        );
        if now.sequence > 0 {
            assert_eq!(
                now.hash,
                fx.hashes[now.sequence as usize - 1],
                "a configuration other than the approved one"
            );
        }
        assert_eq!(chain.links().len() as u64, now.sequence);
        for (followed, truth) in chain.links().iter().zip(&fx.links) {
            assert_eq!(
                followed.envelope, truth.envelope,
                "a link to another update"
            );
        }
    }
}

fn main() {
    let fx = fixture();
    if let Some(dir) = std::env::var_os("MEDLEDGER_CONFIG_CHAIN_SEEDS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("seed directory");
        let answers = [
            fx.links.clone(),
            vec![
                fx.links[1].clone(),
                fx.links[0].clone(),
                fx.links[1].clone(),
            ],
            vec![fx.links[0].clone(), fx.other.clone()],
        ];
        for (i, links) in answers.into_iter().enumerate() {
            let seed = v1::GetConfigChainResponse { links }.encode_to_vec();
            run(&seed, &fx);
            std::fs::write(dir.join(format!("chain-{i}")), seed).expect("write a seed");
        }
        // The whole true chain is followed.
        let mut chain = ConfigChain::new(&fx.genesis);
        for link in &fx.links {
            chain.follow(link).expect("the true chain follows");
        }
        return;
    }
    afl::fuzz!(|data: &[u8]| run(data, &fx));
}
