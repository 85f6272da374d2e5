//! A patient's record keys, kept in the patient's wallet (`record-keys.json`, mode 0600):
//! the pseudonym key K (pseudonym = HMAC(K, "pseudonym" ‖ UII)) and one X25519 key per
//! category. The public halves go on the ledger at registration; the private halves leave
//! the wallet only wrapped (HPKE) to a grantee's enrollment key.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use medledger_crypto::{
    EncryptionKey, EncryptionPublicKey, PatientKey, SignatureDomain, WrapContext, derive_pseudonym,
    derive_record_encryption_key, derive_study_identity, derive_study_pseudonym,
    study_grant_statement, wrap_key,
};
use medledger_proto::v1;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::wallet::{Wallet, read_secret, write_secret};

const FILE: &str = "record-keys.json";

#[derive(Serialize, Deserialize)]
struct Stored {
    pseudonym: String,
    patient_key: String,
    /// category → (epoch → private key hex)
    categories: BTreeMap<String, BTreeMap<u32, String>>,
}

pub struct RecordKeys {
    path: PathBuf,
    pub pseudonym: [u8; 32],
    patient_key: PatientKey,
    categories: BTreeMap<String, BTreeMap<u32, EncryptionKey>>,
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}

impl RecordKeys {
    /// New keys for the patient identified by `uii` (e.g. a medical record number; only
    /// its pseudonym is stored). Refuses to replace existing keys.
    pub fn create(
        wallet: &Wallet,
        uii: &str,
        categories: &[&str],
    ) -> Result<RecordKeys, ClientError> {
        let path = wallet.dir.join(FILE);
        if path.exists() {
            return Err(ClientError::wallet(
                &wallet.dir,
                "already holds a patient record's keys (record-keys.json)",
            ));
        }
        let mut rng = rand_core::OsRng;
        let patient_key = PatientKey::generate(&mut rng);
        let pseudonym = derive_pseudonym(&patient_key, uii.as_bytes()).0;
        let categories = categories
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    BTreeMap::from([(1u32, EncryptionKey::generate(&mut rng))]),
                )
            })
            .collect();
        let keys = RecordKeys {
            path,
            pseudonym,
            patient_key,
            categories,
        };
        keys.save()?;
        Ok(keys)
    }

    pub fn open(wallet: &Wallet) -> Result<RecordKeys, ClientError> {
        let path = wallet.dir.join(FILE);
        let bad = |why: &str| ClientError::wallet(&wallet.dir, format!("{FILE}: {why}"));
        let text = read_secret(&path).map_err(|e| bad(&e))?.ok_or_else(|| {
            bad("missing; this wallet has no patient record (run `medledger patient init`)")
        })?;
        let stored: Stored = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let mut categories = BTreeMap::new();
        for (category, epochs) in &stored.categories {
            let mut keys = BTreeMap::new();
            for (epoch, secret) in epochs {
                let bytes = hex32(secret).ok_or_else(|| bad("a category key is not 32 bytes"))?;
                keys.insert(*epoch, EncryptionKey::from_bytes(bytes));
            }
            categories.insert(category.clone(), keys);
        }
        Ok(RecordKeys {
            path,
            pseudonym: hex32(&stored.pseudonym).ok_or_else(|| bad("bad pseudonym"))?,
            patient_key: PatientKey::from_bytes(
                hex32(&stored.patient_key).ok_or_else(|| bad("bad patient key"))?,
            ),
            categories,
        })
    }

    fn save(&self) -> Result<(), ClientError> {
        let stored = Stored {
            pseudonym: hex::encode(self.pseudonym),
            patient_key: hex::encode(self.patient_key.as_bytes()),
            categories: self
                .categories
                .iter()
                .map(|(c, epochs)| {
                    (
                        c.clone(),
                        epochs
                            .iter()
                            .map(|(e, k)| (*e, hex::encode(*k.to_bytes())))
                            .collect(),
                    )
                })
                .collect(),
        };
        let text = Zeroizing::new(
            serde_json::to_string_pretty(&stored).map_err(|e| ClientError::Usage(e.to_string()))?,
        );
        write_secret(&self.path, text.as_bytes())
            .map_err(|e| ClientError::wallet(self.path.parent().unwrap_or(Path::new(".")), e))
    }

    /// The record's X25519 key, to which free text about it is sealed (an emergency access's
    /// reason): derived from the pseudonym key, so every wallet holding this record has it.
    pub fn record_encryption_key(&self) -> EncryptionKey {
        derive_record_encryption_key(&self.patient_key)
    }

    /// The arguments naming this record.
    pub fn patient_args(&self) -> v1::PatientArgs {
        v1::PatientArgs {
            pseudonym: self.pseudonym.to_vec(),
        }
    }

    /// The registration: the pseudonym and each category's public key, each signed by the
    /// owner (`signing`, the wallet's key: the record's owner binding) so that clinicians
    /// encrypt only to keys the owner signed (issue 17 item 4).
    pub fn register_args(
        &self,
        signing: &medledger_crypto::SigningIdentity,
    ) -> v1::RegisterPatientArgs {
        v1::RegisterPatientArgs {
            pseudonym: self.pseudonym.to_vec(),
            owner_encryption_key: self
                .record_encryption_key()
                .public_key()
                .to_bytes()
                .to_vec(),
            category_keys: self
                .categories
                .iter()
                .filter_map(|(c, epochs)| {
                    let (epoch, key) = epochs.iter().next_back()?;
                    let public_key = key.public_key().to_bytes().to_vec();
                    let statement = medledger_crypto::category_key_statement(
                        &self.pseudonym,
                        c,
                        *epoch,
                        &public_key,
                    );
                    Some(v1::CategoryKey {
                        category: c.clone(),
                        epoch: *epoch,
                        owner_signature: signing
                            .sign(medledger_crypto::SignatureDomain::CategoryKey, &statement)
                            .to_bytes()
                            .to_vec(),
                        public_key,
                        since: 0,
                    })
                })
                .collect(),
        }
    }

    /// Destroys the keys in the wallet (after an erasure): overwritten, synced, removed.
    pub fn destroy(self) -> Result<(), ClientError> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let len = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let wipe = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new().write(true).open(&self.path)?;
            f.write_all(&vec![0u8; len as usize])?;
            f.sync_all()?;
            fs::remove_file(&self.path)
        };
        wipe().map_err(|e| ClientError::wallet(&dir, e))
    }

    /// This patient's pseudonym in study `study_id`: the hash of their ownership key of the
    /// study (docs/adr/0014).
    pub fn study_pseudonym(&self, study_id: &str) -> [u8; 32] {
        derive_study_pseudonym(&self.patient_key, study_id).0
    }

    /// What a share grant into study `study_id` carries to prove this patient owns their
    /// study pseudonym there (docs/adr/0014): `(study_pseudonym, study_owner_key,
    /// study_owner_signature)` — the pseudonym, the ownership key (Ed25519 public, 32 bytes)
    /// it hashes, and that key's signature (domain `StudyGrant`) on (study, this record).
    pub fn study_grant(&self, study_id: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let owner = derive_study_identity(&self.patient_key, study_id);
        let signature = owner.sign(
            SignatureDomain::StudyGrant,
            &study_grant_statement(study_id, &self.pseudonym),
        );
        (
            self.study_pseudonym(study_id).to_vec(),
            owner.verifying_key().to_bytes().to_vec(),
            signature.to_bytes().to_vec(),
        )
    }

    /// The private key of `category` at `epoch`.
    pub fn category_key(&self, category: &str, epoch: u32) -> Result<&EncryptionKey, ClientError> {
        self.categories
            .get(category)
            .and_then(|e| e.get(&epoch))
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "this wallet has no key for category {category} at epoch {epoch}"
                ))
            })
    }

    /// The newest epoch of `category` and its public key.
    pub fn current(&self, category: &str) -> Result<(u32, EncryptionPublicKey), ClientError> {
        self.categories
            .get(category)
            .and_then(|e| e.iter().next_back())
            .map(|(e, k)| (*e, k.public_key()))
            .ok_or_else(|| ClientError::Usage(format!("this record has no category {category}")))
    }

    /// The key of `category` at `epoch`, made and saved in the wallet if it holds none yet
    /// (saved before anything is submitted, so a rotation that commits never leaves the
    /// wallet without its key). A key already there is never replaced: a rotation retried
    /// after one that timed out (and may yet commit) offers the same key. Returns it.
    pub fn add_epoch(&mut self, category: &str, epoch: u32) -> Result<&EncryptionKey, ClientError> {
        let epochs = self.categories.entry(category.to_string()).or_default();
        if let std::collections::btree_map::Entry::Vacant(slot) = epochs.entry(epoch) {
            slot.insert(EncryptionKey::generate(&mut rand_core::OsRng));
            self.save()?;
        }
        self.category_key(category, epoch)
    }

    /// The category's key of `epoch` (the ledger's current one), wrapped to `grantee`.
    pub fn envelope_at(
        &self,
        grantee: &EncryptionPublicKey,
        category: &str,
        epoch: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let secret = self.category_key(category, epoch)?.to_bytes();
        wrap_key(
            grantee,
            &secret,
            WrapContext::CategoryKey {
                pseudonym: &self.pseudonym,
                category,
                epoch,
            },
            &mut rand_core::OsRng,
        )
        .map_err(|e| ClientError::Usage(e.to_string()))
    }
}
