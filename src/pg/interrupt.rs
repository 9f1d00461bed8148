//! PostgreSQL's cancel and statement_timeout, as the engine's `Interrupt`.

use crate::engine::{EngineResult, Interrupt};
use pgrx::pg_sys;

pub struct PgInterrupt;

impl Interrupt for PgInterrupt {
    fn pending(&self) -> bool {
        // A volatile read of a flag that PostgreSQL's signal handlers set; it
        // calls nothing in PostgreSQL, so the watcher thread may do it.
        unsafe { std::ptr::read_volatile(std::ptr::addr_of!(pg_sys::InterruptPending)) != 0 }
    }

    fn checkpoint(&self) -> EngineResult<()> {
        // Raises the cancel or timeout ERROR itself when one is due.
        pgrx::check_for_interrupts!();
        Ok(())
    }
}
