//! The code systems a copy may carry, and each one's syntax check. A Coding survives only
//! when its `system` is one of these and its `code` passes that system's check; everything
//! else (a local system, an unknown URI, a code that fails its check) is dropped.
//!
//! The checks follow each terminology's published code format:
//! - LOINC (`http://loinc.org`): 1–6 digits without a leading zero, a dash, and the mod-10
//!   check digit of the
//!   LOINC Users' Guide (double the digits in odd positions from the right, add all digits,
//!   the check digit brings the sum to a multiple of ten).
//! - SNOMED CT (`http://snomed.info/sct`): an SCTID, 6–18 digits, no leading zero, the last
//!   digit a Verhoeff check digit.
//! - ICD-10 (`http://hl7.org/fhir/sid/icd-10`) and ICD-10-CM (`.../icd-10-cm`): a letter, a
//!   digit, a digit or letter (`I10`, `C7A`), then optionally a dot, 1–3 digits or `X`
//!   (the placeholder), and optionally ICD-10-CM's 7th character as one of the letters
//!   `A B C D G H J K P Q S` (`S72.001A`, `T14.XXXA`). No word and no run of four digits fits;
//!   the few ICD-10-CM codes whose 7th character is a digit (`O36.5930`) are dropped.
//! - RxNorm (`http://www.nlm.nih.gov/research/umls/rxnorm`): an RXCUI, a number from 1 to
//!   [`MAX_RXCUI`] without leading zero. RxNorm has no check digit, so this bound is its only
//!   check.
//! - UCUM (`http://unitsofmeasure.org`): see [`crate::units`].
//! - FHIR's own code systems (`http://terminology.hl7.org/CodeSystem/...`,
//!   `http://hl7.org/fhir/...`): only the systems listed in [`crate::value_sets`], and only
//!   their listed codes. The FHIR code syntax `[A-Za-z0-9\-.]{1,64}` alone would let a name
//!   through ("Vale" is a valid FHIR code), so these systems are enumerated.
//!
//! A syntax check cannot tell a real code from an identifier that happens to have the same
//! shape (one number in ten passes a check digit): identifiers planted under LOINC or SNOMED
//! CT with a valid check digit would survive. Local systems, where identifiers live, never do.

use crate::units;
use crate::value_sets;

/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// SNOMED CT.
pub const SNOMED_CT: &str = "http://snomed.info/sct";
/// ICD-10 (WHO).
pub const ICD_10: &str = "http://hl7.org/fhir/sid/icd-10";
/// ICD-10-CM (US clinical modification).
pub const ICD_10_CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
/// RxNorm.
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
/// Largest RxNorm concept id kept. RXCUIs are issued in sequence and stay below this today;
/// a 7-digit number above it (a phone number such as `5550142`) goes. Raising it changes
/// what survives, so it goes with a [`crate::PROFILE_VERSION`] change.
pub const MAX_RXCUI: u32 = 2_999_999;
/// UCUM, the units of measure.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// A code system a copy may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// [`LOINC`].
    Loinc,
    /// [`SNOMED_CT`].
    SnomedCt,
    /// [`ICD_10`].
    Icd10,
    /// [`ICD_10_CM`].
    Icd10Cm,
    /// [`RXNORM`].
    RxNorm,
    /// [`UCUM`].
    Ucum,
    /// One of FHIR's own code systems, with its enumerated codes.
    Fhir(&'static value_sets::CodeSystem),
}

impl System {
    /// The system for `uri`, if it is on the allow-list (exact match, no prefixes).
    pub fn from_uri(uri: &str) -> Option<System> {
        Some(match uri {
            LOINC => System::Loinc,
            SNOMED_CT => System::SnomedCt,
            ICD_10 => System::Icd10,
            ICD_10_CM => System::Icd10Cm,
            RXNORM => System::RxNorm,
            UCUM => System::Ucum,
            other => System::Fhir(value_sets::code_system(other)?),
        })
    }

    /// The canonical URI.
    pub fn uri(self) -> &'static str {
        match self {
            System::Loinc => LOINC,
            System::SnomedCt => SNOMED_CT,
            System::Icd10 => ICD_10,
            System::Icd10Cm => ICD_10_CM,
            System::RxNorm => RXNORM,
            System::Ucum => UCUM,
            System::Fhir(system) => system.uri,
        }
    }

    /// Whether `code` passes this system's syntax check (and, for FHIR systems, is listed).
    pub fn accepts(self, code: &str) -> bool {
        match self {
            System::Loinc => is_loinc(code),
            System::SnomedCt => is_sctid(code),
            System::Icd10 | System::Icd10Cm => is_icd10(code),
            System::RxNorm => is_rxcui(code),
            System::Ucum => units::is_ucum(code),
            System::Fhir(system) => is_fhir_code(code) && system.codes.contains(&code),
        }
    }
}

/// FHIR `code`/`id`-like syntax: `[A-Za-z0-9\-.]{1,64}`.
pub fn is_fhir_code(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// LOINC: `digits-checkdigit` with the LOINC mod-10 check digit.
pub fn is_loinc(code: &str) -> bool {
    let Some((body, check)) = code.split_once('-') else {
        return false;
    };
    if !(1..=6).contains(&body.len())
        || body.starts_with('0')
        || check.len() != 1
        || !body.bytes().all(|b| b.is_ascii_digit())
        || !check.bytes().all(|b| b.is_ascii_digit())
    {
        return false;
    }
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(position, b)| {
            let digit = u32::from(b - b'0');
            if position % 2 == 0 {
                let doubled = digit * 2;
                doubled / 10 + doubled % 10
            } else {
                digit
            }
        })
        .sum();
    let expected = (10 - sum % 10) % 10;
    check.bytes().next().map(|b| u32::from(b - b'0')) == Some(expected)
}

