//! Dates, dateTimes and instants keep only their year (45 CFR 164.514(b)(2)(i)(C): "all
//! elements of dates (except year) for dates directly related to an individual"), and a
//! year 90 or more years before the share year goes entirely ("all elements of dates
//! (including year) indicative of such age").

/// Years before the share year from which a year itself is dropped.
pub const OLDEST_YEARS: i32 = 90;

/// What becomes of one date-like value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Year {
    /// Keep this year (`YYYY`, a valid FHIR `date`).
    Keep(String),
    /// Not a FHIR date, dateTime or instant.
    Malformed,
    /// 90 or more years before the share year.
    TooOld,
}

/// The year of a FHIR `date` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`), `dateTime` or `instant`
/// (`YYYY-MM-DDThh:mm:ss...`), judged against `share_year`.
pub fn year_of(value: &str, share_year: i32) -> Year {
    let bytes = value.as_bytes();
    let Some(year) = bytes.get(..4) else {
        return Year::Malformed;
    };
    if !year.iter().all(u8::is_ascii_digit) {
        return Year::Malformed;
    }
    let rest = bytes.get(4..).unwrap_or_default();
    let digits = |range: std::ops::Range<usize>| {
        rest.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let shaped = match rest.len() {
        0 => true,
        3 => rest.first() == Some(&b'-') && digits(1..3),
        n => {
            n >= 6
                && rest.first() == Some(&b'-')
                && digits(1..3)
                && rest.get(3) == Some(&b'-')
                && digits(4..6)
                && (n == 6 || rest.get(6) == Some(&b'T'))
        }
    };
    if !shaped {
        return Year::Malformed;
    }
    let year: i32 = year.iter().fold(0, |acc, d| acc * 10 + i32::from(d - b'0'));
    if share_year.saturating_sub(year) >= OLDEST_YEARS {
        return Year::TooOld;
    }
    // A year after the share is no event that happened to the patient, and would let a
    // sharer write four digits of its choosing (a date field per digit group of an SSN).
    if year > share_year {
        return Year::Malformed;
    }
    Year::Keep(format!("{year:04}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_keep_the_year_and_old_years_go() {
        assert_eq!(year_of("1961-04-09", 2026), Year::Keep("1961".into()));
        assert_eq!(
            year_of("2026-11-20T08:30:00Z", 2026),
            Year::Keep("2026".into())
        );
        assert_eq!(year_of("1999-07", 2026), Year::Keep("1999".into()));
        assert_eq!(year_of("1937", 2026), Year::Keep("1937".into()));
        assert_eq!(year_of("1936-12-31", 2026), Year::TooOld);
        assert_eq!(year_of("0001", 2026), Year::TooOld);
        for bad in [
            "",
            "196",
            "19a1",
            "1961-4-9",
            "1961/04/09",
            "1961-04-09 08:00",
            "April 1961",
        ] {
            assert_eq!(year_of(bad, 2026), Year::Malformed, "{bad}");
        }
    }
}
