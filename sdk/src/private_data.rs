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

/// The private values of one transaction, each with a fresh 32-byte salt.
#[derive(Default, Clone)]
pub struct PrivateData {
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
    pub fn new() -> PrivateData {
        PrivateData::default()
    }

    /// Adds `value`; returns its commitment (`medledger_crypto::private_commitment` under a
    /// salt drawn here), what the chaincode and the blocks see in its place.
    pub fn add(&mut self, value: Vec<u8>) -> [u8; 32] {
        let mut salt = [0u8; medledger_crypto::PRIVATE_SALT_LEN];
        rand_core::OsRng.fill_bytes(&mut salt);
        let commitment = medledger_crypto::private_commitment(&salt, &value);
        self.values.push(v1::PrivateValue {
            salt: salt.to_vec(),
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

    /// The values with their salts, as sent to the peers.
    pub fn values(&self) -> &[v1::PrivateValue] {
        &self.values
    }
}

impl PeerSet {
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
            let draw = match &private.placement {
                Some(key) => {
                    let digest = sha2::Sha256::digest(key);
                    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
                }
                None => rand_core::OsRng.next_u32(),
            };
            let start = draw as usize % peers.len();
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
        if !clear.is_empty() && self.keeps_private_data() {
            *commitment = private.add(std::mem::take(clear)).to_vec();
        }
    }

    /// Moves `grant`'s key envelope into private data ([`PeerSet::keep_private`]); returns
    /// the private data to send with it.
    pub fn grant_envelope_private(&self, grant: &mut v1::GrantArgs) -> PrivateData {
        let mut private = PrivateData::new();
        private.place_by(&grant.pseudonym);
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
        let mut private = PrivateData::new();
        private.place_by(&item.pseudonym);
        self.keep_private(
            &mut item.wrapped_dek,
            &mut item.wrapped_dek_commitment,
            &mut private,
        );
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
    /// read: a peer that lacks a value, or answers one the ledger did not commit to, is
    /// passed over for the next.
    ///
    /// # Errors
    /// As [`PeerSet::query_until`]: no peer gave keys that match.
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
        let answer = self
            .query_until(
                "access_keys",
                prost::Message::encode_to_vec(&args),
                |answer| {
                    let keys: v1::AccessKeysResult =
                        prost::Message::decode(answer.result.as_slice())
                            .map_err(|e| e.to_string())?;
                    keys_match(&keys, access)
                },
            )
            .await?;
        prost::Message::decode(answer.result.as_slice())
            .map_err(|e| ClientError::Protocol(format!("access_keys answer: {e}")))
    }
}

/// Whether `keys` are the ones committed access `access` names: the same permission and
/// epoch, and every value (envelope, links, wrapped file key) matching its commitment under
/// its salt.
fn keys_match(keys: &v1::AccessKeysResult, access: &v1::RecordAccessResult) -> Result<(), String> {
    if keys.permission_id != access.permission_id || keys.key_epoch != access.key_epoch {
        return Err(format!(
            "keys of permission {} at epoch {}, not of the access's {} at epoch {}",
            keys.permission_id, keys.key_epoch, access.permission_id, access.key_epoch
        ));
    }
    let matches = |value: &[u8], salt: &[u8], commitment: &[u8]| {
        <[u8; medledger_crypto::PRIVATE_SALT_LEN]>::try_from(salt)
            .is_ok_and(|salt| medledger_crypto::private_commitment(&salt, value)[..] == *commitment)
    };
    let committed_dek = access
        .item
        .as_ref()
        .map(|i| i.wrapped_dek_commitment.as_slice())
        .unwrap_or_default();
    if !committed_dek.is_empty()
        && !matches(&keys.wrapped_dek, &keys.wrapped_dek_salt, committed_dek)
    {
        return Err("a wrapped file key that does not match its commitment".into());
    }
    if access.key_envelope_commitment.is_empty() {
        if !keys.key_envelope.is_empty() {
            return Err("an envelope for a permission that holds none".into());
        }
    } else if !matches(
        &keys.key_envelope,
        &keys.key_envelope_salt,
        &access.key_envelope_commitment,
    ) {
        return Err("an envelope that does not match its commitment".into());
    }
    if keys.key_chain.len() != access.key_chain_commitments.len()
        || keys.key_chain_salts.len() != keys.key_chain.len()
    {
        return Err("a key chain of another length than the committed one".into());
    }
    for ((link, salt), commitment) in keys
        .key_chain
        .iter()
        .zip(&keys.key_chain_salts)
        .zip(&access.key_chain_commitments)
    {
        if !matches(link, salt, commitment) {
            return Err("a key chain link that does not match its commitment".into());
        }
    }
    Ok(())
}
