//! `inf_worker_status()` and the view `inf_ir.worker_status`: where this
//! session embeds, and the shared worker's models, queue and throughput.

use super::inference::{mode, Mode};
use super::model_cache;
use super::worker_client;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_UNIX: f64 = 946_684_800.0;

fn timestamp(unix_seconds: f64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(((unix_seconds - POSTGRES_EPOCH_UNIX) * 1e6) as pg_sys::TimestampTz).ok()
}

/// One row: this session's mode and, in worker mode, the worker's state.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn inf_worker_status() -> TableIterator<
    'static,
    (
        name!(mode, String),
        name!(state, String),
        name!(worker_pid, Option<i32>),
        name!(host_pid, Option<i32>),
        name!(host_started_at, Option<TimestampWithTimeZone>),
        name!(host_starts, Option<i64>),
        name!(connections, Option<i64>),
        name!(queue_length, Option<i64>),
        name!(requests, Option<i64>),
        name!(texts, Option<i64>),
        name!(tokens, Option<i64>),
        name!(batches, Option<i64>),
        name!(requests_per_batch, Option<f64>),
        name!(tokens_per_second, Option<f64>),
        name!(errors, Option<i64>),
        name!(dropped, Option<i64>),
        name!(models, Vec<String>),
    ),
> {
    let mode = mode();
    if mode == Mode::Local {
        let models = model_cache::loaded_names();
        return TableIterator::once((
            mode.name().into(),
            "this session loads its own models".into(),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            models,
        ));
    }
    match worker_client::try_status() {
        Err(why) => TableIterator::once((
            mode.name().into(),
            format!("not reachable: {why}"),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Vec::new(),
        )),
        Ok(s) => {
            let per_batch = (s.batches > 0).then(|| s.requests as f64 / s.batches as f64);
            let tokens_per_second = (s.busy_seconds > 0.0).then(|| s.tokens as f64 / s.busy_seconds);
            TableIterator::once((
                mode.name().into(),
                "running".into(),
                Some(s.supervisor_pid),
                Some(s.host_pid),
                timestamp(s.host_started_at),
                Some(s.host_starts as i64),
                Some(s.connections as i64),
                Some(s.queue_length as i64),
                Some(s.requests as i64),
                Some(s.texts as i64),
                Some(s.tokens as i64),
                Some(s.batches as i64),
                per_batch,
                tokens_per_second,
                Some(s.errors as i64),
                Some(s.dropped as i64),
                s.models.into_iter().map(|m| m.name).collect(),
            ))
        }
    }
}

pgrx::extension_sql!(
    r#"
CREATE VIEW inf_ir.worker_status AS SELECT * FROM @extschema@.inf_worker_status();
GRANT SELECT ON inf_ir.worker_status TO PUBLIC;
"#,
    name = "worker_status_view",
    requires = ["models_table", inf_worker_status]
);
