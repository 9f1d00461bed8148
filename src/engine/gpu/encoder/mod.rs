//! Embedding on a GPU with hand-written kernels: the forward passes of BERT
//! encoders (`bert`) and Llama/Qwen2 decoders (`decoder`) over a backend's
//! operations (`ops`): `cpu_ops` is the float32
//! reference, `cuda_ops` the device (cuBLAS for `gemm_plan`'s products,
//! NVRTC for `kernels`). `safetensors` reads the checkpoint the ONNX
//! exporter reads. (candle's CUDA backend needs nvcc at build time, which
//! neither this machine nor CI has; cudarc compiles kernels at run time.)

pub mod bert;
pub mod cpu_ops;
pub mod cuda_ops;
pub mod decoder;
pub mod kernels;
pub mod ops;
pub mod safetensors;
