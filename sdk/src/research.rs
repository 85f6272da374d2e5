//! Research sharing (ARCHITECTURE §7). A researcher registers a study with a study key made
//! here and kept in the wallet (`study-keys.json`, 0600). A clinician with a share grant for
//! that study reads an item (a committed, audited access), de-identifies it when the grant
//! says so ([`medledger_deid`]; FHIR R4 JSON only), encrypts it to the study key and stores
//! it under the study pseudonym the patient put in the grant. The researcher fetches every
//! copy shared into the study; each fetch is a committed access on the patient's trail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use medledger_crypto::{EncryptionKey, EncryptionPublicKey, SignatureDomain};
use medledger_proto::v1;
use medledger_proto::v1::gateway_client::GatewayClient;
use prost::Message;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::files::{self, Reader, Source, StudyCopy, Target, Uploaded};
use crate::peer::{Committed, PeerSet};
use crate::wallet::{Wallet, read_secret, write_secret};

const FILE: &str = "study-keys.json";

/// A researcher's study private keys, by study id.
pub struct StudyKeys {
    path: PathBuf,
    keys: BTreeMap<String, EncryptionKey>,
}

impl StudyKeys {
    pub fn open(wallet: &Wallet) -> Result<StudyKeys, ClientError> {
        let path = wallet.dir.join(FILE);
        let bad = |why: &str| ClientError::wallet(&wallet.dir, format!("{FILE}: {why}"));
        let mut keys = BTreeMap::new();
        if let Some(text) = read_secret(&path).map_err(|e| bad(&e))? {
            let stored: BTreeMap<String, String> =
                serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
            for (study, secret) in stored {
                let bytes: [u8; 32] = hex::decode(secret)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad("a study key is not 32 bytes"))?;
                keys.insert(study, EncryptionKey::from_bytes(bytes));
            }
        }
        Ok(StudyKeys { path, keys })
    }

    pub fn get(&self, study_id: &str) -> Result<&EncryptionKey, ClientError> {
        self.keys.get(study_id).ok_or_else(|| {
            ClientError::Usage(format!(
                "this wallet has no key for study {study_id}; fetch with the wallet that created it"
            ))
        })
    }

    fn save(&self) -> Result<(), ClientError> {
        let stored: BTreeMap<&String, String> = self
            .keys
            .iter()
            .map(|(s, k)| (s, hex::encode(*k.to_bytes())))
            .collect();
        let text = Zeroizing::new(
            serde_json::to_string_pretty(&stored).map_err(|e| ClientError::Usage(e.to_string()))?,
        );
        write_secret(&self.path, text.as_bytes())
            .map_err(|e| ClientError::wallet(self.path.parent().unwrap_or(Path::new(".")), e))
    }
}

/// Registers study `id` with a new study key (kept in the wallet before the transaction is
/// sent, so a committed study always has its key). `protocol` is the protocol document's
/// bytes; its SHA-256 goes on the ledger.
pub async fn create_study(
    peers: &PeerSet,
    wallet: &Wallet,
    id: &str,
    title: &str,
    protocol: &[u8],
) -> Result<Committed, ClientError> {
    let mut keys = StudyKeys::open(wallet)?;
    if keys.keys.contains_key(id) {
        return Err(ClientError::Usage(format!(
            "this wallet already holds a key for study {id}"
        )));
    }
    let key = EncryptionKey::generate(&mut rand_core::OsRng);
    let public = key.public_key();
    keys.keys.insert(id.to_string(), key);
    keys.save()?;
    peers
        .submit(
            "register_study",
            v1::RegisterStudyArgs {
                id: id.to_string(),
                title: title.to_string(),
                protocol_hash: Sha256::digest(protocol).to_vec(),
                study_key: public.to_bytes().to_vec(),
                // The researcher's word that this key is the study's: a sharing client
                // encrypts a copy only to a study key its researcher signed.
                study_key_signature: wallet
                    .signing
                    .sign(
                        SignatureDomain::StudyKey,
                        &medledger_crypto::study_key_statement(id, &public.to_bytes()),
                    )
                    .to_bytes()
                    .to_vec(),
            }
            .encode_to_vec(),
        )
        .await?
        .into_valid()
}

