//! Transaction validation (ARCHITECTURE §3): what makes an envelope acceptable, checked
//! twice — when a client submits it (so garbage is never ordered) and, authoritatively and
//! deterministically, when its block executes (a Byzantine primary may order anything).
//!
//! A transaction is valid when: its envelope decodes and fits the size limit; it names this
//! network; its nonce is 16–32 bytes; its creator certificate (carried, or seen earlier on the
//! ledger) matches the hash it names, chains to the genesis CA root, is valid at consensus
//! time and not revoked as of this block; its role may submit transactions; its Ed25519
//! signature verifies; and its tx_id has never been used. A revocation record is valid when
//! the CA root signed it and it is the next in the CA's sequence.
//!
//! Ledger format 2 adds (docs/adr/0009 §5–6): the envelope is encoded canonically (as prost
//! encodes it, so that its SHA-256 — its PBFT request id — names one envelope), and a
//! transaction carries an expiry: refused as EXPIRED once the consensus time is past it, and
//! as malformed when it lies further ahead than `max_tx_lifetime_ms` plus the clock skew.

#[allow(clippy::disallowed_types)]
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use medledger_chaincode as chaincode;
use medledger_crypto::{
    CertificateError, EnrolledIdentity, Role, Signature, SignatureDomain,
    validate_enrollment_certificate,
};
use medledger_proto::v1;
use prost::Message;
use sha2::{Digest, Sha256};
use v1::TxStatus;

use crate::config::{
    CONFIG_UPDATE_TAG, Configuration, MAX_CONFIG_UPDATE_LIFETIME_MS, check_update, config_tx_id,
};
use crate::genesis::Genesis;
use crate::state::{StateError, WorldState};

pub const MIN_NONCE_BYTES: usize = 16;
pub const MAX_NONCE_BYTES: usize = 32;
/// Validated certificates and signatures remembered, at most (then forgotten wholesale).
const CACHE_ENTRIES: usize = 200_000;

/// Why an envelope is not valid, with the status recorded in its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: TxStatus,
    pub message: String,
    /// Set when the envelope was readable enough to name its transaction.
    pub tx_id: Option<[u8; 32]>,
}

impl Refusal {
    fn new(status: TxStatus, message: impl Into<String>, tx_id: Option<[u8; 32]>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            tx_id,
        }
    }
}

/// A transaction that passed validation.
#[derive(Debug, Clone)]
pub struct ValidTransaction {
    pub tx_id: [u8; 32],
    pub transaction: v1::Transaction,
    pub identity: EnrolledIdentity,
    /// The creator's certificate when the ledger has not stored it yet.
    pub certificate: Option<([u8; 32], Vec<u8>)>,
    /// With private commitments: SHA-256 of the signed transaction bytes, which the peers'
    /// acknowledgments name and their pending values are held under (docs/adr/0017).
    pub private_data_hash: Option<[u8; 32]>,
}

#[derive(Debug, Clone)]
pub enum Checked {
    Transaction(Box<ValidTransaction>),
    Revocation {
        tx_id: [u8; 32],
        record: v1::RevocationRecord,
        /// As the CA signed it (what clients are served, `GetRevocations`).
        signed: v1::SignedRevocationRecord,
    },
    /// A configuration update approved under the configuration in force (docs/adr/0010).
    ConfigUpdate {
        tx_id: [u8; 32],
        configuration: Box<Configuration>,
        value: v1::NetworkConfig,
    },
}

impl Checked {
    pub fn tx_id(&self) -> [u8; 32] {
        match self {
            Checked::Transaction(t) => t.tx_id,
            Checked::Revocation { tx_id, .. } | Checked::ConfigUpdate { tx_id, .. } => *tx_id,
        }
    }
}

/// The ledger's revocations as the certificate check wants them.
struct FactsRevocations<'a>(&'a dyn LedgerFacts);

impl medledger_crypto::RevocationSet for FactsRevocations<'_> {
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.0.is_revoked(serial)
    }
}

