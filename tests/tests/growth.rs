//! The local network changes its peers under load (issue 19 item 4, docs/adr/0011):
//! `medledger network up` starts four peers, `medledger-load` keeps clinicians and patients
//! busy, and `medledger network add-peer` grows the network to seven, one peer per change
//! (at most f are added at once); then `network remove-peer` and `add-peer` replace one,
//! and `network rekey-peer` rotates a peer's signing key.
//! Nothing the load was told committed is lost, nothing it sent is refused, every peer
//! holds one chain, the auditor verifies it across every change, and after a restart a new
//! client follows every configuration link, each proven by its own epoch's replicas.

use std::process::Command;
use std::time::{Duration, Instant};

use medledger_tests::local_network::LocalNetwork;

/// Seconds of measured load: long enough to cover the three additions.
const LOAD_SECONDS: u64 = 60;

#[test]
fn the_local_network_grows_to_seven_under_load_and_replaces_a_peer() {
    let net = LocalNetwork::up_with(&[]);
    let mut load = net.start_load("growth", LOAD_SECONDS);
    // The load has set up its identities once the ledger grows by itself.
    let start = height(&net);
    let deadline = Instant::now() + Duration::from_secs(60);
    while height(&net) < start + 20 {
        assert!(Instant::now() < deadline, "the load never started");
        std::thread::sleep(Duration::from_millis(500));
    }

    // 4 → 7, one peer per change.
    for (added, peers) in [("peer4", 5), ("peer5", 6), ("peer6", 7)] {
        let out = net.json(None, &["network", "add-peer"]);
        assert_eq!(out["name"], added, "{out}");
        assert_eq!(out["peers"].as_array().unwrap().len(), peers, "{out}");
    }
    // Seven peers, all taking part: two more may fail. (Each addition waited until its peer
    // took part; under load another may be between two checks for a moment.)
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = net.json(None, &["network", "status"]);
        if status["more_may_fail"] == 2 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status["all_running"], true, "{status}");
    assert_eq!(status["more_may_fail"], 2, "{status}");
    assert!(
        load_still_runs(&mut load),
        "the additions outlasted the load"
    );

    net.load_lost_nothing(load, "across the changes");

    // A peer replaced: removed (stopped, its ledger kept), another added in its place.
    let out = net.json(None, &["network", "remove-peer", "peer1"]);
    assert_eq!(out["stopped"], true, "{out}");
    // Its key retired: its certificate revoked at the CA, from where the ledger learns it.
    assert!(out["revoked"].as_u64().unwrap() >= 1, "{out}");
    let out = net.json(None, &["network", "add-peer"]);
    assert_eq!(out["name"], "peer7", "{out}");
    let status = net.json(None, &["network", "status"]);
    let names: Vec<&str> = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ca", "peer0", "peer2", "peer3", "peer4", "peer5", "peer6", "peer7", "gateway"
        ],
        "{status}"
    );
    assert_eq!(status["all_running"], true, "{status}");

    // A peer's signing key rotated: its old certificate revoked, the same name and address
    // with the new key (now the last replica), its own ledger brought up to date.
    // With two of the seven peers down, stopping a third would leave four, one short of a
    // quorum: the rotation is refused before anything is stopped or renewed.
    for down in ["peer0", "peer2"] {
        let pid = std::fs::read_to_string(net.path().join(format!("{down}.pid"))).unwrap();
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    let refused = net.run(None, &["network", "rekey-peer", "peer3"]);
    let said = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("was left as it is"), "{said}");
    net.ok(None, &["network", "up", "--detach"]);
    let status = net.json(None, &["network", "status"]);
    assert_eq!(status["all_running"], true, "{status}");

    let out = net.json(None, &["network", "rekey-peer", "peer3"]);
    assert_ne!(out["old_key"], out["new_key"], "{out}");
    let status = net.json(None, &["network", "status"]);
    assert_eq!(status["all_running"], true, "{status}");

    // One chain, verified by the auditor across every change from the genesis (the blocks:
    // the load records items whose files it never uploads).
    let report = net.json(None, &["ledger", "verify", "--skip-objects"]);
    assert_eq!(report["ok"], true, "{report}");

    // Restarted, every peer proves each configuration link with the votes of the replicas
    // of that link's own epoch (three replica sets ago, some of them): a new client follows
    // the whole chain.
    // peer7 as if its join had been cut before its head was confirmed (the CLI killed):
    // `network up` starts it through another peer, and it confirms and takes part.
    std::fs::write(net.path().join("peer7").join("JOIN-UNCONFIRMED"), b"").unwrap();
    // And no auditor named (as in a network made before auditors were): the admins remove
    // theirs; `network up` names it again.
    let file = net.path().join("no-auditor.pb");
    let file = file.to_str().unwrap();
    net.ok(
        Some("admin"),
        &[
            "admin",
            "config",
            "propose",
            "--remove-auditor",
            "auditor",
            "-o",
            file,
        ],
    );
    for admin in ["admin", "admin2"] {
        net.ok(Some(admin), &["admin", "config", "approve", file]);
    }
    net.ok(Some("admin"), &["admin", "config", "submit", file]);
    net.ok(None, &["network", "down"]);
    // And network.json behind the chain, as a command killed after its change committed
    // leaves it: without peer7. `network up` follows the configuration in force and starts
    // peer7 from it.
    let layout_file = net.path().join("network.json");
    let mut layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&layout_file).unwrap()).unwrap();
    let at = layout["peer_names"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n == "peer7")
        .unwrap();
    for list in ["peers", "peer_names"] {
        layout[list].as_array_mut().unwrap().remove(at);
    }
    std::fs::write(&layout_file, layout.to_string()).unwrap();
    let said = net.ok(None, &["network", "up", "--detach"]);
    assert!(
        said.contains("network.json followed the configuration in force"),
        "{said}"
    );
    assert!(said.contains("named the local network's auditor"), "{said}");
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&layout_file).unwrap()).unwrap();
    assert!(
        layout["peer_names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "peer7"),
        "{layout}"
    );
    assert!(
        !net.path().join("peer7").join("JOIN-UNCONFIRMED").exists(),
        "peer7 never confirmed its join"
    );
    let shown = net.json(None, &["admin", "config", "show"]);
    assert_eq!(shown["sequence"], 8, "{shown}");
    assert_eq!(shown["auditors"][0]["name"], "auditor", "{shown}");
    assert_eq!(
        shown["peers"],
        serde_json::json!([
            "peer0", "peer2", "peer4", "peer5", "peer6", "peer7", "peer3"
        ]),
        "{shown}"
    );
}

/// The ledger's height as `network status` reports it for the first peer.
fn height(net: &LocalNetwork) -> u64 {
    let status = net.json(None, &["network", "status"]);
    status["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "peer0"))
        .and_then(|c| c["detail"].as_str())
        .and_then(|d| d.strip_prefix("height "))
        .and_then(|d| d.split(',').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or(0)
}

fn load_still_runs(load: &mut std::process::Child) -> bool {
    matches!(load.try_wait(), Ok(None))
}
