//! Writes the fixtures of the `envelope` fuzz target (fuzz/fixtures/): a real network's
//! genesis block, a clinician's enrollment certificate (DER) and signing key, and a time at
//! which that certificate is valid. Run by hand when the genesis or certificate format
//! changes, then commit the files:
//!
//! ```sh
//! cargo test -p medledger-tests --test fuzz_fixtures -- --ignored
//! ```

use medledger_tests::TestNetwork;

#[test]
#[ignore = "writes fuzz/fixtures; run by hand"]
fn write_fuzz_fixtures() {
    let network = TestNetwork::start(4);
    let wallet = network.member("fuzz-clinician", "clinician");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fixtures");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(&network.genesis, out.join("genesis.pb")).unwrap();
    let pem = std::fs::read_to_string(wallet.join("cert.pem")).unwrap();
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents;
    std::fs::write(out.join("clinician.der"), der).unwrap();
    std::fs::copy(wallet.join("signing.key"), out.join("clinician.key")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(out.join("time"), format!("{}\n", now + 60)).unwrap();
}
