//! A random orthogonal rotation, made from a seed, for the codes: after it
//! a vector's coordinates are alike in size (no outlier dimension), so 16
//! levels between a vector's own minimum and maximum fit every coordinate
//! (the idea of RaBitQ, Gao & Long 2024).
//!
//! The rotation is four rounds of random sign flips followed by a normalised
//! Walsh-Hadamard transform on a power-of-two block, alternating between the
//! leading and the trailing block when the dimension is not a power of two
//! (the blocks overlap, since the block is more than half the dimension).
//! It costs O(d log d) per vector, needs no stored matrix, and is exactly
//! reproducible on any machine (only sign flips, adds and one scale).

use super::kmeans::SplitMix;

const ROUNDS: usize = 4;

#[derive(Debug, Clone)]
pub struct Rotation {
    dim: usize,
    block: usize,
    /// `ROUNDS * dim` signs (+1.0 or -1.0).
    signs: Vec<f32>,
}

impl Rotation {
    pub fn new(dim: usize, seed: u64) -> Self {
        let block = if dim == 0 {
            0
        } else {
            1usize << (usize::BITS - 1 - dim.leading_zeros())
        };
        let mut rng = SplitMix(seed ^ 0x005E_ED0F_B175);
        let signs = (0..ROUNDS * dim)
            .map(|_| if rng.next() >> 63 == 0 { 1.0 } else { -1.0 })
            .collect();
        Rotation { dim, block, signs }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rotate `v` in place (`dim` values).
    pub fn apply(&self, v: &mut [f32]) {
        assert_eq!(v.len(), self.dim, "rotation dimension");
        if self.dim == 0 {
            return;
        }
        let scale = 1.0 / (self.block as f32).sqrt();
        for round in 0..ROUNDS {
            for (x, s) in v.iter_mut().zip(&self.signs[round * self.dim..(round + 1) * self.dim]) {
                *x *= s;
            }
            let start = if round % 2 == 0 { 0 } else { self.dim - self.block };
            let part = &mut v[start..start + self.block];
            walsh_hadamard(part);
            part.iter_mut().for_each(|x| *x *= scale);
        }
    }

    pub fn rotated(&self, v: &[f32]) -> Vec<f32> {
        let mut out = v.to_vec();
        self.apply(&mut out);
        out
    }
}

/// Unnormalised fast Walsh-Hadamard transform (length a power of two).
fn walsh_hadamard(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for start in (0..n).step_by(2 * h) {
            let (lo, hi) = v[start..start + 2 * h].split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = x + y;
                *b = x - y;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ivf::synthetic::unit_vectors;
    use crate::engine::simd::dot;

    #[test]
    fn preserves_dot_products_and_norms() {
        for dim in [1, 2, 3, 64, 100, 384, 768] {
            let r = Rotation::new(dim, 7);
            let v = unit_vectors(2, dim, 3);
            let (a, b) = (r.rotated(&v[..dim]), r.rotated(&v[dim..]));
            assert!((dot(&a, &a) - 1.0).abs() < 1e-5, "norm, dim {dim}");
            assert!((dot(&a, &b) - dot(&v[..dim], &v[dim..])).abs() < 1e-5, "dot, dim {dim}");
        }
    }

    #[test]
    fn mixes_every_coordinate_and_is_reproducible() {
        let r = Rotation::new(384, 11);
        let mut basis = vec![0.0; 384];
        basis[5] = 1.0;
        let out = r.rotated(&basis);
        // A basis vector spreads over all coordinates: none keeps most of the mass.
        assert!(
            out.iter().all(|x| x.abs() < 0.3),
            "max {}",
            out.iter().fold(0f32, |m, x| m.max(x.abs()))
        );
        assert!(out.iter().filter(|x| **x != 0.0).count() > 300);
        assert_eq!(out, Rotation::new(384, 11).rotated(&basis));
        assert_ne!(out, Rotation::new(384, 12).rotated(&basis));
    }
}
