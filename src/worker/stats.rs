//! The host's counters, shared by its threads and read by the status request.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub queue_length: AtomicU64,
    /// Requests in the batch being computed now.
    pub running: AtomicU64,
    pub requests: AtomicU64,
    pub texts: AtomicU64,
    pub tokens: AtomicU64,
    /// Merged runs: one batch may serve requests from several sessions.
    pub batches: AtomicU64,
    pub busy_nanos: AtomicU64,
    /// Time background pieces waited for the cores others wanted.
    pub background_wait_nanos: AtomicU64,
    pub errors: AtomicU64,
    /// Requests whose backend went away (cancel, timeout, exit) before their answer.
    pub dropped: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