/// What the ledger knows, as validation needs it (the executor adds the block so far).
pub trait LedgerFacts {
    fn certificate(&self, hash: &[u8; 32]) -> Option<Vec<u8>>;
    fn tx_id_used(&self, tx_id: &[u8; 32]) -> bool;
    fn is_revoked(&self, serial: &[u8]) -> bool;
    fn revocation_sequence(&self) -> u64;
    /// The configuration in force for the block being checked (docs/adr/0010): its
    /// parameters bound envelopes and expiry, its admins approve the next one.
    fn configuration(&self) -> &Configuration;
    /// Whether a configuration update was already accepted in this block (one per block:
    /// the next must follow from it, and it is in force only from the next block).
    fn configuration_pending(&self) -> bool {
        false
    }
}

pub fn revocation_tx_id(sequence: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medledger/v1/revocation");
    h.update(sequence.to_be_bytes());
    h.finalize().into()
}

/// Caches that make the second validation of an envelope (at execution) cheap. Results
/// depend only on the bytes, so caching never changes an outcome (the fuzz target
/// `envelope` checks it). They are only looked up, never iterated, so hash order is safe.
#[derive(Default)]
#[allow(clippy::disallowed_types)]
struct Caches {
    /// SHA-256(certificate DER) → parsed certificate whose chain to the root verified.
    certificates: HashMap<[u8; 32], EnrolledIdentity>,
    /// SHA-256(transaction ‖ signature) of signatures that verified.
    signatures: std::collections::HashSet<[u8; 32]>,
}

pub struct Validator {
    genesis: Arc<Genesis>,
    caches: Mutex<Caches>,
    /// The last configuration read from state, by the SHA-256 of its encoding.
    in_force: Mutex<Option<([u8; 32], Arc<Configuration>)>>,
}

impl Validator {
    pub fn new(genesis: Arc<Genesis>) -> Validator {
        Validator {
            genesis,
            caches: Mutex::new(Caches::default()),
            in_force: Mutex::new(None),
        }
    }

