//! Exact top-k over an in-memory matrix of unit vectors, fast.
//!
//! The matrix keeps each vector twice: float32 (the exact score) and int8
//! with a per-vector scale (a quarter of the bytes, so a scan moves a quarter
//! of the memory). A search scans the int8 copy in parallel threads, keeps the
//! best `candidates` per thread in a bounded heap, and re-scores those exactly
//! in float32. Ties are broken by the smaller id, so results are
//! deterministic. The threads touch only this struct, never PostgreSQL.
//! (A GPU copy can later hold the same two arrays.)

use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub struct CorpusMatrix {
    dim: usize,
    ids: Vec<i64>,
    exact: Vec<f32>,
    quantized: Vec<i8>,
    scales: Vec<f32>,
    /// Sign bits, `words` u64 per row: a 1-bit sketch for the first cut of large corpora.
    signs: Vec<u64>,
    words: usize,
}

/// From this many rows on, a 1-bit Hamming pass picks the rows that the int8
/// pass scores (a 32nd of int8's bytes); below it, int8 scans everything.
pub const SIGN_PREFILTER_MIN_ROWS: usize = 200_000;
/// Share of rows the 1-bit pass keeps for int8 scoring (1 in 20).
const SIGN_KEEP_DIVISOR: usize = 20;
/// Rows per scan thread below which another thread costs more than it saves.
const ROWS_PER_THREAD: usize = 32_768;

/// A scored row; ordered so that a max-heap pops the *worst* first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub score: f32,
    pub id: i64,
}

impl Eq for Hit {}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        // "Greater" = worse: lower score, then larger id.
        other.score.total_cmp(&self.score).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Keeps the best `k` hits seen.
struct BoundedHeap {
    k: usize,
    heap: BinaryHeap<Hit>,
}

