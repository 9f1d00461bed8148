//! Index scans: `ORDER BY embedding <=> query` through the engine's list
//! scan. Codes come from the list pages; the exact float32 score of each
//! shortlisted entry comes from its heap row, read in the scan's snapshot,
//! so invisible rows never take a place. The executor still checks
//! visibility and any WHERE clause, and asks for more rows as it needs them.
//! Under inf_ir.search_device the shared worker's device ranks first
//! (`device_scan`); the lists take over where it stops, skipping its rows.

use super::device_scan::{DeviceScan, Next};
use super::heap_rows::HeapRows;
use super::pages::{self, Locked};
use super::shape::{self, Shape};
use super::{build, vector};
use crate::engine::ivf::scan::{cosine_with_unit, IvfScan, ListReader, Rescorer, ScanPlan};
use crate::pg::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::HashSet;
use std::rc::Rc;

struct State {
    search: Option<IvfScan>,
    shape: Option<Rc<Shape>>,
    /// Every list scanned, or the index has none.
    done: bool,
    /// Made at the first search, released at the end of the scan.
    rows: Option<HeapRows>,
    attnum: i32,
    /// Ranking on the shared worker's device (inf_ir.search_device).
    device: Option<DeviceScan>,
    /// After a device scan handed over: rows it returned, which the CPU
    /// index skips.
    returned: HashSet<i64>,
}

pub(super) struct Pages<'a> {
    pub index: pg_sys::Relation,
    pub shape: &'a Shape,
}

impl ListReader for Pages<'_> {
    fn scan_list(&mut self, list: u32, visit: &mut dyn FnMut(i64, &[u8])) {
        let mut block = self.shape.lists[list as usize].head;
        unsafe {
            while block != pages::INVALID_BLOCK {
                let buffer = Locked::read(self.index, block, false);
                let page = buffer.page();
                // The page was just pinned and is likely cold in the CPU cache:
                // ask for the whole item area first, then score.
                let header = page as *const pg_sys::PageHeaderData;
                let (upper, special) = ((*header).pd_upper as usize, (*header).pd_special as usize);
                let mut line = upper & !63;
                while line < special {
                    prefetch((page as *const u8).add(line));
                    line += 64;
                }
                for (_, entry) in pages::items(page) {
                    visit(pages::pack_tid(&pages::entry_tid(entry)), pages::entry_code(entry));
                }
                block = (*pages::opaque(page)).next;
                drop(buffer);
                pgrx::check_for_interrupts!();
            }
        }
    }

    fn centroid(&self, list: u32) -> &[f32] {
        self.shape.centroid(list as usize)
    }
}

#[inline(always)]
fn prefetch(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch(ptr as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// The exact score of a shortlisted entry, from its row in the scan's snapshot.
struct SnapshotRows<'a> {
    rows: &'a mut HeapRows,
    snapshot: pg_sys::Snapshot,
}

impl Rescorer for SnapshotRows<'_> {
    fn exact(&mut self, key: i64, query: &[f32]) -> Option<f32> {
        unsafe {
            self.rows
                .with_vector(pages::unpack_tid(key), self.snapshot, |_, v| cosine_with_unit(v, query))
        }
    }
}

unsafe fn state<'a>(scan: pg_sys::IndexScanDesc) -> &'a mut State {
    &mut *((*scan).opaque as *mut State)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
    let state = Box::new(State {
        search: None,
        shape: None,
        done: false,
        rows: None,
        attnum: build::check_indexed_column(index),
        device: None,
        returned: HashSet::new(),
    });
    (*scan).opaque = Box::into_raw(state) as *mut std::ffi::c_void;
    scan
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    _keys: pg_sys::ScanKey,
    _nkeys: i32,
    orderbys: pg_sys::ScanKey,
    norderbys: i32,
) {
    if !orderbys.is_null() && norderbys > 0 && (*scan).numberOfOrderBys > 0 {
        std::ptr::copy(orderbys, (*scan).orderByData, (*scan).numberOfOrderBys as usize);
    }
    let state = state(scan);
    state.search = None;
    state.done = false;
    state.device = None;
    state.returned.clear();
}

