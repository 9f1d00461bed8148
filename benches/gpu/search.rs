//! Exact top-k on a CUDA device (engine::gpu, no PostgreSQL): upload a
//! corpus, answer every query exactly (device float16 candidates, float32
//! re-scores here), then time one query and batches of 32. Rows and queries
//! are files of little-endian float32 rows (benches/gpu/search_data.py
//! writes them); ids are row numbers. `--emulate` runs the device's
//! arithmetic on the CPU instead (the dry run on a machine without a GPU).
//! Writes `top_k.bin` (per query k × (i64 id, f32 score), id -1 when none)
//! and `summary.json` to `--out`. benches/gpu/run_search.sh drives it.
//!
//! Usage: gpu_search --rows F --queries F --dimension D --out DIR
//!        [--k 10] [--timed 200] [--emulate]

use inf_ir::engine::gpu::emulated::EmulatedSource;
use inf_ir::engine::gpu::exact::Scored;
use inf_ir::engine::gpu::search::{exact_search, first_ask, CandidateSource};
use inf_ir::engine::gpu::store::DeviceStore;
use inf_ir::engine::simd::dot;
use std::time::Instant;

/// A file of little-endian float32 values, read straight into its vector
/// (10M × 384 is 15 GB: no second copy).
fn read_f32(path: &str) -> Vec<f32> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let len = file.metadata().unwrap().len() as usize / 4;
    let mut values = vec![0f32; len];
    // SAFETY: any bytes are a valid f32; x86-64 and aarch64 are little-endian.
    let bytes = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr() as *mut u8, len * 4) };
    file.read_exact(bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    values
}

fn p50(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The CPU exact answer for one query: float32 dot products, ties by id.
fn brute_force(rows: &[f32], live: &[bool], d: usize, q: &[f32], k: usize) -> Vec<Scored> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let n = rows.len() / d;
    let per = n.div_ceil(threads);
    let mut all: Vec<Scored> = std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut best: Vec<Scored> = (t * per..((t + 1) * per).min(n))
                        .filter(|&i| live[i])
                        .map(|i| Scored {
                            id: i as u64,
                            score: dot(q, &rows[i * d..(i + 1) * d]),
                        })
                        .collect();
                    best.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
                    best.truncate(k);
                    best
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    });
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    all.truncate(k);
    all
}

/// The device store, or its arithmetic on the CPU.
enum Source {
    Device(DeviceStore),
    Emulated(EmulatedSource),
}

impl Source {
    fn search(&mut self) -> &mut dyn CandidateSource {
        match self {
            Source::Device(s) => s,
            Source::Emulated(s) => s,
        }
    }

    fn append(&mut self, ids: &[u64], vectors: &[f32]) {
        match self {
            Source::Device(s) => s.append(ids, vectors),
            Source::Emulated(s) => s.append(ids, vectors),
        }
        .expect("append")
    }

