//! The Merkle tree of RFC 6962 §2.1 (RFC 9162 §2.1): leaf hashes `SHA-256(0x00 ‖ data)`,
//! node hashes `SHA-256(0x01 ‖ left ‖ right)`, the left subtree holding the largest power of
//! two of leaves smaller than the count, and the empty tree hashing to `SHA-256()`. A block's
//! `tx_root` and `result_root` are such trees; a commit proof carries a leaf's inclusion path
//! (RFC 9162 §2.1.3.1), which anyone checks against the root (§2.1.3.2).
//!
//! The tree is built bottom-up, a level at a time, an unpaired last node rising unchanged:
//! for every count that is the same tree as the recursive definition (tested below).

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`: the hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A tree over leaf hashes, every level kept, so that the root and every leaf's path come
/// from one build (n − 1 node hashes for n leaves).
pub struct Tree {
    /// `levels[0]` are the leaf hashes; the last level holds the root (none when empty).
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The tree over `leaves` (leaf hashes, in order).
    pub fn new(leaves: Vec<Hash>) -> Tree {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    [single] => *single,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            levels.push(above);
        }
        Tree { levels }
    }

    /// The number of leaves.
    pub fn len(&self) -> usize {
        self.levels[0].len()
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Merkle tree hash (RFC 9162 §2.1.1): `SHA-256()` for no leaves.
    pub fn root(&self) -> Hash {
        match self.levels.last().and_then(|l| l.first()) {
            Some(root) => *root,
            None => Sha256::digest([]).into(),
        }
    }

    /// The inclusion path of leaf `index` (RFC 9162 §2.1.3.1), leaf to root; `None` when
    /// there is no such leaf.
    pub fn path(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.len() {
            return None;
        }
        let mut path = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                path.push(level[sibling]);
            }
            i >>= 1;
        }
        Some(path)
    }
}

/// Whether `path` proves that `leaf` (a leaf hash) is leaf `index` of a tree of `size`
/// leaves with root `root`: the verification algorithm of RFC 9162 §2.1.3.2, which also
/// refuses a path of the wrong length. It proves the leaf is in the tree; the root alone
/// does not fix `size` (a path can verify under two sizes), so callers must not rely on it.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9162 §2.1.1, as written: MTH(D[n]) with k the largest power of two below n.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// RFC 9162 §2.1.3.1, as written: PATH(m, D[n]).
    fn rfc_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut p = rfc_path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = rfc_path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn the_level_build_is_the_recursive_tree_of_rfc_9162() {
        for n in 0..70 {
            let l = leaves(n);
            let tree = Tree::new(l.clone());
            assert_eq!(tree.root(), mth(&l), "root of {n}");
            for m in 0..n {
                let path = tree.path(m).unwrap();
                assert_eq!(path, rfc_path(m, &l), "path {m} of {n}");
                assert!(verify_inclusion(
                    m as u64,
                    n as u64,
                    &l[m],
                    &path,
                    &tree.root()
                ));
            }
            assert_eq!(tree.path(n), None);
        }
    }

    /// Every way of presenting a leaf other than the one in the tree fails: another leaf,
    /// another index, a shortened, lengthened or altered path. (The size is not bound by the
    /// root alone: leaf 0 of 3 has the same path as leaf 0 of 4. What a path proves is that
    /// the leaf's data is in the tree; a proof's position is for display only.)
    #[test]
    fn a_wrong_leaf_index_size_or_path_does_not_verify() {
        for n in 1..40u64 {
            let l = leaves(n as usize);
            let tree = Tree::new(l.clone());
            let root = tree.root();
            for m in 0..n {
                let path = tree.path(m as usize).unwrap();
                let leaf = l[m as usize];
                assert!(!verify_inclusion(m, n, &leaf_hash(b"x"), &path, &root));
                if n > 1 {
                    assert!(!verify_inclusion((m + 1) % n, n, &leaf, &path, &root));
                }
                assert!(!verify_inclusion(n + m, n, &leaf, &path, &root));
                let mut longer = path.clone();
                longer.push(leaf);
                assert!(!verify_inclusion(m, n, &leaf, &longer, &root));
                if let Some((_, shorter)) = path.split_last() {
                    assert!(!verify_inclusion(m, n, &leaf, shorter, &root));
                    let mut altered = path.clone();
                    altered[0][0] ^= 1;
                    assert!(!verify_inclusion(m, n, &leaf, &altered, &root));
                }
            }
        }
    }
}
