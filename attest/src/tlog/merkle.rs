//! RFC 6962 / RFC 9162 Merkle tree hashing: leaf and node hashes, tree roots, the compact range
//! that appends in O(log n), and the in-memory tree that answers proofs.
//!
//! Hashing (RFC 6962 §2.1, RFC 9162 §2.1.1), with SHA-256 from the `sha2` crate:
//!
//! ```text
//! MTH({})         = SHA-256()
//! leaf hash       = SHA-256(0x00 || entry)
//! node hash       = SHA-256(0x01 || left || right)
//! MTH(D[n]), n>1  = node hash(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
//! ```
//!
//! Invariant: this module knows nothing of checkpoints, signatures or what an entry means.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::proof::ProofError;

/// One SHA-256 tree hash: a leaf hash, an interior node hash or a tree root.
///
/// Its text form ([`fmt::Display`]) is 64 lowercase hex characters; checkpoints carry it as
/// standard base64 ([`Self::to_base64`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Standard, padded base64 (RFC 4648 §4), as in a checkpoint's root line.
    pub fn to_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// `SHA-256(0x00 || entry)`: the hash of one log entry (RFC 6962 §2.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([0x00])
            .chain_update(entry)
            .finalize()
            .into(),
    )
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node (RFC 6962 §2.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([0x01])
            .chain_update(left.0)
            .chain_update(right.0)
            .finalize()
            .into(),
    )
}

/// `SHA-256()`: the root of the empty tree, `MTH({})`.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The root of the tree whose leaves have these hashes, in order. O(n) time, O(log n) memory.
pub fn root_of(leaf_hashes: &[Hash]) -> Hash {
    let mut range = CompactRange::new();
    for leaf in leaf_hashes {
        range.push(*leaf);
    }
    range.root()
}

