//! The model host: accepts backends on the worker's Unix socket, one thread
//! per connection (tokenizing there, in parallel), and one batcher thread
//! that runs ONNX Runtime. It never touches PostgreSQL: it runs in a process
//! of its own, detached from shared memory, so a crash here cannot take the
//! server down.

use super::background_yield::BackgroundYield;
use super::batcher::{self, Job, Queue, Reply};
use super::models::ModelStore;
use super::protocol::{self, EmbedRequest, Request, Response, WorkerStatus};
use super::search_copies::{Opener, SearchCopies, EMULATION_MEMORY_VARIABLE, EMULATION_VARIABLE, MARKER_PATH};
use super::stats::Stats;
use crate::engine::gpu::device::{self, DevicePreference};
use crate::engine::{BatchOptions, EngineError};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct HostSettings {
    /// ONNX Runtime intra-op threads for every model.
    pub threads: usize,
    pub batch: BatchOptions,
    /// How long a request waits for others to join its batch (0: never).
    pub batch_wait: Duration,
    /// inf_ir.background_yield: the longest a background piece waits for
    /// cores the rest of the machine wants (zero: never).
    pub background_yield: Duration,
    pub max_models: usize,
    pub supervisor_pid: i32,
    /// 1 for the first host since the server started, 2 after one restart...
    pub host_starts: u64,
    /// inf_ir.embed_device: whether models get a GPU copy.
    pub embed_device: DevicePreference,
    /// inf_ir.onnxruntime_cuda: ONNX Runtime's CUDA provider for the sessions.
    pub onnxruntime_cuda: bool,
}

struct Shared {
    settings: HostSettings,
    store: ModelStore,
    queue: Queue,
    stats: Stats,
    started_at: f64,
    /// inf_ivf indexes copied to the device; made (and the device probed)
    /// at the first request about them.
    copies: OnceLock<SearchCopies>,
    connections: AtomicU64,
}

impl Shared {
    fn copies(&self) -> &SearchCopies {
        self.copies.get_or_init(|| {
            let emulation = std::env::var(EMULATION_VARIABLE).is_ok_and(|v| v == "1").then(|| {
                std::env::var(EMULATION_MEMORY_VARIABLE)
                    .ok()
                    .and_then(|v| v.parse().ok())
            });
            SearchCopies::new(Opener::new(&device::probe(0), emulation), MARKER_PATH.into())
        })
    }
}

/// How often a connection waiting for its batch checks whether its backend left.
const PEER_CHECK: Duration = Duration::from_millis(20);

pub fn log(message: &str) {
    // stderr is the server's log destination, inherited from the postmaster.
    eprintln!("inf_ir worker (pid {}): {message}", std::process::id());
}

