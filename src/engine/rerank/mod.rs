//! Re-ranking search candidates with an LLM that reads the instruction, the
//! query and each passage together, without PostgreSQL. `pointwise`: one
//! request per candidate, its relevance from the log-probabilities of a
//! yes/no answer (the FollowIR / monoT5 way) or from a graded JSON reply;
//! `listwise`: RankGPT-style sliding windows whose replies are
//! permutations; `order`: the final order (LLM score, then the bi-encoder's
//! score, then id); `cache_key`: what a stored judgment is keyed by.
//! Imports `crate::engine::llm` (requests, replies) and the engine's top
//! level; the SQL side will be `crate::pg::rerank`.

pub mod cache_key;
pub mod listwise;
pub mod order;
pub mod pointwise;
