//! Private data (docs/adr/0017, after Hyperledger Fabric's private data collections): a
//! transaction carries salted commitments to values that travel beside it to the peers, and
//! each peer that holds them signs an acknowledgment the transaction carries in turn.

use sha2::{Digest, Sha256};

use crate::signing::{
    Signature, SignatureDomain, SignatureError, SigningIdentity, VerifyingKey, length_prefixed,
};

/// Bytes of the salt drawn for each private value: enough that a low-entropy value (a short
/// reason, a small key index) cannot be found by hashing guesses.
pub const PRIVATE_SALT_LEN: usize = 32;

/// Most commitments one transaction may carry.
pub const MAX_PRIVATE_COMMITMENTS: usize = 64;

/// The label hashed in front of every private value.
const COMMITMENT_LABEL: &[u8] = b"medledger/v1/private-value";

/// The label hashed in front of a salt's seed.
const SALT_LABEL: &[u8] = b"medledger/v2/private-salt";

/// The salt of a private value sent by the creator whose Ed25519 signing key is
/// `creator_key` (32 bytes), from the `seed` it drew (32 random bytes): SHA-256(u64be(len
/// label) ‖ label ‖ creator_key ‖ seed), label `medledger/v2/private-salt`.
///
/// Peers take a value only as its seed and derive the salt from the key of the caller that
/// sends it, who must be the transaction's creator (docs/adr/0017). Whoever learns a value
/// and its salt (a Byzantine peer that held it) cannot have its commitment acknowledged for
/// a transaction of their own: the salt a correct peer derives for them differs, so they
/// cannot claim another creator's commitment first and have the creator's transaction
/// refused.
pub fn private_salt(
    creator_key: &[u8; 32],
    seed: &[u8; PRIVATE_SALT_LEN],
) -> [u8; PRIVATE_SALT_LEN] {
    let mut h = Sha256::new();
    h.update((SALT_LABEL.len() as u64).to_be_bytes());
    h.update(SALT_LABEL);
    h.update(creator_key);
    h.update(seed);
    h.finalize().into()
}

/// The commitment to `value` under `salt`: SHA-256(u64be(len label) ‖ label ‖ salt ‖
/// u64be(len value) ‖ value), label `medledger/v1/private-value`. 32 bytes; what blocks,
/// results and state hold in place of the value.
pub fn private_commitment(salt: &[u8; PRIVATE_SALT_LEN], value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((COMMITMENT_LABEL.len() as u64).to_be_bytes());
    h.update(COMMITMENT_LABEL);
    h.update(salt);
    h.update((value.len() as u64).to_be_bytes());
    h.update(value);
    h.finalize().into()
}

/// What a peer signs (domain [`SignatureDomain::PrivateDataAck`]) to say it holds the values
/// of `commitments` for the transaction whose hash is `transaction_hash` on the network
/// `network_id` (the genesis header's hash): each part length-prefixed, the commitments
/// counted (u32, big-endian) and in the transaction's order.
pub fn private_data_ack_statement(
    network_id: &[u8],
    transaction_hash: &[u8],
    commitments: &[impl AsRef<[u8]>],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        8 + network_id.len() + transaction_hash.len() + 4 + 36 * commitments.len(),
    );
    length_prefixed(&mut out, network_id);
    length_prefixed(&mut out, transaction_hash);
    out.extend_from_slice(&(commitments.len() as u32).to_be_bytes());
    for commitment in commitments {
        length_prefixed(&mut out, commitment.as_ref());
    }
    out
}

/// A peer's acknowledgment ([`private_data_ack_statement`]) signed with its key.
pub fn sign_private_data_ack(
    peer: &SigningIdentity,
    network_id: &[u8],
    transaction_hash: &[u8],
    commitments: &[impl AsRef<[u8]>],
) -> Signature {
    peer.sign(
        SignatureDomain::PrivateDataAck,
        &private_data_ack_statement(network_id, transaction_hash, commitments),
    )
}

/// Checks a peer's acknowledgment.
///
/// # Errors
/// [`SignatureError`]: the signature is not 64 bytes, or does not verify for `peer`'s key
/// over this network, transaction and commitments.
pub fn verify_private_data_ack(
    peer: &VerifyingKey,
    network_id: &[u8],
    transaction_hash: &[u8],
    commitments: &[impl AsRef<[u8]>],
    signature: &[u8],
) -> Result<(), SignatureError> {
    peer.verify(
        SignatureDomain::PrivateDataAck,
        &private_data_ack_statement(network_id, transaction_hash, commitments),
        &Signature::from_slice(signature)?,
    )
}

