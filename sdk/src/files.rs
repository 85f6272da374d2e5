//! Clinical files through the storage gateway. Encryption happens here, on the client: the
//! gateway and the object store see ciphertext only.
//!
//! Upload: a fresh file key (DEK), the file encrypted (AES-256-GCM STREAM) to a temporary
//! file while hashing, the DEK wrapped (HPKE) to the patient's category key, a signed
//! `add_item` declaring path, hash and size, then the ciphertext to the gateway; the answer is
//! checked as f+1 receipts signed by genesis peers.
//!
//! Download: a signed `record_access`; the gateway relays the peers' receipts, which name the
//! item and its hash, then the ciphertext. The client stores the ciphertext aside, checks its
//! size and SHA-256 against the committed item, and only then decrypts. A mismatch is
//! reported as [`ClientError::Tampered`]; nothing is decrypted.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use medledger_crypto::{
    DEFAULT_CHUNK_SIZE, EncryptionKey, EncryptionPublicKey, FileDecryptor, FileEncryptor, FileKey,
    Role, SignatureDomain, WrapContext, unwrap_key, wrap_key,
};
use medledger_proto::v1;
use medledger_proto::v1::gateway_client::GatewayClient;
use prost::Message;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::error::ClientError;
use crate::patient::RecordKeys;
use crate::peer::{Committed, PeerSet};
use crate::wallet::Wallet;

/// Bytes per upload message.
const UPLOAD_CHUNK: usize = 1 << 20;
/// Largest message accepted from the gateway.
const MAX_MESSAGE: usize = 4 << 20;

/// Connects to the gateway at `address` with mutual TLS, accepting only a server enrolled
/// with role gateway under the wallet's root and not in `revoked` (pass
/// [`PeerSet::revocations`]: a gateway the ledger revoked is refused at the handshake, and an
/// open link to it drops).
pub async fn connect_gateway(
    wallet: &Wallet,
    address: &str,
    revoked: &crate::peer::SharedRevocations,
) -> Result<GatewayClient<Channel>, ClientError> {
    let config = crate::peer::client_tls_for(Role::Gateway, wallet, None, revoked)?;
    let channel = medledger_tls::connect(address, config, revoked.clone())
        .await
        .map_err(|why| ClientError::GatewayUnreachable {
            address: address.to_string(),
            why,
        })?;
    Ok(GatewayClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Where a file goes: the patient's record and category, and the category's public key.
pub struct Destination {
    pub pseudonym: [u8; 32],
    pub category: String,
    pub key_epoch: u32,
    pub category_key: EncryptionPublicKey,
}

impl Destination {
    /// For a clinician: asks the ledger whether the caller may write to the category now, and
    /// for the category's current key — the key this file will be encrypted to, so the
    /// answer is believed only when f+1 peers give it alike ([`PeerSet::query_agreed`]): one
    /// lying peer cannot substitute a key of its own.
    pub async fn for_grantee(
        peers: &PeerSet,
        me: &str,
        pseudonym: [u8; 32],
        category: &str,
    ) -> Result<Destination, ClientError> {
        let answer = peers
            .query_agreed(
                "check_access",
                v1::CheckAccessArgs {
                    pseudonym: pseudonym.to_vec(),
                    grantee: me.to_string(),
                    category: category.to_string(),
                    right: v1::Right::Write as i32,
                    ..Default::default()
                }
                .encode_to_vec(),
            )
            .await?;
        let result = v1::CheckAccessResult::decode(answer.result.as_slice())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !result.allowed {
            return Err(ClientError::from_ledger_status(
                tonic::Status::permission_denied(format!(
                    "denied: {} (ask the patient for a write grant on {category})",
                    result.reason
                )),
            ));
        }
        let key = result
            .category_key
            .ok_or_else(|| ClientError::Protocol("the category has no key".into()))?;
        // Believed only when the record's owner signed it (the owner binding as f+1 peers
        // gave it): no file is encrypted to a key the owner did not sign.
        check_key_signature(
            &result.owner_key,
            SignatureDomain::CategoryKey,
            &medledger_crypto::category_key_statement(
                &pseudonym,
                category,
                key.epoch,
                &key.public_key,
            ),
            &key.owner_signature,
        )
        .map_err(|why| {
            ClientError::Protocol(format!("the {category} key of this record: {why}"))
        })?;
        Ok(Destination {
            pseudonym,
            category: category.to_string(),
            key_epoch: key.epoch,
            category_key: EncryptionPublicKey::from_slice(&key.public_key)
                .ok_or_else(|| ClientError::Protocol("a category key is not 32 bytes".into()))?,
        })
    }

    /// For the patient, from the record keys in the wallet.
    pub fn for_owner(keys: &RecordKeys, category: &str) -> Result<Destination, ClientError> {
        let (key_epoch, category_key) = keys.current(category)?;
        Ok(Destination {
            pseudonym: keys.pseudonym,
            category: category.to_string(),
            key_epoch,
            category_key,
        })
    }
}

/// The gateway's "ask again after" hint (metadata [`RETRY_AFTER_METADATA`], ms), at most
/// 30 s.
fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    let ms: u64 = status
        .metadata()
        .get(RETRY_AFTER_METADATA)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms.min(30_000)))
}

