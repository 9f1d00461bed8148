//! Compact int8 codes of unit vectors: a float32 scale and one signed byte
//! per dimension (a quarter of float32's bytes). The list scan ranks entries
//! by the approximate dot product of codes; the shortlist is re-scored exactly.
//!
//! Byte layout of a code (as stored in index pages): scale as little-endian
//! f32, then `dim` bytes of i8.

use crate::engine::simd::dot_i8;

/// Bytes of one code of a `dim`-dimensional vector.
pub const fn code_len(dim: usize) -> usize {
    4 + dim
}

/// Quantise `v` to int8 with a per-vector scale (max |x| / 127); returns the scale.
pub fn quantize(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Write the code of `v` into `out` (`code_len(v.len())` bytes).
pub fn encode(v: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), code_len(v.len()), "code buffer length");
    let (scale_bytes, code) = out.split_at_mut(4);
    // SAFETY: i8 and u8 have the same size and alignment.
    let code = unsafe { std::slice::from_raw_parts_mut(code.as_mut_ptr() as *mut i8, code.len()) };
    let scale = quantize(v, code);
    scale_bytes.copy_from_slice(&scale.to_le_bytes());
}

/// A query prepared for scoring codes.
pub struct QueryCode {
    code: Vec<i8>,
    scale: f32,
}

impl QueryCode {
    pub fn new(query: &[f32]) -> Self {
        let mut code = vec![0i8; query.len()];
        let scale = quantize(query, &mut code);
        QueryCode { code, scale }
    }

    pub fn dim(&self) -> usize {
        self.code.len()
    }

    /// Approximate dot product of the query with a stored code.
    #[inline]
    pub fn score(&self, stored: &[u8]) -> f32 {
        debug_assert_eq!(stored.len(), code_len(self.code.len()));
        let scale = f32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        // SAFETY: i8 and u8 have the same size and alignment.
        let code = unsafe { std::slice::from_raw_parts(stored.as_ptr().add(4) as *const i8, stored.len() - 4) };
        dot_i8(code, &self.code) as f32 * scale * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ivf::synthetic::unit_vectors;
    use crate::engine::simd::dot;

    #[test]
    fn quantize_rounds_to_the_scale() {
        let mut q = vec![0i8; 3];
        assert_eq!(quantize(&[0.5, -1.0, 0.0], &mut q), 1.0 / 127.0);
        assert_eq!(q, vec![64, -127, 0]);
        assert_eq!(quantize(&[0.0, 0.0, 0.0], &mut q), 0.0);
        assert_eq!(q, vec![0, 0, 0]);
    }

    #[test]
    fn approximate_scores_are_close_to_exact() {
        let vectors = unit_vectors(200, 384, 3);
        let query = &unit_vectors(1, 384, 9)[..];
        let q = QueryCode::new(query);
        let mut buf = vec![0u8; code_len(384)];
        for v in vectors.chunks(384) {
            encode(v, &mut buf);
            let approx = q.score(&buf);
            assert!((approx - dot(v, query)).abs() < 0.01, "{approx} vs {}", dot(v, query));
        }
    }
}
