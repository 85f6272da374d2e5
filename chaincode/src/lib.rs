//! # medledger-chaincode
//!
//! The EHR contract: who may read, write or share which part of a patient's record, and
//! when — enforced identically on every peer and visible to the patient. It is deterministic:
//! no clock, no randomness, no I/O except through the [`Stub`]; time is the block's
//! consensus time. It imports `medledger-proto` (its data model is protobuf, so records can
//! evolve) and `medledger-crypto` (to verify a patient's signature on a study grant,
//! docs/adr/0014), and nothing else of ours.
//!
//! - [`invoke`] runs a transaction function; [`query`] a read-only one. Arguments and results
//!   are encoded `medledger.v1` messages.
//! - [`stub`]: the [`Stub`] trait the peer implements over RocksDB, and [`MemoryLedger`] for tests.
//! - [`access::evaluate`]: the one permission rule, `from ≤ t < until` and not revoked.
//! - Errors are typed ([`ChaincodeError`]); a [`Denial`] is audited on the patient's record.

// Every peer must decide every transaction identically, in debug and release builds alike:
// no unchecked arithmetic (release would wrap where debug panics), no indexing that can
// panic on a value from a transaction or from state.
#![cfg_attr(
    not(test),
    deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)
)]

pub mod access;
mod context;
pub mod erasure;
pub mod error;
pub mod keys;
pub mod limits;
pub mod private;
mod queries;
pub mod sealed;
pub mod stub;
pub mod study;
mod transactions;

pub use context::DEFAULT_CATEGORIES;
pub use error::{AuditContext, ChaincodeError, Denial, describe_denial};
pub use stub::{Creator, CreatorAttribute, MemoryLedger, MemoryStub, Role, Stub};

use prost::Message;

/// Functions that change the ledger (submitted as transactions).
pub const TRANSACTIONS: [&str; 16] = [
    "register_patient",
    "grant",
    "revoke",
    "add_item",
    "record_access",
    "share_for_study",
    "register_study",
    "emergency_access",
    "rotate_category_key",
    "erase_patient",
    "set_private_data",
    "register_category",
    "record_study_access",
    "report_study_incident",
    "confirm_object_deletions",
    "purge_erased",
];

/// The transactions a storage gateway submits under its own identity (the validator
/// refuses any other from a gateway, and every one from a peer).
pub const GATEWAY_TRANSACTIONS: [&str; 2] = ["confirm_object_deletions", "purge_erased"];

/// Read-only functions (answered from one peer's state).
pub const QUERIES: [&str; 15] = [
    "get_record",
    "access_keys",
    "study_access_keys",
    "sealed_reasons",
    "list_permissions",
    "list_items",
    "audit_trail",
    "check_access",
    "list_patients_for_grantee",
    "list_studies",
    "study_items",
    "list_categories",
    "reason_readers",
    "pending_object_deletions",
    "pending_purges",
];

/// Largest encoded argument message accepted.
pub const MAX_ARGS_BYTES: usize = 128 * 1024;

fn decode<M: Message + Default>(args: &[u8]) -> Result<M, ChaincodeError> {
    if args.len() > MAX_ARGS_BYTES {
        return Err(ChaincodeError::invalid(
            "args",
            format!("larger than {MAX_ARGS_BYTES} bytes"),
        ));
    }
    M::decode(args).map_err(|e| ChaincodeError::invalid("args", e))
}

