//! The `medledger.v1.Gateway` service.
//!
//! Upload: the signed `add_item` transaction, then ciphertext. The gateway checks that the
//! caller signed it, streams the bytes into the object store while hashing them (bounded
//! buffers, never the whole file), and only once size and SHA-256 match what the transaction
//! declares does it complete the object and submit the transaction. The object is deleted
//! only when the transaction is proven never to commit: refused in a block (its commit
//! proof), or expired (f+1 peers hold a block past its expiry without it); a refusal before
//! ordering is answered at once but settled later. A journal entry written before the
//! object is completed makes this hold across a crash: the gateway resubmits the same
//! signed transaction (it commits at most once) every 30 s and at start, and keeps or
//! deletes the object by the proven outcome.
//!
//! Download: the signed `record_access` transaction. Only after a commit proof shows that
//! it committed as valid does the gateway read the object named by the committed result;
//! the proof goes first, so the client checks it and the hash on the ledger itself.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use medledger_chaincode::{keys, limits};
use medledger_crypto::{
    RootCertificate, Signature, SignatureDomain, certificate_hash, validate_enrollment_certificate,
};
use medledger_proto::v1;
use medledger_sdk::error::ClientError;
use medledger_sdk::peer::{Committed, PeerSet};
use medledger_tls::admission::{Admission, AdmissionLimits, Admitted};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Largest message of a stream: a ciphertext chunk plus framing.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Chunks streamed to a downloading client.
const DOWNLOAD_CHUNK: usize = 1 << 20;
/// Part size of multipart writes (S3 needs at least 5 MiB for all but the last part).
const PART_SIZE: usize = 8 << 20;
/// Parts uploading at once per transfer: with the part being filled, memory per upload is
/// bounded by about (this + 1) × PART_SIZE.
const PARTS_IN_FLIGHT: usize = 2;
/// A multipart upload that is aborted unless it is completed: on every early return, and
/// when the client goes away and the handler is dropped mid-stream (the store would
/// otherwise keep the parts written so far).
struct Multipart(Option<WriteMultipart>);

impl Multipart {
    fn writer(&mut self) -> &mut WriteMultipart {
        self.0.as_mut().expect("present until completed or aborted")
    }

    async fn finish(mut self) -> object_store::Result<object_store::PutResult> {
        self.0
            .take()
            .expect("present until completed or aborted")
            .finish()
            .await
    }

    async fn abort(mut self) {
        if let Some(writer) = self.0.take() {
            let _ = writer.abort().await;
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(error = %e, "could not abort an abandoned upload");
                }
            });
        }
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest object accepted, in bytes of ciphertext.
    pub max_file_size: u64,
    /// Transfers (uploads and downloads) served at once; more are refused RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// How long to wait for the peers to confirm a transaction before answering UNAVAILABLE
    /// (an upload's object is then kept in the journal until the outcome is known).
    pub commit_timeout: Duration,
    /// Most a client may stay silent in the middle of a transfer: then it is abandoned (an
    /// upload's multipart upload aborted, the transfer slot freed). An upload must also end
    /// before its transaction expires: bytes for a transaction that can no longer commit are
    /// not worth storing.
    pub transfer_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 16 << 30,
            max_streams: 16,
            commit_timeout: Duration::from_secs(60),
            transfer_idle: Duration::from_secs(60),
        }
    }
}

/// Uploads whose transaction's outcome is not known yet: one file per transaction, holding
/// the signed envelope. Written before the object is completed, removed once settled.
#[derive(Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(dir: PathBuf) -> std::io::Result<Journal> {
        std::fs::create_dir_all(&dir)?;
        Ok(Journal { dir })
    }

    fn file(&self, tx_id: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.pending", hex::encode(tx_id)))
    }

    fn record(&self, tx_id: &[u8; 32], envelope: &v1::Envelope) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.file(tx_id);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&envelope.encode_to_vec())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    fn settle(&self, tx_id: &[u8; 32]) {
        let _ = std::fs::remove_file(self.file(tx_id));
    }

    /// Every pending envelope.
    pub fn pending(&self) -> Vec<v1::Envelope> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pending"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| v1::Envelope::decode(b.as_slice()).ok())
            .collect()
    }
}

