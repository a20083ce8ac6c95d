//! A seeded bijection over `[0, n)`: a balanced Feistel network on the smallest even number of
//! bits that covers `n`, with cycle walking to stay inside the range.
//!
//! Like zmap's cyclic group, it lets a sweep visit every index exactly once in a random-looking
//! order without storing the order: memory is constant whatever `n` is.

/// A bijection of `[0, len)` onto itself, chosen by a seed.
#[derive(Debug, Clone)]
pub struct Permutation {
    len: u64,
    half_bits: u32,
    half_mask: u64,
    keys: [u64; ROUNDS],
}

const ROUNDS: usize = 6;

/// splitmix64's finaliser: a fast, well-mixing bijection of u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Permutation {
    /// The permutation of `[0, len)` selected by `seed`.
    pub fn new(len: u64, seed: u64) -> Self {
        let bits = 64 - len.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let half_mask = if half_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << half_bits) - 1
        };
        let mut keys = [0; ROUNDS];
        let mut state = seed ^ 0x5048_4157_4b21_7365; // "PHAWK!se"
        for k in &mut keys {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *k = mix(state);
        }
        Permutation {
            len,
            half_bits,
            half_mask,
            keys,
        }
    }

    /// The size of the permuted range.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn feistel(&self, x: u64) -> u64 {
        let mut left = x >> self.half_bits;
        let mut right = x & self.half_mask;
        for key in &self.keys {
            let f = mix(right ^ key) & self.half_mask;
            (left, right) = (right, left ^ f);
        }
        (left << self.half_bits) | right
    }

    /// The image of `index`. `index` must be below [`Permutation::len`]; other values are
    /// returned unchanged so that the call never loops.
    pub fn apply(&self, index: u64) -> u64 {
        if index >= self.len {
            return index;
        }
        // Cycle walking: the Feistel network permutes [0, 4^half_bits), which is at most four
        // times larger than len, so on average fewer than four steps land back inside.
        let mut x = self.feistel(index);
        while x >= self.len {
            x = self.feistel(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_bijection_for_many_sizes_and_seeds() {
        for len in [
            0u64, 1, 2, 3, 4, 5, 7, 16, 17, 100, 255, 256, 257, 1000, 4099, 65_536,
        ] {
            for seed in [0u64, 1, 42, u64::MAX] {
                let p = Permutation::new(len, seed);
                let mut seen = vec![false; len as usize];
                for i in 0..len {
                    let j = p.apply(i);
                    assert!(j < len, "len {len} seed {seed}: {i} -> {j}");
                    assert!(!seen[j as usize], "len {len} seed {seed}: {j} twice");
                    seen[j as usize] = true;
                }
            }
        }
    }

    #[test]
    fn seeds_change_the_order_and_the_order_is_not_identity() {
        let a: Vec<u64> = (0..64).map(|i| Permutation::new(64, 1).apply(i)).collect();
        let b: Vec<u64> = (0..64).map(|i| Permutation::new(64, 2).apply(i)).collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..64).collect::<Vec<_>>());
        // The same seed gives the same order.
        let a2: Vec<u64> = (0..64).map(|i| Permutation::new(64, 1).apply(i)).collect();
        assert_eq!(a, a2);
    }

    #[test]
    fn works_near_the_top_of_u64() {
        let p = Permutation::new(u64::MAX, 7);
        for i in [0, 1, u64::MAX / 2, u64::MAX - 1] {
            assert!(p.apply(i) < u64::MAX);
        }
    }
}
