//! inf_ir: instruction-following retrieval inside PostgreSQL.
//!
//! `engine` is pure Rust (tokenize, run, pool) with no pgrx; `pg` adapts it to
//! SQL: settings, the model registry, the embedding functions.

pub mod engine;
pub mod formats;
pub(crate) mod pg;

::pgrx::pg_module_magic!();

#[allow(non_snake_case)]
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    pg::init();
}

// A panic must unwind into pgrx's error handling, never abort the server.
#[cfg(not(panic = "unwind"))]
compile_error!("inf_ir must be built with panic = \"unwind\"");

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
