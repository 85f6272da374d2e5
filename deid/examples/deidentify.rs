//! De-identifies a FHIR R4 JSON file and prints the copy, then the report on stderr:
//! `cargo run -p medledger-deid --example deidentify -- FILE [SHARE_YEAR]`.
//! Replacement ids are counters (`r1`, `r2`, ...), enough to read the output; `check`
//! accepts only UUID ids, so the check runs on a copy made with UUIDs.

use medledger_deid::{Profile, check, counter_ids, deidentify, uuid_ids};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: deidentify FILE [SHARE_YEAR]");
        std::process::exit(2);
    };
    let share_year = args.next().and_then(|y| y.parse().ok()).unwrap_or(2026);
    let input = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1);
    });
    match deidentify(
        &input,
        &Profile::SAFE_HARBOR,
        share_year,
        &mut counter_ids(),
    ) {
        Ok(copy) => {
            println!("{}", String::from_utf8_lossy(&copy.bytes));
            eprintln!("{:#?}", copy.report);
            let mut n = 0u128;
            let mut uuids = uuid_ids(move |b| {
                n += 1;
                *b = n.to_be_bytes();
            });
            let checked = deidentify(&input, &Profile::SAFE_HARBOR, share_year, &mut uuids)
                .and_then(|shared| check(&shared.bytes, share_year));
            if let Err(e) = checked {
                eprintln!("the copy fails its check: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("refused: {e}");
            std::process::exit(1);
        }
    }
}
