//! The walk: reads a parsed resource against its table in [`crate::schema`] and builds the
//! copy from what the table allows. Nothing is copied by default; each kind of element says
//! what of it survives. The same walk, with ids kept instead of replaced, is the re-check of
//! a received copy ([`crate::check`]): a copy passes when the walk changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Number, Value};

use crate::address;
use crate::codes::System;
use crate::dates::{Year, year_of};
use crate::displays::display;
use crate::error::DeidError;
use crate::ids::{is_replacement_id, is_uuid_v4};
use crate::quantity::{Measured, has_few_digits, measure, ninety_or_older};
use crate::report::Report;
use crate::schema::{self, Field, Kind, REFERENCE_TYPES, ResourceSchema};

/// Largest magnitude of a kept integer or decimal outside a Quantity.
const MAX_SMALL_NUMBER: i64 = 9999;
/// Largest kept `valueInteger`: a bare integer of 90 or more could be an age.
const MAX_INTEGER_RESULT: i64 = 89;
/// Largest kept `multipleBirthInteger`: a birth order, not a number that could identify.
const MAX_BIRTH_ORDER: u64 = 9;

/// Where replacement ids come from.
pub(crate) enum Ids<'a> {
    /// De-identifying: each distinct old id gets the next id from the caller.
    Replace(&'a mut dyn FnMut() -> String),
    /// Re-checking a copy: ids are already replacements; keep random UUIDs only (a counter
    /// id in a received copy could be chosen by the sender).
    Keep,
}

pub(crate) struct Walker<'a> {
    ids: Ids<'a>,
    replaced: BTreeMap<String, String>,
    issued: BTreeSet<String>,
    share_year: i32,
    keep_zip3: bool,
    /// Inside a `contained` resource: its own `contained`, and a Bundle, are dropped (nested
    /// copies of the same ids multiply the output).
    in_contained: bool,
    pub(crate) report: Report,
    /// The first drop or change and why, for [`crate::check`]'s error.
    pub(crate) first_change: Option<(String, &'static str)>,
}

type Walked = Result<Option<Value>, DeidError>;

