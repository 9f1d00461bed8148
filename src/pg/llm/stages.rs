//! The synthesis stages as resumable runs (`CALL inf_synthesize(...)`, in
//! sql/llm_stages.sql): `inf_llm_run_start` checks the arguments and records
//! the run; each `inf_llm_run_batch` takes the next batch of pending items
//! (row-locked, so parallel runs share the work), sends them through the
//! runner, and writes what came back together with a ledger row per item
//! (inf_ir.llm_items) in the procedure's per-batch transaction. The ledger's
//! key makes every item count once: a killed batch leaves nothing, a rerun
//! takes exactly what no committed batch took.

use super::endpoints::EndpointRow;
use super::prompts::Prompt;
use crate::engine::llm::chat::{parse_reply, BadReply};
use crate::engine::llm::runner::{self, Job, Outcome};
use crate::engine::llm::stages::{self, Positive, Progress, Stage};
use crate::engine::{EngineError, ErrorKind};
use crate::pg::errors::raise_with;
use crate::pg::interrupt::PgInterrupt;
use crate::pg::llm::pending::{filter_columns, not_yet_done, pending_args, pending_sql, take_pending};
use crate::pg::llm::writer::{evaluator, generator, stage_of, Writer, Written};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{Duration, Instant};

pgrx::extension_sql_file!(
    "../../../sql/llm_stages.sql",
    name = "llm_stages",
    requires = [
        "llm_tables",
        inf_llm_run_start,
        inf_llm_run_batch,
        batch_mode::inf_llm_batch_prepare,
        batch_mode::inf_llm_batch_send,
        batch_mode::inf_llm_batch_check
    ]
);

/// A NOTICE at least this often while a batch is in flight.
const NOTICE_EVERY: Duration = Duration::from_secs(10);

/// Check the arguments, record the run, report what it will do; the run's id.
#[allow(clippy::too_many_arguments)] // inf_synthesize's parameters, one to one
#[pg_extern(volatile, parallel_unsafe)]
fn inf_llm_run_start(
    stage: Option<&str>,
    endpoint: Option<&str>,
    max_items: Option<i32>,
    filter: Option<&str>,
    batch_size: Option<i32>,
    prompt_version: Option<i32>,
    retry_failed: Option<bool>,
    mode: Option<&str>,
) -> i64 {
    let usage =
        "CALL inf_synthesize(stage, endpoint, max_items, filter, batch_size, prompt_version, retry_failed, mode)";
    let null = |what: &str| -> ! {
        raise_with(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what} must not be NULL"),
            usage,
        )
    };
    let stage = stage_of(stage.unwrap_or_else(|| null("stage")));
    let endpoint = endpoint.unwrap_or_else(|| null("endpoint"));
    let retry_failed = retry_failed.unwrap_or_else(|| null("retry_failed"));
    let batch_api = match mode.unwrap_or_else(|| null("mode")) {
        "direct" => false,
        "batch" => true,
        other => raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown mode \"{other}\""),
            "modes: direct (requests now, committed per batch), batch (the endpoint's Batch API; CALL inf_synthesize_collect() ingests)",
        ),
    };
    // A Batch API file may hold up to 50,000 requests; a direct batch is one transaction.
    let most = if batch_api { 50_000 } else { 1000 };
    if max_items.is_some_and(|m| m <= 0) {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("max_items must be positive, not {}", max_items.unwrap_or_default()),
            "leave it NULL to process everything pending",
        );
    }
    if batch_size.is_some_and(|b| !(1..=most).contains(&b)) {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("batch_size must be between 1 and {most}, not {}", batch_size.unwrap_or_default()),
            "direct: each batch is one transaction (NULL: 4 × the endpoint's max_concurrency); batch: requests per Batch API file (NULL: 1000)",
        );
    }
    if unsafe { pg_sys::IsTransactionBlock() } {
        raise_with(
            PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            "inf_synthesize cannot run inside a transaction block",
            "it commits after each batch: CALL it on its own, not after BEGIN",
        );
    }
    let row = EndpointRow::load(endpoint);
    let prompt = Prompt::load(stage.name(), prompt_version);
    let batch_size = batch_size.unwrap_or_else(|| {
        if batch_api {
            1000
        } else {
            (4 * row.max_concurrency).clamp(8, 256) as i32
        }
    });
    // Runs whose backend is gone (a kill, a crash) will never finish.
    Spi::run(
        "UPDATE inf_ir.llm_runs r SET state = 'interrupted', finished_at = r.updated_at
         WHERE r.state = 'running' AND NOT EXISTS (
             SELECT 1 FROM pg_stat_activity a
             WHERE a.pid = r.pid AND (a.backend_start IS NULL OR a.backend_start = r.backend_start))",
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: marking interrupted runs: {e}"));
    let count_sql = pending_sql(stage, filter, true);
    let model_evaluator = evaluator(&row.model);
    // A filter that does not parse or names an unknown column fails here,
    // before anything is recorded: say which columns it may use.
    let pending = PgTryBuilder::new(|| {
        Spi::get_one_with_args::<i64>(&count_sql, &pending_args(&model_evaluator, retry_failed, 1))
            .unwrap_or_else(|e| pgrx::error!("inf_ir: counting pending {} items: {e}", stage.name()))
            .unwrap_or(0)
    })
    .catch_others(|caught| match (&caught, filter) {
        (CaughtError::PostgresError(report), Some(filter)) => raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("filter {filter:?}: {}", report.message()),
            filter_columns(stage),
        ),
        _ => caught.rethrow(),
    })
    .execute();
    let total = max_items.map_or(pending, |m| pending.min(m as i64));
    let run_id = Spi::get_one_with_args::<i64>(
        "INSERT INTO inf_ir.llm_runs (stage, endpoint, model, prompt_version, filter, max_items, batch_size,
                                      retry_failed, total, mode, backend_start)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()))
         RETURNING run_id",
        &[
            stage.name().into(),
            endpoint.into(),
            row.model.as_str().into(),
            prompt.version.into(),
            filter.into(),
            max_items.into(),
            batch_size.into(),
            retry_failed.into(),
            total.into(),
            if batch_api { "batch" } else { "direct" }.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: recording the run: {e}"))
    .unwrap_or_else(|| pgrx::error!("inf_ir: the run has no id"));
    if batch_api {
        pgrx::notice!(
            "inf_synthesize: {} run {run_id} on \"{endpoint}\" ({}, prompt v{}): {total} items to submit to its Batch API, up to {batch_size} requests a batch",
            stage.name(),
            row.model,
            prompt.version
        );
    } else {
        pgrx::notice!(
            "inf_synthesize: {} run {run_id} on \"{endpoint}\" ({}, prompt v{}): {total} items to process, {batch_size} per batch, {} requests at once",
            stage.name(),
            row.model,
            prompt.version,
            row.max_concurrency
        );
    }
    run_id
}

