//! The real model that scripts/setup.sh installs ($INF_IR_HOME, default
//! /var/lib/inf_ir), for the integration tests; `None` (and a note) when it
//! is not installed, so that they skip.

#![allow(dead_code)] // each test crate uses part of it

pub mod encoder_harness;

use inf_ir::engine::embed::model_folder;
use inf_ir::engine::ModelSpec;
use std::path::PathBuf;

pub fn home() -> PathBuf {
    PathBuf::from(std::env::var("INF_IR_HOME").unwrap_or_else(|_| "/var/lib/inf_ir".into()))
}

pub fn model_dir() -> Option<PathBuf> {
    let dir = home().join("models/all-MiniLM-L6-v2");
    if dir.join("model.onnx").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: no model at {} (run scripts/setup.sh)", dir.display());
        None
    }
}

pub fn library() -> PathBuf {
    home().join("onnxruntime/libonnxruntime.so.1.31.1")
}

/// A model folder as registration would describe it (defaults from the folder).
fn spec_of(name: &str, dir: PathBuf) -> (ModelSpec, PathBuf) {
    let d = model_folder::inspect(&dir).unwrap();
    let pooling = d.pooling_or(None).unwrap();
    let spec = ModelSpec {
        name: name.into(),
        onnx_file: d.onnx_file,
        tokenizer_file: d.tokenizer_file,
        query_template: d.query_template,
        passage_template: d.passage_template,
        pooling,
        dimension: d.dimension,
        max_tokens: d.max_tokens,
        pad_token_id: d.pad_token_id,
        padding_side: d.padding_side,
    };
    (spec, dir)
}

/// The installed MiniLM as registration would describe it, and its folder.
pub fn minilm_spec() -> Option<(ModelSpec, PathBuf)> {
    Some(spec_of("minilm", model_dir()?))
}

/// The SmolLM2 decoder folder that scripts/setup.sh exports (ONNX graph and
/// its weights as model.safetensors), as registration would describe it.
pub fn smollm_spec() -> Option<(ModelSpec, PathBuf)> {
    let dir = home().join("models/smollm2-135m-onnx");
    if !dir.join("model.onnx").is_file() || !dir.join("model.safetensors").is_file() {
        eprintln!(
            "skipped: no SmolLM2 export with model.safetensors at {} (run scripts/setup.sh)",
            dir.display()
        );
        return None;
    }
    Some(spec_of("smollm2", dir))
}
