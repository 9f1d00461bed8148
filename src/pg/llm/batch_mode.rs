//! Batch mode of the stages, through an endpoint's OpenAI Batch API:
//! `CALL inf_synthesize(..., mode => 'batch')` claims pending items and
//! submits them as batches (`inf_llm_batch_prepare` commits the claim and
//! the inf_ir.llm_batches row first, then `inf_llm_batch_send` uploads and
//! makes the endpoint's batch, tagged with the row's random tag);
//! `CALL inf_synthesize_collect()` polls them (`inf_llm_batch_check`) and
//! ingests finished ones through the same checks and writer as direct runs,
//! one transaction per batch. Every step is safe to repeat after a
//! disconnect, a cancel or a restart.

use super::endpoints::EndpointRow;
use super::prompts::Prompt;
use crate::engine::llm::batch_api::{self, BatchApi, BatchStatus, Created, Listing};
use crate::engine::llm::chat::parse_reply;
use crate::engine::llm::retry::{Failure, RetryPolicy};
use crate::engine::llm::runner::Outcome;
use crate::engine::llm::stages::{self, Stage};
use crate::pg::errors::{raise, raise_with, OrRaise};
use crate::pg::interrupt::PgInterrupt;
use crate::pg::llm::pending::{not_yet_done, take_pending, Item};
use crate::pg::llm::writer::{evaluator, generator, stage_of, Writer, Written};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::{json, Value};

/// The run fields batch mode needs.
struct RunRow {
    stage: Stage,
    endpoint: String,
    model: String,
    prompt_version: i32,
    filter: Option<String>,
    left: i64,
    batch_size: i64,
    retry_failed: bool,
}

fn run_row(run_id: i64) -> RunRow {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT stage, endpoint, model, prompt_version, filter,
                    coalesce(max_items - (submitted + done + failed + skipped), 9223372036854775807)::bigint, batch_size::bigint, retry_failed
             FROM inf_ir.llm_runs WHERE run_id = $1 AND state = 'running' AND pid = pg_backend_pid()",
            Some(1),
            &[run_id.into()],
        )?;
        let Some(r) = rows.into_iter().next() else {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("run {run_id} is not a running run of this session"),
                "CALL inf_synthesize(..., mode => 'batch') calls this",
            )
        };
        Ok::<_, pgrx::spi::Error>(RunRow {
            stage: stage_of(&r.get::<String>(1)?.unwrap_or_default()),
            endpoint: r.get::<String>(2)?.unwrap_or_default(),
            model: r.get::<String>(3)?.unwrap_or_default(),
            prompt_version: r.get::<i32>(4)?.unwrap_or(1),
            filter: r.get::<String>(5)?,
            left: r.get::<i64>(6)?.unwrap_or(0),
            batch_size: r.get::<i64>(7)?.unwrap_or(1000),
            retry_failed: r.get::<bool>(8)?.unwrap_or(false),
        })
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: reading inf_ir.llm_runs: {e}"))
}

