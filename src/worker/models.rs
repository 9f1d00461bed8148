//! The host's loaded models: one copy per server, loaded on first request,
//! checked against the registry's fingerprint, least recently used first out.

use super::protocol::{LoadedModelStatus, ModelRef};
use crate::engine::embed::fingerprint::{check_model_unchanged, model_files};
use crate::engine::{EmbeddingModel, EngineResult, RuntimeOptions};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

pub struct HostModel {
    pub key: ModelRef,
    pub model: EmbeddingModel,
    pub requests: AtomicU64,
    /// (size, mtime) of the fingerprinted files when loaded: a cheap
    /// per-request test that sends a changed file back to the fingerprint check.
    files_seen: Vec<Option<(u64, SystemTime)>>,
}

fn file_stamps(key: &ModelRef) -> Vec<Option<(u64, SystemTime)>> {
    model_files(&key.folder, &key.spec.onnx_file, &key.spec.tokenizer_file)
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

pub struct ModelStore {
    threads: usize,
    max_models: usize,
    /// Most recently used first.
    loaded: Mutex<Vec<Arc<HostModel>>>,
    /// One load at a time: two sessions asking for a new model load it once.
    loading: Mutex<()>,
}

impl ModelStore {
    pub fn new(threads: usize, max_models: usize) -> Self {
        ModelStore {
            threads,
            max_models: max_models.max(1),
            loaded: Mutex::new(Vec::new()),
            loading: Mutex::new(()),
        }
    }

    fn find(&self, key: &ModelRef) -> Option<Arc<HostModel>> {
        let mut loaded = self.loaded.lock();
        let at = loaded.iter().position(|m| m.key == *key)?;
        let model = loaded.remove(at);
        if model.files_seen != file_stamps(key) {
            return None; // changed on disk: dropped here, re-checked by the load
        }
        loaded.insert(0, model.clone());
        Some(model)
    }

    /// The model `key` names, loading it if needed.
    pub fn get(&self, key: &ModelRef) -> EngineResult<Arc<HostModel>> {
        if let Some(model) = self.find(key) {
            return Ok(model);
        }
        let _one_load = self.loading.lock();
        if let Some(model) = self.find(key) {
            return Ok(model);
        }
        let spec = &key.spec;
        check_model_unchanged(
            &spec.name,
            &key.folder,
            &spec.onnx_file,
            &spec.tokenizer_file,
            &key.fingerprint,
        )?;
        let runtime = RuntimeOptions {
            library: key.library.clone(),
            intra_threads: self.threads,
        };
        let model = Arc::new(HostModel {
            key: key.clone(),
            files_seen: file_stamps(key),
            model: EmbeddingModel::load(spec.clone(), &runtime)?,
            requests: AtomicU64::new(0),
        });
        let mut loaded = self.loaded.lock();
        loaded.insert(0, model.clone());
        loaded.truncate(self.max_models);
        Ok(model)
    }

    pub fn status(&self) -> Vec<LoadedModelStatus> {
        self.loaded
            .lock()
            .iter()
            .map(|m| LoadedModelStatus {
                name: m.key.spec.name.clone(),
                dimension: m.key.spec.dimension,
                fingerprint: m.key.fingerprint.clone(),
                requests: m.requests.load(Ordering::Relaxed),
            })
            .collect()
    }
}
