//! The list scan: an ordered, resumable search over inverted lists.
//!
//! Round one estimates, from the 4-bit codes, the cosine of every entry in the
//! `probes` lists nearest the query, each with an upper bound. Entries are
//! re-scored exactly in order of their bound, and a re-scored hit is handed
//! out once no entry left could still beat it: within a round hits come in
//! exact order (ties by the smaller key), as long as the bounds hold (they do
//! for all but about one entry in 400, `codes::EPSILON`). `rerank`
//! caps the exact re-scores before the best hit so far is handed out anyway.
//! When the executor asks for more (a filter rejected rows, or rows were
//! invisible) and the round is used up, the next `probes` lists are scanned,
//! until every list has been; across rounds the order is approximate, as in
//! any IVF index.
//!
//! Pages and heap rows are PostgreSQL's business: they come in through
//! `ListReader` and `Rescorer`.

use super::centroids::Centroids;
use super::codes::QueryCode;
use super::rotation::Rotation;
use crate::engine::simd::dot;
use crate::engine::topk::Hit;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Source of list entries: `key` names the row (a packed heap TID), `code` is
/// its `codes::encode` bytes.
pub trait ListReader {
    fn scan_list(&mut self, list: u32, visit: &mut dyn FnMut(i64, &[u8]));
    /// The float32 centroid of a list.
    fn centroid(&self, list: u32) -> &[f32];
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
    /// Most exact re-scores before the best hit so far is handed out.
    pub rerank: usize,
}

pub use super::cosine::cosine_with_unit;

