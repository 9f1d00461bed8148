//! Talking to OpenAI-compatible chat endpoints for the InF-IR synthesis
//! stages, without PostgreSQL: request bodies and reply checks, prompt
//! templates, retry waits, rate limits, the HTTP transport and the runner
//! that keeps many requests in flight, the Batch API client, and the stage
//! logic (what each stage's reply must be). Imports the engine's top level
//! (`error`, `interrupt`) and `ivf::kmeans::SplitMix` for jitter;
//! `crate::pg::llm` stores what it returns.

pub mod batch_api;
pub mod chat;
#[cfg(test)]
mod fault_server;
pub mod prompt;
pub mod rate_limit;
pub mod retry;
pub mod runner;
pub mod schema;
pub mod secret;
pub mod stages;
pub mod transport;
