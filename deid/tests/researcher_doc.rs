//! `docs/researcher.md` shows a worked example; this test keeps it true: the page's output
//! block, indented for reading, is what `deidentify` makes of its input block (share year
//! 2026, counter ids) once written compact, and
//! the same input with UUID ids (the only ones `check` accepts) passes `check`.

use medledger_deid::{Profile, check, counter_ids, deidentify, uuid_ids};
use serde_json::Value;

fn block_after<'a>(page: &'a str, marker: &str) -> &'a str {
    let after = page
        .split_once(marker)
        .unwrap_or_else(|| panic!("{marker} missing"))
        .1;
    let body = after.split_once("```json\n").expect("a json block").1;
    body.split_once("\n```").expect("a closed block").0
}

#[test]
fn the_researchers_guide_shows_what_the_code_produces() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/researcher.md");
    let page = std::fs::read_to_string(path).unwrap();
    let input = block_after(&page, "<!-- deid-example: input -->");
    let shown = block_after(&page, "<!-- deid-example: output -->");
    let copy = deidentify(
        input.as_bytes(),
        &Profile::SAFE_HARBOR,
        2026,
        &mut counter_ids(),
    )
    .unwrap();
    let mut n = 0u128;
    let mut uuids = uuid_ids(move |b| {
        n += 1;
        *b = n.to_be_bytes();
    });
    let shared = deidentify(input.as_bytes(), &Profile::SAFE_HARBOR, 2026, &mut uuids).unwrap();
    assert_eq!(check(&shared.bytes, 2026).unwrap(), shared.bytes);
    let shown: Value = serde_json::from_str(shown).unwrap();
    assert_eq!(
        String::from_utf8(copy.bytes.clone()).unwrap(),
        serde_json::to_string(&shown).unwrap()
    );
}
