//! The commit certificate check (Castro–Liskov §4.2 and §4.4): a batch is committed at
//! sequence number `seq` when 2f+1 distinct replicas signed a commit for its digest at that
//! number, all in one view. The replica applies it to fetched batches (state transfer), and
//! the auditor to every block it verifies, so both accept exactly the same certificates.

use std::collections::BTreeSet;

use crate::config::Config;
use crate::message::{CommitVote, Digest, Domain, ReplicaId, Seq, Signable, Signed, Vote};

/// Why a commit certificate does not certify its batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("it holds no commits")]
    Empty,
    #[error("a commit of replica {0} is for another view, number or batch")]
    Mismatch(ReplicaId),
    #[error("replica {0} is not a member of the network")]
    UnknownReplica(ReplicaId),
    #[error("replica {0} signs it twice")]
    Duplicate(ReplicaId),
    #[error("{have} distinct commits; {need} are needed")]
    TooFew { have: usize, need: usize },
    #[error("a commit signature does not verify")]
    BadSignature,
}

/// Checks that `commits` certify the batch with `digest` at `seq` under `config`: one view,
/// matching number and digest, distinct members, at least 2f+1 of them, and every signature
/// valid by `verify_all` (given (signer, domain, signed bytes, signature) items, true when
/// all verify; hosts batch-verify there). Signatures are checked last, once the cheap rules
/// hold.
///
/// # Errors
/// The first rule the certificate breaks, as a [`CertificateError`].
pub fn check_commit_certificate(
    config: &Config,
    seq: Seq,
    digest: &Digest,
    commits: &[Signed<Vote>],
    verify_all: impl FnOnce(&[(ReplicaId, Domain, Vec<u8>, &[u8])]) -> bool,
) -> Result<(), CertificateError> {
    let view = commits.first().ok_or(CertificateError::Empty)?.message.view;
    let mut signers = BTreeSet::new();
    let mut items = Vec::with_capacity(commits.len());
    for v in commits {
        if v.message.view != view || v.message.seq != seq || v.message.digest != *digest {
            return Err(CertificateError::Mismatch(v.from));
        }
        if v.from >= config.n {
            return Err(CertificateError::UnknownReplica(v.from));
        }
        if !signers.insert(v.from) {
            return Err(CertificateError::Duplicate(v.from));
        }
        items.push((
            v.from,
            Domain::Commit,
            config.epoch_signed(CommitVote(&v.message).signed_bytes()),
            v.signature.as_slice(),
        ));
    }
    let need = config.quorum();
    if signers.len() < need {
        return Err(CertificateError::TooFew {
            have: signers.len(),
            need,
        });
    }
    if !verify_all(&items) {
        return Err(CertificateError::BadSignature);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(4)
    }

    fn commit(from: ReplicaId, view: u64, seq: Seq, digest: Digest) -> Signed<Vote> {
        Signed {
            from,
            message: Vote { view, seq, digest },
            signature: vec![from as u8; 64],
        }
    }

    /// Accepts a signature when it is the signer's id repeated (what `commit` makes).
    fn verify(items: &[(ReplicaId, Domain, Vec<u8>, &[u8])]) -> bool {
        items.iter().all(|(from, domain, _, sig)| {
            *domain == Domain::Commit && sig.iter().all(|b| *b == *from as u8)
        })
    }

    #[test]
    fn two_f_plus_one_distinct_matching_commits_certify() {
        let d = [7; 32];
        let commits: Vec<_> = (0..3).map(|r| commit(r, 2, 10, d)).collect();
        assert_eq!(
            check_commit_certificate(&config(), 10, &d, &commits, verify),
            Ok(())
        );
    }

    #[test]
    fn each_broken_rule_is_named() {
        let d = [7; 32];
        let c = config();
        let check =
            |commits: &[Signed<Vote>]| check_commit_certificate(&c, 10, &d, commits, verify);
        assert_eq!(check(&[]), Err(CertificateError::Empty));
        let two: Vec<_> = (0..2).map(|r| commit(r, 2, 10, d)).collect();
        assert_eq!(
            check(&two),
            Err(CertificateError::TooFew { have: 2, need: 3 })
        );
        let duplicate = vec![
            commit(0, 2, 10, d),
            commit(1, 2, 10, d),
            commit(1, 2, 10, d),
        ];
        assert_eq!(check(&duplicate), Err(CertificateError::Duplicate(1)));
        let mixed_views = vec![
            commit(0, 2, 10, d),
            commit(1, 3, 10, d),
            commit(2, 2, 10, d),
        ];
        assert_eq!(check(&mixed_views), Err(CertificateError::Mismatch(1)));
        let other_seq = vec![
            commit(0, 2, 10, d),
            commit(1, 2, 11, d),
            commit(2, 2, 10, d),
        ];
        assert_eq!(check(&other_seq), Err(CertificateError::Mismatch(1)));
        let other_batch = vec![
            commit(0, 2, 10, d),
            commit(1, 2, 10, [8; 32]),
            commit(2, 2, 10, d),
        ];
        assert_eq!(check(&other_batch), Err(CertificateError::Mismatch(1)));
        let stranger = vec![
            commit(0, 2, 10, d),
            commit(1, 2, 10, d),
            commit(4, 2, 10, d),
        ];
        assert_eq!(check(&stranger), Err(CertificateError::UnknownReplica(4)));
        let mut forged: Vec<_> = (0..3).map(|r| commit(r, 2, 10, d)).collect();
        forged[2].signature = vec![0; 64];
        assert_eq!(check(&forged), Err(CertificateError::BadSignature));
    }
}
