//! The InF-IR dataset in SQL: seed import, positives, JSONL import and
//! export in the released layout, training triples and the bi-encoder
//! proxy evaluator (`tuples`); ranking metrics, p-MRR and diversity over
//! stored runs (`evaluation`, computed by `crate::engine::dataset`).
//! Imports the pg plumbing, `embed` and the engine.

pub mod evaluation;
pub mod tuples;
