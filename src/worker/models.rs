//! The host's loaded models: one copy per server, loaded on first request,
//! checked against the registry's fingerprint, least recently used first out.
//! ONNX Runtime always holds the model (it tokenizes, and answers when there
//! is no GPU copy); a GPU copy joins it when `inf_ir.embed_device` and the
//! device allow (`gpu_copy`).

use super::gpu_copy::{self, GpuCopy, Placement};
use super::host::log;
use super::protocol::{LoadedModelStatus, ModelRef};
use crate::engine::embed::fingerprint::{check_model_unchanged, model_files};
use crate::engine::embed::tokenize::TokenizedText;
use crate::engine::gpu::device::{self, DevicePreference, DeviceState};
use crate::engine::{BatchOptions, EmbeddingModel, EngineResult, ErrorKind, Interrupt, RuntimeOptions};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

pub struct HostModel {
    pub key: ModelRef,
    pub model: EmbeddingModel,
    /// The GPU copy, or why the model embeds on the CPU.
    gpu: Result<GpuCopy, String>,
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

impl HostModel {
    /// On the GPU copy when there is a usable one; through ONNX Runtime
    /// otherwise: for good after a device fault, for this request after any
    /// other GPU error (too little memory free, a text it refuses).
    pub fn embed_tokenized(
        &self,
        texts: &[TokenizedText],
        batch: BatchOptions,
        interrupt: &dyn Interrupt,
    ) -> EngineResult<Vec<Vec<f32>>> {
        if let Ok(gpu) = &self.gpu {
            if gpu.usable() {
                match gpu.embed(texts, batch, interrupt) {
                    Ok(vectors) => return Ok(vectors),
                    Err(e) if e.kind == ErrorKind::Cancelled => return Err(e),
                    // A fault of the device itself: the CPU from now on.
                    Err(e) if e.kind == ErrorKind::Device => {
                        log(&format!(
                            "model \"{}\": the GPU failed ({e}); it embeds on the CPU from now on",
                            self.key.spec.name
                        ));
                        gpu.fail(&e.message);
                    }
                    // Too little GPU memory free for this batch, or a text the GPU
                    // path refuses: this request on the CPU, which answers or says why.
                    Err(e) => log(&format!(
                        "model \"{}\": {e}; this request embeds on the CPU",
                        self.key.spec.name
                    )),
                }
            }
        }
        self.model.embed_tokenized(texts, batch, interrupt)
    }

    /// "cuda:0 …" (inf_ir's GPU copy), "onnxruntime cuda", or "cpu (why)".
    pub fn device(&self) -> String {
        let why_not_gpu = match &self.gpu {
            Ok(gpu) => match gpu.failure() {
                None => return gpu.description.clone(),
                Some(failed) => failed,
            },
            Err(reason) => reason.clone(),
        };
        match self.model.provider() {
            "onnxruntime cuda" => "onnxruntime cuda".to_string(),
            "cpu" => format!("cpu ({why_not_gpu})"),
            other => format!("cpu ({why_not_gpu}; {}", other.trim_start_matches("cpu (")),
        }
    }
}

pub struct ModelStore {
    threads: usize,
    max_models: usize,
    embed_device: DevicePreference,
    /// inf_ir.onnxruntime_cuda: ONNX Runtime's own CUDA provider for the sessions.
    onnxruntime_cuda: bool,
    /// Probed once, on the first model load that may use a GPU.
    device: OnceLock<DeviceState>,
    /// Most recently used first.
    loaded: Mutex<Vec<Arc<HostModel>>>,
    /// One load at a time: two sessions asking for a new model load it once.
    loading: Mutex<()>,
}

impl ModelStore {
    pub fn new(threads: usize, max_models: usize, embed_device: DevicePreference, onnxruntime_cuda: bool) -> Self {
        ModelStore {
            threads,
            max_models: max_models.max(1),
            embed_device,
            onnxruntime_cuda,
            device: OnceLock::new(),
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
            cuda_provider: self.onnxruntime_cuda,
        };
        let model = EmbeddingModel::load(spec.clone(), &runtime)?;
        let gpu = match gpu_copy::place(
            self.embed_device,
            self.device(),
            &key.folder,
            spec.pooling,
            spec.dimension,
        ) {
            Placement::Gpu(copy) => {
                log(&format!("model \"{}\" embeds on {}", spec.name, copy.description));
                Ok(*copy)
            }
            Placement::Cpu { reason } => {
                if self.embed_device == DevicePreference::Cuda {
                    log(&format!("model \"{}\" embeds on the CPU: {reason}", spec.name));
                }
                Err(reason)
            }
        };
        let model = Arc::new(HostModel {
            key: key.clone(),
            files_seen: file_stamps(key),
            model,
            gpu,
            requests: AtomicU64::new(0),
        });
        let mut loaded = self.loaded.lock();
        loaded.insert(0, model.clone());
        loaded.truncate(self.max_models);
        Ok(model)
    }

    fn device(&self) -> &DeviceState {
        self.device.get_or_init(|| match self.embed_device {
            DevicePreference::Cpu => DeviceState::Cpu {
                reason: "inf_ir.embed_device = cpu".into(),
            },
            _ => device::probe(0),
        })
    }

    /// The setting and what it found, e.g. "auto: cpu (no CUDA driver …)";
    /// "not probed yet" until a model has loaded.
    pub fn device_summary(&self) -> String {
        let found = self
            .device
            .get()
            .map_or("not probed yet".to_string(), |d| d.to_string());
        format!("{}: {found}", self.embed_device.name())
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
                device: m.device(),
            })
            .collect()
    }
}
