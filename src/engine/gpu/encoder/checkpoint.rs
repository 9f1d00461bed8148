//! A checkpoint folder as the GPU encoders read it: config.json (which
//! architecture, its sizes) and model.safetensors (the weights).

use std::path::Path;

use super::safetensors::SafeTensors;
use crate::engine::error::{EngineError, EngineResult};

pub fn read_config(folder: &Path) -> EngineResult<String> {
    let path = folder.join("config.json");
    std::fs::read_to_string(&path).map_err(|e| EngineError::files(format!("cannot read {}: {e}", path.display())))
}

pub fn weights(folder: &Path) -> EngineResult<SafeTensors> {
    SafeTensors::open(&folder.join("model.safetensors"))
}

/// config.json's model_type, when the GPU runs it (checked before any CUDA call).
pub fn model_type(folder: &Path) -> EngineResult<String> {
    let v: serde_json::Value = serde_json::from_str(&read_config(folder)?)
        .map_err(|e| EngineError::files(format!("{}/config.json is not JSON: {e}", folder.display())))?;
    match v["model_type"].as_str() {
        Some(kind @ ("bert" | "llama" | "qwen2")) => Ok(kind.to_string()),
        other => Err(EngineError::files(format!(
            "the GPU encoder runs BERT, Llama and Qwen2 models, not {:?}",
            other.unwrap_or("(no model_type)")
        ))),
    }
}
