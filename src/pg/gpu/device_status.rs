//! `inf_cuda_device()`: whether this server process can use a CUDA device,
//! and if not, why (no driver, no cuBLAS or NVRTC, no device). The GPU
//! search and embedding paths (issues 24 and 25) fall back to the CPU for
//! the reason it gives.

use crate::engine::gpu::device::{probe, DeviceState};
use pgrx::prelude::*;

/// One row: `device` is 'cuda' or 'cpu'; `detail` the device or the reason.
#[pg_extern(volatile, parallel_safe)]
fn inf_cuda_device() -> TableIterator<'static, (name!(device, String), name!(detail, String))> {
    let state = probe(0);
    let device = if state.is_cuda() { "cuda" } else { "cpu" };
    let detail = match &state {
        DeviceState::Cpu { reason } => reason.clone(),
        cuda => cuda.to_string(),
    };
    TableIterator::once((device.to_string(), detail))
}
