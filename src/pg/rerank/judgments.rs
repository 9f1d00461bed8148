//! The cache of judgments (inf_ir.rerank_judgments, sql/rerank.sql): read
//! before asking the endpoint, written after. Row-level security keeps each
//! role to its own rows.

use crate::engine::rerank::cache_key::JudgmentKey;
use crate::pg::spi_read;
use pgrx::prelude::*;
use std::collections::HashMap;

/// The cached relevance of each key found (by its position in `keys`).
pub fn cached(keys: &[JudgmentKey]) -> HashMap<usize, f64> {
    let Some(first) = keys.first() else {
        return HashMap::new();
    };
    let instruction: Vec<String> = keys.iter().map(|k| k.instruction_hash.clone()).collect();
    let query: Vec<String> = keys.iter().map(|k| k.query_hash.clone()).collect();
    let passage: Vec<String> = keys.iter().map(|k| k.passage_hash.clone()).collect();
    spi_read::select_planned(
        "SELECT k.n::int, j.relevance
         FROM unnest($4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS k(ih, qh, ph, n)
         JOIN inf_ir.rerank_judgments j
           ON j.role = current_user AND j.model = $1 AND j.mode = $2 AND j.prompt_version = $3
          AND j.instruction_hash = k.ih AND j.query_hash = k.qh AND j.passage_hash = k.ph",
        &[
            first.model.as_str().into(),
            first.mode.as_str().into(),
            first.prompt_version.into(),
            instruction.into(),
            query.into(),
            passage.into(),
        ],
        |table| {
            table
                .map(|r| {
                    Ok((
                        (r.get::<i32>(1)?.unwrap_or(0) - 1) as usize,
                        r.get::<f64>(2)?.unwrap_or(0.0),
                    ))
                })
                .collect::<Result<HashMap<_, _>, pgrx::spi::SpiError>>()
        },
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: reading inf_ir.rerank_judgments: {e}"))
}

/// Whether this transaction may write: a read-only one (a hot standby,
/// `SET TRANSACTION READ ONLY`) re-ranks without storing or logging.
pub fn writable() -> bool {
    // SAFETY: a backend-local flag, read on the backend's own thread.
    !unsafe { pgrx::pg_sys::XactReadOnly }
}

/// Store new judgments: (key, relevance, prompt tokens, completion tokens).
/// Nothing in a read-only transaction.
pub fn store(judged: &[(&JudgmentKey, f64, u64, u64)]) {
    if !writable() {
        return;
    }
    for (key, relevance, prompt_tokens, completion_tokens) in judged {
        Spi::run_with_args(
            "INSERT INTO inf_ir.rerank_judgments (model, mode, prompt_version, instruction_hash, query_hash,
                 passage_hash, relevance, prompt_tokens, completion_tokens)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (role, model, mode, prompt_version, instruction_hash, query_hash, passage_hash)
             DO UPDATE SET relevance = EXCLUDED.relevance, prompt_tokens = EXCLUDED.prompt_tokens,
                 completion_tokens = EXCLUDED.completion_tokens, judged_at = now()",
            &[
                key.model.as_str().into(),
                key.mode.as_str().into(),
                key.prompt_version.into(),
                key.instruction_hash.as_str().into(),
                key.query_hash.as_str().into(),
                key.passage_hash.as_str().into(),
                (*relevance).into(),
                ((*prompt_tokens).min(i32::MAX as u64) as i32).into(),
                ((*completion_tokens).min(i32::MAX as u64) as i32).into(),
            ],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: storing a judgment in inf_ir.rerank_judgments: {e}"));
    }
}