/// The run as recorded: what it processes and how far it is.
struct Run {
    id: i64,
    stage: Stage,
    endpoint: String,
    prompt_version: i32,
    filter: Option<String>,
    max_items: Option<i64>,
    batch_size: i64,
    retry_failed: bool,
    progress: Progress,
    elapsed: f64,
}

impl Run {
    /// The run, if it is this session's and still running.
    fn load(run_id: i64) -> Self {
        let run = Spi::connect(|client| {
            let rows = client.select(
                "SELECT stage, endpoint, prompt_version, filter, max_items::bigint, batch_size::bigint, retry_failed,
                        total, done, failed, skipped, prompt_tokens + completion_tokens, cost::float8,
                        extract(epoch FROM clock_timestamp() - started_at)::float8
                 FROM inf_ir.llm_runs
                 WHERE run_id = $1 AND state = 'running' AND pid = pg_backend_pid()",
                Some(1),
                &[run_id.into()],
            )?;
            let Some(r) = rows.into_iter().next() else {
                return Ok::<_, pgrx::spi::Error>(None);
            };
            let count = |i: usize| -> Result<u64, pgrx::spi::Error> { Ok(r.get::<i64>(i)?.unwrap_or(0).max(0) as u64) };
            Ok(Some(Run {
                id: run_id,
                stage: stage_of(&r.get::<String>(1)?.unwrap_or_default()),
                endpoint: r.get::<String>(2)?.unwrap_or_default(),
                prompt_version: r.get::<i32>(3)?.unwrap_or(1),
                filter: r.get::<String>(4)?,
                max_items: r.get::<i64>(5)?,
                batch_size: r.get::<i64>(6)?.unwrap_or(8),
                retry_failed: r.get::<bool>(7)?.unwrap_or(false),
                progress: Progress {
                    total: count(8)?,
                    done: count(9)?,
                    failed: count(10)?,
                    skipped: count(11)?,
                    tokens: count(12)?,
                    cost: r.get::<f64>(13)?,
                },
                elapsed: r.get::<f64>(14)?.unwrap_or(0.0),
            }))
        })
        .unwrap_or_else(|e| pgrx::error!("inf_ir: reading inf_ir.llm_runs: {e}"));
        run.unwrap_or_else(|| {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("run {run_id} is not a running run of this session"),
                "inf_llm_run_batch is called by CALL inf_synthesize(...); start a run with that",
            )
        })
    }

    /// Items this batch may take: the batch size, or what is left of max_items.
    fn batch_limit(&self) -> i64 {
        let left = self
            .max_items
            .map_or(i64::MAX, |m| m - self.progress.processed() as i64);
        self.batch_size.min(left).max(0)
    }

    fn notice(&self, elapsed: f64) {
        pgrx::notice!(
            "inf_synthesize: {} run {}: {}",
            self.stage.name(),
            self.id,
            self.progress.line(elapsed)
        );
    }
}

