//! The row-level INSERT trigger of a table-following corpus whose key is one
//! column of a type whose `::text` is its output function and depends on no
//! setting (integers, numeric, text, varchar, uuid, oid; see
//! `engine::source::statements`). It queues the new row's key with no
//! plpgsql, SPI or transition table: single-row INSERTs into the
//! application's table pay a few microseconds for the corpus. Other keys
//! (composite, dates, partitioned tables) keep the statement-level trigger.
//!
//! `CREATE TRIGGER ... AFTER INSERT ... FOR EACH ROW EXECUTE FUNCTION
//! inf_ir.source_row_inserted('<corpus id>', '<key attnum>')`: the attnum,
//! not the name, so that a renamed key column is followed.

use crate::pg::errors::raise_with;
use pgrx::prelude::*;
use pgrx::trigger_support::{PgTriggerLevel, PgTriggerOperation, PgTriggerWhen};
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

pgrx::extension_sql!(
    r#"
CREATE FUNCTION inf_ir.source_row_inserted() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'source_row_inserted_wrapper';
COMMENT ON FUNCTION inf_ir.source_row_inserted() IS
    'Row-level INSERT trigger of a table-following corpus: queues the new row''s key (args: corpus id, key column attnum).';
"#,
    name = "source_row_trigger",
    requires = ["source_corpora"]
);

thread_local! {
    /// Corpus id → its source table, as read from inf_ir.corpora. Only a
    /// match is kept; a mismatch is read again before it is refused.
    static SOURCES: RefCell<HashMap<i32, pg_sys::Oid>> = RefCell::new(HashMap::new());
}

#[pg_trigger(sql = false)]
fn source_row_inserted<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    let data = trigger.trigger_data();
    let fired_right = matches!(trigger.when(), Ok(PgTriggerWhen::After))
        && matches!(trigger.level(), PgTriggerLevel::Row)
        && matches!(trigger.op(), Ok(PgTriggerOperation::Insert));
    if !fired_right {
        misuse("inf_ir.source_row_inserted() must fire AFTER INSERT FOR EACH ROW");
    }
    let (corpus_id, attnum) = arguments(trigger);
    let relation = data.tg_relation;
    let table = unsafe { (*relation).rd_id };
    check_source(corpus_id, table);
    let key = unsafe { key_text(data.tg_trigtuple, (*relation).rd_att, attnum) };
    super::source_queue::push(corpus_id, &key);
    Ok(None)
}

fn misuse(message: &str) -> ! {
    raise_with(
        PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
        message,
        "this trigger is made by inf_create_corpus(..., source => ...); do not attach it yourself",
    )
}

fn arguments(trigger: &PgTrigger<'_>) -> (i32, i16) {
    let args = trigger.extra_args().unwrap_or_default();
    let parsed = match args.as_slice() {
        [corpus, attnum] => corpus.parse::<i32>().ok().zip(attnum.parse::<i16>().ok().filter(|a| *a > 0)),
        _ => None,
    };
    parsed.unwrap_or_else(|| misuse("inf_ir.source_row_inserted() takes a corpus id and a key column number"))
}

/// The trigger queues keys for corpus `corpus_id` only from that corpus's
/// own source: attached elsewhere it would let a table's owner fill another
/// corpus's queue.
fn check_source(corpus_id: i32, table: pg_sys::Oid) {
    if SOURCES.with(|s| s.borrow().get(&corpus_id) == Some(&table)) {
        return;
    }
    if corpus_source(corpus_id) != Some(table) {
        misuse(&format!("this table is not the source of inf_ir corpus {corpus_id}"));
    }
    SOURCES.with(|s| s.borrow_mut().insert(corpus_id, table));
}

/// The table corpus `corpus_id` follows, read as the owner of
/// inf_ir.corpora (as PostgreSQL's foreign-key triggers read as the table's
/// owner): the application's role needs no rights on inf_ir's schema or
/// tables to insert rows. Every name and operator is qualified, so the
/// writer's search_path chooses nothing here.
fn corpus_source(corpus_id: i32) -> Option<pg_sys::Oid> {
    let (mut saved_user, mut saved_context) = (pg_sys::InvalidOid, 0);
    unsafe {
        let corpora_oid = super::source_queue::inf_ir_relation(c"corpora");
        let corpora = pg_sys::table_open(corpora_oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let owner = (*(*corpora).rd_rel).relowner;
        pg_sys::table_close(corpora, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_NOFORCE_RLS) as i32,
        );
    }
    // An error here aborts the (sub)transaction, which restores the user.
    let source = Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT c.source::pg_catalog.oid FROM inf_ir.corpora c WHERE c.corpus_id OPERATOR(pg_catalog.=) $1",
        &[corpus_id.into()],
    );
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    source.ok().flatten()
}

/// The key column's text form (its output function: `::text` for the key
/// types this trigger is made for).
unsafe fn key_text(tuple: pg_sys::HeapTuple, descriptor: pg_sys::TupleDesc, attnum: i16) -> std::ffi::CString {
    let natts = (*descriptor).natts as usize;
    let attribute = (*descriptor).attrs.as_slice(natts).get(attnum as usize - 1);
    let Some(attribute) = attribute.filter(|a| !a.attisdropped) else {
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("the key column (number {attnum}) of this inf_ir corpus's source is gone"),
            "drop the corpus (inf_drop_corpus) and make it again with the table's key",
        )
    };
    let mut is_null = false;
    let datum = pg_sys::heap_getattr(tuple, attnum as i32, descriptor, &mut is_null);
    if is_null {
        raise_with(
            PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
            "a row's key is NULL",
            "a passage is named by its row's key: the key's columns must be NOT NULL",
        );
    }
    let mut output_function = pg_sys::InvalidOid;
    let mut is_varlena = false;
    pg_sys::getTypeOutputInfo(attribute.atttypid, &mut output_function, &mut is_varlena);
    let text = pg_sys::OidOutputFunctionCall(output_function, datum);
    let owned = CStr::from_ptr(text).to_owned();
    pg_sys::pfree(text.cast());
    owned
}