    fn delete(&mut self, ids: &[u64]) {
        match self {
            Source::Device(s) => s.delete(ids).expect("delete"),
            Source::Emulated(s) => s.delete(ids),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let need = |name: &str| flag(name).unwrap_or_else(|| panic!("{name} is required (see the file's header)"));
    let d: usize = need("--dimension").parse().expect("--dimension");
    let k: usize = flag("--k").map(|v| v.parse().expect("--k")).unwrap_or(10);
    let timed: usize = flag("--timed").map(|v| v.parse().expect("--timed")).unwrap_or(200);
    let out = std::path::PathBuf::from(need("--out"));
    let emulate = args.iter().any(|a| a == "--emulate");
    std::fs::create_dir_all(&out).unwrap();

    let started = Instant::now();
    let mut rows = read_f32(&need("--rows"));
    let queries = read_f32(&need("--queries"));
    let (n, nq) = (rows.len() / d, queries.len() / d);
    eprintln!(
        "read {n} rows and {nq} queries of {d} in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut source = if emulate {
        Source::Emulated(EmulatedSource::new(d, n))
    } else {
        match DeviceStore::open(0, d, n) {
            Ok(store) => {
                eprintln!("device: {}", store.description());
                Source::Device(store)
            }
            Err(e) => {
                eprintln!("no GPU store: {e}");
                let summary = serde_json::json!({"rows": n, "error": e.to_string()});
                std::fs::write(out.join("summary.json"), summary.to_string()).unwrap();
                std::process::exit(2);
            }
        }
    };
    let device = match &source {
        Source::Device(store) => store.description().to_string(),
        Source::Emulated(_) => "emulated on the CPU".to_string(),
    };
    let ids: Vec<u64> = (0..n as u64).collect();
    let uploaded = Instant::now();
    source.append(&ids, &rows);
    let upload_s = uploaded.elapsed().as_secs_f64();
    eprintln!("uploaded in {upload_s:.2} s");

    // Correctness: every query, in batches of 32.
    let exact_of = |rows: &[f32], q: usize, id: u64| {
        Some(dot(
            &queries[q * d..(q + 1) * d],
            &rows[id as usize * d..(id as usize + 1) * d],
        ))
    };
    let mut answers: Vec<Option<Vec<Scored>>> = Vec::with_capacity(nq);
    let checked = Instant::now();
    for first in (0..nq).step_by(32) {
        let last = (first + 32).min(nq);
        let batch = &queries[first * d..last * d];
        let got = exact_search(source.search(), batch, k, |q, id| exact_of(&rows, first + q, id)).expect("search");
        answers.extend(got);
    }
    let check_s = checked.elapsed().as_secs_f64();
    let unproved = answers.iter().filter(|a| a.is_none()).count();
    let mut bytes = Vec::with_capacity(nq * k * 12);
    for answer in &answers {
        let list = answer.clone().unwrap_or_default();
        for i in 0..k {
            let (id, score) = list.get(i).map(|s| (s.id as i64, s.score)).unwrap_or((-1, f32::NAN));
            bytes.extend(id.to_le_bytes());
            bytes.extend(score.to_le_bytes());
        }
    }
    std::fs::write(out.join("top_k.bin"), bytes).unwrap();
    eprintln!("answered {nq} queries in {check_s:.2} s ({unproved} left to the CPU)");

    // Latency: the whole path (device candidates + re-scores), and the device part alone.
    let timed = timed.min(nq).max(1);
    let mut single = Vec::new();
    let mut single_device = Vec::new();
    for q in 0..timed {
        let query = &queries[q * d..(q + 1) * d];
        let t = Instant::now();
        exact_search(source.search(), query, k, |_, id| exact_of(&rows, q, id)).expect("search");
        single.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        source.search().candidates(query, first_ask(k)).expect("candidates");
        single_device.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut batch = Vec::new();
    for round in 0..(timed / 4).max(3) {
        let first = (round * 32) % nq.saturating_sub(31).max(1);
        let last = (first + 32).min(nq);
        let t = Instant::now();
        exact_search(source.search(), &queries[first * d..last * d], k, |q, id| {
            exact_of(&rows, first + q, id)
        })
        .expect("search");
        batch.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Updates without a re-upload: delete every 97th row, append 1,000 rows
    // (each a copy of a query, so they rank first), then check 10 queries
    // against the CPU brute force.
    let deleted: Vec<u64> = (0..n as u64).step_by(97).collect();
    let appended_ids: Vec<u64> = (n as u64..n as u64 + 1000).collect();
    let appended: Vec<f32> = (0..1000)
        .flat_map(|i| queries[(i % nq) * d..(i % nq + 1) * d].to_vec())
        .collect();
    let updated = Instant::now();
    source.delete(&deleted);
    source.append(&appended_ids, &appended);
    let update_s = updated.elapsed().as_secs_f64();
    rows.extend_from_slice(&appended);
    let mut live = vec![true; n + 1000];
    deleted.iter().for_each(|&id| live[id as usize] = false);
    let mut update_mismatches = 0;
    for q in 0..10.min(nq) {
        let query = &queries[q * d..(q + 1) * d];
        let got = exact_search(source.search(), query, k, |_, id| exact_of(&rows, q, id)).expect("search");
        let want = brute_force(&rows, &live, d, query, k);
        if got[0].as_ref() != Some(&want) {
            update_mismatches += 1;
            eprintln!("after updates, query {q}: device {:?} cpu {:?}", got[0], want);
        }
    }

    let summary = serde_json::json!({
        "device": device,
        "rows": n, "dimension": d, "queries": nq, "k": k,
        "upload_s": upload_s,
        "answered_s": check_s,
        "unproved": unproved,
        "single_p50_ms": p50(single),
        "single_device_p50_ms": p50(single_device),
        "batch32_p50_ms": p50(batch),
        "timed": timed,
        "update_s": update_s,
        "update_mismatches": update_mismatches,
    });
    println!("{summary}");
    std::fs::write(out.join("summary.json"), summary.to_string()).unwrap();
}
