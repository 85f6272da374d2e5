//! De-identification of FHIR R4 JSON for research sharing, after the HIPAA Safe Harbor
//! method (45 CFR 164.514(b)(2)): the 18 kinds of identifiers of the individual, relatives,
//! employers and household members are removed. Anything this module cannot vouch for is
//! refused rather than passed on: input that is not FHIR JSON, embedded attachments (a PDF
//! or an image inside a resource), modifier extensions (dropping them would change meaning),
//! and any remaining text that still looks like a phone number, an e-mail address, a social
//! security number or a URL.
//!
//! What is done, at every depth of every resource (a Bundle's entries included):
//! - removed: `identifier` (record, account, plan, licence and device numbers), `name` where
//!   it is a person's name, `telecom`, `photo`, `contact`, narrative `text`, free-text `note`
//!   and `comment`, `extension`, `meta`, reference `display`, device `serialNumber`,
//!   `lotNumber`, `udiCarrier`;
//! - addresses keep only `state` and `country`;
//! - dates and times keep only the year; a birth year that makes the patient older than 89
//!   is removed, and ages over 89 become "90 or older" (`value` 90, `comparator` `>=`);
//! - resource ids are replaced by fresh random ones, and references and `fullUrl`s follow
//!   them (consistently within the file, never across files); absolute URLs are removed.

use std::collections::BTreeMap;

use rand_core::RngCore;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnonymizeError {
    #[error("not JSON ({0}); anonymization accepts FHIR R4 JSON only")]
    NotJson(String),
    #[error("not a FHIR resource (no resourceType); anonymization accepts FHIR R4 JSON only")]
    NotFhir,
    #[error("{0}: cannot be de-identified, so it cannot be shared anonymized")]
    Refused(String),
}

/// What the de-identification removed or changed, by field name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub removed: BTreeMap<String, usize>,
    pub generalized: BTreeMap<String, usize>,
}

const REMOVED: [&str; 12] = [
    "identifier",
    "telecom",
    "photo",
    "contact",
    "note",
    "comment",
    "extension",
    "meta",
    "display",
    "serialNumber",
    "lotNumber",
    "udiCarrier",
];

struct Scrubber {
    this_year: i32,
    ids: BTreeMap<String, String>,
    report: Report,
}

/// De-identifies `input` (FHIR R4 JSON). `this_year` decides which birth years reveal an age
/// over 89.
pub fn anonymize_fhir(input: &[u8], this_year: i32) -> Result<(Vec<u8>, Report), AnonymizeError> {
    let mut value: Value =
        serde_json::from_slice(input).map_err(|e| AnonymizeError::NotJson(e.to_string()))?;
    if value
        .get("resourceType")
        .is_none_or(|t| t.as_str().is_none_or(str::is_empty))
    {
        return Err(AnonymizeError::NotFhir);
    }
    let mut scrubber = Scrubber {
        this_year,
        ids: BTreeMap::new(),
        report: Report::default(),
    };
    scrubber.walk("", &mut value)?;
    check_leftovers("", &value)?;
    let out =
        serde_json::to_vec_pretty(&value).map_err(|e| AnonymizeError::NotJson(e.to_string()))?;
    Ok((out, scrubber.report))
}

fn is_person_name(v: &Value) -> bool {
    let one = |v: &Value| {
        v.as_object().is_some_and(|o| {
            o.contains_key("family") || o.contains_key("given") || o.contains_key("text")
        })
    };
    match v {
        Value::Array(items) => items.iter().any(one),
        other => one(other),
    }
}

