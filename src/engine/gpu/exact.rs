//! Exact top-k from a GPU's approximate candidates. The device scores every
//! vector in float16 (cuBLAS: fp16 inputs, fp32 accumulation) and returns
//! its best `k'`; here those candidates are scored again in float32 and the
//! result is proved exact with a bound on the float16 error, or the caller
//! is told to ask for more candidates. Results then equal the CPU exact path
//! (float32 scores, ties by the smaller id).

/// One candidate from the device: its id and float16-computed score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u64,
    pub approx: f32,
}

/// A result row: id and exact float32 score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub id: u64,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The exact top k (fewer when fewer rows are visible).
    Exact(Vec<Scored>),
    /// A vector outside the candidates could still belong: ask for more.
    NeedMore,
}

/// The largest |exact - float16 score| for a query of norm `query_norm`
/// against vectors of norm at most `max_norm` in `dimension` dimensions:
/// each product moves by at most 2u + u^2 relative (u = 2^-11, one rounding
/// of each factor to float16), summed under Cauchy-Schwarz, plus float32
/// accumulation in any order (dimension * 2^-24 relative) and float16's
/// subnormal floor (2^-24 absolute per factor).
pub fn fp16_error_bound(dimension: usize, query_norm: f32, max_norm: f32) -> f32 {
    let u = 2f64.powi(-11);
    let relative = 2.0 * u + u * u + dimension as f64 * 2f64.powi(-23);
    let scale = query_norm as f64 * max_norm as f64;
    let subnormal = dimension as f64 * 2f64.powi(-24) * (query_norm as f64 + max_norm as f64);
    (relative * scale + subnormal) as f32
}

