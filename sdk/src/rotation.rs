//! Keys that follow consent (issue 19 item 3): the patient's client rotates a category key
//! so that a reader whose grant was revoked or ended, or whose key was revoked for
//! compromise, opens nothing added afterwards, even holding every byte and every key they
//! had. The new epoch's key is wrapped again for each reader who keeps access; the current
//! key is wrapped to the new one (the key chain), so those readers still open the earlier
//! items; new items are wrapped to the new epoch (clinicians take the current key from
//! `check_access`).

use medledger_crypto::{SignatureDomain, category_key_statement, validate_enrollment_certificate};
use medledger_proto::v1;
use prost::Message;

use crate::ca::CaClient;
use crate::error::ClientError;
use crate::patient::RecordKeys;
use crate::peer::{Committed, PeerSet};
use crate::wallet::Wallet;

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    pub category: String,
    /// The new epoch.
    pub epoch: u32,
    /// Readers who keep access (their permissions now hold the new epoch), by name.
    pub kept: Vec<String>,
    /// Readers left at the old epoch, with why: their certificate is revoked or expired, or
    /// the CA has none (a live permission of theirs still opens what was there before).
    pub left: Vec<(String, String)>,
    pub committed: Committed,
}

/// Whether a permission holds the category key: it reads or shares, and is not an
/// emergency access (those carry no key; break-glass escrow is apart).
pub fn holds_key(p: &v1::Permission) -> bool {
    !p.emergency
        && p.rights
            .iter()
            .any(|r| *r == v1::Right::Read as i32 || *r == v1::Right::Share as i32)
}

/// Rotates `category`'s key of the record in `keys` (the wallet's own record) at time
/// `now_s` (Unix seconds; which permissions still stand is judged with it, and the ledger
/// judges again). Errors: the ledger's epoch is unknown to the wallet, the CA or the
/// peers cannot be reached, or the rotation is refused.
pub async fn rotate_category(
    peers: &PeerSet,
    wallet: &Wallet,
    ca: &mut CaClient,
    keys: &mut RecordKeys,
    category: &str,
    now_s: i64,
) -> Result<Rotation, ClientError> {
    let (record, _): (v1::GetRecordResult, _) = peers
        .query_agreed_at("get_record", keys.patient_args())
        .await?;
    let on_ledger = record
        .category_keys
        .iter()
        .find(|k| k.category == category)
        .ok_or_else(|| ClientError::Usage(format!("this record has no category {category}")))?;
    let current = on_ledger.epoch;
    // The wallet's key of the ledger's epoch must be the one the ledger holds: a wallet
    // that lost it (or holds another) cannot chain the next epoch to it.
    let current_key = keys.category_key(category, current)?;
    if current_key.public_key().to_bytes().as_slice() != on_ledger.public_key.as_slice() {
        return Err(ClientError::Usage(format!(
            "this wallet's key of {category} epoch {current} is not the ledger's: the record \
             keys in this wallet are not the ones in force"
        )));
    }
    let epoch = current
        .checked_add(1)
        .ok_or_else(|| ClientError::Usage("the key epochs are exhausted".into()))?;
    let new_public = keys.add_epoch(category, epoch)?.public_key();
    let pseudonym = keys.pseudonym.to_vec();

    let (list, _): (v1::PermissionList, _) = peers
        .query_agreed_at("list_permissions", keys.patient_args())
        .await?;
    let root = wallet.root()?;
    let mut envelopes = Vec::new();
    let (mut kept, mut left) = (Vec::new(), Vec::new());
    for p in list
        .permissions
        .iter()
        .filter(|p| p.category == category && !p.revoked && p.until > now_s && holds_key(p))
    {
        let identity = match ca.certificate_of(&p.grantee).await {
            Ok(der) => validate_enrollment_certificate(&der, &root, now_s, peers.revocations())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(why) => {
                left.push((p.grantee.clone(), why));
                continue;
            }
        };
        let key_envelope = keys.envelope_at(&identity.encryption_key, category, epoch)?;
        envelopes.push(v1::EnvelopeUpdate {
            permission_id: p.id.clone(),
            key_envelope,
            ..Default::default()
        });
        kept.push(p.grantee.clone());
    }
    // The key chain's link: the current key, wrapped to the new one.
    let mut previous_key_envelope = keys.envelope_at(&new_public, category, current)?;
    // A ledger that keeps private data takes every envelope as a commitment, the envelopes
    // going beside the transaction (docs/adr/0017).
    let mut private = peers.private_data_of(&keys.pseudonym);
    let mut previous_key_envelope_commitment = Vec::new();
    if peers.keeps_private_data() {
        if envelopes.len() >= medledger_crypto::MAX_PRIVATE_COMMITMENTS {
            return Err(ClientError::Usage(format!(
                "{} readers keep {category}: a rotation on this ledger re-wraps the key for \
                 at most {} (revoke some first)",
                envelopes.len(),
                medledger_crypto::MAX_PRIVATE_COMMITMENTS - 1
            )));
        }
        for update in &mut envelopes {
            update.key_envelope_commitment = private
                .add(std::mem::take(&mut update.key_envelope))
                .to_vec();
        }
        previous_key_envelope_commitment = private
            .add(std::mem::take(&mut previous_key_envelope))
            .to_vec();
    }
    let public_key = new_public.to_bytes().to_vec();
    let statement = category_key_statement(&pseudonym, category, epoch, &public_key);
    let owner_signature = wallet
        .signing
        .sign(SignatureDomain::CategoryKey, &statement)
        .to_bytes()
        .to_vec();
    let args = v1::RotateCategoryKeyArgs {
        pseudonym,
        category: category.to_string(),
        public_key,
        envelopes,
        owner_signature,
        epoch,
        previous_key_envelope,
        previous_key_envelope_commitment,
    }
    .encode_to_vec();
    let committed = peers
        .submit_maybe_private("rotate_category_key", args, &private)
        .await?
        .into_valid()?;
    kept.sort();
    kept.dedup();
    Ok(Rotation {
        category: category.to_string(),
        epoch,
        kept,
        left,
        committed,
    })
}

