//! What one re-ranking call cost: candidates, cache hits, requests, tokens
//! and dollars, logged in inf_ir.rerank_calls (per role, like the cache)
//! as the synthesis stages log theirs in inf_ir.llm_runs.

use super::mode::Mode;
use crate::engine::llm::runner::Outcome;
use crate::pg::llm::endpoints::EndpointRow;
use pgrx::prelude::*;
use std::time::Instant;

pub struct Usage {
    started: Instant,
    /// The mode the call ran in (auto resolves to one).
    pub mode: Option<Mode>,
    pub candidates: u64,
    /// Judgments found in the cache.
    pub cached: u64,
    /// Judgments the endpoint made in this call.
    pub judged: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn start(candidates: usize) -> Self {
        Usage {
            started: Instant::now(),
            mode: None,
            candidates: candidates as u64,
            cached: 0,
            judged: 0,
            requests: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }

    /// Count one request's outcome: its attempts and the tokens it used.
    pub fn count(&mut self, outcome: &Outcome) {
        let (attempts, prompt, completion) = match outcome {
            Outcome::Done { reply, attempts } => (*attempts, reply.prompt_tokens, reply.completion_tokens),
            Outcome::Failed {
                attempts,
                prompt_tokens,
                completion_tokens,
                ..
            } => (*attempts, *prompt_tokens, *completion_tokens),
        };
        self.requests += attempts as u64;
        self.prompt_tokens += prompt;
        self.completion_tokens += completion;
    }

    /// One row in inf_ir.rerank_calls. `fell_back`: the failure that made
    /// the call return the bi-encoder's order (a call that raised an ERROR
    /// leaves no row: its transaction is rolled back). Nothing is logged in
    /// a read-only transaction.
    pub fn log(&self, row: &EndpointRow, fell_back: Option<&str>) {
        if !super::judgments::writable() {
            return;
        }
        let cost = crate::engine::llm::stages::cost(
            self.prompt_tokens,
            self.completion_tokens,
            row.input_price,
            row.output_price,
        );
        let count = |n: u64| n.min(i64::MAX as u64) as i64;
        Spi::run_with_args(
            "INSERT INTO inf_ir.rerank_calls (endpoint, model, mode, candidates, cached, judged, requests,
                 prompt_tokens, completion_tokens, cost, elapsed_ms, fell_back)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::float8::numeric, $11, $12)",
            &[
                row.name.as_str().into(),
                row.model.as_str().into(),
                self.mode.map(Mode::name).into(),
                count(self.candidates).into(),
                count(self.cached).into(),
                count(self.judged).into(),
                count(self.requests).into(),
                count(self.prompt_tokens).into(),
                count(self.completion_tokens).into(),
                cost.into(),
                (self.started.elapsed().as_secs_f64() * 1000.0).into(),
                fell_back.into(),
            ],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: logging the call in inf_ir.rerank_calls: {e}"));
    }
}
