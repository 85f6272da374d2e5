//! Private data on four real peers (docs/adr/0017, step 1): a transaction commits to a
//! value it never carries; the peers that acknowledged it hold the value once the
//! transaction commits, in their `private` column family and in no block; and every way of
//! sending values or acknowledgments that must not pass is refused with its own status.

use std::time::Duration;

use medledger_proto::v1;
use medledger_sdk::peer::{PeerSet, TX_STATUS_METADATA};
use medledger_sdk::wallet::Wallet;
use medledger_tests::TestNetwork;

#[path = "common/records.rs"]
mod records;
use prost::Message;
use rand_core::RngCore;
use records::{item_args, read_grant_args, register_args};

/// How often the peers reconcile private values (`medledger-peer serve --reconcile-seconds`).
const RECONCILE_SECONDS: &str = "MEDLEDGER_PEER_RECONCILE_SECONDS";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(net: &TestNetwork, wallet: &str) -> PeerSet {
    let wallet = Wallet::open(&net.wallet(wallet)).unwrap();
    PeerSet::connect(&wallet, &net.address(0)).await.unwrap()
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand_core::OsRng.fill_bytes(&mut out);
    out
}

/// The signed transaction inside `envelope`.
fn signed_of(envelope: &mut v1::Envelope) -> &mut v1::SignedTransaction {
    match &mut envelope.kind {
        Some(v1::envelope::Kind::Transaction(signed)) => signed,
        _ => panic!("not a transaction"),
    }
}

/// `PutPrivateData` to peer `i` alone, as sent.
async fn put(
    peers: &PeerSet,
    i: usize,
    transaction: &[u8],
    values: Vec<v1::PrivateValue>,
) -> Result<v1::PrivateDataAck, tonic::Status> {
    peers
        .peer(i)
        .put_private_data(v1::PutPrivateDataRequest {
            transaction: transaction.to_vec(),
            values,
        })
        .await
        .map(|r| r.into_inner().ack.expect("an acknowledgment"))
}

/// Submits `envelope` to peer `i` alone; it must be refused.
async fn refused(peers: &PeerSet, i: usize, envelope: v1::Envelope) -> tonic::Status {
    peers
        .peer(i)
        .submit(v1::SubmitRequest {
            envelope: Some(envelope),
        })
        .await
        .expect_err("the peer must refuse this")
}

/// A read grant of record `pseudonym` to `grantee`, its envelope `envelope` sent as private
/// data to peers `replicas` alone, acknowledged by them: (commitment, envelope to submit).
async fn grant_acknowledged_by(
    peers: &PeerSet,
    replicas: &[usize],
    pseudonym: &[u8; 32],
    grantee: &str,
    envelope: &[u8],
) -> ([u8; 32], v1::Envelope) {
    acknowledged_by(peers, replicas, "grant", envelope, |commitment| {
        read_grant_args(pseudonym, grantee, commitment)
    })
    .await
}

/// A transaction calling `function` with the arguments `args` makes of the commitment to
/// `value`, sent as private data to peers `replicas` alone and acknowledged by them:
/// (commitment, envelope to submit).
async fn acknowledged_by(
    peers: &PeerSet,
    replicas: &[usize],
    function: &str,
    value: &[u8],
    args: impl FnOnce(&[u8; 32]) -> Vec<u8>,
) -> ([u8; 32], v1::Envelope) {
    let mut private = peers.private_data();
    let commitment = private.add(value.to_vec());
    let (_, mut envelope) =
        peers.transaction_committing(function, args(&commitment), private.commitments().to_vec());
    let transaction = signed_of(&mut envelope).transaction.clone();
    let mut acks = Vec::new();
    for &i in replicas {
        acks.push(
            put(peers, i, &transaction, private.values().to_vec())
                .await
                .unwrap(),
        );
    }
    peers.acknowledged(&mut envelope, acks);
    (commitment, envelope)
}

/// `peers`' committed `record_access` of item `item_id` of record `pseudonym`: (the block
/// it committed in, its result).
async fn recorded_access(
    peers: &PeerSet,
    pseudonym: &[u8; 32],
    item_id: &str,
) -> (u64, v1::RecordAccessResult) {
    let committed = peers
        .submit(
            "record_access",
            v1::RecordAccessArgs {
                pseudonym: pseudonym.to_vec(),
                item_id: item_id.into(),
            }
            .encode_to_vec(),
        )
        .await
        .unwrap()
        .into_valid()
        .unwrap();
    let result = v1::RecordAccessResult::decode(committed.result.as_slice()).unwrap();
    (committed.block, result)
}

