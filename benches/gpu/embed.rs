//! The GPU encoder (engine::gpu::encoder, no PostgreSQL) against ONNX Runtime
//! on the CPU, then its throughput. benches/gpu/run_embed.sh drives it.
//!
//! `reference` (here, with ONNX Runtime): tokenizes SciFact passages and
//! MS MARCO queries with their instructions under the model's templates and
//! embeds them on the CPU; writes tokens.bin and reference.f32.
//! `run` (on the device): embeds the same tokens on the GPU, reports the
//! cosine against the reference (min and mean), then passages/s for every
//! (tokens, batch) pair on synthetic token ids. `--cpu-kernels` is not
//! offered: the kernels' CPU run lives in tests/gpu_encoder.rs.
//!
//! Usage: gpu_embed reference --model DIR --ort LIB --scifact DIR --msmarco DIR --count N --out DIR
//!        gpu_embed run --model DIR --data DIR --out DIR [--pooling mean]
//!                      [--tokens 32,128,256] [--batches 32,...,1024]

use inf_ir::engine::embed::model_folder;
use inf_ir::engine::embed::tokenize::TokenizedText;
use inf_ir::engine::gpu::encoder::cuda_ops::GpuEncoder;
use inf_ir::engine::{BatchOptions, EmbedInput, EmbeddingModel, ModelSpec, NeverInterrupt, Pooling, RuntimeOptions};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn read_jsonl(path: &Path, limit: usize) -> Vec<serde_json::Value> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::io::BufReader::new(file)
        .lines()
        .take(limit)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn write_tokens(path: &Path, texts: &[TokenizedText]) {
    let mut bytes = (texts.len() as u32).to_le_bytes().to_vec();
    for t in texts {
        bytes.extend((t.len() as u32).to_le_bytes());
        for (id, ty) in t.ids.iter().zip(&t.type_ids) {
            bytes.extend((*id as u32).to_le_bytes());
            bytes.extend((*ty as u32).to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn read_tokens(path: &Path) -> Vec<TokenizedText> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let (count, mut at) = (word(0) as usize, 4);
    (0..count)
        .map(|_| {
            let len = word(at) as usize;
            at += 4;
            let mut t = TokenizedText {
                ids: Vec::new(),
                type_ids: Vec::new(),
            };
            for _ in 0..len {
                t.ids.push(word(at) as i64);
                t.type_ids.push(word(at + 4) as i64);
                at += 8;
            }
            t
        })
        .collect()
}

fn spec_of(dir: &Path) -> ModelSpec {
    let d = model_folder::inspect(dir).unwrap();
    ModelSpec {
        name: "bench".into(),
        pooling: d.pooling_or(None).unwrap(),
        onnx_file: d.onnx_file,
        tokenizer_file: d.tokenizer_file,
        query_template: d.query_template,
        passage_template: d.passage_template,
        dimension: d.dimension,
        max_tokens: d.max_tokens,
        pad_token_id: d.pad_token_id,
        padding_side: d.padding_side,
    }
}

fn reference(flag: &dyn Fn(&str) -> Option<String>) {
    let model_dir = PathBuf::from(flag("--model").expect("--model"));
    let out = PathBuf::from(flag("--out").expect("--out"));
    let count: usize = flag("--count").map(|c| c.parse().unwrap()).unwrap_or(1000);
    let library = flag("--ort").expect("--ort (libonnxruntime.so)");
    std::fs::create_dir_all(&out).unwrap();
    let model = EmbeddingModel::load(
        spec_of(&model_dir),
        &RuntimeOptions {
            library: library.into(),
            intra_threads: 2,
            cuda_provider: false,
        },
    )
    .unwrap();
    let scifact = PathBuf::from(flag("--scifact").expect("--scifact"));
    let msmarco = PathBuf::from(flag("--msmarco").expect("--msmarco"));
    let passages: Vec<String> = read_jsonl(&scifact.join("corpus.jsonl"), count)
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["title"].as_str().unwrap_or(""),
                p["text"].as_str().unwrap_or("")
            )
        })
        .collect();
    let queries: std::collections::HashMap<String, String> = read_jsonl(&msmarco.join("queries.jsonl"), usize::MAX)
        .iter()
        .map(|q| {
            (
                q["_id"].as_str().unwrap().to_string(),
                q["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let instructed: Vec<(String, String)> = read_jsonl(&msmarco.join("instructions.jsonl"), usize::MAX)
        .iter()
        .filter_map(|i| {
            let id = i["_id"].as_str()?.split('_').next()?.to_string();
            Some((i["text"].as_str()?.to_string(), queries.get(&id)?.clone()))
        })
        .take(count)
        .collect();
    let mut inputs: Vec<EmbedInput> = passages.iter().map(|p| EmbedInput::Passage(p)).collect();
    inputs.extend(instructed.iter().map(|(i, q)| EmbedInput::Query {
        instruction: Some(i),
        query: q,
    }));
    let tokens: Vec<TokenizedText> = inputs.iter().map(|i| model.tokenize(i).unwrap()).collect();
    let started = Instant::now();
    let vectors = model
        .embed_tokenized(&tokens, BatchOptions::default(), &NeverInterrupt)
        .unwrap();
    eprintln!(
        "{} passages and {} queries with instructions embedded by ONNX Runtime in {:.1} s",
        passages.len(),
        instructed.len(),
        started.elapsed().as_secs_f64()
    );
    write_tokens(&out.join("tokens.bin"), &tokens);
    let bytes: Vec<u8> = vectors.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(out.join("reference.f32"), bytes).unwrap();
    let meta = serde_json::json!({"passages": passages.len(), "queries": instructed.len(), "pooling": model.spec().pooling.name()});
    std::fs::write(out.join("reference.json"), meta.to_string()).unwrap();
}

fn run(flag: &dyn Fn(&str) -> Option<String>) {
    let model_dir = PathBuf::from(flag("--model").expect("--model"));
    let data = PathBuf::from(flag("--data").expect("--data"));
    let out = PathBuf::from(flag("--out").expect("--out"));
    let list = |name: &str, default: &str| -> Vec<usize> {
        flag(name)
            .unwrap_or(default.into())
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let lengths = list("--tokens", "32,128,256");
    let batches = list("--batches", "32,64,128,256,512,1024");
    std::fs::create_dir_all(&out).unwrap();
    // The folder that travels holds no ONNX graph: the pooling is named.
    let pooling = Pooling::parse(&flag("--pooling").unwrap_or("mean".into())).unwrap();
    let loaded = Instant::now();
    let mut encoder = match GpuEncoder::load(0, &model_dir, pooling) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("no GPU encoder: {e}");
            std::fs::write(
                out.join("embed.json"),
                serde_json::json!({"error": e.to_string()}).to_string(),
            )
            .unwrap();
            std::process::exit(2);
        }
    };
    let load_s = loaded.elapsed().as_secs_f64();
    eprintln!("{} loaded in {load_s:.2} s", encoder.description());
    let dim = encoder.dimension();

    // Correctness: the reference texts in batches of 64, sorted by length as the batcher does.
    let tokens = read_tokens(&data.join("tokens.bin"));
    let reference: Vec<f32> = std::fs::read(data.join("reference.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| tokens[i].len());
    let mut ours = vec![Vec::new(); tokens.len()];
    for group in order.chunks(64) {
        let texts: Vec<&TokenizedText> = group.iter().map(|&i| &tokens[i]).collect();
        for (&i, v) in group.iter().zip(encoder.embed(&texts).expect("embed")) {
            ours[i] = v;
        }
    }
    let cosines: Vec<f32> = ours
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.iter()
                .zip(&reference[i * dim..(i + 1) * dim])
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    let min = cosines.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
    eprintln!(
        "cosine against ONNX Runtime on the CPU: min {min:.6}, mean {mean:.6} over {}",
        cosines.len()
    );

    // Throughput: synthetic ids ([CLS] 1..T-2 [SEP]-like), every text the same length.
    let mut throughput = Vec::new();
    for &t in &lengths {
        for &b in &batches {
            let texts: Vec<TokenizedText> = (0..b)
                .map(|i| TokenizedText {
                    ids: (0..t).map(|j| 1000 + ((i * 131 + j * 7) % 20000) as i64).collect(),
                    type_ids: vec![0; t],
                })
                .collect();
            let refs: Vec<&TokenizedText> = texts.iter().collect();
            let mut run_once = || encoder.embed(&refs).map(|_| ());
            if let Err(e) = run_once().and_then(|_| run_once()) {
                eprintln!("tokens {t}, batch {b}: {e}");
                throughput.push(serde_json::json!({"tokens": t, "batch": b, "error": e.to_string()}));
                continue;
            }
            let rounds = (8192 / b).clamp(3, 40);
            let started = Instant::now();
            for _ in 0..rounds {
                run_once().expect("embed");
            }
            let per_s = (rounds * b) as f64 / started.elapsed().as_secs_f64();
            eprintln!("tokens {t}, batch {b}: {per_s:.0} passages/s");
            throughput.push(serde_json::json!({"tokens": t, "batch": b, "passages_per_s": per_s}));
        }
    }
    let summary = serde_json::json!({
        "device": encoder.description(), "load_s": load_s, "texts": cosines.len(),
        "cosine_min": min, "cosine_mean": mean, "throughput": throughput,
    });
    println!("{summary}");
    std::fs::write(out.join("embed.json"), summary.to_string()).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    match args.get(1).map(String::as_str) {
        Some("reference") => reference(&flag),
        Some("run") => run(&flag),
        _ => {
            eprintln!("usage: gpu_embed reference|run … (see benches/gpu/embed.rs)");
            std::process::exit(2);
        }
    }
}
