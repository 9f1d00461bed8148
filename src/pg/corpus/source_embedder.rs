//! The background embedder of table-following corpora, inside PostgreSQL
//! (like autovacuum: no external process).
//!
//! - The launcher (one per server, started at preload) offers each
//!   database an embedder, one database per second, each again at most every
//!   minute; a database that has no corpus following a table lets it exit
//!   at once.
//! - An embedder (one per database, guarded by a session advisory lock)
//!   drains the corpora's queues with `inf_ir.source_batch`, one batch per
//!   transaction, as the role that made the corpus. Its embedding requests
//!   are marked background: the shared worker runs them only when no
//!   interactive request waits. A batch that fails is rolled back (its rows
//!   stay queued), its error recorded in inf_ir.source_embedding, and its
//!   corpus paused (5 s, doubling to 5 min). SIGTERM stops it at the next
//!   interrupt check; a crash loses at most the open batch.
//! - `inf_create_corpus(..., source)` and `inf_alter_corpus` start this
//!   database's embedder when their transaction commits.

use crate::pg::gucs;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the launcher offers an embedder to a database that has none.
const OFFER_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed batch its corpus waits this long, doubling up to the max.
const ERROR_PAUSE: Duration = Duration::from_secs(5);
const ERROR_PAUSE_MAX: Duration = Duration::from_secs(300);
/// The session advisory lock one embedder per database holds.
const EMBEDDER_LOCK: (i32, i32) = (1718185569, 0);

/// Called from `_PG_init`: at preload, beside the shared worker's supervisor.
pub fn register_launcher_if_preloading() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("inf_ir embed launcher")
        .set_type("inf_ir embed launcher")
        .set_library("inf_ir")
        .set_function("inf_ir_embed_launcher_main")
        .enable_spi_access()
        // Not on a standby: there is nothing it could write.
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// Start the embedder of the current database once this transaction
/// commits (a second one for the same database exits at once).
pub fn start_after_commit() {
    if !crate::pg::embed::worker::preloaded() {
        pgrx::notice!(
            "inf_ir: inf_ir is not in shared_preload_libraries, so no background embedder runs; CALL inf_embed_corpus(corpus) embeds the queued rows"
        );
        return;
    }
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, || {
        let database = unsafe { pg_sys::MyDatabaseId };
        if start_embedder(database, false).is_none() {
            pgrx::warning!(
                "inf_ir: cannot start the background embedder now (max_worker_processes?); the launcher retries within a minute"
            );
        }
    });
}

fn start_embedder(database: pg_sys::Oid, notify_me: bool) -> Option<DynamicBackgroundWorker> {
    let mut builder = BackgroundWorkerBuilder::new(&format!("inf_ir embedder {}", database.to_u32()))
        .set_type("inf_ir embedder")
        .set_library("inf_ir")
        .set_function("inf_ir_embedder_main")
        .set_argument(Some(pg_sys::Datum::from(database.to_u32())))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None);
    if notify_me {
        builder = builder.set_notify_pid(unsafe { pg_sys::MyProcPid });
    }
    builder.load_dynamic().ok()
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn inf_ir_embed_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // Shared catalogs only: pg_database, without holding a database open.
    BackgroundWorker::connect_worker_to_spi_by_oid(None, None);
    let mut running: HashMap<pg_sys::Oid, DynamicBackgroundWorker> = HashMap::new();
    let mut offered: HashMap<pg_sys::Oid, Instant> = HashMap::new();
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        running.retain(|_, w| {
            matches!(
                w.pid(),
                Ok(_) | Err(pgrx::bgworkers::BackgroundWorkerStatus::NotYetStarted)
            )
        });
        let due = connectable_databases()
            .into_iter()
            .find(|db| !running.contains_key(db) && offered.get(db).is_none_or(|t| t.elapsed() >= OFFER_INTERVAL));
        if let Some(db) = due {
            offered.insert(db, Instant::now());
            if let Some(worker) = start_embedder(db, true) {
                running.insert(db, worker);
            }
        }
    }
}

