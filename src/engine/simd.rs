//! Dot-product kernels: float32 and int8, with AVX2 where the CPU has it.
//! Every scoring path (list scan, re-score, k-means, validation) uses these.

#[inline(always)]
fn dot_f32_generic(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums let the compiler use vector lanes.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[inline(always)]
fn dot_i8_generic(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(x, y)| *x as i32 * *y as i32).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_generic(a, b)
}

/// 32 int8 products per step: maddubs needs one unsigned operand, so it takes
/// |a| and b with a's sign; |a|, |b| <= 127 keeps each pair sum below i16's
/// limit (2 * 127 * 127 = 32258), so nothing saturates.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / 32;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    for c in 0..chunks {
        let va = _mm256_loadu_si256(a.as_ptr().add(c * 32) as *const __m256i);
        let vb = _mm256_loadu_si256(b.as_ptr().add(c * 32) as *const __m256i);
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
    let tail = dot_i8_generic(&a[chunks * 32..n], &b[chunks * 32..n]);
    lanes.iter().sum::<i32>() + tail
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Float32 dot product.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return unsafe { dot_f32_avx2(a, b) };
    }
    dot_f32_generic(a, b)
}

/// Int8 dot product (entries must lie in -127..=127, as `codes` makes them).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return unsafe { dot_i8_avx2(a, b) };
    }
    dot_i8_generic(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_kernels_agree() {
        let a: Vec<i8> = (0..389).map(|i| (i * 37 % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..389).map(|i| (i * 91 % 255 - 127) as i8).collect();
        assert_eq!(dot_i8(&a, &b), dot_i8_generic(&a, &b));
        let extremes = vec![-127i8; 64];
        assert_eq!(dot_i8(&extremes, &extremes), 64 * 127 * 127);
    }

    #[test]
    fn f32_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }
}
