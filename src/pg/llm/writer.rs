//! Writing a stage's outcome for one item: its ledger row in
//! inf_ir.llm_items, then what the reply made (a positive, two negatives,
//! a judge's scores) with its provenance, in the caller's transaction.

use crate::engine::llm::runner::Outcome;
use crate::engine::llm::stages::{self, Stage};
use crate::pg::errors::raise_with;
use crate::pg::llm::pending::Item;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub(super) fn stage_of(name: &str) -> Stage {
    Stage::parse(name).unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown stage \"{name}\""),
            "stages: instruction (seed pairs → positives), negatives (positives → negatives), judge (complete groups → scores)",
        )
    })
}

/// The judge's evaluator name in inf_ir.validation_scores.
pub(super) fn evaluator(model: &str) -> String {
    format!("llm:{model}")
}

/// Provenance of what a stage stores: endpoint, model, stage, prompt version.
pub(super) fn generator(endpoint: &str, model: &str, stage: Stage, prompt_version: i32) -> String {
    format!("llm:{endpoint}/{model}/{}/v{prompt_version}", stage.name())
}

/// The first column of the first row an INSERT ... RETURNING gives, None
/// when it gives no row (ON CONFLICT DO NOTHING).
pub(super) fn returning<T: FromDatum + IntoDatum>(
    sql: &str,
    args: &[DatumWithOid],
) -> Result<Option<T>, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        let rows = client.update(sql, Some(1), args)?;
        match rows.into_iter().next() {
            Some(row) => row.get::<T>(1),
            None => Ok(None),
        }
    })
}

pub(super) enum Written {
    Done,
    Failed,
    Skipped,
}

/// Writes one item's outcome: the ledger row first (so that an item another
/// run has finished meanwhile is not stored twice), then what the stage made.
pub(super) struct Writer {
    pub run_id: i64,
    pub stage: Stage,
    pub generator: String,
    pub evaluator: String,
}

impl Writer {
    pub fn write(&self, item: &Item, outcome: &Outcome) -> Written {
        match outcome {
            Outcome::Failed {
                reason,
                text,
                attempts,
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                let text = (!text.is_empty()).then_some(text.as_str());
                let usage = (*prompt_tokens, *completion_tokens);
                if self.ledger(item, "failed", Some(reason), text, *attempts, usage) {
                    Written::Failed
                } else {
                    Written::Skipped // another run finished it meanwhile
                }
            }
            Outcome::Done { reply, attempts } => {
                let usage = (reply.prompt_tokens, reply.completion_tokens);
                if !self.ledger(item, "done", None, None, *attempts, usage) {
                    return Written::Skipped; // another run stored it first
                }
                match self.store(item, &reply.value) {
                    Ok(group_id) => {
                        self.set_group(item, group_id, None);
                        Written::Done
                    }
                    Err(why) => {
                        self.set_group(item, item.group_id, Some(&why));
                        Written::Skipped
                    }
                }
            }
        }
    }

    /// Record the item's outcome; false when a committed outcome other than
    /// a failure (or this item's Batch API claim) is already there.
    fn ledger(
        &self,
        item: &Item,
        outcome: &str,
        failure: Option<&str>,
        reply_text: Option<&str>,
        attempts: u32,
        (prompt_tokens, completion_tokens): (u64, u64),
    ) -> bool {
        returning::<bool>(
            "INSERT INTO inf_ir.llm_items AS w (stage, item, run_id, outcome, group_id, failure, reply_text, attempts,
                                               prompt_tokens, completion_tokens)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (stage, item) DO UPDATE
                 SET run_id = EXCLUDED.run_id, outcome = EXCLUDED.outcome, group_id = EXCLUDED.group_id,
                     failure = EXCLUDED.failure, reply_text = EXCLUDED.reply_text, attempts = EXCLUDED.attempts,
                     prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
                     finished_at = clock_timestamp()
                 WHERE w.outcome IN ('failed', 'submitted')
             RETURNING true",
            &[
                self.stage.name().into(),
                item.key.as_str().into(),
                self.run_id.into(),
                outcome.into(),
                item.group_id.into(),
                failure.into(),
                reply_text.into(),
                (attempts as i32).into(),
                (prompt_tokens as i64).into(),
                (completion_tokens as i64).into(),
            ],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: recording item {}: {e}", item.key))
        .unwrap_or(false)
    }