impl BoundedHeap {
    fn new(k: usize) -> Self {
        BoundedHeap {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    fn push(&mut self, hit: Hit) {
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if let Some(worst) = self.heap.peek() {
            if hit < *worst {
                self.heap.pop();
                self.heap.push(hit);
            }
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<Hit> {
        self.heap.into_sorted_vec()
    }
}

fn quantize(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// The smallest distance such that at least `keep` rows lie within it.
fn distance_cut(distance: &[u16], keep: usize, max_distance: usize) -> u16 {
    let mut histogram = vec![0usize; max_distance + 1];
    distance.iter().for_each(|d| histogram[*d as usize] += 1);
    let mut within = 0;
    for (d, count) in histogram.iter().enumerate() {
        within += count;
        if within >= keep {
            return d as u16;
        }
    }
    max_distance as u16
}

/// Hamming distance of each row of `rows` (`q.len()` words each) to `q`.
fn hamming_distances(rows: &[u64], q: &[u64], out: &mut [u16]) {
    #[inline(always)]
    fn kernel(rows: &[u64], q: &[u64], out: &mut [u16]) {
        for (d, row) in out.iter_mut().zip(rows.chunks_exact(q.len())) {
            *d = row.iter().zip(q).map(|(a, b)| (a ^ b).count_ones()).sum::<u32>() as u16;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn with_popcnt(rows: &[u64], q: &[u64], out: &mut [u16]) {
        kernel(rows, q, out)
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("popcnt") {
        return unsafe { with_popcnt(rows, q, out) };
    }
    kernel(rows, q, out)
}

/// Sign bits of a vector, 64 dimensions per word.
fn sign_words(v: &[f32], words: usize) -> Vec<u64> {
    let mut out = vec![0u64; words];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

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
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Float32 dot product, with AVX2 where the CPU has it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return unsafe { dot_f32_avx2(a, b) };
    }
    dot_f32_generic(a, b)
}

impl CorpusMatrix {
    pub fn new(dim: usize) -> Self {
        Self::with_capacity(dim, 0)
    }

    pub fn with_capacity(dim: usize, rows: usize) -> Self {
        CorpusMatrix {
            dim,
            ids: Vec::with_capacity(rows),
            exact: Vec::with_capacity(rows * dim),
            quantized: Vec::with_capacity(rows * dim),
            scales: Vec::with_capacity(rows),
            signs: Vec::with_capacity(rows * dim.div_ceil(64)),
            words: dim.div_ceil(64),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes held (both copies), for the benchmark's memory figure.
    pub fn memory_bytes(&self) -> usize {
        self.ids.len() * 8 + self.exact.len() * 4 + self.quantized.len() + self.scales.len() * 4 + self.signs.len() * 8
    }

    pub fn push(&mut self, id: i64, vector: &[f32]) {
        assert_eq!(vector.len(), self.dim, "vector dimension");
        self.ids.push(id);
        self.exact.extend_from_slice(vector);
        let start = self.quantized.len();
        self.quantized.resize(start + self.dim, 0);
        let scale = quantize(vector, &mut self.quantized[start..]);
        self.scales.push(scale);
        self.signs.extend(sign_words(vector, self.words));
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.exact[i * self.dim..(i + 1) * self.dim]
    }

    /// The exact top `k` for `query` (best first), by float32 dot product,
    /// found through an int8 pass that keeps `candidates` rows per thread (on
    /// large corpora the int8 pass only scores the rows a 1-bit pass kept).
    pub fn search(&self, query: &[f32], k: usize, candidates: usize, threads: usize) -> Vec<Hit> {
        assert_eq!(query.len(), self.dim, "query dimension");
        let n = self.len();
        if n == 0 || k == 0 {
            return Vec::new();
        }
        let candidates = candidates.max(k).min(n);
        let mut q8 = vec![0i8; self.dim];
        let q_scale = quantize(query, &mut q8);
        let threads = threads.clamp(1, 64).min(n.div_ceil(ROWS_PER_THREAD));
        let q_signs = (n >= SIGN_PREFILTER_MIN_ROWS).then(|| sign_words(query, self.words));
        let chunk = n.div_ceil(threads);
        let avx2 = has_avx2();
        let shortlists: Vec<Vec<Hit>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (lo, hi) = (t * chunk, ((t + 1) * chunk).min(n));
                    let (q8, q_signs) = (&q8, &q_signs);
                    scope.spawn(move || {
                        let mut heap = BoundedHeap::new(candidates);
                        let mut score = |i: usize| {
                            let raw = self.int8_dot(i, q8, avx2);
                            heap.push(Hit {
                                score: raw as f32 * self.scales[i] * q_scale,
                                id: i as i64,
                            });
                        };
                        match q_signs {
                            // Large corpus: int8-score only the rows whose sign sketch is
                            // closest to the query's (each thread keeps its share).
                            Some(q_signs) => {
                                let mut distance = vec![0u16; hi - lo];
                                hamming_distances(
                                    &self.signs[lo * self.words..hi * self.words],
                                    q_signs,
                                    &mut distance,
                                );
                                let keep = ((hi - lo) / SIGN_KEEP_DIVISOR).max(candidates * 4);
                                let cut = distance_cut(&distance, keep, self.words * 64);
                                for (j, d) in distance.iter().enumerate() {
                                    if *d <= cut {
                                        score(lo + j);
                                    }
                                }
                            }
                            None => (lo..hi).for_each(score),
                        }
                        heap.into_sorted()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("scan thread")).collect()
        });
        let mut best = BoundedHeap::new(k);
        for hit in shortlists.into_iter().flatten() {
            let i = hit.id as usize;
            best.push(Hit {
                score: dot(self.row(i), query),
                id: self.ids[i],
            });
        }
        best.into_sorted()
    }

    #[inline]
    fn int8_dot(&self, i: usize, q8: &[i8], avx2: bool) -> i32 {
        let row = &self.quantized[i * self.dim..(i + 1) * self.dim];
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            return unsafe { dot_i8_avx2(row, q8) };
        }
        let _ = avx2;
        dot_i8_generic(row, q8)
    }

    /// Exact float32 scores of every row (for tests and the recall figures).
    pub fn brute_force(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let mut best = BoundedHeap::new(k);
        for i in 0..self.len() {
            best.push(Hit {
                score: dot(self.row(i), query),
                id: self.ids[i],
            });
        }
        best.into_sorted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no rand dependency).
    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }

    fn unit(seed: &mut u64, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| lcg(seed)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    #[test]
    fn matches_brute_force() {
        let mut seed = 7;
        let mut m = CorpusMatrix::new(384);
        for id in 0..20_000 {
            m.push(id * 3, &unit(&mut seed, 384));
        }
        for _ in 0..20 {
            let q = unit(&mut seed, 384);
            let fast = m.search(&q, 10, 200, 2);
            let exact = m.brute_force(&q, 10);
            assert_eq!(
                fast.iter().map(|h| h.id).collect::<Vec<_>>(),
                exact.iter().map(|h| h.id).collect::<Vec<_>>()
            );
            assert!(fast.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn ties_break_by_smaller_id_and_k_larger_than_n() {
        let mut m = CorpusMatrix::new(2);
        m.push(5, &[1.0, 0.0]);
        m.push(2, &[1.0, 0.0]);
        m.push(9, &[0.0, 1.0]);
        let hits = m.search(&[1.0, 0.0], 10, 10, 1);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![2, 5, 9]);
        assert!(m.search(&[1.0, 0.0], 0, 10, 1).is_empty());
        assert!(CorpusMatrix::new(2).search(&[1.0, 0.0], 3, 10, 1).is_empty());
    }

    #[test]
    fn int8_dot_kernels_agree() {
        let a: Vec<i8> = (0..389).map(|i| (i * 37 % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..389).map(|i| (i * 91 % 255 - 127) as i8).collect();
        let extremes = vec![-127i8; 64];
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            assert_eq!(unsafe { dot_i8_avx2(&a, &b) }, dot_i8_generic(&a, &b));
            assert_eq!(unsafe { dot_i8_avx2(&extremes, &extremes) }, 64 * 127 * 127);
        }
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
        let mut q = vec![0i8; 3];
        assert_eq!(quantize(&[0.5, -1.0, 0.0], &mut q), 1.0 / 127.0);
        assert_eq!(q, vec![64, -127, 0]);
    }
}
