//! A loaded embedding model: tokenizer, ONNX Runtime session, templates and
//! pooling, behind the `Embedder` trait so that the same engine can run in a
//! backend today and in a shared worker later.

use super::batching::plan_batches;
use super::graph_io::{self, GraphPlan, OutputElement, OutputInfo};
use super::memory_fit;
use super::padded_batch::{PaddedBatch, PaddingSide};
use super::pooling::{l2_normalize, Pooling};
use super::runtime;
use super::template::Template;
use super::tokenize::{TextEncoder, TokenizedText};
use crate::engine::error::{EngineError, EngineResult, ErrorKind};
use crate::engine::interrupt::Interrupt;
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Everything needed to load a model; the SQL registry stores these fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    pub name: String,
    pub onnx_file: PathBuf,
    pub tokenizer_file: PathBuf,
    pub query_template: String,
    pub passage_template: String,
    pub pooling: Pooling,
    pub dimension: usize,
    pub max_tokens: usize,
    pub pad_token_id: u32,
    /// Registries written before padding sides were stored read as right.
    #[serde(default)]
    pub padding_side: PaddingSide,
}

/// How the process runs models: library and threads are per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub library: PathBuf,
    pub intra_threads: usize,
    /// Ask ONNX Runtime for its CUDA execution provider (a library from
    /// onnxruntime-gpu); a model whose session cannot have it runs on the
    /// CPU and says why (`EmbeddingModel::provider`).
    pub cuda_provider: bool,
}

