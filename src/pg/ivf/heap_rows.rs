//! An indexed row's vector, read from the table by TID in a snapshot: the
//! scan's exact re-score and inf_index_check both need it.

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
        pg_sys::slot_getsomeattrs_int(self.slot, self.attnum);
        let i = (self.attnum - 1) as usize;
        let result = (!*(*self.slot).tts_isnull.add(i)).then(|| {
            let visible = (*self.slot).tts_tid;
            vector::with_floats(*(*self.slot).tts_values.add(i), "a stored vector", |v| f(&visible, v))
        });
        pg_sys::ExecClearTuple(self.slot);
        result
    }

    /// Release the fetch state (not on ERROR: the transaction's abort does).
    pub unsafe fn end(self) {
        (*(*self.heap).rd_tableam)
            .index_fetch_end
            .expect("table AM fetches rows")(self.fetch);
        pg_sys::ExecDropSingleTupleTableSlot(self.slot);
    }
}
