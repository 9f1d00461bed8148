//! The BERT encoder (MiniLM, e5, bge) as a sequence of operations on any
//! `EncoderOps` backend: the float32 CPU reference (`cpu_ops`, checked
//! against ONNX Runtime on the same weights) and the CUDA backend run the
//! same `forward`. Weights come from the checkpoint's safetensors, the
//! shapes from its config.json.

use std::path::Path;

use super::checkpoint;
use super::ops::{Activation, AttentionShape, EncoderOps};
use super::safetensors::SafeTensors;
use super::token_batch::TokenBatch;
use crate::engine::embed::tokenize::TokenizedText;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::Pooling;

#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    /// The feed-forward activation: "gelu" (erf) or its tanh approximation.
    pub activation: Activation,
}

impl BertConfig {
    pub fn from_json(text: &str) -> EngineResult<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EngineError::files(format!("config.json is not JSON: {e}")))?;
        let kind = v["model_type"].as_str().unwrap_or("");
        if kind != "bert" {
            return Err(EngineError::files(format!(
                "the GPU encoder runs BERT models (model_type \"bert\"), not {kind:?}"
            ))
            .with_hint("embed this model on the CPU (inf_ir.embed_device = cpu)"));
        }
        let number = |key: &str| -> EngineResult<usize> {
            v[key]
                .as_u64()
                .map(|n| n as usize)
                .filter(|&n| n > 0)
                .ok_or_else(|| EngineError::files(format!("config.json has no positive {key}")))
        };
        let act = v["hidden_act"].as_str().unwrap_or("gelu");
        let activation = match act {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => {
                return Err(EngineError::files(format!(
                    "hidden_act {other:?} is not supported (gelu, gelu_new)"
                )))
            }
        };
        let config = BertConfig {
            hidden: number("hidden_size")?,
            heads: number("num_attention_heads")?,
            layers: number("num_hidden_layers")?,
            intermediate: number("intermediate_size")?,
            vocab: number("vocab_size")?,
            max_positions: number("max_position_embeddings")?,
            type_vocab: v["type_vocab_size"].as_u64().unwrap_or(2).max(1) as usize,
            eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
            activation,
        };
        if !config.hidden.is_multiple_of(config.heads) {
            return Err(EngineError::files(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden, config.heads
            )));
        }
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// One layer's weights, as the backend holds them. Query, key and value
/// are one [3·hidden, hidden] matrix: one GEMM instead of three.
pub struct Layer<B> {
    pub qkv_w: B,
    pub qkv_b: B,
    pub out_w: B,
    pub out_b: B,
    pub attn_norm_g: B,
    pub attn_norm_b: B,
    pub up_w: B,
    pub up_b: B,
    pub down_w: B,
    pub down_b: B,
    pub out_norm_g: B,
    pub out_norm_b: B,
}

pub struct Bert<B> {
    pub config: BertConfig,
    pub pooling: Pooling,
    word: B,
    position: B,
    token_type: B,
    embed_norm_g: B,
    embed_norm_b: B,
    layers: Vec<Layer<B>>,
}

impl<B> Bert<B> {
    /// Read `config.json` and `model.safetensors` from `folder` onto `ops`.
    pub fn load<O: EncoderOps<Buf = B>>(folder: &Path, pooling: Pooling, ops: &mut O) -> EngineResult<Self> {
        let config = BertConfig::from_json(&checkpoint::read_config(folder)?)?;
        Self::from_weights(config, &checkpoint::weights(folder)?, pooling, ops)
    }

