//! A row read from the table by TID in a snapshot (following HOT chains):
//! the index scan's exact re-score, inf_index_check and inf_search's exact
//! filtered search need it.

use super::vector;
use pgrx::pg_sys;

pub struct HeapRows {
    heap: pg_sys::Relation,
    fetch: *mut pg_sys::IndexFetchTableData,
    slot: *mut pg_sys::TupleTableSlot,
    /// Table column of the indexed vector (1-based).
    attnum: i32,
}

impl HeapRows {
    pub unsafe fn begin(heap: pg_sys::Relation, attnum: i32) -> Self {
        HeapRows {
            heap,
            fetch: (*(*heap).rd_tableam).index_fetch_begin.expect("table AM fetches rows")(heap),
            slot: pg_sys::table_slot_create(heap, std::ptr::null_mut()),
            attnum,
        }
    }

    /// `f(visible row's TID, its vector)` for the row version `tid` leads to
    /// in `snapshot` (following a HOT chain); None when none is visible or
    /// its vector is NULL.
    pub unsafe fn with_vector<T>(
        &mut self,
        tid: pg_sys::ItemPointerData,
        snapshot: pg_sys::Snapshot,
        f: impl FnOnce(&pg_sys::ItemPointerData, &[f32]) -> T,
    ) -> Option<T> {
        let attnum = self.attnum;
        self.with_visible(tid, snapshot, attnum, |slot| {
            let i = (attnum - 1) as usize;
            (!*(*slot).tts_isnull.add(i)).then(|| {
                let visible = (*slot).tts_tid;
                vector::with_floats(*(*slot).tts_values.add(i), "a stored vector", |v| f(&visible, v))
            })
        })
        .flatten()
    }

    /// `f(slot)` for the row version `tid` leads to in `snapshot`, with its
    /// first `natts` columns deformed (`tts_values` / `tts_isnull`); None
    /// when no version is visible. The slot is cleared afterwards.
    pub unsafe fn with_visible<T>(
        &mut self,
        tid: pg_sys::ItemPointerData,
        snapshot: pg_sys::Snapshot,
        natts: i32,
        f: impl FnOnce(*mut pg_sys::TupleTableSlot) -> T,
    ) -> Option<T> {
        let mut tid = tid;
        let (mut call_again, mut all_dead) = (false, false);
        let fetch_tuple = (*(*self.heap).rd_tableam)
            .index_fetch_tuple
            .expect("table AM fetches rows");
        if !fetch_tuple(
            self.fetch,
            &mut tid,
            snapshot,
            self.slot,
            &mut call_again,
            &mut all_dead,
        ) {
            return None;
        }
        pg_sys::slot_getsomeattrs_int(self.slot, natts);
        let result = f(self.slot);
        pg_sys::ExecClearTuple(self.slot);
        Some(result)
    }

    /// Release the fetch state (not on ERROR: the transaction's abort does).
    pub unsafe fn end(self) {
        (*(*self.heap).rd_tableam)
            .index_fetch_end
            .expect("table AM fetches rows")(self.fetch);
        pg_sys::ExecDropSingleTupleTableSlot(self.slot);
    }
}
