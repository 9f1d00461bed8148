//! The dataset's pure computations: ranking metrics (trec_eval
//! definitions), FollowIR's p-MRR and the diversity measures APS and INGF.
//! Imports nothing from inf_ir; `crate::pg::dataset` feeds it runs, qrels
//! and texts.

pub mod metrics;
