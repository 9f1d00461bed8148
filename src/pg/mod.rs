//! The SQL face of inf_ir: a thin adapter over `crate::engine`, one folder
//! per concern with the engine's names where a concern has both sides.
//! `embed/` (models, inference, the shared worker's client side), `corpus/`
//! (corpora, search, filters, filter indexes), `ivf/` (the index access
//! method), `dataset/` (the InF-IR tuples and their evaluation), `llm/`
//! (endpoints, prompts, the synthesis stages), `rerank/` (LLM re-ranking),
//! `sharding/` and `gpu/` (the CUDA device probe). At this
//! level, the plumbing every folder may import: `errors`, `gucs`
//! (settings), `interrupt` (cancel), `spi_read`, `sql_text`, `top_level`
//! (a utility statement run as a client's would be) and `privileges`. Folders import the plumbing and each other's public
//! items; nothing here imports a folder.

mod corpus;
mod dataset;
mod embed;
mod errors;
mod gpu;
mod gucs;
mod interrupt;
mod ivf;
mod llm;
mod privileges;
mod rerank;
mod sharding;
mod spi_read;
mod sql_text;
mod top_level;

pub fn init() {
    gucs::init();
    ivf::init();
    embed::worker::register_if_preloading();
    corpus::source_embedder::register_launcher_if_preloading();
}
