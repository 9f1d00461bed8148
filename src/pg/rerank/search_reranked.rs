//! `inf_search_reranked(instruction, query, endpoint, ...)`: inf_search's
//! best `rerank_depth` passages judged by an LLM, the best `k` of them
//! returned. A function of its own, not an inf_search overload: with one,
//! a call whose third argument has no type yet (`NULL`, `'5'`, or a bind
//! parameter from a driver that sends none, as node-postgres does) would
//! be ambiguous or taken for an endpoint name.

use super::mode::Mode;
use super::reranking;
use crate::pg::corpus::search::{check_count, check_k, judged_texts, search_text, ScoredCandidate};
use pgrx::prelude::*;

/// Search as inf_search does, then re-rank the top `rerank_depth` (at
/// least k) with the LLM behind `endpoint` (see inf_rerank_llm for the
/// modes, the cache and inf_ir.rerank_on_failure). A NULL `endpoint` is
/// the plain search, with relevance NULL.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn inf_search_reranked(
    instruction: Option<&str>,
    query: Option<&str>,
    endpoint: Option<&str>,
    k: default!(Option<i32>, 10),
    corpus: default!(Option<&str>, "'default'"),
    filter: default!(Option<pgrx::JsonB>, "NULL"),
    rerank_depth: default!(Option<i32>, 20),
    rerank_mode: default!(Option<&str>, "'auto'"),
) -> TableIterator<
    'static,
    (
        name!(passage_id, i64),
        name!(external_id, String),
        name!(body, String),
        name!(score, f32),
        name!(relevance, Option<f64>),
        name!(rank, i32),
    ),
> {
    let k_rows = check_k(k);
    let mode = Mode::parse(rerank_mode);
    let Some(endpoint) = endpoint else {
        let rows = search_text(instruction, query, k, corpus, filter);
        return TableIterator::new(
            rows.into_iter()
                .map(|(id, ext, body, score, rank)| (id, ext, body, score, None, rank)),
        );
    };
    let depth = check_count(
        rerank_depth,
        "rerank_depth",
        "rerank_depth is how many of the search's best passages the LLM judges, e.g. 20",
    )
    .max(k_rows);
    let found = search_text(instruction, query, Some(depth as i32), corpus, filter);
    let mut texts = judged_texts(found.iter().map(|r| r.0).collect());
    let scored: Vec<ScoredCandidate> = found
        .iter()
        .filter_map(|(id, _, _, score, _)| {
            texts.remove(id).map(|text| ScoredCandidate {
                id: *id,
                text,
                score: *score,
            })
        })
        .collect();
    let query = query.unwrap_or_default();
    let placed = reranking::rerank(endpoint, mode, instruction.unwrap_or(""), query, &scored, k_rows);
    let shown = found
        .into_iter()
        .map(|(id, ext, body, _, _)| (id, (ext, body)))
        .collect();
    TableIterator::new(reranking::rows(placed, shown))
}

pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION @extschema@.inf_search_reranked(text, text, text, integer, text, jsonb, integer, text) FROM PUBLIC;",
    name = "search_reranked_privileges",
    requires = [inf_search_reranked]
);
