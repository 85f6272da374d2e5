//! Private values beside a transaction (docs/adr/0017, after Fabric's private data
//! collections): the transaction carries a salted commitment to each value, the values go
//! to the peers (`Ledger.PutPrivateData`), and the transaction is submitted with the signed
//! acknowledgments of at least f+1 of them, checked here before it is sent.

use std::time::Duration;

use medledger_proto::v1;
use rand_core::RngCore as _;
use sha2::Digest as _;

use crate::error::ClientError;
use crate::peer::{CONFIGURATION_MAX_AGE, Committed, PeerSet};

/// How long one peer may take to take the values and acknowledge them.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the peers asked may all stay silent before one more is asked.
const WIDEN_AFTER: Duration = Duration::from_millis(500);

/// The private values of one transaction by one creator, each with a fresh 32-byte salt
/// seed (the salt is derived from it and the creator's key: `medledger_crypto::private_salt`).
#[derive(Clone)]
pub struct PrivateData {
    /// The Ed25519 key of the transaction's creator, who alone can send the values.
    creator_key: [u8; 32],
    values: Vec<v1::PrivateValue>,
    commitments: Vec<Vec<u8>>,
    /// Which peers are asked first: those from a replica that this key (a record's
    /// pseudonym) names on, so that every value of one record lands on the same peers and a
    /// query that needs several finds them together; none: from a random one.
    placement: Option<Vec<u8>>,
}

impl std::fmt::Debug for PrivateData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The values are secrets: only how many.
        write!(f, "PrivateData({} values)", self.values.len())
    }
}

impl PrivateData {
    /// No values yet, for a transaction the creator whose signing key is `creator_key`
    /// (Ed25519, 32 bytes) will sign and send: [`PeerSet::private_data`] for this client's.
    pub fn new(creator_key: [u8; 32]) -> PrivateData {
        PrivateData {
            creator_key,
            values: Vec::new(),
            commitments: Vec::new(),
            placement: None,
        }
    }

    /// Adds `value`; returns its commitment (`medledger_crypto::private_commitment` under
    /// the salt of a seed drawn here), what the chaincode and the blocks see in its place.
    pub fn add(&mut self, value: Vec<u8>) -> [u8; 32] {
        let mut seed = [0u8; medledger_crypto::PRIVATE_SALT_LEN];
        rand_core::OsRng.fill_bytes(&mut seed);
        let salt = medledger_crypto::private_salt(&self.creator_key, &seed);
        let commitment = medledger_crypto::private_commitment(&salt, &value);
        self.values.push(v1::PrivateValue {
            salt_seed: seed.to_vec(),
            value,
        });
        self.commitments.push(commitment.to_vec());
        commitment
    }

    /// Asks the peers for the values from the one `key` (a record's pseudonym) names on
    /// ([`PeerSet::put_private_data`]): every value of one record lands on the same peers.
    pub fn place_by(&mut self, key: &[u8]) {
        self.placement = Some(key.to_vec());
    }

    /// The commitments, in the order the values were added (32 bytes each).
    pub fn commitments(&self) -> &[Vec<u8>] {
        &self.commitments
    }

    /// Whether no value was added.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values with their salt seeds, as sent to the peers.
    pub fn values(&self) -> &[v1::PrivateValue] {
        &self.values
    }
}

impl PeerSet {
    /// Empty private data for a transaction of this client's ([`PrivateData::new`] under
    /// its signing key).
    pub fn private_data(&self) -> PrivateData {
        PrivateData::new(self.signing_key())
    }

    /// [`PeerSet::private_data`] for values of record `pseudonym`, placed by it
    /// ([`PrivateData::place_by`]): every value of one record lands on the same peers.
    pub fn private_data_of(&self, pseudonym: &[u8]) -> PrivateData {
        let mut private = self.private_data();
        private.place_by(pseudonym);
        private
    }

    /// Sends `private`'s values for `transaction` (encoded `v1::Transaction`, committing to
    /// them) to every peer in force, and returns the acknowledgments that verify (in
    /// ascending replica order): each of a distinct replica of the configuration this client
    /// follows, over the network, the transaction's hash and its commitments. The values go
    /// to f+1 peers first (from the one `private`'s placement names on, else a random
    /// one), like Fabric's dissemination to
    /// `requiredPeerCount`: one more peer is asked for each that refuses, fails or gives an
    /// acknowledgment that does not verify, and whenever all asked stay silent for half a
    /// second. It returns as soon as f+1 verified, with those alone (what the ledger needs;
    /// each one more costs every peer a verification); calls still under way go on
    /// unwaited for. Peers not asked learn the values by reconciliation (docs/adr/0017).
    ///
    /// # Errors
    /// [`ClientError::NoQuorum`]: fewer than f+1 acknowledgments verified (each peer's
    /// answer in the detail).
    pub async fn put_private_data(
        &self,
        transaction: &[u8],
        private: &PrivateData,
    ) -> Result<Vec<v1::PrivateDataAck>, ClientError> {
        self.put_private_data_to(transaction, private, false).await
    }

