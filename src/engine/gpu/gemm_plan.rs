//! The matrix products of the encoder and of search as cuBLAS sees them
//! (column-major), derived once here from row-major layouts: the device
//! code passes these to cublasGemmStridedBatchedEx (context::Device::gemm),
//! and `reference` evaluates the same parameters on the CPU, so a test
//! checks the derivation without a GPU.

/// One (batched) GEMM: C = alpha · op(A) · op(B), column-major, op = transpose when set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    pub transa: bool,
    pub transb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub batch: usize,
    pub alpha: f32,
}

/// y [rows, outputs] = x [rows, inputs] · wᵀ, w [outputs, inputs]. In
/// column-major terms yᶜ (outputs × rows) = wᶜᵀ · xᶜ: A = w, B = x, C = y.
/// Search scores are this with x the queries and w the corpus.
pub fn linear(rows: usize, inputs: usize, outputs: usize) -> Gemm {
    Gemm {
        transa: true,
        transb: false,
        m: outputs,
        n: rows,
        k: inputs,
        lda: inputs,
        ldb: inputs,
        ldc: outputs,
        stride_a: 0,
        stride_b: 0,
        stride_c: 0,
        batch: 1,
        alpha: 1.0,
    }
}

/// Per (sequence, head): scores [seq_q, seq_k] = q [seq, dh] · kᵀ / √dh,
/// q and k as [batch·heads, seq, dh]. A = k, B = q, C = scores.
pub fn attention_scores(batch: usize, heads: usize, seq: usize, head_dim: usize) -> Gemm {
    Gemm {
        transa: true,
        transb: false,
        m: seq,
        n: seq,
        k: head_dim,
        lda: head_dim,
        ldb: head_dim,
        ldc: seq,
        stride_a: seq * head_dim,
        stride_b: seq * head_dim,
        stride_c: seq * seq,
        batch: batch * heads,
        alpha: 1.0 / (head_dim as f32).sqrt(),
    }
}

/// Per (sequence, head): context [seq, dh] = probs [seq_q, seq_k] · v [seq, dh].
/// A = v, B = probs, C = context.
pub fn attention_context(batch: usize, heads: usize, seq: usize, head_dim: usize) -> Gemm {
    Gemm {
        transa: false,
        transb: false,
        m: head_dim,
        n: seq,
        k: seq,
        lda: head_dim,
        ldb: seq,
        ldc: head_dim,
        stride_a: seq * head_dim,
        stride_b: seq * seq,
        stride_c: seq * head_dim,
        batch: batch * heads,
        alpha: 1.0,
    }
}

/// cuBLAS's definition evaluated on the CPU (beta = 0).
pub fn reference(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    for p in 0..g.batch {
        let (a, b) = (&a[p * g.stride_a..], &b[p * g.stride_b..]);
        let c = &mut c[p * g.stride_c..];
        if g.transa && !g.transb {
            // Both operands contiguous along k: dot products (the linear layers' case).
            for j in 0..g.n {
                for i in 0..g.m {
                    c[i + j * g.ldc] =
                        g.alpha * crate::engine::simd::dot(&a[i * g.lda..][..g.k], &b[j * g.ldb..][..g.k]);
                }
            }
            continue;
        }
        for j in 0..g.n {
            for i in 0..g.m {
                let mut sum = 0f32;
                for l in 0..g.k {
                    let x = if g.transa { a[l + i * g.lda] } else { a[i + l * g.lda] };
                    let y = if g.transb { b[j + l * g.ldb] } else { b[l + j * g.ldb] };
                    sum += x * y;
                }
                c[i + j * g.ldc] = g.alpha * sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 17) as f32 / 8.0 - 1.0)
            .collect()
    }

    #[test]
    fn linear_is_x_times_w_transposed_row_major() {
        let (rows, inputs, outputs) = (3, 4, 5);
        let (x, w) = (values(rows * inputs, 1), values(outputs * inputs, 2));
        let mut y = vec![0f32; rows * outputs];
        reference(&linear(rows, inputs, outputs), &w, &x, &mut y);
        for r in 0..rows {
            for o in 0..outputs {
                let want: f32 = (0..inputs).map(|i| x[r * inputs + i] * w[o * inputs + i]).sum();
                assert_eq!(y[r * outputs + o], want);
            }
        }
    }

    #[test]
    fn attention_products_follow_the_row_major_definitions() {
        let (batch, heads, seq, dh) = (2, 3, 4, 2);
        let bh = batch * heads;
        let (q, k, v) = (
            values(bh * seq * dh, 3),
            values(bh * seq * dh, 4),
            values(bh * seq * dh, 5),
        );
        let mut scores = vec![0f32; bh * seq * seq];
        let g = attention_scores(batch, heads, seq, dh);
        reference(&g, &k, &q, &mut scores);
        let mut context = vec![0f32; bh * seq * dh];
        reference(&attention_context(batch, heads, seq, dh), &v, &scores, &mut context);
        for p in 0..bh {
            for i in 0..seq {
                for j in 0..seq {
                    let want: f32 = (0..dh)
                        .map(|d| q[(p * seq + i) * dh + d] * k[(p * seq + j) * dh + d])
                        .sum();
                    assert!((scores[(p * seq + i) * seq + j] - want * g.alpha).abs() < 1e-6);
                }
                for d in 0..dh {
                    let want: f32 = (0..seq)
                        .map(|j| scores[(p * seq + i) * seq + j] * v[(p * seq + j) * dh + d])
                        .sum();
                    assert!((context[(p * seq + i) * dh + d] - want).abs() < 1e-5);
                }
            }
        }
    }
}