/// Metadata a gateway sets on a refusal that a new request made after that many
/// milliseconds will not meet.
pub const RETRY_AFTER_METADATA: &str = "medledger-retry-after-ms";

/// Checks that `signature` is `owner_key`'s (Ed25519) on `statement` in `domain`: the key a
/// client is about to encrypt to was signed by its owner.
///
/// # Errors
/// Why not, in words.
pub fn check_key_signature(
    owner_key: &[u8],
    domain: SignatureDomain,
    statement: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let owner = <[u8; 32]>::try_from(owner_key)
        .ok()
        .and_then(|k| medledger_crypto::VerifyingKey::from_bytes(&k).ok())
        .ok_or("no owner key is recorded for it (registered before keys were signed?)")?;
    let signature = medledger_crypto::Signature::from_slice(signature)
        .map_err(|_| "it carries no owner signature".to_string())?;
    owner
        .verify(domain, statement, &signature)
        .map_err(|_| "its owner did not sign it; nothing is encrypted to it".to_string())
}

/// A copy of a patient's item for a study: encrypted to the study's key, stored under the
/// study pseudonym the patient put in the share grant.
pub struct StudyCopy {
    pub pseudonym: [u8; 32],
    pub source_item_id: String,
    pub study_id: String,
    pub study_pseudonym: Vec<u8>,
    pub study_key: EncryptionPublicKey,
    /// For a de-identified copy, the year it was de-identified as of (the ledger records it
    /// with `medledger_deid`'s profile and version, and the researcher re-checks against
    /// them); `None` for a copy as it is.
    pub deidentified_as_of: Option<i32>,
}

