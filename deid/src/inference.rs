//! Ages over 89 inferred from what survives apart: a resource that keeps an age (a time
//! Quantity, Age or Range bound) and a year (any kept date, already cut to its year) tells
//! how old the person is now: `share_year − year + age`. When that is 90 or more for any
//! pair, the resource's years go, so the age can no longer be dated (45 CFR
//! 164.514(b)(2)(i)(C): "all elements of dates (including year) indicative of such age").
//! Resources are judged one by one (each Bundle entry and contained resource on its own):
//! an age recorded in one resource and a year in another say nothing about the same moment.

use serde_json::{Map, Value};

use crate::quantity::AGE_CATEGORY_YEARS;

/// The years of an age in a kept Quantity-like object (`value` with a time `unit`/`code`).
fn age_years(object: &Map<String, Value>) -> Option<f64> {
    let value = object.get("value")?.as_f64()?;
    let unit = object
        .get("code")
        .or_else(|| object.get("unit"))?
        .as_str()?;
    let per_year = match unit {
        "a" => 1.0,
        "mo" => 12.0,
        "wk" => 52.0,
        "d" => 365.0,
        "h" => 365.0 * 24.0,
        "min" => 365.0 * 24.0 * 60.0,
        "s" => 365.0 * 24.0 * 3600.0,
        _ => return None,
    };
    Some(value / per_year)
}

/// Is `key` a date element of FHIR R4 (its value is a date, dateTime or instant)?
fn is_date_key(key: &str) -> bool {
    key.contains("Date")
        || key.contains("date")
        || key.contains("Instant")
        || key.ends_with("Time")
        || matches!(
            key,
            "start" | "end" | "issued" | "recorded" | "authoredOn" | "timestamp"
        )
}

fn is_year(value: &Value) -> Option<i32> {
    let text = value.as_str()?;
    (text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// The oldest age (in years) and earliest year anywhere in `value`, not entering nested
/// resources (`contained`, Bundle `entry`).
fn scan(value: &Value, oldest: &mut Option<f64>, earliest: &mut Option<i32>) {
    match value {
        Value::Object(object) => {
            let coded_age = object
                .get("code")
                .is_some_and(crate::walk::is_age_code)
                .then(|| object.get("valueInteger").and_then(Value::as_f64))
                .flatten();
            if let Some(years) = age_years(object).or(coded_age) {
                *oldest = Some(oldest.map_or(years, |o: f64| o.max(years)));
            }
            for (key, child) in object {
                if matches!(key.as_str(), "contained" | "entry") {
                    continue;
                }
                if is_date_key(key)
                    && let Some(year) = is_year(child)
                {
                    *earliest = Some(earliest.map_or(year, |e: i32| e.min(year)));
                }
                scan(child, oldest, earliest);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| scan(i, oldest, earliest)),
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    matches!(value, Value::Object(o) if o.is_empty())
        || matches!(value, Value::Array(a) if a.is_empty())
}

/// Removes every kept year from `value`, and every object or list left empty by that (a
/// copy holds no empty elements), not entering nested resources.
fn drop_years(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|key, child| !(is_date_key(key) && is_year(child).is_some()));
            for (key, child) in object.iter_mut() {
                if !matches!(key.as_str(), "contained" | "entry") {
                    drop_years(child);
                }
            }
            object.retain(|_, child| !is_empty(child));
        }
        Value::Array(items) => {
            items.iter_mut().for_each(drop_years);
            items.retain(|item| !is_empty(item));
        }
        _ => {}
    }
}

/// Applies the rule to `resource` and to every resource nested in it. Returns whether
/// anything was dropped.
pub fn drop_years_that_date_old_ages(resource: &mut Value, share_year: i32) -> bool {
    let mut changed = false;
    let (mut oldest, mut earliest) = (None, None);
    scan(resource, &mut oldest, &mut earliest);
    if let (Some(age), Some(year)) = (oldest, earliest)
        && f64::from(share_year.saturating_sub(year).max(0)) + age >= AGE_CATEGORY_YEARS as f64
    {
        drop_years(resource);
        changed = true;
    }
    if let Value::Object(object) = resource {
        for key in ["contained", "entry"] {
            if let Some(Value::Array(items)) = object.get_mut(key) {
                for item in items {
                    // A Bundle entry holds its resource under `resource`.
                    let nested = match item {
                        Value::Object(entry) if key == "entry" => entry.get_mut("resource"),
                        other => Some(other),
                    };
                    if let Some(nested) = nested {
                        changed |= drop_years_that_date_old_ages(nested, share_year);
                    }
                }
            }
        }
    }
    changed
}