    pub fn from_weights<O: EncoderOps<Buf = B>>(
        config: BertConfig,
        weights: &SafeTensors,
        pooling: Pooling,
        ops: &mut O,
    ) -> EngineResult<Self> {
        // Checkpoints saved from BertForX carry a "bert." prefix.
        let prefix = if weights.info("bert.embeddings.word_embeddings.weight").is_some() {
            "bert."
        } else {
            ""
        };
        let (h, i) = (config.hidden, config.intermediate);
        let mut get = |name: String, shape: &[usize]| -> EngineResult<B> {
            let values = weights.f32(&format!("{prefix}{name}"), shape)?;
            ops.upload(&values)
        };
        let word = get("embeddings.word_embeddings.weight".into(), &[config.vocab, h])?;
        let position = get(
            "embeddings.position_embeddings.weight".into(),
            &[config.max_positions, h],
        )?;
        let token_type = get(
            "embeddings.token_type_embeddings.weight".into(),
            &[config.type_vocab, h],
        )?;
        let embed_norm_g = get("embeddings.LayerNorm.weight".into(), &[h])?;
        let embed_norm_b = get("embeddings.LayerNorm.bias".into(), &[h])?;
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let at = |rest: &str| format!("{prefix}encoder.layer.{l}.{rest}");
            let mut qkv_w = Vec::with_capacity(3 * h * h);
            let mut qkv_b = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                qkv_w.extend(weights.f32(&at(&format!("attention.self.{part}.weight")), &[h, h])?);
                qkv_b.extend(weights.f32(&at(&format!("attention.self.{part}.bias")), &[h])?);
            }
            let (qkv_w, qkv_b) = (ops.upload(&qkv_w)?, ops.upload(&qkv_b)?);
            let mut get =
                |rest: &str, shape: &[usize]| -> EngineResult<B> { ops.upload(&weights.f32(&at(rest), shape)?) };
            layers.push(Layer {
                out_w: get("attention.output.dense.weight", &[h, h])?,
                out_b: get("attention.output.dense.bias", &[h])?,
                attn_norm_g: get("attention.output.LayerNorm.weight", &[h])?,
                attn_norm_b: get("attention.output.LayerNorm.bias", &[h])?,
                up_w: get("intermediate.dense.weight", &[i, h])?,
                up_b: get("intermediate.dense.bias", &[i])?,
                down_w: get("output.dense.weight", &[h, i])?,
                down_b: get("output.dense.bias", &[h])?,
                out_norm_g: get("output.LayerNorm.weight", &[h])?,
                out_norm_b: get("output.LayerNorm.bias", &[h])?,
                qkv_w,
                qkv_b,
            });
        }
        Ok(Bert {
            config,
            pooling,
            word,
            position,
            token_type,
            embed_norm_g,
            embed_norm_b,
            layers,
        })
    }

    /// Pooled, L2-normalised embeddings of a batch (right-padded to its
    /// longest text inside the backend).
    pub fn forward<O: EncoderOps<Buf = B>>(
        &self,
        ops: &mut O,
        texts: &[&TokenizedText],
    ) -> EngineResult<Vec<Vec<f32>>> {
        let c = &self.config;
        let Some(tokens) = TokenBatch::right_padded(texts, c.vocab, Some(c.type_vocab), c.max_positions)? else {
            return Ok(Vec::new());
        };
        let (h, batch, seq, rows) = (c.hidden, texts.len(), tokens.seq, tokens.rows());
        let lengths = &tokens.lengths;
        let embedded = ops.embed(
            &self.word,
            &self.position,
            &self.token_type,
            h,
            &tokens.ids,
            &tokens.positions,
            &tokens.types,
        )?;
        let mut x = ops.add_layer_norm(&embedded, None, &self.embed_norm_g, &self.embed_norm_b, rows, h, c.eps)?;
        let shape = AttentionShape {
            heads: c.heads,
            kv_heads: c.heads,
            head_dim: c.head_dim(),
            rotary_theta: None,
            causal: false,
        };
        for layer in &self.layers {
            let qkv = ops.linear(&x, rows, &layer.qkv_w, Some(&layer.qkv_b), h, 3 * h, Activation::None)?;
            let context = ops.attention(&qkv, batch, seq, &shape, lengths)?;
            let projected = ops.linear(&context, rows, &layer.out_w, Some(&layer.out_b), h, h, Activation::None)?;
            x = ops.add_layer_norm(
                &projected,
                Some(&x),
                &layer.attn_norm_g,
                &layer.attn_norm_b,
                rows,
                h,
                c.eps,
            )?;
            let up = ops.linear(
                &x,
                rows,
                &layer.up_w,
                Some(&layer.up_b),
                h,
                c.intermediate,
                c.activation,
            )?;
            let down = ops.linear(
                &up,
                rows,
                &layer.down_w,
                Some(&layer.down_b),
                c.intermediate,
                h,
                Activation::None,
            )?;
            x = ops.add_layer_norm(&down, Some(&x), &layer.out_norm_g, &layer.out_norm_b, rows, h, c.eps)?;
        }
        ops.pool(&x, batch, seq, h, lengths, self.pooling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_read_and_checked() {
        let minilm = r#"{"model_type":"bert","hidden_size":384,"num_attention_heads":12,"num_hidden_layers":6,
            "intermediate_size":1536,"vocab_size":30522,"max_position_embeddings":512,"type_vocab_size":2,
            "layer_norm_eps":1e-12,"hidden_act":"gelu"}"#;
        let c = BertConfig::from_json(minilm).unwrap();
        assert_eq!(
            (c.hidden, c.heads, c.head_dim(), c.layers, c.activation),
            (384, 12, 32, 6, Activation::Gelu)
        );
        let qwen = minilm.replace("\"bert\"", "\"qwen2\"");
        assert!(BertConfig::from_json(&qwen)
            .unwrap_err()
            .message
            .contains("not \"qwen2\""));
        let odd = minilm.replace("\"num_attention_heads\":12", "\"num_attention_heads\":7");
        assert!(BertConfig::from_json(&odd)
            .unwrap_err()
            .message
            .contains("not a multiple"));
        let relu = minilm.replace("\"gelu\"", "\"relu\"");
        assert!(BertConfig::from_json(&relu)
            .unwrap_err()
            .message
            .contains("not supported"));
        let missing = minilm.replace("\"hidden_size\":384,", "");
        assert!(BertConfig::from_json(&missing)
            .unwrap_err()
            .message
            .contains("hidden_size"));
    }
}