/// Where an upload goes.
pub enum Target<'a> {
    Item(&'a Destination),
    StudyCopy(&'a StudyCopy),
}

#[derive(Debug, Clone)]
pub struct Uploaded {
    pub item_id: String,
    pub path: String,
    /// Ciphertext bytes stored.
    pub size: u64,
    pub sha256: [u8; 32],
    pub committed: Committed,
}

/// Encrypts `input` and uploads it as a new item. `progress(done, total)` follows the
/// ciphertext sent.
pub async fn upload(
    peers: &PeerSet,
    gateway: &mut GatewayClient<Channel>,
    destination: &Destination,
    input: &Path,
    progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<Uploaded, ClientError> {
    upload_to(peers, gateway, Target::Item(destination), input, progress).await
}

/// Encrypts `input` here and stores it at `target` through the gateway.
pub async fn upload_to(
    peers: &PeerSet,
    gateway: &mut GatewayClient<Channel>,
    target: Target<'_>,
    input: &Path,
    mut progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<Uploaded, ClientError> {
    let mut id = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut id);
    let item_id = hex::encode(id);
    let key = FileKey::generate(&mut rand_core::OsRng);
    let wrap_to = match &target {
        Target::Item(d) => &d.category_key,
        Target::StudyCopy(c) => &c.study_key,
    };
    let wrapped_dek = wrap_key(
        wrap_to,
        key.as_bytes(),
        WrapContext::FileKey { item_id: &item_id },
        &mut rand_core::OsRng,
    )
    .map_err(|e| ClientError::Protocol(e.to_string()))?;

    // Encrypt to a temporary file (ciphertext only), hashing as it is written.
    let spool = {
        let input = input.to_path_buf();
        let item_id = item_id.clone();
        tokio::task::spawn_blocking(
            move || -> Result<(tempfile::NamedTempFile, [u8; 32], u64), ClientError> {
                let mut plaintext = std::fs::File::open(&input)
                    .map_err(|e| ClientError::Usage(format!("{}: {e}", input.display())))?;
                let spool = tempfile::NamedTempFile::new()
                    .map_err(|e| ClientError::Usage(format!("temporary file: {e}")))?;
                let mut out = HashingWriter::new(std::io::BufWriter::new(
                    spool
                        .reopen()
                        .map_err(|e| ClientError::Usage(format!("temporary file: {e}")))?,
                ));
                FileEncryptor::new(&key, &item_id, DEFAULT_CHUNK_SIZE, &mut rand_core::OsRng)
                    .and_then(|e| e.encrypt_stream(&mut plaintext, &mut out))
                    .map_err(|e| {
                        ClientError::Usage(format!("encrypting {}: {e}", input.display()))
                    })?;
                let (digest, size) = out
                    .finish()
                    .map_err(|e| ClientError::Usage(e.to_string()))?;
                Ok((spool, digest, size))
            },
        )
    };
    let (spool, sha256, size) = spool
        .await
        .map_err(|e| ClientError::Usage(e.to_string()))??;
    use medledger_chaincode::keys;
    let private;
    let (path, function, args) = match &target {
        Target::Item(destination) => {
            let path = keys::item_path(
                &keys::pseudonym_hex(&destination.pseudonym),
                &destination.category,
                &item_id,
            );
            let mut args = v1::AddItemArgs {
                pseudonym: destination.pseudonym.to_vec(),
                item_id: item_id.clone(),
                category: destination.category.clone(),
                path: path.clone(),
                sha256: sha256.to_vec(),
                size,
                wrapped_dek,
                key_epoch: destination.key_epoch,
                ..Default::default()
            };
            // A ledger that keeps private data takes the wrapped file key beside the
            // transaction (docs/adr/0017).
            private = peers.item_key_private(&mut args);
            (path, "add_item", args.encode_to_vec())
        }
        Target::StudyCopy(copy) => {
            let path = keys::study_item_path(
                &copy.study_id,
                &keys::pseudonym_hex(&copy.study_pseudonym),
                &item_id,
            );
            let mut args = v1::ShareForStudyArgs {
                pseudonym: copy.pseudonym.to_vec(),
                source_item_id: copy.source_item_id.clone(),
                study_id: copy.study_id.clone(),
                item_id: item_id.clone(),
                path: path.clone(),
                sha256: sha256.to_vec(),
                size,
                wrapped_dek,
                anonymized: copy.deidentified_as_of.is_some(),
                deid_profile: copy
                    .deidentified_as_of
                    .map(|_| medledger_deid::PROFILE.to_string())
                    .unwrap_or_default(),
                deid_profile_version: copy
                    .deidentified_as_of
                    .map_or(0, |_| medledger_deid::PROFILE_VERSION),
                deid_year: copy.deidentified_as_of.unwrap_or(0),
                ..Default::default()
            };
            // A ledger that keeps study keys private takes the wrapped file key beside the
            // transaction (format 6, docs/adr/0017).
            private = peers.study_key_private(&mut args, &copy.study_pseudonym);
            (path, "share_for_study", args.encode_to_vec())
        }
    };
    // The private values go to the peers before the gateway submits the transaction.
    let (_, envelope) = peers.signed_private(function, args, &private).await?;

    let (tx, rx) = tokio::sync::mpsc::channel::<v1::UploadRequest>(4);
    let reader = spool
        .reopen()
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let sent = envelope.clone();
    let sender = tokio::task::spawn_blocking(move || {
        let first = v1::UploadRequest {
            part: Some(v1::upload_request::Part::Envelope(sent)),
        };
        if tx.blocking_send(first).is_err() {
            return;
        }
        let mut reader = reader;
        let mut sent = 0u64;
        loop {
            // A read error ends the stream short; the gateway then refuses the upload.
            let mut chunk = Vec::with_capacity(UPLOAD_CHUNK);
            match (&mut reader)
                .take(UPLOAD_CHUNK as u64)
                .read_to_end(&mut chunk)
            {
                Ok(0) | Err(_) => break,
                Ok(n) => sent += n as u64,
            }
            let message = v1::UploadRequest {
                part: Some(v1::upload_request::Part::Chunk(chunk)),
            };
            if tx.blocking_send(message).is_err() {
                return;
            }
            progress(sent, size);
        }
    });
    let response = gateway
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(gateway_error)?
        .into_inner();
    let _ = sender.await;
    drop(spool);
    let committed = peers
        .check_proof(&envelope, response.proof)
        .await?
        .into_valid()?;
    Ok(Uploaded {
        item_id,
        path,
        size,
        sha256,
        committed,
    })
}

#[derive(Debug, Clone)]
pub struct Downloaded {
    pub item: v1::ClinicalItem,
    /// Plaintext bytes written.
    pub plaintext_size: u64,
    pub committed: Committed,
    pub emergency: bool,
}

/// Whose keys open the file.
pub enum Reader<'a> {
    /// A grantee: the category key comes wrapped to the wallet's enrollment key.
    Grantee(&'a Wallet),
    /// The patient, with the record keys in their wallet.
    Owner(&'a RecordKeys),
    /// A study's researcher, with the study's private key.
    Study(&'a EncryptionKey),
}

/// What to download.
pub enum Source<'a> {
    Item {
        pseudonym: [u8; 32],
        item_id: &'a str,
    },
    StudyCopy {
        study_id: &'a str,
        study_pseudonym: &'a [u8],
        item_id: &'a str,
    },
}

/// Records the access on the ledger, downloads the item's ciphertext, checks it against the
/// committed hash, decrypts it to `output`. `progress(done, total)` follows the ciphertext.
pub async fn download(
    peers: &PeerSet,
    gateway: &mut GatewayClient<Channel>,
    reader: Reader<'_>,
    pseudonym: [u8; 32],
    item_id: &str,
    output: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<Downloaded, ClientError> {
    let source = Source::Item { pseudonym, item_id };
    download_from(peers, gateway, reader, &source, output, progress).await
}

/// Records the access on the ledger, downloads, checks against the ledger and decrypts.
pub async fn download_from(
    peers: &PeerSet,
    gateway: &mut GatewayClient<Channel>,
    reader: Reader<'_>,
    source: &Source<'_>,
    output: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Downloaded, ClientError> {
    let (item_id, pseudonym, function, args) = match source {
        Source::Item { pseudonym, item_id } => (
            *item_id,
            *pseudonym,
            "record_access",
            v1::RecordAccessArgs {
                pseudonym: pseudonym.to_vec(),
                item_id: item_id.to_string(),
            }
            .encode_to_vec(),
        ),
        Source::StudyCopy {
            study_id,
            study_pseudonym,
            item_id,
        } => (
            *item_id,
            [0; 32],
            "record_study_access",
            v1::RecordStudyAccessArgs {
                study_id: study_id.to_string(),
                study_pseudonym: study_pseudonym.to_vec(),
                item_id: item_id.to_string(),
            }
            .encode_to_vec(),
        ),
    };
    // A gateway that (re)started after an access was recorded serves it nothing, and says
    // when a new one will do: then one new access, once.
    let mut attempts = 0;
    let (envelope, mut stream, first) = loop {
        attempts += 1;
        let (_, envelope) = peers.signed(function, args.clone()).await;
        let opened = gateway
            .download(v1::DownloadRequest {
                envelope: Some(envelope.clone()),
            })
            .await;
        let first = match opened {
            Ok(response) => {
                let mut stream = response.into_inner();
                match stream.message().await {
                    Ok(message) => break (envelope, stream, message.and_then(|m| m.part)),
                    Err(status) => status,
                }
            }
            Err(status) => status,
        };
        match retry_after(&first) {
            Some(wait) if attempts < 2 => tokio::time::sleep(wait).await,
            // The access committed, but the object is gone from the store.
            _ if first.code() == tonic::Code::DataLoss => {
                return Err(ClientError::Tampered {
                    item: item_id.to_string(),
                    why: first.message().to_string(),
                });
            }
            _ => return Err(gateway_error(first)),
        }
    };
    let Some(v1::download_response::Part::Proof(proof)) = first else {
        return Err(ClientError::Protocol(
            "the gateway did not begin with the access's commit proof".into(),
        ));
    };
    let committed = peers
        .check_proof(&envelope, Some(*proof))
        .await?
        .into_valid()?;
    // A study copy recorded as de-identified is re-checked before any of it reaches disk.
    let mut recheck_as_of: Option<i32> = None;
    let access = match source {
        Source::Item { .. } => v1::RecordAccessResult::decode(committed.result.as_slice())
            .map_err(|e| ClientError::Protocol(e.to_string()))?,
        Source::StudyCopy { .. } => {
            let copy = v1::RecordStudyAccessResult::decode(committed.result.as_slice())
                .map_err(|e| ClientError::Protocol(e.to_string()))?
                .item
                .ok_or_else(|| {
                    ClientError::Protocol("the committed access names no item".into())
                })?;
            if copy.anonymized {
                recheck_as_of = Some(deidentified_as_of(&copy)?);
            }
            v1::RecordAccessResult {
                item: Some(v1::ClinicalItem {
                    id: copy.item_id,
                    category: copy.category,
                    uploader: copy.shared_by,
                    path: copy.path,
                    sha256: copy.sha256,
                    size: copy.size,
                    created_at: copy.shared_at,
                    wrapped_dek: copy.wrapped_dek,
                    key_epoch: 0,
                    tombstoned: copy.tombstoned,
                    wrapped_dek_commitment: copy.wrapped_dek_commitment,
                }),
                ..Default::default()
            }
        }
    };
    let mut access = access;
    // A ledger that keeps private data puts no key in the access's result: the reader
    // reads them with a query, checked against the commitments the result holds.
    if let (Source::Item { pseudonym, item_id }, Reader::Grantee(_) | Reader::Owner(_)) =
        (source, &reader)
        && peers.keeps_private_data()
    {
        let keys = peers.access_keys(pseudonym, item_id, &access).await?;
        access.key_envelope = keys.key_envelope;
        access.key_chain = keys.key_chain;
        if let Some(item) = access.item.as_mut()
            && !item.wrapped_dek_commitment.is_empty()
        {
            item.wrapped_dek = keys.wrapped_dek;
        }
    }
    // A study copy's file key likewise, on a ledger that keeps study keys private.
    if let Source::StudyCopy {
        study_id,
        study_pseudonym,
        item_id,
    } = source
        && let Some(item) = access.item.as_mut()
        && !item.wrapped_dek_commitment.is_empty()
    {
        item.wrapped_dek = peers
            .study_access_keys(
                study_id,
                study_pseudonym,
                item_id,
                &item.wrapped_dek_commitment,
            )
            .await?;
    }
    let item = access
        .item
        .clone()
        .ok_or_else(|| ClientError::Protocol("the committed access names no item".into()))?;
    let tampered = |why: String| ClientError::Tampered {
        item: item.id.clone(),
        why,
    };

    // The ciphertext goes aside (next to the output) until its hash is checked.
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let spool = tempfile::Builder::new()
        .prefix(".medledger-download-")
        .tempfile_in(dir)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", dir.display())))?;
    let mut out = HashingWriter::new(std::io::BufWriter::new(
        spool
            .reopen()
            .map_err(|e| ClientError::Usage(e.to_string()))?,
    ));
    let mut received = 0u64;
    loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(status) if status.code() == tonic::Code::DataLoss => {
                return Err(tampered(status.message().to_string()));
            }
            Err(status) => return Err(gateway_error(status)),
        };
        let Some(v1::download_response::Part::Chunk(chunk)) = message.part else {
            return Err(ClientError::Protocol(
                "unexpected message in a download".into(),
            ));
        };
        received += chunk.len() as u64;
        if received > item.size {
            return Err(tampered(format!(
                "the stored object is longer than the {} bytes on the ledger",
                item.size
            )));
        }
        out.write_all(&chunk)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        progress(received, item.size);
    }
    let (digest, size) = out
        .finish()
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    if size != item.size {
        return Err(tampered(format!(
            "the stored object has {size} bytes; the ledger says {}",
            item.size
        )));
    }
    if digest[..] != item.sha256[..] {
        return Err(tampered(
            "the stored object's SHA-256 differs from the hash on the ledger".into(),
        ));
    }

    let category_key: EncryptionKey = match reader {
        Reader::Study(key) => EncryptionKey::from_bytes(*key.to_bytes()),
        Reader::Owner(keys) => EncryptionKey::from_bytes(
            *keys
                .category_key(&item.category, item.key_epoch)?
                .to_bytes(),
        ),
        Reader::Grantee(wallet) => {
            if access.key_envelope.is_empty() {
                return Err(ClientError::Usage(
                    "the access was recorded, but the permission carries no key for this \
                     category (an emergency access has none): the file cannot be decrypted"
                        .into(),
                ));
            }
            // The envelope holds the permission's epoch (the item's, from peers before the
            // key chain), opened with any key of the wallet's ring: an envelope wrapped
            // before a renewal was wrapped to the encryption key of the certificate then
            // (issue 19 item 2).
            let envelope_epoch = match access.key_epoch {
                0 => item.key_epoch,
                epoch => epoch,
            };
            let context = WrapContext::CategoryKey {
                pseudonym: &pseudonym,
                category: &item.category,
                epoch: envelope_epoch,
            };
            let mut last_error = None;
            let mut opened = None;
            for key in wallet.encryption_keys() {
                match unwrap_key(key, &access.key_envelope, context) {
                    Ok(bytes) => {
                        opened = Some(bytes);
                        break;
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            let bytes = opened.ok_or_else(|| {
                ClientError::Protocol(format!(
                    "the category key: no key of this wallet opens its envelope ({})",
                    last_error.map(|e| e.to_string()).unwrap_or_default()
                ))
            })?;
            let mut key = EncryptionKey::from_bytes(*bytes);
            // An item of an earlier epoch: down the key chain, one link per epoch (issue 19
            // item 3). A later epoch than the envelope's is never reachable.
            if item.key_epoch > envelope_epoch {
                return Err(ClientError::Usage(format!(
                    "the item is encrypted to epoch {} of {}, and this permission holds epoch \
                     {envelope_epoch} only: the patient rotated the key after it was granted",
                    item.key_epoch, item.category
                )));
            }
            let mut epoch = envelope_epoch;
            for link in &access.key_chain {
                if epoch <= item.key_epoch {
                    break;
                }
                epoch -= 1;
                let bytes = unwrap_key(
                    &key,
                    link,
                    WrapContext::CategoryKey {
                        pseudonym: &pseudonym,
                        category: &item.category,
                        epoch,
                    },
                )
                .map_err(|e| {
                    ClientError::Protocol(format!("the key chain at epoch {epoch}: {e}"))
                })?;
                key = EncryptionKey::from_bytes(*bytes);
            }
            if epoch != item.key_epoch {
                return Err(ClientError::Protocol(format!(
                    "the ledger gave no key chain from epoch {envelope_epoch} down to the \
                     item's epoch {}",
                    item.key_epoch
                )));
            }
            key
        }
    };
    let dek = unwrap_key(
        &category_key,
        &item.wrapped_dek,
        WrapContext::FileKey { item_id: &item.id },
    )
    .map_err(|e| ClientError::Protocol(format!("the file key: {e}")))?;
    let key = FileKey::from_bytes(*dek);
    let plaintext_size = {
        let output = output.to_path_buf();
        let spool_path: PathBuf = spool.path().to_path_buf();
        let item_id = item.id.clone();
        tokio::task::spawn_blocking(move || -> Result<u64, ClientError> {
            let mut input = std::io::BufReader::new(
                std::fs::File::open(&spool_path).map_err(|e| ClientError::Usage(e.to_string()))?,
            );
            if let Some(year) = recheck_as_of {
                return decrypt_checked_copy(&key, &item_id, &mut input, year, &output);
            }
            let partial = output.with_extension("partial");
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&partial)
                    .map_err(|e| ClientError::Usage(format!("{}: {e}", partial.display())))?,
            );
            let result = FileDecryptor::decrypt_stream(&key, &item_id, &mut input, &mut out)
                .map_err(|e| ClientError::Tampered {
                    item: item_id.clone(),
                    why: e.to_string(),
                })
                .and_then(|n| {
                    out.flush()
                        .and_then(|_| out.get_ref().sync_all())
                        .map_err(|e| ClientError::Usage(e.to_string()))?;
                    Ok(n)
                });
            match result {
                Ok(n) => {
                    std::fs::rename(&partial, &output)
                        .map_err(|e| ClientError::Usage(format!("{}: {e}", output.display())))?;
                    Ok(n)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| ClientError::Usage(e.to_string()))??
    };
    Ok(Downloaded {
        item,
        plaintext_size,
        committed,
        emergency: access.emergency,
    })
}

/// The year a de-identified study copy was made as of, if this client knows its profile.
fn deidentified_as_of(copy: &v1::StudyItem) -> Result<i32, ClientError> {
    if copy.deid_profile != medledger_deid::PROFILE
        || copy.deid_profile_version != medledger_deid::PROFILE_VERSION
    {
        return Err(ClientError::Rejected {
            code: tonic::Code::FailedPrecondition,
            message: format!(
                "study copy {} was de-identified with profile {:?} version {}; this client \
                 re-checks only {:?} version {}",
                copy.item_id,
                copy.deid_profile,
                copy.deid_profile_version,
                medledger_deid::PROFILE,
                medledger_deid::PROFILE_VERSION
            ),
            hint: "use a medledger client that knows this profile",
        });
    }
    Ok(copy.deid_year)
}

/// Decrypts a de-identified study copy into memory, re-checks it (`medledger_deid::check`,
/// as of `year`), and only then writes it to `output` (synced, then renamed into place).
/// A copy that fails is [`ClientError::NotDeidentified`] and leaves nothing on disk.
fn decrypt_checked_copy(
    key: &FileKey,
    item_id: &str,
    input: &mut impl std::io::Read,
    year: i32,
    output: &Path,
) -> Result<u64, ClientError> {
    let not_deidentified = |why: String| ClientError::NotDeidentified {
        item: item_id.to_string(),
        why,
    };
    let mut plain = BoundedBuffer::new(medledger_deid::MAX_INPUT_BYTES);
    FileDecryptor::decrypt_stream(key, item_id, input, &mut plain).map_err(|e| {
        if plain.overflowed {
            not_deidentified(format!(
                "larger than the {} bytes a de-identified copy may be",
                medledger_deid::MAX_INPUT_BYTES
            ))
        } else {
            ClientError::Tampered {
                item: item_id.to_string(),
                why: e.to_string(),
            }
        }
    })?;
    // What is written is the canonical copy `check_rekeyed` returns, never the bytes received:
    // those could hide text in duplicate keys, escapes or long number literals that parse
    // to the same values.
    // Ids re-keyed to the researcher's own random ones: the sharer chose the copy's.
    let mut ids = medledger_deid::uuid_ids(|random| rand_core::OsRng.fill_bytes(random));
    let canonical = medledger_deid::check_rekeyed(&plain.bytes, year, &mut ids)
        .map_err(|e| not_deidentified(e.to_string()))?;
    drop(plain);
    let partial = output.with_extension("partial");
    let written = std::fs::write(&partial, &canonical)
        .and_then(|_| std::fs::File::open(&partial)?.sync_all())
        .and_then(|_| std::fs::rename(&partial, output));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(ClientError::Usage(format!("{}: {e}", output.display())));
    }
    Ok(canonical.len() as u64)
}

/// A `Write` into memory that refuses to grow past a limit.
struct BoundedBuffer {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl BoundedBuffer {
    fn new(limit: usize) -> BoundedBuffer {
        BoundedBuffer {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }
}

impl Write for BoundedBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(data.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("the copy is too large"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn gateway_error(status: tonic::Status) -> ClientError {
    ClientError::from_ledger_status(status)
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    fn finish(mut self) -> std::io::Result<([u8; 32], u64)> {
        self.inner.flush()?;
        Ok((self.hasher.finalize().into(), self.written))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The patient erases their record: the signed `erase_patient` goes through the gateway,
/// which deletes every object the erasure lists once it has committed. Returns the committed
/// transaction and the deleted paths.
pub async fn erase(
    peers: &PeerSet,
    gateway: &mut GatewayClient<Channel>,
    pseudonym: [u8; 32],
) -> Result<(Committed, Vec<String>), ClientError> {
    let (_, envelope) = peers
        .signed(
            "erase_patient",
            v1::PatientArgs {
                pseudonym: pseudonym.to_vec(),
            }
            .encode_to_vec(),
        )
        .await;
    let response = gateway
        .erase(v1::EraseRequest {
            envelope: Some(envelope.clone()),
        })
        .await
        .map_err(gateway_error)?
        .into_inner();
    let committed = peers
        .check_proof(&envelope, response.proof)
        .await?
        .into_valid()?;
    Ok((committed, response.deleted_paths))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_crypto::{SigningIdentity, category_key_statement};

    /// A key is believed only with its owner's signature on exactly it: another key, another
    /// epoch, another owner, a missing signature or owner key are each refused.
    #[test]
    fn a_key_is_believed_only_with_its_owners_signature() {
        let owner = SigningIdentity::generate(&mut rand_core::OsRng);
        let stranger = SigningIdentity::generate(&mut rand_core::OsRng);
        let statement = category_key_statement(&[1; 32], "lab-results", 2, &[7; 32]);
        let sign = |who: &SigningIdentity, what: &[u8]| {
            who.sign(SignatureDomain::CategoryKey, what)
                .to_bytes()
                .to_vec()
        };
        let owner_key = owner.verifying_key().to_bytes();
        let good = sign(&owner, &statement);
        let check = |key: &[u8], statement: &[u8], signature: &[u8]| {
            check_key_signature(key, SignatureDomain::CategoryKey, statement, signature)
        };
        assert!(check(&owner_key, &statement, &good).is_ok());
        let other_key = category_key_statement(&[1; 32], "lab-results", 2, &[8; 32]);
        assert!(
            check(&owner_key, &other_key, &good).is_err(),
            "a substituted key"
        );
        let other_epoch = category_key_statement(&[1; 32], "lab-results", 1, &[7; 32]);
        assert!(
            check(&owner_key, &other_epoch, &good).is_err(),
            "another epoch"
        );
        let by_stranger = sign(&stranger, &statement);
        assert!(
            check(&owner_key, &statement, &by_stranger).is_err(),
            "a stranger's key"
        );
        assert!(check(&owner_key, &statement, &[]).is_err(), "no signature");
        assert!(check(&[], &statement, &good).is_err(), "no owner key");
        let in_study_domain = owner
            .sign(SignatureDomain::StudyKey, &statement)
            .to_bytes()
            .to_vec();
        assert!(
            check(&owner_key, &statement, &in_study_domain).is_err(),
            "a signature for another purpose"
        );
    }
}
