//! Fixed value sets: FHIR R4's own code systems a copy may carry (each with the codes it
//! may carry), and the required bindings of `code`-typed elements such as `status`,
//! `gender` and `intent`. Values are copied from the FHIR R4 specification (4.0.1); a value
//! not listed here is dropped, so a name put in `status` never survives.

/// One of FHIR's own code systems and the codes of it a copy may carry.
#[derive(Debug, PartialEq, Eq)]
pub struct CodeSystem {
    /// The code system's canonical URI.
    pub uri: &'static str,
    /// The codes a copy may carry.
    pub codes: &'static [&'static str],
}

const fn system(uri: &'static str, codes: &'static [&'static str]) -> CodeSystem {
    CodeSystem { uri, codes }
}

/// The FHIR code systems on the allow-list.
pub static CODE_SYSTEMS: &[CodeSystem] = &[
    system(
        "http://terminology.hl7.org/CodeSystem/condition-clinical",
        &[
            "active",
            "recurrence",
            "relapse",
            "inactive",
            "remission",
            "resolved",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/condition-ver-status",
        &[
            "unconfirmed",
            "provisional",
            "differential",
            "confirmed",
            "refuted",
            "entered-in-error",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/condition-category",
        &["problem-list-item", "encounter-diagnosis"],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/observation-category",
        &[
            "social-history",
            "vital-signs",
            "imaging",
            "laboratory",
            "procedure",
            "survey",
            "exam",
            "therapy",
            "activity",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        &[
            "N", "A", "AA", "H", "HH", "L", "LL", "POS", "NEG", "IND", "HU", "LU", "U", "D", "B",
            "W",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/data-absent-reason",
        &[
            "unknown",
            "asked-unknown",
            "temp-unknown",
            "not-asked",
            "asked-declined",
            "masked",
            "not-applicable",
            "unsupported",
            "as-text",
            "error",
            "not-a-number",
            "negative-infinity",
            "positive-infinity",
            "not-performed",
            "not-permitted",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/referencerange-meaning",
        &[
            "type",
            "normal",
            "recommended",
            "treatment",
            "therapeutic",
            "pre",
            "post",
            "endocrine",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        &[
            "AMB", "EMER", "FLD", "HH", "IMP", "ACUTE", "NONAC", "OBSENC", "PRENC", "SS", "VR",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
        &[
            // Family members (FamilyMemberHistory.relationship).
            "FAMMEMB",
            "CHILD",
            "SON",
            "DAU",
            "PRN",
            "MTH",
            "FTH",
            "SIB",
            "BRO",
            "SIS",
            "SPS",
            "HUSB",
            "WIFE",
            "GRPRN",
            "GRMTH",
            "GRFTH",
            "AUNT",
            "UNCLE",
            "COUSN",
            "NEPHEW",
            "NIECE",
            "GRNDCHILD",
            "HSIB",
            "NMTH",
            "NFTH",
            // Service delivery locations (Location.type).
            "HOSP",
            "ER",
            "ICU",
            "PEDICU",
            "CARD",
            "ONCL",
            "RADDX",
            "OF",
            "PHARM",
            "COMM",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
        &["A", "D", "I", "L", "M", "P", "S", "T", "U", "W"],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
        &["NI", "UNK", "ASKU", "NAV", "NASK", "NA", "OTH", "MSK"],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/v2-0074",
        &[
            "LAB", "RAD", "PAT", "HM", "CH", "MB", "CT", "CUS", "NMR", "OTH", "SP", "XRC",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
        &["inpatient", "outpatient", "community", "discharge"],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
        &["continuous", "acute", "seasonal"],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/diagnosis-role",
        &["AD", "DD", "CC", "CM", "pre-op", "post-op", "billing"],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/location-physical-type",
        &[
            "si", "bu", "wi", "wa", "lvl", "co", "ro", "bd", "ve", "ho", "ca", "rd", "area", "jdn",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/encounter-admit-source",
        &[
            "hosp-trans",
            "emd",
            "outp",
            "born",
            "gp",
            "mp",
            "nursing",
            "psych",
            "rehab",
            "other",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/discharge-disposition",
        &[
            "home",
            "alt-home",
            "other-hcf",
            "hosp",
            "long",
            "aadvice",
            "exp",
            "psy",
            "rehab",
            "snf",
            "oth",
        ],
    ),
    system(
        "http://terminology.hl7.org/CodeSystem/organization-type",
        &[
            "prov", "dept", "team", "govt", "ins", "pay", "edu", "reli", "crs", "cg", "bus",
            "other",
        ],
    ),
    system(
        "http://hl7.org/fhir/administrative-gender",
        &["male", "female", "other", "unknown"],
    ),
];

/// The allow-listed FHIR code system with this exact URI.
pub fn code_system(uri: &str) -> Option<&'static CodeSystem> {
    CODE_SYSTEMS.iter().find(|system| system.uri == uri)
}

// Required bindings of `code`-typed elements (FHIR R4 value sets of the same names).
/// AdministrativeGender (`Patient.gender`, `Practitioner.gender`).
pub const ADMINISTRATIVE_GENDER: &[&str] = &["male", "female", "other", "unknown"];
/// ObservationStatus (`Observation.status`).
pub const OBSERVATION_STATUS: &[&str] = &[
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
];
/// EncounterStatus (`Encounter.status`).
pub const ENCOUNTER_STATUS: &[&str] = &[
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
];
/// EncounterLocationStatus (`Encounter.location.status`).
pub const ENCOUNTER_LOCATION_STATUS: &[&str] = &["planned", "active", "reserved", "completed"];
/// DiagnosticReportStatus (`DiagnosticReport.status`).
pub const DIAGNOSTIC_REPORT_STATUS: &[&str] = &[
    "registered",
    "partial",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "appended",
    "cancelled",
    "entered-in-error",
    "unknown",
];
/// medicationrequest Status (`MedicationRequest.status`).
pub const MEDICATION_REQUEST_STATUS: &[&str] = &[
    "active",
    "on-hold",
    "cancelled",
    "completed",
    "entered-in-error",
    "stopped",
    "draft",
    "unknown",
];
/// medicationRequest Intent (`MedicationRequest.intent`).
pub const MEDICATION_REQUEST_INTENT: &[&str] = &[
    "proposal",
    "plan",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
];
/// RequestPriority (`MedicationRequest.priority`).
pub const REQUEST_PRIORITY: &[&str] = &["routine", "urgent", "asap", "stat"];
/// EventStatus (`Procedure.status`).
pub const EVENT_STATUS: &[&str] = &[
    "preparation",
    "in-progress",
    "not-done",
    "on-hold",
    "stopped",
    "completed",
    "entered-in-error",
    "unknown",
];
/// FamilyHistoryStatus (`FamilyMemberHistory.status`).
pub const FAMILY_HISTORY_STATUS: &[&str] =
    &["partial", "completed", "entered-in-error", "health-unknown"];
/// SpecimenStatus (`Specimen.status`).
pub const SPECIMEN_STATUS: &[&str] = &[
    "available",
    "unavailable",
    "unsatisfactory",
    "entered-in-error",
];
/// LocationStatus (`Location.status`).
pub const LOCATION_STATUS: &[&str] = &["active", "suspended", "inactive"];
/// LocationMode (`Location.mode`).
pub const LOCATION_MODE: &[&str] = &["instance", "kind"];
/// DocumentReferenceStatus (`DocumentReference.status`).
pub const DOCUMENT_REFERENCE_STATUS: &[&str] = &["current", "superseded", "entered-in-error"];
/// CompositionStatus (`DocumentReference.docStatus`).
pub const COMPOSITION_STATUS: &[&str] = &["preliminary", "final", "amended", "entered-in-error"];
/// DocumentRelationshipType (`DocumentReference.relatesTo.code`).
pub const DOCUMENT_RELATIONSHIP: &[&str] = &["replaces", "transforms", "signs", "appends"];
/// Medication status codes (`Medication.status`).
pub const MEDICATION_STATUS: &[&str] = &["active", "inactive", "entered-in-error"];
/// BundleType (`Bundle.type`).
pub const BUNDLE_TYPE: &[&str] = &[
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];
/// QuantityComparator (`Quantity.comparator`).
pub const QUANTITY_COMPARATOR: &[&str] = &["<", "<=", ">=", ">"];
/// UnitsOfTime (`Timing.repeat.periodUnit`, `durationUnit`).
pub const UNITS_OF_TIME: &[&str] = &["s", "min", "h", "d", "wk", "mo", "a"];
/// DaysOfWeek (`Timing.repeat.dayOfWeek`).
pub const DAYS_OF_WEEK: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// EventTiming (`Timing.repeat.when`).
pub const EVENT_TIMING: &[&str] = &[
    "MORN",
    "MORN.early",
    "MORN.late",
    "NOON",
    "AFT",
    "AFT.early",
    "AFT.late",
    "EVE",
    "EVE.early",
    "EVE.late",
    "NIGHT",
    "PHS",
    "HS",
    "WAKE",
    "C",
    "CM",
    "CD",
    "CV",
    "AC",
    "ACM",
    "ACD",
    "ACV",
    "PC",
    "PCM",
    "PCD",
    "PCV",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::is_fhir_code;

    #[test]
    fn every_listed_code_has_fhir_code_syntax_and_systems_are_unique() {
        for (i, system) in CODE_SYSTEMS.iter().enumerate() {
            assert!(
                system.codes.iter().all(|c| is_fhir_code(c)),
                "{}",
                system.uri
            );
            assert!(
                CODE_SYSTEMS[..i].iter().all(|s| s.uri != system.uri),
                "{}",
                system.uri
            );
        }
    }
}
