//! The encoder's operations on a CUDA device: float16 buffers, cuBLAS for
//! the products (gemm_plan's parameters, float32 accumulation), the NVRTC
//! kernels of `kernels` for the rest. tests/gpu_encoder.rs runs the same
//! kernels and products on the CPU inside a whole forward pass.

use std::collections::HashMap;
use std::path::Path;

use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, LaunchArgs, LaunchConfig, PushKernelArg};
use half::f16;

use super::bert::Bert;
use super::checkpoint;
use super::decoder::Decoder;
use super::kernels::{self, elementwise_blocks, pooling_mode, THREADS};
use super::ops::{Activation, AttentionShape, EncoderOps};
use crate::engine::embed::tokenize::TokenizedText;
use crate::engine::error::EngineResult;
use crate::engine::gpu::context::{device_error, to_half, Device};
use crate::engine::gpu::gemm_plan::{self, Gemm};
use crate::engine::Pooling;

pub struct CudaOps {
    device: Device,
    kernels: HashMap<String, CudaFunction>,
}

type Buf = CudaSlice<f16>;

fn config(blocks: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks.max(1), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaOps {
    /// Device `ordinal` with the encoder kernels compiled, or why not.
    pub fn open(ordinal: usize) -> EngineResult<Self> {
        let device = Device::open(ordinal)?;
        let kernels = device.compile(kernels::SOURCE, Vec::new(), &kernels::NAMES)?;
        Ok(CudaOps { device, kernels })
    }

    pub fn description(&self) -> &str {
        &self.device.description
    }

    fn alloc<T: cudarc::driver::DeviceRepr>(&self, len: usize) -> EngineResult<CudaSlice<T>> {
        // SAFETY: every buffer is written by a kernel or GEMM before it is read.
        unsafe { self.device.stream.alloc::<T>(len.max(1)) }.map_err(|e| device_error("allocating activations", e))
    }

    fn to_device<T: cudarc::driver::DeviceRepr>(&self, values: &[T]) -> EngineResult<CudaSlice<T>> {
        self.device
            .stream
            .clone_htod(values)
            .map_err(|e| device_error("uploading", e))
    }

    fn builder(&self, name: &str) -> LaunchArgs<'_> {
        self.device.stream.launch_builder(&self.kernels[name])
    }

    fn run(mut args: LaunchArgs<'_>, blocks: u32, name: &str) -> EngineResult<()> {
        // SAFETY: the arguments match the kernel's signature in encoder.cu.
        unsafe { args.launch(config(blocks)) }
            .map(|_| ())
            .map_err(|e| device_error(name, e))
    }

    fn gemm<A, B, C>(
        &self,
        g: &Gemm,
        a: &CudaSlice<A>,
        b: &CudaSlice<B>,
        c: &mut CudaSlice<C>,
        c_f32: bool,
    ) -> EngineResult<()> {
        let stream = &self.device.stream;
        let (a, _ra) = a.device_ptr(stream);
        let (b, _rb) = b.device_ptr(stream);
        let (c, _wc) = c.device_ptr(stream);
        self.device.gemm(g, a, b, c, c_f32, "an encoder matrix product")
    }
}

impl EncoderOps for CudaOps {
    type Buf = Buf;

    fn upload(&mut self, values: &[f32]) -> EngineResult<Buf> {
        self.to_device(&to_half(values))
    }

    fn embed(
        &mut self,
        word: &Buf,
        position: &Buf,
        token_type: &Buf,
        hidden: usize,
        ids: &[u32],
        positions: &[u32],
        types: &[u32],
    ) -> EngineResult<Buf> {
        let (ids, positions, types) = (self.to_device(ids)?, self.to_device(positions)?, self.to_device(types)?);
        let mut out = self.alloc::<f16>(ids.len() * hidden)?;
        let hidden = hidden as i32;
        let mut args = self.builder("embed_sum");
        args.arg(word)
            .arg(position)
            .arg(token_type)
            .arg(&ids)
            .arg(&positions)
            .arg(&types)
            .arg(&hidden)
            .arg(&mut out);
        Self::run(args, ids.len() as u32, "embedding tokens")?;
        Ok(out)
    }

