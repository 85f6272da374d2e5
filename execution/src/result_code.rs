//! The code a transaction's outcome is recorded with (`TxResult.code`, `v1::ResultCode`):
//! consensus data, decided here for every refusal by validation and every chaincode error,
//! identically on every peer and in the auditor. The numbers are gRPC's status codes, so the
//! client API answers with the same code (`tonic::Code::from_i32(code as i32)`), but no
//! transport library decides them.

use medledger_chaincode::{ChaincodeError, stub::StubError};
use medledger_proto::v1::{ResultCode, TxStatus};

/// The code of an envelope refused by validation (at submission, or recorded in a block).
pub fn refusal_code(status: TxStatus) -> ResultCode {
    match status {
        TxStatus::BadSignature | TxStatus::BadCertificate => ResultCode::Unauthenticated,
        TxStatus::CertificateRevoked | TxStatus::CertificateExpired => ResultCode::PermissionDenied,
        TxStatus::DuplicateTxId | TxStatus::DuplicateEnvelope => ResultCode::AlreadyExists,
        TxStatus::BadRevocation
        | TxStatus::BadConfigUpdate
        | TxStatus::PrivateDataUnacknowledged => ResultCode::FailedPrecondition,
        TxStatus::TooLarge => ResultCode::OutOfRange,
        TxStatus::UnknownFunction => ResultCode::Unimplemented,
        TxStatus::Expired => ResultCode::DeadlineExceeded,
        _ => ResultCode::InvalidArgument,
    }
}

/// The code of a chaincode error (on a query, or recorded in a block).
pub fn chaincode_code(e: &ChaincodeError) -> ResultCode {
    match e {
        ChaincodeError::Denied { .. } => ResultCode::PermissionDenied,
        ChaincodeError::InvalidArgument { .. } | ChaincodeError::NotATransaction(_) => {
            ResultCode::InvalidArgument
        }
        ChaincodeError::UnknownFunction(_) => ResultCode::Unimplemented,
        ChaincodeError::UnknownPatient | ChaincodeError::NotFound { .. } => ResultCode::NotFound,
        ChaincodeError::PatientErased => ResultCode::FailedPrecondition,
        ChaincodeError::AlreadyExists { .. } | ChaincodeError::AlreadyRevoked(_) => {
            ResultCode::AlreadyExists
        }
        ChaincodeError::Stub(StubError::OverBudget(_)) => ResultCode::ResourceExhausted,
        // Queries only (a transaction never reads a private value: it gets
        // `PrivateOnlyInQueries`, INTERNAL, on every peer alike).
        ChaincodeError::Stub(StubError::PrivateValueUnavailable) => ResultCode::Unavailable,
        ChaincodeError::Overflow(_) => ResultCode::OutOfRange,
        ChaincodeError::Stub(_) | ChaincodeError::Corrupt(_) => ResultCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ledger format 1 recorded these numbers (gRPC's); they may never change.
    #[test]
    fn the_numbers_are_fixed() {
        let fixed = [
            (ResultCode::Ok, 0),
            (ResultCode::InvalidArgument, 3),
            (ResultCode::DeadlineExceeded, 4),
            (ResultCode::NotFound, 5),
            (ResultCode::AlreadyExists, 6),
            (ResultCode::PermissionDenied, 7),
            (ResultCode::ResourceExhausted, 8),
            (ResultCode::FailedPrecondition, 9),
            (ResultCode::OutOfRange, 11),
            (ResultCode::Unimplemented, 12),
            (ResultCode::Internal, 13),
            (ResultCode::Unavailable, 14),
            (ResultCode::Unauthenticated, 16),
        ];
        for (code, number) in fixed {
            assert_eq!(code as i32, number, "{code:?}");
        }
    }
}
