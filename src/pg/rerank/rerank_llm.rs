//! `inf_rerank_llm`: candidates judged by an LLM for the instruction and
//! the query together, then ordered by its relevance, ties by the
//! bi-encoder's score, then by id.
//!
//! Modes: `logprobs` (one token, Yes or No; relevance from their
//! log-probabilities), `graded` (a JSON grade 0-3), `auto` (logprobs when
//! the endpoint returns them, found out with one request and remembered
//! for the session). Cached judgments are used first; the rest are sent in
//! parallel within the endpoint's limits. When a judgment cannot be had,
//! `inf_ir.rerank_on_failure` says: an ERROR, or the bi-encoder's order
//! with a WARNING; never a partial order.

use super::judgments;
use crate::engine::llm::chat::{parse_reply, ChatReply};
use crate::engine::llm::runner::{self, Job, Outcome};
use crate::engine::rerank::cache_key::JudgmentKey;
use crate::engine::rerank::order::{reranked, Judged};
use crate::engine::rerank::pointwise::{self, NO_LOGPROBS};
use crate::pg::corpus::search::{check_k, embed_query, passage_texts, score_candidates, ScoredCandidate};
use crate::pg::errors::raise_with;
use crate::pg::gucs::{self, RerankOnFailure};
use crate::pg::interrupt::PgInterrupt;
use crate::pg::llm::endpoints::EndpointRow;
use crate::pg::llm::prompts::Prompt;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::json;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Logprobs,
    Graded,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Logprobs => "logprobs",
            Mode::Graded => "graded",
        }
    }

    fn stage(self) -> &'static str {
        match self {
            Mode::Logprobs => "rerank",
            Mode::Graded => "rerank_graded",
        }
    }
}

thread_local! {
    /// What `auto` found out per endpoint and model in this session.
    static AUTO_MODES: std::cell::RefCell<HashMap<(String, String), Mode>> = Default::default();
}

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
    let wanted_mode = match mode.unwrap_or("auto") {
        "auto" => None,
        "logprobs" => Some(Mode::Logprobs),
        "graded" => Some(Mode::Graded),
        other => raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown mode \"{other}\""),
            "modes: auto (logprobs when the endpoint returns them, else graded), logprobs, graded",
        ),
    };
    let row = EndpointRow::load(endpoint);
    let instruction = instruction.unwrap_or("");
    let scored = score_candidates(&candidates, |model| embed_query(model, Some(instruction), query));
    if scored.is_empty() {
        return TableIterator::new(std::iter::empty());
    }
    let judged = match judge(&row, wanted_mode, instruction, query, &scored) {
        Ok(relevance) => relevance,
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
                vec![None; scored.len()]
            }
        },
    };
    let order = reranked(
        scored
            .iter()
            .zip(&judged)
            .map(|(c, r)| Judged {
                id: c.id,
                retriever_score: c.score,
                // Without judgments every relevance is equal: the bi-encoder decides.
                relevance: r.unwrap_or(0.0),
            })
            .collect(),
        Some(k),
    );
    let relevance: HashMap<i64, Option<f64>> = scored.iter().map(|c| c.id).zip(judged).collect();
    let mut texts = passage_texts(order.iter().map(|j| j.id).collect());
    let rows: Vec<_> = order
        .into_iter()
        .filter_map(|j| texts.remove(&j.id).map(|(ext, body)| (j, ext, body)))
        .enumerate()
        .map(|(i, (j, ext, body))| (j.id, ext, body, j.retriever_score, relevance[&j.id], i as i32 + 1))
        .collect();
    TableIterator::new(rows)
}

/// Each candidate's relevance (in `scored`'s order), or why not all of them
/// could be judged.
fn judge(
    row: &EndpointRow,
    wanted: Option<Mode>,
    instruction: &str,
    query: &str,
    scored: &[ScoredCandidate],
) -> Result<Vec<Option<f64>>, String> {
    let memo_key = (row.name.clone(), row.model.clone());
    let mut mode = wanted.or_else(|| AUTO_MODES.with(|m| m.borrow().get(&memo_key).copied()));
    let mut relevance: Vec<Option<f64>> = vec![None; scored.len()];
    if mode.is_none() {
        // One request, not retried, tells whether the endpoint returns
        // logprobs; any other failure decides nothing (the full run retries it).
        match judge_mode(
            row,
            Mode::Logprobs,
            instruction,
            query,
            &scored[..1],
            &mut relevance[..1],
            Some(1),
        ) {
            Ok(()) => mode = Some(Mode::Logprobs),
            Err(why) if why.contains(NO_LOGPROBS) => mode = Some(Mode::Graded),
            Err(_) => {}
        }
        if let Some(found) = mode {
            AUTO_MODES.with(|m| m.borrow_mut().insert(memo_key, found));
        }
    }
    let mode = mode.unwrap_or(Mode::Logprobs);
    judge_mode(row, mode, instruction, query, scored, &mut relevance, None)?;
    Ok(relevance)
}

