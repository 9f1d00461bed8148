//! `inf_worker_status()` and the view `inf_ir.worker_status`: where this
//! session embeds, and the shared worker's models, queue and throughput,
//! and the inf_ivf indexes it holds on its device for search.

use crate::pg::embed::inference::{mode, Mode};
use crate::pg::embed::model_cache;
use crate::pg::embed::worker_client;
use crate::worker::protocol::WorkerStatus;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_UNIX: f64 = 946_684_800.0;

fn timestamp(unix_seconds: f64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(((unix_seconds - POSTGRES_EPOCH_UNIX) * 1e6) as pg_sys::TimestampTz).ok()
}

type StatusRow = (
    String,
    String,
    Option<i32>,
    Option<i32>,
    Option<TimestampWithTimeZone>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Vec<String>,
    Option<String>,
    Vec<String>,
    Option<String>,
    Option<pgrx::JsonB>,
);

fn row(mode: Mode, state: String, worker: Option<WorkerStatus>, local_models: Vec<String>) -> StatusRow {
    let w = worker.as_ref();
    let count = |pick: fn(&WorkerStatus) -> u64| w.map(|s| pick(s) as i64);
    (
        mode.name().into(),
        state,
        w.map(|s| s.supervisor_pid),
        w.map(|s| s.host_pid),
        w.and_then(|s| timestamp(s.host_started_at)),
        count(|s| s.host_starts),
        count(|s| s.connections),
        count(|s| s.queue_length),
        count(|s| s.running),
        count(|s| s.requests),
        count(|s| s.texts),
        count(|s| s.tokens),
        count(|s| s.batches),
        w.filter(|s| s.batches > 0)
            .map(|s| s.requests as f64 / s.batches as f64),
        w.filter(|s| s.busy_seconds > 0.0)
            .map(|s| s.tokens as f64 / s.busy_seconds),
        count(|s| s.errors),
        count(|s| s.dropped),
        w.map(|s| s.background_wait_seconds),
        match &worker {
            Some(s) => s.models.iter().map(|m| m.name.clone()).collect(),
            None => local_models.clone(),
        },
        w.map(|s| s.embed_device.clone()),
        match &worker {
            Some(s) => s.models.iter().map(|m| m.device.clone()).collect(),
            // A session's own models run on ONNX Runtime on the CPU.
            None => local_models
                .iter()
                .map(|_| "cpu (this session's own copy)".to_string())
                .collect(),
        },
        w.map(|s| s.search_device.clone()),
        w.map(|s| pgrx::JsonB(serde_json::to_value(&s.search_copies).expect("status serializes"))),
    )
}

/// One row: this session's mode and, in worker mode, the worker's state.
/// (pgrx needs the column list spelled out here, not through `StatusRow`.)
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
        name!(running, Option<i64>),
        name!(requests, Option<i64>),
        name!(texts, Option<i64>),
        name!(tokens, Option<i64>),
        name!(batches, Option<i64>),
        name!(requests_per_batch, Option<f64>),
        name!(tokens_per_second, Option<f64>),
        name!(errors, Option<i64>),
        name!(dropped, Option<i64>),
        name!(background_wait_seconds, Option<f64>),
        name!(models, Vec<String>),
        name!(embed_device, Option<String>),
        name!(model_devices, Vec<String>),
        name!(search_device, Option<String>),
        name!(search_copies, Option<pgrx::JsonB>),
    ),
> {
    let mode = mode();
    TableIterator::once(match mode {
        Mode::Local => row(
            mode,
            "this session loads its own models".into(),
            None,
            model_cache::loaded_names(),
        ),
        Mode::Worker => match worker_client::try_status() {
            Ok(status) => row(mode, "running".into(), Some(status), Vec::new()),
            Err(why) => row(mode, format!("not reachable: {why}"), None, Vec::new()),
        },
    })
}

pgrx::extension_sql!(
    r#"
CREATE VIEW inf_ir.worker_status AS SELECT * FROM @extschema@.inf_worker_status();
GRANT SELECT ON inf_ir.worker_status TO PUBLIC;
"#,
    name = "worker_status_view",
    requires = ["models_table", inf_worker_status]
);
