//! Changing the model or the text columns of a corpus that follows a table,
//! without a gap in search.
//!
//! `inf_alter_corpus(name, model => ..., text => ...)` makes a successor: a
//! hidden corpus (`.next-<id>`) that follows the same table with the new
//! settings, its own triggers and a backfill of every row. The background
//! embedder drains it beside the live corpus, which searches keep using.
//! When the successor's queue is empty, the embedder gives it the vector
//! indexes the live corpus has, then in one short transaction renames the
//! live corpus `.retired-<id>` and gives the successor its name: a search
//! resolves the name once, in its snapshot, so it ranks with one complete
//! set of embeddings, the old or the new. The retired corpus is dropped
//! right after (its triggers, indexes and passages), retried until the
//! locks it needs come free.

use super::corpora::{drop_corpus, ensure_metadata_index, CorpusRow};
use super::vector_indexes::corpus_indexes;
use crate::pg::embed::models;
use crate::pg::errors::raise_with;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Names of a successor and of a retired corpus begin with '.': a name
/// inf_create_corpus refuses, so they never clash with a user's corpus.
pub const RESERVED_PREFIX: &str = ".";

pub fn successor_name(corpus_id: i32) -> String {
    format!(".next-{corpus_id}")
}

pub fn retired_name(corpus_id: i32) -> String {
    format!(".retired-{corpus_id}")
}

/// What a table-following corpus is made of now.
struct Following {
    table: String,
    key: Vec<String>,
    text: Vec<String>,
    metadata: Vec<String>,
    background: bool,
    successor: Option<i32>,
}

