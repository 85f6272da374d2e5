//! Fuzz target for `medledger_deid` (cargo-afl): any bytes are refused or de-identified
//! without a panic, and a copy always passes the researcher's re-check, both with counter
//! ids and with UUIDs. Seeds: `fuzz/corpus/deid/`.
//!
//! Its `fuzz/Cargo.toml` entry (to be added with the other targets):
//! `[[bin]] name = "deid", path = "fuzz_targets/deid.rs"`, depending on `afl` and
//! `medledger-deid`.

use medledger_deid::{Profile, check, counter_ids, deidentify, uuid_ids};

/// A fixed share year: the fuzzer explores inputs, not clocks.
const SHARE_YEAR: i32 = 2026;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(copy) = deidentify(data, &Profile::SAFE_HARBOR, SHARE_YEAR, &mut counter_ids())
        else {
            return;
        };
        if let Err(e) = check(&copy.bytes, SHARE_YEAR) {
            panic!("a copy fails its own check: {e}");
        }
        // UUID ids (as the client makes them) and the state-only profile pass as well.
        let mut counter = 0u8;
        let mut ids = uuid_ids(|random| {
            counter = counter.wrapping_add(1);
            random.fill(counter);
        });
        let state_only = Profile { keep_zip3: false };
        match deidentify(data, &state_only, SHARE_YEAR, &mut ids) {
            Ok(copy) => {
                if let Err(e) = check(&copy.bytes, SHARE_YEAR) {
                    panic!("a state-only copy with UUID ids fails its check: {e}");
                }
            }
            // 255 distinct ids at most from this source; more is a refusal, not a bug.
            Err(medledger_deid::DeidError::BadReplacementId) => {}
            Err(e) => panic!("accepted with counters, refused with UUIDs: {e}"),
        }
    });
}
