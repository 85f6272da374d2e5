//! What survives and what does not, claim by claim (issue 15), and the tests carried over
//! from the client's former `anonymize` module.

use medledger_deid::{DeidError, Profile, check, counter_ids, deidentify, uuid_ids};
use serde_json::{Value, json};

const YEAR: i32 = 2026;

/// Random-shaped (version 4) UUIDs from a counter: deterministic, and of the only shape
/// `check` accepts.
fn test_uuids() -> impl FnMut() -> String {
    let mut n = 0u128;
    uuid_ids(move |b| {
        n += 1;
        *b = n.to_be_bytes();
    })
}

fn run(input: &Value) -> Result<Value, DeidError> {
    let bytes = serde_json::to_vec(input).unwrap();
    let copy = deidentify(&bytes, &Profile::SAFE_HARBOR, YEAR, &mut counter_ids())?;
    // `check` accepts UUID ids only (the client's); the same input with them must pass it and
    // come back byte for byte.
    let shared = deidentify(&bytes, &Profile::SAFE_HARBOR, YEAR, &mut test_uuids())?;
    let checked =
        check(&shared.bytes, YEAR).unwrap_or_else(|e| panic!("the copy fails its own check: {e}"));
    assert_eq!(checked, shared.bytes);
    Ok(serde_json::from_slice(&copy.bytes).unwrap())
}

fn assert_absent(copy: &Value, planted: &[&str]) {
    let text = copy.to_string();
    for value in planted {
        assert!(!text.contains(value), "{value} survived: {text}");
    }
}

