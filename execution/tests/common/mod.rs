//! The fixture network the execution tests run on (fuzz/fixtures, written from a real test
//! network by `tests/tests/fuzz_fixtures.rs`): its genesis, enrolled identities and keys.
// Each test file uses some of these.
#![allow(dead_code)]

use medledger_crypto::SigningIdentity;

/// The bytes of fixture file `name`.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../fuzz/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The signing key in fixture file `name` (PKCS#8 PEM).
pub fn key(name: &str) -> SigningIdentity {
    SigningIdentity::from_pkcs8_pem(&String::from_utf8(fixture(name)).unwrap()).unwrap()
}
