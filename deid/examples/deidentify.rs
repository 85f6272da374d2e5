//! De-identifies a FHIR R4 JSON file and prints the copy, then the report on stderr:
//! `cargo run -p medledger-deid --example deidentify -- FILE [SHARE_YEAR]`.
//! Replacement ids are counters (`r1`, `r2`, ...), enough to read the output.

use medledger_deid::{Profile, check, counter_ids, deidentify};

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
            if let Err(e) = check(&copy.bytes, share_year) {
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