pub struct Shared {
    pub uploaded: Uploaded,
    pub anonymized: bool,
    pub category: String,
    /// The read of the source item (on the patient's trail).
    pub read_block: u64,
}

/// A clinician shares `item_id` of patient `pseudonym` into `study_id`: reads it (committed),
/// de-identifies it when the grant requires it or `anonymize` is asked, encrypts it to the
/// study key and stores the copy under the study pseudonym.
pub async fn share(
    peers: &PeerSet,
    gateway: &mut GatewayClient<Channel>,
    wallet: &Wallet,
    pseudonym: [u8; 32],
    item_id: &str,
    study_id: &str,
    anonymize: bool,
) -> Result<Shared, ClientError> {
    let work = tempfile::tempdir().map_err(|e| ClientError::Usage(e.to_string()))?;
    let plain = work.path().join("item");
    let read = files::download(
        peers,
        gateway,
        Reader::Grantee(wallet),
        pseudonym,
        item_id,
        &plain,
        |_, _| {},
    )
    .await?;
    // The study key this copy will be encrypted to: believed only when f+1 peers agree.
    let grant: v1::CheckAccessResult = peers
        .query_agreed_as(
            "check_access",
            v1::CheckAccessArgs {
                pseudonym: pseudonym.to_vec(),
                grantee: wallet.info.name.clone(),
                category: read.item.category.clone(),
                right: v1::Right::Share as i32,
                study_id: study_id.to_string(),
            },
        )
        .await?;
    if !grant.allowed {
        return Err(ClientError::from_ledger_status(
            tonic::Status::permission_denied(format!(
                "denied: {} (the patient grants share for study {study_id} with `medledger patient grant --rights share --study {study_id}`)",
                grant.reason
            )),
        ));
    }
    let study_key = EncryptionPublicKey::from_slice(&grant.study_key)
        .ok_or_else(|| ClientError::Protocol("the study has no valid key".into()))?;
    // Believed only when its researcher signed it (the researcher's key as f+1 peers gave it).
    crate::files::check_key_signature(
        &grant.researcher_key,
        SignatureDomain::StudyKey,
        &medledger_crypto::study_key_statement(study_id, &grant.study_key),
        &grant.study_key_signature,
    )
    .map_err(|why| ClientError::Protocol(format!("study {study_id}'s key: {why}")))?;
    let anonymized = grant.anonymize || anonymize;
    let year = time::OffsetDateTime::now_utc().year();
    let upload_from = if anonymized {
        let bytes = std::fs::read(&plain).map_err(|e| ClientError::Usage(e.to_string()))?;
        // Fresh random ids per copy: two copies of one item cannot be linked by id.
        let mut ids = medledger_deid::uuid_ids(|random| rand_core::OsRng.fill_bytes(random));
        let profile = medledger_deid::Profile::SAFE_HARBOR;
        let clean = medledger_deid::deidentify(&bytes, &profile, year, &mut ids).map_err(|e| {
            ClientError::Rejected {
                code: tonic::Code::FailedPrecondition,
                message: format!("item {item_id} cannot be shared anonymized: {e}"),
                hint: "only FHIR R4 JSON can be de-identified; share another item, or ask the patient for a grant without --anonymize",
            }
        })?;
        let path = work.path().join("anonymized.json");
        std::fs::write(&path, clean.bytes).map_err(|e| ClientError::Usage(e.to_string()))?;
        path
    } else {
        plain.clone()
    };
    let copy = StudyCopy {
        pseudonym,
        source_item_id: item_id.to_string(),
        study_id: study_id.to_string(),
        study_pseudonym: grant.study_pseudonym,
        study_key,
        deidentified_as_of: anonymized.then_some(year),
    };
    let uploaded = files::upload_to(
        peers,
        gateway,
        Target::StudyCopy(&copy),
        &upload_from,
        |_, _| {},
    )
    .await?;
    Ok(Shared {
        uploaded,
        anonymized,
        category: read.item.category,
        read_block: read.committed.block,
    })
}

