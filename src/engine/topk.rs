//! Ranked hits and a bounded best-k heap. Ordering is the project's one
//! ranking rule: higher score first, ties by the smaller id.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub use crate::engine::simd::dot;

/// A scored row; "less" means better, so a sorted Vec is best first and a
/// max-heap pops the *worst* first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub score: f32,
    pub id: i64,
}

impl Eq for Hit {}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        // "Greater" = worse: lower score, then larger id.
        other.score.total_cmp(&self.score).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Keeps the best `k` hits seen.
pub struct BoundedHeap {
    k: usize,
    heap: BinaryHeap<Hit>,
}

impl BoundedHeap {
    pub fn new(k: usize) -> Self {
        BoundedHeap {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if let Some(worst) = self.heap.peek() {
            if hit < *worst {
                self.heap.pop();
                self.heap.push(hit);
            }
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_k_ties_by_smaller_id() {
        let mut heap = BoundedHeap::new(3);
        for (score, id) in [(0.5, 7), (0.9, 3), (0.5, 2), (0.1, 1), (0.9, 8)] {
            heap.push(Hit { score, id });
        }
        let ids: Vec<i64> = heap.into_sorted().iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![3, 8, 2]);
        assert!(BoundedHeap::new(0).into_sorted().is_empty());
    }
}
