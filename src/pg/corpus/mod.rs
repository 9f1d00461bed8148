//! Corpora and search: the tables and a corpus by name (`corpora`), JSONL
//! loading (`load_jsonl`), a corpus's inf_ivf indexes (`vector_indexes`,
//! `corpus_index`), filter indexes (`filter_index`), and `inf_search` /
//! `inf_rerank` (`search`) with its exact filtered path
//! (`filtered_search`), its scan of one given index (`index_top_k`) and the
//! planner's row estimate (`row_estimate`). Imports the pg plumbing,
//! `embed` (models, query embedding), `ivf` (vector reading) and the
//! engine.

pub mod corpora;
pub mod corpus_index;
pub mod filter_index;
pub mod filtered_search;
pub mod index_top_k;
pub mod load_jsonl;
pub mod row_estimate;
pub mod search;
pub mod source;
pub mod source_embedder;
pub mod source_index;
pub mod source_queue;
pub mod source_row_trigger;
pub mod source_switch;
pub mod vector_indexes;
