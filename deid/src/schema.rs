//! The allow-list: for each supported resource type, the elements a copy may carry and the
//! FHIR type each is read as. Element names are FHIR R4's (4.0.1); a choice element `x[x]`
//! appears once per allowed type (`valueQuantity`, `valueCodeableConcept`, ...). Anything
//! not listed — `text`, `note`, `identifier`, `name`, `telecom`, `photo`, `extension`,
//! `meta`, strings and markdown, Attachments, element ids — is dropped, because it is not
//! listed, not because it was recognized as dangerous.

use crate::value_sets as vs;

/// How an element's value is read and what of it survives.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A `code` element bound to a fixed value set: survives only with a listed value.
    Code(&'static [&'static str]),
    /// A Coding: allowed system, valid code, shipped display.
    Coding,
    /// A CodeableConcept: its surviving Codings, no `text`.
    CodeableConcept,
    /// Quantity, Age, Duration: value, comparator and a UCUM unit; 90+ years is a category.
    Quantity,
    /// An Age (onsetAge, ageAge, ...): as Quantity, but only in a plain time unit (`a`, `mo`,
    /// `wk`, `d`, `h`, `min`, `s` or their English words); anything else goes.
    Age,
    /// SimpleQuantity: as Quantity, without a comparator.
    SimpleQuantity,
    /// A Range of SimpleQuantities; 90+ years makes it "90 years or more".
    Range,
    /// A Range that is an age (onsetRange, ageRange, referenceRange.age, ...): as Range, with
    /// both bounds in a plain time unit, else it goes.
    AgeRange,
    /// A Ratio of two Quantities; a Ratio missing either goes.
    Ratio,
    /// date, dateTime, instant: the year.
    Date,
    /// A Period: start and end, each a year.
    Period,
    /// A boolean, as it is.
    Boolean,
    /// integer, positiveInt, unsignedInt in -9999..=9999 (a small count, not a number that
    /// could identify).
    Integer,
    /// `multipleBirthInteger`: a birth order in 0..=9.
    BirthOrder,
    /// An integer result (`valueInteger`) in -9999..=89: without a unit it may be an age.
    IntegerResult,
    /// decimal in -9999..=9999.
    Decimal,
    /// A Reference: only `reference`, with its id replaced.
    Reference,
    /// A person's Address: state and ZIP3 (when the profile keeps ZIP3).
    Address,
    /// A place's Address (Location): the state only.
    StateOnly,
    /// Bundle.entry.fullUrl: a `urn:uuid:` with its id replaced; other URLs go.
    FullUrl,
    /// A resource (Bundle.entry.resource, `contained`), read against its own table.
    Resource,
    /// A BackboneElement or complex datatype read against a nested table.
    Backbone(&'static [Field]),
}

/// One allowed element.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The FHIR R4 element name (a choice type spelled out: `valueQuantity`).
    pub name: &'static str,
    /// How its value is read.
    pub kind: Kind,
    /// Whether the element repeats (a JSON array in FHIR JSON).
    pub many: bool,
}

const fn one(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        many: false,
    }
}

const fn many(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        many: true,
    }
}

use Kind::*;

/// One supported resource type and its elements (besides `resourceType`, `id`, replaced,
/// and `contained`, read as resources).
#[derive(Debug)]
pub struct ResourceSchema {
    /// The FHIR R4 resource type.
    pub resource_type: &'static str,
    /// Its allowed elements.
    pub fields: &'static [Field],
}

const fn resource(resource_type: &'static str, fields: &'static [Field]) -> ResourceSchema {
    ResourceSchema {
        resource_type,
        fields,
    }
}

/// The supported resource types, in the order an error lists them.
pub const SUPPORTED: &[&str] = &[
    "Bundle",
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "DiagnosticReport",
    "MedicationRequest",
    "Medication",
    "Procedure",
    "FamilyMemberHistory",
    "Specimen",
    "Location",
    "Practitioner",
    "Organization",
    "DocumentReference",
];

/// Resource types that are nothing but content a copy may not carry (45 CFR
/// 164.514(b)(2)(i)(Q), full-face photographs; scans and documents): dropped whole inside a
/// Bundle or `contained`, refused alone.
pub const DROPPED: &[&str] = &["Binary", "Media"];

