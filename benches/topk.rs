//! The in-memory exact top-k alone (no PostgreSQL): p50/p95 per query at
//! 100k and 1M random 384-d unit vectors, int8 pre-scan + float32 re-score
//! against a float32 brute-force scan, with recall@10.
//! Usage: cargo bench --bench topk [-- ROWS...]

use inf_ir::engine::topk::CorpusMatrix;
use std::time::Instant;

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

fn pct(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for n in sizes {
        let mut seed = 42;
        let mut m = CorpusMatrix::with_capacity(384, n);
        for id in 0..n {
            m.push(id as i64, &unit(&mut seed, 384));
        }
        let queries: Vec<Vec<f32>> = (0..50).map(|_| unit(&mut seed, 384)).collect();
        let (mut fast, mut brute, mut recall) = (Vec::new(), Vec::new(), 0.0);
        for q in &queries {
            let t = Instant::now();
            let a = m.search(q, 10, 200, threads);
            fast.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let b = m.brute_force(q, 10);
            brute.push(t.elapsed().as_secs_f64() * 1e3);
            recall += a.iter().filter(|h| b.iter().any(|x| x.id == h.id)).count() as f64 / 10.0;
        }
        println!(
            "rows={n} threads={threads} int8+rescore p50={:.2} ms p95={:.2} ms | fp32 brute force (1 thread) p50={:.2} ms | recall@10={:.4} | matrix {:.0} MB",
            pct(fast.clone(), 0.5),
            pct(fast, 0.95),
            pct(brute, 0.5),
            recall / queries.len() as f64,
            m.memory_bytes() as f64 / 1e6
        );
    }
}
