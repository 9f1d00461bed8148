//! Pointwise judgments: one request per candidate, through the endpoint
//! runner, after the cache. `logprobs` reads the relevance from the
//! log-probabilities of a Yes/No answer; `graded` from a JSON grade 0-3;
//! `auto` finds out with one request whether the endpoint returns logprobs
//! and remembers it for the session.

use super::judgments;
use super::mode::Mode;
use super::usage::Usage;
use crate::engine::llm::chat::{parse_reply, BadReply, ChatReply};
use crate::engine::llm::runner::{self, Job, Outcome};
use crate::engine::rerank::cache_key::JudgmentKey;
use crate::engine::rerank::pointwise::{self, NO_LOGPROBS};
use crate::pg::corpus::search::ScoredCandidate;
use crate::pg::interrupt::PgInterrupt;
use crate::pg::llm::endpoints::EndpointRow;
use crate::pg::llm::prompts::Prompt;
use serde_json::json;
use std::collections::HashMap;

thread_local! {
    /// What `auto` found out per endpoint and model in this session.
    static AUTO_MODES: std::cell::RefCell<HashMap<(String, String), Mode>> = Default::default();
}

/// The mode `auto` resolves to for this endpoint, when already known.
pub fn known_auto_mode(row: &EndpointRow) -> Option<Mode> {
    AUTO_MODES.with(|m| m.borrow().get(&(row.name.clone(), row.model.clone())).copied())
}

/// Each candidate's relevance (in `scored`'s order) in a pointwise mode
/// (`None`: auto), or why not all of them could be judged.
pub fn judge(
    row: &EndpointRow,
    wanted: Option<Mode>,
    instruction: &str,
    query: &str,
    scored: &[ScoredCandidate],
    usage: &mut Usage,
) -> Result<Vec<f64>, String> {
    let mut mode = wanted.or_else(|| known_auto_mode(row));
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
            usage,
        ) {
            Ok(()) => mode = Some(Mode::Logprobs),
            Err(why) if why.contains(NO_LOGPROBS) => mode = Some(Mode::Graded),
            Err(_) => {}
        }
        if let Some(found) = mode {
            AUTO_MODES.with(|m| m.borrow_mut().insert((row.name.clone(), row.model.clone()), found));
        }
    }
    let mode = mode.unwrap_or(Mode::Logprobs);
    usage.mode = Some(mode);
    judge_mode(row, mode, instruction, query, scored, &mut relevance, None, usage)?;
    Ok(relevance
        .into_iter()
        .map(|r| r.expect("every candidate judged"))
        .collect())
}

/// Fill `relevance` for the candidates it has None for: from the cache,
/// then from the endpoint (stored in the cache), with `attempts` per
/// request when given (else the endpoint's max_attempts). Err names the
/// first failure and how many failed.
#[allow(clippy::too_many_arguments)]
fn judge_mode(
    row: &EndpointRow,
    mode: Mode,
    instruction: &str,
    query: &str,
    scored: &[ScoredCandidate],
    relevance: &mut [Option<f64>],
    attempts: Option<u32>,
    usage: &mut Usage,
) -> Result<(), String> {
    let prompt = Prompt::load(mode.stage(), None);
    let shown_instruction = shown(instruction);
    let keys: Vec<JudgmentKey> = scored
        .iter()
        .map(|c| JudgmentKey::new(&row.model, mode.name(), prompt.version, instruction, query, &c.text))
        .collect();
    let open_before = relevance.iter().filter(|r| r.is_none()).count();
    for (i, r) in judgments::cached(&keys) {
        if relevance[i].is_none() {
            relevance[i] = Some(r);
        }
    }
    let open: Vec<usize> = (0..scored.len()).filter(|i| relevance[*i].is_none()).collect();
    usage.cached += (open_before - open.len()) as u64;
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
                Mode::Logprobs => Job {
                    key: i,
                    estimated_tokens: prompt.estimated_tokens(&user, 1),
                    body: pointwise::logprob_request_body(&row.model, &prompt.system, &user).to_string(),
                },
                _ => prompt.job(row, mode.stage(), i, &user),
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
        _ => parse_reply(text, &schema).and_then(|reply| match pointwise::relevance_from_graded(&reply.value) {
            Ok(r) => Ok(ChatReply {
                value: json!({"relevance": r}),
                ..reply
            }),
            Err(reason) => Err(BadReply {
                reason,
                text: reply.value.to_string(),
                prompt_tokens: reply.prompt_tokens,
                completion_tokens: reply.completion_tokens,
            }),
        }),
    });
    let mut fresh: Vec<(usize, f64, u64, u64)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut settings = row.settings();
    if let Some(n) = attempts {
        settings.policy.max_attempts = n;
    }
    runner::run(row.transport(), jobs, settings, check, &PgInterrupt, |key, outcome| {
        usage.count(&outcome);
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
    usage.judged += fresh.len() as u64;
    // What was judged is right whatever else failed: keep it for next time
    // (kept when inf_ir.rerank_on_failure = retriever; an ERROR rolls it back).
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

/// The instruction as prompts show it: "(none)" when there is none.
pub fn shown(instruction: &str) -> &str {
    if instruction.trim().is_empty() {
        "(none)"
    } else {
        instruction
    }
}
