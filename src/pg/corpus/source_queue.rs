//! One key onto a table-following corpus's queue (`inf_ir.source_changes`),
//! written straight to the heap and its indexes: the row-level INSERT
//! trigger calls this once per application row, and going through SPI and
//! the executor for it cost the application's single-row INSERTs more than
//! the row itself (see BENCHMARKS.md, "Your own tables as corpora").
//!
//! The row is the one `INSERT INTO inf_ir.source_changes (corpus_id, key)
//! VALUES (...)` would write: change_id from the table's identity sequence,
//! queued_at = now(). No permission check: the trigger acts for the corpus,
//! as the SECURITY DEFINER plpgsql trigger did. The queue has no triggers,
//! rules, constraints beyond NOT NULL or policies to honour.

use crate::pg::errors::raise_with;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::ffi::CStr;

// PostgreSQL's nextval without the caller's privilege check (the
// application's role has none on inf_ir's sequence); not in pgrx's bindings.
unsafe extern "C-unwind" {
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// The next change_id, an ERROR (sequence exhausted) raised as PostgreSQL's.
unsafe fn next_change_id(sequence_oid: pg_sys::Oid) -> i64 {
    pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| nextval_internal(sequence_oid, false))
}

/// The queue's columns, in order: the layout this writer fills.
const COLUMNS: [&CStr; 4] = [c"change_id", c"corpus_id", c"key", c"queued_at"];

/// Queue `key` for corpus `corpus_id`, in the current transaction.
pub fn push(corpus_id: i32, key: &CStr) {
    unsafe {
        let queue_oid = inf_ir_relation(c"source_changes");
        let sequence_oid = inf_ir_relation(c"source_changes_change_id_seq");
        let queue = pg_sys::table_open(queue_oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let descriptor = (*queue).rd_att;
        check_layout(descriptor);

        let mut values = [
            pg_sys::Datum::from(next_change_id(sequence_oid)),
            pg_sys::Datum::from(corpus_id),
            pg_sys::Datum::from(pg_sys::cstring_to_text(key.as_ptr())),
            pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp()),
        ];
        let mut nulls = [false; 4];
        let tuple = pg_sys::heap_form_tuple(descriptor, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::simple_heap_insert(queue, tuple);
        insert_index_entries(queue, tuple);
        pg_sys::heap_freetuple(tuple);
        pg_sys::table_close(queue, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
}

/// The oid of relation `name` in schema inf_ir (no privilege check).
pub(super) unsafe fn inf_ir_relation(name: &CStr) -> pg_sys::Oid {
    let namespace = pg_sys::get_namespace_oid(c"inf_ir".as_ptr(), false);
    let oid = pg_sys::get_relname_relid(name.as_ptr(), namespace);
    if oid == pg_sys::InvalidOid {
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("inf_ir.{} does not exist", name.to_string_lossy()),
            "the inf_ir extension is damaged: reinstall it (DROP EXTENSION inf_ir CASCADE; CREATE EXTENSION inf_ir)",
        );
    }
    oid
}

/// The queue must have the columns this writer fills, in its order.
unsafe fn check_layout(descriptor: pg_sys::TupleDesc) {
    let natts = (*descriptor).natts as usize;
    let matches = natts == COLUMNS.len()
        && COLUMNS.iter().enumerate().all(|(i, name)| {
            let attribute = (*descriptor).attrs.as_slice(natts)[i];
            !attribute.attisdropped && CStr::from_ptr(attribute.attname.data.as_ptr()) == *name
        });
    if !matches {
        raise_with(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "inf_ir.source_changes does not have the columns this inf_ir library writes",
            "the installed SQL and library differ: ALTER EXTENSION inf_ir UPDATE, or reinstall the extension",
        );
    }
}

/// What `CatalogIndexInsert` does for catalogs: an entry in each index of
/// the queue for the tuple just inserted (plain-column indexes only).
unsafe fn insert_index_entries(queue: pg_sys::Relation, tuple: pg_sys::HeapTuple) {
    let slot = pg_sys::MakeSingleTupleTableSlot((*queue).rd_att, &pg_sys::TTSOpsHeapTuple);
    pg_sys::ExecStoreHeapTuple(tuple, slot, false);
    let indexes = pg_sys::RelationGetIndexList(queue);
    let count = if indexes.is_null() { 0 } else { (*indexes).length };
    for i in 0..count {
        let index_oid = (*(*indexes).elements.add(i as usize)).oid_value;
        let index = pg_sys::index_open(index_oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let info = pg_sys::BuildIndexInfo(index);
        if !(*info).ii_Expressions.is_null() || !(*info).ii_Predicate.is_null() {
            raise_with(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "an index on inf_ir.source_changes has expressions or a WHERE clause",
                "inf_ir's queue takes plain-column indexes only: drop that index",
            );
        }
        let mut values = [pg_sys::Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
        let mut nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
        pg_sys::FormIndexDatum(
            info,
            slot,
            std::ptr::null_mut(),
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
        );
        let unique = if (*info).ii_Unique {
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
        } else {
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
        };
        pg_sys::index_insert(
            index,
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
            &mut (*tuple).t_self,
            queue,
            unique,
            false,
            info,
        );
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
    pg_sys::list_free(indexes);
    pg_sys::ExecDropSingleTupleTableSlot(slot);
}
