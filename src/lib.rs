//! inf_ir: instruction-following retrieval inside PostgreSQL.
//!
//! `engine` (tokenize, run, pool, top-k, metrics) and `formats` (file
//! formats) are pure Rust with no pgrx; `pg` adapts them to SQL: settings,
//! the model registry, embedding, corpora and search, the dataset.

pub mod engine;
pub mod formats;
pub(crate) mod pg;
pub mod worker;

::pgrx::pg_module_magic!();

#[allow(non_snake_case)]
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    pg::init();
}

// A panic must unwind into pgrx's error handling, never abort the server.
#[cfg(not(panic = "unwind"))]
compile_error!("inf_ir must be built with panic = \"unwind\"");