/// Count a scan in pg_stat_user_indexes.idx_scan, as PostgreSQL's own
/// access methods do (its pgstat_count_index_scan macro).
unsafe fn count_scan(index: pg_sys::Relation) {
    if (*index).pgstat_info.is_null() && (*index).pgstat_enabled {
        pg_sys::pgstat_assoc_relation(index);
    }
    if !(*index).pgstat_info.is_null() {
        (*(*index).pgstat_info).t_counts.t_numscans += 1;
    }
}

/// Start the search on the first tuple request: the query is known then.
unsafe fn start(scan: pg_sys::IndexScanDesc, state: &mut State) {
    let index = (*scan).indexRelation;
    count_scan(index);
    if (*scan).numberOfOrderBys == 0 {
        pgrx::error!("inf_ir: an inf_ivf index only answers ORDER BY vector <=> query");
    }
    let key = &*(*scan).orderByData;
    if key.sk_flags & pg_sys::SK_ISNULL as i32 != 0 {
        // A sequential scan would return every row in no order; say so instead.
        crate::pg::errors::raise_with(
            pgrx::PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "the query vector of ORDER BY ... <=> is NULL",
            "pass a vector, e.g. inf_embed_query(instruction, query)",
        );
    }
    let query = vector::with_floats(key.sk_argument, "the query vector", |v| {
        vector::unit(v, "the query vector")
    });
    let (meta, shape) = shape::load(index);
    if meta.lists == 0 {
        state.done = true;
        return;
    }
    if query.len() != shape.dim() {
        vector::raise_dimension_mismatch(
            "the query vector",
            query.len(),
            &pages::relation_name(index),
            shape.dim(),
            "embed the query with the corpus's model, e.g. inf_embed_query(instruction, query, model)",
        );
    }
    let plan = ScanPlan {
        probes: gucs::probes(),
        rerank: gucs::rerank(),
    };
    state.device = DeviceScan::open(index, (*scan).heapRelation, state.attnum, meta.build_id, &shape, &query);
    state.search = Some(IvfScan::new(&query, &shape.centroids, &shape.rotation, plan));
    state.shape = Some(shape);
    if state.rows.is_none() {
        state.rows = Some(HeapRows::begin((*scan).heapRelation, state.attnum));
    }
}

fn found(scan: pg_sys::IndexScanDesc, key: i64) -> bool {
    // SAFETY: the scan descriptor PostgreSQL passed to amgettuple.
    unsafe {
        (*scan).xs_heaptid = pages::unpack_tid(key);
        (*scan).xs_recheck = false;
        (*scan).xs_recheckorderby = false;
    }
    true
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(
    scan: pg_sys::IndexScanDesc,
    _direction: pg_sys::ScanDirection::Type,
) -> bool {
    let state = state(scan);
    if state.search.is_none() && !state.done {
        start(scan, state);
    }
    if state.done {
        return false;
    }
    if let Some(device) = state.device.as_mut() {
        match device.next(state.rows.as_mut().expect("started"), (*scan).xs_snapshot) {
            Next::Row(key) => return found(scan, key),
            Next::End => {
                state.done = true;
                return false;
            }
            Next::Cpu(why) => {
                pgrx::debug1!("inf_ir: the CPU index goes on: {why}");
                state.returned = std::mem::take(&mut device.returned);
                state.device = None;
            }
        }
    }
    let shape = state.shape.clone().expect("started");
    let mut rows = SnapshotRows {
        rows: state.rows.as_mut().expect("started"),
        snapshot: (*scan).xs_snapshot,
    };
    let mut lists = Pages {
        index: (*scan).indexRelation,
        shape: &shape,
    };
    loop {
        match state.search.as_mut().expect("started").next(&mut lists, &mut rows) {
            Some(hit) if state.returned.contains(&hit.id) => continue,
            Some(hit) => return found(scan, hit.id),
            None => {
                state.done = true;
                return false;
            }
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    let state = Box::from_raw((*scan).opaque as *mut State);
    (*scan).opaque = std::ptr::null_mut();
    if let Some(search) = &state.search {
        let s = search.stats;
        pgrx::debug1!(
            "inf_ir: index scan: {} rounds, {} lists, {} codes scored, {} rows re-scored",
            s.rounds,
            s.lists_scanned,
            s.codes_scored,
            s.rescored
        );
    }
    if let Some(rows) = state.rows {
        rows.end();
    }
}