/// Re-score `candidates` (the device's best by approximate score; `all`
/// when they are every stored vector) with `exact` (None: deleted or not
/// visible to the caller), and keep the best `k` by (score desc, id asc).
/// Exact when every vector outside the candidates scores, at most, the
/// lowest candidate's approximate score + `bound`, below the k-th result.
pub fn exact_top_k(
    candidates: &[Candidate],
    all: bool,
    k: usize,
    bound: f32,
    mut exact: impl FnMut(u64) -> Option<f32>,
) -> Outcome {
    let mut scored: Vec<Scored> = candidates
        .iter()
        .filter_map(|c| exact(c.id).map(|score| Scored { id: c.id, score }))
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    scored.truncate(k);
    if all {
        return Outcome::Exact(scored);
    }
    let lowest = candidates.iter().map(|c| c.approx).fold(f32::INFINITY, f32::min);
    let outside_at_most = lowest + bound;
    match scored.get(k.saturating_sub(1)) {
        // Strictly below: an outside vector tying the k-th with a smaller id would come first.
        Some(kth) if scored.len() == k && outside_at_most < kth.score => Outcome::Exact(scored),
        _ => Outcome::NeedMore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// The device's arithmetic on the CPU: float16 inputs, float32 sums.
    fn approx(q: &[f32], x: &[f32]) -> f32 {
        q.iter()
            .zip(x)
            .map(|(a, b)| f16::from_f32(*a).to_f32() * f16::from_f32(*b).to_f32())
            .sum()
    }

    fn exact_dot(q: &[f32], x: &[f32]) -> f32 {
        q.iter().zip(x).map(|(a, b)| a * b).sum()
    }

    fn unit(mut v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// A corpus with near-duplicates, so float16 reorders close scores.
    fn corpus(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for i in 0..n {
            if i % 3 == 2 {
                let base = rows[i - 1].clone();
                rows.push(unit(base.iter().map(|x| x + next() * 1e-4).collect()));
            } else {
                rows.push(unit((0..d).map(|_| next()).collect()));
            }
        }
        rows
    }

    fn brute_force(rows: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u64> {
        let mut all: Vec<(u64, f32)> = rows
            .iter()
            .enumerate()
            .map(|(i, x)| (i as u64, exact_dot(q, x)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.into_iter().take(k).map(|(i, _)| i).collect()
    }

    /// What the GPU path does: best k' by approximate score, widened until exact.
    fn gpu_path(rows: &[Vec<f32>], q: &[f32], k: usize, mut wanted: usize) -> (Vec<u64>, usize) {
        let bound = fp16_error_bound(q.len(), 1.0, 1.0);
        let mut order: Vec<Candidate> = rows
            .iter()
            .enumerate()
            .map(|(i, x)| Candidate {
                id: i as u64,
                approx: approx(q, x),
            })
            .collect();
        order.sort_by(|a, b| b.approx.total_cmp(&a.approx).then(a.id.cmp(&b.id)));
        let mut tries = 0;
        loop {
            tries += 1;
            let all = wanted >= rows.len();
            let take = &order[..wanted.min(rows.len())];
            if let Outcome::Exact(found) = exact_top_k(take, all, k, bound, |id| Some(exact_dot(q, &rows[id as usize])))
            {
                return (found.iter().map(|s| s.id).collect(), tries);
            }
            wanted *= 4;
        }
    }

    #[test]
    fn the_bound_covers_float16_scoring() {
        let rows = corpus(3000, 96, 7);
        let bound = fp16_error_bound(96, 1.0, 1.0);
        let q = rows[5].clone();
        let worst = rows
            .iter()
            .map(|x| (approx(&q, x) - exact_dot(&q, x)).abs())
            .fold(0.0, f32::max);
        assert!(worst <= bound, "worst {worst} > bound {bound}");
        assert!(bound < 2e-3);
    }

    #[test]
    fn equals_brute_force_float32_with_ties_by_id() {
        let rows = corpus(3000, 96, 11);
        for qi in [0usize, 7, 400, 1234, 2999] {
            let q = unit(rows[qi].iter().map(|x| x + 0.01).collect());
            let (got, _) = gpu_path(&rows, &q, 10, 40);
            assert_eq!(got, brute_force(&rows, &q, 10), "query {qi}");
        }
        // Exact duplicates (row 9 has no near-duplicate): equal scores, the smaller id first.
        let mut dup = corpus(200, 32, 3);
        dup.push(dup[9].clone());
        dup.push(dup[9].clone());
        let q = dup[9].clone();
        let (got, _) = gpu_path(&dup, &q, 3, 3);
        assert_eq!(got, vec![9, 200, 201]);
        assert_eq!(got, brute_force(&dup, &q, 3));
    }

    #[test]
    fn too_few_candidates_ask_for_more() {
        let rows = corpus(500, 32, 5);
        let q = rows[2].clone(); // rows 1 and 2 are near-duplicates: a tight top 2
        let mut order: Vec<Candidate> = rows
            .iter()
            .enumerate()
            .map(|(i, x)| Candidate {
                id: i as u64,
                approx: approx(&q, x),
            })
            .collect();
        order.sort_by(|a, b| b.approx.total_cmp(&a.approx));
        let bound = fp16_error_bound(32, 1.0, 1.0);
        let exact = |id: u64| Some(exact_dot(&q, &rows[id as usize]));
        // The top 2 with only 2 candidates cannot be proved: the 3rd could be within the bound.
        assert_eq!(exact_top_k(&order[..2], false, 2, bound, exact), Outcome::NeedMore);
        // Fewer visible rows than k among the candidates: more are needed too.
        assert_eq!(
            exact_top_k(&order[..5], false, 5, bound, |id| (id % 2 == 0)
                .then(|| exact(id).unwrap())),
            Outcome::NeedMore
        );
        // Every vector a candidate: exact whatever the bound.
        assert!(matches!(exact_top_k(&order, true, 2, bound, exact), Outcome::Exact(v) if v.len() == 2));
        // Deleted or invisible rows are skipped; all of them visible-checked.
        let Outcome::Exact(v) = exact_top_k(&order, true, 600, bound, |id| (id < 10).then_some(0.5)) else {
            panic!()
        };
        assert_eq!(v.len(), 10);
    }
}
