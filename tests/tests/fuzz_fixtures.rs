//! The fixtures of the `envelope` fuzz target (fuzz/fixtures/) are what the target needs to
//! reach every check behind a valid signature: a genesis this code reads, a clinician's
//! enrollment certificate issued by that genesis's CA and valid at the fixture's time, and
//! the clinician's signing key matching it; the four peers' signing keys (block votes,
//! for commit-proof tests); and two more peers' enrollments (membership changes). When the genesis or certificate format changes
//! this fails; write them again from a real test network (CA, peers, enrollment) with
//!
//! ```sh
//! MEDLEDGER_WRITE_FUZZ_FIXTURES=1 cargo test -p medledger-tests --test fuzz_fixtures
//! ```

use std::collections::HashSet;
use std::path::Path;

use medledger_crypto::{Role, SigningIdentity, validate_enrollment_certificate};
use medledger_execution::genesis::Genesis;
use medledger_proto::v1;
use medledger_tests::TestNetwork;
use prost::Message;

/// Writes `wallet`'s certificate (DER) and signing key as fixtures `<name>.der`, `<name>.key`.
fn write_identity(out: &Path, name: &str, wallet: &Path) {
    let pem = std::fs::read_to_string(wallet.join("cert.pem")).unwrap();
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents;
    std::fs::write(out.join(format!("{name}.der")), der).unwrap();
    std::fs::copy(wallet.join("signing.key"), out.join(format!("{name}.key"))).unwrap();
}

fn write_fixtures(out: &Path) {
    let network = TestNetwork::start(4);
    let wallet = network.member("fuzz-clinician", "clinician");
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(&network.genesis, out.join("genesis.pb")).unwrap();
    write_identity(out, "clinician", &wallet);
    // The two admins the genesis names (configuration updates, docs/adr/0010).
    for name in ["admin", "admin2"] {
        write_identity(out, name, &network.wallet(name));
    }
    // The peers' keys: block votes for commit-proof tests and the `proof` fuzz target.
    for i in 0..4 {
        std::fs::copy(
            network.wallet(&format!("peer{i}")).join("signing.key"),
            out.join(format!("peer{i}.key")),
        )
        .unwrap();
    }
    // Two more peers' enrollments, in no genesis: membership changes (docs/adr/0011).
    for i in 4..6 {
        let name = format!("peer{i}");
        write_identity(out, &name, &network.member(&name, "peer"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(out.join("time"), format!("{}\n", now + 60)).unwrap();
}

#[test]
fn the_envelope_fuzz_fixtures_are_a_network_and_a_clinician_it_enrolled() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fixtures");
    if std::env::var_os("MEDLEDGER_WRITE_FUZZ_FIXTURES").is_some() {
        write_fixtures(&out);
    }
    let read = |name: &str| {
        std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("fuzz/fixtures/{name}: {e}"))
    };
    let genesis = Genesis::from_block(v1::Block::decode(read("genesis.pb").as_slice()).unwrap())
        .expect("the fixture genesis is one this code reads (write the fixtures again)");
    let time: i64 = String::from_utf8(read("time"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let identity = validate_enrollment_certificate(
        &read("clinician.der"),
        &genesis.root,
        time,
        &HashSet::<Vec<u8>>::new(),
    )
    .expect("the fixture certificate is valid at the fixture time under the genesis root");
    assert_eq!(identity.role, Role::Clinician);
    let mut admins = Vec::new();
    for name in ["admin", "admin2"] {
        let admin = validate_enrollment_certificate(
            &read(&format!("{name}.der")),
            &genesis.root,
            time,
            &HashSet::<Vec<u8>>::new(),
        )
        .expect("the fixture admin certificates are valid at the fixture time");
        assert_eq!(admin.role, Role::Admin);
        let key = SigningIdentity::from_pkcs8_pem(
            &String::from_utf8(read(&format!("{name}.key"))).unwrap(),
        )
        .unwrap();
        assert_eq!(key.verifying_key(), admin.signing_key);
        admins.push(admin.signing_key);
    }
    let policy = genesis.configuration.admins.as_ref().expect("admins");
    assert_eq!(
        (policy.keys.clone(), policy.threshold),
        (admins, 2),
        "the fixture genesis names the two fixture admins, both needed"
    );
    let key = SigningIdentity::from_pkcs8_pem(&String::from_utf8(read("clinician.key")).unwrap())
        .unwrap();
    assert_eq!(
        key.verifying_key(),
        identity.signing_key,
        "the fixture key is the certificate's"
    );
    for i in 4..6 {
        let peer = validate_enrollment_certificate(
            &read(&format!("peer{i}.der")),
            &genesis.root,
            time,
            &HashSet::<Vec<u8>>::new(),
        )
        .expect("the extra peers' certificates are valid at the fixture time");
        assert_eq!((peer.role, peer.name), (Role::Peer, format!("peer{i}")));
        let key = SigningIdentity::from_pkcs8_pem(
            &String::from_utf8(read(&format!("peer{i}.key"))).unwrap(),
        )
        .unwrap();
        assert_eq!(key.verifying_key(), peer.signing_key);
    }
    for (i, key) in genesis.peer_keys.iter().enumerate() {
        let peer = SigningIdentity::from_pkcs8_pem(
            &String::from_utf8(read(&format!("peer{i}.key"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            peer.verifying_key(),
            *key,
            "peer{i}.key is the genesis peer's"
        );
    }
}

/// The fuzz targets are their own workspace with their own Cargo.lock, which `cargo test`
/// never resolves: a new dependency of a fuzzed crate must be locked there too, or
/// `fuzz/run` (run with --locked, in CI too) refuses to build.
#[test]
fn the_fuzz_workspace_lock_file_is_current() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml");
    let output = std::process::Command::new(env!("CARGO"))
        // `fetch --locked` fails when the lock file needs any change, like `update
        // --locked`, and also downloads what a fresh machine lacks (offline, it could not
        // tell a stale lock from a missing download).
        .args(["fetch", "--locked"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fuzz/Cargo.lock is stale (or the registry cannot be reached); run `cargo update -w` in fuzz/: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
