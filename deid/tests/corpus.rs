//! The canary corpus: synthetic FHIR R4 bundles under `tests/corpus/`, each with a manifest
//! (`<name>.planted.json`) of the identifiers planted in it — every one of the 18 Safe
//! Harbor kinds (45 CFR 164.514(b)(2)(i)(A)–(R)) in at least three different places across
//! the corpus: structured fields, identifiers, narrative, free text, codes under local
//! systems, displays, extensions, contained resources, nested components, reference
//! displays, attachments, ids and URLs — and of clinical values that must survive. The test
//! de-identifies each bundle and greps the copy for every planted value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use medledger_deid::{Profile, check, deidentify, uuid_ids};
use serde_json::Value;

/// The 18 kinds of identifiers of 45 CFR 164.514(b)(2)(i), as the manifests name them.
const SAFE_HARBOR_KINDS: [&str; 18] = [
    "names",
    "geographic subdivisions",
    "dates",
    "telephone numbers",
    "fax numbers",
    "email addresses",
    "social security numbers",
    "medical record numbers",
    "health plan beneficiary numbers",
    "account numbers",
    "certificate/licence numbers",
    "vehicle identifiers",
    "device identifiers",
    "URLs",
    "IP addresses",
    "biometric identifiers",
    "full-face photographs",
    "other unique numbers",
];

fn corpus() -> Vec<(PathBuf, Value, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut bundles: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().ends_with(".planted.json")
        })
        .collect();
    bundles.sort();
    bundles
        .into_iter()
        .map(|path| {
            let manifest = path.with_extension("planted.json");
            let read = |p: &Path| -> Value {
                serde_json::from_slice(&std::fs::read(p).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            };
            (path.clone(), read(&path), read(&manifest))
        })
        .collect()
}

#[test]
fn no_planted_identifier_survives_and_clinical_values_do() {
    let corpus = corpus();
    assert!(corpus.len() >= 3);
    for (path, bundle, manifest) in corpus {
        let name = path.file_name().unwrap().to_string_lossy();
        let share_year = manifest["share_year"].as_i64().unwrap() as i32;
        let input = serde_json::to_vec(&bundle).unwrap();
        let copy = deidentify(&input, &Profile::SAFE_HARBOR, share_year, &mut test_uuids())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let checked = check(&copy.bytes, share_year)
            .unwrap_or_else(|e| panic!("{name}: copy fails check: {e}"));
        assert_eq!(checked, copy.bytes, "{name}: check changes the bytes");
        let report = format!("{:?}", copy.report).to_lowercase();
        let text = String::from_utf8(copy.bytes.clone())
            .unwrap()
            .to_lowercase();
        let planted = manifest["planted"].as_array().unwrap();
        for entry in planted {
            let value = entry["value"].as_str().unwrap();
            assert!(
                !text.contains(&value.to_lowercase()),
                "{name}: planted {} {value:?} ({}) survived:\n{text}",
                entry["kind"],
                entry["place"]
            );
            assert!(
                !report.contains(&value.to_lowercase()),
                "{name}: the report quotes {value:?}"
            );
            // The manifest is honest: the value really is in the input.
            assert!(
                bundle.to_string().contains(value),
                "{name}: {value:?} is not planted"
            );
        }
        let copy: Value = serde_json::from_slice(&copy.bytes).unwrap();
        for expected in manifest["survives"].as_array().unwrap() {
            let pointer = expected["pointer"].as_str().unwrap();
            assert_eq!(
                copy.pointer(pointer),
                Some(&expected["equals"]),
                "{name}: {pointer} in\n{copy:#}"
            );
        }
    }
}

#[test]
fn the_corpus_plants_every_safe_harbor_kind_in_at_least_three_places() {
    let mut places: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, _, manifest) in corpus() {
        for entry in manifest["planted"].as_array().unwrap() {
            let kind = entry["kind"].as_str().unwrap();
            assert!(SAFE_HARBOR_KINDS.contains(&kind), "unknown kind {kind}");
            places
                .entry(kind.to_string())
                .or_default()
                .insert(entry["place"].as_str().unwrap().to_string());
        }
    }
    for kind in SAFE_HARBOR_KINDS {
        let found = places.get(kind).map_or(0, BTreeSet::len);
        assert!(found >= 3, "{kind}: {found} places: {:?}", places.get(kind));
    }
}

/// Random-shaped (version 4) UUIDs from a counter: deterministic, and of the only shape
/// `check` accepts.
fn test_uuids() -> impl FnMut() -> String {
    let mut n = 0u128;
    uuid_ids(move |b| {
        n += 1;
        *b = n.to_be_bytes();
    })
}
