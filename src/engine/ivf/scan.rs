//! The list scan: an ordered, resumable search over inverted lists.
//!
//! Round one scores the codes of the `probes` lists nearest the query and
//! re-scores the best `rerank` entries exactly; the executor takes hits in
//! that exact order. When it asks for more (a filter rejected rows, or rows
//! were invisible), the next `rerank` entries are re-scored, and when the
//! probed lists run out the next `probes` lists are scanned, until every
//! list has been. Within a round hits come in exact order (ties by the
//! smaller key); across rounds only approximately, as in any IVF index.
//!
//! Pages and heap rows are PostgreSQL's business: they come in through
//! `ListReader` and `Rescorer`.

use super::codes::QueryCode;
use crate::engine::simd::dot;
use crate::engine::topk::Hit;
use std::collections::VecDeque;

/// Source of list entries: `key` names the row (a packed heap TID), `code` is
/// its `codes::encode` bytes.
pub trait ListReader {
    fn scan_list(&mut self, list: u32, visit: &mut dyn FnMut(i64, &[u8]));
}

/// Exact score (cosine similarity with `query`) of a row, or None when the
/// row is gone or not visible.
pub trait Rescorer {
    fn exact(&mut self, key: i64, query: &[f32]) -> Option<f32>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPlan {
    /// Lists scanned per round.
    pub probes: usize,
    /// Entries re-scored exactly per round.
    pub rerank: usize,
}

/// Cosine similarity of a stored vector with a unit `query` (float32
/// products, f64 norm); a vector of another length or all zeros scores lowest.
pub fn cosine_with_unit(v: &[f32], query: &[f32]) -> f32 {
    if v.len() != query.len() {
        return f32::NEG_INFINITY;
    }
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return f32::NEG_INFINITY;
    }
    (dot(v, query) as f64 / norm) as f32
}

/// Lists by descending centroid score (ties by the smaller list number).
pub fn probe_order(query: &[f32], centroids: &[f32], dim: usize) -> Vec<u32> {
    let scores: Vec<f32> = centroids.chunks_exact(dim).map(|c| dot(c, query)).collect();
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    order.sort_by(|a, b| scores[*b as usize].total_cmp(&scores[*a as usize]).then(a.cmp(b)));
    order
}

pub struct IvfScan {
    query: Vec<f32>,
    code: QueryCode,
    plan: ScanPlan,
    order: Vec<u32>,
    next_list: usize,
    /// Scored by code, not yet re-scored.
    pending: Vec<Hit>,
    /// Re-scored, in exact order, not yet returned.
    ready: VecDeque<Hit>,
    pub stats: ScanStats,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    pub lists_scanned: usize,
    pub codes_scored: usize,
    pub rescored: usize,
    pub rounds: usize,
}

impl IvfScan {
    /// `query` must be a unit vector of the index's dimension.
    pub fn new(query: &[f32], centroids: &[f32], dim: usize, plan: ScanPlan) -> Self {
        IvfScan {
            query: query.to_vec(),
            code: QueryCode::new(query),
            plan: ScanPlan {
                probes: plan.probes.max(1),
                rerank: plan.rerank.max(1),
            },
            order: probe_order(query, centroids, dim),
            next_list: 0,
            pending: Vec::new(),
            ready: VecDeque::new(),
            stats: ScanStats::default(),
        }
    }

    /// The next hit (score = exact cosine similarity), or None when every list is done.
    pub fn next(&mut self, lists: &mut impl ListReader, rescorer: &mut impl Rescorer) -> Option<Hit> {
        loop {
            if let Some(hit) = self.ready.pop_front() {
                return Some(hit);
            }
            if self.pending.is_empty() && !self.scan_more_lists(lists) {
                return None;
            }
            self.rescore_round(rescorer);
        }
    }

    fn scan_more_lists(&mut self, lists: &mut impl ListReader) -> bool {
        while self.pending.is_empty() && self.next_list < self.order.len() {
            let end = (self.next_list + self.plan.probes).min(self.order.len());
            let mut scored = 0;
            for &list in &self.order[self.next_list..end] {
                let (code, pending) = (&self.code, &mut self.pending);
                lists.scan_list(list, &mut |key, stored| {
                    scored += 1;
                    pending.push(Hit {
                        score: code.score(stored),
                        id: key,
                    })
                });
                self.stats.lists_scanned += 1;
            }
            self.next_list = end;
            self.stats.codes_scored += scored;
        }
        !self.pending.is_empty()
    }

