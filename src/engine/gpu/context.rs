//! What every CUDA user in the engine needs: a context opened only when the
//! libraries are there (creating one without a driver panics in cudarc),
//! kernels compiled by NVRTC for the device's architecture, one GEMM call
//! shape, and CUDA errors turned into `EngineError`s that say why.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DriverError};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use half::slice::HalfFloatSliceExt;

use super::device::Libraries;
use super::gemm_plan::Gemm;
use crate::engine::error::{EngineError, EngineResult, ErrorKind};

pub struct Device {
    pub ctx: Arc<CudaContext>,
    /// One stream per user: cudarc's per-buffer events are switched off.
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    /// "cuda:0 NVIDIA H100 …, compute capability 9.0".
    pub description: String,
    pub compute_capability: (i32, i32),
}

/// float32 to float16 (round to nearest even), whole slices at a time
/// (F16C where the CPU has it): uploads of millions of rows.
pub fn to_half(values: &[f32]) -> Vec<half::f16> {
    let mut out = vec![half::f16::ZERO; values.len()];
    out.convert_from_f32_slice(values);
    out
}

pub fn device_error(what: &str, e: DriverError) -> EngineError {
    use cudarc::driver::sys::CUresult;
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        EngineError::resources(format!("the GPU ran out of memory while {what}"))
            .with_hint("free GPU memory, or use the CPU (inf_ir.search_device / inf_ir.embed_device = cpu)")
    } else {
        EngineError::new(ErrorKind::Device, format!("CUDA failed while {what}: {e:?}"))
    }
}

pub fn blas_error(what: &str, e: blas::CublasError) -> EngineError {
    if e.0 == blas_sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED {
        EngineError::resources(format!("cuBLAS ran out of GPU memory while {what}"))
    } else {
        EngineError::new(ErrorKind::Device, format!("cuBLAS failed while {what}: {e:?}"))
    }
}

impl Device {
    /// Device `ordinal`, or why not (no driver, no cuBLAS/NVRTC, a broken driver).
    pub fn open(ordinal: usize) -> EngineResult<Self> {
        if let Some(reason) = Libraries::find().missing() {
            return Err(EngineError::new(ErrorKind::Device, reason).with_hint("inf_ir uses the CPU instead"));
        }
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| EngineError::new(ErrorKind::Device, "the CUDA driver failed while creating a context"))?
            .map_err(|e| device_error("creating a context", e))?;
        // SAFETY: each user of a Device issues all its work on its one stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let compute_capability = ctx
            .compute_capability()
            .map_err(|e| device_error("reading the compute capability", e))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| blas_error("starting cuBLAS", e))?;
        let (major, minor) = compute_capability;
        Ok(Device {
            description: format!("cuda:{ordinal} {name}, compute capability {major}.{minor}"),
            ctx,
            stream,
            blas,
            compute_capability,
        })
    }

    /// Free device memory in bytes.
    pub fn free_memory(&self) -> EngineResult<usize> {
        Ok(self
            .ctx
            .mem_get_info()
            .map_err(|e| device_error("reading free memory", e))?
            .0)
    }

    /// Compile `source` with `options` (e.g. -D defines) and load `names`.
    pub fn compile(
        &self,
        source: &str,
        options: Vec<String>,
        names: &[&str],
    ) -> EngineResult<HashMap<String, CudaFunction>> {
        let (major, minor) = self.compute_capability;
        // A virtual architecture: NVRTC emits PTX that the driver compiles for this device.
        let arch: &'static str = Box::leak(format!("compute_{major}{minor}").into_boxed_str());
        let options = CompileOptions {
            arch: Some(arch),
            options,
            ..Default::default()
        };
        let ptx = compile_ptx_with_opts(source, options)
            .map_err(|e| EngineError::new(ErrorKind::Device, format!("NVRTC could not compile a kernel: {e}")))?;
        let module = self
            .ctx
            .load_module(ptx)
            .map_err(|e| device_error("loading kernels", e))?;
        names
            .iter()
            .map(|&name| {
                let f = module
                    .load_function(name)
                    .map_err(|e| device_error(&format!("loading {name}"), e))?;
                Ok((name.to_string(), f))
            })
            .collect()
    }

    /// C = alpha · op(A) · op(B) as `g` describes it; A and B float16, C
    /// float16 or float32 (`c_f32`), float32 accumulation. Raw device
    /// addresses: the caller holds the buffers for the call's duration.
    pub fn gemm(&self, g: &Gemm, a: u64, b: u64, c: u64, c_f32: bool, what: &str) -> EngineResult<()> {
        use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        use blas_sys::cudaDataType::{CUDA_R_16F, CUDA_R_32F};
        let op = |t: bool| if t { CUBLAS_OP_T } else { CUBLAS_OP_N };
        let (alpha, beta) = (g.alpha, 0f32);
        // SAFETY: the caller's buffers hold the extents `g` describes.
        unsafe {
            blas::gemm_strided_batched_ex(
                *self.blas.handle(),
                op(g.transa),
                op(g.transb),
                g.m as i32,
                g.n as i32,
                g.k as i32,
                &alpha as *const f32 as *const _,
                a as *const _,
                CUDA_R_16F,
                g.lda as i32,
                g.stride_a as i64,
                b as *const _,
                CUDA_R_16F,
                g.ldb as i32,
                g.stride_b as i64,
                &beta as *const f32 as *const _,
                c as *mut _,
                if c_f32 { CUDA_R_32F } else { CUDA_R_16F },
                g.ldc as i32,
                g.stride_c as i64,
                g.batch as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(|e| blas_error(what, e))
    }
}
