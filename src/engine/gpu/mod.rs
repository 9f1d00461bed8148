//! Search and embedding on a CUDA device, without PostgreSQL. `device`
//! says whether there is one (and why not, for the CPU fallback); `exact`
//! turns the device's float16 candidates into the exact float32 top k that
//! the CPU path gives; `slots` places rows in the device matrix so that
//! appends and deletes need no re-upload. Loaded at run time through cudarc: nothing CUDA is
//! needed to build, and every caller falls back to the CPU without it.

pub mod device;
pub mod exact;
pub mod slots;