/// Runs transaction `function` with encoded `args`. On failure every write is rolled back,
/// and a denial concerning a patient record is appended to that record's audit trail; the
/// host commits whatever the stub holds afterwards, success or not.
pub fn invoke(stub: &mut dyn Stub, function: &str, args: &[u8]) -> Result<Vec<u8>, ChaincodeError> {
    use transactions as t;
    let result = match function {
        "register_patient" => decode(args).and_then(|a| t::register_patient(stub, a)),
        "grant" => decode(args).and_then(|a| t::grant(stub, a)),
        "revoke" => decode(args).and_then(|a| t::revoke(stub, a)),
        "add_item" => decode(args).and_then(|a| t::add_item(stub, a)),
        "record_access" => decode(args).and_then(|a| t::record_access(stub, a)),
        "share_for_study" => decode(args).and_then(|a| t::share_for_study(stub, a)),
        "register_study" => decode(args).and_then(|a| t::register_study(stub, a)),
        "emergency_access" => decode(args).and_then(|a| t::emergency_access(stub, a)),
        "rotate_category_key" => decode(args).and_then(|a| t::rotate_category_key(stub, a)),
        "erase_patient" => decode(args).and_then(|a| erasure::erase_patient(stub, a)),
        "purge_erased" => decode(args).and_then(|a| erasure::purge_erased(stub, a)),
        "set_private_data" => decode(args).and_then(|a| t::set_private_data(stub, a)),
        "register_category" => decode(args).and_then(|a| t::register_category(stub, a)),
        "record_study_access" => decode(args).and_then(|a| t::record_study_access(stub, a)),
        "report_study_incident" => decode(args).and_then(|a| t::report_study_incident(stub, a)),
        "confirm_object_deletions" => {
            decode(args).and_then(|a| erasure::confirm_object_deletions(stub, a))
        }
        f if QUERIES.contains(&f) => Err(ChaincodeError::NotATransaction(f.to_string())),
        f => Err(ChaincodeError::UnknownFunction(f.to_string())),
    };
    // Every private value the transaction carries is one a field refers to.
    let result = result.and_then(|r| private::all_claimed(stub).map(|()| r));
    if let Err(error) = &result {
        stub.rollback();
        if let ChaincodeError::Denied {
            reason,
            audit: Some(context),
        } = error
        {
            context::record_denial(stub, context, reason)?;
        }
    }
    result
}

