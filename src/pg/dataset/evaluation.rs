//! Evaluation in SQL: ranking metrics over stored runs and qrels, FollowIR's
//! p-MRR, and the diversity measures APS and INGF (definitions: docs/metrics.md).

use crate::engine::dataset::metrics::{self, Judgments, Ranking};
use crate::engine::{EmbedInput, EngineError};
use crate::pg::embed::inference;
use crate::pg::embed::models;
use crate::pg::errors::raise;
use pgrx::prelude::*;
use std::collections::HashMap;

fn load_run(run_name: &str) -> HashMap<String, Ranking> {
    let rows: Vec<(String, String)> = Spi::connect(|client| {
        client
            .select(
                "SELECT query_id, doc_id FROM inf_ir.eval_runs WHERE run_name = $1 ORDER BY query_id, rank, doc_id",
                None,
                &[run_name.into()],
            )?
            .map(|r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    if rows.is_empty() {
        raise(
            EngineError::invalid(format!("run \"{run_name}\" has no rows in inf_ir.eval_runs"))
                .with_hint("insert (run_name, query_id, doc_id, score, rank) rows, or use inf_evaluate_search()"),
        );
    }
    let mut runs: HashMap<String, Ranking> = HashMap::new();
    for (q, d) in rows {
        runs.entry(q).or_default().push(d);
    }
    runs
}

fn load_qrels(qrels_name: &str) -> HashMap<String, Judgments> {
    let rows: Vec<(String, String, i32)> = Spi::connect(|client| {
        client
            .select(
                "SELECT query_id, doc_id, relevance FROM inf_ir.eval_qrels WHERE qrels_name = $1",
                None,
                &[qrels_name.into()],
            )?
            .map(|r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<i32>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    if rows.is_empty() {
        raise(
            EngineError::invalid(format!("qrels \"{qrels_name}\" have no rows in inf_ir.eval_qrels"))
                .with_hint("insert (qrels_name, query_id, doc_id, relevance) rows first"),
        );
    }
    let mut qrels: HashMap<String, Judgments> = HashMap::new();
    for (q, d, r) in rows {
        qrels.entry(q).or_default().insert(d, r);
    }
    qrels
}

fn check_k(k: i32) -> usize {
    if k < 1 {
        raise(EngineError::invalid(format!("k must be at least 1, not {k}")).with_hint("for example 10"));
    }
    k as usize
}

/// Per query: nDCG@k, MRR@k, Recall@k and average precision, over the
/// queries of the qrels that have a relevant document (a query missing from
/// the run scores 0).
#[pg_extern(stable, parallel_safe)]
fn inf_evaluate_per_query(
    run_name: &str,
    qrels_name: &str,
    k: default!(i32, 10),
) -> TableIterator<
    'static,
    (
        name!(query_id, String),
        name!(ndcg, f64),
        name!(mrr, f64),
        name!(recall, f64),
        name!(ap, f64),
    ),
> {
    let k = check_k(k);
    let runs = load_run(run_name);
    let qrels = load_qrels(qrels_name);
    let empty = Vec::new();
    let mut rows: Vec<_> = qrels
        .iter()
        .filter(|(_, j)| j.values().any(|r| *r > 0))
        .map(|(q, j)| {
            let r = runs.get(q).unwrap_or(&empty);
            (
                q.clone(),
                metrics::ndcg_at(r, j, k),
                metrics::mrr_at(r, j, k),
                metrics::recall_at(r, j, k),
                metrics::average_precision(r, j),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    TableIterator::new(rows)
}

/// Mean nDCG@k, MRR@k, Recall@k and MAP of a run against qrels.
#[pg_extern(stable, parallel_safe)]
fn inf_evaluate(
    run_name: &str,
    qrels_name: &str,
    k: default!(i32, 10),
) -> TableIterator<'static, (name!(metric, String), name!(value, f64), name!(n_queries, i32))> {
    let per_query: Vec<_> = inf_evaluate_per_query(run_name, qrels_name, k).collect();
    let n = per_query.len().max(1) as f64;
    // Per query: (query, nDCG, MRR, recall, AP).
    let mean = |pick: fn(&(String, f64, f64, f64, f64)) -> f64| per_query.iter().map(pick).sum::<f64>() / n;
    let count = per_query.len() as i32;
    TableIterator::new(vec![
        (format!("ndcg@{k}"), mean(|r| r.1), count),
        (format!("mrr@{k}"), mean(|r| r.2), count),
        (format!("recall@{k}"), mean(|r| r.3), count),
        ("map".to_string(), mean(|r| r.4), count),
    ])
}

/// FollowIR's p-MRR: how well a model follows a changed instruction.
/// `changed_qrels` names the (query, document) pairs whose relevance the
/// changed instruction removed; each is scored from its rank in the original
/// and the changed run, averaged per query, then over queries. In [-1, 1];
/// positive means the documents moved down as they should.
#[pg_extern(stable, parallel_safe)]
fn inf_p_mrr(original_run: &str, changed_run: &str, changed_qrels: &str) -> f64 {
    let og = load_run(original_run);
    let new = load_run(changed_run);
    let changed = load_qrels(changed_qrels);
    let empty = Vec::new();
    let scores: Vec<f64> = changed
        .iter()
        .filter_map(|(q, docs)| {
            let mut docs: Vec<String> = docs.keys().cloned().collect();
            docs.sort();
            metrics::p_mrr_query(og.get(q).unwrap_or(&empty), new.get(q).unwrap_or(&empty), &docs)
        })
        .collect();
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().sum::<f64>() / scores.len() as f64
}

/// Deterministic sample of `m` indices out of `n` (seeded partial shuffle).
fn sample_indices(n: usize, m: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut s = seed.wrapping_add(0x9E3779B97F4A7C15);
    for i in 0..m.min(n) {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let j = i + (s >> 33) as usize % (n - i);
        idx.swap(i, j);
    }
    idx.truncate(m.min(n));
    idx.sort_unstable();
    idx
}

/// APS, the average pairwise cosine similarity of the texts' embeddings
/// (lower = more diverse). Exact up to `max_exact` texts; above, computed on a
/// seeded uniform sample of `max_exact` texts with a 95% error bound.
/// `side` is 'passage' (texts as passages) or 'query' (texts as bare queries).
#[pg_extern(stable, parallel_restricted)]
fn inf_aps(
    texts: Vec<Option<String>>,
    side: default!(&str, "'passage'"),
    model: default!(Option<&str>, "NULL"),
    max_exact: default!(i32, 5000),
    seed: default!(i64, 0),
) -> TableIterator<
    'static,
    (
        name!(aps, Option<f64>),
        name!(n, i32),
        name!(embedded, i32),
        name!(exact, bool),
        name!(error_bound, f64),
    ),
> {
    let texts: Vec<String> = texts.into_iter().flatten().collect();
    if max_exact < 3 {
        raise(EngineError::invalid("max_exact must be at least 3"));
    }
    let exact = texts.len() <= max_exact as usize;
    let chosen: Vec<&String> = if exact {
        texts.iter().collect()
    } else {
        sample_indices(texts.len(), max_exact as usize, seed as u64)
            .into_iter()
            .map(|i| &texts[i])
            .collect()
    };
    let inputs: Vec<EmbedInput<'_>> = match side {
        "passage" => chosen.iter().map(|t| EmbedInput::Passage(t)).collect(),
        "query" => chosen
            .iter()
            .map(|t| EmbedInput::Query {
                instruction: None,
                query: t,
            })
            .collect(),
        other => raise(EngineError::invalid(format!(
            "side must be 'passage' or 'query', not {other:?}"
        ))),
    };
    let row = models::lookup(model);
    let vectors = inference::embed(&row, &inputs);
    let aps = metrics::average_pairwise_cosine(&vectors);
    let bound = if exact {
        0.0
    } else {
        metrics::aps_sample_error_bound(&vectors).unwrap_or(0.0)
    };
    TableIterator::once((aps, texts.len() as i32, vectors.len() as i32, exact, bound))
}

/// INGF, inter-sample n-gram frequency of word n-grams (lower = more
/// diverse); see docs/metrics.md for the exact definition.
#[pg_extern(immutable, parallel_safe)]
fn inf_ingf(texts: Vec<Option<String>>, n: default!(i32, 2)) -> Option<f64> {
    if n < 1 {
        raise(EngineError::invalid(format!("n must be at least 1, not {n}")));
    }
    let texts: Vec<String> = texts.into_iter().flatten().collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    metrics::ingf(&refs, n as usize)
}
