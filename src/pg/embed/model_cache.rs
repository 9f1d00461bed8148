//! Models loaded in this backend, keyed by name and checked against the
//! registry row on every use, so a re-registration or a changed file is
//! noticed at once. Used in local mode (inf_ir not preloaded); with
//! preloading the shared worker holds each model once per server.

use crate::engine::embed::fingerprint::check_model_unchanged;
use crate::engine::{EmbeddingModel, RuntimeOptions};
use crate::pg::embed::models::ModelRow;
use crate::pg::errors::{raise_with, OrRaise};
use crate::pg::gucs;
use parking_lot::Mutex;
use pgrx::PgSqlErrorCode;
use std::collections::HashMap;
use std::sync::Arc;

struct Cached {
    row: ModelRow,
    runtime: RuntimeOptions,
    model: Arc<EmbeddingModel>,
}

static CACHE: Mutex<Option<HashMap<String, Cached>>> = Mutex::new(None);

pub fn runtime_options() -> RuntimeOptions {
    let library = gucs::onnxruntime_library().unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            "inf_ir.onnxruntime_library is not set",
            "a superuser sets it to libonnxruntime.so.1.31.x, e.g. ALTER SYSTEM SET inf_ir.onnxruntime_library = \
             '/var/lib/inf_ir/onnxruntime/libonnxruntime.so.1.31.1' (scripts/setup.sh installs it)",
        )
    });
    RuntimeOptions {
        library,
        intra_threads: gucs::threads(),
        cuda_provider: gucs::onnxruntime_cuda(),
    }
}

/// The loaded model for `row`, loading it if this backend has none that matches.
pub fn get(row: &ModelRow) -> Arc<EmbeddingModel> {
    let runtime = runtime_options();
    if let Some(cached) = CACHE.lock().as_ref().and_then(|c| c.get(&row.spec.name)) {
        if cached.row == *row && cached.runtime == runtime {
            return cached.model.clone();
        }
    }
    check_model_unchanged(
        &row.spec.name,
        &row.folder,
        &row.spec.onnx_file,
        &row.spec.tokenizer_file,
        &row.fingerprint,
    )
    .or_raise();
    load(row)
}

/// Load `row`'s model into this backend's cache. Callers have checked its
/// fingerprint (`get` against the files, registration by computing it).
pub fn load(row: &ModelRow) -> Arc<EmbeddingModel> {
    let runtime = runtime_options();
    let model = Arc::new(EmbeddingModel::load(row.spec.clone(), &runtime).or_raise());
    CACHE.lock().get_or_insert_with(HashMap::new).insert(
        row.spec.name.clone(),
        Cached {
            row: row.clone(),
            runtime,
            model: model.clone(),
        },
    );
    model
}

/// Names of the models loaded in this backend.
pub fn loaded_names() -> Vec<String> {
    let mut names: Vec<String> = CACHE
        .lock()
        .as_ref()
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}