#[test]
fn the_issues_social_history_example_keeps_nothing_but_the_age_category() {
    let input = json!({"resourceType":"Observation","status":"final","code":{"text":"Social history"},
        "valueString":"Lives with son Tom Vale at 4 Oak Row, Leeds; contact 555-0199",
        "component":[{"code":{"text":"Age"},"valueQuantity":{"value":92,"unit":"a"}}]});
    let copy = run(&input).unwrap();
    assert_absent(
        &copy,
        &["Tom", "Vale", "Oak", "Leeds", "555-0199", "Social", "92"],
    );
    assert_eq!(
        copy,
        json!({"resourceType": "Observation", "status": "final", "component": [{"valueQuantity":
            {"value": 90, "comparator": ">=", "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}]})
    );
}

#[test]
fn a_patient_loses_every_safe_harbor_identifier() {
    let patient = json!({
        "resourceType": "Patient",
        "id": "pat-123",
        "meta": {"lastUpdated": "2026-03-01T10:00:00Z", "source": "http://hospital.example/ehr"},
        "text": {"status": "generated", "div": "<div>Jane Roe, MRN 0001</div>"},
        "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-0001"},
                       {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"}],
        "name": [{"family": "Roe", "given": ["Jane"]}],
        "telecom": [{"system": "phone", "value": "+1 555 010 0199"}, {"system": "email", "value": "jane@example.org"}],
        "gender": "female",
        "birthDate": "1961-04-09",
        "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "01101", "state": "MA", "country": "US"}],
        "photo": [{"contentType": "image/png", "url": "http://x/p.png"}],
        "contact": [{"name": {"family": "Roe"}}],
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": {"city": "Boston"}}],
        "managingOrganization": {"reference": "Organization/org-9", "display": "Springfield General"}
    });
    let copy = run(&patient).unwrap();
    assert_absent(
        &copy,
        &[
            "Jane",
            "Roe",
            "MRN-0001",
            "123-45-6789",
            "555",
            "jane@",
            "Main St",
            "Springfield",
            "01101",
            "04-09",
            "pat-123",
            "org-9",
            "Boston",
            "hospital.example",
            "http",
        ],
    );
    assert_eq!(
        copy,
        json!({"resourceType": "Patient", "id": "r1", "gender": "female", "birthDate": "1961",
            "address": [{"state": "MA", "postalCode": "011"}],
            "managingOrganization": {"reference": "Organization/r2"}})
    );
}

#[test]
fn references_follow_replaced_ids_within_a_bundle_and_dates_keep_the_year() {
    let bundle = json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:aaa", "resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1930-01-01"}},
            {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                "subject": {"reference": "Patient/p1", "display": "Jane Roe"},
                "effectiveDateTime": "2026-02-03T08:15:00+01:00",
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Jane's Hb"}]},
                "valueQuantity": {"value": 13.2, "unit": "g/dL"},
                "note": [{"text": "called patient at 555-010-0199"}]}},
            {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "urn:uuid:aaa"},
                "onsetAge": {"value": 93, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}}
        ]
    });
    let copy = run(&bundle).unwrap();
    let patient = &copy["entry"][0]["resource"];
    let observation = &copy["entry"][1]["resource"];
    let condition = &copy["entry"][2]["resource"];
    // Born 1930: 90 or more years before the share, so even the year goes.
    assert!(patient.get("birthDate").is_none());
    let patient_id = patient["id"].as_str().unwrap();
    assert_eq!(
        observation["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    let full_url = copy["entry"][0]["fullUrl"].as_str().unwrap();
    assert_eq!(condition["subject"]["reference"], full_url);
    assert!(observation.get("note").is_none());
    assert_eq!(observation["effectiveDateTime"], "2026");
    assert_eq!(
        observation["valueQuantity"],
        json!({"value": 13.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"})
    );
    assert_eq!(
        observation["code"]["coding"][0],
        json!({"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin [Mass/volume] in Blood"})
    );
    assert_eq!(condition["onsetAge"]["value"], 90);
    assert_eq!(condition["onsetAge"]["comparator"], ">=");
    assert_absent(&copy, &["aaa", "p1", "o1", "c1", "Jane", "555", "02-03"]);
}

#[test]
fn ids_come_from_the_caller_and_never_from_the_input() {
    let input = serde_json::to_vec(&json!({"resourceType": "Observation", "id": "o1",
        "subject": {"reference": "Patient/p1"}, "hasMember": [{"reference": "Observation/o1"}]}))
    .unwrap();
    // A stand-in for the operating system's generator: 7, 8, 9, ... in every byte.
    let mut draw = 6u8;
    let mut ids = uuid_ids(|b| {
        draw += 1;
        b.fill(draw);
    });
    let copy = deidentify(&input, &Profile::SAFE_HARBOR, YEAR, &mut ids).unwrap();
    let copy: Value = serde_json::from_slice(&copy.bytes).unwrap();
    let id = copy["id"].as_str().unwrap();
    assert_eq!(id, "07070707-0707-4707-8707-070707070707");
    assert_eq!(
        copy["subject"]["reference"],
        "Patient/08080808-0808-4808-8808-080808080808"
    );
    // The same old id maps to the same new one; a repeated new id is refused.
    assert_eq!(
        copy["hasMember"][0]["reference"],
        format!("Observation/{id}")
    );
    let mut same = || "r1".to_string();
    assert_eq!(
        deidentify(&input, &Profile::SAFE_HARBOR, YEAR, &mut same),
        Err(DeidError::BadReplacementId)
    );
    let mut bad = || "not an id!".to_string();
    assert_eq!(
        deidentify(&input, &Profile::SAFE_HARBOR, YEAR, &mut bad),
        Err(DeidError::BadReplacementId)
    );
}

#[test]
fn codes_survive_only_from_allowed_systems_with_valid_codes_and_shipped_displays() {
    let input = json!({"resourceType": "Condition", "code": {"text": "Jane's cancer", "coding": [
        {"system": "http://snomed.info/sct", "code": "254637007", "display": "NSCLC, told Jane Vale"},
        {"system": "http://snomed.info/sct", "code": "254637008"},
        {"system": "http://snomed.info/sct", "code": "404684003", "display": "Tom Vale"},
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C34.90", "version": "2026"},
        {"system": "http://st-mary.example/codes", "code": "VALE-1"},
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"},
        {"system": "http://loinc.org", "code": "Tom"}]}});
    let copy = run(&input).unwrap();
    assert_eq!(
        copy["code"],
        json!({"coding": [
            {"system": "http://snomed.info/sct", "code": "254637007", "display": "Non-small cell lung cancer"},
            {"system": "http://snomed.info/sct", "code": "404684003"},
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C34.90"}]})
    );
}

#[test]
fn status_like_codes_survive_only_from_their_value_set() {
    let copy = run(&json!({"resourceType": "Encounter", "status": "Tom Vale",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}}))
    .unwrap();
    assert_eq!(
        copy,
        json!({"resourceType": "Encounter", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}})
    );
}

#[test]
fn ages_of_ninety_or_more_become_one_category_under_any_code() {
    let input = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://st-mary.example/local", "code": "AGE"}]},
        "valueQuantity": {"value": 1150, "unit": "months"},
        "component": [
            {"valueRange": {"low": {"value": 85, "unit": "a"}, "high": {"value": 95, "unit": "a"}}},
            {"valueQuantity": {"value": 33000, "system": "http://unitsofmeasure.org", "code": "d"}},
            {"valueQuantity": {"value": 89, "unit": "years"}},
            {"valueInteger": 93},
            {"valueInteger": 7}]});
    let copy = run(&input).unwrap();
    let ucum = |v: u64, comparator: bool| {
        let mut q =
            json!({"value": v, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"});
        if comparator {
            q["comparator"] = json!(">=");
        }
        q
    };
    assert_eq!(copy["valueQuantity"], ucum(90, true));
    assert_eq!(
        copy["component"][0]["valueRange"],
        json!({"low": ucum(90, false)})
    );
    assert_eq!(copy["component"][1]["valueQuantity"], ucum(90, true));
    assert_eq!(copy["component"][2]["valueQuantity"], ucum(89, false));
    // A bare integer of 90 or more could be an age: it goes.
    assert_eq!(copy["component"].as_array().unwrap().len(), 4);
    assert_eq!(copy["component"][3]["valueInteger"], 7);
}

#[test]
fn dates_keep_the_year_and_old_ones_go_wherever_they_are() {
    let copy = run(&json!({"resourceType": "Observation", "status": "final",
        "valueDateTime": "1931-06-01", "effectivePeriod": {"start": "2025-12-30T23:00:00Z", "end": "2026-01-02"},
        "issued": "2026-01-02T10:00:00.123Z"}))
    .unwrap();
    assert_eq!(
        copy,
        json!({"resourceType": "Observation", "status": "final",
            "effectivePeriod": {"start": "2025", "end": "2026"}, "issued": "2026"})
    );
}

#[test]
fn restricted_zip3_areas_become_000_and_zip3_can_be_turned_off() {
    let input = json!({"resourceType": "Patient",
        "address": [{"line": ["4 Oak Row"], "city": "Rawlins", "state": "WY", "postalCode": "82301"}]});
    assert_eq!(
        run(&input).unwrap()["address"],
        json!([{"state": "WY", "postalCode": "000"}])
    );
    let bytes = serde_json::to_vec(&input).unwrap();
    let state_only = Profile { keep_zip3: false };
    let copy = deidentify(&bytes, &state_only, YEAR, &mut test_uuids()).unwrap();
    assert_eq!(check(&copy.bytes, YEAR).unwrap(), copy.bytes);
    let copy: Value = serde_json::from_slice(&copy.bytes).unwrap();
    assert_eq!(copy["address"], json!([{"state": "WY"}]));
}

#[test]
fn a_location_keeps_its_state_only() {
    let input = json!({"resourceType": "Location", "name": "Oak Row Clinic", "status": "active",
        "address": {"line": ["4 Oak Row"], "city": "Boston", "state": "MA", "postalCode": "02115"}});
    assert_eq!(
        run(&input).unwrap(),
        json!({"resourceType": "Location", "status": "active", "address": {"state": "MA"}})
    );
}

#[test]
fn attachments_binaries_and_documents_text_go() {
    let copy = run(&json!({"resourceType": "DocumentReference", "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
        "description": "Progress note for Tom Vale",
        "content": [{"attachment": {"contentType": "application/pdf", "data": "JVBERi0=", "url": "https://st-mary.example/doc/1", "title": "Vale.pdf"}}],
        "date": "2026-05-05T10:00:00Z"}))
    .unwrap();
    assert_eq!(
        copy,
        json!({"resourceType": "DocumentReference", "status": "current", "date": "2026",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]}})
    );
}

#[test]
fn what_cannot_be_vouched_for_is_refused() {
    let refuse = |bytes: &[u8]| deidentify(bytes, &Profile::SAFE_HARBOR, YEAR, &mut counter_ids());
    assert!(matches!(
        refuse(b"%PDF-1.7 ..."),
        Err(DeidError::NotJson { .. })
    ));
    assert_eq!(refuse(br#"{"name": "x"}"#), Err(DeidError::NotAResource));
    assert_eq!(refuse(b"[]"), Err(DeidError::NotAResource));
    let unsupported = refuse(br#"{"resourceType": "Binary", "data": "SmFuZQ=="}"#).unwrap_err();
    assert!(matches!(
        unsupported,
        DeidError::UnsupportedResourceType { .. }
    ));
    assert!(
        unsupported.to_string().contains("Observation, Condition"),
        "{unsupported}"
    );
    // An unknown type inside a Bundle or `contained` refuses the whole share, and the error
    // does not echo the type (it is input).
    let inner =
        br#"{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "JaneVale"}}]}"#;
    let error = refuse(inner).unwrap_err();
    assert!(!error.to_string().contains("JaneVale"), "{error}");
    assert!(matches!(
        refuse(br#"{"resourceType": "Observation", "contained": [{"resourceType": "Group"}]}"#),
        Err(DeidError::UnsupportedResourceType { .. })
    ));
    assert_eq!(
        refuse(br#"{"resourceType": "Observation", "component": [{"modifierExtension": [{"url": "u"}]}]}"#),
        Err(DeidError::ModifierExtension)
    );
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let deep = format!(r#"{{"resourceType": "Observation", "x": {deep}}}"#);
    assert_eq!(
        refuse(deep.as_bytes()),
        Err(DeidError::TooDeep { limit: 64 })
    );
    let huge = vec![b' '; medledger_deid::MAX_INPUT_BYTES + 1];
    assert!(matches!(refuse(&huge), Err(DeidError::TooLarge { .. })));
}

#[test]
fn binaries_and_media_inside_a_bundle_or_contained_are_dropped_whole() {
    let copy = run(&json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Binary", "contentType": "image/jpeg", "data": "RkFDRQ=="}},
        {"resource": {"resourceType": "Observation", "status": "final",
            "contained": [{"resourceType": "Media", "id": "m1", "content": {"url": "https://x.example/face.jpg"}}]}}]}))
    .unwrap();
    assert_eq!(
        copy,
        json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final"}}]})
    );
}

#[test]
fn check_refuses_a_copy_that_was_not_deidentified() {
    for (copy, path) in [
        (
            json!({"resourceType": "Observation", "valueString": "Tom Vale"}),
            "Observation.*",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": "1961-04-09"}),
            "Patient.birthDate",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": "1930"}),
            "Patient.birthDate",
        ),
        (
            json!({"resourceType": "Observation", "valueQuantity": {"value": 92, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}),
            "Observation.valueQuantity",
        ),
        (
            json!({"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Tom"}]}}),
            "Observation.code.coding",
        ),
        (
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/Tom Vale"}}),
            "Observation.subject",
        ),
        (
            json!({"resourceType": "Patient", "address": [{"state": "MA", "city": "Leeds"}]}),
            "Patient.address",
        ),
    ] {
        let bytes = serde_json::to_vec(&copy).unwrap();
        match check(&bytes, YEAR) {
            Err(DeidError::NotDeidentified { path: got, .. }) => assert_eq!(got, path, "{copy}"),
            other => panic!("{copy}: {other:?}"),
        }
    }
    // The error never carries the offending value.
    let bytes = br#"{"resourceType": "Observation", "valueString": "Tom Vale"}"#;
    assert!(!check(bytes, YEAR).unwrap_err().to_string().contains("Vale"));
}
