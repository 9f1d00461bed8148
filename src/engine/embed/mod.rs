//! Embedding models without PostgreSQL: a model folder read and checked
//! (`model_folder`), its files' fingerprint (`fingerprint`), the query and
//! passage templates (`template`), tokenizing (`tokenize`), token-budget
//! batches (`batching`) and the arrays of one run (`padded_batch`), ONNX
//! Runtime loaded at run time (`runtime`), what a graph must take and give
//! (`graph_io`), whether its weights fit in memory (`memory_fit`), the
//! model that runs them and pools the output (`model`, `pooling`). May
//! import the engine's top level (`error`, `interrupt`); `crate::pg::embed`
//! and the worker host use it.

pub mod batching;
pub mod fingerprint;
pub mod graph_io;
pub mod memory_fit;
pub mod model;
pub mod model_folder;
pub mod padded_batch;
pub mod pooling;
pub mod runtime;
pub mod template;
pub mod tokenize;
