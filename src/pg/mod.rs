//! The SQL face of inf_ir: a thin adapter over `crate::engine`.

mod conninfo;
mod corpus;
mod dataset;
mod embed;
mod errors;
mod evaluation;
mod filter_index;
mod filtered_search;
mod gucs;
mod index_top_k;
mod inference;
mod interrupt;
mod ivf;
mod llm;
mod llm_batch;
mod llm_pending;
mod llm_stages;
mod llm_writer;
mod model_cache;
mod privileges;
mod registry;
mod row_estimate;
mod search;
mod spi_read;
mod sql_expression;
mod worker;
mod worker_client;
mod worker_status;

pub fn init() {
    gucs::init();
    ivf::init();
    worker::register_if_preloading();
}
