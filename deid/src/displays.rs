//! The display texts a copy may carry. A Coding's `display` is never copied from the input
//! (it is free text, and a display can hold anything); it is rendered from this table, and
//! a code that is not in it goes out without a display. The table holds common codes of the
//! allow-listed systems; extending it is safe as long as every entry is the terminology's own
//! display text.

use crate::codes::{ICD_10_CM, LOINC, RXNORM, SNOMED_CT};

/// (system URI, code, display).
pub static DISPLAYS: &[(&str, &str, &str)] = &[
    (LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood"),
    (LOINC, "8867-4", "Heart rate"),
    (LOINC, "8480-6", "Systolic blood pressure"),
    (LOINC, "8462-4", "Diastolic blood pressure"),
    (
        LOINC,
        "85354-9",
        "Blood pressure panel with all children optional",
    ),
    (LOINC, "29463-7", "Body weight"),
    (LOINC, "8302-2", "Body height"),
    (LOINC, "39156-5", "Body mass index (BMI) [Ratio]"),
    (LOINC, "8310-5", "Body temperature"),
    (LOINC, "9279-1", "Respiratory rate"),
    (LOINC, "2339-0", "Glucose [Mass/volume] in Blood"),
    (LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
    (
        LOINC,
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
    ),
    (
        LOINC,
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
    ),
    (
        LOINC,
        "6690-2",
        "Leukocytes [#/volume] in Blood by Automated count",
    ),
    (
        LOINC,
        "777-3",
        "Platelets [#/volume] in Blood by Automated count",
    ),
    (LOINC, "30525-0", "Age"),
    (LOINC, "72166-2", "Tobacco smoking status"),
    (LOINC, "11506-3", "Progress note"),
    (LOINC, "34117-2", "History and physical note"),
    (LOINC, "18842-5", "Discharge summary"),
    (LOINC, "11502-2", "Laboratory report"),
    (LOINC, "58410-2", "CBC panel - Blood by Automated count"),
    (SNOMED_CT, "254637007", "Non-small cell lung cancer"),
    (SNOMED_CT, "44054006", "Diabetes mellitus type 2"),
    (SNOMED_CT, "73211009", "Diabetes mellitus"),
    (SNOMED_CT, "38341003", "Hypertensive disorder"),
    (SNOMED_CT, "195967001", "Asthma"),
    (SNOMED_CT, "22298006", "Myocardial infarction"),
    (SNOMED_CT, "84114007", "Heart failure"),
    (SNOMED_CT, "49436004", "Atrial fibrillation"),
    (SNOMED_CT, "80146002", "Appendectomy"),
    (SNOMED_CT, "119297000", "Blood specimen"),
    (SNOMED_CT, "266919005", "Never smoked tobacco"),
    (SNOMED_CT, "8517006", "Ex-smoker"),
    (ICD_10_CM, "I10", "Essential (primary) hypertension"),
    (
        ICD_10_CM,
        "E11.9",
        "Type 2 diabetes mellitus without complications",
    ),
    (ICD_10_CM, "J45.909", "Unspecified asthma, uncomplicated"),
    (RXNORM, "6809", "metformin"),
    (RXNORM, "29046", "lisinopril"),
    (RXNORM, "17767", "amlodipine"),
    (RXNORM, "83367", "atorvastatin"),
    (RXNORM, "1191", "aspirin"),
    (RXNORM, "161", "acetaminophen"),
    (RXNORM, "5640", "ibuprofen"),
];

/// The shipped display of `code` in `system`, if the table has one.
pub fn display(system: &str, code: &str) -> Option<&'static str> {
    DISPLAYS
        .iter()
        .find(|(s, c, _)| *s == system && *c == code)
        .map(|(_, _, display)| *display)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::System;

    #[test]
    fn every_shipped_code_passes_its_systems_check() {
        for (system, code, _) in DISPLAYS {
            let parsed = System::from_uri(system).expect("allowed system");
            assert!(parsed.accepts(code), "{system} {code}");
        }
    }
}
