//! The whole product as a user meets it: `medledger network up` on loopback, the oncology
//! scenario through the `medledger` binary (`medledger demo` runs every step as a real
//! command and fails unless each one, every refusal included, ends as it must), more of a
//! patient's and an auditor's work by hand, and `medledger ledger verify` catching a tampered,
//! missing or unreferenced object and a tampered block.

use std::path::Path;

use medledger_proto::v1;
use medledger_tests::local_network::LocalNetwork as Network;
use medledger_tests::{files_under, free_ports};
use prost::Message;

fn flip_byte(path: &Path, at: usize) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut changed = original.clone();
    let i = at.min(changed.len() - 1);
    changed[i] ^= 0x01;
    std::fs::write(path, &changed).unwrap();
    original
}

/// Writes words into every refusal of every block of a stopped peer's RocksDB, as an older
/// version stored them; how many blocks changed.
fn reword_refusals(data_dir: &Path) -> usize {
    let data_dir = data_dir.join("ledger");
    let options = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&options, &data_dir).unwrap();
    let db = rocksdb::DB::open_cf(&options, &data_dir, &cfs).unwrap();
    let cf = db.cf_handle("blocks").unwrap();
    let mut changed = Vec::new();
    for entry in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, value) = entry.unwrap();
        let mut block = v1::Block::decode(value.as_ref()).unwrap();
        let mut any = false;
        for result in &mut block.results {
            if result.status != v1::TxStatus::Valid as i32 {
                // Blocks record no words now; a peer of an older version wrote some.
                assert!(
                    result.message.is_empty(),
                    "a block stores words: {result:?}"
                );
                result.message = format!("in other words: refused, code {}", result.code);
                any = true;
            }
        }
        if any {
            changed.push((key.to_vec(), block.encode_to_vec()));
        }
    }
    let count = changed.len();
    for (key, value) in changed {
        db.put_cf(cf, key, value).unwrap();
    }
    db.flush_cf(cf).unwrap();
    count
}

/// The numbers of the blocks in a peer's RocksDB (opened read-only, the peer may run) whose
/// encoding holds `needle` anywhere: transaction arguments, creators' certificates, results.
fn blocks_holding(data_dir: &Path, needle: &[u8]) -> Vec<u64> {
    let data_dir = data_dir.join("ledger");
    let options = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&options, &data_dir).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&options, &data_dir, &cfs, false).unwrap();
    let cf = db.cf_handle("blocks").unwrap();
    let mut found = Vec::new();
    let mut count = 0;
    for entry in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, value) = entry.unwrap();
        count += 1;
        if value.windows(needle.len()).any(|w| w == needle) {
            found.push(u64::from_be_bytes(key.as_ref().try_into().unwrap()));
        }
    }
    assert!(count > 1, "no blocks in {}", data_dir.display());
    found
}

/// The arguments of every valid `share_for_study` transaction in a peer's blocks (its
/// RocksDB, opened read-only).
fn shares_in_blocks(data_dir: &Path) -> Vec<v1::ShareForStudyArgs> {
    let data_dir = data_dir.join("ledger");
    let options = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&options, &data_dir).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&options, &data_dir, &cfs, false).unwrap();
    let cf = db.cf_handle("blocks").unwrap();
    let mut shares = Vec::new();
    for entry in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (_, value) = entry.unwrap();
        let block = v1::Block::decode(value.as_ref()).unwrap();
        for (envelope, result) in block.envelopes.iter().zip(&block.results) {
            let envelope = v1::Envelope::decode(envelope.as_slice()).unwrap();
            let Some(v1::envelope::Kind::Transaction(signed)) = envelope.kind else {
                continue;
            };
            let transaction = v1::Transaction::decode(signed.transaction.as_slice()).unwrap();
            if transaction.function == "share_for_study"
                && result.status == v1::TxStatus::Valid as i32
            {
                shares.push(v1::ShareForStudyArgs::decode(transaction.args.as_slice()).unwrap());
            }
        }
    }
    shares
}

