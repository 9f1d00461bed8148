//! The ONNX Runtime library, loaded once per process from an explicit path.
//!
//! `ort` allows one library and one environment per process, so the first
//! successful load wins; a later request for another path is refused with a
//! hint rather than silently using the old one. A failed load leaves nothing
//! behind, so a corrected path can be tried in the same process.

use crate::engine::error::{EngineError, EngineResult, ErrorKind};
use ort::environment::Environment;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Loaded {
    path: PathBuf,
    environment: Environment,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// The process-wide environment, loading `library` on first use.
pub fn environment(library: &Path) -> EngineResult<&'static Environment> {
    if let Some(loaded) = LOADED.get() {
        return check_same(loaded, library);
    }
    let _guard = LOADING.lock();
    if let Some(loaded) = LOADED.get() {
        return check_same(loaded, library);
    }
    if !library.is_file() {
        return Err(runtime_error(format!(
            "ONNX Runtime library {} not found",
            library.display()
        )));
    }
    let builder = ort::init_from(library).map_err(|e| runtime_error(format!("cannot load ONNX Runtime: {e}")))?;
    let environment = builder
        .with_name("inf_ir")
        .with_telemetry(false)
        .build()
        .map_err(|e| runtime_error(format!("cannot create the ONNX Runtime environment: {e}")))?;
    let _ = LOADED.set(Loaded {
        path: library.to_path_buf(),
        environment,
    });
    Ok(&LOADED.get().expect("just set").environment)
}

fn check_same(loaded: &'static Loaded, library: &Path) -> EngineResult<&'static Environment> {
    if loaded.path != library {
        return Err(EngineError::new(
            ErrorKind::Runtime,
            format!(
                "this process already loaded ONNX Runtime from {}; it cannot switch to {}",
                loaded.path.display(),
                library.display()
            ),
        )
        .with_hint(
            "a changed inf_ir.onnxruntime_library takes effect in new sessions, and in the shared worker \
             (inf_ir.inference = worker) after a server restart",
        ));
    }
    Ok(&loaded.environment)
}

fn runtime_error(message: String) -> EngineError {
    EngineError::new(ErrorKind::Runtime, message).with_hint(
        "set inf_ir.onnxruntime_library to libonnxruntime.so.1.31.x (scripts/setup.sh installs it under /var/lib/inf_ir/onnxruntime)",
    )
}
