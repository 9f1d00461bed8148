//! The encoder's operations in float32 on the CPU, written from their
//! definitions: the reference the CUDA backend is checked against, itself
//! checked against ONNX Runtime on the same weights (tests/gpu_encoder.rs).
//! Not a serving path: ONNX Runtime embeds on the CPU.

use super::ops::{Activation, AttentionShape, EncoderOps};
use crate::engine::embed::pooling::l2_normalize;
use crate::engine::error::EngineResult;
use crate::engine::simd::dot;
use crate::engine::Pooling;

#[derive(Default)]
pub struct CpuOps;

/// erf through Numerical Recipes' erfc (a Chebyshev fit, fractional error
/// below 1.2e-7): far finer than float32 GELU needs, no libm dependency.
fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

fn erf_f64(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - r
    } else {
        r - 1.0
    }
}

/// GELU by its definition (erf), or its tanh approximation.
pub fn activate(v: f32, act: Activation) -> f32 {
    match act {
        Activation::None => v,
        Activation::Gelu => 0.5 * v * (1.0 + erf(v / std::f32::consts::SQRT_2)),
        Activation::GeluTanh => {
            let c = (2.0 / std::f32::consts::PI).sqrt();
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        }
    }
}

impl EncoderOps for CpuOps {
    type Buf = Vec<f32>;

    fn upload(&mut self, values: &[f32]) -> EngineResult<Vec<f32>> {
        Ok(values.to_vec())
    }

    fn embed(
        &mut self,
        word: &Vec<f32>,
        position: &Vec<f32>,
        token_type: &Vec<f32>,
        hidden: usize,
        ids: &[u32],
        positions: &[u32],
        types: &[u32],
    ) -> EngineResult<Vec<f32>> {
        let row = |table: &'_ Vec<f32>, i: u32| -> Vec<f32> { table[i as usize * hidden..][..hidden].to_vec() };
        let mut out = Vec::with_capacity(ids.len() * hidden);
        for i in 0..ids.len() {
            let (w, p, t) = (
                row(word, ids[i]),
                row(position, positions[i]),
                row(token_type, types[i]),
            );
            out.extend((0..hidden).map(|j| w[j] + p[j] + t[j]));
        }
        Ok(out)
    }

    fn linear(
        &mut self,
        x: &Vec<f32>,
        rows: usize,
        w: &Vec<f32>,
        b: Option<&Vec<f32>>,
        inputs: usize,
        outputs: usize,
        act: Activation,
    ) -> EngineResult<Vec<f32>> {
        let mut out = Vec::with_capacity(rows * outputs);
        for r in 0..rows {
            let xr = &x[r * inputs..(r + 1) * inputs];
            out.extend(
                (0..outputs)
                    .map(|o| activate(dot(xr, &w[o * inputs..(o + 1) * inputs]) + b.map_or(0.0, |b| b[o]), act)),
            );
        }
        Ok(out)
    }

    fn gather(&mut self, table: &Vec<f32>, width: usize, ids: &[u32]) -> EngineResult<Vec<f32>> {
        Ok(ids
            .iter()
            .flat_map(|&i| table[i as usize * width..][..width].iter().copied())
            .collect())
    }

    fn add_rms_norm(
        &mut self,
        x: &Vec<f32>,
        add: Option<&Vec<f32>>,
        weight: &Vec<f32>,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> EngineResult<(Vec<f32>, Vec<f32>)> {
        let sum: Vec<f32> = match add {
            Some(a) => x.iter().zip(a).map(|(x, a)| x + a).collect(),
            None => x.clone(),
        };
        let mut normed = Vec::with_capacity(rows * width);
        for row in sum.chunks_exact(width).take(rows) {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / width as f32 + eps).sqrt();
            normed.extend(row.iter().zip(weight).map(|(v, w)| v * inv * w));
        }
        Ok((sum, normed))
    }

    fn silu_mul(&mut self, gate_up: &Vec<f32>, rows: usize, width: usize) -> EngineResult<Vec<f32>> {
        let mut out = Vec::with_capacity(rows * width);
        for row in gate_up.chunks_exact(2 * width).take(rows) {
            let (gate, up) = row.split_at(width);
            out.extend(gate.iter().zip(up).map(|(g, u)| g / (1.0 + (-g).exp()) * u));
        }
        Ok(out)
    }

