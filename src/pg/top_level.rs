//! One utility statement run as a top-level command from a background
//! worker, the way a client's simple query runs: `CREATE INDEX
//! CONCURRENTLY` commits and starts transactions of its own, which SPI
//! (inside a function's transaction) cannot allow.

use pgrx::prelude::*;
use pgrx::PgList;
use std::ffi::CString;

/// Run `sql` (one utility statement) as a top-level command. Call it
/// outside any transaction (a background worker between its own). On an
/// error the transaction is aborted and its message returned.
pub fn run(sql: &str) -> Result<(), String> {
    let text = CString::new(sql).map_err(|_| "a statement with a NUL byte".to_string())?;
    unsafe {
        // The statement's trees must outlive the transactions the command
        // commits: they live in a context of their own, as a backend's
        // MessageContext.
        let context = pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"inf_ir top-level statement".as_ptr(),
            0,
            8 * 1024,
            8 * 1024 * 1024,
        );
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        let activity = text.clone();
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, activity.as_ptr());
        let outcome = PgTryBuilder::new(|| {
            // Current through the command too (a client's PortalContext):
            // what it allocates before its first commit must survive it.
            pg_sys::MemoryContextSwitchTo(context);
            let parsed = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::pg_parse_query(text.as_ptr()));
            if parsed.len() != 1 {
                pgrx::error!("inf_ir: expected one statement, got {}", parsed.len());
            }
            let raw = parsed.get_ptr(0).expect("one statement");
            let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw,
                text.as_ptr(),
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
            );
            let plans = PgList::<pg_sys::PlannedStmt>::from_pg(pg_sys::pg_plan_queries(
                queries,
                text.as_ptr(),
                0,
                std::ptr::null_mut(),
            ));
            let statement = plans.get_ptr(0).expect("one plan");
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            pg_sys::ProcessUtility(
                statement,
                text.as_ptr(),
                false,
                pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                pg_sys::None_Receiver,
                std::ptr::null_mut(),
            );
            // CONCURRENTLY pops the snapshot it was given; other commands leave it.
            if pg_sys::ActiveSnapshotSet() {
                pg_sys::PopActiveSnapshot();
            }
            Ok(())
        })
        .catch_others(|caught| Err(super::errors::caught_message(&caught)))
        .execute();
        if outcome.is_ok() {
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
        pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        pg_sys::MemoryContextDelete(context);
        outcome
    }
}
