//! `medledger.v1.Ledger`: the peer's API for clients. Every caller presented a valid
//! enrollment certificate at the TLS handshake; each call re-reads it for the caller's
//! identity. Errors are mapped once, here, to gRPC statuses with messages that say what to do.

use std::sync::Arc;
use std::time::Duration;

use medledger_chaincode::{self as chaincode, ChaincodeError};
use medledger_crypto::{EnrolledIdentity, Role};
use medledger_pbft as pbft;
use medledger_proto::v1;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use v1::TxStatus;

use crate::block::{envelope_hash, header_hash, result_leaves};
use crate::driver::Shared;
use crate::execute::{CommittedFacts, LedgerState};
use crate::genesis::Genesis;
use crate::inputs::{Inputs, Outcome, QueueError};
use crate::ledger::{Ledger, TxLocation};
use crate::network::Network;
use crate::readers;
use crate::validate::{Checked, Refusal, Validator, creator};
use crate::votes::Votes;
use medledger_execution::merkle::Tree;
use medledger_execution::proof::build_proof;
use medledger_execution::result_code::{chaincode_code, refusal_code};
use medledger_execution::state::WorldState as _;
use medledger_execution::stub::BlockStub;

/// How long Submit waits for its transaction to commit.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after a block's consensus time its votes may still be coming (ms): after that a
/// peer answers with the votes it holds rather than wait for more.
const VOTES_SETTLE_MS: i64 = 10_000;
/// Blocks' results queued for one subscriber before its stream waits for it.
const SUBSCRIBER_BLOCKS: usize = 4;
/// Most blocks one GetBlocks call returns.
pub const MAX_BLOCKS_PER_CALL: u32 = 100;
/// Revocation records per `GetRevocations` answer (each a few hundred bytes): the page
/// clients read ([`medledger_execution::revocations`]).
pub use medledger_execution::revocations::REVOCATIONS_PER_PAGE;
/// Configuration links per `GetConfigChain` answer (each carries a proof: a few KiB).
pub const CONFIG_LINKS_PER_PAGE: u64 = 64;

pub struct LedgerService {
    pub genesis: Arc<Genesis>,
    pub ledger: Arc<Ledger>,
    pub validator: Arc<Validator>,
    pub shared: Arc<Shared>,
    pub network: Arc<Network>,
    pub inputs: Inputs,
    pub replica: pbft::ReplicaId,
    /// The block votes this peer gathers: what its commit proofs carry.
    pub votes: Arc<Votes>,
    /// Debug builds, in tests: the lies this peer tells (`lies.rs`); none otherwise.
    pub lies: crate::lies::Lies,
    pub lie_turn: std::sync::atomic::AtomicU64,
    /// Per-identity limits on submissions (by the transaction's creator).
    pub admission: Arc<medledger_tls::admission::Admission>,
    /// Per-identity limits on open subscriptions (by the caller's signing key): record
    /// followers, and the ledger's readers apart.
    pub subscriptions: Arc<medledger_tls::admission::Admission>,
    pub reader_subscriptions: Arc<medledger_tls::admission::Admission>,
    /// This peer's signing key: it signs private-data acknowledgments (docs/adr/0017).
    pub identity: Arc<medledger_crypto::SigningIdentity>,
    /// Per-identity limits on `PutPrivateData` (by the caller's signing key): admitted
    /// before any decoding, hashing or signing.
    pub private_admission: Arc<medledger_tls::admission::Admission>,
    /// `GetPrivateData` calls per peer ([`RECONCILE_LIMITS`]).
    pub reconcile_admission: Arc<medledger_tls::admission::Admission>,
}

/// `PutPrivateData` calls one identity may make: as many as its submissions (each private
/// transaction is one put per peer), 200 a second (bursts of 400), 128 under way.
pub const PUT_PRIVATE_LIMITS: medledger_tls::admission::AdmissionLimits = SUBMIT_LIMITS;

/// What one subscription follows.
struct Following {
    /// One record (its pseudonym), or every result.
    record: Option<Vec<u8>>,
    /// Allowed as one of the ledger's readers (checked again at each block), not as the
    /// record's owner.
    as_reader: bool,
}

/// Subscriptions (`Subscribe`): each one reads every block from where it starts, so one
/// identity may open one a second (bursts of 8) and hold 4 at once, and 256 identities at
/// most hold any at once (at most 1,024 streams per peer).
pub const SUBSCRIBE_LIMITS: medledger_tls::admission::AdmissionLimits =
    medledger_tls::admission::AdmissionLimits {
        rate_per_s: 1.0,
        burst: 8.0,
        max_in_flight: 4,
        max_identities: 256,
    };

/// Subscriptions of the ledger's readers (peers and named auditors, at most 31 + 32):
/// admitted apart, so that no record follower crowds them out.
pub const READER_SUBSCRIBE_LIMITS: medledger_tls::admission::AdmissionLimits =
    medledger_tls::admission::AdmissionLimits {
        rate_per_s: 1.0,
        burst: 8.0,
        max_in_flight: 8,
        max_identities: 64,
    };