/// Rewrites block `number` in a stopped peer's RocksDB with `change` applied.
fn tamper_block(data_dir: &Path, number: u64, change: impl FnOnce(&mut v1::Block)) {
    let data_dir = data_dir.join("ledger");
    let data_dir = data_dir.as_path();
    let options = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&options, data_dir).unwrap();
    let db = rocksdb::DB::open_cf(&options, data_dir, &cfs).unwrap();
    let cf = db.cf_handle("blocks").unwrap();
    let key = number.to_be_bytes();
    let mut block = v1::Block::decode(db.get_cf(cf, key).unwrap().unwrap().as_slice()).unwrap();
    change(&mut block);
    db.put_cf(cf, key, block.encode_to_vec()).unwrap();
    db.flush_cf(cf).unwrap();
}

#[test]
fn network_up_the_oncology_scenario_and_verify_catches_tampering() {
    let net = Network::empty();
    let base = free_ports(6);
    let (ca, peers, gateway) = (base, base + 1, base + 5);
    let up_args = [
        "network".to_string(),
        "up".into(),
        "--detach".into(),
        "--ca-listen".into(),
        format!("127.0.0.1:{ca}"),
        "--peer-port".into(),
        peers.to_string(),
        "--gateway-listen".into(),
        format!("127.0.0.1:{gateway}"),
    ];
    let up_args: Vec<&str> = up_args.iter().map(String::as_str).collect();
    let up = net.ok(None, &up_args);
    assert!(up.contains("admin wallet:"), "{up}");
    for part in [
        "genesis.pb",
        "ca/ca-root.pem",
        "wallets/admin/cert.pem",
        "wallets/gateway/cert.pem",
    ] {
        assert!(net.path().join(part).exists(), "{part} missing");
    }
    // Idempotent: a second `up` finds everything running.
    net.ok(None, &up_args);
    let status = net.json(None, &["network", "status"]);
    assert_eq!(status["all_running"], true, "{status}");
    assert_eq!(status["components"].as_array().unwrap().len(), 6);
    assert_eq!(status["more_may_fail"], 1, "{status}");
    // A network's size is fixed by its genesis block.
    let out = net.run(None, &["network", "up", "--peers", "7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has 4 peers"));
    let out = net.run(
        None,
        &["network", "up", "--peers", "3", "--dir", "/tmp/unused"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 4 peers"));

    // The scenario, every step through the binary; it fails unless every refusal happens.
    let demo = net.json(None, &["demo"]);
    assert_eq!(demo["failures"], serde_json::json!([]), "{demo}");
    assert!(demo["steps"].as_u64().unwrap() >= 28, "{demo}");
    let run = demo["run"].as_str().unwrap().to_string();

    // The erased patient's objects are gone; the record's trail is closed to everyone.
    let out = net.run(Some(&format!("jane-{run}")), &["patient", "audit"]);
    assert!(!out.status.success());
    let study_dir = net.path().join(format!("demo-{run}/study-data"));
    let copies = files_under(&study_dir, &[]);
    assert_eq!(copies.len(), 1);
    let copy = std::fs::read_to_string(&copies[0]).unwrap();
    for identifier in ["Jane", "Doe", "ACC-2026-0917", "MRN-", "2026-11-20"] {
        assert!(
            !copy.contains(identifier),
            "{identifier} in the study copy: {copy}"
        );
    }
    // The copy's file key, wrapped to the study's key, reached the researcher as private
    // data (ledger format 6): the share in the blocks carries its commitment alone.
    let shares = shares_in_blocks(&net.path().join("peer0"));
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert!(shares[0].wrapped_dek.is_empty(), "{:?}", shares[0]);
    assert_eq!(shares[0].wrapped_dek_commitment.len(), 32);

    // A second patient by hand, whose objects stay: the auditor's material.
    for (name, role) in [("pat-b", "patient"), ("dr-b", "clinician")] {
        net.enroll_member(name, role);
    }
    let init = net.json(Some("pat-b"), &["patient", "init", "--uii", "MRN-B"]);
    let p = init["pseudonym"].as_str().unwrap().to_string();
    // The record is registered, and used, under a record credential (issue 20 item 2).
    let credential = init["credential"].as_str().unwrap().to_string();
    assert!(credential.starts_with("record-"), "{init}");
    let grant = net.json(
        Some("pat-b"),
        &[
            "patient",
            "grant",
            "--to",
            "dr-b",
            "--category",
            "lab-results",
            "--rights",
            "read,write",
            "--until",
            "2030-01-01",
        ],
    );
    let file = net.path().join("report.txt");
    std::fs::write(&file, "potassium 4.1 mmol/L").unwrap();
    let upload = net.json(
        Some("dr-b"),
        &[
            "clinician",
            "upload",
            "--patient",
            &p,
            "--category",
            "lab-results",
            file.to_str().unwrap(),
        ],
    );
    let item = upload["item"].as_str().unwrap().to_string();
    let permissions = net.json(Some("pat-b"), &["patient", "permissions"]);
    assert_eq!(permissions["permissions"][0]["state"], "live");
    assert_eq!(
        permissions["permissions"][0]["until"],
        "2030-01-01T00:00:00Z"
    );
    let items = net.json(Some("dr-b"), &["clinician", "items", "--patient", &p]);
    assert_eq!(items["items"][0]["id"], item.as_str());
    let patients = net.json(Some("dr-b"), &["clinician", "patients"]);
    assert_eq!(patients["patients"], serde_json::json!([p]));
    // Researchers have no business in records; a non-emergency clinician cannot break glass.
    let out = net.run(
        Some("dr-b"),
        &[
            "clinician",
            "emergency",
            "--patient",
            &p,
            "--category",
            "lab-results",
            "--reason",
            "x",
        ],
    );
    assert!(!out.status.success());
    let out = net.run(Some("pat-b"), &["patient", "erase"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "erasure needs confirming"
    );
    net.ok(
        Some("pat-b"),
        &[
            "patient",
            "revoke",
            "--permission",
            grant["permission"].as_str().unwrap(),
        ],
    );
    let out = net.run(
        Some("dr-b"),
        &[
            "clinician",
            "download",
            "--patient",
            &p,
            "--item",
            &item,
            "-o",
            "/tmp/never",
        ],
    );
    assert!(!out.status.success());
    assert!(!Path::new("/tmp/never").exists());
    // The trail, as FHIR AuditEvents: the revoked read is there as a failure.
    let fhir = net.json(Some("pat-b"), &["patient", "audit", "--format", "fhir"]);
    assert_eq!(fhir["resourceType"], "Bundle");
    let events = fhir["entry"].as_array().unwrap();
    let last = &events.last().unwrap()["resource"];
    assert_eq!(last["resourceType"], "AuditEvent");
    assert_eq!(last["outcome"], "4");
    assert_eq!(last["agent"][0]["who"]["identifier"]["value"], "dr-b");
    assert!(last["outcomeDesc"].as_str().unwrap().contains("revoked"));

    // Whatever pat-b did on the record (register, grant, revoke, read the trail), no block
    // names pat-b: not as a creator, not in a certificate, not in an argument. The auditor's
    // listing shows the credential as the creator, and no peer's store holds the name.
    let listed = net.json(
        Some("auditor"),
        &["ledger", "blocks", "--from", "1", "--limit", "100"],
    );
    let creators: Vec<&str> = listed["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["results"].as_array().unwrap())
        .map(|r| r["creator"].as_str().unwrap())
        .collect();
    assert!(creators.contains(&credential.as_str()), "{creators:?}");
    assert!(!creators.contains(&"pat-b"), "{creators:?}");
    for peer in 0..4 {
        let data_dir = net.path().join(format!("peer{peer}"));
        let holding = blocks_holding(&data_dir, b"pat-b");
        assert!(
            holding.is_empty(),
            "peer{peer}'s blocks {holding:?} name pat-b"
        );
        // The scan sees names where they are: the credential's, in its certificate.
        assert!(!blocks_holding(&data_dir, credential.as_bytes()).is_empty());
    }
    // The enrollment itself is no owner of the record: under its own name it is denied.
    let wallet = net.wallet("pat-b");
    let record_wallet = wallet.join("record");
    let moved = wallet.join("record.aside");
    std::fs::rename(&record_wallet, &moved).unwrap();
    std::fs::copy(
        moved.join("record-keys.json"),
        wallet.join("record-keys.json"),
    )
    .unwrap();
    let out = net.run(Some("pat-b"), &["patient", "permissions"]);
    std::fs::remove_file(wallet.join("record-keys.json")).unwrap();
    std::fs::rename(&moved, &record_wallet).unwrap();
    assert!(
        !out.status.success(),
        "the enrollment name acted as the record's owner"
    );

    // The auditor: all verifies.
    let report = net.json(None, &["ledger", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
    let objects = report["objects"].as_array().unwrap();
    assert!(objects.iter().any(|o| o["state"] == "ok"));
    assert!(
        objects
            .iter()
            .any(|o| o["state"].as_str().unwrap().starts_with("erased"))
    );

    // A tampered object is named; so is a missing one and one the ledger does not know.
    let stored = net
        .path()
        .join("objects")
        .join(upload["path"].as_str().unwrap());
    let original = flip_byte(&stored, 100);
    let text = net.verify_fails(&[]);
    assert!(
        text.contains(&format!("{}  TAMPERED", upload["path"].as_str().unwrap())),
        "{text}"
    );
    std::fs::remove_file(&stored).unwrap();
    assert!(net.verify_fails(&[]).contains("MISSING"));
    std::fs::write(&stored, &original).unwrap();
    let stray = net.path().join("objects/patients/stray/object");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"x").unwrap();
    assert!(net.verify_fails(&[]).contains("NOT ON THE LEDGER"));
    std::fs::remove_file(&stray).unwrap();
    net.ok(None, &["ledger", "verify"]);

    // Down; then a block altered on a peer's disk is caught, and an intact peer verifies.
    let down = net.ok(None, &["network", "down"]);
    assert!(down.contains("peer0"), "{down}");
    let status = net.json(None, &["network", "status"]);
    assert_eq!(status["all_running"], false);
    assert!(status["more_may_fail"].is_null(), "{status}");
    let genesis = net.path().join("genesis.pb");
    let offline = |peer: &str| {
        vec![
            "--data-dir".to_string(),
            net.path().join(peer).display().to_string(),
            "--genesis".into(),
            genesis.display().to_string(),
            "--skip-objects".into(),
        ]
    };
    let args1 = offline("peer1");
    net.ok(
        None,
        &[
            &["ledger", "verify"][..],
            &args1.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
    // Issue 16, item 3: a result's message is words for people, not consensus data: blocks
    // hold none, and blocks whose refusals a peer of another version worded still verify.
    let reworded = reword_refusals(&net.path().join("peer2"));
    assert!(reworded > 0, "the scenario left no refusal on the ledger");
    let args2 = offline("peer2");
    net.ok(
        None,
        &[
            &["ledger", "verify"][..],
            &args2.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
    tamper_block(&net.path().join("peer0"), 3, |b| {
        let envelope = &mut b.envelopes[0];
        let last = envelope.len() - 1;
        envelope[last] ^= 0x01;
    });
    let args0 = offline("peer0");
    let text = net.verify_fails(&args0.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text.contains("block      3  FAILED"), "{text}");
    assert!(text.contains("tx_root"), "{text}");
    assert!(text.contains("block      2  ok"), "{text}");
    // Its certificate no longer covers its batch: nothing after it is trusted or checked
    // (a peer serving uncertified blocks could otherwise keep an auditor busy forever).
    assert!(text.contains("commit certificate"), "{text}");
    assert!(!text.contains("block      4"), "{text}");
    // A rewritten state root breaks the link to the next block as well.
    tamper_block(&net.path().join("peer1"), 5, |b| {
        b.header.as_mut().unwrap().state_root[0] ^= 0x01;
    });
    let text = net.verify_fails(&args1.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text.contains("block      5  FAILED"), "{text}");
    assert!(text.contains("state_root differs"), "{text}");
    assert!(text.contains("block      6  FAILED"), "{text}");
    assert!(text.contains("prev_hash"), "{text}");
}

/// Issue 14, item 1: a peer whose consensus thread dies (here a fault injected before it
/// executes block 3, as a bug in execution would) does not linger half-alive: the process
/// exits 70 for its supervisor, `network status` shows it stopped and why, and the other
/// three peers carry the whole scenario on.
#[test]
fn a_peer_whose_consensus_thread_dies_stops_and_network_status_says_why() {
    let net = Network::up_with(&[("MEDLEDGER_FAULT_CONSENSUS_PANIC", "peer3:3")]);

    let demo = net.json(None, &["demo"]);
    assert_eq!(demo["failures"], serde_json::json!([]), "{demo}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let peer3 = loop {
        let status = net.json(None, &["network", "status"]);
        let peer3 = status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "peer3")
            .cloned()
            .unwrap();
        if peer3["running"] == false || std::time::Instant::now() > deadline {
            assert_eq!(status["all_running"], false, "{status}");
            for c in status["components"].as_array().unwrap() {
                if c["name"] != "peer3" {
                    assert_eq!(c["running"], true, "{status}");
                }
            }
            break peer3;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(peer3["running"], false, "{peer3}");
    assert!(
        peer3["detail"]
            .as_str()
            .unwrap()
            .contains("the consensus thread died"),
        "{peer3}"
    );
    let text = net.ok(None, &["network", "status"]);
    assert!(
        text.contains("STOPPED") && text.contains("consensus thread died"),
        "{text}"
    );
    // How many more may fail now (issue 18 item 5): three of four take part, none more.
    assert!(
        text.contains("3 of 4 peers take part (peer3: not answering)")
            && text.contains("0 more may fail now"),
        "{text}"
    );
    let status = net.json(None, &["network", "status"]);
    assert_eq!(status["more_may_fail"], 0, "{status}");
}

/// Issue 17, item 7: the peer every client reaches first lies — it serves a genesis of
/// another network, answers every submission with a forged outcome (a refusal the votes do
/// not cover, or another transaction's proof), signs block votes on headers it did not
/// compute, and names keys of its own as the category and study keys to encrypt to (the
/// patient's later download and the researcher's decryption would fail had any file been
/// encrypted to them). Clinicians, the patient, the researcher and the gateway (which reaches the same
/// peer first) still see the whole scenario end as it must, and the auditor verifies the
/// chain: nothing they accepted came from that peer alone.
#[test]
fn the_scenario_holds_when_the_first_peer_lies() {
    let net = Network::up_with(&[("MEDLEDGER_FAULT_LIE", "peer0:all")]);
    let log = std::fs::read_to_string(net.path().join("peer0.log")).unwrap_or_default();
    assert!(
        log.contains("this peer lies"),
        "peer0 tells its lies: {log}"
    );

    // The two admins change the network's configuration through the liar first: every
    // client after follows it, with proofs, past the liar's forged configuration chain.
    let update = net.path().join("config-update.pb");
    let update = update.to_str().unwrap();
    let admin = Some("admin");
    net.ok(
        admin,
        &[
            "admin",
            "config",
            "propose",
            "--max-tx-lifetime-ms",
            "120000",
            "-o",
            update,
        ],
    );
    net.ok(admin, &["admin", "config", "approve", update]);
    net.ok(Some("admin2"), &["admin", "config", "approve", update]);
    net.ok(admin, &["admin", "config", "submit", update]);
    let info = net.json(admin, &["ledger", "info"]);
    assert_eq!(info["configuration"]["sequence"], 1, "{info}");
    assert_eq!(
        info["configuration"]["max_tx_lifetime_ms"], 120_000,
        "{info}"
    );

    let demo = net.json(None, &["demo"]);
    assert_eq!(demo["failures"], serde_json::json!([]), "{demo}");

    // An outcome under the new configuration, written to a file through the liar first and
    // checked offline from the genesis alone; the same file with its envelope altered proves
    // nothing.
    let info = net.json(admin, &["ledger", "info"]);
    let height = info["peers"][1]["height"].as_u64().unwrap().to_string();
    // Each peer's private data report is the readers': the admin is not shown it, the
    // auditor is (a reconciliation pass ended on every honest peer while the demo ran).
    assert!(info["peers"][1].get("private_values").is_none(), "{info}");
    let audited = net.json(Some("auditor"), &["ledger", "info"]);
    for i in 1..4 {
        let report = &audited["peers"][i]["private_values"];
        assert!(report["last_pass_ms"].as_i64().unwrap() > 0, "{audited}");
        assert!(report["missing"].as_u64().is_some(), "{audited}");
    }
    let proof = net.path().join("outcome.pb");
    let proof = proof.to_str().unwrap();
    // Blocks are the ledger's readers' (peers and auditors): the admin is refused them, the
    // network's auditor writes the proof.
    for listing in ["blocks", "emergencies"] {
        let refused = net.run(admin, &["ledger", listing, "--limit", "1"]);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{listing}: {said}");
        assert!(
            said.contains("peers and auditors only"),
            "{listing}: {said}"
        );
    }
    net.ok(
        Some("auditor"),
        &[
            "ledger", "proof", "--block", &height, "--index", "0", "-o", proof,
        ],
    );
    let genesis = net.path().join("genesis.pb");
    let genesis = genesis.to_str().unwrap();
    let checked = net.json(
        None,
        &["ledger", "check-proof", proof, "--genesis", genesis],
    );
    assert_eq!(checked["proven"], true, "{checked}");
    assert_eq!(checked["block"].as_u64().unwrap().to_string(), height);
    let mut outcome = v1::OutcomeProof::decode(std::fs::read(proof).unwrap().as_slice()).unwrap();
    assert!(
        !outcome.config_links.is_empty(),
        "the file carries the configuration link"
    );
    let last = outcome.envelope.len() - 1;
    outcome.envelope[last] ^= 1;
    std::fs::write(proof, outcome.encode_to_vec()).unwrap();
    let forged = net.run(
        None,
        &["ledger", "check-proof", proof, "--genesis", genesis],
    );
    assert!(!forged.status.success(), "an altered outcome was proven");
    assert!(
        String::from_utf8_lossy(&forged.stderr).contains("NOT PROVEN")
            || String::from_utf8_lossy(&forged.stdout).contains("NOT PROVEN"),
        "{forged:?}"
    );

    // The lies reached the others and the clients, and were passed over.
    let refused: u64 = (1..4)
        .map(|i| {
            std::fs::read_to_string(net.path().join(format!("peer{i}.log")))
                .unwrap_or_default()
                .matches("a peer signed another header")
                .count() as u64
        })
        .sum();
    assert!(
        refused > 0,
        "the other peers saw peer0's votes on other headers"
    );
    // The auditor's listing of every block, through the liar first, which whitewashes every
    // refusal in the blocks it serves auditors: the refusals the demo met are listed as such.
    let mut from = 1;
    let mut refusals = 0;
    loop {
        let listed = net.json(
            Some("auditor"),
            &[
                "ledger",
                "blocks",
                "--from",
                &from.to_string(),
                "--limit",
                "100",
            ],
        );
        let blocks = listed["blocks"].as_array().unwrap();
        let Some(last) = blocks.last() else { break };
        for (k, block) in blocks.iter().enumerate() {
            assert_eq!(block["number"], from + k as u64, "{listed}");
        }
        refusals += blocks
            .iter()
            .flat_map(|b| b["results"].as_array().unwrap())
            .filter(|r| r["code"] != "RESULT_CODE_OK" || r["status"] != "TX_STATUS_VALID")
            .count();
        from = last["number"].as_u64().unwrap() + 1;
    }
    assert!(from > 10, "the auditor listed {} blocks", from - 1);
    assert!(refusals > 0, "every refusal was whitewashed");
    // The auditor's verification through the liar: the ledger verifies, and the blocks the
    // liar whitewashed are named, each verified from another peer's proven copy.
    let report = net.json(Some("auditor"), &["ledger", "verify", "--skip-objects"]);
    assert_eq!(report["ok"], true, "{report}");
    let substituted = report["substituted"].as_array().unwrap();
    assert!(!substituted.is_empty(), "{report}");
    assert!(
        substituted
            .iter()
            .all(|line| line.as_str().unwrap().contains("peer0 served a copy")),
        "{report}"
    );
    // Asked to audit the liar's own copy, the auditor is told it does not verify.
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.path().join("network.json")).unwrap()).unwrap();
    let liar = layout["peers"][0].as_str().unwrap();
    let text = net.verify_fails(&["--peer", liar, "--as-served", "--skip-objects"]);
    assert!(text.contains("FAILED"), "{text}");
    let log = std::fs::read_to_string(net.path().join("peer0.log")).unwrap_or_default();
    for lie in [
        "a whitewashed block",
        "a forged outcome",
        "a forged genesis",
        "forged keys",
        "a forged configuration",
        "a stale answer",
        "forged revocations",
    ] {
        assert!(
            log.contains(&format!("lie told: {lie}")),
            "peer0 told {lie} and was passed over"
        );
    }
}
