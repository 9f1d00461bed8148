//! What a stage run works on: the pending items of each stage (seed pairs
//! without a positive, positives without both negatives, complete groups
//! without this judge's scores), minus what the ledger says is done, taken
//! with row locks so that parallel runs split the work.

use crate::engine::llm::stages::{Positive, Stage};
use crate::pg::errors::raise_with;
use crate::pg::sql_text::{check_one_expression, parenthesized};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One pending item with what its prompt needs (kept as JSON with a
/// submitted Batch API batch, to render and check its requests later).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Item {
    pub key: String,
    pub group_id: Option<i64>,
    pub seed_query_id: Option<String>,
    pub seed_passage_id: Option<String>,
    pub source: String,
    pub positive: Positive,
    /// instruction−, its passage, query−, its passage (judge only).
    pub negatives: Option<[String; 4]>,
}

impl Item {
    pub fn slots(&self) -> HashMap<&str, &str> {
        let p = &self.positive;
        let mut slots = HashMap::from([("query", p.query.as_str()), ("passage", p.passage.as_str())]);
        if !p.instruction.is_empty() {
            slots.insert("instruction", p.instruction.as_str());
        }
        if let Some([ineg, ineg_passage, qneg, qneg_passage]) = &self.negatives {
            slots.extend([
                ("instruction_negative", ineg.as_str()),
                ("instruction_negative_passage", ineg_passage.as_str()),
                ("query_negative", qneg.as_str()),
                ("query_negative_passage", qneg_passage.as_str()),
            ]);
        }
        slots
    }
}

/// The pending items of `stage`, as a query with `$1` the judge's evaluator,
/// `$2` retry_failed and `$3` the limit. The table whose rows are locked is
/// aliased with renamed columns so that `filter` sees only the documented
/// names (those of the LATERAL `c`). `count_only` gives the count instead.
/// A filter that is not one SQL expression is an ERROR here, before any
/// query runs.
pub(super) fn pending_sql(stage: Stage, filter: Option<&str>, count_only: bool) -> String {
    if let Some(Err(why)) = filter.map(check_one_expression) {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "filter {:?} is not one SQL condition: {why}",
                filter.unwrap_or_default()
            ),
            filter_columns(stage),
        );
    }
    let filter = filter.map_or_else(|| "true".to_string(), parenthesized);
    let (select, from, pending, item, order, lock) = match stage {
        Stage::Instruction => (
            "c.query_id, c.passage_id, NULL::bigint, c.source, c.query, ''::text, c.passage,
             NULL::text, NULL::text, NULL::text, NULL::text"
                .to_string(),
            "inf_ir.seed_qrels AS qr(qr_query_id, qr_passage_id, qr_relevance)
             CROSS JOIN LATERAL (
                 SELECT q.query_id, p.passage_id, q.text AS query, p.text AS passage, q.metadata, q.source,
                        qr.qr_relevance AS relevance
                 FROM inf_ir.seed_queries q, inf_ir.seed_passages p
                 WHERE q.query_id = qr.qr_query_id AND p.passage_id = qr.qr_passage_id) c"
                .to_string(),
            "qr.qr_relevance > 0 AND NOT EXISTS (SELECT 1 FROM inf_ir.tuple_groups g
                 WHERE g.seed_query_id = c.query_id AND g.seed_passage_id = c.passage_id)",
            "jsonb_build_array(c.query_id, c.passage_id)::text",
            "qr.qr_query_id, qr.qr_passage_id",
            "qr",
        ),
        Stage::Negatives | Stage::Judge => {
            let judge = stage == Stage::Judge;
            // Columns renamed (tg_*) so that a filter's names resolve to `c` alone.
            let groups = "inf_ir.tuple_groups AS tg(tg_group_id, tg_seed_query_id, tg_query, tg_instruction, tg_passage,
                                                   tg_source, tg_generator, tg_created_at, tg_status, tg_seed_passage_id)";
            let fields = "tg.tg_group_id AS group_id, tg.tg_seed_query_id AS seed_query_id,
                          tg.tg_seed_passage_id AS seed_passage_id, tg.tg_query AS query,
                          tg.tg_instruction AS instruction, tg.tg_passage AS passage, tg.tg_source AS source,
                          tg.tg_generator AS generator, tg.tg_status AS status";
            let positive =
                "c.seed_query_id, c.seed_passage_id, c.group_id, c.source, c.query, c.instruction, c.passage";
            if judge {
                (
                    format!(
                        "{positive}, c.instruction_negative, c.instruction_negative_passage, c.query_negative,
                         c.query_negative_passage"
                    ),
                    format!(
                        "{groups} CROSS JOIN LATERAL (
                             SELECT {fields},
                                    ni.altered AS instruction_negative, ni.passage AS instruction_negative_passage,
                                    nq.altered AS query_negative, nq.passage AS query_negative_passage
                             FROM inf_ir.tuple_negatives ni, inf_ir.tuple_negatives nq
                             WHERE ni.group_id = tg.tg_group_id AND ni.kind = 'instruction'
                               AND nq.group_id = tg.tg_group_id AND nq.kind = 'query') c"
                    ),
                    "NOT EXISTS (SELECT 1 FROM inf_ir.validation_scores v
                                 WHERE v.group_id = c.group_id AND v.evaluator = $1)",
                    "jsonb_build_array(c.group_id, $1::text)::text",
                    "tg.tg_group_id",
                    "tg",
                )
            } else {
                (
                    format!("{positive}, NULL::text, NULL::text, NULL::text, NULL::text"),
                    format!("{groups} CROSS JOIN LATERAL (SELECT {fields}) c"),
                    "(SELECT count(*) FROM inf_ir.tuple_negatives n WHERE n.group_id = c.group_id) < 2",
                    "c.group_id::text",
                    "tg.tg_group_id",
                    "tg",
                )
            }
        }
    };
    let stage = stage.name();
    let where_ = format!(
        "{pending}
         AND NOT EXISTS (SELECT 1 FROM inf_ir.llm_items w WHERE w.stage = '{stage}' AND w.item = {item}
                         AND (w.outcome <> 'failed' OR NOT $2))
         AND {filter}"
    );
    if count_only {
        format!("SELECT count(*) FROM {from} WHERE {where_}")
    } else {
        format!(
            "SELECT {item}, {select} FROM {from} WHERE {where_}
             ORDER BY {order} LIMIT $3 FOR NO KEY UPDATE OF {lock} SKIP LOCKED"
        )
    }
}

