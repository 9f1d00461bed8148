//! The `lists` storage parameter: CREATE INDEX ... USING inf_ivf (embedding)
//! WITH (lists = 1000). 0 (the default) picks the count from the row count.

use pgrx::pg_sys;

static mut KIND: pg_sys::relopt_kind::Type = 0;

#[repr(C)]
struct Options {
    vl_len_: i32,
    lists: i32,
}

pub fn init() {
    unsafe {
        KIND = pg_sys::add_reloption_kind();
        pg_sys::add_int_reloption(
            KIND as pg_sys::bits32,
            c"lists".as_ptr(),
            c"Inverted lists of the index (0: one per 1,000 rows below 100,000 rows, then four times the square root)"
                .as_ptr(),
            0,
            0,
            1 << 20,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amoptions(reloptions: pg_sys::Datum, validate: bool) -> *mut pg_sys::bytea {
    let table = [pg_sys::relopt_parse_elt {
        optname: c"lists".as_ptr(),
        opttype: pg_sys::relopt_type::RELOPT_TYPE_INT,
        offset: std::mem::offset_of!(Options, lists) as i32,
    }];
    pg_sys::build_reloptions(
        reloptions,
        validate,
        KIND,
        std::mem::size_of::<Options>(),
        table.as_ptr(),
        table.len() as i32,
    ) as *mut pg_sys::bytea
}

/// The index's `lists` option (0 when unset).
pub unsafe fn lists(index: pg_sys::Relation) -> usize {
    let options = (*index).rd_options as *const Options;
    if options.is_null() {
        0
    } else {
        (*options).lists.max(0) as usize
    }
}
