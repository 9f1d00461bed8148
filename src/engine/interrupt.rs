//! How long work (embedding, k-means, LLM requests) learns that its caller
//! wants it to stop: the SQL layer implements it with PostgreSQL's cancel
//! and statement_timeout (`crate::pg::interrupt`).

use crate::engine::error::EngineResult;

/// How a long call learns that its caller wants it to stop.
pub trait Interrupt: Sync {
    /// Polled from a watcher thread while ONNX Runtime computes: must only
    /// read state that is safe to read from another thread.
    fn pending(&self) -> bool;
    /// Called on the calling thread between batches and after an interrupted
    /// batch; returns (or unwinds) with an error when the call must stop.
    fn checkpoint(&self) -> EngineResult<()>;
}

/// For callers with no way to be interrupted (benchmarks, tests).
pub struct NeverInterrupt;

impl Interrupt for NeverInterrupt {
    fn pending(&self) -> bool {
        false
    }
    fn checkpoint(&self) -> EngineResult<()> {
        Ok(())
    }
}