    /// The configuration in force on `state` (docs/adr/0010): the genesis's until a
    /// configuration transaction committed, then the last one (decoded once, remembered).
    ///
    /// # Errors
    /// [`StateError`] when the state could not be read or holds a configuration this genesis
    /// does not allow (corrupt storage).
    pub fn configuration_in_force<S: WorldState + ?Sized>(
        &self,
        state: &S,
    ) -> Result<Arc<Configuration>, StateError> {
        let Some(bytes) = state.configuration()? else {
            return Ok(Arc::new(self.genesis.configuration.clone()));
        };
        let key: [u8; 32] = Sha256::digest(&bytes).into();
        let mut slot = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, c)) = slot.as_ref()
            && *k == key
        {
            return Ok(c.clone());
        }
        let value = v1::NetworkConfig::decode(bytes.as_slice())
            .map_err(|e| StateError(format!("the stored configuration: {e}")))?;
        let configuration = Arc::new(
            self.genesis
                .configuration
                .stored(&value, &self.genesis.root)
                .map_err(|e| StateError(format!("the stored configuration: {e}")))?,
        );
        *slot = Some((key, configuration.clone()));
        Ok(configuration)
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The network's ledger format (1 or 2).
    pub fn ledger_format(&self) -> u32 {
        self.genesis.ledger_format()
    }

    /// Validates `bytes` (an encoded Envelope) at consensus time `time_ms` (Unix ms).
    pub fn check(
        &self,
        bytes: &[u8],
        time_ms: i64,
        facts: &dyn LedgerFacts,
    ) -> Result<Checked, Refusal> {
        let parameters = &facts.configuration().parameters;
        // A configuration update is bounded by the block size, not by the envelope limit it
        // may itself change: no configuration can make the next one too large to order.
        let max = if bytes.first() == Some(&CONFIG_UPDATE_TAG) {
            parameters.max_batch_bytes as usize
        } else {
            parameters.max_envelope_bytes as usize
        };
        if bytes.len() > max {
            return Err(Refusal::new(
                TxStatus::TooLarge,
                format!(
                    "the envelope is {} bytes; at most {max} are accepted",
                    bytes.len()
                ),
                None,
            ));
        }
        let envelope = v1::Envelope::decode(bytes).map_err(|e| {
            Refusal::new(TxStatus::BadEnvelope, format!("not an Envelope: {e}"), None)
        })?;
        // Before private data, acknowledgments were a field the builds did not know, which
        // they dropped in decoding, so that the envelope did not re-encode to its bytes.
        let unknown_to_format = self.ledger_format() < crate::genesis::PRIVATE_DATA_FORMAT
            && matches!(&envelope.kind, Some(v1::envelope::Kind::Transaction(signed))
                if !signed.private_data_acks.is_empty() || !signed.acks_signature.is_empty());
        if self.ledger_format() >= 2
            && (unknown_to_format
                || envelope.encoded_len() != bytes.len()
                || envelope.encode_to_vec() != bytes)
        {
            return Err(Refusal::new(
                TxStatus::BadEnvelope,
                "the envelope is not canonically encoded (re-encode it as protobuf's encoder \
                 does: fields in order, no unknown fields, no default values)",
                None,
            ));
        }
        match envelope.kind {
            Some(v1::envelope::Kind::Transaction(signed)) => self
                .check_transaction(&signed, time_ms, facts)
                .map(|t| Checked::Transaction(Box::new(t))),
            Some(v1::envelope::Kind::Revocation(signed)) => self.check_revocation(&signed, facts),
            Some(v1::envelope::Kind::ConfigUpdate(update)) => {
                self.check_config_update(&update, time_ms, facts)
            }
            None => Err(Refusal::new(TxStatus::BadEnvelope, "empty envelope", None)),
        }
    }

    fn check_transaction(
        &self,
        signed: &v1::SignedTransaction,
        time_ms: i64,
        facts: &dyn LedgerFacts,
    ) -> Result<ValidTransaction, Refusal> {
        let time_s = time_ms.div_euclid(1000);
        let tx = v1::Transaction::decode(signed.transaction.as_slice()).map_err(|e| {
            Refusal::new(
                TxStatus::BadEnvelope,
                format!("not a Transaction: {e}"),
                None,
            )
        })?;
        if !(MIN_NONCE_BYTES..=MAX_NONCE_BYTES).contains(&tx.nonce.len()) {
            return Err(Refusal::new(
                TxStatus::BadEnvelope,
                format!("the nonce must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes"),
                None,
            ));
        }
        let cert_hash: [u8; 32] = tx.creator_cert_hash.as_slice().try_into().map_err(|_| {
            Refusal::new(
                TxStatus::BadEnvelope,
                "creator_cert_hash must be 32 bytes",
                None,
            )
        })?;
        let tx_id = medledger_crypto::transaction_id(&tx.nonce, &cert_hash);
        // Format 2: until its signature verifies, the envelope is nobody's, and its refusals
        // name no transaction id (a forger could name a victim's certificate and nonce).
        // Format 1 named it, and checked for a replay before the signature: kept, so that
        // old chains re-execute to what they recorded.
        let v2 = self.ledger_format() >= 2;
        let unattributed =
            |status, message: String| Refusal::new(status, message, (!v2).then_some(tx_id));
        let refuse = |status, message: String| Refusal::new(status, message, Some(tx_id));
        if tx.network_id != self.genesis.network_id {
            return Err(unattributed(
                TxStatus::WrongNetwork,
                "the transaction names another network".into(),
            ));
        }
        // The certificate: carried, or stored on the ledger when first seen.
        let (der, carried) = if tx.creator_certificate.is_empty() {
            let der = facts.certificate(&cert_hash).ok_or_else(|| {
                unattributed(
                    TxStatus::BadCertificate,
                    "unknown certificate: send the full certificate with the transaction".into(),
                )
            })?;
            (der, false)
        } else {
            if <[u8; 32]>::from(Sha256::digest(&tx.creator_certificate)) != cert_hash {
                return Err(unattributed(
                    TxStatus::BadCertificate,
                    "the certificate does not match creator_cert_hash".into(),
                ));
            }
            (tx.creator_certificate.clone(), true)
        };
        let identity = self
            .identity(&cert_hash, &der, time_s, facts)
            .map_err(|e| {
                let status = match e {
                    CertificateError::Revoked { .. } => TxStatus::CertificateRevoked,
                    CertificateError::Expired { .. } | CertificateError::NotYetValid { .. } => {
                        TxStatus::CertificateExpired
                    }
                    _ => TxStatus::BadCertificate,
                };
                unattributed(status, format!("creator certificate: {e}"))
            })?;
        let replay = || {
            refuse(
                TxStatus::DuplicateTxId,
                "this transaction id was already used".into(),
            )
        };
        if !v2 && facts.tx_id_used(&tx_id) {
            return Err(replay());
        }
        self.verify_signature(signed, &identity)
            .map_err(|m| unattributed(TxStatus::BadSignature, m))?;
        // Signed by the certificate's holder: from here the refusals are theirs. A replay
        // is refused before its expiry is looked at, so a committed transaction retried
        // late is a duplicate, never "expired".
        if v2 && facts.tx_id_used(&tx_id) {
            return Err(replay());
        }
        if v2 {
            self.check_expiry(&tx, time_ms, facts.configuration())
                .map_err(|(status, why)| refuse(status, why))?;
        }
        // The gateway confirms the objects of erased records it deleted (the chaincode's
        // erasure queue); nothing else is a peer's or a gateway's to submit.
        let gateway_may = identity.role == Role::Gateway
            && chaincode::GATEWAY_TRANSACTIONS.contains(&tx.function.as_str());
        if matches!(identity.role, Role::Peer | Role::Gateway) && !gateway_may {
            return Err(refuse(
                TxStatus::UnknownFunction,
                "peers and gateways do not submit chaincode transactions of their own (a \
                 gateway submits only confirm_object_deletions)"
                    .into(),
            ));
        }
        if !chaincode::TRANSACTIONS.contains(&tx.function.as_str()) {
            let why = if chaincode::QUERIES.contains(&tx.function.as_str()) {
                format!("{} is a query; call Query instead", tx.function)
            } else {
                format!("no transaction function named {:?}", tx.function)
            };
            return Err(refuse(TxStatus::UnknownFunction, why));
        }
        // Before private data, the commitments were a field the builds ignored.
        let private_data_hash = if self.ledger_format() >= crate::genesis::PRIVATE_DATA_FORMAT {
            check_private_data(
                self,
                &tx,
                signed,
                facts.configuration(),
                &identity.signing_key,
            )
            .map_err(|(status, why, signed_by_creator)| {
                // Acknowledgments are outside the transaction's signature: whatever is
                // wrong with them (missing, dropped, or their countersignature) may be a
                // relaying peer's doing, so that refusal names no transaction.
                if signed_by_creator {
                    refuse(status, why)
                } else {
                    unattributed(status, why)
                }
            })?
        } else {
            None
        };
        let known = !carried || facts.certificate(&cert_hash).is_some();
        Ok(ValidTransaction {
            tx_id,
            certificate: (!known).then_some((cert_hash, der)),
            transaction: tx,
            identity,
            private_data_hash,
        })
    }

    /// Format 2: the transaction's expiry against consensus time `time_ms`.
    fn check_expiry(
        &self,
        tx: &v1::Transaction,
        time_ms: i64,
        configuration: &Configuration,
    ) -> Result<(), (TxStatus, String)> {
        let p = &configuration.parameters;
        let latest = time_ms
            .saturating_add(p.max_tx_lifetime_ms.min(i64::MAX as u64) as i64)
            .saturating_add(p.max_clock_skew_ms.min(i64::MAX as u64) as i64);
        if tx.expires_at_ms <= 0 {
            Err((
                TxStatus::BadEnvelope,
                "the transaction carries no expiry (expires_at_ms)".into(),
            ))
        } else if tx.expires_at_ms < time_ms {
            Err((
                TxStatus::Expired,
                format!(
                    "the transaction expired at {} ms, before consensus time {time_ms} ms: \
                     sign it again",
                    tx.expires_at_ms
                ),
            ))
        } else if tx.expires_at_ms > latest {
            Err((
                TxStatus::BadEnvelope,
                format!(
                    "the transaction expires at {} ms, more than {} ms after consensus time \
                     {time_ms} ms (is the client's clock right?)",
                    tx.expires_at_ms, p.max_tx_lifetime_ms
                ),
            ))
        } else {
            Ok(())
        }
    }

    /// Validates a certificate at `time_s` against the root and revocations, reusing the
    /// chain check of a certificate seen before.
    fn identity(
        &self,
        hash: &[u8; 32],
        der: &[u8],
        time_s: i64,
        facts: &dyn LedgerFacts,
    ) -> Result<EnrolledIdentity, CertificateError> {
        let cached = self.caches().certificates.get(hash).cloned();
        let identity = match cached {
            // The chain and form verified before; what changes with the block is re-checked
            // exactly as the full validation checks it.
            Some(identity) => {
                identity.check_standing(&self.genesis.root, time_s, &FactsRevocations(facts))?;
                identity
            }
            None => {
                // The full check (chain, form, time, revocation) the first time.
                let identity = validate_enrollment_certificate(
                    der,
                    &self.genesis.root,
                    time_s,
                    &FactsRevocations(facts),
                )?;
                let mut caches = self.caches();
                if caches.certificates.len() >= CACHE_ENTRIES {
                    caches.certificates.clear();
                }
                caches.certificates.insert(*hash, identity.clone());
                identity
            }
        };
        Ok(identity)
    }

    /// The identity a certificate names, valid at `time_s` and not revoked; its chain is
    /// checked once and remembered (for callers' TLS certificates on every request).
    pub fn certificate_identity(
        &self,
        der: &[u8],
        time_s: i64,
        facts: &dyn LedgerFacts,
    ) -> Result<EnrolledIdentity, CertificateError> {
        let hash: [u8; 32] = Sha256::digest(der).into();
        self.identity(&hash, der, time_s, facts)
    }

    fn verify_signature(
        &self,
        signed: &v1::SignedTransaction,
        identity: &EnrolledIdentity,
    ) -> Result<(), String> {
        self.verify_cached(
            SignatureDomain::Transaction,
            &identity.signing_key,
            &signed.transaction,
            &signed.signature,
        )
    }

    /// Verifies `signature` by `signer` over `message` in `domain`, once: a verification
    /// that succeeded is remembered (the second validation of an envelope, at execution,
    /// and a forward's screen cost a hash), keyed by all four so it vouches for nothing else.
    fn verify_cached(
        &self,
        domain: SignatureDomain,
        signer: &medledger_crypto::VerifyingKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), String> {
        // Only a well-formed signature reaches the cache: the key below relies on its length.
        let parsed = Signature::from_slice(signature).map_err(|e| e.to_string())?;
        let key = signature_cache_key(domain, &signer.to_bytes(), message, signature);
        if self.caches().signatures.contains(&key) {
            return Ok(());
        }
        signer
            .verify(domain, message, &parsed)
            .map_err(|e| e.to_string())?;
        let mut caches = self.caches();
        if caches.signatures.len() >= CACHE_ENTRIES {
            caches.signatures.clear();
        }
        caches.signatures.insert(key);
        Ok(())
    }

    fn check_revocation(
        &self,
        signed: &v1::SignedRevocationRecord,
        facts: &dyn LedgerFacts,
    ) -> Result<Checked, Refusal> {
        let bad = |m: String, tx_id| Refusal::new(TxStatus::BadRevocation, m, tx_id);
        let signature =
            Signature::from_slice(&signed.signature).map_err(|e| bad(e.to_string(), None))?;
        self.genesis
            .root
            .public_key()
            .verify(
                SignatureDomain::RevocationRecord,
                &signed.record,
                &signature,
            )
            .map_err(|_| bad("not signed by this network's CA root".into(), None))?;
        let record = v1::RevocationRecord::decode(signed.record.as_slice())
            .map_err(|e| bad(format!("not a RevocationRecord: {e}"), None))?;
        let tx_id = revocation_tx_id(record.sequence);
        if facts.tx_id_used(&tx_id) {
            return Err(Refusal::new(
                TxStatus::DuplicateTxId,
                format!("revocation {} is already on the ledger", record.sequence),
                Some(tx_id),
            ));
        }
        let expected = facts.revocation_sequence() + 1;
        if record.sequence != expected {
            return Err(bad(
                format!(
                    "revocation {} is out of order: the ledger expects {expected} next",
                    record.sequence
                ),
                Some(tx_id),
            ));
        }
        Ok(Checked::Revocation {
            tx_id,
            record,
            signed: signed.clone(),
        })
    }

    /// A configuration update: format 2 only, one per block, approved as
    /// [`crate::config::check_update`] requires under the configuration in force.
    fn check_config_update(
        &self,
        update: &v1::ConfigUpdate,
        time_ms: i64,
        facts: &dyn LedgerFacts,
    ) -> Result<Checked, Refusal> {
        let current = facts.configuration();
        let sequence = update.config.as_ref().map_or(0, |c| c.sequence);
        let tx_id = config_tx_id(sequence);
        // Until its approvals verify, an update is nobody's: its refusals name no
        // transaction id (anyone can send "configuration k+1").
        let bad = |m: String| Refusal::new(TxStatus::BadConfigUpdate, m, None);
        if self.ledger_format() < 2 {
            return Err(Refusal::new(
                TxStatus::BadConfigUpdate,
                "a ledger of format 1 has no configuration chain",
                None,
            ));
        }
        if facts.configuration_pending() {
            return Err(bad(
                "this block already changes the configuration; submit the next change after it"
                    .into(),
            ));
        }
        if facts.tx_id_used(&tx_id) {
            return Err(Refusal::new(
                TxStatus::DuplicateTxId,
                format!("configuration {sequence} is already on the ledger"),
                None,
            ));
        }
        if update.expires_at_ms <= 0
            || update.expires_at_ms > time_ms.saturating_add(MAX_CONFIG_UPDATE_LIFETIME_MS)
        {
            return Err(bad(format!(
                "the update must expire within {} days of consensus time",
                MAX_CONFIG_UPDATE_LIFETIME_MS / 86_400_000
            )));
        }
        if update.expires_at_ms < time_ms {
            return Err(Refusal::new(
                TxStatus::Expired,
                format!(
                    "the update expired at {} ms, before consensus time {time_ms} ms: have it \
                     approved again",
                    update.expires_at_ms
                ),
                None,
            ));
        }
        let configuration = check_update(
            current,
            &self.genesis.root,
            update,
            time_ms.div_euclid(1000),
            &FactsRevocations(facts),
        )
        .map_err(|e| bad(e.to_string()))?;
        if self.ledger_format() < crate::genesis::MEMBERSHIP_CHANGES_FORMAT
            && !current.same_replicas(&configuration)
        {
            return Err(bad(format!(
                "this network is of ledger format {}, whose peers are its genesis's for good: \
                 changing the peers needs a network of format {} or later (docs/adr/0011)",
                self.ledger_format(),
                crate::genesis::MEMBERSHIP_CHANGES_FORMAT
            )));
        }
        Ok(Checked::ConfigUpdate {
            tx_id,
            configuration: Box::new(configuration),
            value: update.config.clone().unwrap_or_default(),
        })
    }
}

