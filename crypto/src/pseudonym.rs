//! Patient pseudonyms: `P = HMAC-SHA256(K_patient, "pseudonym" ‖ UII)`.
//!
//! UII is the patient's identifying information. It is only ever an input to this function on
//! the patient's own machine; the ledger, the object store and the logs see `P` alone. Without
//! `K_patient` nobody can test a guessed UII against a pseudonym.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of a pseudonym in bytes.
pub const PSEUDONYM_LEN: usize = 32;

const PSEUDONYM_LABEL: &[u8] = b"pseudonym";
const STUDY_LABEL: &[u8] = b"study";
const RECORD_KEY_LABEL: &[u8] = b"record-encryption-key";

/// The patient's 256-bit pseudonym key `K_patient`. Zeroized when dropped.
pub struct PatientKey(Zeroizing<[u8; 32]>);

impl PatientKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PatientKey(Zeroizing::new(bytes))
    }

    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        PatientKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A patient pseudonym. Displayed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(pub [u8; PSEUDONYM_LEN]);

impl std::fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pseudonym({self})")
    }
}

/// Derives the pseudonym of the patient identified by `uii` under `key`.
pub fn derive_pseudonym(key: &PatientKey, uii: &[u8]) -> Pseudonym {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(PSEUDONYM_LABEL);
    mac.update(uii);
    Pseudonym(mac.finalize().into_bytes().into())
}

/// The patient's ownership key within one study (docs/adr/0014): an Ed25519 key whose
/// seed is `HMAC-SHA256(K, "study" ‖ study_id)`. Only whoever holds `K` holds it; another
/// study's key for the same patient is unrelated. Grants into the study are signed with it
/// ([`crate::study_grant_statement`], domain `StudyGrant`), and the study pseudonym is its
/// public key's hash ([`study_pseudonym_of`]), so the chaincode can check, by signature
/// alone, that whoever names a study pseudonym owns it.
pub fn derive_study_identity(key: &PatientKey, study_id: &str) -> crate::SigningIdentity {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(STUDY_LABEL);
    mac.update(study_id.as_bytes());
    let seed = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
    crate::SigningIdentity::from_seed(&seed)
}

/// A study pseudonym in study `study_id` from its ownership key (Ed25519 public key, 32
/// bytes): `SHA-256("medledger/v2/study-pseudonym" ‖ len(study_id) as u32 BE ‖ study_id ‖
/// key)`, so that one key names one pseudonym per study. The chaincode computes the same
/// (`medledger_chaincode::study`), and refuses a grant whose pseudonym is not its key's.
pub fn study_pseudonym_of(study_id: &str, study_key: &[u8; 32]) -> Pseudonym {
    use sha2::Digest;
    let mut hash = Sha256::new();
    hash.update(STUDY_PSEUDONYM_TAG);
    hash.update((study_id.len() as u32).to_be_bytes());
    hash.update(study_id.as_bytes());
    hash.update(study_key);
    Pseudonym(hash.finalize().into())
}

/// The domain of [`study_pseudonym_of`]'s hash.
pub const STUDY_PSEUDONYM_TAG: &[u8] = b"medledger/v2/study-pseudonym";

/// The patient's pseudonym within one study: the hash of their ownership key of that study
/// ([`derive_study_identity`], [`study_pseudonym_of`]). Another study's pseudonym for the
/// same patient is unrelated, so studies cannot link records.
pub fn derive_study_pseudonym(key: &PatientKey, study_id: &str) -> Pseudonym {
    let public = derive_study_identity(key, study_id)
        .verifying_key()
        .to_bytes();
    study_pseudonym_of(study_id, &public)
}

/// The record's X25519 key, to which free text about the record is sealed
/// ([`crate::seal_text`]): HPKE's DeriveKeyPair (RFC 9180 §7.1.3) of
/// `HMAC-SHA256(K, "record-encryption-key")`. Derived, not stored: whoever holds `K` holds
/// it, across renewals of the patient's certificate, and an erasure that destroys `K`
/// destroys it.
pub fn derive_record_encryption_key(key: &PatientKey) -> crate::EncryptionKey {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(RECORD_KEY_LABEL);
    let ikm = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
    crate::derive_encryption_key(ikm.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers computed independently with Python's `hmac` module.
    #[test]
    fn pseudonym_known_answers() {
        let key = PatientKey::from_bytes(core::array::from_fn(|i| i as u8));
        assert_eq!(
            derive_pseudonym(&key, b"Jane Doe|1970-01-01|MRN-0042").to_string(),
            "1edd649c73e482d3ab15981a5924f65a3bc97d094a4dfca390465f0ac9d7d92d"
        );
        let key = PatientKey::from_bytes([0xab; 32]);
        assert_eq!(
            derive_pseudonym(&key, b"").to_string(),
            "e765cccd9bd9aed0edc3c6d831c17c9fdffe569cd3ab45c1899a8a1568ea7243"
        );
    }

    #[test]
    fn different_keys_or_identities_give_unlinkable_pseudonyms() {
        let k1 = PatientKey::from_bytes([1; 32]);
        let k2 = PatientKey::from_bytes([2; 32]);
        assert_ne!(derive_pseudonym(&k1, b"uii"), derive_pseudonym(&k2, b"uii"));
        assert_ne!(
            derive_pseudonym(&k1, b"uii"),
            derive_pseudonym(&k1, b"uii2")
        );
        assert_eq!(derive_pseudonym(&k1, b"uii"), derive_pseudonym(&k1, b"uii"));
    }

    /// Known answer from Python's `hmac`, `hashlib` and `cryptography`'s Ed25519 (the seed
    /// `HMAC-SHA256(K, "study" ‖ id)`, its public key, the tagged SHA-256 of the study id and
    /// it); two studies    /// get unrelated pseudonyms, neither the record's own.
    #[test]
    fn study_pseudonyms_are_per_study() {
        let key = PatientKey::from_bytes(core::array::from_fn(|i| i as u8));
        assert_eq!(
            derive_study_pseudonym(&key, "onc-2026").to_string(),
            "15d491c86cb34a1cdd26fd8fb0cc22970becd8bf21000e6646d5cd9c2c577411"
        );
        let a = derive_study_pseudonym(&key, "onc-2026");
        let b = derive_study_pseudonym(&key, "onc-2027");
        assert_ne!(a, b);
        assert_ne!(a, derive_pseudonym(&key, b"onc-2026"));
    }
}