static RESOURCES: &[ResourceSchema] = &[
    resource("Bundle", BUNDLE),
    resource("Patient", PATIENT),
    resource("Observation", OBSERVATION),
    resource("Condition", CONDITION),
    resource("Encounter", ENCOUNTER),
    resource("DiagnosticReport", DIAGNOSTIC_REPORT),
    resource("MedicationRequest", MEDICATION_REQUEST),
    resource("Medication", MEDICATION),
    resource("Procedure", PROCEDURE),
    resource("FamilyMemberHistory", FAMILY_MEMBER_HISTORY),
    resource("Specimen", SPECIMEN),
    resource("Location", LOCATION),
    resource("Practitioner", PRACTITIONER),
    resource("Organization", ORGANIZATION),
    resource("DocumentReference", DOCUMENT_REFERENCE),
];

/// The table for `resource_type`, if supported.
pub fn resource_schema(resource_type: &str) -> Option<&'static ResourceSchema> {
    RESOURCES.iter().find(|r| r.resource_type == resource_type)
}

/// Resource types a reference may name (`Type/id`): FHIR R4 types a clinical record refers
/// to. A reference to any other "type" is dropped, since the type is then free text.
pub const REFERENCE_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Organization",
    "Location",
    "Encounter",
    "EpisodeOfCare",
    "Observation",
    "Condition",
    "DiagnosticReport",
    "Procedure",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "Medication",
    "Specimen",
    "FamilyMemberHistory",
    "DocumentReference",
    "ServiceRequest",
    "ImagingStudy",
    "Media",
    "Device",
    "Group",
    "CarePlan",
    "CareTeam",
    "Immunization",
    "AllergyIntolerance",
    "Goal",
    "Composition",
    "QuestionnaireResponse",
    "Substance",
    "BodyStructure",
    "MolecularSequence",
    "RiskAssessment",
    "ClinicalImpression",
    "NutritionOrder",
];

const BUNDLE: &[Field] = &[
    one("type", Code(vs::BUNDLE_TYPE)),
    one("timestamp", Date),
    many("entry", Backbone(BUNDLE_ENTRY)),
];
const BUNDLE_ENTRY: &[Field] = &[one("fullUrl", FullUrl), one("resource", Resource)];

const PATIENT: &[Field] = &[
    one("active", Boolean),
    one("gender", Code(vs::ADMINISTRATIVE_GENDER)),
    one("birthDate", Date),
    one("deceasedBoolean", Boolean),
    one("deceasedDateTime", Date),
    many("address", Address),
    one("maritalStatus", CodeableConcept),
    one("multipleBirthBoolean", Boolean),
    one("multipleBirthInteger", BirthOrder),
    many("generalPractitioner", Reference),
    one("managingOrganization", Reference),
];

const REFERENCE_RANGE: &[Field] = &[
    one("low", SimpleQuantity),
    one("high", SimpleQuantity),
    one("type", CodeableConcept),
    many("appliesTo", CodeableConcept),
    one("age", AgeRange),
];

const OBSERVATION: &[Field] = &[
    one("status", Code(vs::OBSERVATION_STATUS)),
    many("category", CodeableConcept),
    one("code", CodeableConcept),
    one("subject", Reference),
    many("focus", Reference),
    one("encounter", Reference),
    many("basedOn", Reference),
    many("partOf", Reference),
    one("effectiveDateTime", Date),
    one("effectivePeriod", Period),
    one("effectiveInstant", Date),
    one("issued", Date),
    many("performer", Reference),
    one("bodySite", CodeableConcept),
    one("method", CodeableConcept),
    one("specimen", Reference),
    many("hasMember", Reference),
    many("derivedFrom", Reference),
    many("component", Backbone(OBSERVATION_COMPONENT)),
    // value[x] and its companions, as in the component below.
    one("valueQuantity", Quantity),
    one("valueCodeableConcept", CodeableConcept),
    one("valueBoolean", Boolean),
    one("valueInteger", IntegerResult),
    one("valueRange", Range),
    one("valueRatio", Ratio),
    one("valueDateTime", Date),
    one("valuePeriod", Period),
    one("dataAbsentReason", CodeableConcept),
    many("interpretation", CodeableConcept),
    many("referenceRange", Backbone(REFERENCE_RANGE)),
];

const OBSERVATION_COMPONENT: &[Field] = &[
    one("code", CodeableConcept),
    one("valueQuantity", Quantity),
    one("valueCodeableConcept", CodeableConcept),
    one("valueBoolean", Boolean),
    one("valueInteger", IntegerResult),
    one("valueRange", Range),
    one("valueRatio", Ratio),
    one("valueDateTime", Date),
    one("valuePeriod", Period),
    one("dataAbsentReason", CodeableConcept),
    many("interpretation", CodeableConcept),
    many("referenceRange", Backbone(REFERENCE_RANGE)),
];

