//! The decoder embedders (Llama and Qwen2 architectures: SmolLM2, Qwen2.5,
//! InF-Embed's base) as a sequence of `EncoderOps`: RMSNorm, rotary
//! positions, grouped-query causal attention, SwiGLU, the final norm, then
//! the folder's pooling (last token for these models). Weights in Hugging
//! Face's names from model.safetensors (scripts/export_decoder_safetensors.py
//! writes them from a GGUF with the ONNX export's dequantisation).

use std::path::Path;

use super::checkpoint;
use super::ops::{Activation, AttentionShape, EncoderOps};
use super::safetensors::SafeTensors;
use super::token_batch::TokenBatch;
use crate::engine::embed::tokenize::TokenizedText;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::Pooling;

#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub eps: f32,
    pub rope_theta: f32,
}

impl DecoderConfig {
    pub fn from_json(text: &str) -> EngineResult<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EngineError::files(format!("config.json is not JSON: {e}")))?;
        let kind = v["model_type"].as_str().unwrap_or("");
        if !matches!(kind, "llama" | "qwen2") {
            return Err(EngineError::files(format!(
                "the GPU decoder runs Llama and Qwen2 models, not {kind:?}"
            )));
        }
        if !v["rope_scaling"].is_null() {
            return Err(EngineError::files("rope_scaling is not supported by the GPU decoder")
                .with_hint("embed this model on the CPU (inf_ir.embed_device = cpu)"));
        }
        let number = |key: &str| -> EngineResult<usize> {
            v[key]
                .as_u64()
                .map(|n| n as usize)
                .filter(|&n| n > 0)
                .ok_or_else(|| EngineError::files(format!("config.json has no positive {key}")))
        };
        let heads = number("num_attention_heads")?;
        let config = DecoderConfig {
            hidden: number("hidden_size")?,
            layers: number("num_hidden_layers")?,
            heads,
            kv_heads: v["num_key_value_heads"].as_u64().map_or(heads, |n| n as usize),
            intermediate: number("intermediate_size")?,
            vocab: number("vocab_size")?,
            max_positions: number("max_position_embeddings")?,
            eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
            rope_theta: v["rope_theta"].as_f64().unwrap_or(10000.0) as f32,
        };
        let fits = config.hidden.is_multiple_of(heads)
            && config.kv_heads > 0
            && heads.is_multiple_of(config.kv_heads)
            && (config.hidden / heads).is_multiple_of(2);
        if !fits {
            return Err(EngineError::files(format!(
                "hidden_size {}, {} heads and {} key/value heads do not divide evenly",
                config.hidden, heads, config.kv_heads
            )));
        }
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    fn attention(&self) -> AttentionShape {
        AttentionShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim(),
            rotary_theta: Some(self.rope_theta),
            causal: true,
        }
    }
}

struct Layer<B> {
    input_norm: B,
    /// q, k, v projections stacked: [(heads + 2·kv_heads)·head_dim, hidden].
    qkv_w: B,
    /// Qwen2 has q/k/v biases; Llama has none.
    qkv_b: Option<B>,
    o_w: B,
    post_norm: B,
    /// gate and up stacked: [2·intermediate, hidden].
    gate_up_w: B,
    down_w: B,
}

pub struct Decoder<B> {
    pub config: DecoderConfig,
    pub pooling: Pooling,
    embed: B,
    layers: Vec<Layer<B>>,
    norm: B,
}

impl<B> Decoder<B> {
    pub fn load<O: EncoderOps<Buf = B>>(folder: &Path, pooling: Pooling, ops: &mut O) -> EngineResult<Self> {
        let config = DecoderConfig::from_json(&checkpoint::read_config(folder)?)?;
        Self::from_weights(config, &checkpoint::weights(folder)?, pooling, ops)
    }

