//! Corpora: the tables (sql/corpora.sql, sql/embed_corpus.sql), a corpus
//! looked up by name, made (with its metadata index) and dropped (with its
//! vector indexes).

use super::vector_indexes::corpus_indexes;
use crate::pg::embed::models;
use crate::pg::errors::raise_with;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pgrx::extension_sql_file!(
    "../../../sql/corpora.sql",
    name = "corpora_tables",
    requires = ["models_table"]
);
pgrx::extension_sql_file!(
    "../../../sql/embed_corpus.sql",
    name = "embed_corpus_procedure",
    requires = ["corpora_tables"]
);

/// A corpus as search needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusRow {
    pub corpus_id: i32,
    pub model: String,
    /// A corpus that follows a table (search checks each result's source row).
    pub follows_table: bool,
}

pub fn lookup(name: &str) -> CorpusRow {
    let row = crate::pg::spi_read::select_planned(
        "SELECT corpus_id, model, source IS NOT NULL FROM inf_ir.corpora WHERE name = $1",
        &[name.into()],
        |t| {
            let mut out = None;
            for r in t {
                out = Some(CorpusRow {
                    corpus_id: r.get::<i32>(1)?.unwrap_or_default(),
                    model: r.get::<String>(2)?.unwrap_or_default(),
                    follows_table: r.get::<bool>(3)?.unwrap_or(false),
                });
            }
            Ok(out)
        },
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read inf_ir.corpora: {e}"));
    row.unwrap_or_else(|| {
        let names =
            crate::pg::spi_read::one::<String>("SELECT string_agg(name, ', ' ORDER BY name) FROM inf_ir.corpora", &[])
                .ok()
                .flatten()
                .unwrap_or_else(|| "none".into());
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("corpus \"{name}\" does not exist"),
            format!(
                "existing corpora: {names}; create one with inf_create_corpus(name) or inf_load_jsonl(corpus, path)"
            ),
        )
    })
}

/// Create a corpus whose passages are embedded with `model` (default: the
/// default model). Returns its id. With `source`, the corpus follows that
/// table: one passage per row (named by the key `id`, default the primary
/// key), made of the `text` columns, with the `metadata` columns copied for
/// filters; every existing row is queued for embedding.
#[pg_extern(volatile, parallel_unsafe)]
pub fn inf_create_corpus(
    name: &str,
    model: default!(Option<&str>, "NULL"),
    source: default!(Option<&str>, "NULL"),
    id: default!(Option<Vec<String>>, "NULL"),
    text: default!(Option<Vec<String>>, "NULL"),
    metadata: default!(Option<Vec<String>>, "NULL"),
) -> i32 {
    if source.is_none() && (id.is_some() || text.is_some() || metadata.is_some()) {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "id, text and metadata describe a source table, and no source was given",
            "add source => 'schema.table', or leave them out for a corpus you fill yourself",
        );
    }
    if name.starts_with(super::source_switch::RESERVED_PREFIX) {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("corpus name \"{name}\" begins with '.'"),
            "names that begin with '.' are kept for the corpora of a model or text switch (inf_alter_corpus)",
        );
    }
    let model = models::lookup(model).spec.name;
    let taken = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM inf_ir.corpora WHERE name = $1)",
        &[name.into()],
    );
    if taken.ok().flatten().unwrap_or(false) {
        raise_with(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!("corpus \"{name}\" already exists"),
            "pick another name, or inf_drop_corpus(name) first",
        );
    }
    let corpus_id = Spi::get_one_with_args::<i32>(
        "INSERT INTO inf_ir.corpora(name, model) VALUES ($1, $2) RETURNING corpus_id",
        &[name.into(), model.as_str().into()],
    )
    .unwrap_or_else(|e| {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("cannot create corpus \"{name}\": {e}"),
            "corpus names are unique, 1 to 63 letters, digits, '_', '.' or '-'",
        )
    })
    .expect("RETURNING gives a row");
    ensure_metadata_index(corpus_id);
    if let Some(table) = source {
        let request = super::source::SourceRequest {
            table,
            id,
            text: text.unwrap_or_default(),
            metadata: metadata.unwrap_or_default(),
        };
        let (oid, spec) = super::source::describe(corpus_id, &request);
        super::source::attach(oid, &spec);
        super::source_embedder::start_after_commit();
    }
    corpus_id
}

/// Name of a corpus's metadata index (a partial GIN index, jsonb_path_ops).
pub fn metadata_index_name(corpus_id: i32) -> String {
    format!("passages_metadata_{corpus_id}")
}

/// The index that finds the passages a metadata filter keeps, so that
/// inf_search can score exactly those (for selective filters).
pub fn ensure_metadata_index(corpus_id: i32) {
    Spi::run(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON inf_ir.passages USING gin (metadata jsonb_path_ops)
         WHERE corpus_id = {corpus_id}",
        metadata_index_name(corpus_id)
    ))
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot create the metadata index of corpus {corpus_id}: {e}"));
}

/// Drop a corpus, its passages, its vector and metadata indexes (and a
/// switch under way). Returns whether it existed.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_drop_corpus(name: &str) -> bool {
    match Spi::get_one_with_args::<i32>("SELECT corpus_id FROM inf_ir.corpora WHERE name = $1", &[name.into()]) {
        Ok(Some(id)) => {
            drop_corpus(id);
            true
        }
        _ => false,
    }
}

/// Drop corpus `id` with everything it made: its successor first, its
/// triggers and functions, its indexes, its row (its passages cascade).
pub fn drop_corpus(id: i32) {
    let successors = Spi::get_one_with_args::<Vec<i32>>(
        "SELECT array_agg(corpus_id) FROM inf_ir.corpora WHERE successor_of = $1",
        &[id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    for successor in successors {
        drop_corpus(successor);
    }
    super::source::detach(id);
    for index in corpus_indexes(id) {
        Spi::run(&format!("DROP INDEX inf_ir.{index}")).unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    }
    Spi::run(&format!("DROP INDEX IF EXISTS inf_ir.{}", metadata_index_name(id)))
        .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    Spi::run_with_args("DELETE FROM inf_ir.corpora WHERE corpus_id = $1", &[id.into()])
        .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
}

/// Change a corpus's settings. `background`: whether the background embedder
/// drains the queue of a corpus that follows a table (off: the rows stay
/// queued until `CALL inf_embed_corpus` or until it is turned on again).
/// `model`, `text`: re-embed a corpus that follows a table with another
/// model or other text columns, in the background; searches use the current
/// embeddings until the new set is complete, then switch at once
/// (`source_switch`).
#[pg_extern(volatile, parallel_unsafe)]
fn inf_alter_corpus(
    name: &str,
    background: default!(Option<bool>, "NULL"),
    model: default!(Option<&str>, "NULL"),
    text: default!(Option<Vec<String>>, "NULL"),
) {
    let corpus = lookup(name);
    if model.is_some() || text.is_some() {
        super::source_switch::begin(name, &corpus, model, text);
    }
    if let Some(on) = background {
        if !corpus.follows_table {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("corpus \"{name}\" does not follow a table, so it has no background embedding"),
                "background applies to corpora made with inf_create_corpus(name, source => ...); embed others with CALL inf_embed_corpus(name)",
            );
        }
        Spi::run_with_args(
            "UPDATE inf_ir.corpora SET background = $2 WHERE corpus_id = $1 OR successor_of = $1",
            &[corpus.corpus_id.into(), on.into()],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
        if on {
            super::source_embedder::start_after_commit();
        }
    }
}
