//! A background piece gives way to the rest of the machine: before it runs,
//! the batcher waits (up to `inf_ir.background_yield`) while others wanted
//! the cores the last piece ran on (`cpu_share`), looking again every
//! `LOOK` and running the interactive batches that arrive meanwhile. The
//! first piece after a pause looks first: without that look it ran on both
//! cores at once (on two cores, 0.7 s of a 4.4 s burst of 10,000
//! single-row INSERTs, taking half the application's CPU).

use super::cpu_share::{CpuMeter, CpuTimes};
use crate::engine::EngineResult;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a waiting piece looks whether the cores are free again.
const LOOK: Duration = Duration::from_millis(100);
/// A last piece that ended longer ago says nothing of the cores now.
const STALE: Duration = Duration::from_secs(1);

/// The batcher thread's own: not shared between threads.
pub struct BackgroundYield {
    /// The longest one piece waits (zero: pieces never wait).
    max_wait: Duration,
    /// ONNX Runtime's threads: the cores a piece takes.
    threads: usize,
    meter: Option<CpuMeter>,
    /// Readings at the start and the end of the last background piece.
    last_piece: Cell<Option<(CpuTimes, CpuTimes)>>,
}

impl BackgroundYield {
    pub fn new(max_wait: Duration, threads: usize) -> BackgroundYield {
        BackgroundYield {
            max_wait,
            threads: threads.max(1),
            meter: if max_wait.is_zero() { None } else { CpuMeter::new() },
            last_piece: Cell::new(None),
        }
    }

    /// Wait while others want the cores, `meanwhile` between looks (it may
    /// end the wait with an error: a cancel). Returns how long it waited.
    pub fn wait_for_cores(&self, mut meanwhile: impl FnMut() -> EngineResult<()>) -> EngineResult<Duration> {
        let Some(meter) = &self.meter else {
            return Ok(Duration::ZERO);
        };
        let began = Instant::now();
        let (mut before, mut now) = match self.last_piece.get() {
            Some((start, end)) if end.age() < STALE => (Some(start), Some(end)),
            // The first piece after a pause: a look first (a burst of the
            // application's writes is what woke the embedder).
            _ => {
                let before = meter.read();
                std::thread::sleep(LOOK.min(self.max_wait));
                meanwhile()?;
                (before, meter.read())
            }
        };
        while let (Some(b), Some(n)) = (&before, &now) {
            if !meter.contended(b, n, self.threads) || began.elapsed() >= self.max_wait {
                break;
            }
            std::thread::sleep(LOOK.min(self.max_wait.saturating_sub(began.elapsed())));
            meanwhile()?;
            before = now;
            now = meter.read();
        }
        Ok(began.elapsed())
    }

    /// Run one background piece, reading the counters around it.
    pub fn piece<R>(&self, run: impl FnOnce() -> R) -> R {
        let Some(meter) = &self.meter else {
            return run();
        };
        let start = meter.read();
        let result = run();
        self.last_piece.set(start.zip(meter.read()));
        result
    }
}
