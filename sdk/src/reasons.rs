//! An emergency access's reason, sealed on the clinician's machine to the record's owner and
//! the auditors (issue 20 item 4, docs/adr/0013), and opened by them.
//!
//! The readers come from the ledger (`reason_readers`), agreed by f+1 peers: a lying peer
//! cannot slip its own key in. The chaincode refuses a reason sealed to anyone else.

use medledger_crypto::{
    EncryptionKey, EncryptionPublicKey, SealError, SealedText, WrapContext, open_text, seal_text,
};
use medledger_proto::v1;

use crate::error::ClientError;
use crate::peer::PeerSet;

/// What a listing shows for a sealed reason kept as private data (ledger format 7) that no
/// peer asked gave, or gave only in a form that does not match its commitment.
pub const UNAVAILABLE: &str = "(sealed reason not given by any peer asked)";

/// What a listing shows for a sealed reason kept as private data whose committed value is
/// not a well-formed sealed text: the clinician's transaction committed it as their reason.
pub const NOT_A_SEALED_TEXT: &str =
    "(the clinician committed, as the reason, a value that is not a well-formed sealed text)";

/// What a listing shows for a sealed reason whose query the peers refused, or none
/// answered: the refusal's kind ([`ClientError::kind`]), never a peer's words (one peer's
/// refusal can be all there is, and its message is its own).
pub fn not_available(kind: &str) -> String {
    format!("(sealed reason not available: {kind})")
}

/// Longest reason, in UTF-8 bytes (the chaincode's `MAX_REASON_LEN`).
pub const MAX_REASON_BYTES: usize = medledger_chaincode::limits::MAX_REASON_LEN;

fn context<'a>(pseudonym: &'a [u8], category: &'a str, author: &'a str) -> WrapContext<'a> {
    WrapContext::TextKey {
        pseudonym,
        category,
        author,
    }
}

/// Whether `c` could make a listing lie about itself: a control character (a line break, an
/// escape sequence), a line or paragraph separator, a direction mark or override, or an
/// invisible character (zero-width, word joiner, byte-order mark, tags).
fn disruptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// `words` as a listing may show them: every [`disruptive`] character replaced by U+FFFD.
pub fn neutralised(words: &str) -> String {
    words
        .chars()
        .map(|c| if disruptive(c) { '\u{fffd}' } else { c })
        .collect()
}

/// The readers of a reason about `pseudonym`'s record, as f+1 peers agree: the record's
/// owner key (when it has one) and every named auditor's.
///
/// # Errors
/// As [`PeerSet::query_agreed`]; [`ClientError::Protocol`] for a key that is not 32 bytes.
pub async fn readers(
    peers: &PeerSet,
    pseudonym: &[u8],
) -> Result<Vec<EncryptionPublicKey>, ClientError> {
    let answer: v1::ReasonReadersResult = peers
        .query_agreed_as(
            "reason_readers",
            v1::PatientArgs {
                pseudonym: pseudonym.to_vec(),
            },
        )
        .await?;
    let key = |bytes: &[u8]| {
        EncryptionPublicKey::from_slice(bytes)
            .ok_or_else(|| ClientError::Protocol("reason_readers: a key is not 32 bytes".into()))
    };
    let mut readers = Vec::with_capacity(1 + answer.auditor_keys.len());
    if !answer.owner_encryption_key.is_empty() {
        readers.push(key(&answer.owner_encryption_key)?);
    }
    for auditor in &answer.auditor_keys {
        readers.push(key(auditor)?);
    }
    Ok(readers)
}

