//! A changeable peer set (docs/adr/0011), on real processes over mutual TLS: the admins
//! remove a peer of five (not the last: the others' replica ids move) through a
//! configuration transaction; the block that commits it is
//! the last the five order, the four that stay order the next ones as a new replica set
//! (signing in their epoch), the removed peer stops ordering and says so, clients follow
//! the change with proofs; a peer down across the change comes back under its old id and
//! catches up across it; then a new peer is added and started with `--join`, catches up
//! checking every block and takes part; the auditor verifies the chain across both changes
//! from the genesis; last, a peer removed while it was down comes back, reads the blocks
//! up to its removal from the others (who refuse it as a replica), and says it left.

use std::time::Duration;

use medledger_tests::{PeerProcess, TestNetwork};

/// Waits (30 s at most) until `peer`'s log says it was removed.
fn said_it_left(net: &TestNetwork, peer: &str) {
    let log = net.tmp.path().join(format!("{peer}.log"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("removed from the network at block") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{peer} never said it left: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One configuration change through peer `via` ([`TestNetwork::configure`]).
fn change(net: &TestNetwork, via: usize, options: &[&str]) -> serde_json::Value {
    net.configure(via, options)
}

#[test]
fn the_admins_remove_a_peer_and_the_others_carry_on() {
    let mut net = TestNetwork::start(5);
    let before = change(&net, 0, &["--max-tx-lifetime-ms", "120000"]);
    // peer3 is down across the change: it comes back in the old epoch, with its old id.
    net.peers[3].kill();
    // peer1 goes: the peers after it move down one replica id.
    let removed_at = change(&net, 0, &["--remove-peer", "peer1"])["block"]
        .as_u64()
        .unwrap();
    assert!(removed_at > before["block"].as_u64().unwrap());

    // The removed peer says so, and stops ordering at that block (it may have missed the
    // last commits as the others switched: it reads that block from them).
    said_it_left(&net, "peer1");
    // Its listing holds the genesis and the blocks up to the change, none after.
    assert_eq!(net.peers[1].blocks().len() as u64, removed_at + 1);
    net.peers[1].terminate();

    // The four order on: another change commits, submitted to a peer whose replica id
    // moved (peer4, now replica 3).
    let after = change(&net, 4, &["--max-tx-lifetime-ms", "90000"]);
    assert!(after["block"].as_u64().unwrap() > removed_at);
    // peer3 restarts behind the change, as replica 3 of the old set (replica 2 of the new):
    // it fetches the blocks up to the change under its old id, switches at the change, and
    // catches up as one of the four.
    net.peers[3].restart();
    let shown = net
        .as_(
            "admin",
            &["--peer", &net.address(0), "admin", "config", "show"],
        )
        .ok();
    assert_eq!(shown["sequence"], 3, "{shown}");
    assert_eq!(
        shown["peers"],
        serde_json::json!(["peer0", "peer2", "peer3", "peer4"]),
        "{shown}"
    );
    let listings = net.converged(after["block"].as_u64().unwrap(), Duration::from_secs(30));
    assert_eq!(listings.len(), 4, "the four that stay hold one chain");

    // A peer is added: enrolled, proposed with its address, and started with --join once
    // the change is committed; it catches up checking every block, and takes part.
    net.member("peer5", "peer");
    let cert = net.wallet("peer5").join("cert.pem");
    let address = format!("127.0.0.1:{}", medledger_tests::free_port());
    let added_at = change(
        &net,
        2,
        &[
            "--add-peer",
            cert.to_str().unwrap(),
            "--peer-address",
            &address,
        ],
    )["block"]
        .as_u64()
        .unwrap();
    let joined = PeerProcess::start_joining(
        &net.wallet("peer5"),
        &net.genesis,
        &net.tmp.path().join("peer5"),
        &address,
        &[format!("peer0@{}", net.address(0))],
    );
    net.peers.push(joined);
    assert!(net.peers[5].blocks().len() as u64 > added_at);
    // Its head confirmed by the peer named with --join, the join is over.
    // (`medledger_peer::join::UNCONFIRMED_JOIN`.)
    let marker = net.peers[5].data_dir.join("JOIN-UNCONFIRMED");
    assert!(!marker.exists());
    // A joiner stopped before a named peer confirmed the block it reached (as if it were)
    // does not take part on that chain until one does: without --join it refuses to
    // start; with it, it confirms and goes on.
    net.peers[5].terminate();
    std::fs::write(&marker, b"").unwrap();
    let refused = medledger_tests::binaries()
        .peer_serve(&net.wallet("peer5"), &net.genesis, &net.peers[5].data_dir)
        .args(["--listen", &address])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no peer named with --join confirmed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Named only as peers not in force (peer1 was removed; peer9 never was), it says so
    // and stops, instead of waiting for a confirmation that cannot come.
    let refused = medledger_tests::binaries()
        .peer_serve(&net.wallet("peer5"), &net.genesis, &net.peers[5].data_dir)
        .args(["--listen", &address])
        .args(["--join", &format!("peer1@{}", net.address(1))])
        .args(["--join", &format!("peer9@{}", net.address(0))])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("is a peer of the configuration in force") && said.contains("peer9@"),
        "{said}"
    );
    assert!(marker.exists(), "the join stays unconfirmed");
    // Named as another peer than the one answering at that address (peer3's name, peer0's
    // address: a retired peer that kept its certificate, say), the peer there confirms
    // nothing: the joiner waits, says why, and stays out.
    let log = net.tmp.path().join("peer5-misnamed.log");
    let mut misnamed = medledger_tests::binaries()
        .peer_serve(&net.wallet("peer5"), &net.genesis, &net.peers[5].data_dir)
        .args(["--listen", &address])
        .args(["--join", &format!("peer3@{}", net.address(0))])
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    let said = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("waiting for a peer named with --join") || waited.elapsed().as_secs() > 60
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    misnamed.kill().unwrap();
    misnamed.wait().unwrap();
    assert!(
        said.contains(&format!("peer3@{}: unreachable", net.address(0))),
        "{said}"
    );
    assert!(!said.contains("medledger-peer listening on"), "{said}");
    assert!(marker.exists());
    net.peers[5].restart();
    assert!(!marker.exists());
    // The five (peer0, peer2, peer3, peer4, peer5) order on, through the one that joined.
    let last = change(&net, 5, &["--max-tx-lifetime-ms", "100000"]);
    let shown = net
        .as_(
            "admin",
            &["--peer", &net.address(5), "admin", "config", "show"],
        )
        .ok();
    assert_eq!(
        shown["peers"],
        serde_json::json!(["peer0", "peer2", "peer3", "peer4", "peer5"]),
        "{shown}"
    );
    let listings = net.converged(last["block"].as_u64().unwrap(), Duration::from_secs(30));
    assert_eq!(listings.len(), 5);
    // A client that starts from the new peer follows the chain to the peers in force and
    // talks to them (not to the genesis's).
    let info = net
        .as_("admin", &["--peer", &net.address(5), "ledger", "info"])
        .ok();
    let rows = info["peers"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["peer0", "peer2", "peer3", "peer4", "peer5"],
        "{info}"
    );
    assert!(rows.iter().all(|r| r["up"] == true), "{info}");

    // The auditor checks every block's certificate against the replicas of its epoch.
    let report = net
        .as_("auditor", &["--peer", &net.address(2), "ledger", "verify"])
        .ok();
    assert_eq!(report["ok"], true, "{report}");

    // A peer removed while it was down: back, it is refused by the others, reads the
    // blocks up to the change that removed it from them, and says it left.
    net.peers[2].kill();
    let gone_at = change(&net, 0, &["--remove-peer", "peer2"])["block"]
        .as_u64()
        .unwrap();
    net.peers[2].restart();
    said_it_left(&net, "peer2");
    assert_eq!(net.peers[2].blocks().len() as u64, gone_at + 1);
    net.peers[2].terminate();
}
