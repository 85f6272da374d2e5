//! The one rule every access decision goes through: a permission is live at consensus time
//! `t` when it is not revoked and `from ≤ t < until`.

use medledger_proto::v1::{Permission, Right};

use crate::error::Denial;

pub fn has_right(permission: &Permission, right: Right) -> bool {
    permission.rights.contains(&(right as i32))
}

pub fn is_live(permission: &Permission, t: i64) -> bool {
    !permission.revoked && permission.from <= t && t < permission.until
}

/// Finds a live permission giving `right` on `category` (and, for `share`, on `study`)
/// among `permissions`, or says why there is none. When several are live, the one with the
/// newest key epoch (then the latest end) is chosen, so a reader gets the freshest envelope.
///
/// The reason given, in order: a window not yet started, a window ended, a revocation,
/// and otherwise no permission at all.
pub fn evaluate<'a>(
    permissions: &'a [Permission],
    category: &str,
    right: Right,
    study: Option<&str>,
    t: i64,
) -> Result<&'a Permission, Denial> {
    let candidates: Vec<&Permission> = permissions
        .iter()
        .filter(|p| p.category == category && has_right(p, right))
        .filter(|p| study.is_none_or(|s| p.study_id == s))
        .collect();
    if let Some(best) = candidates
        .iter()
        .filter(|p| is_live(p, t))
        .max_by_key(|p| (p.key_epoch, p.until))
    {
        return Ok(best);
    }
    let standing = || candidates.iter().filter(|p| !p.revoked);
    if let Some(from) = standing().filter(|p| p.from > t).map(|p| p.from).min() {
        return Err(Denial::WindowNotStarted { from });
    }
    if let Some(until) = standing().filter(|p| p.until <= t).map(|p| p.until).max() {
        return Err(Denial::WindowExpired { until });
    }
    if let Some(revoked) = candidates.iter().find(|p| p.revoked) {
        return Err(Denial::Revoked {
            permission_id: revoked.id.clone(),
        });
    }
    Err(Denial::NoPermission {
        right,
        category: category.to_string(),
    })
}
