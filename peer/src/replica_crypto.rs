//! The PBFT core's cryptography in a peer (`medledger_pbft::Crypto`): signatures with this
//! peer's key, verification against the keys of the peers of the configuration whose
//! replicas run (the epoch's, docs/adr/0011), and request ids as envelope hashes (ledger
//! format 2, docs/adr/0009 §5).

use std::sync::Arc;

use medledger_crypto::{SignatureDomain, SigningIdentity};
use medledger_execution::config::Configuration;
use medledger_pbft as pbft;
use medledger_proto::v1;

pub struct ReplicaCrypto {
    pub identity: Arc<SigningIdentity>,
    pub configuration: Arc<Configuration>,
}

impl pbft::Crypto for ReplicaCrypto {
    /// Ledger format 2 (docs/adr/0009 §5): a request is named by its envelope's SHA-256, so
    /// no other bytes can be ordered under a client's request id. Bytes that are not a
    /// canonically encoded envelope name nothing: no correct peer orders them.
    fn request_id(&self, payload: &[u8]) -> Option<pbft::TxId> {
        let envelope = <v1::Envelope as prost::Message>::decode(payload).ok()?;
        (prost::Message::encoded_len(&envelope) == payload.len()
            && prost::Message::encode_to_vec(&envelope) == payload)
            .then(|| crate::block::envelope_hash(payload))
    }

    fn sign(&self, _domain: pbft::Domain, bytes: &[u8]) -> Vec<u8> {
        // `bytes` already begin with the message kind's own tag.
        self.identity
            .sign(SignatureDomain::Consensus, bytes)
            .to_bytes()
            .to_vec()
    }

    fn verify(
        &self,
        signer: pbft::ReplicaId,
        _domain: pbft::Domain,
        bytes: &[u8],
        signature: &[u8],
    ) -> bool {
        self.configuration
            .verify_consensus(signer, bytes, signature)
    }
}