/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or a dateTime/instant: its year.
fn date_year(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let year_ok = b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit);
    if !year_ok {
        return None;
    }
    match b.len() {
        4 => Some(&s[..4]),
        7 if b[4] == b'-' && b[5..7].iter().all(u8::is_ascii_digit) => Some(&s[..4]),
        n if n >= 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[8..10].iter().all(u8::is_ascii_digit)
            && (n == 10 || b[10] == b'T') =>
        {
            Some(&s[..4])
        }
        _ => None,
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Scrubber {
    fn count(map: &mut BTreeMap<String, usize>, key: &str) {
        *map.entry(key.to_string()).or_default() += 1;
    }

    fn new_id(&mut self, old: &str) -> String {
        self.ids
            .entry(old.to_string())
            .or_insert_with(random_id)
            .clone()
    }

    fn walk(&mut self, key: &str, value: &mut Value) -> Result<(), AnonymizeError> {
        match value {
            Value::Object(map) => self.walk_object(map),
            Value::Array(items) => {
                for item in items {
                    self.walk(key, item)?;
                }
                Ok(())
            }
            Value::String(s) => {
                if let Some(year) = date_year(s)
                    && s.len() > 4
                {
                    *s = year.to_string();
                    Self::count(&mut self.report.generalized, key);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn walk_object(&mut self, map: &mut Map<String, Value>) -> Result<(), AnonymizeError> {
        if map.contains_key("modifierExtension") {
            return Err(AnonymizeError::Refused(
                "a modifierExtension (it changes the meaning of its element)".into(),
            ));
        }
        if map.contains_key("data") && map.contains_key("contentType") {
            return Err(AnonymizeError::Refused(format!(
                "an embedded attachment ({})",
                map["contentType"].as_str().unwrap_or("unknown type")
            )));
        }
        let is_resource = map.get("resourceType").is_some_and(Value::is_string);
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            let remove = REMOVED.contains(&key.as_str())
                || (key == "name" && is_person_name(&map[&key]))
                || (key == "text" && map[&key].get("div").is_some());
            if remove {
                map.remove(&key);
                Self::count(&mut self.report.removed, &key);
                continue;
            }
            match key.as_str() {
                "id" if is_resource => {
                    if let Some(old) = map[&key].as_str().map(str::to_string) {
                        map.insert(key.clone(), Value::String(self.new_id(&old)));
                        Self::count(&mut self.report.generalized, "id");
                    }
                }
                "reference" | "fullUrl" => {
                    let Some(old) = map[&key].as_str().map(str::to_string) else {
                        continue;
                    };
                    let new = if let Some(rest) = old.strip_prefix("urn:uuid:") {
                        Some(format!("urn:uuid:{}", self.new_id(rest)))
                    } else if old.contains("://") || old.starts_with('#') && old.len() == 1 {
                        None
                    } else if let Some((kind, id)) = old.split_once('/') {
                        Some(format!(
                            "{kind}/{}",
                            self.new_id(id.split('/').next().unwrap_or(id))
                        ))
                    } else {
                        None
                    };
                    match new {
                        Some(new) => {
                            map.insert(key.clone(), Value::String(new));
                            Self::count(&mut self.report.generalized, &key);
                        }
                        None => {
                            map.remove(&key);
                            Self::count(&mut self.report.removed, &key);
                        }
                    }
                }
                "address" => {
                    let keep = |a: &mut Value| {
                        if let Value::Object(o) = a {
                            o.retain(|k, _| k == "state" || k == "country");
                        }
                    };
                    match map.get_mut(&key) {
                        Some(Value::Array(items)) => items.iter_mut().for_each(keep),
                        Some(other) => keep(other),
                        None => {}
                    }
                    Self::count(&mut self.report.generalized, "address");
                }
                "birthDate" => {
                    let year = map[&key]
                        .as_str()
                        .and_then(date_year)
                        .and_then(|y| y.parse::<i32>().ok());
                    match year {
                        Some(y) if self.this_year - y <= 89 => {
                            map.insert(key.clone(), Value::String(y.to_string()));
                            Self::count(&mut self.report.generalized, "birthDate");
                        }
                        _ => {
                            map.remove(&key);
                            Self::count(&mut self.report.removed, "birthDate");
                        }
                    }
                }
                k if k == "age" || k.ends_with("Age") => {
                    if let Some(Value::Object(age)) = map.get_mut(&key)
                        && age
                            .get("value")
                            .and_then(Value::as_f64)
                            .is_some_and(|v| v > 89.0)
                    {
                        age.insert("value".into(), Value::from(90));
                        age.insert("comparator".into(), Value::from(">="));
                        Self::count(&mut self.report.generalized, &key);
                    }
                }
                _ => {
                    if let Some(v) = map.get_mut(&key) {
                        self.walk(&key, v)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// After scrubbing, nothing may still look like a direct identifier.
fn check_leftovers(key: &str, value: &Value) -> Result<(), AnonymizeError> {
    match value {
        Value::Object(map) => map.iter().try_for_each(|(k, v)| check_leftovers(k, v)),
        Value::Array(items) => items.iter().try_for_each(|v| check_leftovers(key, v)),
        // Systems are code-system URIs; ids, references and fullUrls were all replaced above.
        Value::String(_) if matches!(key, "system" | "id" | "reference" | "fullUrl") => Ok(()),
        Value::String(s) => {
            let refuse = |what: &str| {
                Err(AnonymizeError::Refused(format!(
                    "field {key:?} still holds what looks like {what}"
                )))
            };
            if s.contains("://") {
                return refuse("a URL");
            }
            if looks_like_email(s) {
                return refuse("an e-mail address");
            }
            if looks_like_ssn(s) {
                return refuse("a social security number");
            }
            if looks_like_phone(s) {
                return refuse("a phone number");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn looks_like_email(s: &str) -> bool {
    s.split_whitespace().any(|w| {
        w.split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.') && !b.starts_with('.'))
    })
}

/// `ddd-dd-dddd` anywhere.
fn looks_like_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(11).any(|w| {
        w.iter().enumerate().all(|(i, c)| match i {
            3 | 6 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
    })
}

/// Ten or more digits in a run of digits, spaces, dashes, dots, parentheses and `+`.
fn looks_like_phone(s: &str) -> bool {
    let mut digits = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits += 1;
            if digits >= 10 {
                return true;
            }
        } else if !matches!(c, ' ' | '-' | '.' | '(' | ')' | '+') {
            digits = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> Result<Value, AnonymizeError> {
        anonymize_fhir(&serde_json::to_vec(&v).unwrap(), 2026)
            .map(|(out, _)| serde_json::from_slice(&out).unwrap())
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
        let out = run(patient).unwrap();
        let text = out.to_string();
        for secret in [
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
        ] {
            assert!(!text.contains(secret), "{secret} survived: {text}");
        }
        assert_eq!(out["birthDate"], "1961");
        assert_eq!(out["gender"], "female");
        assert_eq!(out["address"], json!([{"state": "MA", "country": "US"}]));
        assert!(
            out["managingOrganization"]["reference"]
                .as_str()
                .unwrap()
                .starts_with("Organization/")
        );
        assert_eq!(out["id"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn references_follow_new_ids_within_a_bundle_and_dates_keep_the_year() {
        let bundle = json!({
            "resourceType": "Bundle", "type": "collection",
            "entry": [
                {"fullUrl": "urn:uuid:aaa", "resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1930-01-01"}},
                {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                    "subject": {"reference": "Patient/p1", "display": "Jane Roe"},
                    "effectiveDateTime": "2026-02-03T08:15:00+01:00",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                    "valueQuantity": {"value": 13.2, "unit": "g/dL"},
                    "note": [{"text": "called patient at 555-010-0199"}]}},
                {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                    "onsetAge": {"value": 93, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}}
            ]
        });
        let out = run(bundle).unwrap();
        let patient = &out["entry"][0]["resource"];
        let obs = &out["entry"][1]["resource"];
        let condition = &out["entry"][2]["resource"];
        // Born 1930: over 89, so even the year goes.
        assert!(patient.get("birthDate").is_none());
        let pid = patient["id"].as_str().unwrap();
        assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
        assert_eq!(condition["subject"]["reference"], format!("Patient/{pid}"));
        assert!(obs["subject"].get("display").is_none());
        assert!(obs.get("note").is_none());
        assert_eq!(obs["effectiveDateTime"], "2026");
        assert_eq!(obs["valueQuantity"]["value"], 13.2);
        assert_eq!(obs["code"]["coding"][0]["system"], "http://loinc.org");
        assert_eq!(condition["onsetAge"]["value"], 90);
        assert_eq!(condition["onsetAge"]["comparator"], ">=");
        assert!(
            out["entry"][0]["fullUrl"]
                .as_str()
                .unwrap()
                .starts_with("urn:uuid:")
        );
        assert!(!out.to_string().contains("aaa"));
        // Each run draws new ids: two studies cannot link the same record by id.
        let again = run(json!({"resourceType": "Patient", "id": "p1"})).unwrap();
        assert_ne!(again["id"], patient["id"]);
    }

    #[test]
    fn what_cannot_be_vouched_for_is_refused() {
        assert!(matches!(
            anonymize_fhir(b"%PDF-1.7 ...", 2026),
            Err(AnonymizeError::NotJson(_))
        ));
        assert_eq!(run(json!({"name": "x"})), Err(AnonymizeError::NotFhir));
        assert!(matches!(
            run(json!({"resourceType": "DocumentReference", "content": [{"attachment": {"contentType": "application/pdf", "data": "JVBERi0="}}]})),
            Err(AnonymizeError::Refused(why)) if why.contains("application/pdf")
        ));
        assert!(matches!(
            run(json!({"resourceType": "Observation", "modifierExtension": [{"url": "u"}]})),
            Err(AnonymizeError::Refused(_))
        ));
        for leftover in [
            "SSN 123-45-6789",
            "mail jane@example.org",
            "see https://portal.example/x",
            "tel (555) 010-0199",
        ] {
            let result = run(json!({"resourceType": "Observation", "valueString": leftover}));
            assert!(
                matches!(result, Err(AnonymizeError::Refused(_))),
                "{leftover}: {result:?}"
            );
        }
        // A fresh id that happens to be all digits is not mistaken for a phone number.
        for _ in 0..200 {
            run(json!({"resourceType": "Observation", "id": "1", "subject": {"reference": "Patient/2"}})).unwrap();
        }
        // Ordinary clinical values pass.
        run(json!({"resourceType": "Observation", "valueString": "Hb 13.2 g/dL, dose 2 Gy x 30"}))
            .unwrap();
    }
}
