//! The fault harness's CI smoke (issue 18): `medledger-faults` runs a real network of four
//! peers, each in its own network namespace, with the storage gateway and Garage, through a
//! few seeded fault cycles under the clinical workload and a patient's file traffic, and its
//! checker proves every acknowledged transaction is on every peer's chain exactly once, every
//! data directory re-executes and every committed object is in the store with its hash. The long runs (1,000
//! cycles) are docs/RELIABILITY.md's, never CI's.
//!
//! Needs root (network namespaces, nftables): CI runs as root. Elsewhere set
//! `MEDLEDGER_SKIP_FAULTS=1` to leave it out, knowingly.

use std::process::Command;

use medledger_tests::binary;

#[test]
fn a_few_seeded_fault_cycles_lose_nothing() {
    let root = is_root();
    if !root && std::env::var_os("MEDLEDGER_SKIP_FAULTS").is_some() {
        eprintln!("skipped: not root, and MEDLEDGER_SKIP_FAULTS is set");
        return;
    }
    assert!(
        root,
        "the fault harness needs root for network namespaces; run the tests as root, or set \
         MEDLEDGER_SKIP_FAULTS=1 to leave this test out"
    );
    // Binaries checked fresh (the harness runs these).
    for name in [
        "medledger-ca",
        "medledger-peer",
        "medledger-gateway",
        "medledger",
    ] {
        binary(name);
    }
    let faults = binary("medledger-faults");
    let dir = tempfile::tempdir().expect("temp dir");
    // Two seeds of every fault kind, and one with the first peer lying to every client
    // (the lying-peer mode) under partitions.
    let runs: [(&str, &[&str]); 3] = [
        ("1", &["--cycles", "3"]),
        ("2", &["--cycles", "3"]),
        (
            "3",
            &[
                "--cycles",
                "2",
                "--lie",
                "peer0:all",
                "--faults",
                "split,isolate,isolate-primary,one-way",
            ],
        ),
    ];
    for (seed, extra) in runs {
        let output = Command::new(&faults)
            .args(["run", "--seed", seed, "--cycles-per-episode", "3"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path().join(seed))
            .output()
            .expect("medledger-faults runs");
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "seed {seed} failed:\n{said}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(said.contains("lost 0"), "{said}");
    }
}

/// Whether this process's effective uid is 0 (from procfs).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