/// Probe order: descending centroid score, ties by the smaller list number.
fn by_score(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// An entry not yet re-scored, with the upper bound of its score. "Less" is
/// better (higher bound, then smaller key), as for `Hit`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    upper: f32,
    key: i64,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other.upper.total_cmp(&self.upper).then(self.key.cmp(&other.key))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Candidates moved into the sorted window at a time.
const WINDOW: usize = 256;

pub struct IvfScan {
    query: Vec<f32>,
    code: QueryCode,
    plan: ScanPlan,
    /// Lists with their coarse centroid scores; `order[..sorted]` is the best
    /// `sorted` in probe order (a round sorts only what it scans: with
    /// thousands of lists a full sort per query is measurable).
    order: Vec<(u32, f32)>,
    sorted: usize,
    next_list: usize,
    /// Best candidates, worst first (pop gives the best).
    window: Vec<Candidate>,
    /// The other candidates of the round, unordered; `spill_upper` bounds them.
    spill: Vec<Candidate>,
    spill_upper: f32,
    /// Candidates the last refill of the window took.
    refill: usize,
    /// Re-scored, not yet returned; pops the best.
    ready: BinaryHeap<Reverse<Hit>>,
    /// Re-scores left before the best ready hit is handed out regardless.
    budget: usize,
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
    /// `query` must be a unit vector of the index's dimension; `rotation` the
    /// one the codes were made with.
    pub fn new(query: &[f32], centroids: &Centroids, rotation: &Rotation, plan: ScanPlan) -> Self {
        let plan = ScanPlan {
            probes: plan.probes.max(1),
            rerank: plan.rerank.max(1),
        };
        IvfScan {
            query: query.to_vec(),
            code: QueryCode::new(&rotation.rotated(query)),
            plan,
            order: centroids.coarse_scores(query),
            sorted: 0,
            next_list: 0,
            window: Vec::new(),
            spill: Vec::new(),
            spill_upper: f32::NEG_INFINITY,
            refill: WINDOW,
            ready: BinaryHeap::new(),
            budget: plan.rerank,
            stats: ScanStats::default(),
        }
    }

    /// The next hit (score = exact cosine similarity), or None when every list is done.
    pub fn next(&mut self, lists: &mut impl ListReader, rescorer: &mut impl Rescorer) -> Option<Hit> {
        loop {
            let unscored = !self.window.is_empty() || !self.spill.is_empty();
            if let Some(Reverse(best)) = self.ready.peek() {
                let unscored_upper = self
                    .window
                    .last()
                    .map_or(f32::NEG_INFINITY, |c| c.upper)
                    .max(self.spill_upper);
                if !unscored || best.score > unscored_upper || self.budget == 0 {
                    if self.budget == 0 {
                        self.budget = self.plan.rerank;
                    }
                    return self.ready.pop().map(|Reverse(h)| h);
                }
            }
            if unscored {
                if self.window.is_empty() {
                    self.refill_window();
                }
                let candidate = self.window.pop().expect("refilled");
                self.budget = self.budget.saturating_sub(1);
                self.stats.rescored += 1;
                if let Some(score) = rescorer.exact(candidate.key, &self.query) {
                    self.ready.push(Reverse(Hit {
                        score,
                        id: candidate.key,
                    }));
                }
            } else if !self.scan_more_lists(lists) {
                return None;
            }
        }
    }

    /// Scan the next round's lists; false when every list is done.
    fn scan_more_lists(&mut self, lists: &mut impl ListReader) -> bool {
        while self.window.is_empty() && self.next_list < self.order.len() {
            let end = (self.next_list + self.plan.probes).min(self.order.len());
            if end > self.sorted {
                let rest = &mut self.order[self.sorted..];
                if end - self.sorted < rest.len() {
                    rest.select_nth_unstable_by(end - self.sorted - 1, by_score);
                }
                rest[..end - self.sorted].sort_by(by_score);
                self.sorted = end;
            }
            let mut best: BinaryHeap<Candidate> = BinaryHeap::with_capacity(WINDOW + 1);
            let (mut scored, mut spill_upper) = (0, f32::NEG_INFINITY);
            for &(list, _) in &self.order[self.next_list..end] {
                // The bound needs the exact centroid score, not the coarse one.
                let centroid_score = dot(lists.centroid(list), &self.query);
                let (code, spill) = (&self.code, &mut self.spill);
                lists.scan_list(list, &mut |key, stored| {
                    scored += 1;
                    let (estimate, bound) = code.estimate(stored);
                    let candidate = Candidate {
                        upper: centroid_score + estimate + bound,
                        key,
                    };
                    if best.len() < WINDOW {
                        best.push(candidate);
                    } else if candidate < *best.peek().expect("full") {
                        let out = best.pop().expect("full");
                        spill_upper = spill_upper.max(out.upper);
                        spill.push(out);
                        best.push(candidate);
                    } else {
                        spill_upper = spill_upper.max(candidate.upper);
                        spill.push(candidate);
                    }
                });
                self.stats.lists_scanned += 1;
            }
            self.next_list = end;
            self.stats.codes_scored += scored;
            self.spill_upper = spill_upper;
            self.window = best.into_sorted_vec();
            self.window.reverse();
            self.stats.rounds += 1;
            self.budget = self.plan.rerank;
            self.refill = WINDOW;
        }
        !self.window.is_empty()
    }

    /// Move the best spilled candidates into the window: twice as many as
    /// last time, so a deep round costs a few passes over the spill, not one
    /// per `WINDOW` re-scores.
    fn refill_window(&mut self) {
        self.refill = (self.refill * 2).max(WINDOW);
        let take = self.refill.min(self.spill.len());
        if take < self.spill.len() {
            self.spill.select_nth_unstable(take - 1);
        }
        let rest = self.spill.split_off(take);
        let mut window = std::mem::replace(&mut self.spill, rest);
        window.sort_unstable_by(|a, b| b.cmp(a));
        self.spill_upper = self.spill.iter().map(|c| c.upper).fold(f32::NEG_INFINITY, f32::max);
        self.window = window;
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
        assert_eq!(cosine_with_unit(&[f32::NAN, 1.0], &[1.0, 0.0]), f32::NEG_INFINITY);
        assert_eq!(cosine_with_unit(&[f32::INFINITY, 1.0], &[1.0, 0.0]), f32::NEG_INFINITY);
    }

    #[test]
    fn probe_order_ranks_centroids_ties_by_list() {
        let centroids = Centroids::new(vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, 1.0, 0.0], 2);
        let mut order = centroids.coarse_scores(&[1.0, 0.0]);
        order.sort_by(by_score);
        let order: Vec<u32> = order.iter().map(|l| l.0).collect();
        assert_eq!(order, vec![0, 3, 2, 1]);
    }

    #[test]
    fn all_lists_find_the_true_neighbours_in_exact_order() {
        // Random rows are the hardest case for the bounds (every score is
        // close to every other); a bound that fails can cost a neighbour,
        // never the order of what is returned.
        let (dim, n) = (64, 3000);
        let index = build(n, dim, 30);
        let mut found = 0;
        for q in unit_vectors(30, dim, 99).chunks(dim) {
            let plan = ScanPlan { probes: 30, rerank: n };
            let got: Vec<Hit> = index.search(q, plan, 10);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "exact order");
            let truth = index.brute_force(q, 10);
            found += got.iter().filter(|h| truth.contains(h)).count();
        }
        assert!(found >= 295, "found {found} of 300 true neighbours");
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
        assert_eq!(scan.stats.rounds, 10);
    }

    #[test]
    fn empty_index_returns_nothing() {
        let index = MemoryIndex::build(&[], 8, 4, 1);
        assert!(index
            .search(&[1.0; 8], ScanPlan { probes: 1, rerank: 10 }, 5)
            .is_empty());
    }
}
