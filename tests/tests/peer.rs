//! Four real `medledger-peer` processes on loopback, a real CA, clients through the SDK:
//! ordering under concurrent load, crashes (SIGKILL) of a backup, of the primary and of every
//! peer at once, and bad input of every kind. Ledgers are compared block by block.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medledger_client::peer::{Committed, PeerSet};
use medledger_client::wallet::Wallet;
use medledger_proto::v1;
use medledger_tests::TestNetwork;
use prost::Message;
use rand_core::RngCore;

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

fn register_args(pseudonym: &[u8; 32]) -> Vec<u8> {
    v1::RegisterPatientArgs {
        pseudonym: pseudonym.to_vec(),
        category_keys: vec![v1::CategoryKey {
            category: "lab-results".into(),
            public_key: vec![7; 32],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn grant_args(pseudonym: &[u8; 32], grantee: &str) -> Vec<u8> {
    v1::GrantArgs {
        pseudonym: pseudonym.to_vec(),
        grantee: grantee.into(),
        category: "lab-results".into(),
        rights: vec![v1::Right::Write as i32],
        from: now_s() - 60,
        until: now_s() + 3600,
        ..Default::default()
    }
    .encode_to_vec()
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

/// Every tx_id in a peer's blocks, from its blocks over gRPC.
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
    assert!(acknowledged.iter().all(|c| c.attested_by.len() >= 2));
    let ids: BTreeSet<_> = acknowledged.iter().map(|c| c.tx_id.to_vec()).collect();
    assert_eq!(ids.len(), 1000, "every transaction has its own id");
    let height = acknowledged.iter().map(|c| c.block).max().unwrap();
    let listings = net.converged(height, Duration::from_secs(30));
    assert_identical(&listings);
    rt.block_on(async {
        let peers = connect(&net, "patient0", 0).await;
        for p in 0..4 {
            let on_ledger = ledger_tx_ids(&peers, p).await;
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
        let peers = connect(&net, "patient0", 0).await;
        for p in 0..4 {
            let on_ledger = ledger_tx_ids(&peers, p).await;
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
