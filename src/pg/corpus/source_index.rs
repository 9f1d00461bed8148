//! The vector indexes of a table-following corpus, made and retrained by
//! the background embedder with `CREATE INDEX CONCURRENTLY` (writes go on
//! meanwhile): made once the corpus has `inf_ir.background_index_rows`
//! passages and its queue is drained; each of them (the corpus's own and
//! its filter indexes) retrained once the rows it covers have doubled since
//! its lists were trained.

use super::filter_index;
use super::vector_indexes::{create_index_statement, index_exists, index_name};
use crate::pg::gucs;
use crate::pg::sql_text::extension_schema;
use pgrx::prelude::*;

/// One index to build, and the index it replaces once built (a retrain).
pub struct IndexBuild {
    pub name: String,
    pub statement: String,
    pub replaces: Option<String>,
}

/// The corpus's own and filter indexes for these model files, `how` after
/// CREATE INDEX.
pub fn index_statements(corpus_id: i32, fingerprint: &str, how: &str) -> Vec<IndexBuild> {
    let own = index_name(corpus_id, fingerprint);
    let filters = filter_index::corpus_filters(corpus_id);
    std::iter::once((own, None))
        .chain(filters.iter().map(|f| {
            (
                filter_index::index_name(corpus_id, fingerprint, &f.digest),
                Some(f.text.as_str()),
            )
        }))
        .map(|(name, filter)| IndexBuild {
            statement: create_index_statement(&name, corpus_id, fingerprint, filter, how),
            name,
            replaces: None,
        })
        .collect()
}

/// What a live corpus whose queue was just drained needs built, if anything.
pub fn due(corpus_id: i32) -> Vec<IndexBuild> {
    let threshold = gucs::background_index_rows();
    if threshold == 0 {
        return Vec::new();
    }
    let Ok(Some(fingerprint)) = Spi::get_one_with_args::<String>(
        "SELECT m.fingerprint FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model
         WHERE c.corpus_id = $1 AND NOT c.retired AND c.successor_of IS NULL",
        &[corpus_id.into()],
    ) else {
        return Vec::new();
    };
    let own = index_name(corpus_id, &fingerprint);
    if !index_exists(&own) {
        // Counted up to the threshold only: cheap on a corpus of any size.
        let rows = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM (SELECT 1 FROM inf_ir.passages
                                   WHERE corpus_id = $1 AND embedded_with = $2 LIMIT $3) s",
            &[corpus_id.into(), fingerprint.as_str().into(), threshold.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(0);
        if rows < threshold {
            return Vec::new();
        }
        return index_statements(corpus_id, &fingerprint, "CONCURRENTLY IF NOT EXISTS");
    }
    // Each index (own and filter) retrained on its own once its rows have
    // doubled; a filter index smaller than the threshold stays as it is.
    let filters = filter_index::corpus_filters(corpus_id);
    std::iter::once((own, None))
        .chain(filters.iter().map(|f| {
            (
                filter_index::index_name(corpus_id, &fingerprint, &f.digest),
                Some(f.text.as_str()),
            )
        }))
        .filter(|(name, _)| index_exists(name) && has_doubled(name, threshold))
        .map(|(name, filter)| {
            let fresh = format!("{name}_rebuild");
            IndexBuild {
                statement: create_index_statement(&fresh, corpus_id, &fingerprint, filter, "CONCURRENTLY"),
                name: fresh,
                replaces: Some(name),
            }
        })
        .collect()
}

/// Whether index `name` now covers at least `threshold` rows and twice the
/// rows its lists were trained on: its row count as VACUUM and ANALYZE last
/// saw it (`reltuples`).
fn has_doubled(name: &str, threshold: i64) -> bool {
    let (covered, trained) = Spi::get_two_with_args::<f64, i64>(
        &format!(
            "SELECT c.reltuples::float8, i.trained_rows FROM pg_class c,
                    {}.inf_index_info(c.oid::regclass) i
             WHERE c.oid = ('inf_ir.' || $1)::regclass",
            extension_schema()
        ),
        &[name.into()],
    )
    .unwrap_or((None, None));
    let (covered, trained) = (covered.unwrap_or(0.0) as i64, trained.unwrap_or(0));
    covered >= threshold && covered >= 2 * trained.max(1)
}

/// A retrained index takes the old one's name, in one short transaction
/// (DROP INDEX locks the table for its commit: at most `lock_timeout`).
pub fn swap_in(build: &IndexBuild) {
    if let Some(old) = &build.replaces {
        Spi::run("SET LOCAL lock_timeout = '2s'").unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
        Spi::run(&format!("DROP INDEX inf_ir.{old}")).unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
        Spi::run(&format!("ALTER INDEX inf_ir.{} RENAME TO {old}", build.name))
            .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    }
}
