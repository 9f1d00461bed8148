//! Every inf_ir setting, as a typed static with an accessor.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::PostgresGucEnum;
use std::ffi::CString;
use std::path::PathBuf;

static ONNXRUNTIME_LIBRARY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SERVER_MODELS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static DEFAULT_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
static BATCH_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(2048);
static INFERENCE: GucSetting<Inference> = GucSetting::<Inference>::new(Inference::Auto);
static WORKER_BATCH_WAIT_MS: GucSetting<i32> = GucSetting::<i32>::new(2);
static WORKER_MAX_MODELS: GucSetting<i32> = GucSetting::<i32>::new(4);
static PROBES: GucSetting<i32> = GucSetting::<i32>::new(10);
static RERANK: GucSetting<i32> = GucSetting::<i32>::new(1000);
static EXACT_SEARCH: GucSetting<bool> = GucSetting::<bool>::new(false);
static EXACT_FILTER_ROWS: GucSetting<i32> = GucSetting::<i32>::new(20_000);
static RERANK_ON_FAILURE: GucSetting<RerankOnFailure> = GucSetting::<RerankOnFailure>::new(RerankOnFailure::Error);
static EMBED_DEVICE: GucSetting<EmbedDevice> = GucSetting::<EmbedDevice>::new(EmbedDevice::Auto);
static ONNXRUNTIME_CUDA: GucSetting<bool> = GucSetting::<bool>::new(false);
static SEARCH_DEVICE: GucSetting<EmbedDevice> = GucSetting::<EmbedDevice>::new(EmbedDevice::Auto);
static BACKGROUND_BATCH: GucSetting<i32> = GucSetting::<i32>::new(256);
static BACKGROUND_NAPTIME_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
static BACKGROUND_YIELD_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static BACKGROUND_INDEX_ROWS: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// Where the shared worker embeds (inf_ir.embed_device), or where inf_ivf
/// index scans rank (inf_ir.search_device).
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum EmbedDevice {
    /// A CUDA device when one is usable, else the CPU.
    #[name = c"auto"]
    Auto,
    #[name = c"cpu"]
    Cpu,
    /// A CUDA device; without one the CPU, with the reason in the log.
    #[name = c"cuda"]
    Cuda,
}

/// What LLM re-ranking does when a judgment cannot be had.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum RerankOnFailure {
    /// An ERROR naming what failed.
    #[name = c"error"]
    Error,
    /// The bi-encoder's order, with a WARNING naming what failed.
    #[name = c"retriever"]
    Retriever,
}

/// Where this session's embeddings are computed.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Inference {
    /// The shared worker when inf_ir is preloaded, else this backend.
    #[name = c"auto"]
    Auto,
    /// The shared worker; an error if it is not configured.
    #[name = c"worker"]
    Worker,
    /// This backend loads its own copy of each model.
    #[name = c"local"]
    Local,
}

