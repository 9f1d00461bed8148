//! Embedding on a GPU with hand-written kernels: the encoder's forward pass
//! (`bert`) over a backend's operations (`ops`). `cpu_ops` is the float32
//! reference the CUDA backend is checked against; `safetensors` reads the
//! checkpoint the ONNX exporter reads. (candle's CUDA backend needs nvcc at
//! build time, which neither this machine nor CI has; cudarc compiles
//! kernels at run time with NVRTC.)

pub mod bert;
pub mod cpu_ops;
pub mod ops;
pub mod safetensors;
