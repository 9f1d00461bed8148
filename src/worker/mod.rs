//! The shared inference worker: one process per server hosts the models and
//! batches embedding requests from every session. Pure Rust, no pgrx: the
//! SQL layer (`crate::pg::embed::worker`) starts it and talks to it.
//!
//! Pieces: `protocol` (frames on the Unix socket), `client` (a backend's
//! side of one connection), `host` (accepts connections, one thread each),
//! `models` (the host's loaded models; `gpu_copy` their copies on a CUDA
//! device), `batcher` (merges queued requests
//! into batches under a token budget; background ones in pieces that give
//! way to the machine's other work: `background_yield`, `cpu_share`),
//! `stats` (what the status view shows),
//! `search_copies` (inf_ivf indexes copied to the GPU for exact search;
//! their frames in `copy_protocol`).

pub mod background_yield;
pub mod batcher;
pub mod client;
pub mod copy_protocol;
pub mod cpu_share;
pub mod gpu_copy;
pub mod host;
pub mod models;
pub mod protocol;
pub mod search_copies;
pub mod stats;

/// The socket, relative to the data directory: every server process runs
/// there, and the directory's 0700 mode keeps other OS users out. In
/// pg_stat_tmp because base backups and pg_rewind skip that directory's
/// contents (elsewhere pg_basebackup warns about a special file).
pub const SOCKET_PATH: &str = "pg_stat_tmp/inf_ir_worker.sock";
