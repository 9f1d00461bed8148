//! The CUDA encoder backend's steps on the CPU, for the tests: the NVRTC
//! kernels (kernels/encoder.cu) built with the system C++ compiler as a
//! shared library (kernels/cpu_encoder_harness.cpp) and called block by
//! block; the matrix products evaluated from the same cuBLAS parameters
//! (gemm_plan) with float16 inputs, float32 sums and float16 outputs, as the
//! device does. So a test runs the device's forward pass, layouts and all,
//! without a GPU. None when there is no C++ compiler.

use half::f16;
use inf_ir::engine::gpu::encoder::kernels::pooling_mode;
use inf_ir::engine::gpu::encoder::ops::{Activation, AttentionShape, EncoderOps};
use inf_ir::engine::gpu::gemm_plan::{self, Gemm};
use inf_ir::engine::{EngineResult, Pooling};
use libloading::{Library, Symbol};
use std::path::PathBuf;
use std::process::Command;

type H = u16; // float16 bits, as the kernels hold them

pub struct HarnessOps {
    library: Library,
    /// Threads per block in the CPU runs (few: each is a pthread).
    threads: u32,
}

fn to_half(values: &[f32]) -> Vec<H> {
    values.iter().map(|v| f16::from_f32(*v).to_bits()).collect()
}

fn to_f32(values: &[H]) -> Vec<f32> {
    values.iter().map(|v| f16::from_bits(*v).to_f32()).collect()
}

impl HarnessOps {
    pub fn build() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("inf_ir_encoder_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let library = dir.join("libencoder_harness.so");
        let kernels = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/engine/gpu/kernels"));
        let built = Command::new("c++")
            .args(["-O1", "-std=c++17", "-shared", "-fPIC"])
            .arg(format!("-I{}", kernels.display()))
            .arg(kernels.join("cpu_encoder_harness.cpp"))
            .arg("-o")
            .arg(&library)
            .arg("-lpthread")
            .status()
            .ok()?;
        assert!(built.success(), "the encoder kernels did not compile for the CPU");
        // SAFETY: our own library, whose initialisers do nothing.
        let library = unsafe { Library::new(&library) }.unwrap();
        std::fs::remove_dir_all(&dir).ok();
        Some(HarnessOps { library, threads: 32 })
    }

    fn symbol<T>(&self, name: &str) -> Symbol<'_, T> {
        unsafe { self.library.get(name.as_bytes()) }.unwrap()
    }

    /// A GEMM as the device runs it: float16 operands, float32 sums.
    fn gemm(&self, g: &Gemm, a: &[H], b: &[H]) -> Vec<f32> {
        let mut c = vec![0f32; g.batch.max(1) * g.stride_c.max(g.m * g.n)];
        gemm_plan::reference(g, &to_f32(a), &to_f32(b), &mut c);
        c
    }
}

impl EncoderOps for HarnessOps {
    type Buf = Vec<H>;

    fn upload(&mut self, values: &[f32]) -> EngineResult<Vec<H>> {
        Ok(to_half(values))
    }

    fn embed(
        &mut self,
        word: &Vec<H>,
        position: &Vec<H>,
        token_type: &Vec<H>,
        hidden: usize,
        ids: &[u32],
        positions: &[u32],
        types: &[u32],
    ) -> EngineResult<Vec<H>> {
        let mut out = vec![0; ids.len() * hidden];
        let run: Symbol<
            unsafe extern "C" fn(
                u32,
                u32,
                *const H,
                *const H,
                *const H,
                *const u32,
                *const u32,
                *const u32,
                i32,
                *mut H,
            ),
        > = self.symbol("run_embed_sum");
        unsafe {
            run(
                ids.len() as u32,
                self.threads,
                word.as_ptr(),
                position.as_ptr(),
                token_type.as_ptr(),
                ids.as_ptr(),
                positions.as_ptr(),
                types.as_ptr(),
                hidden as i32,
                out.as_mut_ptr(),
            )
        };
        Ok(out)
    }

    fn linear(
        &mut self,
        x: &Vec<H>,
        rows: usize,
        w: &Vec<H>,
        b: Option<&Vec<H>>,
        inputs: usize,
        outputs: usize,
        act: Activation,
    ) -> EngineResult<Vec<H>> {
        let mut y = to_half(&self.gemm(&gemm_plan::linear(rows, inputs, outputs), w, x));
        let run: Symbol<unsafe extern "C" fn(u32, u32, *mut H, *const H, i64, i32, i32)> = self.symbol("run_bias_act");
        let b = b.map_or(std::ptr::null(), |b| b.as_ptr());
        unsafe {
            run(
                4,
                self.threads,
                y.as_mut_ptr(),
                b,
                rows as i64,
                outputs as i32,
                act.code(),
            )
        };
        Ok(y)
    }

    fn gather(&mut self, table: &Vec<H>, width: usize, ids: &[u32]) -> EngineResult<Vec<H>> {
        let mut out = vec![0; ids.len() * width];
        let run: Symbol<unsafe extern "C" fn(u32, u32, *const H, *const u32, i32, *mut H)> =
            self.symbol("run_gather_rows");
        unsafe {
            run(
                ids.len() as u32,
                self.threads,
                table.as_ptr(),
                ids.as_ptr(),
                width as i32,
                out.as_mut_ptr(),
            )
        };
        Ok(out)
    }

