//! Ed25519 signing identities with domain-separated signatures.
//!
//! Every signature covers `len(tag) ‖ tag ‖ message`, where the tag names what the message is
//! (a transaction, a revocation record, ...). A signature made for one domain therefore never
//! verifies in another, even over identical bytes.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, Verifier};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// What a signature is for. Each variant has a fixed, unique tag that is signed with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureDomain {
    /// A client transaction submitted to the ledger.
    Transaction,
    /// A CA-signed revocation record, which peers put on the ledger.
    RevocationRecord,
    /// A peer's vote on a block header it executed (ledger format 2, docs/adr/0009): the
    /// signatures a commit proof carries. (Format 1's per-transaction receipts, tag
    /// `medledger/v1/receipt`, are no longer made or accepted.)
    BlockVote,
    /// An admin's approval of a new network configuration (docs/adr/0010).
    ConfigUpdate,
    /// A record owner's statement that a category public key is theirs
    /// ([`category_key_statement`]).
    CategoryKey,
    /// A researcher's statement that a study key is theirs ([`study_key_statement`]).
    StudyKey,
    /// A patient's consent to share a record into a study under their study pseudonym,
    /// signed with their ownership key of that study ([`study_grant_statement`],
    /// docs/adr/0014); the chaincode verifies it.
    StudyGrant,
    /// A peer's acknowledgment that it holds a transaction's private values
    /// ([`crate::private_data_ack_statement`], docs/adr/0017).
    PrivateDataAck,
    /// A transaction's creator's signature over the acknowledgments it carries
    /// ([`crate::private_data_acks_statement`]): no one else can change them.
    PrivateDataAcks,
    /// A PBFT protocol message between peers. The message bytes carry their own, finer tag
    /// (pre-prepare, prepare, commit, ...) from the consensus core.
    Consensus,
}

impl SignatureDomain {
    /// The tag signed in front of the message. Never change a tag once released: old
    /// signatures would stop verifying.
    pub fn tag(self) -> &'static [u8] {
        match self {
            SignatureDomain::Transaction => b"medledger/v1/transaction",
            SignatureDomain::RevocationRecord => b"medledger/v1/revocation-record",
            SignatureDomain::BlockVote => b"medledger/v2/block-vote",
            SignatureDomain::ConfigUpdate => b"medledger/v2/config-update",
            SignatureDomain::CategoryKey => b"medledger/v2/category-key",
            SignatureDomain::StudyKey => b"medledger/v2/study-key",
            SignatureDomain::StudyGrant => b"medledger/v2/study-grant",
            SignatureDomain::PrivateDataAck => b"medledger/v2/private-data-ack",
            SignatureDomain::PrivateDataAcks => b"medledger/v2/private-data-acks",
            SignatureDomain::Consensus => b"medledger/v1/pbft",
        }
    }

    fn signed_bytes(self, message: &[u8]) -> Vec<u8> {
        let tag = self.tag();
        let tag_len = u8::try_from(tag.len()).expect("domain tags are shorter than 256 bytes");
        let mut bytes = Vec::with_capacity(1 + tag.len() + message.len());
        bytes.push(tag_len);
        bytes.extend_from_slice(tag);
        bytes.extend_from_slice(message);
        bytes
    }
}

/// Appends `part` with its length (u32, big-endian) in front: statements of several parts
/// cannot be read two ways.
pub(crate) fn length_prefixed(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

/// What a record owner signs (domain [`SignatureDomain::CategoryKey`]) to say that
/// `public_key` (X25519, 32 bytes) is epoch `epoch` of category `category` of the record
/// `pseudonym`: the key clinicians wrap new files' keys to (issue 17 item 4).
pub fn category_key_statement(
    pseudonym: &[u8],
    category: &str,
    epoch: u32,
    public_key: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * 4 + pseudonym.len() + category.len() + 4 + 32);
    length_prefixed(&mut out, pseudonym);
    length_prefixed(&mut out, category.as_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    length_prefixed(&mut out, public_key);
    out
}

/// What a researcher signs (domain [`SignatureDomain::StudyKey`]) to say that `study_key`
/// (X25519, 32 bytes) is the key of study `study_id`, which shared copies are encrypted to.
pub fn study_key_statement(study_id: &str, study_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + study_id.len() + study_key.len());
    length_prefixed(&mut out, study_id.as_bytes());
    length_prefixed(&mut out, study_key);
    out
}

