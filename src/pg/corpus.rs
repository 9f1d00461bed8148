//! Corpora: creating them, and loading passages from JSONL server files.

use super::errors::{raise, raise_with};
use super::privileges;
use super::registry;
use crate::engine::EngineError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pgrx::extension_sql_file!(
    "../../sql/corpora.sql",
    name = "corpora_tables",
    requires = ["models_table"]
);
pgrx::extension_sql_file!(
    "../../sql/embed_corpus.sql",
    name = "embed_corpus_procedure",
    requires = ["corpora_tables"]
);

/// A corpus as search needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusRow {
    pub corpus_id: i32,
    pub model: String,
}

pub fn lookup(name: &str) -> CorpusRow {
    let (corpus_id, model) = super::spi_read::two_planned::<i32, String>(
        "SELECT corpus_id, model FROM inf_ir.corpora WHERE name = $1",
        &[name.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read inf_ir.corpora: {e}"));
    let row = corpus_id
        .zip(model)
        .map(|(corpus_id, model)| CorpusRow { corpus_id, model });
    row.unwrap_or_else(|| {
        let names =
            super::spi_read::one::<String>("SELECT string_agg(name, ', ' ORDER BY name) FROM inf_ir.corpora", &[])
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
/// default model). Returns its id.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_create_corpus(name: &str, model: default!(Option<&str>, "NULL")) -> i32 {
    let model = registry::lookup(model).spec.name;
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
    let id = Spi::get_one_with_args::<i32>(
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
    ensure_metadata_index(id);
    id
}

/// Name of a corpus's metadata index (a partial GIN index, jsonb_path_ops).
pub fn metadata_index_name(corpus_id: i32) -> String {
    format!("passages_metadata_{corpus_id}")
}

/// The index that finds the passages a metadata filter keeps, so that
/// inf_search can score exactly those (for selective filters).
fn ensure_metadata_index(corpus_id: i32) {
    Spi::run(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON inf_ir.passages USING gin (metadata jsonb_path_ops)
         WHERE corpus_id = {corpus_id}",
        metadata_index_name(corpus_id)
    ))
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot create the metadata index of corpus {corpus_id}: {e}"));
}

/// Drop a corpus, its passages, its vector and metadata indexes. Returns whether it existed.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_drop_corpus(name: &str) -> bool {
    if let Some(id) =
        Spi::get_one_with_args::<i32>("SELECT corpus_id FROM inf_ir.corpora WHERE name = $1", &[name.into()])
            .ok()
            .flatten()
    {
        for index in corpus_indexes(id) {
            Spi::run(&format!("DROP INDEX inf_ir.{index}")).unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
        }
        Spi::run(&format!("DROP INDEX IF EXISTS inf_ir.{}", metadata_index_name(id)))
            .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    }
    Spi::get_one_with_args::<bool>(
        "WITH d AS (DELETE FROM inf_ir.corpora WHERE name = $1 RETURNING 1) SELECT count(*) > 0 FROM d",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

#[derive(serde::Deserialize)]
struct JsonPassage {
    #[serde(alias = "id", rename = "_id")]
    external_id: serde_json::Value,
    #[serde(default)]
    title: Option<String>,
    text: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// Load passages from a JSONL file on the server (BEIR `corpus.jsonl`
/// layout: `_id`, `title`, `text`, optional `metadata`) into `corpus`,
/// creating it if needed. Whole file or nothing: a malformed line is an
/// ERROR naming its line number. Existing external ids are updated (their
/// embedding becomes stale only if the text changed). Superusers and members
/// of pg_read_server_files only.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_load_jsonl(
    corpus: &str,
    path: &str,
    model: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(inserted, i64), name!(updated, i64), name!(unchanged, i64))> {
    privileges::require_read_server_files("load server files");
    let content = privileges::read_server_file(path);
    let mut ids = Vec::new();
    let mut titles: Vec<Option<String>> = Vec::new();
    let mut bodies = Vec::new();
    let mut metadata = Vec::new();
    for (n, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: JsonPassage = serde_json::from_str(line).unwrap_or_else(|e| {
            raise(
                EngineError::invalid(format!("{path} line {}: {e}", n + 1))
                    .with_hint("each line must be a JSON object with \"_id\" and \"text\" (and optional \"title\", \"metadata\"); nothing was loaded"),
            )
        });
        ids.push(match p.external_id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
        titles.push(p.title.filter(|t| !t.is_empty()));
        bodies.push(p.text);
        metadata.push(p.metadata.unwrap_or(serde_json::json!({})).to_string());
    }
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM inf_ir.corpora WHERE name = $1)",
        &[corpus.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !exists {
        inf_create_corpus(corpus, model);
    }
    let corpus_id = lookup(corpus).corpus_id;
    let counts = Spi::connect_mut(|client| {
        let t = client.update(
            "WITH input AS (
                 SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS i(external_id, title, body, metadata)
             ), upsert AS (
                 INSERT INTO inf_ir.passages AS p (corpus_id, external_id, title, body, metadata)
                 SELECT $1, external_id, title, body, metadata::jsonb FROM input
                 ON CONFLICT (corpus_id, external_id) DO UPDATE
                     SET title = EXCLUDED.title, body = EXCLUDED.body, metadata = EXCLUDED.metadata
                     WHERE (p.title, p.body, p.metadata) IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.body, EXCLUDED.metadata)
                 RETURNING (xmax = 0) AS inserted
             )
             SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
                    (SELECT count(*) FROM input) - count(*)
             FROM upsert",
            None,
            &[corpus_id.into(), ids.into(), titles.into(), bodies.into(), metadata.into()],
        )?;
        let t = t.first();
        Ok::<_, pgrx::spi::SpiError>((
            t.get::<i64>(1)?.unwrap_or(0),
            t.get::<i64>(2)?.unwrap_or(0),
            t.get::<i64>(3)?.unwrap_or(0),
        ))
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: loading {path} failed: {e}"));
    TableIterator::once(counts)
}

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
fn index_exists(name: &str) -> bool {
    super::spi_read::one_planned::<bool>("SELECT to_regclass('inf_ir.' || $1) IS NOT NULL", &[name.into()])
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The statement that makes a vector index of the corpus's passages with
/// these model files (and, for a filter index, that contain `filter`).
fn create_index_sql(name: &str, corpus_id: i32, fingerprint: &str, filter: Option<&str>) -> String {
    format!(
        "CREATE INDEX {name} ON inf_ir.passages USING inf_ivf (embedding)
         WHERE corpus_id = {corpus_id} AND embedded_with = {}{}",
        quote_literal(fingerprint),
        filter.map_or(String::new(), |f| format!(
            " AND metadata @> {}::jsonb",
            quote_literal(f)
        ))
    )
}

/// A string as an SQL literal (standard_conforming_strings is on by default
/// since PostgreSQL 9.1; backslashes are doubled for E'' form either way).
pub fn quote_literal(text: &str) -> String {
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// The schema inf_ir's functions and operators live in, quoted.
pub fn extension_schema() -> String {
    thread_local! {
        static SCHEMA: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
    }
    SCHEMA.with(|s| {
        s.get_or_init(|| {
            super::spi_read::one::<String>(
                "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'inf_ir'",
                &[],
            )
            .ok()
            .flatten()
            .unwrap_or_else(|| "public".into())
        })
        .clone()
    })
}

/// Make (or retrain) the vector indexes of a corpus for its model's current
/// files, its own and one for each filter of inf_filter_index: created when
/// missing, rebuilt when `rebuild` or when the rows they cover have at least
/// doubled since their lists were trained (from 2,000 rows). Indexes for
/// older model files go; the metadata index is made if missing. Returns the
/// name of the corpus's own index.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_corpus_index(corpus: &str, rebuild: default!(bool, false)) -> String {
    let row = lookup(corpus);
    let model = registry::lookup(Some(&row.model));
    let name = index_name(row.corpus_id, &model.fingerprint);
    ensure_metadata_index(row.corpus_id);
    let filters = super::filter_index::corpus_filters(row.corpus_id);
    let wanted: Vec<(String, Option<&str>)> = std::iter::once((name.clone(), None))
        .chain(filters.iter().map(|f| {
            (
                super::filter_index::index_name(row.corpus_id, &model.fingerprint, &f.digest),
                Some(f.text.as_str()),
            )
        }))
        .collect();
    for old in corpus_indexes(row.corpus_id) {
        if !old.ends_with("_rebuild") && !wanted.iter().any(|(w, _)| *w == old) {
            Spi::run(&format!("DROP INDEX inf_ir.{old}")).unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
        }
    }
    for (index, filter) in &wanted {
        ensure_vector_index(row.corpus_id, &model.fingerprint, index, *filter, rebuild);
    }
    name
}

/// Create the vector index `name` when missing; rebuild it when `rebuild`
/// or when the rows it covers have at least doubled since it was trained.
pub fn ensure_vector_index(corpus_id: i32, fingerprint: &str, name: &str, filter: Option<&str>, rebuild: bool) {
    if !index_exists(name) {
        Spi::run(&create_index_sql(name, corpus_id, fingerprint, filter))
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
        Spi::run(&create_index_sql(&fresh, corpus_id, fingerprint, filter))
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