    fn add_rms_norm(
        &mut self,
        x: &Vec<H>,
        add: Option<&Vec<H>>,
        weight: &Vec<H>,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> EngineResult<(Vec<H>, Vec<H>)> {
        let (mut sum, mut normed) = (vec![0; rows * width], vec![0; rows * width]);
        #[allow(clippy::type_complexity)]
        let run: Symbol<
            unsafe extern "C" fn(u32, u32, *const H, *const H, *const H, i32, f32, *mut H, *mut H),
        > = self.symbol("run_add_rms_norm");
        let add = add.map_or(std::ptr::null(), |a| a.as_ptr());
        unsafe {
            run(
                rows as u32,
                self.threads,
                x.as_ptr(),
                add,
                weight.as_ptr(),
                width as i32,
                eps,
                sum.as_mut_ptr(),
                normed.as_mut_ptr(),
            )
        };
        Ok((sum, normed))
    }

    fn silu_mul(&mut self, gate_up: &Vec<H>, rows: usize, width: usize) -> EngineResult<Vec<H>> {
        let mut out = vec![0; rows * width];
        let run: Symbol<unsafe extern "C" fn(u32, u32, *const H, i64, i32, *mut H)> = self.symbol("run_silu_mul");
        unsafe {
            run(
                4,
                self.threads,
                gate_up.as_ptr(),
                rows as i64,
                width as i32,
                out.as_mut_ptr(),
            )
        };
        Ok(out)
    }

    fn add_layer_norm(
        &mut self,
        x: &Vec<H>,
        residual: Option<&Vec<H>>,
        gamma: &Vec<H>,
        beta: &Vec<H>,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> EngineResult<Vec<H>> {
        let mut out = vec![0; rows * width];
        let run: Symbol<unsafe extern "C" fn(u32, u32, *const H, *const H, *const H, *const H, i32, f32, *mut H)> =
            self.symbol("run_add_layer_norm");
        let residual = residual.map_or(std::ptr::null(), |r| r.as_ptr());
        unsafe {
            run(
                rows as u32,
                self.threads,
                x.as_ptr(),
                residual,
                gamma.as_ptr(),
                beta.as_ptr(),
                width as i32,
                eps,
                out.as_mut_ptr(),
            )
        };
        Ok(out)
    }

    fn attention(
        &mut self,
        qkv: &Vec<H>,
        batch: usize,
        seq: usize,
        shape: &AttentionShape,
        lengths: &[usize],
    ) -> EngineResult<Vec<H>> {
        let (heads, head_dim) = (shape.heads, shape.head_dim);
        let n = batch * seq * heads * head_dim;
        let (mut q, mut k, mut v) = (vec![0; n], vec![0; n], vec![0; n]);
        #[allow(clippy::type_complexity)]
        let split: Symbol<
            unsafe extern "C" fn(u32, u32, *const H, i32, i32, i32, i32, i32, f32, *mut H, *mut H, *mut H),
        > = self.symbol("run_split_heads");
        unsafe {
            split(
                4,
                self.threads,
                qkv.as_ptr(),
                batch as i32,
                seq as i32,
                heads as i32,
                shape.kv_heads as i32,
                head_dim as i32,
                shape.rotary_theta.unwrap_or(0.0),
                q.as_mut_ptr(),
                k.as_mut_ptr(),
                v.as_mut_ptr(),
            )
        };
        let scores = self.gemm(&gemm_plan::attention_scores(batch, heads, seq, head_dim), &k, &q);
        let lengths: Vec<i32> = lengths.iter().map(|&l| l as i32).collect();
        let mut probs = vec![0; batch * heads * seq * seq];
        let softmax: Symbol<unsafe extern "C" fn(u32, u32, *const f32, *const i32, i32, i32, i32, *mut H)> =
            self.symbol("run_masked_softmax");
        unsafe {
            softmax(
                (batch * heads * seq) as u32,
                self.threads,
                scores.as_ptr(),
                lengths.as_ptr(),
                heads as i32,
                seq as i32,
                shape.causal as i32,
                probs.as_mut_ptr(),
            )
        };
        let context = to_half(&self.gemm(&gemm_plan::attention_context(batch, heads, seq, head_dim), &v, &probs));
        let mut out = vec![0; n];
        let merge: Symbol<unsafe extern "C" fn(u32, u32, *const H, i32, i32, i32, i32, *mut H)> =
            self.symbol("run_merge_heads");
        unsafe {
            merge(
                4,
                self.threads,
                context.as_ptr(),
                batch as i32,
                seq as i32,
                heads as i32,
                head_dim as i32,
                out.as_mut_ptr(),
            )
        };
        Ok(out)
    }

    fn pool(
        &mut self,
        x: &Vec<H>,
        batch: usize,
        seq: usize,
        hidden: usize,
        lengths: &[usize],
        pooling: Pooling,
    ) -> EngineResult<Vec<Vec<f32>>> {
        let lengths: Vec<i32> = lengths.iter().map(|&l| l as i32).collect();
        let mut out = vec![0f32; batch * hidden];
        let run: Symbol<unsafe extern "C" fn(u32, u32, *const H, *const i32, i32, i32, i32, *mut f32)> =
            self.symbol("run_pool_normalize");
        unsafe {
            run(
                batch as u32,
                self.threads,
                x.as_ptr(),
                lengths.as_ptr(),
                seq as i32,
                hidden as i32,
                pooling_mode(pooling),
                out.as_mut_ptr(),
            )
        };
        Ok(out.chunks(hidden).map(|c| c.to_vec()).collect())
    }
}
