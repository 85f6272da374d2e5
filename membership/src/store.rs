//! The CA's durable state in RocksDB, under `<dir>/db`.
//!
//! Column families:
//! - `identities`: name → [`IdentityRecord`]
//! - `certificates`: serial (bytes) → [`CertificateRecord`]
//! - `revocations`: sequence (u64, big-endian) → encoded `SignedRevocationRecord`
//! - `meta`: counters (`revocation_sequence`, `crl_number`)
//!
//! Every change is one synced `WriteBatch`: a registration, an enrollment or a revocation is
//! on disk, whole, before the caller hears of it.

use std::path::Path;

use medledger_proto::v1;
use prost::Message;
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

const CF_IDENTITIES: &str = "identities";
const CF_CERTIFICATES: &str = "certificates";
const CF_REVOCATIONS: &str = "revocations";
const CF_META: &str = "meta";
const KEY_REVOCATION_SEQUENCE: &[u8] = b"revocation_sequence";
const KEY_CRL_NUMBER: &[u8] = b"crl_number";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("a stored record is corrupt ({what}): {why}")]
    Corrupt { what: &'static str, why: String },
}

/// A registered identity. The enrollment secret is kept only as a salted hash.
#[derive(Clone, PartialEq, Message)]
pub struct IdentityRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub role: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<v1::Attribute>,
    #[prost(uint32, tag = "4")]
    pub max_enrollments: u32,
    #[prost(uint32, tag = "5")]
    pub enrollments_used: u32,
    #[prost(bytes = "vec", tag = "6")]
    pub secret_salt: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    pub secret_hash: Vec<u8>,
    #[prost(bool, tag = "8")]
    pub revoked: bool,
    #[prost(int64, tag = "9")]
    pub registered_at_unix: i64,
    #[prost(bytes = "vec", repeated, tag = "10")]
    pub certificate_serials: Vec<Vec<u8>>,
    #[prost(string, tag = "11")]
    pub registered_by: String,
    /// For a record credential (issue 20 item 2): the enrollment it was issued to. The one
    /// place that links the two; never listed and never published (see
    /// `CertificateAuthority::issue_record_credential`). Empty for every other identity.
    #[prost(string, tag = "12")]
    pub record_of: String,
    /// For an enrollment: how many record credentials it has been issued (bounded by
    /// `MAX_RECORD_CREDENTIALS`).
    #[prost(uint32, tag = "13")]
    pub record_credentials: u32,
}

/// A certificate the CA issued.
#[derive(Clone, PartialEq, Message)]
pub struct CertificateRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub serial: Vec<u8>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(bytes = "vec", tag = "3")]
    pub der: Vec<u8>,
    #[prost(int64, tag = "4")]
    pub not_before_unix: i64,
    #[prost(int64, tag = "5")]
    pub not_after_unix: i64,
    #[prost(bool, tag = "6")]
    pub revoked: bool,
    #[prost(enumeration = "v1::RevocationReason", tag = "7")]
    pub revocation_reason: i32,
    #[prost(int64, tag = "8")]
    pub revoked_at_unix: i64,
}

