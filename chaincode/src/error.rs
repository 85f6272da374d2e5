//! Typed errors with reasons. A [`ChaincodeError::Denied`] is a rule saying no; it is
//! audited on the patient's record. Every other error is a malformed or impossible request
//! and leaves no trace.

use medledger_proto::v1::{AuditAction, DenialReason, Denied, Right};

use crate::stub::{Role, StubError};

/// Why a caller was refused. Recorded in codes ([`Denial::to_proto`]); its words come from
/// [`describe_denial`], so rewording them changes no consensus data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    NotOwner,
    WrongRole { needed: &'static str, actual: Role },
    NoPermission { right: Right, category: String },
    WindowNotStarted { from: i64 },
    WindowExpired { until: i64 },
    Revoked { permission_id: String },
    NotEmergencyClinician,
    AnonymizationRequired,
    NotStudyOwner(String),
}

impl Denial {
    /// The denial as consensus data: its code and the facts it names.
    pub fn to_proto(&self) -> Denied {
        let code = |reason: DenialReason| Denied {
            reason: reason as i32,
            ..Denied::default()
        };
        match self {
            Denial::NotOwner => code(DenialReason::NotOwner),
            Denial::WrongRole { needed, actual } => Denied {
                needed_role: (*needed).to_string(),
                actual_role: actual.as_str().to_string(),
                ..code(DenialReason::WrongRole)
            },
            Denial::NoPermission { right, category } => Denied {
                right: *right as i32,
                category: category.clone(),
                ..code(DenialReason::NoPermission)
            },
            Denial::WindowNotStarted { from } => Denied {
                from: *from,
                ..code(DenialReason::WindowNotStarted)
            },
            Denial::WindowExpired { until } => Denied {
                until: *until,
                ..code(DenialReason::WindowExpired)
            },
            Denial::Revoked { permission_id } => Denied {
                permission_id: permission_id.clone(),
                ..code(DenialReason::Revoked)
            },
            Denial::NotEmergencyClinician => code(DenialReason::NotEmergencyClinician),
            Denial::AnonymizationRequired => code(DenialReason::AnonymizationRequired),
            Denial::NotStudyOwner(study) => Denied {
                study_id: study.clone(),
                ..code(DenialReason::NotStudyOwner)
            },
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe_denial(&self.to_proto()))
    }
}

impl std::error::Error for Denial {}

/// The words for a recorded denial (`AuditEntry.denied`, `CheckAccessResult.denied`), for
/// people: the only place they are written.
pub fn describe_denial(denied: &Denied) -> String {
    let right = Right::try_from(denied.right).unwrap_or(Right::Unspecified);
    match DenialReason::try_from(denied.reason).unwrap_or(DenialReason::Unspecified) {
        DenialReason::NotOwner => "only the patient who owns this record may do that".into(),
        DenialReason::WrongRole => format!(
            "this needs the role {}; the caller is {}",
            denied.needed_role, denied.actual_role
        ),
        DenialReason::NoPermission => {
            format!("no permission to {} {}", right_word(right), denied.category)
        }
        DenialReason::WindowNotStarted => format!(
            "the permission window has not started yet (from {})",
            denied.from
        ),
        DenialReason::WindowExpired => {
            format!("the permission window has ended (until {})", denied.until)
        }
        DenialReason::Revoked => {
            format!("the permission {} has been revoked", denied.permission_id)
        }
        DenialReason::NotEmergencyClinician => {
            "emergency access needs the certificate attribute emergency=true, valid now".into()
        }
        DenialReason::AnonymizationRequired => {
            "this permission requires the shared item to be anonymized".into()
        }
        DenialReason::NotStudyOwner => format!(
            "only the researcher who registered study {} may see it",
            denied.study_id
        ),
        DenialReason::Unspecified => "denied".into(),
    }
}

fn right_word(right: Right) -> &'static str {
    match right {
        Right::Read => "read",
        Right::Write => "write",
        Right::Share => "share",
        Right::Unspecified => "use",
    }
}

/// Where a denial is recorded: the patient's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    pub pseudonym: Vec<u8>,
    pub action: AuditAction,
    pub category: String,
    pub item: String,
    pub study_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaincodeError {
    #[error("denied: {reason}")]
    Denied {
        reason: Denial,
        /// Set when the attempt concerns an existing patient record: it is audited there.
        audit: Option<Box<AuditContext>>,
    },
    #[error("invalid {field}: {why}")]
    InvalidArgument { field: &'static str, why: String },
    #[error("unknown function {0:?}")]
    UnknownFunction(String),
    #[error("{0:?} is a query; submit it as a query, not a transaction")]
    NotATransaction(String),
    #[error("no patient has this pseudonym")]
    UnknownPatient,
    #[error("this patient's record has been erased")]
    PatientErased,
    #[error("unknown {what} {id:?}")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id:?} already exists")]
    AlreadyExists { what: &'static str, id: String },
    #[error("the permission {0} is already revoked")]
    AlreadyRevoked(String),
    #[error(transparent)]
    Stub(#[from] StubError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// A counter or time kept in state would leave its type's range.
    #[error("the {0} would overflow")]
    Overflow(&'static str),
}

impl ChaincodeError {
    pub fn denied(reason: Denial) -> Self {
        ChaincodeError::Denied {
            reason,
            audit: None,
        }
    }

    pub fn invalid(field: &'static str, why: impl ToString) -> Self {
        ChaincodeError::InvalidArgument {
            field,
            why: why.to_string(),
        }
    }

    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        ChaincodeError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// The denial reason, if this is a denial.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            ChaincodeError::Denied { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Attaches where to audit a denial (no effect on other errors).
    pub fn audited_at(self, context: AuditContext) -> Self {
        match self {
            ChaincodeError::Denied { reason, .. } => ChaincodeError::Denied {
                reason,
                audit: Some(Box::new(context)),
            },
            other => other,
        }
    }
}
