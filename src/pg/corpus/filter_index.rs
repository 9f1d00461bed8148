//! Filter indexes: a partial inf_ivf index over the passages of a corpus
//! that contain one metadata filter (`metadata @> filter`), for a filter an
//! application puts on most searches (a tenant, a language). PostgreSQL keeps
//! it current like the corpus's own index; inf_search with exactly that
//! filter reads it instead of scoring every kept passage.

use crate::engine::EngineError;
use crate::pg::corpus::corpora;
use crate::pg::corpus::vector_indexes;
use crate::pg::embed::models;
use crate::pg::errors::raise;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The one rule for a metadata filter, in inf_search and here alike: a JSON
/// object (`metadata @> filter`). Arrays, strings, numbers and JSON null
/// are refused: `@>` would compare them with the metadata object and keep
/// nothing, silently.
pub fn check_filter_shape(filter: &pgrx::JsonB) {
    if !filter.0.is_object() {
        raise(
            EngineError::invalid(format!("a filter is a JSON object of metadata keys, not {}", filter.0))
                .with_hint(r#"for example '{"lang": "en"}' keeps the passages whose metadata has "lang": "en""#),
        )
    }
}

/// A filter an index can be made for: a JSON object with at least one key
/// (`{}` keeps every passage: that is the corpus's own index).
fn checked_filter(filter: Option<pgrx::JsonB>) -> pgrx::JsonB {
    let Some(f) = filter else {
        raise(EngineError::invalid("filter must not be NULL").with_hint(r#"pass a JSON object, e.g. '{"lang": "en"}'"#))
    };
    check_filter_shape(&f);
    if f.0.as_object().is_some_and(|o| o.is_empty()) {
        raise(
            EngineError::invalid("a filter index needs a filter with at least one key, not {}")
                .with_hint(r#"{} keeps every passage, which the corpus's own index covers; pass the filter inf_search will get, e.g. '{"lang": "en"}'"#),
        )
    }
    f
}

fn required_corpus(corpus: Option<&str>) -> corpora::CorpusRow {
    corpora::lookup(corpus.unwrap_or_else(|| {
        raise(EngineError::invalid("corpus must not be NULL").with_hint("pass the corpus name, e.g. 'default'"))
    }))
}

/// SQL for the digest that names a filter's index, of the jsonb expression
/// `filter`: taken of PostgreSQL's text for the value (keys in its order),
/// so that equal filters name the same index.
fn digest_sql(filter: &str) -> String {
    format!("left(md5({filter}::text), 10)")
}

/// The name of a filter's index (by its digest) for one version of the
/// corpus's model files.
pub fn index_name(corpus_id: i32, fingerprint: &str, digest: &str) -> String {
    format!("{}_f{digest}", vector_indexes::index_name(corpus_id, fingerprint))
}

/// A filter of a corpus that has an index.
pub struct IndexedFilter {
    /// The jsonb value as text, for the index's predicate.
    pub text: String,
    pub digest: String,
}

/// The filters of a corpus that have an index.
pub fn corpus_filters(corpus_id: i32) -> Vec<IndexedFilter> {
    Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT filter::text, {} FROM inf_ir.filter_indexes WHERE corpus_id = $1 ORDER BY 1",
                    digest_sql("filter")
                ),
                None,
                &[corpus_id.into()],
            )?
            .map(|r| {
                Ok(IndexedFilter {
                    text: r.get::<String>(1)?.unwrap_or_default(),
                    digest: r.get::<String>(2)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read inf_ir.filter_indexes: {e}"))
}

/// Make a vector index over the passages of `corpus` that contain `filter`,
/// kept current by PostgreSQL and rebuilt by inf_corpus_index like the
/// corpus's own. Returns its name.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_filter_index(corpus: Option<&str>, filter: Option<pgrx::JsonB>) -> String {
    let row = required_corpus(corpus);
    let filter = checked_filter(filter);
    let model = models::lookup(Some(&row.model));
    let (text, digest) = Spi::get_two_with_args::<String, String>(
        &format!(
            "INSERT INTO inf_ir.filter_indexes (corpus_id, filter) VALUES ($1, $2)
             ON CONFLICT (corpus_id, filter) DO UPDATE SET filter = EXCLUDED.filter
             RETURNING filter::text, {}",
            digest_sql("filter")
        ),
        &[row.corpus_id.into(), filter.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot record the filter index: {e}"));
    let (text, digest) = (text.unwrap_or_default(), digest.unwrap_or_default());
    let name = index_name(row.corpus_id, &model.fingerprint, &digest);
    vector_indexes::ensure_vector_index(row.corpus_id, &model.fingerprint, &name, Some(&text), false);
    name
}

/// Drop the filter index of `filter` (for every version of the model's
/// files). Returns whether there was one.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_drop_filter_index(corpus: Option<&str>, filter: Option<pgrx::JsonB>) -> bool {
    let row = required_corpus(corpus);
    let filter = checked_filter(filter);
    let Some(digest) = Spi::get_one_with_args::<String>(
        &format!(
            "DELETE FROM inf_ir.filter_indexes WHERE corpus_id = $1 AND filter = $2 RETURNING {}",
            digest_sql("filter")
        ),
        &[row.corpus_id.into(), filter.into()],
    )
    .ok()
    .flatten() else {
        return false;
    };
    for index in vector_indexes::corpus_indexes(row.corpus_id) {
        if index.ends_with(&format!("_f{digest}")) || index.ends_with(&format!("_f{digest}_rebuild")) {
            Spi::run(&format!("DROP INDEX inf_ir.{index}")).unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
        }
    }
    true
}

/// The filter index of exactly `filter` for the corpus's current model
/// files, if there is one.
pub fn find(corpus_id: i32, fingerprint: &str, filter: &pgrx::JsonB) -> Option<pg_sys::Oid> {
    crate::pg::spi_read::one_planned::<pg_sys::Oid>(
        &format!(
            "SELECT to_regclass('inf_ir.' || $1 || '_f' || {})::oid",
            digest_sql("$2")
        ),
        &[
            vector_indexes::index_name(corpus_id, fingerprint).into(),
            pgrx::JsonB(filter.0.clone()).into(),
        ],
    )
    .ok()
    .flatten()
}