/// A transaction's private commitments as the ledger takes them (docs/adr/0017 §1): at
/// most [`medledger_crypto::MAX_PRIVATE_COMMITMENTS`], 32 bytes each, distinct. The
/// validator's rule and a peer's `PutPrivateData` both check them so.
///
/// # Errors
/// Words saying which is wrong.
pub fn check_commitments(commitments: &[Vec<u8>]) -> Result<(), String> {
    if commitments.len() > medledger_crypto::MAX_PRIVATE_COMMITMENTS {
        return Err(format!(
            "{} private commitments; at most {}",
            commitments.len(),
            medledger_crypto::MAX_PRIVATE_COMMITMENTS
        ));
    }
    if commitments.iter().any(|c| c.len() != 32) {
        return Err("a private commitment must be 32 bytes".into());
    }
    let distinct: std::collections::BTreeSet<&[u8]> =
        commitments.iter().map(Vec::as_slice).collect();
    if distinct.len() != commitments.len() {
        return Err("the same private commitment twice".into());
    }
    Ok(())
}

/// The private-data rule (docs/adr/0017 §3), deterministic: every commitment 32 bytes and
/// distinct, at most [`medledger_crypto::MAX_PRIVATE_COMMITMENTS`] (else `BadEnvelope`); no
/// acknowledgments without commitments, at most one per replica of `configuration` (else
/// `BadEnvelope`); and with commitments, acknowledgments of at least f+1 distinct replicas
/// of `configuration`, each verifying over the network id, SHA-256 of the signed
/// transaction bytes and the commitments (else `PrivateDataUnacknowledged`). The
/// acknowledgments come in ascending replica order (else `BadEnvelope`) and carry the
/// creator's signature over them, by `creator_key` (else `BadSignature`): a relaying peer
/// cannot make another valid copy of the envelope. Returns that hash when there are
/// commitments.
fn check_private_data(
    validator: &Validator,
    tx: &v1::Transaction,
    signed: &v1::SignedTransaction,
    configuration: &Configuration,
    creator_key: &medledger_crypto::VerifyingKey,
) -> Result<Option<[u8; 32]>, (TxStatus, String, bool)> {
    let commitments = &tx.private_commitments;
    let acks = &signed.private_data_acks;
    // Refusals of what the creator signed (the commitments), and of what travels beside it.
    let bad = |why: String| Err((TxStatus::BadEnvelope, why, true));
    let bad_acks = |why: String| Err((TxStatus::BadEnvelope, why, false));
    if acks.is_empty() && !signed.acks_signature.is_empty() {
        // Nothing to countersign: bytes a relay could add to make another valid copy.
        return bad_acks("a countersignature without private-data acknowledgments".into());
    }
    if commitments.is_empty() {
        return if acks.is_empty() {
            Ok(None)
        } else {
            bad_acks("private-data acknowledgments without private commitments".into())
        };
    }
    if let Err(why) = check_commitments(commitments) {
        return bad(why);
    }
    if acks.len() > configuration.peer_keys.len() {
        return bad_acks(format!(
            "{} private-data acknowledgments from {} replicas",
            acks.len(),
            configuration.peer_keys.len()
        ));
    }
    if !acks.windows(2).all(|w| w[0].replica < w[1].replica) {
        return bad_acks(
            "private-data acknowledgments must come in ascending replica order, one each".into(),
        );
    }
    let hash: [u8; 32] = Sha256::digest(&signed.transaction).into();
    if !acks.is_empty() {
        let listed: Vec<(u32, &[u8])> = acks
            .iter()
            .map(|a| (a.replica, a.signature.as_slice()))
            .collect();
        let countersigned = validator
            .verify_cached(
                SignatureDomain::PrivateDataAcks,
                creator_key,
                &medledger_crypto::private_data_acks_statement(&hash, &listed),
                &signed.acks_signature,
            )
            .is_ok();
        if !countersigned {
            return Err((
                TxStatus::BadSignature,
                "the creator's signature over the private-data acknowledgments does not verify"
                    .into(),
                false,
            ));
        }
    }
    let mut acknowledged = std::collections::BTreeSet::new();
    let statement =
        medledger_crypto::private_data_ack_statement(&configuration.network_id, &hash, commitments);
    for ack in acks {
        let Some(key) = usize::try_from(ack.replica)
            .ok()
            .and_then(|r| configuration.peer_keys.get(r))
        else {
            continue;
        };
        if acknowledged.contains(&ack.replica) {
            continue;
        }
        if validator
            .verify_cached(
                SignatureDomain::PrivateDataAck,
                key,
                &statement,
                &ack.signature,
            )
            .is_ok()
        {
            acknowledged.insert(ack.replica);
        }
    }
    let needed = configuration.weak_quorum();
    if acknowledged.len() < needed {
        return Err((
            TxStatus::PrivateDataUnacknowledged,
            format!(
                "{} replicas of the configuration in force acknowledged holding the private \
                 values; {needed} must",
                acknowledged.len()
            ),
            false,
        ));
    }
    Ok(Some(hash))
}

