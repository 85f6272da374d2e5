//! UCUM units (The Unified Code for Units of Measure, unitsofmeasure.org), checked against a
//! closed list of atoms rather than UCUM's character set: "Vale" is made of legal UCUM
//! characters, so a character check would let a name through as a unit. A unit is a term of
//! components joined by `.` and `/` (an optional leading `/`); a component is an optional
//! metric prefix and an atom from a closed list (`ATOMS`) with an optional integer exponent,
//! a factor (`10*3`, `1000`; at most one per unit), or an annotation from a short list (`ANNOTATIONS`):
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
/// The plain numbers a unit may carry as a factor.
const PLAIN_FACTORS: &[&str] = &["1", "10", "100", "1000"];

/// Whether `unit` is a UCUM unit built only from the atoms, prefixes and annotations above,
/// with at most one numeric factor (`1`, `10`, `100`, `1000`, `10*n`, `10^n`): several
/// factors, or longer ones, would spell out a number (`123.45.6789`).
pub fn is_ucum(unit: &str) -> bool {
    if unit.is_empty() || unit.len() > MAX_UNIT_CHARS {
        return false;
    }
    let term = unit.strip_prefix('/').unwrap_or(unit);
    let mut factors = 0;
    term.split(['.', '/']).all(|component| {
        if is_factor(strip_annotation(component)) {
            factors += 1;
        }
        is_component(component)
    }) && factors <= 1
}

/// A component without its trailing annotation (`{beats}`), if any.
fn strip_annotation(component: &str) -> &str {
    component.find('{').map_or(component, |at| &component[..at])
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

/// `1`, `10`, `100`, `1000`, or a power of ten with a one- or two-digit exponent (`10*3`,
/// `10^-6`). Other digit runs are refused: a unit must not carry a number such as an SSN.
fn is_factor(s: &str) -> bool {
    let digits =
        |t: &str, max: usize| (1..=max).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
    match s.split_once(['*', '^']) {
        Some((base, exponent)) => {
            base == "10"
                && digits(exponent.strip_prefix('-').unwrap_or(exponent), 2)
                && !exponent.trim_start_matches('-').starts_with('0')
        }
        None => PLAIN_FACTORS.contains(&s),
    }
}

/// Whether `unit` is a pure number: every component a factor, `1` or an annotation (`1`,
/// `{count}`, `10*3`, `{cells}/10*3`). Its value may be an age, so it is kept only below 90.
pub fn is_unitless(unit: &str) -> bool {
    let term = unit.strip_prefix('/').unwrap_or(unit);
    term.split(['.', '/']).all(|component| {
        let unit = strip_annotation(component);
        unit.is_empty() || is_factor(unit)
    })
}

/// UCUM time atoms.
const TIME_ATOMS: &[&str] = &["a", "mo", "wk", "d", "h", "min", "s"];

/// Whether `unit` uses a time atom other than as a rate: a prefixed time (`ka`, `Gs`, `da`),
/// a time with an exponent (`a2`, `/a-1`), or a time multiplied by anything (`1.a`, `a.1`,
/// `{count}.a`). A plain time unit (`a`) is not hidden (the caller reads it as a time), and
/// neither is a rate: a time without prefix after `/` (`/min`, `mL/min`, `mg/d`) or with the
/// exponent `-1` (`s-1`). A time the 90-or-older category cannot read must go.
pub fn time_is_hidden(unit: &str) -> bool {
    if TIME_ATOMS.contains(&unit) {
        return false;
    }
    let (term, mut divided) = match unit.strip_prefix('/') {
        Some(rest) => (rest, true),
        None => (unit, false),
    };
    let mut rest = term;
    loop {
        let end = rest.find(['.', '/']).unwrap_or(rest.len());
        let component = strip_annotation(&rest[..end]);
        let (base, exponent) = split_exponent(component);
        let prefixed_time = PREFIXES.iter().any(|prefix| {
            base.strip_prefix(prefix)
                .is_some_and(|atom| TIME_ATOMS.contains(&atom))
        });
        if TIME_ATOMS.contains(&base) {
            let rate = (divided && exponent.is_empty()) || (!divided && exponent == "-1");
            if !rate {
                return true;
            }
        } else if prefixed_time {
            return true;
        }
        match rest[end..].chars().next() {
            Some(separator) => {
                divided = separator == '/';
                rest = &rest[end + 1..];
            }
            None => return false,
        }
    }
}

/// `s-1` → (`s`, `-1`); `m2` → (`m`, `2`); `1` → (`1`, ``).
fn split_exponent(component: &str) -> (&str, &str) {
    if component == "1" {
        return (component, "");
    }
    // Counted in bytes from the end: trailing ASCII digits are one byte each, whatever
    // precedes them (a unit like `m²` must not split inside a character).
    let trailing_digits = component
        .bytes()
        .rev()
        .take_while(u8::is_ascii_digit)
        .count();
    let digits_from = component.len().saturating_sub(trailing_digits);
    let mut at = digits_from;
    if at < component.len() && at > 0 && component[..at].ends_with(['-', '+']) {
        at -= 1;
    }
    component.split_at(at)
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
    // `1` takes neither a prefix nor an exponent (`k1`, `12` would spell digits).
    let atom = |t: &str| t != "1" && ATOMS.contains(&t);
    let prefixed = |t: &str| {
        PREFIXES.iter().any(|prefix| {
            t.strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && atom(rest))
        })
    };
    // `1` is an atom that ends in a digit; otherwise the digit is an exponent.
    s == "1" || atom(s) || (!base.is_empty() && (atom(base) || prefixed(base))) || prefixed(s)
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
    fn a_unit_carries_one_small_factor_at_most() {
        for bad in [
            "123.45.6789",
            "617.555.0142",
            "123/45/6789",
            "10.10",
            "1.10*3",
            "12",
        ] {
            assert!(!is_ucum(bad), "{bad}");
        }
        assert!(is_unitless("1") && is_unitless("{count}") && is_unitless("10*3"));
        assert!(!is_unitless("%") && !is_unitless("10*3/uL"));
    }

    #[test]
    fn time_is_plain_or_a_rate() {
        for hidden in [
            "1.a",
            "a.1",
            "{count}.a",
            "a{count}",
            "/a-1",
            "ka",
            "da",
            "Gs",
            "a2",
        ] {
            assert!(time_is_hidden(hidden), "{hidden}");
        }
        for shown in [
            "a",
            "d",
            "/min",
            "mL/min",
            "mg/kg/d",
            "s-1",
            "{beats}/min",
            "g/dL",
            "Pa",
        ] {
            assert!(!time_is_hidden(shown), "{shown}");
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
