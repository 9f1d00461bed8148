//! Codes of list entries: each entry's residual (row minus its list's
//! centroid), randomly rotated, quantised to 4 bits per dimension between its
//! own minimum and maximum. A 384-d row takes 204 bytes instead of 1,536.
//!
//! Why residuals and a rotation: the residual is much shorter than the row,
//! and after a random rotation its coordinates are alike in size (no
//! outlier dimension stretches the 16 levels), so the levels are fine. The
//! rotation keeps dot products, so <residual, rotated query> is exact
//! algebra; only the rounding errs, by at most half a level per dimension,
//! independently: the estimate's error is close to normal with a standard
//! deviation of step / sqrt(12) (for a unit query). The scan re-scores
//! exactly only the entries whose upper bound could still beat a re-scored
//! one, so the bound sets how much work a search takes.
//!
//! Byte layout of a code (as stored in index pages, little-endian): low
//! (f32), step (f32), norm of the quantised residual (f32), then one byte per
//! two dimensions (dimension 2j in the low nibble, 2j + 1 in the high one).

/// Slack of the error bound in standard deviations: 3.0 leaves about one
/// entry in 400 outside its bound, and a true neighbour is lost only if its
/// bound fails *and* that drops it below the k-th score.
pub const EPSILON: f32 = 3.0;

const LEVELS: f32 = 15.0;
const HEADER: usize = 12;

/// Bytes of one code of a `dim`-dimensional vector.
pub const fn code_len(dim: usize) -> usize {
    HEADER + dim.div_ceil(2)
}

/// Write the code of a rotated residual into `out` (`code_len(r.len())` bytes).
pub fn encode(rotated_residual: &[f32], out: &mut [u8]) {
    let dim = rotated_residual.len();
    assert_eq!(out.len(), code_len(dim), "code buffer length");
    let low = rotated_residual.iter().copied().fold(f32::INFINITY, f32::min);
    let high = rotated_residual.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (low, step) = if dim > 0 && low.is_finite() && high.is_finite() && high > low {
        (low, (high - low) / LEVELS)
    } else if dim > 0 && low.is_finite() {
        (low, 0.0) // all coordinates equal (a zero residual: the centroid itself)
    } else {
        (0.0, 0.0)
    };
    let level = |x: f32| -> u8 {
        if step > 0.0 {
            ((x - low) / step).round().clamp(0.0, LEVELS) as u8
        } else {
            0
        }
    };
    let mut norm_sq = 0f64;
    for (j, pair) in rotated_residual.chunks(2).enumerate() {
        let a = level(pair[0]);
        let b = pair.get(1).map_or(0, |x| level(*x));
        out[HEADER + j] = a | (b << 4);
        for (l, _) in [a, b].iter().zip(pair) {
            let value = (low + step * *l as f32) as f64;
            norm_sq += value * value;
        }
    }
    out[0..4].copy_from_slice(&low.to_le_bytes());
    out[4..8].copy_from_slice(&step.to_le_bytes());
    out[8..12].copy_from_slice(&(norm_sq.sqrt() as f32).to_le_bytes());
}

/// Query values per kernel step (one 32-byte load of codes covers 64 dimensions).
const LANES: usize = 32;

/// A rotated query prepared for scoring codes: int8 with a scale, split into
/// the even and the odd dimensions to meet the nibbles as they unpack.
pub struct QueryCode {
    code_bytes: usize,
    even: Vec<i8>,
    odd: Vec<i8>,
    scale: f32,
    sum: f32,
    /// Centres the levels (7.5 of 0..=15) against the query's own rounding,
    /// so that rounding the query adds no error common to every entry.
    centring: f32,
    kernel: unsafe fn(&[u8], &[i8], &[i8]) -> i32,
}

impl QueryCode {
    /// `rotated_query` must be the rotated unit query.
    pub fn new(rotated_query: &[f32]) -> Self {
        let dim = rotated_query.len();
        let code_bytes = dim.div_ceil(2);
        let padded = code_bytes.div_ceil(LANES) * LANES;
        let max = rotated_query.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 && max.is_finite() { max / 127.0 } else { 0.0 };
        let (mut even, mut odd) = (vec![0i8; padded], vec![0i8; padded]);
        let mut quantised_sum = 0i32;
        for (i, x) in rotated_query.iter().enumerate() {
            let q = if scale > 0.0 {
                (x / scale).round().clamp(-127.0, 127.0) as i8
            } else {
                0
            };
            quantised_sum += q as i32;
            if i % 2 == 0 {
                even[i / 2] = q;
            } else {
                odd[i / 2] = q;
            }
        }
        let sum: f32 = rotated_query.iter().sum();
        QueryCode {
            code_bytes,
            even,
            odd,
            scale,
            sum,
            centring: LEVELS / 2.0 * (sum - scale * quantised_sum as f32),
            kernel: pick_kernel(),
        }
    }

