//! The planner's cost of an inf_ivf scan: the share of the index that
//! `inf_ir.probes` lists make, all of it paid before the first row. Without
//! an ORDER BY on the operator the index is useless, so it costs infinity.

use super::pages;
use crate::pg::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;

// The signature is PostgreSQL's.
#[allow(clippy::too_many_arguments)]
#[pg_guard]
pub unsafe extern "C-unwind" fn amcostestimate(
    root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    loop_count: f64,
    startup: *mut pg_sys::Cost,
    total: *mut pg_sys::Cost,
    selectivity: *mut pg_sys::Selectivity,
    correlation: *mut f64,
    pages_out: *mut f64,
) {
    if (*path).indexorderbys.is_null() {
        *startup = pg_sys::get_float8_infinity();
        *total = pg_sys::get_float8_infinity();
        *selectivity = 0.0;
        *correlation = 0.0;
        *pages_out = 0.0;
        return;
    }
    let info = (*path).indexinfo;
    let index = pg_sys::index_open((*info).indexoid, pg_sys::NoLock as i32);
    let lists = pages::read_meta(index).lists.max(1) as f64;
    pg_sys::index_close(index, pg_sys::NoLock as i32);
    let share = (gucs::probes() as f64 / lists).min(1.0);
    let mut costs = pg_sys::GenericCosts {
        numIndexTuples: ((*info).tuples * share).max(1.0),
        ..Default::default()
    };
    pg_sys::genericcostestimate(root, path, loop_count, &mut costs);
    *startup = costs.indexTotalCost;
    *total = costs.indexTotalCost;
    *selectivity = costs.indexSelectivity;
    *correlation = 0.0;
    *pages_out = costs.numIndexPages;
}
