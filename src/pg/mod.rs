//! The SQL face of inf_ir: a thin adapter over `crate::engine`.

mod embed;
mod errors;
mod gucs;
mod interrupt;
mod model_cache;
mod registry;

pub fn init() {
    gucs::init();
}