/// Reconciliation calls (`GetPrivateData`) one peer may make: 10 a second (bursts of 20),
/// 2 under way; a correct peer makes one per page of 256 missing values.
pub const RECONCILE_LIMITS: medledger_tls::admission::AdmissionLimits =
    medledger_tls::admission::AdmissionLimits {
        rate_per_s: 10.0,
        burst: 20.0,
        max_in_flight: 2,
        max_identities: 64,
    };

/// Submissions one identity may make: 200 a second (bursts of 400), 128 under way.
pub const SUBMIT_LIMITS: medledger_tls::admission::AdmissionLimits =
    medledger_tls::admission::AdmissionLimits {
        rate_per_s: 200.0,
        burst: 400.0,
        max_in_flight: 128,
        max_identities: 100_000,
    };

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal(format!("the peer failed: {e}"))
}

/// The metadata key under which a refusal at submission names its `v1::TxStatus` (as its
/// number): structured, so that a client counts refusals by kind, never by words.
pub const TX_STATUS_METADATA: &str = "medledger-tx-status";

/// The gRPC status for an envelope refused at submission, its `TxStatus` in the metadata
/// ([`TX_STATUS_METADATA`]).
pub fn refusal_status(r: &Refusal) -> Status {
    let mut status = Status::new(grpc_code(refusal_code(r.status)), r.message.clone());
    status.metadata_mut().insert(
        TX_STATUS_METADATA,
        tonic::metadata::MetadataValue::from(r.status as i32),
    );
    status
}

/// The gRPC code for a recorded result code (the numbers are the same).
pub fn grpc_code(code: v1::ResultCode) -> Code {
    Code::from_i32(code as i32)
}

/// The gRPC status for a chaincode error on a query.
pub fn chaincode_status(e: &ChaincodeError) -> Status {
    match chaincode_code(e) {
        v1::ResultCode::Internal => internal(e),
        code => Status::new(grpc_code(code), e.to_string()),
    }
}

impl LedgerService {
    /// Admits one submission charged to `identity` (a certificate hash).
    fn admit(&self, identity: [u8; 32]) -> Result<medledger_tls::admission::Admitted, Status> {
        self.admission.admit(identity).map_err(|refused| {
            metrics::counter!("medledger_submissions_refused_total").increment(1);
            Status::resource_exhausted(refused.to_string())
        })
    }

