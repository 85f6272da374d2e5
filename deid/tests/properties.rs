//! Property tests from a seeded generator (no proptest: the project replays failures by seed,
//! as in `chaincode/tests/model.rs`). Inputs: arbitrary JSON, FHIR-shaped resources built
//! from the schema's own tables with values drawn from valid codes, identifiers, names,
//! dates and junk, and mutated bytes. For every input, `deidentify` does not panic; it
//! refuses, or its copy passes `check` and holds no string that is not on the allow-list
//! (each classified by the element it sits in) and no age of 90 or more.
//!
//! A failure prints its seed; replay with
//! `DEID_SEED=<seed> cargo test -p medledger-deid --test properties`.

use medledger_deid::address::STATES;
use medledger_deid::codes::System;
use medledger_deid::displays::DISPLAYS;
use medledger_deid::schema::{self, Field, Kind, REFERENCE_TYPES, SUPPORTED};
use medledger_deid::units::{is_ucum, years_per_unit};
use medledger_deid::value_sets::{self as vs, CODE_SYSTEMS};
use medledger_deid::{Profile, check, deidentify, uuid_ids};
use serde_json::{Map, Value, json};

const SHARE_YEAR: i32 = 2026;
const CASES_PER_SEED: usize = 400;

/// xorshift64*: small, seedable, enough to draw test inputs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Identifiers and free text a copy must never carry.
const PHI: &[&str] = &[
    "Tom Vale",
    "Vale",
    "4 Oak Row",
    "Leeds",
    "555-0199",
    "jane@example.org",
    "123-45-6789",
    "MRN-0001",
    "http://evil.example/x",
    "10.0.0.7",
    "1HGCM82633A004352",
    "Jane",
    "Doe",
    "Zed",
    "Oak",
    "MA-LIC-20931",
    "SN-PX-44821",
    "ACCT-55120",
    "HPB-77123-X",
    "",
];
const CODES: &[&str] = &[
    "718-7",
    "8867-4",
    "12345-5",
    "12345-6",
    "254637007",
    "254637008",
    "I10",
    "E11.9",
    "6809",
    "mg",
    "a",
    "final",
    "male",
    "MTH",
    "laboratory",
    "vital-signs",
    "active",
    "W",
    "IMP",
    "L",
];
const SYSTEMS: &[&str] = &[
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://unitsofmeasure.org",
    "http://terminology.hl7.org/CodeSystem/observation-category",
    "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
    "http://hospital.example/mrn",
    "urn:oid:2.16.840.1.113883.4.1",
    "http://terminology.hl7.org/CodeSystem/Tom-Vale",
];
const DATES: &[&str] = &[
    "2019-07-23",
    "1930-01-01",
    "2026-11-20T08:30:00Z",
    "1999",
    "1961-04",
    "1936",
    "1937-12",
    "not a date",
    "2019-7-23",
];
const REFERENCES: &[&str] = &[
    "Patient/p1",
    "#c1",
    "urn:uuid:u1",
    "http://x.example/fhir/Observation/o9/_history/2",
    "Tom/Vale",
    "Patient/",
    "#",
    "Observation/o9",
    "Patient/Tom Vale",
];
const UNITS: &[&str] = &[
    "a",
    "mo",
    "years",
    "d",
    "wk",
    "min",
    "h",
    "mg",
    "g/dL",
    "Tom",
    "A",
    "{beats}/min",
];
const JUNK_KEYS: &[&str] = &[
    "text",
    "note",
    "extension",
    "id",
    "valueString",
    "display",
    "identifier",
    "name",
    "telecom",
    "photo",
    "url",
    "data",
    "Tom Vale",
    "_birthDate",
    "meta",
    "description",
];

