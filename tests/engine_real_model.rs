//! Engine tests against the real model that scripts/setup.sh installs
//! ($INF_IR_HOME, default /var/lib/inf_ir). They skip, saying so, when the
//! model or the runtime library is not there.

use inf_ir::engine::embed::template::Template;
use inf_ir::engine::embed::tokenize::TextEncoder;
use inf_ir::engine::{
    BatchOptions, EmbedInput, Embedder, EmbeddingModel, EngineError, EngineResult, ErrorKind, Interrupt,
    NeverInterrupt, RuntimeOptions,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::{library, minilm_spec, model_dir};

fn load_model() -> Option<EmbeddingModel> {
    let (spec, _) = minilm_spec()?;
    Some(
        EmbeddingModel::load(
            spec,
            &RuntimeOptions {
                library: library(),
                intra_threads: 2,
                cuda_provider: false,
            },
        )
        .unwrap(),
    )
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn precut_keeps_truncation_exact() {
    let Some(dir) = model_dir() else { return };
    let encoder = TextEncoder::load(&dir.join("tokenizer.json"), 256).unwrap();
    let mut full = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    full.with_padding(None);
    full.with_truncation(Some(tokenizers::TruncationParams {
        max_length: 256,
        ..Default::default()
    }))
    .unwrap();
    let texts = [
        "The mitochondria is the powerhouse of the cell. ".repeat(2000),
        "北京是中国的首都。".repeat(3000),
        "supercalifragilistic ".repeat(5000),
        "x".repeat(100_000),
    ];
    for text in &texts {
        let ours = encoder.encode_passage(text).unwrap();
        let reference: Vec<i64> = full
            .encode(text.as_str(), true)
            .unwrap()
            .get_ids()
            .iter()
            .map(|&i| i as i64)
            .collect();
        assert_eq!(ours.ids, reference, "text starting {:?}", &text[..30]);
    }
}

#[test]
fn long_query_is_cut_and_instruction_kept_whole() {
    let Some(dir) = model_dir() else { return };
    let encoder = TextEncoder::load(&dir.join("tokenizer.json"), 32).unwrap();
    let template = Template::query("{query} {instruction}").unwrap();
    let instruction = "only peer reviewed randomized trials";
    let rendered = template.render_query(Some(instruction), &"vitamin d and bone density ".repeat(20));
    let ids = encoder.encode_query(&rendered).unwrap().ids;
    assert_eq!(ids.len(), 32);
    let alone = encoder.encode_passage(instruction).unwrap().ids; // [CLS] instruction [SEP]
    let tail = &alone[1..alone.len() - 1];
    assert_eq!(
        &ids[ids.len() - 1 - tail.len()..ids.len() - 1],
        tail,
        "instruction must end the sequence whole"
    );
    // The query's first tokens survive (cut from its end).
    let query_head = encoder.encode_passage("vitamin d and bone").unwrap().ids;
    assert_eq!(&ids[..query_head.len() - 1], &query_head[..query_head.len() - 1]);
}

#[test]
fn batches_match_single_runs_and_keep_order() {
    let Some(model) = load_model() else { return };
    let texts = [
        "short",
        "a somewhat longer passage about proteins and folding",
        "",
        "🐱 emoji",
        "mid length text here",
    ];
    let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::Passage(t)).collect();
    let tiny = BatchOptions {
        token_budget: 16,
        max_rows: 2,
    };
    let batched = model.embed(&inputs, tiny, &NeverInterrupt).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (i, input) in inputs.iter().enumerate() {
        let single = model
            .embed(std::slice::from_ref(input), BatchOptions::default(), &NeverInterrupt)
            .unwrap();
        assert!(cosine(&single[0], &batched[i]) > 0.99999, "input {i}");
        let norm: f32 = batched[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    let q = EmbedInput::Query {
        instruction: Some("only reviews"),
        query: "short",
    };
    let with = model.embed(&[q], BatchOptions::default(), &NeverInterrupt).unwrap();
    assert!(
        cosine(&with[0], &batched[0]) < 0.999,
        "the instruction must change the vector"
    );
}

/// Raises its interrupt after a delay; its checkpoint then stops the call.
struct InterruptAfter {
    start: Instant,
    after: Duration,
    seen: AtomicBool,
}

impl Interrupt for InterruptAfter {
    fn pending(&self) -> bool {
        self.start.elapsed() >= self.after
    }
    fn checkpoint(&self) -> EngineResult<()> {
        if self.pending() {
            self.seen.store(true, Ordering::SeqCst);
            return Err(EngineError::cancelled());
        }
        Ok(())
    }
}

#[test]
fn interrupt_stops_a_long_batch_promptly() {
    let Some(model) = load_model() else { return };
    let text = "passage text ".repeat(200);
    let inputs: Vec<EmbedInput> = (0..64).map(|_| EmbedInput::Passage(&text)).collect();
    // One huge batch: without the watcher the call could only stop at its end.
    let one_batch = BatchOptions {
        token_budget: 1 << 20,
        max_rows: 1024,
    };
    let interrupt = InterruptAfter {
        start: Instant::now(),
        after: Duration::from_millis(200),
        seen: AtomicBool::new(false),
    };
    let err = model.embed(&inputs, one_batch, &interrupt).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Cancelled);
    assert!(interrupt.seen.load(Ordering::SeqCst));
    let late = interrupt.start.elapsed().saturating_sub(interrupt.after);
    assert!(
        late < Duration::from_millis(1000),
        "stopped {late:?} after the interrupt"
    );
}

/// ONNX Runtime's CUDA provider asked for with a CPU-only library (as set-up
/// installs): the session runs on the CPU, says why, and embeds the same.
#[test]
fn cuda_provider_without_cuda_falls_back_to_the_cpu() {
    let Some((spec, _)) = minilm_spec() else { return };
    let load = |cuda_provider| {
        EmbeddingModel::load(
            spec.clone(),
            &RuntimeOptions {
                library: library(),
                intra_threads: 2,
                cuda_provider,
            },
        )
        .unwrap()
    };
    let (asked, plain) = (load(true), load(false));
    assert_eq!(plain.provider(), "cpu");
    if asked.provider() != "onnxruntime cuda" {
        assert!(
            asked.provider().starts_with("cpu (ONNX Runtime's CUDA provider: "),
            "{}",
            asked.provider()
        );
        let inputs = [EmbedInput::Passage("x y z")];
        let embed = |m: &EmbeddingModel| m.embed(&inputs, BatchOptions::default(), &NeverInterrupt).unwrap();
        assert_eq!(embed(&asked), embed(&plain));
    }
    eprintln!("provider: {}", asked.provider());
}
