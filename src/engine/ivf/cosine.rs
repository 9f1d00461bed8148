//! Cosine similarity of float32 vectors, right at the ends of f32's range.
//!
//! The fast path sums products in f32 SIMD lanes. Squares of values near
//! f32::MAX overflow there (`[3e38, 3e38]` gave -Infinity) and squares of
//! values near 1e-30 vanish (two equal such vectors gave distance 1), so
//! when a sum leaves the range where f32 is exact enough, the same sums are
//! taken again in f64, where squares of any finite f32 fit.

use crate::engine::simd::dot;

/// Sums of squares above this lose nothing that matters to products that
/// fall into f32's subnormals (1e-38 and below).
const F32_SAFE_MIN: f32 = 1e-30;

fn f32_safe(sum: f32) -> bool {
    sum.is_finite() && sum > F32_SAFE_MIN
}

/// cos(a, b) in [-1, 1], or None when the lengths differ or either vector
/// has no direction (all zeros, or a non-finite value).
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let (sa, sb) = (dot(a, a), dot(b, b));
    if f32_safe(sa) && f32_safe(sb) {
        let ab = dot(a, b);
        if ab.is_finite() {
            return Some(clamp(ab as f64 / ((sa as f64).sqrt() * (sb as f64).sqrt())));
        }
    }
    cosine_f64(a, b)
}

/// 1 - cos(a, b), in [0, 2]; None as for `cosine`.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> Option<f64> {
    cosine(a, b).map(|c| 1.0 - c)
}

/// Cosine similarity of a stored vector with a unit `query` (only the
/// stored vector's norm is taken); a vector of another length, all zeros or
/// with a non-finite value scores lowest.
pub fn cosine_with_unit(v: &[f32], query: &[f32]) -> f32 {
    if v.len() != query.len() {
        return f32::NEG_INFINITY;
    }
    let sv = dot(v, v);
    if f32_safe(sv) {
        let d = dot(v, query);
        if d.is_finite() {
            return (d as f64 / (sv as f64).sqrt()) as f32;
        }
    }
    cosine_f64(v, query).map_or(f32::NEG_INFINITY, |c| c as f32)
}

fn cosine_f64(a: &[f32], b: &[f32]) -> Option<f64> {
    let (mut sa, mut sb, mut ab) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        sa += x * x;
        sb += y * y;
        ab += x * y;
    }
    if !(sa.is_finite() && sb.is_finite() && sa > 0.0 && sb > 0.0) {
        return None;
    }
    Some(clamp(ab / (sa.sqrt() * sb.sqrt())))
}

/// Rounding can carry a cosine a hair past ±1; distances stay in [0, 2].
fn clamp(c: f64) -> f64 {
    c.clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ends_of_the_float_range() {
        // Squares overflow f32, and underflow it: both are still exact directions.
        assert_eq!(cosine_distance(&[3e38, 3e38], &[1.0, 1.0]), Some(0.0));
        assert_eq!(cosine_distance(&[1e-30, 1e-30], &[1e-30, 1e-30]), Some(0.0));
        assert_eq!(cosine_distance(&[1e-40, 0.0], &[0.0, 1e-40]), Some(1.0)); // subnormals
        assert_eq!(cosine_distance(&[f32::MAX, 0.0], &[-f32::MAX, 0.0]), Some(2.0));
        let mixed = cosine_distance(&[3e38, 1e-30], &[1.0, 0.0]).unwrap();
        assert!(mixed.abs() < 1e-12, "{mixed}");
        assert!((cosine_with_unit(&[3e38, 3e38], &[0.6, 0.8]) - 0.98994946).abs() < 1e-6);
        assert!((cosine_with_unit(&[1e-30, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ordinary_vectors_and_no_direction() {
        let d = cosine_distance(&[1.0, 2.0], &[2.0, 4.0]).unwrap();
        assert!((0.0..1e-7).contains(&d), "same direction, never negative: {d}");
        assert!((cosine_distance(&[1.0, 0.0], &[0.0, 1.0]).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), None);
        assert_eq!(cosine(&[f32::NAN, 1.0], &[1.0, 0.0]), None);
        assert_eq!(cosine(&[f32::INFINITY, 1.0], &[1.0, 0.0]), None);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), None);
        // Many dimensions: the fast path agrees with f64.
        let a: Vec<f32> = (0..384).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let b: Vec<f32> = (0..384).map(|i| ((i * 104729) % 97) as f32 / 48.0 - 1.0).collect();
        assert!((cosine(&a, &b).unwrap() - cosine_f64(&a, &b).unwrap()).abs() < 1e-6);
        let unit: Vec<f32> = b.iter().map(|x| x / (dot(&b, &b)).sqrt()).collect();
        assert!((cosine_with_unit(&a, &unit) as f64 - cosine_f64(&a, &b).unwrap()).abs() < 1e-6);
    }
}
