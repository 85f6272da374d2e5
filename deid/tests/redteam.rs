//! The red-team review's reproductions (share year 2026), one test per kind of finding.
//! Each input must be refused, or leave none of what was planted in it.

use medledger_deid::{
    DeidError, MAX_INPUT_BYTES, Profile, check, check_rekeyed, codes, deidentify, units, uuid_ids,
};
use serde_json::{Value, json};

const YEAR: i32 = 2026;
const PLANTED: &[&str] = &[
    "Tom",
    "Vale",
    "123-45-6789",
    "617-555-0142",
    "Leeds",
    "1234567890617555",
];

fn test_uuids() -> impl FnMut() -> String {
    let mut n = 0u128;
    uuid_ids(move |b| {
        n += 1;
        *b = n.to_be_bytes();
    })
}

/// The copy of `input`; it must pass `check` and come back byte for byte.
fn copy_of(input: &Value) -> Value {
    let bytes = serde_json::to_vec(input).unwrap();
    let copy = deidentify(&bytes, &Profile::SAFE_HARBOR, YEAR, &mut test_uuids()).unwrap();
    assert_eq!(check(&copy.bytes, YEAR).unwrap(), copy.bytes, "{input}");
    serde_json::from_slice(&copy.bytes).unwrap()
}

#[test]
fn check_returns_canonical_bytes_that_hide_nothing() {
    let inputs: [&[u8]; 4] = [
        br#"{"resourceType":"Patient","gender":"Tom Vale 123-45-6789 617-555-0142","gender":"male"}"#,
        br#"{"resourceType":"Tom Vale, 4 Oak Row, Leeds","resourceType":"Patient","gender":"male"}"#,
        br#"{"resourceType":"Observation","status":"final","valueQuantity":{"value":11.4000000000000000000001234567890617555014200000,"unit":"g/dL","system":"http://unitsofmeasure.org","code":"g/dL"}}"#,
        br#"{"resourceType":"Patient","gender":"\u006dale"}"#,
    ];
    for input in inputs {
        let shown = String::from_utf8_lossy(input);
        match check(input, YEAR) {
            Err(_) => {}
            Ok(bytes) => {
                let text = String::from_utf8(bytes.clone()).unwrap();
                for planted in PLANTED {
                    assert!(!text.contains(planted), "{planted} in {text} from {shown}");
                }
                // The returned bytes are a fixed point: what deidentify would write.
                assert_eq!(check(&bytes, YEAR).unwrap(), bytes, "{shown}");
            }
        }
    }
}

fn is_category_or_gone(quantity: &Value) -> bool {
    quantity.is_null()
        || (quantity["value"] == json!(90)
            && quantity["code"] == json!("a")
            && quantity.get("comparator").is_none_or(|c| c == ">="))
}

#[test]
fn ages_of_ninety_or_more_cannot_hide_in_units() {
    let units = [
        "a{count}",
        "1.a",
        "{count}.a",
        "a.1",
        "/a-1",
        "ka",
        "da",
        "kd",
        "Gs",
        "{count}",
        "1",
    ];
    let values = [
        97.0, 97.0, 97.0, 97.0, 97.0, 0.097, 970.0, 35.4, 3.06, 97.0, 97.0,
    ];
    for (unit, value) in units.into_iter().zip(values) {
        for quantity in [
            json!({"value": value, "unit": unit}),
            json!({"value": value, "system": "http://unitsofmeasure.org", "code": unit}),
        ] {
            let copy = copy_of(&json!({"resourceType": "Condition", "onsetAge": quantity}));
            assert!(is_category_or_gone(&copy["onsetAge"]), "{unit}: {copy}");
            let copy = copy_of(&json!({"resourceType": "Condition",
                "onsetRange": {"low": quantity}}));
            assert!(
                is_category_or_gone(&copy["onsetRange"]["low"]),
                "{unit}: {copy}"
            );
            let copy = copy_of(&json!({"resourceType": "FamilyMemberHistory",
                "status": "completed", "ageRange": {"low": quantity, "high": quantity},
                "ageAge": quantity, "condition": [{"onsetAge": quantity}]}));
            assert!(is_category_or_gone(&copy["ageAge"]), "{unit}: {copy}");
            assert!(
                is_category_or_gone(&copy["ageRange"]["low"]),
                "{unit}: {copy}"
            );
            assert!(copy["ageRange"].get("high").is_none(), "{unit}: {copy}");
            assert!(!copy.to_string().contains("97"), "{unit}: {copy}");
            let copy = copy_of(&json!({"resourceType": "Observation", "status": "final",
                "valueQuantity": quantity}));
            assert!(
                is_category_or_gone(&copy["valueQuantity"]),
                "{unit}: {copy}"
            );
        }
    }
    let copy = copy_of(&json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "30525-0"}]},
        "valueQuantity": {"value": 97, "unit": "1"}}));
    assert!(copy.get("valueQuantity").is_none(), "{copy}");
    // Rates and plain times still work; an Age needs a plain time unit.
    let copy = copy_of(&json!({"resourceType": "Observation", "status": "final",
        "valueQuantity": {"value": 97, "unit": "/min"}}));
    assert_eq!(copy["valueQuantity"]["value"], json!(97));
    let copy = copy_of(&json!({"resourceType": "Condition",
        "onsetAge": {"value": 40, "unit": "kg"}}));
    assert!(copy.get("onsetAge").is_none(), "{copy}");
    let copy = copy_of(&json!({"resourceType": "Condition",
        "onsetAge": {"value": 40, "unit": "years"}}));
    assert_eq!(copy["onsetAge"]["value"], json!(40));
}