/// Claim the run's next pending items for a new batch: the batch's id, or 0
/// when nothing is left. The caller commits before sending it.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_llm_batch_prepare(run_id: i64) -> i64 {
    let run = run_row(run_id);
    let limit = run.batch_size.min(run.left);
    let evaluator = evaluator(&run.model);
    let items = loop {
        if limit <= 0 {
            return 0;
        }
        let taken = take_pending(run.stage, run.filter.as_deref(), run.retry_failed, &evaluator, limit);
        if taken.is_empty() {
            return 0;
        }
        let open = not_yet_done(run.stage, run.retry_failed, taken);
        if !open.is_empty() {
            break open;
        }
    };
    let n = items.len() as i64;
    let batch_id = Spi::get_one_with_args::<i64>(
        "INSERT INTO inf_ir.llm_batches (run_id, stage, endpoint, prompt_version, requests, items)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING batch_id",
        &[
            run_id.into(),
            run.stage.name().into(),
            run.endpoint.as_str().into(),
            run.prompt_version.into(),
            (n as i32).into(),
            JsonB(serde_json::to_value(&items).unwrap_or(Value::Null)).into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: recording a batch: {e}"))
    .unwrap_or_else(|| pgrx::error!("inf_ir: the batch has no id"));
    // The claim: these items are no longer pending for any run.
    Spi::run_with_args(
        "INSERT INTO inf_ir.llm_items AS w (stage, item, run_id, outcome, group_id, batch_id)
         SELECT $1, i->>'key', $2, 'submitted', (i->>'group_id')::bigint, $3
         FROM jsonb_array_elements($4) i
         ON CONFLICT (stage, item) DO UPDATE
             SET run_id = EXCLUDED.run_id, outcome = 'submitted', batch_id = EXCLUDED.batch_id,
                 failure = NULL, reply_text = NULL, finished_at = clock_timestamp()
             WHERE w.outcome = 'failed'",
        &[
            run.stage.name().into(),
            run_id.into(),
            batch_id.into(),
            JsonB(serde_json::to_value(&items).unwrap_or(Value::Null)).into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: claiming the batch's items: {e}"));
    Spi::run_with_args(
        "UPDATE inf_ir.llm_runs SET submitted = submitted + $2, updated_at = clock_timestamp() WHERE run_id = $1",
        &[run_id.into(), n.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: updating run {run_id}: {e}"));
    batch_id
}

/// A batch row as stored.
struct BatchRow {
    id: i64,
    run_id: i64,
    stage: Stage,
    endpoint: String,
    prompt_version: i32,
    items: Vec<Item>,
    remote_id: Option<String>,
    status: String,
    /// Names the batch at the endpoint (its metadata inf_ir_batch).
    tag: String,
}

/// The batch, locked for this transaction; None if another session holds it.
fn lock_batch(batch_id: i64) -> Option<BatchRow> {
    Spi::connect_mut(|client| {
        let rows = client.update(
            "SELECT run_id, stage, endpoint, prompt_version, items, remote_id, status, tag::text
             FROM inf_ir.llm_batches WHERE batch_id = $1 AND ingested_at IS NULL
             FOR UPDATE SKIP LOCKED",
            Some(1),
            &[batch_id.into()],
        )?;
        let Some(r) = rows.into_iter().next() else {
            return Ok::<_, pgrx::spi::Error>(None);
        };
        let items = r.get::<JsonB>(5)?.map(|j| j.0).unwrap_or(Value::Null);
        Ok(Some(BatchRow {
            id: batch_id,
            run_id: r.get::<i64>(1)?.unwrap_or(0),
            stage: stage_of(&r.get::<String>(2)?.unwrap_or_default()),
            endpoint: r.get::<String>(3)?.unwrap_or_default(),
            prompt_version: r.get::<i32>(4)?.unwrap_or(1),
            items: serde_json::from_value(items)
                .unwrap_or_else(|e| pgrx::error!("inf_ir: batch {batch_id}'s items are unreadable: {e}")),
            remote_id: r.get::<String>(6)?,
            status: r.get::<String>(7)?.unwrap_or_default(),
            tag: r.get::<String>(8)?.unwrap_or_default(),
        }))
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: reading inf_ir.llm_batches: {e}"))
}

fn api(row: &EndpointRow) -> BatchApi {
    BatchApi::new(
        &row.base_url,
        row.api_key(),
        row.timeout,
        RetryPolicy {
            max_attempts: row.max_attempts,
            ..RetryPolicy::default()
        },
    )
}

/// Upload a prepared batch's requests and make the endpoint's batch, or
/// adopt the one an interrupted call already made; the endpoint's status,
/// or 'refused' when the endpoint certainly made none (then the batch's
/// items are pending again and the error is in inf_ir.llm_batches).
#[pg_extern(volatile, parallel_unsafe)]
fn inf_llm_batch_send(batch_id: i64) -> String {
    let Some(batch) = lock_batch(batch_id) else {
        return "busy".into();
    };
    if batch.remote_id.is_some() {
        return batch.status;
    }
    let row = EndpointRow::load(&batch.endpoint);
    sent(&batch, send(&batch, &row))
}

enum Sent {
    Made(BatchStatus),
    /// Nothing was made at the endpoint; why.
    Refused(String),
}

/// Record what sending did; the batch's status.
fn sent(batch: &BatchRow, outcome: Sent) -> String {
    match outcome {
        Sent::Made(status) => {
            record_status(batch.id, &status, true);
            status.status
        }
        Sent::Refused(why) => {
            for item in &batch.items {
                release(batch, item);
            }
            Spi::run_with_args(
                "UPDATE inf_ir.llm_batches SET status = 'refused', error = $2, checked_at = clock_timestamp(),
                        ingested_at = clock_timestamp() WHERE batch_id = $1",
                &[batch.id.into(), why.as_str().into()],
            )
            .unwrap_or_else(|e| pgrx::error!("inf_ir: recording batch {}: {e}", batch.id));
            Spi::run_with_args(
                "UPDATE inf_ir.llm_runs SET submitted = submitted - $2, updated_at = clock_timestamp() WHERE run_id = $1",
                &[batch.run_id.into(), (batch.items.len() as i64).into()],
            )
            .unwrap_or_else(|e| pgrx::error!("inf_ir: updating run {}: {e}", batch.run_id));
            pgrx::warning!(
                "inf_synthesize: batch {} was not made at \"{}\", its {} items are pending again: {why}",
                batch.id,
                batch.endpoint,
                batch.items.len()
            );
            "refused".into()
        }
    }
}

fn send(batch: &BatchRow, row: &EndpointRow) -> Sent {
    let api = api(row);
    let tag = &batch.tag;
    // An earlier call may have made it and been cut off before recording it;
    // if the endpoint cannot say, nothing is safe to assume (ERROR, retried later).
    match api.find("inf_ir_batch", tag, &PgInterrupt).or_raise() {
        Listing::Found(made) => return Sent::Made(made),
        Listing::NotThere => {}
        Listing::NoBatchApi(e) => return Sent::Refused(e.message),
    }
    let prompt = Prompt::load(batch.stage.name(), Some(batch.prompt_version));
    let mut jsonl = String::new();
    for (i, item) in batch.items.iter().enumerate() {
        let user = prompt.render(batch.stage.name(), &item.slots());
        let job = prompt.job(row, batch.stage.name(), i, &user);
        let body: Value = serde_json::from_str(&job.body).unwrap_or(Value::Null);
        jsonl.push_str(&batch_api::request_line(&format!("i{i}"), &body));
        jsonl.push('\n');
    }
    let file_id = match api.upload(&jsonl, &PgInterrupt) {
        Ok(id) => id,
        Err(e) => return Sent::Refused(e.message), // a file alone makes no batch
    };
    match api.create(&file_id, &json!({"inf_ir_batch": tag}), &PgInterrupt) {
        Created::Made(made) => {
            pgrx::notice!(
                "inf_synthesize: batch {} ({} requests) submitted to \"{}\" as {}",
                batch.id,
                batch.items.len(),
                row.name,
                made.id
            );
            Sent::Made(made)
        }
        Created::NotMade(e) => Sent::Refused(e.message),
        // It may exist: stay 'preparing'; the next check finds it by its tag or sends again.
        Created::Unknown(e) => raise(e),
    }
}

fn record_status(batch_id: i64, status: &BatchStatus, sent: bool) {
    Spi::run_with_args(
        "UPDATE inf_ir.llm_batches
         SET remote_id = $2, status = $3, error = coalesce($4, error), checked_at = clock_timestamp(),
             submitted_at = CASE WHEN $5 THEN coalesce(submitted_at, clock_timestamp()) ELSE submitted_at END
         WHERE batch_id = $1",
        &[
            batch_id.into(),
            status.id.as_str().into(),
            status.status.as_str().into(),
            status.errors.as_deref().into(),
            sent.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: recording batch {batch_id}: {e}"));
}

/// Poll one batch (sending it first if it was never sent) and ingest it
/// when the endpoint is done with it; its status ('ingested' at the end).
#[pg_extern(volatile, parallel_unsafe)]
fn inf_llm_batch_check(batch_id: i64) -> String {
    let Some(batch) = lock_batch(batch_id) else {
        return "busy".into();
    };
    let row = EndpointRow::load(&batch.endpoint);
    let status = match &batch.remote_id {
        None => match send(&batch, &row) {
            Sent::Made(status) => status,
            refused => return sent(&batch, refused),
        },
        Some(id) => api(&row).get(id, &PgInterrupt).or_raise(),
    };
    record_status(batch.id, &status, batch.remote_id.is_none());
    if !status.is_over() {
        if status.status != batch.status {
            pgrx::notice!("inf_synthesize: batch {} is {}", batch.id, status.status);
        }
        return status.status;
    }
    ingest(&batch, &row, &status);
    "ingested".into()
}

/// Write every result of a finished batch; release the items it has no
/// result for when the batch failed, expired or was cancelled.
fn ingest(batch: &BatchRow, row: &EndpointRow, status: &BatchStatus) {
    let api = api(row);
    let prompt = Prompt::load(batch.stage.name(), Some(batch.prompt_version));
    let mut results: Vec<Option<Result<String, String>>> = vec![None; batch.items.len()];
    for file in [&status.output_file_id, &status.error_file_id].into_iter().flatten() {
        let text = api.content(file, &PgInterrupt).or_raise();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (custom_id, result) = batch_api::result_line(line).unwrap_or_else(|e| {
                raise(
                    crate::engine::EngineError::new(
                        crate::engine::ErrorKind::Inference,
                        format!("batch {}: {e}", batch.id),
                    )
                    .with_hint("the endpoint's output file is not the Batch API's; nothing of it was stored"),
                )
            });
            if let Some(slot) = custom_id
                .strip_prefix('i')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| results.get_mut(n))
            {
                *slot = Some(result);
            }
        }
    }
    let model = Spi::get_one_with_args::<String>(
        "SELECT model FROM inf_ir.llm_runs WHERE run_id = $1",
        &[batch.run_id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| row.model.clone());
    let writer = Writer {
        run_id: batch.run_id,
        stage: batch.stage,
        generator: generator(&batch.endpoint, &model, batch.stage, batch.prompt_version),
        evaluator: evaluator(&model),
    };
    let over_early = status.status != "completed";
    let (mut done, mut failed, mut skipped, mut released) = (0i64, 0i64, 0i64, 0i64);
    let (mut prompt_tokens, mut completion_tokens) = (0u64, 0u64);
    for (item, result) in batch.items.iter().zip(results) {
        let outcome = match result {
            None if over_early => {
                release(batch, item);
                released += 1;
                continue;
            }
            None => failure("no result for this request in the batch's output".into(), String::new()),
            Some(Err(reason)) => failure(reason, String::new()),
            Some(Ok(body)) => match parse_reply(&body, &prompt.reply_schema) {
                Err(bad) => {
                    prompt_tokens += bad.prompt_tokens;
                    completion_tokens += bad.completion_tokens;
                    failure(bad.reason, bad.text)
                }
                Ok(reply) => {
                    prompt_tokens += reply.prompt_tokens;
                    completion_tokens += reply.completion_tokens;
                    match stages::check(batch.stage, &reply.value, &item.positive) {
                        Ok(()) => Outcome::Done { reply, attempts: 1 },
                        Err(reason) => failure(format!("the reply is unusable: {reason}"), reply.value.to_string()),
                    }
                }
            },
        };
        match writer.write(item, &outcome) {
            Written::Done => done += 1,
            Written::Failed => failed += 1,
            Written::Skipped => skipped += 1,
        }
    }
    // The Batch API bills half the direct price.
    let cost = stages::cost(prompt_tokens, completion_tokens, row.input_price, row.output_price).map(|c| c / 2.0);
    Spi::run_with_args(
        "UPDATE inf_ir.llm_runs
         SET done = done + $2, failed = failed + $3, skipped = skipped + $4, submitted = submitted - $5,
             prompt_tokens = prompt_tokens + $6, completion_tokens = completion_tokens + $7,
             cost = CASE WHEN $8::float8 IS NULL THEN cost ELSE coalesce(cost, 0) + $8::numeric END,
             updated_at = clock_timestamp()
         WHERE run_id = $1",
        &[
            batch.run_id.into(),
            done.into(),
            failed.into(),
            skipped.into(),
            (batch.items.len() as i64).into(),
            (prompt_tokens as i64).into(),
            (completion_tokens as i64).into(),
            cost.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: updating run {}: {e}", batch.run_id));
    Spi::run_with_args(
        "UPDATE inf_ir.llm_batches SET ingested_at = clock_timestamp() WHERE batch_id = $1;",
        &[batch.id.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: recording batch {}: {e}", batch.id));
    // The run is done when none of its batches is open (a run still
    // submitting, 'running', is left to its procedure).
    Spi::run_with_args(
        "UPDATE inf_ir.llm_runs r SET state = 'done', finished_at = clock_timestamp()
         WHERE r.run_id = $1 AND r.state IN ('submitted', 'failed', 'cancelled', 'interrupted')
           AND NOT EXISTS (SELECT 1 FROM inf_ir.llm_batches b WHERE b.run_id = r.run_id AND b.ingested_at IS NULL)",
        &[batch.run_id.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: updating run {}: {e}", batch.run_id));
    pgrx::notice!(
        "inf_synthesize: batch {} ({}) ingested: {done} done, {failed} failed, {skipped} skipped{}",
        batch.id,
        status.status,
        if released > 0 {
            format!(", {released} without a result released (pending again)")
        } else {
            String::new()
        }
    );
}

fn failure(reason: String, text: String) -> Outcome {
    Outcome::Failed {
        failure: Failure::BadReply,
        reason,
        text,
        attempts: 1,
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

/// Give an item of a batch that ended without its result back to the pending set.
fn release(batch: &BatchRow, item: &Item) {
    Spi::run_with_args(
        "DELETE FROM inf_ir.llm_items WHERE stage = $1 AND item = $2 AND outcome = 'submitted' AND batch_id = $3",
        &[batch.stage.name().into(), item.key.as_str().into(), batch.id.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: releasing item {}: {e}", item.key));
}

pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION @extschema@.inf_llm_batch_prepare(bigint) FROM PUBLIC;
     REVOKE EXECUTE ON FUNCTION @extschema@.inf_llm_batch_send(bigint) FROM PUBLIC;
     REVOKE EXECUTE ON FUNCTION @extschema@.inf_llm_batch_check(bigint) FROM PUBLIC;",
    name = "llm_batch_privileges",
    requires = [inf_llm_batch_prepare, inf_llm_batch_send, inf_llm_batch_check]
);
