//! Addresses keep the state and, where HHS allows it, the first three digits of the ZIP code
//! (45 CFR 164.514(b)(2)(i)(B): "all geographic subdivisions smaller than a State ... except
//! for the initial three digits of a zip code if ... the geographic unit formed by combining
//! all zip codes with the same three initial digits contains more than 20,000 people"; the
//! three-digit areas with 20,000 people or fewer become `000`). Street lines, city, district,
//! the full ZIP code, text, period and every other part go.

use serde_json::{Map, Value};

/// USPS codes of the states, the District of Columbia and the territories.
pub const STATES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "AS", "GU", "MP", "PR", "VI",
];

/// Three-digit ZIP areas with 20,000 people or fewer (HHS guidance on 164.514, 2000 Census):
/// they are reported as `000`.
pub const RESTRICTED_ZIP3: &[&str] = &[
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

/// What an Address keeps: `state` when it is a USPS code, and `postalCode` as its ZIP3 when
/// `keep_zip3` and the code is a US ZIP (`12345`, `12345-6789`, or an already cut `123`).
pub fn generalize(address: &Value, keep_zip3: bool) -> Option<Map<String, Value>> {
    let object = address.as_object()?;
    let mut kept = Map::new();
    if let Some(state) = object.get("state").and_then(Value::as_str)
        && let Some(known) = STATES.iter().find(|s| **s == state)
    {
        kept.insert("state".into(), Value::from(*known));
    }
    if keep_zip3
        && let Some(zip3) = object
            .get("postalCode")
            .and_then(Value::as_str)
            .and_then(zip3)
    {
        kept.insert("postalCode".into(), Value::from(zip3));
    }
    (!kept.is_empty()).then_some(kept)
}

/// The ZIP3 of a US ZIP code, `000` for the restricted areas.
pub fn zip3(zip: &str) -> Option<String> {
    let digits = |s: Option<&str>| s.is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
    let shaped = match zip.len() {
        3 | 5 => digits(Some(zip)),
        10 => digits(zip.get(..5)) && zip.get(5..6) == Some("-") && digits(zip.get(6..)),
        _ => false,
    };
    let prefix = zip.get(..3).filter(|_| shaped)?;
    Some(if RESTRICTED_ZIP3.contains(&prefix) {
        "000".to_string()
    } else {
        prefix.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_state_and_an_allowed_zip3_remain() {
        let kept = generalize(
            &json!({"line": ["4 Oak Row"], "city": "Leeds", "state": "MA", "postalCode": "01103-2201", "country": "US"}),
            true,
        );
        assert_eq!(
            Value::Object(kept.unwrap()),
            json!({"state": "MA", "postalCode": "011"})
        );
        assert_eq!(zip3("03601").as_deref(), Some("000"));
        assert_eq!(zip3("893").as_deref(), Some("000"));
        assert_eq!(zip3("LS1 4AP"), None);
        assert_eq!(zip3("１２３"), None);
        assert_eq!(
            generalize(&json!({"city": "Leeds", "state": "West Yorkshire"}), true),
            None
        );
        assert_eq!(
            generalize(&json!({"state": "MA", "postalCode": "01103"}), false),
            Some(Map::from_iter([("state".into(), json!("MA"))]))
        );
    }
}
