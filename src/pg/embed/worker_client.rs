//! A backend's link to the shared worker: one connection per backend, kept
//! between calls, waits on the latch so cancel and statement_timeout land
//! while a request is queued or running.

use crate::engine::{BatchOptions, EmbedInput, Embedder, EngineError, EngineResult, Interrupt};
use crate::pg::embed::model_cache::runtime_options;
use crate::pg::embed::models::ModelRow;
use crate::pg::errors::{raise, OrRaise};
use crate::worker::client::{is_worker_gone, Connection, Waiter};
use crate::worker::copy_protocol::{CopyRequest, CopyResponse};
use crate::worker::protocol::{EmbedRequest, ModelRef, OwnedInput, Request, Response, WorkerStatus};
use crate::worker::SOCKET_PATH;
use parking_lot::Mutex;
use pgrx::pg_sys;
use std::os::unix::io::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The connection between calls. During a call it is taken out, so an ERROR
/// that unwinds through the call drops (closes) it: the worker then knows
/// the request's backend left.
static CONNECTION: Mutex<Option<Connection>> = Mutex::new(None);

/// How long a call waits for the worker's socket to appear (server start).
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

struct LatchWaiter;

impl Waiter for LatchWaiter {
    fn wait(&self, fd: RawFd, writable: bool) -> EngineResult<()> {
        let socket = if writable {
            pg_sys::WL_SOCKET_WRITEABLE
        } else {
            pg_sys::WL_SOCKET_READABLE
        };
        let events = pg_sys::WL_LATCH_SET | pg_sys::WL_EXIT_ON_PM_DEATH | pg_sys::WL_TIMEOUT | socket;
        unsafe {
            let happened =
                pg_sys::WaitLatchOrSocket(pg_sys::MyLatch, events as i32, fd, 1000, pg_sys::PG_WAIT_EXTENSION);
            if happened & pg_sys::WL_LATCH_SET as i32 != 0 {
                pg_sys::ResetLatch(pg_sys::MyLatch);
            }
        }
        // Raises the cancel or timeout ERROR; unwinding closes the connection.
        pgrx::check_for_interrupts!();
        Ok(())
    }
}

fn sleep_interruptibly(duration: Duration) {
    unsafe {
        let happened = pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_EXIT_ON_PM_DEATH | pg_sys::WL_TIMEOUT) as i32,
            duration.as_millis() as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        if happened & pg_sys::WL_LATCH_SET as i32 != 0 {
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
    }
    pgrx::check_for_interrupts!();
}