    /// Point the item's ledger row at its group; a `skip` reason marks it skipped.
    fn set_group(&self, item: &Item, group_id: Option<i64>, skip: Option<&str>) {
        Spi::run_with_args(
            "UPDATE inf_ir.llm_items SET group_id = $3,
                    outcome = CASE WHEN $4::text IS NULL THEN outcome ELSE 'skipped' END, failure = $4
             WHERE stage = $1 AND item = $2",
            &[
                self.stage.name().into(),
                item.key.as_str().into(),
                group_id.into(),
                skip.into(),
            ],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: recording item {}: {e}", item.key));
    }

    /// Store what the reply makes; the group it belongs to, or why nothing
    /// was stored (it is there already).
    fn store(&self, item: &Item, reply: &serde_json::Value) -> Result<Option<i64>, String> {
        // The runner's check passed these, so they parse.
        fn unusable<T>(e: String) -> T {
            pgrx::error!("inf_ir: a checked reply is unusable: {e}")
        }
        let spi = |e: pgrx::spi::Error| -> ! { pgrx::error!("inf_ir: storing item {}: {e}", item.key) };
        match self.stage {
            Stage::Instruction => {
                let instruction = stages::instruction_of(reply, &item.positive).unwrap_or_else(unusable);
                let p = &item.positive;
                let made = returning::<i64>(
                    "INSERT INTO inf_ir.tuple_groups (seed_query_id, seed_passage_id, query, instruction, passage,
                                                      source, generator)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT ((md5(query || chr(1) || instruction || chr(1) || passage))) DO NOTHING
                     RETURNING group_id",
                    &[
                        item.seed_query_id.as_deref().into(),
                        item.seed_passage_id.as_deref().into(),
                        p.query.as_str().into(),
                        instruction.as_str().into(),
                        p.passage.as_str().into(),
                        item.source.as_str().into(),
                        self.generator.as_str().into(),
                    ],
                )
                .unwrap_or_else(|e| spi(e));
                match made {
                    Some(id) => Ok(Some(id)),
                    None => Err("the same positive (query, instruction, passage) is already stored".into()),
                }
            }
            Stage::Negatives => {
                let n = stages::negatives_of(reply, &item.positive).unwrap_or_else(unusable);
                let added = Spi::get_one_with_args::<i64>(
                    "WITH added AS (
                         INSERT INTO inf_ir.tuple_negatives (group_id, kind, altered, passage, source, generator)
                         VALUES ($1, 'instruction', $2, $3, $6, $7), ($1, 'query', $4, $5, $6, $7)
                         ON CONFLICT ON CONSTRAINT tuple_negatives_pkey DO NOTHING RETURNING 1)
                     SELECT count(*) FROM added",
                    &[
                        item.group_id.into(),
                        n.instruction_negative.as_str().into(),
                        n.instruction_negative_passage.as_str().into(),
                        n.query_negative.as_str().into(),
                        n.query_negative_passage.as_str().into(),
                        item.source.as_str().into(),
                        self.generator.as_str().into(),
                    ],
                )
                .unwrap_or_else(|e| spi(e))
                .unwrap_or(0);
                if added == 0 {
                    return Err("the group has both negatives already".into());
                }
                Ok(item.group_id)
            }
            Stage::Judge => {
                let v = stages::verdict_of(reply).unwrap_or_else(unusable);
                let added = returning::<bool>(
                    "INSERT INTO inf_ir.validation_scores (group_id, evaluator, pos_pos, ineg_pos, qneg_pos,
                                                           ineg_own, qneg_own, ambiguous)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (group_id, evaluator) DO NOTHING RETURNING true",
                    &[
                        item.group_id.into(),
                        self.evaluator.as_str().into(),
                        v.pos_pos.into(),
                        v.ineg_pos.into(),
                        v.qneg_pos.into(),
                        v.ineg_own.into(),
                        v.qneg_own.into(),
                        v.ambiguous.into(),
                    ],
                )
                .unwrap_or_else(|e| spi(e));
                match added {
                    Some(_) => Ok(item.group_id),
                    None => Err(format!("the group already has scores under {}", self.evaluator)),
                }
            }
        }
    }
}
