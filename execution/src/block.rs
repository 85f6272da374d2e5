//! Block hashing: the header hash that links blocks, the Merkle root of a block's envelopes,
//! and the state root that chains each block's write set. All hashes are SHA-256 over a
//! canonical encoding (a domain label, fixed-width integers, length-prefixed bytes), never
//! over protobuf bytes, so re-encoding a block cannot change its hash.

use medledger_pbft::Encoder;
use medledger_proto::v1;
use sha2::{Digest, Sha256};

use crate::merkle::{Tree, leaf_hash};

/// The header format of ledger format 2 (`BlockHeader.format`); format 1 headers carry 0.
pub const HEADER_FORMAT_2: u32 = 2;

/// SHA-256 of a block header: for format 1 (`format` 0) `medledger_crypto::block_header_hash`
/// over number, prev_hash, tx_root, state_root and time; for format 2 (docs/adr/0009) the
/// canonical encoding, domain `medledger/v2/block-header`, of every field of the header:
/// format, number, prev_hash, tx_root, state_root, time_ms, result_root, config. A header
/// of any other format hashes as format 2 does, so it never equals a valid header's hash.
pub fn header_hash(h: &v1::BlockHeader) -> [u8; 32] {
    if h.format == 0 {
        return medledger_crypto::block_header_hash(&medledger_crypto::HeaderFields {
            number: h.number,
            prev_hash: &h.prev_hash,
            tx_root: &h.tx_root,
            state_root: &h.state_root,
            time_ms: h.time_ms,
        });
    }
    let mut e = Encoder::new(b"medledger/v2/block-header");
    e.u64(u64::from(h.format));
    e.u64(h.number);
    e.bytes(&h.prev_hash);
    e.bytes(&h.tx_root);
    e.bytes(&h.state_root);
    e.u64(h.time_ms as u64);
    e.bytes(&h.result_root);
    e.bytes(&h.config);
    e.finish_digest()
}

/// RFC 6962 Merkle tree hash of the envelopes (`merkle`): leaves `H(0x00 ‖ envelope)`.
pub fn tx_root<B: AsRef<[u8]>>(envelopes: &[B]) -> [u8; 32] {
    Tree::new(envelopes.iter().map(|e| leaf_hash(e.as_ref())).collect()).root()
}

/// The canonical bytes of a block's result leaf (ledger format 2, docs/adr/0009): domain
/// `medledger/v2/result-leaf`, the SHA-256 of the envelope as ordered, then the result's
/// status, code, transaction id, result bytes, events (count, then name and payload each),
/// creator and function. Never protobuf bytes and never `TxResult.message` (words are not
/// consensus data).
pub fn result_leaf_data(envelope_hash: &[u8; 32], r: &v1::TxResult) -> Vec<u8> {
    let mut e = Encoder::new(b"medledger/v2/result-leaf");
    e.bytes(envelope_hash);
    e.u64(r.status as u32 as u64);
    e.u64(r.code as u32 as u64);
    e.bytes(&r.tx_id);
    e.bytes(&r.result);
    e.u64(r.events.len() as u64);
    for event in &r.events {
        e.bytes(event.name.as_bytes());
        e.bytes(&event.payload);
    }
    e.bytes(r.creator.as_bytes());
    e.bytes(r.function.as_bytes());
    e.finish()
}

/// The leaf hash of a result (`H(0x00 ‖ result_leaf_data)`).
pub fn result_leaf(envelope_hash: &[u8; 32], r: &v1::TxResult) -> [u8; 32] {
    leaf_hash(&result_leaf_data(envelope_hash, r))
}

/// The leaf hashes of a block's results (format 2): one per envelope, in order.
pub fn result_leaves<B: AsRef<[u8]>>(envelopes: &[B], results: &[v1::TxResult]) -> Vec<[u8; 32]> {
    envelopes
        .iter()
        .zip(results)
        .map(|(e, r)| result_leaf(&envelope_hash(e.as_ref()), r))
        .collect()
}

/// SHA-256 of an envelope's bytes: its PBFT request id and its key in a result leaf (ledger
/// format 2).
pub fn envelope_hash(envelope: &[u8]) -> [u8; 32] {
    Sha256::digest(envelope).into()
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
            ..Default::default()
        };
        let base = header_hash(&h);
        let mut changed = h.clone();
        changed.time_ms = 5;
        assert_ne!(header_hash(&changed), base);
        // Format 2 covers its own fields and the format; any nonzero format hashes as 2.
        let v2 = v1::BlockHeader {
            format: HEADER_FORMAT_2,
            result_root: vec![5; 32],
            config: vec![6; 32],
            ..h.clone()
        };
        let base2 = header_hash(&v2);
        assert_ne!(base2, base);
        for change in [
            |h: &mut v1::BlockHeader| h.number += 1,
            |h: &mut v1::BlockHeader| h.prev_hash[0] ^= 1,
            |h: &mut v1::BlockHeader| h.tx_root[0] ^= 1,
            |h: &mut v1::BlockHeader| h.state_root[0] ^= 1,
            |h: &mut v1::BlockHeader| h.time_ms += 1,
            |h: &mut v1::BlockHeader| h.result_root[0] ^= 1,
            |h: &mut v1::BlockHeader| h.config[0] ^= 1,
            |h: &mut v1::BlockHeader| h.format = 3,
        ] {
            let mut changed = v2.clone();
            change(&mut changed);
            assert_ne!(header_hash(&changed), base2);
        }
    }

    #[test]
    fn a_result_leaf_covers_every_recorded_field_but_not_the_words() {
        let r = v1::TxResult {
            tx_id: vec![1; 32],
            status: v1::TxStatus::Valid as i32,
            result: vec![2],
            events: vec![v1::ChaincodeEvent {
                name: "e".into(),
                payload: vec![3],
            }],
            creator: "c".into(),
            function: "f".into(),
            code: 0,
            message: String::new(),
        };
        let base = result_leaf(&[9; 32], &r);
        assert_eq!(
            result_leaf(
                &[9; 32],
                &v1::TxResult {
                    message: "words".into(),
                    ..r.clone()
                }
            ),
            base
        );
        assert_ne!(result_leaf(&[8; 32], &r), base);
        for change in [
            |r: &mut v1::TxResult| r.tx_id[0] ^= 1,
            |r: &mut v1::TxResult| r.status = 2,
            |r: &mut v1::TxResult| r.code = 7,
            |r: &mut v1::TxResult| r.result.push(0),
            |r: &mut v1::TxResult| r.events[0].name.push('x'),
            |r: &mut v1::TxResult| r.events[0].payload.push(0),
            |r: &mut v1::TxResult| r.events.clear(),
            |r: &mut v1::TxResult| r.creator.push('x'),
            |r: &mut v1::TxResult| r.function.push('x'),
        ] {
            let mut changed = r.clone();
            change(&mut changed);
            assert_ne!(result_leaf(&[9; 32], &changed), base);
        }
    }
}
