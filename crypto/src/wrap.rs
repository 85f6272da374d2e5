//! Key wrapping with HPKE (RFC 9180, base mode): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! AES-256-GCM.
//!
//! Two kinds of keys are wrapped, each bound to what it protects so that an envelope cannot be
//! moved to another place on the ledger and still open:
//! - a file's data key (DEK), wrapped to the patient's category public key, bound to the item id;
//! - a category private key, wrapped to a grantee's enrollment X25519 key, bound to the patient's
//!   pseudonym, the category and the key epoch;
//! - the content key of a sealed text ([`crate::seal_text`]), wrapped to each of its readers,
//!   bound to the record and the category the text is about and to its author.
//!
//! A wrapped key is `enc (32) ‖ ciphertext (32) ‖ tag (16)`: 80 bytes.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::encryption::{EncryptionKey, EncryptionPublicKey};

/// Length of a wrapped 32-byte key.
pub const WRAPPED_KEY_LEN: usize = 32 + 32 + 16;

const INFO_FILE_KEY: &[u8] = b"medledger/v1/file-key";
const INFO_CATEGORY_KEY: &[u8] = b"medledger/v1/category-key";
const INFO_TEXT_KEY: &[u8] = b"medledger/v1/text-key";

/// What a wrapped key protects. It becomes HPKE's `info` and associated data.
#[derive(Clone, Copy, Debug)]
pub enum WrapContext<'a> {
    /// A file's data key, for the item with this id.
    FileKey { item_id: &'a str },
    /// A patient's private key for one category at one epoch.
    CategoryKey {
        pseudonym: &'a [u8],
        category: &'a str,
        epoch: u32,
    },
    /// The content key of a text `author` (an enrollment name) sealed about one category of
    /// one record (an emergency access's reason): a sealed text copied under another
    /// clinician's name does not open.
    TextKey {
        pseudonym: &'a [u8],
        category: &'a str,
        author: &'a str,
    },
}

impl WrapContext<'_> {
    fn info(&self) -> &'static [u8] {
        match self {
            WrapContext::FileKey { .. } => INFO_FILE_KEY,
            WrapContext::CategoryKey { .. } => INFO_CATEGORY_KEY,
            WrapContext::TextKey { .. } => INFO_TEXT_KEY,
        }
    }

    pub(crate) fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::new();
        match self {
            WrapContext::FileKey { item_id } => put_field(&mut aad, item_id.as_bytes()),
            WrapContext::CategoryKey {
                pseudonym,
                category,
                epoch,
            } => {
                put_field(&mut aad, pseudonym);
                put_field(&mut aad, category.as_bytes());
                aad.extend_from_slice(&epoch.to_be_bytes());
            }
            WrapContext::TextKey {
                pseudonym,
                category,
                author,
            } => {
                put_field(&mut aad, pseudonym);
                put_field(&mut aad, category.as_bytes());
                put_field(&mut aad, author.as_bytes());
            }
        }
        aad
    }
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

/// Why a wrapped key did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrapError {
    #[error("a wrapped key is {WRAPPED_KEY_LEN} bytes, this one is {0}")]
    Length(usize),
    #[error(
        "the wrapped key does not open with this private key for this record (wrong key, or tampered)"
    )]
    Open,
    #[error("the recipient's public key is not a valid X25519 key")]
    BadPublicKey,
}

/// Wraps a 32-byte key to `recipient` for `context`.
pub fn wrap_key(
    recipient: &EncryptionPublicKey,
    key: &[u8; 32],
    context: WrapContext<'_>,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, WrapError> {
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&recipient.to_bytes())
        .map_err(|_| WrapError::BadPublicKey)?;
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &pk,
        context.info(),
        key,
        &context.aad(),
        &mut Rng09(rng),
    )
    // Sealing 32 bytes to a valid key cannot fail; a zero shared secret (a low-order point
    // as the recipient key) is the only error HPKE defines here.
    .map_err(|_| WrapError::BadPublicKey)?;
    let mut wrapped = enc.to_bytes().to_vec();
    wrapped.extend_from_slice(&ciphertext);
    debug_assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
    Ok(wrapped)
}

/// Opens a key wrapped by [`wrap_key`] for the same `context`.
pub fn unwrap_key(
    private: &EncryptionKey,
    wrapped: &[u8],
    context: WrapContext<'_>,
) -> Result<Zeroizing<[u8; 32]>, WrapError> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(WrapError::Length(wrapped.len()));
    }
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&*private.to_bytes())
        .map_err(|_| WrapError::Open)?;
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&wrapped[..32])
        .map_err(|_| WrapError::Open)?;
    let plaintext = Zeroizing::new(
        hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            context.info(),
            &wrapped[32..],
            &context.aad(),
        )
        .map_err(|_| WrapError::Open)?,
    );
    let key: [u8; 32] = plaintext
        .as_slice()
        .try_into()
        .map_err(|_| WrapError::Open)?;
    Ok(Zeroizing::new(key))
}

/// A private X25519 key made from HPKE's DeriveKeyPair on `ikm` (RFC 9180 §7.1.3). Used by the
/// known-answer test; ordinary keys come from [`EncryptionKey::generate`].
pub fn derive_encryption_key(ikm: &[u8]) -> EncryptionKey {
    let (sk, _) = X25519HkdfSha256::derive_keypair(ikm);
    let bytes: [u8; 32] = sk.to_bytes().into();
    EncryptionKey::from_bytes(bytes)
}

