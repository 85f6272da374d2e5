//! Measurements: a Quantity (and Age, Duration, SimpleQuantity) keeps its number and a UCUM
//! unit; a time quantity of 90 years or more becomes the single category "90 or older"
//! (45 CFR 164.514(b)(2)(i)(C): "all ages over 89 ... aggregated into a single category of
//! age 90 or older"), whatever code it sits under — an age hidden under a local code or in a
//! component is still an age.

use serde_json::{Map, Number, Value};

use crate::codes::UCUM;
use crate::units::{is_ucum, is_unitless, time_is_hidden, time_unit, years_per_unit};
use crate::value_sets::QUANTITY_COMPARATOR;

/// Ages at or above this many years are one category.
pub const AGE_CATEGORY_YEARS: u64 = 90;
/// Most significant digits a kept number may have: a longer number could be an identifier
/// (a phone, record or social security number) written as a measurement.
pub const MAX_SIGNIFICANT_DIGITS: usize = 7;
/// Largest value of a unitless quantity (`1`, `{count}`, `10*3`): without a unit it may be
/// an age, as for `valueInteger`.
pub const MAX_UNITLESS_VALUE: f64 = 89.0;

/// Whether `number`, as it will be written, has at most [`MAX_SIGNIFICANT_DIGITS`]
/// significant digits (leading and trailing zeros do not count).
pub fn has_few_digits(number: &Number) -> bool {
    let text = number.to_string();
    // An exponent carries digits of its own, and so do trailing zeros of an integer part
    // (6175550000): only plain decimals between 1e-6 and 1e7 are kept.
    if text.contains(['e', 'E']) {
        return false;
    }
    let Some(value) = number.as_f64() else {
        return false;
    };
    if value != 0.0 && !(1e-6..1e7).contains(&value.abs()) {
        return false;
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len() <= MAX_SIGNIFICANT_DIGITS
}

/// What becomes of one Quantity.
#[derive(Debug, Clone, PartialEq)]
pub enum Measured {
    /// Keep: value, comparator, and the unit rendered as its UCUM code.
    Keep(Map<String, Value>),
    /// A time of 90 years or more.
    NinetyOrOlder,
    /// Dropped, with the reason.
    Drop(&'static str),
}

/// Judges a Quantity. `comparator_allowed` is false for a SimpleQuantity (Range bounds);
/// `age` is true for an Age, which keeps only a plain time unit.
pub fn measure(quantity: &Value, comparator_allowed: bool, age: bool) -> Measured {
    let Some(object) = quantity.as_object() else {
        return Measured::Drop("not an object");
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    let Some(value) = object.get("value").and_then(Value::as_number) else {
        return Measured::Drop("no numeric value");
    };
    if !has_few_digits(value) {
        return Measured::Drop("a number with more than 7 significant digits");
    }
    let Some(unit) = ucum_unit(text("system"), text("code"), text("unit")) else {
        return Measured::Drop("no UCUM unit");
    };
    let per_unit = years_per_unit(&unit);
    if age && per_unit.is_none() {
        return Measured::Drop("an age not in a plain time unit");
    }
    if is_unitless(&unit) && value.as_f64().is_none_or(|v| v > MAX_UNITLESS_VALUE) {
        return Measured::Drop("a unitless number of 90 or more (it may be an age)");
    }
    let comparator = match object.get("comparator") {
        None => None,
        Some(Value::String(c))
            if comparator_allowed && QUANTITY_COMPARATOR.contains(&c.as_str()) =>
        {
            Some(c.clone())
        }
        Some(_) => return Measured::Drop("comparator not allowed here"),
    };
    if let (Some(per_unit), Some(number)) = (per_unit, value.as_f64())
        && number * per_unit >= AGE_CATEGORY_YEARS as f64
    {
        let bounded_above = matches!(comparator.as_deref(), Some("<" | "<="));
        return if bounded_above {
            Measured::Drop("an upper bound of 90 years or more")
        } else {
            Measured::NinetyOrOlder
        };
    }
    let mut kept = Map::new();
    kept.insert("value".into(), Value::Number(value.clone()));
    if let Some(comparator) = comparator {
        kept.insert("comparator".into(), Value::String(comparator));
    }
    kept.extend(ucum_fields(&unit));
    Measured::Keep(kept)
}

/// The "90 or older" category as a Quantity (`>= 90 a`), or as a SimpleQuantity (`90 a`, a
/// Range's low bound) when no comparator is allowed.
pub fn ninety_or_older(comparator_allowed: bool) -> Value {
    let mut category = Map::new();
    category.insert("value".into(), Value::from(AGE_CATEGORY_YEARS));
    if comparator_allowed {
        category.insert("comparator".into(), Value::from(">="));
    }
    category.extend(ucum_fields("a"));
    Value::Object(category)
}

fn ucum_fields(unit: &str) -> [(String, Value); 3] {
    [
        ("unit".into(), Value::from(unit)),
        ("system".into(), Value::from(UCUM)),
        ("code".into(), Value::from(unit)),
    ]
}

/// The UCUM code of a Quantity's unit: a time unit when its `code` or its `unit` names one
/// (a UCUM code or an English word); otherwise its `code` when that is a UCUM unit, or,
/// without a code, its `unit`. A Quantity coded in any other system has no unit we can
/// read, and goes; so does one whose `code` or `unit` uses a time atom other than as a
/// plain time unit or a rate (`ka`, `1.a`, `a.1`, `/a-1`, `Gs`: a time the category could
/// not see).
fn ucum_unit(system: Option<&str>, code: Option<&str>, unit: Option<&str>) -> Option<String> {
    if system.is_some_and(|s| s != UCUM) {
        return None;
    }
    // UCUM codes are ASCII; anything else is no unit this profile keeps.
    if [code, unit].into_iter().flatten().any(|u| !u.is_ascii()) {
        return None;
    }
    // A time word in either the code or the human-readable unit makes it a time: an age
    // written `{"value": 95, "unit": "years", "code": "mg"}` is still read as an age.
    if let Some(time) = [code, unit].into_iter().flatten().find_map(time_unit) {
        return Some(time.to_string());
    }
    if [code, unit].into_iter().flatten().any(time_is_hidden) {
        return None;
    }
    match (system, code) {
        (_, Some(code)) => is_ucum(code).then(|| code.to_string()),
        (Some(_), None) => None,
        (None, None) => unit.filter(|u| is_ucum(u)).map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ages_of_ninety_or_more_become_one_category_in_any_time_unit() {
        for age in [
            json!({"value": 92, "unit": "a"}),
            json!({"value": 90, "unit": "years"}),
            json!({"value": 1100, "unit": "mo"}),
            json!({"value": 33000, "system": UCUM, "code": "d"}),
            json!({"value": 95, "comparator": ">", "unit": "a"}),
            json!({"value": 95, "unit": "years", "code": "mg"}),
        ] {
            assert_eq!(measure(&age, true, false), Measured::NinetyOrOlder, "{age}");
        }
        assert!(matches!(
            measure(&json!({"value": 89.9, "unit": "a"}), true, false),
            Measured::Keep(_)
        ));
        assert!(matches!(
            measure(
                &json!({"value": 95, "comparator": "<", "unit": "a"}),
                true,
                false
            ),
            Measured::Drop(_)
        ));
    }

    #[test]
    fn units_are_rendered_as_ucum_codes_or_the_quantity_goes() {
        let Measured::Keep(kept) = measure(&json!({"value": 11.4, "unit": "g/dL"}), true, false)
        else {
            panic!("kept");
        };
        assert_eq!(
            Value::Object(kept),
            json!({"value": 11.4, "unit": "g/dL", "system": UCUM, "code": "g/dL"})
        );
        for unknown in [
            json!({"value": 5, "unit": "Tom Vale"}),
            json!({"value": 5, "system": "http://local.example/units", "code": "mg"}),
            json!({"value": 5}),
            json!({"value": "5", "unit": "mg"}),
            json!({"value": 5, "unit": "mg", "comparator": "about"}),
        ] {
            assert!(
                matches!(measure(&unknown, true, false), Measured::Drop(_)),
                "{unknown}"
            );
        }
    }
}
