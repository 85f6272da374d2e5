//! The checker, run once the faults healed and the peers stopped: every peer holds the same
//! chain; no transaction is in it twice; every acknowledged invocation is in it exactly once,
//! in the block and with the status its proof showed; an unknown one at most once; and
//! `medledger ledger verify` re-executes each peer's data directory from the genesis, and,
//! when the episode moved files, finds every committed object in the store with its hash,
//! erased records' objects gone and nothing the ledger does not reference.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use medledger_peer::block::header_hash;
use medledger_peer::ledger::Ledger;
use medledger_proto::v1::TxStatus;
use serde::Serialize;

use crate::workload::{Invocation, Outcome};

/// What the checker counted and found.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub height: u64,
    pub acknowledged: u64,
    pub unknown: u64,
    /// Unknown invocations that did commit (once).
    pub unknown_committed: u64,
    /// Acknowledged invocations the chain does not hold where their proof said.
    pub lost: u64,
    /// Everything that must not be: empty when the episode passed.
    pub failures: Vec<String>,
}

/// Refusals that may name no transaction (`TxResult.tx_id` empty): of the acknowledgments
/// beside a signed transaction, which a relay could have changed (docs/adr/0017).
const UNATTRIBUTED: [i32; 3] = [
    TxStatus::PrivateDataUnacknowledged as i32,
    TxStatus::BadEnvelope as i32,
    TxStatus::BadSignature as i32,
];

/// Where each transaction id sits in a chain, duplicates' refusals left out: (block, status).
type Locations = BTreeMap<String, Vec<(u64, i32)>>;

/// Reads one peer's chain: its header hashes by height and its transactions' locations.
fn read_chain(data_dir: &Path) -> anyhow::Result<(Vec<[u8; 32]>, Locations)> {
    let ledger = Ledger::open_read_only(&data_dir.join("ledger"))
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let mut headers = Vec::new();
    let mut locations = Locations::new();
    for number in 0..=ledger.height() {
        let block = ledger
            .block(number)?
            .with_context(|| format!("{}: block {number} is missing", data_dir.display()))?;
        let header = block.header.as_ref().context("a block without a header")?;
        headers.push(header_hash(header));
        for result in &block.results {
            let repeat = result.status == TxStatus::DuplicateTxId as i32
                || result.status == TxStatus::DuplicateEnvelope as i32;
            if !repeat && !result.tx_id.is_empty() {
                locations
                    .entry(hex::encode(&result.tx_id))
                    .or_default()
                    .push((number, result.status));
            }
        }
    }
    Ok((headers, locations))
}

/// One peer's chain as the checker reads it: header hashes by height, and where each
/// transaction sits.
pub type Chain = (Vec<[u8; 32]>, Locations);

/// The object store to check against the first peer's chain: its `medledger-gateway`
/// flags, and the records (pseudonyms, hex) whose items carry real objects (the clinical
/// mix's `add_item`s declare made-up hashes and store nothing).
pub struct StoreCheck {
    pub args: Vec<String>,
    pub records: std::collections::BTreeSet<String>,
}

