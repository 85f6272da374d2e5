//! The encrypted clinical file format: a header, then AES-256-GCM chunks in the STREAM
//! construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption and
//! its Nonce-Reuse Misuse-Resistance", CRYPTO 2015).
//!
//! ```text
//! header  = magic "MLF1" ‖ version (1) ‖ algorithm (1 = AES-256-GCM STREAM)
//!           ‖ chunk size (u32 BE) ‖ nonce prefix (7 random bytes)
//!           ‖ item id length (u8) ‖ item id (UTF-8, 1..=64 bytes)
//! chunk i = AES-256-GCM(key, nonce = prefix ‖ i (u32 BE) ‖ last (0 or 1),
//!                       aad = SHA-256(header), plaintext_i) — ciphertext ‖ 16-byte tag
//! ```
//!
//! Every chunk but the last holds exactly `chunk size` plaintext bytes; the last holds 0 to
//! `chunk size` (an empty file is one empty final chunk). So a reader detects: a flipped bit
//! (tag), chunks reordered or dropped (the counter), truncation (no final chunk), extension
//! (bytes after the final chunk), and a header swapped from another file or item (the header
//! hash in every chunk's associated data). Each file has its own random key ([`FileKey`]).
//!
//! Pure: no I/O beyond the `Read`/`Write` the caller passes, randomness only from the caller.

use std::io::{Read, Write};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const FILE_MAGIC: &[u8; 4] = b"MLF1";
pub const FILE_VERSION: u8 = 1;
pub const ALGORITHM_AES256GCM_STREAM: u8 = 1;
pub const TAG_LEN: usize = 16;
pub const NONCE_PREFIX_LEN: usize = 7;
pub const MAX_ITEM_ID_LEN: usize = 64;
/// Default plaintext bytes per chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
pub const MIN_CHUNK_SIZE: u32 = 16;
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Largest header: fixed part plus the longest item id.
pub const MAX_HEADER_LEN: usize = 4 + 1 + 1 + 4 + NONCE_PREFIX_LEN + 1 + MAX_ITEM_ID_LEN;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not a medledger encrypted file: {0}")]
    BadHeader(String),
    #[error("unsupported file format version {0}")]
    UnsupportedVersion(u8),
    #[error("chunk {0} is tampered with or was encrypted under another key or header")]
    Tampered(u32),
    #[error("the file is truncated: it ends before its final chunk")]
    Truncated,
    #[error("the file has bytes after its final chunk")]
    TrailingData,
    #[error("the file has more chunks than the format allows")]
    TooManyChunks,
    #[error("the file belongs to item {found:?}, not {expected:?}")]
    WrongItem { expected: String, found: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A file's data encryption key: random, used for one file only, zeroized when dropped.
pub struct FileKey(Zeroizing<[u8; 32]>);

impl FileKey {
    pub fn generate(rng: &mut impl CryptoRngCore) -> FileKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        FileKey(key)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> FileKey {
        FileKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.as_ref()).expect("32-byte key")
    }
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub chunk_size: u32,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub item_id: String,
}

impl FileHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_HEADER_LEN);
        out.extend_from_slice(FILE_MAGIC);
        out.push(FILE_VERSION);
        out.push(ALGORITHM_AES256GCM_STREAM);
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        out.push(self.item_id.len() as u8);
        out.extend_from_slice(self.item_id.as_bytes());
        out
    }

    /// Parses a header from the start of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(FileHeader, usize), FileError> {
        let bad = |why: &str| FileError::BadHeader(why.to_string());
        if bytes.len() < 18 || &bytes[..4] != FILE_MAGIC {
            return Err(bad("no MLF1 magic"));
        }
        if bytes[4] != FILE_VERSION {
            return Err(FileError::UnsupportedVersion(bytes[4]));
        }
        if bytes[5] != ALGORITHM_AES256GCM_STREAM {
            return Err(bad("unknown algorithm"));
        }
        let chunk_size = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(bad("chunk size out of range"));
        }
        let nonce_prefix: [u8; NONCE_PREFIX_LEN] = bytes[10..17].try_into().expect("7 bytes");
        let id_len = bytes[17] as usize;
        if id_len == 0 || id_len > MAX_ITEM_ID_LEN {
            return Err(bad("item id length out of range"));
        }
        let end = 18 + id_len;
        let id = bytes.get(18..end).ok_or_else(|| bad("truncated header"))?;
        let item_id = std::str::from_utf8(id)
            .map_err(|_| bad("item id is not UTF-8"))?
            .to_string();
        Ok((
            FileHeader {
                chunk_size,
                nonce_prefix,
                item_id,
            },
            end,
        ))
    }

    fn validate(&self) -> Result<(), FileError> {
        if self.item_id.is_empty() || self.item_id.len() > MAX_ITEM_ID_LEN {
            return Err(FileError::BadHeader(format!(
                "an item id is 1 to {MAX_ITEM_ID_LEN} bytes"
            )));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(FileError::BadHeader("chunk size out of range".into()));
        }
        Ok(())
    }
}

fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Encrypts one file, chunk by chunk.
pub struct FileEncryptor {
    cipher: Aes256Gcm,
    header: FileHeader,
    header_hash: [u8; 32],
    counter: u32,
    finished: bool,
}

impl FileEncryptor {
    /// A new encryptor for `item_id`; the header to write first is [`Self::header_bytes`].
    pub fn new(
        key: &FileKey,
        item_id: &str,
        chunk_size: u32,
        rng: &mut impl CryptoRngCore,
    ) -> Result<FileEncryptor, FileError> {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        rng.fill_bytes(&mut nonce_prefix);
        Self::with_header(
            key,
            FileHeader {
                chunk_size,
                nonce_prefix,
                item_id: item_id.to_string(),
            },
        )
    }

    /// An encryptor for a given header (known-answer tests).
    pub fn with_header(key: &FileKey, header: FileHeader) -> Result<FileEncryptor, FileError> {
        header.validate()?;
        let header_hash = Sha256::digest(header.encode()).into();
        Ok(FileEncryptor {
            cipher: key.cipher(),
            header,
            header_hash,
            counter: 0,
            finished: false,
        })
    }

    pub fn header_bytes(&self) -> Vec<u8> {
        self.header.encode()
    }

    pub fn chunk_size(&self) -> usize {
        self.header.chunk_size as usize
    }

    /// Encrypts the next chunk: exactly `chunk_size` bytes unless `last`.
    pub fn encrypt_chunk(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, FileError> {
        assert!(!self.finished, "no chunk after the final one");
        assert!(
            plaintext.len() == self.chunk_size() || (last && plaintext.len() <= self.chunk_size()),
            "only the final chunk may be short"
        );
        let n = nonce(&self.header.nonce_prefix, self.counter, last);
        let out = self
            .cipher
            .encrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: plaintext,
                    aad: &self.header_hash,
                },
            )
            .expect("AES-GCM encryption of a bounded chunk cannot fail");
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(FileError::TooManyChunks)?;
        self.finished = last;
        Ok(out)
    }

    /// Encrypts all of `input` to `output` (header included); returns the bytes written.
    pub fn encrypt_stream(
        mut self,
        input: &mut impl Read,
        output: &mut impl Write,
    ) -> Result<u64, FileError> {
        let header = self.header_bytes();
        output.write_all(&header)?;
        let mut written = header.len() as u64;
        let size = self.chunk_size();
        let mut current = vec![0u8; size];
        let mut filled = read_full(input, &mut current)?;
        loop {
            // Look one byte ahead to know whether this chunk is the last.
            let mut next = vec![0u8; size];
            let next_filled = if filled == size {
                read_full(input, &mut next)?
            } else {
                0
            };
            let last = next_filled == 0;
            let chunk = self.encrypt_chunk(&current[..filled], last)?;
            output.write_all(&chunk)?;
            written += chunk.len() as u64;
            if last {
                return Ok(written);
            }
            current = next;
            filled = next_filled;
        }
    }
}

/// Decrypts one file, chunk by chunk.
pub struct FileDecryptor {
    cipher: Aes256Gcm,
    pub header: FileHeader,
    header_hash: [u8; 32],
    counter: u32,
    finished: bool,
}

