//! `inf_rerank_llm`: candidates judged by an LLM for the instruction and
//! the query together, then ordered by its relevance, ties by the
//! bi-encoder's score, then by id.
//!
//! Modes: `logprobs` (one token, Yes or No; relevance from their
//! log-probabilities), `graded` (a JSON grade 0-3), `auto` (logprobs when
//! the endpoint returns them, found out with one request and remembered
//! for the session), `listwise` (windows of candidates ranked by the
//! model). Cached judgments are used first; the rest are sent in
//! parallel within the endpoint's limits. When a judgment cannot be had,
//! `inf_ir.rerank_on_failure` says: an ERROR, or the bi-encoder's order
//! with a WARNING; never a partial order.

use super::mode::Mode;
use super::reranking::{rerank, rows};
use crate::pg::corpus::search::{check_k, embed_query, passage_texts, score_candidates};
use crate::pg::errors::raise_with;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

fn null_error(what: &str) -> ! {
    raise_with(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{what} must not be NULL"),
        "inf_rerank_llm(instruction, query, candidates, endpoint, k, mode): for example \
         inf_rerank_llm('only reviews', 'cats', ARRAY(SELECT passage_id FROM inf_search(...)), 'local')",
    )
}

/// Re-rank candidate passages (for example inf_search's top 20) with the
/// LLM behind `endpoint`, which reads the instruction, the query and each
/// passage. `score` is the bi-encoder's, `relevance` the LLM's in [0, 1]
/// (NULL when inf_ir.rerank_on_failure = retriever had to fall back).
#[pg_extern(volatile, parallel_unsafe)]
fn inf_rerank_llm(
    instruction: Option<&str>,
    query: Option<&str>,
    candidates: Option<Vec<Option<i64>>>,
    endpoint: Option<&str>,
    k: default!(Option<i32>, "NULL"),
    mode: default!(Option<&str>, "'auto'"),
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
    let query = query.unwrap_or_else(|| null_error("query"));
    let endpoint = endpoint.unwrap_or_else(|| null_error("endpoint"));
    let candidates: Vec<i64> = candidates
        .unwrap_or_else(|| null_error("candidates"))
        .into_iter()
        .flatten()
        .collect();
    let k = match k {
        None => usize::MAX,
        some => check_k(some),
    };
    let mode = Mode::parse(mode);
    let instruction = instruction.unwrap_or("");
    let scored = score_candidates(&candidates, |model| embed_query(model, Some(instruction), query));
    let placed = rerank(endpoint, mode, instruction, query, &scored, k);
    let texts = passage_texts(placed.iter().map(|p| p.id).collect());
    TableIterator::new(rows(placed, texts))
}

pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION @extschema@.inf_rerank_llm(text, text, bigint[], text, integer, text) FROM PUBLIC;",
    name = "rerank_llm_privileges",
    requires = [inf_rerank_llm]
);
