//! Four real `medledger-peer` processes on loopback, a real CA, clients through the SDK:
//! ordering under concurrent load, crashes (SIGKILL) of a backup, of the primary and of every
//! peer at once, and bad input of every kind. Ledgers are compared block by block.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medledger_proto::v1;
use medledger_sdk::peer::{Committed, PeerSet, client_tls};
use medledger_sdk::wallet::Wallet;
use medledger_tests::TestNetwork;

#[path = "common/records.rs"]
mod records;
use prost::Message;
use rand_core::RngCore;
use records::{grant_args, record_key, register_args};

/// The networks are CPU-heavy on a small machine: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(net: &TestNetwork, wallet: &str, via: usize) -> PeerSet {
    let wallet = Wallet::open(&net.wallet(wallet)).unwrap();
    PeerSet::connect(&wallet, &net.address(via)).await.unwrap()
}

fn now_s() -> i64 {
    medledger_tls::now_unix()
}

/// Registers the wallet's patient record; returns its pseudonym and the commit.
async fn register(peers: &PeerSet) -> ([u8; 32], Committed) {
    let mut pseudonym = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut pseudonym);
    let registered = peers
        .submit("register_patient", register_args(&pseudonym))
        .await
        .unwrap();
    assert!(registered.is_valid(), "{registered:?}");
    (pseudonym, registered)
}

/// `count` grants, each submitted after the previous one committed.
async fn grants(peers: &PeerSet, pseudonym: &[u8; 32], count: usize) -> Vec<Committed> {
    let mut done = Vec::new();
    for i in 0..count {
        let c = peers
            .submit("grant", grant_args(pseudonym, &format!("dr.{i}")))
            .await
            .unwrap();
        assert!(c.is_valid(), "{c:?}");
        done.push(c);
    }
    done
}

/// A patient who registers and then grants `count` times.
async fn patient_workload(peers: Arc<PeerSet>, count: usize) -> Vec<Committed> {
    let (pseudonym, registered) = register(&peers).await;
    let mut done = vec![registered];
    done.extend(grants(&peers, &pseudonym, count).await);
    done
}

/// Every tx_id in a peer's blocks, from its blocks over gRPC (`peers` connected as one of
/// the ledger's readers: an auditor).
async fn ledger_tx_ids(peers: &PeerSet, peer: usize) -> BTreeSet<Vec<u8>> {
    let mut client = peers.peer(peer);
    let mut ids = BTreeSet::new();
    let mut from = 1;
    loop {
        let blocks = client
            .get_blocks(v1::GetBlocksRequest { from, limit: 100 })
            .await
            .unwrap()
            .into_inner()
            .blocks;
        if blocks.is_empty() {
            return ids;
        }
        for b in &blocks {
            ids.extend(b.results.iter().map(|r| r.tx_id.clone()));
        }
        from += blocks.len() as u64;
    }
}

/// Peer `p`'s height once it reaches `height`, or after 10 s whatever it is: f+1 receipts
/// do not mean every peer has the block yet.
async fn height_reaching(peers: &PeerSet, p: usize, height: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = peers
            .peer(p)
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if status.height >= height || std::time::Instant::now() > deadline {
            return status.height;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_identical(listings: &[Vec<String>]) {
    for (i, l) in listings.iter().enumerate().skip(1) {
        assert_eq!(l, &listings[0], "peer {i}'s ledger differs from peer 0's");
    }
}

#[test]
fn a_thousand_transactions_from_concurrent_clients_leave_identical_ledgers() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    let clients = 8;
    for c in 0..clients {
        net.member(&format!("patient{c}"), "patient");
    }
    let rt = runtime();
    let acknowledged: Vec<Committed> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            // Each client bootstraps through a different peer.
            let peers = Arc::new(connect(&net, &format!("patient{c}"), c % 4).await);
            tasks.spawn(patient_workload(peers, 1000 / clients - 1));
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done.unwrap());
        }
        all
    });
    assert_eq!(acknowledged.len(), 1000);
    // Every receipt came from f+1 = 2 distinct peers.
    assert!(acknowledged.iter().all(|c| c.attested_by().len() >= 2));
    let ids: BTreeSet<_> = acknowledged.iter().map(|c| c.tx_id.to_vec()).collect();
    assert_eq!(ids.len(), 1000, "every transaction has its own id");
    let height = acknowledged.iter().map(|c| c.block).max().unwrap();
    let listings = net.converged(height, Duration::from_secs(30));
    assert_identical(&listings);
    rt.block_on(async {
        let reader = connect(&net, "auditor", 0).await;
        for p in 0..4 {
            let on_ledger = ledger_tx_ids(&reader, p).await;
            assert!(
                ids.is_subset(&on_ledger),
                "peer {p} lacks acknowledged transactions"
            );
        }
    });
}

#[test]
fn a_killed_backup_catches_up_after_restart() {
    let _serial = serial();
    let mut net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    let peers = rt.block_on(connect(&net, "patient", 0));
    let (pseudonym, _) = rt.block_on(register(&peers));
    rt.block_on(grants(&peers, &pseudonym, 20));
    net.peers[3].kill();
    // f = 1: three peers still commit, and f+1 receipts still come.
    let done = rt.block_on(grants(&peers, &pseudonym, 150));
    let height = done.iter().map(|c| c.block).max().unwrap();
    net.peers[3].restart();
    let listings = net.converged(height, Duration::from_secs(60));
    assert_eq!(listings.len(), 4);
    assert_identical(&listings);
    // And it takes part again: with another peer down, the restarted one is needed.
    net.peers[2].kill();
    let more = rt.block_on(grants(&peers, &pseudonym, 5));
    assert_eq!(more.len(), 5);
}

#[test]
fn killing_the_primary_changes_the_view_and_commits_continue() {
    let _serial = serial();
    let mut net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    let peers = rt.block_on(connect(&net, "patient", 1));
    let (pseudonym, _) = rt.block_on(register(&peers));
    rt.block_on(grants(&peers, &pseudonym, 10));
    let before = rt.block_on(async {
        let mut c = peers.peer(1);
        c.get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(before.primary, 0);
    net.peers[0].kill();
    let done = rt.block_on(grants(&peers, &pseudonym, 30));
    let after = rt.block_on(async {
        let mut c = peers.peer(1);
        c.get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    assert!(after.view >= 1, "no view change: {after:?}");
    assert_ne!(after.primary, 0);
    let height = done.iter().map(|c| c.block).max().unwrap();
    net.peers[0].restart();
    let listings = net.converged(height, Duration::from_secs(60));
    assert_identical(&listings);
}

#[test]
fn every_acknowledged_transaction_survives_killing_all_peers_under_load() {
    let _serial = serial();
    let mut net = TestNetwork::start(4);
    for c in 0..4 {
        net.member(&format!("patient{c}"), "patient");
    }
    let rt = runtime();
    let acknowledged = Arc::new(Mutex::new(Vec::<Committed>::new()));
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..4 {
            let peers = connect(&net, &format!("patient{c}"), c).await;
            let acknowledged = acknowledged.clone();
            tasks.spawn(async move {
                let mut pseudonym = [0u8; 32];
                rand_core::OsRng.fill_bytes(&mut pseudonym);
                let r = peers
                    .submit("register_patient", register_args(&pseudonym))
                    .await
                    .unwrap();
                acknowledged.lock().unwrap().push(r);
                for i in 0.. {
                    // After the crash submissions fail; stop at the first failure.
                    match peers
                        .submit("grant", grant_args(&pseudonym, &format!("dr.{i}")))
                        .await
                    {
                        Ok(c) => acknowledged.lock().unwrap().push(c),
                        Err(_) => return,
                    }
                }
            });
        }
        // Let the load run, then pull the plug on every peer at once.
        while acknowledged.lock().unwrap().len() < 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for p in &mut net.peers {
            p.kill();
        }
        while tasks.join_next().await.is_some() {}
    });
    let acknowledged: BTreeSet<Vec<u8>> = acknowledged
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.tx_id.to_vec())
        .collect();
    assert!(acknowledged.len() >= 200);
    for p in &mut net.peers {
        p.restart();
    }
    let listings = net.converged(1, Duration::from_secs(60));
    assert_identical(&listings);
    rt.block_on(async {
        let reader = connect(&net, "auditor", 0).await;
        for p in 0..4 {
            let on_ledger = ledger_tx_ids(&reader, p).await;
            let missing = acknowledged.difference(&on_ledger).count();
            assert_eq!(
                missing, 0,
                "peer {p} lost {missing} acknowledged transactions"
            );
        }
        // The network still commits after the restart.
        let more = connect(&net, "patient1", 2).await;
        let mut pseudonym = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut pseudonym);
        let c = more
            .submit("register_patient", register_args(&pseudonym))
            .await;
        // patient1 registered before the crash: a second record is refused by the chaincode,
        // but it commits with that status.
        let c = c.unwrap();
        assert_eq!(c.status, v1::TxStatus::ChaincodeError, "{c:?}");
    });
}

