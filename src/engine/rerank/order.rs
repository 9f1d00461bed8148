//! The re-ranked order: the LLM's relevance first, then the bi-encoder's
//! score, then the smaller id, so that equal judgments (a yes/no model
//! often gives many candidates the same score) keep the retriever's order
//! and the result is the same on every run.

use std::cmp::Ordering;

/// One candidate: its id, the bi-encoder's score, and the LLM's relevance
/// in [0, 1] (listwise mode gives rank-derived relevance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    pub id: i64,
    pub retriever_score: f32,
    pub relevance: f64,
}

fn better(a: &Judged, b: &Judged) -> Ordering {
    b.relevance
        .total_cmp(&a.relevance)
        .then(b.retriever_score.total_cmp(&a.retriever_score))
        .then(a.id.cmp(&b.id))
}

/// `judged` best first, the best `k` (all when None).
pub fn reranked(mut judged: Vec<Judged>, k: Option<usize>) -> Vec<Judged> {
    judged.sort_by(better);
    if let Some(k) = k {
        judged.truncate(k);
    }
    judged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(id: i64, retriever_score: f32, relevance: f64) -> Judged {
        Judged {
            id,
            retriever_score,
            relevance,
        }
    }

    #[test]
    fn relevance_then_retriever_score_then_id() {
        let got = reranked(
            vec![
                j(5, 0.9, 0.2),
                j(3, 0.5, 0.8),
                j(9, 0.7, 0.8),
                j(1, 0.7, 0.8),
                j(2, 0.95, 0.1),
            ],
            None,
        );
        let ids: Vec<i64> = got.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 9, 3, 5, 2]);
        assert_eq!(reranked(got, Some(2)).len(), 2);
    }
}
