//! The IVF engine alone (no PostgreSQL): k-means build time, then p50 per
//! query, recall@10 against an exact float32 scan and exact re-scores per
//! query, for several probe counts. Rows are clustered 384-d unit vectors,
//! or read from files of little-endian float32 rows (for example the hard
//! synthetic set that benches/search_latency.py makes, written with numpy's
//! `tofile`).
//! Usage: cargo bench --bench ivf -- [ROWS | --rows FILE --queries FILE]
//!        [--lists N] [--probes 1,2,4] [--rerank N]

use inf_ir::engine::ivf::kmeans::{nearest, train, Assigner, Training};
use inf_ir::engine::ivf::scan::ScanPlan;
use inf_ir::engine::ivf::synthetic::{clustered_vectors, MemoryIndex};
use inf_ir::engine::NeverInterrupt;
use std::time::Instant;

fn pct(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

fn read_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let dim = 384;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (vectors, queries) = match (flag("--rows"), flag("--queries")) {
        (Some(rows), Some(queries)) => (read_f32(&rows), read_f32(&queries)),
        _ => {
            let rows: usize = args.iter().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000);
            let (vectors, _) = clustered_vectors(rows / 100, 100, dim, 0.06, 3);
            let (queries, _) = clustered_vectors(rows / 100, 1, dim, 0.08, 77);
            (vectors, queries)
        }
    };
    let rows = vectors.len() / dim;
    if args.iter().any(|a| a == "--assignment") {
        return assignment_check(&vectors, dim, threads);
    }
    let lists = flag("--lists")
        .and_then(|l| l.parse().ok())
        .unwrap_or((rows / 1000).max(1));
    let t = Instant::now();
    let index = MemoryIndex::build(&vectors, dim, lists, threads);
    println!(
        "rows={rows} lists={lists} threads={threads} build={:.1} s index={:.0} MB",
        t.elapsed().as_secs_f64(),
        index.memory_bytes() as f64 / 1e6
    );
    let queries: Vec<&[f32]> = queries.chunks(dim).take(300).collect();
    let truth: Vec<Vec<i64>> = queries
        .iter()
        .map(|q| index.brute_force(q, 10).iter().map(|h| h.id).collect())
        .collect();
    let rerank: usize = flag("--rerank").and_then(|r| r.parse().ok()).unwrap_or(1000);
    let probe_counts: Vec<usize> = flag("--probes")
        .map(|p| p.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16, 32, 64, 128]);
    for probes in probe_counts {
        let plan = ScanPlan { probes, rerank };
        let (mut times, mut found, mut rescored, mut scored) = (Vec::new(), 0, 0, 0);
        for (q, truth) in queries.iter().zip(&truth) {
            let t = Instant::now();
            let mut scan = index.scan(q, plan);
            let got: Vec<_> = std::iter::from_fn(|| index.next(&mut scan)).take(10).collect();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            found += got.iter().filter(|h| truth.contains(&h.id)).count();
            rescored += scan.stats.rescored;
            scored += scan.stats.codes_scored;
        }
        println!(
            "probes={probes:3} p50={:.3} ms p95={:.3} ms recall@10={:.4} rescored/query={:.0} scored/query={:.0}",
            pct(times.clone(), 0.5),
            pct(times, 0.95),
            found as f64 / (10 * queries.len()) as f64,
            rescored as f64 / queries.len() as f64,
            scored as f64 / queries.len() as f64
        );
    }
}

/// `--assignment`: how often grouped assignment finds a row's nearest of
/// 4,000 lists, and at what cost, per number of groups searched.
fn assignment_check(vectors: &[f32], dim: usize, threads: usize) {
    let sample = &vectors[..100_000.min(vectors.len() / dim) * dim];
    let t = Instant::now();
    let centroids = train(
        sample,
        dim,
        Training {
            lists: 4000,
            iterations: 8,
            threads,
            seed: 42,
        },
        &NeverInterrupt,
    )
    .expect("never interrupted");
    println!(
        "trained 4000 lists on {} rows in {:.1} s",
        sample.len() / dim,
        t.elapsed().as_secs_f64()
    );
    let rows = &vectors[vectors.len() - 50_000 * dim..];
    let t = Instant::now();
    let exact = nearest(rows, dim, &centroids, threads);
    println!("exact: {:.2} s per 50k rows", t.elapsed().as_secs_f64());
    for probes in [6, 10, 16, 24] {
        let mut assigner = Assigner::new(&centroids, dim, threads, &NeverInterrupt).expect("never interrupted");
        assigner.group_probes = probes;
        let t = Instant::now();
        let got = assigner.assign(rows).expect("never interrupted");
        let same = exact.iter().zip(&got).filter(|(a, b)| a.0 == b.0).count();
        println!(
            "groups searched {probes:2}: {:.2} s per 50k rows, nearest list found for {:.4}",
            t.elapsed().as_secs_f64(),
            same as f64 / 50_000.0
        );
    }
}