    fn linear(
        &mut self,
        x: &Buf,
        rows: usize,
        w: &Buf,
        b: Option<&Buf>,
        inputs: usize,
        outputs: usize,
        act: Activation,
    ) -> EngineResult<Buf> {
        let mut y = self.alloc::<f16>(rows * outputs)?;
        self.gemm(&gemm_plan::linear(rows, inputs, outputs), w, x, &mut y, false)?;
        if b.is_none() && act == Activation::None {
            return Ok(y);
        }
        let (rows_arg, width, mode, null) = (rows as i64, outputs as i32, act.code(), 0u64);
        let mut args = self.builder("bias_act");
        args.arg(&mut y);
        match b {
            Some(b) => args.arg(b),
            None => args.arg(&null),
        };
        args.arg(&rows_arg).arg(&width).arg(&mode);
        Self::run(args, elementwise_blocks(rows * outputs), "adding a bias")?;
        Ok(y)
    }

    fn gather(&mut self, table: &Buf, width: usize, ids: &[u32]) -> EngineResult<Buf> {
        let ids = self.to_device(ids)?;
        let mut out = self.alloc::<f16>(ids.len() * width)?;
        let width = width as i32;
        let mut args = self.builder("gather_rows");
        args.arg(table).arg(&ids).arg(&width).arg(&mut out);
        Self::run(args, ids.len() as u32, "embedding tokens")?;
        Ok(out)
    }