#[test]
fn units_cannot_spell_numbers() {
    for unit in [
        "123.45.6789",
        "617.555.0142",
        "1234.5678.9012.3456",
        "123/45/6789",
        "10*12.10*34",
        "1.1",
        "10*03",
    ] {
        assert!(!units::is_ucum(unit), "{unit}");
        let copy = copy_of(&json!({"resourceType": "Observation", "status": "final",
            "valueQuantity": {"value": 1, "unit": unit},
            "code": {"coding": [{"system": "http://unitsofmeasure.org", "code": unit}]}}));
        assert!(!copy.to_string().contains(unit), "{unit}: {copy}");
    }
    for unit in ["10*3/uL", "10*9/L", "1000", "mg/100", "/10*3{cells}"] {
        assert!(units::is_ucum(unit), "{unit}");
    }
}

#[test]
fn codes_cannot_carry_names_or_long_numbers() {
    use codes::{ICD_10, ICD_10_CM, LOINC, RXNORM};
    for (system, code) in [
        (RXNORM, "12345678"),
        (RXNORM, "5550142"),
        (RXNORM, "0123"),
        (ICD_10_CM, "V4L.VALE"),
        (ICD_10_CM, "T0M.JANE"),
        (ICD_10, "A12.3456"),
        (LOINC, "042317-8"),
    ] {
        let copy = copy_of(&json!({"resourceType": "Condition",
            "code": {"coding": [{"system": system, "code": code}]}}));
        assert!(copy.get("code").is_none(), "{code}: {copy}");
    }
    for (system, code) in [
        (RXNORM, "6809"),
        (RXNORM, "1049502"),
        (ICD_10_CM, "S72.001A"),
        (ICD_10_CM, "T14.XXXA"),
        (ICD_10_CM, "J45.909"),
        (ICD_10, "C34"),
        (LOINC, "718-7"),
    ] {
        let copy = copy_of(&json!({"resourceType": "Condition",
            "code": {"coding": [{"system": system, "code": code}]}}));
        assert_eq!(copy["code"]["coding"][0]["code"], json!(code), "{code}");
    }
}

#[test]
fn numbers_with_many_digits_go() {
    for value in [json!(123456789), json!(6.175550142e9), json!(0.123456789)] {
        let quantity = json!({"value": value, "unit": "mg"});
        let copy = copy_of(&json!({"resourceType": "Observation", "status": "final",
            "valueQuantity": quantity,
            "valueRatio": {"numerator": quantity, "denominator": {"value": 1, "unit": "mL"}},
            "referenceRange": [{"low": quantity, "high": {"value": 5, "unit": "mg"}}]}));
        assert!(copy.get("valueQuantity").is_none(), "{copy}");
        assert!(copy.get("valueRatio").is_none(), "{copy}");
        assert!(copy["referenceRange"][0].get("low").is_none(), "{copy}");
        let copy = copy_of(
            &json!({"resourceType": "MedicationRequest", "status": "active",
            "intent": "order",
            "dosageInstruction": [{"timing": {"repeat": {"period": value, "periodUnit": "d"}}}]}),
        );
        assert!(!copy.to_string().contains("period\":"), "{copy}");
    }
    let copy = copy_of(&json!({"resourceType": "Observation", "status": "final",
        "valueQuantity": {"value": 1234567, "unit": "mg"}}));
    assert_eq!(copy["valueQuantity"]["value"], json!(1234567));
}

