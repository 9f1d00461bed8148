//! LLM re-ranking from SQL: `inf_rerank_llm` (`rerank_llm`) judges
//! candidates with an endpoint's model through the LLM layer's runner, and
//! `judgments` keeps what was judged (per role) so that a repeated search
//! sends nothing. Mirrors `crate::engine::rerank`; imports the pg plumbing,
//! `corpus` (bi-encoder scores, passage texts) and `llm` (endpoints,
//! prompts).

pub mod judgments;
pub mod rerank_llm;

pgrx::extension_sql_file!(
    "../../../sql/rerank.sql",
    name = "rerank_tables",
    requires = ["llm_tables", "llm_prompts_schema_check"]
);
