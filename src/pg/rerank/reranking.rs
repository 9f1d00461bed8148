//! One re-ranking call, whichever SQL function asked: judge the scored
//! candidates (pointwise or listwise), fall back as inf_ir.rerank_on_failure
//! says when a judgment cannot be had, log the call's usage, and order the
//! candidates by the LLM's relevance, then the bi-encoder's score, then id.

use super::mode::Mode;
use super::usage::Usage;
use super::{judge, listwise_run};
use crate::engine::rerank::order::{reranked, Judged};
use crate::pg::corpus::search::ScoredCandidate;
use crate::pg::errors::raise_with;
use crate::pg::gucs::{self, RerankOnFailure};
use crate::pg::llm::endpoints::EndpointRow;
use pgrx::PgSqlErrorCode;
use std::collections::HashMap;

/// A candidate in its new place: id, the bi-encoder's score, the LLM's
/// relevance in [0, 1] (None when the call fell back to the bi-encoder).
pub struct Placed {
    pub id: i64,
    pub score: f32,
    pub relevance: Option<f64>,
}

/// A re-ranked result row: passage id, external id, body, the bi-encoder's
/// score, the LLM's relevance, rank (from 1).
pub type Row = (i64, String, String, f32, Option<f64>, i32);

/// Result rows for `placed`, in its order, from each passage's external id
/// and body (passages missing from `texts`, no longer visible, are left out).
pub fn rows(placed: Vec<Placed>, mut texts: HashMap<i64, (String, String)>) -> Vec<Row> {
    placed
        .into_iter()
        .filter_map(|p| texts.remove(&p.id).map(|(ext, body)| (p, ext, body)))
        .enumerate()
        .map(|(i, (p, ext, body))| (p.id, ext, body, p.score, p.relevance, i as i32 + 1))
        .collect()
}

/// `scored` re-ranked through `endpoint` (mode None: auto), best `k` first.
pub fn rerank(
    endpoint: &str,
    mode: Option<Mode>,
    instruction: &str,
    query: &str,
    scored: &[ScoredCandidate],
    k: usize,
) -> Vec<Placed> {
    let row = EndpointRow::load(endpoint);
    if scored.is_empty() {
        return Vec::new();
    }
    let mut usage = Usage::start(scored.len());
    let judged = match mode {
        Some(Mode::Listwise) => {
            usage.mode = Some(Mode::Listwise);
            listwise_run::judge(&row, instruction, query, scored, &mut usage)
        }
        pointwise => judge::judge(&row, pointwise, instruction, query, scored, &mut usage),
    };
    let relevance: Vec<Option<f64>> = match judged {
        Ok(relevance) => {
            usage.log(&row, None);
            relevance.into_iter().map(Some).collect()
        }
        Err(why) => match gucs::rerank_on_failure() {
            RerankOnFailure::Error => raise_with(
                PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                format!("LLM re-ranking through endpoint \"{endpoint}\" failed: {why}"),
                "check the endpoint; SET inf_ir.rerank_on_failure = retriever returns the bi-encoder's order instead",
            ),
            RerankOnFailure::Retriever => {
                pgrx::warning!(
                    "inf_ir: LLM re-ranking through endpoint \"{endpoint}\" failed, so this is the bi-encoder's order: {why}"
                );
                usage.log(&row, Some(&why));
                vec![None; scored.len()]
            }
        },
    };
    let order = reranked(
        scored
            .iter()
            .zip(&relevance)
            .map(|(c, r)| Judged {
                id: c.id,
                retriever_score: c.score,
                // Without judgments every relevance is equal: the bi-encoder decides.
                relevance: r.unwrap_or(0.0),
            })
            .collect(),
        Some(k),
    );
    let by_id: HashMap<i64, Option<f64>> = scored.iter().map(|c| c.id).zip(relevance).collect();
    order
        .into_iter()
        .map(|j| Placed {
            id: j.id,
            score: j.retriever_score,
            relevance: by_id[&j.id],
        })
        .collect()
}