#[test]
fn copies_are_compact_bounded_and_contained_does_not_nest() {
    let input = json!({"resourceType": "Observation", "status": "final",
        "valueQuantity": {"value": 11.4, "unit": "g/dL"}});
    let bytes = serde_json::to_vec(&input).unwrap();
    let copy = deidentify(&bytes, &Profile::SAFE_HARBOR, YEAR, &mut test_uuids()).unwrap();
    assert!(!copy.bytes.contains(&b'\n') && !copy.bytes.contains(&b' '));
    assert_eq!(check(&copy.bytes, YEAR).unwrap(), copy.bytes);

    let nested = json!({"resourceType": "Patient", "gender": "male", "contained": [
        {"resourceType": "Patient", "id": "a", "gender": "male", "contained": [
            {"resourceType": "Patient", "id": "b", "gender": "female"}]},
        {"resourceType": "Bundle", "type": "collection"}]});
    let copy = copy_of(&nested);
    assert_eq!(copy["contained"].as_array().unwrap().len(), 1, "{copy}");
    assert!(copy["contained"][0].get("contained").is_none(), "{copy}");

    // Short ids become 36-character UUIDs: a copy can outgrow its input; over the limit it
    // is refused with a typed error, never made.
    let entry = json!({"resource": {"resourceType": "Observation", "id": "a", "status": "final",
        "subject": {"reference": "#a"}, "hasMember": [{"reference": "#a"}]}});
    let mut entries = Vec::new();
    let one = serde_json::to_vec(&entry).unwrap().len();
    let mut ids = 0;
    while entries.len() * one < MAX_INPUT_BYTES * 7 / 8 {
        let mut e = entry.clone();
        let id = format!("{ids:x}");
        ids += 1;
        e["resource"]["id"] = json!(id);
        e["resource"]["subject"]["reference"] = json!(format!("#{id}"));
        e["resource"]["hasMember"][0]["reference"] = json!(format!("#{id}"));
        entries.push(e);
    }
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
    let bytes = serde_json::to_vec(&bundle).unwrap();
    assert!(bytes.len() <= MAX_INPUT_BYTES);
    match deidentify(&bytes, &Profile::SAFE_HARBOR, YEAR, &mut test_uuids()) {
        Err(DeidError::OutputTooLarge { .. }) => {}
        Ok(copy) => panic!("a copy of {} bytes", copy.bytes.len()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn check_accepts_only_uuid_ids() {
    let copy = br#"{"id":"r123456789","resourceType":"Patient"}"#;
    assert!(matches!(
        check(copy, YEAR),
        Err(DeidError::NotDeidentified { .. })
    ));
    let copy = br#"{"id":"00000000-0000-4000-8000-000000000001","resourceType":"Patient"}"#;
    assert_eq!(check(copy, YEAR).unwrap(), copy.to_vec());
}

#[test]
fn a_birth_order_is_a_small_number() {
    let copy = copy_of(&json!({"resourceType": "Patient", "multipleBirthInteger": 6789}));
    assert!(copy.get("multipleBirthInteger").is_none(), "{copy}");
    let copy = copy_of(&json!({"resourceType": "Patient", "multipleBirthInteger": 2}));
    assert_eq!(copy["multipleBirthInteger"], json!(2));
}

/// Second review: a unit ending in a non-ASCII character (`kg/m²`, a BMI) panicked in both
/// `deidentify` and `check`; now such a unit is no UCUM unit and its quantity is dropped.
#[test]
fn non_ascii_units_neither_panic_nor_survive() {
    for unit in ["kg/m²", "°", "é", "µg", "m\u{b2}"] {
        let input = json!({"resourceType": "Observation", "status": "final",
            "valueQuantity": {"value": 24.1, "unit": unit}});
        let copy = copy_of(&input);
        assert!(copy.get("valueQuantity").is_none(), "{unit}: {copy}");
        let raw = format!(
            r#"{{"resourceType":"Observation","status":"final","valueQuantity":{{"value":24.1,"unit":"{unit}"}}}}"#
        );
        let _ = check(raw.as_bytes(), YEAR);
    }
}

/// Second review: the seven-digit rule was dodged by exponents and trailing zeros.
#[test]
fn numbers_cannot_carry_digits_in_exponents_or_zeros() {
    for raw in [
        r#"{"resourceType":"Observation","status":"final","valueQuantity":{"value":6175551e136,"unit":"mg"}}"#,
        r#"{"resourceType":"Observation","status":"final","valueQuantity":{"value":6175550000,"unit":"mg"}}"#,
        r#"{"resourceType":"Observation","status":"final","valueQuantity":{"value":1.234567e-289,"unit":"mg"}}"#,
    ] {
        let copy = deidentify(
            raw.as_bytes(),
            &Profile::SAFE_HARBOR,
            YEAR,
            &mut test_uuids(),
        )
        .unwrap();
        let text = String::from_utf8(copy.bytes).unwrap();
        assert!(!text.contains("617555"), "{raw} → {text}");
        assert!(!text.contains("1234567"), "{raw} → {text}");
        assert!(!text.contains("\"value\""), "{raw} → {text}");
    }
    // An ordinary measurement stays.
    let kept = copy_of(&json!({"resourceType": "Observation", "status": "final",
        "valueQuantity": {"value": 250000, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"}}));
    assert_eq!(kept["valueQuantity"]["value"], 250000);
}

/// Second review: a modified sharer chooses UUID-shaped ids that carry digits; the
/// researcher's client writes the copy re-keyed to ids of its own.
#[test]
fn the_researcher_writes_ids_of_its_own() {
    let raw = br#"{"id":"12345678-9617-4555-8142-000000000000","resourceType":"Patient","generalPractitioner":[{"reference":"Practitioner/61755501-4212-4345-8678-900000000000"}]}"#;
    assert!(
        check(raw, YEAR).is_ok(),
        "a UUID-shaped id passes the fixed-point check"
    );
    let written = check_rekeyed(raw, YEAR, &mut test_uuids()).unwrap();
    let text = String::from_utf8(written).unwrap();
    assert!(
        !text.contains("12345678") && !text.contains("61755501"),
        "{text}"
    );
    assert!(text.contains("Practitioner/"), "{text}");
}

/// Second review: an age and a year kept apart in one resource dated an age over 89.
#[test]
fn an_age_and_a_year_cannot_date_an_age_over_89() {
    let input = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "30525-0"}]},
            "effectiveDateTime": "2000", "valueQuantity": {"value": 70, "unit": "a"}}},
        {"resource": {"resourceType": "Condition", "onsetAge": {"value": 60, "unit": "a"},
            "recordedDate": "1990"}},
        {"resource": {"resourceType": "FamilyMemberHistory", "status": "completed",
            "date": "1980", "ageAge": {"value": 60, "unit": "a"}}},
        {"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "30525-0"}]},
            "effectiveDateTime": "2020", "valueQuantity": {"value": 40, "unit": "a"}}}]});
    let copy = copy_of(&input);
    let text = copy.to_string();
    for year in ["2000", "1990", "1980"] {
        assert!(!text.contains(year), "{year} still dates an age: {text}");
    }
    // A young age keeps its year.
    assert!(text.contains("2020"), "{text}");
}

