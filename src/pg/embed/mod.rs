//! Embedding from SQL: the registered models (`models`, read; `registry`,
//! written), where a session's vectors come from (`inference`: a model
//! loaded in this backend, `model_cache`, or the shared worker), the shared
//! worker's PostgreSQL side (`worker`: registration and supervisor;
//! `worker_client`: a backend's link; `worker_status`), and the SQL
//! functions that embed text (`embedding`). Mirrors `crate::engine::embed`;
//! imports the pg plumbing, the engine and `crate::worker`.

pub mod embedding;
pub mod inference;
pub mod model_cache;
pub mod models;
pub mod registry;
pub mod worker;
pub mod worker_client;
pub mod worker_status;