impl<'a> Walker<'a> {
    pub(crate) fn new(ids: Ids<'a>, share_year: i32, keep_zip3: bool) -> Walker<'a> {
        Walker {
            ids,
            replaced: BTreeMap::new(),
            issued: BTreeSet::new(),
            share_year,
            keep_zip3,
            in_contained: false,
            report: Report::default(),
            first_change: None,
        }
    }

    fn dropped(&mut self, path: &[&'static str], reason: &'static str) {
        let path = self.report.count(path, true);
        self.first_change.get_or_insert((path, reason));
    }

    fn generalized(&mut self, path: &[&'static str], reason: &'static str) {
        let path = self.report.count(path, false);
        self.first_change.get_or_insert((path, reason));
    }

    /// A resource: its type must be supported (else the whole share is refused); `id` is
    /// replaced, `contained` resources are walked the same way, the rest by its table.
    pub(crate) fn resource(&mut self, value: &Value, path: &mut Vec<&'static str>) -> Walked {
        let object = value.as_object().ok_or(DeidError::NotAResource)?;
        let resource_type = object
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or(DeidError::NotAResource)?;
        let unsupported = DeidError::UnsupportedResourceType {
            supported: schema::SUPPORTED,
        };
        if let Some(dropped) = schema::DROPPED.iter().find(|t| **t == resource_type) {
            if path.is_empty() {
                return Err(unsupported);
            }
            path.push(dropped);
            self.dropped(path, "a resource type that is dropped whole");
            path.pop();
            return Ok(None);
        }
        let schema = schema::resource_schema(resource_type).ok_or(unsupported)?;
        if self.in_contained && schema.resource_type == "Bundle" {
            path.push(schema.resource_type);
            self.dropped(path, "a Bundle inside a contained resource");
            path.pop();
            return Ok(None);
        }
        path.push(schema.resource_type);
        let result = self.resource_body(schema, object, path);
        path.pop();
        result.map(Some)
    }

    fn resource_body(
        &mut self,
        schema: &'static ResourceSchema,
        object: &Map<String, Value>,
        path: &mut Vec<&'static str>,
    ) -> Result<Value, DeidError> {
        let mut out = Map::new();
        out.insert("resourceType".into(), Value::from(schema.resource_type));
        let age_coded = object.get("code").is_some_and(is_age_code);
        for (key, value) in object {
            match key.as_str() {
                "resourceType" => {}
                "id" => {
                    path.push("id");
                    let id = match value.as_str() {
                        Some(old) => self.replace(old)?,
                        None => None,
                    };
                    match id {
                        None => self.dropped(path, "not an id"),
                        Some(id) => {
                            if value.as_str() != Some(id.as_str()) {
                                self.generalized(path, "id replaced");
                            }
                            out.insert("id".into(), Value::from(id));
                        }
                    }
                    path.pop();
                }
                "contained" if schema.resource_type != "Bundle" && self.in_contained => {
                    path.push("contained");
                    self.dropped(path, "contained inside a contained resource");
                    path.pop();
                }
                "contained" if schema.resource_type != "Bundle" => {
                    let field = Field {
                        name: "contained",
                        kind: Kind::Resource,
                        many: true,
                    };
                    self.in_contained = true;
                    let contained = self.field(&field, value, path);
                    self.in_contained = false;
                    if let Some(contained) = contained? {
                        out.insert("contained".into(), contained);
                    }
                }
                _ => self.element(schema.fields, key, value, path, &mut out, age_coded)?,
            }
        }
        Ok(Value::Object(out))
    }

    /// A BackboneElement or complex type read against `fields`.
    fn object(
        &mut self,
        fields: &'static [Field],
        value: &Value,
        path: &mut Vec<&'static str>,
    ) -> Walked {
        let Some(object) = value.as_object() else {
            self.dropped(path, "not an object");
            return Ok(None);
        };
        let mut out = Map::new();
        // A value coded as an age (LOINC 30525-0 "Age", ...) is an Age whatever its unit:
        // only a plain time unit is kept, and 90 years or more is the category.
        let age_coded = object.get("code").is_some_and(is_age_code);
        for (key, value) in object {
            self.element(fields, key, value, path, &mut out, age_coded)?;
        }
        Ok((!out.is_empty()).then_some(Value::Object(out)))
    }

    /// One member of an object: kept through its field's kind, or dropped as unlisted. In an
    /// object coded as an age (`age_coded`), `valueQuantity` is read as an Age.
    fn element(
        &mut self,
        fields: &'static [Field],
        key: &str,
        value: &Value,
        path: &mut Vec<&'static str>,
        out: &mut Map<String, Value>,
        age_coded: bool,
    ) -> Result<(), DeidError> {
        match fields.iter().find(|f| f.name == key) {
            Some(field) => {
                // Under an age code, every value form is read as an age: a Quantity as an Age, a
                // Range as an age range; a Ratio says nothing an age needs and goes.
                let age_kind = match field.name {
                    "valueQuantity" => Some(Kind::Age),
                    "valueRange" => Some(Kind::AgeRange),
                    _ => None,
                };
                if age_coded && field.name == "valueRatio" {
                    path.push(field.name);
                    self.dropped(path, "a ratio under an age code");
                    path.pop();
                    return Ok(());
                }
                let as_age;
                let field = match age_kind {
                    Some(kind) if age_coded => {
                        as_age = Field { kind, ..*field };
                        &as_age
                    }
                    _ => field,
                };
                if let Some(kept) = self.field(field, value, path)? {
                    out.insert(field.name.into(), kept);
                }
            }
            None => {
                path.push("*");
                self.dropped(path, "not in the schema");
                path.pop();
            }
        }
        Ok(())
    }

    fn field(&mut self, field: &Field, value: &Value, path: &mut Vec<&'static str>) -> Walked {
        path.push(field.name);
        let result = match (field.many, value) {
            (true, Value::Array(items)) => {
                let mut kept = Vec::new();
                for item in items {
                    if let Some(item) = self.kind(field.kind, item, path)? {
                        kept.push(item);
                    }
                }
                Ok((!kept.is_empty()).then_some(Value::Array(kept)))
            }
            (false, Value::Array(_)) | (true, _) => {
                self.dropped(path, "wrong cardinality");
                Ok(None)
            }
            (false, single) => self.kind(field.kind, single, path),
        };
        path.pop();
        result
    }

    fn kind(&mut self, kind: Kind, value: &Value, path: &mut Vec<&'static str>) -> Walked {
        match kind {
            Kind::Backbone(fields) => self.object(fields, value, path),
            Kind::Period => self.object(schema::PERIOD, value, path),
            Kind::Resource => self.resource(value, path),
            Kind::CodeableConcept => self.codeable_concept(value, path),
            leaf => self.leaf(leaf, value, path, |w, v| w.leaf_value(leaf, v)),
        }
    }

    /// Runs `keep` on a leaf value and records the outcome: dropped, changed, or unchanged.
    fn leaf(
        &mut self,
        kind: Kind,
        value: &Value,
        path: &[&'static str],
        keep: impl FnOnce(&mut Self, &Value) -> Walked,
    ) -> Walked {
        let kept = keep(self, value)?;
        match &kept {
            None => self.dropped(path, drop_reason(kind)),
            Some(kept) if kept != value => self.generalized(path, change_reason(kind)),
            Some(_) => {}
        }
        Ok(kept)
    }

    fn leaf_value(&mut self, kind: Kind, value: &Value) -> Walked {
        Ok(match kind {
            Kind::Code(allowed) => value
                .as_str()
                .and_then(|v| allowed.iter().find(|a| **a == v))
                .map(|v| Value::from(*v)),
            Kind::Coding => coding(value).map(Value::Object),
            Kind::Quantity | Kind::SimpleQuantity | Kind::Age => {
                let comparator_allowed = !matches!(kind, Kind::SimpleQuantity);
                let age = matches!(kind, Kind::Age);
                match measure(value, comparator_allowed, age) {
                    Measured::Keep(kept) => Some(Value::Object(kept)),
                    Measured::NinetyOrOlder => Some(ninety_or_older(comparator_allowed)),
                    Measured::Drop(_) => None,
                }
            }
            Kind::Range => range(value, false),
            Kind::AgeRange => range(value, true),
            Kind::Ratio => ratio(value),
            Kind::Date => match value.as_str().map(|v| year_of(v, self.share_year)) {
                Some(Year::Keep(year)) => Some(Value::from(year)),
                _ => None,
            },
            Kind::Boolean => value.as_bool().map(Value::from),
            Kind::Integer => small_integer(value, MAX_SMALL_NUMBER),
            Kind::BirthOrder => value
                .as_u64()
                .filter(|v| *v <= MAX_BIRTH_ORDER)
                .map(Value::from),
            Kind::IntegerResult => small_integer(value, MAX_INTEGER_RESULT),
            Kind::Decimal => value
                .as_number()
                .filter(|n| has_few_digits(n))
                .and_then(Number::as_f64)
                .filter(|v| v.abs() <= MAX_SMALL_NUMBER as f64)
                .map(|_| value.clone()),
            Kind::Reference => match value.get("reference").and_then(Value::as_str) {
                Some(reference) => self.reference(reference)?.map(|r| {
                    let mut kept = Map::new();
                    kept.insert("reference".into(), Value::from(r));
                    Value::Object(kept)
                }),
                None => None,
            },
            Kind::Address => address::generalize(value, self.keep_zip3).map(Value::Object),
            Kind::StateOnly => address::generalize(value, false).map(Value::Object),
            Kind::FullUrl => match value.as_str().and_then(|u| u.strip_prefix("urn:uuid:")) {
                Some(old) => self
                    .replace(old)?
                    .map(|new| Value::from(format!("urn:uuid:{new}"))),
                None => None,
            },
            Kind::Backbone(_) | Kind::Period | Kind::Resource | Kind::CodeableConcept => None,
        })
    }

    /// A CodeableConcept keeps its allowed Codings and nothing else (`text` is free text).
    fn codeable_concept(&mut self, value: &Value, path: &mut Vec<&'static str>) -> Walked {
        let Some(object) = value.as_object() else {
            self.dropped(path, "not an object");
            return Ok(None);
        };
        let mut out = Map::new();
        for (key, value) in object {
            if key == "coding" {
                let field = Field {
                    name: "coding",
                    kind: Kind::Coding,
                    many: true,
                };
                if let Some(codings) = self.field(&field, value, path)? {
                    out.insert("coding".into(), codings);
                }
            } else {
                path.push(if key == "text" { "text" } else { "*" });
                self.dropped(path, "free text or not in the schema");
                path.pop();
            }
        }
        Ok((!out.is_empty()).then_some(Value::Object(out)))
    }

    /// `Type/id` (absolute or with `/_history/n` too), `#id` or `urn:uuid:id`, with the id
    /// replaced; anything else (a URL to something else, an unknown type) goes.
    fn reference(&mut self, reference: &str) -> Result<Option<String>, DeidError> {
        if reference == "#" {
            return Ok(Some("#".into()));
        }
        if let Some(local) = reference.strip_prefix('#') {
            return Ok(self.replace(local)?.map(|new| format!("#{new}")));
        }
        if let Some(uuid) = reference.strip_prefix("urn:uuid:") {
            return Ok(self.replace(uuid)?.map(|new| format!("urn:uuid:{new}")));
        }
        let versionless = reference
            .split_once("/_history/")
            .map_or(reference, |(base, _)| base);
        let mut segments = versionless.rsplit('/');
        let (Some(id), Some(resource_type)) = (segments.next(), segments.next()) else {
            return Ok(None);
        };
        let Some(resource_type) = REFERENCE_TYPES.iter().find(|t| **t == resource_type) else {
            return Ok(None);
        };
        Ok(self
            .replace(id)?
            .map(|new| format!("{resource_type}/{new}")))
    }

    /// The replacement of `old`: the same for the same `old` within one run, never derived
    /// from it. Empty ids go.
    fn replace(&mut self, old: &str) -> Result<Option<String>, DeidError> {
        if old.is_empty() {
            return Ok(None);
        }
        let next = match &mut self.ids {
            Ids::Keep => return Ok(is_uuid_v4(old).then(|| old.to_string())),
            Ids::Replace(next) => next,
        };
        if let Some(new) = self.replaced.get(old) {
            return Ok(Some(new.clone()));
        }
        let new = next();
        if !is_replacement_id(&new) || !self.issued.insert(new.clone()) {
            return Err(DeidError::BadReplacementId);
        }
        self.replaced.insert(old.to_string(), new.clone());
        self.report.ids_replaced += 1;
        Ok(Some(new))
    }
}

/// A Coding keeps `system` and `code` when the system is allowed and the code passes its
/// check, and a `display` from the shipped table; `version`, `userSelected` and the input's
/// display go.
fn coding(value: &Value) -> Option<Map<String, Value>> {
    let system = System::from_uri(value.get("system")?.as_str()?)?;
    let code = value.get("code")?.as_str()?;
    if !system.accepts(code) {
        return None;
    }
    let mut kept = Map::new();
    kept.insert("system".into(), Value::from(system.uri()));
    kept.insert("code".into(), Value::from(code));
    if let Some(display) = display(system.uri(), code) {
        kept.insert("display".into(), Value::from(display));
    }
    Some(kept)
}

/// A Range keeps its bounds; if either is 90 years or more it becomes "90 years or more"
/// (a low bound of 90 a and no high bound). An age Range keeps only bounds in a plain time
/// unit.
/// Codes that say their value is an age: LOINC Age (30525-0), Age - reported (21612-7),
/// Age - estimated (21611-9), Age calculated (29553-5), Age at death (39016-1), Age at
/// specimen collection (35659-2), Current age or age at death (63900-5); SNOMED CT Age
/// (397659008) and Current chronological age (424144002).
const AGE_CODES: [(&str, &str); 9] = [
    ("http://loinc.org", "30525-0"),
    ("http://loinc.org", "21612-7"),
    ("http://loinc.org", "21611-9"),
    ("http://loinc.org", "29553-5"),
    ("http://loinc.org", "39016-1"),
    ("http://loinc.org", "35659-2"),
    ("http://loinc.org", "63900-5"),
    ("http://snomed.info/sct", "397659008"),
    ("http://snomed.info/sct", "424144002"),
];

/// Does a CodeableConcept name an age code?
pub(crate) fn is_age_code(concept: &Value) -> bool {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings.iter().any(|c| {
                let system = c.get("system").and_then(Value::as_str);
                let code = c.get("code").and_then(Value::as_str);
                AGE_CODES
                    .iter()
                    .any(|(s, k)| Some(*s) == system && Some(*k) == code)
            })
        })
}

fn range(value: &Value, age: bool) -> Option<Value> {
    let mut kept = Map::new();
    for bound in ["low", "high"] {
        match value.get(bound).map(|q| measure(q, false, age)) {
            Some(Measured::NinetyOrOlder) => {
                let mut category = Map::new();
                category.insert("low".into(), ninety_or_older(false));
                return Some(Value::Object(category));
            }
            Some(Measured::Keep(quantity)) => {
                kept.insert(bound.into(), Value::Object(quantity));
            }
            Some(Measured::Drop(_)) | None => {}
        }
    }
    (!kept.is_empty()).then_some(Value::Object(kept))
}

/// A Ratio keeps numerator and denominator as Quantities; a ratio missing either goes.
fn ratio(value: &Value) -> Option<Value> {
    let mut kept = Map::new();
    for part in ["numerator", "denominator"] {
        let quantity = match measure(value.get(part)?, true, false) {
            Measured::Keep(quantity) => Value::Object(quantity),
            Measured::NinetyOrOlder => ninety_or_older(true),
            Measured::Drop(_) => return None,
        };
        kept.insert(part.into(), quantity);
    }
    Some(Value::Object(kept))
}

fn small_integer(value: &Value, max: i64) -> Option<Value> {
    value
        .as_i64()
        .filter(|v| (-MAX_SMALL_NUMBER..=max).contains(v))
        .map(Value::from)
}

fn drop_reason(kind: Kind) -> &'static str {
    match kind {
        Kind::Code(_) => "a code outside its value set",
        Kind::Coding => "a code system not on the allow-list, or a code failing its check",
        Kind::Quantity
        | Kind::Age
        | Kind::SimpleQuantity
        | Kind::Range
        | Kind::AgeRange
        | Kind::Ratio => {
            "no UCUM unit (an age: no plain time unit), more than 7 significant digits, a unitless 90 or more, or an upper bound of 90 years or more"
        }
        Kind::Date => "a malformed date, or one 90 or more years before the share",
        Kind::Reference => "a reference that is not to a known resource type",
        Kind::Address | Kind::StateOnly => "an address without a state or ZIP3",
        Kind::FullUrl => "a fullUrl that is a URL",
        _ => "not of its type, or out of range",
    }
}

fn change_reason(kind: Kind) -> &'static str {
    match kind {
        Kind::Coding => "display rendered from the shipped table",
        Kind::Quantity
        | Kind::Age
        | Kind::SimpleQuantity
        | Kind::Range
        | Kind::AgeRange
        | Kind::Ratio => "unit rendered as UCUM, or an age of 90 or more made one category",
        Kind::Date => "kept as its year",
        Kind::Reference | Kind::FullUrl => "id replaced",
        Kind::Address | Kind::StateOnly => "kept as state and ZIP3",
        _ => "normalized",
    }
}