fn status_kind(status: &tonic::Status) -> Option<i32> {
    status
        .metadata()
        .get(TX_STATUS_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[test]
fn private_values_stay_off_the_blocks_with_the_peers_that_acknowledged_them() {
    let mut net = TestNetwork::start(4);
    net.member("patient", "patient");
    net.member("mallory", "patient");
    let rt = runtime();
    let (stored, (refused_commitment, refused_value)) = rt.block_on(async {
        let peers = connect(&net, "patient").await;
        let mallory = connect(&net, "mallory").await;

        // The happy path: a read grant whose key envelope is a private value, which no
        // block carries.
        let pseudonym: [u8; 32] = random();
        let registered = peers
            .submit("register_patient", register_args(&pseudonym))
            .await
            .unwrap();
        assert!(registered.is_valid(), "{registered:?}");
        let secret: [u8; 48] = random();
        let mut private = peers.private_data();
        let commitment = private.add(secret.to_vec());
        let committed = peers
            .submit_private(
                "grant",
                read_grant_args(&pseudonym, "dr.a", &commitment),
                &private,
            )
            .await
            .unwrap();
        assert!(committed.is_valid(), "{committed:?}");

        // Values for a transaction the chaincode refuses (no such record), and for one that
        // refers to none of them: held nowhere once they commit.
        let refused_secret: [u8; 48] = random();
        let mut again = peers.private_data();
        let refused_commitment = again.add(refused_secret.to_vec());
        let unknown = peers
            .submit_private(
                "grant",
                read_grant_args(&random(), "dr.a", &refused_commitment),
                &again,
            )
            .await
            .unwrap();
        assert!(!unknown.is_valid(), "{unknown:?}");
        let unreferenced = peers
            .submit_private("register_patient", register_args(&random()), &again)
            .await
            .unwrap();
        assert!(!unreferenced.is_valid(), "{unreferenced:?}");

        // PutPrivateData refusals, on one peer, for a second grant with a value of its own
        // (a commitment is taken once: the ledger refuses it a second time).
        let mut private = peers.private_data();
        let second = private.add(random::<48>().to_vec());
        let commitments = private.commitments().to_vec();
        // A grant on the record: valid once acknowledged (a patient registers one record).
        let (_, mut envelope) = peers.transaction_committing(
            "grant",
            read_grant_args(&pseudonym, "dr.a", &second),
            commitments.clone(),
        );
        let transaction = signed_of(&mut envelope).transaction.clone();
        let good = private.values().to_vec();
        let invalid = |e: Result<v1::PrivateDataAck, tonic::Status>, what: &str| {
            let status = e.expect_err(what);
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{what}: {status:?}"
            );
        };
        let mut wrong = good.clone();
        wrong[0].value[0] ^= 1;
        invalid(
            put(&peers, 1, &transaction, wrong).await,
            "a value that is not the one committed to",
        );
        let mut salted = good.clone();
        salted[0].salt_seed[0] ^= 1;
        invalid(put(&peers, 1, &transaction, salted).await, "another salt");
        invalid(put(&peers, 1, &transaction, Vec::new()).await, "no value");
        let mut twice = good.clone();
        twice.push(good[0].clone());
        invalid(put(&peers, 1, &transaction, twice).await, "a value twice");
        invalid(
            put(&peers, 1, b"not a transaction", good.clone()).await,
            "not a transaction",
        );
        // Oversized: a transaction committing to a value past 8 KiB.
        let mut large = peers.private_data();
        large.add(vec![1; (8 << 10) + 1]);
        let (_, mut large_envelope) = peers.transaction_committing(
            "register_patient",
            register_args(&random()),
            large.commitments().to_vec(),
        );
        let large_tx = signed_of(&mut large_envelope).transaction.clone();
        invalid(
            put(&peers, 1, &large_tx, large.values().to_vec()).await,
            "a value past 8 KiB",
        );
        // Another patient cannot send a transaction's values.
        let status = put(&mallory, 1, &transaction, good.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        // Nor, having learned the values and their seeds (from a Byzantine peer that held
        // them), have the patient's commitment acknowledged for a transaction of her own,
        // to claim it first and have the patient's grant refused: every peer derives her
        // salts from her key, and they match no commitment.
        let mallorys: [u8; 32] = random();
        let registered = mallory
            .submit("register_patient", register_args(&mallorys))
            .await
            .unwrap();
        assert!(registered.is_valid(), "{registered:?}");
        let (_, mut preclaim) = mallory.transaction_committing(
            "grant",
            read_grant_args(&mallorys, "dr.m", &second),
            commitments.clone(),
        );
        let preclaim_tx = signed_of(&mut preclaim).transaction.clone();
        for i in 0..4 {
            invalid(
                put(&mallory, i, &preclaim_tx, good.clone()).await,
                "another creator's values for one's own transaction",
            );
        }
        // An expired transaction.
        let mut expired = v1::Transaction::decode(transaction.as_slice()).unwrap();
        expired.expires_at_ms = 1;
        let status = put(&peers, 1, &expired.encode_to_vec(), good.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");

        // Submission refusals: too few, forged, repeated and borrowed acknowledgments.
        let ack0 = put(&peers, 0, &transaction, good.clone()).await.unwrap();
        let ack1 = put(&peers, 1, &transaction, good.clone()).await.unwrap();
        // Acknowledgments as their creator puts them in (ordered, countersigned).
        let with = |acks: Vec<v1::PrivateDataAck>| {
            let mut e = envelope.clone();
            peers.acknowledged(&mut e, acks);
            e
        };
        let unacknowledged = |status: tonic::Status, what: &str| {
            assert_eq!(
                status.code(),
                tonic::Code::FailedPrecondition,
                "{what}: {status:?}"
            );
            assert_eq!(
                status_kind(&status),
                Some(v1::TxStatus::PrivateDataUnacknowledged as i32),
                "{what}: {status:?}"
            );
        };
        unacknowledged(
            refused(&peers, 2, with(vec![ack0.clone()])).await,
            "one acknowledgment",
        );
        unacknowledged(refused(&peers, 2, with(Vec::new())).await, "none");
        let status = refused(&peers, 2, with(vec![ack0.clone(), ack0.clone()])).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "one peer's twice: {status:?}"
        );
        // A relaying peer's copy: the creator's acknowledgments, one dropped.
        let mut relayed = with(vec![ack0.clone(), ack1.clone()]);
        signed_of(&mut relayed).private_data_acks.pop();
        let status = refused(&peers, 2, relayed).await;
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "a dropped one: {status:?}"
        );
        let mut forged = ack1.clone();
        forged.signature[3] ^= 1;
        unacknowledged(
            refused(&peers, 2, with(vec![ack0.clone(), forged])).await,
            "a forged acknowledgment",
        );
        let mut renamed = ack1.clone();
        renamed.replica = 3;
        unacknowledged(
            refused(&peers, 2, with(vec![ack0.clone(), renamed])).await,
            "an acknowledgment under another peer's replica id",
        );
        // Acknowledgments of another transaction with the same commitments.
        let (_, mut other) = peers.transaction_committing(
            "grant",
            read_grant_args(&pseudonym, "dr.b", &second),
            commitments.clone(),
        );
        let other_tx = signed_of(&mut other).transaction.clone();
        let borrowed = vec![
            put(&peers, 2, &other_tx, good.clone()).await.unwrap(),
            put(&peers, 3, &other_tx, good.clone()).await.unwrap(),
        ];
        unacknowledged(
            refused(&peers, 2, with(borrowed)).await,
            "acknowledgments of another transaction",
        );
        // Acknowledgments where the transaction commits to nothing.
        let (_, mut plain) = peers.transaction("register_patient", register_args(&random()));
        peers.acknowledged(&mut plain, vec![ack0.clone(), ack1.clone()]);
        let status = refused(&peers, 2, plain).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        // With the two, it commits.
        let accepted = peers.submit_envelope(with(vec![ack0, ack1])).await.unwrap();
        assert!(accepted.is_valid(), "{accepted:?}");
        // Once it is in a block, its values are not taken again (they would only wait).
        let status = put(&peers, 3, &transaction, good.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");

        // Wait until every peer has every block, then read them.
        let height = accepted.block;
        assert!(height > 0);
        for i in 0..4 {
            loop {
                let status = peers.peer(i).get_status(v1::GetStatusRequest {}).await;
                if status.is_ok_and(|s| s.into_inner().height >= height) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        ((commitment, secret), (refused_commitment, refused_secret))
    });

    // The peers that acknowledged hold the value (f+1 at least); none holds the refused
    // transaction's; no block of any peer carries either.
    let genesis = medledger_execution::genesis::Genesis::from_block(
        v1::Block::decode(std::fs::read(&net.genesis).unwrap().as_slice()).unwrap(),
    )
    .unwrap();
    let (commitment, secret) = stored;
    for peer in &mut net.peers {
        peer.kill();
    }
    let mut holders = 0;
    for peer in &net.peers {
        let ledger = medledger_peer::ledger::Ledger::open(&peer.data_dir.join("ledger"), &genesis)
            .unwrap_or_else(|e| panic!("{}: {e}", peer.data_dir.display()));
        // The values went to f+1 peers (more only when one failed): those hold them.
        if let Some(held) = ledger.private_value(&commitment).unwrap() {
            holders += 1;
            assert_eq!(held.value, secret);
            assert_eq!(
                medledger_crypto::private_commitment(&held.salt, &held.value),
                commitment
            );
        }
        // Positive control: the commitment, which the transaction does carry, is found.
        let mut commitment_seen = false;
        for number in 1..=ledger.height() {
            let block = ledger.block(number).unwrap().unwrap().encode_to_vec();
            commitment_seen |= block.windows(32).any(|w| w == commitment);
            for needle in [&secret[..], &refused_value[..]] {
                assert!(
                    !block.windows(needle.len()).any(|w| w == needle),
                    "block {number} of {} carries a private value",
                    peer.data_dir.display()
                );
            }
        }
        assert!(commitment_seen, "the scan finds what a block holds");
        assert!(ledger.private_value(&refused_commitment).unwrap().is_none());
    }
    assert!(holders >= 2, "f+1 peers hold the value, {holders} do");
}

/// An acknowledgment vouches for values that survive a restart (docs/adr/0017 §4): two
/// peers acknowledge, both are killed and started again before the transaction is
/// submitted, and once it commits both hold the values.
#[test]
fn acknowledged_values_survive_a_restart_before_the_block() {
    let mut net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    let (commitment, secret, envelope) = rt.block_on(async {
        let peers = connect(&net, "patient").await;
        let pseudonym: [u8; 32] = random();
        let registered = peers
            .submit("register_patient", register_args(&pseudonym))
            .await
            .unwrap();
        assert!(registered.is_valid());
        let secret: [u8; 48] = random();
        let (commitment, envelope) =
            grant_acknowledged_by(&peers, &[1, 2], &pseudonym, "dr.a", &secret).await;
        (commitment, secret, envelope)
    });
    for i in [1, 2] {
        net.peers[i].kill();
        net.peers[i].restart();
    }
    rt.block_on(async {
        let peers = connect(&net, "patient").await;
        let committed = peers.submit_envelope(envelope).await.unwrap();
        assert!(committed.is_valid(), "{committed:?}");
        for i in [1, 2] {
            loop {
                let status = peers.peer(i).get_status(v1::GetStatusRequest {}).await;
                if status.is_ok_and(|s| s.into_inner().height >= committed.block) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    for i in [1, 2] {
        net.peers[i].kill();
        let ledger =
            medledger_peer::ledger::Ledger::open_read_only(&net.peers[i].data_dir.join("ledger"))
                .unwrap();
        let held = ledger.private_value(&commitment).unwrap();
        assert_eq!(
            held.map(|h| h.value),
            Some(secret.to_vec()),
            "peer{i} after its restart"
        );
        assert!(
            ledger.pending_private().unwrap().is_empty(),
            "peer{i}: taken in the block's write"
        );
    }
}

/// A grantee's keys are read at query time (docs/adr/0017 §5): each peer answers the values
/// it holds, and the client gathers them, each checked against the commitment the committed
/// access names, even when no one peer holds them all (the envelope and the file key went
/// to disjoint peers, as a put widened past failed peers leaves them); the access's result,
/// in the block, holds no key.
#[test]
fn a_grantee_gathers_keys_that_different_peers_hold() {
    // Without reconciliation, which would soon give every value to every peer.
    let net = TestNetwork::start_with_env(4, &[], &[(RECONCILE_SECONDS, "0")]);
    net.member("patient", "patient");
    net.member("dr-a", "clinician");
    net.member("dr-b", "clinician");
    let rt = runtime();
    rt.block_on(async {
        let patient = connect(&net, "patient").await;
        let doctor = connect(&net, "dr-a").await;
        let other = connect(&net, "dr-b").await;
        let pseudonym: [u8; 32] = random();
        assert!(
            patient
                .submit("register_patient", register_args(&pseudonym))
                .await
                .unwrap()
                .is_valid()
        );
        // The envelope goes to peers 0 and 1 alone (f+1): peers 2 and 3 never hold it.
        let envelope: [u8; 80] = random();
        let (commitment, grant) =
            grant_acknowledged_by(&patient, &[0, 1], &pseudonym, "dr-a", &envelope).await;
        assert!(patient.submit_envelope(grant).await.unwrap().is_valid());
        // The item's wrapped file key goes beside the transaction too, to peers 2 and 3
        // alone: no peer holds both values.
        let item = item_args(&pseudonym, "item-0");
        let (_, add_item) =
            acknowledged_by(&patient, &[2, 3], "add_item", &item.wrapped_dek, |c| {
                v1::AddItemArgs {
                    wrapped_dek: Vec::new(),
                    wrapped_dek_commitment: c.to_vec(),
                    ..item.clone()
                }
                .encode_to_vec()
            })
            .await;
        patient
            .submit_envelope(add_item)
            .await
            .unwrap()
            .into_valid()
            .unwrap();

        let (height, access) = recorded_access(&doctor, &pseudonym, "item-0").await;
        assert!(access.key_envelope.is_empty(), "no key in a block's result");
        assert_eq!(access.key_envelope_commitment, commitment);

        let args = v1::AccessKeysArgs {
            pseudonym: pseudonym.to_vec(),
            item_id: "item-0".into(),
        };
        // Each peer answers the values it holds, and nothing in place of the others.
        for i in 0..4 {
            let answer = doctor
                .peer(i)
                .query(v1::QueryRequest {
                    function: "access_keys".into(),
                    args: args.encode_to_vec(),
                    min_height: height,
                })
                .await
                .unwrap_or_else(|e| panic!("peer{i}: {e:?}"))
                .into_inner();
            let keys = v1::AccessKeysResult::decode(answer.result.as_slice()).unwrap();
            let holds_envelope = i < 2;
            assert_eq!(keys.key_envelope.is_empty(), !holds_envelope, "peer{i}");
            assert_eq!(
                keys.key_envelope_salt.is_empty(),
                !holds_envelope,
                "peer{i}"
            );
            assert_eq!(keys.wrapped_dek.is_empty(), holds_envelope, "peer{i}");
            assert_eq!(keys.wrapped_dek_salt.is_empty(), holds_envelope, "peer{i}");
        }
        let keys = doctor
            .access_keys(&pseudonym, "item-0", &access)
            .await
            .unwrap();
        assert_eq!(keys.key_envelope, envelope);
        assert_eq!(keys.wrapped_dek, [6; 80], "the item's wrapped file key");
        assert!(access.item.as_ref().unwrap().wrapped_dek.is_empty());
        // The owner reads the wrapped file key alone, from the peers that hold it.
        let (_, own_access) = recorded_access(&patient, &pseudonym, "item-0").await;
        let own = patient
            .access_keys(&pseudonym, "item-0", &own_access)
            .await
            .unwrap();
        assert_eq!(own.wrapped_dek, [6; 80]);
        assert!(own.key_envelope.is_empty());
        // Another clinician is refused by every peer, the one that holds it included.
        let status = other
            .peer(0)
            .query(v1::QueryRequest {
                function: "access_keys".into(),
                args: args.encode_to_vec(),
                min_height: height,
            })
            .await
            .expect_err("dr-b holds no permission");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        // Keys that do not match the committed access are passed over by the client.
        let mut forged = access.clone();
        forged.key_envelope_commitment = vec![9; 32];
        assert!(
            doctor
                .access_keys(&pseudonym, "item-0", &forged)
                .await
                .is_err()
        );
    });
}

/// A Byzantine peer that acknowledges private values without keeping them (lie `withhold`)
/// and holds every query open without answering (lie `stall`), the first peer the record's
/// values are placed on: its acknowledgment counts toward the f+1, so one correct peer
/// holds each value, and the grantee still reads every key, gathered past the liar once
/// its query times out.
#[test]
fn a_peer_that_acknowledges_without_keeping_is_passed_over() {
    // Without reconciliation, which would soon give the values to every peer and hide a
    // reader that fails to get past the liar.
    let mut net = TestNetwork::start_with_env(4, &[], &[(RECONCILE_SECONDS, "0")]);
    net.member("patient", "patient");
    net.member("dr-a", "clinician");
    let rt = runtime();
    let pseudonym: [u8; 32] = random();
    let liar = rt.block_on(async {
        let names = connect(&net, "patient").await.names();
        names[medledger_sdk::peer::placement_start(&pseudonym, names.len())].clone()
    });
    let index: usize = liar.strip_prefix("peer").unwrap().parse().unwrap();
    net.peers[index].kill();
    net.peers[index].env.push((
        medledger_peer::lies::FAULT_LIE.to_string(),
        format!("{liar}:withhold+stall"),
    ));
    net.peers[index].restart();
    let (envelope_commitment, file_key_commitment) = rt.block_on(async {
        let patient = connect(&net, "patient").await;
        let doctor = connect(&net, "dr-a").await;
        let registered = patient
            .submit("register_patient", register_args(&pseudonym))
            .await
            .unwrap();
        assert!(registered.is_valid(), "{registered:?}");
        let envelope: [u8; 80] = random();
        let mut private = patient.private_data_of(&pseudonym);
        let commitment = private.add(envelope.to_vec());
        let granted = patient
            .submit_private(
                "grant",
                read_grant_args(&pseudonym, "dr-a", &commitment),
                &private,
            )
            .await
            .unwrap();
        assert!(granted.is_valid(), "{granted:?}");
        let mut item = item_args(&pseudonym, "item-0");
        let item_key = patient.item_key_private(&mut item);
        patient
            .submit_maybe_private("add_item", item.encode_to_vec(), &item_key)
            .await
            .unwrap()
            .into_valid()
            .unwrap();
        let (_, access) = recorded_access(&doctor, &pseudonym, "item-0").await;
        let keys = doctor
            .access_keys(&pseudonym, "item-0", &access)
            .await
            .unwrap();
        assert_eq!(keys.key_envelope, envelope);
        assert_eq!(keys.wrapped_dek, [6; 80]);
        (commitment, item_key.commitments()[0].clone())
    });
    let log = std::fs::read_to_string(&net.peers[index].log).unwrap();
    for lie in [
        "private values acknowledged and not kept",
        "a query held unanswered",
    ] {
        assert!(
            log.contains(&format!("lie told: {lie}")),
            "{liar} was asked first and told: {lie}"
        );
    }
    // The liar acknowledged both values and holds neither.
    net.peers[index].kill();
    let ledger =
        medledger_peer::ledger::Ledger::open_read_only(&net.peers[index].data_dir.join("ledger"))
            .unwrap();
    assert!(
        ledger
            .private_value(&envelope_commitment)
            .unwrap()
            .is_none()
    );
    let file_key: [u8; 32] = file_key_commitment.as_slice().try_into().unwrap();
    assert!(ledger.private_value(&file_key).unwrap().is_none());
}

/// Peer `i`'s private value of `commitment` and how many values it lacks, read from its
/// RocksDB (a secondary instance: the peer may run).
fn held_by(net: &TestNetwork, i: usize, commitment: &[u8; 32]) -> (Option<Vec<u8>>, usize) {
    let ledger =
        medledger_peer::ledger::Ledger::open_read_only(&net.peers[i].data_dir.join("ledger"))
            .unwrap();
    let held = ledger.private_value(commitment).unwrap().map(|v| {
        assert_eq!(
            medledger_crypto::private_commitment(&v.salt, &v.value),
            *commitment,
            "peer{i} holds a value that does not match its commitment"
        );
        v.value
    });
    (held, ledger.missing_private(None, 1024).unwrap().len())
}

/// Peer `i`'s report of its private values (docs/adr/0017, step 5), as `wallet` reads its
/// status: `None` when the peer tells that caller nothing of them.
fn private_status(
    net: &TestNetwork,
    rt: &tokio::runtime::Runtime,
    wallet: &str,
    i: usize,
) -> Option<v1::PrivateDataStatus> {
    rt.block_on(async {
        connect(net, wallet)
            .await
            .peer(i)
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .private_data
    })
}

/// Waits up to 60 s for `done` (asked every half second).
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < until, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reconciliation (docs/adr/0017 §7): values acknowledged by peers 0 and 3 alone reach
/// peers 1 and 2 from them, each checked against its commitment. While peer 3 is down, the
/// only holder is peer 0, which forges every value it serves (lie `keys`): nothing it sends
/// is stored. Back up, peer 3 takes its values in the blocks it catches up on, and the
/// others reconcile from it. A value purged (its grant revoked) before anyone reconciled it
/// is never brought back, and nothing is left missing.
#[test]
fn peers_that_were_not_given_a_value_reconcile_it_from_the_others() {
    let mut net = TestNetwork::start_with_env(
        4,
        &[],
        &[
            (RECONCILE_SECONDS, "1"),
            (medledger_peer::lies::FAULT_LIE, "peer0:keys"),
        ],
    );
    net.member("patient", "patient");
    let rt = runtime();
    let pseudonym: [u8; 32] = random();
    // Two grants whose envelopes peers 0 and 3 alone acknowledge.
    let kept_value: [u8; 80] = random();
    let (kept, purged, first, second) = rt.block_on(async {
        let patient = connect(&net, "patient").await;
        assert!(
            patient
                .submit("register_patient", register_args(&pseudonym))
                .await
                .unwrap()
                .is_valid()
        );
        let (kept, first) =
            grant_acknowledged_by(&patient, &[0, 3], &pseudonym, "dr-a", &kept_value).await;
        let (purged, second) =
            grant_acknowledged_by(&patient, &[0, 3], &pseudonym, "dr-b", &random::<80>()).await;
        (kept, purged, first, second)
    });
    // Peer 3 stops with both values pending on its disk; the grants commit without it, and
    // the second is revoked, which purges its envelope.
    net.peers[3].kill();
    rt.block_on(async {
        let patient = connect(&net, "patient").await;
        assert!(patient.submit_envelope(first).await.unwrap().is_valid());
        let granted = patient.submit_envelope(second).await.unwrap();
        assert!(granted.is_valid(), "{granted:?}");
        let id = v1::GrantResult::decode(granted.result.as_slice())
            .unwrap()
            .id;
        let revoked = patient
            .submit(
                "revoke",
                v1::RevokeArgs {
                    pseudonym: pseudonym.to_vec(),
                    permission_id: id,
                }
                .encode_to_vec(),
            )
            .await
            .unwrap();
        assert!(revoked.is_valid(), "{revoked:?}");
    });

    // Peers 1 and 2 asked the liar (the only holder up) and stored none of its forgeries.
    eventually("the liar is asked", || {
        std::fs::read_to_string(&net.peers[0].log)
            .unwrap_or_default()
            .contains("lie told: forged private values")
    });
    std::thread::sleep(Duration::from_secs(2));
    for i in [1, 2] {
        let (held, missing) = held_by(&net, i, &kept);
        assert_eq!(held, None, "peer{i} took a forged value");
        assert_eq!(
            missing, 1,
            "peer{i} lacks the kept value (the purged one is not missing)"
        );
        // Its report says so to the network's auditor, after a pass that asked everyone;
        // a patient is told nothing of the private values.
        let passed = private_status(&net, &rt, "auditor", i)
            .unwrap()
            .last_pass_ms;
        eventually(&format!("peer{i} reports the value missing"), || {
            let report = private_status(&net, &rt, "auditor", i).unwrap();
            report.last_pass_ms > passed && report.missing == 1
        });
        assert_eq!(private_status(&net, &rt, "patient", i), None);
    }

    // Peer 3 comes back, catches up, and the others reconcile the kept value from it.
    net.peers[3].restart();
    for i in [1, 2, 3] {
        eventually(&format!("peer{i} holds the kept value"), || {
            held_by(&net, i, &kept) == (Some(kept_value.to_vec()), 0)
        });
        eventually(&format!("peer{i} reports nothing missing"), || {
            let report = private_status(&net, &rt, "auditor", i).unwrap();
            report.last_pass_ms > 0 && report.missing == 0
        });
    }
    // The purged value: on no peer, the liar included, and missing nowhere.
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..4 {
        let (held, missing) = held_by(&net, i, &purged);
        assert_eq!(held, None, "peer{i} holds a purged value");
        assert_eq!(missing, 0, "peer{i}");
    }
}

/// An X25519 public key a reason can be sealed to (random, its top bit clear).
fn reader_key() -> Vec<u8> {
    let mut key: [u8; 32] = random();
    key[31] &= 0x7f;
    key.to_vec()
}

/// A sealed text of the shape the peers check, to `keys` (random bytes: nobody opens it).
fn sealed_to(keys: &[&Vec<u8>]) -> v1::SealedText {
    v1::SealedText {
        ciphertext: random::<40>().to_vec(),
        readers: keys
            .iter()
            .map(|k| v1::SealedTextReader {
                public_key: k.to_vec(),
                wrapped_key: random::<80>().to_vec(),
            })
            .collect(),
        key_commitment: random::<32>().to_vec(),
    }
}

/// A patient registered by `net`'s wallet "patient": a first block, so that every peer
/// knows itself a replica in force.
async fn first_block(net: &TestNetwork) {
    let registered = connect(net, "patient")
        .await
        .submit("register_patient", register_args(&random()))
        .await
        .unwrap();
    assert!(registered.is_valid(), "{registered:?}");
}

/// An emergency access by `doctor` whose private reason is `value` and whose arguments name
/// `readers`, put to every peer: (its envelope, each peer's answer).
async fn put_reason(
    doctor: &PeerSet,
    value: Vec<u8>,
    readers: &[&Vec<u8>],
) -> (v1::Envelope, Vec<Result<v1::PrivateDataAck, tonic::Status>>) {
    let mut private = doctor.private_data();
    let commitment = private.add(value);
    let args = v1::EmergencyAccessArgs {
        pseudonym: random::<32>().to_vec(),
        category: "oncology".into(),
        duration_seconds: 3600,
        sealed_reason_commitment: commitment.to_vec(),
        sealed_reason_readers: readers.iter().map(|k| k.to_vec()).collect(),
        ..Default::default()
    };
    let (_, mut envelope) = doctor.transaction_committing(
        "emergency_access",
        args.encode_to_vec(),
        private.commitments().to_vec(),
    );
    let transaction = signed_of(&mut envelope).transaction.clone();
    let mut answers = Vec::new();
    for i in 0..4 {
        answers.push(put(doctor, i, &transaction, private.values().to_vec()).await);
    }
    (envelope, answers)
}

/// A private sealed reason (ledger format 7) is acknowledged only as its transaction
/// describes it: a canonical `SealedText` sealed to exactly the readers the arguments name,
/// in their order. Every peer refuses a reason that leaves a named reader out or adds one,
/// names them in another order, is not a `SealedText`, or carries bytes beside its fields
/// — so no such value gathers the f+1 acknowledgments a block needs.
#[test]
fn a_sealed_reason_is_acknowledged_only_as_its_transaction_names_its_readers() {
    let net = TestNetwork::start(4);
    net.member("dr-e", "clinician");
    net.member("patient", "patient");
    let rt = runtime();
    rt.block_on(async {
        first_block(&net).await;
        let doctor = connect(&net, "dr-e").await;
        let (patient, auditor, stranger) = (reader_key(), reader_key(), reader_key());
        let named = [&patient, &auditor];
        let good = sealed_to(&named).encode_to_vec();
        // Every peer acknowledges it (a peer still starting says it is not a replica yet).
        let mut tries = 0;
        loop {
            let (_, answers) = put_reason(&doctor, good.clone(), &named).await;
            tries += 1;
            let starting = answers.iter().any(|a| {
                matches!(a, Err(s) if s.code() == tonic::Code::FailedPrecondition) && tries < 50
            });
            if !starting {
                for answer in answers {
                    answer.expect("a reason sealed to the readers named is acknowledged");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut trailing = good.clone();
        // An unknown field (number 15, length-delimited) the decoder would skip.
        trailing.extend_from_slice(&[0x7a, 3, 1, 2, 3]);
        let mut short_tag = sealed_to(&named);
        short_tag.ciphertext.truncate(16);
        for (what, value) in [
            (
                "the patient left out",
                sealed_to(&[&auditor]).encode_to_vec(),
            ),
            (
                "a reader added",
                sealed_to(&[&patient, &auditor, &stranger]).encode_to_vec(),
            ),
            (
                "a reader in the patient's place",
                sealed_to(&[&stranger, &auditor]).encode_to_vec(),
            ),
            (
                "the readers in another order",
                sealed_to(&[&auditor, &patient]).encode_to_vec(),
            ),
            (
                "not a SealedText",
                b"\xffjunk the clinician committed".to_vec(),
            ),
            ("bytes beside its fields", trailing),
            ("no text", short_tag.encode_to_vec()),
        ] {
            let (_, answers) = put_reason(&doctor, value, &named).await;
            for (i, answer) in answers.into_iter().enumerate() {
                let status = answer.expect_err(what);
                assert_eq!(
                    status.code(),
                    tonic::Code::InvalidArgument,
                    "peer{i}, {what}: {status:?}"
                );
                assert!(
                    status.message().contains("sealed_reason"),
                    "peer{i}, {what}: {status:?}"
                );
            }
        }
    });
}

/// A Byzantine peer (lie `unchecked`: an older build, or a liar) acknowledges a sealed
/// reason that leaves the patient out; the three correct peers refuse it. One
/// acknowledgment is fewer than the f+1 a block needs: the transaction is refused as
/// unacknowledged, and nothing is committed.
#[test]
fn one_peer_that_acknowledges_unchecked_reasons_cannot_commit_one() {
    let net = TestNetwork::start_with_env(
        4,
        &[],
        &[(medledger_peer::lies::FAULT_LIE, "peer1:unchecked")],
    );
    net.member("dr-e", "clinician");
    net.member("patient", "patient");
    let rt = runtime();
    rt.block_on(async {
        first_block(&net).await;
        let doctor = connect(&net, "dr-e").await;
        let (patient, auditor) = (reader_key(), reader_key());
        // Sealed to the auditor alone; the arguments name the patient too.
        let left_out = sealed_to(&[&auditor]).encode_to_vec();
        let (mut envelope, answers) = put_reason(&doctor, left_out, &[&patient, &auditor]).await;
        let mut acks = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(ack) => {
                    assert_eq!(i, 1, "only the liar acknowledges it");
                    acks.push(ack);
                }
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                }
            }
        }
        assert_eq!(acks.len(), 1);
        doctor.acknowledged(&mut envelope, acks);
        let status = refused(&doctor, 0, envelope).await;
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert_eq!(
            status_kind(&status),
            Some(v1::TxStatus::PrivateDataUnacknowledged as i32),
            "{status:?}"
        );
    });
    let log = std::fs::read_to_string(&net.peers[1].log).unwrap();
    assert!(log.contains("lie told: private values acknowledged unchecked"));
}