/// Checks, on the arguments alone (no state, no time), what must never reach a block: a peer
/// runs it before ordering a submission, so that words a client should have sealed, and key
/// material a client should have sent as private data, are refused before they are written
/// anywhere. The chaincode refuses the same at execution, for a primary that orders them
/// anyway. Today: an emergency access's reason in clear text (docs/adr/0013), and the key
/// material `private_keys` (the ledger's format, docs/adr/0017) takes only as commitments:
/// from format 5 a grant's or a rotation's key envelopes and an item's wrapped file key,
/// from format 6 a study copy's wrapped file key, from format 7 an emergency access's sealed
/// reason (sent as private data, the block naming its readers and its commitment).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field, or arguments that do not decode.
pub fn check_before_ordering(
    function: &str,
    args: &[u8],
    private_keys: private::PrivateKeys,
) -> Result<(), ChaincodeError> {
    use medledger_proto::v1;
    use private::PrivateKeys;
    let keeps_private_data = private_keys >= PrivateKeys::RecordKeys;
    let in_clear = |field: &'static str| {
        ChaincodeError::invalid(
            field,
            "this ledger keeps key material as private data: send its commitment, and the \
             value beside the transaction (PutPrivateData)",
        )
    };
    match function {
        "emergency_access" => {
            let args: v1::EmergencyAccessArgs = decode(args)?;
            sealed::refuse_clear_reason(&args.reason)?;
            if private_keys >= PrivateKeys::FreeText && args.sealed_reason.is_some() {
                return Err(ChaincodeError::invalid(
                    "sealed_reason",
                    "this ledger keeps free text as private data: send the sealed reason's \
                     commitment, and the reason beside the transaction (PutPrivateData)",
                ));
            }
        }
        "grant" if keeps_private_data => {
            let args: v1::GrantArgs = decode(args)?;
            if !args.key_envelope.is_empty() {
                return Err(in_clear("key_envelope"));
            }
        }
        "add_item" if keeps_private_data => {
            let args: v1::AddItemArgs = decode(args)?;
            if !args.wrapped_dek.is_empty() {
                return Err(in_clear("wrapped_dek"));
            }
        }
        "share_for_study" if private_keys >= PrivateKeys::StudyKeys => {
            let args: v1::ShareForStudyArgs = decode(args)?;
            if !args.wrapped_dek.is_empty() {
                return Err(in_clear("wrapped_dek"));
            }
        }
        "rotate_category_key" if keeps_private_data => {
            let args: v1::RotateCategoryKeyArgs = decode(args)?;
            if !args.previous_key_envelope.is_empty() {
                return Err(in_clear("previous_key_envelope"));
            }
            if args.envelopes.iter().any(|e| !e.key_envelope.is_empty()) {
                return Err(in_clear("envelopes.key_envelope"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks, on the arguments and the private values a peer is asked to acknowledge
/// (`Ledger.PutPrivateData`, docs/adr/0017), what the chaincode cannot see at execution: the
/// shape of a private value that a field of the arguments describes. `values` are the
/// transaction's values by commitment (each already matched to its commitment). Today: an
/// emergency access's private sealed reason ([`sealed::check_private_reason`]: a canonical
/// `SealedText` sealed to exactly the readers the arguments name). Key material (80-byte
/// envelopes and wrapped keys) is left to its readers, who alone can tell whether it opens.
/// Chaincode logic never branches on these values; an honest peer's acknowledgment does.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field, or arguments that do not decode.
pub fn check_private_values(
    function: &str,
    args: &[u8],
    values: &[([u8; 32], &[u8])],
) -> Result<(), ChaincodeError> {
    if function == "emergency_access" {
        let args: medledger_proto::v1::EmergencyAccessArgs = decode(args)?;
        if let Some((_, value)) = values
            .iter()
            .find(|(commitment, _)| commitment.as_slice() == args.sealed_reason_commitment)
        {
            sealed::check_private_reason(value, &args.sealed_reason_readers)?;
        }
    }
    Ok(())
}

/// Runs read-only `function` with encoded `args` on the stub's state.
pub fn query(stub: &dyn Stub, function: &str, args: &[u8]) -> Result<Vec<u8>, ChaincodeError> {
    use queries as q;
    use transactions as t;
    match function {
        "get_record" => decode(args).and_then(|a| q::get_record(stub, a)),
        "access_keys" => decode(args).and_then(|a| t::access_keys(stub, a)),
        "study_access_keys" => decode(args).and_then(|a| t::study_access_keys(stub, a)),
        "list_permissions" => decode(args).and_then(|a| q::list_permissions(stub, a)),
        "list_items" => decode(args).and_then(|a| q::list_items(stub, a)),
        "audit_trail" => decode(args).and_then(|a| q::audit_trail(stub, a)),
        "sealed_reasons" => decode(args).and_then(|a| q::sealed_reasons(stub, a)),
        "check_access" => decode(args).and_then(|a| q::check_access(stub, a)),
        "list_patients_for_grantee" => {
            decode(args).and_then(|a| q::list_patients_for_grantee(stub, a))
        }
        "list_studies" => decode(args).and_then(|a| q::list_studies(stub, a)),
        "study_items" => decode(args).and_then(|a| q::study_items(stub, a)),
        "list_categories" => decode(args).and_then(|a| q::list_categories(stub, a)),
        "reason_readers" => decode(args).and_then(|a| q::reason_readers(stub, a)),
        "pending_object_deletions" => {
            decode(args).and_then(|a| erasure::pending_object_deletions(stub, a))
        }
        "pending_purges" => decode(args).and_then(|a| erasure::pending_purges(stub, a)),
        f if TRANSACTIONS.contains(&f) => Err(ChaincodeError::invalid(
            "function",
            format!("{f} changes the ledger; submit it as a transaction"),
        )),
        f => Err(ChaincodeError::UnknownFunction(f.to_string())),
    }
}
