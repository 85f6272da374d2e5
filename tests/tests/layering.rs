//! The workspace's layering, read from its Cargo.toml files (docs/ARCHITECTURE.md, "Crates
//! and what they may import"): data flows one way, and the deterministic crates and the
//! servers link only what their room allows. A crate importing one it must not fails here,
//! and so does a known exception that no longer exists (remove it from the list then).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each workspace crate's name and the medledger crates and external crates it depends on
/// (normal dependencies only: tests and benches may use anything). With `optional: false`,
/// dependencies behind a cargo feature are left out.
fn workspace_with(optional: bool) -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    let mut crates = BTreeMap::new();
    for member in members {
        let dir = member.as_str().unwrap();
        let own: toml::Table = std::fs::read_to_string(root.join(dir).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let name = own["package"]["name"].as_str().unwrap().to_string();
        let deps = own
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.iter()
                    .filter(|(_, spec)| {
                        optional || spec.get("optional").and_then(|o| o.as_bool()) != Some(true)
                    })
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        crates.insert(name, deps);
    }
    crates
}

fn workspace() -> BTreeMap<String, BTreeSet<String>> {
    workspace_with(true)
}

/// Everything `name` links, following workspace crates.
fn closure(crates: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![name.to_string()];
    while let Some(next) = stack.pop() {
        for dep in crates.get(&next).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                stack.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn crates_import_only_downward() {
    let crates = workspace();
    // Which medledger crates each may depend on directly (its room; the rest is forbidden).
    let allowed: &[(&str, &[&str])] = &[
        ("medledger-proto", &[]),
        ("medledger-crypto", &[]),
        ("medledger-deid", &[]),
        ("medledger-pbft", &[]),
        ("medledger-tls", &["medledger-crypto"]),
        // The chaincode verifies a patient's signature on a study grant (docs/adr/0014) with
        // the crypto crate's own domains and statements.
        (
            "medledger-chaincode",
            &["medledger-proto", "medledger-crypto"],
        ),
        (
            "medledger-execution",
            &[
                "medledger-proto",
                "medledger-crypto",
                "medledger-pbft",
                "medledger-chaincode",
            ],
        ),
        (
            "medledger-membership",
            &["medledger-proto", "medledger-crypto", "medledger-tls"],
        ),
        (
            "medledger-peer",
            &[
                "medledger-proto",
                "medledger-crypto",
                "medledger-tls",
                "medledger-pbft",
                "medledger-chaincode",
                "medledger-execution",
            ],
        ),
        // The SDK checks what peers say with the deterministic crates' own code (block
        // hashes, key layout); it links no peer, no RocksDB.
        (
            "medledger-sdk",
            &[
                "medledger-proto",
                "medledger-crypto",
                "medledger-tls",
                "medledger-deid",
                "medledger-chaincode",
                "medledger-execution",
            ],
        ),
        ("medledger-devnet", &["medledger-proto", "medledger-sdk"]),
        (
            "medledger-gateway",
            &[
                "medledger-proto",
                "medledger-crypto",
                "medledger-tls",
                "medledger-chaincode",
                "medledger-sdk",
            ],
        ),
        (
            "medledger-bench",
            &["medledger-proto", "medledger-sdk", "medledger-devnet"],
        ),
        // The fault harness reads the peers' ledgers to check them, as `ledger verify
        // --data-dir` does.
        (
            "medledger-faults",
            &[
                "medledger-proto",
                "medledger-sdk",
                "medledger-devnet",
                "medledger-peer",
            ],
        ),
        (
            "medledger-cli",
            &[
                "medledger-proto",
                "medledger-crypto",
                "medledger-chaincode",
                "medledger-execution",
                "medledger-sdk",
                "medledger-devnet",
                // Only behind the `data-dir` feature, for `ledger verify --data-dir`.
                "medledger-peer",
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (name, may) in allowed {
        let deps = crates
            .get(*name)
            .unwrap_or_else(|| panic!("no crate {name}"));
        for dep in deps.iter().filter(|d| d.starts_with("medledger-")) {
            if !may.contains(&dep.as_str()) {
                wrong.push(format!("{name} imports {dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_runtime_or_storage_under_the_deterministic_crates() {
    let crates = workspace();
    for name in [
        "medledger-pbft",
        "medledger-chaincode",
        "medledger-execution",
        "medledger-deid",
    ] {
        // Through medledger-proto they get tonic's generated service stubs (never a
        // runtime or a socket of their own); everything else is counted.
        let via_proto = closure(&crates, "medledger-proto");
        let linked: BTreeSet<String> = closure(&crates, name)
            .difference(&via_proto)
            .cloned()
            .collect();
        for forbidden in ["rocksdb", "tokio", "tonic", "rand", "object_store"] {
            assert!(
                !linked.contains(forbidden),
                "{name} links {forbidden}: {linked:?}"
            );
        }
    }
}

#[test]
fn the_protocol_crate_brings_no_runtime() {
    let crates = workspace();
    let linked = closure(&crates, "medledger-proto");
    for forbidden in ["rocksdb", "tokio", "rand", "object_store"] {
        assert!(
            !linked.contains(forbidden),
            "medledger-proto links {forbidden}"
        );
    }
}

#[test]
fn servers_link_rocksdb_only_where_they_store_a_ledger() {
    let crates = workspace();
    let required = workspace_with(false);
    // Keep a ledger (or test one); the CLI reads a peer's ledger behind its optional
    // `data-dir` feature only.
    let may: BTreeSet<&str> = [
        "medledger-peer",
        "medledger-membership",
        "medledger-tests",
        "medledger-faults",
    ]
    .into_iter()
    .collect();
    let optional_only: BTreeSet<&str> = ["medledger-cli"].into_iter().collect();
    let mut wrong = Vec::new();
    for name in crates.keys() {
        if may.contains(name.as_str()) {
            continue;
        }
        let links = if optional_only.contains(name.as_str()) {
            closure(&required, name).contains("rocksdb")
        } else {
            closure(&crates, name).contains("rocksdb")
        };
        if links {
            wrong.push(name.clone());
        }
    }
    assert!(wrong.is_empty(), "these link RocksDB: {wrong:?}");
    assert!(
        closure(&crates, "medledger-cli").contains("rocksdb"),
        "the CLI's data-dir feature no longer reads a peer's ledger: update this test"
    );
}

#[test]
fn the_gateway_and_the_auditors_core_link_no_cli_or_peer() {
    let crates = workspace();
    for name in [
        "medledger-gateway",
        "medledger-sdk",
        "medledger-devnet",
        "medledger-bench",
    ] {
        let linked = closure(&crates, name);
        for forbidden in [
            "medledger-cli",
            "medledger-peer",
            "medledger-membership",
            "rocksdb",
        ] {
            assert!(!linked.contains(forbidden), "{name} links {forbidden}");
        }
    }
    let auditor = closure(&crates, "medledger-execution");
    for forbidden in [
        "medledger-cli",
        "medledger-sdk",
        "medledger-peer",
        "rocksdb",
        "tokio",
    ] {
        assert!(
            !auditor.contains(forbidden),
            "the auditor's core links {forbidden}"
        );
    }
}

/// The modules of a crate (one per file of `src/`) and the ones each names as `crate::x`
/// in its code (comments and `#[cfg(test)]` modules left out).
fn modules(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("src"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        // The module's own code: not its comments, not its tests.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let uses = code
            .split("crate::")
            .skip(1)
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|m| !m.is_empty() && *m != name)
            .collect();
        graph.insert(name, uses);
    }
    graph
}

/// A cycle through `start` in `graph`, if any (as the path of modules).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

/// Within a crate, modules import each other one way too (issue 16: the peer's driver,
/// execution, network and service once imported each other in a circle).
#[test]
fn no_module_imports_itself_through_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut cycles = Vec::new();
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        let graph = modules(&root.join(member));
        for module in graph.keys() {
            if let Some(path) = cycle(&graph, module) {
                cycles.push(format!("{member}: {}", path.join(" -> ")));
                break;
            }
        }
    }
    assert!(cycles.is_empty(), "{cycles:#?}");
}
