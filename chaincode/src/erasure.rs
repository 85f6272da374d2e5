//! The objects an erasure leaves in the store, until the storage gateway deletes them
//! (issue 20 item 6; docs/adr/0015).
//!
//! An erasure commits on the ledger whoever submitted it: through the gateway, or straight
//! to the peers with the SDK. Its objects (the record's files and its copies in studies)
//! are then only deleted by the gateway, the one party that writes to the store. So the
//! erasure does not hand their paths to whoever submitted it alone: it queues each one in
//! the ledger's state (`object-deletion/{path}`, [`queue`]); the gateway pages through the
//! queue ([`pending_object_deletions`], agreed by f+1 peers before it acts), deletes, and
//! confirms ([`confirm_object_deletions`]), which takes the paths off. A gateway that
//! crashed in between finds the same queue when it is back; an object deleted twice is
//! deleted once. `ledger verify` (with the objects checked) names any erased object still
//! in the store, and the queue says which ones the gateway still owes.

use medledger_proto::v1::{
    ConfirmDeletionsArgs, ConfirmDeletionsResult, PendingDeletions, PendingDeletionsArgs,
    PendingObjectDeletion,
};
use prost::Message;

use crate::context::put;
use crate::error::{ChaincodeError, Denial};
use crate::keys;
use crate::stub::{Role, Stub};

/// Most paths one page of [`pending_object_deletions`] returns, and one
/// [`confirm_object_deletions`] takes.
pub const MAX_DELETIONS_PAGE: usize = 256;
/// Longest object path taken (bytes): `studies/{id}/{64 hex}/{id}` and
/// `patients/{64 hex}/{category}/{id}` are under 300.
pub const MAX_PATH_LEN: usize = 512;

/// Queues `paths` (objects of a record erased at consensus time `since`, Unix seconds) for
/// the storage gateway to delete.
///
/// # Errors
/// The stub's: its write budget (the erasure then fails whole).
pub fn queue(stub: &mut dyn Stub, paths: &[String], since: i64) -> Result<(), ChaincodeError> {
    for path in paths {
        put(
            stub,
            &keys::object_deletion(path),
            &PendingObjectDeletion {
                path: path.clone(),
                since,
            },
        )?;
    }
    Ok(())
}

/// Only the storage gateway acts on the queue, and auditors read it.
fn require(stub: &dyn Stub, roles: &[Role]) -> Result<(), ChaincodeError> {
    let actual = stub.creator().role;
    match roles.first() {
        Some(needed) if !roles.contains(&actual) => {
            Err(ChaincodeError::denied(Denial::WrongRole {
                needed: needed.as_str(),
                actual,
            }))
        }
        _ => Ok(()),
    }
}

/// Query `pending_object_deletions` ([`PendingDeletionsArgs`] → [`PendingDeletions`]): the
/// objects erasures named that the gateway has not confirmed deleted, a page at a time in
/// path order. For the storage gateway and auditors.
///
/// # Errors
/// `Denied` (`WrongRole`) for any other role; `InvalidArgument` for a `limit` over
/// [`MAX_DELETIONS_PAGE`] or an `after` longer than [`MAX_PATH_LEN`].
pub fn pending_object_deletions(
    stub: &dyn Stub,
    args: PendingDeletionsArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    require(stub, &[Role::Gateway, Role::Auditor])?;
    let limit = match usize::try_from(args.limit).unwrap_or(usize::MAX) {
        0 => MAX_DELETIONS_PAGE,
        n if n <= MAX_DELETIONS_PAGE => n,
        _ => {
            return Err(ChaincodeError::invalid(
                "limit",
                format!("at most {MAX_DELETIONS_PAGE}"),
            ));
        }
    };
    if args.after.len() > MAX_PATH_LEN {
        return Err(ChaincodeError::invalid(
            "after",
            format!("longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    let after = (!args.after.is_empty()).then(|| keys::object_deletion(&args.after));
    let page = stub.scan_prefix(keys::object_deletions_prefix(), after.as_deref(), limit)?;
    let mut deletions = Vec::with_capacity(page.len());
    for (key, bytes) in &page {
        deletions.push(
            PendingObjectDeletion::decode(bytes.as_slice())
                .map_err(|e| ChaincodeError::Corrupt(format!("{key}: {e}")))?,
        );
    }
    let next_after = match deletions.last() {
        Some(last) if deletions.len() == limit => last.path.clone(),
        _ => String::new(),
    };
    Ok(PendingDeletions {
        deletions,
        next_after,
    }
    .encode_to_vec())
}

/// Transaction `confirm_object_deletions` ([`ConfirmDeletionsArgs`] →
/// [`ConfirmDeletionsResult`]), by the storage gateway: these objects are gone from the
/// store, take them off the queue. A path not queued (never erased, or confirmed already:
/// a gateway that restarted confirms again) is passed over; nothing else changes.
///
/// # Errors
/// `Denied` (`WrongRole`) for any role but the gateway; `InvalidArgument` for no paths,
/// more than [`MAX_DELETIONS_PAGE`], or one empty or longer than [`MAX_PATH_LEN`].
pub fn confirm_object_deletions(
    stub: &mut dyn Stub,
    args: ConfirmDeletionsArgs,
) -> Result<Vec<u8>, ChaincodeError> {
    require(stub, &[Role::Gateway])?;
    if args.paths.is_empty() || args.paths.len() > MAX_DELETIONS_PAGE {
        return Err(ChaincodeError::invalid(
            "paths",
            format!("1 to {MAX_DELETIONS_PAGE} paths"),
        ));
    }
    if args
        .paths
        .iter()
        .any(|p| p.is_empty() || p.len() > MAX_PATH_LEN || p.contains('\0'))
    {
        return Err(ChaincodeError::invalid(
            "paths",
            format!("each 1 to {MAX_PATH_LEN} bytes, without NUL"),
        ));
    }
    let mut confirmed: u32 = 0;
    for path in &args.paths {
        let key = keys::object_deletion(path);
        if stub.get(&key)?.is_some() {
            stub.delete(&key)?;
            confirmed = confirmed.saturating_add(1);
        }
    }
    Ok(ConfirmDeletionsResult { confirmed }.encode_to_vec())
}
