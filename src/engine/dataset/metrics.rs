//! Retrieval metrics (trec_eval definitions), FollowIR's p-MRR, and the
//! diversity measures APS and INGF. Pure functions over plain data; the SQL
//! layer reads runs and qrels and calls these. Definitions: docs/metrics.md.

use std::collections::{HashMap, HashSet};

/// One query's ranked documents, best first.
pub type Ranking = Vec<String>;
/// One query's judgments: document -> graded relevance (> 0 is relevant).
pub type Judgments = HashMap<String, i32>;

/// nDCG@k with graded gains `rel / log2(rank + 1)`; the ideal ranking uses
/// every judged relevant document of the query (trec_eval's ndcg_cut).
pub fn ndcg_at(ranking: &[String], judged: &Judgments, k: usize) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| judged.get(d).copied().unwrap_or(0).max(0) as f64 / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|r| *r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, r)| *r as f64 / ((i + 2) as f64).log2())
        .sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// Reciprocal rank of the first relevant document within the top k.
pub fn mrr_at(ranking: &[String], judged: &Judgments, k: usize) -> f64 {
    ranking
        .iter()
        .take(k)
        .position(|d| judged.get(d).copied().unwrap_or(0) > 0)
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// Share of the query's relevant documents found in the top k.
pub fn recall_at(ranking: &[String], judged: &Judgments, k: usize) -> f64 {
    let relevant = judged.values().filter(|r| **r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranking
        .iter()
        .take(k)
        .filter(|d| judged.get(*d).copied().unwrap_or(0) > 0)
        .count();
    found as f64 / relevant as f64
}

/// Average precision over the whole ranking (trec_eval's map): relevant
/// documents never retrieved count as precision 0.
pub fn average_precision(ranking: &[String], judged: &Judgments) -> f64 {
    let relevant = judged.values().filter(|r| **r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let mut hits = 0;
    let mut sum = 0.0;
    for (i, d) in ranking.iter().enumerate() {
        if judged.get(d).copied().unwrap_or(0) > 0 {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / relevant as f64
}

/// FollowIR's pairwise score for one document whose relevance the changed
/// instruction removed: positive when it moved down, negative when it moved
/// up, in [-1, 1]. Ranks are 1-based.
pub fn p_mrr_document(rank_original: usize, rank_changed: usize) -> f64 {
    let (og, new) = (rank_original as f64, rank_changed as f64);
    if og > new {
        // Moved up: MRR_og / MRR_new - 1 = new / og - 1 (negative).
        new / og - 1.0
    } else {
        // Moved down or stayed: 1 - MRR_new / MRR_og = 1 - og / new (>= 0).
        1.0 - og / new
    }
}

/// p-MRR of one query: the mean of `p_mrr_document` over its changed
/// documents. A document missing from a run ranks just below that run's last.
pub fn p_mrr_query(original: &[String], changed_run: &[String], changed_docs: &[String]) -> Option<f64> {
    if changed_docs.is_empty() {
        return None;
    }
    let rank_in = |run: &[String], d: &String| run.iter().position(|x| x == d).map_or(run.len() + 1, |p| p + 1);
    let total: f64 = changed_docs
        .iter()
        .map(|d| p_mrr_document(rank_in(original, d), rank_in(changed_run, d)))
        .sum();
    Some(total / changed_docs.len() as f64)
}

/// Average pairwise cosine similarity of unit vectors, exact, in O(n d):
/// sum over i != j of v_i . v_j = |sum v|^2 - sum |v_i|^2.
pub fn average_pairwise_cosine(vectors: &[Vec<f32>]) -> Option<f64> {
    let n = vectors.len();
    if n < 2 {
        return None;
    }
    let dim = vectors[0].len();
    let mut total = vec![0f64; dim];
    let mut self_dots = 0f64;
    for v in vectors {
        for (t, x) in total.iter_mut().zip(v) {
            *t += *x as f64;
        }
        self_dots += v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>();
    }
    let sum_sq: f64 = total.iter().map(|t| t * t).sum();
    Some((sum_sq - self_dots) / (n as f64 * (n as f64 - 1.0)))
}

/// A 95% error bound for APS estimated on a uniform sample of `vectors`
/// (a U-statistic): 1.96 * 2 * sqrt(var(c_i) / m), where c_i is item i's mean
/// cosine with the other sampled items.
pub fn aps_sample_error_bound(vectors: &[Vec<f32>]) -> Option<f64> {
    let m = vectors.len();
    if m < 3 {
        return None;
    }
    let dim = vectors[0].len();
    let mut total = vec![0f64; dim];
    for v in vectors {
        for (t, x) in total.iter_mut().zip(v) {
            *t += *x as f64;
        }
    }
    let c: Vec<f64> = vectors
        .iter()
        .map(|v| {
            let dot_total: f64 = v.iter().zip(&total).map(|(x, t)| *x as f64 * t).sum();
            let self_dot: f64 = v.iter().map(|x| (*x as f64) * (*x as f64)).sum();
            (dot_total - self_dot) / (m as f64 - 1.0)
        })
        .collect();
    let mean = c.iter().sum::<f64>() / m as f64;
    let var = c.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (m as f64 - 1.0);
    Some(1.96 * 2.0 * (var / m as f64).sqrt())
}

/// Lower-cased word n-grams of a text (words split at non-alphanumerics).
fn ngrams(text: &str, n: usize) -> HashSet<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.len() < n || n == 0 {
        return HashSet::new();
    }
    words.windows(n).map(|w| w.join(" ")).collect()
}

/// INGF (inter-sample n-gram frequency), as docs/metrics.md defines it: for
/// each sample, the mean over its distinct n-grams of the share of the *other*
/// samples that contain the n-gram; then the mean over samples that have at
/// least one n-gram. 0 = no n-gram is shared (diverse), 1 = every n-gram
/// appears in every other sample.
pub fn ingf(texts: &[&str], n: usize) -> Option<f64> {
    let sets: Vec<HashSet<String>> = texts.iter().map(|t| ngrams(t, n)).collect();
    if sets.len() < 2 {
        return None;
    }
    let mut document_frequency: HashMap<&str, usize> = HashMap::new();
    for set in &sets {
        for g in set {
            *document_frequency.entry(g.as_str()).or_default() += 1;
        }
    }
    let others = (sets.len() - 1) as f64;
    let per_sample: Vec<f64> = sets
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.iter()
                .map(|g| (document_frequency[g.as_str()] - 1) as f64 / others)
                .sum::<f64>()
                / s.len() as f64
        })
        .collect();
    if per_sample.is_empty() {
        return None;
    }
    Some(per_sample.iter().sum::<f64>() / per_sample.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> Judgments {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    fn run(ids: &[&str]) -> Ranking {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ranking_metrics_by_hand() {
        let q = judged(&[("a", 2), ("b", 1), ("c", 0), ("z", 1)]);
        let r = run(&["c", "a", "x", "b"]);
        // DCG@3 = 0/1 + 2/log2(3) + 0 ; IDCG@3 = 2/1 + 1/log2(3) + 1/2
        let dcg = 2.0 / 3f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((ndcg_at(&r, &q, 3) - dcg / idcg).abs() < 1e-12);
        assert_eq!(mrr_at(&r, &q, 10), 0.5);
        assert_eq!(mrr_at(&r, &q, 1), 0.0);
        assert!((recall_at(&r, &q, 4) - 2.0 / 3.0).abs() < 1e-12);
        // AP = (1/2 + 2/4) / 3
        assert!((average_precision(&r, &q) - (0.5 + 0.5) / 3.0).abs() < 1e-12);
        assert_eq!(ndcg_at(&r, &judged(&[("c", 0)]), 10), 0.0);
    }

    #[test]
    fn p_mrr_worked_by_hand() {
        // Moved down from 1 to 4: 1 - 1/4 = 0.75. Moved up from 4 to 2: 2/4 - 1 = -0.5.
        assert_eq!(p_mrr_document(1, 4), 0.75);
        assert_eq!(p_mrr_document(4, 2), -0.5);
        assert_eq!(p_mrr_document(3, 3), 0.0);
        let og = run(&["d1", "d2", "d3", "d4"]);
        let new = run(&["d2", "d4", "d3", "d1"]);
        // d1: 1 -> 4 (0.75); d4: 4 -> 2 (-0.5); mean 0.125
        assert_eq!(p_mrr_query(&og, &new, &run(&["d1", "d4"])), Some(0.125));
        // Missing from the changed run: ranks just below its last (3 + 1 = 4) -> 1 - 2/4 = 0.5
        assert_eq!(p_mrr_query(&og, &run(&["d1", "d3", "d4"]), &run(&["d2"])), Some(0.5));
        assert_eq!(p_mrr_query(&og, &new, &[]), None);
    }

    #[test]
    fn aps_by_hand() {
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let v = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![s, s]];
        // pairs: 0, s, s -> mean 2s/3
        let aps = average_pairwise_cosine(&v).unwrap();
        assert!((aps - 2.0 * s as f64 / 3.0).abs() < 1e-6);
        assert_eq!(average_pairwise_cosine(&v[..1]), None);
        let same = vec![vec![1.0, 0.0]; 5];
        assert!((average_pairwise_cosine(&same).unwrap() - 1.0).abs() < 1e-12);
        assert!(aps_sample_error_bound(&same).unwrap() < 1e-9);
    }

    #[test]
    fn ingf_by_hand() {
        // unigrams: A {the, cat} B {the, dog} C {a, bird}
        // A: the in 1 of 2 others (0.5), cat 0 -> 0.25; B same 0.25; C 0 -> mean 1/6
        let v = ingf(&["The cat", "the DOG", "a bird"], 1).unwrap();
        assert!((v - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(ingf(&["same words", "same words"], 2), Some(1.0));
        assert_eq!(ingf(&["one"], 1), None);
        assert_eq!(ingf(&["a", "b"], 2), None);
    }
}