    /// [`PeerSet::put_private_data`]; with `everyone`, every peer is asked at once.
    async fn put_private_data_to(
        &self,
        transaction: &[u8],
        private: &PrivateData,
        everyone: bool,
    ) -> Result<Vec<v1::PrivateDataAck>, ClientError> {
        let configuration = self.configuration();
        let hash: [u8; 32] = sha2::Sha256::digest(transaction).into();
        let mut calls = tokio::task::JoinSet::new();
        // f+1 peers first, from a random one on (the load spread over the peers); one more
        // for each that refuses or fails, and for each wait of WIDEN_AFTER without an answer.
        let mut peers = self.ledger_clients();
        if !peers.is_empty() {
            let start = match &private.placement {
                Some(key) => crate::peer::placement_start(key, peers.len()),
                None => rand_core::OsRng.next_u32() as usize % peers.len(),
            };
            peers.rotate_left(start);
        }
        let mut waiting = peers.into_iter();
        let mut ask = |calls: &mut tokio::task::JoinSet<_>| {
            let Some((name, mut client)) = waiting.next() else {
                return false;
            };
            let request = v1::PutPrivateDataRequest {
                transaction: transaction.to_vec(),
                values: private.values.clone(),
            };
            calls.spawn(async move {
                let mut request = tonic::Request::new(request);
                request.set_timeout(PUT_TIMEOUT);
                let answer =
                    tokio::time::timeout(PUT_TIMEOUT, client.put_private_data(request)).await;
                (name, answer)
            });
            true
        };
        let mut acks: Vec<v1::PrivateDataAck> = Vec::new();
        let mut detail = Vec::new();
        let needed = configuration.weak_quorum();
        let first_wave = if everyone { usize::MAX } else { needed };
        for _ in 0..first_wave {
            if !ask(&mut calls) {
                break;
            }
        }
        while acks.len() < needed {
            let joined = match tokio::time::timeout(WIDEN_AFTER, calls.join_next()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => {
                    if ask(&mut calls) {
                        continue;
                    }
                    break;
                }
                Err(_) => {
                    ask(&mut calls);
                    continue;
                }
            };
            let Ok((name, answer)) = joined else {
                ask(&mut calls);
                continue;
            };
            let ack = match answer {
                Ok(Ok(response)) => response.into_inner().ack,
                Ok(Err(status)) => {
                    detail.push(format!("{name}: {}", status.message()));
                    ask(&mut calls);
                    continue;
                }
                Err(_) => {
                    detail.push(format!("{name}: no answer within {PUT_TIMEOUT:?}"));
                    ask(&mut calls);
                    continue;
                }
            };
            let verified = ack.filter(|ack| {
                !acks.iter().any(|a| a.replica == ack.replica)
                    && usize::try_from(ack.replica)
                        .ok()
                        .and_then(|r| configuration.peer_keys.get(r))
                        .is_some_and(|key| {
                            medledger_crypto::verify_private_data_ack(
                                key,
                                &configuration.network_id,
                                &hash,
                                &private.commitments,
                                &ack.signature,
                            )
                            .is_ok()
                        })
            });
            match verified {
                Some(ack) => acks.push(ack),
                None => {
                    detail.push(format!("{name}: an acknowledgment that does not verify"));
                    ask(&mut calls);
                }
            }
        }
        // The other peers take the values all the same: their calls go on, unwaited for
        // (a call dropped midway could be cut short at the peer).
        calls.detach_all();
        acks.sort_by_key(|a| a.replica);
        if acks.len() < needed {
            return Err(ClientError::NoQuorum {
                needed,
                detail: format!(
                    "{} of the peers acknowledged holding the private values; {}",
                    acks.len(),
                    detail.join("; ")
                ),
            });
        }
        Ok(acks)
    }

    /// Signs a transaction calling `function` with `args` and committing to `private`'s
    /// values, has f+1 peers acknowledge holding them ([`PeerSet::put_private_data`]), and
    /// submits it with their acknowledgments; returns its outcome once a peer proved it.
    ///
    /// # Errors
    /// As [`PeerSet::put_private_data`] and [`PeerSet::submit_envelope`].
    pub async fn submit_private(
        &self,
        function: &str,
        args: Vec<u8>,
        private: &PrivateData,
    ) -> Result<Committed, ClientError> {
        let (_, envelope) = self.signed_private(function, args.clone(), private).await?;
        let outcome = self.submit_envelope(envelope).await;
        // Acknowledged by too few replicas of the configuration in force: this client
        // followed an older one (the peers changed since). Such a refusal names no
        // transaction and nothing was ordered under its id; once, with the configuration
        // learned again, a new transaction takes its place.
        let unacknowledged = match &outcome {
            Ok(committed) => committed.status == v1::TxStatus::PrivateDataUnacknowledged,
            Err(ClientError::Rejected { code, .. }) => *code == tonic::Code::FailedPrecondition,
            Err(_) => false,
        };
        if !unacknowledged {
            return outcome;
        }
        if self.learn_configuration(None).await.is_err() {
            return outcome;
        }
        let (_, envelope) = self.signed_private(function, args, private).await?;
        self.submit_envelope(envelope).await
    }

