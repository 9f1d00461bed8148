//! Search and embedding on a CUDA device, without PostgreSQL. `device`
//! says whether there is one (and why not, for the CPU fallback); `store`
//! keeps a corpus on it (float16 rows, cuBLAS scoring, the NVRTC top-k
//! kernels of `top_k_kernel` and `kernels/`); `search` turns its candidates
//! into the exact float32 top k with `exact`; `slots` places rows so that
//! appends and deletes need no re-upload; `emulated` is the device's
//! arithmetic on the CPU, for tests and the benchmark's dry run. Loaded at
//! run time through cudarc: nothing CUDA is needed to build, and every
//! caller falls back to the CPU without it.

pub mod context;
pub mod device;
pub mod emulated;
pub mod encoder;
pub mod exact;
pub mod gemm_plan;
pub mod search;
pub mod slots;
pub mod store;
pub mod top_k_kernel;
