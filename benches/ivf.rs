//! The IVF engine alone (no PostgreSQL): k-means build time, then p50 per
//! query and recall@10 against an exact float32 scan, for several probe
//! counts, on clustered 384-d unit vectors.
//! Usage: cargo bench --bench ivf [-- ROWS]

use inf_ir::engine::ivf::scan::ScanPlan;
use inf_ir::engine::ivf::synthetic::{clustered_vectors, MemoryIndex};
use std::time::Instant;

fn pct(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rows: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let dim = 384;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (vectors, _) = clustered_vectors(rows / 100, 100, dim, 0.06, 3);
    let lists = (rows / 1000).max(1);
    let t = Instant::now();
    let index = MemoryIndex::build(&vectors, dim, lists, threads);
    println!(
        "rows={rows} lists={lists} threads={threads} build={:.1} s index={:.0} MB",
        t.elapsed().as_secs_f64(),
        index.memory_bytes() as f64 / 1e6
    );
    let (queries, _) = clustered_vectors(rows / 100, 1, dim, 0.08, 77);
    let queries: Vec<&[f32]> = queries.chunks(dim).take(100).collect();
    let truth: Vec<Vec<i64>> = queries
        .iter()
        .map(|q| index.brute_force(q, 10).iter().map(|h| h.id).collect())
        .collect();
    for probes in [1, 2, 5, 10, 20, 50] {
        let plan = ScanPlan { probes, rerank: 200 };
        let mut times = Vec::new();
        let mut found = 0;
        for (q, truth) in queries.iter().zip(&truth) {
            let t = Instant::now();
            let got = index.search(q, plan, 10);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            found += got.iter().filter(|h| truth.contains(&h.id)).count();
        }
        println!(
            "probes={probes:3} rerank=200 p50={:.3} ms p95={:.3} ms recall@10={:.4}",
            pct(times.clone(), 0.5),
            pct(times, 0.95),
            found as f64 / (10 * queries.len()) as f64
        );
    }
}
