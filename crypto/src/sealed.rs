//! Free text sealed to several readers: the words a clinician gives for an emergency access,
//! readable by the record's owner and the auditors, and by nobody else who reads the ledger.
//!
//! A fresh 32-byte content key encrypts the text once with AES-256-GCM (nonce 0: the key is
//! used for this one text only); the content key is wrapped (HPKE, RFC 9180 base mode,
//! [`crate::wrap_key`]) to each reader's X25519 key, bound to the record, the category the
//! text is about and its author ([`WrapContext::TextKey`]), so a sealed text moved to another
//! record or category, or copied under another name, does not open. The text's associated
//! data is the same binding. AES-GCM alone does not commit to its key: a writer could wrap
//! different content keys to different readers so that each opens other words. The sealed
//! text therefore carries `SHA-256("medledger/v1/text-key-commitment" ‖ content key ‖
//! binding)`, checked before opening, so every reader who opens it reads the same words.
//!
//! The ledger cannot check that a sealed text says anything, nor that every wrapped key
//! opens: it checks who it is sealed to. A clinician who seals garbage is identified by the
//! transaction's signature, and a reader who finds their copy does not open can say so.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::encryption::{EncryptionKey, EncryptionPublicKey};
use crate::wrap::{WRAPPED_KEY_LEN, WrapContext, WrapError, unwrap_key, wrap_key};

/// Length of the AES-256-GCM tag that ends a sealed text's ciphertext.
pub const SEALED_TEXT_TAG_LEN: usize = 16;

/// Length of a sealed text's key commitment.
pub const KEY_COMMITMENT_LEN: usize = 32;

const COMMITMENT_DOMAIN: &[u8] = b"medledger/v1/text-key-commitment";

/// A text sealed by [`seal_text`]: the ciphertext (the text's length plus
/// [`SEALED_TEXT_TAG_LEN`]), the commitment to its content key ([`KEY_COMMITMENT_LEN`]
/// bytes) and, per reader, their public key and the content key wrapped to it
/// ([`WRAPPED_KEY_LEN`] bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedText {
    pub ciphertext: Vec<u8>,
    pub key_commitment: Vec<u8>,
    pub readers: Vec<(EncryptionPublicKey, Vec<u8>)>,
}

fn key_commitment(content_key: &[u8; 32], aad: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMITMENT_DOMAIN);
    h.update(content_key);
    h.update(aad);
    h.finalize().into()
}

/// Why a sealed text did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the text is not sealed to this key")]
    NotAReader,
    #[error("the text's key: {0}")]
    Key(#[from] WrapError),
    #[error(
        "the sealed text does not open for this record, category and author (tampered or moved)"
    )]
    Open,
    #[error("the key wrapped to this reader is not the one the text was sealed with")]
    Commitment,
    #[error("the sealed text is not UTF-8")]
    NotText,
}

fn nonce() -> Nonce<aes_gcm::aead::consts::U12> {
    Nonce::from([0u8; 12])
}

/// Seals `text` to every key of `readers` (at least one; duplicates are sealed once) for
/// `context`, which must be a [`WrapContext::TextKey`].
///
/// # Errors
/// [`WrapError::BadPublicKey`] when a reader's key is not a usable X25519 key.
pub fn seal_text(
    text: &str,
    readers: &[EncryptionPublicKey],
    context: WrapContext<'_>,
    rng: &mut impl CryptoRngCore,
) -> Result<SealedText, WrapError> {
    let mut content_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(content_key.as_mut());
    let cipher = Aes256Gcm::new_from_slice(content_key.as_ref()).expect("32-byte key");
    let aad = context.aad();
    let ciphertext = cipher
        .encrypt(
            &nonce(),
            Payload {
                msg: text.as_bytes(),
                aad: &aad,
            },
        )
        .expect("AES-GCM encrypts any text shorter than 64 GiB");
    let mut sealed = SealedText {
        ciphertext,
        key_commitment: key_commitment(&content_key, &aad).to_vec(),
        readers: Vec::with_capacity(readers.len()),
    };
    for reader in readers {
        if sealed.readers.iter().any(|(k, _)| k == reader) {
            continue;
        }
        let wrapped = wrap_key(reader, &content_key, context, rng)?;
        sealed.readers.push((*reader, wrapped));
    }
    Ok(sealed)
}