/// Verhoeff multiplication table d(j, k).
const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// Verhoeff permutation table p(i mod 8, n).
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// SNOMED CT identifier: 6–18 digits, no leading zero, valid Verhoeff check digit.
pub fn is_sctid(code: &str) -> bool {
    if !(6..=18).contains(&code.len())
        || code.starts_with('0')
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return false;
    }
    // Every digit is 0..=9 and `c` stays in 0..=9, so the lookups cannot miss; `get` keeps
    // that an argument rather than an assumption.
    let checksum = code.bytes().rev().enumerate().try_fold(0u8, |c, (i, b)| {
        let permuted = VERHOEFF_P.get(i % 8)?.get(usize::from(b - b'0'))?;
        VERHOEFF_D
            .get(usize::from(c))?
            .get(usize::from(*permuted))
            .copied()
    });
    checksum == Some(0)
}

/// ICD-10 / ICD-10-CM: `A00`, `C7A`, `E11.9`, `J45.909`, `S72.001A`, `T14.XXXA`.
pub fn is_icd10(code: &str) -> bool {
    let (category, subcategory) = match code.split_once('.') {
        Some((category, sub)) => (category, Some(sub)),
        None => (code, None),
    };
    let c = category.as_bytes();
    let category_ok = c.len() == 3
        && c.first().is_some_and(u8::is_ascii_uppercase)
        && c.get(1).is_some_and(u8::is_ascii_digit)
        && c.get(2)
            .is_some_and(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    let sub_ok = subcategory.is_none_or(|s| {
        let (body, seventh) = match s.as_bytes() {
            [body @ .., last] if s.len() == 4 => (body, Some(*last)),
            body => (body, None),
        };
        (1..=3).contains(&body.len())
            && body.iter().all(|b| b.is_ascii_digit() || *b == b'X')
            && seventh.is_none_or(|b| ICD10_CM_SEVENTH.contains(&b))
    });
    category_ok && sub_ok
}

/// ICD-10-CM 7th characters that are letters (encounter, healing, sequela, ...).
const ICD10_CM_SEVENTH: &[u8] = b"ABCDGHJKPQS";

/// RxNorm concept unique identifier: 1 to [`MAX_RXCUI`], no leading zero.
pub fn is_rxcui(code: &str) -> bool {
    (1..=7).contains(&code.len())
        && !code.starts_with('0')
        && code.bytes().all(|b| b.is_ascii_digit())
        && code.parse::<u32>().is_ok_and(|n| n <= MAX_RXCUI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loinc_check_digits_follow_the_users_guide() {
        // The Users' Guide's own example, and common codes.
        for good in ["12345-5", "718-7", "8867-4", "2339-0", "4548-4", "85354-9"] {
            assert!(is_loinc(good), "{good}");
        }
        for bad in [
            "718-6",
            "7187",
            "718-",
            "-7",
            "1234567-0",
            "71a-7",
            "718-77",
        ] {
            assert!(!is_loinc(bad), "{bad}");
        }
    }

    #[test]
    fn sctids_carry_a_verhoeff_check_digit() {
        for good in [
            "254637007",
            "44054006",
            "38341003",
            "195967001",
            "73211009",
            "138875005",
            "404684003",
            "22298006",
        ] {
            assert!(is_sctid(good), "{good}");
        }
        for bad in ["254637008", "12345", "0254637007", "2546370x7"] {
            assert!(!is_sctid(bad), "{bad}");
        }
    }

    #[test]
    fn the_verhoeff_permutations_are_powers_of_the_first() {
        for i in 1..8 {
            for (j, previous) in VERHOEFF_P[i - 1].iter().enumerate() {
                let composed = VERHOEFF_P[1][usize::from(*previous)];
                assert_eq!(VERHOEFF_P[i][j], composed, "p[{i}][{j}]");
            }
        }
    }

    #[test]
    fn icd10_and_rxnorm_shapes() {
        for good in ["I10", "E11.9", "J45.909", "C7A", "S72.001A"] {
            assert!(is_icd10(good), "{good}");
        }
        for bad in [
            "10",
            "e11.9",
            "E1",
            "E11.",
            "E11.12345",
            "Tom",
            "E11-9",
            "V4L.VALE",
            "T0M.JANE",
            "A12.3456",
            "S72.001Z",
            "S72.0A1",
        ] {
            assert!(!is_icd10(bad), "{bad}");
        }
        assert!(is_icd10("T14.XXXA") && is_icd10("S72.001A"));
        assert!(is_rxcui("6809") && is_rxcui("1049502"));
        for bad in ["0123", "123456789", "12345678", "5550142"] {
            assert!(!is_rxcui(bad), "{bad}");
        }
        assert!(!is_loinc("042317-8"));
    }

    #[test]
    fn only_exact_system_uris_are_allowed() {
        assert_eq!(System::from_uri(LOINC), Some(System::Loinc));
        for unknown in [
            "http://loinc.org/",
            "urn:oid:2.16.840.1.113883.4.1",
            "http://hospital.example/mrn",
            "http://terminology.hl7.org/CodeSystem/Tom-Vale",
        ] {
            assert_eq!(System::from_uri(unknown), None, "{unknown}");
        }
    }
}