/// The signature cache's key: SHA-256 over a label, the length-prefixed tag of the
/// signature's domain, the signer's public key, and the length-prefixed message and
/// signature. Unambiguous: `(T, S)` and `(T‖S[..k], S[k..])` have different keys, and so do
/// two domains, so a cached verification can never vouch for other bytes or another
/// domain (which would make one envelope valid on a peer that cached it and invalid on the
/// others: a fork).
fn signature_cache_key(
    domain: SignatureDomain,
    signer: &[u8; 32],
    message: &[u8],
    signature: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medledger/v1/signature-cache");
    h.update((domain.tag().len() as u64).to_be_bytes());
    h.update(domain.tag());
    h.update(signer);
    for part in [message, signature] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The chaincode's view of a validated creator.
pub fn creator(identity: &EnrolledIdentity) -> chaincode::Creator {
    use chaincode::Role as C;
    let role = match identity.role {
        Role::Admin => C::Admin,
        Role::Peer => C::Peer,
        Role::Clinician => C::Clinician,
        Role::Patient => C::Patient,
        Role::Researcher => C::Researcher,
        Role::Auditor => C::Auditor,
        Role::Gateway => C::Gateway,
    };
    chaincode::Creator {
        name: identity.name.clone(),
        role,
        attributes: identity
            .attributes
            .iter()
            .map(|a| chaincode::CreatorAttribute {
                key: a.key.clone(),
                value: a.value.clone(),
                not_before: a.window.not_before,
                not_after: a.window.not_after,
            })
            .collect(),
        cert_hash: identity.cert_hash,
        encryption_key: identity.encryption_key.to_bytes(),
        signing_key: identity.signing_key.to_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache key of `(T, S)` is not that of `(T‖S[..k], S[k..])` for any split `k > 0`.
    #[test]
    fn the_signature_cache_key_is_unambiguous() {
        let signer = [1u8; 32];
        let transaction = b"transaction bytes".to_vec();
        let signature = [7u8; 64];
        let key =
            |t: &[u8], s: &[u8]| signature_cache_key(SignatureDomain::Transaction, &signer, t, s);
        let whole = key(&transaction, &signature);
        for k in 1..=signature.len() {
            let mut shifted = transaction.clone();
            shifted.extend_from_slice(&signature[..k]);
            assert_ne!(whole, key(&shifted, &signature[k..]), "split at {k}");
        }
        // Another domain, the same bytes: another key.
        assert_ne!(
            whole,
            signature_cache_key(
                SignatureDomain::PrivateDataAck,
                &signer,
                &transaction,
                &signature
            )
        );
    }
}