/// Checks the peers' data directories against the history, and `store` (if any) against the
/// first one's chain.
pub fn check(
    data_dirs: &[std::path::PathBuf],
    history: &[Invocation],
    cli: &Path,
    genesis: &Path,
    store: Option<&StoreCheck>,
) -> Verdict {
    let mut chains = Vec::new();
    let mut unreadable = Vec::new();
    for dir in data_dirs {
        match read_chain(dir) {
            Ok(chain) => chains.push(chain),
            Err(e) => unreadable.push(format!("{e:#}")),
        }
    }
    let mut verdict = judge(&chains, history);
    verdict.failures.extend(unreadable);
    // Every data directory re-executes from the genesis.
    for (i, dir) in data_dirs.iter().enumerate() {
        let mut command = std::process::Command::new(cli);
        command
            .args(["ledger", "verify", "--genesis"])
            .arg(genesis)
            .arg("--data-dir")
            .arg(dir);
        match store {
            Some(store) if i == 0 => {
                command.arg("--json").args(&store.args);
                match command.output() {
                    Ok(o) => verdict
                        .failures
                        .extend(judge_verify_report(&o.stdout, &store.records)),
                    Err(e) => verdict
                        .failures
                        .push(format!("cannot run {}: {e}", cli.display())),
                }
                continue;
            }
            _ => {
                command.arg("--skip-objects");
            }
        }
        let output = command.output();
        match output {
            Ok(o) if o.status.success() => {}
            Ok(o) => verdict.failures.push(format!(
                "ledger verify --data-dir {}: {}{}",
                dir.display(),
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => verdict
                .failures
                .push(format!("cannot run {}: {e}", cli.display())),
        }
    }
    verdict
}

/// `medledger ledger verify --json`'s report with the store: every block must pass, every
/// object of `records` must be as the ledger says (present with its hash, or gone once
/// erased), and nothing may be in the store that no item references.
pub fn judge_verify_report(
    stdout: &[u8],
    records: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(stdout) else {
        return vec![format!(
            "ledger verify with the store printed no report: {}",
            String::from_utf8_lossy(stdout)
                .chars()
                .take(300)
                .collect::<String>()
        )];
    };
    let mut failures = Vec::new();
    let blocks = report["blocks"].as_array().cloned().unwrap_or_default();
    if blocks.is_empty() {
        failures.push("ledger verify with the store checked no block".into());
    }
    for block in blocks.iter().filter(|b| b["ok"] != true) {
        failures.push(format!(
            "ledger verify: block {} failed: {}",
            block["number"], block["problems"]
        ));
    }
    let Some(objects) = report["objects"].as_array().cloned() else {
        failures.push("ledger verify checked no object store".into());
        return failures;
    };
    if !records.is_empty()
        && !objects.iter().any(|o| {
            o["path"]
                .as_str()
                .and_then(|p| p.split('/').nth(1))
                .is_some_and(|pseudonym| records.contains(pseudonym))
        })
    {
        failures.push("ledger verify listed no object of the file client's records".into());
    }
    for object in objects {
        if object["ok"] == true {
            continue;
        }
        let path = object["path"].as_str().unwrap_or_default();
        let state = object["state"].as_str().unwrap_or_default();
        let of_a_record = path
            .split('/')
            .nth(1)
            .is_some_and(|pseudonym| records.contains(pseudonym));
        if of_a_record || state.starts_with("NOT ON THE LEDGER") {
            failures.push(format!("object {path}: {state}"));
        }
    }
    failures
}

/// The chains (peer 0 first) against the history: one chain, nothing twice, every
/// acknowledged invocation where its proof said.
pub fn judge(chains: &[Chain], history: &[Invocation]) -> Verdict {
    let mut verdict = Verdict::default();
    let Some((first_headers, locations)) = chains.first() else {
        verdict
            .failures
            .push("no peer's chain could be read".into());
        return verdict;
    };
    verdict.height = first_headers.len().saturating_sub(1) as u64;
    // One chain.
    for (i, (headers, _)) in chains.iter().enumerate().skip(1) {
        if headers.len() != first_headers.len() {
            verdict.failures.push(format!(
                "peer{i} is at height {}, peer0 at {}",
                headers.len() - 1,
                first_headers.len() - 1
            ));
        }
        if let Some(h) = headers.iter().zip(first_headers).position(|(a, b)| a != b) {
            verdict
                .failures
                .push(format!("peer{i} and peer0 differ from block {h} on"));
        }
    }
    // Nothing twice.
    for (tx_id, places) in locations {
        if places.len() > 1 {
            verdict.failures.push(format!(
                "transaction {tx_id} is in the chain {} times: {places:?}",
                places.len()
            ));
        }
    }
    // Every acknowledged invocation exactly where its proof said.
    for invocation in history {
        let places = locations
            .get(&invocation.tx_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match &invocation.outcome {
            Outcome::Acknowledged { block, status } => {
                verdict.acknowledged += 1;
                let expected = TxStatus::from_str_name(status).map(|s| s as i32);
                // A refusal of what travels beside the signed transaction (its private-data
                // acknowledgments, e.g. signed by a peer whose key a reconfiguration
                // replaced before the block) names no transaction (docs/adr/0017): the
                // chain holds it under no id, and must hold no commit of it either.
                let unattributed = expected.is_some_and(|s| UNATTRIBUTED.contains(&s));
                if unattributed && places.is_empty() {
                    continue;
                }
                if places != [(*block, expected.unwrap_or(-1))] {
                    verdict.lost += 1;
                    verdict.failures.push(format!(
                        "client {}'s {} {} was acknowledged in block {block} as {status}, but the chain holds it at {places:?} (lost or moved)",
                        invocation.client, invocation.function, invocation.tx_id
                    ));
                }
            }
            Outcome::Unknown { .. } => {
                verdict.unknown += 1;
                if !places.is_empty() {
                    verdict.unknown_committed += 1;
                }
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: i32 = TxStatus::Valid as i32;

    fn acknowledged(tx: &str, block: u64) -> Invocation {
        Invocation {
            client: 0,
            function: "grant".into(),
            tx_id: tx.into(),
            start_ms: 0,
            end_ms: 1,
            outcome: Outcome::Acknowledged {
                block,
                status: "TX_STATUS_VALID".into(),
            },
        }
    }

    fn unknown(tx: &str) -> Invocation {
        Invocation {
            outcome: Outcome::Unknown {
                error: "no answer".into(),
            },
            ..acknowledged(tx, 0)
        }
    }

    fn chain(heads: &[u8], txs: &[(&str, u64)]) -> Chain {
        let mut locations = Locations::new();
        for (tx, block) in txs {
            locations
                .entry(tx.to_string())
                .or_default()
                .push((*block, VALID));
        }
        (heads.iter().map(|h| [*h; 32]).collect(), locations)
    }

    #[test]
    fn a_history_the_chain_holds_passes() {
        let chains = [chain(&[0, 1, 2], &[("a", 1), ("b", 2), ("u", 2)])];
        let chains = [chains[0].clone(), chains[0].clone()];
        let verdict = judge(
            &chains,
            &[
                acknowledged("a", 1),
                acknowledged("b", 2),
                unknown("u"),
                unknown("v"),
            ],
        );
        assert!(verdict.failures.is_empty(), "{:?}", verdict.failures);
        assert_eq!(
            (
                verdict.height,
                verdict.acknowledged,
                verdict.unknown,
                verdict.unknown_committed
            ),
            (2, 2, 2, 1)
        );
    }

    /// A refusal of a transaction's acknowledgments names no transaction: it passes when
    /// the chain holds no commit of that id, and fails when it does.
    #[test]
    fn an_unattributed_refusal_holds_no_commit() {
        let refused = |tx: &str| Invocation {
            outcome: Outcome::Acknowledged {
                block: 1,
                status: "TX_STATUS_PRIVATE_DATA_UNACKNOWLEDGED".into(),
            },
            ..acknowledged(tx, 1)
        };
        let chains = [chain(&[0, 1, 2], &[("later", 2)])];
        let verdict = judge(&chains, &[refused("r")]);
        assert!(verdict.failures.is_empty(), "{:?}", verdict.failures);
        let verdict = judge(&chains, &[refused("later")]);
        assert_eq!(
            verdict.lost, 1,
            "refused, yet committed: {:?}",
            verdict.failures
        );
    }

    #[test]
    fn a_lost_moved_or_repeated_transaction_fails() {
        let chains = [chain(&[0, 1, 2], &[("a", 1), ("b", 1), ("u", 1), ("u", 2)])];
        let verdict = judge(
            &chains,
            &[
                acknowledged("a", 1),
                acknowledged("b", 2),
                acknowledged("gone", 1),
                unknown("u"),
            ],
        );
        let all = verdict.failures.join("\n");
        assert_eq!(verdict.lost, 2, "b moved, gone lost");
        assert!(all.contains("b was acknowledged in block 2"), "{all}");
        assert!(all.contains("gone was acknowledged"), "{all}");
        assert!(
            all.contains("transaction u is in the chain 2 times"),
            "{all}"
        );
        assert!(!all.contains(" a was"), "{all}");
    }

    #[test]
    fn the_store_report_fails_only_for_real_objects_and_strays() {
        let records: std::collections::BTreeSet<String> = ["aa".to_string()].into();
        let report = serde_json::json!({
            "blocks": [{"number": 0, "ok": true}, {"number": 1, "ok": true}],
            "objects": [
                {"path": "patients/aa/lab-results/1", "ok": true, "state": "ok"},
                {"path": "patients/aa/lab-results/2", "ok": false, "state": "TAMPERED: its SHA-256 is not the ledger's"},
                {"path": "patients/bb/lab-results/item-3", "ok": false, "state": "MISSING from the store"},
                {"path": "patients/cc/lab-results/4", "ok": false, "state": "NOT ON THE LEDGER (no item references it)"},
            ],
        });
        let failures = judge_verify_report(report.to_string().as_bytes(), &records).join("\n");
        assert!(
            failures.contains("patients/aa/lab-results/2: TAMPERED"),
            "{failures}"
        );
        assert!(
            failures.contains("patients/cc/lab-results/4: NOT ON THE LEDGER"),
            "{failures}"
        );
        assert!(!failures.contains("bb"), "{failures}");
        assert!(!judge_verify_report(b"not json", &records).is_empty());
        let no_store = serde_json::json!({"blocks": [{"number": 0, "ok": true}], "objects": null});
        assert!(!judge_verify_report(no_store.to_string().as_bytes(), &records).is_empty());
        let none_of_ours =
            serde_json::json!({"blocks": [{"number": 0, "ok": true}], "objects": []});
        assert!(!judge_verify_report(none_of_ours.to_string().as_bytes(), &records).is_empty());
    }

    #[test]
    fn peers_that_differ_or_lag_fail() {
        let chains = [
            chain(&[0, 1, 2], &[]),
            chain(&[0, 1], &[]),
            chain(&[0, 9, 2], &[]),
        ];
        let all = judge(&chains, &[]).failures.join("\n");
        assert!(all.contains("peer1 is at height 1, peer0 at 2"), "{all}");
        assert!(
            all.contains("peer2 and peer0 differ from block 1 on"),
            "{all}"
        );
        assert!(
            !judge(&[], &[]).failures.is_empty(),
            "no chain read is a failure"
        );
    }
}