/// The transaction inside an envelope, and a way to sign a changed one as `wallet`.
fn transaction_of(envelope: &v1::Envelope) -> v1::Transaction {
    match &envelope.kind {
        Some(v1::envelope::Kind::Transaction(s)) => {
            v1::Transaction::decode(s.transaction.as_slice()).unwrap()
        }
        _ => panic!("not a transaction"),
    }
}

fn signed_envelope(wallet: &Wallet, tx: &v1::Transaction) -> v1::Envelope {
    let bytes = tx.encode_to_vec();
    let signature = wallet
        .signing
        .sign(medledger_crypto::SignatureDomain::Transaction, &bytes);
    v1::Envelope {
        kind: Some(v1::envelope::Kind::Transaction(v1::SignedTransaction {
            transaction: bytes,
            signature: signature.to_bytes().to_vec(),
            private_data_acks: Vec::new(),
            acks_signature: Vec::new(),
        })),
    }
}

async fn submit_raw(peers: &PeerSet, peer: usize, envelope: v1::Envelope) -> tonic::Status {
    peers
        .peer(peer)
        .submit(v1::SubmitRequest {
            envelope: Some(envelope),
        })
        .await
        .expect_err("the peer must refuse this")
}

#[test]
fn bad_input_gets_a_clear_status_and_never_crashes_a_peer() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    let wallet = Wallet::open(&net.wallet("patient")).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let peers = connect(&net, "patient", 0).await;
        let (pseudonym, _) = register(&peers).await;

        // A replayed envelope commits once; the replay gets the original receipt.
        let (tx_id, envelope) = peers.transaction("grant", grant_args(&pseudonym, "dr.a"));
        let first = peers.submit_envelope(envelope.clone()).await.unwrap();
        let again = peers.submit_envelope(envelope.clone()).await.unwrap();
        assert_eq!(first.tx_id, tx_id);
        assert_eq!((again.tx_id, again.block), (first.tx_id, first.block));

        // Another transaction reusing its id (same nonce) is refused.
        let mut reused = transaction_of(&envelope);
        reused.args = grant_args(&pseudonym, "dr.b");
        let status = submit_raw(&peers, 1, signed_envelope(&wallet, &reused)).await;
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");

        // A bad signature.
        let (_, envelope) = peers.transaction("grant", grant_args(&pseudonym, "dr.c"));
        let mut tampered = envelope.clone();
        if let Some(v1::envelope::Kind::Transaction(s)) = &mut tampered.kind {
            s.signature[5] ^= 1;
        }
        let status = submit_raw(&peers, 0, tampered).await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        // Signed bytes changed after signing.
        let mut tampered = envelope.clone();
        if let Some(v1::envelope::Kind::Transaction(s)) = &mut tampered.kind {
            let last = s.transaction.len() - 1;
            s.transaction[last] ^= 1;
        }
        let status = submit_raw(&peers, 0, tampered).await;
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::InvalidArgument
            ),
            "{status:?}"
        );

        // Unknown functions, and a query submitted as a transaction.
        let (_, envelope) = peers.transaction("drop_everything", vec![]);
        let status = submit_raw(&peers, 2, envelope).await;
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
        let (_, envelope) = peers.transaction("get_record", vec![]);
        let status = submit_raw(&peers, 2, envelope).await;
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("query"), "{status:?}");

        // Malformed: a transaction that is not a Transaction, an empty envelope.
        let garbage = v1::Envelope {
            kind: Some(v1::envelope::Kind::Transaction(v1::SignedTransaction {
                transaction: vec![0xff; 40],
                signature: vec![0; 64],
                private_data_acks: Vec::new(),
                acks_signature: Vec::new(),
            })),
        };
        let status = submit_raw(&peers, 3, garbage).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let status = submit_raw(&peers, 3, v1::Envelope { kind: None }).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

        // Another network's transaction.
        let (_, envelope) = peers.transaction("grant", grant_args(&pseudonym, "dr.d"));
        let mut foreign = transaction_of(&envelope);
        foreign.network_id = vec![9; 32];
        let status = submit_raw(&peers, 0, signed_envelope(&wallet, &foreign)).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("network"), "{status:?}");

        // Oversized: over the envelope limit, and over the message limit.
        let (_, envelope) = peers.transaction("grant", vec![0; 300 * 1024]);
        let status = submit_raw(&peers, 0, envelope).await;
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        let (_, envelope) = peers.transaction("grant", vec![0; 2 << 20]);
        let status = submit_raw(&peers, 0, envelope).await;
        assert!(
            matches!(
                status.code(),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
            ),
            "{status:?}"
        );

        // Queries: an unknown function, a transaction function, a malformed argument.
        height_reaching(&peers, 1, first.block).await;
        let mut client = peers.peer(1);
        let q = |function: &str, args: Vec<u8>| v1::QueryRequest {
            function: function.into(),
            args,
            ..Default::default()
        };
        // A query that must see a block the peer does not have yet is turned away.
        let status = client
            .query(v1::QueryRequest {
                function: "list_categories".into(),
                min_height: 1_000_000,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("behind"), "{status:?}");
        let status = client.query(q("nope", vec![])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        let status = client.query(q("grant", vec![])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let status = client
            .query(q("get_record", vec![0xff; 9]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let ok = client
            .query(q(
                "get_record",
                v1::PatientArgs {
                    pseudonym: pseudonym.to_vec(),
                }
                .encode_to_vec(),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(ok.height >= first.block);

        // Every peer is still up and the network still commits.
        let after = grants(&peers, &pseudonym, 3).await;
        assert_eq!(after.len(), 3);
        for p in 0..4 {
            let height = height_reaching(&peers, p, after[2].block).await;
            assert!(height >= after[2].block, "peer {p} is stuck at {height}");
        }
    });
}

/// Opens a replication stream to peer `target` under `name`'s TLS identity and sends
/// `messages`; the peer's answer to the stream.
async fn replicate_as(
    net: &TestNetwork,
    name: &str,
    target: usize,
    messages: Vec<v1::ReplicaMessage>,
) -> Result<(), tonic::Status> {
    stream_as(net, name, target, tokio_stream::iter(messages)).await
}

/// As [`replicate_as`], sending whatever `messages` yields, for as long as it does.
async fn stream_as(
    net: &TestNetwork,
    name: &str,
    target: usize,
    messages: impl tokio_stream::Stream<Item = v1::ReplicaMessage> + Send + 'static,
) -> Result<(), tonic::Status> {
    use medledger_proto::v1::replication_client::ReplicationClient;
    let wallet = Wallet::open(&net.wallet(name)).unwrap();
    let channel = medledger_tls::connect(
        &net.address(target),
        client_tls(&wallet, None, &Default::default()).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    ReplicationClient::new(channel)
        .stream(messages)
        .await
        .map(|_| ())
}

/// Red team, second review of issue 14: each open replication stream may hold a message
/// of up to 32 MiB being read before any budget is charged, so one replica may have only a
/// few open at once (`STREAMS_PER_REPLICA`, 4, its real one included); more are refused
/// with RESOURCE_EXHAUSTED, and the network keeps committing.
#[test]
fn one_replica_cannot_open_replication_streams_without_bound() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    rt.block_on(async {
        let peers = connect(&net, "patient", 0).await;
        let (pseudonym, _) = register(&peers).await;
        let mut senders = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..6 {
            let (tx, rx) = tokio::sync::mpsc::channel::<v1::ReplicaMessage>(1);
            senders.push(tx);
            let call = stream_as(
                &net,
                "peer3",
                0,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            );
            calls.push(tokio::time::timeout(Duration::from_secs(3), call));
        }
        let outcomes = futures_util::future::join_all(calls).await;
        let refused = outcomes
            .iter()
            .filter(
                |o| matches!(o, Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted),
            )
            .count();
        let held = outcomes.iter().filter(|o| o.is_err()).count();
        assert!(
            refused >= 2,
            "{refused} refused, {held} held open: {outcomes:?}"
        );
        assert!(held <= 4, "{held} extra streams held open");
        drop(senders);
        let committed = grants(&peers, &pseudonym, 2).await;
        assert!(committed.len() >= 2);
    });
}

#[test]
fn replicas_are_named_by_their_certificates_and_cannot_speak_for_others() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    rt.block_on(async {
        let prepare = |from: u32| v1::ReplicaMessage {
            kind: Some(v1::replica_message::Kind::Prepare(v1::PbftSignedVote {
                from,
                message: Some(v1::PbftVote {
                    view: 0,
                    seq: 1,
                    digest: vec![0; 32],
                }),
                signature: vec![0; 64],
            })),
            epoch: 0,
        };
        // Replica 3 sends a prepare signed as replica 1: refused, stream closed.
        let status = replicate_as(&net, "peer3", 0, vec![prepare(1)])
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        // A patient is no replica at all.
        let status = replicate_as(&net, "patient", 0, vec![prepare(0)])
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("not a replica"), "{status:?}");
        // Peer 0 still works.
        let peers = connect(&net, "patient", 0).await;
        register(&peers).await;
    });
}

/// Issue 17 item 5: a revocation on the ledger reaches every TLS link, not only the next
/// handshake. A revoked client's open subscription ends; the other peers drop their replica
/// links with a revoked peer; a client connected before the revocation learns it from the
/// ledger (CA-signed records) and drops its link to that peer, and a new client refuses the
/// peer at the handshake; the network goes on committing without it.
#[test]
fn a_revocation_reaches_every_tls_link() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    rt.block_on(async {
        let watcher = connect(&net, "auditor", 0).await;
        let mut events = watcher
            .peer(1)
            .subscribe(v1::SubscribeRequest {
                from_block: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // A client connected before the revocations, with a link to every peer.
        let patient = connect(&net, "patient", 0).await;
        for p in 0..4 {
            patient
                .peer(p)
                .get_status(v1::GetStatusRequest {})
                .await
                .unwrap();
        }
        for name in ["auditor", "peer3"] {
            let revoked = net
                .as_(
                    "admin",
                    &["--peer", &net.address(0), "admin", "revoke", "--name", name],
                )
                .ok();
            assert!(
                revoked["revoked"][0]["block"].as_u64().is_some(),
                "{revoked}"
            );
        }

        // The watcher's subscription ends: the peer's side of the link drops.
        let ended = tokio::time::timeout(Duration::from_secs(40), async {
            loop {
                match events.message().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await
        .expect("the revoked client's subscription ended within 40 s");
        assert!(
            ended.is_err(),
            "the link was cut, not closed cleanly: {ended:?}"
        );

        // Peers 0–2 drop their replica links with peer3 and do not take it back.
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            let mut linked = Vec::new();
            for p in 0..3 {
                let status = patient
                    .peer(p)
                    .get_status(v1::GetStatusRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                linked.push(status.peers[3].connected);
            }
            if linked.iter().all(|c| !c) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "peers still linked with revoked peer3: {linked:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // The client connected before learns the revocations; its link to peer3 drops.
        assert!(patient.learn_revocations().await >= 2);
        assert!(
            patient
                .peer(3)
                .get_status(v1::GetStatusRequest {})
                .await
                .is_err(),
            "an old client still talks to revoked peer3"
        );
        // A new client refuses peer3 at the handshake and works with the others.
        let fresh = connect(&net, "patient", 0).await;
        assert!(
            fresh
                .peer(3)
                .get_status(v1::GetStatusRequest {})
                .await
                .is_err()
        );
        let (pseudonym, committed) = register(&fresh).await;
        assert!(
            !committed.attested_by().contains(&3),
            "peer3 vouches for nothing"
        );
        let _ = pseudonym;
    });
}

/// Issue 19 item 1: a revocation at the CA, and no other step, reaches the ledger. No peer
/// is given to the CLI and nobody runs `sync-revocations`: the peers follow the CA and order
/// its record, and from then on every peer refuses the revoked identity's transactions.
/// Prints the time from `admin revoke` to the first refusal (docs/peer.md, "Revocation").
#[test]
fn a_revocation_at_the_ca_alone_reaches_the_ledger() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    net.member("leaver", "patient");
    let rt = runtime();
    let (leaver, pseudonym) = rt.block_on(async {
        let leaver = connect(&net, "leaver", 0).await;
        let (pseudonym, _) = register(&leaver).await;
        (leaver, pseudonym)
    });
    let started = std::time::Instant::now();
    let revoked = net
        .as_("admin", &["admin", "revoke", "--name", "leaver"])
        .ok();
    assert!(
        revoked["revoked"][0]["block"].is_null(),
        "the CLI was given no peer: {revoked}"
    );
    rt.block_on(async {
        let patient = connect(&net, "patient", 0).await;
        // The leaver's transactions, signed now, brought by someone else: committed until
        // the revocation's block, refused from then on.
        let mut committed = 0;
        let first_refusal = loop {
            let (_, envelope) = leaver.transaction("grant", grant_args(&pseudonym, "dr.x"));
            let p = committed % 4;
            match patient
                .peer(p)
                .submit(v1::SubmitRequest {
                    envelope: Some(envelope),
                })
                .await
            {
                Ok(_) => committed += 1,
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
                    assert!(status.message().contains("revoked"), "{status:?}");
                    break started.elapsed();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the revocation did not reach the ledger within 60 s ({committed} committed)"
            );
        };
        eprintln!(
            "revocation at the CA to the first refused transaction: {} ms ({committed} \
             committed before it)",
            first_refusal.as_millis()
        );
        // Every peer refuses it.
        for p in 0..4 {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (_, envelope) = leaver.transaction("grant", grant_args(&pseudonym, "dr.x"));
                match patient
                    .peer(p)
                    .submit(v1::SubmitRequest {
                        envelope: Some(envelope),
                    })
                    .await
                {
                    Err(status) if status.code() == tonic::Code::PermissionDenied => break,
                    other => assert!(
                        std::time::Instant::now() < deadline,
                        "peer{p} still takes the revoked identity's transactions: {other:?}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
}

#[test]
fn revoked_and_foreign_certificates_are_refused() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    net.member("leaver", "patient");
    let rt = runtime();
    let (pseudonym, signed_before) = rt.block_on(async {
        let leaver = connect(&net, "leaver", 0).await;
        let (pseudonym, _) = register(&leaver).await;
        // Signed before the revocation, submitted after it.
        let (_, envelope) = leaver.transaction("grant", grant_args(&pseudonym, "dr.x"));
        (pseudonym, envelope)
    });
    let revoked = net
        .as_(
            "admin",
            &[
                "--peer",
                &net.address(1),
                "admin",
                "revoke",
                "--name",
                "leaver",
            ],
        )
        .ok();
    let block = revoked["revoked"][0]["block"]
        .as_u64()
        .expect("on the ledger");
    assert!(block > 0);
    rt.block_on(async {
        // The peers this test talks to must have the revocation's block first.
        let patient = connect(&net, "patient", 0).await;
        for p in 0..4 {
            assert!(height_reaching(&patient, p, block).await >= block);
        }
        // The revoked identity cannot even connect any more...
        let wallet = Wallet::open(&net.wallet("leaver")).unwrap();
        let refused = PeerSet::connect(&wallet, &net.address(2)).await;
        assert!(refused.is_err(), "a revoked certificate was accepted");
        // ...and its signed transactions are refused, whoever brings them.
        let status = submit_raw(&patient, 3, signed_before).await;
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("revoked"), "{status:?}");
        let _ = pseudonym;
        // Syncing again changes nothing: the record is on the ledger once.
        let synced = net
            .as_(
                "admin",
                &["--peer", &net.address(0), "admin", "sync-revocations"],
            )
            .ok();
        assert_eq!(synced["revocations"][0]["block"].as_u64(), Some(block));
    });
    // A certificate from another CA is refused at the handshake.
    let other = TestNetwork::start_ca_only();
    rt.block_on(async {
        let wallet = Wallet::open(&other.wallet("admin")).unwrap();
        let config = client_tls(&wallet, None, &Default::default()).unwrap();
        let result = medledger_tls::connect(&net.address(0), config, Default::default()).await;
        match result {
            Err(_) => {}
            Ok(channel) => {
                let status = medledger_proto::v1::ledger_client::LedgerClient::new(channel)
                    .get_status(v1::GetStatusRequest {})
                    .await
                    .unwrap_err();
                assert_ne!(status.code(), tonic::Code::Ok);
            }
        }
    });
}

/// Issue 20 item 1: blocks, and every block's events, go to the ledger's readers (peers and
/// the auditors the configuration names) only, as Fabric's channel Readers policy; a
/// patient, a clinician, a researcher, an admin and an auditor the admin merely enrolled get
/// the genesis and PERMISSION_DENIED for the rest, until the admins' policy names that
/// auditor. A record's owner follows that record: their own results whole, of others' only
/// the events that concern it (an emergency access), without the other creator's answer,
/// and nothing of another patient.
#[test]
fn blocks_and_events_are_read_by_peers_and_auditors_only() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    for (name, role) in [
        ("jane", "patient"),
        ("joe", "patient"),
        ("dr-a", "clinician"),
        ("ana", "researcher"),
        ("audrey", "auditor"),
    ] {
        net.member(name, role);
    }
    net.member_with(
        "dr-e",
        "clinician",
        &["--attr", "emergency=true@2026-01-01..2030-01-01"],
    );
    let rt = runtime();
    rt.block_on(async {
        let jane = connect(&net, "jane", 0).await;
        let (record, registered) = register(&jane).await;
        let joe = connect(&net, "joe", 0).await;
        let (joes, _) = register(&joe).await;
        let follow = |record: &[u8]| v1::SubscribeRequest {
            from_block: 1,
            record: record.to_vec(),
        };

        // Not a reader: the genesis, and nothing after it. Audrey is an auditor one admin
        // registered and enrolled alone: no configuration names her.
        for who in ["jane", "dr-a", "ana", "admin", "audrey"] {
            let mut client = connect(&net, who, 0).await.peer(1);
            client
                .get_block(v1::GetBlockRequest { number: 0 })
                .await
                .unwrap_or_else(|e| panic!("{who} reads the genesis: {e:?}"));
            let refusals = [
                client
                    .get_block(v1::GetBlockRequest {
                        number: registered.block,
                    })
                    .await
                    .map(|_| ()),
                client
                    .get_blocks(v1::GetBlocksRequest { from: 1, limit: 10 })
                    .await
                    .map(|_| ()),
                client.subscribe(follow(&[])).await.map(|_| ()),
            ];
            for refused in refusals {
                let status = refused.expect_err(who);
                assert_eq!(
                    status.code(),
                    tonic::Code::PermissionDenied,
                    "{who}: {status:?}"
                );
            }
        }
        // Nobody but its owner (or a named auditor) follows a record; a record name is
        // bounded. An auditor no configuration names has no auditor's queries either.
        let status = connect(&net, "audrey", 0)
            .await
            .query(
                "get_record",
                v1::PatientArgs {
                    pseudonym: record.to_vec(),
                }
                .encode_to_vec(),
            )
            .await
            .unwrap_err();
        assert!(status.to_string().contains("--add-auditor"), "{status}");
        for who in ["joe", "dr-a", "ana", "admin", "audrey"] {
            let status = connect(&net, who, 0)
                .await
                .peer(1)
                .subscribe(follow(&record))
                .await
                .expect_err(who);
            assert_eq!(
                status.code(),
                tonic::Code::PermissionDenied,
                "{who}: {status:?}"
            );
        }
        let status = jane.peer(1).subscribe(follow(&[1; 65])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

        // Jane follows her record while Joe acts on his, and an emergency clinician breaks
        // the glass on both.
        let mut stream = jane
            .peer(2)
            .subscribe(follow(&record))
            .await
            .unwrap()
            .into_inner();
        let granted = grants(&jane, &record, 1).await.remove(0);
        grants(&joe, &joes, 1).await;
        let dr_e = connect(&net, "dr-e", 0).await;
        let mut broke = Vec::new();
        for pseudonym in [&record, &joes] {
            // Sealed here to the readers f+1 peers name: the record's owner and the auditor.
            let readers = medledger_sdk::reasons::readers(&dr_e, pseudonym)
                .await
                .unwrap();
            assert_eq!(readers.len(), 2, "the owner and the one named auditor");
            let sealed_args = v1::EmergencyAccessArgs {
                pseudonym: pseudonym.to_vec(),
                category: "lab-results".into(),
                sealed_reason: Some(
                    medledger_sdk::reasons::seal(
                        "unconscious on arrival",
                        pseudonym,
                        "lab-results",
                        "dr-e",
                        &readers,
                    )
                    .unwrap(),
                ),
                duration_seconds: 60,
                ..Default::default()
            };
            // Ledger format 7: the sealed reason goes beside the transaction; in the block,
            // as format 6 took it, it is refused by every peer before ordering.
            assert!(dr_e.keeps_free_text_private());
            let refused = dr_e
                .submit("emergency_access", sealed_args.encode_to_vec())
                .await;
            assert!(refused.is_err(), "{refused:?}");
            let mut args = sealed_args.clone();
            let private = dr_e.emergency_reason_private(&mut args);
            assert!(args.sealed_reason.is_none() && args.sealed_reason_commitment.len() == 32);
            // Left out, the auditor is not asked for; the chaincode refuses it.
            let mut without_auditor = v1::EmergencyAccessArgs {
                sealed_reason: Some(
                    medledger_sdk::reasons::seal(
                        "unconscious on arrival",
                        pseudonym,
                        "lab-results",
                        "dr-e",
                        &readers[..1],
                    )
                    .unwrap(),
                ),
                ..sealed_args.clone()
            };
            let without = dr_e.emergency_reason_private(&mut without_auditor);
            let refused = dr_e
                .submit_private(
                    "emergency_access",
                    without_auditor.encode_to_vec(),
                    &without,
                )
                .await
                .unwrap();
            assert_eq!(
                refused.code,
                tonic::Code::InvalidArgument as i32,
                "{refused:?}"
            );
            // In clear, refused by every peer before ordering: no block holds the words
            // (checked below over every block the auditor reads).
            let in_clear = v1::EmergencyAccessArgs {
                reason: "unconscious on arrival".into(),
                ..args.clone()
            };
            let refused = dr_e
                .submit_private("emergency_access", in_clear.encode_to_vec(), &private)
                .await;
            assert!(refused.is_err(), "{refused:?}");
            let c = dr_e
                .submit_private("emergency_access", args.encode_to_vec(), &private)
                .await
                .unwrap();
            assert!(c.is_valid(), "{c:?}");
            broke.push(c);
        }
        let last = broke[1].block;
        let mut seen = Vec::new();
        let mut blocks = Vec::new();
        while blocks.last().copied().unwrap_or(0) < last {
            let b = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("the stream keeps up")
                .unwrap()
                .expect("the stream stays open");
            blocks.push(b.block);
            seen.extend(b.results);
        }
        // Every block, in order, each once (with what she may see of it).
        assert_eq!(blocks.first(), Some(&1), "{blocks:?}");
        assert!(blocks.windows(2).all(|w| w[1] == w[0] + 1), "{blocks:?}");
        // Her own transactions, whole.
        for own in [&registered, &granted] {
            let r = seen
                .iter()
                .find(|r| r.tx_id == own.tx_id)
                .expect("her own transaction");
            assert_eq!(r.creator, "jane", "{r:?}");
        }
        // The emergency access to her record: its event, not the clinician's answer.
        let e = seen
            .iter()
            .find(|r| r.tx_id == broke[0].tx_id)
            .expect("the emergency access to her record");
        assert_eq!(e.creator, "dr-e");
        assert!(e.result.is_empty(), "{e:?}");
        assert_eq!(e.events.len(), 1, "{e:?}");
        let event = v1::EmergencyAccessEvent::decode(e.events[0].payload.as_slice()).unwrap();
        assert_eq!(event.pseudonym, record.to_vec());
        // The reason, sealed and private (format 7): the event holds its commitment; Jane
        // reads it from the peers and opens it with her record's key, the named auditor
        // with theirs, the clinician who wrote it neither; no block byte holds the words.
        assert!(event.sealed_reason.is_none(), "{event:?}");
        assert_eq!(event.sealed_reason_commitment.len(), 32);
        let wanted = [(event.audit_seq, event.sealed_reason_commitment.clone())];
        let mut read = jane.sealed_reasons(&record, &wanted).await.unwrap();
        let Some(medledger_sdk::private_data::GatheredReason::Sealed(sealed)) =
            read.remove(&event.audit_seq)
        else {
            panic!("Jane reads the reason");
        };
        let named_auditor = connect(&net, "auditor", 0).await;
        let as_auditor = named_auditor
            .sealed_reasons(&record, &wanted)
            .await
            .unwrap();
        assert_eq!(
            as_auditor.get(&event.audit_seq),
            Some(&medledger_sdk::private_data::GatheredReason::Sealed(
                sealed.clone()
            ))
        );
        assert!(
            dr_e.sealed_reasons(&record, &wanted).await.is_err(),
            "not a reader"
        );
        let open = |keys: Vec<&medledger_crypto::EncryptionKey>| {
            medledger_sdk::reasons::open(&sealed, &record, "lab-results", "dr-e", keys)
        };
        let words = "unconscious on arrival";
        assert_eq!(open(vec![&record_key(&record)]).unwrap(), words);
        let auditor = Wallet::open(&net.wallet("auditor")).unwrap();
        assert_eq!(open(auditor.encryption_keys().collect()).unwrap(), words);
        let clinician = Wallet::open(&net.wallet("dr-e")).unwrap();
        assert!(open(clinician.encryption_keys().collect()).is_err());
        // Nothing of Joe: neither his transactions nor the access to his record.
        assert!(
            seen.iter()
                .all(|r| r.creator == "jane" || r.tx_id == broke[0].tx_id),
            "{seen:?}"
        );
        let bytes: Vec<u8> = seen.iter().flat_map(Message::encode_to_vec).collect();
        assert!(!bytes.windows(32).any(|w| w == joes), "Joe's pseudonym");

        // Each stream reads every block from where it starts: one identity holds 4 at once
        // on a peer, no more.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(jane.peer(3).subscribe(follow(&record)).await.unwrap());
        }
        let status = jane.peer(3).subscribe(follow(&record)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        drop(held);

        // An auditor the genesis names reads it all: blocks, and every result of every block.
        let auditor = connect(&net, "auditor", 0).await;
        height_reaching(&auditor, 3, last).await;
        let mut client = auditor.peer(3);
        let read = client
            .get_blocks(v1::GetBlocksRequest {
                from: 1,
                limit: 100,
            })
            .await
            .unwrap()
            .into_inner()
            .blocks;
        assert!(read.len() as u64 >= last, "{} blocks", read.len());
        // No block holds an emergency reason's words in clear (sealed, or refused before
        // ordering when sent in clear).
        let block_bytes: Vec<u8> = read.iter().flat_map(Message::encode_to_vec).collect();
        assert!(
            !block_bytes.windows(11).any(|w| w == b"unconscious"),
            "a reason in clear in a block"
        );
        client
            .get_block(v1::GetBlockRequest { number: last })
            .await
            .unwrap();
        let mut all = client
            .subscribe(v1::SubscribeRequest {
                from_block: last,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let b = all.message().await.unwrap().unwrap();
        assert!(b.results.iter().any(|r| r.tx_id == broke[1].tx_id), "{b:?}");
        // And follows any record.
        client.subscribe(follow(&joes)).await.unwrap();
    });
    // Once the admins' policy names Audrey, she reads blocks too. The admins who approve
    // see whom they name (by name and key), before signing.
    let audrey = net.wallet("audrey").join("cert.pem");
    let file = net.propose(0, &["--add-auditor", audrey.to_str().unwrap()]);
    let review = net
        .as_("admin2", &["admin", "config", "review", &file])
        .ok();
    assert!(
        review["changes"]
            .as_str()
            .unwrap()
            .contains("auditors who read blocks: [auditor (")
            && review["changes"].as_str().unwrap().contains("audrey ("),
        "{review}"
    );
    assert_eq!(review["approvals"], serde_json::json!([]), "{review}");
    net.approve_and_submit(0, &file);
    rt.block_on(async {
        let audrey = connect(&net, "audrey", 0).await;
        let blocks = audrey
            .peer(1)
            .get_blocks(v1::GetBlocksRequest { from: 1, limit: 1 })
            .await
            .unwrap()
            .into_inner()
            .blocks;
        assert_eq!(blocks.len(), 1);
        // The auditor the genesis named stays named.
        connect(&net, "auditor", 0)
            .await
            .peer(1)
            .get_blocks(v1::GetBlocksRequest { from: 1, limit: 1 })
            .await
            .unwrap();
    });
    let shown = net.as_("admin", &["admin", "config", "show"]).ok();
    let names: Vec<&str> = shown["auditors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["auditor", "audrey"], "{shown}");

    // Removed by the admins, she is told so on the stream she holds, at the next block, not
    // at the end of her certificate.
    let mut held = rt.block_on(async {
        connect(&net, "audrey", 0)
            .await
            .peer(1)
            .subscribe(v1::SubscribeRequest {
                from_block: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    });
    net.configure(0, &["--remove-auditor", "audrey"]);
    net.member("kim", "patient");
    rt.block_on(async {
        register(&connect(&net, "kim", 0).await).await;
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match held.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the stream ended within a minute of her removal");
        let status = ended.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    });
}

#[test]
fn events_stream_and_resume_status_health_reflection_and_sigterm_is_graceful() {
    let _serial = serial();
    let mut net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    let (first, second) = rt.block_on(async {
        let peers = connect(&net, "patient", 0).await;
        let (pseudonym, registered) = register(&peers).await;
        // A peer checks the follower owns the record against its own state: peer 2 must hold
        // the registration first (a quorum committed it; peer 2 may be a block behind).
        height_reaching(&peers, 2, registered.block).await;
        // The owner follows their record from the first block on.
        let mut events = peers
            .peer(2)
            .subscribe(v1::SubscribeRequest {
                from_block: 1,
                record: pseudonym.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        let granted = grants(&peers, &pseudonym, 1).await.remove(0);
        // Blocks arrive in order, each once, with the results of their transactions.
        let mut seen = Vec::new();
        while seen.last().copied().unwrap_or(0) < granted.block {
            let b = events
                .message()
                .await
                .unwrap()
                .expect("the stream stays open");
            seen.push(b.block);
            if b.block == registered.block {
                assert!(b.results.iter().any(|r| r.tx_id == registered.tx_id));
            }
        }
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
        // Resuming from the second block replays it and what follows.
        let mut resumed = peers
            .peer(1)
            .subscribe(v1::SubscribeRequest {
                from_block: granted.block,
                record: pseudonym.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        let b = resumed.message().await.unwrap().unwrap();
        assert_eq!(b.block, granted.block);
        assert!(
            b.results
                .iter()
                .any(|r| r.tx_id == granted.tx_id && r.function == "grant")
        );
        height_reaching(&peers, 3, granted.block).await;
        let status = peers
            .peer(3)
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.replica, 3);
        assert_eq!(status.primary, 0);
        assert!(status.height >= granted.block);
        assert_eq!(status.network_id, peers.network_id.to_vec());
        assert_eq!(status.peers.len(), 4);
        // Health and reflection answer on the same mutual-TLS port.
        let wallet = Wallet::open(&net.wallet("patient")).unwrap();
        let tls = client_tls(&wallet, None, &Default::default()).unwrap();
        let channel = medledger_tls::connect(&net.address(2), tls, Default::default())
            .await
            .unwrap();
        let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: "medledger.v1.Ledger".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            health.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        use tonic_reflection::pb::v1 as reflection;
        let mut answers =
            reflection::server_reflection_client::ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::iter(vec![
                    reflection::ServerReflectionRequest {
                        host: String::new(),
                        message_request: Some(
                            reflection::server_reflection_request::MessageRequest::ListServices(
                                String::new(),
                            ),
                        ),
                    },
                ]))
                .await
                .unwrap()
                .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(reflection::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        )) = answer.message_response
        else {
            panic!("no service list: {answer:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"medledger.v1.Ledger"), "{names:?}");
        (registered, granted)
    });
    // SIGTERM: a clean exit, and the peer comes back with its ledger.
    assert!(
        net.peers[3].terminate(),
        "SIGTERM did not end the peer cleanly"
    );
    let before = net.peers[0].blocks();
    net.peers[3].restart();
    let listings = net.converged(second.block, Duration::from_secs(30));
    assert_eq!(listings[3][..before.len()], before[..]);
    assert!(first.block < second.block);

    // A data directory that began with another genesis block is refused.
    net.peers[2].kill();
    let other_genesis = net.tmp.path().join("other-genesis.pb");
    let mut genesis = std::process::Command::new(medledger_tests::binary("medledger-peer"));
    genesis
        .args(["genesis", "--network-name", "another", "--ca-root"])
        .arg(net.root())
        .arg("-o")
        .arg(&other_genesis);
    for i in 0..4 {
        genesis.args([
            "--peer",
            &format!(
                "peer{i}={}@{}",
                net.wallet(&format!("peer{i}")).join("cert.pem").display(),
                net.address(i)
            ),
        ]);
    }
    assert!(genesis.output().unwrap().status.success());
    let output = std::process::Command::new(medledger_tests::binary("medledger-peer"))
        .arg("serve")
        .arg("--wallet")
        .arg(&net.peers[2].wallet)
        .arg("--genesis")
        .arg(&other_genesis)
        .arg("--data-dir")
        .arg(&net.peers[2].data_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("belongs to network"), "{stderr}");
}

#[test]
fn without_a_quorum_nothing_commits_and_everything_resumes_when_peers_return() {
    let _serial = serial();
    let mut net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    let peers = Arc::new(rt.block_on(connect(&net, "patient", 0)));
    let (pseudonym, _) = rt.block_on(register(&peers));
    let before = rt.block_on(grants(&peers, &pseudonym, 5));
    // Two of four down: more than f. A submission waits; nothing commits.
    net.peers[1].kill();
    net.peers[2].kill();
    let waiting = {
        let peers = peers.clone();
        rt.spawn(async move {
            peers
                .submit("grant", grant_args(&pseudonym, "dr.during-outage"))
                .await
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !waiting.is_finished(),
        "a transaction committed without a quorum"
    );
    let height = before.last().unwrap().block;
    for p in [0, 3] {
        let listing = net.peers[p].blocks();
        assert_eq!(
            listing.len() as u64,
            height + 1,
            "peer {p} moved without a quorum"
        );
    }
    // The peers come back (in the other order): the waiting transaction commits.
    net.peers[2].restart();
    net.peers[1].restart();
    let committed = rt.block_on(waiting).unwrap().unwrap();
    assert!(committed.is_valid(), "{committed:?}");
    assert!(committed.block > height);
    let after = rt.block_on(grants(&peers, &pseudonym, 3));
    let listings = net.converged(after[2].block, Duration::from_secs(60));
    assert_identical(&listings);
}

#[test]
fn seven_peers_tolerate_two_crashes() {
    let _serial = serial();
    let mut net = TestNetwork::start(7);
    net.member("patient", "patient");
    let rt = runtime();
    let peers = rt.block_on(connect(&net, "patient", 4));
    assert_eq!(peers.votes_needed(), 3, "f = 2: proofs carry three votes");
    let (pseudonym, _) = rt.block_on(register(&peers));
    net.peers[0].kill();
    net.peers[5].kill();
    let done = rt.block_on(grants(&peers, &pseudonym, 10));
    assert!(done.iter().all(|c| c.attested_by().len() >= 3));
    net.peers[0].restart();
    net.peers[5].restart();
    let listings = net.converged(done[9].block, Duration::from_secs(60));
    assert_eq!(listings.len(), 7);
    assert_identical(&listings);
}

/// Issue 14: one patient's grant with extreme window values once panicked the consensus
/// thread of every peer, for good. Now each is refused with INVALID_ARGUMENT, recorded in its
/// block, and the network commits the next transaction with identical blocks everywhere.
#[test]
fn extreme_grant_windows_are_refused_and_the_network_keeps_committing() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    let height = rt.block_on(async {
        let peers = connect(&net, "patient", 0).await;
        let (pseudonym, _) = register(&peers).await;
        for (from, until) in [
            (i64::MIN, i64::MAX),
            (i64::MAX - 1, i64::MAX),
            (i64::MIN, i64::MIN + 1),
            (-1, now_s() + 60),
            (now_s(), 253_402_300_800),
        ] {
            let args = v1::GrantArgs {
                pseudonym: pseudonym.to_vec(),
                grantee: "dr.extreme".into(),
                category: "lab-results".into(),
                rights: vec![v1::Right::Write as i32],
                from,
                until,
                ..Default::default()
            };
            let refused = peers.submit("grant", args.encode_to_vec()).await.unwrap();
            assert_eq!(refused.status, v1::TxStatus::ChaincodeError, "{refused:?}");
            assert_eq!(
                refused.code,
                tonic::Code::InvalidArgument as i32,
                "from {from} until {until}: {refused:?}"
            );
        }
        let next = grants(&peers, &pseudonym, 1).await;
        next[0].block
    });
    assert_identical(&net.converged(height, Duration::from_secs(30)));
}

/// Issue 14 (red team): one Byzantine replica sending fetches with extreme bounds once
/// overflowed `after + window` on every correct peer's consensus thread. Now they are
/// answered with at most one window, or not at all, and the network keeps committing.
#[test]
fn fetches_with_extreme_bounds_from_a_replica_stop_no_peer() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    rt.block_on(async {
        let fetch = |after: u64, up_to: u64| v1::ReplicaMessage {
            kind: Some(v1::replica_message::Kind::Fetch(v1::PbftFetch {
                from: 3,
                after,
                up_to,
            })),
            epoch: 0,
        };
        let hostile = vec![
            fetch(u64::MAX, 0),
            fetch(u64::MAX - 1, u64::MAX),
            fetch(u64::MAX, u64::MAX),
            fetch(0, u64::MAX),
        ];
        for target in 0..3 {
            // The stream's answer does not matter; the peers' survival does.
            let sent = replicate_as(&net, "peer3", target, hostile.clone());
            let _ = tokio::time::timeout(Duration::from_secs(2), sent).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let peers = connect(&net, "patient", 0).await;
        let (pseudonym, _) = register(&peers).await;
        grants(&peers, &pseudonym, 2).await;
    });
    for p in 0..3 {
        assert!(net.peers[p].is_running(), "peer {p} died");
    }
}

/// Red team: a replica forwarding envelopes that are not valid (here: a patient's real
/// transaction with its signature broken, under its correct id) once had them queued and
/// ordered. The host now refuses such forwards: none reaches a block, and real
/// transactions keep committing.
#[test]
fn forwards_of_invalid_envelopes_are_not_queued() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("patient", "patient");
    let rt = runtime();
    rt.block_on(async {
        let peers = connect(&net, "patient", 0).await;
        let (pseudonym, _) = register(&peers).await;
        let mut forged = Vec::new();
        let mut forwards = Vec::new();
        for i in 0..20 {
            let (tx_id, mut envelope) =
                peers.transaction("grant", grant_args(&pseudonym, &format!("dr.f{i}")));
            if let Some(v1::envelope::Kind::Transaction(signed)) = &mut envelope.kind {
                signed.signature[0] ^= 1;
            }
            forged.push(tx_id.to_vec());
            forwards.push(v1::ReplicaMessage {
                kind: Some(v1::replica_message::Kind::Forward(v1::PbftRequest {
                    tx_id: tx_id.to_vec(),
                    payload: envelope.encode_to_vec(),
                })),
                epoch: 0,
            });
        }
        // Peer 3 forwards them to the primary (peer 0) and to the others.
        for target in 0..3 {
            let sent = replicate_as(&net, "peer3", target, forwards.clone());
            let _ = tokio::time::timeout(Duration::from_secs(2), sent).await;
        }
        let committed = grants(&peers, &pseudonym, 3).await;
        let height = committed.last().unwrap().block;
        height_reaching(&peers, 0, height).await;
        let on_ledger = ledger_tx_ids(&connect(&net, "auditor", 0).await, 0).await;
        for id in &forged {
            assert!(!on_ledger.contains(id), "a forged forward reached a block");
        }
    });
}

/// Issue 14, item 9, and issue 17, item 1: a wallet is pinned to its network when it is
/// enrolled (or with `network pin`), never by whichever peer answers first. With the
/// bootstrap peer down (one fault, which PBFT tolerates), a pinned wallet finds the other
/// peers from its genesis; a wallet that is not pinned is refused with what to do; a peer
/// serving another genesis than the pinned one is refused, and so is pinning another one.
#[test]
fn clients_reach_the_network_with_the_bootstrap_peer_down() {
    let _serial = serial();
    let mut net = TestNetwork::start(4);
    net.member("patient", "patient");
    net.member("newcomer", "patient");
    assert!(net.wallet("patient").join("network-genesis.pb").exists());
    let whoami = net.as_("patient", &["whoami"]).ok();
    let network = whoami["network"]
        .as_str()
        .expect("whoami shows the pin")
        .to_string();
    let rt = runtime();
    let pseudonym = rt.block_on(async {
        let peers = connect(&net, "patient", 0).await;
        assert_eq!(hex::encode(peers.network_id), network);
        let (pseudonym, _) = register(&peers).await;
        pseudonym
    });
    // A wallet enrolled without the genesis is not pinned: refused until it is.
    let registered = net
        .as_(
            "admin",
            &[
                "admin", "register", "--name", "unpinned", "--role", "patient",
            ],
        )
        .ok();
    let secret = registered["secret"].as_str().unwrap().to_string();
    net.as_(
        "unpinned",
        &["enroll", "--name", "unpinned", "--secret", &secret],
    )
    .ok();
    let refused = net.as_("unpinned", &["--peer", &net.address(1), "ledger", "info"]);
    assert!(
        refused.error_message().contains("not pinned"),
        "{:?}",
        refused.json
    );
    let genesis = net.genesis.display().to_string();
    let pinned = net
        .as_("unpinned", &["network", "pin", "--genesis", &genesis])
        .ok();
    assert_eq!(pinned["network"].as_str(), Some(network.as_str()));
    net.as_("unpinned", &["--peer", &net.address(1), "ledger", "info"])
        .ok();

    net.peers[0].kill();
    rt.block_on(async {
        let wallet = Wallet::open(&net.wallet("patient")).unwrap();
        let peers = PeerSet::connect(&wallet, &net.address(0)).await.unwrap();
        grants(&peers, &pseudonym, 1).await;
        // Never connected before: the dead peer first, then one that answers.
        let newcomer = Wallet::open(&net.wallet("newcomer")).unwrap();
        let bootstrap = format!("{},{}", net.address(0), net.address(2));
        let peers = PeerSet::connect(&newcomer, &bootstrap).await.unwrap();
        register(&peers).await;
        // Given only the dead peer, a pinned wallet finds the others from its genesis.
        let lonely = Wallet::open(&net.member("lonely", "patient")).unwrap();
        let peers = PeerSet::connect(&lonely, &net.address(0)).await.unwrap();
        register(&peers).await;
    });
    // The CLI, pointed at the dead peer, goes through the pinned genesis.
    net.as_("patient", &["--peer", &net.address(0), "ledger", "info"])
        .ok();
    // Another network's genesis (here: this one's, altered) cannot be pinned over the pin.
    let mut block = v1::Block::decode(std::fs::read(&net.genesis).unwrap().as_slice()).unwrap();
    block.header.as_mut().unwrap().time_ms += 1;
    let other = net.tmp.path().join("other-genesis.pb");
    std::fs::write(&other, block.encode_to_vec()).unwrap();
    let other = other.display().to_string();
    let refused = net.as_("patient", &["network", "pin", "--genesis", &other]);
    assert!(
        refused.error_message().contains("pinned to network"),
        "{:?}",
        refused.json
    );
    // A genesis listing one operator's peer certificate under another peer's name is not a
    // genesis: a peer is named as its certificate names it.
    let ca_root = net.root().display().to_string();
    let mut swapped = medledger_tests::binaries().genesis(
        std::path::Path::new(&ca_root),
        &(0..4)
            .map(|i| medledger_devnet::process::GenesisPeer {
                name: format!("peer{}", (i + 1) % 4),
                certificate: net.wallet(&format!("peer{i}")).join("cert.pem"),
                address: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect::<Vec<_>>(),
        &[],
        &net.tmp.path().join("swapped.pb"),
    );
    let out = swapped.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("certificate names"),
        "{said}"
    );
    // An earlier version's trust-on-first-use file is not a pin.
    let legacy = net.member("legacy", "patient");
    std::fs::rename(
        legacy.join("network-genesis.pb"),
        legacy.join("genesis.block"),
    )
    .unwrap();
    let refused = net.as_("legacy", &["--peer", &net.address(1), "ledger", "info"]);
    assert!(
        refused.error_message().contains("not pinned"),
        "{:?}",
        refused.json
    );
    // A pinned wallet refuses peers serving a genesis it did not pin.
    let pinned = net.wallet("patient").join("network-genesis.pb");
    std::fs::write(&pinned, block.encode_to_vec()).unwrap();
    rt.block_on(async {
        let wallet = Wallet::open(&net.wallet("patient")).unwrap();
        let refused = PeerSet::connect(&wallet, &net.address(1)).await;
        let why = refused
            .err()
            .expect("a genesis it did not pin was refused")
            .to_string();
        assert!(why.contains("another genesis"), "{why}");
    });
}

/// Issue 14, item 7: one identity flooding a peer is held to its own limits (here: more
/// submissions under way at once than it may have) and gets RESOURCE_EXHAUSTED, while
/// another identity's transactions commit as usual.
#[test]
fn one_identity_flooding_a_peer_is_held_to_its_limits() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("flooder", "patient");
    net.member("patient", "patient");
    let rt = runtime();
    rt.block_on(async {
        let flooder = connect(&net, "flooder", 0).await;
        let (pseudonym, _) = register(&flooder).await;
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..400 {
            let (_, envelope) =
                flooder.transaction("grant", grant_args(&pseudonym, &format!("dr.{i}")));
            let mut client = flooder.peer(0);
            calls.spawn(async move {
                client
                    .submit(v1::SubmitRequest {
                        envelope: Some(envelope),
                    })
                    .await
                    .err()
                    .map(|status| status.code())
            });
        }
        let mut exhausted = 0;
        while let Some(code) = calls.join_next().await {
            if code.unwrap() == Some(tonic::Code::ResourceExhausted) {
                exhausted += 1;
            }
        }
        assert!(exhausted > 0, "400 submissions at once were all admitted");
        let patient = connect(&net, "patient", 0).await;
        let (other, _) = register(&patient).await;
        grants(&patient, &other, 2).await;
    });
}

/// Ledger format 2 expiry (docs/adr/0009 §6): an outcome is always final. A committed
/// transaction's retry is answered with its proof even after it expired; one that never
/// reached a block is refused for good (DEADLINE_EXCEEDED, status EXPIRED) only once the
/// peers hold a block past its expiry, and is undecided ("ask again") before that.
#[test]
fn an_outcome_is_final_committed_or_proven_expired() {
    let _serial = serial();
    // A 10 s lifetime: the SDK signs transactions that expire 5 s after signing.
    let net = TestNetwork::start_with(4, &["--max-tx-lifetime-ms", "10000"]);
    net.member("patient", "patient");
    net.member("another", "patient");
    let wallet = Wallet::open(&net.wallet("patient")).unwrap();
    runtime().block_on(async {
        let peers = connect(&net, "patient", 0).await;
        let mut pseudonym = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut pseudonym);
        let (_, committed_envelope) =
            peers.transaction("register_patient", register_args(&pseudonym));
        let first = peers
            .submit_envelope(committed_envelope.clone())
            .await
            .unwrap();
        assert!(first.is_valid(), "{first:?}");
        // Signed now, expiring in 2 s, and held back until it has expired.
        let mut late = transaction_of(&peers.transaction("register_patient", Vec::new()).1);
        late.expires_at_ms = now_s() * 1000 + 2_000;
        let late = signed_envelope(&wallet, &late);
        tokio::time::sleep(Duration::from_secs(6)).await;

        // Past its expiry by every clock, but no block past it yet: not settled.
        match peers.submit_envelope(late.clone()).await {
            Err(medledger_sdk::error::ClientError::NoQuorum { .. }) => {}
            other => panic!("an expiry no block has passed is not settled: {other:?}"),
        }
        // A block past the expiry: now every peer holds all the blocks that could hold it.
        register(&connect(&net, "another", 1).await).await;
        match peers.submit_envelope(late.clone()).await {
            Err(medledger_sdk::error::ClientError::Rejected { code, .. }) => {
                assert_eq!(code, tonic::Code::DeadlineExceeded)
            }
            other => panic!("an expired transaction is refused for good: {other:?}"),
        }
        let status = submit_raw(&peers, 1, late).await;
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            status
                .metadata()
                .get(medledger_sdk::peer::TX_STATUS_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some((v1::TxStatus::Expired as i32).to_string().as_str()),
            "the refusal names its kind"
        );
        // Whatever else refuses it (here a broken signature), an envelope past its expiry
        // and in no block up to a block past it never commits: every peer says so.
        let mut broken = late_tx_for_test(&peers, &wallet);
        if let Some(v1::envelope::Kind::Transaction(signed)) = broken.kind.as_mut() {
            signed.signature[0] ^= 1;
        }
        match peers.submit_envelope(broken).await {
            Err(medledger_sdk::error::ClientError::Rejected { code, .. }) => {
                assert_eq!(code, tonic::Code::DeadlineExceeded)
            }
            other => panic!("an expired envelope refused otherwise is settled too: {other:?}"),
        }
        // The committed one, retried after its expiry: its proof, not a refusal.
        let again = peers.submit_envelope(committed_envelope).await.unwrap();
        assert_eq!((again.block, again.tx_id), (first.block, first.tx_id));
        assert!(again.is_valid());
    });
}

/// A `register_patient` envelope signed by `wallet` that expired 10 s ago.
fn late_tx_for_test(peers: &PeerSet, wallet: &Wallet) -> v1::Envelope {
    let mut tx = transaction_of(&peers.transaction("register_patient", Vec::new()).1);
    tx.expires_at_ms = now_s() * 1000 - 10_000;
    signed_envelope(wallet, &tx)
}

/// A resumed TLS 1.3 handshake checks no certificate (RFC 8446 §2.2): it would carry a
/// revoked, expired or renewed-away certificate past every check. A peer offers no session
/// to resume, so even a client that asks to resume gets a full handshake every time.
#[test]
fn a_peer_never_resumes_a_tls_session() {
    let _serial = serial();
    let net = TestNetwork::start(4);
    net.member("resumer", "clinician");
    let wallet = Wallet::open(&net.wallet("resumer")).unwrap();
    let revoked = medledger_tls::SharedRevocations::default();
    // Our client refuses to resume; this one asks to.
    let mut config = (*client_tls(&wallet, None, &revoked).unwrap()).clone();
    config.resumption = rustls::client::Resumption::default();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let address = net.address(0);
    runtime().block_on(async {
        for attempt in 0..3 {
            let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("medledger-peer").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            assert_eq!(
                tls.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Full),
                "handshake {attempt} was not a full one"
            );
            // Tickets, if any were sent, arrive after the handshake: read what comes.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await;
        }
    });
}