fn connect(patience: Duration) -> Result<Connection, std::io::Error> {
    if let Some(connection) = CONNECTION.lock().take() {
        if !connection.is_closed() {
            return Ok(connection);
        }
    }
    let deadline = Instant::now() + patience;
    loop {
        match Connection::connect(Path::new(SOCKET_PATH)) {
            Ok(connection) => return Ok(connection),
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED | libc::EAGAIN))
                    && Instant::now() < deadline =>
            {
                sleep_interruptibly(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One request and its answer.
pub fn call(request: &Request) -> Response {
    let mut connection = connect(CONNECT_PATIENCE).unwrap_or_else(|e| {
        raise(
            EngineError::worker(format!(
                "cannot reach the inf_ir worker ({SOCKET_PATH} in the data directory): {e}"
            ))
            .with_hint(
                "it runs when inf_ir is in shared_preload_libraries; the server log says why it is not \
                     running. A superuser can SET inf_ir.inference = local to embed in this session instead",
            ),
        )
    });
    let response = connection.call(request, &LatchWaiter).or_raise();
    *CONNECTION.lock() = Some(connection);
    response
}

/// Whether the worker's socket is there (inf_ir is preloaded and its host
/// runs or is restarting): without it nothing is asked of the worker.
pub fn socket_exists() -> bool {
    Path::new(SOCKET_PATH).exists()
}

fn copy_answer(response: EngineResult<Response>) -> EngineResult<CopyResponse> {
    match response? {
        Response::Copy(answer) => Ok(answer),
        Response::Error(e) => Err(e),
        other => Err(EngineError::worker(format!(
            "unexpected answer to a search copy request: {other:?}"
        ))),
    }
}

/// A request about search copies on the kept connection; a worker that
/// cannot be reached now is an Err (the caller searches on the CPU), cancel
/// and statement_timeout still raise.
pub fn try_copy_call(request: CopyRequest) -> EngineResult<CopyResponse> {
    let mut connection = connect(Duration::ZERO).map_err(|e| EngineError::worker(e.to_string()))?;
    let answer = copy_answer(connection.call(&Request::Copy(request), &LatchWaiter));
    if answer.is_ok() {
        *CONNECTION.lock() = Some(connection);
    }
    answer
}

/// An index write for the host's search copies. Where no host runs (nothing
/// listens on the socket, or the host ended during the call) its copies
/// died with it and there is nothing to keep in step; a host that runs but
/// cannot take the write raises, so the write never goes missing silently.
pub fn copy_write(request: CopyRequest) {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    let mut connection = loop {
        if let Some(connection) = CONNECTION.lock().take() {
            if !connection.is_closed() {
                break connection;
            }
        }
        match Connection::connect(Path::new(SOCKET_PATH)) {
            Ok(connection) => break connection,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => return,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && Instant::now() < deadline => {
                sleep_interruptibly(Duration::from_millis(10))
            }
            Err(e) => raise(
                EngineError::worker(format!(
                    "cannot tell the inf_ir worker about an index write ({SOCKET_PATH}): {e}"
                ))
                .with_hint("it keeps a copy of the index for inf_ir.search_device; run the statement again"),
            ),
        }
    };
    match copy_answer(connection.call(&Request::Copy(request), &LatchWaiter)) {
        Ok(_) => *CONNECTION.lock() = Some(connection),
        Err(e) if is_worker_gone(&e) => {}
        Err(e) => raise(e),
    }
}

/// A connection of the caller's own, for loading a search copy: the worker
/// drops an unfinished load when its connection closes (on ERROR too, as
/// this is dropped while unwinding).
pub struct OwnConnection(Connection);

impl OwnConnection {
    pub fn open() -> EngineResult<Self> {
        Connection::connect(Path::new(SOCKET_PATH))
            .map(OwnConnection)
            .map_err(|e| EngineError::worker(format!("cannot reach the inf_ir worker: {e}")))
    }

    pub fn call(&mut self, request: CopyRequest) -> EngineResult<CopyResponse> {
        copy_answer(self.0.call(&Request::Copy(request), &LatchWaiter))
    }
}

/// The worker's status, or why it cannot be had now (no waiting for a restart).
pub fn try_status() -> Result<WorkerStatus, String> {
    let mut connection = connect(Duration::ZERO).map_err(|e| e.to_string())?;
    match connection.call(&Request::Status, &LatchWaiter) {
        Ok(Response::Status(status)) => {
            *CONNECTION.lock() = Some(connection);
            Ok(status)
        }
        Ok(other) => Err(format!("unexpected answer to a status request: {other:?}")),
        Err(e) => Err(e.message),
    }
}

/// The worker as an `Embedder`: the same answers as a local model.
pub struct WorkerEmbedder {
    model: ModelRef,
}

impl WorkerEmbedder {
    pub fn new(row: &ModelRow) -> Self {
        WorkerEmbedder {
            model: ModelRef {
                spec: row.spec.clone(),
                folder: row.folder.clone(),
                fingerprint: row.fingerprint.clone(),
                // The session's setting, so that a wrong path errors the same in both modes.
                library: runtime_options().library,
            },
        }
    }
}

impl Embedder for WorkerEmbedder {
    fn dimension(&self) -> usize {
        self.model.spec.dimension
    }

    /// Batching and cancel are the worker's and the latch's business here
    /// (the worker runs a background request in pieces and lets interactive
    /// requests go between them).
    fn embed(&self, inputs: &[EmbedInput<'_>], _: BatchOptions, _: &dyn Interrupt) -> EngineResult<Vec<Vec<f32>>> {
        self.embed_request(inputs)
    }
}

/// Set in the background embedder's process: its requests yield to others.
static BACKGROUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_background() {
    BACKGROUND.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn is_background() -> bool {
    BACKGROUND.load(std::sync::atomic::Ordering::Relaxed)
}

impl WorkerEmbedder {
    fn embed_request(&self, inputs: &[EmbedInput<'_>]) -> EngineResult<Vec<Vec<f32>>> {
        let request = Request::Embed(EmbedRequest {
            model: self.model.clone(),
            inputs: inputs.iter().map(OwnedInput::from_input).collect(),
            background: is_background(),
        });
        match call(&request) {
            Response::Vectors(v) if v.len() == inputs.len() && v.iter().all(|x| x.len() == self.dimension()) => Ok(v),
            Response::Vectors(v) => Err(EngineError::worker(format!(
                "the worker answered {} vectors for {} inputs",
                v.len(),
                inputs.len()
            ))),
            Response::Error(e) => Err(e),
            Response::Status(_) | Response::Copy(_) => Err(EngineError::worker(
                "the worker answered something else than vectors to an embedding request",
            )),
        }
    }
}
