//! The engine: pure Rust, no PostgreSQL, each concern in a folder that
//! `crate::pg` mirrors. `embed/` tokenizes, runs and pools embedding models
//! (ONNX Runtime); `ivf/` is the vector index's algorithms; `llm/` talks to
//! OpenAI-compatible endpoints; `rerank/` judges search candidates with an
//! LLM; `dataset/` holds the ranking and diversity metrics; `gpu/` probes
//! for a CUDA device and proves float16 device candidates exact. Shared by all of them, at this level: `error` (one error type
//! with a hint), `interrupt` (cancel), `simd` (dot products) and `topk`.
//! Folders import this level and each other's public items, never
//! `crate::pg`; the worker host (`crate::worker`) uses `embed/`.

pub mod dataset;
pub mod embed;
pub mod error;
pub mod gpu;
pub mod interrupt;
pub mod ivf;
pub mod llm;
pub mod rerank;
pub mod simd;
pub mod source;
pub mod topk;

pub use embed::model::{BatchOptions, EmbedInput, Embedder, EmbeddingModel, ModelSpec, RuntimeOptions};
pub use embed::pooling::Pooling;
pub use error::{EngineError, EngineResult, ErrorKind};
pub use interrupt::{Interrupt, NeverInterrupt};
