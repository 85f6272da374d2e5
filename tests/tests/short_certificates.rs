//! A network whose certificates last one minute lives on (issue 19 item 5). The CA issues
//! 60-second enrollment certificates to everyone: peers, gateway, admins and users; and its
//! own TLS certificate lasts one minute too.
//! `medledger-load` keeps clinicians and patients busy for longer than two lifetimes while
//! every process renews by itself (peers and the gateway as they run, the load's clients as
//! any long-running client does, the admins at their next command), and one peer is replaced
//! on the way (the new one enrolled with a one-minute certificate too).
//! Nothing the load sent is refused, nothing it was told committed is lost, every peer and
//! the gateway renewed more than once, and the auditor verifies the chain. A patient who
//! keeps only their enrollment current meanwhile finds their record credential lapsed and
//! gets it renewed through the enrollment at their next command on the record.

use std::time::{Duration, Instant};

use medledger_tests::local_network::LocalNetwork;

/// Lifetime of every certificate the CA issues.
const VALIDITY: &str = "60s";
/// Seconds of measured load: more than two lifetimes, so everyone renews at least twice.
const LOAD_SECONDS: u64 = 150;

#[test]
fn a_network_of_one_minute_certificates_renews_everything_under_load() {
    // SAFETY: set before any thread of this test binary (it holds this one test) starts; the
    // processes it starts inherit them: the CA (also when restarted).
    unsafe {
        std::env::set_var("MEDLEDGER_CA_CERT_VALIDITY", VALIDITY);
        std::env::set_var("MEDLEDGER_CA_TLS_VALIDITY", VALIDITY);
    }
    let net = LocalNetwork::up_with(&[]);
    let info = net.json(Some("admin"), &["ca-info"]);
    assert_eq!(info["certificate_validity_seconds"], 60, "{info}");
    // A patient with a record credential, which lapses while only the enrollment is used.
    net.enroll_member("pat-s", "patient");
    let init = net.json(Some("pat-s"), &["patient", "init", "--uii", "MRN-SHORT-1"]);
    let credential = net.wallet("pat-s").join("record").join("cert.pem");
    let first_credential = std::fs::read(&credential).unwrap();
    let mut load = net.start_load("short", LOAD_SECONDS);

    // The admins renew at their next command once due (the last 15 s of a one-minute
    // certificate): one every 5 s keeps them current (an idle wallet would lapse, and a
    // lapsed certificate cannot be renewed; `network add-peer` keeps both current while it
    // waits for the new peer, CI once found the second admin lapsed after it); the
    // auditor, who verifies the chain at the end, reads the ledger's state every 5 s
    // meanwhile, also while the peer is replaced, and the patient runs `whoami` (which renews
    // the enrollment alone when due) as often: replacing a peer can take longer than the last
    // quarter of a one-minute certificate, and CI once found the patient's enrollment lapsed
    // after it.
    let replaced = std::sync::atomic::AtomicBool::new(false);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let info = net.json(Some("auditor"), &["ledger", "info"]);
                assert!(info["peers"].is_array(), "{info}");
                let me = net.json(Some("pat-s"), &["whoami"]);
                assert_eq!(me["name"], "pat-s", "{me}");
                assert_eq!(me["valid_now"], true, "{me}");
                std::thread::sleep(Duration::from_secs(5));
            }
        });
        // Ends the auditor's round also when an assertion below fails (the scope joins it).
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _done = Done(&done);
        let started = Instant::now();
        while load.try_wait().unwrap().is_none() {
            for admin in ["admin", "admin2"] {
                let shown = net.json(Some(admin), &["admin", "config", "show"]);
                assert!(shown["sequence"].is_u64(), "{shown}");
            }
            // After a first round of renewals, one peer is replaced under load.
            if !replaced.load(std::sync::atomic::Ordering::SeqCst)
                && started.elapsed() > Duration::from_secs(70)
            {
                // Added first: four is the fewest peers a network has.
                let out = net.json(None, &["network", "add-peer"]);
                assert_eq!(out["name"], "peer4", "{out}");
                let out = net.json(None, &["network", "remove-peer", "peer1"]);
                assert_eq!(out["stopped"], true, "{out}");
                replaced.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    });
    let replaced = replaced.into_inner();
    assert!(replaced, "the load ended before the replacement");

    net.load_lost_nothing(load, "across the renewals");

    // The credential lapsed two lifetimes ago; the next command on the record renews it
    // through the enrollment (same name, same keys) and the peers take it.
    assert_eq!(std::fs::read(&credential).unwrap(), first_credential);
    let permissions = net.json(Some("pat-s"), &["patient", "permissions"]);
    assert!(
        permissions.is_object() || permissions.is_array(),
        "{permissions}"
    );
    assert_ne!(
        std::fs::read(&credential).unwrap(),
        first_credential,
        "renewed"
    );
    let renewed = medledger_sdk::wallet::Wallet::open(&net.wallet("pat-s").join("record"))
        .unwrap()
        .certificate_identity()
        .unwrap();
    assert_eq!(renewed.name, init["credential"].as_str().unwrap());

    // Everyone renewed by themselves, more than once for those there throughout.
    let renewals = |log: &str, line: &str| {
        std::fs::read_to_string(net.path().join(log))
            .unwrap_or_default()
            .matches(line)
            .count()
    };
    for peer in ["peer0", "peer2", "peer3"] {
        let n = renewals(&format!("{peer}.log"), "renewed this peer's certificate");
        assert!(n >= 2, "{peer} renewed {n} times");
    }
    let n = renewals("peer4.log", "renewed this peer's certificate");
    assert!(n >= 1, "the added peer renewed {n} times");
    let n = renewals("gateway.log", "renewed the certificate (same keys)");
    assert!(n >= 2, "the gateway renewed {n} times");
    let n = renewals("ca.log", "renewed the CA's own TLS certificate");
    assert!(n >= 3, "the CA renewed its TLS certificate {n} times");

    // One chain, verified across the renewals and the replacement.
    let report = net.json(Some("auditor"), &["ledger", "verify", "--skip-objects"]);
    assert_eq!(report["ok"], true, "{report}");
}
