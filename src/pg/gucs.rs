//! Every inf_ir setting, as a typed static with an accessor.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::path::PathBuf;

static ONNXRUNTIME_LIBRARY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SERVER_MODELS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static DEFAULT_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
static BATCH_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(8192);

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
