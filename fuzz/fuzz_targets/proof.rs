//! Fuzz target for commit proofs (`medledger_execution::proof::check_commit_proof`),
//! cargo-afl. A block of five outcomes is built at start over the fixture network (its
//! genesis and its four peers' keys, fuzz/fixtures), and every peer votes on its header. The
//! first input byte picks the envelope the client sent (0–4: one of the block's, 5: one it
//! does not hold); the rest is a `CommitProof` as a peer would send it. Whatever the bytes,
//! the check never panics, and whatever it accepts is the truth: the outcome the block holds
//! for that very envelope, under the real header. The seeds (`fuzz/corpus/proof/`) are the
//! block's valid proofs, written by this binary with `MEDLEDGER_PROOF_SEEDS=DIR`, so AFL
//! mutates proofs whose signatures verify.

use std::sync::Arc;

use medledger_crypto::{SignatureDomain, SigningIdentity};
use medledger_execution::block::{HEADER_FORMAT_2, envelope_hash, header_hash, result_leaves};
use medledger_execution::genesis::Genesis;
use medledger_execution::merkle::Tree;
use medledger_execution::proof::{build_proof, check_commit_proof, vote_bytes};
use medledger_proto::v1;
use prost::Message;

const GENESIS: &[u8] = include_bytes!("../fixtures/genesis.pb");
const PEER_KEYS: [&str; 4] = [
    include_str!("../fixtures/peer0.key"),
    include_str!("../fixtures/peer1.key"),
    include_str!("../fixtures/peer2.key"),
    include_str!("../fixtures/peer3.key"),
];

struct Fixture {
    genesis: Arc<Genesis>,
    envelopes: Vec<Vec<u8>>,
    results: Vec<v1::TxResult>,
    header: v1::BlockHeader,
    proofs: Vec<v1::CommitProof>,
}

fn fixture() -> Fixture {
    let genesis = Arc::new(
        Genesis::from_block(v1::Block::decode(GENESIS).expect("fixture genesis decodes"))
            .expect("fixture genesis is valid"),
    );
    let envelopes: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + i as usize]).collect();
    let statuses = [
        v1::TxStatus::Valid,
        v1::TxStatus::ChaincodeError,
        v1::TxStatus::Expired,
        v1::TxStatus::DuplicateTxId,
        v1::TxStatus::Valid,
    ];
    let results: Vec<v1::TxResult> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| v1::TxResult {
            tx_id: vec![i as u8; 32],
            status: *status as i32,
            result: vec![i as u8; i],
            creator: format!("creator-{i}"),
            function: "grant".into(),
            code: i as i32,
            ..Default::default()
        })
        .collect();
    let leaves = result_leaves(&envelopes, &results);
    let tree = Tree::new(leaves);
    let header = v1::BlockHeader {
        number: 9,
        prev_hash: vec![1; 32],
        tx_root: vec![2; 32],
        state_root: vec![3; 32],
        time_ms: 1_800_000_000_000,
        format: HEADER_FORMAT_2,
        result_root: tree.root().to_vec(),
        config: genesis.network_id.to_vec(),
    };
    let hash = header_hash(&header);
    let votes: Vec<v1::ReplicaSignature> = PEER_KEYS
        .iter()
        .enumerate()
        .map(|(i, pem)| v1::ReplicaSignature {
            replica: i as u32,
            signature: SigningIdentity::from_pkcs8_pem(pem)
                .expect("fixture peer key")
                .sign(
                    SignatureDomain::BlockVote,
                    &vote_bytes(&genesis.network_id, header.number, &hash),
                )
                .to_bytes()
                .to_vec(),
        })
        .collect();
    let proofs = (0..envelopes.len())
        .map(|i| {
            let mut proof = build_proof(
                &header,
                votes[..2 + i % 3].to_vec(),
                &tree,
                i,
                &envelope_hash(&envelopes[i]),
                &results[i],
            )
            .expect("a leaf of the tree");
            proof.votes.rotate_left(i % 2);
            proof
        })
        .collect();
    Fixture {
        genesis,
        envelopes,
        results,
        header,
        proofs,
    }
}

fn run(data: &[u8], fx: &Fixture) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let pick = usize::from(pick % 6);
    let sent = match fx.envelopes.get(pick) {
        Some(envelope) => envelope_hash(envelope),
        None => [0xee; 32],
    };
    let Ok(proof) = v1::CommitProof::decode(rest) else {
        return;
    };
    if let Ok(proven) = check_commit_proof(&fx.genesis, &proof, &sent) {
        assert!(
            pick < fx.envelopes.len(),
            "a proof for an envelope the block does not hold"
        );
        assert_eq!(
            header_hash(&proven.header),
            header_hash(&fx.header),
            "a header no peer signed"
        );
        assert_eq!(
            proven.result, fx.results[pick],
            "an outcome the block does not hold"
        );
    }
}

fn main() {
    let fx = fixture();
    if let Some(dir) = std::env::var_os("MEDLEDGER_PROOF_SEEDS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("seed directory");
        for (i, proof) in fx.proofs.iter().enumerate() {
            let mut seed = vec![i as u8];
            seed.extend(proof.encode_to_vec());
            run(&seed, &fx);
            std::fs::write(dir.join(format!("leaf-{i}")), seed).expect("write a seed");
        }
        return;
    }
    afl::fuzz!(|data: &[u8]| run(data, &fx));
}