pub struct Gateway {
    pub peers: Arc<PeerSet>,
    pub store: Arc<dyn ObjectStore>,
    pub root: RootCertificate,
    pub limits: Limits,
    pub journal: Journal,
    streams: Arc<Semaphore>,
    /// Object paths with an upload in progress here.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Per-identity limits on transfers (by the caller's certificate).
    admission: Arc<Admission>,
    /// Accesses whose download was served, with their block's time (Unix ms): each signed
    /// access serves one download. Kept while a replay could still be recent enough to
    /// pass the age check; bounded by [`MAX_SERVED`].
    served: Arc<Mutex<Served>>,
    /// Consensus time (Unix ms) from which this gateway process knows every access it
    /// served: its start plus the allowed clock skew. An access recorded before it may have
    /// served a download before a restart, and is not served again.
    serving_since_ms: i64,
}

/// Served accesses by id, and by block time for ageing them out in order.
#[derive(Default)]
struct Served {
    ids: HashSet<[u8; 32]>,
    by_time: std::collections::BTreeSet<(i64, [u8; 32])>,
}

impl Served {
    /// Forgets the accesses recorded before `oldest` (Unix ms).
    fn age_out(&mut self, oldest: i64) {
        while let Some(&(at, id)) = self.by_time.first() {
            if at >= oldest {
                break;
            }
            self.by_time.pop_first();
            self.ids.remove(&id);
        }
    }
}

/// Served accesses remembered at most; beyond it downloads are refused until older ones age
/// out (RESOURCE_EXHAUSTED), never forgotten early.
pub const MAX_SERVED: usize = 1_000_000;

/// Transfers one identity may start: 20 a second (bursts of 40), 8 under way at once, so
/// one caller cannot take the gateway's transfer slots from everyone else.
pub const TRANSFER_LIMITS: AdmissionLimits = AdmissionLimits {
    rate_per_s: 20.0,
    burst: 40.0,
    max_in_flight: 8,
    max_identities: 100_000,
};

/// A transaction as the gateway reads it (the peers validate it again, fully).
struct Opened {
    tx_id: [u8; 32],
    transaction: v1::Transaction,
    /// The caller's admission, held for the whole transfer.
    admitted: Admitted,
}

/// What an `add_item` declares about its object.
#[derive(Debug)]
struct Declared {
    path: String,
    sha256: [u8; 32],
    size: u64,
}