/// Second review: an age coded as such but written in another unit survived.
#[test]
fn a_value_coded_as_an_age_is_an_age_whatever_its_unit() {
    for unit in ["%", "mg", "1"] {
        let input = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "30525-0"}]},
            "valueQuantity": {"value": 97, "unit": unit}});
        let copy = copy_of(&input);
        assert!(!copy.to_string().contains("97"), "{unit}: {copy}");
    }
    let input = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "30525-0"}]},
        "valueQuantity": {"value": 97, "unit": "a"}});
    let copy = copy_of(&input);
    assert_eq!(copy["valueQuantity"]["value"], 90, "{copy}");
}

/// Third review: instants and times date ages too; a valueInteger or valueRange under an
/// age code is an age; a year after the share is dropped.
#[test]
fn every_date_form_and_every_age_form_counts() {
    let age_code = json!({"coding": [{"system": "http://loinc.org", "code": "30525-0"}]});
    let cases = [
        json!({"resourceType": "Observation", "status": "final", "code": age_code,
            "effectiveInstant": "1950-01-01T00:00:00Z", "valueQuantity": {"value": 89, "unit": "a"}}),
        json!({"resourceType": "Observation", "status": "final", "code": age_code,
            "effectiveDateTime": "1950", "valueInteger": 89}),
    ];
    for input in cases {
        let text = copy_of(&input).to_string();
        assert!(!text.contains("1950"), "{input} → {text}");
    }
    let range = json!({"resourceType": "Observation", "status": "final", "code": age_code,
        "valueRange": {"low": {"value": 97, "unit": "mg"}, "high": {"value": 97, "unit": "%"}},
        "valueRatio": {"numerator": {"value": 97, "unit": "mg"}, "denominator": {"value": 1, "unit": "mg"}}});
    let text = copy_of(&range).to_string();
    assert!(!text.contains("97"), "{text}");
    let future = json!({"resourceType": "Condition", "onsetAge": {"value": 95, "unit": "a"},
        "recordedDate": "2030", "abatementDateTime": "6789"});
    let text = copy_of(&future).to_string();
    assert!(!text.contains("2030") && !text.contains("6789"), "{text}");
}
