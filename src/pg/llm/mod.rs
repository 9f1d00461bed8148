//! LLM endpoints from SQL: endpoints and the tables (`endpoints`), prompts
//! and their reply-schema check (`prompts`), single requests
//! (`chat`: inf_llm_chat, inf_llm_batch), and the synthesis stages as
//! resumable runs (`stages`, with `pending` for what is left to do and
//! `writer` for what a reply makes; `batch_mode` for the Batch API).
//! Mirrors `crate::engine::llm`; imports the pg plumbing and the engine.

pub mod batch_mode;
pub mod chat;
pub mod endpoints;
pub mod pending;
pub mod prompts;
pub mod stages;
pub mod writer;
