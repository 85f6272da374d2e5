//! UCUM units (The Unified Code for Units of Measure, unitsofmeasure.org), checked against a
//! closed list of atoms rather than UCUM's character set: "Vale" is made of legal UCUM
//! characters, so a character check would let a name through as a unit. A unit is a term of
//! components joined by `.` and `/` (an optional leading `/`); a component is an optional
//! metric prefix and an atom from a closed list (`ATOMS`) with an optional integer exponent,
//! a factor such as `10*3` or `1000`, or an annotation from a short list (`ANNOTATIONS`):
//! UCUM annotations are free text, so only these few are kept.
//!
//! Time units and the common English words for them map to UCUM codes so that ages and
//! durations can be measured in years ([`years_per_unit`]).

/// UCUM atoms a copy may carry (base units and the common clinical ones).
const ATOMS: &[&str] = &[
    "m", "g", "s", "L", "l", "mol", "eq", "osm", "kat", "U", "Pa", "J", "W", "V", "A", "Ohm", "Hz",
    "Cel", "K", "min", "h", "d", "wk", "mo", "a", "%", "1", "Gy", "Sv", "Bq", "Ci", "cal", "bar",
    "mm[Hg]", "cm[H2O]", "[degF]", "[IU]", "[iU]", "[lb_av]", "[oz_av]", "[in_i]", "[ft_i]",
    "[drp]", "[pH]", "[ppm]", "[ppb]", "[mi_i]", "t", "deg", "rad", "sr", "b", "S", "F", "C", "T",
    "Wb", "H", "lm", "lx", "st", "[mesh_i]", "[HPF]", "[LPF]", "[arb'U]",
];

/// Metric prefixes (UCUM §2.2, the ones in clinical use).
const PREFIXES: &[&str] = &[
    "da", "k", "M", "G", "T", "h", "d", "c", "m", "u", "n", "p", "f",
];

/// Annotations a copy may carry: counting words with no identifying content.
const ANNOTATIONS: &[&str] = &[
    "{beats}",
    "{breaths}",
    "{cells}",
    "{copies}",
    "{count}",
    "{score}",
    "{ratio}",
    "{RBC}",
    "{WBC}",
    "{titer}",
    "{INR}",
    "{drinks}",
    "{packs}",
    "{steps}",
    "{tablets}",
    "{puffs}",
];

/// Longest unit string considered.
const MAX_UNIT_CHARS: usize = 64;
/// Longest plain integer factor (`1000`).
const MAX_FACTOR_DIGITS: usize = 4;

/// Whether `unit` is a UCUM unit built only from the atoms, prefixes and annotations above.
pub fn is_ucum(unit: &str) -> bool {
    if unit.is_empty() || unit.len() > MAX_UNIT_CHARS {
        return false;
    }
    let term = unit.strip_prefix('/').unwrap_or(unit);
    term.split(['.', '/']).all(is_component)
}

fn is_component(component: &str) -> bool {
    if component.is_empty() {
        return false;
    }
    if ANNOTATIONS.contains(&component) {
        return true;
    }
    // A unit followed by an annotation: `/min{beats}` is not common, `{beats}/min` is, but
    // UCUM allows both.
    let (unit, annotation) = match component.find('{') {
        Some(at) => component.split_at(at),
        None => (component, ""),
    };
    if !annotation.is_empty() && !ANNOTATIONS.contains(&annotation) {
        return false;
    }
    is_factor(unit) || is_annotatable(unit)
}

/// `10*3`, `10^-6`, `1000`: a power of ten with a one- or two-digit exponent, or an integer
/// of at most four digits. Longer digit runs are refused: a unit must not carry a number
/// such as an SSN.
fn is_factor(s: &str) -> bool {
    let digits =
        |t: &str, max: usize| (1..=max).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
    match s.split_once(['*', '^']) {
        Some((base, exponent)) => {
            base == "10" && digits(exponent.strip_prefix('-').unwrap_or(exponent), 2)
        }
        None => digits(s, MAX_FACTOR_DIGITS),
    }
}