    pub fn from_weights<O: EncoderOps<Buf = B>>(
        config: DecoderConfig,
        weights: &SafeTensors,
        pooling: Pooling,
        ops: &mut O,
    ) -> EngineResult<Self> {
        let (h, dh, i) = (config.hidden, config.head_dim(), config.intermediate);
        let kv = config.kv_heads * dh;
        // A *ForCausalLM checkpoint prefixes "model."; a bare *Model's has none.
        let prefix = if weights.info("model.embed_tokens.weight").is_some() {
            "model."
        } else {
            ""
        };
        let embed = ops.upload(&weights.f32(&format!("{prefix}embed_tokens.weight"), &[config.vocab, h])?)?;
        let norm = ops.upload(&weights.f32(&format!("{prefix}norm.weight"), &[h])?)?;
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let at = |rest: &str| format!("{prefix}layers.{l}.{rest}");
            let mut qkv_w = weights.f32(&at("self_attn.q_proj.weight"), &[h, h])?;
            qkv_w.extend(weights.f32(&at("self_attn.k_proj.weight"), &[kv, h])?);
            qkv_w.extend(weights.f32(&at("self_attn.v_proj.weight"), &[kv, h])?);
            let qkv_b = if weights.info(&at("self_attn.q_proj.bias")).is_some() {
                let mut b = weights.f32(&at("self_attn.q_proj.bias"), &[h])?;
                b.extend(weights.f32(&at("self_attn.k_proj.bias"), &[kv])?);
                b.extend(weights.f32(&at("self_attn.v_proj.bias"), &[kv])?);
                Some(ops.upload(&b)?)
            } else {
                None
            };
            let mut gate_up = weights.f32(&at("mlp.gate_proj.weight"), &[i, h])?;
            gate_up.extend(weights.f32(&at("mlp.up_proj.weight"), &[i, h])?);
            layers.push(Layer {
                input_norm: ops.upload(&weights.f32(&at("input_layernorm.weight"), &[h])?)?,
                qkv_w: ops.upload(&qkv_w)?,
                qkv_b,
                o_w: ops.upload(&weights.f32(&at("self_attn.o_proj.weight"), &[h, h])?)?,
                post_norm: ops.upload(&weights.f32(&at("post_attention_layernorm.weight"), &[h])?)?,
                gate_up_w: ops.upload(&gate_up)?,
                down_w: ops.upload(&weights.f32(&at("mlp.down_proj.weight"), &[h, i])?)?,
            });
        }
        Ok(Decoder {
            config,
            pooling,
            embed,
            layers,
            norm,
        })
    }

    /// Pooled, L2-normalised embeddings of a batch (right-padded inside:
    /// positions count from each text's first token, so the padding side
    /// the folder names does not change a vector).
    pub fn forward<O: EncoderOps<Buf = B>>(
        &self,
        ops: &mut O,
        texts: &[&TokenizedText],
    ) -> EngineResult<Vec<Vec<f32>>> {
        let c = &self.config;
        let Some(tokens) = TokenBatch::right_padded(texts, c.vocab, None, c.max_positions)? else {
            return Ok(Vec::new());
        };
        let (h, batch, seq, rows) = (c.hidden, texts.len(), tokens.seq, tokens.rows());
        let lengths = &tokens.lengths;
        let qkv_width = (c.heads + 2 * c.kv_heads) * c.head_dim();
        let shape = c.attention();
        let mut x = ops.gather(&self.embed, h, &tokens.ids)?;
        let mut pending: Option<B> = None; // the last block's output, added to x by the next norm
        for layer in &self.layers {
            let (sum, normed) = ops.add_rms_norm(&x, pending.as_ref(), &layer.input_norm, rows, h, c.eps)?;
            x = sum;
            let qkv = ops.linear(
                &normed,
                rows,
                &layer.qkv_w,
                layer.qkv_b.as_ref(),
                h,
                qkv_width,
                Activation::None,
            )?;
            let context = ops.attention(&qkv, batch, seq, &shape, lengths)?;
            let attended = ops.linear(&context, rows, &layer.o_w, None, h, h, Activation::None)?;
            let (sum, normed) = ops.add_rms_norm(&x, Some(&attended), &layer.post_norm, rows, h, c.eps)?;
            x = sum;
            let gate_up = ops.linear(
                &normed,
                rows,
                &layer.gate_up_w,
                None,
                h,
                2 * c.intermediate,
                Activation::None,
            )?;
            let mixed = ops.silu_mul(&gate_up, rows, c.intermediate)?;
            pending = Some(ops.linear(&mixed, rows, &layer.down_w, None, c.intermediate, h, Activation::None)?);
        }
        let (_, last) = ops.add_rms_norm(&x, pending.as_ref(), &self.norm, rows, h, c.eps)?;
        ops.pool(&last, batch, seq, h, lengths, self.pooling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_read_and_checked() {
        let smollm = r#"{"model_type":"llama","hidden_size":576,"num_hidden_layers":30,"num_attention_heads":9,
            "num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000.0,"vocab_size":49152,
            "max_position_embeddings":8192,"intermediate_size":1536}"#;
        let c = DecoderConfig::from_json(smollm).unwrap();
        assert_eq!((c.head_dim(), c.kv_heads, c.rope_theta), (64, 3, 100000.0));
        let bert = smollm.replace("\"llama\"", "\"bert\"");
        assert!(DecoderConfig::from_json(&bert)
            .unwrap_err()
            .message
            .contains("not \"bert\""));
        let uneven = smollm.replace("\"num_key_value_heads\":3", "\"num_key_value_heads\":4");
        assert!(DecoderConfig::from_json(&uneven)
            .unwrap_err()
            .message
            .contains("divide evenly"));
        let scaled = smollm.replace("\"rope_theta\"", "\"rope_scaling\":{\"type\":\"yarn\"},\"rope_theta\"");
        assert!(DecoderConfig::from_json(&scaled)
            .unwrap_err()
            .message
            .contains("rope_scaling"));
    }
}