pub struct Fetched {
    pub item: v1::StudyItem,
    pub file: PathBuf,
    pub block: u64,
}

/// A copy the researcher's client refused: recorded as de-identified, it failed the
/// re-check. Nothing of it was written; the incident is on the patient's trail.
pub struct Refused {
    pub item: v1::StudyItem,
    pub why: String,
    /// The block that recorded the incident.
    pub incident_block: u64,
}

/// A copy whose file key no peer asked could give (ledger format 6 keeps it as private
/// data, docs/adr/0017): nothing of it was fetched and no access was recorded; a later
/// fetch tries again.
pub struct Unavailable {
    pub item: v1::StudyItem,
    pub why: String,
}

/// What a fetch of a study brought.
pub struct StudyFetch {
    pub fetched: Vec<Fetched>,
    pub refused: Vec<Refused>,
    pub unavailable: Vec<Unavailable>,
}

/// The researcher fetches every copy shared into `study_id` into `out_dir`, one committed
/// access each. Erased copies are skipped. Files are named `<study pseudonym>-<item>`
/// (`.json` when anonymized). A copy recorded as de-identified is re-checked against its
/// recorded profile before any of it is written; one that fails is refused, reported on the
/// patient's trail (`report_study_incident`), and listed in [`StudyFetch::refused`] — this
/// detects a sharing client that did not de-identify; it cannot prevent it.
pub async fn fetch(
    peers: &PeerSet,
    gateway: &mut GatewayClient<Channel>,
    wallet: &Wallet,
    study_id: &str,
    out_dir: &Path,
) -> Result<StudyFetch, ClientError> {
    let keys = StudyKeys::open(wallet)?;
    let key = keys.get(study_id)?;
    let items = peers
        .query_agreed_as::<v1::StudyItemList>(
            "study_items",
            v1::StudyArgs {
                study_id: study_id.to_string(),
            },
        )
        .await?
        .items;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", out_dir.display())))?;
    let mut fetched = Vec::new();
    let mut refused = Vec::new();
    let mut unavailable = Vec::new();
    for item in items.into_iter().filter(|i| !i.tombstoned) {
        // A key kept as private data is asked for before the access is recorded (its
        // commitment is the one f+1 peers agreed on): a copy whose key no peer gives is
        // skipped, not left as an access with nothing fetched, and the others go on.
        if !item.wrapped_dek_commitment.is_empty()
            && let Err(e) = peers
                .study_access_keys(
                    study_id,
                    &item.study_pseudonym,
                    &item.item_id,
                    &item.wrapped_dek_commitment,
                )
                .await
        {
            unavailable.push(Unavailable {
                item,
                why: e.to_string(),
            });
            continue;
        }
        let name = format!(
            "{}-{}{}",
            &hex::encode(&item.study_pseudonym)[..16],
            item.item_id,
            if item.anonymized { ".json" } else { "" }
        );
        let file = out_dir.join(name);
        let source = Source::StudyCopy {
            study_id,
            study_pseudonym: &item.study_pseudonym,
            item_id: &item.item_id,
        };
        let got = files::download_from(
            peers,
            gateway,
            Reader::Study(key),
            &source,
            &file,
            |_, _| {},
        )
        .await;
        match got {
            Ok(got) => fetched.push(Fetched {
                item,
                file,
                block: got.committed.block,
            }),
            Err(ClientError::NotDeidentified { why, .. }) => {
                let reported = peers
                    .submit(
                        "report_study_incident",
                        v1::ReportStudyIncidentArgs {
                            study_id: study_id.to_string(),
                            study_pseudonym: item.study_pseudonym.clone(),
                            item_id: item.item_id.clone(),
                            incident: v1::StudyIncident::DeidentificationFailed as i32,
                        }
                        .encode_to_vec(),
                    )
                    .await?
                    .into_valid()?;
                refused.push(Refused {
                    item,
                    why,
                    incident_block: reported.block,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(StudyFetch {
        fetched,
        refused,
        unavailable,
    })
}