fn phi(rng: &mut Rng) -> Value {
    if rng.chance(20) {
        let len = rng.below(12);
        let s: String = (0..len)
            .map(|_| {
                *rng.pick(&[
                    'a',
                    'Z',
                    '0',
                    '9',
                    '-',
                    '.',
                    ' ',
                    '/',
                    ':',
                    'é',
                    '\u{1F600}',
                    '#',
                ])
            })
            .collect();
        return Value::from(s);
    }
    Value::from(*rng.pick(PHI))
}

fn any_string(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => phi(rng),
        1 => Value::from(*rng.pick(CODES)),
        2 => Value::from(*rng.pick(SYSTEMS)),
        3 => Value::from(*rng.pick(DATES)),
        4 => Value::from(*rng.pick(REFERENCES)),
        _ => Value::from(*rng.pick(UNITS)),
    }
}

fn number(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!(rng.below(200)),
        1 => json!(rng.below(40_000) as f64 / 7.0),
        2 => json!(-(rng.below(20_000) as i64)),
        _ => json!(rng.below(1_000_000_000)),
    }
}

fn arbitrary(rng: &mut Rng, depth: usize) -> Value {
    let pick = if depth >= 5 {
        rng.below(4)
    } else {
        rng.below(6)
    };
    match pick {
        0 => Value::Null,
        1 => Value::from(rng.chance(50)),
        2 => number(rng),
        3 => any_string(rng),
        4 => Value::Array(
            (0..rng.below(4))
                .map(|_| arbitrary(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut object = Map::new();
            for _ in 0..rng.below(4) {
                let key = if rng.chance(50) {
                    rng.pick(JUNK_KEYS).to_string()
                } else {
                    rng.pick(&[
                        "resourceType",
                        "coding",
                        "system",
                        "code",
                        "value",
                        "unit",
                        "reference",
                    ])
                    .to_string()
                };
                object.insert(key, arbitrary(rng, depth + 1));
            }
            Value::Object(object)
        }
    }
}

fn quantity(rng: &mut Rng) -> Value {
    let mut q = Map::new();
    q.insert("value".into(), number(rng));
    if rng.chance(80) {
        q.insert("unit".into(), Value::from(*rng.pick(UNITS)));
    }
    if rng.chance(40) {
        q.insert(
            "system".into(),
            Value::from(*rng.pick(&["http://unitsofmeasure.org", "http://local.example/u"])),
        );
        q.insert("code".into(), Value::from(*rng.pick(UNITS)));
    }
    if rng.chance(20) {
        q.insert(
            "comparator".into(),
            Value::from(*rng.pick(&["<", ">=", "about"])),
        );
    }
    Value::Object(q)
}

fn value_of(rng: &mut Rng, kind: Kind, depth: usize) -> Value {
    if rng.chance(10) {
        return arbitrary(rng, depth);
    }
    match kind {
        Kind::Code(set) => {
            if rng.chance(70) {
                Value::from(*rng.pick(set))
            } else {
                phi(rng)
            }
        }
        Kind::Coding => {
            let mut coding = json!({"system": rng.pick(SYSTEMS), "code": rng.pick(CODES)});
            if rng.chance(50) {
                coding["display"] = phi(rng);
            }
            if rng.chance(10) {
                coding["version"] = phi(rng);
            }
            coding
        }
        Kind::CodeableConcept => {
            let codings = (0..1 + rng.below(3))
                .map(|_| value_of(rng, Kind::Coding, depth + 1))
                .collect();
            let mut concept = json!({"coding": Value::Array(codings)});
            if rng.chance(50) {
                concept["text"] = phi(rng);
            }
            concept
        }
        Kind::Quantity | Kind::SimpleQuantity | Kind::Age => quantity(rng),
        Kind::Range | Kind::AgeRange => json!({"low": quantity(rng), "high": quantity(rng)}),
        Kind::Ratio => json!({"numerator": quantity(rng), "denominator": quantity(rng)}),
        Kind::Date => Value::from(*rng.pick(DATES)),
        Kind::Period => json!({"start": rng.pick(DATES), "end": rng.pick(DATES)}),
        Kind::Boolean => Value::from(rng.chance(50)),
        Kind::Integer | Kind::IntegerResult | Kind::BirthOrder | Kind::Decimal => number(rng),
        Kind::Reference => json!({"reference": rng.pick(REFERENCES), "display": phi(rng),
            "identifier": {"value": phi(rng)}}),
        Kind::Address | Kind::StateOnly => json!({"line": [phi(rng)], "city": phi(rng),
            "state": rng.pick(&["MA", "NY", "Leeds", "ma", "West Yorkshire"]),
            "postalCode": rng.pick(&["01103", "03601-1234", "LS1 4AP", "893", "1234"])}),
        Kind::FullUrl => Value::from(*rng.pick(&[
            "urn:uuid:p1",
            "urn:uuid:Tom Vale",
            "http://x.example/Patient/1",
            "Vale",
        ])),
        Kind::Resource => resource(rng, depth + 1),
        Kind::Backbone(fields) => object(rng, fields, depth + 1),
    }
}

fn object(rng: &mut Rng, fields: &[Field], depth: usize) -> Value {
    let mut out = Map::new();
    if depth > 6 {
        return Value::Object(out);
    }
    for field in fields {
        if rng.chance(40) {
            let value = if field.many {
                Value::Array(
                    (0..1 + rng.below(2))
                        .map(|_| value_of(rng, field.kind, depth))
                        .collect(),
                )
            } else {
                value_of(rng, field.kind, depth)
            };
            out.insert(field.name.into(), value);
        }
    }
    for _ in 0..rng.below(3) {
        out.insert(rng.pick(JUNK_KEYS).to_string(), phi(rng));
    }
    if rng.chance(1) {
        out.insert(
            "modifierExtension".into(),
            json!([{"url": "http://x.example"}]),
        );
    }
    Value::Object(out)
}

fn resource(rng: &mut Rng, depth: usize) -> Value {
    let resource_type = if rng.chance(3) {
        *rng.pick(&["Binary", "Media", "Tom Vale", ""])
    } else {
        *rng.pick(SUPPORTED)
    };
    let fields = schema::resource_schema(resource_type).map_or(&[][..], |s| s.fields);
    let mut out = object(rng, fields, depth);
    out["resourceType"] = Value::from(resource_type);
    if rng.chance(70) {
        out["id"] = Value::from(*rng.pick(&["p1", "o9", "c1", "Tom Vale", "u1"]));
    }
    if depth < 3 && resource_type != "Bundle" && rng.chance(10) {
        out["contained"] = Value::Array(
            (0..1 + rng.below(2))
                .map(|_| resource(rng, depth + 1))
                .collect(),
        );
    }
    out
}

/// Every string the copy holds, with the key it sits under.
fn strings<'a>(value: &'a Value, key: &'a str, out: &mut Vec<(&'a str, &'a str)>) {
    match value {
        Value::String(s) => out.push((key, s)),
        Value::Array(items) => items.iter().for_each(|v| strings(v, key, out)),
        Value::Object(object) => object.iter().for_each(|(k, v)| strings(v, k, out)),
        _ => {}
    }
}

/// The ids `test_uuids` issues: `00000000-0000-4000-8000-` and twelve hex digits.
fn is_replacement_id(s: &str) -> bool {
    s.strip_prefix("00000000-0000-4000-8000-")
        .is_some_and(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_allowed_code(s: &str) -> bool {
    CODE_SYSTEMS.iter().any(|system| system.codes.contains(&s))
        || [
            "http://loinc.org",
            "http://snomed.info/sct",
            "http://hl7.org/fhir/sid/icd-10",
            "http://www.nlm.nih.gov/research/umls/rxnorm",
            "http://unitsofmeasure.org",
        ]
        .iter()
        .any(|uri| System::from_uri(uri).is_some_and(|system| system.accepts(s)))
}

fn is_value_set_code(s: &str) -> bool {
    [
        vs::ADMINISTRATIVE_GENDER,
        vs::OBSERVATION_STATUS,
        vs::ENCOUNTER_STATUS,
        vs::ENCOUNTER_LOCATION_STATUS,
        vs::DIAGNOSTIC_REPORT_STATUS,
        vs::MEDICATION_REQUEST_STATUS,
        vs::MEDICATION_REQUEST_INTENT,
        vs::REQUEST_PRIORITY,
        vs::EVENT_STATUS,
        vs::FAMILY_HISTORY_STATUS,
        vs::SPECIMEN_STATUS,
        vs::LOCATION_STATUS,
        vs::LOCATION_MODE,
        vs::DOCUMENT_REFERENCE_STATUS,
        vs::COMPOSITION_STATUS,
        vs::DOCUMENT_RELATIONSHIP,
        vs::MEDICATION_STATUS,
        vs::BUNDLE_TYPE,
        vs::UNITS_OF_TIME,
        vs::DAYS_OF_WEEK,
        vs::EVENT_TIMING,
    ]
    .iter()
    .any(|set| set.contains(&s))
}

fn is_year(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a string under `key` is on the allow-list.
fn allowed(key: &str, s: &str) -> bool {
    match key {
        "resourceType" => SUPPORTED.contains(&s),
        "system" => System::from_uri(s).is_some(),
        "code" => is_allowed_code(s) || is_value_set_code(s),
        "display" => DISPLAYS.iter().any(|(_, _, d)| *d == s),
        "id" => is_replacement_id(s),
        "fullUrl" => s.strip_prefix("urn:uuid:").is_some_and(is_replacement_id),
        "reference" => {
            s == "#"
                || s.strip_prefix('#').is_some_and(is_replacement_id)
                || s.strip_prefix("urn:uuid:").is_some_and(is_replacement_id)
                || s.split_once('/')
                    .is_some_and(|(t, id)| REFERENCE_TYPES.contains(&t) && is_replacement_id(id))
        }
        "unit" => is_ucum(s),
        "state" => STATES.contains(&s),
        "postalCode" => s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()),
        "comparator" => vs::QUANTITY_COMPARATOR.contains(&s),
        _ => is_year(s) || is_value_set_code(s),
    }
}

/// No time quantity of 90 years or more, except the category `>= 90 a` (or `90 a` as a
/// Range's low bound), and no `valueInteger` of 90 or more.
fn no_old_ages(value: &Value, key: &str) -> Result<(), String> {
    match value {
        Value::Object(object) => {
            let unit = object
                .get("code")
                .and_then(Value::as_str)
                .and_then(years_per_unit);
            if let (Some(per_unit), Some(v)) = (unit, object.get("value").and_then(Value::as_f64))
                && v * per_unit >= 90.0
                && !(v == 90.0 && object.get("code") == Some(&json!("a")))
            {
                return Err(format!("an age of {v} x {per_unit} years under {key}"));
            }
            object.iter().try_for_each(|(k, v)| no_old_ages(v, k))
        }
        Value::Array(items) => items.iter().try_for_each(|v| no_old_ages(v, key)),
        Value::Number(n) if key == "valueInteger" && n.as_f64().is_some_and(|v| v >= 90.0) => {
            Err(format!("valueInteger {n}"))
        }
        _ => Ok(()),
    }
}

/// Runs one input through `deidentify` and checks every property of a copy.
fn judge(input: &[u8]) -> Result<bool, String> {
    let first = deidentify(input, &Profile::SAFE_HARBOR, SHARE_YEAR, &mut test_uuids());
    let copy = match first {
        Ok(copy) => copy,
        Err(refusal) => {
            // A refusal may be logged or shown: it never quotes the input.
            let message = refusal.to_string();
            if let Some(planted) = PHI.iter().find(|p| p.len() >= 3 && message.contains(*p)) {
                return Err(format!("the refusal {message:?} quotes {planted:?}"));
            }
            return Ok(false);
        }
    };
    let report = format!("{:?}", copy.report);
    if let Some(planted) = PHI.iter().find(|p| p.len() >= 3 && report.contains(*p)) {
        return Err(format!("the report quotes {planted:?}: {report}"));
    }
    let again = deidentify(input, &Profile::SAFE_HARBOR, SHARE_YEAR, &mut test_uuids());
    if again.as_ref().ok() != Some(&copy) {
        return Err("not deterministic for the same ids".into());
    }
    let checked =
        check(&copy.bytes, SHARE_YEAR).map_err(|e| format!("the copy fails check: {e}"))?;
    if checked != copy.bytes {
        return Err("check returns other bytes than the copy".into());
    }
    let value: Value = serde_json::from_slice(&copy.bytes).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    strings(&value, "", &mut found);
    if let Some((key, s)) = found.iter().find(|(key, s)| !allowed(key, s)) {
        return Err(format!("{s:?} under {key:?} is not on the allow-list"));
    }
    no_old_ages(&value, "")?;
    let text = String::from_utf8_lossy(&copy.bytes);
    if let Some(planted) = PHI.iter().find(|p| p.len() >= 3 && text.contains(*p)) {
        return Err(format!("{planted:?} survived"));
    }
    Ok(true)
}

fn seeds() -> Vec<u64> {
    match std::env::var("DEID_SEED") {
        Ok(seed) => vec![seed.parse().expect("DEID_SEED is a number")],
        Err(_) => (1..=10).collect(),
    }
}

fn run(name: &str, generate: impl Fn(&mut Rng) -> Vec<u8>) -> usize {
    let mut copies = 0;
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        for case in 0..CASES_PER_SEED {
            let input = generate(&mut rng);
            match judge(&input) {
                Ok(made) => copies += usize::from(made),
                Err(why) => panic!(
                    "{name}: seed {seed}, case {case}: {why}\ninput: {}\nreplay: DEID_SEED={seed} cargo test -p medledger-deid --test properties",
                    String::from_utf8_lossy(&input)
                ),
            }
        }
    }
    copies
}

#[test]
fn fhir_shaped_resources_come_out_allow_listed_or_are_refused() {
    let copies = run("fhir-shaped", |rng| {
        serde_json::to_vec(&resource(rng, 0)).unwrap()
    });
    // The generator must mostly produce shareable input, or the property says little.
    assert!(
        copies > seeds().len() * CASES_PER_SEED / 2,
        "only {copies} copies"
    );
}

#[test]
fn bundles_of_resources_come_out_allow_listed_or_are_refused() {
    run("bundle", |rng| {
        let entries: Vec<Value> = (0..rng.below(5))
            .map(|_| json!({"fullUrl": rng.pick(&["urn:uuid:p1", "http://x.example/Patient/p1"]), "resource": resource(rng, 1)}))
            .collect();
        serde_json::to_vec(
            &json!({"resourceType": "Bundle", "type": "collection", "entry": entries}),
        )
        .unwrap()
    });
}

#[test]
fn arbitrary_json_comes_out_allow_listed_or_is_refused() {
    run("arbitrary", |rng| {
        let mut value = arbitrary(rng, 0);
        if rng.chance(50)
            && let Value::Object(object) = &mut value
        {
            object.insert("resourceType".into(), Value::from(*rng.pick(SUPPORTED)));
        }
        serde_json::to_vec(&value).unwrap()
    });
}

#[test]
fn mutated_bytes_never_panic() {
    run("mutated", |rng| {
        let mut bytes = serde_json::to_vec(&resource(rng, 0)).unwrap();
        for _ in 0..1 + rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] = rng.next() as u8,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, *rng.pick(b"{}[]\",:0a\\")),
            }
        }
        bytes
    });
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