pub fn init() {
    GucRegistry::define_string_guc(
        c"inf_ir.onnxruntime_library",
        c"Path of libonnxruntime.so (ONNX Runtime 1.31 or newer).",
        c"Loaded once per session on first use. Only superusers may set it: it makes the server load code from a file.",
        &ONNXRUNTIME_LIBRARY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"inf_ir.server_models",
        c"Models that CREATE EXTENSION inf_ir registers: name=folder[,name=folder...].",
        c"Lets every new database embed at once. Only superusers may set it: it points the server at files.",
        &SERVER_MODELS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"inf_ir.default_model",
        c"Model used when an inf_ir function gets no model name.",
        c"Empty: the only registered model, if there is exactly one.",
        &DEFAULT_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.threads",
        c"Threads per session for ONNX Runtime and the search scan (0: one per CPU core).",
        c"ONNX Runtime would otherwise take every core in every session.",
        &THREADS,
        0,
        256,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.batch_tokens",
        c"Token budget of one inference batch (rows x longest text).",
        c"Larger batches amortise overhead; smaller ones use less memory.",
        &BATCH_TOKENS,
        256,
        1_048_576,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"inf_ir.rerank_on_failure",
        c"When an LLM judgment fails (endpoint unreachable, 429 or 5xx past the retries, unusable replies): error or retriever.",
        c"error raises an ERROR; retriever returns the bi-encoder's order with a WARNING. Never a partial order.",
        &RERANK_ON_FAILURE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"inf_ir.inference",
        c"Where embeddings are computed: auto, worker or local.",
        c"auto uses the shared worker when inf_ir is in shared_preload_libraries and this backend otherwise. \
          Only superusers may set it: local mode loads a model copy per session.",
        &INFERENCE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.worker_batch_wait",
        c"How long a request in the shared worker waits for others to join its batch.",
        c"Only while other sessions are connected to the worker; 0 never waits. Read when the model host starts.",
        &WORKER_BATCH_WAIT_MS,
        0,
        1000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_enum_guc(
        c"inf_ir.embed_device",
        c"Where the shared worker embeds: auto, cpu or cuda.",
        c"auto uses a CUDA device when the driver, cuBLAS and NVRTC are there and the model is a BERT, Llama or \
          Qwen2 checkpoint (model.safetensors beside its ONNX graph); otherwise ONNX Runtime on the CPU. Read when the model host starts; \
          inf_ir.worker_status shows what each model uses and why.",
        &EMBED_DEVICE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"inf_ir.onnxruntime_cuda",
        c"Ask ONNX Runtime for its CUDA execution provider (needs a library from onnxruntime-gpu).",
        c"A model whose session cannot have it (a CPU-only library, no CUDA or cuDNN) runs on the CPU and says why \
          in inf_ir.worker_status. Applies to models loaded after the change. Only superusers may set it: it makes \
          the server load CUDA libraries.",
        &ONNXRUNTIME_CUDA,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.worker_max_models",
        c"Models the shared worker keeps loaded; the least recently used goes first.",
        c"Read when the model host starts.",
        &WORKER_MAX_MODELS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.probes",
        c"Lists of an inf_ivf index scanned first (more: higher recall, slower).",
        c"When a filter or invisible rows leave too few hits, the scan goes on to the next lists by itself.",
        &PROBES,
        1,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.rerank",
        c"Most index entries re-scored exactly (float32) before the best hit so far is returned.",
        c"The bit codes' error bounds usually stop re-scoring well before this cap; a lower cap trades recall for speed.",
        &RERANK,
        1,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"inf_ir.search_device",
        c"Where inf_ivf index scans rank: auto, cpu or cuda.",
        c"auto and cuda rank on the shared worker's CUDA device (exact float32 top k; the first search loads a copy \
          of the index there) when it has one; otherwise, and for scans past 256 rows, the CPU index answers. cuda \
          also says why in a NOTICE when the CPU answers. inf_ir.worker_status lists the copies.",
        &SEARCH_DEVICE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"inf_ir.exact_search",
        c"Make inf_search, inf_search_vector scan every passage exactly instead of using the index.",
        c"Exact float32 cosine over all passages: slower, for checking the index's recall.",
        &EXACT_SEARCH,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.exact_filter_rows",
        c"inf_search answers a metadata filter exactly when it keeps at most this many passages.",
        c"Every passage the filter keeps is scored, so the top k equals an exact filtered scan; a broader filter goes through the vector index. 0: always the index.",
        &EXACT_FILTER_ROWS,
        0,
        100_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.background_batch",
        c"Queued rows the background embedder of table-following corpora takes per transaction.",
        c"Each batch commits on its own: a crash or restart loses at most one batch's work, never a row.",
        &BACKGROUND_BATCH,
        1,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.background_index_rows",
        c"The background embedder gives a table-following corpus its vector indexes once it has this many passages. 0: never.",
        c"Built CONCURRENTLY when the queue is drained (writes go on); retrained the same way once the rows have doubled since training.",
        &BACKGROUND_INDEX_ROWS,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"inf_ir.background_naptime",
        c"How often the background embedder looks for queued rows when it has nothing to do.",
        c"The delay before a write to a table-following corpus's source starts being embedded, at most.",
        &BACKGROUND_NAPTIME_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"inf_ir.background_yield",
        c"How long a piece of background embedding waits, at most, while the rest of the machine wants the cores it would take.",
        c"The shared worker's background pieces use CPU the application does not want; 0 never waits. Read when the model host starts.",
        &BACKGROUND_YIELD_MS,
        0,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    unsafe {
        pgrx::pg_sys::MarkGUCPrefixReserved(c"inf_ir".as_ptr());
    }
}

fn string(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .and_then(|c| c.into_string().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn onnxruntime_library() -> Option<PathBuf> {
    string(&ONNXRUNTIME_LIBRARY).map(PathBuf::from)
}

/// `(name, folder)` pairs from `inf_ir.server_models`.
pub fn server_models() -> Vec<(String, String)> {
    string(&SERVER_MODELS)
        .map(|s| {
            s.split(',')
                .filter_map(|entry| {
                    let (name, folder) = entry.split_once('=')?;
                    Some((name.trim().to_string(), folder.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn default_model() -> Option<String> {
    string(&DEFAULT_MODEL)
}

pub fn threads() -> usize {
    match THREADS.get() {
        n if n > 0 => n as usize,
        _ => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }
}

/// Batch options for one embedding call under this session's settings.
pub fn batch_options() -> crate::engine::BatchOptions {
    crate::engine::BatchOptions {
        token_budget: BATCH_TOKENS.get() as usize,
        ..Default::default()
    }
}

pub fn inference() -> Inference {
    INFERENCE.get()
}

pub fn background_yield() -> std::time::Duration {
    std::time::Duration::from_millis(BACKGROUND_YIELD_MS.get().max(0) as u64)
}

pub fn worker_batch_wait() -> std::time::Duration {
    std::time::Duration::from_millis(WORKER_BATCH_WAIT_MS.get().max(0) as u64)
}

pub fn worker_max_models() -> usize {
    WORKER_MAX_MODELS.get().max(1) as usize
}

pub fn onnxruntime_cuda() -> bool {
    ONNXRUNTIME_CUDA.get()
}

pub fn embed_device() -> crate::engine::gpu::device::DevicePreference {
    use crate::engine::gpu::device::DevicePreference;
    match EMBED_DEVICE.get() {
        EmbedDevice::Auto => DevicePreference::Auto,
        EmbedDevice::Cpu => DevicePreference::Cpu,
        EmbedDevice::Cuda => DevicePreference::Cuda,
    }
}

pub fn search_device() -> crate::engine::gpu::device::DevicePreference {
    use crate::engine::gpu::device::DevicePreference;
    match SEARCH_DEVICE.get() {
        EmbedDevice::Auto => DevicePreference::Auto,
        EmbedDevice::Cpu => DevicePreference::Cpu,
        EmbedDevice::Cuda => DevicePreference::Cuda,
    }
}

pub fn probes() -> usize {
    PROBES.get().max(1) as usize
}

pub fn rerank() -> usize {
    RERANK.get().max(1) as usize
}

/// Filters that keep at most this many passages are searched exactly.
pub fn exact_filter_rows() -> usize {
    EXACT_FILTER_ROWS.get().max(0) as usize
}

pub fn exact_search() -> bool {
    EXACT_SEARCH.get()
}

pub fn rerank_on_failure() -> RerankOnFailure {
    RERANK_ON_FAILURE.get()
}

pub fn background_batch() -> i32 {
    BACKGROUND_BATCH.get()
}

pub fn background_index_rows() -> i64 {
    BACKGROUND_INDEX_ROWS.get() as i64
}

pub fn background_naptime() -> std::time::Duration {
    std::time::Duration::from_millis(BACKGROUND_NAPTIME_MS.get().max(10) as u64)
}
