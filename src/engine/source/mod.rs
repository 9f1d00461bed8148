//! Corpora that follow an application's table: what a corpus takes from
//! each source row (`spec`) and the statements that keep inf_ir.passages in
//! step with the table (`statements`: per-corpus SQL functions and
//! statement-level triggers). Pure text generation; `crate::pg::corpus::source`
//! checks the catalog and runs them.

pub mod spec;
pub mod statements;

pub use spec::{KeyColumn, SourceSpec};
