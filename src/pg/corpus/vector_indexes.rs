//! A corpus's inf_ivf indexes on inf_ir.passages, one per version of its
//! model's files (and one per filter index): their names, which exist, and
//! making or retraining one beside the old (searches go on meanwhile).

use crate::pg::sql_text::{extension_schema, quote_literal};
use pgrx::prelude::*;

/// Name of the vector index of a corpus for one version of its model's files.
pub fn index_name(corpus_id: i32, fingerprint: &str) -> String {
    let prefix: String = fingerprint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!("passages_ivf_{corpus_id}_{}", prefix.to_ascii_lowercase())
}

/// The corpus's vector indexes (any model version, filter indexes too).
pub fn corpus_indexes(corpus_id: i32) -> Vec<String> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = 'inf_ir'::regnamespace
                 AND c.relkind = 'i' AND c.relname LIKE $1 ORDER BY 1",
                None,
                &[format!("passages\\_ivf\\_{corpus_id}\\_%").into()],
            )?
            .map(|r| Ok(r.get::<String>(1)?.unwrap_or_default()))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot list indexes: {e}"))
}

/// Whether the vector index for these model files exists.
pub fn has_index(corpus_id: i32, fingerprint: &str) -> bool {
    index_exists(&index_name(corpus_id, fingerprint))
}

/// Whether the index `inf_ir.<name>` exists.
pub fn index_exists(name: &str) -> bool {
    crate::pg::spi_read::one_planned::<bool>("SELECT to_regclass('inf_ir.' || $1) IS NOT NULL", &[name.into()])
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The statement that makes a vector index of the corpus's passages with
/// these model files (and, for a filter index, that contain `filter`), with
/// `how` after CREATE INDEX (`CONCURRENTLY IF NOT EXISTS`: run by the
/// background embedder as a top-level command).
pub fn create_index_statement(
    name: &str,
    corpus_id: i32,
    fingerprint: &str,
    filter: Option<&str>,
    how: &str,
) -> String {
    format!(
        "CREATE INDEX {how} {name} ON inf_ir.passages USING inf_ivf (embedding)
         WHERE corpus_id = {corpus_id} AND embedded_with = {}{}",
        quote_literal(fingerprint),
        filter.map_or(String::new(), |f| format!(
            " AND metadata @> {}::jsonb",
            quote_literal(f)
        ))
    )
}

/// Create the vector index `name` when missing; rebuild it when `rebuild`
/// or when the rows it covers have at least doubled since it was trained.
pub fn ensure_vector_index(corpus_id: i32, fingerprint: &str, name: &str, filter: Option<&str>, rebuild: bool) {
    if !index_exists(name) {
        Spi::run(&create_index_statement(name, corpus_id, fingerprint, filter, ""))
            .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot create index {name}: {e}"));
        analyze_passages();
        return;
    }
    let rows = Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM inf_ir.passages WHERE corpus_id = $1 AND embedded_with = $2
           AND ($3::jsonb IS NULL OR metadata @> $3::jsonb)",
        &[corpus_id.into(), fingerprint.into(), filter.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    let trained = Spi::get_one_with_args::<i64>(
        &format!(
            "SELECT trained_rows FROM {}.inf_index_info(('inf_ir.' || $1)::regclass)",
            extension_schema()
        ),
        &[name.into()],
    );
    let trained = trained.ok().flatten().unwrap_or(0);
    if rebuild || (rows >= 2000 && rows >= 2 * trained.max(1)) {
        // Build beside the old index (searches go on using it), then swap.
        let fresh = format!("{name}_rebuild");
        Spi::run(&format!("DROP INDEX IF EXISTS inf_ir.{fresh}")).unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
        Spi::run(&create_index_statement(&fresh, corpus_id, fingerprint, filter, ""))
            .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot rebuild index {name}: {e}"));
        Spi::run(&format!(
            "DROP INDEX inf_ir.{name}; ALTER INDEX inf_ir.{fresh} RENAME TO {name}"
        ))
        .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot swap in the rebuilt index {name}: {e}"));
        analyze_passages();
    }
}

/// Fresh statistics after a bulk load: with the old ones the planner takes
/// a new corpus for empty, and a plain `ORDER BY embedding <=> q LIMIT k`
/// reads all its rows through the btree instead of the vector index.
fn analyze_passages() {
    Spi::run("ANALYZE inf_ir.passages").unwrap_or_else(|e| pgrx::error!("inf_ir: cannot analyze inf_ir.passages: {e}"));
}
