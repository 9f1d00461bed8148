//! Embedding on a GPU with hand-written kernels: the forward passes of BERT
//! encoders (`bert`) and Llama/Qwen2 decoders (`decoder`) over a backend's
//! operations (`ops`), from a checkpoint folder (`checkpoint`) and a padded
//! batch of tokens (`token_batch`): `cpu_ops` is the float32
//! reference, `cuda_ops` the device (cuBLAS for `gpu::gemm_plan`'s products,
//! NVRTC for `kernels`). `safetensors` reads the checkpoint the ONNX
//! exporter reads. (candle's CUDA backend needs nvcc at build time, which
//! neither this machine nor CI has; cudarc compiles kernels at run time.)

pub mod bert;
pub mod checkpoint;
pub mod cpu_ops;
pub mod cuda_ops;
pub mod decoder;
pub mod kernels;
pub mod ops;
pub mod safetensors;
pub mod token_batch;