/// Process the run's next batch (the procedure commits it); the number of
/// items taken (some may turn out done by a concurrent run), 0 when nothing
/// is left.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_llm_run_batch(run_id: i64) -> i32 {
    let mut run = Run::load(run_id);
    let limit = run.batch_limit();
    let row = EndpointRow::load(&run.endpoint);
    let evaluator = evaluator(&row.model);
    let items = if limit > 0 {
        take_pending(run.stage, run.filter.as_deref(), run.retry_failed, &evaluator, limit)
    } else {
        Vec::new()
    };
    if items.is_empty() {
        pgrx::notice!(
            "inf_synthesize: {} run {} finished: {}",
            run.stage.name(),
            run.id,
            run.progress.line(run.elapsed)
        );
        return 0;
    }
    let taken = items.len() as i32;
    let items = not_yet_done(run.stage, run.retry_failed, items);
    if items.is_empty() {
        return taken;
    }
    let stage = run.stage;
    let prompt = Prompt::load(stage.name(), Some(run.prompt_version));
    let jobs: Vec<Job> = items
        .iter()
        .enumerate()
        .map(|(i, item)| prompt.job(&row, stage.name(), i, &prompt.render(stage.name(), &item.slots())))
        .collect();
    let positives: Vec<Positive> = items.iter().map(|i| i.positive.clone()).collect();
    let schema = prompt.reply_schema.clone();
    let check = Box::new(move |key: usize, body: &str| {
        let reply = parse_reply(body, &schema)?;
        match stages::check(stage, &reply.value, &positives[key]) {
            Ok(()) => Ok(reply),
            Err(reason) => Err(BadReply {
                reason: format!("the reply is unusable: {reason}"),
                text: reply.value.to_string(),
                prompt_tokens: reply.prompt_tokens,
                completion_tokens: reply.completion_tokens,
            }),
        }
    });
    let writer = Writer {
        run_id,
        stage,
        generator: generator(&row.name, &row.model, stage, run.prompt_version),
        evaluator,
    };
    let (mut prompt_tokens, mut completion_tokens) = (0u64, 0u64);
    let started = Instant::now();
    let mut last_notice = Instant::now();
    let mut received = 0;
    runner::run(
        row.transport(),
        jobs,
        row.settings(),
        check,
        &PgInterrupt,
        |key, outcome| {
            let (p, c) = match &outcome {
                Outcome::Done { reply, .. } => (reply.prompt_tokens, reply.completion_tokens),
                Outcome::Failed {
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => (*prompt_tokens, *completion_tokens),
            };
            prompt_tokens += p;
            completion_tokens += c;
            run.progress.tokens += p + c;
            if let Outcome::Failed { failure, reason, .. } = &outcome {
                if failure.is_endpoint_wide() {
                    // Not the item's fault: stop (the batch rolls back) rather
                    // than record every pending item as failed.
                    return Err(EngineError::new(
                        ErrorKind::Inference,
                        format!("LLM endpoint \"{}\" is unusable: {reason}", row.name),
                    )
                    .with_hint(
                        "check that it runs and its base_url, model and key; CALL inf_synthesize again to go on",
                    ));
                }
            }
            match writer.write(&items[key], &outcome) {
                Written::Done => run.progress.done += 1,
                Written::Failed => run.progress.failed += 1,
                Written::Skipped => run.progress.skipped += 1,
            }
            received += 1;
            // The batch's end reports anyway.
            if last_notice.elapsed() >= NOTICE_EVERY && received < items.len() {
                last_notice = Instant::now();
                run.notice(run.elapsed + started.elapsed().as_secs_f64());
            }
            Ok(())
        },
    )
    .unwrap_or_else(|e| crate::pg::errors::raise(e));
    let cost = stages::cost(prompt_tokens, completion_tokens, row.input_price, row.output_price);
    if let Some(c) = cost {
        run.progress.cost = Some(run.progress.cost.unwrap_or(0.0) + c);
    }
    Spi::run_with_args(
        "UPDATE inf_ir.llm_runs
         SET done = $2, failed = $3, skipped = $4,
             prompt_tokens = prompt_tokens + $5, completion_tokens = completion_tokens + $6,
             cost = CASE WHEN $7::float8 IS NULL THEN cost ELSE coalesce(cost, 0) + $7::numeric END,
             updated_at = clock_timestamp()
         WHERE run_id = $1",
        &[
            run_id.into(),
            (run.progress.done as i64).into(),
            (run.progress.failed as i64).into(),
            (run.progress.skipped as i64).into(),
            (prompt_tokens as i64).into(),
            (completion_tokens as i64).into(),
            cost.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: updating run {run_id}: {e}"));
    run.notice(run.elapsed + started.elapsed().as_secs_f64());
    taken
}

pgrx::extension_sql!(
    "REVOKE EXECUTE ON FUNCTION @extschema@.inf_llm_run_start(text, text, integer, text, integer, integer, boolean, text) FROM PUBLIC;
     REVOKE EXECUTE ON FUNCTION @extschema@.inf_llm_run_batch(bigint) FROM PUBLIC;",
    name = "llm_run_privileges",
    requires = [inf_llm_run_start, inf_llm_run_batch]
);
