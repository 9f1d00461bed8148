//! The lists' centroids: float32, and an int8 copy that orders the probes.
//!
//! Every search scores the query against every centroid to pick the lists
//! it probes. In float32 that reads 1.5 kB per list (6 MB at 4,000 lists,
//! more than a core's L2 cache, so it comes from L3 or memory each time);
//! the int8 copy is a quarter of that and its products are cheaper. Its
//! scores only choose and order lists, and a few thousandths of error can
//! only swap lists of almost equal score; the score that enters an entry's
//! bound is the float32 one, taken for each list the scan actually probes.

use crate::engine::simd::{dot, dot_i8};

/// Lists the int8 scores shortlist for `nearest`: the true nearest is
/// outside it only if seven others come within the int8 error (~0.001) of it.
const NEAREST_SHORTLIST: usize = 8;

/// Bytes per int8 row: a multiple of the kernel's 32-byte step.
fn padded(dim: usize) -> usize {
    dim.div_ceil(32) * 32
}

pub struct Centroids {
    dim: usize,
    exact: Vec<f32>,
    /// Row i is centroid i / scales[i], rounded; zero padded to `padded(dim)`.
    coarse: Vec<i8>,
    scales: Vec<f32>,
}

/// `v` rounded to int8 with a scale (max |v| = 127), zero padded to `len`.
fn quantise(v: &[f32], len: usize) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 && max.is_finite() { max / 127.0 } else { 0.0 };
    let mut out = vec![0i8; len];
    if scale > 0.0 {
        for (o, x) in out.iter_mut().zip(v) {
            *o = (x / scale).round().clamp(-127.0, 127.0) as i8;
        }
    }
    (out, scale)
}

impl Centroids {
    /// `exact` holds the centroids back to back, `dim` values each.
    pub fn new(exact: Vec<f32>, dim: usize) -> Self {
        assert!(
            exact.is_empty() || (dim > 0 && exact.len().is_multiple_of(dim)),
            "centroids of {dim} values"
        );
        let stride = padded(dim);
        let lists = exact.len().checked_div(dim).unwrap_or(0);
        let (mut coarse, mut scales) = (Vec::with_capacity(lists * stride), Vec::with_capacity(lists));
        for c in exact.chunks_exact(dim.max(1)) {
            let (row, scale) = quantise(c, stride);
            coarse.extend_from_slice(&row);
            scales.push(scale);
        }
        Centroids {
            dim,
            exact,
            coarse,
            scales,
        }
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// All centroids back to back, float32.
    pub fn as_slice(&self) -> &[f32] {
        &self.exact
    }

    pub fn get(&self, list: usize) -> &[f32] {
        &self.exact[list * self.dim..(list + 1) * self.dim]
    }

    /// Float32 score of one list's centroid.
    pub fn score(&self, list: usize, query: &[f32]) -> f32 {
        dot(self.get(list), query)
    }

    /// Every list with its approximate (int8) centroid score.
    pub fn coarse_scores(&self, query: &[f32]) -> Vec<(u32, f32)> {
        assert_eq!(query.len(), self.dim, "query dimension");
        let stride = padded(self.dim);
        let (q, q_scale) = quantise(query, stride);
        self.coarse
            .chunks_exact(stride)
            .zip(&self.scales)
            .enumerate()
            .map(|(i, (row, scale))| (i as u32, dot_i8(&q, row) as f32 * q_scale * scale))
            .collect()
    }

    /// The list whose centroid is nearest `row` (highest float32 score, ties
    /// by the smaller list): the int8 scores pick a shortlist, float32
    /// decides within it. An insert costs a quarter of a float32 pass.
    pub fn nearest(&self, row: &[f32]) -> usize {
        let mut coarse = self.coarse_scores(row);
        let shortlist = NEAREST_SHORTLIST.min(coarse.len());
        if shortlist == 0 {
            return 0;
        }
        if shortlist < coarse.len() {
            coarse.select_nth_unstable_by(shortlist - 1, |a, b| b.1.total_cmp(&a.1));
        }
        let mut best = (usize::MAX, f32::NEG_INFINITY);
        for &(list, _) in &coarse[..shortlist] {
            let (list, score) = (list as usize, self.score(list as usize, row));
            if score > best.1 || (score == best.1 && list < best.0) {
                best = (list, score);
            }
        }
        if best.0 == usize::MAX {
            0 // every score NaN
        } else {
            best.0
        }
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.exact.len() * 4 + self.coarse.len() + self.scales.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ivf::synthetic::unit_vectors;

    #[test]
    fn coarse_scores_are_within_a_few_thousandths_of_float32() {
        let dim = 384;
        let centroids = Centroids::new(unit_vectors(500, dim, 3), dim);
        for q in unit_vectors(20, dim, 4).chunks(dim) {
            for (list, coarse) in centroids.coarse_scores(q) {
                let exact = centroids.score(list as usize, q);
                assert!((coarse - exact).abs() < 4e-3, "list {list}: {coarse} vs {exact}");
            }
        }
    }

    #[test]
    fn coarse_order_keeps_well_separated_lists_in_order() {
        let centroids = Centroids::new(vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0], 2);
        let mut order = centroids.coarse_scores(&[1.0, 0.0]);
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        let lists: Vec<u32> = order.iter().map(|l| l.0).collect();
        assert_eq!(lists, vec![0, 2, 1, 3]);
        assert!((order[0].1 - 1.0).abs() < 1e-2);
    }

    #[test]
    fn nearest_agrees_with_a_float32_pass() {
        let dim = 96;
        let centroids = Centroids::new(unit_vectors(300, dim, 8), dim);
        for row in unit_vectors(200, dim, 9).chunks(dim) {
            let exact = crate::engine::ivf::kmeans::nearest_one(row, centroids.as_slice());
            assert_eq!(centroids.nearest(row), exact);
        }
        assert_eq!(centroids.nearest(centroids.get(17)), 17);
        assert_eq!(Centroids::new(vec![0.5, 0.5], 2).nearest(&[1.0, 0.0]), 0);
    }

    #[test]
    fn zero_and_odd_lengths() {
        let centroids = Centroids::new(vec![0.0; 7 * 3], 7);
        assert_eq!(centroids.len(), 3);
        assert!(centroids.coarse_scores(&[0.5; 7]).iter().all(|(_, s)| *s == 0.0));
        assert_eq!(centroids.get(2).len(), 7);
        assert!(Centroids::new(Vec::new(), 0).is_empty());
    }
}
