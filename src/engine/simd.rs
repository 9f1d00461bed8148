//! Dot-product kernels, with AVX2 where the CPU has it: float32 for every
//! float scoring path (re-score, k-means, validation), int8 for the coarse
//! centroid scores that order an index scan's probes. The list scan's code
//! kernel is in `ivf::codes`.

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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_generic(a, b)
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

fn dot_i8_generic(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(x, y)| *x as i32 * *y as i32).sum()
}

/// 32 bytes per step: maddubs needs one unsigned operand, so |a| meets b
/// with a's sign (values are in -127..=127: two products fit an i16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let steps = a.len().min(b.len()) / 32;
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    for s in 0..steps {
        let x = _mm256_loadu_si256(a.as_ptr().add(s * 32) as *const __m256i);
        let y = _mm256_loadu_si256(b.as_ptr().add(s * 32) as *const __m256i);
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
    lanes.iter().sum::<i32>() + dot_i8_generic(&a[steps * 32..], &b[steps * 32..])
}

/// Int8 dot product; values must lie in -127..=127 (not -128).
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
    fn i8_matches_naive_with_extremes_and_a_tail() {
        let a: Vec<i8> = (0..77)
            .map(|i| if i % 5 == 0 { -127 } else { (i * 37 % 255 - 127) as i8 })
            .collect();
        let b: Vec<i8> = (0..77)
            .map(|i| if i % 3 == 0 { 127 } else { (i * 91 % 255 - 127) as i8 })
            .collect();
        let naive: i32 = a.iter().zip(&b).map(|(x, y)| *x as i32 * *y as i32).sum();
        assert_eq!(dot_i8(&a, &b), naive);
        assert_eq!(dot_i8(&[-127; 64], &[-127; 64]), 64 * 127 * 127);
        assert_eq!(dot_i8(&[0; 40], &[-127; 40]), 0);
    }

    #[test]
    fn f32_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }
}