/// The largest power of two strictly smaller than `n` (`n >= 2`): the RFC 6962 split point `k`.
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The roots of the perfect subtrees that make up a tree, left to right (largest first): all an
/// append-only log needs to keep to append in O(log n) and know its root without rehashing.
///
/// Its size's binary digits say which subtrees exist: size 13 = 8 + 4 + 1 keeps three hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The empty range (tree size 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash: at most log2(size) node hashes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        // Each trailing one bit of the old size is a subtree of the same size to merge with.
        while size & 1 == 1 {
            let left = self.peaks.pop().expect("one peak per set bit of the size");
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The root of the tree so far (`MTH`): the peaks folded right to left.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// A whole tree kept in memory, every complete interior node included, so that appending is
/// amortised O(1) hashes and any root or proof for any size up to the current one takes
/// O(log² n) lookups and O(log n) hashes, without reading leaves again.
///
/// Memory is about 64 bytes per leaf (each leaf hash plus, on average, one interior hash): a
/// million entries take 64 MiB. The daemon can rebuild it at start from the stored leaf hashes
/// (one node hash per leaf) or from the entries themselves.
#[derive(Clone, Debug, Default)]
pub struct MerkleTree {
    /// `levels[h][i]` is the root of the perfect subtree over leaves `[i * 2^h, (i + 1) * 2^h)`;
    /// `levels[0]` holds the leaf hashes.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of these leaf hashes, in order.
    pub fn from_leaf_hashes(leaf_hashes: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        for leaf in leaf_hashes {
            tree.push(leaf);
        }
        tree
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Appends one leaf hash; returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            if row.len() % 2 == 1 {
                break;
            }
            hash = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
        index
    }

    /// Hashes `entry` as a leaf and appends it; returns its index.
    pub fn push_entry(&mut self, entry: &[u8]) -> u64 {
        self.push(leaf_hash(entry))
    }

    /// The leaf hash at `index`, if the tree has that many leaves.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        match self.size() {
            0 => empty_root(),
            n => self.range_hash(0, n),
        }
    }

    /// The root the tree had when it had `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        Ok(match size {
            0 => empty_root(),
            n => self.range_hash(0, n),
        })
    }

    /// The inclusion proof (audit path, RFC 6962 §2.1.1 `PATH(index, D[size])`) of leaf `index`
    /// in the tree of the first `size` leaves, ordered from the leaf up.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::with_capacity(64);
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    /// The consistency proof (RFC 6962 §2.1.2 `PROOF(old_size, D[new_size])`) that the tree of
    /// `new_size` leaves extends the tree of `old_size` leaves. Empty when `old_size` is 0 or
    /// equals `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(ProofError::SizeDecreased {
                old: old_size,
                new: new_size,
            });
        }
        let mut proof = Vec::with_capacity(64);
        if old_size != 0 && old_size != new_size {
            self.subproof(old_size, 0, new_size, true, &mut proof);
        }
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeOutOfRange {
                size,
                available: self.size(),
            });
        }
        Ok(())
    }

    /// `MTH(D[start:end])` for a range the RFC 6962 recursion produces: `start` is a multiple of
    /// the largest power of two not above `end - start`, so every perfect piece is stored.
    fn range_hash(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        debug_assert!(n >= 1 && end <= self.size());
        if n.is_power_of_two() {
            let level = n.trailing_zeros() as usize;
            debug_assert_eq!(start % n, 0, "perfect subtree must be aligned");
            return self.levels[level][(start >> level) as usize];
        }
        let k = split_point(n);
        node_hash(
            &self.range_hash(start, start + k),
            &self.range_hash(start + k, end),
        )
    }

    /// `PATH(m, D[start:end])`, appended to `out` leaf-first.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n == 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range_hash(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range_hash(start, start + k));
        }
    }

    /// `SUBPROOF(m, D[start:end], b)`, appended to `out`.
    fn subproof(&self, m: u64, start: u64, end: u64, b: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !b {
                out.push(self.range_hash(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, b, out);
            out.push(self.range_hash(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range_hash(start, start + k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// RFC 6962 `MTH` written straight from the definition, recursively over a slice.
    fn naive_root(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&naive_root(&d[..k]), &naive_root(&d[k..]))
            }
        }
    }

    #[test]
    fn split_point_is_the_largest_power_of_two_below_n() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split_point(n), k, "n = {n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn compact_range_keeps_one_peak_per_set_bit_and_matches_the_naive_root() {
        let all = leaves(130);
        let mut range = CompactRange::new();
        assert_eq!(range.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            range.push(*leaf);
            let size = i as u64 + 1;
            assert_eq!(range.size(), size);
            assert_eq!(range.peaks.len() as u32, size.count_ones());
            assert_eq!(range.root(), naive_root(&all[..=i]), "size {size}");
        }
    }

    #[test]
    fn tree_roots_at_every_size_match_the_naive_root() {
        let all = leaves(70);
        let tree = MerkleTree::from_leaf_hashes(all.iter().copied());
        assert_eq!(tree.size(), 70);
        for size in 0..=70 {
            assert_eq!(
                tree.root_at(size).unwrap(),
                naive_root(&all[..size as usize])
            );
        }
        assert_eq!(tree.root(), root_of(&all));
        assert_eq!(tree.leaf_hash(69), Some(all[69]));
        assert_eq!(tree.leaf_hash(70), None);
        assert_eq!(
            tree.root_at(71),
            Err(ProofError::SizeOutOfRange {
                size: 71,
                available: 70
            })
        );
    }

    #[test]
    fn proofs_for_impossible_sizes_are_refused() {
        let tree = MerkleTree::from_leaf_hashes(leaves(5));
        assert_eq!(
            tree.inclusion_proof(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 6),
            Err(ProofError::SizeOutOfRange {
                size: 6,
                available: 5
            })
        );
        assert_eq!(
            tree.consistency_proof(4, 3),
            Err(ProofError::SizeDecreased { old: 4, new: 3 })
        );
        assert_eq!(tree.consistency_proof(0, 5), Ok(vec![]));
        assert_eq!(tree.consistency_proof(5, 5), Ok(vec![]));
    }
}