/// What a patient signs (domain [`SignatureDomain::StudyGrant`]) with their ownership key
/// of study `study_id` to let record `pseudonym` be shared into that study under the study
/// pseudonym the key hashes to (docs/adr/0014). Bound to the record, so the signature
/// cannot name that study pseudonym in a grant on another record.
pub fn study_grant_statement(study_id: &str, pseudonym: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + study_id.len() + pseudonym.len());
    length_prefixed(&mut out, study_id.as_bytes());
    length_prefixed(&mut out, pseudonym);
    out
}

/// Why a key or a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the signature does not verify for this key, domain and message")]
    BadSignature,
    #[error("a signature must be {SIGNATURE_LEN} bytes, got {0}")]
    BadSignatureLength(usize),
    #[error("an Ed25519 public key must be 32 bytes and a valid curve point")]
    BadPublicKey,
    #[error("the private key is not an Ed25519 PKCS#8 key: {0}")]
    BadPrivateKey(String),
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl Signature {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SignatureError> {
        let array: [u8; SIGNATURE_LEN] = bytes
            .try_into()
            .map_err(|_| SignatureError::BadSignatureLength(bytes.len()))?;
        Ok(Signature(array))
    }

    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

/// A private Ed25519 signing key. The secret is zeroized when dropped.
pub struct SigningIdentity {
    key: ed25519_dalek::SigningKey,
}

impl SigningIdentity {
    /// Creates a fresh key from a cryptographically secure RNG.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        SigningIdentity {
            key: ed25519_dalek::SigningKey::generate(rng),
        }
    }

    /// Builds a key from its 32-byte seed (RFC 8032 "private key").
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SigningIdentity {
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// Parses a PKCS#8 DER private key (the form stored in wallets and used for TLS).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignatureError> {
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(|key| SigningIdentity { key })
            .map_err(|e| SignatureError::BadPrivateKey(e.to_string()))
    }

    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SignatureError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(|key| SigningIdentity { key })
            .map_err(|e| SignatureError::BadPrivateKey(e.to_string()))
    }

    /// The PKCS#8 DER encoding (v2, with the public key), zeroized when dropped.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let doc = self
            .key
            .to_pkcs8_der()
            .expect("encoding an in-memory Ed25519 key cannot fail");
        Zeroizing::new(doc.as_bytes().to_vec())
    }

    /// The PKCS#8 PEM encoding, zeroized when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let pem = self
            .key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("encoding an in-memory Ed25519 key cannot fail");
        Zeroizing::new(pem.to_string())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.key.verifying_key())
    }

    /// Signs `message` for `domain`.
    pub fn sign(&self, domain: SignatureDomain, message: &[u8]) -> Signature {
        Signature(self.key.sign(&domain.signed_bytes(message)).to_bytes())
    }

    /// Signs raw bytes without a domain tag. Only for X.509 structures (certificates, CSRs,
    /// CRLs), whose signature algorithm fixes what is signed.
    pub(crate) fn sign_x509(&self, tbs: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(tbs).to_bytes()
    }
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningIdentity(public {})", self.verifying_key())
    }
}

/// rcgen signs certificates, CSRs and CRLs through this trait; the key stays ours.
impl rcgen::PublicKeyData for SigningIdentity {
    fn der_bytes(&self) -> &[u8] {
        self.key.as_ref().as_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for SigningIdentity {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.sign_x509(msg).to_vec())
    }
}

