//! The best k passages through one given inf_ivf index, its scan run by
//! hand: a filter index holds only the passages its filter keeps, but the
//! planner, offered the corpus's own index too, would cost both from their
//! probes and could pick the larger one (whose scan must then skip the 99%
//! of rows a 1% filter drops).
//!
//! As in the planned search: the first k + `slack` rows in the index's order
//! (read in the caller's snapshot), then by exact score and smaller passage
//! id. A partial index holds only row versions that satisfy its predicate,
//! so, as for the executor's index scans, the predicate is not re-checked.

use crate::engine::ivf::scan::cosine_with_unit;
use crate::engine::topk::Hit;
use crate::pg::corpus::filtered_search::Columns;
use crate::pg::ivf::vector;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Strategy of `<=>` in the operator class (its only ordering operator).
const DISTANCE_STRATEGY: u16 = 1;

pub fn top_k(index_oid: pg_sys::Oid, query: &[f32], k: usize, slack: usize) -> Vec<Hit> {
    let unit = vector::unit(query, "the query vector");
    let mut hits = Vec::with_capacity(k + slack);
    // SAFETY: relations are opened and closed here, the scan and slot live
    // only in this call; an ERROR in between is cleaned up by the
    // transaction's abort, as for any scan.
    unsafe {
        let snapshot = pg_sys::GetActiveSnapshot();
        let index = pg_sys::index_open(index_oid, pg_sys::AccessShareLock as i32);
        let heap = pg_sys::table_open((*(*index).rd_index).indrelid, pg_sys::AccessShareLock as i32);
        let columns = Columns::of((*heap).rd_id);
        let (id_column, vector_column) = (columns.passage_id, columns.embedding);
        let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
        let query_datum = query.to_vec().into_datum().expect("an array");
        let mut key = pg_sys::ScanKeyData::default();
        pg_sys::ScanKeyEntryInitialize(
            &mut key,
            pg_sys::SK_ORDER_BY as i32,
            1,
            DISTANCE_STRATEGY,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid, // the access method scores the argument itself
            query_datum,
        );
        let scan = pg_sys::index_beginscan(heap, index, snapshot, 0, 1);
        pg_sys::index_rescan(scan, std::ptr::null_mut(), 0, &mut key, 1);
        while hits.len() < k + slack
            && pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot)
        {
            pg_sys::slot_getsomeattrs_int(slot, id_column.max(vector_column));
            let value = |attnum: i32| {
                let i = (attnum - 1) as usize;
                (!*(*slot).tts_isnull.add(i)).then(|| *(*slot).tts_values.add(i))
            };
            // The index holds only rows with an embedding; both are there.
            if let (Some(id), Some(v)) = (value(id_column), value(vector_column)) {
                let id = i64::from_datum(id, false).expect("a passage id");
                let score = vector::with_floats(v, "a stored vector", |v| cosine_with_unit(v, &unit));
                hits.push(Hit { score, id });
            }
            pg_sys::ExecClearTuple(slot);
            pgrx::check_for_interrupts!();
        }
        pg_sys::index_endscan(scan);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::table_close(heap, pg_sys::NoLock as i32);
        pg_sys::index_close(index, pg_sys::NoLock as i32);
    }
    hits.sort(); // the project's ranking rule: score, then the smaller id
    hits.truncate(k);
    hits
}
