//! The operations the encoders' forward passes are made of (BERT's and the
//! Llama/Qwen2 decoders'), over a backend's buffers (host vectors on the
//! CPU, device memory on a GPU). Layouts are row-major; a batch is
//! right-padded to its longest text, `lengths` says how many rows of each
//! sequence are real.

use crate::engine::error::EngineResult;
use crate::engine::Pooling;

/// What follows a linear layer's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// GELU with erf ("gelu").
    Gelu,
    /// GELU's tanh approximation ("gelu_new", "gelu_pytorch_tanh").
    GeluTanh,
}

impl Activation {
    /// The kernels' code for it.
    pub fn code(self) -> i32 {
        match self {
            Activation::None => 0,
            Activation::Gelu => 1,
            Activation::GeluTanh => 2,
        }
    }
}

/// The shape of one self-attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub heads: usize,
    /// Key/value heads: `heads` for BERT, fewer for grouped-query attention.
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Rotary position embedding's base (rotate-half), None for BERT.
    pub rotary_theta: Option<f32>,
    /// Each token sees only itself and the tokens before it (decoders).
    pub causal: bool,
}

pub trait EncoderOps {
    type Buf;

    /// Weights or inputs from the host (the backend picks its precision).
    fn upload(&mut self, values: &[f32]) -> EngineResult<Self::Buf>;

    /// Row i = word[ids[i]] + position[positions[i]] + token_type[types[i]], `hidden` wide.
    #[allow(clippy::too_many_arguments)]
    fn embed(
        &mut self,
        word: &Self::Buf,
        position: &Self::Buf,
        token_type: &Self::Buf,
        hidden: usize,
        ids: &[u32],
        positions: &[u32],
        types: &[u32],
    ) -> EngineResult<Self::Buf>;

    /// Row i = table[ids[i]], `width` wide (a decoder's token embeddings).
    fn gather(&mut self, table: &Self::Buf, width: usize, ids: &[u32]) -> EngineResult<Self::Buf>;

    /// act(x [rows, inputs] · wᵀ + b), with w [outputs, inputs] (the checkpoint's layout).
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        x: &Self::Buf,
        rows: usize,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        inputs: usize,
        outputs: usize,
        act: Activation,
    ) -> EngineResult<Self::Buf>;

    /// Per row: LayerNorm(x + residual) · gamma + beta.
    #[allow(clippy::too_many_arguments)]
    fn add_layer_norm(
        &mut self,
        x: &Self::Buf,
        residual: Option<&Self::Buf>,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> EngineResult<Self::Buf>;

    /// Per row: sum = x + add (no add: x), normed = RMSNorm(sum) · weight.
    /// Returns (sum, normed): a decoder's residual stream and its norm.
    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm(
        &mut self,
        x: &Self::Buf,
        add: Option<&Self::Buf>,
        weight: &Self::Buf,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> EngineResult<(Self::Buf, Self::Buf)>;

    /// gate_up [rows, 2·width] (gate, then up) -> silu(gate) · up [rows, width].
    fn silu_mul(&mut self, gate_up: &Self::Buf, rows: usize, width: usize) -> EngineResult<Self::Buf>;

    /// Self-attention: `qkv` is [batch·seq, (heads + 2·kv_heads)·head_dim]
    /// (queries, keys, values side by side); keys past `lengths[b]` are
    /// masked (and later ones too when causal). Returns [batch·seq, heads·head_dim].
    fn attention(
        &mut self,
        qkv: &Self::Buf,
        batch: usize,
        seq: usize,
        shape: &AttentionShape,
        lengths: &[usize],
    ) -> EngineResult<Self::Buf>;

    /// One pooled, L2-normalised vector per sequence, on the host.
    fn pool(
        &mut self,
        x: &Self::Buf,
        batch: usize,
        seq: usize,
        hidden: usize,
        lengths: &[usize],
        pooling: Pooling,
    ) -> EngineResult<Vec<Vec<f32>>>;
}