/// Fill `relevance` for the candidates it has None for: from the cache,
/// then from the endpoint (stored in the cache), with `attempts` per
/// request when given (else the endpoint's max_attempts). Err names the
/// first failure and how many failed.
fn judge_mode(
    row: &EndpointRow,
    mode: Mode,
    instruction: &str,
    query: &str,
    scored: &[ScoredCandidate],
    relevance: &mut [Option<f64>],
    attempts: Option<u32>,
) -> Result<(), String> {
    let prompt = Prompt::load(mode.stage(), None);
    let shown_instruction = if instruction.trim().is_empty() {
        "(none)"
    } else {
        instruction
    };
    let keys: Vec<JudgmentKey> = scored
        .iter()
        .map(|c| JudgmentKey::new(&row.model, mode.name(), prompt.version, instruction, query, &c.text))
        .collect();
    for (i, r) in judgments::cached(&keys) {
        relevance[i] = Some(r);
    }
    let open: Vec<usize> = (0..scored.len()).filter(|i| relevance[*i].is_none()).collect();
    if open.is_empty() {
        return Ok(());
    }
    let jobs: Vec<Job> = open
        .iter()
        .map(|&i| {
            let slots = HashMap::from([
                ("instruction", shown_instruction),
                ("query", query),
                ("passage", scored[i].text.as_str()),
            ]);
            let user = prompt.render(mode.stage(), &slots);
            match mode {
                Mode::Graded => prompt.job(row, mode.stage(), i, &user),
                Mode::Logprobs => Job {
                    key: i,
                    estimated_tokens: prompt.estimated_tokens(&user, 1),
                    body: pointwise::logprob_request_body(&row.model, &prompt.system, &user).to_string(),
                },
            }
        })
        .collect();
    let schema = prompt.reply_schema.clone();
    let check: Box<runner::Check> = Box::new(move |_, text| match mode {
        Mode::Logprobs => pointwise::relevance_from_logprobs(text).map(|j| ChatReply {
            value: json!({"relevance": j.relevance}),
            prompt_tokens: j.prompt_tokens,
            completion_tokens: j.completion_tokens,
        }),
        Mode::Graded => {
            parse_reply(text, &schema).and_then(|reply| match pointwise::relevance_from_graded(&reply.value) {
                Ok(r) => Ok(ChatReply {
                    value: json!({"relevance": r}),
                    ..reply
                }),
                Err(reason) => Err(crate::engine::llm::chat::BadReply {
                    reason,
                    text: reply.value.to_string(),
                    prompt_tokens: reply.prompt_tokens,
                    completion_tokens: reply.completion_tokens,
                }),
            })
        }
    });
    let mut fresh: Vec<(usize, f64, u64, u64)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut settings = row.settings();
    if let Some(n) = attempts {
        settings.policy.max_attempts = n;
    }
    runner::run(row.transport(), jobs, settings, check, &PgInterrupt, |key, outcome| {
        match outcome {
            Outcome::Done { reply, .. } => {
                let r = reply.value["relevance"].as_f64().unwrap_or(0.0);
                fresh.push((key, r, reply.prompt_tokens, reply.completion_tokens));
            }
            Outcome::Failed { reason, attempts, .. } => {
                failed.push(format!("{reason} (after {attempts} attempt(s))"));
            }
        }
        Ok(())
    })
    .unwrap_or_else(|e| crate::pg::errors::raise(e));
    // What was judged is right whatever else failed: keep it for next time.
    let stored: Vec<(&JudgmentKey, f64, u64, u64)> = fresh.iter().map(|(i, r, p, c)| (&keys[*i], *r, *p, *c)).collect();
    judgments::store(&stored);
    if let Some(first) = failed.first() {
        return Err(format!(
            "{} of {} judgments failed; the first: {first}",
            failed.len(),
            open.len()
        ));
    }
    for (i, r, _, _) in fresh {
        relevance[i] = Some(r);
    }
    Ok(())
}

pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION @extschema@.inf_rerank_llm(text, text, bigint[], text, integer, text) FROM PUBLIC;",
    name = "rerank_llm_privileges",
    requires = [inf_rerank_llm]
);