/// An optional prefix, an atom, an optional signed one-digit exponent (`m2`, `s-1`).
fn is_annotatable(s: &str) -> bool {
    let (base, exponent) = match s.char_indices().last() {
        Some((at, c)) if c.is_ascii_digit() => s.split_at(at),
        _ => (s, ""),
    };
    let base = if exponent.is_empty() {
        base
    } else {
        base.strip_suffix(['-', '+']).unwrap_or(base)
    };
    let atom = |t: &str| ATOMS.contains(&t);
    let prefixed = |t: &str| {
        PREFIXES.iter().any(|prefix| {
            t.strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && atom(rest))
        })
    };
    // `1` is an atom that ends in a digit; otherwise the digit is an exponent.
    atom(s) || (!base.is_empty() && (atom(base) || prefixed(base))) || prefixed(s)
}

/// UCUM code of a time unit written as a code or an English word ("years", "yr", "mo").
/// UCUM codes are case-sensitive (`A` is the ampere, `a` the year); the English words are
/// matched in any case.
pub fn time_unit(unit: &str) -> Option<&'static str> {
    let code = match unit {
        "a" | "a_j" | "a_t" | "a_g" => Some("a"),
        "mo" | "mo_j" | "mo_g" | "mo_s" => Some("mo"),
        "wk" => Some("wk"),
        "d" => Some("d"),
        "h" => Some("h"),
        "min" => Some("min"),
        "s" => Some("s"),
        _ => None,
    };
    code.or_else(|| {
        Some(match unit.trim().to_ascii_lowercase().as_str() {
            "y" | "yr" | "yrs" | "year" | "years" => "a",
            "month" | "months" => "mo",
            "week" | "weeks" => "wk",
            "day" | "days" => "d",
            "hr" | "hrs" | "hour" | "hours" => "h",
            "minute" | "minutes" => "min",
            "sec" | "second" | "seconds" => "s",
            _ => return None,
        })
    })
}

/// Years in one of a UCUM time unit (`a`, `mo`, `wk`, `d`, `h`, `min`, `s`).
pub fn years_per_unit(ucum_time_unit: &str) -> Option<f64> {
    const DAYS_PER_YEAR: f64 = 365.25;
    Some(match ucum_time_unit {
        "a" => 1.0,
        "mo" => 1.0 / 12.0,
        "wk" => 7.0 / DAYS_PER_YEAR,
        "d" => 1.0 / DAYS_PER_YEAR,
        "h" => 1.0 / (DAYS_PER_YEAR * 24.0),
        "min" => 1.0 / (DAYS_PER_YEAR * 24.0 * 60.0),
        "s" => 1.0 / (DAYS_PER_YEAR * 24.0 * 3600.0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinical_units_pass_and_words_do_not() {
        for good in [
            "g/dL",
            "mg/dL",
            "mmol/L",
            "10*3/uL",
            "10*9/L",
            "/min",
            "{beats}/min",
            "kg/m2",
            "mm[Hg]",
            "Cel",
            "%",
            "a",
            "mo",
            "kg",
            "cm",
            "[degF]",
            "s-1",
        ] {
            assert!(is_ucum(good), "{good}");
        }
        for bad in [
            "Tom",
            "Vale",
            "Leeds",
            "Oak",
            "555-0199",
            "g/dL{Jane}",
            "",
            "kg m",
            "jane@x.org",
            "http://x",
            "MRN",
        ] {
            assert!(!is_ucum(bad), "{bad}");
        }
    }

    #[test]
    fn time_words_map_to_ucum() {
        assert_eq!(time_unit("Years"), Some("a"));
        assert_eq!(time_unit("mo"), Some("mo"));
        assert_eq!(time_unit("kg"), None);
        assert_eq!(time_unit("A"), None);
        assert_eq!(years_per_unit("mo"), Some(1.0 / 12.0));
    }
}