fn following(corpus_id: i32) -> Following {
    Spi::connect(|client| {
        let t = client.select(
            "SELECT format('%I.%I', n.nspname, cl.relname), c.source_key, c.source_text,
                    coalesce(c.source_metadata, '{}'), c.background,
                    (SELECT s.corpus_id FROM inf_ir.corpora s WHERE s.successor_of = c.corpus_id)
             FROM inf_ir.corpora c JOIN pg_class cl ON cl.oid = c.source
             JOIN pg_namespace n ON n.oid = cl.relnamespace
             WHERE c.corpus_id = $1",
            None,
            &[corpus_id.into()],
        )?;
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Following {
            table: r.get::<String>(1)?.unwrap_or_default(),
            key: r.get::<Vec<String>>(2)?.unwrap_or_default(),
            text: r.get::<Vec<String>>(3)?.unwrap_or_default(),
            metadata: r.get::<Vec<String>>(4)?.unwrap_or_default(),
            background: r.get::<bool>(5)?.unwrap_or(true),
            successor: r.get::<i32>(6)?,
        })
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read the source of corpus {corpus_id}: {e}"))
}

/// Start re-embedding `corpus` with a new model and/or text columns (None:
/// as now). A switch already under way is replaced; asking for the current
/// settings cancels it.
pub fn begin(name: &str, corpus: &CorpusRow, model: Option<&str>, text: Option<Vec<String>>) {
    if !corpus.follows_table {
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("corpus \"{name}\" does not follow a table, so inf_alter_corpus cannot re-embed it"),
            "for a corpus you fill yourself, make a new one with inf_create_corpus(name, model), load it, \
             and switch your queries to it",
        );
    }
    if name.starts_with(RESERVED_PREFIX) {
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("corpus \"{name}\" is part of a switch under way"),
            "alter the corpus it replaces (see inf_ir.source_progress.replaces)",
        );
    }
    let now = following(corpus.corpus_id);
    let new_model = model.map_or_else(|| corpus.model.clone(), |m| models::lookup(Some(m)).spec.name);
    let new_text = text.unwrap_or_else(|| now.text.clone());
    if let Some(old) = now.successor {
        drop_corpus(old);
    }
    if new_model == corpus.model && new_text == now.text {
        if now.successor.is_some() {
            pgrx::notice!(
                "inf_ir: corpus \"{name}\": the switch under way is cancelled (these are its current settings)"
            );
        } else {
            pgrx::notice!("inf_ir: corpus \"{name}\" already has this model and these text columns; nothing to do");
        }
        return;
    }
    let successor_id = Spi::get_one_with_args::<i32>(
        "INSERT INTO inf_ir.corpora (name, model, background, successor_of) VALUES ($1, $2, $3, $4)
         RETURNING corpus_id",
        &[
            successor_name(corpus.corpus_id).into(),
            new_model.as_str().into(),
            now.background.into(),
            corpus.corpus_id.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot make the successor of corpus \"{name}\": {e}"))
    .expect("RETURNING gives a row");
    ensure_metadata_index(successor_id);
    // The filters that have a vector index of their own keep it after the switch.
    Spi::run_with_args(
        "INSERT INTO inf_ir.filter_indexes (corpus_id, filter) SELECT $2, filter FROM inf_ir.filter_indexes WHERE corpus_id = $1",
        &[corpus.corpus_id.into(), successor_id.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    let request = super::source::SourceRequest {
        table: &now.table,
        id: Some(now.key),
        text: new_text.clone(),
        metadata: now.metadata,
    };
    let (oid, spec) = super::source::describe(successor_id, &request);
    super::source::attach(oid, &spec);
    let rows = Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM inf_ir.source_changes WHERE corpus_id = $1",
        &[successor_id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    pgrx::notice!(
        "inf_ir: corpus \"{name}\": {rows} rows queued for model {new_model}, text {}; searches use the current \
         embeddings until all are embedded, then switch at once (progress: inf_ir.source_progress, corpus {})",
        new_text.join(" + "),
        successor_name(corpus.corpus_id)
    );
    if now.background {
        super::source_embedder::start_after_commit();
    } else {
        pgrx::notice!(
            "inf_ir: background embedding of \"{name}\" is off: CALL inf_embed_corpus('{name}') embeds the new set and switches, or turn it on with inf_alter_corpus('{name}', background => true)"
        );
    }
}

/// A successor whose queue may be empty: the corpus it replaces.
pub struct Successor {
    pub corpus_id: i32,
    pub replaces: i32,
}

/// The first step of finishing a switch: None while the successor still
/// has queued rows; else the statements that make the vector indexes it
/// needs (the live corpus's own and filter indexes, for the successor's
/// model files; none when the live corpus has none), `how` after CREATE
/// INDEX.
pub fn indexes_to_make(successor: &Successor, how: &str) -> Option<Vec<super::source_index::IndexBuild>> {
    if !queue_empty(successor.corpus_id) {
        return None;
    }
    if corpus_indexes(successor.replaces).is_empty() {
        return Some(Vec::new());
    }
    let model = Spi::get_one_with_args::<String>(
        "SELECT model FROM inf_ir.corpora WHERE corpus_id = $1",
        &[successor.corpus_id.into()],
    )
    .ok()
    .flatten()?;
    let fingerprint = models::lookup(Some(&model)).fingerprint;
    Some(super::source_index::index_statements(
        successor.corpus_id,
        &fingerprint,
        how,
    ))
}

/// The foreground's first step (inf_finish_corpus_switch): the indexes made
/// in the caller's transaction. Returns whether the swap may follow.
fn prepare_here(successor: &Successor) -> bool {
    let Some(indexes) = indexes_to_make(successor, "IF NOT EXISTS") else {
        return false;
    };
    for build in &indexes {
        Spi::run(&build.statement).unwrap_or_else(|e| pgrx::error!("inf_ir: cannot create index {}: {e}", build.name));
    }
    if !indexes.is_empty() {
        Spi::run("ANALYZE inf_ir.passages").unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    }
    true
}

/// The swap, in its own short transaction: the live corpus is renamed
/// `.retired-<id>`, the successor takes its name. Returns false (nothing
/// done) when rows were queued meanwhile: the next batch takes them first.
pub fn swap(successor: &Successor) -> bool {
    // Both rows locked: a concurrent inf_alter_corpus or inf_drop_corpus waits.
    let live = Spi::get_one_with_args::<String>(
        "SELECT max(name) FILTER (WHERE corpus_id = $2) FROM (
             SELECT corpus_id, name FROM inf_ir.corpora WHERE corpus_id IN ($1, $2) ORDER BY corpus_id FOR UPDATE) c
         HAVING count(*) = 2",
        &[successor.corpus_id.into(), successor.replaces.into()],
    )
    .ok()
    .flatten();
    let Some(live) = live else {
        return false; // cancelled or dropped meanwhile
    };
    if !queue_empty(successor.corpus_id) {
        return false;
    }
    // The retired name first: the unique name is free for the successor.
    Spi::run_with_args(
        "UPDATE inf_ir.corpora SET name = $2, retired = true, retired_xid = pg_current_xact_id(), background = false
         WHERE corpus_id = $1",
        &[successor.replaces.into(), retired_name(successor.replaces).into()],
    )
    .and_then(|_| {
        Spi::run_with_args(
            "UPDATE inf_ir.corpora SET name = $2, successor_of = NULL WHERE corpus_id = $1",
            &[successor.corpus_id.into(), live.as_str().into()],
        )
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot switch corpus \"{live}\": {e}"));
    pgrx::log!(
        "inf_ir embedder: corpus \"{live}\" switched to its re-embedded successor (corpus {} replaces {})",
        successor.corpus_id,
        successor.replaces
    );
    true
}

/// Drop a retired corpus, in two transactions: its passages first (row
/// locks only, so searches and writers go on; a search in an older snapshot
/// still sees them), then, once no snapshot from before the switch is left
/// in this database (such a search may still call the corpus's functions),
/// its triggers, functions, indexes and row (short, but DROP INDEX and DROP
/// TRIGGER take table locks: at most `lock_timeout` is waited for them, and
/// an error leaves the rest for the next try). Returns whether it did
/// anything.
pub fn drop_retired(corpus_id: i32) -> bool {
    let state = Spi::get_two_with_args::<bool, bool>(
        "SELECT c.retired,
                NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                            WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
                              AND a.pid <> pg_backend_pid()
                              AND a.backend_type NOT IN ('autovacuum worker', 'inf_ir embedder')
                              AND a.backend_xmin IS NOT NULL
                              AND age(a.backend_xmin) >= age(xid(c.retired_xid)))
         FROM inf_ir.corpora c WHERE c.corpus_id = $1",
        &[corpus_id.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    if state.0 != Some(true) {
        return false;
    }
    let no_older_snapshot = state.1.unwrap_or(false);
    let deleted = Spi::get_one_with_args::<i64>(
        "WITH d AS (DELETE FROM inf_ir.passages WHERE corpus_id = $1 RETURNING 1) SELECT count(*) FROM d",
        &[corpus_id.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"))
    .unwrap_or(0);
    if deleted > 0 {
        return true;
    }
    if !no_older_snapshot {
        return false;
    }
    Spi::run("SET LOCAL lock_timeout = '2s'").unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    drop_corpus(corpus_id);
    true
}

/// Whether the corpus has no queued rows.
pub fn queue_empty(corpus_id: i32) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT NOT EXISTS (SELECT 1 FROM inf_ir.source_changes WHERE corpus_id = $1)",
        &[corpus_id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Finish the switch of corpus `name` now, in the caller's transaction (the
/// foreground path: `CALL inf_embed_corpus` calls it once it has drained the
/// successor; a server without the background embedder needs it). Returns
/// whether the corpus switched; false, with a NOTICE, when no switch is
/// under way or rows are still queued.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_finish_corpus_switch(name: &str) -> bool {
    sweep_retired();
    let corpus = super::corpora::lookup(name);
    let Some(successor) = Spi::get_one_with_args::<i32>(
        "SELECT corpus_id FROM inf_ir.corpora WHERE successor_of = $1",
        &[corpus.corpus_id.into()],
    )
    .ok()
    .flatten() else {
        pgrx::notice!("inf_ir: corpus \"{name}\" has no switch under way (inf_alter_corpus(name, model => ..., text => ...) starts one)");
        return false;
    };
    let successor = Successor {
        corpus_id: successor,
        replaces: corpus.corpus_id,
    };
    if !prepare_here(&successor) || !swap(&successor) {
        pgrx::notice!(
            "inf_ir: corpus \"{name}\" keeps its current embeddings: rows are still queued for its successor; \
             CALL inf_embed_corpus('{}') embeds them",
            successor_name(corpus.corpus_id)
        );
        return false;
    }
    // Its passages go now; its functions too unless another session's
    // snapshot may still search it (then the next call, or the background
    // embedder, drops it).
    drop_retired(corpus.corpus_id);
    if !drop_retired(corpus.corpus_id) {
        pgrx::notice!(
            "inf_ir: corpus \"{name}\" switched; the old corpus ({}) is dropped once the sessions searching it now are done \
             (by the background embedder, or the next inf_finish_corpus_switch)",
            retired_name(corpus.corpus_id)
        );
    }
    true
}

/// Drop the retired corpora that no snapshot can search any more (the
/// foreground's sweep; the background embedder does its own).
fn sweep_retired() {
    let retired = Spi::get_one::<Vec<i32>>("SELECT array_agg(corpus_id) FROM inf_ir.corpora WHERE retired")
        .ok()
        .flatten()
        .unwrap_or_default();
    for corpus_id in retired {
        drop_retired(corpus_id);
        drop_retired(corpus_id);
    }
}