/// One text to embed, on either side of the bi-encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedInput<'a> {
    Passage(&'a str),
    Query {
        instruction: Option<&'a str>,
        query: &'a str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Padded tokens (rows x longest) per ONNX Runtime call.
    pub token_budget: usize,
    pub max_rows: usize,
}

impl Default for BatchOptions {
    /// 2,048 tokens: all-MiniLM-L6-v2 on two cores embedded 44-48 texts/s
    /// with 256 to 2,048, 36-37 with 4,096 and 30-32 with 8,192 (batches
    /// larger than the CPU's caches; BENCHMARKS.md).
    fn default() -> Self {
        BatchOptions {
            token_budget: 2048,
            max_rows: 256,
        }
    }
}

/// What a host (backend, worker) needs from an embedding engine.
pub trait Embedder: Send + Sync {
    fn dimension(&self) -> usize;
    /// One L2-normalised vector per input, in input order.
    fn embed(
        &self,
        inputs: &[EmbedInput<'_>],
        batch: BatchOptions,
        interrupt: &dyn Interrupt,
    ) -> EngineResult<Vec<Vec<f32>>>;
}

pub struct EmbeddingModel {
    spec: ModelSpec,
    query_template: Template,
    passage_template: Template,
    encoder: TextEncoder,
    session: Mutex<Session>,
    /// Which inputs the graph takes (decoders: position ids) and which
    /// output holds the token states.
    plan: GraphPlan,
    /// "onnxruntime cuda", or "cpu" (with why, when CUDA was asked for).
    provider: String,
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text).trim()
}

/// How often the watcher thread looks at the interrupt flag during a run.
const WATCH_INTERVAL: Duration = Duration::from_millis(25);

impl EmbeddingModel {
    pub fn load(spec: ModelSpec, runtime: &RuntimeOptions) -> EngineResult<Self> {
        let query_template = Template::query(&spec.query_template)?;
        let passage_template = Template::passage(&spec.passage_template)?;
        let encoder = TextEncoder::load(&spec.tokenizer_file, spec.max_tokens)?;
        let environment = runtime::environment(&runtime.library)?;
        if !spec.onnx_file.is_file() {
            return Err(
                EngineError::files(format!("model file {} not found", spec.onnx_file.display()))
                    .with_hint("re-run scripts/setup.sh, or re-register the model with inf_register_model()"),
            );
        }
        memory_fit::check_fits(
            &spec.onnx_file,
            memory_fit::weight_bytes(&spec.onnx_file),
            memory_fit::available_bytes(),
        )?;
        let build = |cuda: bool| -> Result<Session, String> {
            let mut builder = Session::builder(environment)
                .map_err(|e| e.to_string())?
                .with_intra_threads(runtime.intra_threads.max(1))
                .map_err(|e| e.to_string())?
                .with_inter_threads(1)
                .map_err(|e| e.to_string())?;
            if cuda {
                // error_on_failure: a CPU-only library or a missing CUDA says so here,
                // instead of ONNX Runtime quietly running on the CPU.
                builder = builder
                    .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                    .map_err(|e| e.to_string())?;
            }
            builder.commit_from_file(&spec.onnx_file).map_err(|e| e.to_string())
        };
        let (session, provider) = match runtime.cuda_provider {
            true => match build(true) {
                Ok(session) => (session, "onnxruntime cuda".to_string()),
                Err(why) => {
                    let session = build(false).map_err(|e| load_error(&spec.onnx_file, e))?;
                    (
                        session,
                        format!("cpu (ONNX Runtime's CUDA provider: {})", first_line(&why)),
                    )
                }
            },
            false => (
                build(false).map_err(|e| load_error(&spec.onnx_file, e))?,
                "cpu".to_string(),
            ),
        };
        let inputs: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
        let outputs: Vec<OutputInfo> = session.outputs().iter().map(output_info).collect();
        let plan = graph_io::plan(&spec.onnx_file, &inputs, &outputs, spec.dimension, spec.padding_side)?;
        Ok(EmbeddingModel {
            spec,
            query_template,
            passage_template,
            encoder,
            session: Mutex::new(session),
            plan,
            provider,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Where ONNX Runtime runs this model: "onnxruntime cuda" or "cpu (…)".
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Tokenize one input under the model's templates and limits.
    pub fn tokenize(&self, input: &EmbedInput<'_>) -> EngineResult<TokenizedText> {
        match *input {
            EmbedInput::Passage(text) => {
                let text = self.encoder.precut(text)?;
                self.encoder.encode_passage(&self.passage_template.render_passage(text))
            }
            EmbedInput::Query { instruction, query } => {
                let query = self.encoder.precut(query)?;
                let instruction = instruction.map(|i| self.encoder.precut(i)).transpose()?;
                self.encoder
                    .encode_query(&self.query_template.render_query(instruction, query))
            }
        }
    }

    /// Run one batch and write pooled, normalised vectors into `out`.
    fn run_batch(&self, texts: &[&TokenizedText], interrupt: Option<&dyn Interrupt>) -> EngineResult<Vec<Vec<f32>>> {
        let rows = texts.len();
        let batch = PaddedBatch::new(texts, self.spec.pad_token_id as i64, self.spec.padding_side);
        let width = batch.width();
        let ort_err = |e: ort::Error| EngineError::inference(format!("ONNX Runtime failed: {e}"));
        let mut inputs = vec![
            ("input_ids", TensorRef::from_array_view(&batch.ids).map_err(ort_err)?),
            (
                "attention_mask",
                TensorRef::from_array_view(&batch.mask).map_err(ort_err)?,
            ),
        ];
        if self.plan.token_types {
            inputs.push((
                "token_type_ids",
                TensorRef::from_array_view(&batch.types).map_err(ort_err)?,
            ));
        }
        if self.plan.position_ids {
            inputs.push((
                "position_ids",
                TensorRef::from_array_view(&batch.positions).map_err(ort_err)?,
            ));
        }
        let options = RunOptions::new().map_err(ort_err)?;
        let finished = AtomicBool::new(false);
        let terminated = AtomicBool::new(false);
        let mut session = self.session.lock();
        let result = std::thread::scope(|scope| {
            let watcher = interrupt.map(|interrupt| {
                // ONNX Runtime blocks this thread; a watcher turns a pending
                // interrupt into a terminate request so cancels land promptly.
                scope.spawn(|| {
                    while !finished.load(Ordering::Acquire) {
                        if interrupt.pending() {
                            terminated.store(true, Ordering::Release);
                            let _ = options.terminate();
                            break;
                        }
                        std::thread::park_timeout(WATCH_INTERVAL);
                    }
                })
            });
            let outputs = session.run_with_options(inputs, &options);
            finished.store(true, Ordering::Release);
            // Wake the watcher now: the scope waits for it, and its park would
            // otherwise add up to WATCH_INTERVAL to every batch.
            if let Some(watcher) = &watcher {
                watcher.thread().unpark();
            }
            let outputs = match outputs {
                Ok(o) => o,
                Err(_) if terminated.load(Ordering::Acquire) => return Err(EngineError::cancelled()),
                Err(e) => return Err(ort_err(e)),
            };
            let hidden_states = float_states(&outputs[self.plan.hidden_output]).map_err(ort_err)?;
            let shape = hidden_states.shape().to_vec();
            if shape.len() != 3 || shape[0] != rows || shape[1] != width {
                return Err(EngineError::inference(format!(
                    "model output has shape {shape:?}; expected [{rows}, {width}, hidden]"
                )));
            }
            let hidden = shape[2];
            if hidden != self.spec.dimension {
                return Err(EngineError::files(format!(
                    "model produces {hidden}-dimensional vectors but is registered with dimension {}",
                    self.spec.dimension
                ))
                .with_hint("re-register the model so that the registry reads its dimension again"));
            }
            let flat = hidden_states.as_slice().expect("standard layout");
            let mut vectors = Vec::with_capacity(rows);
            for r in 0..rows {
                let mut v = vec![0.0f32; hidden];
                let states = &flat[r * width * hidden..(r + 1) * width * hidden];
                self.spec.pooling.pool(states, hidden, batch.real_tokens(r), &mut v);
                l2_normalize(&mut v);
                vectors.push(v);
            }
            Ok(vectors)
        });
        drop(session);
        result
    }
}

impl Embedder for EmbeddingModel {
    fn dimension(&self) -> usize {
        self.spec.dimension
    }

    fn embed(
        &self,
        inputs: &[EmbedInput<'_>],
        batch: BatchOptions,
        interrupt: &dyn Interrupt,
    ) -> EngineResult<Vec<Vec<f32>>> {
        let mut tokenized = Vec::with_capacity(inputs.len());
        for input in inputs {
            if interrupt.pending() {
                interrupt.checkpoint()?;
            }
            tokenized.push(self.tokenize(input)?);
        }
        self.embed_tokenized(&tokenized, batch, interrupt)
    }
}

impl EmbeddingModel {
    /// Embed texts already tokenized by `tokenize` (the shared worker
    /// tokenizes in each client's thread, then batches across clients).
    pub fn embed_tokenized(
        &self,
        tokenized: &[TokenizedText],
        batch: BatchOptions,
        interrupt: &dyn Interrupt,
    ) -> EngineResult<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = tokenized.iter().map(TokenizedText::len).collect();
        let mut result: Vec<Vec<f32>> = vec![Vec::new(); tokenized.len()];
        for indices in plan_batches(&lengths, batch.token_budget, batch.max_rows) {
            interrupt.checkpoint()?;
            let texts: Vec<&TokenizedText> = indices.iter().map(|&i| &tokenized[i]).collect();
            let vectors = match self.run_batch(&texts, Some(interrupt)) {
                Err(e) if e.kind == ErrorKind::Cancelled => {
                    // The host decides whether that interrupt means stop.
                    interrupt.checkpoint()?;
                    // It did not (some other interrupt): run again, unwatched,
                    // so a flag that stays set cannot make us loop.
                    self.run_batch(&texts, None)?
                }
                other => other?,
            };
            for (i, v) in indices.into_iter().zip(vectors) {
                result[i] = v;
            }
        }
        Ok(result)
    }
}

/// ONNX Runtime's load failure, with the likely fix: a graph in float16
/// whose operators have no CPU kernel in that precision, or a bad file.
fn load_error(file: &std::path::Path, message: String) -> EngineError {
    let hint = if message.contains("Could not find an implementation") || message.contains("NOT_IMPLEMENTED") {
        "ONNX Runtime's CPU provider has no kernel for an operator at this precision (float16 graphs are usually \
         made for GPUs): register the float32 export of the model, or its int8 copy (scripts/quantize_int8.py)"
    } else if message.contains("external data") || message.contains("onnx_data") {
        "the graph's external weights file (model.onnx_data) is missing or unreadable beside it: copy it with the \
         graph and make it readable by the server's OS user"
    } else {
        "the file may be truncated or not an ONNX model; re-export it (scripts/export_bert_onnx.py --force, \
         scripts/export_decoder_onnx.py, or optimum-cli export onnx --task feature-extraction)"
    };
    EngineError::files(format!("ONNX Runtime cannot load {}: {message}", file.display())).with_hint(hint)
}

fn output_info(outlet: &ort::value::Outlet) -> OutputInfo {
    use ort::value::TensorElementType as T;
    let (element, shape) = match outlet.dtype() {
        ort::value::ValueType::Tensor { ty, shape, .. } => {
            let float = matches!(ty, T::Float32 | T::Float16 | T::Bfloat16);
            (
                if float {
                    OutputElement::Float
                } else {
                    OutputElement::Other
                },
                shape.to_vec(),
            )
        }
        _ => (OutputElement::Other, Vec::new()),
    };
    OutputInfo {
        name: outlet.name().to_string(),
        element,
        shape,
    }
}

/// An output's token states as f32 in standard layout: float32 as it is
/// (no copy when already contiguous), float16 and bfloat16 widened (graphs
/// exported in half precision hand out half-precision states).
fn float_states(output: &ort::value::DynValue) -> Result<ndarray::CowArray<'_, f32, ndarray::IxDyn>, ort::Error> {
    match output.try_extract_array::<f32>() {
        Ok(view) if view.is_standard_layout() => Ok(view.into()),
        Ok(view) => Ok(view.as_standard_layout().into_owned().into()),
        Err(f32_error) => {
            if let Ok(view) = output.try_extract_array::<half::f16>() {
                return Ok(view.mapv(f32::from).into());
            }
            if let Ok(view) = output.try_extract_array::<half::bf16>() {
                return Ok(view.mapv(f32::from).into());
            }
            Err(f32_error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn load_errors_name_the_file_and_the_likely_fix() {
        let file = Path::new("/m/model.onnx");
        let fp16 = load_error(
            file,
            "Could not find an implementation for Celu(12) node with name ''".into(),
        );
        assert!(fp16.message.contains("/m/model.onnx") && fp16.message.contains("Celu"));
        assert!(fp16.hint.unwrap().contains("float32 export"));
        let data = load_error(file, "cannot open external data file model.onnx_data".into());
        assert!(data.hint.unwrap().contains("model.onnx_data"));
        let other = load_error(file, "protobuf parsing failed".into());
        assert!(other.hint.unwrap().contains("re-export"));
    }
}