    fn facts(&self) -> CommittedFacts<'_> {
        CommittedFacts {
            ledger: &self.ledger,
            revocations: &self.shared.revocations,
            configuration: self.shared.configuration.get(),
        }
    }

    /// Who is calling: the TLS certificate, valid now and not revoked (its chain was checked
    /// at the handshake and is remembered by the validator).
    fn caller<T>(&self, request: &Request<T>) -> Result<EnrolledIdentity, Status> {
        let der = medledger_tls::peer_certificate(request)
            .ok_or_else(|| Status::unauthenticated("present your enrollment certificate"))?;
        self.validator
            .certificate_identity(&der, medledger_tls::now_unix(), &self.facts())
            .map_err(|e| Status::unauthenticated(format!("your certificate was refused: {e}")))
    }

    /// The `blocks` lie, told to an auditor (`lies.rs`).
    fn whitewash(&self, block: &mut v1::Block) {
        if crate::lies::whitewash(block) {
            tracing::info!("lie told: a whitewashed block");
        }
    }

    /// How far `identity` may read blocks ([`readers::readable_up_to`]: under the
    /// configuration in force and every epoch this peer knows).
    fn readable_up_to(&self, identity: &EnrolledIdentity, what: &str) -> Result<u64, Status> {
        readers::readable_up_to(
            identity,
            &self.shared.configuration.get(),
            |key| self.votes.readable_by_replica(key),
            what,
        )
    }

    /// What a subscription follows: one record, or every result (`record` empty: for the
    /// ledger's readers only). A caller who is not a reader must name a record the chaincode's `get_record`
    /// query lets them read at this peer's height: its owner (or an auditor).
    fn follow(&self, identity: &EnrolledIdentity, record: Vec<u8>) -> Result<Following, Status> {
        let reader = self.readable_up_to(identity, "every block's events");
        if record.is_empty() {
            if reader? != u64::MAX {
                return Err(Status::permission_denied(
                    "this peer left the network: it follows no events",
                ));
            }
            return Ok(Following {
                record: None,
                as_reader: true,
            });
        }
        if record.len() > readers::MAX_RECORD_BYTES {
            return Err(Status::invalid_argument(format!(
                "a record pseudonym of {} bytes; at most {}",
                record.len(),
                readers::MAX_RECORD_BYTES
            )));
        }
        if reader.ok() == Some(u64::MAX) {
            return Ok(Following {
                record: Some(record),
                as_reader: true,
            });
        }
        readers::auditor_named(identity, &self.shared.configuration.get())?;
        let view = LedgerState::new(&self.ledger, &self.shared.revocations);
        let empty = Default::default();
        let stub = BlockStub::new(
            &view,
            &empty,
            &[],
            creator(identity),
            [0; 32],
            medledger_tls::now_unix(),
            &[],
        );
        let args = v1::PatientArgs {
            pseudonym: record.clone(),
        }
        .encode_to_vec();
        let answer =
            chaincode::query(&stub, "get_record", &args).map_err(|e| chaincode_status(&e))?;
        // The owner by name, and by the key the record was registered with (a certificate
        // the CA issued in the owner's name with another key is not the owner).
        let owner_key = v1::GetRecordResult::decode(answer.as_slice())
            .ok()
            .and_then(|r| r.record)
            .map(|r| r.owner_key)
            .unwrap_or_default();
        if !owner_key.is_empty() && owner_key != identity.signing_key.to_bytes() {
            return Err(Status::permission_denied(
                "this record was registered with another key than this certificate's",
            ));
        }
        Ok(Following {
            record: Some(record),
            as_reader: false,
        })
    }

    /// What a refusal at submission tells the client, given `head` (height, consensus
    /// time) read *before* the envelope index was looked up. Once the ledger holds a block
    /// past a format-2 transaction's expiry, and the envelope is not in the index, it never
    /// commits, whatever else refuses it: the answer is then the final EXPIRED
    /// (DEADLINE_EXCEEDED), which a client or the gateway may act on once f+1 peers give it.
    /// An EXPIRED by this peer's clock with no such block yet is UNAVAILABLE (a lagging peer
    /// could miss the block that holds it): ask again, or another peer.
    fn refusal_now(&self, refusal: &Refusal, envelope: &v1::Envelope, head: (u64, i64)) -> Status {
        let (height, head_ms) = head;
        let expires_at_ms = match &envelope.kind {
            Some(v1::envelope::Kind::Transaction(signed)) => {
                v1::Transaction::decode(signed.transaction.as_slice())
                    .map_or(i64::MAX, |t| t.expires_at_ms)
            }
            _ => i64::MAX,
        };
        if head_ms > expires_at_ms {
            let final_refusal = Refusal {
                status: TxStatus::Expired,
                message: format!(
                    "the transaction expires at {expires_at_ms} ms and is in no block up to \
                     block {height} (consensus time {head_ms} ms): it never commits; sign it \
                     again"
                ),
                tx_id: refusal.tx_id,
            };
            refusal_status(&final_refusal)
        } else if refusal.status == TxStatus::Expired {
            Status::unavailable(format!(
                "the transaction's expiry ({expires_at_ms} ms) has passed by this peer's clock, \
                 but its ledger (block {height}, {head_ms} ms) has no block past it yet, so \
                 whether it committed is not settled here; ask again or another peer"
            ))
        } else {
            refusal_status(refusal)
        }
    }

    /// The commit proof of the envelope `bytes` from the ledger, when it was ordered before
    /// (its first leaf, whatever the outcome: one envelope, one outcome); `None` when it
    /// never was.
    async fn proof_from_ledger(
        &self,
        bytes: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<Option<Response<v1::SubmitResponse>>, Status> {
        let hash = envelope_hash(bytes);
        let Some(location) = self.ledger.envelope_location(&hash).map_err(internal)? else {
            return Ok(None);
        };
        let (proof, ordered) = self.unvoted_proof(location, &hash)?;
        if ordered != bytes {
            return Err(internal("the envelope index points at another envelope"));
        }
        self.with_votes(location.block, proof, String::new(), deadline)
            .await
            .map(Some)
    }

    /// The proof (without votes) of the envelope whose SHA-256 is `hash`, ordered at
    /// `location`, and the envelope's bytes as ordered.
    fn unvoted_proof(
        &self,
        location: TxLocation,
        hash: &[u8; 32],
    ) -> Result<(v1::CommitProof, Vec<u8>), Status> {
        let block = self.ledger.located(location).map_err(internal)?;
        let index = location.index as usize;
        let (Some(envelope), Some(result)) = (block.envelopes.get(index), block.results.get(index))
        else {
            return Err(internal("the envelope index points past its block"));
        };
        let header = block.header.clone().unwrap_or_default();
        let tree = Tree::new(result_leaves(&block.envelopes, &block.results));
        let proof = build_proof(&header, Vec::new(), &tree, index, hash, result)
            .ok_or_else(|| internal("a stored block's result tree has no such leaf"))?;
        Ok((proof, envelope.clone()))
    }

    /// `proof` with f+1 votes on its header, waiting for them until `deadline`.
    async fn with_votes(
        &self,
        block: u64,
        mut proof: v1::CommitProof,
        message: String,
        deadline: tokio::time::Instant,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        proof.votes = self.quorum_votes(block, deadline).await?;
        Ok(Response::new(v1::SubmitResponse {
            proof: Some(proof),
            message,
        }))
    }

    /// f+1 votes on block `block`'s header, waiting for them until `deadline`.
    async fn quorum_votes(
        &self,
        block: u64,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<v1::ReplicaSignature>, Status> {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.votes.quorum(block, wait).await.ok_or_else(|| {
            Status::unavailable(format!(
                "committed in block {block} here, but too few peers have signed that block for \
                 this peer to prove it; ask another peer, or retry the same transaction"
            ))
        })
    }

    /// What a correct peer answers to a submission.
    async fn submit_honestly(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let caller = self.caller(&request)?;
        // Admission before any costly work, charged to the caller — except a gateway, which
        // submits for many users: its submissions are charged to each transaction's creator,
        // once validated.
        let by_caller = (caller.role != medledger_crypto::Role::Gateway)
            .then(|| self.admit(caller.cert_hash))
            .transpose()?;
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("the request carries no envelope"))?;
        let deadline = tokio::time::Instant::now() + SUBMIT_TIMEOUT;
        let bytes = envelope.encode_to_vec();
        let checked = self
            .validator
            .check(&bytes, crate::driver::now_ms() as i64, &self.facts());
        let creator = match checked {
            Ok(Checked::Transaction(valid)) => {
                // Words a client should have sealed never reach a block through this peer.
                chaincode::check_before_ordering(
                    &valid.transaction.function,
                    &valid.transaction.args,
                    medledger_execution::genesis::private_keys(self.validator.ledger_format()),
                )
                .map_err(|e| chaincode_status(&e))?;
                valid.identity.cert_hash
            }
            // Revocations come from the CA root, in sequence, and configuration updates from
            // a threshold of admins, one per sequence number: one identity each.
            Ok(Checked::Revocation { .. }) => [0; 32],
            Ok(Checked::ConfigUpdate { .. }) => [1; 32],
            Err(refusal) => {
                // The head first: a block that commits the envelope between the two reads
                // then shows in the index, never as "expired".
                let head = self.ledger.head();
                // Ordered before (a retry, even after it expired or its certificate was
                // revoked): its one outcome is on the ledger, with its proof.
                if let Some(answer) = self.proof_from_ledger(&bytes, deadline).await? {
                    return Ok(answer);
                }
                return Err(self.refusal_now(&refusal, &envelope, head));
            }
        };
        let _admitted = match by_caller {
            Some(admitted) => admitted,
            None => self.admit(creator)?,
        };
        let (reply, outcome) = oneshot::channel();
        // The request id is the envelope's SHA-256 (docs/adr/0009 §5): no other bytes can be
        // ordered under it, so a forged copy cannot shadow this envelope.
        let request = pbft::Request {
            tx_id: envelope_hash(&bytes),
            payload: bytes.clone(),
        };
        match self.inputs.submit(request, reply) {
            Ok(()) => {}
            Err(QueueError::Full) => {
                return Err(Status::resource_exhausted(
                    "the peer is overloaded; retry the same transaction shortly",
                ));
            }
            Err(QueueError::Disconnected | QueueError::NoSuchReplica) => {
                return Err(Status::unavailable("the peer is shutting down"));
            }
        }
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(Outcome::Committed {
                block,
                result,
                proof,
            })) => {
                // Words only for a refusal, and only as this peer's (the proof has none).
                let words = if result.status == TxStatus::Valid as i32 {
                    String::new()
                } else {
                    result.message
                };
                self.with_votes(block, *proof, words, deadline).await
            }
            Ok(Ok(Outcome::AlreadyCommitted)) => self
                .proof_from_ledger(&bytes, deadline)
                .await?
                .ok_or_else(|| internal("an executed envelope is not in the envelope index")),
            Ok(Ok(Outcome::Displaced { block })) => Err(Status::aborted(format!(
                "block {block} holds other bytes under this envelope's request id (faulty \
                 peers ordered them); this envelope will not commit: sign the transaction \
                 again with a new nonce"
            ))),
            Ok(Ok(Outcome::Busy)) => Err(Status::resource_exhausted(
                "too many transactions are pending; retry the same transaction shortly",
            )),
            Ok(Ok(Outcome::Left { block })) => Err(Status::unavailable(format!(
                "this peer was removed from the network at block {block} and orders nothing \
                 more: submit to the peers of the configuration in force"
            ))),
            Ok(Err(_)) => Err(Status::unavailable("the peer is shutting down")),
            Err(_) => Err(Status::deadline_exceeded(
                "not committed yet (is a quorum of peers up?); resubmitting the same \
                 transaction is safe: it commits at most once",
            )),
        }
    }
}