const CONDITION: &[Field] = &[
    one("clinicalStatus", CodeableConcept),
    one("verificationStatus", CodeableConcept),
    many("category", CodeableConcept),
    one("severity", CodeableConcept),
    one("code", CodeableConcept),
    many("bodySite", CodeableConcept),
    one("subject", Reference),
    one("encounter", Reference),
    one("onsetDateTime", Date),
    one("onsetAge", Age),
    one("onsetPeriod", Period),
    one("onsetRange", AgeRange),
    one("abatementDateTime", Date),
    one("abatementAge", Age),
    one("abatementPeriod", Period),
    one("abatementRange", AgeRange),
    one("abatementBoolean", Boolean),
    one("recordedDate", Date),
    one("recorder", Reference),
    one("asserter", Reference),
    many("stage", Backbone(CONDITION_STAGE)),
    many("evidence", Backbone(CONDITION_EVIDENCE)),
];
const CONDITION_STAGE: &[Field] = &[
    one("summary", CodeableConcept),
    many("assessment", Reference),
    one("type", CodeableConcept),
];
const CONDITION_EVIDENCE: &[Field] = &[many("code", CodeableConcept), many("detail", Reference)];

const ENCOUNTER: &[Field] = &[
    one("status", Code(vs::ENCOUNTER_STATUS)),
    one("class", Coding),
    many("type", CodeableConcept),
    one("serviceType", CodeableConcept),
    one("priority", CodeableConcept),
    one("subject", Reference),
    many("episodeOfCare", Reference),
    many("basedOn", Reference),
    many("participant", Backbone(ENCOUNTER_PARTICIPANT)),
    one("period", Period),
    one("length", Quantity),
    many("reasonCode", CodeableConcept),
    many("reasonReference", Reference),
    many("diagnosis", Backbone(ENCOUNTER_DIAGNOSIS)),
    one("hospitalization", Backbone(ENCOUNTER_HOSPITALIZATION)),
    many("location", Backbone(ENCOUNTER_LOCATION)),
    one("serviceProvider", Reference),
    one("partOf", Reference),
];
const ENCOUNTER_PARTICIPANT: &[Field] = &[
    many("type", CodeableConcept),
    one("period", Period),
    one("individual", Reference),
];
const ENCOUNTER_DIAGNOSIS: &[Field] = &[
    one("condition", Reference),
    one("use", CodeableConcept),
    one("rank", Integer),
];
const ENCOUNTER_HOSPITALIZATION: &[Field] = &[
    one("admitSource", CodeableConcept),
    one("reAdmission", CodeableConcept),
    many("dietPreference", CodeableConcept),
    many("specialArrangement", CodeableConcept),
    one("dischargeDisposition", CodeableConcept),
];
const ENCOUNTER_LOCATION: &[Field] = &[
    one("location", Reference),
    one("status", Code(vs::ENCOUNTER_LOCATION_STATUS)),
    one("physicalType", CodeableConcept),
    one("period", Period),
];

const DIAGNOSTIC_REPORT: &[Field] = &[
    many("basedOn", Reference),
    one("status", Code(vs::DIAGNOSTIC_REPORT_STATUS)),
    many("category", CodeableConcept),
    one("code", CodeableConcept),
    one("subject", Reference),
    one("encounter", Reference),
    one("effectiveDateTime", Date),
    one("effectivePeriod", Period),
    one("issued", Date),
    many("performer", Reference),
    many("resultsInterpreter", Reference),
    many("specimen", Reference),
    many("result", Reference),
    many("conclusionCode", CodeableConcept),
];

