//! In-memory matrices of corpora, one per corpus per backend, valid for one
//! corpus version (generation + the transaction that wrote it). Any change
//! to a corpus's passages bumps its generation in the same transaction, so a
//! matrix whose version equals the one this snapshot sees holds exactly the
//! passages this snapshot sees.

use super::corpus::CorpusRow;
use super::errors::raise_with;
use crate::engine::topk::CorpusMatrix;
use parking_lot::Mutex;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::collections::HashMap;
use std::sync::Arc;

pub struct LoadedCorpus {
    pub version: (i64, String),
    pub fingerprint: String,
    pub matrix: CorpusMatrix,
    /// Passages without an embedding from the corpus's current model files.
    pub pending: i64,
}

static CACHE: Mutex<Option<HashMap<i32, Arc<LoadedCorpus>>>> = Mutex::new(None);

/// Rows fetched per cursor round trip while loading.
const LOAD_CHUNK: i64 = 10_000;

pub fn get(corpus: &CorpusRow, fingerprint: &str, dimension: usize) -> Arc<LoadedCorpus> {
    if let Some(hit) = CACHE.lock().as_ref().and_then(|c| c.get(&corpus.corpus_id)) {
        if hit.version == corpus.version && hit.fingerprint == fingerprint {
            return hit.clone();
        }
    }
    let loaded = Arc::new(load(corpus, fingerprint, dimension));
    let mut cache = CACHE.lock();
    let map = cache.get_or_insert_with(HashMap::new);
    map.insert(corpus.corpus_id, loaded.clone());
    loaded
}

fn load(corpus: &CorpusRow, fingerprint: &str, dimension: usize) -> LoadedCorpus {
    let (current, pending) = Spi::get_two_with_args::<i64, i64>(
        "SELECT count(*) FILTER (WHERE embedded_with = $2 AND embedding IS NOT NULL),
                count(*) FILTER (WHERE embedded_with IS DISTINCT FROM $2 OR embedding IS NULL)
         FROM inf_ir.passages WHERE corpus_id = $1",
        &[corpus.corpus_id.into(), fingerprint.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot count passages: {e}"));
    let (current, pending) = (current.unwrap_or(0), pending.unwrap_or(0));
    let mut matrix = CorpusMatrix::with_capacity(dimension, current as usize);
    let mut bad_dimension = None;
    Spi::connect(|client| {
        let mut cursor = client.open_cursor(
            "SELECT passage_id, embedding FROM inf_ir.passages
             WHERE corpus_id = $1 AND embedded_with = $2 AND embedding IS NOT NULL",
            &[corpus.corpus_id.into(), fingerprint.into()],
        );
        loop {
            let table = cursor.fetch(LOAD_CHUNK)?;
            if table.is_empty() {
                break;
            }
            for row in table {
                let id = row.get::<i64>(1)?.unwrap_or_default();
                let v = row.get::<Vec<f32>>(2)?.unwrap_or_default();
                if v.len() != dimension {
                    bad_dimension = Some((id, v.len()));
                    return Ok(());
                }
                matrix.push(id, &v);
            }
            pgrx::check_for_interrupts!();
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot load the corpus: {e}"));
    if let Some((id, len)) = bad_dimension {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("passage {id} has a {len}-dimensional embedding; the corpus model makes {dimension}"),
            "the embedding was not written by inf_embed_corpus(); set it to NULL and CALL inf_embed_corpus(corpus)",
        );
    }
    LoadedCorpus {
        version: corpus.version.clone(),
        fingerprint: fingerprint.to_string(),
        matrix,
        pending,
    }
}