/// Writes gathered for one atomic, synced commit.
#[derive(Default)]
pub struct Changes {
    identities: Vec<IdentityRecord>,
    certificates: Vec<CertificateRecord>,
    revocations: Vec<(u64, v1::SignedRevocationRecord)>,
    counters: Vec<(&'static [u8], u64)>,
}

impl Changes {
    /// Adds `other`'s changes after these (a later put of the same key wins).
    pub fn extend(&mut self, other: Changes) {
        self.identities.extend(other.identities);
        self.certificates.extend(other.certificates);
        self.revocations.extend(other.revocations);
        self.counters.extend(other.counters);
    }
    pub fn put_identity(&mut self, record: IdentityRecord) {
        self.identities.push(record);
    }
    pub fn put_certificate(&mut self, record: CertificateRecord) {
        self.certificates.push(record);
    }
    pub fn put_revocation(&mut self, sequence: u64, record: v1::SignedRevocationRecord) {
        self.revocations.push((sequence, record));
        self.counters.push((KEY_REVOCATION_SEQUENCE, sequence));
    }
    pub fn set_crl_number(&mut self, number: u64) {
        self.counters.push((KEY_CRL_NUMBER, number));
    }
}

pub struct Store {
    db: DB,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = [CF_IDENTITIES, CF_CERTIFICATES, CF_REVOCATIONS, CF_META]
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        Ok(Store {
            db: DB::open_cf_descriptors(&options, path, families)?,
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created when the store opens")
    }

    pub fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for record in &changes.identities {
            batch.put_cf(
                self.cf(CF_IDENTITIES),
                record.name.as_bytes(),
                record.encode_to_vec(),
            );
        }
        for record in &changes.certificates {
            batch.put_cf(
                self.cf(CF_CERTIFICATES),
                &record.serial,
                record.encode_to_vec(),
            );
        }
        for (sequence, record) in &changes.revocations {
            batch.put_cf(
                self.cf(CF_REVOCATIONS),
                sequence.to_be_bytes(),
                record.encode_to_vec(),
            );
        }
        for (key, value) in &changes.counters {
            batch.put_cf(self.cf(CF_META), key, value.to_be_bytes());
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    pub fn identity(&self, name: &str) -> Result<Option<IdentityRecord>, StoreError> {
        self.get_decoded(CF_IDENTITIES, name.as_bytes(), "identity")
    }

    pub fn certificate(&self, serial: &[u8]) -> Result<Option<CertificateRecord>, StoreError> {
        self.get_decoded(CF_CERTIFICATES, serial, "certificate")
    }

    /// Identities with a name greater than `after`, in name order, at most `limit`, leaving
    /// out every name that begins with `skip` (the record credentials' range: one seek past
    /// it, however many credentials it holds, so that a page costs `limit` reads).
    pub fn identities_after(
        &self,
        after: &str,
        limit: usize,
        skip: &str,
    ) -> Result<Vec<IdentityRecord>, StoreError> {
        let mut out = Vec::new();
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_IDENTITIES));
        iter.seek(after.as_bytes());
        // The first key past every key that begins with `skip`.
        let past_skip = prefix_successor(skip.as_bytes());
        while out.len() < limit {
            let Some(key) = iter.key() else { break };
            if key == after.as_bytes() {
                iter.next();
                continue;
            }
            if !skip.is_empty() && key.starts_with(skip.as_bytes()) {
                match &past_skip {
                    Some(past) => iter.seek(past),
                    None => break,
                }
                continue;
            }
            let value = iter.value().unwrap_or_default();
            out.push(decode(value, "identity")?);
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// Revocation records with a sequence greater than `since`, in order, at most `limit`.
    pub fn revocations_since(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<v1::SignedRevocationRecord>, StoreError> {
        let start = since.saturating_add(1).to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_REVOCATIONS), mode)
            .take(limit)
        {
            let (_, value) = item?;
            out.push(decode(&value, "revocation record")?);
        }
        Ok(out)
    }

    pub fn revocation_sequence(&self) -> Result<u64, StoreError> {
        self.counter(KEY_REVOCATION_SEQUENCE)
    }

    pub fn crl_number(&self) -> Result<u64, StoreError> {
        self.counter(KEY_CRL_NUMBER)
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.db.get_cf(self.cf(CF_META), key)? {
            None => Ok(0),
            Some(bytes) => {
                let array: [u8; 8] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt {
                            what: "counter",
                            why: format!("{} bytes instead of 8", bytes.len()),
                        })?;
                Ok(u64::from_be_bytes(array))
            }
        }
    }

    fn get_decoded<M: Message + Default>(
        &self,
        cf: &str,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<M>, StoreError> {
        self.db
            .get_cf(self.cf(cf), key)?
            .map(|bytes| decode(&bytes, what))
            .transpose()
    }
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        what,
        why: e.to_string(),
    })
}

/// The smallest byte string greater than every string that begins with `prefix`, or `None`
/// if there is none (an empty prefix, or one of 0xFF bytes only).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn the_successor_of_a_prefix_follows_every_key_that_begins_with_it() {
        assert_eq!(prefix_successor(b"record-"), Some(b"record.".to_vec()));
        assert_eq!(prefix_successor(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