    /// The envelope [`PeerSet::submit_private`] submits, with its transaction id: signed,
    /// committing to `private`'s values, which f+1 peers acknowledged holding. Without
    /// values, a plain signed envelope ([`PeerSet::signed`]).
    ///
    /// # Errors
    /// As [`PeerSet::put_private_data`].
    pub async fn signed_private(
        &self,
        function: &str,
        args: Vec<u8>,
        private: &PrivateData,
    ) -> Result<([u8; 32], v1::Envelope), ClientError> {
        if private.values.is_empty() {
            return Ok(self.signed(function, args).await);
        }
        self.refresh(CONFIGURATION_MAX_AGE).await;
        let mut everyone = false;
        loop {
            let (tx_id, mut envelope) =
                self.transaction_committing(function, args.clone(), private.commitments.clone());
            let transaction = match &envelope.kind {
                Some(v1::envelope::Kind::Transaction(signed)) => signed.transaction.clone(),
                _ => Vec::new(),
            };
            match self
                .put_private_data_to(&transaction, private, everyone)
                .await
            {
                Ok(acks) => {
                    self.acknowledged(&mut envelope, acks);
                    return Ok((tx_id, envelope));
                }
                // Too few acknowledged (the peers may have changed, or been busy renewing):
                // once more, with the configuration learned again and every peer asked.
                Err(ClientError::NoQuorum { .. }) if !everyone => {
                    everyone = true;
                    let _ = self.learn_configuration(None).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`PeerSet::submit_private`] when `private` holds values, else a plain
    /// [`PeerSet::submit`].
    pub async fn submit_maybe_private(
        &self,
        function: &str,
        args: Vec<u8>,
        private: &PrivateData,
    ) -> Result<Committed, ClientError> {
        if private.values.is_empty() {
            self.submit(function, args).await
        } else {
            self.submit_private(function, args, private).await
        }
    }

    /// Moves key material `clear` into `private` on a ledger that keeps private data
    /// (format 5, docs/adr/0017), setting `commitment` to its commitment; below format 5,
    /// or when `clear` is empty, leaves both as they are.
    pub fn keep_private(
        &self,
        clear: &mut Vec<u8>,
        commitment: &mut Vec<u8>,
        private: &mut PrivateData,
    ) {
        move_if(self.keeps_private_data(), clear, commitment, private);
    }

    /// Moves `grant`'s key envelope into private data ([`PeerSet::keep_private`]); returns
    /// the private data to send with it.
    pub fn grant_envelope_private(&self, grant: &mut v1::GrantArgs) -> PrivateData {
        let mut private = self.private_data_of(&grant.pseudonym);
        self.keep_private(
            &mut grant.key_envelope,
            &mut grant.key_envelope_commitment,
            &mut private,
        );
        private
    }

    /// Moves `item`'s wrapped file key into private data ([`PeerSet::keep_private`]);
    /// returns the private data to send with it.
    pub fn item_key_private(&self, item: &mut v1::AddItemArgs) -> PrivateData {
        let mut private = self.private_data_of(&item.pseudonym);
        self.keep_private(
            &mut item.wrapped_dek,
            &mut item.wrapped_dek_commitment,
            &mut private,
        );
        private
    }

    /// Moves a study copy's wrapped file key into private data on a ledger that keeps study
    /// keys private (format 6), setting its commitment; returns the private data to send
    /// with it, placed by `study_pseudonym`, the copy's (the one name of it its researcher
    /// knows, so that their query starts at the peers that hold it).
    pub fn study_key_private(
        &self,
        copy: &mut v1::ShareForStudyArgs,
        study_pseudonym: &[u8],
    ) -> PrivateData {
        let mut private = self.private_data_of(study_pseudonym);
        move_if(
            self.keeps_study_keys_private(),
            &mut copy.wrapped_dek,
            &mut copy.wrapped_dek_commitment,
            &mut private,
        );
        private
    }

    /// Moves an emergency access's sealed reason into private data on a ledger that keeps
    /// free text private (format 7, docs/adr/0017): the arguments then carry its commitment
    /// and its readers' keys (which the chaincode checks against the ones it names), and
    /// the encoded `SealedText` goes beside the transaction, placed by the record. Below
    /// format 7, or without a reason, leaves `args` as they are. Returns the private data to
    /// send with them.
    pub fn emergency_reason_private(&self, args: &mut v1::EmergencyAccessArgs) -> PrivateData {
        let mut private = self.private_data_of(&args.pseudonym);
        if self.keeps_free_text_private()
            && let Some(sealed) = args.sealed_reason.take()
        {
            args.sealed_reason_readers = sealed
                .readers
                .iter()
                .map(|r| r.public_key.clone())
                .collect();
            args.sealed_reason_commitment =
                private.add(prost::Message::encode_to_vec(&sealed)).to_vec();
        }
        private
    }

    /// Puts `acks` into `envelope`'s signed transaction, in ascending replica order, with
    /// this client's signature over them (domain `PrivateDataAcks`): what the ledger takes
    /// from the transaction's creator only, so that no relaying peer can change them.
    pub fn acknowledged(&self, envelope: &mut v1::Envelope, mut acks: Vec<v1::PrivateDataAck>) {
        let Some(v1::envelope::Kind::Transaction(signed)) = &mut envelope.kind else {
            return;
        };
        acks.sort_by_key(|a| a.replica);
        if acks.is_empty() {
            // Nothing to countersign (the ledger refuses a countersignature of nothing).
            signed.acks_signature = Vec::new();
            signed.private_data_acks = acks;
            return;
        }
        let hash: [u8; 32] = sha2::Sha256::digest(&signed.transaction).into();
        let listed: Vec<(u32, &[u8])> = acks
            .iter()
            .map(|a| (a.replica, a.signature.as_slice()))
            .collect();
        signed.acks_signature = self
            .sign(
                medledger_crypto::SignatureDomain::PrivateDataAcks,
                &medledger_crypto::private_data_acks_statement(&hash, &listed),
            )
            .to_bytes()
            .to_vec();
        signed.private_data_acks = acks;
    }

    /// The keys that open item `item_id` of record `pseudonym` for this client (a
    /// clinician: the envelope, the key chain and the wrapped file key; the owner: the
    /// wrapped file key), from the query `access_keys` (docs/adr/0017 §5), each checked
    /// against the commitments of `access`, the committed `record_access` that allowed the
    /// read. A peer answers the values it holds (a put widened past a failed peer leaves
    /// one record's values on different peers), so the peers are asked in turn, from the
    /// one the record's values were placed on, and each value is taken from the first
    /// answer whose value matches its commitment; an answer for another permission or
    /// epoch, and a value that does not match, are passed over.
    ///
    /// # Errors
    /// As [`PeerSet::query_until`]: the peers asked gave no match for some value.
    pub async fn access_keys(
        &self,
        pseudonym: &[u8; 32],
        item_id: &str,
        access: &v1::RecordAccessResult,
    ) -> Result<v1::AccessKeysResult, ClientError> {
        let args = v1::AccessKeysArgs {
            pseudonym: pseudonym.to_vec(),
            item_id: item_id.to_string(),
        };
        let gathered = std::sync::Mutex::new(None);
        self.query_until_from(
            "access_keys",
            prost::Message::encode_to_vec(&args),
            Some(pseudonym.as_slice()),
            |answer| {
                let keys: v1::AccessKeysResult =
                    prost::Message::decode(answer.result.as_slice()).map_err(|e| e.to_string())?;
                let mut gathered = gathered.lock().unwrap_or_else(|p| p.into_inner());
                gather_keys(&mut gathered, keys, access)
            },
        )
        .await?;
        let gathered = gathered.into_inner().unwrap_or_else(|p| p.into_inner());
        gathered.ok_or_else(|| ClientError::Protocol("access_keys: no answer".into()))
    }
}

impl PeerSet {
    /// The file key of study copy `item_id` under `study_pseudonym` in `study_id`, wrapped
    /// to the study's key, for the study's researcher, from the query `study_access_keys`
    /// (docs/adr/0017), checked against `commitment`, the one in the committed
    /// `record_study_access` that allowed the read. The peers are asked in turn from the one
    /// the study pseudonym places the value on; an answer without the value, or with one that
    /// does not match, is passed over.
    ///
    /// # Errors
    /// As [`PeerSet::query_until`]: no peer asked gave a value that matches.
    pub async fn study_access_keys(
        &self,
        study_id: &str,
        study_pseudonym: &[u8],
        item_id: &str,
        commitment: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let args = v1::RecordStudyAccessArgs {
            study_id: study_id.to_string(),
            study_pseudonym: study_pseudonym.to_vec(),
            item_id: item_id.to_string(),
        };
        let gathered = std::sync::Mutex::new((Vec::new(), Vec::new()));
        self.query_until_from(
            "study_access_keys",
            prost::Message::encode_to_vec(&args),
            Some(study_pseudonym),
            |answer| {
                let keys: v1::AccessKeysResult =
                    prost::Message::decode(answer.result.as_slice()).map_err(|e| e.to_string())?;
                let mut gathered = gathered.lock().unwrap_or_else(|p| p.into_inner());
                gather_study_key(&mut gathered, keys, commitment)
            },
        )
        .await?;
        let (value, _) = gathered.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(value)
    }
}

impl PeerSet {
    /// The sealed reasons of audit entries `wanted` ((sequence number, commitment) of each,
    /// from the trail f+1 peers agreed on) of record `pseudonym`, by sequence number, from
    /// the query `sealed_reasons` (ledger format 7, docs/adr/0017): the peers are asked in
    /// turn from the one the record's values are placed on, and each reason is taken from
    /// the first answer whose value matches its commitment. A value that matches but is not
    /// a `SealedText` is the clinician's, committed as their reason: it is kept as
    /// [`GatheredReason::NotASealedText`] (peers acknowledge no such value since they check
    /// its shape; a chain written before they did may hold one). A reason no peer asked
    /// gave is left out (the caller says so); so is one that does not match.
    ///
    /// # Errors
    /// The peers' refusal (not the record's owner or an auditor, the record erased) when
    /// every page was refused; a page refused beside others answered gives its entries
    /// [`GatheredReason::Refused`]. [`ClientError::Protocol`] is never returned for reasons
    /// the peers lack. One peer's refusal can be all there is: a caller shows its kind
    /// ([`crate::reasons::not_available`]), not a peer's words.
    pub async fn sealed_reasons(
        &self,
        pseudonym: &[u8],
        wanted: &[(u64, Vec<u8>)],
    ) -> Result<std::collections::BTreeMap<u64, GatheredReason>, ClientError> {
        let mut gathered = std::collections::BTreeMap::new();
        let mut refused = None;
        for page in wanted.chunks(medledger_chaincode::limits::MAX_AUDIT_PAGE) {
            let args = v1::SealedReasonsArgs {
                pseudonym: pseudonym.to_vec(),
                seqs: page.iter().map(|(seq, _)| *seq).collect(),
            };
            let into = std::sync::Mutex::new(std::collections::BTreeMap::new());
            // Whether any peer answered this page (with reasons or without them).
            let answered = std::sync::atomic::AtomicBool::new(false);
            let asked = self
                .query_until_from(
                    "sealed_reasons",
                    prost::Message::encode_to_vec(&args),
                    Some(pseudonym),
                    |answer| {
                        let reasons: v1::SealedReasonsResult =
                            prost::Message::decode(answer.result.as_slice())
                                .map_err(|e| e.to_string())?;
                        answered.store(true, std::sync::atomic::Ordering::Relaxed);
                        let mut into = into.lock().unwrap_or_else(|p| p.into_inner());
                        gather_reasons(&mut into, reasons, page)
                    },
                )
                .await;
            let mut into = into.into_inner().unwrap_or_else(|p| p.into_inner());
            // A page refused by every peer that was asked (one that answered "not held"
            // outranks another's refusal) costs that page's words only, each entry saying so.
            if let Err(e) = asked
                && into.is_empty()
                && !answered.load(std::sync::atomic::Ordering::Relaxed)
                && !matches!(e, ClientError::Protocol(_))
            {
                for (seq, _) in page {
                    into.insert(*seq, GatheredReason::Refused(e.kind()));
                }
                refused.get_or_insert(e);
            }
            gathered.extend(into);
        }
        // The refusal itself, when it is all there is.
        match refused {
            Some(e)
                if gathered
                    .values()
                    .all(|r| matches!(r, GatheredReason::Refused(_))) =>
            {
                Err(e)
            }
            _ => Ok(gathered),
        }
    }
}

/// A sealed reason as [`PeerSet::sealed_reasons`] gathered it.
#[derive(Debug, Clone, PartialEq)]
pub enum GatheredReason {
    /// The sealed text, as committed.
    Sealed(v1::SealedText),
    /// A value that matches the audit entry's commitment, so the clinician committed it as
    /// their reason, but that is not a well-formed `SealedText` (canonically encoded, of the
    /// shape the peers check): shown as the clinician's, never opened.
    NotASealedText,
    /// Its page of the query was refused ([`ClientError::kind`] of the refusal), while
    /// another page was answered.
    Refused(&'static str),
}

/// Takes into `gathered` the reasons of one peer's `sealed_reasons` answer that match the
/// commitment `wanted` names for their sequence number (as sealed texts, or as
/// [`GatheredReason::NotASealedText`]). `Ok` once every wanted reason is gathered; else how
/// many are still missing.
fn gather_reasons(
    gathered: &mut std::collections::BTreeMap<u64, GatheredReason>,
    answer: v1::SealedReasonsResult,
    wanted: &[(u64, Vec<u8>)],
) -> Result<(), String> {
    // One reason per sequence number asked at most: a longer answer is refused whole
    // before any of it costs a hash.
    if answer.reasons.len() > wanted.len() {
        return Err(format!(
            "{} sealed reasons for {} asked",
            answer.reasons.len(),
            wanted.len()
        ));
    }
    let mut wrong = 0usize;
    for reason in answer.reasons {
        let Some((_, commitment)) = wanted.iter().find(|(seq, _)| *seq == reason.seq) else {
            continue;
        };
        if gathered.contains_key(&reason.seq) {
            continue;
        }
        let Ok(salt) = <[u8; 32]>::try_from(reason.salt.as_slice()) else {
            wrong += 1;
            continue;
        };
        if medledger_crypto::private_commitment(&salt, &reason.value).as_slice()
            != commitment.as_slice()
        {
            wrong += 1;
            continue;
        }
        // The shape the acknowledging peers check; a value committed past peers that did
        // not check it (an older build) is the clinician's, said to be.
        let sealed = match medledger_chaincode::sealed::well_formed(&reason.value) {
            Ok(sealed) => GatheredReason::Sealed(sealed),
            Err(_) => GatheredReason::NotASealedText,
        };
        gathered.insert(reason.seq, sealed);
    }
    let missing = wanted
        .iter()
        .filter(|(seq, _)| !gathered.contains_key(seq))
        .count();
    match (missing, wrong) {
        (0, _) => Ok(()),
        (_, 0) => Err(format!(
            "{missing} sealed reasons not held by the peers asked so far"
        )),
        _ => Err(format!(
            "{wrong} sealed reasons that do not match their commitments ({missing} still missing)"
        )),
    }
}

/// When `keeps` (the ledger's format keeps this field private), moves key material `clear`
/// into `private` and sets `commitment` to its commitment; an empty `clear` stays as it is.
fn move_if(keeps: bool, clear: &mut Vec<u8>, commitment: &mut Vec<u8>, private: &mut PrivateData) {
    if keeps && !clear.is_empty() {
        *commitment = private.add(std::mem::take(clear)).to_vec();
    }
}

/// Takes into `gathered` the values of one peer's `access_keys` answer `keys` that match the
/// commitments of `access` (the committed access: same permission and epoch, as many
/// chain links): each value whose slot is still open. `Ok` once every committed value is
/// gathered; else why not yet (this answer's faults, or how many values are missing).
fn gather_keys(
    gathered: &mut Option<v1::AccessKeysResult>,
    keys: v1::AccessKeysResult,
    access: &v1::RecordAccessResult,
) -> Result<(), String> {
    if keys.permission_id != access.permission_id || keys.key_epoch != access.key_epoch {
        return Err(format!(
            "keys of permission {} at epoch {}, not of the access's {} at epoch {}",
            keys.permission_id, keys.key_epoch, access.permission_id, access.key_epoch
        ));
    }
    let links = access.key_chain_commitments.len();
    if keys.key_chain.len() != links || keys.key_chain_salts.len() != links {
        return Err("a key chain of another length than the committed one".into());
    }
    if access.key_envelope_commitment.is_empty() && !keys.key_envelope.is_empty() {
        return Err("an envelope for a permission that holds none".into());
    }
    let committed_dek = access
        .item
        .as_ref()
        .map(|i| i.wrapped_dek_commitment.clone())
        .unwrap_or_default();
    let first = gathered.is_none();
    let into = gathered.get_or_insert_with(|| v1::AccessKeysResult {
        permission_id: keys.permission_id.clone(),
        key_epoch: keys.key_epoch,
        key_chain: vec![Vec::new(); links],
        key_chain_salts: vec![Vec::new(); links],
        ..v1::AccessKeysResult::default()
    });
    // A file key with no commitment (none committed) is taken as the first peer gave it.
    if committed_dek.is_empty() && first {
        into.wrapped_dek = keys.wrapped_dek.clone();
    }
    let mut missing = 0;
    let mut wrong = 0;
    let mut slot = |value: &mut Vec<u8>,
                    salt: &mut Vec<u8>,
                    offered: Vec<u8>,
                    offered_salt: Vec<u8>,
                    commitment: &[u8]| {
        match take_if_committed(value, salt, offered, offered_salt, commitment) {
            Slot::Held => {}
            Slot::Missing => missing += 1,
            Slot::Wrong => {
                missing += 1;
                wrong += 1;
            }
        }
    };
    slot(
        &mut into.wrapped_dek,
        &mut into.wrapped_dek_salt,
        keys.wrapped_dek,
        keys.wrapped_dek_salt,
        &committed_dek,
    );
    slot(
        &mut into.key_envelope,
        &mut into.key_envelope_salt,
        keys.key_envelope,
        keys.key_envelope_salt,
        &access.key_envelope_commitment,
    );
    for (((value, salt), (offered, offered_salt)), commitment) in into
        .key_chain
        .iter_mut()
        .zip(into.key_chain_salts.iter_mut())
        .zip(keys.key_chain.into_iter().zip(keys.key_chain_salts))
        .zip(&access.key_chain_commitments)
    {
        slot(value, salt, offered, offered_salt, commitment);
    }
    match (missing, wrong) {
        (0, _) => Ok(()),
        (_, 0) => Err(format!(
            "{missing} values not held by the peers asked so far"
        )),
        _ => Err(format!(
            "{wrong} values that do not match their commitments ({missing} still missing)"
        )),
    }
}

/// Takes into `gathered` (value, salt) the study copy's file key of one peer's
/// `study_access_keys` answer `keys` if it matches `commitment`. `Ok` once held; else why
/// not (not held there, or not the committed value).
fn gather_study_key(
    gathered: &mut (Vec<u8>, Vec<u8>),
    keys: v1::AccessKeysResult,
    commitment: &[u8],
) -> Result<(), String> {
    let (value, salt) = gathered;
    match take_if_committed(
        value,
        salt,
        keys.wrapped_dek,
        keys.wrapped_dek_salt,
        commitment,
    ) {
        Slot::Held => Ok(()),
        Slot::Missing => Err("the study copy's file key is not held here".into()),
        Slot::Wrong => Err("a study copy's file key that does not match its commitment".into()),
    }
}

/// What one slot of [`gather_keys`] holds after an answer.
enum Slot {
    /// Its value (or nothing was committed).
    Held,
    /// Nothing yet: the answer had no value.
    Missing,
    /// Nothing yet: the answer's value did not match the commitment.
    Wrong,
}

/// Fills `value` and `salt` with `offered` under `offered_salt` when they match `commitment`
/// and the slot is still open; a slot with no commitment is always held.
fn take_if_committed(
    value: &mut Vec<u8>,
    salt: &mut Vec<u8>,
    offered: Vec<u8>,
    offered_salt: Vec<u8>,
    commitment: &[u8],
) -> Slot {
    let matches = |value: &[u8], salt: &[u8]| {
        <[u8; medledger_crypto::PRIVATE_SALT_LEN]>::try_from(salt)
            .is_ok_and(|salt| medledger_crypto::private_commitment(&salt, value)[..] == *commitment)
    };
    if commitment.is_empty() || matches(value, salt) {
        return Slot::Held;
    }
    if offered.is_empty() && offered_salt.is_empty() {
        return Slot::Missing;
    }
    if !matches(&offered, &offered_salt) {
        return Slot::Wrong;
    }
    *value = offered;
    *salt = offered_salt;
    Slot::Held
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value, its salt and its commitment.
    fn committed(value: &[u8], tag: u8) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let salt = [tag; 32];
        (
            value.to_vec(),
            salt.to_vec(),
            medledger_crypto::private_commitment(&salt, value).to_vec(),
        )
    }

    #[test]
    fn a_study_key_is_taken_only_when_it_matches_its_commitment() {
        let (value, salt, commitment) = committed(b"study copy key", 1);
        let mut gathered = (Vec::new(), Vec::new());
        let answer = |value: &[u8], salt: &[u8]| v1::AccessKeysResult {
            wrapped_dek: value.to_vec(),
            wrapped_dek_salt: salt.to_vec(),
            ..v1::AccessKeysResult::default()
        };
        // A peer that lacks it, then a liar's key under a salt of its own, then the key.
        assert!(gather_study_key(&mut gathered, answer(&[], &[]), &commitment).is_err());
        let lie = gather_study_key(&mut gathered, answer(&[0x5c; 80], &[0x5d; 32]), &commitment);
        assert!(lie.unwrap_err().contains("does not match"));
        assert!(gathered.0.is_empty());
        gather_study_key(&mut gathered, answer(&value, &salt), &commitment).unwrap();
        assert_eq!(gathered.0, value);
        // Once held, a later lie does not replace it.
        gather_study_key(&mut gathered, answer(&[0x5c; 80], &[0x5d; 32]), &commitment).unwrap();
        assert_eq!(gathered.0, value);
    }

    #[test]
    fn sealed_reasons_are_taken_only_when_they_match_and_gathered_across_answers() {
        use prost::Message as _;
        let reason = |n: u8| v1::SealedText {
            ciphertext: vec![n; 40],
            key_commitment: vec![n; 32],
            readers: vec![v1::SealedTextReader {
                public_key: vec![9; 32],
                wrapped_key: vec![n; 80],
            }],
        };
        let (first, first_salt, first_c) = committed(&reason(1).encode_to_vec(), 1);
        let (second, second_salt, second_c) = committed(&reason(2).encode_to_vec(), 2);
        let (junk, junk_salt, junk_c) = committed(b"not a sealed text \xff\xff", 3);
        // A sealed text with bytes beside its fields (an unknown field 15): not well formed.
        let mut trailing = reason(3).encode_to_vec();
        trailing.extend_from_slice(&[0x7a, 1, 0]);
        let (trailing, trailing_salt, trailing_c) = committed(&trailing, 5);
        let wanted = vec![(4, first_c), (9, second_c), (12, junk_c), (13, trailing_c)];
        let value = |seq: u64, value: &[u8], salt: &[u8]| v1::SealedReasonValue {
            seq,
            value: value.to_vec(),
            salt: salt.to_vec(),
        };
        let mut gathered = std::collections::BTreeMap::new();
        // A liar: its own sealing under the real salt, the other entry's value under this
        // one's number, a value for an entry not asked for. Nothing taken.
        let lie = v1::SealedReasonsResult {
            reasons: vec![
                value(4, &reason(7).encode_to_vec(), &first_salt),
                value(9, &first, &first_salt),
                value(5, &first, &first_salt),
            ],
        };
        // More reasons than asked: refused whole, even the matching one in it.
        let flood = v1::SealedReasonsResult {
            reasons: (0..5).map(|_| value(4, &first, &first_salt)).collect(),
        };
        let said = gather_reasons(&mut gathered, flood, &wanted).unwrap_err();
        assert!(said.contains("5 sealed reasons for 4 asked"), "{said}");
        assert!(gathered.is_empty());
        let said = gather_reasons(&mut gathered, lie, &wanted).unwrap_err();
        assert!(said.contains("do not match"), "{said}");
        assert!(gathered.is_empty());
        // One peer holds the first, another the second; a value that matches its commitment
        // but is no sealed text is the clinician's, and said to be.
        let one = v1::SealedReasonsResult {
            reasons: vec![
                value(4, &first, &first_salt),
                value(12, &junk, &junk_salt),
                value(13, &trailing, &trailing_salt),
            ],
        };
        assert!(gather_reasons(&mut gathered, one, &wanted).is_err());
        assert_eq!(gathered.get(&4), Some(&GatheredReason::Sealed(reason(1))));
        assert_eq!(gathered.get(&12), Some(&GatheredReason::NotASealedText));
        assert_eq!(gathered.get(&13), Some(&GatheredReason::NotASealedText));
        let two = v1::SealedReasonsResult {
            reasons: vec![value(9, &second, &second_salt)],
        };
        assert!(gather_reasons(&mut gathered, two, &wanted).is_ok());
        assert_eq!(gathered.get(&9), Some(&GatheredReason::Sealed(reason(2))));
    }

    #[test]
    fn keys_are_gathered_value_by_value_from_several_answers() {
        let (envelope, envelope_salt, envelope_c) = committed(b"envelope", 1);
        let (link, link_salt, link_c) = committed(b"link", 2);
        let (dek, dek_salt, dek_c) = committed(b"file key", 3);
        let access = v1::RecordAccessResult {
            permission_id: "p1".into(),
            key_epoch: 2,
            key_envelope_commitment: envelope_c,
            key_chain_commitments: vec![link_c],
            item: Some(v1::ClinicalItem {
                wrapped_dek_commitment: dek_c,
                ..Default::default()
            }),
            ..Default::default()
        };
        type Held = (Vec<u8>, Vec<u8>);
        let answer = |envelope: Held, link: Held, dek: Held| v1::AccessKeysResult {
            permission_id: "p1".into(),
            key_epoch: 2,
            key_envelope: envelope.0,
            key_envelope_salt: envelope.1,
            key_chain: vec![link.0],
            key_chain_salts: vec![link.1],
            wrapped_dek: dek.0,
            wrapped_dek_salt: dek.1,
        };
        let held = |value: &[u8], salt: &[u8]| (value.to_vec(), salt.to_vec());
        let none = || (Vec::new(), Vec::new());
        let mut gathered = None;
        // One peer holds the envelope alone; another lies about the link and holds the
        // file key; a third holds the link.
        let first = gather_keys(
            &mut gathered,
            answer(held(&envelope, &envelope_salt), none(), none()),
            &access,
        );
        assert!(first.unwrap_err().contains("2 values not held"));
        let lying = gather_keys(
            &mut gathered,
            answer(none(), held(b"forged", &link_salt), held(&dek, &dek_salt)),
            &access,
        );
        assert!(lying.unwrap_err().contains("1 values that do not match"));
        // A forged envelope offered later does not displace the one gathered.
        gather_keys(
            &mut gathered,
            answer(
                held(b"forged", &envelope_salt),
                held(&link, &link_salt),
                none(),
            ),
            &access,
        )
        .unwrap();
        let keys = gathered.unwrap();
        assert_eq!(keys.key_envelope, envelope);
        assert_eq!(keys.key_chain, vec![link]);
        assert_eq!(keys.wrapped_dek, dek);

        // Answers for another permission or epoch, or another chain length, are refused.
        let mut gathered = None;
        let mut other = answer(held(&envelope, &envelope_salt), none(), none());
        other.permission_id = "p2".into();
        assert!(gather_keys(&mut gathered, other, &access).is_err());
        let mut short = answer(held(&envelope, &envelope_salt), none(), none());
        short.key_chain.clear();
        short.key_chain_salts.clear();
        assert!(gather_keys(&mut gathered, short, &access).is_err());
        assert!(gathered.is_none(), "nothing taken from a refused answer");
    }
}