const MEDICATION_REQUEST: &[Field] = &[
    one("status", Code(vs::MEDICATION_REQUEST_STATUS)),
    one("statusReason", CodeableConcept),
    one("intent", Code(vs::MEDICATION_REQUEST_INTENT)),
    many("category", CodeableConcept),
    one("priority", Code(vs::REQUEST_PRIORITY)),
    one("doNotPerform", Boolean),
    one("reportedBoolean", Boolean),
    one("medicationCodeableConcept", CodeableConcept),
    one("medicationReference", Reference),
    one("subject", Reference),
    one("encounter", Reference),
    one("authoredOn", Date),
    one("requester", Reference),
    one("performer", Reference),
    many("reasonCode", CodeableConcept),
    many("reasonReference", Reference),
    many("basedOn", Reference),
    one("courseOfTherapyType", CodeableConcept),
    many("dosageInstruction", Backbone(DOSAGE)),
    one("dispenseRequest", Backbone(DISPENSE_REQUEST)),
    one("substitution", Backbone(SUBSTITUTION)),
    one("priorPrescription", Reference),
];
const DOSAGE: &[Field] = &[
    one("sequence", Integer),
    many("additionalInstruction", CodeableConcept),
    one("timing", Backbone(TIMING)),
    one("asNeededBoolean", Boolean),
    one("asNeededCodeableConcept", CodeableConcept),
    one("site", CodeableConcept),
    one("route", CodeableConcept),
    one("method", CodeableConcept),
    many("doseAndRate", Backbone(DOSE_AND_RATE)),
    one("maxDosePerPeriod", Ratio),
    one("maxDosePerAdministration", SimpleQuantity),
];
const TIMING: &[Field] = &[
    one("repeat", Backbone(TIMING_REPEAT)),
    one("code", CodeableConcept),
];
const TIMING_REPEAT: &[Field] = &[
    one("boundsDuration", Quantity),
    one("boundsRange", Range),
    one("boundsPeriod", Period),
    one("count", Integer),
    one("countMax", Integer),
    one("duration", Decimal),
    one("durationMax", Decimal),
    one("durationUnit", Code(vs::UNITS_OF_TIME)),
    one("frequency", Integer),
    one("frequencyMax", Integer),
    one("period", Decimal),
    one("periodMax", Decimal),
    one("periodUnit", Code(vs::UNITS_OF_TIME)),
    many("dayOfWeek", Code(vs::DAYS_OF_WEEK)),
    many("when", Code(vs::EVENT_TIMING)),
    one("offset", Integer),
];
const DOSE_AND_RATE: &[Field] = &[
    one("type", CodeableConcept),
    one("doseRange", Range),
    one("doseQuantity", SimpleQuantity),
    one("rateRatio", Ratio),
    one("rateRange", Range),
    one("rateQuantity", SimpleQuantity),
];
const DISPENSE_REQUEST: &[Field] = &[
    one("validityPeriod", Period),
    one("numberOfRepeatsAllowed", Integer),
    one("quantity", SimpleQuantity),
    one("expectedSupplyDuration", Quantity),
];
const SUBSTITUTION: &[Field] = &[
    one("allowedBoolean", Boolean),
    one("allowedCodeableConcept", CodeableConcept),
    one("reason", CodeableConcept),
];

const MEDICATION: &[Field] = &[
    one("code", CodeableConcept),
    one("status", Code(vs::MEDICATION_STATUS)),
    one("form", CodeableConcept),
    one("amount", Ratio),
    many("ingredient", Backbone(MEDICATION_INGREDIENT)),
];
const MEDICATION_INGREDIENT: &[Field] = &[
    one("itemCodeableConcept", CodeableConcept),
    one("itemReference", Reference),
    one("isActive", Boolean),
    one("strength", Ratio),
];

const PROCEDURE: &[Field] = &[
    many("basedOn", Reference),
    many("partOf", Reference),
    one("status", Code(vs::EVENT_STATUS)),
    one("statusReason", CodeableConcept),
    one("category", CodeableConcept),
    one("code", CodeableConcept),
    one("subject", Reference),
    one("encounter", Reference),
    one("performedDateTime", Date),
    one("performedPeriod", Period),
    one("performedAge", Age),
    one("performedRange", AgeRange),
    one("recorder", Reference),
    one("asserter", Reference),
    many("performer", Backbone(PROCEDURE_PERFORMER)),
    one("location", Reference),
    many("reasonCode", CodeableConcept),
    many("reasonReference", Reference),
    many("bodySite", CodeableConcept),
    one("outcome", CodeableConcept),
    many("complication", CodeableConcept),
    many("followUp", CodeableConcept),
    many("usedCode", CodeableConcept),
];
const PROCEDURE_PERFORMER: &[Field] = &[
    one("function", CodeableConcept),
    one("actor", Reference),
    one("onBehalfOf", Reference),
];

