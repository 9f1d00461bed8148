//! Baseline for benches/embed_throughput.sh: raw ONNX Runtime on the same
//! model, written directly against `ort` and `tokenizers` (not inf_ir's
//! engine), the way the reference pipeline does it: truncate to 256 tokens,
//! sort by length, batches of 32 padded to their longest, mean pooling, L2.
//!
//! Usage: cargo bench --bench raw_ort -- TEXTS_FILE MODEL_DIR ORT_LIBRARY THREADS
//! TEXTS_FILE holds one JSON string per line. Prints passages/s.

use ndarray::Array2;
use ort::session::Session;
use ort::value::TensorRef;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.len() < 5 {
        eprintln!("usage: raw_ort TEXTS_FILE MODEL_DIR ORT_LIBRARY THREADS");
        std::process::exit(2);
    }
    let texts: Vec<String> = std::fs::read_to_string(&args[1])
        .expect("texts file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON string per line"))
        .collect();
    let model_dir = std::path::Path::new(&args[2]);
    let threads: usize = args[4].parse().expect("threads");

    let env = ort::init_from(&args[3])
        .expect("load ORT")
        .with_name("raw")
        .build()
        .expect("env");
    let mut session = Session::builder(&env)
        .unwrap()
        .with_intra_threads(threads)
        .unwrap()
        .with_inter_threads(1)
        .unwrap()
        .commit_from_file(model_dir.join("model.onnx"))
        .expect("session");
    let mut tokenizer = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).unwrap();
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: 256,
            ..Default::default()
        }))
        .unwrap();

    let start = Instant::now();
    let encodings: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| {
            tokenizer
                .encode(t.as_str(), true)
                .unwrap()
                .get_ids()
                .iter()
                .map(|&i| i as i64)
                .collect()
        })
        .collect();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
    let mut checksum = 0f64;
    let mut tokens = 0usize;
    for batch in order.chunks(32) {
        let width = batch.iter().map(|&i| encodings[i].len()).max().unwrap();
        let mut ids = Array2::<i64>::zeros((batch.len(), width));
        let mut mask = Array2::<i64>::zeros((batch.len(), width));
        let types = Array2::<i64>::zeros((batch.len(), width));
        for (r, &i) in batch.iter().enumerate() {
            for (c, &id) in encodings[i].iter().enumerate() {
                ids[[r, c]] = id;
                mask[[r, c]] = 1;
            }
            tokens += encodings[i].len();
        }
        let outputs = session
            .run(ort::inputs![
                "input_ids" => TensorRef::from_array_view(&ids).unwrap(),
                "attention_mask" => TensorRef::from_array_view(&mask).unwrap(),
                "token_type_ids" => TensorRef::from_array_view(&types).unwrap(),
            ])
            .unwrap();
        let hidden = outputs[0].try_extract_array::<f32>().unwrap();
        let dim = hidden.shape()[2];
        for (r, &i) in batch.iter().enumerate() {
            let len = encodings[i].len();
            let mut v = vec![0f32; dim];
            for t in 0..len {
                for d in 0..dim {
                    v[d] += hidden[[r, t, d]];
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            checksum += (v[0] / norm) as f64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "raw_ort passages={} tokens={} seconds={:.3} passages_per_s={:.2} tokens_per_s={:.0} checksum={:.6}",
        texts.len(),
        tokens,
        secs,
        texts.len() as f64 / secs,
        tokens as f64 / secs,
        checksum
    );
}
