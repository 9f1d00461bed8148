//! A model's copy on the GPU, in the model host (the one process per server
//! that holds models, so one CUDA context per server). Whether a model gets
//! one follows `inf_ir.embed_device`, the device probe and the model folder
//! (a BERT checkpoint's model.safetensors beside its ONNX graph); every "no"
//! keeps a reason for the status view, and ONNX Runtime on the CPU answers.
//! A device failure later sends the model back to the CPU for good.

use crate::engine::embed::batching::plan_batches;
use crate::engine::embed::tokenize::TokenizedText;
use crate::engine::gpu::device::{DevicePreference, DeviceState};
use crate::engine::gpu::encoder::cuda_ops::GpuEncoder;
use crate::engine::{BatchOptions, EngineResult, Interrupt, Pooling};
use parking_lot::Mutex;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// A GPU call pays a launch per kernel: batches of at least the 8,192 tokens
/// this path was written for, whatever the CPU's cache-sized
/// `inf_ir.batch_tokens` default (2,048).
const GPU_MIN_TOKEN_BUDGET: usize = 8192;

pub struct GpuCopy {
    encoder: Mutex<GpuEncoder>,
    pub description: String,
    /// Set when the device failed: the model stays on the CPU from then on.
    failed: AtomicBool,
    why_failed: Mutex<Option<String>>,
}

/// Where a model embeds.
pub enum Placement {
    Gpu(Box<GpuCopy>),
    Cpu { reason: String },
}

/// The placement for a model in `folder` (dimension `dimension`), given the
/// user's preference and what the probe found.
pub fn place(
    preference: DevicePreference,
    device: &DeviceState,
    folder: &Path,
    pooling: Pooling,
    dimension: usize,
) -> Placement {
    let cpu = |reason: String| Placement::Cpu { reason };
    if preference == DevicePreference::Cpu {
        return cpu("inf_ir.embed_device = cpu".into());
    }
    let DeviceState::Cuda { ordinal, .. } = device else {
        return cpu(device
            .to_string()
            .trim_start_matches("cpu (")
            .trim_end_matches(')')
            .to_string());
    };
    if !folder.join("model.safetensors").is_file() || !folder.join("config.json").is_file() {
        return cpu(format!(
            "the GPU encoder reads config.json and model.safetensors, which {} lacks",
            folder.display()
        ));
    }
    match GpuEncoder::load(*ordinal, folder, pooling) {
        Ok(encoder) if encoder.dimension() != dimension => cpu(format!(
            "the checkpoint's hidden size {} is not the model's dimension {dimension}",
            encoder.dimension()
        )),
        Ok(encoder) => Placement::Gpu(Box::new(GpuCopy {
            description: encoder.description().to_string(),
            encoder: Mutex::new(encoder),
            failed: AtomicBool::new(false),
            why_failed: Mutex::new(None),
        })),
        Err(e) => cpu(e.to_string()),
    }
}

impl GpuCopy {
    pub fn usable(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }

    /// Why this copy is no longer used, None while it is.
    pub fn failure(&self) -> Option<String> {
        self.why_failed
            .lock()
            .as_ref()
            .map(|why| format!("the GPU failed: {why}"))
    }

    /// Embed in token-budget batches, as ONNX Runtime does on the CPU, but
    /// never smaller than `GPU_MIN_TOKEN_BUDGET`.
    pub fn embed(
        &self,
        texts: &[TokenizedText],
        batch: BatchOptions,
        interrupt: &dyn Interrupt,
    ) -> EngineResult<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = texts.iter().map(TokenizedText::len).collect();
        let mut out = vec![Vec::new(); texts.len()];
        let mut encoder = self.encoder.lock();
        let budget = batch.token_budget.max(GPU_MIN_TOKEN_BUDGET);
        for indices in plan_batches(&lengths, budget, batch.max_rows) {
            interrupt.checkpoint()?;
            let group: Vec<&TokenizedText> = indices.iter().map(|&i| &texts[i]).collect();
            for (i, v) in indices.into_iter().zip(encoder.embed(&group)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// After a device error: the CPU from now on, and why.
    pub fn fail(&self, why: &str) {
        *self.why_failed.lock() = Some(why.to_string());
        self.failed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cpu_placement_says_why() {
        let reason = |p: Placement| match p {
            Placement::Cpu { reason } => reason,
            Placement::Gpu(_) => panic!("no GPU in this test"),
        };
        let folder = Path::new("/nonexistent");
        let none = DeviceState::Cpu {
            reason: "no CUDA driver: libcuda.so is not on the loader's path".into(),
        };
        assert_eq!(
            reason(place(DevicePreference::Cpu, &none, folder, Pooling::Mean, 384)),
            "inf_ir.embed_device = cpu"
        );
        assert_eq!(
            reason(place(DevicePreference::Cuda, &none, folder, Pooling::Mean, 384)),
            "no CUDA driver: libcuda.so is not on the loader's path"
        );
        // A device, but a folder without the checkpoint: named before any CUDA call.
        let gpu = DeviceState::Cuda {
            ordinal: 0,
            name: "test".into(),
            memory_bytes: 0,
            compute_capability: (9, 0),
        };
        let why = reason(place(DevicePreference::Auto, &gpu, folder, Pooling::Mean, 384));
        assert!(why.contains("model.safetensors, which /nonexistent lacks"), "{why}");
    }
}
