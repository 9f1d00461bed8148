//! `inf_corpus_index`: a corpus's vector indexes made or retrained for its
//! model's current files, its own and its filter indexes'.

use super::corpora::{ensure_metadata_index, lookup};
use super::filter_index;
use super::vector_indexes::{corpus_indexes, ensure_vector_index, index_name};
use crate::pg::embed::models;
use pgrx::prelude::*;

/// Make (or retrain) the vector indexes of a corpus for its model's current
/// files, its own and one for each filter of inf_filter_index: created when
/// missing, rebuilt when `rebuild` or when the rows they cover have at least
/// doubled since their lists were trained (from 2,000 rows). Indexes for
/// older model files go; the metadata index is made if missing. Returns the
/// name of the corpus's own index.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_corpus_index(corpus: &str, rebuild: default!(bool, false)) -> String {
    let row = lookup(corpus);
    let model = models::lookup(Some(&row.model));
    let name = index_name(row.corpus_id, &model.fingerprint);
    ensure_metadata_index(row.corpus_id);
    let filters = filter_index::corpus_filters(row.corpus_id);
    let wanted: Vec<(String, Option<&str>)> = std::iter::once((name.clone(), None))
        .chain(filters.iter().map(|f| {
            (
                filter_index::index_name(row.corpus_id, &model.fingerprint, &f.digest),
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
