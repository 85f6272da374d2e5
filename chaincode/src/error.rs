//! Typed errors with reasons. A [`ChaincodeError::Denied`] is a rule saying no; it is
//! audited on the patient's record. Every other error is a malformed or impossible request
//! and leaves no trace.

use medledger_proto::v1::{AuditAction, Right};

use crate::stub::{Role, StubError};

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("only the patient who owns this record may do that")]
    NotOwner,
    #[error("this needs the role {needed}; the caller is {actual}")]
    WrongRole { needed: &'static str, actual: Role },
    #[error("no permission to {} {category}", right_word(*right))]
    NoPermission { right: Right, category: String },
    #[error("the permission window has not started yet (from {from})")]
    WindowNotStarted { from: i64 },
    #[error("the permission window has ended (until {until})")]
    WindowExpired { until: i64 },
    #[error("the permission {permission_id} has been revoked")]
    Revoked { permission_id: String },
    #[error("emergency access needs the certificate attribute emergency=true, valid now")]
    NotEmergencyClinician,
    #[error("this permission requires the shared item to be anonymized")]
    AnonymizationRequired,
    #[error("only the researcher who registered study {0} may see it")]
    NotStudyOwner(String),
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
