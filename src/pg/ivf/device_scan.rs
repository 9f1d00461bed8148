//! inf_ivf index scans ranked on the shared worker's CUDA device
//! (`inf_ir.search_device`): the host's copy of the index proposes float16
//! candidates, this backend scores them again from their rows in its own
//! snapshot (`engine::gpu::search::exact_search`), so the rows come out in
//! exact float32 order and invisible rows never take a place. Scans deeper
//! than the copy answers (256 rows), and every case the device cannot take,
//! go on through the CPU index.

use super::device_copy;
use super::heap_rows::HeapRows;
use super::pages;
use super::shape::Shape;
use crate::engine::gpu::device::DevicePreference;
use crate::engine::gpu::exact::{Candidate, Scored};
use crate::engine::gpu::search::{exact_search, CandidateSource};
use crate::engine::gpu::top_k_kernel::MAX_K;
use crate::engine::ivf::scan::cosine_with_unit;
use crate::engine::{EngineError, EngineResult};
use crate::pg::embed::worker_client;
use crate::pg::gucs;
use crate::worker::copy_protocol::{CopyKey, CopyRequest, CopyResponse, CopyState};
use parking_lot::Mutex;
use pgrx::pg_sys;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Rows asked of the device first; then 4 times more, up to `MAX_K`.
const FIRST_ROWS: usize = 32;

/// A host without a device says so once a minute, not at every scan.
/// (when, why, whether only a device was asked for).
static UNAVAILABLE: Mutex<Option<(Instant, String, bool)>> = Mutex::new(None);
const REMEMBER_UNAVAILABLE: Duration = Duration::from_secs(60);

pub enum Next {
    Row(i64),
    /// Every visible row was returned.
    End,
    /// The CPU index goes on from here (rows already returned are skipped): why.
    Cpu(String),
}

pub struct DeviceScan {
    key: CopyKey,
    query: Vec<f32>,
    rows: usize,
    max_norm: f32,
    results: Vec<Scored>,
    position: usize,
    asked: usize,
    /// Rows this scan returned, for a hand-over to the CPU index.
    pub returned: HashSet<i64>,
}

/// Why the CPU answers, said as a NOTICE when the user asked for cuda.
fn on_cpu(preference: DevicePreference, index: pg_sys::Relation, why: &str) -> Option<DeviceScan> {
    if preference == DevicePreference::Cuda {
        // SAFETY: an open relation.
        let name = unsafe { pages::relation_name(index) };
        pgrx::notice!("inf_ir: index \"{name}\" was searched on the CPU: {why}");
    } else {
        pgrx::debug1!("inf_ir: searching on the CPU: {why}");
    }
    None
}