fn client_status(e: ClientError) -> Status {
    match e {
        ClientError::Rejected { code, message, .. } => Status::new(code, message),
        ClientError::NoQuorum { .. }
        | ClientError::NoAgreement { .. }
        | ClientError::PeerUnreachable { .. } => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// Whether `e` proves the transaction will never commit: f+1 peers (so a correct one) hold
/// a block past its expiry without it (`DEADLINE_EXCEEDED` with the EXPIRED status, which
/// a peer gives only then). Every other refusal before ordering is the peers' word that
/// they will not order it now, not a proof that it can never be ordered.
fn proven_expired(e: &ClientError) -> bool {
    matches!(e, ClientError::Rejected { code, .. } if *code == tonic::Code::DeadlineExceeded)
}

fn store_status(what: &str, e: object_store::Error) -> Status {
    tracing::error!(error = %e, "object store: {what}");
    Status::unavailable(format!("the object store failed while {what}; retry later"))
}

/// What an upload transaction (`add_item`, or `share_for_study` for a study's copy) declares
/// about its object, checked with the chaincode's own rules (which also make each part of
/// the path a safe object-path segment).
fn declaration(transaction: &v1::Transaction) -> Result<Declared, String> {
    let (path, expected, sha256, size) = match transaction.function.as_str() {
        "add_item" => {
            let args = v1::AddItemArgs::decode(transaction.args.as_slice())
                .map_err(|e| format!("add_item arguments: {e}"))?;
            limits::exact_len("pseudonym", &args.pseudonym, 32)
                .and_then(|_| limits::identifier("category", &args.category))
                .and_then(|_| limits::identifier("item_id", &args.item_id))
                .map_err(|e| e.to_string())?;
            let expected = keys::item_path(
                &keys::pseudonym_hex(&args.pseudonym),
                &args.category,
                &args.item_id,
            );
            (args.path, expected, args.sha256, args.size)
        }
        "share_for_study" => {
            let args = v1::ShareForStudyArgs::decode(transaction.args.as_slice())
                .map_err(|e| format!("share_for_study arguments: {e}"))?;
            limits::identifier("study_id", &args.study_id)
                .and_then(|_| limits::identifier("item_id", &args.item_id))
                .map_err(|e| e.to_string())?;
            // The study pseudonym is in the patient's grant; the chaincode checks it. Here
            // it must be 64 hex digits, like every pseudonym in a path.
            let study_pseudonym = args
                .path
                .split('/')
                .nth(2)
                .filter(|p| p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()))
                .unwrap_or("<study pseudonym>")
                .to_ascii_lowercase();
            let expected = keys::study_item_path(&args.study_id, &study_pseudonym, &args.item_id);
            (args.path, expected, args.sha256, args.size)
        }
        other => return Err(format!("{other} does not store an object")),
    };
    if path != expected {
        return Err(format!("the object path must be {expected}"));
    }
    let sha256: [u8; 32] = sha256
        .as_slice()
        .try_into()
        .map_err(|_| "sha256 must be 32 bytes".to_string())?;
    Ok(Declared { path, sha256, size })
}

/// The object a committed read names: (item id, path, size, SHA-256, erased).
fn read_object(function: &str, result: &[u8]) -> Option<(String, String, u64, Vec<u8>, bool)> {
    match function {
        "record_access" => v1::RecordAccessResult::decode(result)
            .ok()?
            .item
            .map(|i| (i.id, i.path, i.size, i.sha256, i.tombstoned)),
        "record_study_access" => v1::RecordStudyAccessResult::decode(result)
            .ok()?
            .item
            .map(|i| (i.item_id, i.path, i.size, i.sha256, i.tombstoned)),
        _ => None,
    }
}

/// The signed transaction an envelope carries, decoded, with its id.
fn transaction_of(
    envelope: &v1::Envelope,
) -> Option<(&v1::SignedTransaction, v1::Transaction, [u8; 32])> {
    let Some(v1::envelope::Kind::Transaction(signed)) = &envelope.kind else {
        return None;
    };
    let transaction = v1::Transaction::decode(signed.transaction.as_slice()).ok()?;
    let tx_id =
        medledger_crypto::transaction_id(&transaction.nonce, &transaction.creator_cert_hash);
    Some((signed, transaction, tx_id))
}

/// Releases an object path when an upload ends, however it ends.
struct Claim {
    set: Arc<Mutex<HashSet<String>>>,
    path: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.path);
    }
}

type DownloadStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::DownloadResponse, Status>> + Send>>;

impl Gateway {
    pub fn new(
        peers: Arc<PeerSet>,
        store: Arc<dyn ObjectStore>,
        root: RootCertificate,
        limits: Limits,
        journal: Journal,
    ) -> Gateway {
        Gateway {
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            store,
            root,
            limits,
            journal,
            in_flight: Arc::default(),
            admission: Admission::new(TRANSFER_LIMITS),
            served: Arc::default(),
            // Whole seconds from the clock, so one more: the start is never rounded down.
            serving_since_ms: medledger_tls::now_unix()
                .saturating_add(1)
                .saturating_mul(1000)
                .saturating_add(
                    peers
                        .configuration()
                        .parameters
                        .max_clock_skew_ms
                        .min(i64::MAX as u64) as i64,
                ),
            peers,
        }
    }

    /// Whether the committed access `tx_id` (in a block of time `block_ms`) may serve a
    /// download now: each read is a fresh committed access. An access recorded longer ago
    /// than a transaction may stay pending is a replay of an old one (the clinician's
    /// permission may have been revoked since); a recent one serves once.
    fn fresh_access(&self, tx_id: [u8; 32], block_ms: i64) -> Result<(), Status> {
        let now_ms = medledger_tls::now_unix().saturating_mul(1000);
        let oldest = now_ms.saturating_sub(self.peers.longest_pending_ms());
        if block_ms < oldest {
            return Err(Status::failed_precondition(
                "this access was recorded long before this download was asked: each download \
                 needs a newly signed record_access",
            ));
        }
        if block_ms < self.serving_since_ms {
            let mut status = Status::failed_precondition(
                "this access was recorded before this gateway (re)started, which cannot know \
                 whether it served a download already: each download needs a newly signed \
                 record_access",
            );
            // When a new access will be recent enough (the SDK asks again once).
            let wait = self.serving_since_ms.saturating_sub(now_ms).max(0) + 200;
            if let Ok(value) = wait.to_string().parse() {
                status
                    .metadata_mut()
                    .insert(medledger_sdk::files::RETRY_AFTER_METADATA, value);
            }
            return Err(status);
        }
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        served.age_out(oldest);
        if served.ids.contains(&tx_id) {
            return Err(Status::failed_precondition(
                "this access already served a download: each download needs a newly signed \
                 record_access",
            ));
        }
        if served.ids.len() >= MAX_SERVED {
            return Err(Status::resource_exhausted(
                "too many downloads in a short time; retry shortly",
            ));
        }
        served.ids.insert(tx_id);
        served.by_time.insert((block_ms, tx_id));
        Ok(())
    }