#[tonic::async_trait]
impl v1::ledger_server::Ledger for LedgerService {
    async fn submit(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let mut answer = self.submit_honestly(request).await;
        if self.lies.proof
            && let Ok(response) = answer.as_mut()
        {
            let turn = self
                .lie_turn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::lies::forged_answer(response.get_mut(), turn);
            tracing::info!("lie told: a forged outcome");
        }
        answer
    }

    async fn query(
        &self,
        request: Request<v1::QueryRequest>,
    ) -> Result<Response<v1::QueryResponse>, Status> {
        let identity = self.caller(&request)?;
        readers::auditor_named(&identity, &self.shared.configuration.get())?;
        if self.lies.stall {
            tracing::info!("lie told: a query held unanswered");
            std::future::pending::<()>().await;
        }
        let request = request.into_inner();
        if request.args.len() > chaincode::MAX_ARGS_BYTES {
            return Err(Status::out_of_range(format!(
                "arguments larger than {} bytes",
                chaincode::MAX_ARGS_BYTES
            )));
        }
        if request.min_height > self.ledger.height() {
            let mut height = self.shared.height.subscribe();
            let caught_up = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                height.wait_for(|h| *h >= request.min_height),
            )
            .await;
            if !matches!(caught_up, Ok(Ok(_))) {
                return Err(Status::unavailable(format!(
                    "this peer is at block {}, behind the {} asked for; ask another peer",
                    self.ledger.height(),
                    request.min_height
                )));
            }
        }
        let view = LedgerState::new(&self.ledger, &self.shared.revocations);
        let height = view.height().map_err(internal)?;
        let empty = Default::default();
        let auditor_keys = self
            .shared
            .configuration
            .get()
            .auditor_keys(|serial| view.is_revoked(serial));
        let mut stub = BlockStub::new(
            &view,
            &empty,
            &[],
            creator(&identity),
            [0; 32],
            medledger_tls::now_unix(),
            &auditor_keys,
        );
        let private_keys =
            medledger_execution::genesis::private_keys(self.validator.ledger_format());
        if private_keys != medledger_chaincode::private::PrivateKeys::None {
            stub = stub.reading_private(private_keys, &view);
        }
        let answer = chaincode::query(&stub, &request.function, &request.args);
        if self.lies.keys
            && matches!(
                request.function.as_str(),
                "check_access" | "access_keys" | "study_access_keys" | "sealed_reasons"
            )
        {
            let result = crate::lies::forged_keys(
                &request.function,
                &answer.map_err(|e| chaincode_status(&e))?,
            );
            if request.function == "study_access_keys" {
                tracing::info!("lie told: forged study keys");
            } else if request.function == "sealed_reasons" {
                tracing::info!("lie told: forged sealed reasons");
            } else {
                tracing::info!("lie told: forged keys");
            }
            return Ok(Response::new(v1::QueryResponse { result, height }));
        }
        if self.lies.stale {
            // The answer of the genesis state (nothing registered, nothing granted), claimed
            // to be of the current height.
            let genesis = medledger_execution::memory::MemoryState::new(&self.genesis);
            let stub = BlockStub::new(
                &genesis,
                &empty,
                &[],
                creator(&identity),
                [0; 32],
                medledger_tls::now_unix(),
                &auditor_keys,
            );
            tracing::info!("lie told: a stale answer");
            let result = chaincode::query(&stub, &request.function, &request.args)
                .map_err(|e| chaincode_status(&e))?;
            return Ok(Response::new(v1::QueryResponse { result, height }));
        }
        let result = answer.map_err(|e| chaincode_status(&e))?;
        Ok(Response::new(v1::QueryResponse { result, height }))
    }

    async fn get_block(
        &self,
        request: Request<v1::GetBlockRequest>,
    ) -> Result<Response<v1::Block>, Status> {
        let identity = self.caller(&request)?;
        let number = request.into_inner().number;
        if number != 0 {
            let limit = self.readable_up_to(&identity, "blocks after the genesis")?;
            if number > limit {
                return Err(Status::permission_denied(format!(
                    "this peer left the network at block {limit}: it reads the blocks up to it"
                )));
            }
        }
        match self.ledger.block(number).map_err(internal)? {
            Some(mut block) => {
                block.votes = self.votes.held(number);
                if number == 0 && self.lies.genesis {
                    block = crate::lies::forged_genesis(&block);
                    tracing::info!("lie told: a forged genesis");
                }
                if number != 0 && self.lies.blocks && identity.role == Role::Auditor {
                    self.whitewash(&mut block);
                }
                Ok(Response::new(block))
            }
            None => Err(Status::not_found(format!(
                "no block {number}; the ledger's height is {}",
                self.ledger.height()
            ))),
        }
    }

    async fn get_blocks(
        &self,
        request: Request<v1::GetBlocksRequest>,
    ) -> Result<Response<v1::GetBlocksResponse>, Status> {
        let identity = self.caller(&request)?;
        let last = self.readable_up_to(&identity, "blocks")?;
        let request = request.into_inner();
        if request.from > last {
            return Err(Status::permission_denied(format!(
                "this peer left the network at block {last}: it reads the blocks up to it"
            )));
        }
        let limit = request.limit.clamp(1, MAX_BLOCKS_PER_CALL) as u64;
        let mut blocks = Vec::new();
        let mut bytes = 0;
        let end = request
            .from
            .saturating_add(limit)
            .min(last.saturating_add(1));
        for number in request.from..end {
            match self.ledger.block(number).map_err(internal)? {
                Some(mut block) => {
                    block.votes = self.votes.held(number);
                    if number != 0 && self.lies.blocks && identity.role == Role::Auditor {
                        self.whitewash(&mut block);
                    }
                    bytes += block.encoded_len();
                    blocks.push(block);
                    if bytes > 8 << 20 {
                        break;
                    }
                }
                None => break,
            }
        }
        Ok(Response::new(v1::GetBlocksResponse { blocks }))
    }

    type SubscribeStream = ReceiverStream<Result<v1::BlockEvents, Status>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let identity = self.caller(&request)?;
        let request = request.into_inner();
        let follow = self.follow(&identity, request.record)?;
        // Held for as long as the stream lives; by signing key (an identity renewed with the
        // same key is the same subscriber), readers apart (no one crowds them out).
        let admission = if follow.as_reader {
            &self.reader_subscriptions
        } else {
            &self.subscriptions
        };
        let admitted = admission
            .admit(identity.signing_key.to_bytes())
            .map_err(|refused| Status::resource_exhausted(refused.to_string()))?;
        let mut next = request.from_block.max(1);
        let ledger = self.ledger.clone();
        let (shared, votes) = (self.shared.clone(), self.votes.clone());
        let mut height = self.shared.height.subscribe();
        // A few blocks' results at most wait for a slow subscriber (each bounded by the
        // block size).
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BLOCKS);
        tokio::spawn(async move {
            let _admitted = admitted;
            loop {
                while next <= ledger.height() {
                    // A reader who stops being one (an auditor the admins removed, a peer
                    // the block before removed) is told so at the next block, not at the
                    // end of their certificate.
                    if follow.as_reader {
                        let still = readers::readable_up_to(
                            &identity,
                            &shared.configuration.get(),
                            |key| votes.readable_by_replica(key),
                            "every block's events",
                        );
                        match still {
                            Ok(u64::MAX) => {}
                            Ok(_) => {
                                let _ = tx
                                    .send(Err(Status::permission_denied(
                                        "this peer left the network: it follows no events",
                                    )))
                                    .await;
                                return;
                            }
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        }
                    }
                    let block = match ledger.block(next) {
                        Ok(Some(b)) => b,
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(internal(e))).await;
                            return;
                        }
                    };
                    let results = match &follow.record {
                        None => block.results,
                        Some(record) => {
                            readers::for_follower(block.results, record, &identity.name)
                        }
                    };
                    let events = v1::BlockEvents {
                        block: next,
                        time_ms: block.header.as_ref().map_or(0, |h| h.time_ms),
                        results,
                    };
                    if tx.send(Ok(events)).await.is_err() {
                        return;
                    }
                    next += 1;
                }
                tokio::select! {
                    changed = height.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_revocations(
        &self,
        request: Request<v1::GetRevocationsRequest>,
    ) -> Result<Response<v1::GetRevocationsResponse>, Status> {
        self.caller(&request)?;
        let from = request.into_inner().from_sequence.max(1);
        if self.lies.revocations {
            tracing::info!("lie told: forged revocations");
            return Ok(Response::new(crate::lies::junk_revocations(from)));
        }
        let mut records = Vec::new();
        for sequence in from..from.saturating_add(REVOCATIONS_PER_PAGE) {
            let Some(bytes) = self.ledger.revocation_record(sequence).map_err(internal)? else {
                break;
            };
            let signed = v1::SignedRevocationRecord::decode(bytes.as_slice())
                .map_err(|_| internal("a stored revocation record does not decode"))?;
            records.push(signed);
        }
        Ok(Response::new(v1::GetRevocationsResponse { records }))
    }

    async fn get_config_chain(
        &self,
        request: Request<v1::GetConfigChainRequest>,
    ) -> Result<Response<v1::GetConfigChainResponse>, Status> {
        self.caller(&request)?;
        let from = request.into_inner().from_sequence.max(1);
        let deadline = tokio::time::Instant::now() + SUBMIT_TIMEOUT;
        let mut links = Vec::new();
        for sequence in from..from.saturating_add(CONFIG_LINKS_PER_PAGE) {
            let Some(hash) = self.ledger.config_link(sequence).map_err(internal)? else {
                break;
            };
            let location = self
                .ledger
                .envelope_location(&hash)
                .map_err(internal)?
                .ok_or_else(|| internal("a configuration's envelope is not indexed"))?;
            let (mut proof, envelope) = self.unvoted_proof(location, &hash)?;
            // Votes on a block that committed a while ago have come, or never will (this
            // peer fetched the block by state transfer, which carries none): what is held
            // is answered at once, and a link this peer cannot prove ends its page (a client
            // asks every peer; waiting here only held it up).
            let age_ms = (crate::driver::now_ms() as i64).saturating_sub(
                self.ledger
                    .header(location.block)
                    .map_err(internal)?
                    .time_ms,
            );
            proof.votes = if age_ms > VOTES_SETTLE_MS {
                self.votes.held(location.block)
            } else {
                self.quorum_votes(location.block, deadline).await?
            };
            if proof.votes.len() < self.votes.needed(location.block) {
                if links.is_empty() {
                    return Err(Status::unavailable(format!(
                        "this peer holds too few votes to prove configuration {sequence} (it \
                         fetched its block from the others): ask another peer"
                    )));
                }
                break;
            }
            links.push(v1::ConfigLink {
                envelope,
                proof: Some(proof),
            });
        }
        if self.lies.config {
            let own_key = self.votes.sign_anything(&v1::BlockHeader::default()).1;
            let links = crate::lies::forged_config_chain(&links, from, &own_key, |h| {
                self.votes.sign_anything(h).0
            });
            tracing::info!("lie told: a forged configuration");
            return Ok(Response::new(v1::GetConfigChainResponse { links }));
        }
        Ok(Response::new(v1::GetConfigChainResponse { links }))
    }

    async fn get_private_data(
        &self,
        request: Request<v1::GetPrivateDataRequest>,
    ) -> Result<Response<v1::GetPrivateDataResponse>, Status> {
        let caller = self.caller(&request)?;
        // The replicas in force keep every committed value (docs/adr/0017 §7): to them
        // alone. A peer that left, or was never one, learns nothing here.
        let configuration = self.shared.configuration.get();
        if caller.role != Role::Peer || configuration.replica_of(&caller.signing_key).is_none() {
            return Err(Status::permission_denied(
                "private values are reconciled between the peers of the configuration in force \
                 only",
            ));
        }
        // A correct peer asks a page at a time, a few a second at most: a Byzantine one
        // looping over every commitment is held to that.
        let _admitted = self
            .reconcile_admission
            .admit(caller.signing_key.to_bytes())
            .map_err(|refused| Status::resource_exhausted(refused.to_string()))?;
        let request = request.into_inner();
        if request.commitments.len() > crate::reconcile::MAX_COMMITMENTS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "at most {} commitments a call",
                crate::reconcile::MAX_COMMITMENTS_PER_CALL
            )));
        }
        let mut values = Vec::new();
        for commitment in &request.commitments {
            if commitment.len() != 32 {
                return Err(Status::invalid_argument("a commitment is 32 bytes"));
            }
            if let Some(held) = self.ledger.private_value(commitment).map_err(internal)? {
                values.push(v1::CommittedPrivateValue {
                    commitment: commitment.clone(),
                    salt: held.salt.to_vec(),
                    value: held.value,
                });
            }
        }
        if self.lies.keys {
            for value in &mut values {
                value.value = [crate::lies::LIAR_KEY.as_slice(), &[0x5e; 48]].concat();
            }
            tracing::info!("lie told: forged private values");
        }
        Ok(Response::new(v1::GetPrivateDataResponse { values }))
    }

    async fn put_private_data(
        &self,
        request: Request<v1::PutPrivateDataRequest>,
    ) -> Result<Response<v1::PutPrivateDataResponse>, Status> {
        let caller = self.caller(&request)?;
        let _admitted = self
            .private_admission
            .admit(caller.signing_key.to_bytes())
            .map_err(|refused| Status::resource_exhausted(refused.to_string()))?;
        let request = request.into_inner();
        let tx = v1::Transaction::decode(request.transaction.as_slice())
            .map_err(|e| Status::invalid_argument(format!("not a Transaction: {e}")))?;
        if tx.network_id != self.genesis.network_id {
            return Err(Status::invalid_argument(
                "the transaction names another network",
            ));
        }
        // The creator's alone: the certificate the transaction carries (by its hash) must
        // certify the caller's key (a renewed certificate of the same key is the same
        // creator).
        let carried = (!tx.creator_certificate.is_empty()
            && medledger_crypto::certificate_hash(&tx.creator_certificate).as_slice()
                == tx.creator_cert_hash.as_slice())
        .then(|| {
            medledger_crypto::read_enrollment_certificate(
                &tx.creator_certificate,
                &self.genesis.root,
            )
            .ok()
        })
        .flatten();
        match carried {
            None => {
                return Err(Status::invalid_argument(
                    "the transaction must carry its creator's certificate (matching \
                     creator_cert_hash)",
                ));
            }
            Some(creator) if creator.signing_key != caller.signing_key => {
                return Err(Status::permission_denied(
                    "a transaction's private values are its creator's to send",
                ));
            }
            Some(_) => {}
        }
        let configuration = self.shared.configuration.get();
        let now_ms = crate::driver::now_ms().min(i64::MAX as u64) as i64;
        let horizon = now_ms
            .saturating_add(
                configuration
                    .parameters
                    .max_tx_lifetime_ms
                    .min(i64::MAX as u64) as i64,
            )
            .saturating_add(
                configuration
                    .parameters
                    .max_clock_skew_ms
                    .min(i64::MAX as u64) as i64,
            );
        if tx.expires_at_ms <= now_ms {
            return Err(Status::deadline_exceeded("the transaction has expired"));
        }
        if tx.expires_at_ms > horizon {
            return Err(Status::invalid_argument(
                "the transaction expires further ahead than a transaction may live",
            ));
        }
        // Salts are derived from the caller's key (the creator's, checked above): a value
        // learned from a holder cannot be acknowledged for another creator's transaction.
        let values = crate::private_data::matched_values(
            &caller.signing_key.to_bytes(),
            &tx.private_commitments,
            &request.values,
        )
        .map_err(Status::invalid_argument)?;
        // A value whose shape the arguments describe (a sealed reason's readers) is checked
        // here: it is acknowledged, and so committed, only as the block will describe it.
        let shapes: Vec<([u8; 32], &[u8])> = values
            .iter()
            .map(|(commitment, v)| (*commitment, v.value.as_slice()))
            .collect();
        if self.lies.unchecked {
            tracing::info!("lie told: private values acknowledged unchecked");
        } else {
            medledger_chaincode::check_private_values(&tx.function, &tx.args, &shapes)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        // A transaction already in a block took (or refused) its values there: values sent
        // now would only wait, unreferenced, until they expire, perhaps past an erasure.
        let tx_id = medledger_crypto::transaction_id(&tx.nonce, &tx.creator_cert_hash);
        match self.ledger.tx_location(&tx_id) {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(Status::failed_precondition(
                    "the transaction is already in a block: its values are not taken now",
                ));
            }
            Err(e) => return Err(internal(e)),
        }
        let Some(replica) = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replica
        else {
            return Err(Status::failed_precondition(
                "this peer is not one of the replicas in force: ask the others",
            ));
        };
        let transaction_hash: [u8; 32] =
            <sha2::Sha256 as sha2::Digest>::digest(&request.transaction).into();
        let acknowledgment = || {
            let signature = medledger_crypto::sign_private_data_ack(
                &self.identity,
                &self.genesis.network_id,
                &transaction_hash,
                &tx.private_commitments,
            );
            Response::new(v1::PutPrivateDataResponse {
                ack: Some(v1::PrivateDataAck {
                    replica,
                    signature: signature.to_bytes().to_vec(),
                }),
            })
        };
        if self.lies.withhold {
            tracing::info!("lie told: private values acknowledged and not kept");
            return Ok(acknowledgment());
        }
        let creator = caller.signing_key.to_bytes();
        let keep_until_ms = self
            .shared
            .pending_private
            .put(
                transaction_hash,
                creator,
                tx.expires_at_ms,
                values.clone(),
                now_ms,
            )
            .map_err(|e| match e {
                crate::private_data::PendingError::ValueTooLarge(_) => {
                    Status::invalid_argument(e.to_string())
                }
                crate::private_data::PendingError::Committed => {
                    Status::failed_precondition(e.to_string())
                }
                _ => Status::resource_exhausted(e.to_string()),
            })?;
        // On disk, synced, before the acknowledgment vouches for them: a restart keeps them.
        let ledger = self.ledger.clone();
        let written = tokio::task::spawn_blocking(move || {
            ledger.put_pending_private(&transaction_hash, keep_until_ms, &creator, &values)
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            self.shared.pending_private.withdraw(&transaction_hash);
            return Err(internal(match written {
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(())) => String::new(),
            }));
        }
        Ok(acknowledgment())
    }

    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        let caller = self.caller(&request)?;
        // Only the ledger's readers in force learn how many private values the peer lacks or
        // purged: not a peer that left (read up to its removal), which would learn when
        // later purges happen.
        let private_data = match self.readable_up_to(&caller, "the peer's private data status") {
            Ok(u64::MAX) => {
                let (missing, last_pass_ms) = self.shared.reconciliation.last_pass();
                Some(v1::PrivateDataStatus {
                    missing,
                    last_pass_ms,
                    purged_uncompacted: self.ledger.purged_uncompacted(),
                })
            }
            Ok(_) | Err(_) => None,
        };
        let status = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let height = self.ledger.height();
        let last = self.ledger.header(height).map_err(internal)?;
        let configuration = self.shared.configuration.get();
        Ok(Response::new(v1::GetStatusResponse {
            config_sequence: configuration.sequence,
            config: configuration.hash.to_vec(),
            // This peer's id among the peers in force (none once it was removed).
            replica: status.replica.unwrap_or(u32::MAX),
            height,
            view: status.view,
            primary: status.primary,
            in_view_change: status.in_view_change,
            suspects_primary: status.suspects_primary,
            network_id: self.genesis.network_id.to_vec(),
            last_block_hash: header_hash(&last).to_vec(),
            peers: configuration
                .peers
                .iter()
                .map(|p| v1::PeerStatus {
                    replica: p.replica,
                    name: p.name.clone(),
                    address: p.address.clone(),
                    connected: self.network.connected(p.replica),
                })
                .collect(),
            pending_requests: status.pending_requests,
            clock_ms: crate::driver::now_ms().min(i64::MAX as u64) as i64,
            clock_offset_from_primary_ms: status.clock_offset_from_primary_ms,
            private_data,
        }))
    }
}