impl DeviceScan {
    /// A device scan of `index` for the unit vector `query`, when the
    /// setting, the worker and its device allow (the first scan of an index
    /// loads its copy); None: the CPU index answers.
    pub unsafe fn open(
        index: pg_sys::Relation,
        heap: pg_sys::Relation,
        attnum: i32,
        build_id: u64,
        shape: &Shape,
        query: &[f32],
    ) -> Option<DeviceScan> {
        let preference = gucs::search_device();
        if preference == DevicePreference::Cpu {
            return None;
        }
        if pg_sys::RecoveryInProgress() {
            // Replayed inserts never pass through aminsert: a copy could not follow them.
            return on_cpu(
                preference,
                index,
                "a standby's copy would not see the rows its WAL replay adds",
            );
        }
        if !worker_client::socket_exists() {
            return on_cpu(
                preference,
                index,
                "the shared worker is not running (inf_ir is not in shared_preload_libraries)",
            );
        }
        let device_only = preference == DevicePreference::Auto;
        if let Some((since, why, asked)) = UNAVAILABLE.lock().clone() {
            if since.elapsed() < REMEMBER_UNAVAILABLE && asked == device_only {
                return on_cpu(preference, index, &why);
            }
        }
        let key = device_copy::key(index, build_id);
        let mut state = match worker_client::try_copy_call(CopyRequest::State { key, device_only }) {
            Ok(CopyResponse::State(CopyState::Unavailable { reason })) => {
                // The host has no device: no need to ask at every scan.
                *UNAVAILABLE.lock() = Some((Instant::now(), reason.clone(), device_only));
                return on_cpu(preference, index, &reason);
            }
            Ok(CopyResponse::State(state)) => state,
            Ok(other) => return on_cpu(preference, index, &format!("unexpected answer {other:?}")),
            Err(e) => return on_cpu(preference, index, &e.message),
        };
        if state == CopyState::Missing {
            state = match device_copy::load(index, heap, attnum, key, shape) {
                Ok(state) => state,
                Err(e) => return on_cpu(preference, index, &format!("loading the index's copy failed: {e}")),
            };
        }
        match state {
            CopyState::Ready {
                rows,
                max_norm,
                dimension,
                ..
            } if dimension as usize == query.len() => Some(DeviceScan {
                key,
                query: query.to_vec(),
                rows: rows as usize,
                max_norm,
                results: Vec::new(),
                position: 0,
                asked: 0,
                returned: HashSet::new(),
            }),
            CopyState::Ready { dimension, .. } => on_cpu(
                preference,
                index,
                &format!("the copy holds {dimension} dimensions, the query {}", query.len()),
            ),
            CopyState::Loading => on_cpu(preference, index, "another session is loading the index's copy"),
            CopyState::Missing => on_cpu(preference, index, "the index's copy was dropped while it loaded"),
            // This index's copy (too large for the memory left, say).
            CopyState::Unavailable { reason } => on_cpu(preference, index, &reason),
        }
    }

    /// The next row in exact order, read in `snapshot`.
    pub unsafe fn next(&mut self, rows: &mut HeapRows, snapshot: pg_sys::Snapshot) -> Next {
        loop {
            while let Some(hit) = self.results.get(self.position) {
                self.position += 1;
                let id = hit.id as i64;
                if self.returned.insert(id) {
                    return Next::Row(id);
                }
            }
            if self.asked > 0 && self.results.len() < self.asked {
                return Next::End;
            }
            if self.asked == MAX_K {
                return Next::Cpu(format!("the scan went past the {MAX_K} rows the device answers"));
            }
            self.asked = if self.asked == 0 {
                FIRST_ROWS
            } else {
                (self.asked * 4).min(MAX_K)
            };
            let query = self.query.clone();
            let mut source = Remote { scan: self };
            let exact = |_: usize, id: u64| {
                rows.with_vector(pages::unpack_tid(id as i64), snapshot, |_, v| {
                    cosine_with_unit(v, &query)
                })
            };
            let asked = source.scan.asked;
            match exact_search(&mut source, &query, asked, exact) {
                Ok(mut answers) => match answers.pop().flatten() {
                    Some(found) => {
                        self.results = found;
                        self.position = 0;
                    }
                    None => return Next::Cpu("the device's float16 scores did not prove the order".into()),
                },
                Err(e) => return Next::Cpu(e.to_string()),
            }
        }
    }
}

/// The host's copy as a candidate source.
struct Remote<'a> {
    scan: &'a mut DeviceScan,
}

impl CandidateSource for Remote<'_> {
    fn dimension(&self) -> usize {
        self.scan.query.len()
    }

    fn len(&self) -> usize {
        // Never "empty": rows this transaction wrote since the state was read
        // are in the copy too.
        self.scan.rows.max(1)
    }

    fn max_norm(&self) -> f32 {
        // Rows are stored at unit length: a write since the state was read
        // cannot raise it past 1 (plus rounding).
        self.scan.max_norm.max(1.0 + 1e-6)
    }

    fn candidates(&mut self, queries: &[f32], wanted: usize) -> EngineResult<Vec<Vec<Candidate>>> {
        let request = CopyRequest::Candidates {
            key: self.scan.key,
            queries: queries.to_vec(),
            wanted: wanted as u32,
        };
        match worker_client::try_copy_call(request)? {
            CopyResponse::Candidates(lists) => Ok(lists),
            CopyResponse::State(state) => Err(EngineError::worker(format!("the index's copy is gone ({state:?})"))),
            CopyResponse::Done => Err(EngineError::worker("the host answered no candidates")),
        }
    }
}
