//! Where this session's embeddings come from: the shared worker or a model
//! loaded in this backend (`inf_ir.inference`). Every SQL path asks here.

use crate::engine::{EmbedInput, Embedder, EngineError};
use crate::pg::embed::model_cache;
use crate::pg::embed::models::ModelRow;
use crate::pg::embed::worker::preloaded;
use crate::pg::embed::worker_client::WorkerEmbedder;
use crate::pg::errors::{raise, OrRaise};
use crate::pg::gucs::{self, Inference};
use crate::pg::interrupt::PgInterrupt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Worker,
    Local,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Worker => "worker",
            Mode::Local => "local",
        }
    }
}

pub fn mode() -> Mode {
    match gucs::inference() {
        Inference::Local => Mode::Local,
        Inference::Auto if !preloaded() => Mode::Local,
        Inference::Auto => Mode::Worker,
        Inference::Worker if preloaded() => Mode::Worker,
        Inference::Worker => raise(
            EngineError::worker("inf_ir.inference is 'worker' but the inf_ir worker is not configured").with_hint(
                "add inf_ir to shared_preload_libraries and restart the server, or set inf_ir.inference to auto",
            ),
        ),
    }
}

/// The embedder for `row` under this session's mode.
pub fn embedder(row: &ModelRow) -> Arc<dyn Embedder> {
    match mode() {
        Mode::Local => model_cache::get(row),
        Mode::Worker => Arc::new(WorkerEmbedder::new(row)),
    }
}

/// Embed `inputs` with `row`'s model under this session's settings.
pub fn embed(row: &ModelRow, inputs: &[EmbedInput<'_>]) -> Vec<Vec<f32>> {
    embedder(row)
        .embed(inputs, gucs::batch_options(), &PgInterrupt)
        .or_raise()
}

/// Prove at registration that the model loads and runs where it will be used.
pub fn prove_loadable(row: &ModelRow) {
    match mode() {
        Mode::Local => {
            model_cache::load(row);
        }
        Mode::Worker => {
            embed(row, &[EmbedInput::Passage("inf_ir")]);
        }
    }
}