    fn rescore_round(&mut self, rescorer: &mut impl Rescorer) {
        self.stats.rounds += 1;
        let take = self.plan.rerank.min(self.pending.len());
        if take < self.pending.len() {
            // Hit orders best first, so the best `take` end up in front.
            self.pending.select_nth_unstable(take - 1);
        }
        let rest = self.pending.split_off(take);
        let best = std::mem::replace(&mut self.pending, rest);
        let mut exact: Vec<Hit> = best
            .into_iter()
            .filter_map(|h| rescorer.exact(h.id, &self.query).map(|score| Hit { score, id: h.id }))
            .collect();
        self.stats.rescored += take;
        exact.sort();
        self.ready.extend(exact);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ivf::synthetic::{clustered_vectors, unit_vectors, MemoryIndex};

    fn build(n: usize, dim: usize, lists: usize) -> MemoryIndex {
        MemoryIndex::build(&unit_vectors(n, dim, 21), dim, lists, 2)
    }

    #[test]
    fn cosine_with_unit_scales_by_the_stored_norm() {
        assert!((cosine_with_unit(&[3.0, 4.0], &[0.6, 0.8]) - 1.0).abs() < 1e-6);
        assert!((cosine_with_unit(&[2.0, 0.0], &[0.0, 1.0])).abs() < 1e-6);
        assert_eq!(cosine_with_unit(&[0.0, 0.0], &[1.0, 0.0]), f32::NEG_INFINITY);
        assert_eq!(cosine_with_unit(&[1.0], &[1.0, 0.0]), f32::NEG_INFINITY);
    }

    #[test]
    fn probe_order_ranks_centroids() {
        let centroids = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8, 1.0, 0.0];
        assert_eq!(probe_order(&[1.0, 0.0], &centroids, 2), vec![0, 3, 2, 1]);
    }

    #[test]
    fn all_lists_and_full_rerank_is_exact() {
        let (dim, n) = (32, 3000);
        let index = build(n, dim, 30);
        for q in unit_vectors(20, dim, 99).chunks(dim) {
            let plan = ScanPlan { probes: 30, rerank: n };
            let got: Vec<Hit> = index.search(q, plan, 10);
            assert_eq!(got, index.brute_force(q, 10));
        }
    }

    #[test]
    fn default_like_plan_has_high_recall_and_exact_order() {
        // Clustered rows, as embeddings are; queries near the same centres.
        let dim = 48;
        let (rows, _) = clustered_vectors(400, 50, dim, 0.1, 7);
        let index = MemoryIndex::build(&rows, dim, 140, 2);
        let mut found = 0;
        let (queries, _) = clustered_vectors(400, 1, dim, 0.12, 7);
        let queries = &queries[..30 * dim];
        for q in queries.chunks(dim) {
            let got = index.search(
                q,
                ScanPlan {
                    probes: 40,
                    rerank: 200,
                },
                10,
            );
            assert!(got.windows(2).all(|w| w[0] < w[1]), "exact order within a round");
            let truth = index.brute_force(q, 10);
            found += got.iter().filter(|h| truth.contains(h)).count();
        }
        let recall = found as f64 / 300.0;
        assert!(recall >= 0.9, "recall@10 {recall}");
    }

    #[test]
    fn iterates_through_every_row_once_and_skips_invisible_ones() {
        let (dim, n) = (16, 2000);
        let mut index = build(n, dim, 20);
        index.invisible = (0..n as i64).filter(|k| k % 3 == 0).collect();
        let q = &unit_vectors(1, dim, 5)[..];
        let mut scan = index.scan(q, ScanPlan { probes: 2, rerank: 50 });
        let mut seen = std::collections::HashSet::new();
        while let Some(hit) = index.next(&mut scan) {
            assert!(hit.id % 3 != 0, "invisible row returned");
            assert!(seen.insert(hit.id), "row returned twice");
        }
        assert_eq!(seen.len(), n - n.div_ceil(3));
        assert_eq!(scan.stats.lists_scanned, 20);
        assert!(scan.stats.rounds > 10);
    }

    #[test]
    fn empty_index_returns_nothing() {
        let index = MemoryIndex::build(&[], 8, 4, 1);
        assert!(index
            .search(&[1.0; 8], ScanPlan { probes: 1, rerank: 10 }, 5)
            .is_empty());
    }
}
