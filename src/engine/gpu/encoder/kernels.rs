//! The encoder's NVRTC kernels (`kernels/encoder.cu`) and how they are
//! launched. The tests run the same source on the CPU (tests/gpu_encoder.rs,
//! through kernels/cpu_encoder_harness.cpp) inside a whole forward pass.

use crate::engine::Pooling;

pub const SOURCE: &str = include_str!("../kernels/encoder.cu");

/// The kernels, by name, as NVRTC exports them (extern "C").
pub const NAMES: [&str; 10] = [
    "embed_sum",
    "bias_act",
    "add_layer_norm",
    "split_heads",
    "masked_softmax",
    "merge_heads",
    "pool_normalize",
    "gather_rows",
    "add_rms_norm",
    "silu_mul",
];

/// Threads per block (a power of two: the block reductions need it).
pub const THREADS: u32 = 256;

/// Blocks for a grid-stride element-wise kernel over `n` values.
pub fn elementwise_blocks(n: usize) -> u32 {
    n.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32
}

/// pool_normalize's mode for a pooling.
pub fn pooling_mode(pooling: Pooling) -> i32 {
    match pooling {
        Pooling::Mean => 0,
        Pooling::Cls => 1,
        Pooling::LastToken => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_kernel_is_in_the_source() {
        for name in NAMES {
            assert!(SOURCE.contains(&format!("__global__ void {name}(")), "{name}");
        }
        assert_eq!(elementwise_blocks(0), 1);
        assert_eq!(elementwise_blocks(257), 2);
        assert_eq!(elementwise_blocks(usize::MAX / 2), 1 << 16);
    }
}