/// Databases that accept connections, from pg_database (a heap scan, as
/// autovacuum's launcher does: no database is needed to read it).
fn connectable_databases() -> Vec<pg_sys::Oid> {
    let mut out = Vec::new();
    unsafe {
        pg_sys::StartTransactionCommand();
        let relation = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let row = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            if (*row).datallowconn && !(*row).datistemplate {
                out.push((*row).oid);
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as i32);
        pg_sys::CommitTransactionCommand();
    }
    out
}

/// A corpus with queued rows (or a successor whose queue ran dry), and the
/// role whose privileges embed it.
struct Pending {
    corpus_id: i32,
    owner: String,
    queued: bool,
    /// A successor (source_switch): the corpus it replaces.
    replaces: Option<i32>,
}

/// What this database's corpora ask of the embedder.
struct Work {
    pending: Vec<Pending>,
    /// Corpora replaced by their successor, to drop.
    retired: Vec<i32>,
}

extern "C-unwind" {
    // The server's own signal handlers (pgrx wraps its bindings as Rust
    // functions, which cannot be handlers).
    #[link_name = "die"]
    fn postgres_die(signal: std::os::raw::c_int);
    #[link_name = "SignalHandlerForConfigReload"]
    fn postgres_reload(signal: std::os::raw::c_int);
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn inf_ir_embedder_main(arg: pg_sys::Datum) {
    unsafe {
        // SIGTERM cancels a batch at its next interrupt check (the batch
        // rolls back); SIGHUP rereads the configuration.
        pg_sys::pqsignal(libc::SIGTERM, Some(postgres_die));
        pg_sys::pqsignal(libc::SIGHUP, Some(postgres_reload));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let database = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    crate::pg::embed::worker_client::set_background();
    let mine = in_transaction(|| {
        let installed = Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'inf_ir')
                    AND to_regclass('inf_ir.source_changes') IS NOT NULL",
        )
        .ok()
        .flatten()
        .unwrap_or(false);
        installed
            && Spi::get_one_with_args::<bool>(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[EMBEDDER_LOCK.0.into(), EMBEDDER_LOCK.1.into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false)
    });
    if !mine {
        return; // no inf_ir here, or this database's embedder already runs
    }
    let mut paused: HashMap<i32, (Instant, Duration)> = HashMap::new();
    // Index builds that failed wait apart: they must not hold up embedding.
    let mut index_paused: HashMap<i32, (Instant, Duration)> = HashMap::new();
    loop {
        let Some(work) = in_transaction(pending_corpora) else {
            return; // no corpus follows a table (or background is off for all): the launcher offers again later
        };
        let mut progressed = false;
        for corpus_id in work.retired {
            progressed |= in_own_transaction(&format!("dropping retired corpus {corpus_id}"), || {
                super::source_switch::drop_retired(corpus_id)
            })
            .unwrap_or_else(|message| {
                pgrx::log!("inf_ir embedder: retired corpus {corpus_id} stays for now: {message}");
                false
            });
        }
        for corpus in work.pending {
            if is_paused(&paused, corpus.corpus_id) {
                continue;
            }
            let step = if !corpus.queued {
                finish_switch(&corpus)
            } else {
                run_batch(&corpus).map(|(progress, drained)| {
                    if drained && corpus.replaces.is_none() && !is_paused(&index_paused, corpus.corpus_id) {
                        match maintain_indexes(&corpus) {
                            Ok(()) => {
                                index_paused.remove(&corpus.corpus_id);
                            }
                            Err(message) => {
                                pause(&mut index_paused, corpus.corpus_id);
                                record_error(corpus.corpus_id, &message);
                            }
                        }
                    }
                    progress
                })
            };
            match step {
                Ok(made_progress) => {
                    paused.remove(&corpus.corpus_id);
                    progressed |= made_progress;
                }
                Err(message) => {
                    pause(&mut paused, corpus.corpus_id);
                    record_error(corpus.corpus_id, &message);
                }
            }
        }
        // This pass's writes go to the statistics system, as an idle
        // backend's do: without it autovacuum would never see the passages
        // and queue rows this long-lived worker writes and deletes.
        unsafe {
            pg_sys::pgstat_report_stat(!progressed);
        }
        if !progressed {
            nap(gucs::background_naptime());
        } else {
            pg_sys::check_for_interrupts!();
            reload_if_asked();
        }
    }
}

fn is_paused(paused: &HashMap<i32, (Instant, Duration)>, corpus_id: i32) -> bool {
    paused.get(&corpus_id).is_some_and(|(until, _)| Instant::now() < *until)
}

/// After a failure: wait 5 s, doubling on each failure in a row up to 5 min.
fn pause(paused: &mut HashMap<i32, (Instant, Duration)>, corpus_id: i32) {
    let wait = paused
        .get(&corpus_id)
        .map_or(ERROR_PAUSE, |(_, p)| (*p * 2).min(ERROR_PAUSE_MAX));
    paused.insert(corpus_id, (Instant::now() + wait, wait));
}

/// Corpora with queued rows; None when no corpus of this database follows a
/// table with background embedding on (or inf_ir was dropped).
fn pending_corpora() -> Option<Work> {
    let installed = Spi::get_one::<bool>("SELECT to_regclass('inf_ir.source_changes') IS NOT NULL")
        .ok()
        .flatten()
        .unwrap_or(false);
    if !installed {
        return None;
    }
    // Live corpora first: their fresh writes go before a successor's backfill.
    let rows = Spi::connect(|client| {
        client
            .select(
                "SELECT c.corpus_id, c.source_owner::text,
                        EXISTS (SELECT 1 FROM inf_ir.source_changes q WHERE q.corpus_id = c.corpus_id),
                        c.successor_of, c.retired
                 FROM inf_ir.corpora c WHERE c.source IS NOT NULL AND (c.background OR c.retired)
                 ORDER BY c.successor_of IS NOT NULL, c.corpus_id",
                None,
                &[],
            )?
            .map(|r| {
                Ok((
                    Pending {
                        corpus_id: r.get::<i32>(1)?.unwrap_or_default(),
                        owner: r.get::<String>(2)?.unwrap_or_default(),
                        queued: r.get::<bool>(3)?.unwrap_or(false),
                        replaces: r.get::<i32>(4)?,
                    },
                    r.get::<bool>(5)?.unwrap_or(false),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .ok()?;
    if rows.is_empty() {
        return None;
    }
    let (retired, live): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, retired)| *retired);
    Some(Work {
        pending: live
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.queued || p.replaces.is_some())
            .collect(),
        retired: retired.into_iter().map(|(p, _)| p.corpus_id).collect(),
    })
}

/// A successor with an empty queue: its indexes (one transaction), then the
/// swap (another). Ok(true) when the switch happened.
fn finish_switch(corpus: &Pending) -> Result<bool, String> {
    let successor = super::source_switch::Successor {
        corpus_id: corpus.corpus_id,
        replaces: corpus.replaces.expect("a successor"),
    };
    let label = format!("finishing the switch of corpus {}", successor.replaces);
    let Some(builds) = in_own_transaction(&label, || {
        super::source_switch::indexes_to_make(&successor, "CONCURRENTLY IF NOT EXISTS")
    })?
    else {
        return Ok(false); // rows were queued meanwhile
    };
    build_indexes(&label, &builds)?;
    in_own_transaction(&label, || super::source_switch::swap(&successor))
}

/// A live corpus whose queue was just drained: its vector indexes made or
/// retrained when due (`source_index`).
fn maintain_indexes(corpus: &Pending) -> Result<(), String> {
    let label = format!("indexing corpus {}", corpus.corpus_id);
    let builds = in_own_transaction(&label, || super::source_index::due(corpus.corpus_id))?;
    build_indexes(&label, &builds)
}

/// Build indexes CONCURRENTLY, as top-level commands: writes to
/// inf_ir.passages go on meanwhile. A failed build leaves an invalid index:
/// dropped, so that the retry builds it again. A retrained index then takes
/// the old one's name.
fn build_indexes(label: &str, builds: &[super::source_index::IndexBuild]) -> Result<(), String> {
    for build in builds {
        pgrx::log!(
            "inf_ir embedder: {label}: {}",
            build.statement.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        if let Err(message) = crate::pg::top_level::run(&build.statement) {
            let _ = in_own_transaction(label, || {
                Spi::run(&format!("DROP INDEX IF EXISTS inf_ir.{}", build.name)).unwrap_or_else(|e| pgrx::error!("{e}"))
            });
            return Err(format!("building index {}: {message}", build.name));
        }
        in_own_transaction(label, || super::source_index::swap_in(build))?;
    }
    if !builds.is_empty() {
        in_own_transaction(label, || {
            Spi::run("ANALYZE inf_ir.passages").unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"))
        })?;
    }
    Ok(())
}

/// `f` in a transaction of its own, as the embedder's own role; an error
/// rolls it back and comes back as its message.
fn in_own_transaction<R>(activity: &str, f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let activity = std::ffi::CString::new(activity).expect("no NUL");
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, activity.as_ptr());
    }
    let outcome = PgTryBuilder::new(|| Ok(f()))
        .catch_others(|caught| Err(crate::pg::errors::caught_message(&caught)))
        .execute();
    unsafe {
        if outcome.is_ok() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
    }
    outcome
}

/// One batch in its own transaction, as the corpus's owner. Ok((progress,
/// drained)): whether it finished some queued rows (rows a writer holds go
/// back to the queue), and whether the queue is empty after it.
fn run_batch(corpus: &Pending) -> Result<(bool, bool), String> {
    in_own_transaction(&format!("embedding queued rows of corpus {}", corpus.corpus_id), || {
        Spi::run_with_args("SELECT set_config('role', $1, true)", &[corpus.owner.as_str().into()])
            .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot act as role {}: {e}", corpus.owner));
        let batch = Spi::get_three_with_args::<i32, i32, i32>(
            "WITH b AS (SELECT * FROM inf_ir.source_batch($1, $2,
                          (SELECT max(change_id) FROM inf_ir.source_changes WHERE corpus_id = $1)))
             SELECT taken, embedded, busy FROM b",
            &[corpus.corpus_id.into(), gucs::background_batch().into()],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
        let (taken, embedded, busy) = (batch.0.unwrap_or(0), batch.1.unwrap_or(0), batch.2.unwrap_or(0));
        Spi::run_with_args(
            "INSERT INTO inf_ir.source_embedding AS s (corpus_id, batches, rows_done, rows_embedded, last_batch_at, last_batch_rate)
             VALUES ($1, 1, $2, $3, clock_timestamp(),
                     $3 / greatest(extract(epoch FROM clock_timestamp() - statement_timestamp()), 0.001))
             ON CONFLICT (corpus_id) DO UPDATE SET batches = s.batches + 1, rows_done = s.rows_done + $2,
                 rows_embedded = s.rows_embedded + $3, last_batch_at = EXCLUDED.last_batch_at,
                 last_batch_rate = EXCLUDED.last_batch_rate",
            &[corpus.corpus_id.into(), ((taken - busy) as i64).into(), (embedded as i64).into()],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: recording the batch: {e}"));
        (taken > busy, super::source_switch::queue_empty(corpus.corpus_id))
    })
}

fn record_error(corpus_id: i32, message: &str) {
    pgrx::log!("inf_ir embedder: a batch of corpus {corpus_id} failed: {message}");
    in_transaction(|| {
        Spi::run_with_args(
            "INSERT INTO inf_ir.source_embedding AS s (corpus_id, last_error, last_error_at)
             SELECT $1, $2, clock_timestamp() WHERE EXISTS (SELECT 1 FROM inf_ir.corpora WHERE corpus_id = $1)
             ON CONFLICT (corpus_id) DO UPDATE SET last_error = EXCLUDED.last_error, last_error_at = EXCLUDED.last_error_at",
            &[corpus_id.into(), message.into()],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: recording an error: {e}"));
    });
}

fn in_transaction<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe + std::panic::RefUnwindSafe) -> R {
    BackgroundWorker::transaction(f)
}

fn nap(timeout: Duration) {
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            timeout.as_millis() as std::os::raw::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        pg_sys::check_for_interrupts!();
    }
    reload_if_asked();
}

fn reload_if_asked() {
    unsafe {
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}