    /// Estimated dot product of the query with the residual behind `stored`,
    /// and the half-width of its error bound.
    #[inline]
    pub fn estimate(&self, stored: &[u8]) -> (f32, f32) {
        assert_eq!(stored.len(), HEADER + self.code_bytes, "code length");
        let low = f32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        let step = f32::from_le_bytes([stored[4], stored[5], stored[6], stored[7]]);
        let norm = f32::from_le_bytes([stored[8], stored[9], stored[10], stored[11]]);
        // SAFETY: lengths checked above (the query arrays are padded past the
        // codes); the AVX2 kernel is only picked when the CPU has AVX2.
        let levels_dot = unsafe { (self.kernel)(&stored[HEADER..], &self.even, &self.odd) };
        // sum_i (low + step * level_i) * q_i, the levels' part with the int8 query.
        let estimate = low * self.sum + step * (self.scale * levels_dot as f32 + self.centring);
        // Rounding the code (step) and the query (scale, over the residual's
        // length) err independently; their sum of deviations bounds both.
        let deviation = (step + self.scale * norm) * FRAC_1_SQRT_12;
        (estimate, EPSILON * deviation)
    }
}

const FRAC_1_SQRT_12: f32 = 0.288_675_13;

/// Sum over dimensions of level * query value; `even`/`odd` are at least
/// as long as `codes`.
unsafe fn levels_dot_generic(codes: &[u8], even: &[i8], odd: &[i8]) -> i32 {
    let mut sum = 0i32;
    for (j, c) in codes.iter().enumerate() {
        sum += (c & 15) as i32 * even[j] as i32 + (c >> 4) as i32 * odd[j] as i32;
    }
    sum
}

/// 64 dimensions per step: the nibbles unpack into 32 unsigned bytes each,
/// maddubs multiplies them with the signed query bytes (15 * 127 * 2 fits i16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn levels_dot_avx2(codes: &[u8], even: &[i8], odd: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let steps = codes.len() / LANES;
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    for s in 0..steps {
        let c = _mm256_loadu_si256(codes.as_ptr().add(s * LANES) as *const __m256i);
        let lo = _mm256_and_si256(c, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), mask);
        let qe = _mm256_loadu_si256(even.as_ptr().add(s * LANES) as *const __m256i);
        let qo = _mm256_loadu_si256(odd.as_ptr().add(s * LANES) as *const __m256i);
        let pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo, qe), _mm256_maddubs_epi16(hi, qo));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
    let tail = levels_dot_generic(&codes[steps * LANES..], &even[steps * LANES..], &odd[steps * LANES..]);
    lanes.iter().sum::<i32>() + tail
}

fn pick_kernel() -> unsafe fn(&[u8], &[i8], &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        return levels_dot_avx2;
    }
    levels_dot_generic
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ivf::rotation::Rotation;
    use crate::engine::ivf::synthetic::unit_vectors;
    use crate::engine::simd::dot;

    #[test]
    fn layout_and_levels() {
        let mut out = vec![0u8; code_len(3)];
        encode(&[0.5, -1.0, 0.2], &mut out);
        assert_eq!(out.len(), 14);
        assert_eq!(f32::from_le_bytes(out[0..4].try_into().unwrap()), -1.0);
        assert_eq!(f32::from_le_bytes(out[4..8].try_into().unwrap()), 0.1);
        // 0.5 -> level 15 (low nibble), -1.0 -> 0 (high nibble), 0.2 -> 12
        assert_eq!(out[12], 15);
        assert_eq!(out[13], 12);
        encode(&[0.0, 0.0, 0.0], &mut out);
        assert_eq!(&out[4..], &[0u8; 10][..], "a zero residual: no step, no norm");
    }

    #[test]
    fn estimates_are_unbiased_and_inside_the_bound() {
        let dim = 384;
        let rot = Rotation::new(dim, 1);
        let rows = unit_vectors(4000, dim, 3);
        // One centroid per row: residuals sharing a centroid share its error.
        let centroids = unit_vectors(4000, dim, 4);
        let query = &unit_vectors(1, dim, 9)[..];
        let q = QueryCode::new(&rot.rotated(query));
        let mut code = vec![0u8; code_len(dim)];
        let (mut outside, mut bias, mut width) = (0, 0.0f64, 0.0f64);
        for (v, centroid) in rows.chunks(dim).zip(centroids.chunks(dim)) {
            let r: Vec<f32> = v.iter().zip(centroid).map(|(a, b)| a - b).collect();
            encode(&rot.rotated(&r), &mut code);
            let (estimate, bound) = q.estimate(&code);
            let exact = dot(&r, query);
            bias += (estimate - exact) as f64;
            width += bound as f64;
            if (estimate - exact).abs() > bound {
                outside += 1;
            }
        }
        assert!(outside <= 20, "{outside} of 4000 estimates outside their bound");
        assert!((bias / 4000.0).abs() < 0.0005, "mean error {}", bias / 4000.0);
        // |r| is about 1.4 here: the bound is a few hundredths wide.
        assert!(width / 4000.0 < 0.05, "mean bound {}", width / 4000.0);
    }

    #[test]
    fn kernels_agree() {
        for dim in [1, 63, 64, 200, 384] {
            let rot = Rotation::new(dim, 2);
            let v = unit_vectors(2, dim, 5);
            let q = QueryCode::new(&rot.rotated(&v[dim..]));
            let mut code = vec![0u8; code_len(dim)];
            encode(&rot.rotated(&v[..dim]), &mut code);
            let codes = &code[HEADER..];
            unsafe {
                assert_eq!(
                    (q.kernel)(codes, &q.even, &q.odd),
                    levels_dot_generic(codes, &q.even, &q.odd),
                    "dim {dim}"
                )
            };
        }
    }
}