const FAMILY_MEMBER_HISTORY: &[Field] = &[
    one("status", Code(vs::FAMILY_HISTORY_STATUS)),
    one("dataAbsentReason", CodeableConcept),
    one("patient", Reference),
    one("date", Date),
    one("relationship", CodeableConcept),
    one("sex", CodeableConcept),
    one("bornDate", Date),
    one("ageAge", Age),
    one("ageRange", AgeRange),
    one("estimatedAge", Boolean),
    one("deceasedBoolean", Boolean),
    one("deceasedAge", Age),
    one("deceasedRange", AgeRange),
    one("deceasedDate", Date),
    many("reasonCode", CodeableConcept),
    many("reasonReference", Reference),
    many("condition", Backbone(FAMILY_CONDITION)),
];
const FAMILY_CONDITION: &[Field] = &[
    one("code", CodeableConcept),
    one("outcome", CodeableConcept),
    one("contributedToDeath", Boolean),
    one("onsetAge", Age),
    one("onsetRange", AgeRange),
    one("onsetPeriod", Period),
];

const SPECIMEN: &[Field] = &[
    one("status", Code(vs::SPECIMEN_STATUS)),
    one("type", CodeableConcept),
    one("subject", Reference),
    one("receivedTime", Date),
    many("parent", Reference),
    many("request", Reference),
    one("collection", Backbone(SPECIMEN_COLLECTION)),
    many("processing", Backbone(SPECIMEN_PROCESSING)),
    many("container", Backbone(SPECIMEN_CONTAINER)),
    many("condition", CodeableConcept),
];
const SPECIMEN_COLLECTION: &[Field] = &[
    one("collector", Reference),
    one("collectedDateTime", Date),
    one("collectedPeriod", Period),
    one("duration", Quantity),
    one("quantity", SimpleQuantity),
    one("method", CodeableConcept),
    one("bodySite", CodeableConcept),
    one("fastingStatusCodeableConcept", CodeableConcept),
    one("fastingStatusDuration", Quantity),
];
const SPECIMEN_PROCESSING: &[Field] = &[
    one("procedure", CodeableConcept),
    one("timeDateTime", Date),
    one("timePeriod", Period),
];
const SPECIMEN_CONTAINER: &[Field] = &[
    one("type", CodeableConcept),
    one("capacity", SimpleQuantity),
    one("specimenQuantity", SimpleQuantity),
];

const LOCATION: &[Field] = &[
    one("status", Code(vs::LOCATION_STATUS)),
    one("operationalStatus", Coding),
    one("mode", Code(vs::LOCATION_MODE)),
    many("type", CodeableConcept),
    one("address", StateOnly),
    one("physicalType", CodeableConcept),
];

const PRACTITIONER: &[Field] = &[one("gender", Code(vs::ADMINISTRATIVE_GENDER))];

const ORGANIZATION: &[Field] = &[many("type", CodeableConcept)];

const DOCUMENT_REFERENCE: &[Field] = &[
    one("status", Code(vs::DOCUMENT_REFERENCE_STATUS)),
    one("docStatus", Code(vs::COMPOSITION_STATUS)),
    one("type", CodeableConcept),
    many("category", CodeableConcept),
    one("subject", Reference),
    one("date", Date),
    many("author", Reference),
    one("authenticator", Reference),
    one("custodian", Reference),
    many("relatesTo", Backbone(DOCUMENT_RELATES_TO)),
    many("securityLabel", CodeableConcept),
    one("context", Backbone(DOCUMENT_CONTEXT)),
];
const DOCUMENT_RELATES_TO: &[Field] = &[
    one("code", Code(vs::DOCUMENT_RELATIONSHIP)),
    one("target", Reference),
];
const DOCUMENT_CONTEXT: &[Field] = &[
    many("encounter", Reference),
    many("event", CodeableConcept),
    one("period", Period),
    one("facilityType", CodeableConcept),
    one("practiceSetting", CodeableConcept),
    one("sourcePatientInfo", Reference),
    many("related", Reference),
];

/// The elements of a Period.
pub const PERIOD: &[Field] = &[one("start", Date), one("end", Date)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_type_has_one_table_and_no_table_repeats_a_name() {
        assert_eq!(SUPPORTED.len(), RESOURCES.len());
        for name in SUPPORTED {
            let schema = resource_schema(name).expect("table");
            check_unique(schema.fields, name);
        }
    }

    fn check_unique(fields: &[Field], context: &str) {
        for (i, field) in fields.iter().enumerate() {
            assert!(
                fields[..i].iter().all(|f| f.name != field.name),
                "{context}.{} twice",
                field.name
            );
            assert!(!matches!(
                field.name,
                "id" | "contained" | "resourceType" | "extension"
            ));
            if let Kind::Backbone(nested) = field.kind {
                check_unique(nested, &format!("{context}.{}", field.name));
            }
        }
    }
}