impl FileDecryptor {
    pub fn new(key: &FileKey, header_bytes: &[u8]) -> Result<FileDecryptor, FileError> {
        let (header, len) = FileHeader::decode(header_bytes)?;
        Ok(FileDecryptor {
            cipher: key.cipher(),
            header_hash: Sha256::digest(&header_bytes[..len]).into(),
            header,
            counter: 0,
            finished: false,
        })
    }

    /// Size of a full encrypted chunk.
    pub fn encrypted_chunk_size(&self) -> usize {
        self.header.chunk_size as usize + TAG_LEN
    }

    pub fn decrypt_chunk(&mut self, chunk: &[u8], last: bool) -> Result<Vec<u8>, FileError> {
        if self.finished {
            return Err(FileError::TrailingData);
        }
        let n = nonce(&self.header.nonce_prefix, self.counter, last);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: chunk,
                    aad: &self.header_hash,
                },
            )
            .map_err(|_| FileError::Tampered(self.counter))?;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(FileError::TooManyChunks)?;
        self.finished = last;
        Ok(plaintext)
    }

    /// Does `chunk` verify as the current chunk, were it not the last?
    fn verifies_as_middle(&self, chunk: &[u8]) -> bool {
        let n = nonce(&self.header.nonce_prefix, self.counter, false);
        self.cipher
            .decrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: chunk,
                    aad: &self.header_hash,
                },
            )
            .is_ok()
    }

    /// Decrypts a whole encrypted file from `input` (header included) to `output`, for item
    /// `expected_item`. Nothing of a chunk is written before its tag verified; on error the
    /// caller must discard what was written.
    pub fn decrypt_stream(
        key: &FileKey,
        expected_item: &str,
        input: &mut impl Read,
        output: &mut impl Write,
    ) -> Result<u64, FileError> {
        let mut fixed = [0u8; 18];
        if read_full(input, &mut fixed)? < fixed.len() {
            return Err(FileError::BadHeader("shorter than a header".into()));
        }
        let id_len = fixed[17] as usize;
        let mut header = fixed.to_vec();
        let mut id = vec![0u8; id_len.min(MAX_ITEM_ID_LEN)];
        if read_full(input, &mut id)? < id.len() {
            return Err(FileError::BadHeader("truncated header".into()));
        }
        header.extend_from_slice(&id);
        let mut decryptor = FileDecryptor::new(key, &header)?;
        if decryptor.header.item_id != expected_item {
            return Err(FileError::WrongItem {
                expected: expected_item.to_string(),
                found: decryptor.header.item_id.clone(),
            });
        }
        let size = decryptor.encrypted_chunk_size();
        let mut current = vec![0u8; size];
        let mut filled = read_full(input, &mut current)?;
        let mut total = 0u64;
        loop {
            if filled < TAG_LEN {
                return Err(FileError::Truncated);
            }
            let mut next = vec![0u8; size];
            let next_filled = if filled == size {
                read_full(input, &mut next)?
            } else {
                0
            };
            let last = next_filled == 0;
            let plaintext = match decryptor.decrypt_chunk(&current[..filled], last) {
                Ok(p) => p,
                // A full chunk that fails as the final one but verifies as a middle one: the
                // file was cut off at a chunk boundary.
                Err(FileError::Tampered(_))
                    if last && filled == size && decryptor.verifies_as_middle(&current) =>
                {
                    return Err(FileError::Truncated);
                }
                Err(e) => return Err(e),
            };
            output.write_all(&plaintext)?;
            total += plaintext.len() as u64;
            if last {
                return Ok(total);
            }
            current = next;
            filled = next_filled;
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, std::io::Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(item: &str, chunk_size: u32) -> FileHeader {
        FileHeader {
            chunk_size,
            nonce_prefix: [1, 2, 3, 4, 5, 6, 7],
            item_id: item.into(),
        }
    }

    fn encrypt(key: &FileKey, h: FileHeader, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FileEncryptor::with_header(key, h)
            .unwrap()
            .encrypt_stream(&mut &plaintext[..], &mut out)
            .unwrap();
        out
    }

    fn decrypt(key: &FileKey, item: &str, file: &[u8]) -> Result<Vec<u8>, FileError> {
        let mut out = Vec::new();
        FileDecryptor::decrypt_stream(key, item, &mut &file[..], &mut out)?;
        Ok(out)
    }

    /// Computed independently with Python's `cryptography` (AESGCM) over the layout above.
    #[test]
    fn known_answer() {
        let key = FileKey::from_bytes([0x42; 32]);
        let file = encrypt(
            &key,
            header("item-1", 16),
            b"thirty-three bytes of lab result!",
        );
        assert_eq!(hex::encode(&file), KAT);
        assert_eq!(
            decrypt(&key, "item-1", &file).unwrap(),
            b"thirty-three bytes of lab result!"
        );
    }

    const KAT: &str = "4d4c463101010000001001020304050607066974656d2d315a6fd6db03fa2e8a718766cc09653e80ecbda360ad71edcdb326a910f843afd056ac487ebbf1150e2c2191c872be39a73912f7f31844327cd949f126c64af59e6cb4271800b87d6586eaad8cdf527b99cf";

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let key = FileKey::from_bytes([7; 32]);
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100] {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let file = encrypt(&key, header("it", 16), &plaintext);
            let chunks = len.div_ceil(16).max(1);
            assert_eq!(file.len(), 20 + len + chunks * TAG_LEN, "len {len}");
            assert_eq!(decrypt(&key, "it", &file).unwrap(), plaintext, "len {len}");
        }
    }

    #[test]
    fn every_tampering_is_detected() {
        let key = FileKey::from_bytes([9; 32]);
        let plaintext = vec![0x5a; 16 * 3 + 5];
        let file = encrypt(&key, header("a", 16), &plaintext);
        let hdr = 19;
        let chunk = 16 + TAG_LEN;
        // A flipped bit in the header, and anywhere after it.
        let mut f = file.clone();
        f[12] ^= 1;
        assert!(matches!(
            decrypt(&key, "a", &f),
            Err(FileError::Tampered(0))
        ));
        for i in [hdr, hdr + 20, hdr + chunk + 3, file.len() - 1] {
            let mut f = file.clone();
            f[i] ^= 1;
            assert!(
                matches!(decrypt(&key, "a", &f), Err(FileError::Tampered(_))),
                "byte {i}"
            );
        }
        // Truncation: at a chunk boundary, and mid-chunk.
        let cut = &file[..hdr + 2 * chunk];
        assert!(matches!(decrypt(&key, "a", cut), Err(FileError::Truncated)));
        let cut = &file[..hdr + chunk + 5];
        assert!(decrypt(&key, "a", cut).is_err());
        // Reordering two middle chunks.
        let mut f = file.clone();
        let (a, b) = (hdr..hdr + chunk, hdr + chunk..hdr + 2 * chunk);
        let first = f[a.clone()].to_vec();
        let second = f[b.clone()].to_vec();
        f[a].copy_from_slice(&second);
        f[b].copy_from_slice(&first);
        assert!(matches!(
            decrypt(&key, "a", &f),
            Err(FileError::Tampered(0))
        ));
        // Extension: bytes after the final chunk.
        let mut f = file.clone();
        f.extend_from_slice(&[0; 40]);
        assert!(decrypt(&key, "a", &f).is_err());
        // A header swapped for another item's (same key): every chunk fails.
        let other = encrypt(&key, header("b", 16), &plaintext);
        let mut f = other[..hdr].to_vec();
        f.extend_from_slice(&file[hdr..]);
        assert!(matches!(
            decrypt(&key, "b", &f),
            Err(FileError::Tampered(0))
        ));
        // Another item's whole file, presented as this one.
        assert!(matches!(
            decrypt(&key, "a", &other),
            Err(FileError::WrongItem { .. })
        ));
        // The wrong key.
        let wrong = FileKey::from_bytes([8; 32]);
        assert!(matches!(
            decrypt(&wrong, "a", &file),
            Err(FileError::Tampered(0))
        ));
        // Not a file at all.
        assert!(matches!(
            decrypt(&key, "a", b"hello"),
            Err(FileError::BadHeader(_))
        ));
    }
}