/// Seals `reason`, written by `author` (the clinician's enrollment name, as the ledger will
/// record them), about `category` of `pseudonym`'s record to `readers`.
///
/// # Errors
/// [`ClientError::Usage`] for an empty or over-long reason, one holding control characters
/// or bidirectional overrides, or when there is nobody to seal it to (a record registered
/// before records had a key, on a network naming no auditor); [`ClientError::Protocol`] for
/// a reader key nothing can be sealed to.
pub fn seal(
    reason: &str,
    pseudonym: &[u8],
    category: &str,
    author: &str,
    readers: &[EncryptionPublicKey],
) -> Result<v1::SealedText, ClientError> {
    if reason.chars().any(disruptive) {
        return Err(ClientError::Usage(
            "the reason holds a control character or a direction override; write it on one line"
                .into(),
        ));
    }
    if reason.trim().is_empty() {
        return Err(ClientError::Usage(
            "say why emergency access is needed (--reason)".into(),
        ));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(ClientError::Usage(format!(
            "the reason is {} bytes; at most {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    if readers.is_empty() {
        return Err(ClientError::Usage(
            "this record has no key to seal the reason to and the network names no auditor: \
             an administrator must name one (`medledger admin config propose --add-auditor`)"
                .into(),
        ));
    }
    let sealed = seal_text(
        reason,
        readers,
        context(pseudonym, category, author),
        &mut rand_core::OsRng,
    )
    .map_err(|e| ClientError::Protocol(format!("sealing the reason: {e}")))?;
    Ok(to_proto(&sealed))
}

/// Opens a reason `author` wrote about `category` of `pseudonym`'s record with the first of
/// `keys` it is sealed to (a wallet's key ring, or the record's key). The words are the
/// writer's: a caller that prints them uses [`shown`], which neutralises control characters.
///
/// # Errors
/// [`SealError::NotAReader`] when none of `keys` is a reader; the others when it does not
/// open (tampered, moved from another record, copied under another author, or a content key
/// other than the committed one).
pub fn open<'k>(
    sealed: &v1::SealedText,
    pseudonym: &[u8],
    category: &str,
    author: &str,
    keys: impl IntoIterator<Item = &'k EncryptionKey>,
) -> Result<String, SealError> {
    let sealed = from_proto(sealed);
    for key in keys {
        match open_text(key, &sealed, context(pseudonym, category, author)) {
            Err(SealError::NotAReader) => continue,
            other => return other,
        }
    }
    Err(SealError::NotAReader)
}

/// How a listing shows a sealed reason: the words when one of `keys` opens it (control
/// characters and direction overrides replaced by U+FFFD, so a reason cannot forge lines of
/// the listing), else why not.
pub fn shown<'k>(
    sealed: Option<&v1::SealedText>,
    pseudonym: &[u8],
    category: &str,
    author: &str,
    keys: impl IntoIterator<Item = &'k EncryptionKey>,
) -> String {
    match sealed {
        None => String::new(),
        Some(sealed) => match open(sealed, pseudonym, category, author, keys) {
            Ok(words) => neutralised(&words),
            Err(SealError::NotAReader) => "(reason not sealed to any of your keys)".into(),
            Err(e) => format!("(reason does not open: {e})"),
        },
    }
}

fn to_proto(sealed: &SealedText) -> v1::SealedText {
    v1::SealedText {
        ciphertext: sealed.ciphertext.clone(),
        key_commitment: sealed.key_commitment.clone(),
        readers: sealed
            .readers
            .iter()
            .map(|(key, wrapped)| v1::SealedTextReader {
                public_key: key.to_bytes().to_vec(),
                wrapped_key: wrapped.clone(),
            })
            .collect(),
    }
}

fn from_proto(sealed: &v1::SealedText) -> SealedText {
    SealedText {
        ciphertext: sealed.ciphertext.clone(),
        key_commitment: sealed.key_commitment.clone(),
        readers: sealed
            .readers
            .iter()
            .filter_map(|r| {
                Some((
                    EncryptionPublicKey::from_slice(&r.public_key)?,
                    r.wrapped_key.clone(),
                ))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_opens_for_its_readers_only() {
        let mut rng = rand_core::OsRng;
        let owner = EncryptionKey::generate(&mut rng);
        let auditor = EncryptionKey::generate(&mut rng);
        let clinician = EncryptionKey::generate(&mut rng);
        let readers = [owner.public_key(), auditor.public_key()];
        let sealed = seal("code blue", b"p", "labs", "dr.er", &readers).unwrap();
        assert_eq!(
            open(&sealed, b"p", "labs", "dr.er", [&owner]).unwrap(),
            "code blue"
        );
        assert_eq!(
            open(&sealed, b"p", "labs", "dr.er", [&clinician, &auditor]).unwrap(),
            "code blue",
            "a key ring is tried key by key"
        );
        assert_eq!(
            open(&sealed, b"p", "labs", "dr.er", [&clinician]),
            Err(SealError::NotAReader)
        );
        assert!(
            open(&sealed, b"p", "labs", "dr.x", [&owner]).is_err(),
            "another author"
        );
        assert!(shown(Some(&sealed), b"p", "labs", "dr.er", [&clinician]).contains("sealed"));
        assert!(seal("  ", b"p", "labs", "dr.er", &readers).is_err());
        assert!(
            seal(
                &"x".repeat(MAX_REASON_BYTES + 1),
                b"p",
                "labs",
                "dr.er",
                &readers
            )
            .is_err()
        );
        assert!(seal("code blue", b"p", "labs", "dr.er", &[]).is_err());
    }

    /// Red team of issue 20 item 4: a reason cannot forge lines in the listings that show it.
    #[test]
    fn a_reason_cannot_forge_lines_of_a_listing() {
        let mut rng = rand_core::OsRng;
        let owner = EncryptionKey::generate(&mut rng);
        for forged in [
            "ok\n  #9 2026-01-01 dr.x access",
            "ok\u{1b}[2K",
            "ok\u{202e}kO",
        ] {
            assert!(seal(forged, b"p", "labs", "dr.er", &[owner.public_key()]).is_err());
            // Sealed by another client all the same: shown neutralised.
            let raw = seal_text(
                forged,
                &[owner.public_key()],
                context(b"p", "labs", "dr.er"),
                &mut rng,
            )
            .unwrap();
            let words = shown(Some(&to_proto(&raw)), b"p", "labs", "dr.er", [&owner]);
            assert!(!words.chars().any(disruptive), "{words:?}");
            assert!(words.starts_with("ok"));
        }
    }
}