/// What a transaction's creator signs (domain [`SignatureDomain::PrivateDataAcks`]) over
/// the acknowledgments its signed transaction carries: the transaction's hash, then each
/// acknowledgment's replica id (u32, big-endian) and its length-prefixed signature, counted
/// and in order (ascending replica ids). A peer relaying the envelope cannot add, drop,
/// reorder or replace one, so no copy of the envelope other than the creator's commits.
pub fn private_data_acks_statement(transaction_hash: &[u8], acks: &[(u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transaction_hash.len() + 4 + 72 * acks.len());
    length_prefixed(&mut out, transaction_hash);
    out.extend_from_slice(&(acks.len() as u32).to_be_bytes());
    for (replica, signature) in acks {
        out.extend_from_slice(&replica.to_be_bytes());
        length_prefixed(&mut out, signature);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commitment_is_the_documented_hash() {
        // Computed apart (Python hashlib) from the formula in the docstring.
        assert_eq!(
            hex::encode(private_commitment(&[7; 32], b"an envelope")),
            "7b52c193323f17f31f90181f0485f11e4b672dd20586a76fa49b727b33466580"
        );
        // The salt and the value each change it; a value cannot move into the salt.
        let base = private_commitment(&[7; 32], b"an envelope");
        assert_ne!(private_commitment(&[8; 32], b"an envelope"), base);
        assert_ne!(private_commitment(&[7; 32], b"an envelopf"), base);
        assert_ne!(
            private_commitment(&[7; 32], b""),
            private_commitment(&[0; 32], b"")
        );
    }

    #[test]
    fn the_salt_is_the_documented_hash_of_the_creator_key_and_seed() {
        // Computed apart (Python hashlib) from the formula in the docstring.
        assert_eq!(
            hex::encode(private_salt(&[3; 32], &[7; 32])),
            "57cb6a8e7da6d9944bf8acb757c2b81bfbce3de04c8c081d4d553e5ed04981f9"
        );
        // Another creator sending the same seed gets another salt.
        assert_ne!(
            private_salt(&[4; 32], &[7; 32]),
            private_salt(&[3; 32], &[7; 32])
        );
        assert_ne!(
            private_salt(&[3; 32], &[8; 32]),
            private_salt(&[3; 32], &[7; 32])
        );
    }

    #[test]
    fn an_acknowledgment_verifies_only_for_its_network_transaction_commitments_and_peer() {
        let peer = SigningIdentity::generate(&mut rand_core::OsRng);
        let other = SigningIdentity::generate(&mut rand_core::OsRng);
        let commitments = [[1u8; 32], [2; 32]];
        let signature = sign_private_data_ack(&peer, b"net", b"tx", &commitments).to_bytes();
        let key = peer.verifying_key();
        verify_private_data_ack(&key, b"net", b"tx", &commitments, &signature).unwrap();
        let refused = |key: &VerifyingKey, net: &[u8], tx: &[u8], c: &[[u8; 32]], sig: &[u8]| {
            verify_private_data_ack(key, net, tx, c, sig).is_err()
        };
        assert!(refused(
            &other.verifying_key(),
            b"net",
            b"tx",
            &commitments,
            &signature
        ));
        assert!(refused(&key, b"other net", b"tx", &commitments, &signature));
        assert!(refused(&key, b"net", b"tx2", &commitments, &signature));
        assert!(refused(
            &key,
            b"net",
            b"tx",
            &[[2; 32], [1; 32]],
            &signature
        ));
        assert!(refused(&key, b"net", b"tx", &commitments[..1], &signature));
        assert!(refused(&key, b"net", b"tx", &commitments, &signature[..63]));
        // Another domain's signature over the same bytes does not pass.
        let statement = private_data_ack_statement(b"net", b"tx", &commitments);
        let foreign = peer
            .sign(SignatureDomain::Transaction, &statement)
            .to_bytes();
        assert!(refused(&key, b"net", b"tx", &commitments, &foreign));
    }

    #[test]
    fn the_acknowledgments_statement_reads_one_way() {
        let a = private_data_acks_statement(b"tx", &[(0, &[1, 2]), (1, &[3])]);
        let b = private_data_acks_statement(b"tx", &[(0, &[1]), (1, &[2, 3])]);
        let c = private_data_acks_statement(b"tx", &[(1, &[3]), (0, &[1, 2])]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, private_data_acks_statement(b"tx", &[(0, &[1, 2])]));
    }
}
