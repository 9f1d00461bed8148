//! The planner's estimate of how many rows a query returns, without running
//! it (what EXPLAIN prints as "rows", read from the plan itself: EXPLAIN is a
//! utility statement, which read-only SPI refuses).

use pgrx::pg_sys;
use pgrx::spi::Spi;
use std::ffi::CString;

/// Rows the planner expects `query` (no parameters) to return.
pub fn estimated_rows(query: &str) -> f64 {
    let text = CString::new(query).expect("SQL text has no NUL");
    Spi::connect(|_client| unsafe {
        let plan = pg_sys::SPI_prepare(text.as_ptr(), 0, std::ptr::null_mut());
        if plan.is_null() {
            pgrx::error!("inf_ir: cannot plan the row estimate");
        }
        // An unsaved plan's cached plan has no resource owner.
        let cached = pg_sys::SPI_plan_get_cached_plan(plan);
        let rows = if cached.is_null() || (*cached).stmt_list.is_null() || (*(*cached).stmt_list).length < 1 {
            f64::INFINITY
        } else {
            let stmt = (*(*(*cached).stmt_list).elements).ptr_value as *mut pg_sys::PlannedStmt;
            if (*stmt).planTree.is_null() {
                f64::INFINITY
            } else {
                (*(*stmt).planTree).plan_rows
            }
        };
        if !cached.is_null() {
            pg_sys::ReleaseCachedPlan(cached, std::ptr::null_mut());
        }
        pg_sys::SPI_freeplan(plan);
        rows
    })
}
