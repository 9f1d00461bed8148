//! The embedding engine: pure Rust, no PostgreSQL. The SQL layer (`crate::pg`)
//! and, later, a shared background worker host it through `Embedder`.

pub mod batching;
pub mod error;
pub mod fingerprint;
pub mod ivf;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod model_folder;
pub mod pooling;
pub mod runtime;
pub mod simd;
pub mod template;
pub mod tokenize;
pub mod topk;

pub use error::{EngineError, EngineResult, ErrorKind};
pub use model::{
    BatchOptions, EmbedInput, Embedder, EmbeddingModel, Interrupt, ModelSpec, NeverInterrupt, RuntimeOptions,
};
pub use pooling::Pooling;
