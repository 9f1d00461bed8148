//! An inf_ivf index's copy in the shared worker's host (on its GPU): the
//! key that names it, the load (every entry's row, read from the table by
//! TID), and the writes that keep it in step (aminsert's rows, VACUUM's
//! removals). Writes are sent only while the host holds copies (its marker
//! file exists), so a server without them pays one stat per insert.

use super::heap_rows::HeapRows;
use super::pages::{self, Locked};
use super::shape::Shape;
use crate::engine::EngineResult;
use crate::pg::embed::worker_client::{self, OwnConnection};
use crate::worker::copy_protocol::{CopyKey, CopyRequest, CopyResponse, CopyState};
use crate::worker::search_copies::MARKER_PATH;
use pgrx::pg_sys;

/// Rows per load frame: 16,384 × 384 floats is 25 MB.
const LOAD_ROWS: usize = 16_384;

pub fn key(index: pg_sys::Relation, build_id: u64) -> CopyKey {
    // SAFETY: a relation the caller holds open; MyDatabaseId is set in every backend.
    unsafe {
        CopyKey {
            database: pg_sys::MyDatabaseId.to_u32(),
            index: (*index).rd_id.to_u32(),
            build: build_id,
        }
    }
}

/// Whether the host holds (or is loading) copies, so that writes must be sent.
pub fn copies_exist() -> bool {
    std::path::Path::new(MARKER_PATH).exists()
}

/// After aminsert put `tid`'s entry on its page: the row for the copy.
pub fn send_insert(key: CopyKey, tid: &pg_sys::ItemPointerData, unit: &[f32]) {
    if copies_exist() {
        worker_client::copy_write(CopyRequest::Append {
            key,
            ids: vec![pages::pack_tid(tid) as u64],
            vectors: unit.to_vec(),
        });
    }
}

/// Before VACUUM takes these entries off their page: the host forgets them
/// first, so a TID the table hands to a new row never keeps an old vector
/// in the copy (an ERROR here leaves the page, and the row, for next time).
pub fn send_removals(key: CopyKey, tids: &[pg_sys::ItemPointerData]) {
    if !tids.is_empty() && copies_exist() {
        worker_client::copy_write(CopyRequest::Remove {
            key,
            ids: tids.iter().map(|t| pages::pack_tid(t) as u64).collect(),
        });
    }
}

/// Load the copy of `index`: announce it (from then on every write is sent
/// to the host), then send every entry's row as the table holds it now.
/// Rows written while this runs reach the host on their own and win over
/// this reading. Returns the copy's state (another session's load, or why
/// the host has none, included).
pub unsafe fn load(
    index: pg_sys::Relation,
    heap: pg_sys::Relation,
    attnum: i32,
    key: CopyKey,
    shape: &Shape,
) -> EngineResult<CopyState> {
    let mut connection = OwnConnection::open()?;
    let rows = (*(*index).rd_rel).reltuples.max(0.0) as u64;
    let begin = CopyRequest::LoadBegin {
        key,
        dimension: shape.dim() as u32,
        rows,
    };
    if let CopyResponse::State(state) = connection.call(begin)? {
        return Ok(state);
    }
    let mut heap_rows = HeapRows::begin(heap, attnum);
    let sent = send_every_row(index, &mut heap_rows, &mut connection, key, shape);
    // Also when sending failed: the fetch holds a buffer pin.
    heap_rows.end();
    sent?;
    match connection.call(CopyRequest::LoadEnd { key })? {
        CopyResponse::State(state) => Ok(state),
        other => Err(crate::engine::EngineError::worker(format!(
            "unexpected answer to the end of a load: {other:?}"
        ))),
    }
}

/// Every entry's row, as the table holds it now, in frames of `LOAD_ROWS`.
unsafe fn send_every_row(
    index: pg_sys::Relation,
    heap_rows: &mut HeapRows,
    connection: &mut OwnConnection,
    key: CopyKey,
    shape: &Shape,
) -> EngineResult<()> {
    let mut ids: Vec<u64> = Vec::with_capacity(LOAD_ROWS);
    let mut vectors: Vec<f32> = Vec::with_capacity(LOAD_ROWS * shape.dim());
    let any = &raw mut pg_sys::SnapshotAnyData;
    for list in &shape.lists {
        let mut block = list.head;
        while block != pages::INVALID_BLOCK {
            let (tids, next) = {
                let buffer = Locked::read(index, block, false);
                let tids: Vec<pg_sys::ItemPointerData> =
                    pages::items(buffer.page()).map(|(_, e)| pages::entry_tid(e)).collect();
                (tids, (*pages::opaque(buffer.page())).next)
            };
            for tid in tids {
                // Any version: visibility is the searching session's business.
                let found = heap_rows.with_vector(tid, any, unit_or_none).flatten();
                if let Some(unit) = found.filter(|u| u.len() == shape.dim()) {
                    ids.push(pages::pack_tid(&tid) as u64);
                    vectors.extend_from_slice(&unit);
                }
                if ids.len() == LOAD_ROWS {
                    send_rows(connection, key, &mut ids, &mut vectors)?;
                }
            }
            block = next;
            pgrx::check_for_interrupts!();
        }
    }
    send_rows(connection, key, &mut ids, &mut vectors)
}

/// `v` at unit length, None for a vector no index entry can have (zero,
/// not finite): a TID whose row changed since its entry was read.
fn unit_or_none(_: &pg_sys::ItemPointerData, v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| (*x as f64 / norm) as f32).collect())
}

fn send_rows(
    connection: &mut OwnConnection,
    key: CopyKey,
    ids: &mut Vec<u64>,
    vectors: &mut Vec<f32>,
) -> EngineResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let request = CopyRequest::LoadRows {
        key,
        ids: std::mem::take(ids),
        vectors: std::mem::take(vectors),
    };
    connection.call(request).map(|_| ())
}