    fn add_rms_norm(
        &mut self,
        x: &Buf,
        add: Option<&Buf>,
        weight: &Buf,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> EngineResult<(Buf, Buf)> {
        let (mut sum, mut normed) = (self.alloc::<f16>(rows * width)?, self.alloc::<f16>(rows * width)?);
        let (w, null) = (width as i32, 0u64);
        let mut args = self.builder("add_rms_norm");
        args.arg(x);
        match add {
            Some(a) => args.arg(a),
            None => args.arg(&null),
        };
        args.arg(weight).arg(&w).arg(&eps).arg(&mut sum).arg(&mut normed);
        Self::run(args, rows as u32, "RMS norm")?;
        Ok((sum, normed))
    }

    fn silu_mul(&mut self, gate_up: &Buf, rows: usize, width: usize) -> EngineResult<Buf> {
        let mut out = self.alloc::<f16>(rows * width)?;
        let (r, w) = (rows as i64, width as i32);
        let mut args = self.builder("silu_mul");
        args.arg(gate_up).arg(&r).arg(&w).arg(&mut out);
        Self::run(args, elementwise_blocks(rows * width), "SwiGLU")?;
        Ok(out)
    }

    fn add_layer_norm(
        &mut self,
        x: &Buf,
        residual: Option<&Buf>,
        gamma: &Buf,
        beta: &Buf,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> EngineResult<Buf> {
        let mut out = self.alloc::<f16>(rows * width)?;
        let (width, null) = (width as i32, 0u64);
        let mut args = self.builder("add_layer_norm");
        args.arg(x);
        match residual {
            Some(r) => args.arg(r),
            None => args.arg(&null), // a null pointer: no residual
        };
        args.arg(gamma).arg(beta).arg(&width).arg(&eps).arg(&mut out);
        Self::run(args, rows as u32, "layer norm")?;
        Ok(out)
    }

    fn attention(
        &mut self,
        qkv: &Buf,
        batch: usize,
        seq: usize,
        shape: &AttentionShape,
        lengths: &[usize],
    ) -> EngineResult<Buf> {
        let (heads, head_dim) = (shape.heads, shape.head_dim);
        let n = batch * seq * heads * head_dim;
        let (mut q, mut k, mut v) = (self.alloc::<f16>(n)?, self.alloc::<f16>(n)?, self.alloc::<f16>(n)?);
        let (b, s, h, kv, d) = (
            batch as i32,
            seq as i32,
            heads as i32,
            shape.kv_heads as i32,
            head_dim as i32,
        );
        let theta = shape.rotary_theta.unwrap_or(0.0);
        let mut args = self.builder("split_heads");
        args.arg(qkv)
            .arg(&b)
            .arg(&s)
            .arg(&h)
            .arg(&kv)
            .arg(&d)
            .arg(&theta)
            .arg(&mut q)
            .arg(&mut k)
            .arg(&mut v);
        Self::run(args, elementwise_blocks(n), "splitting heads")?;
        let mut scores = self.alloc::<f32>(batch * heads * seq * seq)?;
        self.gemm(
            &gemm_plan::attention_scores(batch, heads, seq, head_dim),
            &k,
            &q,
            &mut scores,
            true,
        )?;
        let lengths: Vec<i32> = lengths.iter().map(|&l| l as i32).collect();
        let lengths = self.to_device(&lengths)?;
        let mut probs = self.alloc::<f16>(batch * heads * seq * seq)?;
        let causal = shape.causal as i32;
        let mut args = self.builder("masked_softmax");
        args.arg(&scores)
            .arg(&lengths)
            .arg(&h)
            .arg(&s)
            .arg(&causal)
            .arg(&mut probs);
        Self::run(args, (batch * heads * seq) as u32, "softmax")?;
        let mut context = self.alloc::<f16>(n)?;
        self.gemm(
            &gemm_plan::attention_context(batch, heads, seq, head_dim),
            &v,
            &probs,
            &mut context,
            false,
        )?;
        let mut out = self.alloc::<f16>(n)?;
        let mut args = self.builder("merge_heads");
        args.arg(&context).arg(&b).arg(&s).arg(&h).arg(&d).arg(&mut out);
        Self::run(args, elementwise_blocks(n), "merging heads")?;
        Ok(out)
    }

    fn pool(
        &mut self,
        x: &Buf,
        batch: usize,
        seq: usize,
        hidden: usize,
        lengths: &[usize],
        pooling: Pooling,
    ) -> EngineResult<Vec<Vec<f32>>> {
        let lengths: Vec<i32> = lengths.iter().map(|&l| l as i32).collect();
        let lengths = self.to_device(&lengths)?;
        let mut out = self.alloc::<f32>(batch * hidden)?;
        let (s, h, mode) = (seq as i32, hidden as i32, pooling_mode(pooling));
        let mut args = self.builder("pool_normalize");
        args.arg(x).arg(&lengths).arg(&s).arg(&h).arg(&mode).arg(&mut out);
        Self::run(args, batch as u32, "pooling")?;
        let host = self
            .device
            .stream
            .clone_dtoh(&out)
            .map_err(|e| device_error("reading embeddings", e))?;
        self.device
            .stream
            .synchronize()
            .map_err(|e| device_error("embedding", e))?;
        Ok(host[..batch * hidden].chunks(hidden).map(|c| c.to_vec()).collect())
    }
}

enum Model {
    Bert(Bert<Buf>),
    Decoder(Decoder<Buf>),
}

/// A model resident on a GPU: a BERT-family encoder or a Llama/Qwen2 decoder,
/// by config.json's model_type.
pub struct GpuEncoder {
    ops: CudaOps,
    model: Model,
}

impl GpuEncoder {
    /// Load `folder`'s config.json and model.safetensors onto device `ordinal`.
    pub fn load(ordinal: usize, folder: &Path, pooling: Pooling) -> EngineResult<Self> {
        let kind = checkpoint::model_type(folder)?;
        let mut ops = CudaOps::open(ordinal)?;
        let model = match kind.as_str() {
            "bert" => Model::Bert(Bert::load(folder, pooling, &mut ops)?),
            _ => Model::Decoder(Decoder::load(folder, pooling, &mut ops)?),
        };
        Ok(GpuEncoder { ops, model })
    }

    pub fn description(&self) -> &str {
        self.ops.description()
    }

    pub fn dimension(&self) -> usize {
        match &self.model {
            Model::Bert(m) => m.config.hidden,
            Model::Decoder(m) => m.config.hidden,
        }
    }

    /// Pooled, L2-normalised embeddings of one batch.
    pub fn embed(&mut self, texts: &[&TokenizedText]) -> EngineResult<Vec<Vec<f32>>> {
        match &self.model {
            Model::Bert(m) => m.forward(&mut self.ops, texts),
            Model::Decoder(m) => m.forward(&mut self.ops, texts),
        }
    }
}