/// Whether `category`'s key should be rotated now: a permission that held the key was
/// revoked or ended after the current epoch began (its `since`, consensus time), so its
/// holder has the key that new items would be wrapped to.
pub fn rotation_due(permissions: &[v1::Permission], key: &v1::CategoryKey, now_s: i64) -> bool {
    permissions.iter().any(|p| {
        p.category == key.category
            && holds_key(p)
            && p.key_epoch == key.epoch
            && ((p.revoked && p.revoked_at >= key.since)
                || (p.until <= now_s && p.until > key.since))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(rights: &[v1::Right], until: i64, revoked_at: Option<i64>) -> v1::Permission {
        v1::Permission {
            category: "lab-results".into(),
            rights: rights.iter().map(|r| *r as i32).collect(),
            from: 0,
            until,
            key_epoch: 2,
            revoked: revoked_at.is_some(),
            revoked_at: revoked_at.unwrap_or(0),
            ..Default::default()
        }
    }

    #[test]
    fn a_rotation_is_due_once_a_key_holder_lost_access_in_this_epoch() {
        let key = v1::CategoryKey {
            category: "lab-results".into(),
            epoch: 2,
            since: 1_000,
            ..Default::default()
        };
        let read = [v1::Right::Read];
        // Live readers, or a writer whose grant ended: nothing to rotate.
        assert!(!rotation_due(
            &[permission(&read, 5_000, None)],
            &key,
            2_000
        ));
        assert!(!rotation_due(
            &[permission(&[v1::Right::Write], 1_500, None)],
            &key,
            2_000
        ));
        // A reader revoked, or whose window ended, during this epoch.
        assert!(rotation_due(
            &[permission(&read, 5_000, Some(1_200))],
            &key,
            2_000
        ));
        assert!(rotation_due(&[permission(&read, 1_500, None)], &key, 2_000));
        assert!(rotation_due(
            &[permission(&[v1::Right::Share], 1_500, None)],
            &key,
            2_000
        ));
        // Before this epoch began (the rotation that made it already answered), or holding
        // an earlier epoch's key only: not again.
        assert!(!rotation_due(&[permission(&read, 900, None)], &key, 2_000));
        let mut older = permission(&read, 1_500, None);
        older.key_epoch = 1;
        assert!(!rotation_due(&[older], &key, 2_000));
        // An emergency access holds no key: its end asks for nothing.
        let mut emergency = permission(&read, 1_500, None);
        emergency.emergency = true;
        assert!(!rotation_due(&[emergency], &key, 2_000));
        // Another category's.
        let mut other = permission(&read, 1_500, None);
        other.category = "radiation-doses".into();
        assert!(!rotation_due(&[other], &key, 2_000));
    }
}