/// Serve until the process is killed. Returns only if the listener fails.
pub fn serve(listener: UnixListener, settings: HostSettings) -> std::io::Error {
    // A marker left by an earlier host would make backends send writes for
    // copies that died with it.
    let _ = std::fs::remove_file(MARKER_PATH);
    let shared = Arc::new(Shared {
        store: ModelStore::new(
            settings.threads,
            settings.max_models,
            settings.embed_device,
            settings.onnxruntime_cuda,
        ),
        settings,
        queue: Queue::default(),
        stats: Stats::default(),
        started_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        copies: OnceLock::new(),
        connections: AtomicU64::new(0),
    });
    let batcher = shared.clone();
    std::thread::Builder::new()
        .name("inf_ir batcher".into())
        .spawn(move || {
            let s = &batcher;
            let give_way = BackgroundYield::new(s.settings.background_yield, s.settings.threads);
            batcher::run_forever(&s.queue, s.settings.batch, s.settings.batch_wait, &give_way, &s.stats)
        })
        .expect("spawn the batcher thread");
    log(&format!(
        "model host ready ({} threads, batch_tokens {}, batch_wait {:?}, background_yield {:?})",
        shared.settings.threads,
        shared.settings.batch.token_budget,
        shared.settings.batch_wait,
        shared.settings.background_yield
    ));
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("inf_ir connection".into())
                    .spawn(move || serve_connection(&shared, stream));
                if let Err(e) = spawned {
                    log(&format!("cannot start a connection thread: {e}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log(&format!("accept failed: {e}"));
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    return e;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve_connection(shared: &Shared, mut stream: UnixStream) {
    let stats = &shared.stats;
    Stats::add(&stats.connections, 1);
    let connection = shared.connections.fetch_add(1, Ordering::Relaxed);
    // Ends when the backend closes its end (or sends a broken frame).
    while let Ok(Some((tag, payload))) = protocol::read_frame(&mut stream) {
        let response = match Request::decode(tag, &payload) {
            Ok(Request::Status) => Response::Status(status(shared)),
            Ok(Request::Copy(request)) => match shared.copies().handle(connection, request) {
                Ok(answer) => Response::Copy(answer),
                Err(e) => Response::Error(e),
            },
            Ok(Request::Embed(request)) => match embed(shared, &stream, request) {
                Some(response) => response,
                None => break,
            },
            Err(e) => {
                let _ = protocol::write_all(&mut stream, &Response::Error(e).encode());
                break;
            }
        };
        if protocol::write_all(&mut stream, &response.encode()).is_err() {
            break;
        }
    }
    if let Some(copies) = shared.copies.get() {
        copies.connection_closed(connection);
    }
    Stats::sub(&stats.connections, 1);
}

/// Answer one embedding request; `None` when the backend left before its answer.
fn embed(shared: &Shared, stream: &UnixStream, request: EmbedRequest) -> Option<Response> {
    let stats = &shared.stats;
    Stats::add(&stats.requests, 1);
    Stats::add(&stats.texts, request.inputs.len() as u64);
    let failed = |e: EngineError| {
        Stats::add(&stats.errors, 1);
        Some(Response::Error(e))
    };
    let model = match shared.store.get(&request.model) {
        Ok(model) => model,
        Err(e) => return failed(e),
    };
    model.requests.fetch_add(1, Ordering::Relaxed);
    let mut texts = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        match model.model.tokenize(&input.as_input()) {
            Ok(t) => texts.push(t),
            Err(e) => return failed(e),
        }
    }
    if texts.is_empty() {
        return Some(Response::Vectors(Vec::new()));
    }
    let (reply, answer) = sync_channel::<Reply>(1);
    let cancelled = Arc::new(AtomicBool::new(false));
    shared.queue.push(
        Job {
            model,
            texts,
            cancelled: cancelled.clone(),
            reply,
            enqueued: Instant::now(),
            background: request.background,
        },
        stats,
    );
    loop {
        match answer.recv_timeout(PEER_CHECK) {
            Ok(Ok(vectors)) => return Some(Response::Vectors(vectors)),
            Ok(Err(e)) => return Some(Response::Error(e)),
            Err(RecvTimeoutError::Timeout) => {
                if peer_left(stream) {
                    // Cancel, statement_timeout or exit: the batcher skips it.
                    cancelled.store(true, Ordering::Release);
                    Stats::add(&stats.dropped, 1);
                    return None;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Some(Response::Error(EngineError::worker("the inf_ir batcher thread ended")))
            }
        }
    }
}

/// A backend sends nothing while it waits, so readable or hung up means gone.
fn peer_left(stream: &UnixStream) -> bool {
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents != 0
}

fn status(shared: &Shared) -> WorkerStatus {
    let s = &shared.stats;
    WorkerStatus {
        supervisor_pid: shared.settings.supervisor_pid,
        host_pid: std::process::id() as i32,
        host_started_at: shared.started_at,
        host_starts: shared.settings.host_starts,
        connections: Stats::get(&s.connections),
        queue_length: Stats::get(&s.queue_length),
        running: Stats::get(&s.running),
        requests: Stats::get(&s.requests),
        texts: Stats::get(&s.texts),
        tokens: Stats::get(&s.tokens),
        batches: Stats::get(&s.batches),
        busy_seconds: Stats::get(&s.busy_nanos) as f64 / 1e9,
        errors: Stats::get(&s.errors),
        dropped: Stats::get(&s.dropped),
        background_wait_seconds: Stats::get(&s.background_wait_nanos) as f64 / 1e9,
        models: shared.store.status(),
        embed_device: shared.store.device_summary(),
        search_device: shared
            .copies
            .get()
            .map_or("not probed yet".into(), SearchCopies::describe),
        search_copies: shared.copies.get().map(SearchCopies::status).unwrap_or_default(),
    }
}