    fn add_layer_norm(
        &mut self,
        x: &Vec<f32>,
        residual: Option<&Vec<f32>>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> EngineResult<Vec<f32>> {
        let mut out = Vec::with_capacity(rows * width);
        for r in 0..rows {
            let v: Vec<f32> = (0..width)
                .map(|j| x[r * width + j] + residual.map_or(0.0, |res| res[r * width + j]))
                .collect();
            let mean = v.iter().sum::<f32>() / width as f32;
            let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / width as f32;
            let inv = 1.0 / (var + eps).sqrt();
            out.extend((0..width).map(|j| (v[j] - mean) * inv * gamma[j] + beta[j]));
        }
        Ok(out)
    }

    fn attention(
        &mut self,
        qkv: &Vec<f32>,
        batch: usize,
        seq: usize,
        shape: &AttentionShape,
        lengths: &[usize],
    ) -> EngineResult<Vec<f32>> {
        let AttentionShape {
            heads,
            kv_heads,
            head_dim,
            rotary_theta,
            causal,
        } = *shape;
        let hidden = heads * head_dim;
        let stride = (heads + 2 * kv_heads) * head_dim;
        let group = heads / kv_heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let half = head_dim / 2;
        // Rotate-half rotary embedding, as the ONNX export computes it: the
        // frequencies in float64 then float32, the angle and its sine in float32.
        let rotate = |x: &[f32], t: usize| -> Vec<f32> {
            let Some(theta) = rotary_theta else { return x.to_vec() };
            (0..head_dim)
                .map(|d| {
                    let j = d % half;
                    let inv_freq = (1.0 / (theta as f64).powf(2.0 * j as f64 / head_dim as f64)) as f32;
                    let (s, c) = (t as f32 * inv_freq).sin_cos();
                    if d < half {
                        x[d] * c - x[d + half] * s
                    } else {
                        x[d] * c + x[d - half] * s
                    }
                })
                .collect()
        };
        let mut out = vec![0f32; batch * seq * hidden];
        for b in 0..batch {
            for h in 0..heads {
                let part = |t: usize, offset: usize| &qkv[(b * seq + t) * stride + offset..][..head_dim];
                let (q_at, k_at) = (h * head_dim, (heads + h / group) * head_dim);
                let v_at = k_at + kv_heads * head_dim;
                let keys: Vec<Vec<f32>> = (0..lengths[b]).map(|j| rotate(part(j, k_at), j)).collect();
                for i in 0..seq {
                    let q = rotate(part(i, q_at), i);
                    let visible = if causal { lengths[b].min(i + 1) } else { lengths[b] };
                    let scores: Vec<f32> = keys[..visible].iter().map(|k| dot(&q, k) * scale).collect();
                    let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let weights: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
                    let total: f32 = weights.iter().sum();
                    let o = &mut out[(b * seq + i) * hidden + h * head_dim..][..head_dim];
                    for (j, w) in weights.iter().enumerate() {
                        o.iter_mut().zip(part(j, v_at)).for_each(|(o, v)| *o += w / total * v);
                    }
                }
            }
        }
        Ok(out)
    }

    fn pool(
        &mut self,
        x: &Vec<f32>,
        batch: usize,
        seq: usize,
        hidden: usize,
        lengths: &[usize],
        pooling: Pooling,
    ) -> EngineResult<Vec<Vec<f32>>> {
        Ok((0..batch)
            .map(|b| {
                let states = &x[b * seq * hidden..(b + 1) * seq * hidden];
                let mut v = vec![0f32; hidden];
                pooling.pool(states, hidden, 0..lengths[b], &mut v);
                l2_normalize(&mut v);
                v
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.5204998778),
            (1.0, 0.8427007929),
            (-2.0, -0.9953222650),
            (3.5, 0.9999992569),
        ] {
            assert!((erf_f64(x) - want).abs() < 2e-7, "erf({x}) = {} not {want}", erf_f64(x));
        }
    }

    #[test]
    fn attention_ignores_padding_and_averages_equal_keys() {
        // One head of width 2; sequence of 3 with 2 real tokens whose keys are
        // equal: each query attends half to each real value, none to padding.
        let mut qkv = vec![0f32; 3 * 6];
        for t in 0..3 {
            qkv[t * 6..t * 6 + 2].copy_from_slice(&[1.0, 0.0]); // q
            qkv[t * 6 + 2..t * 6 + 4].copy_from_slice(&[1.0, 1.0]); // k
        }
        qkv[4..6].copy_from_slice(&[2.0, 0.0]);
        qkv[10..12].copy_from_slice(&[0.0, 4.0]);
        qkv[16..18].copy_from_slice(&[100.0, 100.0]); // padding's value
        let shape = AttentionShape {
            heads: 1,
            kv_heads: 1,
            head_dim: 2,
            rotary_theta: None,
            causal: false,
        };
        let out = CpuOps.attention(&qkv, 1, 3, &shape, &[2]).unwrap();
        assert_eq!(&out[..2], &[1.0, 2.0]);
        // Causal: the first token sees only itself.
        let causal = AttentionShape { causal: true, ..shape };
        let out = CpuOps.attention(&qkv, 1, 3, &causal, &[2]).unwrap();
        assert_eq!(&out[..2], &[2.0, 0.0]);
    }

    #[test]
    fn layer_norm_and_gelu_follow_their_definitions() {
        let out = CpuOps
            .add_layer_norm(
                &vec![1.0, 3.0],
                Some(&vec![1.0, 1.0]),
                &vec![2.0, 2.0],
                &vec![0.5, 0.5],
                1,
                2,
                0.0,
            )
            .unwrap();
        assert_eq!(out, vec![-1.5, 2.5]);
        let x = [activate(1.0, Activation::Gelu), activate(-1.0, Activation::Gelu)];
        assert!(
            (x[0] - 0.8413447).abs() < 1e-6 && (x[1] + 0.1586553).abs() < 1e-6,
            "{x:?}"
        );
        assert!((activate(1.0, Activation::GeluTanh) - 0.841192).abs() < 1e-6);
    }
}