    /// Admits one transfer by the caller whose certificate hash is `caller`.
    fn admit(&self, caller: [u8; 32]) -> Result<Admitted, Status> {
        self.admission
            .admit(caller)
            .map_err(|refused| Status::resource_exhausted(refused.to_string()))
    }

    /// Reads the envelope, checks it is this caller's signed transaction calling `function`.
    fn open<T>(
        &self,
        request: &Request<T>,
        envelope: Option<&v1::Envelope>,
        functions: &[&str],
    ) -> Result<Opened, Status> {
        let function = functions.join(" or ");
        let der = medledger_tls::peer_certificate(request)
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let identity = validate_enrollment_certificate(
            &der,
            &self.root,
            medledger_tls::now_unix(),
            self.peers.revocations(),
        )
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
        let Some((signed, transaction, tx_id)) = envelope.and_then(transaction_of) else {
            return Err(Status::invalid_argument(format!(
                "the request must carry a readable signed {function} transaction"
            )));
        };
        if !functions.contains(&transaction.function.as_str()) {
            return Err(Status::invalid_argument(format!(
                "expected a {function} transaction, got {:?}",
                transaction.function
            )));
        }
        let caller_hash = certificate_hash(&der);
        if transaction.creator_cert_hash != caller_hash {
            return Err(Status::permission_denied(
                "the transaction is signed by another identity than the caller",
            ));
        }
        if transaction.network_id != self.peers.network_id {
            return Err(Status::invalid_argument(
                "the transaction is for another network",
            ));
        }
        // Its expiry settles what becomes of the bytes stored for it: one already past, or
        // further ahead than any block would accept, is refused before a byte is stored.
        self.peers
            .check_expiry_now(transaction.expires_at_ms)
            .map_err(Status::invalid_argument)?;
        let signature = Signature::from_slice(&signed.signature)
            .map_err(|_| Status::unauthenticated("the transaction's signature is malformed"))?;
        identity
            .signing_key
            .verify(
                SignatureDomain::Transaction,
                &signed.transaction,
                &signature,
            )
            .map_err(|_| Status::unauthenticated("the transaction's signature does not verify"))?;
        let admitted = self.admit(caller_hash)?;
        Ok(Opened {
            tx_id,
            transaction,
            admitted,
        })
    }

    fn declared(&self, opened: &Opened) -> Result<Declared, Status> {
        let declared = declaration(&opened.transaction).map_err(Status::invalid_argument)?;
        if declared.size > self.limits.max_file_size {
            return Err(Status::out_of_range(format!(
                "the file is {} bytes; this gateway accepts at most {}",
                declared.size, self.limits.max_file_size
            )));
        }
        Ok(declared)
    }

    fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the gateway is serving its maximum of {} transfers; retry shortly",
                self.limits.max_streams
            ))
        })
    }

    fn claim(&self, path: &str) -> Result<Claim, Status> {
        let mut set = self.in_flight.lock().unwrap();
        if !set.insert(path.to_string()) {
            return Err(Status::aborted(format!(
                "another upload to {path} is in progress"
            )));
        }
        Ok(Claim {
            set: self.in_flight.clone(),
            path: path.to_string(),
        })
    }

    /// Submits until a peer proves an outcome, or `commit_timeout` passes (`None`).
    /// A refusal before ordering (bad signature, reused id...) is an outcome too.
    async fn commit(&self, envelope: &v1::Envelope) -> Result<Option<Committed>, ClientError> {
        let deadline = tokio::time::Instant::now() + self.limits.commit_timeout;
        loop {
            match self.peers.submit_envelope(envelope.clone()).await {
                Ok(c) => return Ok(Some(c)),
                Err(e @ ClientError::Rejected { .. }) => return Err(e),
                Err(e) => {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(error = %e, "no outcome from the peers in time");
                        return Ok(None);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn delete(&self, path: &ObjectPath) {
        if let Err(e) = self.store.delete(path).await {
            tracing::error!(%path, error = %e, "could not delete an object whose transaction did not commit");
        }
    }

    /// Settles journaled uploads: resubmits each transaction (it commits at most once) and
    /// keeps or deletes its object by the outcome. Returns how many are still unsettled.
    pub async fn reconcile(&self) -> usize {
        let mut unsettled = 0;
        for envelope in self.journal.pending() {
            let Some((_, tx, tx_id)) = transaction_of(&envelope) else {
                continue;
            };
            if tx.function == "erase_patient" {
                if !self.settle_erasure(&envelope, &tx_id).await {
                    unsettled += 1;
                }
                continue;
            }
            let Ok(args) = declaration(&tx) else {
                self.journal.settle(&tx_id);
                continue;
            };
            let path = ObjectPath::from(args.path.as_str());
            let Ok(_claim) = self.claim(&args.path) else {
                unsettled += 1;
                continue;
            };
            match self.store.head(&path).await {
                Ok(meta) if meta.size == args.size => {}
                // Never completed: the transaction was never submitted.
                Err(object_store::Error::NotFound { .. }) => {
                    self.journal.settle(&tx_id);
                    continue;
                }
                Ok(_) => {
                    self.delete(&path).await;
                    self.journal.settle(&tx_id);
                    continue;
                }
                Err(_) => {
                    unsettled += 1;
                    continue;
                }
            }
            match self.commit(&envelope).await {
                Ok(Some(c)) if c.is_valid() => {
                    tracing::info!(%path, block = c.block, "journaled upload committed");
                    self.journal.settle(&tx_id);
                }
                Ok(Some(_)) => {
                    tracing::info!(%path, "journaled upload refused in a block; object deleted");
                    self.delete(&path).await;
                    self.journal.settle(&tx_id);
                }
                Err(e) if proven_expired(&e) => {
                    tracing::info!(%path, "journaled upload expired without committing; object deleted");
                    self.delete(&path).await;
                    self.journal.settle(&tx_id);
                }
                _ => unsettled += 1,
            }
        }
        unsettled
    }
}

#[tonic::async_trait]
impl v1::gateway_server::Gateway for Gateway {
    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadRequest>>,
    ) -> Result<Response<v1::UploadResponse>, Status> {
        let (metadata, extensions, mut stream) = request.into_parts();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let envelope = match first.part {
            Some(v1::upload_request::Part::Envelope(e)) => e,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be the signed add_item or share_for_study transaction",
                ));
            }
        };
        let probe = Request::from_parts(metadata, extensions, ());
        let opened = self.open(&probe, Some(&envelope), &["add_item", "share_for_study"])?;
        // A global transfer slot only once the caller is admitted (`open`): one identity
        // cannot take the slots from everyone else.
        let _permit = self.permit()?;
        let declared = self.declared(&opened)?;
        let _claim = self.claim(&declared.path)?;
        let path = ObjectPath::from(declared.path.as_str());
        // Object keys never repeat: some S3 servers (Garage) overwrite even when asked not to,
        // so an upload to a path that holds an object is refused before anything is written.
        match self.store.head(&path).await {
            Ok(_) => {
                return Err(Status::already_exists(format!(
                    "an object is already stored at {}; every file needs a new item id",
                    declared.path
                )));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_status("checking the path", e)),
        }

        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| store_status("starting the upload", e))?;
        let mut writer = Multipart(Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)));
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let now_ms = medledger_tls::now_unix().saturating_mul(1000);
        let until_expiry = opened
            .transaction
            .expires_at_ms
            .saturating_sub(now_ms)
            .max(0);
        let expires = tokio::time::Instant::now() + Duration::from_millis(until_expiry as u64);
        let failure: Option<Status> = loop {
            let idle = tokio::time::Instant::now() + self.limits.transfer_idle;
            let message = match tokio::time::timeout_at(idle.min(expires), stream.message()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => break None,
                Ok(Err(status)) => break Some(status),
                Err(_) if idle <= expires => {
                    break Some(Status::deadline_exceeded(format!(
                        "no bytes for {} s: the upload is abandoned",
                        self.limits.transfer_idle.as_secs()
                    )));
                }
                Err(_) => {
                    break Some(Status::deadline_exceeded(
                        "the transaction expired before its file arrived: sign it again",
                    ));
                }
            };
            let Some(v1::upload_request::Part::Chunk(chunk)) = message.part else {
                break Some(Status::invalid_argument(
                    "after the transaction, only ciphertext chunks may follow",
                ));
            };
            received += chunk.len() as u64;
            if received > declared.size {
                break Some(Status::invalid_argument(format!(
                    "more bytes than the {} the transaction declares",
                    declared.size
                )));
            }
            hasher.update(&chunk);
            if let Err(e) = writer.writer().wait_for_capacity(PARTS_IN_FLIGHT).await {
                break Some(store_status("writing", e));
            }
            writer.writer().write(&chunk);
        };
        let failure = failure.or_else(|| {
            let digest: [u8; 32] = hasher.finalize().into();
            if received != declared.size {
                Some(Status::invalid_argument(format!(
                    "the stream has {received} bytes; the transaction declares {}",
                    declared.size
                )))
            } else if digest != declared.sha256 {
                Some(Status::invalid_argument(
                    "the stream's SHA-256 does not match the hash the transaction declares",
                ))
            } else {
                None
            }
        });
        if let Some(status) = failure {
            writer.abort().await;
            return Err(status);
        }
        self.journal
            .record(&opened.tx_id, &envelope)
            .map_err(|e| Status::internal(format!("writing the upload journal: {e}")))?;
        if let Err(e) = writer.finish().await {
            self.journal.settle(&opened.tx_id);
            return Err(store_status("completing the object", e));
        }

        match self.commit(&envelope).await {
            Ok(Some(c)) if c.is_valid() => {
                self.journal.settle(&opened.tx_id);
                tracing::info!(path = %declared.path, size = declared.size, block = c.block, "stored");
                Ok(Response::new(v1::UploadResponse {
                    proof: Some(c.proof.clone()),
                    path: declared.path,
                    size: declared.size,
                }))
            }
            Ok(Some(c)) => {
                self.delete(&path).await;
                self.journal.settle(&opened.tx_id);
                tracing::info!(path = %declared.path, block = c.block, "refused on the ledger; object deleted");
                Err(client_status(c.refusal()))
            }
            Err(e) if proven_expired(&e) => {
                self.delete(&path).await;
                self.journal.settle(&opened.tx_id);
                tracing::info!(path = %declared.path, "expired without committing; object deleted");
                Err(client_status(e))
            }
            // Refused before ordering, by f+1 peers' word: no proof that it never commits
            // (a faulty primary may still order it before it expires), so the object stays,
            // journaled, until a block proves the outcome or the expiry passes.
            Err(e) => Err(client_status(e)),
            Ok(None) => Err(Status::unavailable(
                "the peers did not confirm the transaction in time; the gateway keeps the \
                 object and settles it (kept if the transaction commits, deleted if not) when \
                 they answer. Check the patient's items before uploading again",
            )),
        }
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<v1::DownloadRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let opened = self.open(
            &request,
            request.get_ref().envelope.as_ref(),
            &["record_access", "record_study_access"],
        )?;
        let permit = self.permit()?;
        let envelope = request.into_inner().envelope.unwrap_or_default();
        let committed = match self.commit(&envelope).await.map_err(client_status)? {
            Some(c) => c,
            None => {
                return Err(Status::unavailable(
                    "the peers did not confirm the access in time; retry the same request",
                ));
            }
        };
        if !committed.is_valid() {
            // The refusal is on the patient's audit trail; nothing is streamed.
            return Err(client_status(committed.refusal()));
        }
        let block_ms = committed
            .proof
            .header
            .as_ref()
            .map_or(i64::MIN, |h| h.time_ms);
        self.fresh_access(opened.tx_id, block_ms)?;
        let (item_id, item_path, item_size, item_sha256, erased) =
            read_object(&opened.transaction.function, &committed.result)
                .ok_or_else(|| Status::internal("the committed access names no item"))?;
        if erased {
            return Err(Status::failed_precondition("this item has been erased"));
        }
        let path = ObjectPath::from(item_path.as_str());
        let object = match self.store.get(&path).await {
            Ok(o) => o,
            Err(object_store::Error::NotFound { .. }) => {
                tracing::error!(path = %item_path, "the object of a committed item is missing");
                return Err(Status::data_loss(format!(
                    "the object of item {item_id} is missing from the store"
                )));
            }
            Err(e) => return Err(store_status("reading", e)),
        };
        let (tx, rx) = mpsc::channel(4);
        let idle = self.limits.transfer_idle;
        let proof = committed.proof.clone();
        let admitted = opened.admitted;
        tokio::spawn(async move {
            let _permit = permit;
            let _admitted = admitted;
            let first = v1::DownloadResponse {
                part: Some(v1::download_response::Part::Proof(Box::new(proof))),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut hasher = Sha256::new();
            let mut sent: u64 = 0;
            let mut bytes = object.into_stream();
            while let Some(next) = bytes.next().await {
                let mut buf: Bytes = match next {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(store_status("reading", e))).await;
                        return;
                    }
                };
                hasher.update(&buf);
                sent += buf.len() as u64;
                while !buf.is_empty() {
                    let piece = buf.split_to(buf.len().min(DOWNLOAD_CHUNK));
                    let message = v1::DownloadResponse {
                        part: Some(v1::download_response::Part::Chunk(piece.to_vec())),
                    };
                    // A client that stops reading is abandoned after the idle limit: its
                    // slot and admission go back.
                    match tokio::time::timeout(idle, tx.send(Ok(message))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            tracing::info!(path = %item_path, "download abandoned by a silent client");
                            return;
                        }
                    }
                }
            }
            let digest: [u8; 32] = hasher.finalize().into();
            if sent != item_size || digest[..] != item_sha256[..] {
                // The client detects this from the hash too; the operator needs to know.
                tracing::error!(path = %item_path, "a stored object does not match its hash on the ledger");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn erase(
        &self,
        request: Request<v1::EraseRequest>,
    ) -> Result<Response<v1::EraseResponse>, Status> {
        let opened = self.open(
            &request,
            request.get_ref().envelope.as_ref(),
            &["erase_patient"],
        )?;
        let envelope = request.into_inner().envelope.unwrap_or_default();
        self.journal
            .record(&opened.tx_id, &envelope)
            .map_err(|e| Status::internal(format!("writing the journal: {e}")))?;
        let committed = match self.commit(&envelope).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(Status::unavailable(
                    "the peers did not confirm the erasure in time; the gateway finishes it \
                     (deleting the objects once it commits) when they answer",
                ));
            }
            Err(e) => {
                self.journal.settle(&opened.tx_id);
                return Err(client_status(e));
            }
        };
        if !committed.is_valid() {
            self.journal.settle(&opened.tx_id);
            return Err(client_status(committed.refusal()));
        }
        let deleted = self.delete_erased(&committed).await.map_err(|e| {
            store_status(
                "deleting an erased record's objects (the journal retries)",
                e,
            )
        })?;
        self.journal.settle(&opened.tx_id);
        Ok(Response::new(v1::EraseResponse {
            proof: Some(committed.proof.clone()),
            deleted_paths: deleted,
        }))
    }
}

impl Gateway {
    /// Deletes every object a committed erasure lists (already deleted ones count as done).
    async fn delete_erased(
        &self,
        committed: &Committed,
    ) -> Result<Vec<String>, object_store::Error> {
        let paths = v1::ErasureResult::decode(committed.result.as_slice())
            .map(|r| r.deleted_paths)
            .unwrap_or_default();
        for path in &paths {
            match self.store.delete(&ObjectPath::from(path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            objects = paths.len(),
            block = committed.block,
            "erased record's objects deleted"
        );
        Ok(paths)
    }

    /// Resubmits a journaled erasure (it commits at most once) and deletes its objects once
    /// committed. Returns whether it is settled.
    async fn settle_erasure(&self, envelope: &v1::Envelope, tx_id: &[u8; 32]) -> bool {
        match self.commit(envelope).await {
            Ok(Some(c)) if c.is_valid() => {
                if self.delete_erased(&c).await.is_ok() {
                    self.journal.settle(tx_id);
                    return true;
                }
                false
            }
            Ok(Some(_)) => {
                self.journal.settle(tx_id);
                true
            }
            Err(e) if proven_expired(&e) => {
                self.journal.settle(tx_id);
                true
            }
            _ => false,
        }
    }
}
