//! `inf_load_jsonl`: passages from a JSONL file on the server (BEIR layout)
//! into a corpus, whole file or nothing.

use super::corpora::{inf_create_corpus, lookup};
use crate::engine::EngineError;
use crate::pg::errors::raise;
use crate::pg::privileges;
use pgrx::prelude::*;

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
        if n % 10_000 == 0 {
            pgrx::check_for_interrupts!(); // a file of millions of lines parses for seconds
        }
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
        inf_create_corpus(corpus, model, None, None, None, None);
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