/// hpke takes rand_core 0.9 generators; the rest of medledger uses rand_core 0.6.
struct Rng09<'a, R>(&'a mut R);

impl<R: CryptoRngCore> rand_core_09::RngCore for Rng09<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
}

impl<R: CryptoRngCore> rand_core_09::CryptoRng for Rng09<'_, R> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out fixed bytes: HPKE's ephemeral key is DeriveKeyPair(ikmE) of what it reads.
    struct Fixed(Vec<u8>);
    impl rand_core::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            let taken: Vec<u8> = self.0.drain(..dest.len()).collect();
            dest.copy_from_slice(&taken);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand_core::CryptoRng for Fixed {}

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 9180 test vector for mode 0 (base), KEM 0x0020, KDF 0x0001, AEAD 0x0002 — exactly
    /// our suite — from the CFRG test-vectors file, first encryption (sequence 0).
    #[test]
    fn rfc9180_known_answer() {
        let ikm_e = h("2cd7c601cefb3d42a62b04b7a9041494c06c7843818e0ce28a8f704ae7ab20f9");
        let sk_r = h("497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d");
        let pk_r = h("430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c");
        let info = h("4f6465206f6e2061204772656369616e2055726e");
        let aad = h("436f756e742d30");
        let pt = h("4265617574792069732074727574682c20747275746820626561757479");
        let enc = h("6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256");
        let ct = h(
            "e5d84cd531cfb583096e7cfa9641bd3079cf3a91cda813c52deb5f512be9931980a41de125a925cdad859d5b7a",
        );

        let recipient = EncryptionKey::from_bytes(sk_r.clone().try_into().unwrap());
        assert_eq!(recipient.public_key().to_bytes().to_vec(), pk_r);
        let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&pk_r).unwrap();
        let (got_enc, got_ct) =
            hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256, _>(
                &OpModeS::Base,
                &pk,
                &info,
                &pt,
                &aad,
                &mut Rng09(&mut Fixed(ikm_e)),
            )
            .unwrap();
        assert_eq!(got_enc.to_bytes().to_vec(), enc);
        assert_eq!(got_ct, ct);

        let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&sk_r).unwrap();
        let encapped = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
        let opened = hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &encapped,
            &info,
            &ct,
            &aad,
        )
        .unwrap();
        assert_eq!(opened, pt);
    }

    /// Our framing of a wrapped key, pinned: the same ephemeral input gives the same bytes.
    #[test]
    fn wrapped_file_key_known_answer() {
        let recipient = EncryptionKey::from_bytes([7; 32]);
        let wrapped = wrap_key(
            &recipient.public_key(),
            &[0x42; 32],
            WrapContext::FileKey { item_id: "item-1" },
            &mut Fixed(vec![9; 32]),
        )
        .unwrap();
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        assert_eq!(
            hex::encode(&wrapped),
            include_str!("../testdata/wrapped-file-key.hex").trim()
        );
        let key = unwrap_key(
            &recipient,
            &wrapped,
            WrapContext::FileKey { item_id: "item-1" },
        )
        .unwrap();
        assert_eq!(*key, [0x42; 32]);
    }

    #[test]
    fn wrong_key_context_or_bytes_do_not_open() {
        let mut rng = rand_core::OsRng;
        let recipient = EncryptionKey::generate(&mut rng);
        let other = EncryptionKey::generate(&mut rng);
        let context = WrapContext::CategoryKey {
            pseudonym: &[1; 32],
            category: "lab-results",
            epoch: 1,
        };
        let wrapped = wrap_key(&recipient.public_key(), &[3; 32], context, &mut rng).unwrap();
        assert_eq!(*unwrap_key(&recipient, &wrapped, context).unwrap(), [3; 32]);

        assert_eq!(unwrap_key(&other, &wrapped, context), Err(WrapError::Open));
        for moved in [
            WrapContext::CategoryKey {
                pseudonym: &[2; 32],
                category: "lab-results",
                epoch: 1,
            },
            WrapContext::CategoryKey {
                pseudonym: &[1; 32],
                category: "radiation-doses",
                epoch: 1,
            },
            WrapContext::CategoryKey {
                pseudonym: &[1; 32],
                category: "lab-results",
                epoch: 2,
            },
            WrapContext::FileKey {
                item_id: "lab-results",
            },
        ] {
            assert_eq!(
                unwrap_key(&recipient, &wrapped, moved),
                Err(WrapError::Open),
                "{moved:?}"
            );
        }
        for i in 0..wrapped.len() {
            let mut flipped = wrapped.clone();
            flipped[i] ^= 0x01;
            assert!(
                unwrap_key(&recipient, &flipped, context).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(
            unwrap_key(&recipient, &wrapped[..79], context),
            Err(WrapError::Length(79))
        );
        // Two wraps of the same key differ (fresh ephemeral key each time).
        let again = wrap_key(&recipient.public_key(), &[3; 32], context, &mut rng).unwrap();
        assert_ne!(wrapped, again);
    }

    #[test]
    fn derive_keypair_matches_rfc9180() {
        // The same RFC 9180 vector: ikmR → skRm.
        let key = derive_encryption_key(&h(
            "dac33b0e9db1b59dbbea58d59a14e7b5896e9bdf98fad6891e99d1686492b9ee",
        ));
        assert_eq!(
            hex::encode(*key.to_bytes()),
            "497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d"
        );
    }
}