/// The columns a stage's filter may use.
pub(super) fn filter_columns(stage: Stage) -> &'static str {
    match stage {
        Stage::Instruction => {
            "filter is an SQL condition on a seed pair: query_id, passage_id, query, passage, metadata (the query's), source, relevance"
        }
        Stage::Negatives => {
            "filter is an SQL condition on a group: group_id, seed_query_id, seed_passage_id, query, instruction, passage, source, generator, status"
        }
        Stage::Judge => {
            "filter is an SQL condition on a group: group_id, seed_query_id, seed_passage_id, query, instruction, passage, source, generator, status, instruction_negative, instruction_negative_passage, query_negative, query_negative_passage"
        }
    }
}

pub(super) fn pending_args(evaluator: &str, retry_failed: bool, limit: i64) -> [DatumWithOid<'static>; 3] {
    [evaluator.to_string().into(), retry_failed.into(), limit.into()]
}

/// Lock and read up to `limit` pending items of `stage` (skipping rows other
/// runs hold).
pub(super) fn take_pending(
    stage: Stage,
    filter: Option<&str>,
    retry_failed: bool,
    evaluator: &str,
    limit: i64,
) -> Vec<Item> {
    Spi::connect_mut(|client| {
        let rows = client.update(
            &pending_sql(stage, filter, false),
            None,
            &pending_args(evaluator, retry_failed, limit),
        )?;
        let mut items = Vec::new();
        for r in rows {
            let text = |i: usize| -> Result<String, pgrx::spi::Error> { Ok(r.get::<String>(i)?.unwrap_or_default()) };
            let negatives = match r.get::<String>(9)? {
                Some(ineg) => Some([ineg, text(10)?, text(11)?, text(12)?]),
                None => None,
            };
            items.push(Item {
                key: text(1)?,
                seed_query_id: r.get::<String>(2)?,
                seed_passage_id: r.get::<String>(3)?,
                group_id: r.get::<i64>(4)?,
                source: text(5)?,
                positive: Positive {
                    query: text(6)?,
                    instruction: text(7)?,
                    passage: text(8)?,
                },
                negatives,
            });
        }
        Ok::<_, pgrx::spi::Error>(items)
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: selecting pending {} items: {e}", stage.name()))
}

/// Of the locked `items`, those that no run has finished by now. The pending
/// query's snapshot may predate a commit of a concurrent run that released
/// its row locks just before this one took them; a fresh snapshot (a new
/// statement) sees that run's ledger rows, so nothing is asked for twice.
pub(super) fn not_yet_done(stage: Stage, retry_failed: bool, items: Vec<Item>) -> Vec<Item> {
    let keys: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
    // `update` (not `select`): a read-write statement takes a new snapshot.
    let open: std::collections::HashSet<String> = Spi::connect_mut(|client| {
        client
            .update(
                "SELECT k FROM unnest($1::text[]) k WHERE NOT EXISTS (
                     SELECT 1 FROM inf_ir.llm_items w
                     WHERE w.stage = $2 AND w.item = k AND (w.outcome <> 'failed' OR NOT $3))",
                None,
                &[keys.into(), stage.name().into(), retry_failed.into()],
            )?
            .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
            .collect::<Result<_, _>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: re-checking pending items: {e}"));
    items.into_iter().filter(|i| open.contains(&i.key)).collect()
}
