//! Fuzz target for `medledger_deid` (cargo-afl): any bytes are refused or de-identified
//! without a panic, a copy always passes the researcher's re-check, and the re-check hands
//! back exactly the copy's bytes (the canonical form the researcher's client writes).
//! Seeds: `fuzz/corpus/deid/`.

use medledger_deid::{DeidError, Profile, check, deidentify, uuid_ids};

/// A fixed share year: the fuzzer explores inputs, not clocks.
const SHARE_YEAR: i32 = 2026;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        for profile in [Profile::SAFE_HARBOR, Profile { keep_zip3: false }] {
            let mut counter = 0u8;
            let mut ids = uuid_ids(|random| {
                counter = counter.wrapping_add(1);
                random.fill(counter);
            });
            match deidentify(data, &profile, SHARE_YEAR, &mut ids) {
                Ok(copy) => match check(&copy.bytes, SHARE_YEAR) {
                    Ok(canonical) => assert_eq!(canonical, copy.bytes, "check changed a copy"),
                    Err(e) => panic!("a copy fails its own check: {e}"),
                },
                // 255 distinct ids at most from this source; more is a refusal, not a bug.
                Err(DeidError::BadReplacementId) | Err(_) => {}
            }
        }
        // Whatever check accepts, it returns a copy that passes check again, unchanged.
        if let Ok(canonical) = check(data, SHARE_YEAR) {
            assert_eq!(check(&canonical, SHARE_YEAR).ok(), Some(canonical.clone()));
        }
    });
}
