//! Block hashing: the header hash that links blocks, the Merkle root of a block's envelopes,
//! and the state root that chains each block's write set. All hashes are SHA-256 over a
//! canonical encoding (a domain label, fixed-width integers, length-prefixed bytes), never
//! over protobuf bytes, so re-encoding a block cannot change its hash.

use medledger_pbft::Encoder;
use medledger_proto::v1;
use sha2::{Digest, Sha256};

/// SHA-256 of a block header (see `medledger_crypto::block_header_hash`).
pub fn header_hash(h: &v1::BlockHeader) -> [u8; 32] {
    medledger_crypto::block_header_hash(&medledger_crypto::HeaderFields {
        number: h.number,
        prev_hash: &h.prev_hash,
        tx_root: &h.tx_root,
        state_root: &h.state_root,
        time_ms: h.time_ms,
    })
}

/// RFC 6962 Merkle tree hash of the envelopes: leaves `H(0x00 ‖ envelope)`, nodes
/// `H(0x01 ‖ left ‖ right)`, split at the largest power of two below the count.
pub fn tx_root<B: AsRef<[u8]>>(envelopes: &[B]) -> [u8; 32] {
    fn leaf(data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(data);
        h.finalize().into()
    }
    fn node(l: [u8; 32], r: [u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }
    fn root(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                // The largest power of two smaller than n.
                let mut split = 1;
                while split * 2 < n {
                    split *= 2;
                }
                node(root(&leaves[..split]), root(&leaves[split..]))
            }
        }
    }
    let leaves: Vec<[u8; 32]> = envelopes.iter().map(|e| leaf(e.as_ref())).collect();
    root(&leaves)
}

/// One key's new value (None: deleted) in a block's write set.
pub type WriteSet = std::collections::BTreeMap<String, Option<Vec<u8>>>;

/// `SHA-256(previous ‖ SHA-256(sorted write set))`.
pub fn next_state_root(previous: &[u8], writes: &WriteSet) -> [u8; 32] {
    let mut e = Encoder::new(b"medledger/v1/write-set");
    e.u64(writes.len() as u64);
    for (key, value) in writes {
        e.bytes(key.as_bytes());
        match value {
            Some(v) => {
                e.u64(1);
                e.bytes(v);
            }
            None => e.u64(0),
        }
    }
    let set = e.finish_digest();
    let mut h = Sha256::new();
    h.update(previous);
    h.update(set);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merkle_root_follows_rfc6962() {
        // Two leaves: H(1 ‖ H(0 ‖ a) ‖ H(0 ‖ b)).
        let a = Sha256::digest([&[0u8][..], b"a"].concat());
        let b = Sha256::digest([&[0u8][..], b"b"].concat());
        let expected: [u8; 32] = Sha256::digest([&[1u8][..], &a, &b].concat()).into();
        assert_eq!(tx_root(&[b"a", b"b"]), expected);
        // Three leaves split 2 + 1.
        let c = Sha256::digest([&[0u8][..], b"c"].concat());
        let expected3: [u8; 32] = Sha256::digest([&[1u8][..], &expected, &c].concat()).into();
        assert_eq!(tx_root(&[b"a", b"b", b"c"]), expected3);
        // Order matters.
        assert_ne!(tx_root(&[b"b", b"a"]), expected);
        assert_eq!(tx_root::<&[u8]>(&[]), <[u8; 32]>::from(Sha256::digest([])));
    }

    #[test]
    fn state_root_chains_and_sees_deletes() {
        let mut w = WriteSet::new();
        w.insert("k".into(), Some(b"v".to_vec()));
        let r1 = next_state_root(&[0; 32], &w);
        let mut d = WriteSet::new();
        d.insert("k".into(), None);
        assert_ne!(next_state_root(&r1, &w), next_state_root(&r1, &d));
        assert_ne!(next_state_root(&[1; 32], &w), r1);
    }

    #[test]
    fn header_hash_covers_every_field() {
        let h = v1::BlockHeader {
            number: 1,
            prev_hash: vec![1; 32],
            tx_root: vec![2; 32],
            state_root: vec![3; 32],
            time_ms: 4,
        };
        let base = header_hash(&h);
        let mut changed = h.clone();
        changed.time_ms = 5;
        assert_ne!(header_hash(&changed), base);
    }
}