/// A public Ed25519 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::BadPublicKey)?;
        ed25519_dalek::VerifyingKey::from_bytes(&array)
            .map(VerifyingKey)
            .map_err(|_| SignatureError::BadPublicKey)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Verifies a domain-separated signature. Uses strict verification (no small-order keys,
    /// canonical encodings only), so signatures are not malleable.
    pub fn verify(
        &self,
        domain: SignatureDomain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(&domain.signed_bytes(message), &sig)
            .map_err(|_| SignatureError::BadSignature)
    }

    /// Verifies an X.509 signature (certificate, CSR or CRL) over its to-be-signed bytes.
    pub(crate) fn verify_x509(&self, tbs: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let sig = Signature::from_slice(signature)?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify(tbs, &sig)
            .map_err(|_| SignatureError::BadSignature)
    }
}

impl std::fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({self})")
    }
}

impl rcgen::PublicKeyData for VerifyingKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 8032 §7.1, TEST 2: the raw Ed25519 primitive under our X.509 path.
    #[test]
    fn rfc8032_test_2_known_answer() {
        let seed: [u8; 32] =
            unhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
                .try_into()
                .unwrap();
        let identity = SigningIdentity::from_seed(&seed);
        assert_eq!(
            hex::encode(identity.verifying_key().to_bytes()),
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
        );
        let sig = identity.sign_x509(&[0x72]);
        assert_eq!(
            hex::encode(sig),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        );
        identity.verifying_key().verify_x509(&[0x72], &sig).unwrap();
    }

    /// Known answer for a domain-separated signature, computed independently with
    /// `openssl pkeyutl -sign -rawin` over `len(tag) ‖ tag ‖ message` with the RFC 8032 TEST 2 key.
    #[test]
    fn domain_separated_signature_known_answer() {
        let seed: [u8; 32] =
            unhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
                .try_into()
                .unwrap();
        let identity = SigningIdentity::from_seed(&seed);
        let sig = identity.sign(SignatureDomain::Transaction, b"grant");
        assert_eq!(hex::encode(sig.0), TRANSACTION_GRANT_KAT);
    }

    const TRANSACTION_GRANT_KAT: &str = include_str!("../testdata/transaction-grant.sig.hex");

    #[test]
    fn signature_for_one_domain_never_verifies_in_another() {
        let identity = SigningIdentity::from_seed(&[7; 32]);
        let public = identity.verifying_key();
        let sig = identity.sign(SignatureDomain::RevocationRecord, b"same bytes");
        public
            .verify(SignatureDomain::RevocationRecord, b"same bytes", &sig)
            .unwrap();
        for other in [SignatureDomain::Transaction, SignatureDomain::BlockVote] {
            assert_eq!(
                public.verify(other, b"same bytes", &sig),
                Err(SignatureError::BadSignature)
            );
        }
        assert_eq!(
            public.verify(SignatureDomain::RevocationRecord, b"other bytes", &sig),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn tampered_signature_and_wrong_key_are_refused() {
        let identity = SigningIdentity::from_seed(&[1; 32]);
        let other = SigningIdentity::from_seed(&[2; 32]);
        let mut sig = identity.sign(SignatureDomain::Transaction, b"m");
        assert_eq!(
            other
                .verifying_key()
                .verify(SignatureDomain::Transaction, b"m", &sig),
            Err(SignatureError::BadSignature)
        );
        sig.0[10] ^= 1;
        assert_eq!(
            identity
                .verifying_key()
                .verify(SignatureDomain::Transaction, b"m", &sig),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            Signature::from_slice(&[0; 63]),
            Err(SignatureError::BadSignatureLength(63))
        );
        assert_eq!(
            VerifyingKey::from_bytes(&[0; 31]),
            Err(SignatureError::BadPublicKey)
        );
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_key() {
        let identity = SigningIdentity::from_seed(&[9; 32]);
        let der = identity.to_pkcs8_der();
        let pem = identity.to_pkcs8_pem();
        assert_eq!(
            SigningIdentity::from_pkcs8_der(&der)
                .unwrap()
                .verifying_key(),
            identity.verifying_key()
        );
        assert_eq!(
            SigningIdentity::from_pkcs8_pem(&pem)
                .unwrap()
                .verifying_key(),
            identity.verifying_key()
        );
        assert!(matches!(
            SigningIdentity::from_pkcs8_der(b"not a key"),
            Err(SignatureError::BadPrivateKey(_))
        ));
    }
}
