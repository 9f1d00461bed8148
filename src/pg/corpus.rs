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
    /// Generation and the transaction that wrote it: together they name one
    /// committed (or our own) state of the corpus's passages.
    pub version: (i64, String),
}

pub fn lookup(name: &str) -> CorpusRow {
    let row = Spi::connect(|client| {
        let t = client.select(
            "SELECT corpus_id, model, generation, xmin::text FROM inf_ir.corpora WHERE name = $1",
            Some(1),
            &[name.into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let t = t.first();
        Ok(Some(CorpusRow {
            corpus_id: t.get::<i32>(1)?.unwrap_or_default(),
            model: t.get::<String>(2)?.unwrap_or_default(),
            version: (
                t.get::<i64>(3)?.unwrap_or_default(),
                t.get::<String>(4)?.unwrap_or_default(),
            ),
        }))
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read inf_ir.corpora: {e}"));
    row.unwrap_or_else(|| {
        let names = Spi::get_one::<String>("SELECT string_agg(name, ', ' ORDER BY name) FROM inf_ir.corpora")
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
    Spi::get_one_with_args::<i32>(
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
    .expect("RETURNING gives a row")
}

/// Drop a corpus and its passages. Returns whether it existed.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_drop_corpus(name: &str) -> bool {
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
