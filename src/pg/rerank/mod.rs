//! LLM re-ranking from SQL: `inf_rerank_llm` (`rerank_llm`) and inf_search's
//! `inf_search_reranked` (`search_reranked`) both go through `reranking`,
//! which judges candidates pointwise (`judge`, cached per role in
//! `judgments`) or listwise (`listwise_run`) in the `mode` asked, falls
//! back as inf_ir.rerank_on_failure says and logs each call's cost
//! (`usage`). Mirrors `crate::engine::rerank`; imports the pg plumbing,
//! `corpus` (bi-encoder scores, passage texts) and `llm` (endpoints,
//! prompts).

pub mod judge;
pub mod judgments;
pub mod listwise_run;
pub mod mode;
pub mod rerank_llm;
pub mod reranking;
pub mod search_reranked;
pub mod usage;

pgrx::extension_sql_file!(
    "../../../sql/rerank.sql",
    name = "rerank_tables",
    requires = ["llm_tables", "llm_prompts_schema_check"]
);