/// Opens `sealed` with `private`, one of its readers' keys, for the same `context`.
///
/// # Errors
/// [`SealError::NotAReader`] when `private`'s public key is not among the readers;
/// [`SealError::Commitment`] when the key wrapped to it is not the committed one; the others
/// when the wrapped key or the text does not open (tampered, or another record's).
pub fn open_text(
    private: &EncryptionKey,
    sealed: &SealedText,
    context: WrapContext<'_>,
) -> Result<String, SealError> {
    let public = private.public_key();
    let (_, wrapped) = sealed
        .readers
        .iter()
        .find(|(k, _)| *k == public)
        .ok_or(SealError::NotAReader)?;
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(WrapError::Length(wrapped.len()).into());
    }
    let content_key = unwrap_key(private, wrapped, context)?;
    let aad = context.aad();
    if !bool::from(
        key_commitment(&content_key, &aad)
            .as_slice()
            .ct_eq(&sealed.key_commitment),
    ) {
        return Err(SealError::Commitment);
    }
    let cipher = Aes256Gcm::new_from_slice(content_key.as_ref()).expect("32-byte key");
    let text = cipher
        .decrypt(
            &nonce(),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Open)?;
    String::from_utf8(text).map_err(|_| SealError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(pseudonym: &'a [u8], category: &'a str) -> WrapContext<'a> {
        WrapContext::TextKey {
            pseudonym,
            category,
            author: "dr.er",
        }
    }

    #[test]
    fn every_reader_opens_and_nobody_else() {
        let mut rng = rand_core::OsRng;
        let owner = EncryptionKey::generate(&mut rng);
        let auditor = EncryptionKey::generate(&mut rng);
        let outsider = EncryptionKey::generate(&mut rng);
        let readers = [owner.public_key(), auditor.public_key(), owner.public_key()];
        let sealed = seal_text(
            "unconscious on arrival",
            &readers,
            context(b"record", "labs"),
            &mut rng,
        )
        .unwrap();
        assert_eq!(sealed.readers.len(), 2, "a key named twice is sealed once");
        assert_eq!(sealed.ciphertext.len(), 22 + SEALED_TEXT_TAG_LEN);
        assert!(
            !sealed.ciphertext.windows(11).any(|w| w == b"unconscious"),
            "no words in clear"
        );
        for key in [&owner, &auditor] {
            assert_eq!(
                open_text(key, &sealed, context(b"record", "labs")).unwrap(),
                "unconscious on arrival"
            );
        }
        assert_eq!(
            open_text(&outsider, &sealed, context(b"record", "labs")),
            Err(SealError::NotAReader)
        );
    }

    #[test]
    fn a_sealed_text_moved_or_tampered_does_not_open() {
        let mut rng = rand_core::OsRng;
        let owner = EncryptionKey::generate(&mut rng);
        let sealed = seal_text(
            "code blue",
            &[owner.public_key()],
            context(b"record", "labs"),
            &mut rng,
        )
        .unwrap();
        assert!(open_text(&owner, &sealed, context(b"other", "labs")).is_err());
        assert!(open_text(&owner, &sealed, context(b"record", "imaging")).is_err());
        let copied = WrapContext::TextKey {
            pseudonym: b"record",
            category: "labs",
            author: "dr.other",
        };
        assert!(
            open_text(&owner, &sealed, copied).is_err(),
            "copied under another clinician's name"
        );
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(
            open_text(&owner, &flipped, context(b"record", "labs")),
            Err(SealError::Open)
        );
        let mut short = sealed.clone();
        short.readers[0].1.truncate(10);
        assert!(matches!(
            open_text(&owner, &short, context(b"record", "labs")),
            Err(SealError::Key(WrapError::Length(10)))
        ));
        // Another text's content key wrapped under this one's ciphertext does not open it.
        let other = seal_text(
            "code blue",
            &[owner.public_key()],
            context(b"record", "labs"),
            &mut rng,
        )
        .unwrap();
        let mut swapped = sealed;
        swapped.readers = other.readers;
        assert_eq!(
            open_text(&owner, &swapped, context(b"record", "labs")),
            Err(SealError::Commitment)
        );
    }

    /// Two readers cannot be handed different words: a content key other than the committed
    /// one is refused before decryption.
    #[test]
    fn every_reader_opens_the_same_words() {
        let mut rng = rand_core::OsRng;
        let owner = EncryptionKey::generate(&mut rng);
        let auditor = EncryptionKey::generate(&mut rng);
        let honest = seal_text(
            "code blue",
            &[owner.public_key(), auditor.public_key()],
            context(b"record", "labs"),
            &mut rng,
        )
        .unwrap();
        // A writer wraps another content key to the auditor (one that, without the
        // commitment, could decrypt other words from a crafted ciphertext).
        let other_key = [7u8; 32];
        let mut forked = honest.clone();
        forked.readers[1].1 = wrap_key(
            &auditor.public_key(),
            &other_key,
            context(b"record", "labs"),
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            open_text(&owner, &forked, context(b"record", "labs")).unwrap(),
            "code blue"
        );
        assert_eq!(
            open_text(&auditor, &forked, context(b"record", "labs")),
            Err(SealError::Commitment)
        );
    }

    #[test]
    fn small_order_keys_are_found() {
        let mut rng = rand_core::OsRng;
        assert!(EncryptionPublicKey([0; 32]).has_small_order());
        let mut one = [0; 32];
        one[0] = 1;
        assert!(EncryptionPublicKey(one).has_small_order());
        assert!(
            !EncryptionKey::generate(&mut rng)
                .public_key()
                .has_small_order()
        );
        assert!(matches!(
            seal_text(
                "x",
                &[EncryptionPublicKey([0; 32])],
                context(b"r", "c"),
                &mut rng
            ),
            Err(WrapError::BadPublicKey)
        ));
    }
}
